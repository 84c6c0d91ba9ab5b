//! One client connection for a Python-held socket: the core's `Connection`
//! (protocol state, subscriptions, outbox) with the socket left to the
//! framework. The adapter feeds it text frames and timer ticks and writes
//! what `drain` returns, exactly as the Rust server's `ws.rs` does.

use std::collections::VecDeque;
use std::sync::Arc;
use std::time::UNIX_EPOCH;

use fanwire_core::outbox::{Frame, Outbox};
use fanwire_core::protocol::{Close, CloseCode, NEXT_SUFFIX};
use fanwire_core::{Connection, Engine};
use pyo3::exceptions::PyRuntimeError;
use pyo3::prelude::*;
use pyo3::types::{PyBytes, PyList};

use crate::executor::{Spawn, Task};
use crate::resolver::{running_loop, LoopSlot};

/// The socket-free half of one client connection.
#[pyclass(module = "fanwire._native")]
pub struct NativeConnection {
    // `None` once disposed. Every call that can touch the subscription
    // registry runs with the GIL released: a dispatcher holding a registry
    // lock may be waiting for the GIL to run a resolver.
    conn: Option<Connection>,
    outbox: Arc<Outbox>,
    engine: Arc<Engine>,
    batch: VecDeque<Frame>,
    subprotocol: &'static str,
    spawn: Spawn,
    event_loop: Arc<LoopSlot>,
    // The outstanding `ready()` wait, dropped when replaced or disposed:
    // it holds the outbox, whose notifier holds its waker.
    waiting: Option<Arc<Task>>,
}

impl NativeConnection {
    pub fn new(
        conn: Connection,
        engine: Arc<Engine>,
        spawn: Spawn,
        event_loop: Arc<LoopSlot>,
    ) -> Self {
        NativeConnection {
            outbox: conn.outbox().clone(),
            subprotocol: conn.protocol().name(),
            conn: Some(conn),
            engine,
            batch: VecDeque::new(),
            spawn,
            event_loop,
            waiting: None,
        }
    }

    fn with<R: Send>(
        &mut self,
        py: Python<'_>,
        f: impl FnOnce(&mut Connection) -> R + Send,
    ) -> PyResult<R> {
        let conn = self
            .conn
            .as_mut()
            .ok_or_else(|| PyRuntimeError::new_err("the connection was disposed"))?;
        Ok(py.detach(|| f(conn)))
    }
}

/// A close decision: (code, reason).
type CloseTuple = (u16, String);

#[pymethods]
impl NativeConnection {
    /// The negotiated subprotocol (`graphql-transport-ws` or `graphql-ws`).
    #[getter]
    fn subprotocol(&self) -> &'static str {
        self.subprotocol
    }

    /// Seconds the client has to send `connection_init`.
    #[getter]
    fn init_timeout(&self) -> f64 {
        self.engine.limits().init_timeout_ms as f64 / 1000.0
    }

    /// Seconds between keep-alives.
    #[getter]
    fn keep_alive(&self) -> f64 {
        self.engine.limits().keep_alive_ms as f64 / 1000.0
    }

    /// Largest incoming message in bytes.
    #[getter]
    fn max_message_bytes(&self) -> usize {
        self.engine.limits().max_message_bytes
    }

    /// When the principal's credentials expire (Unix seconds), once known.
    #[getter]
    fn expires_at(&self) -> Option<f64> {
        let at = self.conn.as_ref()?.expires_at()?;
        Some(at.duration_since(UNIX_EPOCH).ok()?.as_secs_f64())
    }

    /// Whether the connection has been told to close.
    #[getter]
    fn is_closed(&self) -> bool {
        self.conn.as_ref().is_none_or(Connection::is_closed)
    }

    /// How many subscriptions are live.
    #[getter]
    fn subscription_count(&self) -> usize {
        self.conn.as_ref().map_or(0, Connection::subscription_count)
    }

    /// Handles one text frame from the client.
    fn on_text(&mut self, py: Python<'_>, text: &str) -> PyResult<()> {
        if text.len() > self.engine.limits().max_message_bytes {
            let reason = format!(
                "Message of {} bytes exceeds the limit of {}",
                text.len(),
                self.engine.limits().max_message_bytes
            );
            return self.with(py, |c| {
                c.close(Close::with_reason(CloseCode::MessageTooBig, reason))
            });
        }
        // Copied so the GIL can be released while the core works.
        let text = text.to_owned();
        self.with(py, move |c| c.on_text(&text))
    }

    /// Handles a binary frame (close 4400: the protocols are text-only).
    fn on_binary(&mut self, py: Python<'_>) -> PyResult<()> {
        self.with(py, Connection::on_binary)
    }

    /// The `connection_init` wait ran out (close 4408 unless initialised).
    fn on_init_timeout(&mut self, py: Python<'_>) -> PyResult<()> {
        self.with(py, Connection::on_init_timeout)
    }

    /// A keep-alive tick (the legacy protocol sends `ka`).
    fn on_keep_alive(&mut self, py: Python<'_>) -> PyResult<()> {
        self.with(py, Connection::on_keep_alive)
    }

    /// The principal's credentials expired (close 4403).
    fn on_expired(&mut self, py: Python<'_>) -> PyResult<()> {
        self.with(py, Connection::on_expired)
    }

    /// Closes from the server side; 1001 (going away) by default.
    #[pyo3(signature = (code=1001, reason=None))]
    fn close(&mut self, py: Python<'_>, code: u16, reason: Option<String>) -> PyResult<()> {
        let code = match code {
            1000 => CloseCode::Normal,
            1001 => CloseCode::GoingAway,
            4403 => CloseCode::Forbidden,
            4500 => CloseCode::InternalServerError,
            other => {
                return Err(pyo3::exceptions::PyValueError::new_err(format!(
                    "a server-side close uses 1000, 1001, 4403 or 4500, not {other}"
                )))
            }
        };
        let close = match reason {
            Some(r) => Close::with_reason(code, r),
            None => Close::new(code),
        };
        self.with(py, |c| c.close(close))
    }

    /// Every frame waiting to be sent, each a complete pre-serialised
    /// message (UTF-8 JSON, to send as a text frame), and the close to send
    /// after them, if the connection is closing.
    fn drain<'py>(
        &mut self,
        py: Python<'py>,
    ) -> PyResult<(Bound<'py, PyList>, Option<CloseTuple>)> {
        let out = PyList::empty(py);
        let mut close = None;
        let mut sent = 0u64;
        loop {
            self.outbox.drain_into(&mut self.batch);
            let mut revoked = Vec::new();
            while let Some(frame) = self.batch.pop_front() {
                match frame {
                    Frame::Next {
                        prefix, payload, ..
                    } => {
                        sent += 1;
                        let len = prefix.len() + payload.len() + NEXT_SUFFIX.len();
                        let bytes = PyBytes::new_with(py, len, |buf| {
                            buf[..prefix.len()].copy_from_slice(&prefix);
                            buf[prefix.len()..len - NEXT_SUFFIX.len()].copy_from_slice(&payload);
                            buf[len - NEXT_SUFFIX.len()..].copy_from_slice(NEXT_SUFFIX);
                            Ok(())
                        })?;
                        out.append(bytes)?;
                    }
                    Frame::Text(text) => out.append(PyBytes::new(py, text.as_bytes()))?,
                    Frame::Close(c) => {
                        close = Some((c.code.code(), c.reason));
                        self.batch.clear();
                        break;
                    }
                    Frame::Revoke { id, errors } => revoked.push((id, errors)),
                }
            }
            if revoked.is_empty() || close.is_some() {
                break;
            }
            // Revoking frees the ids and queues the error frames: drain again.
            self.with(py, move |c| {
                for (id, errors) in revoked {
                    c.revoke(&id, errors);
                }
            })?;
        }
        self.engine.metrics().frames_out.inc_by(sent);
        Ok((out, close))
    }

    /// Waits until something is queued (at once if something was queued
    /// since the last wait); then call `drain`.
    fn ready<'py>(&mut self, py: Python<'py>) -> PyResult<Bound<'py, PyAny>> {
        if let Some(previous) = self.waiting.take() {
            previous.abandon();
        }
        let outbox = self.outbox.clone();
        let running = running_loop(py)?;
        if !self.spawn.attached() || !self.event_loop.is(py, &running) {
            // Not the manager's loop: wait on the runtime instead (a thread hop).
            return crate::awaitable::future_into_py(py, async move {
                outbox.ready().await;
                Ok(())
            });
        }
        let future = running.call_method0("create_future")?;
        let resolve = future.clone().unbind();
        let (done, task) = self.spawn.run_now(Box::pin(async move {
            outbox.ready().await;
            Some(resolve)
        }));
        if done.is_some() {
            future.call_method1("set_result", (py.None(),))?;
        } else {
            self.waiting = Some(task);
        }
        Ok(future)
    }

    /// Ends the connection: its subscriptions leave the registry. Idempotent.
    fn dispose(&mut self, py: Python<'_>) {
        if let Some(waiting) = self.waiting.take() {
            waiting.abandon();
        }
        if let Some(conn) = self.conn.take() {
            py.detach(move || drop(conn));
        }
    }
}

impl Drop for NativeConnection {
    fn drop(&mut self) {
        if let Some(waiting) = self.waiting.take() {
            waiting.abandon();
        }
        // Dropped by Python's GC with the GIL held: unsubscribing takes
        // registry locks, so it happens on a runtime thread instead.
        if let Some(conn) = self.conn.take() {
            crate::awaitable::runtime().spawn(async move { drop(conn) });
        }
    }
}
