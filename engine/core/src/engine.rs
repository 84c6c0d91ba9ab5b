//! The engine: schema, limits, registry, history, hooks and metrics,
//! shared by every connection.

use std::sync::{Arc, Mutex, RwLock};
use std::time::Instant;

use crate::backlog::{Accepted, Backlog, Order, Receipt};
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
use crate::registry::{ActiveHooks, Dispatched, Member, Pass, Registry, SubscriptionHandle};
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
    /// Accepted events waiting for the dispatcher, and running resolutions.
    backlog: Arc<Backlog>,
    /// Held by whichever thread dispatches (see `dispatch_waiting`).
    dispatching: Mutex<()>,
}

impl Drop for Engine {
    fn drop(&mut self) {
        self.backlog.close();
    }
}

/// Publishes the dispatcher task fans out before it lets other tasks run.
const PASS: usize = 16;

/// Lets other tasks run once (tokio's `yield_now` needs its `rt` feature,
/// which the core does without).
async fn yield_now() {
    let mut yielded = false;
    std::future::poll_fn(|cx| {
        if yielded {
            std::task::Poll::Ready(())
        } else {
            yielded = true;
            cx.waker().wake_by_ref();
            std::task::Poll::Pending
        }
    })
    .await
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
        let metrics = Arc::new(Metrics::new());
        let backlog = Arc::new(Backlog::new(&limits, &metrics));
        Ok(Arc::new(Engine {
            schema,
            limits,
            history,
            registry: Registry::default(),
            metrics,
            hooks: RwLock::new(Arc::new(ActiveHooks { version: 0, hooks })),
            backlog,
            dispatching: Mutex::new(()),
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

    /// The one way events enter dispatch: records them in the history as
    /// `order` says (numbering those without a `seq` where history is
    /// kept), queues them for the dispatcher, and returns at once. The
    /// events of one call are one [`Batch`] in the outboxes: however many,
    /// none pushes another out of a client's queue, so a client that keeps
    /// up receives them all.
    ///
    /// Never waits for a socket, nor for room in the backlog: a host first
    /// awaits [`Engine::room`] (with its own bound) so that publishers feel
    /// a dispatcher that falls behind. With no dispatcher task running
    /// ([`Engine::dispatcher`]), the calling thread dispatches before it
    /// returns.
    pub fn publish(&self, events: Vec<Event>, order: Order) -> Receipt {
        let (receipt, tx) = Receipt::new(events.len());
        let at = Instant::now();
        if order == Order::Recorded {
            self.record(events);
            let _ = tx.send(Dispatched::default());
            return receipt;
        }
        self.metrics.events_in.inc_by(events.len() as u64);
        {
            // Numbered and queued under the queue's lock: its order is theirs.
            let mut queue = self.backlog.lock();
            let events = match order {
                Order::Numbered => self.record(events),
                _ => events
                    .into_iter()
                    .map(|event| Arc::new(Event { seq: None, ..event }))
                    .collect(),
            };
            let accepted = Accepted {
                events,
                batch: Batch::start(),
                at,
                receipt: tx,
            };
            self.backlog.push(&mut queue, accepted);
        }
        if !self.backlog.attached() {
            self.dispatch_waiting(usize::MAX);
        }
        receipt
    }

    /// Records events in their topics' histories, numbering those without
    /// a `seq`; returns them as stored (as they are without history).
    fn record(&self, events: Vec<Event>) -> Vec<Arc<Event>> {
        if !self.history.enabled() {
            return events.into_iter().map(Arc::new).collect();
        }
        events
            .into_iter()
            .map(|event| {
                let log = self.history.log(&event.topic);
                let mut log = History::lock(&log);
                log.record(event, self.history.capacity())
            })
            .collect()
    }

    /// Resolves once the backlog has room for another publish (at once,
    /// mostly). Hosts bound the wait and refuse the publish past it.
    pub async fn room(&self) {
        self.backlog.room().await
    }

    /// Resolves once every accepted event is fanned out and every async
    /// resolution delivered: a host shutting down waits for this (bounded)
    /// before it closes its clients, so that what it accepted reaches them.
    pub async fn drained(&self) {
        self.backlog.empty().await
    }

    /// Whether a publish would be accepted without waiting for room.
    pub fn has_room(&self) -> bool {
        self.backlog.has_room()
    }

    /// Events and async resolutions between accepted and fanned out.
    pub fn backlog(&self) -> usize {
        self.backlog.len()
    }

    /// The dispatcher: fans out accepted publishes, in order, until the
    /// engine is dropped. A host spawns it once; from then on a publish
    /// returns as soon as its events are queued.
    pub fn dispatcher(self: &Arc<Self>) -> impl std::future::Future<Output = ()> + Send + 'static {
        let engine = Arc::downgrade(self);
        let backlog = self.backlog.clone();
        let first = backlog.attach();
        async move {
            if !first {
                return;
            }
            while backlog.work().await {
                let Some(engine) = engine.upgrade() else {
                    return;
                };
                engine.dispatch_waiting(PASS);
                drop(engine);
                // Other tasks on this worker (the writers it woke, among
                // them) get their turn between passes.
                yield_now().await;
            }
        }
    }

    /// Fans out up to `most` waiting publishes, oldest first, on this thread.
    fn dispatch_waiting(&self, most: usize) {
        // One dispatcher at a time keeps the queue's order.
        let _turn = self.dispatching.lock().unwrap_or_else(|p| p.into_inner());
        for _ in 0..most {
            let Some(accepted) = self.backlog.pop() else {
                return;
            };
            self.dispatch(accepted);
        }
    }

    fn dispatch(&self, accepted: Accepted) {
        let Accepted {
            events,
            batch,
            at,
            receipt,
        } = accepted;
        let hooks = self.hooks();
        // A lone event may go straight to idle sockets, until another
        // publish waits; a batch is queued for the writers, which send
        // what piled up for a socket in one write.
        let write_through = events.len() == 1;
        let mut done = Dispatched::default();
        for event in &events {
            done += self.registry.dispatch(
                event.as_ref(),
                &Pass {
                    active: &hooks,
                    metrics: &self.metrics,
                    backlog: &self.backlog,
                    batch,
                    write_through,
                },
            );
            self.backlog.fanned_out(1);
        }
        self.metrics
            .dispatch_seconds
            .observe(at.elapsed().as_secs_f64());
        let _ = receipt.send(done);
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
        // dispatches of those events still to come (accepted but not yet
        // dispatched, or pending resolutions) must skip this member, or it
        // would receive them twice.
        let mut member = member;
        member.seen_through = missed
            .iter()
            .filter_map(|e| e.seq)
            .fold(from.max(member.seen_through), u64::max);
        let handle = self.registry.insert(prepared, info, member, &self.metrics);
        // Under the topic's log lock: no event of the topic is recorded (so
        // none reaches this member live) until the replay is queued.
        self.registry.replay(
            &handle,
            &missed,
            &Pass {
                active: &self.hooks(),
                metrics: &self.metrics,
                backlog: &self.backlog,
                batch: Batch::start(),
                write_through: true,
            },
        );
        drop(log);
        Ok(handle)
    }

    /// Opens the protocol side of a new connection.
    pub fn connect(self: &Arc<Self>, protocol: Protocol) -> Connection {
        Connection::new(self.clone(), protocol)
    }
}
