//! A bounded window of recent events per topic, so a client can resume a
//! subscription from the last sequence number it saw.
//!
//! A node fed by a shared bus numbers events with the bus's sequence, which
//! has gaps per topic, and may have joined the bus late or lost part of it
//! during an outage. Each log therefore tracks the position after which it
//! is known to be complete, and the history as a whole has a *floor* that a
//! bus raises: "events at or below this may be missing here".

use std::collections::VecDeque;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};

use dashmap::DashMap;

use crate::event::Event;

/// Why a resume could not be served.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ResumeError {
    /// This server keeps no history.
    #[error("this server keeps no event history, so subscriptions cannot resume; resync instead")]
    Unavailable,
    /// The requested position has left the window.
    #[error("resumeFrom {requested} is older than the history window (oldest kept: {oldest}); resync instead")]
    OutOfWindow {
        /// What the client asked for.
        requested: u64,
        /// The oldest sequence number still kept.
        oldest: u64,
    },
    /// Events on the topic were delivered here before the broker had them,
    /// so their place in the shared numbering is not known yet.
    #[error("events on this topic were delivered while the broker was unreachable and are not numbered yet; resume again shortly, or resync")]
    Pending,
}

/// The recent events of one topic, oldest first.
#[derive(Debug, Default)]
pub struct TopicLog {
    events: VecDeque<Arc<Event>>,
    /// The sequence number the next event without one receives.
    next_seq: u64,
    /// The highest sequence number ever recorded (kept after eviction).
    last_seq: Option<u64>,
    /// Every event after this one that reached the node is in the window;
    /// `None` until the first event or floor. `u64::MAX`: nothing is known.
    complete_after: Option<u64>,
    /// Events delivered on this topic that the log does not hold yet (see
    /// [`History::hold`]); resumes are refused while any is outstanding.
    holds: usize,
    /// Number from the clock (see [`History::number_by_clock`]).
    clock: bool,
}

impl TopicLog {
    /// Records an event, giving it the next sequence number if it has none,
    /// and evicting the oldest beyond `capacity`. Returns the stored event.
    pub fn record(&mut self, event: Event, capacity: usize) -> Arc<Event> {
        let seq = event.seq.unwrap_or_else(|| match self.last_seq {
            None if self.clock => now_micros().max(self.next_seq),
            _ => self.next_seq.max(1),
        });
        // A publisher may send any `seq`: at u64::MAX numbering stays there
        // rather than wrapping back below the events already kept.
        self.next_seq = seq.saturating_add(1);
        self.last_seq = Some(seq);
        // Without a floor, nothing is known about what came before the
        // first event seen (a bus numbers with gaps).
        self.complete_after.get_or_insert(seq.saturating_sub(1));
        let stored = Arc::new(Event {
            seq: Some(seq),
            ..event
        });
        self.events.push_back(stored.clone());
        while self.events.len() > capacity {
            if let Some(gone) = self.events.pop_front().and_then(|e| e.seq) {
                self.raise(gone);
            }
        }
        stored
    }

    /// Declares that events at or below `floor` may be missing from this log.
    fn raise(&mut self, floor: u64) {
        let known = self.complete_after.get_or_insert(floor);
        *known = (*known).max(floor);
    }

    /// The events after `seq`, in order, or why they cannot be had.
    pub fn since(&self, seq: u64) -> Result<Vec<Arc<Event>>, ResumeError> {
        if self.holds > 0 {
            return Err(ResumeError::Pending);
        }
        let Some(known) = self.complete_after else {
            return Ok(Vec::new());
        };
        if known == u64::MAX {
            return Err(ResumeError::Unavailable);
        }
        // Every event after `seq` must still be kept (sequence numbers may
        // have gaps, never reorderings).
        if seq < known {
            return Err(ResumeError::OutOfWindow {
                requested: seq,
                oldest: self.events.front().and_then(|e| e.seq).unwrap_or(known + 1),
            });
        }
        if self.last_seq.is_none_or(|last| seq >= last) {
            return Ok(Vec::new());
        }
        Ok(self
            .events
            .iter()
            .filter(|e| e.seq.is_some_and(|s| s > seq))
            .cloned()
            .collect())
    }
}

/// Per-topic windows of recent events.
///
/// Each topic's log is locked while its events are dispatched and while a
/// resuming subscription replays and joins, so a resumed client sees every
/// event exactly once: either in the replay or live, never both or neither.
#[derive(Debug)]
pub struct History {
    capacity: usize,
    /// See [`History::raise_floor`]; 0 = complete from the start.
    floor: AtomicU64,
    topics: DashMap<Arc<str>, Arc<Mutex<TopicLog>>>,
    clock: std::sync::atomic::AtomicBool,
}

/// Microseconds since 1970: below 2^53 (exact in JavaScript) until 2255.
fn now_micros() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| u64::try_from(d.as_micros()).unwrap_or(u64::MAX))
        .unwrap_or_default()
}

impl History {
    /// A history keeping `capacity` events per topic (0 keeps none).
    pub fn new(capacity: usize) -> Self {
        History {
            capacity,
            floor: AtomicU64::new(0),
            topics: DashMap::new(),
            clock: std::sync::atomic::AtomicBool::new(false),
        }
    }

    /// For a history that numbers events itself and lives only in memory
    /// (the in-process bus): each topic numbers from the clock, in
    /// microseconds, then by one, and resumes from numbers below the moment
    /// of this call are refused. So a number a client got before a restart
    /// is never mistaken for one of this run (which would skip this run's
    /// events), as long as a topic averaged under one event per microsecond.
    /// Call it before any event is recorded.
    pub fn number_by_clock(&self) {
        self.clock.store(true, Ordering::SeqCst);
        self.raise_floor(now_micros().saturating_sub(1));
    }

    /// Declares that events at or below `floor` may be missing on this node
    /// (it joined a bus late, or lost part of it), so resuming from below it
    /// is refused; `u64::MAX` refuses every resume until a lower floor is
    /// set with [`History::set_floor`]. Only ever raises a topic's bound.
    pub fn raise_floor(&self, floor: u64) {
        self.floor.fetch_max(floor, Ordering::SeqCst);
        for log in self.topics.iter() {
            Self::lock(log.value()).raise(floor);
        }
    }

    /// Sets the floor, lowering it from `u64::MAX` once a bus knows where
    /// it starts; logs already created keep their own (higher) bound unless
    /// they were only waiting for this.
    pub fn set_floor(&self, floor: u64) {
        self.floor.store(floor, Ordering::SeqCst);
        for log in self.topics.iter() {
            let mut log = Self::lock(log.value());
            if log.complete_after == Some(u64::MAX) {
                log.complete_after = Some(floor);
            }
            log.raise(floor);
        }
    }

    /// Notes that an event on `topic` reached this node's subscribers without
    /// a sequence number (a broker bus delivers locally what it accepted while
    /// the broker was unreachable). A replay could not place it, and the
    /// subscription would not get it later either, so resumes on the topic are
    /// refused with [`ResumeError::Pending`] until [`History::release`].
    pub fn hold(&self, topic: &str) {
        if self.enabled() {
            Self::lock(&self.log(topic)).holds += 1;
        }
    }

    /// Ends one [`History::hold`]: the event is now recorded with its number
    /// (or known to be lost).
    pub fn release(&self, topic: &str) {
        if !self.enabled() {
            return;
        }
        let log = self.log(topic);
        let mut log = Self::lock(&log);
        log.holds = log.holds.saturating_sub(1);
    }

    /// The floor (see [`History::raise_floor`]).
    pub fn floor(&self) -> u64 {
        self.floor.load(Ordering::SeqCst)
    }

    /// Whether any history is kept.
    pub fn enabled(&self) -> bool {
        self.capacity > 0
    }

    /// Events kept per topic.
    pub fn capacity(&self) -> usize {
        self.capacity
    }

    /// The log of a topic, created on first use.
    pub fn log(&self, topic: &str) -> Arc<Mutex<TopicLog>> {
        if let Some(log) = self.topics.get(topic) {
            return log.clone();
        }
        self.topics
            .entry(Arc::from(topic))
            .or_insert_with(|| {
                let floor = self.floor();
                Arc::new(Mutex::new(TopicLog {
                    complete_after: (floor > 0).then_some(floor),
                    clock: self.clock.load(Ordering::SeqCst),
                    ..TopicLog::default()
                }))
            })
            .clone()
    }

    /// Locks a topic log; poisoning is ignored because every mutation is
    /// a single push or pop.
    pub fn lock(log: &Mutex<TopicLog>) -> MutexGuard<'_, TopicLog> {
        log.lock().unwrap_or_else(|p| p.into_inner())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn ev(seq: Option<u64>) -> Event {
        Event {
            seq,
            ..Event::new("t", json!(seq))
        }
    }

    #[test]
    fn assigns_sequence_numbers_and_keeps_a_window() {
        let mut log = TopicLog::default();
        for _ in 0..5 {
            log.record(ev(None), 3);
        }
        let seqs = |v: Vec<Arc<Event>>| v.iter().map(|e| e.seq.unwrap()).collect::<Vec<_>>();
        assert_eq!(seqs(log.since(2).unwrap()), [3, 4, 5]);
        assert_eq!(seqs(log.since(4).unwrap()), [5]);
        assert!(log.since(5).unwrap().is_empty());
        assert_eq!(
            log.since(1),
            Err(ResumeError::OutOfWindow {
                requested: 1,
                oldest: 3
            })
        );
    }

    #[test]
    fn keeps_bus_sequence_numbers_with_gaps() {
        let mut log = TopicLog::default();
        for seq in [10, 12, 15] {
            log.record(ev(Some(seq)), 10);
        }
        assert_eq!(log.since(12).unwrap().len(), 1);
        assert_eq!(log.since(9).unwrap().len(), 3);
        assert!(log.since(3).is_err());
        assert_eq!(log.record(ev(None), 10).seq, Some(16));
    }

    #[test]
    fn eviction_with_gaps_refuses_only_what_may_be_missing() {
        let mut log = TopicLog::default();
        for seq in [10, 20, 30, 40] {
            log.record(ev(Some(seq)), 2);
        }
        // 10 and 20 were evicted: a client that saw 20 missed only 30 and 40.
        assert_eq!(log.since(20).unwrap().len(), 2);
        assert_eq!(log.since(25).unwrap().len(), 2);
        assert!(log.since(19).is_err());
    }

    #[test]
    fn a_published_seq_of_u64_max_does_not_wrap_the_numbering() {
        let history = History::new(10);
        let log = history.log("t");
        History::lock(&log).record(ev(Some(u64::MAX)), 10);
        let next = History::lock(&log).record(ev(None), 10).seq.unwrap();
        assert_eq!(next, u64::MAX, "numbering never goes backwards");
        assert!(History::lock(&log).since(u64::MAX).unwrap().is_empty());
    }

    #[test]
    fn a_floor_bounds_resumes_on_a_node_that_joined_late() {
        let history = History::new(10);
        // Nothing known until the bus says where it starts.
        history.raise_floor(u64::MAX);
        let seen = history.log("seen");
        assert_eq!(History::lock(&seen).since(5), Err(ResumeError::Unavailable));
        // The bus starts reading after 100: older positions are unknown.
        history.set_floor(100);
        let quiet = history.log("quiet");
        assert!(History::lock(&quiet).since(100).unwrap().is_empty());
        assert!(History::lock(&quiet).since(99).is_err());
        History::lock(&seen).record(ev(Some(150)), 10);
        assert_eq!(History::lock(&seen).since(120).unwrap().len(), 1);
        assert!(History::lock(&seen).since(5).is_err());
        // An outage lost everything up to 200.
        history.raise_floor(200);
        assert!(History::lock(&seen).since(150).is_err());
        assert!(History::lock(&history.log("new")).since(199).is_err());
        assert!(History::lock(&history.log("new"))
            .since(200)
            .unwrap()
            .is_empty());
    }

    #[test]
    fn numbers_from_the_clock_survive_a_restart() {
        let before = History::new(10);
        before.number_by_clock();
        let log = before.log("t");
        let first = History::lock(&log).record(ev(None), 10).seq.unwrap();
        let second = History::lock(&log).record(ev(None), 10).seq.unwrap();
        assert_eq!(second, first + 1, "dense after the first");
        assert_eq!(History::lock(&log).since(first).unwrap().len(), 1);
        // The process restarts: a client's number from the last run is
        // refused, not taken for a position of this one.
        std::thread::sleep(std::time::Duration::from_millis(2));
        let after = History::new(10);
        after.number_by_clock();
        let log = after.log("t");
        assert!(matches!(
            History::lock(&log).since(second),
            Err(ResumeError::OutOfWindow { .. })
        ));
        let third = History::lock(&log).record(ev(None), 10).seq.unwrap();
        assert!(third > second);
        assert!(History::lock(&log).since(third).unwrap().is_empty());
    }

    #[test]
    fn a_held_topic_refuses_resumes_until_released() {
        let history = History::new(10);
        History::lock(&history.log("t")).record(ev(Some(3)), 10);
        history.hold("t");
        history.hold("t");
        assert_eq!(
            History::lock(&history.log("t")).since(2),
            Err(ResumeError::Pending)
        );
        // Other topics are not affected.
        assert!(History::lock(&history.log("u")).since(0).is_ok());
        history.release("t");
        assert!(History::lock(&history.log("t")).since(2).is_err());
        history.release("t");
        assert_eq!(History::lock(&history.log("t")).since(2).unwrap().len(), 1);
    }
}
