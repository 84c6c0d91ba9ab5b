//! Security module 1, the row filter: an event reaches a subscriber only when
//! its `user_id` equals the subscriber's subject. A missing, null or
//! different value drops the event; a subscriber with no subject receives
//! nothing (its subscriptions end with an error).
//!
//! Config: `field` (default `user_id`), the dotted path of the owner's id.

use fanwire_sdk::{host, id_str, Decision, Event, EventFilter, Subscription, Verdict};

fn field() -> &'static str {
    host::config()
        .get("field")
        .and_then(|v| v.as_str())
        .unwrap_or("user_id")
}

struct RowFilter;

impl EventFilter for RowFilter {
    fn prepare(group: &Subscription) -> Verdict {
        match &group.principal.subject {
            // The subject is all a decision depends on: groups of one user
            // share one decision per event.
            Some(me) => Verdict::per_event([field()]).with_context(me),
            None => Verdict::deny_all("row filter: an anonymous subscriber owns no rows"),
        }
    }

    fn decide(event: &Event, me: &str) -> Decision {
        match event.get(field()).and_then(id_str) {
            Some(owner) if owner == me => Decision::Allow,
            None => Decision::deny("row filter: the event names no owner"),
            _ => Decision::deny("row filter: another user's event"),
        }
    }
}

fanwire_sdk::export_filter!(RowFilter);
