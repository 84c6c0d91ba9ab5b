//! The engine: schema, limits, registry, history, hooks and metrics,
//! shared by every connection.

use std::sync::{Arc, RwLock};
use std::time::Instant;

use crate::config::{ConfigError, Limits};
use crate::connection::Connection;
use crate::error::GraphQLError;
use crate::event::Event;
use crate::history::{History, ResumeError};
use crate::hooks::{ConnectionPolicy, GroupInfo, Hooks};
use crate::metrics::Metrics;
use crate::operation::{prepare, Prepared};
use crate::protocol::{Protocol, SubscribePayload};
use crate::registry::{ActiveHooks, Dispatched, Member, Registry, SubscriptionHandle};
use crate::schema::Schema;

/// Everything connections share: one per server.
#[derive(Debug)]
pub struct Engine {
    schema: Schema,
    limits: Limits,
    registry: Registry,
    history: History,
    metrics: Arc<Metrics>,
    // A std lock: read for an Arc clone per event or subscribe, written on a
    // plugin reload; never held across an await.
    hooks: RwLock<Arc<ActiveHooks>>,
}

impl Engine {
    /// Builds an engine after validating the limits.
    pub fn new(schema: Schema, limits: Limits) -> Result<Arc<Engine>, ConfigError> {
        Self::with_hooks(schema, limits, Hooks::default())
    }

    /// Builds an engine with a connection policy and no other hooks.
    pub fn with_policy(
        schema: Schema,
        limits: Limits,
        policy: Arc<dyn ConnectionPolicy>,
    ) -> Result<Arc<Engine>, ConfigError> {
        Self::with_hooks(
            schema,
            limits,
            Hooks {
                connection: policy,
                ..Hooks::default()
            },
        )
    }

    /// Builds an engine with its extensions.
    pub fn with_hooks(
        schema: Schema,
        limits: Limits,
        hooks: Hooks,
    ) -> Result<Arc<Engine>, ConfigError> {
        limits.validate()?;
        let history = History::new(limits.history_per_topic);
        Ok(Arc::new(Engine {
            schema,
            limits,
            history,
            registry: Registry::default(),
            metrics: Arc::new(Metrics::new()),
            hooks: RwLock::new(Arc::new(ActiveHooks { version: 0, hooks })),
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

    /// The hooks in force (a snapshot: a reload does not change it).
    pub fn hooks(&self) -> Arc<ActiveHooks> {
        self.hooks.read().unwrap_or_else(|p| p.into_inner()).clone()
    }

    /// Swaps in new hooks atomically (every event sees exactly one version),
    /// re-runs filter preparation for live groups and ends the subscriptions
    /// of groups now denied outright. Returns how many groups were revoked.
    pub fn set_hooks(&self, hooks: Hooks) -> usize {
        let active = {
            let mut slot = self.hooks.write().unwrap_or_else(|p| p.into_inner());
            let active = Arc::new(ActiveHooks {
                version: slot.version + 1,
                hooks,
            });
            *slot = active.clone();
            active
        };
        self.registry.reprepare(&active)
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
        let hooks = self.hooks();
        let done = if self.history.enabled() {
            let log = self.history.log(&event.topic);
            let mut log = History::lock(&log);
            let stored = log.record(event, self.history.capacity());
            // Dispatching under the topic's log lock orders it against resumes.
            self.registry.dispatch(&stored, &hooks, &self.metrics)
        } else {
            self.registry.dispatch(event, &hooks, &self.metrics)
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
        info: GroupInfo,
        member: Member,
        resume_from: Option<u64>,
    ) -> Result<SubscriptionHandle, ResumeError> {
        let Some(from) = resume_from else {
            return Ok(self.registry.insert(prepared, info, member, &self.metrics));
        };
        if !self.history.enabled() {
            return Err(ResumeError::Unavailable);
        }
        let log = self.history.log(&prepared.topic);
        let log = History::lock(&log);
        for event in log.since(from)? {
            let payload = prepared.plan.execute_event(&event.data, event.seq);
            member.outbox.push_next(&member.prefix, &Arc::from(payload));
        }
        let handle = self.registry.insert(prepared, info, member, &self.metrics);
        drop(log);
        Ok(handle)
    }

    /// Opens the protocol side of a new connection.
    pub fn connect(self: &Arc<Self>, protocol: Protocol) -> Connection {
        Connection::new(self.clone(), protocol)
    }
}
