//! Security module 5, federation context: an event reaches a subscription
//! only within the subscription's federation context. The context is the
//! `federationId` argument or variable of the subscription, else the
//! principal's `federation_id` claim; the event's `federation_id` must equal
//! it (missing = drop). When the subscription also names a service (a
//! `service` argument or variable, else the `service` claim), the event's
//! `service` must equal it too. A subscription with no context receives
//! nothing (it ends with an error).

use fanwire_sdk::{id_text, json, serde_json, Decision, Event, EventFilter, Subscription, Verdict};

/// The subscription's value for `key` (argument, variable), else the claim `claim`.
fn context(s: &Subscription, key: &str, claim: &str) -> Option<String> {
    s.arguments
        .field(key)
        .or_else(|| s.variables.field(key))
        .or_else(|| s.principal.claims.field(claim))
        .and_then(id_text)
}

struct Federation;

impl EventFilter for Federation {
    fn prepare(group: &Subscription) -> Verdict {
        let Some(federation) = context(group, "federationId", "federation_id") else {
            return Verdict::deny_all("federation context: the subscription has no federation id");
        };
        // Two values, so the context is a JSON pair: `["fed-a", "billing"]`
        // (`null` for no service).
        let service = context(group, "service", "service");
        Verdict::per_event(["federation_id", "service"])
            .with_context(json!([federation, service]).to_string())
    }

    fn decide(event: &Event, context: &str) -> Decision {
        let Ok((federation, service)) = serde_json::from_str::<(String, Option<String>)>(context)
        else {
            return Decision::deny("federation context: unreadable context");
        };
        if event.get("federation_id").and_then(id_text).as_deref() != Some(federation.as_str()) {
            return Decision::deny("federation context: another federation's event");
        }
        if let Some(service) = service {
            if event.get("service").and_then(id_text).as_deref() != Some(service.as_str()) {
                return Decision::deny("federation context: another service's event");
            }
        }
        Decision::Allow
    }
}

fanwire_sdk::export_filter!(Federation);
