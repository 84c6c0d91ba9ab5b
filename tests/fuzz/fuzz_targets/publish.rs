//! `POST /publish` bodies through `fanwire_server::publish::parse_events`.
//!
//! Checks: a body is accepted exactly when it is one event object or a
//! non-empty array of them, an event being an object with a non-empty
//! string `topic`, a `data` member, an optional string-or-null `id`, an
//! optional unsigned-integer-or-null `seq` and nothing else; the events
//! returned are those members; and they survive a round trip through JSON.

#![no_main]

use fanwire_core::Event;
use libfuzzer_sys::fuzz_target;
use serde_json::{Map, Value};

// Compiled in from the server rather than depending on fanwire-server,
// which would build wasmtime and hyper under the sanitizer.
#[path = "../../../engine/server/src/publish.rs"]
mod publish;

fuzz_target!(|body: &[u8]| {
    let parsed = publish::parse_events(body);
    let expected = expected(body);
    match (&parsed, &expected) {
        (Ok(events), Some(want)) => {
            assert_eq!(events, want, "events differ from the body's members");
            let text = serde_json::to_vec(events).expect("events serialise");
            let again = publish::parse_events(&text).expect("serialised events parse again");
            assert_eq!(&again, events, "round trip through JSON");
        }
        (Err(reason), None) => assert!(!reason.is_empty(), "a refusal without a reason"),
        (Ok(events), None) => panic!("accepted an invalid body as {events:?}"),
        (Err(reason), Some(_)) => panic!("refused a valid body: {reason}"),
    }
});

/// The events a valid body stands for, by the documented rules; `None`
/// for an invalid body.
fn expected(body: &[u8]) -> Option<Vec<Event>> {
    let items = match serde_json::from_slice::<Value>(body).ok()? {
        Value::Array(items) if !items.is_empty() => items,
        single @ Value::Object(_) => vec![single],
        _ => return None,
    };
    items.iter().map(event).collect()
}

fn event(item: &Value) -> Option<Event> {
    let obj: &Map<String, Value> = item.as_object()?;
    if !obj
        .keys()
        .all(|k| matches!(k.as_str(), "topic" | "data" | "id" | "seq"))
    {
        return None;
    }
    let topic = obj.get("topic")?.as_str().filter(|t| !t.is_empty())?;
    let data = obj.get("data")?.clone();
    let id = match obj.get("id") {
        None | Some(Value::Null) => None,
        Some(Value::String(s)) => Some(s.clone()),
        Some(_) => return None,
    };
    let seq = match obj.get("seq") {
        None | Some(Value::Null) => None,
        Some(n) => Some(n.as_u64()?),
    };
    Some(Event {
        topic: topic.to_owned(),
        data,
        id,
        seq,
    })
}
