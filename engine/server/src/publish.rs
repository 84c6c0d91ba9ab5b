//! `POST /publish`: events from backends, all-or-nothing per request.

use fanwire_core::Event;
use serde_json::Value;

/// Parses a publish body: one event object or an array of them. Every
/// event is checked before any is published, so a bad body publishes nothing.
pub fn parse_events(body: &[u8]) -> Result<Vec<Event>, String> {
    let value: Value =
        serde_json::from_slice(body).map_err(|e| format!("body is not valid JSON: {e}"))?;
    let items = match value {
        Value::Array(items) => items,
        single @ Value::Object(_) => vec![single],
        _ => return Err("body must be an event object or an array of event objects".into()),
    };
    if items.is_empty() {
        return Err("body is an empty array: nothing to publish".into());
    }
    items
        .into_iter()
        .enumerate()
        .map(|(i, item)| {
            let at = |msg: String| format!("event {i}: {msg}");
            let Value::Object(ref obj) = item else {
                return Err(at("must be an object with \"topic\" and \"data\"".into()));
            };
            if !obj.contains_key("data") {
                return Err(at("\"data\" is required".into()));
            }
            let event: Event = serde_json::from_value(item).map_err(|e| at(e.to_string()))?;
            if event.topic.is_empty() {
                return Err(at("\"topic\" must not be empty".into()));
            }
            Ok(event)
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn single_and_batch_bodies_parse() {
        assert_eq!(parse_events(br#"{"topic":"t","data":1}"#).unwrap().len(), 1);
        let batch =
            parse_events(br#"[{"topic":"a","data":null,"id":"x"},{"topic":"b","data":{}}]"#)
                .unwrap();
        assert_eq!(batch[0].id.as_deref(), Some("x"));
        assert_eq!(batch[1].topic, "b");
    }

    #[test]
    fn bad_bodies_say_which_event_and_why() {
        for (body, needle) in [
            (&b"{"[..], "not valid JSON"),
            (b"3", "must be an event object"),
            (b"[]", "empty array"),
            (
                br#"[{"topic":"a","data":1},{"topic":"b"}]"#,
                "event 1: \"data\" is required",
            ),
            (br#"{"topic":"","data":1}"#, "must not be empty"),
            (br#"{"topic":5,"data":1}"#, "event 0"),
            (br#"{"topic":"a","data":1,"extra":1}"#, "unknown field"),
        ] {
            let err = parse_events(body).unwrap_err();
            assert!(err.contains(needle), "{err:?} should contain {needle:?}");
        }
    }
}
