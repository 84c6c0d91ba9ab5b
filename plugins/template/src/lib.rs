//! A plugin template. Copy this folder (and add it to `plugins/Cargo.toml`'s
//! members), rename the package, write the function, then build every plugin
//! with `bash plugins/build.sh` and copy `plugins/dist/<name>.wasm` into the
//! host's plugin folder. The running host picks it up within a second.
//!
//! This one drops events whose `status` is `draft`. Its config, if any, is
//! `fanwire_sdk::host::config()`.
//!
//! A decision that depends on the subscriber needs a `prepare` too: see
//! `row-filter/` (`EventFilter` and `export_filter!`).

use fanwire_sdk::{Decision, Event};

fanwire_sdk::filter! {
    /// Drafts are not published to subscribers.
    fn decide(event: &Event) -> Decision {
        if event.get("status").and_then(|s| s.as_str()) == Some("draft") {
            Decision::deny("template: drafts are not published")
        } else {
            Decision::Allow
        }
    }
}
