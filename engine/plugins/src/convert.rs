//! Core values to WIT values and back (JSON crosses as text).

use fanwire_core::hooks::GroupInfo;
use fanwire_core::{Event, Principal};
use std::collections::BTreeMap;

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

/// The parts of an event's data a filter asked for: dotted paths as a tree,
/// built once when the paths change and walked per event.
#[derive(Debug, Clone, Default, PartialEq)]
pub(crate) struct Shape(BTreeMap<String, Part>);

#[derive(Debug, Clone, PartialEq)]
enum Part {
    /// The whole value.
    Whole,
    /// Only these members of it (when it is an object).
    Members(Shape),
}

impl Shape {
    /// The tree of `paths` (a path that is a prefix of another takes the
    /// whole value).
    pub(crate) fn of<'a>(paths: impl IntoIterator<Item = &'a String>) -> Shape {
        let mut shape = Shape::default();
        for path in paths {
            shape.add(&path.split('.').collect::<Vec<_>>());
        }
        shape
    }

    fn add(&mut self, keys: &[&str]) {
        let Some((key, rest)) = keys.split_first() else {
            return;
        };
        if rest.is_empty() {
            self.0.insert((*key).to_owned(), Part::Whole);
            return;
        }
        match self
            .0
            .entry((*key).to_owned())
            .or_insert_with(|| Part::Members(Shape::default()))
        {
            Part::Whole => {}
            Part::Members(inner) => inner.add(rest),
        }
    }

    /// Writes the members of `object` this shape names, as a JSON object.
    fn write(&self, object: &Map<String, Value>, out: &mut Vec<u8>) {
        out.push(b'{');
        let mut first = true;
        for (key, part) in &self.0 {
            let Some(value) = object.get(key) else {
                continue;
            };
            if !first {
                out.push(b',');
            }
            first = false;
            write_json(out, key);
            out.push(b':');
            match (part, value) {
                (Part::Members(inner), Value::Object(members)) => inner.write(members, out),
                _ => write_json(out, value),
            }
        }
        out.push(b'}');
    }
}

fn write_json<T: serde::Serialize + ?Sized>(out: &mut Vec<u8>, value: &T) {
    // Writing JSON values and strings into a Vec cannot fail.
    let _ = serde_json::to_writer(out, value);
}

/// The event with only the `shape` of its data (all of it for `None`),
/// serialised straight from the event, without an intermediate value.
pub(crate) fn event(e: &Event, shape: Option<&Shape>) -> types::Event {
    let data = match (shape, &e.data) {
        (Some(shape), Value::Object(object)) => {
            let mut out = Vec::with_capacity(64);
            shape.write(object, &mut out);
            // serde_json writes UTF-8 only.
            String::from_utf8(out).unwrap_or_else(|_| "{}".into())
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
            "big.0".into(),
        ];
        let sent: Value = serde_json::from_str(&event(&e, Some(&Shape::of(&paths))).data).unwrap();
        // A path through a non-object takes the whole value, as before.
        assert_eq!(
            sent,
            json!({"tenant_id": 5, "owner": {"id": "u1"}, "big": [1, 2, 3]})
        );
        let all: Value = serde_json::from_str(&event(&e, None).data).unwrap();
        assert_eq!(all, e.data);
        let none: Value = serde_json::from_str(&event(&e, Some(&Shape::of(&[]))).data).unwrap();
        assert_eq!(none, json!({}));
        // A path that is a prefix of another takes the whole value, in
        // either order.
        for paths in [["owner", "owner.id"], ["owner.id", "owner"]] {
            let paths: Vec<String> = paths.iter().map(|p| p.to_string()).collect();
            let sent: Value =
                serde_json::from_str(&event(&e, Some(&Shape::of(&paths))).data).unwrap();
            assert_eq!(sent, json!({"owner": {"id": "u1", "name": "x"}}));
        }
        // Keys are escaped.
        let odd = Event::new("t", json!({"a\"b": "q\"uote", "n": null}));
        let paths = vec!["a\"b".to_owned(), "n".into()];
        let sent: Value =
            serde_json::from_str(&event(&odd, Some(&Shape::of(&paths))).data).unwrap();
        assert_eq!(sent, odd.data);
    }
}
