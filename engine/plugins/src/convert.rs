//! Core values to WIT values and back (JSON crosses as text; `guest`
//! reads and writes that text).

use fanwire_core::hooks::GroupInfo;
use fanwire_core::{Event, Principal};

use crate::bindings::v0_1::types;
use crate::guest::{self, Shape};

pub(crate) fn json<T: serde::Serialize>(value: &T) -> String {
    // Serialising maps of JSON values cannot fail.
    serde_json::to_string(value).unwrap_or_else(|_| "{}".into())
}

pub(crate) fn principal(p: &Principal) -> types::Principal {
    types::Principal {
        subject: p.subject.clone(),
        tenant: p.tenant.clone(),
        roles: p.roles.clone(),
        claims: json(&p.claims),
        expires_at: p.expires_at,
    }
}

pub(crate) fn principal_from(p: types::Principal) -> Principal {
    guest::principal(p.subject, p.tenant, p.roles, &p.claims, p.expires_at)
}

pub(crate) fn subscription(g: &GroupInfo) -> types::Subscription {
    types::Subscription {
        field: g.field.clone(),
        topic: g.topic.clone(),
        arguments: json(&g.arguments),
        variables: json(&g.variables),
        operation_name: g.operation_name.clone(),
        selected_paths: g.selected_paths.clone(),
        principal: principal(&g.principal),
    }
}

/// The event with only the `shape` of its data (all of it for `None`).
pub(crate) fn event(e: &Event, shape: Option<&Shape>) -> types::Event {
    types::Event {
        topic: e.topic.clone(),
        data: guest::event_data(e, shape),
        id: e.id.clone(),
        seq: e.seq,
    }
}
