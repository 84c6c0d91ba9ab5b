//! What a plugin returns across the WIT boundary, through the host's
//! conversion (`engine/plugins/src/guest.rs`) and on into the engine.
//! The input is lines: event data JSON, the filter's requested paths
//! (tab-separated), a `replace` answer, principal claims, `expires-at`,
//! an ack payload, `redact` paths (tab-separated), roles (tab-separated).
//!
//! Checks: the event data sent to a filter is JSON and exactly the members
//! its paths name; a replacement is the JSON given or a denial; claims and
//! ack are the JSON given or empty; redaction only removes and is
//! idempotent; a principal's fingerprint ignores role order; a connection
//! accepted with the plugin's principal answers, subscribes, receives
//! well-formed results and leaves nothing behind.

#![no_main]

use std::collections::BTreeMap;

use fanwire_core::fuzzing::redact;
use fanwire_core::hooks::Decision;
use fanwire_core::protocol::Protocol;
use fanwire_core::Event;
use fanwire_core::testing::publish_now;
use fanwire_fuzz::{assert_engine_empty, fixture, Checked};
use libfuzzer_sys::fuzz_target;
use serde_json::{Map, Value};

// Compiled in from the plugin runtime rather than depending on
// fanwire-plugins, which would build wasmtime under the sanitizer.
#[allow(dead_code)]
#[path = "../../../engine/plugins/src/guest.rs"]
mod guest;

fuzz_target!(|data: &[u8]| {
    let Ok(text) = std::str::from_utf8(data) else {
        return;
    };
    let mut lines = text.split('\n');
    let mut next = || lines.next().unwrap_or_default();
    let (data, paths, replace, claims, expires_at, ack, redacted, roles) = (
        next(),
        next(),
        next(),
        next(),
        next(),
        next(),
        next(),
        next(),
    );
    let data = serde_json::from_str(data).unwrap_or(Value::Null);
    let event = Event::new("orders:1", data);
    let split = |line: &str| -> Vec<String> {
        if line.is_empty() {
            Vec::new()
        } else {
            line.split('\t').map(str::to_owned).collect()
        }
    };

    check_shape(&event, &split(paths));

    let parsed = serde_json::from_str::<Value>(replace);
    match (guest::replacement(replace), parsed) {
        (Decision::Replace(v), Ok(want)) => assert_eq!(v, want),
        (Decision::Deny(reason), Err(_)) => assert!(!reason.is_empty()),
        (d, p) => panic!("replacement {replace:?} became {d:?} (parsed: {p:?})"),
    }
    let ack_value = guest::ack(Some(ack));
    assert_eq!(ack_value, serde_json::from_str::<Value>(ack).ok());
    match serde_json::from_str::<Value>(claims) {
        Ok(Value::Object(map)) => assert_eq!(guest::object(claims), map),
        _ => assert_eq!(guest::object(claims), Map::new()),
    }

    let mut value = event.data.clone();
    let before = serde_json::to_vec(&value).map(|v| v.len()).unwrap_or(0);
    for path in split(redacted) {
        redact(&mut value, &path);
        let once = value.clone();
        redact(&mut value, &path);
        assert_eq!(value, once, "redacting {path:?} twice differs from once");
    }
    let after = serde_json::to_vec(&value).map(|v| v.len()).unwrap_or(0);
    assert!(after <= before, "redaction grew the data");

    let principal = guest::principal(
        Some("subject".into()),
        None,
        split(roles),
        claims,
        expires_at.trim().parse().ok(),
    );
    let mut reversed = principal.clone();
    reversed.roles.reverse();
    assert_eq!(principal.fingerprint(), reversed.fingerprint());

    let fixture = fixture();
    fixture.policy.set_principal(principal.clone());
    let mut conn = fixture.engine.connect(Protocol::TransportWs);
    let mut checked = Checked::default();
    let init = serde_json::json!({"type": "connection_init", "payload": {"ack": ack_value}});
    let init = init.to_string();
    conn.on_text(&init);
    checked.drain(&conn);
    // An ack nested past serde_json's recursion limit makes the init itself
    // unreadable: the connection is refused (4400) and keeps no principal.
    if serde_json::from_str::<Value>(&init).is_ok() {
        assert_eq!(conn.principal(), &principal);
    }
    // The host arms the expiry timer with this.
    let _ = conn.expires_at();
    conn.on_text(
        r#"{"id":"1","type":"subscribe","payload":{"query":"subscription { orderCreated(tenantId: \"1\") { id meta customer { name } } }"}}"#,
    );
    publish_now(&fixture.engine, std::slice::from_ref(&event));
    checked.drain(&conn);
    drop(conn);
    assert_engine_empty(&fixture.engine);
});

/// The data sent to a filter that asked for `paths` is exactly what a
/// plain walk of those paths selects.
fn check_shape(event: &Event, paths: &[String]) {
    let sent = guest::event_data(event, Some(&guest::Shape::of(paths)));
    let Ok(sent) = serde_json::from_str::<Value>(&sent) else {
        // Only data nested deeper than serde_json reads back may fail.
        return;
    };
    let cut: Vec<Vec<&str>> = paths
        .iter()
        .map(|p| p.split('.').take(guest::MAX_PATH_SEGMENTS).collect())
        .collect();
    let refs: Vec<&[&str]> = cut.iter().map(Vec::as_slice).collect();
    assert_eq!(sent, project(&event.data, &refs), "paths {paths:?}");
    let all: Value = serde_json::from_str(&guest::event_data(event, None)).unwrap_or(Value::Null);
    if all != Value::Null {
        assert_eq!(all, event.data);
    }
}

fn project(data: &Value, paths: &[&[&str]]) -> Value {
    let Value::Object(obj) = data else {
        return data.clone();
    };
    let mut by_key: BTreeMap<&str, Vec<&[&str]>> = BTreeMap::new();
    for path in paths {
        if let Some((key, rest)) = path.split_first() {
            by_key.entry(key).or_default().push(rest);
        }
    }
    let mut out = Map::new();
    for (key, rests) in by_key {
        let Some(value) = obj.get(key) else {
            continue;
        };
        let whole = rests.iter().any(|r| r.is_empty());
        let part = if whole {
            value.clone()
        } else {
            project(value, &rests)
        };
        out.insert(key.to_owned(), part);
    }
    Value::Object(out)
}
