//! The ids of recently delivered events, to suppress duplicates (a broker
//! redelivery, a publish retried after a lost acknowledgement, the same
//! outbox row published by two nodes).

use std::collections::{HashSet, VecDeque};
use std::sync::Arc;

/// A bounded set of recent event ids; the oldest is forgotten first.
#[derive(Debug)]
pub(crate) struct RecentIds {
    capacity: usize,
    seen: HashSet<Arc<str>>,
    order: VecDeque<Arc<str>>,
}

impl RecentIds {
    /// Remembers up to `capacity` ids.
    pub(crate) fn new(capacity: usize) -> Self {
        RecentIds {
            capacity: capacity.max(1),
            seen: HashSet::new(),
            order: VecDeque::new(),
        }
    }

    /// Whether an id was offered (within the window).
    pub(crate) fn contains(&self, id: &str) -> bool {
        self.seen.contains(id)
    }

    /// True the first time an id is offered (within the window).
    pub(crate) fn first_time(&mut self, id: &str) -> bool {
        if self.seen.contains(id) {
            return false;
        }
        let id: Arc<str> = Arc::from(id);
        self.seen.insert(id.clone());
        self.order.push_back(id);
        if self.order.len() > self.capacity {
            if let Some(old) = self.order.pop_front() {
                self.seen.remove(&old);
            }
        }
        true
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn repeats_are_caught_within_the_window() {
        let mut ids = RecentIds::new(2);
        assert!(ids.first_time("a"));
        assert!(ids.contains("a"));
        assert!(!ids.first_time("a"));
        assert!(ids.first_time("b"));
        assert!(ids.first_time("c"));
        // "a" left the window.
        assert!(ids.first_time("a"));
        assert!(!ids.first_time("c"));
    }
}
