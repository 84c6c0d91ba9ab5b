//! The Fanwire host: a hyper server with the WebSocket endpoint, the
//! publish API, health and metrics, around `fanwire-core`'s engine.
//!
//! # Layout
//!
//! - [`config`]: the TOML file and its validation.
//! - `http`: routing of `/graphql`, `/publish`, `/healthz`, `/metrics` and `/`.
//! - `ws`: the only module that touches tokio-tungstenite: feeds frames to
//!   the core's `Connection`, writes its outbox, runs its timers.
//! - `wire`: a connection's socket, shared by its task and the dispatcher,
//!   which writes results straight to an idle socket.
//! - [`publish`]: parsing publish bodies.
//! - The bus and sources (`[bus]`, `[sources.postgres]`) live in
//!   `fanwire-bus`; `POST /publish` goes through the bus.
//! - [`demo`]: the demo schema, event generator and page.
//!
//! Errors here are `thiserror` enums ([`StartError`]); `anyhow` is used only
//! in `main.rs`, at the binary's edge.

pub mod config;
pub mod demo;
mod http;
pub mod publish;
mod wire;
mod ws;

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use fanwire_core::ratelimit::TokenBucket;
use fanwire_core::{Engine, Schema, SchemaError};
use tokio::net::TcpListener;
use tokio::sync::{mpsc, watch};

pub use config::Config;

/// Why the host could not start.
#[derive(Debug, thiserror::Error)]
pub enum StartError {
    /// The configuration is invalid.
    #[error(transparent)]
    Config(#[from] config::ConfigError),
    /// The schema file could not be read.
    #[error("cannot read schema {path}: {source}")]
    SchemaFile {
        /// The file.
        path: PathBuf,
        /// The IO error.
        source: std::io::Error,
    },
    /// The schema is invalid.
    #[error("schema {path}: {source}")]
    Schema {
        /// The file (or `demo`).
        path: String,
        /// What is wrong with it.
        source: SchemaError,
    },
    /// The bus or a source could not be set up (bad URL or name; an
    /// unreachable broker is not an error: the node starts degraded).
    #[error(transparent)]
    Bus(#[from] fanwire_bus::BusError),
    /// A plugin or the JWT policy could not be loaded.
    #[error("plugins: {0}")]
    Plugins(#[from] fanwire_plugins::LoadError),
    /// The listening socket could not be bound.
    #[error("cannot listen on {addr}: {source}")]
    Bind {
        /// The address.
        addr: SocketAddr,
        /// The IO error.
        source: std::io::Error,
    },
}

/// State shared by every request handler and connection task.
#[derive(Debug)]
struct App {
    engine: Arc<Engine>,
    config: Config,
    // A std mutex: taken once per upgrade for a few instructions, never across an await.
    connection_bucket: Mutex<TokenBucket>,
    /// The bus publishes go through, the running sources, their metrics.
    io: fanwire_bus::Io,
    /// The configured plugins and JWT policy, when there are any.
    plugins: Option<Arc<fanwire_plugins::PluginHost>>,
    /// Stops the plugin folder watcher with the server.
    _watch: Option<fanwire_plugins::set::WatchGuard>,
    shutdown: watch::Receiver<bool>,
    /// Each task holds a clone; shutdown waits until every clone is dropped.
    tasks: mpsc::Sender<()>,
}

/// A bound, ready host.
#[derive(Debug)]
pub struct Server {
    app: Arc<App>,
    listener: TcpListener,
    shutdown_tx: watch::Sender<bool>,
    tasks_done: mpsc::Receiver<()>,
}

/// Reads the schema named by the config (or the demo schema).
pub fn load_schema(config: &Config) -> Result<Schema, StartError> {
    let (path, sdl) = match &config.server.schema {
        Some(path) => {
            let sdl = std::fs::read_to_string(path).map_err(|source| StartError::SchemaFile {
                path: path.clone(),
                source,
            })?;
            (path.display().to_string(), sdl)
        }
        None => ("demo".to_owned(), demo::SCHEMA.to_owned()),
    };
    Schema::parse(&sdl).map_err(|source| StartError::Schema { path, source })
}

impl Server {
    /// Validates the config, loads the schema and binds the listener.
    pub async fn bind(config: Config) -> Result<Server, StartError> {
        config.validate()?;
        let schema = load_schema(&config)?;
        let engine = Engine::new(schema, config.limits.clone())
            .map_err(|e| config::ConfigError::Invalid(e.to_string()))?;
        Self::bind_engine(engine, config).await
    }

    /// Binds a listener around an engine built by the embedding program (the
    /// Python package builds one with its resolvers). `config.limits` is
    /// replaced by the engine's and `config.server.schema` is not read.
    pub async fn bind_engine(
        engine: Arc<Engine>,
        mut config: Config,
    ) -> Result<Server, StartError> {
        config.limits = engine.limits().clone();
        config.server.validate()?;
        let plugins = plugin_host(&config, &engine)?;
        let watch = plugins
            .as_ref()
            .filter(|_| config.plugin_runtime.watch)
            .map(|host| {
                let interval =
                    Duration::from_millis(config.plugin_runtime.watch_interval_ms.max(10));
                host.watch(engine.clone(), interval)
            });
        let addr = config.server.listen;
        let listener = TcpListener::bind(addr)
            .await
            .map_err(|source| StartError::Bind { addr, source })?;
        let (shutdown_tx, shutdown) = watch::channel(false);
        let (tasks, tasks_done) = mpsc::channel(1);
        // Waits until the node has caught up with the broker's history, so
        // the first resume it serves is complete.
        let io = fanwire_bus::start(
            &config.bus,
            &config.sources,
            engine.clone(),
            shutdown.clone(),
        )
        .await?;
        let bucket = TokenBucket::new(
            config.limits.connections_per_second,
            config.limits.connection_burst,
            Instant::now(),
        );
        let app = Arc::new(App {
            engine,
            config,
            connection_bucket: Mutex::new(bucket),
            io,
            plugins,
            _watch: watch,
            shutdown,
            tasks,
        });
        Ok(Server {
            app,
            listener,
            shutdown_tx,
            tasks_done,
        })
    }

    /// The address actually bound (useful with port 0).
    pub fn local_addr(&self) -> std::io::Result<SocketAddr> {
        self.listener.local_addr()
    }

    /// The engine, to publish from the embedding process.
    pub fn engine(&self) -> &Arc<Engine> {
        &self.app.engine
    }

    /// The bus, to publish from the embedding process to every node.
    pub fn bus(&self) -> &Arc<dyn fanwire_bus::Bus> {
        &self.app.io.bus
    }

    /// Serves until `shutdown` completes, then stops accepting, closes every
    /// client with 1001 and returns once they are gone or the shutdown
    /// timeout has passed.
    pub async fn run(self, shutdown: impl std::future::Future<Output = ()>) {
        let Server {
            app,
            listener,
            shutdown_tx,
            mut tasks_done,
        } = self;
        if app.config.demo.enabled {
            let interval = Duration::from_millis(app.config.demo.interval_ms);
            let guard = app.tasks.clone();
            let (engine, stop) = (app.engine.clone(), app.shutdown.clone());
            tokio::spawn(async move {
                demo::generate(engine, interval, stop).await;
                drop(guard);
            });
        }
        #[cfg(unix)]
        if app.plugins.is_some() {
            spawn_sighup_reload(app.clone());
        }
        tokio::pin!(shutdown);
        loop {
            tokio::select! {
                accepted = listener.accept() => match accepted {
                    Ok((stream, peer)) => http::spawn_connection(app.clone(), stream, peer),
                    // Running out of file descriptors must not end the server.
                    Err(e) => {
                        tracing::warn!(error = %e, "accept failed");
                        tokio::time::sleep(Duration::from_millis(50)).await;
                    }
                },
                _ = &mut shutdown => break,
            }
        }
        drop(listener);
        tracing::info!("shutting down: closing clients");
        let _ = shutdown_tx.send(true);
        let timeout = Duration::from_millis(app.config.server.shutdown_timeout_ms);
        drop(app);
        if tokio::time::timeout(timeout, tasks_done.recv())
            .await
            .is_err()
        {
            tracing::warn!("shutdown timeout reached with connections still open");
        }
    }
}

/// Loads the configured plugins and JWT policy and puts them in force on
/// `engine`; `None` when the config names neither.
fn plugin_host(
    config: &Config,
    engine: &Arc<Engine>,
) -> Result<Option<Arc<fanwire_plugins::PluginHost>>, StartError> {
    if config.plugins.is_empty() && config.auth.jwt.is_none() {
        return Ok(None);
    }
    // Paths were made absolute when the file was loaded; a config built in
    // code resolves them against the working directory.
    let mut runtime = config.plugin_runtime.clone();
    // Plugin paths already include the folder (`Config::resolve_plugin_paths`).
    runtime.folder = None;
    let host = fanwire_plugins::PluginHost::new(
        runtime,
        &config.plugins,
        config.auth.jwt.as_ref(),
        Path::new("."),
        engine.metrics(),
    )?;
    host.install(engine);
    Ok(Some(Arc::new(host)))
}

/// Reloads changed plugins on a blocking thread (compiling takes a while);
/// the answer for the admin API and the SIGHUP log.
pub(crate) async fn reload_plugins(app: &Arc<App>) -> Option<fanwire_plugins::ReloadReport> {
    let host = app.plugins.clone()?;
    let engine = app.engine.clone();
    let report = tokio::task::spawn_blocking(move || host.reload(&engine, true))
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

/// SIGHUP reloads the plugins, as `POST /admin/plugins/reload` does.
#[cfg(unix)]
fn spawn_sighup_reload(app: Arc<App>) {
    use tokio::signal::unix::{signal, SignalKind};
    let mut hup = match signal(SignalKind::hangup()) {
        Ok(hup) => hup,
        Err(e) => {
            tracing::warn!(error = %e, "cannot watch SIGHUP; plugin reload by signal is off");
            return;
        }
    };
    let mut stop = app.shutdown.clone();
    tokio::spawn(async move {
        loop {
            tokio::select! {
                got = hup.recv() => {
                    if got.is_none() {
                        return;
                    }
                    reload_plugins(&app).await;
                }
                _ = stopped(&mut stop) => return,
            }
        }
    });
}

/// Resolves once shutdown has begun. The watch guard is dropped inside, so
/// the future stays `Send`.
pub(crate) async fn stopped(shutdown: &mut watch::Receiver<bool>) {
    let _ = shutdown.wait_for(|stop| *stop).await;
}
