//! Test plugin: traps (a Rust panic aborts) on events with `"trap": true`,
//! allows the others. Used by the host's fault-containment tests.

use fanwire_sdk::{Decision, Event};

fanwire_sdk::filter! {
    /// Panics on demand.
    fn decide(event: &Event) -> Decision {
        if event.get("trap").and_then(|v| v.as_bool()) == Some(true) {
            panic!("trap requested by the event");
        }
        Decision::Allow
    }
}
