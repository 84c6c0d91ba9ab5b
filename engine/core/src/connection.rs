//! One client connection without its socket: the session, its
//! subscriptions and its outbox. Hosts feed it frames and timer ticks and
//! write out whatever lands in the outbox.

use std::collections::HashMap;
use std::sync::Arc;
use std::time::{Duration, Instant, SystemTime};

use serde_json::{Map, Value};

use crate::engine::Engine;
use crate::error::{codes, GraphQLError};
use crate::history::ResumeError;
use crate::hooks::{ConnectionRequest, GroupInfo};
use crate::metrics::Reason;
use crate::outbox::{Frame, Outbox};
use crate::principal::Principal;
use crate::protocol::{
    Action, Close, CloseCode, Protocol, ServerMessage, Session, SubscribePayload,
};
use crate::ratelimit::TokenBucket;
use crate::registry::{Member, SubscriptionHandle};

/// A live subscription of this connection.
#[derive(Debug)]
struct Live {
    handle: SubscriptionHandle,
    prefix: Arc<[u8]>,
}

/// The socket-free half of a client connection.
#[derive(Debug)]
pub struct Connection {
    engine: Arc<Engine>,
    session: Session,
    outbox: Arc<Outbox>,
    live: HashMap<String, Live>,
    subscribes: TokenBucket,
    init_payload: Map<String, Value>,
    headers: Vec<(String, String)>,
    principal: Principal,
}

impl Connection {
    pub(crate) fn new(engine: Arc<Engine>, protocol: Protocol) -> Self {
        let limits = engine.limits();
        let outbox = Arc::new(Outbox::new(limits.queue_depth));
        let subscribes = TokenBucket::new(
            limits.subscribes_per_second,
            limits.subscribe_burst,
            Instant::now(),
        );
        engine.metrics().connections.inc();
        Connection {
            engine,
            session: Session::new(protocol),
            outbox,
            live: HashMap::new(),
            subscribes,
            init_payload: Map::new(),
            headers: Vec::new(),
            principal: Principal::default(),
        }
    }

    /// Gives the connection policy the upgrade request's headers (names lower-case).
    pub fn with_headers(mut self, headers: Vec<(String, String)>) -> Self {
        self.headers = headers;
        self
    }

    /// Who is connected, once the connection policy accepted the init.
    pub fn principal(&self) -> &Principal {
        &self.principal
    }

    /// When the principal's credentials expire; the host closes the connection then.
    /// An expiry past what the clock can represent is no practical expiry: `None`.
    pub fn expires_at(&self) -> Option<SystemTime> {
        // The seconds come from a client's token: checked, never `+`.
        let secs = self.principal.expires_at?;
        SystemTime::UNIX_EPOCH.checked_add(Duration::from_secs(secs))
    }

    /// The credentials expired: close 4403.
    pub fn on_expired(&mut self) {
        self.close(Close::with_reason(
            CloseCode::Forbidden,
            "Authentication expired",
        ));
    }

    /// The server ends subscription `id` (see `Frame::Revoke`): it leaves the
    /// registry, the id is freed and the client gets the errors.
    pub fn revoke(&mut self, id: &str, errors: Vec<GraphQLError>) {
        self.unsubscribe(id);
        let actions = self.session.subscribe_failed(id, errors);
        self.run(actions);
    }

    /// The subprotocol in use.
    pub fn protocol(&self) -> Protocol {
        self.session.protocol()
    }

    /// The queue the socket writer drains.
    pub fn outbox(&self) -> &Arc<Outbox> {
        &self.outbox
    }

    /// Whether the connection has been told to close.
    pub fn is_closed(&self) -> bool {
        self.session.is_closed()
    }

    /// The `connection_init` payload, once accepted.
    pub fn init_payload(&self) -> &Map<String, Value> {
        &self.init_payload
    }

    /// How many subscriptions are live.
    pub fn subscription_count(&self) -> usize {
        self.live.len()
    }

    /// Handles a text frame.
    pub fn on_text(&mut self, text: &str) {
        let actions = self.session.on_text(text);
        self.run(actions);
    }

    /// Handles a binary frame.
    pub fn on_binary(&mut self) {
        let actions = self.session.on_binary();
        self.run(actions);
    }

    /// The init wait has run out.
    pub fn on_init_timeout(&mut self) {
        let actions = self.session.on_init_timeout();
        self.run(actions);
    }

    /// A keep-alive tick: the legacy protocol wants a `ka` message.
    pub fn on_keep_alive(&mut self) {
        if self.session.protocol() == Protocol::Legacy && self.session.is_ready() {
            self.run(vec![Action::Send(ServerMessage::KeepAlive)]);
        }
    }

    /// Closes from the server side (shutdown, dead peer, oversized frame).
    pub fn close(&mut self, close: Close) {
        // Through the session, so that nothing the client sends later is read.
        let actions = self.session.close(close);
        self.run(actions);
        self.unsubscribe_all();
    }

    fn run(&mut self, actions: Vec<Action>) {
        let mut pending = std::collections::VecDeque::from(actions);
        while let Some(action) = pending.pop_front() {
            match action {
                Action::Send(msg) => {
                    if let Some(text) = self.session.protocol().encode(&msg) {
                        self.outbox.push_control(Frame::Text(text));
                    }
                }
                Action::Close(close) => {
                    self.outbox.push_control(Frame::Close(close));
                    self.unsubscribe_all();
                }
                Action::Init { payload } => {
                    let hooks = self.engine.hooks();
                    let request = ConnectionRequest {
                        init_payload: &payload,
                        headers: &self.headers,
                    };
                    let answer = match hooks.hooks.connection.check(&request) {
                        Ok(accepted) => {
                            self.principal = accepted.principal;
                            self.init_payload = payload;
                            // Only the policy reads headers: free them for the connection's life.
                            self.headers = Vec::new();
                            self.session.accept(accepted.ack)
                        }
                        Err(reason) => {
                            self.reject("policy");
                            self.session.reject(&reason)
                        }
                    };
                    pending.extend(answer);
                }
                Action::Subscribe { id, payload } => pending.extend(self.subscribe(id, &payload)),
                Action::Unsubscribe { id } => self.unsubscribe(&id),
            }
        }
    }

    fn reject(&self, reason: &'static str) {
        self.engine
            .metrics()
            .connection_rejections
            .get_or_create(&Reason { reason })
            .inc();
    }

    fn subscribe(&mut self, id: String, request: &SubscribePayload) -> Vec<Action> {
        let engine = self.engine.clone();
        let metrics = engine.metrics();
        let limits = engine.limits();
        let refuse = |reason: &'static str, message: String| {
            metrics
                .subscribe_errors
                .get_or_create(&Reason { reason })
                .inc();
            vec![GraphQLError::new(message, codes::RATE_LIMITED)]
        };
        let errors = if !self.subscribes.try_take(Instant::now()) {
            refuse(
                "rate_limited",
                format!(
                    "Too many subscribes: at most {} per second",
                    limits.subscribes_per_second
                ),
            )
        } else if self.live.len() >= limits.max_subscriptions_per_connection {
            refuse(
                "too_many",
                format!(
                    "A connection may hold at most {} subscriptions",
                    limits.max_subscriptions_per_connection
                ),
            )
        } else {
            match self.start(&id, request) {
                Ok(()) => return Vec::new(),
                Err((reason, errors)) => {
                    metrics
                        .subscribe_errors
                        .get_or_create(&Reason { reason })
                        .inc();
                    errors
                }
            }
        };
        self.session.subscribe_failed(&id, errors)
    }

    /// Prepares, checks and joins one subscription; the error says why not.
    fn start(
        &mut self,
        id: &str,
        request: &SubscribePayload,
    ) -> Result<(), (&'static str, Vec<GraphQLError>)> {
        let mut prepared = self.engine.prepare(request).map_err(|e| ("invalid", e))?;
        let resume = resume_from(request).map_err(|e| ("invalid", e))?;
        let info = GroupInfo {
            field: prepared.field.clone(),
            topic: prepared.topic.clone(),
            arguments: prepared.arguments.clone(),
            variables: prepared.variables.clone(),
            operation_name: prepared.operation_name.clone(),
            selected_paths: prepared.plan.selected_paths(),
            principal: self.principal.clone(),
            init_payload: self.init_payload.clone(),
        };
        let hooks = self.engine.hooks();
        for policy in &hooks.hooks.subscription {
            policy.check(&info).map_err(|e| ("policy", vec![e]))?;
        }
        // Filters and resolvers see who subscribed and the init payload
        // (`GroupInfo`): only subscriptions that agree on both share a group.
        prepared.group_key.push('\0');
        prepared.group_key.push_str(&self.principal.fingerprint());
        if !self.init_payload.is_empty() {
            prepared.group_key.push('\0');
            // Serialising a JSON map cannot fail.
            prepared
                .group_key
                .push_str(&serde_json::to_string(&self.init_payload).unwrap_or_default());
        }
        let prefix: Arc<[u8]> = Arc::from(self.session.protocol().next_prefix(id));
        let member = Member {
            id: Arc::from(id),
            prefix: prefix.clone(),
            outbox: self.outbox.clone(),
            seen_through: resume.unwrap_or(0),
        };
        let handle = self
            .engine
            .join(prepared, info, member, resume)
            .map_err(|e| {
                let code = match e {
                    ResumeError::Unavailable | ResumeError::Pending => codes::RESUME_UNAVAILABLE,
                    ResumeError::OutOfWindow { .. } => codes::RESUME_WINDOW_EXCEEDED,
                };
                ("resume", vec![GraphQLError::new(e.to_string(), code)])
            })?;
        self.live.insert(id.to_owned(), Live { handle, prefix });
        Ok(())
    }

    fn unsubscribe(&mut self, id: &str) {
        if let Some(live) = self.live.remove(id) {
            self.engine
                .registry()
                .remove(&live.handle, self.engine.metrics());
            // Results already queued for this id must not follow its completion.
            self.outbox.purge(&live.prefix);
        }
    }

    fn unsubscribe_all(&mut self) {
        for (_, live) in self.live.drain() {
            self.engine
                .registry()
                .remove(&live.handle, self.engine.metrics());
        }
    }
}

/// Reads `extensions.resumeFrom`: the last sequence number the client saw.
fn resume_from(request: &SubscribePayload) -> Result<Option<u64>, Vec<GraphQLError>> {
    match request.extensions.get("resumeFrom") {
        None | Some(Value::Null) => Ok(None),
        Some(Value::Number(n)) if n.as_u64().is_some() => Ok(n.as_u64()),
        Some(Value::String(s)) if s.parse::<u64>().is_ok() => Ok(s.parse().ok()),
        Some(other) => Err(vec![GraphQLError::new(
            format!("extensions.resumeFrom must be a sequence number, got {other}"),
            codes::BAD_USER_INPUT,
        )]),
    }
}

impl Drop for Connection {
    fn drop(&mut self) {
        self.unsubscribe_all();
        self.engine.metrics().connections.dec();
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::{Limits, Schema};

    #[test]
    fn an_absurd_expiry_is_no_expiry_and_never_a_panic() {
        let schema = Schema::parse("type Subscription { t: Int }").unwrap();
        let engine = Engine::new(schema, Limits::default()).unwrap();
        let mut conn = engine.connect(Protocol::TransportWs);
        assert_eq!(conn.expires_at(), None);
        conn.principal.expires_at = Some(1_796_607_317);
        assert_eq!(
            conn.expires_at(),
            Some(SystemTime::UNIX_EPOCH + Duration::from_secs(1_796_607_317))
        );
        for secs in [1 << 63, u64::MAX] {
            conn.principal.expires_at = Some(secs);
            assert_eq!(conn.expires_at(), None, "{secs}");
        }
    }
}
