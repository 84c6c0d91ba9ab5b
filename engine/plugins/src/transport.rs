//! A WASM `transport-adapter` plugin: a custom WebSocket subprotocol
//! translated to and from graphql-transport-ws, whose state machine (the
//! core's `Session`) keeps every rule. The host calls the plugin once per
//! client frame, once per control message (ack, pong, error, complete) and
//! once per subscription for its result template; results themselves are
//! framed by the host (`prefix ++ result ++ suffix`), never by the plugin.

use std::sync::Arc;

use serde_json::{json, Map, Value};

use crate::bindings::v0_1::transport::exports::fanwire::plugin::transport as wit;
use crate::plugin::{Bindings, Plugin};
use crate::LoadError;

/// A transport adapter plugin with its subprotocol name.
#[derive(Debug)]
pub struct WasmTransport {
    plugin: Arc<Plugin>,
    subprotocol: String,
}

fn parse(text: &str) -> Value {
    serde_json::from_str(text).unwrap_or(Value::Null)
}

fn object(text: &str) -> Value {
    match parse(text) {
        v @ Value::Object(_) => v,
        _ => Value::Object(Map::new()),
    }
}

impl WasmTransport {
    /// Wraps a plugin loaded as a `transport-adapter` and asks its subprotocol name.
    pub fn new(plugin: Arc<Plugin>) -> Result<WasmTransport, LoadError> {
        let subprotocol = plugin
            .call("template", |slot| match &slot.bindings {
                Bindings::Transport(b) => b
                    .fanwire_plugin_transport()
                    .call_subprotocol(&mut slot.store),
                _ => unreachable!("a transport adapter is loaded with its world"),
            })
            .map_err(|f| LoadError::Instantiate(format!("subprotocol() failed ({})", f.label())))?;
        if subprotocol.is_empty() || subprotocol.contains([',', ' ']) {
            return Err(LoadError::Config(format!(
                "invalid subprotocol name {subprotocol:?}"
            )));
        }
        Ok(WasmTransport {
            plugin,
            subprotocol,
        })
    }

    /// The `Sec-WebSocket-Protocol` name that selects this adapter.
    pub fn subprotocol(&self) -> &str {
        &self.subprotocol
    }

    /// Decodes a client frame into the graphql-transport-ws message the
    /// session understands; `Err` closes the connection with 4400.
    pub fn decode(&self, frame: &str) -> Result<String, String> {
        let frame = frame.to_owned();
        let message = self
            .plugin
            .call("decode", |slot| match &slot.bindings {
                Bindings::Transport(b) => b
                    .fanwire_plugin_transport()
                    .call_decode(&mut slot.store, &frame),
                _ => unreachable!("a transport adapter is loaded with its world"),
            })
            .map_err(|f| {
                format!(
                    "transport adapter {} failed ({})",
                    self.plugin.name(),
                    f.label()
                )
            })??;
        Ok(match message {
            wit::ClientMessage::Init(payload) => {
                json!({"type": "connection_init", "payload": object(&payload)})
            }
            wit::ClientMessage::Ping(payload) => match payload {
                Some(p) => json!({"type": "ping", "payload": object(&p)}),
                None => json!({"type": "ping"}),
            },
            wit::ClientMessage::Pong => json!({"type": "pong"}),
            wit::ClientMessage::Subscribe(r) => json!({
                "id": r.id,
                "type": "subscribe",
                "payload": {
                    "query": r.query,
                    "operationName": r.operation_name,
                    "variables": object(&r.variables),
                    "extensions": object(&r.extensions),
                },
            }),
            wit::ClientMessage::Complete(id) => json!({"id": id, "type": "complete"}),
        }
        .to_string())
    }

    /// Encodes a graphql-transport-ws control message for the client;
    /// `None` sends nothing.
    pub fn encode(&self, control: &str) -> Option<String> {
        let v = parse(control);
        let id = v
            .get("id")
            .and_then(Value::as_str)
            .unwrap_or_default()
            .to_owned();
        let payload = v.get("payload").map(Value::to_string);
        let message = match v.get("type").and_then(Value::as_str)? {
            "connection_ack" => wit::ServerMessage::Ack(payload),
            "pong" => wit::ServerMessage::Pong(payload),
            "error" => wit::ServerMessage::Error(wit::SubscriptionError {
                id,
                errors: payload.unwrap_or_else(|| "[]".into()),
            }),
            "complete" => wit::ServerMessage::Complete(id),
            _ => return None,
        };
        self.plugin
            .call("encode", |slot| match &slot.bindings {
                Bindings::Transport(b) => b
                    .fanwire_plugin_transport()
                    .call_encode(&mut slot.store, &message),
                _ => unreachable!("a transport adapter is loaded with its world"),
            })
            .ok()
            .flatten()
    }

    /// The result template (prefix, suffix) of subscription `id`; `None`
    /// when the plugin fails (the host then closes the connection).
    pub fn template(&self, id: &str) -> Option<(String, String)> {
        let id = id.to_owned();
        self.plugin
            .call("template", |slot| match &slot.bindings {
                Bindings::Transport(b) => b
                    .fanwire_plugin_transport()
                    .call_result_template(&mut slot.store, &id),
                _ => unreachable!("a transport adapter is loaded with its world"),
            })
            .ok()
            .map(|t| (t.prefix, t.suffix))
    }
}
