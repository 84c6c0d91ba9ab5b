//! The Fanwire host: a hyper server with the WebSocket endpoint, the
//! publish API, health and metrics, around `fanwire-core`'s engine.
//!
//! # Layout
//!
//! - [`config`]: the TOML file and its validation.
//! - `http`: routing of `/graphql`, `/publish`, `/healthz`, `/metrics` and `/`;
//!   the bounds on connections (how many, how long a request head may take,
//!   how fast one address may connect).
//! - `ws`: the only module that touches tokio-tungstenite: feeds frames to
//!   the core's `Connection`, writes its outbox, runs its timers.
//! - `wire`: a connection's socket, shared by its task and the dispatcher,
//!   which writes results straight to an idle socket.
//! - `memory`: hands the memory a burst freed back to the system once the
//!   server is quiet (glibc keeps it otherwise).
//! - [`publish`]: parsing publish bodies.
//! - [`node`]: the bus, sources and plugins around an engine (`[bus]`,
//!   `[sources.postgres]` from `fanwire-bus`, `[[plugins]]` and `[auth]`
//!   from `fanwire-plugins`); `POST /publish` goes through its bus. An
//!   embedding program starts one and shares it with its server.
//! - [`demo`]: the demo schema, event generator and page.
//!
//! Errors here are `thiserror` enums ([`StartError`]); `anyhow` is used only
//! in `main.rs`, at the binary's edge.

pub mod config;
pub mod demo;
mod http;
mod memory;
pub mod node;
pub mod publish;
mod wire;
mod ws;

use std::net::{IpAddr, SocketAddr};
use std::path::PathBuf;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use fanwire_core::ratelimit::{KeyedBuckets, TokenBucket};
use fanwire_core::{Engine, Schema, SchemaError};
use tokio::net::TcpListener;
use tokio::sync::{mpsc, watch};

pub use config::Config;
pub use node::Node;

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

/// Source addresses whose connection rate is tracked at once (about 100
/// bytes each); beyond, addresses whose bucket is full are forgotten.
const ADDRESS_BUCKETS: usize = 65_536;

/// State shared by every request handler and connection task.
#[derive(Debug)]
struct App {
    engine: Arc<Engine>,
    config: Config,
    // A std mutex: taken once per upgrade for a few instructions, never across an await.
    connection_bucket: Mutex<TokenBucket>,
    /// Each source address's share of the connection bucket (a std mutex
    /// for the same reason).
    address_buckets: Mutex<KeyedBuckets<IpAddr>>,
    /// Open WebSockets, against `limits.max_connections`.
    websockets: Arc<http::Slots>,
    /// TCP connections not upgraded, against `server.max_http_connections`.
    http_connections: Arc<http::Slots>,
    /// The bus publishes go through, the sources, the plugins.
    node: Arc<Node>,
    /// Whether the node is this server's, to stop when the server does
    /// (not when an embedding program shares its node).
    owns_node: bool,
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
    /// SIGHUP, listened to from the bind on (before the binary announces
    /// that it listens), so an early signal reloads instead of killing it.
    #[cfg(unix)]
    hup: Option<tokio::signal::unix::Signal>,
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
    /// Python package builds one with its resolvers), and starts the node's
    /// bus, sources and plugins. `config.limits` is replaced by the engine's
    /// and `config.server.schema` is not read.
    pub async fn bind_engine(engine: Arc<Engine>, config: Config) -> Result<Server, StartError> {
        config.server.validate()?;
        config.validate_node()?;
        let listener = bind(&config).await?;
        // Waits until the node has caught up with the broker's history, so
        // the first resume it serves is complete.
        let node = Node::start(engine, &config).await?;
        Ok(Self::with_node(listener, Arc::new(node), true, config))
    }

    /// Binds a listener around a node that the embedding program started
    /// and keeps (its bus, sources and plugins outlive this server). The
    /// `[server]` table and `plugin_runtime.admin_token` of `config` apply;
    /// its limits are replaced by the engine's.
    pub async fn bind_node(node: Arc<Node>, config: Config) -> Result<Server, StartError> {
        config.server.validate()?;
        let listener = bind(&config).await?;
        Ok(Self::with_node(listener, node, false, config))
    }

    fn with_node(
        listener: TcpListener,
        node: Arc<Node>,
        owns_node: bool,
        mut config: Config,
    ) -> Server {
        config.limits = node.engine().limits().clone();
        let (shutdown_tx, shutdown) = watch::channel(false);
        let (tasks, tasks_done) = mpsc::channel(1);
        let bucket = TokenBucket::new(
            config.limits.connections_per_second,
            config.limits.connection_burst,
            Instant::now(),
        );
        let share = config.server.connection_share_per_address;
        let address_buckets = KeyedBuckets::new(
            config.limits.connections_per_second * share,
            // At least one token, or a small share would refuse everyone.
            (config.limits.connection_burst * share).max(1.0),
            ADDRESS_BUCKETS,
        );
        let app = Arc::new(App {
            engine: node.engine().clone(),
            websockets: http::Slots::new(config.limits.max_connections),
            http_connections: http::Slots::new(config.server.max_http_connections),
            config,
            connection_bucket: Mutex::new(bucket),
            address_buckets: Mutex::new(address_buckets),
            node,
            owns_node,
            shutdown,
            tasks,
        });
        #[cfg(unix)]
        let hup = app.node.plugins().and_then(|_| {
            use tokio::signal::unix::{signal, SignalKind};
            signal(SignalKind::hangup())
                .map_err(|e| {
                    tracing::warn!(error = %e, "cannot watch SIGHUP; plugin reload by signal is off")
                })
                .ok()
        });
        Server {
            app,
            listener,
            shutdown_tx,
            tasks_done,
            #[cfg(unix)]
            hup,
        }
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
        self.app.node.bus()
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
            #[cfg(unix)]
            hup,
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
        if let Some(hup) = hup {
            spawn_sighup_reload(app.clone(), hup);
        }
        tokio::spawn(memory::trim_when_quiet(
            app.engine.clone(),
            app.shutdown.clone(),
        ));
        tokio::pin!(shutdown);
        loop {
            tokio::select! {
                accepted = listener.accept() => match accepted {
                    Ok((stream, peer)) => match app.http_connections.try_take() {
                        Some(slot) => http::spawn_connection(app.clone(), stream, peer, slot),
                        None => http::refuse_connection(&app, stream),
                    },
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
        let timeout = Duration::from_millis(app.config.server.shutdown_timeout_ms);
        let deadline = tokio::time::Instant::now() + timeout;
        // What was accepted goes out before the clients are told to go.
        if tokio::time::timeout_at(deadline, app.engine.drained())
            .await
            .is_err()
        {
            tracing::warn!("shutdown timeout reached with accepted events not yet fanned out");
        }
        tracing::info!("shutting down: closing clients");
        let _ = shutdown_tx.send(true);
        if app.owns_node {
            app.node.stop();
        }
        drop(app);
        if tokio::time::timeout_at(deadline, tasks_done.recv())
            .await
            .is_err()
        {
            tracing::warn!("shutdown timeout reached with connections still open");
        }
    }
}

/// Binds the configured listening address.
async fn bind(config: &Config) -> Result<TcpListener, StartError> {
    let addr = config.server.listen;
    TcpListener::bind(addr)
        .await
        .map_err(|source| StartError::Bind { addr, source })
}

/// Reloads changed plugins; the answer for the admin API and the SIGHUP log.
pub(crate) async fn reload_plugins(app: &Arc<App>) -> Option<fanwire_plugins::ReloadReport> {
    app.node.reload_plugins(true).await
}

/// SIGHUP reloads the plugins, as `POST /admin/plugins/reload` does.
#[cfg(unix)]
fn spawn_sighup_reload(app: Arc<App>, mut hup: tokio::signal::unix::Signal) {
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
