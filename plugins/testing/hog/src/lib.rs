//! Test plugin: allocates without bound on events with `"hog": true`, allows
//! the others. The host's memory cap must stop it.

use fanwire_sdk::{Decision, Event};

fanwire_sdk::filter! {
    /// Eats memory on demand.
    fn decide(event: &Event) -> Decision {
        if event.get("hog").and_then(|v| v.as_bool()) == Some(true) {
            let mut hoard: Vec<Vec<u8>> = Vec::new();
            loop {
                hoard.push(std::hint::black_box(vec![1u8; 1 << 20]));
            }
        }
        Decision::Allow
    }
}
