//! Security module 2, tenant isolation: an event reaches a subscriber only
//! when its `tenant_id` equals the subscriber's tenant; an event with no
//! tenant is dropped, and a subscriber with no tenant receives nothing.
//!
//! Config: `single_tenant = true` turns the module off (every event passes,
//! at no per-event cost); `field` (default `tenant_id`) is the dotted path of
//! the event's tenant.

use fanwire_sdk::{host, id_str, Decision, Event, EventFilter, Subscription, Verdict};

fn field() -> &'static str {
    host::config()
        .get("field")
        .and_then(|v| v.as_str())
        .unwrap_or("tenant_id")
}

struct TenantIsolation;

impl EventFilter for TenantIsolation {
    fn prepare(group: &Subscription) -> Verdict {
        let single = host::config()
            .get("single_tenant")
            .and_then(|v| v.as_bool())
            .unwrap_or(false);
        match &group.principal.tenant {
            _ if single => Verdict::AllowAll,
            None => Verdict::deny_all("tenant isolation: the subscriber belongs to no tenant"),
            Some(mine) => Verdict::per_event([field()]).with_context(mine),
        }
    }

    fn decide(event: &Event, mine: &str) -> Decision {
        match event.get(field()).and_then(id_str) {
            Some(t) if t == mine => Decision::Allow,
            None => Decision::deny("tenant isolation: the event names no tenant"),
            _ => Decision::deny("tenant isolation: another tenant's event"),
        }
    }
}

fanwire_sdk::export_filter!(TenantIsolation);
