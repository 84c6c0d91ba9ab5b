//! The legacy `graphql-ws` (subscriptions-transport-ws) session, with no
//! sockets: init/ack/ka, start/stop, restarts, terminate and errors.

use std::sync::Arc;

use fanwire_core::error::{codes, GraphQLError};
use fanwire_core::protocol::{
    Action, ClientMessage, CloseCode, Protocol, ServerMessage, Session, SubscribePayload,
};
use serde_json::{json, Map, Value};

const INIT: &str = r#"{"type":"connection_init","payload":{}}"#;

fn start(id: &str, query: &str) -> String {
    json!({"id": id, "type": "start", "payload": {"query": query}}).to_string()
}

fn stop(id: &str) -> String {
    json!({"id": id, "type": "stop"}).to_string()
}

fn payload(query: &str) -> SubscribePayload {
    SubscribePayload {
        query: query.to_owned(),
        operation_name: None,
        variables: Map::new(),
        extensions: Map::new(),
    }
}

fn ready() -> Session {
    let mut s = Session::new(Protocol::Legacy);
    assert_eq!(
        s.on_text(INIT),
        [Action::Init {
            payload: Map::new()
        }]
    );
    s.accept(None);
    assert!(s.is_ready());
    s
}

/// Encodes with the legacy protocol and parses back (compared as JSON).
fn wire(msg: &ServerMessage) -> Value {
    let text = Protocol::Legacy
        .encode(msg)
        .unwrap_or_else(|| panic!("{msg:?} has a legacy encoding"));
    serde_json::from_str(&text).unwrap()
}

/// Encodes every `Send` of `actions`; panics on anything else.
fn sent(actions: &[Action]) -> Vec<Value> {
    actions
        .iter()
        .map(|a| match a {
            Action::Send(msg) => wire(msg),
            other => panic!("expected only sends, got {other:?}"),
        })
        .collect()
}

#[test]
fn init_is_acked_and_followed_by_a_keep_alive() {
    let mut s = Session::new(Protocol::Legacy);
    assert_eq!(s.protocol(), Protocol::Legacy);
    assert_eq!(
        s.on_text(r#"{"type":"connection_init","payload":{"authToken":"t"}}"#),
        [Action::Init {
            payload: json!({"authToken": "t"}).as_object().unwrap().clone()
        }]
    );
    let actions = s.accept(Some(json!({"ignored": true})));
    assert_eq!(
        actions,
        [
            Action::Send(ServerMessage::ConnectionAck {
                payload: Some(json!({"ignored": true}))
            }),
            Action::Send(ServerMessage::KeepAlive),
        ]
    );
    // The legacy ack carries no payload; `ka` starts the client's watchdog.
    assert_eq!(
        sent(&actions),
        [json!({"type": "connection_ack"}), json!({"type": "ka"})]
    );
    assert_eq!(
        Protocol::Legacy.encode(&ServerMessage::KeepAlive).unwrap(),
        r#"{"type":"ka"}"#
    );
}

#[test]
fn init_without_payload_is_accepted() {
    let mut s = Session::new(Protocol::Legacy);
    assert_eq!(
        s.on_text(r#"{"type":"connection_init"}"#),
        [Action::Init {
            payload: Map::new()
        }]
    );
}

#[test]
fn start_subscribes_and_stop_unsubscribes() {
    let mut s = ready();
    assert_eq!(
        s.on_text(&start("1", "subscription { ticks }")),
        [Action::Subscribe {
            id: "1".into(),
            payload: payload("subscription { ticks }")
        }]
    );
    assert!(s.is_active("1"));
    assert_eq!(
        s.on_text(&stop("1")),
        [Action::Unsubscribe { id: "1".into() }]
    );
    assert!(!s.is_active("1"));
    // A second stop, or a stop for an unknown id, is ignored.
    assert_eq!(s.on_text(&stop("1")), []);
    assert_eq!(s.on_text(&stop("zzz")), []);
    assert!(s.is_ready());
}

#[test]
fn start_carries_variables_and_operation_name() {
    let mut s = ready();
    let msg = json!({"id": "1", "type": "start", "payload": {
        "query": "subscription S($t: ID!) { orderCreated(tenantId: $t) { id } }",
        "operationName": "S",
        "variables": {"t": "5"}
    }});
    match s.on_text(&msg.to_string()).as_slice() {
        [Action::Subscribe { id, payload }] => {
            assert_eq!(id, "1");
            assert_eq!(payload.operation_name.as_deref(), Some("S"));
            assert_eq!(Value::Object(payload.variables.clone()), json!({"t": "5"}));
        }
        other => panic!("{other:?}"),
    }
}

#[test]
fn reused_id_restarts_the_operation() {
    let mut s = ready();
    s.on_text(&start("1", "subscription { ticks }"));
    let restart = s.on_text(&start("1", "subscription { other }"));
    assert_eq!(
        restart,
        [
            Action::Unsubscribe { id: "1".into() },
            Action::Subscribe {
                id: "1".into(),
                payload: payload("subscription { other }")
            },
        ]
    );
    assert!(s.is_active("1"));
    assert_eq!(s.active_count(), 1);
    assert!(!s.is_closed(), "no 4409 in the legacy protocol");
}

#[test]
fn connection_terminate_closes_normally() {
    let mut s = ready();
    s.on_text(&start("1", "subscription { ticks }"));
    let actions = s.on_text(r#"{"type":"connection_terminate"}"#);
    match actions.as_slice() {
        [Action::Close(close)] => {
            assert_eq!(close.code, CloseCode::Normal);
            assert_eq!(close.code.code(), 1000);
        }
        other => panic!("{other:?}"),
    }
    assert!(s.is_closed());
    assert_eq!(s.on_text(&start("2", "subscription { ticks }")), []);
}

#[test]
fn start_before_init_answers_with_error_frames_and_stays_open() {
    let mut s = Session::new(Protocol::Legacy);
    let actions = s.on_text(&start("1", "subscription { ticks }"));
    let frames = sent(&actions);
    assert_eq!(frames.len(), 2);
    assert_eq!(frames[0]["id"], "1");
    assert_eq!(frames[0]["type"], "data");
    assert_eq!(frames[0]["payload"]["data"], Value::Null);
    let errors = frames[0]["payload"]["errors"].as_array().unwrap();
    assert_eq!(errors.len(), 1);
    assert!(errors[0]["message"]
        .as_str()
        .unwrap()
        .contains("not initialised"));
    assert_eq!(frames[1], json!({"id": "1", "type": "complete"}));
    assert!(!s.is_closed());
    assert!(!s.is_active("1"));
    // The client can still initialise and start.
    assert_eq!(s.on_text(INIT).len(), 1);
    s.accept(None);
    assert_eq!(s.on_text(&start("1", "subscription { ticks }")).len(), 1);
}

#[test]
fn start_while_init_is_pending_answers_with_error_frames() {
    let mut s = Session::new(Protocol::Legacy);
    s.on_text(INIT);
    let frames = sent(&s.on_text(&start("1", "subscription { ticks }")));
    assert_eq!(frames.len(), 2);
    assert_eq!(frames[1]["type"], "complete");
}

#[test]
fn subscribe_failed_sends_data_with_errors_then_complete() {
    let mut s = ready();
    s.on_text(&start("9", "subscription { nope }"));
    let errors = vec![GraphQLError::new(
        "Cannot query field \"nope\"",
        codes::VALIDATION_FAILED,
    )];
    let actions = s.subscribe_failed("9", errors.clone());
    assert_eq!(
        actions,
        [
            Action::Send(ServerMessage::Error {
                id: "9".into(),
                errors
            }),
            Action::Send(ServerMessage::Complete { id: "9".into() }),
        ]
    );
    assert_eq!(
        sent(&actions),
        [
            json!({"id": "9", "type": "data", "payload": {"data": null, "errors": [{
                "message": "Cannot query field \"nope\"",
                "extensions": {"code": "GRAPHQL_VALIDATION_FAILED"}
            }]}}),
            json!({"id": "9", "type": "complete"}),
        ]
    );
    assert!(!s.is_active("9"));
    assert!(s.is_ready());
    // The id is free again: a new start is a plain subscribe, not a restart.
    assert_eq!(
        s.on_text(&start("9", "subscription { ticks }")),
        [Action::Subscribe {
            id: "9".into(),
            payload: payload("subscription { ticks }")
        }]
    );
}

#[test]
fn reject_sends_connection_error_then_closes_4403() {
    let mut s = Session::new(Protocol::Legacy);
    s.on_text(INIT);
    let actions = s.reject("bad token");
    match actions.as_slice() {
        [Action::Send(msg), Action::Close(close)] => {
            assert_eq!(
                wire(msg),
                json!({"type": "connection_error", "payload": {"message": "bad token"}})
            );
            assert_eq!(close.code, CloseCode::Forbidden);
            assert_eq!(close.reason, "bad token");
        }
        other => panic!("{other:?}"),
    }
    assert!(s.is_closed());
}

#[test]
fn init_timeout_closes_4408_only_before_init() {
    let mut s = Session::new(Protocol::Legacy);
    match s.on_init_timeout().as_slice() {
        [Action::Close(close)] => {
            assert_eq!(close.code, CloseCode::ConnectionInitialisationTimeout)
        }
        other => panic!("{other:?}"),
    }
    assert_eq!(ready().on_init_timeout(), []);
}

#[test]
fn unknown_or_malformed_messages_close_4400() {
    for text in [
        "{",
        "[]",
        r#"{"type":"ping"}"#,
        r#"{"type":"subscribe","id":"1","payload":{"query":"q"}}"#,
        r#"{"type":"complete","id":"1"}"#,
        r#"{"type":"start","payload":{"query":"q"}}"#,
        r#"{"type":"start","id":"1","payload":{"query":1}}"#,
        r#"{"type":"start","id":"1"}"#,
        r#"{"type":"stop"}"#,
    ] {
        let mut s = ready();
        match s.on_text(text).as_slice() {
            [Action::Close(close)] => assert_eq!(close.code, CloseCode::BadRequest, "{text}"),
            other => panic!("{text}: {other:?}"),
        }
    }
}

#[test]
fn decode_maps_legacy_names_onto_the_shared_messages() {
    let p = Protocol::Legacy;
    assert_eq!(
        p.decode(r#"{"type":"stop","id":"3"}"#),
        Ok(ClientMessage::Complete { id: "3".into() })
    );
    assert_eq!(
        p.decode(r#"{"type":"connection_terminate"}"#),
        Ok(ClientMessage::Terminate)
    );
    assert!(matches!(
        p.decode(&start("4", "subscription { ticks }")),
        Ok(ClientMessage::Subscribe { ref id, .. }) if id == "4"
    ));
}

#[test]
fn data_frames_and_encodings() {
    let payload: Arc<[u8]> = Arc::from(&br#"{"data":{"ticks":2}}"#[..]);
    assert_eq!(
        Protocol::Legacy
            .encode(&ServerMessage::Next {
                id: "1".into(),
                payload
            })
            .unwrap(),
        r#"{"id":"1","type":"data","payload":{"data":{"ticks":2}}}"#
    );
    assert_eq!(
        String::from_utf8(Protocol::Legacy.next_prefix("1")).unwrap(),
        r#"{"id":"1","type":"data","payload":"#
    );
    assert_eq!(
        wire(&ServerMessage::Complete { id: "1".into() }),
        json!({"id": "1", "type": "complete"})
    );
    // A legacy client never gets a pong.
    assert_eq!(
        Protocol::Legacy.encode(&ServerMessage::Pong { payload: None }),
        None
    );
}

#[test]
fn second_init_closes_4429() {
    let mut s = ready();
    match s.on_text(INIT).as_slice() {
        [Action::Close(close)] => assert_eq!(close.code, CloseCode::TooManyInitialisationRequests),
        other => panic!("{other:?}"),
    }
}

#[test]
fn binary_frame_closes_4400() {
    let mut s = ready();
    match s.on_binary().as_slice() {
        [Action::Close(close)] => assert_eq!(close.code, CloseCode::BadRequest),
        other => panic!("{other:?}"),
    }
}
