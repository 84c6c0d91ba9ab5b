//! Client and server messages, independent of which subprotocol carries them.

use std::sync::Arc;

use serde_json::{Map, Value};

use super::close::Close;
use crate::error::GraphQLError;

/// The `payload` of a `subscribe` (or legacy `start`) message.
#[derive(Debug, Clone, PartialEq)]
pub struct SubscribePayload {
    /// The GraphQL document.
    pub query: String,
    /// Which operation of the document to run.
    pub operation_name: Option<String>,
    /// Variable values, as sent.
    pub variables: Map<String, Value>,
    /// Free-form request extensions.
    pub extensions: Map<String, Value>,
}

/// A message from a client, decoded and checked.
#[derive(Debug, Clone, PartialEq)]
pub enum ClientMessage {
    /// `connection_init`, with its optional payload object.
    ConnectionInit {
        /// The init payload (often carries auth).
        payload: Map<String, Value>,
    },
    /// `ping`.
    Ping {
        /// Optional payload, echoed in the pong.
        payload: Option<Value>,
    },
    /// `pong` (unsolicited pongs are allowed).
    Pong,
    /// `subscribe` / legacy `start`.
    Subscribe {
        /// The client's operation id.
        id: String,
        /// The request.
        payload: SubscribePayload,
    },
    /// `complete` / legacy `stop`.
    Complete {
        /// The operation id.
        id: String,
    },
    /// Legacy `connection_terminate`.
    Terminate,
}

/// A message to a client; the session's [`super::Protocol`] encodes it.
#[derive(Debug, Clone, PartialEq)]
pub enum ServerMessage {
    /// `connection_ack`.
    ConnectionAck {
        /// Optional ack payload.
        payload: Option<Value>,
    },
    /// Legacy `connection_error`.
    ConnectionError {
        /// Why the connection was refused.
        message: String,
    },
    /// `pong` in answer to a client `ping`.
    Pong {
        /// The ping's payload, echoed.
        payload: Option<Value>,
    },
    /// Legacy keep-alive `ka`.
    KeepAlive,
    /// A result for one subscription; `payload` is a serialised execution result.
    Next {
        /// The operation id.
        id: String,
        /// Serialised `{"data":…,"errors":…}` bytes.
        payload: Arc<[u8]>,
    },
    /// Errors that end one subscription before it started.
    Error {
        /// The operation id.
        id: String,
        /// GraphQL errors.
        errors: Vec<GraphQLError>,
    },
    /// The server finished one subscription.
    Complete {
        /// The operation id.
        id: String,
    },
}

/// What a session asks its host to do.
#[derive(Debug, Clone, PartialEq)]
pub enum Action {
    /// Send a message.
    Send(ServerMessage),
    /// Close the socket; nothing more is read or sent.
    Close(Close),
    /// The client asked to initialise; the host must answer with
    /// `accept` or `reject` on the session (a connection policy decides).
    Init {
        /// The init payload.
        payload: Map<String, Value>,
    },
    /// Start a subscription; the host answers failures with `subscribe_failed`.
    Subscribe {
        /// The operation id, now reserved.
        id: String,
        /// The request.
        payload: SubscribePayload,
    },
    /// Stop a subscription the client completed.
    Unsubscribe {
        /// The operation id, now free.
        id: String,
    },
}
