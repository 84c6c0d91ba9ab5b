//! Legacy `graphql-ws` (subscriptions-transport-ws) framing.

use serde_json::json;

use super::message::{ClientMessage, ServerMessage};
use super::{optional_object, parse_object, required_id, subscribe_payload};

pub(super) fn decode(text: &str) -> Result<ClientMessage, String> {
    let (kind, obj) = parse_object(text)?;
    match kind.as_str() {
        "connection_init" => Ok(ClientMessage::ConnectionInit {
            payload: optional_object(&obj, "payload", &kind)?,
        }),
        "start" => Ok(ClientMessage::Subscribe {
            id: required_id(&obj, &kind)?,
            payload: subscribe_payload(&obj, &kind)?,
        }),
        "stop" => Ok(ClientMessage::Complete {
            id: required_id(&obj, &kind)?,
        }),
        "connection_terminate" => Ok(ClientMessage::Terminate),
        other => Err(format!("Invalid message type \"{other}\"")),
    }
}

pub(super) fn encode(msg: &ServerMessage) -> Option<String> {
    let value = match msg {
        ServerMessage::ConnectionAck { .. } => json!({"type": "connection_ack"}),
        ServerMessage::ConnectionError { message } => {
            json!({"type": "connection_error", "payload": {"message": message}})
        }
        ServerMessage::KeepAlive => json!({"type": "ka"}),
        // The legacy protocol reports operation errors as a `data` result
        // carrying `errors`, which every legacy client understands.
        ServerMessage::Error { id, errors } => {
            json!({"id": id, "type": "data", "payload": {"data": null, "errors": errors}})
        }
        ServerMessage::Complete { id } => json!({"id": id, "type": "complete"}),
        ServerMessage::Next { id, payload } => {
            let frame = super::assemble_next(&super::Protocol::Legacy.next_prefix(id), payload);
            return String::from_utf8(frame).ok();
        }
        ServerMessage::Pong { .. } => return None,
    };
    Some(value.to_string())
}
