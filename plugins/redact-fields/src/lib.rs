//! Example filter: removes fields a subscriber may not see instead of
//! dropping the event. A group whose principal holds every needed permission
//! costs nothing per event; the others get the same redaction each event.
//!
//! Config: `fields`: dotted path of the event's data -> permission needed to
//! see it, e.g. `{ "customer.email" = "pii:read" }`.

use fanwire_sdk::{host, Decision, Event, EventFilter, Subscription, Value, Verdict};

/// The configured paths this principal may not see.
fn hidden(group: &Subscription) -> Vec<String> {
    let Some(fields) = host::config().get("fields").and_then(Value::as_object) else {
        return Vec::new();
    };
    fields
        .iter()
        .filter(|(_, permission)| {
            !permission
                .as_str()
                .is_some_and(|p| group.principal.has_role(p))
        })
        .map(|(path, _)| path.clone())
        .collect()
}

struct RedactFields;

impl EventFilter for RedactFields {
    fn prepare(group: &Subscription) -> Verdict {
        let hidden = hidden(group);
        if hidden.is_empty() {
            Verdict::AllowAll
        } else {
            // The decision does not read the event (ask for none of its
            // data) and depends only on what is hidden: one decision per
            // distinct set of hidden fields.
            Verdict::per_event::<[&str; 0], &str>([]).with_context(hidden.join("\n"))
        }
    }

    fn decide(_: &Event, hidden: &str) -> Decision {
        Decision::Redact(hidden.split('\n').map(str::to_owned).collect())
    }
}

fanwire_sdk::export_filter!(RedactFields);
