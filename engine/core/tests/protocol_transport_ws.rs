//! The graphql-transport-ws session as a plain state machine: one test per
//! rule of the protocol table in `docs/architecture.md`, frames in, actions
//! out, no sockets.

use std::sync::Arc;

use fanwire_core::error::{codes, GraphQLError};
use fanwire_core::protocol::{
    assemble_next, Action, ClientMessage, Close, CloseCode, Protocol, ServerMessage, Session,
    SubscribePayload, NEXT_SUFFIX,
};
use serde_json::{json, Map, Value};

const INIT: &str = r#"{"type":"connection_init"}"#;

fn sub(id: &str) -> String {
    json!({"id": id, "type": "subscribe", "payload": {"query": "subscription { ticks }"}})
        .to_string()
}

fn payload(query: &str) -> SubscribePayload {
    SubscribePayload {
        query: query.to_owned(),
        operation_name: None,
        variables: Map::new(),
        extensions: Map::new(),
    }
}

/// A session that has sent `connection_init` and been acknowledged.
fn ready() -> Session {
    let mut s = Session::new(Protocol::TransportWs);
    assert_eq!(
        s.on_text(INIT),
        [Action::Init {
            payload: Map::new()
        }]
    );
    assert_eq!(
        s.accept(None),
        [Action::Send(ServerMessage::ConnectionAck { payload: None })]
    );
    assert!(s.is_ready());
    s
}

/// Asserts that `actions` is exactly one close with `code`, and returns it.
fn closed_with(actions: Vec<Action>, code: CloseCode) -> Close {
    match actions.as_slice() {
        [Action::Close(close)] => {
            assert_eq!(close.code, code, "reason: {}", close.reason);
            assert!(
                close.reason.len() <= 123,
                "a close reason fits a close frame"
            );
            close.clone()
        }
        other => panic!("expected a single close {code:?}, got {other:?}"),
    }
}

/// Encodes with graphql-transport-ws and parses back, to compare as JSON
/// (key order is serde_json's business, not the protocol's).
fn wire(msg: &ServerMessage) -> Value {
    let text = Protocol::TransportWs
        .encode(msg)
        .unwrap_or_else(|| panic!("{msg:?} has a graphql-transport-ws encoding"));
    serde_json::from_str(&text).unwrap()
}

fn assert_bad_request(session: &mut Session, text: &str) {
    let close = closed_with(session.on_text(text), CloseCode::BadRequest);
    assert!(!close.reason.is_empty(), "for {text}");
    assert!(session.is_closed(), "for {text}");
}

// ---------------------------------------------------------------- negotiation

#[test]
fn negotiate_picks_transport_ws_when_offered() {
    assert_eq!(
        Protocol::negotiate("graphql-transport-ws"),
        Some(Protocol::TransportWs)
    );
    assert_eq!(
        Protocol::negotiate("graphql-ws, graphql-transport-ws"),
        Some(Protocol::TransportWs)
    );
    assert_eq!(
        Protocol::negotiate("graphql-transport-ws,graphql-ws"),
        Some(Protocol::TransportWs)
    );
    assert_eq!(
        Protocol::negotiate("  graphql-transport-ws  "),
        Some(Protocol::TransportWs)
    );
}

#[test]
fn negotiate_falls_back_to_legacy_only_when_it_is_all_that_is_offered() {
    assert_eq!(Protocol::negotiate("graphql-ws"), Some(Protocol::Legacy));
    assert_eq!(
        Protocol::negotiate("foo, graphql-ws"),
        Some(Protocol::Legacy)
    );
}

#[test]
fn negotiate_refuses_anything_else() {
    for offered in [
        "",
        ",",
        "graphql",
        "graphql-transport",
        "graphql-transport-ws-v2",
        "xgraphql-ws",
        "graphql-transport-ws;q=1",
        "graphql_transport_ws",
    ] {
        assert_eq!(Protocol::negotiate(offered), None, "for {offered:?}");
    }
    assert_eq!(
        CloseCode::SubprotocolNotAcceptable.code(),
        4406,
        "a refused subprotocol closes with 4406"
    );
}

#[test]
fn protocol_names() {
    assert_eq!(Protocol::TransportWs.name(), "graphql-transport-ws");
    assert_eq!(Protocol::Legacy.name(), "graphql-ws");
}

#[test]
fn close_codes_match_the_reference() {
    let table = [
        (CloseCode::Normal, 1000),
        (CloseCode::GoingAway, 1001),
        (CloseCode::ProtocolError, 1002),
        (CloseCode::InvalidPayload, 1007),
        (CloseCode::MessageTooBig, 1009),
        (CloseCode::BadRequest, 4400),
        (CloseCode::Unauthorized, 4401),
        (CloseCode::Forbidden, 4403),
        (CloseCode::SubprotocolNotAcceptable, 4406),
        (CloseCode::ConnectionInitialisationTimeout, 4408),
        (CloseCode::SubscriberAlreadyExists, 4409),
        (CloseCode::TooManyInitialisationRequests, 4429),
        (CloseCode::InternalServerError, 4500),
    ];
    for (code, number) in table {
        assert_eq!(code.code(), number, "{code:?}");
        assert_eq!(Close::new(code).reason, code.default_reason());
    }
}

#[test]
fn close_reasons_are_cut_to_fit_a_close_frame_on_a_char_boundary() {
    let close = Close::with_reason(CloseCode::BadRequest, "\u{e9}".repeat(100));
    assert_eq!(close.reason.len(), 122);
    assert!(close.reason.chars().all(|c| c == '\u{e9}'));
    let close = Close::with_reason(CloseCode::BadRequest, "x".repeat(123));
    assert_eq!(close.reason.len(), 123);
}

// ---------------------------------------------------------------- init

#[test]
fn connection_init_asks_the_host_then_acks() {
    let mut s = Session::new(Protocol::TransportWs);
    assert!(!s.is_ready());
    let actions = s.on_text(r#"{"type":"connection_init","payload":{"token":"abc"}}"#);
    let mut expected = Map::new();
    expected.insert("token".into(), json!("abc"));
    assert_eq!(actions, [Action::Init { payload: expected }]);
    assert!(!s.is_ready(), "not ready until the policy answers");
    assert_eq!(
        s.accept(Some(json!({"server": "fanwire"}))),
        [Action::Send(ServerMessage::ConnectionAck {
            payload: Some(json!({"server": "fanwire"}))
        })]
    );
    assert!(s.is_ready());
    // A late second answer changes nothing.
    assert_eq!(s.accept(None), []);
}

#[test]
fn connection_init_payload_may_be_null_or_missing() {
    let mut s = Session::new(Protocol::TransportWs);
    assert_eq!(
        s.on_text(r#"{"type":"connection_init","payload":null}"#),
        [Action::Init {
            payload: Map::new()
        }]
    );
}

#[test]
fn connection_ack_encoding() {
    assert_eq!(
        wire(&ServerMessage::ConnectionAck { payload: None }),
        json!({"type": "connection_ack"})
    );
    assert_eq!(
        wire(&ServerMessage::ConnectionAck {
            payload: Some(json!({"a": 1}))
        }),
        json!({"type": "connection_ack", "payload": {"a": 1}})
    );
    assert_eq!(
        Protocol::TransportWs
            .encode(&ServerMessage::ConnectionAck { payload: None })
            .unwrap(),
        r#"{"type":"connection_ack"}"#
    );
}

// ---------------------------------------------------------------- 4400

#[test]
fn invalid_json_closes_4400() {
    for text in ["", "{", "not json", r#"{"type":"ping""#, "\u{0}"] {
        assert_bad_request(&mut Session::new(Protocol::TransportWs), text);
        assert_bad_request(&mut ready(), text);
    }
}

#[test]
fn non_object_or_untyped_message_closes_4400() {
    for text in [
        "[]",
        "null",
        "42",
        r#""connection_init""#,
        r#"{}"#,
        r#"{"payload":{}}"#,
        r#"{"type":null}"#,
        r#"{"type":1}"#,
        r#"{"type":{"name":"ping"}}"#,
    ] {
        assert_bad_request(&mut ready(), text);
    }
}

#[test]
fn unknown_type_closes_4400() {
    for kind in [
        "hello",
        "PING",
        "",
        // Legacy or server-only message types are not client messages here.
        "start",
        "stop",
        "connection_terminate",
        "next",
        "error",
        "connection_ack",
    ] {
        let text = json!({"type": kind, "id": "1", "payload": {}}).to_string();
        assert_bad_request(&mut ready(), &text);
    }
    // Even before init.
    assert_bad_request(
        &mut Session::new(Protocol::TransportWs),
        r#"{"type":"hello"}"#,
    );
}

#[test]
fn subscribe_without_a_valid_id_closes_4400() {
    for msg in [
        json!({"type": "subscribe", "payload": {"query": "subscription { ticks }"}}),
        json!({"type": "subscribe", "id": "", "payload": {"query": "subscription { ticks }"}}),
        json!({"type": "subscribe", "id": 1, "payload": {"query": "subscription { ticks }"}}),
        json!({"type": "subscribe", "id": null, "payload": {"query": "subscription { ticks }"}}),
    ] {
        assert_bad_request(&mut ready(), &msg.to_string());
    }
}

#[test]
fn subscribe_payload_not_an_object_closes_4400() {
    for p in [
        json!(null),
        json!("subscription { ticks }"),
        json!([]),
        json!(1),
    ] {
        let msg = json!({"type": "subscribe", "id": "1", "payload": p});
        assert_bad_request(&mut ready(), &msg.to_string());
    }
    assert_bad_request(&mut ready(), r#"{"type":"subscribe","id":"1"}"#);
}

#[test]
fn subscribe_query_not_a_string_closes_4400() {
    for p in [
        json!({}),
        json!({"query": null}),
        json!({"query": 1}),
        json!({"query": {"kind": "Document"}}),
    ] {
        let msg = json!({"type": "subscribe", "id": "1", "payload": p});
        assert_bad_request(&mut ready(), &msg.to_string());
    }
}

#[test]
fn subscribe_optional_members_of_the_wrong_type_close_4400() {
    for p in [
        json!({"query": "q", "operationName": 1}),
        json!({"query": "q", "variables": []}),
        json!({"query": "q", "variables": "x=1"}),
        json!({"query": "q", "extensions": 1}),
    ] {
        let msg = json!({"type": "subscribe", "id": "1", "payload": p});
        assert_bad_request(&mut ready(), &msg.to_string());
    }
}

#[test]
fn subscribe_optional_members_may_be_null_or_missing() {
    let mut s = ready();
    let msg = json!({"type": "subscribe", "id": "1", "payload": {
        "query": "subscription { ticks }", "operationName": null, "variables": null, "extensions": null
    }});
    assert_eq!(
        s.on_text(&msg.to_string()),
        [Action::Subscribe {
            id: "1".into(),
            payload: payload("subscription { ticks }")
        }]
    );
    let msg = json!({"type": "subscribe", "id": "2", "payload": {
        "query": "subscription S { ticks }", "operationName": "S",
        "variables": {"a": 1}, "extensions": {"persisted": true}
    }});
    let mut variables = Map::new();
    variables.insert("a".into(), json!(1));
    let mut extensions = Map::new();
    extensions.insert("persisted".into(), json!(true));
    assert_eq!(
        s.on_text(&msg.to_string()),
        [Action::Subscribe {
            id: "2".into(),
            payload: SubscribePayload {
                query: "subscription S { ticks }".into(),
                operation_name: Some("S".into()),
                variables,
                extensions,
            }
        }]
    );
}

#[test]
fn connection_init_payload_not_an_object_closes_4400() {
    for p in [json!("token"), json!([]), json!(1), json!(true)] {
        let msg = json!({"type": "connection_init", "payload": p});
        assert_bad_request(&mut Session::new(Protocol::TransportWs), &msg.to_string());
    }
}

#[test]
fn ping_or_pong_payload_not_an_object_closes_4400() {
    for kind in ["ping", "pong"] {
        let msg = json!({"type": kind, "payload": "hi"});
        assert_bad_request(&mut ready(), &msg.to_string());
    }
}

#[test]
fn complete_without_an_id_closes_4400() {
    assert_bad_request(&mut ready(), r#"{"type":"complete"}"#);
    assert_bad_request(&mut ready(), r#"{"type":"complete","id":""}"#);
    assert_bad_request(&mut ready(), r#"{"type":"complete","id":7}"#);
}

#[test]
fn binary_frame_closes_4400() {
    let mut s = ready();
    closed_with(s.on_binary(), CloseCode::BadRequest);
    assert!(s.is_closed());
    let mut s = Session::new(Protocol::TransportWs);
    closed_with(s.on_binary(), CloseCode::BadRequest);
}

#[test]
fn an_overlong_bad_type_still_yields_a_close_reason_that_fits() {
    let text = json!({"type": "x".repeat(10_000)}).to_string();
    let close = closed_with(ready().on_text(&text), CloseCode::BadRequest);
    assert!(close.reason.len() <= 123);
}

// ---------------------------------------------------------------- 4401

#[test]
fn subscribe_before_init_closes_4401() {
    let mut s = Session::new(Protocol::TransportWs);
    let close = closed_with(s.on_text(&sub("1")), CloseCode::Unauthorized);
    assert_eq!(close.reason, "Unauthorized");
    assert!(s.is_closed());
}

#[test]
fn subscribe_before_ack_closes_4401() {
    // connection_init arrived but the policy has not answered yet.
    let mut s = Session::new(Protocol::TransportWs);
    assert_eq!(s.on_text(INIT).len(), 1);
    closed_with(s.on_text(&sub("1")), CloseCode::Unauthorized);
    // The policy's late answer cannot reopen the session.
    assert_eq!(s.accept(None), []);
    assert!(!s.is_ready());
}

// ---------------------------------------------------------------- 4403

#[test]
fn reject_closes_4403_with_the_policys_reason() {
    let mut s = Session::new(Protocol::TransportWs);
    s.on_text(INIT);
    let close = closed_with(s.reject("token expired"), CloseCode::Forbidden);
    assert_eq!(close.reason, "token expired");
    assert!(s.is_closed());
    // Nothing more is read.
    assert_eq!(s.on_text(&sub("1")), []);
}

#[test]
fn reject_reason_is_cut_to_fit() {
    let mut s = Session::new(Protocol::TransportWs);
    s.on_text(INIT);
    let close = closed_with(s.reject(&"no ".repeat(100)), CloseCode::Forbidden);
    assert_eq!(close.reason.len(), 123);
}

// ---------------------------------------------------------------- 4408

#[test]
fn init_timeout_closes_4408() {
    let mut s = Session::new(Protocol::TransportWs);
    let close = closed_with(
        s.on_init_timeout(),
        CloseCode::ConnectionInitialisationTimeout,
    );
    assert_eq!(close.reason, "Connection initialisation timeout");
    assert!(s.is_closed());
    assert_eq!(s.on_text(INIT), [], "a late init is not read");
}

#[test]
fn init_timeout_after_init_arrived_does_nothing() {
    // While the policy is still deciding...
    let mut s = Session::new(Protocol::TransportWs);
    s.on_text(INIT);
    assert_eq!(s.on_init_timeout(), []);
    assert!(!s.is_closed());
    assert_eq!(s.accept(None).len(), 1);
    // ...and once acknowledged.
    let mut s = ready();
    assert_eq!(s.on_init_timeout(), []);
    assert!(s.is_ready());
}

// ---------------------------------------------------------------- 4409

#[test]
fn subscribe_with_an_active_id_closes_4409() {
    let mut s = ready();
    assert_eq!(
        s.on_text(&sub("dup")),
        [Action::Subscribe {
            id: "dup".into(),
            payload: payload("subscription { ticks }")
        }]
    );
    assert!(s.is_active("dup"));
    let close = closed_with(s.on_text(&sub("dup")), CloseCode::SubscriberAlreadyExists);
    assert_eq!(close.reason, "Subscriber for dup already exists");
    assert!(s.is_closed());
}

// ---------------------------------------------------------------- 4429

#[test]
fn second_connection_init_closes_4429() {
    let mut s = ready();
    let close = closed_with(s.on_text(INIT), CloseCode::TooManyInitialisationRequests);
    assert_eq!(close.reason, "Too many initialisation requests");
    assert!(s.is_closed());
}

#[test]
fn second_connection_init_while_the_first_is_pending_closes_4429() {
    let mut s = Session::new(Protocol::TransportWs);
    s.on_text(INIT);
    closed_with(s.on_text(INIT), CloseCode::TooManyInitialisationRequests);
}

// ---------------------------------------------------------------- ping / pong

#[test]
fn ping_gets_a_pong_echoing_its_payload() {
    let mut s = ready();
    assert_eq!(
        s.on_text(r#"{"type":"ping","payload":{"t":1}}"#),
        [Action::Send(ServerMessage::Pong {
            payload: Some(json!({"t": 1}))
        })]
    );
    assert_eq!(
        s.on_text(r#"{"type":"ping"}"#),
        [Action::Send(ServerMessage::Pong { payload: None })]
    );
    assert_eq!(
        s.on_text(r#"{"type":"ping","payload":null}"#),
        [Action::Send(ServerMessage::Pong { payload: None })]
    );
    assert!(s.is_ready());
}

#[test]
fn ping_before_init_gets_a_pong() {
    let mut s = Session::new(Protocol::TransportWs);
    assert_eq!(
        s.on_text(r#"{"type":"ping"}"#),
        [Action::Send(ServerMessage::Pong { payload: None })]
    );
    assert!(!s.is_closed());
    assert_eq!(s.on_text(INIT).len(), 1, "init still works afterwards");
}

#[test]
fn pong_encoding() {
    assert_eq!(
        wire(&ServerMessage::Pong { payload: None }),
        json!({"type": "pong"})
    );
    assert_eq!(
        wire(&ServerMessage::Pong {
            payload: Some(json!({"t": [1, "x"]}))
        }),
        json!({"type": "pong", "payload": {"t": [1, "x"]}})
    );
    assert_eq!(
        Protocol::TransportWs
            .encode(&ServerMessage::Pong { payload: None })
            .unwrap(),
        r#"{"type":"pong"}"#
    );
}

#[test]
fn unsolicited_pong_is_ignored() {
    let mut s = ready();
    assert_eq!(s.on_text(r#"{"type":"pong"}"#), []);
    assert_eq!(s.on_text(r#"{"type":"pong","payload":{"x":1}}"#), []);
    assert!(s.is_ready());
    let mut s = Session::new(Protocol::TransportWs);
    assert_eq!(s.on_text(r#"{"type":"pong"}"#), []);
    assert!(!s.is_closed());
}

#[test]
fn decode_reports_the_message_kinds() {
    let p = Protocol::TransportWs;
    assert_eq!(
        p.decode(r#"{"type":"ping","payload":{"a":1}}"#),
        Ok(ClientMessage::Ping {
            payload: Some(json!({"a": 1}))
        })
    );
    assert_eq!(p.decode(r#"{"type":"pong"}"#), Ok(ClientMessage::Pong));
    assert_eq!(
        p.decode(r#"{"type":"complete","id":"9"}"#),
        Ok(ClientMessage::Complete { id: "9".into() })
    );
    // Unknown members are tolerated, as in the reference.
    assert_eq!(
        p.decode(r#"{"type":"complete","id":"9","extra":true}"#),
        Ok(ClientMessage::Complete { id: "9".into() })
    );
    assert!(p.decode(r#"{"type":"start","id":"1"}"#).is_err());
}

// ---------------------------------------------------------------- complete

#[test]
fn complete_for_an_unknown_id_is_ignored() {
    let mut s = ready();
    assert_eq!(s.on_text(r#"{"type":"complete","id":"nope"}"#), []);
    assert!(s.is_ready());
    // Before init too.
    let mut s = Session::new(Protocol::TransportWs);
    assert_eq!(s.on_text(r#"{"type":"complete","id":"nope"}"#), []);
    assert!(!s.is_closed());
}

#[test]
fn complete_unsubscribes_once_then_is_ignored() {
    let mut s = ready();
    s.on_text(&sub("1"));
    assert_eq!(
        s.on_text(r#"{"type":"complete","id":"1"}"#),
        [Action::Unsubscribe { id: "1".into() }]
    );
    assert!(!s.is_active("1"));
    assert_eq!(s.on_text(r#"{"type":"complete","id":"1"}"#), []);
    assert!(s.is_ready());
}

#[test]
fn id_is_reusable_after_complete() {
    let mut s = ready();
    s.on_text(&sub("1"));
    s.on_text(r#"{"type":"complete","id":"1"}"#);
    assert_eq!(
        s.on_text(&sub("1")),
        [Action::Subscribe {
            id: "1".into(),
            payload: payload("subscription { ticks }")
        }]
    );
    assert!(s.is_active("1"));
}

#[test]
fn subscribe_failed_sends_one_error_and_frees_the_id() {
    let mut s = ready();
    s.on_text(&sub("1"));
    let errors = vec![GraphQLError::new(
        "Cannot query field",
        codes::VALIDATION_FAILED,
    )];
    assert_eq!(
        s.subscribe_failed("1", errors.clone()),
        [Action::Send(ServerMessage::Error {
            id: "1".into(),
            errors
        })],
        "graphql-transport-ws sends no `complete` after `error`"
    );
    assert!(!s.is_active("1"));
    assert!(s.is_ready(), "an operation error does not close the socket");
    // The id is free again.
    assert_eq!(s.on_text(&sub("1")).len(), 1);
    assert!(s.is_active("1"));
    // A failure for an id that is not pending says nothing.
    assert_eq!(s.subscribe_failed("other", Vec::new()), []);
}

#[test]
fn error_encoding_carries_the_graphql_errors() {
    let mut err = GraphQLError::new("Unknown field", codes::VALIDATION_FAILED);
    err.locations = vec![fanwire_core::error::Location {
        line: 1,
        column: 16,
    }];
    let msg = ServerMessage::Error {
        id: "7".into(),
        errors: vec![err],
    };
    assert_eq!(
        wire(&msg),
        json!({"id": "7", "type": "error", "payload": [{
            "message": "Unknown field",
            "locations": [{"line": 1, "column": 16}],
            "extensions": {"code": "GRAPHQL_VALIDATION_FAILED"}
        }]})
    );
}

#[test]
fn server_complete_sends_complete_and_frees_the_id() {
    let mut s = ready();
    s.on_text(&sub("1"));
    assert_eq!(
        s.server_complete("1"),
        [Action::Send(ServerMessage::Complete { id: "1".into() })]
    );
    assert!(!s.is_active("1"));
    assert_eq!(s.server_complete("1"), []);
    assert_eq!(
        wire(&ServerMessage::Complete { id: "1".into() }),
        json!({"id": "1", "type": "complete"})
    );
}

#[test]
fn active_ids_are_tracked_and_drained() {
    let mut s = ready();
    for id in ["a", "b", "c"] {
        s.on_text(&sub(id));
    }
    s.on_text(r#"{"type":"complete","id":"b"}"#);
    assert_eq!(s.active_count(), 2);
    let mut ids = s.drain_active();
    ids.sort();
    assert_eq!(ids, ["a", "c"]);
    assert_eq!(s.active_count(), 0);
}

// ---------------------------------------------------------------- next frames

#[test]
fn next_frames_are_prefix_payload_suffix() {
    let payload: Arc<[u8]> = Arc::from(&br#"{"data":{"ticks":1}}"#[..]);
    let expected = r#"{"id":"a\"b","type":"next","payload":{"data":{"ticks":1}}}"#;
    let prefix = Protocol::TransportWs.next_prefix("a\"b");
    assert_eq!(
        String::from_utf8(assemble_next(&prefix, &payload)).unwrap(),
        expected
    );
    assert_eq!(NEXT_SUFFIX, b"}");
    assert_eq!(
        Protocol::TransportWs
            .encode(&ServerMessage::Next {
                id: "a\"b".into(),
                payload
            })
            .unwrap(),
        expected
    );
}

#[test]
fn legacy_only_messages_have_no_transport_ws_encoding() {
    assert_eq!(
        Protocol::TransportWs.encode(&ServerMessage::KeepAlive),
        None
    );
    assert_eq!(
        Protocol::TransportWs.encode(&ServerMessage::ConnectionError {
            message: "x".into()
        }),
        None
    );
}

// ---------------------------------------------------------------- after close

#[test]
fn host_close_closes_once() {
    let mut s = ready();
    s.on_text(&sub("1"));
    let close = closed_with(
        s.close(Close::new(CloseCode::GoingAway)),
        CloseCode::GoingAway,
    );
    assert_eq!(close.reason, "Server shutting down");
    assert!(s.is_closed());
    assert_eq!(s.close(Close::new(CloseCode::GoingAway)), []);
    assert_eq!(s.on_text(&sub("2")), []);
}

#[test]
fn a_closed_session_ignores_everything() {
    let mut s = ready();
    s.on_text(&sub("1"));
    closed_with(s.on_text("garbage"), CloseCode::BadRequest);
    assert_eq!(s.on_text(r#"{"type":"ping"}"#), []);
    assert_eq!(s.on_text(&sub("2")), []);
    assert_eq!(s.on_text(INIT), []);
    assert_eq!(s.on_binary(), []);
    assert_eq!(s.on_init_timeout(), []);
    assert_eq!(s.reject("late"), []);
    assert_eq!(s.on_message(ClientMessage::Pong), []);
    assert!(!s.is_ready());
}
