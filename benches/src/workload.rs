//! What the load generator sends: `subscribe` messages and tick events,
//! both shaped by `benches/schema.graphql`.

use serde_json::json;

/// The `subscribe` message for client `client`, which uses selection
/// variant `client % distinct`.
///
/// Variant 0 is the plain selection; variant `k > 0` aliases the root field
/// `t{k}`, which projects to different bytes and so lands in its own group
/// on a server that groups identical subscriptions.
pub fn subscribe_message(id: &str, topic: &str, client: usize, distinct: usize) -> String {
    let variant = client % distinct.max(1);
    let alias = if variant == 0 {
        String::new()
    } else {
        format!("t{variant}: ")
    };
    let query = format!(
        "subscription Ticks($topic: String!) {{ {alias}tick(topic: $topic) {{ seq ts pad }} }}"
    );
    json!({
        "id": id,
        "type": "subscribe",
        "payload": {
            "query": query,
            "operationName": "Ticks",
            "variables": { "topic": topic },
        },
    })
    .to_string()
}

/// The length of `pad` that makes a tick's `data` about `payload_bytes`
/// long when serialised (a tick without padding is ~45 bytes).
pub fn pad_for(payload_bytes: usize) -> String {
    const BARE: usize = r#"{"seq":1000,"ts":1700000000000000,"pad":""}"#.len();
    "x".repeat(payload_bytes.saturating_sub(BARE))
}

/// Appends one event object (`{"topic","data"}`) to `out`.
pub fn write_event(out: &mut String, topic: &str, seq: i64, ts_us: u64, pad: &str) {
    use std::fmt::Write;
    // `topic` and `pad` are ours: plain ASCII with nothing to escape.
    let _ = write!(
        out,
        r#"{{"topic":"{topic}","data":{{"seq":{seq},"ts":{ts_us},"pad":"{pad}"}}}}"#
    );
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn events_are_valid_json_of_about_the_requested_size() {
        let pad = pad_for(200);
        let mut body = String::new();
        write_event(&mut body, "bench", 1234, 1_700_000_000_000_000, &pad);
        let v: serde_json::Value = serde_json::from_str(&body).unwrap();
        assert_eq!(v["data"]["seq"], 1234);
        let data_len = v["data"].to_string().len();
        assert!((195..=205).contains(&data_len), "{data_len}");
    }

    #[test]
    fn variants_alias_the_root_field() {
        let plain = subscribe_message("1", "bench", 3, 1);
        assert!(plain.contains("{ tick(topic: $topic)"));
        let aliased = subscribe_message("1", "bench", 3, 2);
        assert!(aliased.contains("{ t1: tick(topic: $topic)"));
        let v: serde_json::Value = serde_json::from_str(&aliased).unwrap();
        assert_eq!(v["payload"]["variables"]["topic"], "bench");
    }
}
