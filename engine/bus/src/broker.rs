//! What every broker-backed bus shares.
//!
//! A broker keeps one ordered log of every event (a JetStream stream, a
//! Redis stream). Publishing appends to it; every node, the publisher
//! included, consumes the whole log in order and hands each event to its
//! engine with the log's position as the event's sequence number. So all
//! nodes number every event alike, and a client that saw sequence N on one
//! node can resume from N on another. Duplicates (same event id) are
//! suppressed. At start a node reads the retained log to fill its history
//! windows before it serves.
//!
//! While the broker is unreachable, publishes wait in a bounded buffer in
//! this node and are appended, in order, when it is back. They reach this
//! node's subscribers at once, without a sequence number (their place in the
//! log is not known yet); when they come back through the log, they are
//! recorded in the history with the broker's number but not delivered here
//! again, and until then resumes on their topics are refused here
//! ([`fanwire_core::history::History::hold`]): a replay could not place them.

use std::collections::{HashMap, VecDeque};
use std::future::Future;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use fanwire_core::{Engine, Event, Order};
use futures_util::future::BoxFuture;
use tokio::sync::{oneshot, watch, Notify};

use crate::config::BusConfig;
use crate::dedup::RecentIds;
use crate::health::{Backoff, BusMetrics, Health, Status};
use crate::{stopped, Bus, BusError, Published};

/// How many delivered event ids a node remembers to suppress duplicates.
const DEDUP_WINDOW: usize = 100_000;
/// Events per append or read.
const BATCH: usize = 512;

/// The retained part of a broker log.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct Bounds {
    /// The oldest position still kept, if any is.
    pub first: Option<u64>,
    /// The newest position ever written (or a position no later write can
    /// be at or below).
    pub last: u64,
}

/// One entry of a broker log, as read.
#[derive(Debug)]
pub(crate) struct Entry {
    /// Its position: the event's sequence number.
    pub seq: u64,
    /// How many entries the log had received up to and including this one,
    /// when the broker counts them: consecutive entries differ by one, so a
    /// jump means entries were trimmed before this node read them.
    pub count: Option<u64>,
    /// The event; `None` for an entry that is not a Fanwire event.
    pub event: Option<Event>,
}

/// One broker's ordered log of events.
pub(crate) trait Log: Send + Sync + 'static {
    /// Appends events in order; once the broker has stored them all, the
    /// position of the last one.
    fn append(&self, events: &[Event]) -> impl Future<Output = Result<u64, BusError>> + Send;
    /// The retained range.
    fn bounds(&self) -> impl Future<Output = Result<Bounds, BusError>> + Send;
    /// Up to `max` entries after position `after`, in order, waiting about a
    /// second when there are none.
    fn read(
        &self,
        after: u64,
        max: usize,
    ) -> impl Future<Output = Result<Vec<Entry>, BusError>> + Send;
    /// After a reconnect: `Some(floor)` if entries after `after` may have
    /// been lost (trimmed, or a broker that keeps nothing restarted).
    fn check(&self, after: u64) -> impl Future<Output = Result<Option<u64>, BusError>> + Send;
    /// Whether the client is connected right now.
    fn connected(&self) -> bool;
    /// Whether an empty [`Log::read`] on a live connection proves that
    /// nothing was stored after `after` before the read began.
    const EMPTY_READ_IS_END: bool;
}

/// Decodes a log entry's payload.
pub(crate) fn decode(payload: &[u8]) -> Option<Event> {
    let event: Event = serde_json::from_slice(payload).ok()?;
    (!event.topic.is_empty()).then_some(event)
}

/// Encodes an event for the log (its sequence number is the log's).
pub(crate) fn encode(event: &Event) -> Vec<u8> {
    let wire = Event {
        seq: None,
        ..event.clone()
    };
    // An Event always serialises.
    serde_json::to_vec(&wire).unwrap_or_default()
}

/// A bus over a broker log.
pub(crate) struct BrokerBus<L: Log> {
    shared: Arc<Shared<L>>,
}

impl<L: Log> std::fmt::Debug for BrokerBus<L> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("BrokerBus")
            .field("kind", &self.shared.kind)
            .finish_non_exhaustive()
    }
}

struct Shared<L> {
    kind: &'static str,
    log: L,
    engine: Arc<Engine>,
    health: Health,
    /// Events waiting for the broker, oldest first. A std mutex: held for a
    /// push or a drain, never across an await.
    queue: Mutex<VecDeque<Event>>,
    capacity: usize,
    wake: Notify,
    /// Held while appending, so queued events go out before newer ones.
    sending: tokio::sync::Mutex<()>,
    publish_timeout: Duration,
    node: String,
    next_id: AtomicU64,
    /// Shared by the consumer and the publishers: which events reached this
    /// node's subscribers. A std mutex, held for a lookup and one dispatch.
    ids: Mutex<Ids>,
}

/// The events delivered to this node's subscribers, by id.
struct Ids {
    /// Delivered from the log (the last `DEDUP_WINDOW`).
    seen: RecentIds,
    /// Delivered locally before the broker had them, not read back yet.
    local: HashMap<String, Local>,
    /// Reads of the log started so far.
    reads: u64,
}

/// An event delivered locally while the broker was unreachable.
struct Local {
    topic: String,
    /// Once appended: the position at or below which the broker stored it,
    /// and the first read of the log that had to find it. A consumer past
    /// that position, or such a read that found the log's end, without the
    /// event, knows the broker lost it.
    stored: Option<(u64, u64)>,
}

impl<L: Log> Shared<L> {
    fn metrics(&self) -> &BusMetrics {
        self.health.metrics()
    }

    fn queue(&self) -> std::sync::MutexGuard<'_, VecDeque<Event>> {
        self.queue.lock().unwrap_or_else(|p| p.into_inner())
    }

    fn ids(&self) -> std::sync::MutexGuard<'_, Ids> {
        self.ids.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Hands events that wait for the broker to this node's subscribers now,
    /// unless the log already brought them (a failed append that the broker
    /// had partly stored). Each has an id.
    fn deliver_locally(&self, events: &[Event]) {
        let mut ids = self.ids();
        let mut fresh = Vec::new();
        for event in events {
            let Some(id) = event.id.as_deref() else {
                continue;
            };
            if ids.seen.contains(id) || ids.local.contains_key(id) {
                continue;
            }
            ids.local.insert(
                id.to_owned(),
                Local {
                    topic: event.topic.clone(),
                    stored: None,
                },
            );
            self.engine.history().hold(&event.topic);
            fresh.push(event.clone());
        }
        self.metrics().local.inc_by(fresh.len() as u64);
        if !fresh.is_empty() {
            self.engine.publish(fresh, Order::Unnumbered);
        }
        self.metrics().unconfirmed.set(ids.local.len() as i64);
    }

    /// The broker trimmed `lost` entries before `seq` that this node had not
    /// read (it lagged further behind than `bus.history`): they are gone for
    /// this node's subscribers, so say so, and refuse resumes from before.
    fn trimmed_unread(&self, seq: u64, lost: u64) {
        tracing::warn!(
            bus = self.kind,
            lost,
            before = seq,
            "the broker trimmed events this node had not read yet (it lagged more than bus.history entries behind); its subscribers miss them and resumes from before are refused"
        );
        self.metrics().lost.inc_by(lost);
        self.engine.history().raise_floor(seq - 1);
    }

    /// Hands log entries (one read, in the log's order) to the engine:
    /// dropped if their id was delivered already, recorded without delivery
    /// if they were delivered locally, otherwise published together, so
    /// that each socket's writer sends a read's results in one write.
    fn deliver_from_log(&self, entries: Vec<(u64, Event)>) {
        let mut ids = self.ids();
        let mut live = Vec::new();
        for (seq, event) in entries {
            if let Some(id) = event.id.as_deref() {
                if !ids.seen.first_time(id) {
                    self.metrics().duplicates.inc();
                    continue;
                }
            }
            let local = event.id.as_deref().and_then(|id| ids.local.remove(id));
            let event = Event {
                seq: Some(seq),
                ..event
            };
            let Some(local) = local else {
                live.push(event);
                continue;
            };
            // In the log's order: what came before it first.
            if !live.is_empty() {
                self.engine
                    .publish(std::mem::take(&mut live), Order::Numbered);
            }
            self.engine.publish(vec![event], Order::Recorded);
            self.engine.history().release(&local.topic);
            self.metrics().unconfirmed.set(ids.local.len() as i64);
        }
        if !live.is_empty() {
            self.engine.publish(live, Order::Numbered);
        }
    }

    /// Numbers a read of the log that is about to start.
    fn start_read(&self) -> u64 {
        let mut ids = self.ids();
        ids.reads += 1;
        ids.reads
    }

    /// Marks events as appended, at or below `position`.
    fn stored(&self, events: &[Event], position: u64) {
        let mut ids = self.ids();
        let next_read = ids.reads + 1;
        for id in events.iter().filter_map(|e| e.id.as_deref()) {
            if let Some(local) = ids.local.get_mut(id) {
                local.stored = Some((position, next_read));
            }
        }
    }

    /// Forgets local events the broker stored but no longer holds (a Redis
    /// restart without persistence), once the consumer has read past them
    /// (`after`) or read `read` found the log's end (`at_end`): other nodes
    /// never get them, and their topics can be resumed here again.
    fn forget_lost(&self, after: u64, read: u64, at_end: bool) {
        let mut ids = self.ids();
        if ids.local.is_empty() {
            return;
        }
        let history = self.engine.history();
        let before = ids.local.len();
        ids.local.retain(|_, local| {
            let lost = local.stored.is_some_and(|(position, first_read)| {
                position <= after || (at_end && first_read <= read)
            });
            if lost {
                history.release(&local.topic);
            }
            !lost
        });
        let lost = before - ids.local.len();
        if lost > 0 {
            tracing::warn!(
                bus = self.kind,
                lost,
                "events delivered on this node while the broker was unreachable were lost by the broker after it stored them"
            );
            self.metrics().unconfirmed.set(ids.local.len() as i64);
        }
    }

    /// Appends with a deadline; counts what the broker took.
    async fn append(&self, events: &[Event]) -> Result<u64, BusError> {
        match tokio::time::timeout(self.publish_timeout, self.log.append(events)).await {
            Ok(Ok(last)) => {
                self.metrics().published.inc_by(events.len() as u64);
                Ok(last)
            }
            Ok(Err(e)) => Err(e),
            Err(_) => Err(BusError::Broker(format!(
                "no acknowledgement from the {} broker within {:?}",
                self.kind, self.publish_timeout
            ))),
        }
    }
}

impl<L: Log> BrokerBus<L> {
    /// Starts the consumer and the forwarder, then waits (up to the startup
    /// timeout) until this node has read the broker's retained history.
    pub(crate) async fn start(
        log: L,
        kind: &'static str,
        config: &BusConfig,
        engine: Arc<Engine>,
        metrics: Arc<BusMetrics>,
        stop: watch::Receiver<bool>,
    ) -> Arc<dyn Bus> {
        // Until the consumer knows where the log starts, no resume can be
        // served correctly.
        engine.history().raise_floor(u64::MAX);
        let shared = Arc::new(Shared {
            kind,
            log,
            engine,
            health: Health::new(kind, "bus", metrics),
            queue: Mutex::new(VecDeque::new()),
            capacity: config.buffer,
            wake: Notify::new(),
            sending: tokio::sync::Mutex::new(()),
            publish_timeout: Duration::from_millis(config.publish_timeout_ms),
            node: node_id(),
            next_id: AtomicU64::new(0),
            ids: Mutex::new(Ids {
                seen: RecentIds::new(DEDUP_WINDOW),
                local: HashMap::new(),
                reads: 0,
            }),
        });
        let (ready_tx, ready) = oneshot::channel();
        tokio::spawn(consume(shared.clone(), ready_tx, stop.clone()));
        tokio::spawn(forward(shared.clone(), stop));
        let wait = Duration::from_millis(config.startup_timeout_ms);
        match tokio::time::timeout(wait, ready).await {
            Ok(Ok(())) => tracing::info!(bus = kind, "caught up with the broker's history"),
            _ => tracing::warn!(
                bus = kind,
                "the broker is not reachable yet: serving degraded; resumes are refused until this node catches up"
            ),
        }
        Arc::new(BrokerBus { shared })
    }
}

impl<L: Log> Bus for BrokerBus<L> {
    fn kind(&self) -> &'static str {
        self.shared.kind
    }

    fn publish(&self, mut events: Vec<Event>) -> BoxFuture<'_, Result<Published, BusError>> {
        Box::pin(async move {
            let s = &self.shared;
            for event in &mut events {
                if event.id.is_none() {
                    let n = s.next_id.fetch_add(1, Ordering::Relaxed);
                    event.id = Some(format!("{}-{n}", s.node));
                }
            }
            let _sending = s.sending.lock().await;
            if s.queue().is_empty() && s.health.is_up() {
                match s.append(&events).await {
                    Ok(_) => return Ok(Published::Stored),
                    // The broker may have stored some of them: the
                    // consumers drop the repeats by id.
                    Err(e) => s.health.down(e),
                }
            }
            let mut queue = s.queue();
            if queue.len() + events.len() > s.capacity {
                return Err(BusError::Unavailable {
                    kind: s.kind,
                    queued: queue.len(),
                });
            }
            // Under the queue lock, so the forwarder cannot append them
            // before they are marked as delivered here.
            s.deliver_locally(&events);
            queue.extend(events);
            s.metrics().queued.set(queue.len() as i64);
            s.wake.notify_one();
            Ok(Published::Queued)
        })
    }

    fn status(&self) -> Status {
        let queued = self.shared.queue().len();
        self.shared.health.status(Some(queued))
    }
}

/// Sends buffered events to the broker, in order, retrying with backoff.
async fn forward<L: Log>(s: Arc<Shared<L>>, mut stop: watch::Receiver<bool>) {
    let mut backoff = Backoff::new();
    loop {
        tokio::select! {
            _ = s.wake.notified() => {}
            _ = stopped(&mut stop) => return,
        }
        loop {
            let batch: Vec<Event> = s.queue().iter().take(BATCH).cloned().collect();
            if batch.is_empty() {
                break;
            }
            let sent = {
                let _sending = s.sending.lock().await;
                s.append(&batch).await
            };
            match sent {
                Ok(stored_by) => {
                    backoff.reset();
                    let mut queue = s.queue();
                    queue.drain(..batch.len());
                    s.metrics().queued.set(queue.len() as i64);
                    drop(queue);
                    s.stored(&batch, stored_by);
                }
                Err(e) => {
                    s.health.down(e);
                    s.health.retry();
                    tokio::select! {
                        _ = tokio::time::sleep(backoff.next()) => {}
                        _ = stopped(&mut stop) => return,
                    }
                }
            }
        }
    }
}

/// Reads the broker log into the engine, reconnecting with backoff.
async fn consume<L: Log>(
    s: Arc<Shared<L>>,
    ready: oneshot::Sender<()>,
    mut stop: watch::Receiver<bool>,
) {
    let mut ready = Some(ready);
    let mut backoff = Backoff::new();
    // The last position handed to the engine, once the start is known.
    let mut after: Option<u64> = None;
    // The newest position at start: reaching it means caught up.
    let mut target = 0;
    // The count of the last entry read. Kept across reconnects: the counts
    // are the broker's, so a jump also shows what was trimmed while away.
    let mut counted: Option<u64> = None;
    loop {
        let step = async {
            match after {
                None => {
                    let bounds = s.log.bounds().await?;
                    // With no history window there is nothing to fill:
                    // start at the end.
                    let floor = match bounds.first {
                        Some(first) if s.engine.history().enabled() => first - 1,
                        _ => bounds.last,
                    };
                    s.engine.history().set_floor(floor);
                    target = bounds.last;
                    after = Some(floor);
                }
                Some(at) => {
                    if let Some(floor) = s.log.check(at).await? {
                        tracing::warn!(
                            bus = s.kind,
                            floor,
                            "events may have been lost while the broker was unreachable; resumes from before the gap are refused"
                        );
                        s.engine.history().raise_floor(floor);
                    }
                }
            }
            Ok::<_, BusError>(())
        };
        let started = tokio::select! {
            r = step => r,
            _ = stopped(&mut stop) => return,
        };
        if let Err(e) = started {
            s.health.down(e);
        } else {
            s.health.up();
            while let Some(at) = after {
                if at >= target {
                    if let Some(tx) = ready.take() {
                        let _ = tx.send(());
                    }
                }
                let number = s.start_read();
                let read = tokio::select! {
                    r = s.log.read(at, BATCH) => r,
                    _ = stopped(&mut stop) => return,
                };
                match read {
                    Ok(entries) => {
                        // An empty answer on a live connection: the log's end.
                        let at_end =
                            L::EMPTY_READ_IS_END && entries.is_empty() && s.log.connected();
                        if s.log.connected() {
                            s.health.up();
                            backoff.reset();
                        } else if entries.is_empty() {
                            s.health
                                .down(format!("disconnected from the {} broker", s.kind));
                        }
                        // A dispatcher that falls behind slows the reads;
                        // the broker keeps what is not read yet.
                        tokio::select! {
                            _ = s.engine.room() => {}
                            _ = stopped(&mut stop) => return,
                        }
                        let mut read = Vec::with_capacity(entries.len());
                        for Entry { seq, count, event } in entries {
                            if after.is_some_and(|a| seq <= a) {
                                continue;
                            }
                            if let (Some(last), Some(count)) = (counted, count) {
                                if count > last + 1 {
                                    s.deliver_from_log(std::mem::take(&mut read));
                                    s.trimmed_unread(seq, count - last - 1);
                                }
                            }
                            counted = count.or(counted);
                            after = Some(seq);
                            s.metrics().consumed.inc();
                            let Some(event) = event else {
                                s.metrics().invalid.get_or_create(s.health.label()).inc();
                                continue;
                            };
                            read.push((seq, event));
                        }
                        s.deliver_from_log(read);
                        if let Some(at) = after {
                            s.forget_lost(at, number, at_end);
                        }
                    }
                    Err(e) => {
                        s.health.down(e);
                        break;
                    }
                }
            }
        }
        s.health.retry();
        tokio::select! {
            _ = tokio::time::sleep(backoff.next()) => {}
            _ = stopped(&mut stop) => return,
        }
    }
}

/// A prefix for the ids this node gives events, unique enough across nodes
/// and restarts without a random number generator.
fn node_id() -> String {
    use std::hash::{BuildHasher, Hasher};
    let mut h = std::collections::hash_map::RandomState::new().build_hasher();
    h.write_u32(std::process::id());
    let nanos = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_nanos())
        .unwrap_or_default();
    h.write_u128(nanos);
    format!("{:016x}", h.finish())
}

#[cfg(test)]
mod tests {
    use super::*;
    use fanwire_core::{Limits, Schema};
    use serde_json::json;
    use std::sync::atomic::AtomicBool;

    /// A broker log in memory that can be switched off.
    #[derive(Default)]
    struct FakeLog {
        entries: Mutex<Vec<(u64, Event)>>,
        down: AtomicBool,
        /// Acknowledges appends but keeps nothing, like a Redis that
        /// restarts without persistence right after.
        forgetful: AtomicBool,
        wake: Notify,
    }

    impl FakeLog {
        fn fail(&self) -> Result<(), BusError> {
            if self.down.load(Ordering::SeqCst) {
                Err(BusError::Broker("fake: down".into()))
            } else {
                Ok(())
            }
        }
    }

    impl Log for Arc<FakeLog> {
        async fn append(&self, events: &[Event]) -> Result<u64, BusError> {
            self.fail()?;
            let mut entries = self.entries.lock().unwrap();
            for e in events {
                // Positions with gaps, like a log shared by other topics.
                let seq = entries.last().map_or(10, |(s, _)| s + 10);
                entries.push((seq, e.clone()));
            }
            let last = entries.last().map_or(0, |e| e.0);
            if self.forgetful.load(Ordering::SeqCst) {
                let kept = entries.len() - events.len();
                entries.truncate(kept);
            }
            self.wake.notify_waiters();
            Ok(last)
        }

        async fn bounds(&self) -> Result<Bounds, BusError> {
            self.fail()?;
            let entries = self.entries.lock().unwrap();
            Ok(Bounds {
                first: entries.first().map(|e| e.0),
                last: entries.last().map_or(0, |e| e.0),
            })
        }

        async fn read(&self, after: u64, max: usize) -> Result<Vec<Entry>, BusError> {
            self.fail()?;
            let waiting = self.wake.notified();
            let found: Vec<_> = self
                .entries
                .lock()
                .unwrap()
                .iter()
                .filter(|(s, _)| *s > after)
                .take(max)
                .map(|(s, e)| Entry {
                    seq: *s,
                    count: Some(s / 10),
                    event: Some(e.clone()),
                })
                .collect();
            if found.is_empty() {
                let _ = tokio::time::timeout(Duration::from_millis(50), waiting).await;
            }
            Ok(found)
        }

        async fn check(&self, _after: u64) -> Result<Option<u64>, BusError> {
            self.fail().map(|()| None)
        }

        fn connected(&self) -> bool {
            !self.down.load(Ordering::SeqCst)
        }

        const EMPTY_READ_IS_END: bool = true;
    }

    const SDL: &str = "type Query { a: Int } type Subscription { tick: Tick @topic(name: \"t\") } type Tick { n: Int }";

    fn engine() -> Arc<Engine> {
        let limits = Limits {
            history_per_topic: 100,
            ..Limits::default()
        };
        Engine::new(Schema::parse(SDL).unwrap(), limits).unwrap()
    }

    fn event(n: u64) -> Event {
        Event {
            id: Some(format!("e{n}")),
            ..Event::new("t", json!({ "n": n }))
        }
    }

    /// The `n` of the events in the engine's window, after `seq`.
    fn window(engine: &Engine, after: u64) -> Result<Vec<(u64, u64)>, String> {
        let log = engine.history().log("t");
        let log = fanwire_core::history::History::lock(&log);
        log.since(after)
            .map(|events| {
                events
                    .iter()
                    .map(|e| (e.seq.unwrap(), e.data["n"].as_u64().unwrap()))
                    .collect()
            })
            .map_err(|e| e.to_string())
    }

    async fn eventually(what: &str, f: impl Fn() -> bool) {
        let deadline = tokio::time::Instant::now() + Duration::from_secs(10);
        while !f() {
            assert!(tokio::time::Instant::now() < deadline, "never: {what}");
            tokio::time::sleep(Duration::from_millis(5)).await;
        }
    }

    async fn start(
        log: Arc<FakeLog>,
        engine: Arc<Engine>,
        buffer: usize,
    ) -> (Arc<dyn Bus>, watch::Sender<bool>) {
        let (stop_tx, stop) = watch::channel(false);
        let config = BusConfig {
            buffer,
            publish_timeout_ms: 500,
            ..BusConfig::default()
        };
        let bus = BrokerBus::start(
            log,
            "fake",
            &config,
            engine,
            Arc::new(BusMetrics::new()),
            stop,
        )
        .await;
        (bus, stop_tx)
    }

    #[tokio::test]
    async fn events_come_back_in_log_order_with_log_positions_once_per_id() {
        let log = Arc::new(FakeLog::default());
        let engine = engine();
        let (bus, _stop) = start(log.clone(), engine.clone(), 10).await;
        assert_eq!(
            bus.publish(vec![event(1), event(2)]).await.unwrap(),
            Published::Stored
        );
        // A publish repeated after a lost acknowledgement: same id.
        assert_eq!(
            bus.publish(vec![event(2), event(3)]).await.unwrap(),
            Published::Stored
        );
        eventually("three events", || {
            window(&engine, 9).is_ok_and(|w| w.len() == 3)
        })
        .await;
        assert_eq!(window(&engine, 9).unwrap(), [(10, 1), (20, 2), (40, 3)]);
        // Events without an id get one.
        bus.publish(vec![Event::new("t", json!({"n": 4}))])
            .await
            .unwrap();
        assert!(log.entries.lock().unwrap()[4].1.id.is_some());
    }

    #[tokio::test]
    async fn an_outage_buffers_in_order_then_recovers_and_a_full_buffer_refuses() {
        let log = Arc::new(FakeLog::default());
        let engine = engine();
        let (bus, _stop) = start(log.clone(), engine.clone(), 3).await;
        bus.publish(vec![event(1)]).await.unwrap();
        log.down.store(true, Ordering::SeqCst);
        eventually("the bus notices", || {
            bus.status().state == crate::State::Down
        })
        .await;
        assert_eq!(
            bus.publish(vec![event(2), event(3)]).await.unwrap(),
            Published::Queued
        );
        assert_eq!(
            bus.publish(vec![event(4)]).await.unwrap(),
            Published::Queued
        );
        assert!(matches!(
            bus.publish(vec![event(5)]).await,
            Err(BusError::Unavailable { queued: 3, .. })
        ));
        assert_eq!(bus.status().queued, Some(3));
        log.down.store(false, Ordering::SeqCst);
        eventually("recovered and drained", || {
            window(&engine, 9).is_ok_and(|w| w.len() == 4)
        })
        .await;
        let ns: Vec<u64> = window(&engine, 9).unwrap().iter().map(|e| e.1).collect();
        assert_eq!(ns, [1, 2, 3, 4]);
        eventually("up", || {
            bus.status()
                == Status {
                    kind: "fake",
                    state: crate::State::Up,
                    error: None,
                    queued: Some(0),
                }
        })
        .await;
    }

    #[tokio::test]
    async fn a_starting_node_fills_its_window_from_the_log_before_serving() {
        let log = Arc::new(FakeLog::default());
        for n in 1..=3 {
            log.append(&[event(n)]).await.unwrap();
        }
        // Older entries were trimmed: the log starts at position 20.
        log.entries.lock().unwrap().remove(0);
        let engine = engine();
        let (_bus, _stop) = start(log, engine.clone(), 10).await;
        // Filled before start returned.
        assert_eq!(window(&engine, 19).unwrap(), [(20, 2), (30, 3)]);
        // What came before the first kept entry is unknown.
        assert!(window(&engine, 18).unwrap_err().contains("resync"));
    }

    /// Frames dispatched by the engine so far (published or delivered locally).
    fn dispatched(engine: &Engine) -> u64 {
        engine.metrics().events_in.get()
    }

    #[tokio::test]
    async fn during_an_outage_events_reach_local_subscribers_at_once_and_are_numbered_later() {
        let log = Arc::new(FakeLog::default());
        let engine = engine();
        let (bus, _stop) = start(log.clone(), engine.clone(), 10).await;
        bus.publish(vec![event(1)]).await.unwrap();
        eventually("stored", || window(&engine, 9).is_ok_and(|w| w.len() == 1)).await;
        log.down.store(true, Ordering::SeqCst);
        eventually("the bus notices", || {
            bus.status().state == crate::State::Down
        })
        .await;
        let before = dispatched(&engine);
        // The second has no id: it gets one at acceptance.
        assert_eq!(
            bus.publish(vec![event(2), Event::new("t", json!({"n": 3}))])
                .await
                .unwrap(),
            Published::Queued
        );
        assert_eq!(dispatched(&engine), before + 2, "dispatched here at once");
        // Their place in the log is unknown: no resume can be served here.
        assert_eq!(
            window(&engine, 9),
            Err(fanwire_core::history::ResumeError::Pending.to_string())
        );
        log.down.store(false, Ordering::SeqCst);
        eventually("numbered by the log", || window(&engine, 9).is_ok()).await;
        assert_eq!(window(&engine, 9).unwrap(), [(10, 1), (20, 2), (30, 3)]);
        assert_eq!(dispatched(&engine), before + 2, "never dispatched twice");
        assert!(log.entries.lock().unwrap()[2].1.id.is_some());
        // Later events flow as usual.
        bus.publish(vec![event(4)]).await.unwrap();
        eventually("the next one", || {
            window(&engine, 30).is_ok_and(|w| w == [(40, 4)])
        })
        .await;
        assert_eq!(dispatched(&engine), before + 3);
    }

    /// Counts frames written through to it.
    #[derive(Debug, Default)]
    struct Socket(AtomicU64);

    impl fanwire_core::outbox::WriteThrough for Socket {
        fn try_next(&self, _: &[u8], _: &[u8]) -> fanwire_core::outbox::Written {
            self.0.fetch_add(1, Ordering::SeqCst);
            fanwire_core::outbox::Written::Sent
        }
    }

    #[tokio::test]
    async fn entries_read_together_are_queued_for_one_write_and_a_lone_one_is_written_through() {
        let log = Arc::new(FakeLog::default());
        let engine = engine();
        let (bus, _stop) = start(log.clone(), engine.clone(), 10).await;
        let mut conn = engine.connect(fanwire_core::protocol::Protocol::TransportWs);
        conn.on_text(r#"{"type":"connection_init"}"#);
        conn.on_text(
            r#"{"id":"1","type":"subscribe","payload":{"query":"subscription { tick { n } }"}}"#,
        );
        let drain = || {
            let mut out = VecDeque::new();
            conn.outbox().drain_into(&mut out);
            out.len()
        };
        assert_eq!(drain(), 1, "the ack");
        assert_eq!(drain(), 0, "then idle");
        let socket = Arc::new(Socket::default());
        conn.outbox().set_write_through(Some(socket.clone()));

        // One append: the consumer reads the three together.
        bus.publish(vec![event(1), event(2), event(3)])
            .await
            .unwrap();
        eventually("three events", || dispatched(&engine) == 3).await;
        assert_eq!(socket.0.load(Ordering::SeqCst), 0, "none written through");
        assert_eq!(drain(), 3, "queued for the writer");
        assert_eq!(drain(), 0);

        bus.publish(vec![event(4)]).await.unwrap();
        eventually("the fourth", || dispatched(&engine) == 4).await;
        assert_eq!(
            socket.0.load(Ordering::SeqCst),
            1,
            "a lone event writes through"
        );
    }

    #[tokio::test]
    async fn events_the_broker_lost_after_storing_them_release_their_topic() {
        let log = Arc::new(FakeLog::default());
        let engine = engine();
        let (bus, _stop) = start(log.clone(), engine.clone(), 10).await;
        log.down.store(true, Ordering::SeqCst);
        eventually("the bus notices", || {
            bus.status().state == crate::State::Down
        })
        .await;
        bus.publish(vec![event(1)]).await.unwrap();
        assert!(window(&engine, 0).is_err());
        log.forgetful.store(true, Ordering::SeqCst);
        log.down.store(false, Ordering::SeqCst);
        // Stored, then gone: resumes are served again (without it).
        eventually("released", || window(&engine, 0).is_ok()).await;
        assert!(window(&engine, 0).unwrap().is_empty());
    }
}
