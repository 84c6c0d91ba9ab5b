//! Test plugin: traps (a Rust panic aborts) on events with `"trap": true`,
//! allows the others. Used by the host's fault-containment tests.

use fanwire_sdk::{Decision, Event, Subscription};

fanwire_sdk::filter! {
    /// Panics on demand.
    fn decide(event: &Event, _group: &Subscription) -> Decision {
        if event.get("trap").and_then(|v| v.as_bool()) == Some(true) {
            panic!("trap requested by the event");
        }
        Decision::Allow
    }
}
