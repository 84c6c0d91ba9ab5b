//! `SubscriptionConfig`: every engine limit, with the host's defaults, plus
//! the resolver timeout.

use fanwire_core::Limits;
use pyo3::prelude::*;

use crate::errors::ConfigError;

/// Every limit of the engine (defaults as in the host's `fanwire.toml`) and
/// the resolver timeout; validated when built.
#[pyclass(frozen, module = "fanwire._native")]
#[derive(Debug, Clone)]
pub struct SubscriptionConfig {
    /// Open WebSocket connections per process.
    #[pyo3(get)]
    max_connections: i64,
    /// New connections accepted per second (token bucket).
    #[pyo3(get)]
    connections_per_second: f64,
    /// Burst allowance of the connection bucket.
    #[pyo3(get)]
    connection_burst: f64,
    /// Live subscriptions one connection may hold.
    #[pyo3(get)]
    max_subscriptions_per_connection: i64,
    /// Subscribes per second one connection may start.
    #[pyo3(get)]
    subscribes_per_second: f64,
    /// Burst allowance of the subscribe bucket.
    #[pyo3(get)]
    subscribe_burst: f64,
    /// Largest incoming WebSocket message in bytes.
    #[pyo3(get)]
    max_message_bytes: i64,
    /// Result frames a connection may have waiting before the oldest is dropped.
    #[pyo3(get)]
    queue_depth: i64,
    /// Milliseconds a client has to send `connection_init` (close 4408).
    #[pyo3(get)]
    init_timeout_ms: i64,
    /// Milliseconds between keep-alives.
    #[pyo3(get)]
    keep_alive_ms: i64,
    /// Largest GraphQL document in bytes.
    #[pyo3(get)]
    max_document_bytes: i64,
    /// Deepest field nesting in a document.
    #[pyo3(get)]
    max_depth: i64,
    /// Most aliases in a document.
    #[pyo3(get)]
    max_aliases: i64,
    /// Most field selections in a document, fragments expanded.
    #[pyo3(get)]
    max_fields: i64,
    /// Recent events kept per topic for `extensions.resumeFrom`; 0 keeps none.
    #[pyo3(get)]
    history_per_topic: i64,
    /// Milliseconds a resolver may take before its result becomes a timeout error.
    #[pyo3(get)]
    resolver_timeout_ms: i64,
    limits: Limits,
}

/// The default resolver timeout: long enough for a database round trip.
pub const DEFAULT_RESOLVER_TIMEOUT_MS: i64 = 5_000;

fn count(field: &'static str, v: i64) -> PyResult<usize> {
    usize::try_from(v).map_err(|_| {
        ConfigError::new_err(format!(
            "invalid limit `{field}`: must not be negative, got {v}"
        ))
    })
}

fn millis(field: &'static str, v: i64) -> PyResult<u64> {
    u64::try_from(v).map_err(|_| {
        ConfigError::new_err(format!(
            "invalid limit `{field}`: must not be negative, got {v}"
        ))
    })
}

#[pymethods]
impl SubscriptionConfig {
    #[new]
    #[allow(clippy::too_many_arguments)]
    #[pyo3(signature = (
        *,
        max_connections = Limits::default().max_connections as i64,
        connections_per_second = Limits::default().connections_per_second,
        connection_burst = Limits::default().connection_burst,
        max_subscriptions_per_connection = Limits::default().max_subscriptions_per_connection as i64,
        subscribes_per_second = Limits::default().subscribes_per_second,
        subscribe_burst = Limits::default().subscribe_burst,
        max_message_bytes = Limits::default().max_message_bytes as i64,
        queue_depth = Limits::default().queue_depth as i64,
        init_timeout_ms = Limits::default().init_timeout_ms as i64,
        keep_alive_ms = Limits::default().keep_alive_ms as i64,
        max_document_bytes = Limits::default().max_document_bytes as i64,
        max_depth = Limits::default().max_depth as i64,
        max_aliases = Limits::default().max_aliases as i64,
        max_fields = Limits::default().max_fields as i64,
        history_per_topic = Limits::default().history_per_topic as i64,
        resolver_timeout_ms = DEFAULT_RESOLVER_TIMEOUT_MS,
    ))]
    fn new(
        max_connections: i64,
        connections_per_second: f64,
        connection_burst: f64,
        max_subscriptions_per_connection: i64,
        subscribes_per_second: f64,
        subscribe_burst: f64,
        max_message_bytes: i64,
        queue_depth: i64,
        init_timeout_ms: i64,
        keep_alive_ms: i64,
        max_document_bytes: i64,
        max_depth: i64,
        max_aliases: i64,
        max_fields: i64,
        history_per_topic: i64,
        resolver_timeout_ms: i64,
    ) -> PyResult<Self> {
        let limits = Limits {
            max_connections: count("max_connections", max_connections)?,
            connections_per_second,
            connection_burst,
            max_subscriptions_per_connection: count(
                "max_subscriptions_per_connection",
                max_subscriptions_per_connection,
            )?,
            subscribes_per_second,
            subscribe_burst,
            max_message_bytes: count("max_message_bytes", max_message_bytes)?,
            queue_depth: count("queue_depth", queue_depth)?,
            init_timeout_ms: millis("init_timeout_ms", init_timeout_ms)?,
            keep_alive_ms: millis("keep_alive_ms", keep_alive_ms)?,
            max_document_bytes: count("max_document_bytes", max_document_bytes)?,
            max_depth: count("max_depth", max_depth)?,
            max_aliases: count("max_aliases", max_aliases)?,
            max_fields: count("max_fields", max_fields)?,
            history_per_topic: count("history_per_topic", history_per_topic)?,
        };
        limits
            .validate()
            .map_err(|e| ConfigError::new_err(e.to_string()))?;
        if resolver_timeout_ms < 1 {
            return Err(ConfigError::new_err(format!(
                "invalid limit `resolver_timeout_ms`: must be at least 1, got {resolver_timeout_ms}"
            )));
        }
        Ok(SubscriptionConfig {
            max_connections,
            connections_per_second,
            connection_burst,
            max_subscriptions_per_connection,
            subscribes_per_second,
            subscribe_burst,
            max_message_bytes,
            queue_depth,
            init_timeout_ms,
            keep_alive_ms,
            max_document_bytes,
            max_depth,
            max_aliases,
            max_fields,
            history_per_topic,
            resolver_timeout_ms,
            limits,
        })
    }

    fn __repr__(&self) -> String {
        format!(
            "SubscriptionConfig(max_connections={}, queue_depth={}, init_timeout_ms={}, keep_alive_ms={}, resolver_timeout_ms={}, ...)",
            self.max_connections, self.queue_depth, self.init_timeout_ms, self.keep_alive_ms, self.resolver_timeout_ms
        )
    }
}

impl SubscriptionConfig {
    /// The engine's limits.
    pub fn limits(&self) -> &Limits {
        &self.limits
    }

    /// The resolver timeout.
    pub fn resolver_timeout(&self) -> std::time::Duration {
        std::time::Duration::from_millis(self.resolver_timeout_ms as u64)
    }

    /// The defaults.
    pub fn default_config() -> PyResult<Self> {
        let d = Limits::default();
        Self::new(
            d.max_connections as i64,
            d.connections_per_second,
            d.connection_burst,
            d.max_subscriptions_per_connection as i64,
            d.subscribes_per_second,
            d.subscribe_burst,
            d.max_message_bytes as i64,
            d.queue_depth as i64,
            d.init_timeout_ms as i64,
            d.keep_alive_ms as i64,
            d.max_document_bytes as i64,
            d.max_depth as i64,
            d.max_aliases as i64,
            d.max_fields as i64,
            d.history_per_topic as i64,
            DEFAULT_RESOLVER_TIMEOUT_MS,
        )
    }
}
