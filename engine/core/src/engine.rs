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
use crate::outbox::Batch;
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
        self.publish_one(event, Batch::start(), true)
    }

    /// Dispatches a batch of events in order; returns the results delivered
    /// ([`Dispatched::delivered`]). A batch's results are queued for the
    /// writer tasks, which send what piled up in one write per socket,
    /// instead of written through one event at a time: a lone event costs a
    /// syscall per socket either way, a batch of N would cost N. They are
    /// one [`Batch`]: however many there are, none pushes another out of a
    /// client's queue, so a client that keeps up receives them all.
    pub fn publish_batch(&self, events: &[Event]) -> usize {
        let batch = Batch::start();
        let write_through = events.len() == 1;
        let mut done = Dispatched::default();
        for event in events {
            done += self.publish_one(event, batch, write_through);
        }
        done.delivered()
    }

    /// Dispatches one event of a batch that arrives one event at a time (a
    /// read from a broker's log): queued, as [`Engine::publish_batch`] does,
    /// but a batch of its own in the outboxes.
    pub fn publish_in_batch(&self, event: &Event) -> Dispatched {
        self.publish_one(event, Batch::start(), false)
    }

    fn publish_one(&self, event: &Event, batch: Batch, write_through: bool) -> Dispatched {
        let start = Instant::now();
        self.metrics.events_in.inc();
        let hooks = self.hooks();
        let done = if self.history.enabled() {
            let log = self.history.log(&event.topic);
            let mut log = History::lock(&log);
            let stored = log.record(event, self.history.capacity());
            // Dispatching under the topic's log lock orders it against resumes.
            self.registry
                .dispatch(&stored, &hooks, &self.metrics, batch, write_through)
        } else {
            self.registry
                .dispatch(event, &hooks, &self.metrics, batch, write_through)
        };
        self.metrics
            .dispatch_seconds
            .observe(start.elapsed().as_secs_f64());
        done
    }

    /// Dispatches an event to the subscriptions on its topic without
    /// recording or numbering it: its sequence number is not known yet (a
    /// broker bus delivering locally while the broker is unreachable; it
    /// records the event later, with the broker's number, through
    /// [`History`]). Ordered against resumes by the topic's log lock.
    pub fn publish_unsequenced(&self, event: &Event) -> Dispatched {
        let start = Instant::now();
        self.metrics.events_in.inc();
        let hooks = self.hooks();
        let unsequenced = Event {
            seq: None,
            ..event.clone()
        };
        let batch = Batch::start();
        let done = if self.history.enabled() {
            let log = self.history.log(&event.topic);
            let _log = History::lock(&log);
            self.registry
                .dispatch(&unsequenced, &hooks, &self.metrics, batch, true)
        } else {
            self.registry
                .dispatch(&unsequenced, &hooks, &self.metrics, batch, true)
        };
        self.metrics
            .dispatch_seconds
            .observe(start.elapsed().as_secs_f64());
        done
    }

    /// Adds a prepared subscription to its group. With `resume_from`, the
    /// events after that sequence number are replayed to this member
    /// (through the filters and resolver in force) atomically with joining,
    /// so none is missed or repeated.
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
        let missed = log.since(from)?;
        // The replay delivers everything up to the last missed event; live
        // resolutions of those events still pending in the group must skip
        // this member, or it would receive them twice.
        let mut member = member;
        member.seen_through = missed
            .iter()
            .filter_map(|e| e.seq)
            .fold(from.max(member.seen_through), u64::max);
        let handle = self.registry.insert(prepared, info, member, &self.metrics);
        // Under the topic's log lock: no live event of the topic is
        // dispatched until the replay is queued.
        self.registry
            .replay(&handle, &missed, &self.hooks(), &self.metrics);
        drop(log);
        Ok(handle)
    }

    /// Opens the protocol side of a new connection.
    pub fn connect(self: &Arc<Self>, protocol: Protocol) -> Connection {
        Connection::new(self.clone(), protocol)
    }
}
