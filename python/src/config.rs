//! `SubscriptionConfig`: every engine limit, with the host's defaults, the
//! resolver timeout, and the node's bus, sources, plugins and component
//! resolvers (the host's `[bus]`, `[sources]`, `[[plugins]]`,
//! `[[resolvers]]`, `[plugin_runtime]` and `[auth]`).

use fanwire_core::Limits;
use fanwire_plugins::Kind;
use fanwire_server::Config;
use pyo3::prelude::*;

use crate::errors::ConfigError;
use crate::settings::{
    cwd, BusConfig, ComponentResolver, JwtAuth, Plugin, PluginRuntime, PostgresSource,
};

/// Every limit of the engine (defaults as in the host's `fanwire.toml`),
/// the resolver timeout, and the bus, sources and plugins; validated when
/// built.
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
    /// Events accepted and not yet fanned out before a publish waits for room.
    #[pyo3(get)]
    max_backlog: i64,
    /// Async resolutions running at once before a publish waits for room.
    #[pyo3(get)]
    max_resolutions: i64,
    /// Milliseconds a publish waits for room in a full backlog before `PublishError`.
    #[pyo3(get)]
    publish_wait_ms: i64,
    /// Milliseconds a resolver may take before its result becomes a timeout error.
    #[pyo3(get)]
    resolver_timeout_ms: i64,
    limits: Limits,
    /// The node's tables (`bus`, `sources`, `plugin_runtime`, `plugins`,
    /// `resolvers`, `auth`); the rest of it is unused.
    node: Config,
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
        max_backlog = Limits::default().max_backlog as i64,
        max_resolutions = Limits::default().max_resolutions as i64,
        publish_wait_ms = Limits::default().publish_wait_ms as i64,
        resolver_timeout_ms = DEFAULT_RESOLVER_TIMEOUT_MS,
        bus = None,
        sources = Vec::new(),
        plugins = Vec::new(),
        plugin_runtime = None,
        jwt = None,
        resolvers = Vec::new(),
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
        max_backlog: i64,
        max_resolutions: i64,
        publish_wait_ms: i64,
        resolver_timeout_ms: i64,
        bus: Option<PyRef<'_, BusConfig>>,
        sources: Vec<PyRef<'_, PostgresSource>>,
        plugins: Vec<PyRef<'_, Plugin>>,
        plugin_runtime: Option<PyRef<'_, PluginRuntime>>,
        jwt: Option<PyRef<'_, JwtAuth>>,
        resolvers: Vec<PyRef<'_, ComponentResolver>>,
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
            max_backlog: count("max_backlog", max_backlog)?,
            max_resolutions: count("max_resolutions", max_resolutions)?,
            publish_wait_ms: millis("publish_wait_ms", publish_wait_ms)?,
        };
        if sources.len() > 1 {
            return Err(ConfigError::new_err(
                "one PostgresSource at most: list every channel in it",
            ));
        }
        let mut node = Config::default();
        if let Some(bus) = bus {
            node.bus = bus.inner.clone();
        }
        if let Some(pg) = sources.first() {
            node.sources.postgres = pg.inner.clone();
        }
        node.plugins = plugins.iter().map(|p| p.inner.clone()).collect();
        node.resolvers = resolvers.iter().map(|r| r.inner.clone()).collect();
        if let Some(runtime) = plugin_runtime {
            node.plugin_runtime = runtime.inner.clone();
        }
        node.auth.jwt = jwt.map(|j| j.inner.clone());
        // Relative plugin paths start at the plugin folder, else here.
        node.resolve_plugin_paths(&cwd()?);
        Self::from_parts(limits, resolver_timeout_ms, node)
    }

    /// Reads a `fanwire serve` TOML file: its `[limits]`, `[bus]`,
    /// `[sources]`, `[[plugins]]`, `[[resolvers]]`, `[plugin_runtime]` and
    /// `[auth]` (relative paths start at the file's folder); `[server]` is
    /// for `start()`.
    #[classmethod]
    #[pyo3(signature = (path, *, resolver_timeout_ms = DEFAULT_RESOLVER_TIMEOUT_MS))]
    fn from_toml(
        _cls: &Bound<'_, pyo3::types::PyType>,
        path: std::path::PathBuf,
        resolver_timeout_ms: i64,
    ) -> PyResult<Self> {
        let config = Config::load(&path).map_err(|e| ConfigError::new_err(e.to_string()))?;
        Self::from_parts(config.limits.clone(), resolver_timeout_ms, config)
    }

    /// The bus (`[bus]`).
    #[getter]
    fn bus(&self) -> BusConfig {
        BusConfig {
            inner: self.node.bus.clone(),
        }
    }

    /// The event sources (`[sources.postgres]`): none or one.
    #[getter]
    fn sources(&self) -> Vec<PostgresSource> {
        let pg = &self.node.sources.postgres;
        pg.url
            .is_some()
            .then(|| PostgresSource { inner: pg.clone() })
            .into_iter()
            .collect()
    }

    /// The plugins, in the order given (`[[plugins]]`), with absolute paths.
    #[getter]
    fn plugins(&self) -> Vec<Plugin> {
        self.node
            .plugins
            .iter()
            .map(|p| Plugin { inner: p.clone() })
            .collect()
    }

    /// The component resolvers (`[[resolvers]]`), with absolute paths.
    #[getter]
    fn resolvers(&self) -> Vec<ComponentResolver> {
        self.node
            .resolvers
            .iter()
            .map(|r| ComponentResolver { inner: r.clone() })
            .collect()
    }

    /// The plugin runtime's limits (`[plugin_runtime]`).
    #[getter]
    fn plugin_runtime(&self) -> PluginRuntime {
        PluginRuntime {
            inner: self.node.plugin_runtime.clone(),
        }
    }

    /// JWT authentication of connections (`[auth.jwt]`), if configured.
    #[getter]
    fn jwt(&self) -> Option<JwtAuth> {
        self.node.auth.jwt.clone().map(|inner| JwtAuth { inner })
    }

    fn __repr__(&self) -> String {
        format!(
            "SubscriptionConfig(max_connections={}, queue_depth={}, init_timeout_ms={}, keep_alive_ms={}, resolver_timeout_ms={}, bus={:?}, plugins={}, resolvers={}, ...)",
            self.max_connections, self.queue_depth, self.init_timeout_ms, self.keep_alive_ms, self.resolver_timeout_ms,
            self.node.bus.kind, self.node.plugins.len(), self.node.resolvers.len()
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
        Self::from_parts(
            Limits::default(),
            DEFAULT_RESOLVER_TIMEOUT_MS,
            Config::default(),
        )
    }

    /// The node's tables: bus, sources, plugins, plugin runtime, auth.
    pub fn node(&self) -> &Config {
        &self.node
    }

    /// Whether the node has plugins, component resolvers or JWT
    /// authentication, which must be loaded before any client connects.
    pub fn has_plugins(&self) -> bool {
        !self.node.plugins.is_empty()
            || !self.node.resolvers.is_empty()
            || self.node.auth.jwt.is_some()
    }

    /// The component resolver bound to `field`, if any.
    pub fn component_resolver(&self, field: &str) -> Option<&fanwire_plugins::ResolverSpec> {
        self.node.resolvers.iter().find(|r| r.field == field)
    }

    /// Whether something besides the Python connection policy decides
    /// `connection_init` (JWT or a connection-policy plugin).
    pub fn has_connection_policy(&self) -> bool {
        self.node.auth.jwt.is_some()
            || self
                .node
                .plugins
                .iter()
                .any(|p| p.kind == Kind::ConnectionPolicy)
    }

    /// Validates everything and builds the value.
    fn from_parts(limits: Limits, resolver_timeout_ms: i64, node: Config) -> PyResult<Self> {
        limits
            .validate()
            .map_err(|e| ConfigError::new_err(e.to_string()))?;
        if resolver_timeout_ms < 1 {
            return Err(ConfigError::new_err(format!(
                "invalid limit `resolver_timeout_ms`: must be at least 1, got {resolver_timeout_ms}"
            )));
        }
        node.validate_node()
            .map_err(|e| ConfigError::new_err(e.to_string()))?;
        let connection_plugins = node
            .plugins
            .iter()
            .filter(|p| p.kind == Kind::ConnectionPolicy)
            .count();
        if connection_plugins + usize::from(node.auth.jwt.is_some()) > 1 {
            return Err(ConfigError::new_err(
                "at most one connection policy: jwt or one connection-policy plugin",
            ));
        }
        for plugin in &node.plugins {
            if !plugin.path.is_file() {
                return Err(ConfigError::new_err(format!(
                    "plugin {}: no such file {}",
                    plugin.name(),
                    plugin.path.display()
                )));
            }
        }
        fanwire_plugins::set::check_resolvers(&node.plugins, &node.resolvers)
            .map_err(|e| ConfigError::new_err(e.to_string()))?;
        for resolver in &node.resolvers {
            if !resolver.path.is_file() {
                return Err(ConfigError::new_err(format!(
                    "resolver {} of `{}`: no such file {}",
                    resolver.name(),
                    resolver.field,
                    resolver.path.display()
                )));
            }
        }
        let n = |v: usize| v as i64;
        Ok(SubscriptionConfig {
            max_connections: n(limits.max_connections),
            connections_per_second: limits.connections_per_second,
            connection_burst: limits.connection_burst,
            max_subscriptions_per_connection: n(limits.max_subscriptions_per_connection),
            subscribes_per_second: limits.subscribes_per_second,
            subscribe_burst: limits.subscribe_burst,
            max_message_bytes: n(limits.max_message_bytes),
            queue_depth: n(limits.queue_depth),
            init_timeout_ms: limits.init_timeout_ms as i64,
            keep_alive_ms: limits.keep_alive_ms as i64,
            max_document_bytes: n(limits.max_document_bytes),
            max_depth: n(limits.max_depth),
            max_aliases: n(limits.max_aliases),
            max_fields: n(limits.max_fields),
            history_per_topic: n(limits.history_per_topic),
            max_backlog: n(limits.max_backlog),
            max_resolutions: n(limits.max_resolutions),
            publish_wait_ms: limits.publish_wait_ms as i64,
            resolver_timeout_ms,
            limits,
            node,
        })
    }
}
