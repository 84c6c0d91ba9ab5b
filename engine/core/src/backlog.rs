//! The bounded backlog between a publish and its fan-out: events accepted
//! and waiting for the dispatcher, and async resolutions still running.
//!
//! A publisher is answered once its events are in here, not once they are
//! written; so this is where a publisher feels a dispatcher that falls
//! behind (a slow resolver, a saturated machine): there is room for
//! `limits.max_backlog` entries, and a publisher waits for room (the host
//! bounds the wait, then refuses with 503 and `Retry-After`).

use std::collections::VecDeque;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::Instant;

use prometheus_client::metrics::gauge::Gauge;
use tokio::sync::{oneshot, Notify};

use crate::event::Event;
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

/// Accepted events and running resolutions, bounded together.
#[derive(Debug)]
pub(crate) struct Backlog {
    // A std mutex: held to push or pop one publish, never across an await.
    queue: Mutex<VecDeque<Accepted>>,
    /// Events in `queue`, plus async resolutions not yet delivered.
    entries: AtomicUsize,
    /// Publishes in `queue` (a fan-out stops writing through when one waits).
    waiting: AtomicUsize,
    capacity: usize,
    /// A dispatcher task runs; without one, the publisher's thread dispatches.
    attached: AtomicBool,
    /// Something was accepted (or the engine is going away).
    work: Notify,
    /// An entry left the backlog.
    room: Notify,
    closed: AtomicBool,
    /// `fanwire_backlog`: `entries`, as last changed.
    gauge: Gauge,
}

impl Backlog {
    pub(crate) fn new(capacity: usize, gauge: Gauge) -> Self {
        Backlog {
            queue: Mutex::default(),
            entries: AtomicUsize::new(0),
            waiting: AtomicUsize::new(0),
            capacity: capacity.max(1),
            attached: AtomicBool::new(false),
            work: Notify::new(),
            room: Notify::new(),
            closed: AtomicBool::new(false),
            gauge,
        }
    }

    fn queue(&self) -> MutexGuard<'_, VecDeque<Accepted>> {
        // Every mutation is one VecDeque call: a poisoned queue is consistent.
        self.queue.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Events and resolutions in the backlog.
    pub(crate) fn len(&self) -> usize {
        self.entries.load(Ordering::Acquire)
    }

    /// Whether another publish waits for the dispatcher.
    pub(crate) fn others_waiting(&self) -> bool {
        self.waiting.load(Ordering::Acquire) > 0
    }

    pub(crate) fn has_room(&self) -> bool {
        self.len() < self.capacity
    }

    /// Resolves once the backlog has room. A publish is admitted whole when
    /// there is room at all, so one publish may take it past its capacity
    /// (by at most that publish: the host bounds its size).
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
        self.add(accepted.events.len());
        self.waiting.fetch_add(1, Ordering::AcqRel);
        queue.push_back(accepted);
        self.work.notify_one();
    }

    /// The queue, held by a publisher while it numbers and queues its events.
    pub(crate) fn lock(&self) -> MutexGuard<'_, VecDeque<Accepted>> {
        self.queue()
    }

    fn add(&self, n: usize) {
        let now = self.entries.fetch_add(n, Ordering::AcqRel) + n;
        self.gauge.set(now as i64);
    }

    /// The oldest waiting publish. Its events stay counted until
    /// [`Backlog::done`] says each was fanned out.
    pub(crate) fn pop(&self) -> Option<Accepted> {
        let next = self.queue().pop_front();
        if next.is_some() {
            self.waiting.fetch_sub(1, Ordering::AcqRel);
        }
        next
    }

    /// `n` entries left (events fanned out, resolutions delivered).
    pub(crate) fn done(&self, n: usize) {
        if n > 0 {
            let now = self.entries.fetch_sub(n, Ordering::AcqRel) - n;
            self.gauge.set(now as i64);
            self.room.notify_waiters();
        }
    }

    /// An async resolution started; it stays until [`Backlog::done`].
    pub(crate) fn resolving(&self) {
        self.add(1);
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
