//! The native side of `SubscriptionManager`: the schema and resolvers while
//! the application declares them, then the engine they are frozen into.

use std::collections::HashMap;
use std::sync::atomic::Ordering;
use std::sync::{Arc, Mutex};

use fanwire_core::hooks::{ConnectionPolicy, Hooks, Resolver, Spawner};
use fanwire_core::protocol::Protocol;
use fanwire_core::{Engine, Event, Schema};
use fanwire_server::Config;
use pyo3::exceptions::PyRuntimeError;
use pyo3::prelude::*;

use crate::config::SubscriptionConfig;
use crate::connection::NativeConnection;
use crate::convert::from_py;
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
}

impl Manager {
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
            State::Building { .. } => {}
        }
        let State::Building {
            schema,
            resolvers,
            policy,
        } = std::mem::replace(&mut *state, State::Failed)
        else {
            unreachable!("checked above")
        };
        let runtime = pyo3_async_runtimes::tokio::get_runtime();
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

    /// Publishes one event; returns how many frames were queued now (async
    /// resolvers deliver later).
    #[pyo3(signature = (topic, data, id=None))]
    fn publish(
        &self,
        py: Python<'_>,
        topic: String,
        data: &Bound<'_, PyAny>,
        id: Option<String>,
    ) -> PyResult<usize> {
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
        // Dispatch takes registry locks; resolvers take the GIL inside them.
        Ok(py.detach(|| engine.publish(&event)).deliveries)
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

    /// Starts the Rust WebSocket server in this process; resolves to a
    /// `RunningServer`. `config_file` is a `fanwire serve` TOML file whose
    /// `[server]`, `[bus]`, `[sources]`, `[[plugins]]`, `[plugin_runtime]`
    /// and `[auth]` tables apply (its `[limits]` do not: the manager's
    /// `SubscriptionConfig` does); the other arguments override it.
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
        let mut config = match &config_file {
            Some(path) => Config::load(path).map_err(|e| ConfigError::new_err(e.to_string()))?,
            None => Config::default(),
        };
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
        let engine = self.engine()?;
        pyo3_async_runtimes::tokio::future_into_py(py, crate::server::start(engine, config))
    }

    /// The Prometheus text exposition of the engine's metrics.
    fn metrics(&self) -> PyResult<String> {
        Ok(self.engine()?.metrics().encode())
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
