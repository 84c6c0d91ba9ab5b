//! What a node runs around its engine besides the listener: the bus, the
//! event sources and the plugins (with their folder watcher). The binary
//! starts one per server; an embedding program (the Python package) starts
//! one per engine, publishes through it and shares it with an in-process
//! server, so every serving mode has the same bus, sources and plugins.

use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

use fanwire_bus::{Bus, Io, State};
use fanwire_core::Engine;
use fanwire_plugins::set::WatchGuard;
use fanwire_plugins::{LoadError, PluginHost, ReloadReport, ResolverSpec};
use serde_json::{json, Value};
use tokio::sync::watch;

use crate::config::Config;
use crate::StartError;

/// A running bus, its sources and the plugins in force on one engine.
#[derive(Debug)]
pub struct Node {
    engine: Arc<Engine>,
    io: Io,
    plugins: Option<Arc<PluginHost>>,
    /// Stops the plugin folder watcher when the node goes.
    _watch: Option<WatchGuard>,
    stop: watch::Sender<bool>,
}

impl Node {
    /// Loads the configured plugins and JWT policy (a plugin that fails to
    /// load is an error: a missing security filter must not mean an open
    /// door), puts them in force on `engine`, then starts the bus (waiting,
    /// up to `bus.startup_timeout_ms`, until it has caught up with the
    /// broker's history) and the sources. Only `bus`, `sources`,
    /// `plugin_runtime`, `plugins`, `resolvers` and `auth` of `config` are
    /// read. A component resolver for a field that is not the schema's, or
    /// that already has a resolver of the embedding program, is an error. An
    /// unreachable broker or database is not an error: the node starts
    /// degraded and retries.
    pub async fn start(engine: Arc<Engine>, config: &Config) -> Result<Node, StartError> {
        config.validate_node()?;
        // From here a publish returns once its events are queued (a no-op
        // if the engine already has its dispatcher).
        tokio::spawn(engine.dispatcher());
        let plugins = plugin_host(config, &engine)?;
        let watch = plugins
            .as_ref()
            .filter(|_| config.plugin_runtime.watch)
            .map(|host| {
                let interval =
                    Duration::from_millis(config.plugin_runtime.watch_interval_ms.max(10));
                host.watch(engine.clone(), interval)
            });
        let (stop, stopped) = watch::channel(false);
        let io = fanwire_bus::start(&config.bus, &config.sources, engine.clone(), stopped).await?;
        Ok(Node {
            engine,
            io,
            plugins,
            _watch: watch,
            stop,
        })
    }

    /// The engine.
    pub fn engine(&self) -> &Arc<Engine> {
        &self.engine
    }

    /// The bus that publishes go through.
    pub fn bus(&self) -> &Arc<dyn Bus> {
        &self.io.bus
    }

    /// The configured plugins and JWT policy, when there are any.
    pub fn plugins(&self) -> Option<&Arc<PluginHost>> {
        self.plugins.as_ref()
    }

    /// What `/healthz` reports: `ok` or `degraded` (the bus or a source is
    /// not connected; the node still serves), live counts, and each
    /// component's state.
    pub fn health(&self) -> Value {
        let m = self.engine.metrics();
        let bus = self.io.bus.status();
        let sources: serde_json::Map<String, Value> = self
            .io
            .sources
            .iter()
            .map(|s| (s.name().to_owned(), json!(s.status())))
            .collect();
        let up = std::iter::once(bus.state)
            .chain(self.io.sources.iter().map(|s| s.status().state))
            .all(|s| s == State::Up);
        json!({
            "status": if up { "ok" } else { "degraded" },
            "connections": m.connections.get(),
            "subscriptions": m.subscriptions.get(),
            "bus": bus,
            "sources": sources,
        })
    }

    /// One OpenMetrics exposition: the engine's metrics, then the bus's.
    pub fn metrics(&self) -> String {
        let engine = self.engine.metrics().encode();
        let mut text = engine.strip_suffix("# EOF\n").unwrap_or(&engine).to_owned();
        text.push_str(&self.io.metrics.encode());
        text.push_str("# EOF\n");
        text
    }

    /// Reloads changed plugins (all of them with `force`) on a blocking
    /// thread, since compiling takes a while; `None` without plugins.
    pub async fn reload_plugins(&self, force: bool) -> Option<ReloadReport> {
        let host = self.plugins.clone()?;
        let engine = self.engine.clone();
        let report = tokio::task::spawn_blocking(move || host.reload(&engine, force))
            .await
            .ok()?;
        tracing::info!(
            reloaded = ?report.reloaded,
            rejected = ?report.rejected,
            revoked = report.revoked,
            "plugin reload"
        );
        Some(report)
    }

    /// Tells the bus and source tasks to end (they drop their broker and
    /// database connections) and stops the plugin watcher. Idempotent.
    pub fn stop(&self) {
        let _ = self.stop.send(true);
    }
}

impl Drop for Node {
    fn drop(&mut self) {
        self.stop();
    }
}

/// Loads the configured plugins, component resolvers and JWT policy and
/// puts them in force on `engine`; `None` when the config names none.
fn plugin_host(
    config: &Config,
    engine: &Arc<Engine>,
) -> Result<Option<Arc<PluginHost>>, StartError> {
    if config.plugins.is_empty() && config.resolvers.is_empty() && config.auth.jwt.is_none() {
        return Ok(None);
    }
    ResolverSpec::check_fields(&config.resolvers, engine.schema())?;
    let embedded = engine.hooks();
    if let Some(r) =
        (config.resolvers.iter()).find(|r| embedded.hooks.resolvers.contains_key(&r.field))
    {
        return Err(LoadError::Config(format!(
            "the field `{}` has a resolver already (the embedding program's) and a component resolver ({}): keep one",
            r.field,
            r.path.display()
        ))
        .into());
    }
    // Paths were made absolute when the file was loaded; a config built in
    // code resolves them against the working directory.
    let mut runtime = config.plugin_runtime.clone();
    // Plugin paths already include the folder (`Config::resolve_plugin_paths`).
    runtime.folder = None;
    let host = PluginHost::new(
        runtime,
        &config.plugins,
        &config.resolvers,
        config.auth.jwt.as_ref(),
        Path::new("."),
        engine.metrics(),
    )?;
    host.install(engine);
    Ok(Some(Arc::new(host)))
}
