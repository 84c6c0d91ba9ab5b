//! Token buckets: O(1) rate limits with a burst allowance, alone or one
//! per key (a client's address) in a bounded map.

use std::collections::HashMap;
use std::hash::Hash;
use std::time::{Duration, Instant};

/// A token bucket refilled continuously at `rate` tokens per second.
#[derive(Debug, Clone)]
pub struct TokenBucket {
    rate: f64,
    burst: f64,
    tokens: f64,
    last: Instant,
}

impl TokenBucket {
    /// A full bucket.
    pub fn new(rate: f64, burst: f64, now: Instant) -> Self {
        TokenBucket {
            rate,
            burst,
            tokens: burst,
            last: now,
        }
    }

    fn refill(&mut self, now: Instant) {
        let elapsed = now.saturating_duration_since(self.last).as_secs_f64();
        self.tokens = (self.tokens + elapsed * self.rate).min(self.burst);
        self.last = now;
    }

    /// Takes one token if there is one.
    pub fn try_take(&mut self, now: Instant) -> bool {
        self.refill(now);
        if self.tokens >= 1.0 {
            self.tokens -= 1.0;
            true
        } else {
            false
        }
    }

    /// How long until a token is available (zero if one is now).
    pub fn wait(&mut self, now: Instant) -> Duration {
        self.refill(now);
        let missing = (1.0 - self.tokens).max(0.0);
        Duration::try_from_secs_f64(missing / self.rate).unwrap_or(Duration::MAX)
    }

    /// Whether the bucket is full: it then behaves exactly as a new one,
    /// so a keyed map may forget it.
    fn is_full(&mut self, now: Instant) -> bool {
        self.refill(now);
        self.tokens >= self.burst
    }
}

/// One token bucket per key (a client's address), at most `capacity` of
/// them. Full buckets are forgotten when room is needed; when every kept
/// bucket is still refilling, a new key is not tracked (it passes) until
/// the next sweep a second later, so a flood of distinct keys costs one
/// sweep per second and bounded memory.
#[derive(Debug)]
pub struct KeyedBuckets<K> {
    rate: f64,
    burst: f64,
    capacity: usize,
    buckets: HashMap<K, TokenBucket>,
    next_sweep: Option<Instant>,
}

impl<K: Hash + Eq> KeyedBuckets<K> {
    /// An empty map of buckets refilled at `rate` per second up to `burst`.
    pub fn new(rate: f64, burst: f64, capacity: usize) -> Self {
        KeyedBuckets {
            rate,
            burst,
            capacity,
            buckets: HashMap::new(),
            next_sweep: None,
        }
    }

    /// Takes one token from `key`'s bucket; `Err` holds how long until it
    /// has one.
    pub fn try_take(&mut self, key: K, now: Instant) -> Result<(), Duration> {
        if !self.buckets.contains_key(&key) && self.buckets.len() >= self.capacity {
            if self.next_sweep.is_some_and(|at| now < at) {
                return Ok(());
            }
            self.buckets.retain(|_, b| !b.is_full(now));
            if self.buckets.len() >= self.capacity {
                self.next_sweep = Some(now + Duration::from_secs(1));
                return Ok(());
            }
        }
        let (rate, burst) = (self.rate, self.burst);
        let bucket = self
            .buckets
            .entry(key)
            .or_insert_with(|| TokenBucket::new(rate, burst, now));
        if bucket.try_take(now) {
            Ok(())
        } else {
            Err(bucket.wait(now))
        }
    }

    /// How many keys are tracked.
    pub fn len(&self) -> usize {
        self.buckets.len()
    }

    /// Whether no key is tracked.
    pub fn is_empty(&self) -> bool {
        self.buckets.is_empty()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn burst_then_refill() {
        let t0 = Instant::now();
        let mut bucket = TokenBucket::new(2.0, 3.0, t0);
        assert!((0..3).all(|_| bucket.try_take(t0)));
        assert!(!bucket.try_take(t0));
        assert!(bucket.try_take(t0 + Duration::from_millis(500)));
        assert!(!bucket.try_take(t0 + Duration::from_millis(500)));
    }

    #[test]
    fn wait_says_when_the_next_token_comes() {
        let t0 = Instant::now();
        let mut bucket = TokenBucket::new(4.0, 1.0, t0);
        assert_eq!(bucket.wait(t0), Duration::ZERO);
        assert!(bucket.try_take(t0));
        assert_eq!(bucket.wait(t0), Duration::from_millis(250));
    }

    #[test]
    fn keys_have_their_own_buckets() {
        let t0 = Instant::now();
        let mut buckets = KeyedBuckets::new(1.0, 2.0, 10);
        assert!(buckets.try_take("a", t0).is_ok());
        assert!(buckets.try_take("a", t0).is_ok());
        assert_eq!(buckets.try_take("a", t0), Err(Duration::from_secs(1)));
        assert!(buckets.try_take("b", t0).is_ok());
    }

    #[test]
    fn the_map_is_bounded_and_forgets_full_buckets() {
        let t0 = Instant::now();
        let mut buckets = KeyedBuckets::new(1.0, 1.0, 2);
        assert!(buckets.try_take(1, t0).is_ok());
        assert!(buckets.try_take(2, t0).is_ok());
        // Both are refilling: a third key passes untracked.
        assert!(buckets.try_take(3, t0).is_ok());
        assert!(buckets.try_take(3, t0).is_ok());
        assert_eq!(buckets.len(), 2);
        // A second later both are full again and are forgotten for key 3.
        let t1 = t0 + Duration::from_secs(1);
        assert!(buckets.try_take(3, t1).is_ok());
        assert!(buckets.try_take(3, t1).is_err());
        assert_eq!(buckets.len(), 1);
    }
}
