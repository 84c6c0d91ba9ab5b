//! The engine: schema, limits, registry and metrics, shared by every connection.

use std::fmt::Debug;
use std::sync::Arc;
use std::time::Instant;

use serde_json::{Map, Value};

use crate::config::{ConfigError, Limits};
use crate::connection::Connection;
use crate::error::GraphQLError;
use crate::event::Event;
use crate::history::{History, ResumeError};
use crate::metrics::Metrics;
use crate::operation::{prepare, Prepared};
use crate::protocol::{Protocol, SubscribePayload};
use crate::registry::{Dispatched, Member, Registry, SubscriptionHandle};
use crate::schema::Schema;

/// Decides whether a `connection_init` is accepted.
pub trait ConnectionPolicy: Send + Sync + Debug {
    /// `Ok(ack payload)` to accept, `Err(reason)` to close with 4403.
    fn check(&self, init_payload: &Map<String, Value>) -> Result<Option<Value>, String>;
}

/// The policy of a server with no authentication: every init is accepted.
#[derive(Debug, Default)]
pub struct AcceptAll;

impl ConnectionPolicy for AcceptAll {
    fn check(&self, _: &Map<String, Value>) -> Result<Option<Value>, String> {
        Ok(None)
    }
}

/// Everything connections share: one per server.
#[derive(Debug)]
pub struct Engine {
    schema: Schema,
    limits: Limits,
    registry: Registry,
    history: History,
    metrics: Metrics,
    policy: Arc<dyn ConnectionPolicy>,
}

impl Engine {
    /// Builds an engine after validating the limits.
    pub fn new(schema: Schema, limits: Limits) -> Result<Arc<Engine>, ConfigError> {
        Self::with_policy(schema, limits, Arc::new(AcceptAll))
    }

    /// Builds an engine with a connection policy.
    pub fn with_policy(
        schema: Schema,
        limits: Limits,
        policy: Arc<dyn ConnectionPolicy>,
    ) -> Result<Arc<Engine>, ConfigError> {
        limits.validate()?;
        let history = History::new(limits.history_per_topic);
        Ok(Arc::new(Engine {
            schema,
            limits,
            history,
            registry: Registry::default(),
            metrics: Metrics::new(),
            policy,
        }))
    }

    /// The schema.
    pub fn schema(&self) -> &Schema {
        &self.schema
    }

    /// The limits in force.
    pub fn limits(&self) -> &Limits {
        &self.limits
    }

    /// The metrics.
    pub fn metrics(&self) -> &Metrics {
        &self.metrics
    }

    /// The registry.
    pub fn registry(&self) -> &Registry {
        &self.registry
    }

    /// The per-topic history windows; a bus sets their floor.
    pub fn history(&self) -> &History {
        &self.history
    }

    /// The connection policy.
    pub fn policy(&self) -> &dyn ConnectionPolicy {
        self.policy.as_ref()
    }

    /// Validates a subscribe request against the schema and limits.
    pub fn prepare(&self, request: &SubscribePayload) -> Result<Prepared, Vec<GraphQLError>> {
        prepare(&self.schema, &self.limits, request)
    }

    /// Dispatches one event to every subscription on its topic. Never waits
    /// on a client: results go to bounded outboxes. With a history window the
    /// event is recorded first (and numbered if it has no `seq`).
    pub fn publish(&self, event: &Event) -> Dispatched {
        let start = Instant::now();
        self.metrics.events_in.inc();
        let done = if self.history.enabled() {
            let log = self.history.log(&event.topic);
            let mut log = History::lock(&log);
            let stored = log.record(event, self.history.capacity());
            // Dispatching under the topic's log lock orders it against resumes.
            self.registry.dispatch(&stored, &self.metrics)
        } else {
            self.registry.dispatch(event, &self.metrics)
        };
        self.metrics
            .dispatch_seconds
            .observe(start.elapsed().as_secs_f64());
        done
    }

    /// Adds a prepared subscription to its group. With `resume_from`, the
    /// events after that sequence number are queued for this member first,
    /// atomically with joining, so none is missed or repeated.
    pub fn join(
        &self,
        prepared: Prepared,
        member: Member,
        resume_from: Option<u64>,
    ) -> Result<SubscriptionHandle, ResumeError> {
        let Some(from) = resume_from else {
            return Ok(self.registry.insert(prepared, member, &self.metrics));
        };
        if !self.history.enabled() {
            return Err(ResumeError::Unavailable);
        }
        let log = self.history.log(&prepared.topic);
        let log = History::lock(&log);
        for event in log.since(from)? {
            let payload = prepared.plan.execute_event(&event.data, event.seq);
            member
                .outbox
                .push_next(member.prefix.clone(), Arc::from(payload));
        }
        let handle = self.registry.insert(prepared, member, &self.metrics);
        drop(log);
        Ok(handle)
    }

    /// Opens the protocol side of a new connection.
    pub fn connect(self: &Arc<Self>, protocol: Protocol) -> Connection {
        Connection::new(self.clone(), protocol)
    }
}
