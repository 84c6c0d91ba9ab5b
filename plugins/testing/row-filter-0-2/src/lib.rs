//! Test plugin: an event filter for `fanwire:plugin@0.2.0`, written against
//! the 0.2 bindings directly, as plugins built before 0.3 were. A row
//! filter: `prepare` gives each group its subject as the context, and
//! `decide` compares the event's `user_id` (config `field`) with each
//! context. The host must keep loading it next to 0.1 and 0.3 plugins and
//! decide with it correctly.

wit_bindgen::generate!({ path: "../../../wit/v0.2.0", world: "event-filter" });

use exports::fanwire::plugin::filter::{Decision, Guest, PerEvent, Verdict};
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
            Some(subject) => Verdict::PerEvent(PerEvent {
                fields: Some(vec![field()]),
                context: subject,
            }),
            None => Verdict::DenyAll("row filter (0.2): anonymous".into()),
        }
    }

    fn decide(event: Event, contexts: Vec<String>) -> Vec<Decision> {
        let data: Value = serde_json::from_str(&event.data).unwrap_or(Value::Null);
        let owner = match data.get(field()) {
            Some(Value::String(s)) => Some(s.clone()),
            Some(Value::Number(n)) => Some(n.to_string()),
            _ => None,
        };
        contexts
            .iter()
            .map(|me| match &owner {
                Some(owner) if owner == me => Decision::Allow,
                _ => Decision::Deny("row filter (0.2): not the subscriber's row".into()),
            })
            .collect()
    }
}

export!(Filter);
