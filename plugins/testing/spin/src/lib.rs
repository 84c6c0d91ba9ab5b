//! Test plugin: loops forever on events with `"spin": true`, allows the
//! others. The host's per-call deadline must stop it.

use fanwire_sdk::{Decision, Event};

fanwire_sdk::filter! {
    /// Never returns on demand.
    fn decide(event: &Event) -> Decision {
        let mut n: u64 = 0;
        while event.get("spin").and_then(|v| v.as_bool()) == Some(true) {
            n = std::hint::black_box(n.wrapping_add(1));
        }
        Decision::Allow
    }
}
