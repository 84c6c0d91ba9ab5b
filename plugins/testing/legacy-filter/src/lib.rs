//! Test plugin: an event filter for `fanwire:plugin@0.1.0`, written against
//! the 0.1 bindings directly, as plugins built before 0.2 were. A row
//! filter in 0.1's shape: `decide` receives each group's whole
//! `subscription` record and compares the event's `user_id` (config
//! `field`) with the group's subject. The host must keep loading it next to
//! 0.2 plugins and decide with it correctly.

wit_bindgen::generate!({ path: "../../../wit/v0.1.0", world: "event-filter" });

use exports::fanwire::plugin::filter::{Decision, Guest, Verdict};
use fanwire::plugin::host;
use fanwire::plugin::types::{Event, Subscription};
use serde_json::Value;

fn field() -> String {
    serde_json::from_str::<Value>(&host::config())
        .ok()
        .and_then(|c| c.get("field")?.as_str().map(str::to_owned))
        .unwrap_or_else(|| "user_id".into())
}

struct Filter;

impl Guest for Filter {
    fn prepare(group: Subscription) -> Verdict {
        match group.principal.subject {
            Some(_) => Verdict::PerEvent(Some(vec![field()])),
            None => Verdict::DenyAll("legacy filter (0.1): anonymous".into()),
        }
    }

    fn decide(event: Event, groups: Vec<Subscription>) -> Vec<Decision> {
        let data: Value = serde_json::from_str(&event.data).unwrap_or(Value::Null);
        let owner = match data.get(field()) {
            Some(Value::String(s)) => Some(s.clone()),
            Some(Value::Number(n)) => Some(n.to_string()),
            _ => None,
        };
        groups
            .iter()
            .map(|g| match (&owner, &g.principal.subject) {
                (Some(owner), Some(me)) if owner == me => Decision::Allow,
                _ => Decision::Deny("legacy filter (0.1): not the subscriber's row".into()),
            })
            .collect()
    }
}

export!(Filter);
