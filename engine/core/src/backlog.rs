//! The bounded backlog between a publish and its fan-out: events accepted
//! and waiting for the dispatcher, and async resolutions still running.
//!
//! A publisher is answered once its events are in here, not once they are
//! written; so this is where a publisher feels a dispatcher that falls
//! behind (a slow resolver, a saturated machine): there is room while
//! fewer than `limits.max_backlog` events wait and fewer than
//! `limits.max_resolutions` resolutions run, and a publisher waits for room
//! (the host bounds the wait, then refuses with 503 and `Retry-After`).
//!
//! The two are bounded apart because they trade differently: every waiting
//! event adds its dispatch to the latency of the events behind it, so that
//! bound is small; a resolution that awaits I/O costs only memory while it
//! waits, and a resolver is only as concurrent as this bound lets it be.

use std::collections::VecDeque;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::Instant;

use prometheus_client::metrics::gauge::Gauge;
use tokio::sync::{oneshot, Notify};

use crate::config::Limits;
use crate::event::Event;
use crate::metrics::Metrics;
use crate::outbox::Batch;
use crate::registry::Dispatched;

/// How the events of one publish enter the history (and whether they are
/// dispatched): what the publisher knows about their order.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Order {
    /// Recorded in the topic's history where it is kept (numbered there
    /// unless they carry the broker's `seq`), then dispatched.
    Numbered,
    /// Dispatched without a sequence number and not recorded: the number is
    /// not known yet (a broker bus delivering on this node while the broker
    /// is unreachable; it records them later, [`Order::Recorded`]).
    Unnumbered,
    /// Recorded only: this node's subscribers already have them (they went
    /// out [`Order::Unnumbered`]).
    Recorded,
}

/// One publish call's events, accepted and waiting for the dispatcher.
#[derive(Debug)]
pub(crate) struct Accepted {
    /// Numbered already where history is kept (or unnumbered on purpose);
    /// shared with the history window, so recording copies nothing.
    pub events: Vec<Arc<Event>>,
    /// The publish call, as the outboxes see it.
    pub batch: Batch,
    /// When it was accepted (`fanwire_dispatch_seconds` starts here).
    pub at: Instant,
    pub receipt: oneshot::Sender<Dispatched>,
}

/// What a publisher holds once its events are accepted.
#[derive(Debug)]
pub struct Receipt {
    accepted: usize,
    dispatched: oneshot::Receiver<Dispatched>,
}

impl Receipt {
    pub(crate) fn new(accepted: usize) -> (Receipt, oneshot::Sender<Dispatched>) {
        let (tx, rx) = oneshot::channel();
        (
            Receipt {
                accepted,
                dispatched: rx,
            },
            tx,
        )
    }

    /// Events accepted.
    pub fn accepted(&self) -> usize {
        self.accepted
    }

    /// What the fan-out did, if it is done already (a host without a
    /// dispatcher task dispatches before `publish` returns).
    pub fn try_dispatched(&mut self) -> Option<Dispatched> {
        self.dispatched.try_recv().ok()
    }

    /// Waits until the dispatcher has fanned the events out, and says what
    /// that did (results queued or written, groups, drops). Results of
    /// async resolvers are not counted: they are still being resolved.
    pub async fn dispatched(self) -> Dispatched {
        // The engine always answers; a dropped engine dispatched nothing.
        self.dispatched.await.unwrap_or_default()
    }
}

/// Accepted events and running resolutions, each with its bound.
#[derive(Debug)]
pub(crate) struct Backlog {
    // A std mutex: held to push or pop one publish, never across an await.
    queue: Mutex<VecDeque<Accepted>>,
    /// Events accepted and not yet fanned out.
    events: Count,
    /// Async resolutions not yet delivered.
    resolutions: Count,
    /// Publishes in `queue` (a fan-out stops writing through when one waits).
    waiting: AtomicUsize,
    /// A dispatcher task runs; without one, the publisher's thread dispatches.
    attached: AtomicBool,
    /// Something was accepted (or the engine is going away).
    work: Notify,
    /// An entry left the backlog.
    room: Notify,
    closed: AtomicBool,
}

/// Entries of one kind, their bound and their gauge.
#[derive(Debug)]
struct Count {
    now: AtomicUsize,
    capacity: usize,
    /// `now`, as last changed.
    gauge: Gauge,
}

impl Count {
    fn new(capacity: usize, gauge: Gauge) -> Self {
        Count {
            now: AtomicUsize::new(0),
            capacity: capacity.max(1),
            gauge,
        }
    }

    fn get(&self) -> usize {
        self.now.load(Ordering::Acquire)
    }

    fn has_room(&self) -> bool {
        self.get() < self.capacity
    }

    fn add(&self, n: usize) {
        let now = self.now.fetch_add(n, Ordering::AcqRel) + n;
        self.gauge.set(now as i64);
    }

    fn sub(&self, n: usize) {
        let now = self.now.fetch_sub(n, Ordering::AcqRel) - n;
        self.gauge.set(now as i64);
    }
}

impl Backlog {
    pub(crate) fn new(limits: &Limits, metrics: &Metrics) -> Self {
        Backlog {
            queue: Mutex::default(),
            events: Count::new(limits.max_backlog, metrics.backlog.clone()),
            resolutions: Count::new(limits.max_resolutions, metrics.resolutions.clone()),
            waiting: AtomicUsize::new(0),
            attached: AtomicBool::new(false),
            work: Notify::new(),
            room: Notify::new(),
            closed: AtomicBool::new(false),
        }
    }

    fn queue(&self) -> MutexGuard<'_, VecDeque<Accepted>> {
        // Every mutation is one VecDeque call: a poisoned queue is consistent.
        self.queue.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Events and resolutions in the backlog.
    pub(crate) fn len(&self) -> usize {
        // Events first: an event's resolution is counted before the event
        // leaves, so work moving from one to the other never reads as 0.
        self.events.get() + self.resolutions.get()
    }

    /// Whether another publish waits for the dispatcher.
    pub(crate) fn others_waiting(&self) -> bool {
        self.waiting.load(Ordering::Acquire) > 0
    }

    /// Whether both bounds have room.
    pub(crate) fn has_room(&self) -> bool {
        self.events.has_room() && self.resolutions.has_room()
    }

    /// Resolves once the backlog has room. A publish is admitted whole when
    /// there is room at all, so one publish may take it past its bound (by
    /// at most that publish: the host bounds its size).
    pub(crate) async fn room(&self) {
        loop {
            let notified = self.room.notified();
            tokio::pin!(notified);
            notified.as_mut().enable();
            if self.has_room() || self.closed.load(Ordering::Acquire) {
                return;
            }
            notified.await;
        }
    }

    /// Resolves once nothing is left in the backlog (or it closed).
    pub(crate) async fn empty(&self) {
        loop {
            let notified = self.room.notified();
            tokio::pin!(notified);
            notified.as_mut().enable();
            if self.len() == 0 || self.closed.load(Ordering::Acquire) {
                return;
            }
            notified.await;
        }
    }

    pub(crate) fn attach(&self) -> bool {
        !self.attached.swap(true, Ordering::AcqRel)
    }

    pub(crate) fn attached(&self) -> bool {
        self.attached.load(Ordering::Acquire)
    }

    /// Queues a publish; the caller holds the queue (see [`Backlog::lock`])
    /// since it numbered the events, so the queue's order is their order.
    pub(crate) fn push(&self, queue: &mut VecDeque<Accepted>, accepted: Accepted) {
        self.events.add(accepted.events.len());
        self.waiting.fetch_add(1, Ordering::AcqRel);
        queue.push_back(accepted);
        self.work.notify_one();
    }

    /// The queue, held by a publisher while it numbers and queues its events.
    pub(crate) fn lock(&self) -> MutexGuard<'_, VecDeque<Accepted>> {
        self.queue()
    }

    /// The oldest waiting publish. Its events stay counted until
    /// [`Backlog::fanned_out`] says each was.
    pub(crate) fn pop(&self) -> Option<Accepted> {
        let next = self.queue().pop_front();
        if next.is_some() {
            self.waiting.fetch_sub(1, Ordering::AcqRel);
        }
        next
    }

    /// `n` events were fanned out.
    pub(crate) fn fanned_out(&self, n: usize) {
        if n > 0 {
            self.events.sub(n);
            self.room.notify_waiters();
        }
    }

    /// An async resolution started; it stays until [`Backlog::resolved`].
    pub(crate) fn resolving(&self) {
        self.resolutions.add(1);
    }

    /// An async resolution was delivered (or dropped with its group).
    pub(crate) fn resolved(&self) {
        self.resolutions.sub(1);
        self.room.notify_waiters();
    }

    /// Waits until something was accepted (or the backlog closed: `false`).
    pub(crate) async fn work(&self) -> bool {
        loop {
            let notified = self.work.notified();
            tokio::pin!(notified);
            notified.as_mut().enable();
            if self.closed.load(Ordering::Acquire) {
                return false;
            }
            if self.waiting.load(Ordering::Acquire) > 0 {
                return true;
            }
            notified.await;
        }
    }

    /// The engine is gone: the dispatcher and waiting publishers return.
    pub(crate) fn close(&self) {
        self.closed.store(true, Ordering::Release);
        self.work.notify_waiters();
        self.room.notify_waiters();
    }
}
