//! The native side of `SubscriptionManager`: the schema and resolvers while
//! the application declares them, then the engine they are frozen into, and
//! the node around it (bus, sources, plugins) while the manager is open.

use std::collections::HashMap;
use std::future::Future;
use std::pin::Pin;
use std::sync::atomic::Ordering;
use std::sync::{Arc, Mutex};
use std::task::Poll;

use fanwire_bus::{BusError, BusKind, Published};
use fanwire_core::hooks::{ConnectionPolicy, Hooks, Resolver, Spawner};
use fanwire_core::protocol::Protocol;
use fanwire_core::{Engine, Event, Order, Schema};
use fanwire_plugins::ResolverSpec;
use fanwire_server::{Config, Node};
use futures_util::future::BoxFuture;
use pyo3::exceptions::PyRuntimeError;
use pyo3::prelude::*;
use pyo3::IntoPyObjectExt;

use crate::config::SubscriptionConfig;
use crate::connection::NativeConnection;
use crate::convert::{from_py, to_py};
use crate::errors::{ConfigError, PublishError, SchemaError};
use crate::executor::{Executor, Spawn};
use crate::policy::PyPolicy;
use crate::resolver::{LoopSlot, PyResolver, ResolverStats};

enum State {
    /// Resolvers and topics may still be added.
    Building {
        schema: Box<Schema>,
        resolvers: HashMap<String, Arc<dyn Resolver>>,
        policy: Option<Arc<dyn ConnectionPolicy>>,
    },
    /// Serving or publishing has begun: the engine is fixed.
    Frozen(Arc<Engine>),
    /// Building the engine failed; the error was raised then.
    Failed,
}

/// Schema, resolvers and engine of one `SubscriptionManager`.
#[pyclass(frozen, module = "fanwire._native")]
pub struct Manager {
    // A std mutex, held only to swap the state or clone the engine.
    state: Mutex<State>,
    config: SubscriptionConfig,
    event_loop: Arc<LoopSlot>,
    executor: Py<Executor>,
    stats: Arc<ResolverStats>,
    /// The bus, sources and plugins while the manager is open. A std mutex:
    /// held to clone or swap the `Arc`, never across an await.
    node: Mutex<Option<Arc<Node>>>,
    /// Serialises `open` and `close`; a tokio mutex because starting a node
    /// awaits the broker.
    opening: tokio::sync::Mutex<()>,
    /// Set once plugins were loaded: they register their metrics with the
    /// engine, which a second load would repeat.
    plugins_loaded: std::sync::atomic::AtomicBool,
}

/// What a plugin reload did, as a dict.
#[derive(IntoPyObject)]
struct ReloadReport {
    reloaded: Vec<String>,
    rejected: Vec<(String, String)>,
    revoked: usize,
}

/// A bus error as the exception a publisher handles.
fn publish_error(e: BusError) -> PyErr {
    PublishError::new_err(e.to_string())
}

/// Frames queued or written in this process if the fan-out is done
/// already (a broker delivers later, to every node, this one included;
/// this node's dispatcher may still be at it): else 0.
fn deliveries_now(published: Published) -> usize {
    match published {
        Published::Accepted(mut receipt) => {
            receipt.try_dispatched().map_or(0, |done| done.delivered())
        }
        Published::Stored | Published::Queued => 0,
    }
}

/// Frames queued or written in this process once the fan-out is done.
async fn deliveries(published: Published) -> usize {
    match published {
        Published::Accepted(receipt) => receipt.dispatched().await.delivered(),
        Published::Stored | Published::Queued => 0,
    }
}

/// Reports a publish that failed after `publish_nowait` returned, on the
/// `fanwire` logger (nobody is left to raise it to); not at all once the
/// interpreter is shutting down.
fn log_late_failure(error: &BusError) {
    crate::interpreter::attach(|py| {
        let logged = py.import("logging").and_then(|logging| {
            logging
                .call_method1("getLogger", ("fanwire",))?
                .call_method1("error", (format!("publish_nowait: {error}"),))
        });
        if let Err(e) = logged {
            e.print(py);
        }
    });
}

impl Manager {
    /// The running node, if the manager is open.
    fn node(&self) -> Option<Arc<Node>> {
        self.node.lock().unwrap_or_else(|p| p.into_inner()).clone()
    }

    /// Starts publishing `event` through the bus and polls it once, which
    /// is all it takes when the bus answers at once: the in-process bus
    /// accepts while its backlog has room; a broker bus queues while the
    /// broker is down, or refuses when that queue is full. `Err(future)` is
    /// the rest of a publish that waits (for room, or for the broker's
    /// acknowledgement). Without a running node (the in-process bus before
    /// `open`), this thread dispatches the event itself.
    #[allow(clippy::type_complexity)]
    fn start_publish(
        &self,
        py: Python<'_>,
        topic: String,
        data: &Bound<'_, PyAny>,
        id: Option<String>,
    ) -> PyResult<Result<Published, BoxFuture<'static, Result<Published, BusError>>>> {
        if topic.is_empty() {
            return Err(PublishError::new_err("the topic must not be empty"));
        }
        let data = from_py(data).map_err(|e| PublishError::new_err(e.value(py).to_string()))?;
        let engine = self.engine()?;
        let event = Event {
            topic,
            data,
            id,
            seq: None,
        };
        let bus = match self.node() {
            Some(node) => node.bus().clone(),
            _ if self.config.node().bus.kind == BusKind::Memory => {
                // Dispatch takes registry locks; resolvers take the GIL inside them.
                let receipt = py.detach(|| engine.publish(vec![event], Order::Numbered));
                return Ok(Ok(Published::Accepted(receipt)));
            }
            _ => {
                return Err(PublishError::new_err(format!(
                    "the {:?} bus is not running: `await manager.open()` (serving does it) before publishing",
                    self.config.node().bus.kind
                )))
            }
        };
        // While the broker is down, the bus's forwarder may hold it for a
        // while: refuse here what the bus would refuse once it is free, so
        // the caller gets the error rather than a log line.
        let status = bus.status();
        if status.state != fanwire_bus::State::Up {
            let queued = status.queued.unwrap_or(0);
            if queued >= self.config.node().bus.buffer {
                return Err(publish_error(BusError::Unavailable {
                    kind: bus.kind(),
                    queued,
                }));
            }
        }
        let mut publish: BoxFuture<'static, Result<Published, BusError>> =
            Box::pin(async move { bus.publish(vec![event]).await });
        let runtime = crate::awaitable::runtime();
        let first = py.detach(|| {
            let _in_runtime = runtime.enter();
            // Polled again by whoever takes the future over, so a wake-up
            // sent to this no-op waker is not lost.
            let mut cx = std::task::Context::from_waker(std::task::Waker::noop());
            Pin::new(&mut publish).poll(&mut cx)
        });
        match first {
            Poll::Ready(result) => result.map(Ok).map_err(publish_error),
            Poll::Pending => Ok(Err(publish)),
        }
    }

    /// The configured tables for an in-process server: `config_file`'s
    /// `[server]`, and the manager's node tables (a file that sets them
    /// differently is refused rather than silently ignored).
    fn server_config(&self, config_file: Option<&std::path::Path>) -> PyResult<Config> {
        let mine = self.config.node();
        let mut config = match config_file {
            Some(path) => Config::load(path).map_err(|e| ConfigError::new_err(e.to_string()))?,
            None => Config::default(),
        };
        let default = Config::default();
        let differs = [
            ("[bus]", config.bus != default.bus && config.bus != mine.bus),
            (
                "[sources]",
                config.sources != default.sources && config.sources != mine.sources,
            ),
            (
                "[[plugins]]",
                config.plugins != default.plugins && config.plugins != mine.plugins,
            ),
            (
                "[[resolvers]]",
                config.resolvers != default.resolvers && config.resolvers != mine.resolvers,
            ),
            (
                "[plugin_runtime]",
                config.plugin_runtime != default.plugin_runtime
                    && config.plugin_runtime != mine.plugin_runtime,
            ),
            (
                "[auth]",
                config.auth != default.auth && config.auth != mine.auth,
            ),
        ];
        if let Some((table, _)) = differs.iter().find(|(_, d)| *d) {
            return Err(ConfigError::new_err(format!(
                "config_file sets {table}, which belongs to the manager: pass SubscriptionConfig.from_toml(path) to the manager (or set it in SubscriptionConfig)"
            )));
        }
        config.bus = mine.bus.clone();
        config.sources = mine.sources.clone();
        config.plugins = mine.plugins.clone();
        config.resolvers = mine.resolvers.clone();
        config.plugin_runtime = mine.plugin_runtime.clone();
        config.auth = mine.auth.clone();
        Ok(config)
    }

    fn spawn(&self) -> Spawn {
        Spawn(self.executor.get().shared.clone())
    }

    /// The engine, built on first use from what was declared so far.
    pub fn engine(&self) -> PyResult<Arc<Engine>> {
        let mut state = self.state.lock().unwrap_or_else(|p| p.into_inner());
        match &*state {
            State::Frozen(engine) => return Ok(engine.clone()),
            State::Failed => {
                return Err(PyRuntimeError::new_err(
                    "the subscription engine failed to start earlier",
                ))
            }
            State::Building { policy, .. } => {
                if policy.is_some() && self.config.has_connection_policy() {
                    return Err(ConfigError::new_err(
                        "both a Python connection policy and the config's JWT or connection-policy plugin decide connection_init: keep one",
                    ));
                }
            }
        }
        let State::Building {
            schema,
            resolvers,
            policy,
        } = std::mem::replace(&mut *state, State::Failed)
        else {
            unreachable!("checked above")
        };
        let runtime = crate::awaitable::runtime();
        let spawn = self.spawn();
        // Async resolutions are delivered on the application's loop, where
        // they complete; without a loop yet, on the runtime.
        let spawner: Spawner = Arc::new(move |task| {
            if spawn.attached() {
                spawn.spawn(Box::pin(async move {
                    task.await;
                    None
                }));
            } else {
                runtime.spawn(task);
            }
        });
        let mut hooks = Hooks {
            resolvers,
            spawner: Some(spawner),
            ..Hooks::default()
        };
        if let Some(policy) = policy {
            hooks.connection = policy;
        }
        let engine = Engine::with_hooks(*schema, self.config.limits().clone(), hooks)
            .map_err(|e| ConfigError::new_err(e.to_string()))?;
        *state = State::Frozen(engine.clone());
        Ok(engine)
    }

    fn building<R>(
        &self,
        f: impl FnOnce(
            &mut Schema,
            &mut HashMap<String, Arc<dyn Resolver>>,
            &mut Option<Arc<dyn ConnectionPolicy>>,
        ) -> PyResult<R>,
    ) -> PyResult<R> {
        let mut state = self.state.lock().unwrap_or_else(|p| p.into_inner());
        match &mut *state {
            State::Building {
                schema,
                resolvers,
                policy,
            } => f(schema, resolvers, policy),
            _ => Err(PyRuntimeError::new_err(
                "resolvers, topics and policies must be declared before the manager serves or publishes",
            )),
        }
    }
}

#[pymethods]
impl Manager {
    #[new]
    #[pyo3(signature = (schema, config=None))]
    fn new(
        py: Python<'_>,
        schema: &str,
        config: Option<PyRef<'_, SubscriptionConfig>>,
    ) -> PyResult<Self> {
        let schema = Schema::parse(schema).map_err(|e| SchemaError::new_err(e.to_string()))?;
        let config = match config {
            Some(c) => c.clone(),
            None => SubscriptionConfig::default_config()?,
        };
        // Fields cannot be added later: a component resolver's field is
        // checked against the schema now, not when the manager opens.
        ResolverSpec::check_fields(&config.node().resolvers, &schema)
            .map_err(|e| ConfigError::new_err(e.to_string()))?;
        Ok(Manager {
            state: Mutex::new(State::Building {
                schema: Box::new(schema),
                resolvers: HashMap::new(),
                policy: None,
            }),
            config,
            event_loop: Arc::default(),
            executor: Py::new(py, Executor::new()?)?,
            stats: Arc::default(),
            node: Mutex::new(None),
            opening: tokio::sync::Mutex::new(()),
            plugins_loaded: std::sync::atomic::AtomicBool::new(false),
        })
    }

    /// The configuration in force.
    #[getter]
    fn config(&self) -> SubscriptionConfig {
        self.config.clone()
    }

    /// The subscription fields the schema declares, sorted.
    fn fields(&self) -> PyResult<Vec<String>> {
        let mut fields: Vec<String> = match &*self.state.lock().unwrap_or_else(|p| p.into_inner()) {
            State::Building { schema, .. } => {
                schema.subscription_fields().map(str::to_owned).collect()
            }
            State::Frozen(engine) => engine
                .schema()
                .subscription_fields()
                .map(str::to_owned)
                .collect(),
            State::Failed => Vec::new(),
        };
        fields.sort();
        Ok(fields)
    }

    /// Binds `field` to a topic template (`{arg}` placeholders name its arguments).
    fn bind_topic(&self, field: &str, topic: &str) -> PyResult<()> {
        self.building(|schema, _, _| {
            schema
                .bind_topic(field, topic)
                .map_err(|e| SchemaError::new_err(e.to_string()))
        })
    }

    /// Registers `func` as the resolver of `field`.
    fn add_resolver(&self, py: Python<'_>, field: &str, func: Py<PyAny>) -> PyResult<()> {
        let resolver = PyResolver {
            executor: self.executor.clone_ref(py),
            field: field.to_owned(),
            func,
            timeout: self.config.resolver_timeout(),
            event_loop: self.event_loop.clone(),
            stats: self.stats.clone(),
        };
        self.building(|schema, resolvers, _| {
            if schema.topic(field).is_none() {
                return Err(SchemaError::new_err(format!(
                    "the subscription type has no field `{field}`"
                )));
            }
            if let Some(component) = self.config.component_resolver(field) {
                return Err(ConfigError::new_err(format!(
                    "`{field}` has a component resolver ({}, ComponentResolver in the config): a field takes one resolver, Python or component",
                    component.path.display()
                )));
            }
            if resolvers.contains_key(field) {
                return Err(SchemaError::new_err(format!(
                    "`{field}` already has a resolver"
                )));
            }
            resolvers.insert(field.to_owned(), Arc::new(resolver));
            Ok(())
        })
    }

    /// Installs `func(connection_params, headers)` as the connection policy.
    fn set_connection_policy(&self, func: Py<PyAny>) -> PyResult<()> {
        self.building(|_, _, policy| {
            *policy = Some(Arc::new(PyPolicy { func }));
            Ok(())
        })
    }

    /// The event loop that async resolvers run on.
    fn set_event_loop(&self, py: Python<'_>, event_loop: &Bound<'_, PyAny>) -> PyResult<()> {
        self.event_loop.set(py, event_loop);
        Executor::attach(self.executor.bind(py), event_loop)
    }

    /// Publishes one event through the bus without waiting: returns how
    /// many frames this process queued or wrote for it if that is known at
    /// once (the manager is not open, so this thread dispatched it), else 0
    /// (its dispatcher fans it out next; with a broker, every node delivers
    /// once the broker has it). Raises `PublishError` when the bus refuses
    /// at once, or the node's backlog is full (dispatch is behind); a later
    /// failure is logged.
    #[pyo3(signature = (topic, data, id=None))]
    fn publish(
        &self,
        py: Python<'_>,
        topic: String,
        data: &Bound<'_, PyAny>,
        id: Option<String>,
    ) -> PyResult<usize> {
        if let Some(node) = self.node() {
            if node.bus().kind() == "memory" && !node.engine().has_room() {
                return Err(PublishError::new_err(
                    "the node is saturated: its backlog (events to fan out, resolutions running) is full; retry later, or `await manager.publish(...)`, which waits for room",
                ));
            }
        }
        match self.start_publish(py, topic, data, id)? {
            Ok(published) => Ok(deliveries_now(published)),
            Err(rest) => {
                crate::awaitable::runtime().spawn(async move {
                    if let Err(e) = rest.await {
                        log_late_failure(&e);
                    }
                });
                Ok(0)
            }
        }
    }

    /// As `publish`, but awaited: waits for room in a full backlog (up to
    /// `publish_wait_ms`), for the fan-out, and for a broker's
    /// acknowledgement; returns the count, or an awaitable of it when it is
    /// not known at once.
    #[pyo3(signature = (topic, data, id=None))]
    fn publish_async<'py>(
        &self,
        py: Python<'py>,
        topic: String,
        data: &Bound<'py, PyAny>,
        id: Option<String>,
    ) -> PyResult<Bound<'py, PyAny>> {
        let rest = match self.start_publish(py, topic, data, id)? {
            Ok(Published::Accepted(mut receipt)) => match receipt.try_dispatched() {
                Some(done) => return done.delivered().into_bound_py_any(py),
                None => Box::pin(async move { Ok(Published::Accepted(receipt)) }),
            },
            Ok(_) => return 0usize.into_bound_py_any(py),
            Err(rest) => rest,
        };
        crate::awaitable::future_into_py(py, async move {
            Ok(deliveries(rest.await.map_err(publish_error)?).await)
        })
    }

    /// Whether the bus, sources and plugins are running.
    fn is_open(&self) -> bool {
        self.node().is_some()
    }

    /// Starts the bus, sources and plugins (idempotent); resolves once the
    /// bus has caught up with the broker's history, or its startup timeout
    /// passed with the broker unreachable (the node then serves degraded and
    /// retries: see `health()`).
    fn open<'py>(slf: Py<Self>, py: Python<'py>) -> PyResult<Bound<'py, PyAny>> {
        let engine = slf.get().engine()?;
        crate::awaitable::future_into_py(py, async move {
            let manager = slf.get();
            let _one = manager.opening.lock().await;
            if manager.node().is_some() {
                return Ok(());
            }
            if manager.plugins_loaded.load(Ordering::Acquire) {
                return Err(PyRuntimeError::new_err(
                    "a manager with plugins opens once: create a new manager after close()",
                ));
            }
            let node = Node::start(engine, manager.config.node())
                .await
                .map_err(crate::server::start_error)?;
            if node.plugins().is_some() {
                manager.plugins_loaded.store(true, Ordering::Release);
            }
            *manager.node.lock().unwrap_or_else(|p| p.into_inner()) = Some(Arc::new(node));
            Ok(())
        })
    }

    /// Stops the bus and sources (their connections close) and the plugin
    /// watcher; the plugins stay in force on the engine. Idempotent; `open`
    /// starts them again.
    fn close<'py>(slf: Py<Self>, py: Python<'py>) -> PyResult<Bound<'py, PyAny>> {
        crate::awaitable::future_into_py(py, async move {
            let manager = slf.get();
            let _one = manager.opening.lock().await;
            let node = manager
                .node
                .lock()
                .unwrap_or_else(|p| p.into_inner())
                .take();
            if let Some(node) = node {
                node.stop();
            }
            Ok(())
        })
    }

    /// What the host's `/healthz` reports: `status` (`ok`, `degraded` while
    /// the broker or database is unreachable, `closed` before `open`),
    /// `connections`, `subscriptions`, `bus` and `sources`.
    fn health<'py>(&self, py: Python<'py>) -> PyResult<Bound<'py, PyAny>> {
        let value = match self.node() {
            Some(node) => node.health(),
            None => {
                // Asking must not freeze a manager still being declared.
                let engine = match &*self.state.lock().unwrap_or_else(|p| p.into_inner()) {
                    State::Frozen(engine) => Some(engine.clone()),
                    _ => None,
                };
                let (connections, subscriptions) = engine.map_or((0, 0), |e| {
                    let m = e.metrics();
                    (m.connections.get(), m.subscriptions.get())
                });
                serde_json::json!({
                    "status": "closed",
                    "connections": connections,
                    "subscriptions": subscriptions,
                    "bus": null,
                    "sources": {},
                })
            }
        };
        to_py(py, &value)
    }

    /// Reloads every plugin file (compiling off the event path); resolves to
    /// `{"reloaded": [...], "rejected": [(name, reason)], "revoked": n}`, or
    /// `None` when no plugins are configured or the manager is not open.
    fn reload_plugins<'py>(&self, py: Python<'py>) -> PyResult<Bound<'py, PyAny>> {
        let node = self.node();
        crate::awaitable::future_into_py(py, async move {
            let Some(node) = node else { return Ok(None) };
            let Some(report) = node.reload_plugins(true).await else {
                return Ok(None);
            };
            Ok(Some(ReloadReport {
                reloaded: report.reloaded,
                rejected: report.rejected,
                revoked: report.revoked,
            }))
        })
    }

    /// Opens a connection for a framework-held socket; `None` when the
    /// client offered no subprotocol this server speaks (close 4406).
    #[pyo3(signature = (offered, headers=Vec::new()))]
    fn connect(
        &self,
        offered: &str,
        headers: Vec<(String, String)>,
    ) -> PyResult<Option<NativeConnection>> {
        let engine = self.engine()?;
        if self.config.has_plugins() && self.node().is_none() {
            // Serving before the plugins load would skip authentication
            // and filters.
            return Err(PyRuntimeError::new_err(
                "the configured plugins are not loaded: `await manager.open()` first (serving does it)",
            ));
        }
        let Some(protocol) = Protocol::negotiate(offered) else {
            return Ok(None);
        };
        let headers = headers
            .into_iter()
            .map(|(k, v)| (k.to_ascii_lowercase(), v))
            .collect();
        let conn = engine.connect(protocol).with_headers(headers);
        Ok(Some(NativeConnection::new(
            conn,
            engine,
            self.spawn(),
            self.event_loop.clone(),
        )))
    }

    /// Starts the Rust WebSocket server in this process around the open
    /// manager's node; resolves to a `RunningServer`. `config_file` is a
    /// `fanwire serve` TOML file whose `[server]` table applies (the other
    /// arguments override it); the bus, sources, plugins and limits are the
    /// manager's, and a file that sets them differently is refused.
    #[pyo3(signature = (host, port, publish_token=None, shutdown_timeout_ms=None, max_publish_bytes=None, config_file=None))]
    #[allow(clippy::too_many_arguments)]
    fn start_server<'py>(
        &self,
        py: Python<'py>,
        host: &str,
        port: u16,
        publish_token: Option<String>,
        shutdown_timeout_ms: Option<u64>,
        max_publish_bytes: Option<usize>,
        config_file: Option<std::path::PathBuf>,
    ) -> PyResult<Bound<'py, PyAny>> {
        let ip: std::net::IpAddr = host
            .parse()
            .or_else(|_| {
                if host == "localhost" {
                    Ok("127.0.0.1".parse().expect("literal"))
                } else {
                    Err(())
                }
            })
            .map_err(|_| {
                ConfigError::new_err(format!("host must be an IP address, got {host:?}"))
            })?;
        let mut config = self.server_config(config_file.as_deref())?;
        config.server.listen = std::net::SocketAddr::new(ip, port);
        // The schema comes from the manager, not a file.
        config.server.schema = None;
        if publish_token.is_some() {
            config.server.publish_token = publish_token;
        }
        if let Some(ms) = shutdown_timeout_ms {
            config.server.shutdown_timeout_ms = ms;
        }
        if let Some(bytes) = max_publish_bytes {
            config.server.max_publish_bytes = bytes;
        }
        let node = self.node().ok_or_else(|| {
            PyRuntimeError::new_err("the manager is not open: `await manager.open()` first")
        })?;
        crate::awaitable::future_into_py(py, crate::server::start(node, config))
    }

    /// The Prometheus text exposition of the engine's metrics (and the
    /// bus's, while open).
    fn metrics(&self) -> PyResult<String> {
        Ok(match self.node() {
            Some(node) => node.metrics(),
            None => self.engine()?.metrics().encode(),
        })
    }

    /// Live counts and resolver outcomes, as a dict of ints.
    fn stats(&self) -> PyResult<HashMap<&'static str, u64>> {
        let engine = self.engine()?;
        let (topics, groups, subscriptions) = engine.registry().counts();
        let s = &self.stats;
        Ok(HashMap::from([
            (
                "connections",
                engine.metrics().connections.get().max(0) as u64,
            ),
            ("topics", topics as u64),
            ("groups", groups as u64),
            ("subscriptions", subscriptions as u64),
            ("resolver_calls", s.calls.load(Ordering::Relaxed)),
            ("resolver_errors", s.raised.load(Ordering::Relaxed)),
            ("resolver_bad_returns", s.bad_return.load(Ordering::Relaxed)),
            ("resolver_timeouts", s.timeouts.load(Ordering::Relaxed)),
            (
                "resolver_cancellations",
                s.cancelled.load(Ordering::Relaxed),
            ),
        ]))
    }
}
