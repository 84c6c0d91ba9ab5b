//! The wire protocols, as state machines with no sockets.
//!
//! Bytes in, [`Action`]s out: the same code serves the Rust server, the
//! Python adapters and the tests.

mod close;
mod legacy;
mod message;
mod session;
mod transport_ws;

pub use close::{Close, CloseCode};
pub use message::{Action, ClientMessage, ServerMessage, SubscribePayload};
pub use session::Session;

/// The subprotocols a client may choose with `Sec-WebSocket-Protocol`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Protocol {
    /// `graphql-transport-ws` (enisdenjo/graphql-ws), the primary protocol.
    TransportWs,
    /// `graphql-ws` (Apollo's legacy subscriptions-transport-ws).
    Legacy,
}

impl Protocol {
    /// The subprotocol name on the wire.
    pub fn name(self) -> &'static str {
        match self {
            Protocol::TransportWs => "graphql-transport-ws",
            Protocol::Legacy => "graphql-ws",
        }
    }

    /// Picks the protocol from a `Sec-WebSocket-Protocol` header value:
    /// `graphql-transport-ws` wins when offered, the legacy protocol serves
    /// clients that offer only that, anything else gets `None` (close 4406).
    pub fn negotiate(offered: &str) -> Option<Protocol> {
        let names: Vec<&str> = offered.split(',').map(str::trim).collect();
        if names.contains(&Protocol::TransportWs.name()) {
            Some(Protocol::TransportWs)
        } else if names.contains(&Protocol::Legacy.name()) {
            Some(Protocol::Legacy)
        } else {
            None
        }
    }

    /// Decodes one text frame, or says why it is malformed.
    pub fn decode(self, text: &str) -> Result<ClientMessage, String> {
        match self {
            Protocol::TransportWs => transport_ws::decode(text),
            Protocol::Legacy => legacy::decode(text),
        }
    }

    /// Encodes a message as a text frame; `None` when this protocol has no
    /// such message (a legacy client never gets a `pong`).
    pub fn encode(self, msg: &ServerMessage) -> Option<String> {
        match self {
            Protocol::TransportWs => transport_ws::encode(msg),
            Protocol::Legacy => legacy::encode(msg),
        }
    }

    /// The bytes of a result frame before the shared payload: the only part
    /// of a fanned-out frame that differs per client. The frame is
    /// `prefix ++ payload ++ NEXT_SUFFIX`.
    pub fn next_prefix(self, id: &str) -> Vec<u8> {
        let kind = match self {
            Protocol::TransportWs => "next",
            Protocol::Legacy => "data",
        };
        // Saturating: the id is the client's (a capacity is only a hint).
        let mut out = Vec::with_capacity(id.len().saturating_add(40));
        out.extend_from_slice(b"{\"id\":");
        // Writing a str into a Vec cannot fail.
        serde_json::to_writer(&mut out, id).unwrap_or_default();
        out.extend_from_slice(b",\"type\":\"");
        out.extend_from_slice(kind.as_bytes());
        out.extend_from_slice(b"\",\"payload\":");
        out
    }
}

/// The byte that closes every result frame after its payload.
pub const NEXT_SUFFIX: &[u8] = b"}";

/// Builds a complete result frame from its prefix and shared payload.
pub fn assemble_next(prefix: &[u8], payload: &[u8]) -> Vec<u8> {
    let len = prefix
        .len()
        .saturating_add(payload.len())
        .saturating_add(NEXT_SUFFIX.len());
    let mut out = Vec::with_capacity(len);
    out.extend_from_slice(prefix);
    out.extend_from_slice(payload);
    out.extend_from_slice(NEXT_SUFFIX);
    out
}

/// Reads an optional member that must be an object (or null) when present.
fn optional_object(
    obj: &serde_json::Map<String, serde_json::Value>,
    key: &str,
    what: &str,
) -> Result<serde_json::Map<String, serde_json::Value>, String> {
    match obj.get(key) {
        None | Some(serde_json::Value::Null) => Ok(serde_json::Map::new()),
        Some(serde_json::Value::Object(m)) => Ok(m.clone()),
        Some(_) => Err(format!(
            "\"{what}\" message expects the '{key}' property to be an object or nullish or missing"
        )),
    }
}

/// Reads a required, non-empty string member.
fn required_id(
    obj: &serde_json::Map<String, serde_json::Value>,
    what: &str,
) -> Result<String, String> {
    match obj.get("id") {
        Some(serde_json::Value::String(s)) if !s.is_empty() => Ok(s.clone()),
        _ => Err(format!(
            "\"{what}\" message requires a non-empty 'id' string property"
        )),
    }
}

/// Parses the shared `payload` of a subscribe / start message.
fn subscribe_payload(
    obj: &serde_json::Map<String, serde_json::Value>,
    what: &str,
) -> Result<SubscribePayload, String> {
    let payload = match obj.get("payload") {
        Some(serde_json::Value::Object(p)) => p,
        _ => {
            return Err(format!(
                "\"{what}\" message expects the 'payload' property to be an object"
            ))
        }
    };
    let query = match payload.get("query") {
        Some(serde_json::Value::String(q)) => q.clone(),
        _ => {
            return Err(format!(
                "\"{what}\" message payload expects the 'query' property to be a string"
            ))
        }
    };
    let operation_name = match payload.get("operationName") {
        None | Some(serde_json::Value::Null) => None,
        Some(serde_json::Value::String(s)) => Some(s.clone()),
        Some(_) => {
            return Err(format!(
                "\"{what}\" message payload expects the 'operationName' property to be a string or nullish or missing"
            ))
        }
    };
    Ok(SubscribePayload {
        query,
        operation_name,
        variables: optional_object(payload, "variables", what)?,
        extensions: optional_object(payload, "extensions", what)?,
    })
}

/// Parses a frame into a JSON object with a string `type`.
fn parse_object(
    text: &str,
) -> Result<(String, serde_json::Map<String, serde_json::Value>), String> {
    let value: serde_json::Value =
        serde_json::from_str(text).map_err(|e| format!("Message is not valid JSON: {e}"))?;
    let serde_json::Value::Object(obj) = value else {
        return Err("Message is expected to be an object".into());
    };
    match obj.get("type") {
        Some(serde_json::Value::String(t)) => Ok((t.clone(), obj)),
        _ => Err("Message is missing the 'type' property".into()),
    }
}
