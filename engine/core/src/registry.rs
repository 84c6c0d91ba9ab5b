//! The subscription registry: topic index, groups and fan-out, with the
//! filters and resolvers of the hooks in force.

use std::borrow::Cow;
use std::collections::HashMap;
use std::future::Future;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex, RwLock, RwLockReadGuard};
use std::task::Poll;
use std::time::{Duration, Instant};

use dashmap::DashMap;
use serde_json::Value;
use tokio::sync::Notify;

use crate::backlog::Backlog;
use crate::error::{codes, GraphQLError};
use crate::event::Event;
use crate::hooks::{
    redact, Asked, DataText, Decision, GroupContext, GroupInfo, Hooks, Resolution, Resolver,
    Turnstile, Verdict,
};
use crate::json::JsonText;
use crate::metrics::{Metrics, Reason};
use crate::operation::Prepared;
use crate::outbox::{Batch, Frame, Outbox, Pushed};
use crate::projection::{event_extensions, Plan};

/// Members per check of a fan-out's progress (see `Group::fan_out`).
const STALL_CHUNK: usize = 64;

/// A chunk of write-through that takes longer than this lost its core: 64
/// non-blocking writes cost ~0.3 ms of CPU here.
const STALL_LIMIT: Duration = Duration::from_millis(2);

/// One receiver of a group's results.
#[derive(Debug, Clone)]
pub struct Member {
    /// The client's operation id.
    pub id: Arc<str>,
    /// The frame prefix carrying this subscription's id.
    pub prefix: Arc<[u8]>,
    /// The connection's outbox.
    pub outbox: Arc<Outbox>,
    /// The last sequence number this subscriber already has (its
    /// `resumeFrom`; 0 for none): a node that lags behind the one the client
    /// left must not deliver those again.
    pub seen_through: u64,
}

/// Who receives a group's result for one event, and the publish it
/// belongs to (its results never push each other out of a queue).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Audience {
    /// Every member that does not already have the event; `write_through`
    /// says whether results may go straight to idle sockets (a lone event,
    /// while no other publish waits) or are queued for the writer tasks,
    /// which coalesce what piles up into few writes.
    All { batch: Batch, write_through: bool },
    /// One member (by token), catching up on history it missed.
    Only { token: u64, batch: Batch },
}

impl Audience {
    /// The same audience, with every result queued for the writers.
    fn queued(self) -> Audience {
        match self {
            Audience::All { batch, .. } => Audience::All {
                batch,
                write_through: false,
            },
            only => only,
        }
    }
}

/// What one dispatch works with: the hooks in force, where it counts, and
/// the publish it serves.
pub(crate) struct Pass<'a> {
    pub active: &'a ActiveHooks,
    pub metrics: &'a Arc<Metrics>,
    pub backlog: &'a Arc<Backlog>,
    /// The publish call (its results never push each other out).
    pub batch: Batch,
    /// Whether results may go straight to idle sockets.
    pub write_through: bool,
}

/// The hooks in force, with a version that changes on every swap.
#[derive(Debug, Default)]
pub struct ActiveHooks {
    /// Increases with every swap; groups cache filter verdicts and their
    /// resolver's context per version.
    pub version: u64,
    /// The extensions themselves.
    pub hooks: Hooks,
}

/// Subscriptions that receive byte-identical results: one filter decision,
/// one resolution, one projection and one serialisation per event serve all.
#[derive(Debug)]
struct Group {
    info: Arc<GroupInfo>,
    plan: Plan,
    // std locks: held to push into outboxes or to edit membership, never across an await.
    members: RwLock<HashMap<u64, Member>>,
    verdicts: Mutex<Option<(u64, Arc<[Verdict]>)>>,
    /// The resolver's context of the group (its `prepare`), by hooks version.
    resolver_context: Mutex<Option<(u64, GroupContext)>>,
    turnstile: Turnstile,
    closed: Closed,
}

/// Set when a group's last member leaves: pending resolutions for it are
/// abandoned (dropped), which lets a resolver host cancel the work.
#[derive(Debug, Default)]
struct Closed {
    flag: AtomicBool,
    notify: Notify,
}

impl Closed {
    fn close(&self) {
        self.flag.store(true, Ordering::Release);
        self.notify.notify_waiters();
    }

    async fn wait(&self) {
        loop {
            let notified = self.notify.notified();
            tokio::pin!(notified);
            notified.as_mut().enable();
            if self.flag.load(Ordering::Acquire) {
                return;
            }
            notified.await;
        }
    }

    /// Runs `work` to completion, or drops it once the group closes (`None`).
    async fn unless<F: Future>(&self, work: F) -> Option<F::Output> {
        let mut work = std::pin::pin!(work);
        let mut closed = std::pin::pin!(self.wait());
        std::future::poll_fn(|cx| {
            if let Poll::Ready(out) = work.as_mut().poll(cx) {
                Poll::Ready(Some(out))
            } else if closed.as_mut().poll(cx).is_ready() {
                Poll::Ready(None)
            } else {
                Poll::Pending
            }
        })
        .await
    }
}

impl Group {
    fn members(&self) -> RwLockReadGuard<'_, HashMap<u64, Member>> {
        self.members.read().unwrap_or_else(|p| p.into_inner())
    }

    /// The filters' verdicts under `active`, computed once per group and version.
    fn verdicts(&self, active: &ActiveHooks) -> Arc<[Verdict]> {
        let mut cached = self.verdicts.lock().unwrap_or_else(|p| p.into_inner());
        if let Some((version, verdicts)) = cached.as_ref() {
            if *version == active.version {
                return verdicts.clone();
            }
        }
        let verdicts: Arc<[Verdict]> = active
            .hooks
            .filters
            .iter()
            .map(|f| f.prepare(&self.info))
            .collect();
        *cached = Some((active.version, verdicts.clone()));
        verdicts
    }

    /// The context `resolver` (the field's resolver under `active`) keeps
    /// of this group, prepared once per group and version. A failed
    /// `prepare` is not kept: the group's next event asks again.
    fn resolver_context(
        &self,
        resolver: &dyn Resolver,
        active: &ActiveHooks,
    ) -> Result<GroupContext, GraphQLError> {
        // Held across `prepare`, as `verdicts`' lock is across a filter's:
        // the group's next event must not prepare it a second time.
        let mut cached = self
            .resolver_context
            .lock()
            .unwrap_or_else(|p| p.into_inner());
        if let Some((version, context)) = cached.as_ref() {
            if *version == active.version {
                return Ok(context.clone());
            }
        }
        // The old version's context is of no use to the new resolver.
        *cached = None;
        let context = resolver.prepare(&self.info)?;
        *cached = Some((active.version, context.clone()));
        Ok(context)
    }

    /// Hands the same payload bytes to the audience (written through to an
    /// idle socket, or queued).
    ///
    /// Writing through is serial on this thread, and the next publish waits
    /// for it: so as soon as another publish waits in the backlog, the rest
    /// of this fan-out is queued for the writer tasks (which any worker
    /// runs, and which send the results of several events in one write).
    /// The same happens when a chunk of members takes far longer than its
    /// writes cost: the thread lost its core (the scheduler handed it to the
    /// clients it woke, or to other processes) while the other workers idle.
    fn fan_out(
        &self,
        payload: Arc<[u8]>,
        seq: Option<u64>,
        audience: Audience,
        backlog: &Backlog,
        done: &mut Dispatched,
    ) {
        done.groups += 1;
        let members = self.members();
        let mut count = |pushed: Pushed| match pushed {
            Pushed::Sent => done.deliveries += 1,
            Pushed::Queued { dropped, own } => {
                done.deliveries += 1;
                done.dropped += dropped;
                done.dropped_own += own;
            }
            Pushed::Closed => {}
        };
        let (batch, mut write_through) = match audience {
            Audience::All {
                batch,
                write_through,
            } => (batch, write_through),
            Audience::Only { token, batch } => {
                if let Some(member) = members.get(&token) {
                    count(member.outbox.push(&member.prefix, &payload, batch, true));
                }
                return;
            }
        };
        let mut chunk_start = None;
        let missing = |member: &&Member| seq.is_none_or(|seq| seq > member.seen_through);
        for (i, member) in members.values().filter(missing).enumerate() {
            if write_through && i % STALL_CHUNK == 0 {
                let now = Instant::now();
                if chunk_start.is_some_and(|at| now.duration_since(at) > STALL_LIMIT) {
                    write_through = false;
                }
                chunk_start = Some(now);
            }
            if write_through && backlog.others_waiting() {
                write_through = false;
            }
            count(
                member
                    .outbox
                    .push(&member.prefix, &payload, batch, write_through),
            );
        }
    }

    /// Ends every member's subscription with `errors` (the host frees the ids).
    fn revoke(&self, errors: &[GraphQLError]) {
        for member in self.members().values() {
            member.outbox.push_control(Frame::Revoke {
                id: member.id.to_string(),
                errors: errors.to_vec(),
            });
        }
    }
}

#[derive(Debug, Default)]
struct Topic {
    groups: HashMap<Arc<str>, Arc<Group>>,
}

/// Where a subscription lives, to remove it later.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SubscriptionHandle {
    topic: Arc<str>,
    group_key: Arc<str>,
    token: u64,
}

impl SubscriptionHandle {
    /// The topic the subscription listens on.
    pub fn topic(&self) -> &str {
        &self.topic
    }
}

/// What one dispatch did.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Dispatched {
    /// Groups projected (or handed to an async resolver).
    pub groups: usize,
    /// Result frames written through or queued.
    pub deliveries: usize,
    /// Older result frames dropped from full queues to make room
    /// (`fanwire_drops_total{reason="queue_full"}`).
    pub dropped: usize,
    /// Of `dropped`, results the same publish had queued earlier (only when
    /// another publish's results came between them in a queue).
    pub dropped_own: usize,
    /// Groups for which a filter denied the event.
    pub filtered: usize,
}

impl std::ops::AddAssign for Dispatched {
    fn add_assign(&mut self, other: Dispatched) {
        self.groups += other.groups;
        self.deliveries += other.deliveries;
        self.dropped += other.dropped;
        self.dropped_own += other.dropped_own;
        self.filtered += other.filtered;
    }
}

impl Dispatched {
    /// The publish's results that reached a socket or a queue and were not
    /// dropped by the same publish: what a publisher is told was delivered.
    /// (A later publish may still push them out of a slow client's queue,
    /// counted in `fanwire_drops_total{reason="queue_full"}`.)
    pub fn delivered(&self) -> usize {
        self.deliveries.saturating_sub(self.dropped_own)
    }

    /// Adds this dispatch's counts to the metrics.
    fn record(&self, metrics: &Metrics) {
        metrics.projections.inc_by(self.groups as u64);
        metrics.deliveries.inc_by(self.deliveries as u64);
        for (reason, count) in [("queue_full", self.dropped), ("filtered", self.filtered)] {
            if count > 0 {
                metrics
                    .drops
                    .get_or_create(&Reason { reason })
                    .inc_by(count as u64);
            }
        }
    }
}

/// All live subscriptions, indexed by topic then group.
#[derive(Debug, Default)]
pub struct Registry {
    topics: DashMap<Arc<str>, Topic>,
    next_token: AtomicU64,
}

impl Registry {
    /// Adds a subscription to its group, creating group and topic as needed.
    pub fn insert(
        &self,
        prepared: Prepared,
        info: GroupInfo,
        member: Member,
        metrics: &Metrics,
    ) -> SubscriptionHandle {
        let token = self.next_token.fetch_add(1, Ordering::Relaxed);
        let group_key: Arc<str> = Arc::from(prepared.group_key.as_str());
        let topic_key: Arc<str> = Arc::from(prepared.topic.as_str());
        let mut topic = self.topics.entry(topic_key.clone()).or_insert_with(|| {
            metrics.topics.inc();
            Topic::default()
        });
        let group = topic.groups.entry(group_key.clone()).or_insert_with(|| {
            metrics.groups.inc();
            Arc::new(Group {
                info: Arc::new(info),
                plan: prepared.plan,
                members: RwLock::default(),
                verdicts: Mutex::default(),
                resolver_context: Mutex::default(),
                turnstile: Turnstile::default(),
                closed: Closed::default(),
            })
        });
        group
            .members
            .write()
            .unwrap_or_else(|p| p.into_inner())
            .insert(token, member);
        metrics.subscriptions.inc();
        SubscriptionHandle {
            topic: topic_key,
            group_key,
            token,
        }
    }

    /// Removes a subscription; empty groups and topics go with it.
    pub fn remove(&self, handle: &SubscriptionHandle, metrics: &Metrics) {
        let mut topic_empty = false;
        if let Some(mut topic) = self.topics.get_mut(&handle.topic) {
            if let Some(group) = topic.groups.get(&handle.group_key) {
                let mut members = group.members.write().unwrap_or_else(|p| p.into_inner());
                if members.remove(&handle.token).is_some() {
                    metrics.subscriptions.dec();
                }
                let empty = members.is_empty();
                drop(members);
                if empty {
                    if let Some(group) = topic.groups.remove(&handle.group_key) {
                        group.closed.close();
                    }
                    metrics.groups.dec();
                }
            }
            topic_empty = topic.groups.is_empty();
        }
        // The guard above is dropped first: DashMap deadlocks on re-entry.
        if topic_empty
            && self
                .topics
                .remove_if(&handle.topic, |_, t| t.groups.is_empty())
                .is_some()
        {
            metrics.topics.dec();
        }
    }

    /// Filters, resolves and projects the event once per group on its topic
    /// and hands the shared bytes to every member, as a result of the
    /// pass's publish.
    pub(crate) fn dispatch(&self, event: &Event, pass: &Pass<'_>) -> Dispatched {
        let mut done = Dispatched::default();
        let Some(topic) = self.topics.get(event.topic.as_str()) else {
            return done;
        };
        let hooks = &pass.active.hooks;
        let outgoing = Outgoing::new(event);
        let audience = Audience::All {
            batch: pass.batch,
            write_through: pass.write_through,
        };
        if hooks.filters.is_empty() && hooks.resolvers.is_empty() {
            for group in topic.groups.values() {
                group.fan_out(
                    Arc::from(group.plan.execute_event(&event.data, &outgoing.extensions)),
                    event.seq,
                    audience,
                    pass.backlog,
                    &mut done,
                );
            }
        } else {
            let groups: Vec<&Arc<Group>> = topic.groups.values().collect();
            let outcomes = filter(event, &groups, pass.active, pass.metrics);
            for (group, data) in groups.into_iter().zip(outcomes) {
                match data {
                    Some(data) => {
                        resolve_and_fan_out(&outgoing, data, group, audience, pass, &mut done)
                    }
                    None => done.filtered += 1,
                }
            }
        }
        drop(topic);
        done.record(pass.metrics);
        done
    }

    /// Catches one subscription up on events it missed (a resume), through
    /// the same filters and resolver as live events, and in order with them:
    /// async resolutions take their turn in the group's turnstile.
    pub(crate) fn replay(
        &self,
        handle: &SubscriptionHandle,
        events: &[Arc<Event>],
        pass: &Pass<'_>,
    ) -> Dispatched {
        let mut done = Dispatched::default();
        let group = match self.topics.get(&handle.topic) {
            Some(topic) => topic.groups.get(&handle.group_key).cloned(),
            None => None,
        };
        let Some(group) = group else {
            return done;
        };
        // The whole replay arrives at once, like a batch: a subscriber that
        // reads it gets all of it, even more results than `queue_depth`.
        let audience = Audience::Only {
            token: handle.token,
            batch: pass.batch,
        };
        for event in events {
            match filter(event, &[&group], pass.active, pass.metrics)
                .pop()
                .flatten()
            {
                Some(data) => resolve_and_fan_out(
                    &Outgoing::new(event),
                    data,
                    &group,
                    audience,
                    pass,
                    &mut done,
                ),
                None => done.filtered += 1,
            }
        }
        done.record(pass.metrics);
        done
    }

    /// Re-runs every filter's `prepare` under new hooks; groups now denied
    /// outright have their subscriptions ended with the filter's reason.
    /// Returns how many groups were revoked.
    pub fn reprepare(&self, active: &ActiveHooks) -> usize {
        let mut revoked = 0;
        for topic in self.topics.iter() {
            for group in topic.groups.values() {
                if let Some(reason) = group.verdicts(active).iter().find_map(|v| match v {
                    Verdict::DenyAll(reason) => Some(reason.clone()),
                    _ => None,
                }) {
                    group.revoke(&[GraphQLError::new(reason, codes::FORBIDDEN)]);
                    revoked += 1;
                }
            }
        }
        revoked
    }

    /// Live topics, groups and subscriptions.
    pub fn counts(&self) -> (usize, usize, usize) {
        let mut groups = 0;
        let mut subs = 0;
        for topic in self.topics.iter() {
            groups += topic.groups.len();
            subs += topic
                .groups
                .values()
                .map(|g| g.members().len())
                .sum::<usize>();
        }
        (self.topics.len(), groups, subs)
    }
}

/// Runs the filters for one event over the topic's groups: the data each
/// group should see, or `None` where a filter denied it. Each filter is
/// called at most once, with every group that needs a per-event decision.
fn filter<'e>(
    event: &'e Event,
    groups: &[&Arc<Group>],
    active: &ActiveHooks,
    metrics: &Metrics,
) -> Vec<Option<Cow<'e, Value>>> {
    let mut data: Vec<Option<Cow<'e, Value>>> = groups
        .iter()
        .map(|_| Some(Cow::Borrowed(&event.data)))
        .collect();
    let verdicts: Vec<Arc<[Verdict]>> = groups.iter().map(|g| g.verdicts(active)).collect();
    for (i, filter) in active.hooks.filters.iter().enumerate() {
        let mut asking = Vec::new();
        for (g, verdict) in verdicts.iter().enumerate() {
            if data[g].is_none() {
                continue;
            }
            match verdict.get(i) {
                Some(Verdict::AllowAll) => {}
                Some(Verdict::DenyAll(_)) | None => data[g] = None,
                Some(Verdict::PerEvent(context)) => asking.push((g, context.as_deref())),
            }
        }
        if asking.is_empty() {
            continue;
        }
        let asked: Vec<Asked<'_>> = asking
            .iter()
            .map(|(g, context)| Asked {
                group: groups[*g].info.as_ref(),
                context: *context,
            })
            .collect();
        let decisions = filter.decide(event, &asked);
        if decisions.len() != asking.len() {
            // Fail closed: a filter that cannot answer for a group denies it.
            metrics
                .drops
                .get_or_create(&Reason {
                    reason: "filter_error",
                })
                .inc();
            asking.iter().for_each(|(g, _)| data[*g] = None);
            continue;
        }
        for ((g, _), decision) in asking.into_iter().zip(decisions) {
            match decision {
                Decision::Allow => {}
                Decision::Deny(_) => data[g] = None,
                Decision::Redact(paths) => {
                    if let Some(value) = data[g].as_mut() {
                        let value = value.to_mut();
                        for path in &paths {
                            redact(value, &path.split('.').collect::<Vec<_>>());
                        }
                    }
                }
                Decision::Replace(value) => data[g] = Some(Cow::Owned(value)),
            }
        }
    }
    data
}

/// An event and its results' `extensions` member, rendered once for all
/// the groups it reaches; its data as text, rendered if a resolver asks.
struct Outgoing<'a> {
    event: &'a Event,
    extensions: Arc<[u8]>,
    data_text: DataText<'a>,
}

impl<'a> Outgoing<'a> {
    fn new(event: &'a Event) -> Self {
        Outgoing {
            event,
            extensions: event_extensions(event.seq, event.id.as_deref()).into(),
            data_text: DataText::new(&event.data),
        }
    }
}

/// Resolves the group's field (if it has a resolver), then projects and fans
/// out. Async resolutions run on the hooks' spawner, count in the backlog
/// until delivered, and are delivered in event order per group.
fn resolve_and_fan_out(
    outgoing: &Outgoing<'_>,
    data: Cow<'_, Value>,
    group: &Arc<Group>,
    audience: Audience,
    pass: &Pass<'_>,
    done: &mut Dispatched,
) {
    let event = outgoing.event;
    let Some(resolver) = pass.active.hooks.resolvers.get(&group.info.field) else {
        group.fan_out(
            Arc::from(group.plan.execute_event(&data, &outgoing.extensions)),
            event.seq,
            audience,
            pass.backlog,
            done,
        );
        return;
    };
    let ticket = group.turnstile.ticket();
    // The shared text is the event's own data: not for data a filter changed.
    let text = std::ptr::eq(&*data, &event.data).then_some(&outgoing.data_text);
    let resolution = match group.resolver_context(resolver.as_ref(), pass.active) {
        Ok(context) => resolver.resolve_shared(event, &data, text, &group.info, context.as_deref()),
        // Counted with the resolution errors (`project`).
        Err(error) => Resolution::Ready(Err(error)),
    };
    let result = match resolution {
        Resolution::Ready(result) => result.map(Resolved::Value),
        Resolution::Json(text) => Ok(Resolved::Text(text)),
        Resolution::Pending(future) => {
            let future = async move { future.await.map(Resolved::Value) };
            let later = Delivery::new(group, ticket, outgoing, audience);
            return spawn_delivery(later, future, pass, done);
        }
    };
    if !group.turnstile.is_turn(ticket) {
        let later = Delivery::new(group, ticket, outgoing, audience);
        return spawn_delivery(later, async move { result }, pass, done);
    }
    group.fan_out(
        Arc::from(project(
            &group.plan,
            result,
            &outgoing.extensions,
            pass.metrics,
        )),
        event.seq,
        audience,
        pass.backlog,
        done,
    );
    group.turnstile.done(ticket);
}

/// A resolver's value, as the projector reads it.
enum Resolved {
    Value(Value),
    Text(JsonText),
}

/// Where a resolution that completes later goes: its group's turn and audience.
struct Delivery {
    group: Arc<Group>,
    ticket: u64,
    seq: Option<u64>,
    extensions: Arc<[u8]>,
    audience: Audience,
}

impl Delivery {
    fn new(group: &Arc<Group>, ticket: u64, outgoing: &Outgoing<'_>, audience: Audience) -> Self {
        Delivery {
            group: group.clone(),
            ticket,
            seq: outgoing.event.seq,
            extensions: outgoing.extensions.clone(),
            // Delivered from wherever the resolution completes (the loop of
            // a Python host): queued for the writers, never written through
            // there.
            audience: audience.queued(),
        }
    }
}

fn spawn_delivery(
    delivery: Delivery,
    result: impl std::future::Future<Output = Result<Resolved, GraphQLError>> + Send + 'static,
    pass: &Pass<'_>,
    done: &mut Dispatched,
) {
    let Delivery {
        group,
        ticket,
        seq,
        extensions,
        audience,
    } = delivery;
    let Some(spawner) = pass.active.hooks.spawner.clone() else {
        let error = GraphQLError::new(
            "an async resolver needs a host that can run it",
            codes::RESOLVER_FAILED,
        );
        group.fan_out(
            Arc::from(group.plan.execute_field_error(&error, &extensions)),
            seq,
            audience,
            pass.backlog,
            done,
        );
        group.turnstile.done(ticket);
        return;
    };
    let metrics = pass.metrics.clone();
    let backlog = pass.backlog.clone();
    backlog.resolving();
    spawner(Box::pin(async move {
        // Marks the ticket done and leaves the backlog even if this future
        // is dropped mid-way.
        struct Release<'a>(&'a Turnstile, u64, &'a Backlog);
        impl Drop for Release<'_> {
            fn drop(&mut self) {
                self.0.done(self.1);
                self.2.resolved();
            }
        }
        let _release = Release(&group.turnstile, ticket, &backlog);
        // Nobody is left to receive it: drop the resolution (cancelling it).
        let Some(result) = group.closed.unless(result).await else {
            return;
        };
        group.turnstile.wait_turn(ticket).await;
        let mut later = Dispatched::default();
        group.fan_out(
            Arc::from(project(&group.plan, result, &extensions, &metrics)),
            seq,
            audience,
            &backlog,
            &mut later,
        );
        later.record(&metrics);
    }));
}

fn project(
    plan: &Plan,
    result: Result<Resolved, GraphQLError>,
    extensions: &[u8],
    metrics: &Metrics,
) -> Vec<u8> {
    match result {
        Ok(Resolved::Value(value)) => plan.execute_event(&value, extensions),
        Ok(Resolved::Text(text)) => plan.execute_text(&text, extensions),
        Err(error) => {
            metrics
                .drops
                .get_or_create(&Reason {
                    reason: "resolver_error",
                })
                .inc();
            plan.execute_field_error(&error, extensions)
        }
    }
}
