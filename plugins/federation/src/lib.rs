//! Security module 5, federation context: an event reaches a subscription
//! only within the subscription's federation context. The context is the
//! `federationId` argument or variable of the subscription, else the
//! principal's `federation_id` claim; the event's `federation_id` must equal
//! it (missing = drop). When the subscription also names a service (a
//! `service` argument or variable, else the `service` claim), the event's
//! `service` must equal it too. A subscription with no context receives
//! nothing (it ends with an error).

use std::cell::RefCell;

use fanwire_sdk::{
    id_str, id_text, json, serde_json, Decision, Event, EventFilter, Subscription, Verdict,
};

/// A context as `prepare` wrote it: the federation and the service, if any.
type Context = (String, Option<String>);

thread_local! {
    // The last context read, with its text: an instance usually decides for
    // the same few contexts event after event, so each is parsed once.
    static LAST: RefCell<Option<(String, Context)>> = const { RefCell::new(None) };
}

/// `f` of `context` parsed, or `None` when it is not a context `prepare` wrote.
fn with_context<R>(context: &str, f: impl FnOnce(&Context) -> R) -> Option<R> {
    LAST.with(|last| {
        let mut last = last.borrow_mut();
        match last.as_ref() {
            Some((text, parsed)) if text == context => Some(f(parsed)),
            _ => {
                let parsed: Context = serde_json::from_str(context).ok()?;
                let answer = f(&parsed);
                *last = Some((context.to_owned(), parsed));
                Some(answer)
            }
        }
    })
}

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
        with_context(context, |(federation, service)| {
            if event.get("federation_id").and_then(id_str).as_deref() != Some(federation.as_str()) {
                return Decision::deny("federation context: another federation's event");
            }
            if let Some(service) = service {
                if event.get("service").and_then(id_str).as_deref() != Some(service.as_str()) {
                    return Decision::deny("federation context: another service's event");
                }
            }
            Decision::Allow
        })
        .unwrap_or_else(|| Decision::deny("federation context: unreadable context"))
    }
}

fanwire_sdk::export_filter!(Federation);
