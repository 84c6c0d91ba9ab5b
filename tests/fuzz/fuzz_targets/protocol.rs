//! Text frames, one per line, through both subprotocols' decoders and
//! through a whole `Connection` of the engine.
//!
//! The first byte picks the connection's subprotocol (even: graphql-transport-ws,
//! odd: legacy graphql-ws). A line starting with `!` is a host event instead
//! of a frame: `!binary`, `!timeout` (init timeout), `!ka`, `!close`,
//! `!expired`, `!revoke <id>`, `!event <topic> <json>` (a publish).
//!
//! Checks: a decoded message encodes back to the same message; server
//! messages for any decoded id encode to JSON with that id; every frame the
//! connection sends is well formed and nothing follows its close; it never
//! holds more subscriptions than the limit; dropping it leaves the engine empty.

#![no_main]

use std::sync::Arc;

use fanwire_core::error::{codes, GraphQLError};
use fanwire_core::protocol::{ClientMessage, Close, CloseCode, Protocol, ServerMessage};
use fanwire_core::Event;
use fanwire_core::testing::publish_now;
use fanwire_fuzz::{assert_engine_empty, fixture, Checked};
use libfuzzer_sys::fuzz_target;
use serde_json::{json, Map, Value};

fuzz_target!(|data: &[u8]| {
    let Some((&first, rest)) = data.split_first() else {
        return;
    };
    let Ok(text) = std::str::from_utf8(rest) else {
        return;
    };
    let protocol = if first % 2 == 0 {
        Protocol::TransportWs
    } else {
        Protocol::Legacy
    };
    let fixture = fixture();
    let engine = &fixture.engine;
    let limit = engine.limits().max_subscriptions_per_connection;
    fixture.policy.set_principal(Default::default());
    let mut conn = engine.connect(protocol);
    let mut checked = Checked::default();
    for line in text.split('\n').take(64) {
        roundtrip(Protocol::TransportWs, line);
        roundtrip(Protocol::Legacy, line);
        match line.strip_prefix('!') {
            Some("binary") => conn.on_binary(),
            Some("timeout") => conn.on_init_timeout(),
            Some("ka") => conn.on_keep_alive(),
            Some("close") => conn.close(Close::new(CloseCode::GoingAway)),
            Some("expired") => conn.on_expired(),
            Some(cmd) if cmd.starts_with("revoke ") => {
                let err = GraphQLError::new("revoked", codes::FORBIDDEN);
                conn.revoke(&cmd["revoke ".len()..], vec![err]);
            }
            Some(cmd) if cmd.starts_with("event ") => {
                let (topic, data) = cmd["event ".len()..]
                    .split_once(' ')
                    .unwrap_or((&cmd["event ".len()..], "null"));
                let data = serde_json::from_str(data).unwrap_or(Value::Null);
                publish_now(&engine, &[Event::new(topic, data)]);
            }
            _ => conn.on_text(line),
        }
        checked.drain(&conn);
        assert!(
            conn.subscription_count() <= limit,
            "{} subscriptions on one connection, limit {limit}",
            conn.subscription_count()
        );
    }
    drop(conn);
    assert_engine_empty(engine);
});

/// Decodes `line`; what decodes must encode back to itself, and the
/// server's answers for its id must be JSON carrying that id.
fn roundtrip(protocol: Protocol, line: &str) {
    let Ok(msg) = protocol.decode(line) else {
        return;
    };
    let again = encode_client(protocol, &msg);
    assert_eq!(
        protocol.decode(&again).as_ref(),
        Ok(&msg),
        "{protocol:?}: {line} re-encoded as {again}"
    );
    let id = match &msg {
        ClientMessage::Subscribe { id, .. } | ClientMessage::Complete { id } => id.clone(),
        _ => return,
    };
    let answers = [
        ServerMessage::Next {
            id: id.clone(),
            payload: Arc::from(&b"{\"data\":null}"[..]),
        },
        ServerMessage::Error {
            id: id.clone(),
            errors: vec![GraphQLError::new(line, codes::BAD_USER_INPUT)],
        },
        ServerMessage::Complete { id: id.clone() },
    ];
    for answer in answers {
        let Some(text) = protocol.encode(&answer) else {
            continue;
        };
        let value: Value = serde_json::from_str(&text).unwrap_or_else(|e| {
            panic!("{protocol:?} encoded {answer:?} as non-JSON ({e}): {text}")
        });
        assert_eq!(value["id"], Value::String(id.clone()), "{text}");
    }
}

/// A client message as a client of `protocol` would send it.
fn encode_client(protocol: Protocol, msg: &ClientMessage) -> String {
    let legacy = protocol == Protocol::Legacy;
    let value = match msg {
        ClientMessage::ConnectionInit { payload } => {
            json!({"type": "connection_init", "payload": payload})
        }
        ClientMessage::Ping { payload: None } => json!({"type": "ping"}),
        ClientMessage::Ping { payload: Some(p) } => json!({"type": "ping", "payload": p}),
        ClientMessage::Pong => json!({"type": "pong"}),
        ClientMessage::Subscribe { id, payload } => {
            let mut p = Map::new();
            p.insert("query".into(), Value::String(payload.query.clone()));
            if let Some(name) = &payload.operation_name {
                p.insert("operationName".into(), Value::String(name.clone()));
            }
            p.insert("variables".into(), Value::Object(payload.variables.clone()));
            p.insert(
                "extensions".into(),
                Value::Object(payload.extensions.clone()),
            );
            let kind = if legacy { "start" } else { "subscribe" };
            json!({"id": id, "type": kind, "payload": p})
        }
        ClientMessage::Complete { id } => {
            let kind = if legacy { "stop" } else { "complete" };
            json!({"id": id, "type": kind})
        }
        ClientMessage::Terminate => json!({"type": "connection_terminate"}),
    };
    value.to_string()
}
