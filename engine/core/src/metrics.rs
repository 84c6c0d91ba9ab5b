//! Prometheus metrics of the engine, shared by every host.

use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::metrics::histogram::{exponential_buckets, Histogram};
use prometheus_client::registry::Registry;
use std::sync::Mutex;

/// A `reason` label.
#[derive(Debug, Clone, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct Reason {
    /// Why: e.g. `queue_full`, `rate_limited`.
    pub reason: &'static str,
}

/// Every metric the engine and its hosts report.
#[derive(Debug)]
pub struct Metrics {
    // A std mutex: taken to register extra collectors (rare) and to encode
    // a scrape, never on the dispatch path (metrics are atomics).
    registry: Mutex<Registry>,
    /// Open connections.
    pub connections: Gauge,
    /// Live subscriptions.
    pub subscriptions: Gauge,
    /// Live subscription groups.
    pub groups: Gauge,
    /// Topics with at least one subscription.
    pub topics: Gauge,
    /// Events accepted for dispatch.
    pub events_in: Counter,
    /// Projections run (one per group per event, however many clients).
    pub projections: Counter,
    /// Result frames queued for clients.
    pub deliveries: Counter,
    /// Frames written to sockets.
    pub frames_out: Counter,
    /// Frames or requests dropped, by reason.
    pub drops: Family<Reason, Counter>,
    /// Subscribes refused, by reason.
    pub subscribe_errors: Family<Reason, Counter>,
    /// Connections refused or closed by the server, by reason.
    pub connection_rejections: Family<Reason, Counter>,
    /// Seconds from an event's arrival to its frames being queued.
    pub dispatch_seconds: Histogram,
    /// Events accepted and not yet fanned out.
    pub backlog: Gauge,
    /// Async resolutions running (started and not yet delivered).
    pub resolutions: Gauge,
}

impl Default for Metrics {
    fn default() -> Self {
        Self::new()
    }
}

impl Metrics {
    /// Creates and registers every metric under the `fanwire_` prefix.
    pub fn new() -> Self {
        let mut registry = Registry::with_prefix("fanwire");
        let m = Metrics {
            connections: Gauge::default(),
            subscriptions: Gauge::default(),
            groups: Gauge::default(),
            topics: Gauge::default(),
            events_in: Counter::default(),
            projections: Counter::default(),
            deliveries: Counter::default(),
            frames_out: Counter::default(),
            drops: Family::default(),
            subscribe_errors: Family::default(),
            connection_rejections: Family::default(),
            // 1 us .. ~0.5 s
            dispatch_seconds: Histogram::new(exponential_buckets(1e-6, 3.0, 13)),
            backlog: Gauge::default(),
            resolutions: Gauge::default(),
            registry: Mutex::new(Registry::default()),
        };
        registry.register(
            "connections",
            "Open WebSocket connections",
            m.connections.clone(),
        );
        registry.register(
            "subscriptions",
            "Live subscriptions",
            m.subscriptions.clone(),
        );
        registry.register("groups", "Live subscription groups", m.groups.clone());
        registry.register("topics", "Topics with subscribers", m.topics.clone());
        registry.register(
            "events_in",
            "Events accepted for dispatch",
            m.events_in.clone(),
        );
        registry.register(
            "projections",
            "Projections run, one per group per event",
            m.projections.clone(),
        );
        registry.register(
            "deliveries",
            "Result frames queued for clients",
            m.deliveries.clone(),
        );
        registry.register(
            "frames_out",
            "Frames written to sockets",
            m.frames_out.clone(),
        );
        registry.register(
            "drops",
            "Frames or requests dropped, by reason",
            m.drops.clone(),
        );
        registry.register(
            "subscribe_errors",
            "Subscribes refused, by reason",
            m.subscribe_errors.clone(),
        );
        registry.register(
            "connection_rejections",
            "Connections refused or closed by the server, by reason",
            m.connection_rejections.clone(),
        );
        registry.register(
            "dispatch_seconds",
            "Time from an event's acceptance to its frames being queued or written",
            m.dispatch_seconds.clone(),
        );
        registry.register(
            "backlog",
            "Events accepted and not yet fanned out",
            m.backlog.clone(),
        );
        registry.register(
            "resolutions",
            "Async resolutions running (started and not yet delivered)",
            m.resolutions.clone(),
        );
        Metrics {
            registry: Mutex::new(registry),
            ..m
        }
    }

    /// Registers metrics owned elsewhere (e.g. the plugin runtime's) so that
    /// they appear in [`Metrics::encode`], under the same `fanwire_` prefix.
    pub fn register_extra(&self, register: impl FnOnce(&mut Registry)) {
        register(&mut self.registry.lock().unwrap_or_else(|p| p.into_inner()));
    }

    /// The Prometheus text exposition of every metric.
    pub fn encode(&self) -> String {
        let mut out = String::new();
        let registry = self.registry.lock().unwrap_or_else(|p| p.into_inner());
        // Encoding into a String cannot fail.
        let _ = prometheus_client::encoding::text::encode(&mut out, &registry);
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn extra_collectors_are_encoded_with_the_prefix() {
        let metrics = Metrics::new();
        let extra = Counter::<u64>::default();
        metrics.register_extra(|r| r.register("plugin_things", "Things", extra.clone()));
        extra.inc();
        let text = metrics.encode();
        assert!(text.contains("fanwire_plugin_things_total 1"), "{text}");
        assert!(text.contains("fanwire_connections"), "{text}");
    }
}
