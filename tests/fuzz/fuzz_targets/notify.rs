//! PostgreSQL NOTIFY payloads through `fanwire_bus::postgres::notification_event`.
//! The input is `channel \n payload`.
//!
//! Checks: a payload is refused exactly when it is not JSON; a
//! `/publish`-shaped object (non-empty string `topic`, `data`, optional
//! string-or-null `id`, nothing else) is that event; any other JSON is the
//! `data` of an event on the channel's topic.

#![no_main]

use fanwire_bus::postgres::notification_event;
use libfuzzer_sys::fuzz_target;
use serde_json::Value;

fuzz_target!(|data: &[u8]| {
    let Ok(text) = std::str::from_utf8(data) else {
        return;
    };
    let (channel, payload) = text.split_once('\n').unwrap_or(("ch", text));
    let result = notification_event(channel, payload);
    let Ok(value) = serde_json::from_str::<Value>(payload) else {
        let reason = result.expect_err("a payload that is not JSON is refused");
        assert!(reason.contains("not JSON"), "{reason}");
        return;
    };
    let event = result.expect("a JSON payload is an event");
    assert_eq!(
        event.seq, None,
        "a notification never carries a sequence number"
    );
    match shaped(&value) {
        Some((topic, id)) => {
            assert_eq!(event.topic, topic);
            assert_eq!(event.data, value["data"]);
            assert_eq!(event.id, id);
        }
        None => {
            assert_eq!(event.topic, channel);
            assert_eq!(event.data, value);
            assert_eq!(event.id, None);
        }
    }
});

/// The topic and id of a `/publish`-shaped object.
fn shaped(value: &Value) -> Option<(String, Option<String>)> {
    let obj = value.as_object()?;
    if !obj.contains_key("data")
        || !obj
            .keys()
            .all(|k| matches!(k.as_str(), "topic" | "data" | "id"))
    {
        return None;
    }
    let topic = obj.get("topic")?.as_str().filter(|t| !t.is_empty())?;
    let id = match obj.get("id") {
        None | Some(Value::Null) => None,
        Some(Value::String(s)) => Some(s.clone()),
        Some(_) => return None,
    };
    Some((topic.to_owned(), id))
}
