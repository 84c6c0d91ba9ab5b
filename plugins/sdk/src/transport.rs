//! Transport adapters: a custom WebSocket subprotocol in front of the host's
//! protocol state machine. Results are framed by templates, so the host
//! never calls the adapter per delivered result.

use crate::{Object, Value};

/// A client message, as the host's state machine understands it.
#[derive(Debug, Clone, PartialEq)]
pub enum ClientMessage {
    /// Open the session with this payload (the connection policy sees it).
    Init(Object),
    /// A ping with an optional payload.
    Ping(Option<Value>),
    /// A pong.
    Pong,
    /// Start a subscription.
    Subscribe(SubscribeRequest),
    /// Stop subscription `id`.
    Complete(String),
}

/// The request of a subscribe.
#[derive(Debug, Clone, PartialEq, Default)]
pub struct SubscribeRequest {
    /// The client's operation id.
    pub id: String,
    /// The GraphQL document.
    pub query: String,
    /// Which operation to run.
    pub operation_name: Option<String>,
    /// Variable values.
    pub variables: Object,
    /// Request extensions.
    pub extensions: Object,
}

/// A control message for the client.
#[derive(Debug, Clone, PartialEq)]
pub enum ServerMessage {
    /// The connection is accepted.
    Ack(Option<Value>),
    /// The answer to a ping.
    Pong(Option<Value>),
    /// Subscription `id` failed or was ended by the server; `errors` is a JSON array.
    Error {
        /// The operation id.
        id: String,
        /// GraphQL errors in the standard shape.
        errors: Value,
    },
    /// Subscription `id` is finished.
    Complete(String),
}

/// How results of one subscription are framed: `prefix ++ result ++ suffix`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Template {
    /// Text before the serialised execution result.
    pub prefix: String,
    /// Text after it.
    pub suffix: String,
}

/// A custom protocol.
pub trait TransportAdapter {
    /// The `Sec-WebSocket-Protocol` name that selects this adapter.
    fn subprotocol() -> String;
    /// Decodes a text frame; `Err` closes the connection with 4400.
    fn decode(frame: &str) -> Result<ClientMessage, String>;
    /// Encodes a control message; `None` sends nothing.
    fn encode(message: ServerMessage) -> Option<String>;
    /// The result template of subscription `id`.
    fn template(id: &str) -> Template;
}

/// Exports a type implementing [`TransportAdapter`].
#[macro_export]
macro_rules! export_transport {
    ($ty:ty) => {
        const _: () = {
            use $crate::wit::exports::fanwire::plugin::transport as __w;
            struct __FanwireTransport;
            impl __w::Guest for __FanwireTransport {
                fn subprotocol() -> ::std::string::String {
                    <$ty as $crate::TransportAdapter>::subprotocol()
                }
                fn decode(
                    frame: ::std::string::String,
                ) -> ::std::result::Result<__w::ClientMessage, ::std::string::String> {
                    $crate::transport::__decode::<$ty>(&frame)
                }
                fn encode(
                    message: __w::ServerMessage,
                ) -> ::std::option::Option<::std::string::String> {
                    $crate::transport::__encode::<$ty>(message)
                }
                fn result_template(id: ::std::string::String) -> __w::Template {
                    let t = <$ty as $crate::TransportAdapter>::template(&id);
                    __w::Template {
                        prefix: t.prefix,
                        suffix: t.suffix,
                    }
                }
            }
    $crate::wit::__export_world!(__FanwireTransport with_types_in $crate::wit);
        };
    };
}

#[cfg(feature = "transport-adapter")]
mod glue {
    use super::*;
    use crate::wit::exports::fanwire::plugin::transport as w;

    fn json(value: &Option<Value>) -> Option<String> {
        value.as_ref().map(Value::to_string)
    }

    fn parse(text: Option<String>) -> Option<Value> {
        text.and_then(|t| serde_json::from_str(&t).ok())
    }

    #[doc(hidden)]
    pub fn __decode<T: TransportAdapter>(frame: &str) -> Result<w::ClientMessage, String> {
        Ok(match T::decode(frame)? {
            ClientMessage::Init(payload) => {
                w::ClientMessage::Init(Value::Object(payload).to_string())
            }
            ClientMessage::Ping(payload) => w::ClientMessage::Ping(json(&payload)),
            ClientMessage::Pong => w::ClientMessage::Pong,
            ClientMessage::Subscribe(r) => w::ClientMessage::Subscribe(w::SubscribeRequest {
                id: r.id,
                query: r.query,
                operation_name: r.operation_name,
                variables: Value::Object(r.variables).to_string(),
                extensions: Value::Object(r.extensions).to_string(),
            }),
            ClientMessage::Complete(id) => w::ClientMessage::Complete(id),
        })
    }

    #[doc(hidden)]
    pub fn __encode<T: TransportAdapter>(message: w::ServerMessage) -> Option<String> {
        T::encode(match message {
            w::ServerMessage::Ack(p) => ServerMessage::Ack(parse(p)),
            w::ServerMessage::Pong(p) => ServerMessage::Pong(parse(p)),
            w::ServerMessage::Error(e) => ServerMessage::Error {
                id: e.id,
                errors: serde_json::from_str(&e.errors).unwrap_or(Value::Null),
            },
            w::ServerMessage::Complete(id) => ServerMessage::Complete(id),
        })
    }
}

#[cfg(feature = "transport-adapter")]
pub use glue::{__decode, __encode};
