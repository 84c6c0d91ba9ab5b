//! A plugin template. Copy this folder (and add it to `plugins/Cargo.toml`'s
//! members), rename the package, write the function, then build every plugin
//! with `bash plugins/build.sh` and copy `plugins/dist/<name>.wasm` into the
//! host's plugin folder. The running host picks it up within a second.
//!
//! This one drops events whose `status` is `draft`. Its config, if any, is
//! `fanwire_sdk::host::config()`.

use fanwire_sdk::{Decision, Event, Subscription};

fanwire_sdk::filter! {
    /// Drafts are not published to subscribers.
    fn decide(event: &Event, _group: &Subscription) -> Decision {
        if event.get("status").and_then(|s| s.as_str()) == Some("draft") {
            Decision::deny("template: drafts are not published")
        } else {
            Decision::Allow
        }
    }
}
