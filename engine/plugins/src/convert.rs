//! Core values to WIT values and back (JSON crosses as text).

use fanwire_core::hooks::GroupInfo;
use fanwire_core::{Event, Principal};
use serde_json::{Map, Value};

use crate::bindings::v0_1::types;

fn json<T: serde::Serialize>(value: &T) -> String {
    // Serialising maps of JSON values cannot fail.
    serde_json::to_string(value).unwrap_or_else(|_| "{}".into())
}

/// A JSON object sent by a plugin; anything else reads as empty.
pub(crate) fn object(text: &str) -> Map<String, Value> {
    match serde_json::from_str(text) {
        Ok(Value::Object(map)) => map,
        _ => Map::new(),
    }
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
    Principal {
        subject: p.subject,
        tenant: p.tenant,
        roles: p.roles,
        claims: object(&p.claims),
        expires_at: p.expires_at,
    }
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

/// The event with only `paths` of its data (all of it for `None`).
pub(crate) fn event(e: &Event, paths: Option<&[String]>) -> types::Event {
    let data = match (paths, &e.data) {
        (Some(paths), Value::Object(_)) => {
            let mut out = Value::Object(Map::new());
            for path in paths {
                copy_path(&e.data, &mut out, &path.split('.').collect::<Vec<_>>());
            }
            json(&out)
        }
        _ => json(&e.data),
    };
    types::Event {
        topic: e.topic.clone(),
        data,
        id: e.id.clone(),
        seq: e.seq,
    }
}

/// Copies the value at `path` of `from` into the same place of `to`.
fn copy_path(from: &Value, to: &mut Value, path: &[&str]) {
    let (Some((head, rest)), Value::Object(src), Value::Object(dst)) =
        (path.split_first(), from, to)
    else {
        return;
    };
    let Some(inner) = src.get(*head) else {
        return;
    };
    if rest.is_empty() || !inner.is_object() {
        dst.insert((*head).to_owned(), inner.clone());
        return;
    }
    let slot = dst
        .entry((*head).to_owned())
        .or_insert_with(|| Value::Object(Map::new()));
    copy_path(inner, slot, rest);
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn events_carry_only_the_paths_asked_for() {
        let e = Event::new(
            "t",
            json!({"tenant_id": 5, "owner": {"id": "u1", "name": "x"}, "big": [1, 2, 3]}),
        );
        let paths = vec![
            "tenant_id".to_owned(),
            "owner.id".into(),
            "missing.x".into(),
        ];
        let sent: Value = serde_json::from_str(&event(&e, Some(&paths)).data).unwrap();
        assert_eq!(sent, json!({"tenant_id": 5, "owner": {"id": "u1"}}));
        let all: Value = serde_json::from_str(&event(&e, None).data).unwrap();
        assert_eq!(all, e.data);
        let none: Value = serde_json::from_str(&event(&e, Some(&[])).data).unwrap();
        assert_eq!(none, json!({}));
    }
}
