//! The Rust WebSocket server running inside the Python process.

use std::net::SocketAddr;
use std::sync::{Arc, Mutex};

use fanwire_server::{Config, Node, Server, StartError};
use pyo3::prelude::*;
use tokio::sync::oneshot;
use tokio::task::JoinHandle;

use crate::errors::{ConfigError, ServerError};

/// A running in-process server; stopping it closes every client with 1001.
#[pyclass(frozen, module = "fanwire._native")]
pub struct RunningServer {
    addr: SocketAddr,
    // std mutexes: each is taken once, to move the value out.
    stop: Mutex<Option<oneshot::Sender<()>>>,
    done: Mutex<Option<JoinHandle<()>>>,
}

/// A start error as the exception the caller handles: a configuration,
/// bus or plugin problem is a `ConfigError`, a port in use a `ServerError`.
pub fn start_error(e: StartError) -> PyErr {
    match e {
        StartError::Bind { .. } | StartError::SchemaFile { .. } => {
            ServerError::new_err(e.to_string())
        }
        other => ConfigError::new_err(other.to_string()),
    }
}

/// Binds and starts serving, around `node`, on the shared runtime.
pub async fn start(node: Arc<Node>, config: Config) -> PyResult<RunningServer> {
    let bound = Server::bind_node(node, config).await.map_err(start_error)?;
    let addr = bound
        .local_addr()
        .map_err(|e| ServerError::new_err(e.to_string()))?;
    let (stop, stopped) = oneshot::channel::<()>();
    let done = tokio::spawn(bound.run(async {
        let _ = stopped.await;
    }));
    Ok(RunningServer {
        addr,
        stop: Mutex::new(Some(stop)),
        done: Mutex::new(Some(done)),
    })
}

#[pymethods]
impl RunningServer {
    /// The bound host.
    #[getter]
    fn host(&self) -> String {
        self.addr.ip().to_string()
    }

    /// The bound port (useful after asking for port 0).
    #[getter]
    fn port(&self) -> u16 {
        self.addr.port()
    }

    /// Stops accepting, closes every client with 1001 and waits for them
    /// (up to the shutdown timeout). Idempotent.
    fn stop<'py>(&self, py: Python<'py>) -> PyResult<Bound<'py, PyAny>> {
        if let Some(stop) = self.stop.lock().unwrap_or_else(|p| p.into_inner()).take() {
            let _ = stop.send(());
        }
        let done = self.done.lock().unwrap_or_else(|p| p.into_inner()).take();
        crate::awaitable::future_into_py(py, async move {
            if let Some(done) = done {
                let _ = done.await;
            }
            Ok(())
        })
    }

    fn __repr__(&self) -> String {
        format!("RunningServer(http://{}/graphql)", self.addr)
    }
}

impl Drop for RunningServer {
    fn drop(&mut self) {
        if let Some(stop) = self.stop.lock().unwrap_or_else(|p| p.into_inner()).take() {
            let _ = stop.send(());
        }
    }
}
