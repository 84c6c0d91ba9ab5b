//! Each bus and source reports its state for `/healthz`, and counts what it
//! does in metrics that the host exposes beside the engine's.

use std::sync::{Arc, Mutex};

use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::registry::Registry;
use serde::Serialize;

/// Where a bus or source stands.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum State {
    /// Connecting for the first time.
    Starting,
    /// Connected and working.
    Up,
    /// Unreachable or failing; retrying with backoff.
    Down,
}

/// A snapshot of one bus or source, as `/healthz` reports it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Status {
    /// `memory`, `nats`, `redis` or `postgres`.
    pub kind: &'static str,
    /// Its state.
    pub state: State,
    /// The last error while not up.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub error: Option<String>,
    /// Events waiting in this node for the broker (buses only).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub queued: Option<usize>,
}

/// A `component` label: `bus` or a source's name.
#[derive(Debug, Clone, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct Component {
    /// `bus` or `postgres`.
    pub component: &'static str,
}

/// Metrics of the buses and sources, all under `fanwire_`.
#[derive(Debug)]
pub struct BusMetrics {
    registry: Registry,
    /// 1 while the component is up, 0 otherwise.
    pub up: Family<Component, Gauge>,
    /// Reconnects and retried operations.
    pub retries: Family<Component, Counter>,
    /// Events the broker acknowledged.
    pub published: Counter,
    /// Events read from the broker.
    pub consumed: Counter,
    /// Events dropped because their id was already delivered.
    pub duplicates: Counter,
    /// Log entries the broker trimmed before this node read them.
    pub lost: Counter,
    /// Events waiting in this node for an unreachable broker.
    pub queued: Gauge,
    /// Events delivered to this node's subscribers before the broker had them.
    pub local: Counter,
    /// Of those, events the broker's log has not brought back yet.
    pub unconfirmed: Gauge,
    /// Events a source produced.
    pub source_events: Family<Component, Counter>,
    /// Notifications, rows or broker messages dropped as invalid.
    pub invalid: Family<Component, Counter>,
}

impl Default for BusMetrics {
    fn default() -> Self {
        Self::new()
    }
}

impl BusMetrics {
    /// Creates and registers every metric.
    pub fn new() -> Self {
        let mut registry = Registry::with_prefix("fanwire");
        let m = BusMetrics {
            registry: Registry::default(),
            up: Family::default(),
            retries: Family::default(),
            published: Counter::default(),
            consumed: Counter::default(),
            duplicates: Counter::default(),
            lost: Counter::default(),
            queued: Gauge::default(),
            local: Counter::default(),
            unconfirmed: Gauge::default(),
            source_events: Family::default(),
            invalid: Family::default(),
        };
        registry.register(
            "bus_up",
            "1 while the bus or source is connected",
            m.up.clone(),
        );
        registry.register(
            "bus_retries",
            "Reconnects and retried broker or database operations",
            m.retries.clone(),
        );
        registry.register(
            "bus_published",
            "Events acknowledged by the broker",
            m.published.clone(),
        );
        registry.register(
            "bus_consumed",
            "Events read from the broker",
            m.consumed.clone(),
        );
        registry.register(
            "bus_duplicates",
            "Events dropped because their id was already delivered",
            m.duplicates.clone(),
        );
        registry.register(
            "bus_lost",
            "Log entries the broker trimmed before this node read them (it lagged more than bus.history entries behind)",
            m.lost.clone(),
        );
        registry.register(
            "bus_queued",
            "Events waiting in this node for an unreachable broker",
            m.queued.clone(),
        );
        registry.register(
            "bus_local",
            "Events delivered to this node's subscribers while the broker was unreachable",
            m.local.clone(),
        );
        registry.register(
            "bus_unconfirmed",
            "Events delivered locally that the broker's log has not brought back yet",
            m.unconfirmed.clone(),
        );
        registry.register(
            "source_events",
            "Events produced by a source",
            m.source_events.clone(),
        );
        registry.register(
            "source_invalid",
            "Notifications, rows or broker messages dropped as invalid",
            m.invalid.clone(),
        );
        BusMetrics { registry, ..m }
    }

    /// The Prometheus text exposition, without the closing `# EOF` so that
    /// it can follow the engine's.
    pub fn encode(&self) -> String {
        let mut out = String::new();
        // Encoding into a String cannot fail.
        let _ = prometheus_client::encoding::text::encode_registry(&mut out, &self.registry);
        out
    }
}

/// The live state of one component, shared by its tasks.
#[derive(Debug)]
pub(crate) struct Health {
    kind: &'static str,
    label: Component,
    metrics: Arc<BusMetrics>,
    // A std mutex: a few instructions per state change, never across an await.
    state: Mutex<(State, Option<String>)>,
}

impl Health {
    pub(crate) fn new(
        kind: &'static str,
        component: &'static str,
        metrics: Arc<BusMetrics>,
    ) -> Self {
        metrics.up.get_or_create(&Component { component }).set(0);
        Health {
            kind,
            label: Component { component },
            metrics,
            state: Mutex::new((State::Starting, None)),
        }
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, (State, Option<String>)> {
        self.state.lock().unwrap_or_else(|p| p.into_inner())
    }

    pub(crate) fn metrics(&self) -> &BusMetrics {
        &self.metrics
    }

    pub(crate) fn label(&self) -> &Component {
        &self.label
    }

    /// Marks the component up, logging a recovery.
    pub(crate) fn up(&self) {
        let mut state = self.lock();
        if state.0 != State::Up {
            tracing::info!(component = self.kind, "connected");
            *state = (State::Up, None);
            self.metrics.up.get_or_create(&self.label).set(1);
        }
    }

    /// Marks the component down, logging the first error of an outage.
    pub(crate) fn down(&self, error: impl std::fmt::Display) {
        let mut state = self.lock();
        let error = error.to_string();
        if state.0 != State::Down {
            tracing::warn!(component = self.kind, %error, "unavailable; retrying with backoff");
        }
        *state = (State::Down, Some(error));
        self.metrics.up.get_or_create(&self.label).set(0);
    }

    /// Counts a reconnect or retried operation.
    pub(crate) fn retry(&self) {
        self.metrics.retries.get_or_create(&self.label).inc();
    }

    /// Whether the component is up.
    pub(crate) fn is_up(&self) -> bool {
        self.lock().0 == State::Up
    }

    /// A snapshot for `/healthz`.
    pub(crate) fn status(&self, queued: Option<usize>) -> Status {
        let state = self.lock();
        Status {
            kind: self.kind,
            state: state.0,
            error: state.1.clone(),
            queued,
        }
    }
}

/// Exponential backoff between retries: 100 ms doubling up to 5 s.
#[derive(Debug)]
pub(crate) struct Backoff(std::time::Duration);

impl Backoff {
    const FIRST: std::time::Duration = std::time::Duration::from_millis(100);
    const MAX: std::time::Duration = std::time::Duration::from_secs(5);

    pub(crate) fn new() -> Self {
        Backoff(Self::FIRST)
    }

    /// The next delay.
    pub(crate) fn next(&mut self) -> std::time::Duration {
        let d = self.0;
        self.0 = (self.0 * 2).min(Self::MAX);
        d
    }

    /// Back to the first delay after a success.
    pub(crate) fn reset(&mut self) {
        self.0 = Self::FIRST;
    }
}
