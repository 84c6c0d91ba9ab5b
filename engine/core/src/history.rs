//! A bounded window of recent events per topic, so a client can resume a
//! subscription from the last sequence number it saw.

use std::collections::VecDeque;
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
}

/// The recent events of one topic, oldest first.
#[derive(Debug, Default)]
pub struct TopicLog {
    events: VecDeque<Arc<Event>>,
    /// The sequence number the next event without one receives.
    next_seq: u64,
    /// The highest sequence number ever recorded (kept after eviction).
    last_seq: Option<u64>,
}

impl TopicLog {
    /// Records an event, giving it the next sequence number if it has none,
    /// and evicting the oldest beyond `capacity`. Returns the stored event.
    pub fn record(&mut self, event: &Event, capacity: usize) -> Arc<Event> {
        let seq = event.seq.unwrap_or(self.next_seq.max(1));
        self.next_seq = seq + 1;
        self.last_seq = Some(seq);
        let stored = Arc::new(Event {
            seq: Some(seq),
            ..event.clone()
        });
        self.events.push_back(stored.clone());
        while self.events.len() > capacity {
            self.events.pop_front();
        }
        stored
    }

    /// The events after `seq`, in order, or why they cannot be had.
    pub fn since(&self, seq: u64) -> Result<Vec<Arc<Event>>, ResumeError> {
        let Some(last) = self.last_seq else {
            return Ok(Vec::new());
        };
        if seq >= last {
            return Ok(Vec::new());
        }
        let oldest = self.events.front().and_then(|e| e.seq).unwrap_or(last + 1);
        // Every event after `seq` must still be kept: the next one is seq + 1
        // at the latest (sequence numbers may have gaps, never reorderings).
        if seq + 1 < oldest {
            return Err(ResumeError::OutOfWindow {
                requested: seq,
                oldest,
            });
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
    topics: DashMap<Arc<str>, Arc<Mutex<TopicLog>>>,
}

impl History {
    /// A history keeping `capacity` events per topic (0 keeps none).
    pub fn new(capacity: usize) -> Self {
        History {
            capacity,
            topics: DashMap::new(),
        }
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
        self.topics.entry(Arc::from(topic)).or_default().clone()
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
            log.record(&ev(None), 3);
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
            log.record(&ev(Some(seq)), 10);
        }
        assert_eq!(log.since(12).unwrap().len(), 1);
        assert_eq!(log.since(9).unwrap().len(), 3);
        assert!(log.since(3).is_err());
        assert_eq!(log.record(&ev(None), 10).seq, Some(16));
    }
}
