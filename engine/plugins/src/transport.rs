//! A WASM `transport-adapter` plugin: a custom WebSocket subprotocol
//! translated to and from graphql-transport-ws, whose state machine (the
//! core's `Session`) keeps every rule. The host calls the plugin once per
//! client frame, once per control message (ack, pong, error, complete) and
//! once per subscription for its result template; results themselves are
//! framed by the host (`prefix ++ result ++ suffix`), never by the plugin.

use std::sync::Arc;

use serde_json::{json, Map, Value};

use crate::metrics::Function;
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

/// Runs `$body` with `$b` bound to the instance's bindings and `$w` to its
/// version's `transport` interface module: the message records are declared
/// there, so each version has its own Rust types (of the same shape).
macro_rules! with_transport {
    ($slot:ident, |$b:ident, $w:tt| $body:expr) => {
        match &$slot.bindings {
            Bindings::Transport01($b) => {
                // Unused where the body needs no message type (`_`).
                #[allow(unused_imports)]
                use crate::bindings::v0_1::transport::exports::fanwire::plugin::transport as $w;
                $body
            }
            Bindings::Transport02($b) => {
                #[allow(unused_imports)]
                use crate::bindings::v0_2::transport::exports::fanwire::plugin::transport as $w;
                $body
            }
            Bindings::Transport03($b) => {
                #[allow(unused_imports)]
                use crate::bindings::v0_3::transport::exports::fanwire::plugin::transport as $w;
                $body
            }
            Bindings::Transport04($b) => {
                #[allow(unused_imports)]
                use crate::bindings::v0_4::transport::exports::fanwire::plugin::transport as $w;
                $body
            }
            _ => unreachable!("a transport adapter is loaded with its world"),
        }
    };
}

impl WasmTransport {
    /// Wraps a plugin loaded as a `transport-adapter` and asks its subprotocol name.
    pub fn new(plugin: Arc<Plugin>) -> Result<WasmTransport, LoadError> {
        let subprotocol = plugin
            .call(Function::Template, |slot| {
                with_transport!(slot, |b, _| b
                    .fanwire_plugin_transport()
                    .call_subprotocol(&mut slot.store))
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
            .call(Function::Decode, |slot| {
                with_transport!(slot, |b, w| b
                    .fanwire_plugin_transport()
                    .call_decode(&mut slot.store, &frame)
                    .map(|decoded| decoded.map(|m| match m {
                        w::ClientMessage::Init(payload) => {
                            json!({"type": "connection_init", "payload": object(&payload)})
                        }
                        w::ClientMessage::Ping(payload) => match payload {
                            Some(p) => json!({"type": "ping", "payload": object(&p)}),
                            None => json!({"type": "ping"}),
                        },
                        w::ClientMessage::Pong => json!({"type": "pong"}),
                        w::ClientMessage::Subscribe(r) => json!({
                            "id": r.id,
                            "type": "subscribe",
                            "payload": {
                                "query": r.query,
                                "operationName": r.operation_name,
                                "variables": object(&r.variables),
                                "extensions": object(&r.extensions),
                            },
                        }),
                        w::ClientMessage::Complete(id) => json!({"id": id, "type": "complete"}),
                    })))
            })
            .map_err(|f| {
                format!(
                    "transport adapter {} failed ({})",
                    self.plugin.name(),
                    f.label()
                )
            })??;
        Ok(message.to_string())
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
        let kind = v.get("type").and_then(Value::as_str)?;
        if !matches!(kind, "connection_ack" | "pong" | "error" | "complete") {
            return None;
        }
        self.plugin
            .call(Function::Encode, |slot| {
                with_transport!(slot, |b, w| {
                    let message = match kind {
                        "connection_ack" => w::ServerMessage::Ack(payload.clone()),
                        "pong" => w::ServerMessage::Pong(payload.clone()),
                        "error" => w::ServerMessage::Error(w::SubscriptionError {
                            id: id.clone(),
                            errors: payload.clone().unwrap_or_else(|| "[]".into()),
                        }),
                        _ => w::ServerMessage::Complete(id.clone()),
                    };
                    b.fanwire_plugin_transport()
                        .call_encode(&mut slot.store, &message)
                })
            })
            .ok()
            .flatten()
    }

    /// The result template (prefix, suffix) of subscription `id`; `None`
    /// when the plugin fails (the host then closes the connection).
    pub fn template(&self, id: &str) -> Option<(String, String)> {
        let id = id.to_owned();
        self.plugin
            .call(Function::Template, |slot| {
                with_transport!(slot, |b, _| b
                    .fanwire_plugin_transport()
                    .call_result_template(&mut slot.store, &id)
                    .map(|t| (t.prefix, t.suffix)))
            })
            .ok()
    }
}
