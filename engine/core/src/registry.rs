//! The subscription registry: topic index, groups and fan-out.

use std::collections::HashMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;

use dashmap::DashMap;

use crate::event::Event;
use crate::metrics::{Metrics, Reason};
use crate::operation::Prepared;
use crate::outbox::{Outbox, Pushed};
use crate::projection::Plan;

/// One receiver of a group's results.
#[derive(Debug, Clone)]
pub struct Member {
    /// The frame prefix carrying this subscription's id.
    pub prefix: Arc<[u8]>,
    /// The connection's outbox.
    pub outbox: Arc<Outbox>,
}

/// Subscriptions that receive byte-identical results: one projection and one
/// serialisation per event serve all of them.
#[derive(Debug)]
struct Group {
    plan: Plan,
    members: HashMap<u64, Member>,
}

#[derive(Debug, Default)]
struct Topic {
    groups: HashMap<Arc<str>, Group>,
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
    /// Groups projected.
    pub groups: usize,
    /// Frames queued.
    pub deliveries: usize,
    /// Older frames dropped from full queues.
    pub dropped: usize,
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
            Group {
                plan: prepared.plan,
                members: HashMap::new(),
            }
        });
        group.members.insert(token, member);
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
            if let Some(group) = topic.groups.get_mut(&handle.group_key) {
                if group.members.remove(&handle.token).is_some() {
                    metrics.subscriptions.dec();
                }
                if group.members.is_empty() {
                    topic.groups.remove(&handle.group_key);
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

    /// Projects the event once per group on its topic and queues the shared
    /// bytes for every member.
    pub fn dispatch(&self, event: &Event, metrics: &Metrics) -> Dispatched {
        let mut done = Dispatched::default();
        let Some(topic) = self.topics.get(event.topic.as_str()) else {
            return done;
        };
        for group in topic.groups.values() {
            let payload: Arc<[u8]> = Arc::from(group.plan.execute_event(&event.data, event.seq));
            done.groups += 1;
            for member in group.members.values() {
                match member
                    .outbox
                    .push_next(member.prefix.clone(), payload.clone())
                {
                    Pushed::Queued => done.deliveries += 1,
                    Pushed::DroppedOldest => {
                        done.deliveries += 1;
                        done.dropped += 1;
                    }
                    Pushed::Closed => {}
                }
            }
        }
        drop(topic);
        metrics.projections.inc_by(done.groups as u64);
        metrics.deliveries.inc_by(done.deliveries as u64);
        if done.dropped > 0 {
            metrics
                .drops
                .get_or_create(&Reason {
                    reason: "queue_full",
                })
                .inc_by(done.dropped as u64);
        }
        done
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
                .map(|g| g.members.len())
                .sum::<usize>();
        }
        (self.topics.len(), groups, subs)
    }
}
