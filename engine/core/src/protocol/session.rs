//! One connection's protocol state: which phase it is in and which ids are live.

use std::collections::HashSet;

use serde_json::Value;

use super::close::{Close, CloseCode};
use super::message::{Action, ClientMessage, ServerMessage};
use super::Protocol;
use crate::error::{codes, GraphQLError};

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Phase {
    AwaitingInit,
    /// `connection_init` arrived; the host's policy has not answered yet.
    Initialising,
    Ready,
    Closed,
}

/// The protocol state machine of one connection, for either subprotocol.
///
/// It owns the rules of the table in `docs/architecture.md`; the host only
/// executes the [`Action`]s it returns and reports what it decided
/// ([`Session::accept`], [`Session::subscribe_failed`], ...).
#[derive(Debug)]
pub struct Session {
    protocol: Protocol,
    phase: Phase,
    active: HashSet<String>,
}

impl Session {
    /// A fresh session waiting for `connection_init`.
    pub fn new(protocol: Protocol) -> Self {
        Session {
            protocol,
            phase: Phase::AwaitingInit,
            active: HashSet::new(),
        }
    }

    /// The subprotocol this session speaks.
    pub fn protocol(&self) -> Protocol {
        self.protocol
    }

    /// Whether the connection has been acknowledged.
    pub fn is_ready(&self) -> bool {
        self.phase == Phase::Ready
    }

    /// Whether the session has closed.
    pub fn is_closed(&self) -> bool {
        self.phase == Phase::Closed
    }

    /// Whether `id` names a live subscription.
    pub fn is_active(&self, id: &str) -> bool {
        self.active.contains(id)
    }

    /// How many subscriptions are live.
    pub fn active_count(&self) -> usize {
        self.active.len()
    }

    /// Handles one text frame from the client.
    pub fn on_text(&mut self, text: &str) -> Vec<Action> {
        if self.phase == Phase::Closed {
            return Vec::new();
        }
        match self.protocol.decode(text) {
            Ok(msg) => self.on_message(msg),
            Err(reason) => self.close(Close::with_reason(CloseCode::BadRequest, reason)),
        }
    }

    /// Handles a binary frame: neither protocol defines one.
    pub fn on_binary(&mut self) -> Vec<Action> {
        if self.phase == Phase::Closed {
            return Vec::new();
        }
        self.close(Close::with_reason(
            CloseCode::BadRequest,
            "Binary frames are not supported",
        ))
    }

    /// Handles a decoded message.
    pub fn on_message(&mut self, msg: ClientMessage) -> Vec<Action> {
        if self.phase == Phase::Closed {
            return Vec::new();
        }
        match msg {
            ClientMessage::ConnectionInit { payload } => {
                if self.phase != Phase::AwaitingInit {
                    return self.close(Close::new(CloseCode::TooManyInitialisationRequests));
                }
                self.phase = Phase::Initialising;
                vec![Action::Init { payload }]
            }
            ClientMessage::Ping { payload } => vec![Action::Send(ServerMessage::Pong { payload })],
            ClientMessage::Pong => Vec::new(),
            ClientMessage::Subscribe { id, payload } => {
                if self.phase != Phase::Ready {
                    return match self.protocol {
                        Protocol::TransportWs => self.close(Close::new(CloseCode::Unauthorized)),
                        Protocol::Legacy => {
                            let err = GraphQLError::new(
                                "The connection is not initialised",
                                codes::OPERATION_NOT_SUPPORTED,
                            );
                            Self::failure_frames(self.protocol, id, vec![err])
                        }
                    };
                }
                if self.active.contains(&id) {
                    return match self.protocol {
                        Protocol::TransportWs => self.close(Close::with_reason(
                            CloseCode::SubscriberAlreadyExists,
                            format!("Subscriber for {id} already exists"),
                        )),
                        // subscriptions-transport-ws restarts an operation whose id is reused.
                        Protocol::Legacy => {
                            vec![
                                Action::Unsubscribe { id: id.clone() },
                                Action::Subscribe { id, payload },
                            ]
                        }
                    };
                }
                self.active.insert(id.clone());
                vec![Action::Subscribe { id, payload }]
            }
            ClientMessage::Complete { id } => {
                if self.active.remove(&id) {
                    vec![Action::Unsubscribe { id }]
                } else {
                    Vec::new()
                }
            }
            ClientMessage::Terminate => self.close(Close::new(CloseCode::Normal)),
        }
    }

    /// The host's connection policy accepted the init; acknowledge it.
    pub fn accept(&mut self, ack_payload: Option<Value>) -> Vec<Action> {
        if self.phase != Phase::Initialising {
            return Vec::new();
        }
        self.phase = Phase::Ready;
        let mut out = vec![Action::Send(ServerMessage::ConnectionAck {
            payload: ack_payload,
        })];
        if self.protocol == Protocol::Legacy {
            // Legacy clients start their keep-alive watchdog on the first `ka`.
            out.push(Action::Send(ServerMessage::KeepAlive));
        }
        out
    }

    /// The host's connection policy refused the init: close 4403.
    pub fn reject(&mut self, reason: &str) -> Vec<Action> {
        if self.phase == Phase::Closed {
            return Vec::new();
        }
        let mut out = Vec::new();
        if self.protocol == Protocol::Legacy {
            out.push(Action::Send(ServerMessage::ConnectionError {
                message: reason.to_owned(),
            }));
        }
        out.extend(self.close(Close::with_reason(CloseCode::Forbidden, reason)));
        out
    }

    /// The init wait ran out: close 4408 unless `connection_init` arrived.
    pub fn on_init_timeout(&mut self) -> Vec<Action> {
        if self.phase != Phase::AwaitingInit {
            return Vec::new();
        }
        self.close(Close::new(CloseCode::ConnectionInitialisationTimeout))
    }

    /// The host could not start subscription `id`: report the errors and free the id.
    pub fn subscribe_failed(&mut self, id: &str, errors: Vec<GraphQLError>) -> Vec<Action> {
        if !self.active.remove(id) {
            return Vec::new();
        }
        Self::failure_frames(self.protocol, id.to_owned(), errors)
    }

    /// The server ended subscription `id` on its own: send `complete`, free the id.
    pub fn server_complete(&mut self, id: &str) -> Vec<Action> {
        if !self.active.remove(id) {
            return Vec::new();
        }
        vec![Action::Send(ServerMessage::Complete { id: id.to_owned() })]
    }

    /// Ids of every live subscription, for cleanup when the socket ends.
    pub fn drain_active(&mut self) -> Vec<String> {
        self.active.drain().collect()
    }

    fn failure_frames(protocol: Protocol, id: String, errors: Vec<GraphQLError>) -> Vec<Action> {
        let mut out = vec![Action::Send(ServerMessage::Error {
            id: id.clone(),
            errors,
        })];
        if protocol == Protocol::Legacy {
            out.push(Action::Send(ServerMessage::Complete { id }));
        }
        out
    }

    /// Closes the session (also for the host's own reasons: shutdown, dead
    /// peer, oversized frame); nothing more is read. Closing twice sends nothing.
    pub fn close(&mut self, close: Close) -> Vec<Action> {
        if self.phase == Phase::Closed {
            return Vec::new();
        }
        self.phase = Phase::Closed;
        vec![Action::Close(close)]
    }
}
