//! Test plugin: an event filter for `fanwire:plugin@9.0.0`. The host must
//! refuse to load it, say why, and keep running what it had.

wit_bindgen::generate!({ path: "wit", world: "event-filter" });

use exports::fanwire::plugin::filter::{Decision, Guest, Verdict};
use fanwire::plugin::types::{Event, Subscription};

struct Filter;

impl Guest for Filter {
    fn prepare(_: Subscription) -> Verdict {
        Verdict::AllowAll
    }

    fn decide(_: Event, groups: Vec<Subscription>) -> Vec<Decision> {
        groups.iter().map(|_| Decision::Allow).collect()
    }
}

export!(Filter);
