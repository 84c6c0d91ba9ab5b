//! graphql-transport-ws framing, strict as the reference `validateMessage`.

use serde_json::{json, Value};

use super::message::{ClientMessage, ServerMessage};
use super::{optional_object, parse_object, required_id, subscribe_payload};

pub(super) fn decode(text: &str) -> Result<ClientMessage, String> {
    let (kind, obj) = parse_object(text)?;
    match kind.as_str() {
        "connection_init" => Ok(ClientMessage::ConnectionInit {
            payload: optional_object(&obj, "payload", &kind)?,
        }),
        "ping" | "pong" => {
            let payload = match obj.get("payload") {
                None | Some(Value::Null) => None,
                Some(p @ Value::Object(_)) => Some(p.clone()),
                Some(_) => {
                    return Err(format!(
                        "\"{kind}\" message expects the 'payload' property to be an object or nullish or missing"
                    ))
                }
            };
            Ok(if kind == "ping" {
                ClientMessage::Ping { payload }
            } else {
                ClientMessage::Pong
            })
        }
        "subscribe" => Ok(ClientMessage::Subscribe {
            id: required_id(&obj, &kind)?,
            payload: subscribe_payload(&obj, &kind)?,
        }),
        "complete" => Ok(ClientMessage::Complete {
            id: required_id(&obj, &kind)?,
        }),
        other => Err(format!("Invalid message 'type' property \"{other}\"")),
    }
}

pub(super) fn encode(msg: &ServerMessage) -> Option<String> {
    let value = match msg {
        ServerMessage::ConnectionAck { payload: None } => json!({"type": "connection_ack"}),
        ServerMessage::ConnectionAck { payload: Some(p) } => {
            json!({"type": "connection_ack", "payload": p})
        }
        ServerMessage::Pong { payload: None } => json!({"type": "pong"}),
        ServerMessage::Pong { payload: Some(p) } => json!({"type": "pong", "payload": p}),
        ServerMessage::Error { id, errors } => {
            json!({"id": id, "type": "error", "payload": errors})
        }
        ServerMessage::Complete { id } => json!({"id": id, "type": "complete"}),
        ServerMessage::Next { id, payload } => {
            let frame =
                super::assemble_next(&super::Protocol::TransportWs.next_prefix(id), payload);
            return String::from_utf8(frame).ok();
        }
        ServerMessage::ConnectionError { .. } | ServerMessage::KeepAlive => return None,
    };
    Some(value.to_string())
}
