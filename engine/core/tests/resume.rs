//! Resuming a subscription from the engine's history window: missed events
//! replayed in order, then live ones, none twice; clear errors otherwise.

use std::collections::VecDeque;
use std::sync::Arc;

use fanwire_core::outbox::Frame;
use fanwire_core::protocol::{assemble_next, Protocol};
use fanwire_core::testing::publish_now;
use fanwire_core::{Connection, Engine, Event, Limits, Schema};
use serde_json::{json, Value};

const SDL: &str = "type Query { a: Int } type Subscription { tick: Tick @topic(name: \"ticks\") } type Tick { n: Int }";

fn engine(history: usize) -> Arc<Engine> {
    let limits = Limits {
        history_per_topic: history,
        ..Limits::default()
    };
    Engine::new(Schema::parse(SDL).unwrap(), limits).unwrap()
}

fn frames(conn: &Connection) -> Vec<Value> {
    let mut out = VecDeque::new();
    conn.outbox().drain_into(&mut out);
    out.iter()
        .map(|f| match f {
            Frame::Next {
                prefix, payload, ..
            } => serde_json::from_slice(&assemble_next(prefix, payload)).unwrap(),
            Frame::Text(t) => serde_json::from_str(t).unwrap(),
            Frame::Close(c) => json!({"close": c.code.code()}),
            Frame::Revoke { id, .. } => json!({"revoke": id}),
        })
        .collect()
}

fn connect(engine: &Arc<Engine>, resume_from: Option<Value>) -> Connection {
    let mut conn = engine.connect(Protocol::TransportWs);
    conn.on_text(r#"{"type":"connection_init"}"#);
    let mut payload = json!({"query": "subscription { tick { n } }"});
    if let Some(from) = resume_from {
        payload["extensions"] = json!({ "resumeFrom": from });
    }
    conn.on_text(&json!({"id": "r", "type": "subscribe", "payload": payload}).to_string());
    conn
}

fn publish(engine: &Engine, n: u64) {
    publish_now(engine, &[Event::new("ticks", json!({ "n": n }))]);
}

fn seqs(frames: &[Value]) -> Vec<(u64, u64)> {
    frames
        .iter()
        .filter(|f| f["type"] == "next")
        .map(|f| {
            (
                f["payload"]["extensions"]["seq"].as_u64().unwrap(),
                f["payload"]["data"]["tick"]["n"].as_u64().unwrap(),
            )
        })
        .collect()
}

#[test]
fn frames_carry_sequence_numbers_and_a_resume_replays_what_was_missed() {
    let engine = engine(3);
    let live = connect(&engine, None);
    for n in 1..=5 {
        publish(&engine, n);
    }
    assert_eq!(
        seqs(&frames(&live)),
        [(1, 1), (2, 2), (3, 3), (4, 4), (5, 5)]
    );

    // A client that saw seq 3 comes back: it gets 4 and 5, then live events.
    let resumed = connect(&engine, Some(json!(3)));
    publish(&engine, 6);
    let got = frames(&resumed);
    assert_eq!(got[0], json!({"type": "connection_ack"}));
    assert_eq!(seqs(&got), [(4, 4), (5, 5), (6, 6)]);

    // Resuming from the newest event replays nothing; a string works too.
    let current = connect(&engine, Some(json!("6")));
    assert!(seqs(&frames(&current)).is_empty());
}

#[test]
fn resuming_past_the_window_or_without_history_is_a_clear_error() {
    let engine = engine(2);
    for n in 1..=5 {
        publish(&engine, n);
    }
    let old = connect(&engine, Some(json!(1)));
    let err = &frames(&old)[1];
    assert_eq!(err["type"], "error");
    assert_eq!(
        err["payload"][0]["extensions"]["code"],
        "RESUME_WINDOW_EXCEEDED"
    );
    assert!(
        err["payload"][0]["message"]
            .as_str()
            .unwrap()
            .contains("resync"),
        "{err}"
    );

    let bad = connect(&engine, Some(json!(-1)));
    assert_eq!(
        frames(&bad)[1]["payload"][0]["extensions"]["code"],
        "BAD_USER_INPUT"
    );

    let none = connect(&self::engine(0), Some(json!(1)));
    assert_eq!(
        frames(&none)[1]["payload"][0]["extensions"]["code"],
        "RESUME_UNAVAILABLE"
    );
    assert_eq!(
        engine.registry().counts().2,
        0,
        "failed resumes leave nothing registered"
    );
}

#[test]
fn a_node_behind_the_clients_position_does_not_repeat_what_it_saw() {
    // The client saw up to seq 5 on another node; this node has read only 3.
    let engine = engine(10);
    for seq in 1..=3 {
        publish_now(
            &engine,
            &[Event {
                seq: Some(seq),
                ..Event::new("ticks", json!({ "n": seq }))
            }],
        );
    }
    let resumed = connect(&engine, Some(json!(5)));
    for seq in 4..=6 {
        publish_now(
            &engine,
            &[Event {
                seq: Some(seq),
                ..Event::new("ticks", json!({ "n": seq }))
            }],
        );
    }
    assert_eq!(seqs(&frames(&resumed)), [(6, 6)]);
}

#[test]
fn frames_carry_the_event_id_live_and_replayed() {
    let engine = engine(10);
    let live = connect(&engine, None);
    frames(&live);
    let event = Event {
        id: Some(r#"node-1 "7""#.into()),
        ..Event::new("ticks", json!({ "n": 1 }))
    };
    publish_now(&engine, std::slice::from_ref(&event));
    publish(&engine, 2);
    let got = frames(&live);
    assert_eq!(
        got[0]["payload"]["extensions"],
        json!({"seq": 1, "id": "node-1 \"7\""}),
        "{got:?}"
    );
    assert_eq!(
        got[1]["payload"]["extensions"],
        json!({"seq": 2}),
        "no id, none made up"
    );
    // The resumed copy is the same event: same number, same id.
    let resumed = connect(&engine, Some(json!(0)));
    assert_eq!(frames(&resumed)[1]["payload"], got[0]["payload"]);
}
