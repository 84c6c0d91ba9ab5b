//! What crosses the WIT boundary as text or paths, read and written with
//! no wasmtime types: JSON a plugin returns (claims, an ack, a filter's
//! replacement), the dotted paths a filter asks for, and the event data
//! sent to it. `convert` maps the WIT records onto these.
//!
//! This file depends only on `fanwire_core`, `serde_json` and `std`, so the
//! fuzz target `tests/fuzz` compiles it alone (`#[path]`), without building
//! wasmtime under the sanitizer.

use std::collections::BTreeMap;

use fanwire_core::hooks::Decision;
use fanwire_core::{Event, Principal};
use serde_json::{Map, Value};

/// The deepest path a filter can ask for, in segments. JSON deeper than
/// serde_json's parse limit (128) cannot arrive, and a longer path is cut
/// here: its last kept segment then takes the whole value, a superset of
/// what was asked, which is always correct. Without the cut, a plugin's
/// path of a million dots would build (and drop) a million nested maps
/// recursively and overflow the stack.
pub(crate) const MAX_PATH_SEGMENTS: usize = 128;

/// A JSON object sent by a plugin; anything else reads as empty.
pub(crate) fn object(text: &str) -> Map<String, Value> {
    match serde_json::from_str(text) {
        Ok(Value::Object(map)) => map,
        _ => Map::new(),
    }
}

/// A connection policy's ack payload: sent when it is JSON, dropped otherwise.
pub(crate) fn ack(text: Option<&str>) -> Option<Value> {
    text.and_then(|a| serde_json::from_str::<Value>(a).ok())
}

/// A filter's `replace` answer: the new data, or a denial when the text is
/// not JSON (fail closed).
pub(crate) fn replacement(text: &str) -> Decision {
    match serde_json::from_str(text) {
        Ok(value) => Decision::Replace(value),
        Err(e) => Decision::Deny(format!("replacement is not JSON: {e}")),
    }
}

/// The principal a connection policy returned; `claims` is JSON object text.
pub(crate) fn principal(
    subject: Option<String>,
    tenant: Option<String>,
    roles: Vec<String>,
    claims: &str,
    expires_at: Option<u64>,
) -> Principal {
    Principal {
        subject,
        tenant,
        roles,
        claims: object(claims),
        expires_at,
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
    /// whole value; see [`MAX_PATH_SEGMENTS`] for very long paths).
    pub(crate) fn of<'a>(paths: impl IntoIterator<Item = &'a String>) -> Shape {
        let mut shape = Shape::default();
        for path in paths {
            let keys: Vec<&str> = path.split('.').take(MAX_PATH_SEGMENTS).collect();
            shape.add(&keys);
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

/// An event's data as JSON text, only the `shape` of it (all of it for
/// `None`), serialised straight from the event, without an intermediate value.
pub(crate) fn event_data(e: &Event, shape: Option<&Shape>) -> String {
    match (shape, &e.data) {
        (Some(shape), Value::Object(object)) => {
            let mut out = Vec::with_capacity(64);
            shape.write(object, &mut out);
            // serde_json writes UTF-8 only.
            String::from_utf8(out).unwrap_or_else(|_| "{}".into())
        }
        // Serialising a JSON value cannot fail.
        _ => serde_json::to_string(&e.data).unwrap_or_else(|_| "null".into()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn shaped(e: &Event, paths: &[&str]) -> Value {
        let paths: Vec<String> = paths.iter().map(|p| p.to_string()).collect();
        serde_json::from_str(&event_data(e, Some(&Shape::of(&paths)))).unwrap()
    }

    #[test]
    fn events_carry_only_the_paths_asked_for() {
        let e = Event::new(
            "t",
            json!({"tenant_id": 5, "owner": {"id": "u1", "name": "x"}, "big": [1, 2, 3]}),
        );
        // A path through a non-object takes the whole value, as before.
        assert_eq!(
            shaped(&e, &["tenant_id", "owner.id", "missing.x", "big.0"]),
            json!({"tenant_id": 5, "owner": {"id": "u1"}, "big": [1, 2, 3]})
        );
        let all: Value = serde_json::from_str(&event_data(&e, None)).unwrap();
        assert_eq!(all, e.data);
        assert_eq!(shaped(&e, &[]), json!({}));
        // A path that is a prefix of another takes the whole value, in
        // either order.
        for paths in [["owner", "owner.id"], ["owner.id", "owner"]] {
            assert_eq!(
                shaped(&e, &paths),
                json!({"owner": {"id": "u1", "name": "x"}})
            );
        }
        // Keys are escaped.
        let odd = Event::new("t", json!({"a\"b": "q\"uote", "n": null}));
        assert_eq!(shaped(&odd, &["a\"b", "n"]), odd.data);
    }

    #[test]
    fn a_path_of_a_million_segments_is_cut_not_a_stack_overflow() {
        let mut data = json!(1);
        for _ in 0..MAX_PATH_SEGMENTS + 2 {
            data = json!({ "a": data });
        }
        let e = Event::new("t", data.clone());
        let paths = vec![vec!["a"; 1_000_000].join(".")];
        // Cut at MAX_PATH_SEGMENTS: the last kept segment takes the whole
        // value. (Compared as text: the value nests deeper than serde_json
        // parses.)
        assert_eq!(
            event_data(&e, Some(&Shape::of(&paths))),
            serde_json::to_string(&data).unwrap()
        );
    }

    #[test]
    fn guest_json_that_is_not_what_was_asked_for_is_refused_or_empty() {
        assert_eq!(object("[1]"), Map::new());
        assert_eq!(object("not json"), Map::new());
        assert_eq!(ack(Some("{\"a\":1}")), Some(json!({"a": 1})));
        assert_eq!(ack(Some("{")), None);
        assert_eq!(replacement("[1]"), Decision::Replace(json!([1])));
        assert!(matches!(replacement("{"), Decision::Deny(r) if r.contains("not JSON")));
    }
}
