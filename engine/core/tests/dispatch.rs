//! Connections, grouping and the outbox, driven through the public API with
//! no sockets: frames in with `on_text`, events in with `publish`, and the
//! exact frames that a socket writer would send read back from the outbox.

use std::collections::VecDeque;
use std::sync::Arc;

use fanwire_core::error::codes;
use fanwire_core::hooks::{Accepted, ConnectionRequest};
use fanwire_core::metrics::Reason;
use fanwire_core::outbox::{Batch, Frame, Outbox, Pushed};
use fanwire_core::protocol::{assemble_next, Close, CloseCode, Protocol};
use fanwire_core::registry::Dispatched;
use fanwire_core::testing::publish_now;
use fanwire_core::{Connection, ConnectionPolicy, Engine, Event, Limits, Schema};
use serde_json::{json, Value};

/// A prefix or a payload, as the outbox holds them.
type Bytes = Arc<[u8]>;

const SDL: &str = r#"
type Query { ping: String }
enum Status { NEW PAID }
type Customer { name: String! }
type Order {
  id: ID!
  status: Status
  total: Float
  customer: Customer
}
type Subscription {
  orderCreated(tenantId: ID!): Order @topic(name: "orders:{tenantId}")
  ticks: Int
}
"#;

const ORDERS_5: &str = r#"subscription { orderCreated(tenantId: "5") { id status } }"#;

fn engine_with(limits: Limits) -> Arc<Engine> {
    Engine::new(Schema::parse(SDL).unwrap(), limits).unwrap()
}

fn engine() -> Arc<Engine> {
    engine_with(Limits::default())
}

/// What a socket writer would send, in a form tests can compare: control
/// frames as JSON values, result frames as their exact text.
#[derive(Debug, Clone, PartialEq)]
enum Seen {
    Json(Value),
    Next(String),
    Close(CloseCode, String),
    Revoke(String),
}

fn seen(frame: &Frame) -> Seen {
    match frame {
        Frame::Text(text) => Seen::Json(serde_json::from_str(text).unwrap()),
        Frame::Next {
            prefix, payload, ..
        } => Seen::Next(String::from_utf8(assemble_next(prefix, payload)).unwrap()),
        Frame::Close(close) => Seen::Close(close.code, close.reason.clone()),
        Frame::Revoke { id, .. } => Seen::Revoke(id.clone()),
    }
}

fn drain_frames(conn: &Connection) -> Vec<Frame> {
    let mut out = VecDeque::new();
    conn.outbox().drain_into(&mut out);
    out.into_iter().collect()
}

fn drain(conn: &Connection) -> Vec<Seen> {
    drain_frames(conn).iter().map(seen).collect()
}

fn ack() -> Seen {
    Seen::Json(json!({"type": "connection_ack"}))
}

/// A graphql-transport-ws connection past `connection_ack`, outbox empty.
fn open(engine: &Arc<Engine>) -> Connection {
    let mut conn = engine.connect(Protocol::TransportWs);
    conn.on_text(r#"{"type":"connection_init"}"#);
    assert_eq!(drain(&conn), [ack()]);
    conn
}

fn subscribe_msg(id: &str, query: &str, variables: Value) -> String {
    json!({"id": id, "type": "subscribe", "payload": {"query": query, "variables": variables}})
        .to_string()
}

fn subscribe(conn: &mut Connection, id: &str, query: &str) {
    conn.on_text(&subscribe_msg(id, query, json!({})));
}

fn complete(conn: &mut Connection, id: &str) {
    conn.on_text(&json!({"id": id, "type": "complete"}).to_string());
}

fn event(topic: &str, data: Value) -> Event {
    Event::new(topic, data)
}

fn next(id: &str, payload: &str) -> Seen {
    Seen::Next(format!(
        r#"{{"id":"{id}","type":"next","payload":{payload}}}"#
    ))
}

fn dispatched(groups: usize, deliveries: usize, dropped: usize) -> Dispatched {
    Dispatched {
        groups,
        deliveries,
        dropped,
        dropped_own: 0,
        filtered: 0,
    }
}

fn counter(
    family: &prometheus_client::metrics::family::Family<
        Reason,
        prometheus_client::metrics::counter::Counter,
    >,
    reason: &'static str,
) -> u64 {
    family.get_or_create(&Reason { reason }).get()
}

// ---------------------------------------------------------------- connection driver

#[test]
fn subscribe_then_publish_delivers_one_exact_next_frame() {
    let engine = engine();
    let mut conn = open(&engine);
    subscribe(&mut conn, "1", ORDERS_5);
    assert_eq!(drain(&conn), [], "a good subscribe sends nothing back");
    assert_eq!(conn.subscription_count(), 1);

    let done = publish_now(
        &engine,
        &[event(
            "orders:5",
            json!({"id": "o1", "status": "PAID", "total": 3.5}),
        )],
    );
    assert_eq!(done, dispatched(1, 1, 0));
    assert_eq!(
        drain(&conn),
        [next(
            "1",
            r#"{"data":{"orderCreated":{"id":"o1","status":"PAID"}}}"#
        )]
    );
}

#[test]
fn events_on_other_topics_are_not_delivered() {
    let engine = engine();
    let mut conn = open(&engine);
    subscribe(&mut conn, "1", ORDERS_5);
    assert_eq!(
        publish_now(&engine, &[event("orders:6", json!({"id": "x"}))]),
        dispatched(0, 0, 0)
    );
    assert_eq!(
        publish_now(&engine, &[event("ticks", json!(1))]),
        dispatched(0, 0, 0)
    );
    assert_eq!(drain(&conn), []);
    assert_eq!(engine.metrics().events_in.get(), 2);
}

#[test]
fn subscribe_with_variables_binds_the_topic() {
    let engine = engine();
    let mut conn = open(&engine);
    conn.on_text(&subscribe_msg(
        "v",
        "subscription ($t: ID!) { orderCreated(tenantId: $t) { id } }",
        json!({"t": "42"}),
    ));
    assert_eq!(
        publish_now(&engine, &[event("orders:5", json!({"id": "a"}))]).deliveries,
        0
    );
    publish_now(&engine, &[event("orders:42", json!({"id": "b"}))]);
    assert_eq!(
        drain(&conn),
        [next("v", r#"{"data":{"orderCreated":{"id":"b"}}}"#)]
    );
}

#[test]
fn invalid_subscribe_gets_an_error_frame_and_the_id_is_free_again() {
    let engine = engine();
    let mut conn = open(&engine);
    let bad = "subscription { orderCreated(tenantId: \"5\") { id nope } }";
    subscribe(&mut conn, "1", bad);
    let frames = drain(&conn);
    let [Seen::Json(frame)] = frames.as_slice() else {
        panic!("expected one error frame, got {frames:?}");
    };
    assert_eq!(frame["id"], "1");
    assert_eq!(frame["type"], "error");
    let errors = frame["payload"].as_array().unwrap();
    assert_eq!(errors.len(), 1, "{errors:?}");
    assert_eq!(errors[0]["extensions"]["code"], codes::VALIDATION_FAILED);
    let column = bad.find("nope").unwrap() + 1;
    assert_eq!(
        errors[0]["locations"],
        json!([{"line": 1, "column": column}])
    );
    assert!(!conn.is_closed());
    assert_eq!(conn.subscription_count(), 0);
    assert_eq!(engine.registry().counts(), (0, 0, 0));
    assert_eq!(counter(&engine.metrics().subscribe_errors, "invalid"), 1);

    // Same id, now valid: no 4409, a live subscription.
    subscribe(&mut conn, "1", ORDERS_5);
    assert_eq!(drain(&conn), []);
    assert_eq!(conn.subscription_count(), 1);
    publish_now(&engine, &[event("orders:5", json!({"id": "o"}))]);
    assert_eq!(
        drain(&conn),
        [next(
            "1",
            r#"{"data":{"orderCreated":{"id":"o","status":null}}}"#
        )]
    );
}

#[test]
fn variable_error_is_an_error_frame_with_bad_user_input() {
    let engine = engine();
    let mut conn = open(&engine);
    conn.on_text(&subscribe_msg(
        "1",
        "subscription ($t: ID!) { orderCreated(tenantId: $t) { id } }",
        json!({}),
    ));
    let frames = drain(&conn);
    let [Seen::Json(frame)] = frames.as_slice() else {
        panic!("{frames:?}");
    };
    assert_eq!(frame["type"], "error");
    assert_eq!(
        frame["payload"][0]["extensions"]["code"],
        codes::BAD_USER_INPUT
    );
}

#[test]
fn ping_through_a_connection_is_answered_with_pong() {
    let engine = engine();
    let mut conn = engine.connect(Protocol::TransportWs);
    conn.on_text(r#"{"type":"ping","payload":{"n":1}}"#);
    assert_eq!(
        drain(&conn),
        [Seen::Json(json!({"type": "pong", "payload": {"n": 1}}))]
    );
    conn.on_text(r#"{"type":"pong"}"#);
    assert_eq!(drain(&conn), []);
}

#[test]
fn protocol_errors_put_a_close_frame_in_the_outbox() {
    let engine = engine();

    let mut conn = engine.connect(Protocol::TransportWs);
    subscribe(&mut conn, "1", ORDERS_5);
    assert_eq!(
        drain(&conn),
        [Seen::Close(CloseCode::Unauthorized, "Unauthorized".into())]
    );
    assert!(conn.is_closed());
    assert_eq!(engine.registry().counts(), (0, 0, 0));

    let mut conn = engine.connect(Protocol::TransportWs);
    conn.on_init_timeout();
    assert_eq!(
        drain(&conn),
        [Seen::Close(
            CloseCode::ConnectionInitialisationTimeout,
            "Connection initialisation timeout".into()
        )]
    );

    let mut conn = open(&engine);
    conn.on_init_timeout();
    assert_eq!(drain(&conn), [], "no 4408 once initialised");
    conn.on_text(r#"{"type":"connection_init"}"#);
    assert_eq!(
        drain(&conn),
        [Seen::Close(
            CloseCode::TooManyInitialisationRequests,
            "Too many initialisation requests".into()
        )]
    );

    let mut conn = open(&engine);
    conn.on_binary();
    assert!(matches!(
        drain(&conn).as_slice(),
        [Seen::Close(CloseCode::BadRequest, _)]
    ));
}

#[test]
fn duplicate_id_closes_4409_and_drops_every_subscription() {
    let engine = engine();
    let mut conn = open(&engine);
    subscribe(&mut conn, "1", ORDERS_5);
    subscribe(&mut conn, "2", ORDERS_5);
    assert_eq!(engine.registry().counts(), (1, 1, 2));
    subscribe(&mut conn, "1", ORDERS_5);
    assert_eq!(
        drain(&conn),
        [Seen::Close(
            CloseCode::SubscriberAlreadyExists,
            "Subscriber for 1 already exists".into()
        )]
    );
    assert!(conn.is_closed());
    assert_eq!(conn.subscription_count(), 0);
    assert_eq!(engine.registry().counts(), (0, 0, 0));
    assert_eq!(
        publish_now(&engine, &[event("orders:5", json!({"id": "x"}))]),
        dispatched(0, 0, 0)
    );
    assert_eq!(drain(&conn), []);
}

#[test]
fn a_closed_outbox_takes_no_more_results() {
    let outbox = Outbox::new(4);
    outbox.push_control(Frame::Close(Close::new(CloseCode::GoingAway)));
    let bytes: Arc<[u8]> = Arc::from(&b"x"[..]);
    assert_eq!(
        outbox.push(&bytes, &bytes, Batch::start(), true),
        Pushed::Closed
    );
    outbox.push_control(Frame::Text("late".into()));
    assert_eq!(outbox.len(), 1, "nothing follows a close");
}

#[test]
fn server_close_sends_close_drops_subscriptions_and_stops_reading() {
    let engine = engine();
    let mut conn = open(&engine);
    subscribe(&mut conn, "1", ORDERS_5);
    conn.close(Close::new(CloseCode::GoingAway));
    assert_eq!(
        drain(&conn),
        [Seen::Close(
            CloseCode::GoingAway,
            "Server shutting down".into()
        )]
    );
    assert!(conn.is_closed());
    assert_eq!(engine.registry().counts(), (0, 0, 0));

    // Frames that arrive after the close are not acted on.
    subscribe(&mut conn, "2", ORDERS_5);
    conn.on_text(r#"{"type":"ping"}"#);
    assert_eq!(conn.subscription_count(), 0);
    assert_eq!(engine.registry().counts(), (0, 0, 0));
    assert_eq!(drain(&conn), []);

    // Closing twice sends one close.
    conn.close(Close::new(CloseCode::GoingAway));
    assert_eq!(drain(&conn), []);
}

// ---------------------------------------------------------------- policy

#[derive(Debug)]
struct TokenPolicy;

impl ConnectionPolicy for TokenPolicy {
    fn check(&self, request: &ConnectionRequest<'_>) -> Result<Accepted, String> {
        match request.init_payload.get("token").and_then(Value::as_str) {
            Some("good") => Ok(Accepted {
                ack: Some(json!({"welcome": true})),
                ..Accepted::default()
            }),
            _ => Err("Forbidden: bad token".into()),
        }
    }
}

fn policed_engine() -> Arc<Engine> {
    Engine::with_policy(
        Schema::parse(SDL).unwrap(),
        Limits::default(),
        Arc::new(TokenPolicy),
    )
    .unwrap()
}

#[test]
fn accepted_init_is_acked_with_the_policys_payload() {
    let engine = policed_engine();
    let mut conn = engine.connect(Protocol::TransportWs);
    conn.on_text(r#"{"type":"connection_init","payload":{"token":"good"}}"#);
    assert_eq!(
        drain(&conn),
        [Seen::Json(
            json!({"type": "connection_ack", "payload": {"welcome": true}})
        )]
    );
    assert_eq!(conn.init_payload().get("token"), Some(&json!("good")));
    subscribe(&mut conn, "1", ORDERS_5);
    assert_eq!(conn.subscription_count(), 1);
}

#[test]
fn rejected_init_closes_4403() {
    let engine = policed_engine();
    let mut conn = engine.connect(Protocol::TransportWs);
    conn.on_text(r#"{"type":"connection_init","payload":{"token":"bad"}}"#);
    assert_eq!(
        drain(&conn),
        [Seen::Close(
            CloseCode::Forbidden,
            "Forbidden: bad token".into()
        )]
    );
    assert!(conn.is_closed());
    assert!(conn.init_payload().is_empty());
    assert_eq!(
        counter(&engine.metrics().connection_rejections, "policy"),
        1
    );
}

#[test]
fn rejected_legacy_init_gets_connection_error_then_close() {
    let engine = policed_engine();
    let mut conn = engine.connect(Protocol::Legacy);
    conn.on_text(r#"{"type":"connection_init","payload":{}}"#);
    assert_eq!(
        drain(&conn),
        [
            Seen::Json(
                json!({"type": "connection_error", "payload": {"message": "Forbidden: bad token"}})
            ),
            Seen::Close(CloseCode::Forbidden, "Forbidden: bad token".into()),
        ]
    );
}

// ---------------------------------------------------------------- grouping

#[test]
fn identical_subscriptions_share_one_projection_and_one_payload() {
    let engine = engine();
    let mut a = open(&engine);
    let mut b = open(&engine);
    let mut c = open(&engine);
    subscribe(&mut a, "1", ORDERS_5);
    subscribe(&mut a, "2", ORDERS_5);
    subscribe(&mut b, "x", ORDERS_5);
    // The same selection through a fragment joins the same group.
    subscribe(
        &mut c,
        "f",
        "subscription { orderCreated(tenantId: \"5\") { ...O } } fragment O on Order { id status }",
    );
    assert_eq!(engine.registry().counts(), (1, 1, 4));
    assert_eq!(engine.metrics().groups.get(), 1);
    assert_eq!(engine.metrics().subscriptions.get(), 4);

    let done = publish_now(
        &engine,
        &[event("orders:5", json!({"id": "o1", "status": "NEW"}))],
    );
    assert_eq!(done, dispatched(1, 4, 0));
    assert_eq!(engine.metrics().projections.get(), 1);
    assert_eq!(engine.metrics().deliveries.get(), 4);

    let payloads: Vec<(Bytes, Bytes)> = [&a, &b, &c]
        .into_iter()
        .flat_map(drain_frames)
        .map(|f| match f {
            Frame::Next {
                prefix, payload, ..
            } => (prefix, payload),
            other => panic!("{other:?}"),
        })
        .collect();
    assert_eq!(payloads.len(), 4);
    for (_, payload) in &payloads[1..] {
        assert!(
            Arc::ptr_eq(payload, &payloads[0].1),
            "one serialisation is shared by every member"
        );
    }
    assert_eq!(
        &*payloads[0].1,
        br#"{"data":{"orderCreated":{"id":"o1","status":"NEW"}}}"#
    );
    let mut prefixes: Vec<String> = payloads
        .iter()
        .map(|(p, _)| String::from_utf8(p.to_vec()).unwrap())
        .collect();
    prefixes.sort();
    assert_eq!(
        prefixes,
        [
            r#"{"id":"1","type":"next","payload":"#,
            r#"{"id":"2","type":"next","payload":"#,
            r#"{"id":"f","type":"next","payload":"#,
            r#"{"id":"x","type":"next","payload":"#,
        ]
    );

    // One projection per group per event, however many members.
    publish_now(
        &engine,
        &[event("orders:5", json!({"id": "o2", "status": "PAID"}))],
    );
    assert_eq!(engine.metrics().projections.get(), 2);
    assert_eq!(engine.metrics().deliveries.get(), 8);
    let exposition = engine.metrics().encode();
    assert!(
        exposition.contains("fanwire_projections_total 2"),
        "{exposition}"
    );
}

#[test]
fn different_selections_on_one_topic_are_separate_groups() {
    let engine = engine();
    let mut a = open(&engine);
    let mut b = open(&engine);
    let mut c = open(&engine);
    subscribe(&mut a, "1", ORDERS_5);
    subscribe(&mut b, "1", ORDERS_5);
    subscribe(
        &mut c,
        "1",
        "subscription { orderCreated(tenantId: \"5\") { id total } }",
    );
    assert_eq!(engine.registry().counts(), (1, 2, 3));
    let done = publish_now(
        &engine,
        &[event(
            "orders:5",
            json!({"id": "o1", "status": "NEW", "total": 2.5}),
        )],
    );
    assert_eq!(done, dispatched(2, 3, 0));
    assert_eq!(engine.metrics().projections.get(), 2);
    let shared = [next(
        "1",
        r#"{"data":{"orderCreated":{"id":"o1","status":"NEW"}}}"#,
    )];
    assert_eq!(drain(&a), shared);
    assert_eq!(drain(&b), shared);
    assert_eq!(
        drain(&c),
        [next(
            "1",
            r#"{"data":{"orderCreated":{"id":"o1","total":2.5}}}"#
        )]
    );
}

#[test]
fn field_errors_reach_every_member_of_the_group() {
    let engine = engine();
    let mut a = open(&engine);
    let mut b = open(&engine);
    subscribe(&mut a, "1", ORDERS_5);
    subscribe(&mut b, "2", ORDERS_5);
    publish_now(
        &engine,
        &[event("orders:5", json!({"id": "o1", "status": "LOST"}))],
    );
    let payload = r#"{"data":{"orderCreated":{"id":"o1","status":null}},"errors":[{"message":"Status cannot represent value: \"LOST\"","path":["orderCreated","status"],"extensions":{"code":"FIELD_ERROR"}}]}"#;
    assert_eq!(drain(&a), [next("1", payload)]);
    assert_eq!(drain(&b), [next("2", payload)]);
}

#[test]
fn legacy_and_transport_ws_members_share_the_payload() {
    let engine = engine();
    let mut modern = open(&engine);
    let mut legacy = engine.connect(Protocol::Legacy);
    legacy.on_text(r#"{"type":"connection_init","payload":{}}"#);
    assert_eq!(drain(&legacy), [ack(), Seen::Json(json!({"type": "ka"}))]);
    subscribe(&mut modern, "m", ORDERS_5);
    legacy
        .on_text(&json!({"id": "l", "type": "start", "payload": {"query": ORDERS_5}}).to_string());
    assert_eq!(engine.registry().counts(), (1, 1, 2));

    assert_eq!(
        publish_now(&engine, &[event("orders:5", json!({"id": "o1"}))]),
        dispatched(1, 2, 0)
    );
    let m = drain_frames(&modern);
    let l = drain_frames(&legacy);
    let (Frame::Next { payload: pm, .. }, Frame::Next { payload: pl, .. }) = (&m[0], &l[0]) else {
        panic!("{m:?} {l:?}");
    };
    assert!(Arc::ptr_eq(pm, pl));
    assert_eq!(
        seen(&l[0]),
        Seen::Next(
            r#"{"id":"l","type":"data","payload":{"data":{"orderCreated":{"id":"o1","status":null}}}}"#
                .into()
        )
    );
}

// ---------------------------------------------------------------- removal

#[test]
fn complete_removes_the_subscription_and_empty_groups_and_topics() {
    let engine = engine();
    let mut a = open(&engine);
    let mut b = open(&engine);
    subscribe(&mut a, "1", ORDERS_5);
    subscribe(&mut b, "1", ORDERS_5);
    subscribe(&mut b, "2", "subscription { ticks }");
    assert_eq!(engine.registry().counts(), (2, 2, 3));

    complete(&mut a, "1");
    assert_eq!(
        drain(&a),
        [],
        "the server does not echo a client's complete"
    );
    assert_eq!(a.subscription_count(), 0);
    assert_eq!(engine.registry().counts(), (2, 2, 2));
    assert_eq!(
        publish_now(&engine, &[event("orders:5", json!({"id": "o"}))]),
        dispatched(1, 1, 0)
    );
    assert_eq!(drain(&a), []);
    assert_eq!(drain(&b).len(), 1);

    complete(&mut b, "1");
    assert_eq!(engine.registry().counts(), (1, 1, 1), "orders:5 is gone");
    complete(&mut b, "2");
    assert_eq!(engine.registry().counts(), (0, 0, 0));
    assert_eq!(engine.metrics().subscriptions.get(), 0);
    assert_eq!(engine.metrics().groups.get(), 0);
    assert_eq!(engine.metrics().topics.get(), 0);
    assert_eq!(
        publish_now(&engine, &[event("orders:5", json!({"id": "o"}))]),
        dispatched(0, 0, 0)
    );

    // Completing again, or an unknown id, changes nothing.
    complete(&mut b, "2");
    complete(&mut b, "nope");
    assert_eq!(drain(&b), []);
    assert!(!b.is_closed());
}

#[test]
fn dropping_a_connection_removes_its_subscriptions() {
    let engine = engine();
    let mut keep = open(&engine);
    subscribe(&mut keep, "1", ORDERS_5);
    {
        let mut gone = open(&engine);
        subscribe(&mut gone, "1", ORDERS_5);
        subscribe(&mut gone, "2", "subscription { ticks }");
        assert_eq!(engine.registry().counts(), (2, 2, 3));
        assert_eq!(engine.metrics().connections.get(), 2);
    }
    assert_eq!(engine.registry().counts(), (1, 1, 1));
    assert_eq!(engine.metrics().connections.get(), 1);
    assert_eq!(engine.metrics().subscriptions.get(), 1);
    assert_eq!(
        publish_now(&engine, &[event("orders:5", json!({"id": "o"}))]),
        dispatched(1, 1, 0)
    );
    drop(keep);
    assert_eq!(engine.registry().counts(), (0, 0, 0));
    assert_eq!(engine.metrics().connections.get(), 0);
    assert_eq!(engine.metrics().topics.get(), 0);
}

#[test]
fn a_result_queued_before_a_client_complete_is_purged() {
    let engine = engine();
    let mut conn = open(&engine);
    subscribe(&mut conn, "a", ORDERS_5);
    subscribe(&mut conn, "b", ORDERS_5);
    publish_now(&engine, &[event("orders:5", json!({"id": "o1"}))]);
    conn.on_text(r#"{"type":"ping"}"#);
    publish_now(&engine, &[event("orders:5", json!({"id": "o2"}))]);
    assert_eq!(conn.outbox().len(), 5);

    complete(&mut conn, "a");
    let body = |id: &str| format!(r#"{{"data":{{"orderCreated":{{"id":"{id}","status":null}}}}}}"#);
    assert_eq!(
        drain(&conn),
        [
            next("b", &body("o1")),
            Seen::Json(json!({"type": "pong"})),
            next("b", &body("o2")),
        ]
    );
}

#[test]
fn purged_results_free_their_queue_slots() {
    let engine = engine_with(Limits {
        queue_depth: 2,
        ..Limits::default()
    });
    let mut conn = open(&engine);
    subscribe(&mut conn, "a", ORDERS_5);
    publish_now(&engine, &[event("orders:5", json!({"id": "o1"}))]);
    publish_now(&engine, &[event("orders:5", json!({"id": "o2"}))]);
    complete(&mut conn, "a");
    assert!(conn.outbox().is_empty());
    subscribe(&mut conn, "b", ORDERS_5);
    // Two free slots again: nothing is dropped.
    assert_eq!(
        publish_now(&engine, &[event("orders:5", json!({"id": "o3"}))]),
        dispatched(1, 1, 0)
    );
    assert_eq!(
        publish_now(&engine, &[event("orders:5", json!({"id": "o4"}))]),
        dispatched(1, 1, 0)
    );
    assert_eq!(drain(&conn).len(), 2);
}

// ---------------------------------------------------------------- slow consumers

#[test]
fn a_slow_consumer_loses_its_oldest_results_and_nobody_else_does() {
    let engine = engine_with(Limits {
        queue_depth: 2,
        ..Limits::default()
    });
    let mut fast = open(&engine);
    // The slow client never drains, not even its ack.
    let mut slow = engine.connect(Protocol::TransportWs);
    slow.on_text(r#"{"type":"connection_init"}"#);
    subscribe(&mut fast, "f", ORDERS_5);
    subscribe(&mut slow, "s", ORDERS_5);

    let body = |n: usize| format!(r#"{{"data":{{"orderCreated":{{"id":"o{n}","status":null}}}}}}"#);
    let mut fast_got = Vec::new();
    let mut dropped = 0;
    for n in 1..=5 {
        let done = publish_now(
            &engine,
            &[event("orders:5", json!({"id": format!("o{n}")}))],
        );
        assert_eq!(done.groups, 1);
        assert_eq!(done.deliveries, 2);
        dropped += done.dropped;
        fast_got.extend(drain(&fast));
    }
    assert_eq!(dropped, 3);
    assert_eq!(
        fast_got,
        (1..=5).map(|n| next("f", &body(n))).collect::<Vec<_>>()
    );
    assert_eq!(
        drain(&slow),
        [ack(), next("s", &body(4)), next("s", &body(5))],
        "control frames are kept; the oldest results go"
    );
    assert_eq!(counter(&engine.metrics().drops, "queue_full"), 3);
    assert_eq!(engine.metrics().deliveries.get(), 10);

    // Once drained, the slow client has room again.
    let done = publish_now(&engine, &[event("orders:5", json!({"id": "o6"}))]);
    assert_eq!(done.dropped, 0);
    assert_eq!(drain(&slow), [next("s", &body(6))]);
}

/// One publish of more events than `queue_depth`, queued before any writer
/// runs: drop-oldest is for clients that fall behind, so a client that
/// reads gets the whole batch, and one that does not loses only what it
/// left unread when the next publish came.
#[test]
fn a_batch_larger_than_the_queue_reaches_a_reader_whole_and_in_order() {
    let engine = engine_with(Limits {
        queue_depth: 4,
        ..Limits::default()
    });
    let mut reader = open(&engine);
    subscribe(&mut reader, "r", ORDERS_5);
    // The slow client never drains, not even its ack.
    let mut slow = engine.connect(Protocol::TransportWs);
    slow.on_text(r#"{"type":"connection_init"}"#);
    subscribe(&mut slow, "s", ORDERS_5);
    let order = |n: usize| event("orders:5", json!({"id": format!("o{n}")}));
    let results = |id: &str, ns: std::ops::RangeInclusive<usize>| -> Vec<Seen> {
        ns.map(|n| {
            next(
                id,
                &format!(r#"{{"data":{{"orderCreated":{{"id":"o{n}","status":null}}}}}}"#),
            )
        })
        .collect()
    };

    // Queued whole before the reader's writer runs at all.
    let first: Vec<Event> = (1..=20).map(order).collect();
    assert_eq!(
        publish_now(&engine, &first).delivered(),
        40,
        "20 events x 2 clients"
    );
    assert_eq!(drain(&reader), results("r", 1..=20));
    assert_eq!(counter(&engine.metrics().drops, "queue_full"), 0);

    // A writer draining while the batch is dispatched, on another thread.
    let second: Vec<Event> = (21..=520).map(order).collect();
    let outbox = reader.outbox().clone();
    let published = std::sync::atomic::AtomicBool::new(false);
    let got = std::thread::scope(|scope| {
        let writer = scope.spawn(|| {
            let deadline = std::time::Instant::now() + std::time::Duration::from_secs(10);
            let mut got = Vec::new();
            loop {
                let last = published.load(std::sync::atomic::Ordering::Acquire);
                let mut frames = VecDeque::new();
                outbox.drain_into(&mut frames);
                got.extend(frames.iter().map(seen));
                if last {
                    return got;
                }
                assert!(
                    std::time::Instant::now() < deadline,
                    "the publish never finished"
                );
                std::thread::yield_now();
            }
        });
        assert_eq!(publish_now(&engine, &second).delivered(), 1000);
        published.store(true, std::sync::atomic::Ordering::Release);
        writer.join().unwrap()
    });
    assert_eq!(got, results("r", 21..=520), "all, in order, once");

    // The slow client's backlog from the first batch made room for the
    // second, which it holds whole; a lone event then trims that backlog
    // back to the queue's depth.
    assert_eq!(counter(&engine.metrics().drops, "queue_full"), 20);
    let done = publish_now(&engine, &[order(521)]);
    assert_eq!(
        (done.deliveries, done.dropped, done.delivered()),
        (2, 497, 2)
    );
    let mut expected = vec![ack()];
    expected.extend(results("s", 518..=521));
    assert_eq!(drain(&slow), expected, "the ack and the newest results");
    assert_eq!(counter(&engine.metrics().drops, "queue_full"), 517);
    assert_eq!(drain(&reader), results("r", 521..=521));
}

#[test]
fn drain_into_a_non_empty_deque_appends() {
    let outbox = Outbox::new(4);
    outbox.push_control(Frame::Text("b".into()));
    let mut into = VecDeque::from([Frame::Text("a".into())]);
    outbox.drain_into(&mut into);
    let texts: Vec<String> = into
        .iter()
        .map(|f| match f {
            Frame::Text(t) => t.clone(),
            other => panic!("{other:?}"),
        })
        .collect();
    assert_eq!(
        texts,
        ["a", "b"],
        "frames already held by the writer stay there"
    );
    assert!(outbox.is_empty(), "nothing goes back into the outbox");
}

// ---------------------------------------------------------------- limits

#[test]
fn subscribe_rate_limit_answers_with_rate_limited() {
    // A bucket of two that refills far slower than this test runs.
    let engine = engine_with(Limits {
        subscribes_per_second: 1e-6,
        subscribe_burst: 2.0,
        ..Limits::default()
    });
    let mut conn = open(&engine);
    subscribe(&mut conn, "1", ORDERS_5);
    subscribe(&mut conn, "2", ORDERS_5);
    assert_eq!(drain(&conn), []);
    subscribe(&mut conn, "3", ORDERS_5);
    let frames = drain(&conn);
    let [Seen::Json(frame)] = frames.as_slice() else {
        panic!("{frames:?}");
    };
    assert_eq!(frame["id"], "3");
    assert_eq!(frame["type"], "error");
    assert_eq!(
        frame["payload"][0]["extensions"]["code"],
        codes::RATE_LIMITED
    );
    assert!(!conn.is_closed());
    assert_eq!(conn.subscription_count(), 2);
    assert_eq!(engine.registry().counts(), (1, 1, 2));
    assert_eq!(
        counter(&engine.metrics().subscribe_errors, "rate_limited"),
        1
    );

    // Another connection has its own bucket.
    let mut other = open(&engine);
    subscribe(&mut other, "3", ORDERS_5);
    assert_eq!(drain(&other), []);
    assert_eq!(other.subscription_count(), 1);
}

#[test]
fn max_subscriptions_per_connection_answers_with_rate_limited() {
    let engine = engine_with(Limits {
        max_subscriptions_per_connection: 2,
        ..Limits::default()
    });
    let mut conn = open(&engine);
    subscribe(&mut conn, "1", ORDERS_5);
    subscribe(&mut conn, "2", "subscription { ticks }");
    subscribe(&mut conn, "3", ORDERS_5);
    let frames = drain(&conn);
    let [Seen::Json(frame)] = frames.as_slice() else {
        panic!("{frames:?}");
    };
    assert_eq!(frame["id"], "3");
    assert_eq!(frame["type"], "error");
    assert_eq!(
        frame["payload"][0]["extensions"]["code"],
        codes::RATE_LIMITED
    );
    assert_eq!(conn.subscription_count(), 2);
    assert_eq!(counter(&engine.metrics().subscribe_errors, "too_many"), 1);

    // Completing one makes room, and id 3 is free to use.
    complete(&mut conn, "1");
    subscribe(&mut conn, "3", ORDERS_5);
    assert_eq!(drain(&conn), []);
    assert_eq!(conn.subscription_count(), 2);
}

// ---------------------------------------------------------------- legacy driver

#[test]
fn legacy_connection_start_data_stop() {
    let engine = engine();
    let mut conn = engine.connect(Protocol::Legacy);
    assert_eq!(conn.protocol(), Protocol::Legacy);
    conn.on_text(r#"{"type":"connection_init"}"#);
    assert_eq!(drain(&conn), [ack(), Seen::Json(json!({"type": "ka"}))]);
    conn.on_keep_alive();
    assert_eq!(drain(&conn), [Seen::Json(json!({"type": "ka"}))]);

    conn.on_text(&json!({"id": "1", "type": "start", "payload": {"query": ORDERS_5}}).to_string());
    publish_now(
        &engine,
        &[event("orders:5", json!({"id": "o1", "status": "NEW"}))],
    );
    assert_eq!(
        drain(&conn),
        [Seen::Next(
            r#"{"id":"1","type":"data","payload":{"data":{"orderCreated":{"id":"o1","status":"NEW"}}}}"#
                .into()
        )]
    );
    conn.on_text(r#"{"id":"1","type":"stop"}"#);
    assert_eq!(engine.registry().counts(), (0, 0, 0));
    publish_now(&engine, &[event("orders:5", json!({"id": "o2"}))]);
    assert_eq!(drain(&conn), []);
}

#[test]
fn legacy_reused_id_restarts_with_the_new_query() {
    let engine = engine();
    let mut conn = engine.connect(Protocol::Legacy);
    conn.on_text(r#"{"type":"connection_init"}"#);
    drain(&conn);
    conn.on_text(&json!({"id": "1", "type": "start", "payload": {"query": ORDERS_5}}).to_string());
    publish_now(&engine, &[event("orders:5", json!({"id": "old"}))]);
    conn.on_text(
        &json!({"id": "1", "type": "start", "payload": {"query": "subscription { ticks }"}})
            .to_string(),
    );
    assert_eq!(conn.subscription_count(), 1);
    assert_eq!(engine.registry().counts(), (1, 1, 1));
    // The old operation's queued result was purged with it.
    assert_eq!(drain(&conn), []);
    assert_eq!(
        publish_now(&engine, &[event("orders:5", json!({"id": "o"}))]).deliveries,
        0
    );
    publish_now(&engine, &[event("ticks", json!(7))]);
    assert_eq!(
        drain(&conn),
        [Seen::Next(
            r#"{"id":"1","type":"data","payload":{"data":{"ticks":7}}}"#.into()
        )]
    );
}

#[test]
fn legacy_invalid_start_gets_data_with_errors_then_complete() {
    let engine = engine();
    let mut conn = engine.connect(Protocol::Legacy);
    conn.on_text(r#"{"type":"connection_init"}"#);
    drain(&conn);
    conn.on_text(
        &json!({"id": "1", "type": "start", "payload": {"query": "subscription { nope }"}})
            .to_string(),
    );
    let frames = drain(&conn);
    assert_eq!(frames.len(), 2, "{frames:?}");
    let Seen::Json(data) = &frames[0] else {
        panic!("{frames:?}");
    };
    assert_eq!(data["id"], "1");
    assert_eq!(data["type"], "data");
    assert_eq!(data["payload"]["data"], Value::Null);
    assert_eq!(
        data["payload"]["errors"][0]["extensions"]["code"],
        codes::VALIDATION_FAILED
    );
    assert_eq!(
        frames[1],
        Seen::Json(json!({"id": "1", "type": "complete"}))
    );
    assert_eq!(conn.subscription_count(), 0);
}

#[test]
fn legacy_terminate_closes_1000_and_unsubscribes() {
    let engine = engine();
    let mut conn = engine.connect(Protocol::Legacy);
    conn.on_text(r#"{"type":"connection_init"}"#);
    drain(&conn);
    conn.on_text(&json!({"id": "1", "type": "start", "payload": {"query": ORDERS_5}}).to_string());
    conn.on_text(r#"{"type":"connection_terminate"}"#);
    assert_eq!(
        drain(&conn),
        [Seen::Close(CloseCode::Normal, "Normal closure".into())]
    );
    assert_eq!(engine.registry().counts(), (0, 0, 0));
    // No keep-alives after close.
    conn.on_keep_alive();
    assert_eq!(drain(&conn), []);
}

#[test]
fn keep_alive_is_legacy_only_and_only_once_ready() {
    let engine = engine();
    let mut modern = open(&engine);
    modern.on_keep_alive();
    assert_eq!(drain(&modern), []);
    let mut legacy = engine.connect(Protocol::Legacy);
    legacy.on_keep_alive();
    assert_eq!(drain(&legacy), [], "no ka before the ack");
}

// ---------------------------------------------------------------- construction

#[test]
fn engine_refuses_unusable_limits() {
    let err = Engine::new(
        Schema::parse(SDL).unwrap(),
        Limits {
            queue_depth: 0,
            ..Limits::default()
        },
    )
    .unwrap_err();
    assert_eq!(err.field, "queue_depth");
}

#[test]
fn events_parse_from_json_and_refuse_unknown_members() {
    let e: Event = serde_json::from_str(r#"{"topic":"orders:5","data":{"id":"o1"}}"#).unwrap();
    assert_eq!(e, event("orders:5", json!({"id": "o1"})));
    let e: Event = serde_json::from_str(r#"{"topic":"t","data":1,"id":"e-1"}"#).unwrap();
    assert_eq!(e.id.as_deref(), Some("e-1"));
    assert!(serde_json::from_str::<Event>(r#"{"topic":"t","data":1,"tenant":5}"#).is_err());
    assert!(serde_json::from_str::<Event>(r#"{"data":1}"#).is_err());
}

/// A socket with room for everything, counting what it was handed.
#[derive(Debug, Default)]
struct OpenSocket {
    sent: std::sync::Mutex<usize>,
}

impl fanwire_core::outbox::WriteThrough for OpenSocket {
    fn try_next(&self, _: &[u8], _: &[u8]) -> fanwire_core::outbox::Written {
        *self.sent.lock().unwrap() += 1;
        fanwire_core::outbox::Written::Sent
    }
}

#[test]
fn a_lone_event_writes_through_and_a_batch_is_queued_for_one_write() {
    let engine = engine();
    let mut conn = open(&engine);
    subscribe(&mut conn, "1", ORDERS_5);
    drain(&conn);
    let socket = Arc::new(OpenSocket::default());
    conn.outbox().set_write_through(Some(socket.clone()));
    let order = |id: u32| event("orders:5", json!({"id": id, "status": "NEW"}));

    assert_eq!(publish_now(&engine, &[order(1)]).delivered(), 1);
    assert_eq!(*socket.sent.lock().unwrap(), 1, "written through");
    assert_eq!(drain(&conn), [], "nothing queued");

    assert_eq!(
        publish_now(&engine, &[order(2), order(3), order(4)]).delivered(),
        3
    );
    assert_eq!(
        *socket.sent.lock().unwrap(),
        1,
        "a batch is not written through"
    );
    assert_eq!(
        drain(&conn).len(),
        3,
        "but queued, in one piece for the writer"
    );
}
