//! Python functions as the core's `Resolver`: called once per group per
//! event, with the GIL held only while Python runs.
//!
//! A plain function runs where the event is dispatched and its result is
//! used at once. A coroutine runs as a task on the application's event loop
//! (`Pending`): directly when the dispatch happens on that loop's thread,
//! through `call_soon_threadsafe` otherwise. The core awaits the task's
//! result in event order; when the group empties the core drops that
//! future, which cancels the task.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, RwLock};
use std::time::{Duration, Instant};

use fanwire_core::error::{codes, GraphQLError};
use fanwire_core::hooks::{GroupInfo, Resolution, Resolver};
use fanwire_core::Event;
use pyo3::prelude::*;
use pyo3::sync::PyOnceLock;
use pyo3::types::{PyDict, PyString};
use serde_json::Value;
use tokio::sync::oneshot;

use crate::context::Context;
use crate::convert::{from_py, map_to_py, to_py, type_name};
use crate::executor::Executor;

/// The event loop that async resolvers run on: the one the application
/// last served or published from.
#[derive(Debug, Default)]
pub struct LoopSlot(RwLock<Option<Py<PyAny>>>);

impl LoopSlot {
    /// Records `event_loop` unless it is already the one in place.
    pub fn set(&self, py: Python<'_>, event_loop: &Bound<'_, PyAny>) {
        let mut slot = self.0.write().unwrap_or_else(|p| p.into_inner());
        if slot.as_ref().is_some_and(|l| l.bind(py).is(event_loop)) {
            return;
        }
        *slot = Some(event_loop.clone().unbind());
    }

    /// Whether `event_loop` is the loop in place.
    pub fn is(&self, py: Python<'_>, event_loop: &Bound<'_, PyAny>) -> bool {
        let slot = self.0.read().unwrap_or_else(|p| p.into_inner());
        slot.as_ref().is_some_and(|l| l.bind(py).is(event_loop))
    }

    fn get(&self, py: Python<'_>) -> Option<Py<PyAny>> {
        let slot = self.0.read().unwrap_or_else(|p| p.into_inner());
        slot.as_ref().map(|l| l.clone_ref(py))
    }
}

/// How resolvers failed, for `SubscriptionManager.stats()`; every failure
/// also counts in the engine's `fanwire_drops_total{reason="resolver_error"}`.
#[derive(Debug, Default)]
pub struct ResolverStats {
    /// Calls made (one per group per event).
    pub calls: AtomicU64,
    /// Resolvers that raised.
    pub raised: AtomicU64,
    /// Resolvers that returned something other than a dict or None.
    pub bad_return: AtomicU64,
    /// Resolvers that ran past the timeout.
    pub timeouts: AtomicU64,
    /// Async resolvers cancelled because nobody was left to receive the result.
    pub cancelled: AtomicU64,
}

/// A user's resolver function for one subscription field.
#[derive(Debug)]
pub struct PyResolver {
    pub field: String,
    pub func: Py<PyAny>,
    pub timeout: Duration,
    pub event_loop: Arc<LoopSlot>,
    pub executor: Py<Executor>,
    pub stats: Arc<ResolverStats>,
}

impl Resolver for PyResolver {
    fn resolve(&self, event: &Event, data: &Value, group: &GroupInfo) -> Resolution {
        self.stats.calls.fetch_add(1, Ordering::Relaxed);
        if !crate::python_alive() {
            return Resolution::Ready(Err(failure(
                "The Python interpreter is shutting down",
                "shutdown",
            )));
        }
        Python::attach(|py| {
            let started = Instant::now();
            let returned = match self.call(py, event, data, group) {
                Ok(returned) => returned,
                Err(err) => return Resolution::Ready(Err(self.raised(py, &err))),
            };
            if returned.is_instance_of::<PyDict>() || returned.is_none() {
                if started.elapsed() > self.timeout {
                    return Resolution::Ready(Err(self.timed_out()));
                }
                return Resolution::Ready(self.result(py, &returned));
            }
            if returned.hasattr("__await__").unwrap_or(false) {
                return match self.start_eagerly(py, returned, started) {
                    Ok(resolution) => resolution,
                    Err(awaitable) => self.schedule(py, awaitable),
                };
            }
            Resolution::Ready(Err(self.bad_return(&returned)))
        })
    }
}

impl PyResolver {
    fn call<'py>(
        &self,
        py: Python<'py>,
        event: &Event,
        data: &Value,
        group: &GroupInfo,
    ) -> PyResult<Bound<'py, PyAny>> {
        let ev = PyDict::new(py);
        ev.set_item(intern(py, "topic"), PyString::new(py, &event.topic))?;
        ev.set_item(intern(py, "data"), to_py(py, data)?)?;
        ev.set_item(intern(py, "id"), event.id.as_deref())?;
        ev.set_item(intern(py, "seq"), event.seq)?;
        let variables = map_to_py(py, &group.variables)?;
        let context = Context::build(py, group, &variables)?;
        self.func.bind(py).call1((ev, variables, context))
    }

    /// Converts a dict (or None) result; anything else is a field error.
    fn result(&self, py: Python<'_>, returned: &Bound<'_, PyAny>) -> Result<Value, GraphQLError> {
        if !(returned.is_instance_of::<PyDict>() || returned.is_none()) {
            return Err(self.bad_return(returned));
        }
        from_py(returned).map_err(|e| {
            self.stats.bad_return.fetch_add(1, Ordering::Relaxed);
            let msg = e.value(py).to_string();
            failure(
                format!(
                    "Resolver for `{}` returned a value that is not JSON: {msg}",
                    self.field
                ),
                "bad_return",
            )
        })
    }

    fn bad_return(&self, returned: &Bound<'_, PyAny>) -> GraphQLError {
        self.stats.bad_return.fetch_add(1, Ordering::Relaxed);
        failure(
            format!(
                "Resolver for `{}` returned {}; expected a dict",
                self.field,
                type_name(returned)
            ),
            "bad_return",
        )
    }

    fn raised(&self, py: Python<'_>, err: &PyErr) -> GraphQLError {
        self.stats.raised.fetch_add(1, Ordering::Relaxed);
        raised_error(py, &self.field, err)
    }

    fn timed_out(&self) -> GraphQLError {
        self.stats.timeouts.fetch_add(1, Ordering::Relaxed);
        timeout_error(&self.field, self.timeout)
    }

    /// On the loop's own thread, runs a coroutine's first step inline: if it
    /// finishes, that is the result, with no task at all; if it suspends, a
    /// task carries on from where it stopped. Elsewhere (or for other
    /// awaitables) hands the awaitable back to be scheduled.
    fn start_eagerly<'py>(
        &self,
        py: Python<'py>,
        awaitable: Bound<'py, PyAny>,
        started: Instant,
    ) -> Result<Resolution, Bound<'py, PyAny>> {
        let Some(event_loop) = self.event_loop.get(py) else {
            return Err(awaitable);
        };
        if !on_loop_thread(py, event_loop.bind(py)) || !awaitable.hasattr("send").unwrap_or(false) {
            return Err(awaitable);
        }
        match awaitable.call_method1("send", (py.None(),)) {
            Ok(yielded) => {
                // Suspended: a task finishes it (the deadline counts from now).
                match resumed(py).and_then(|r| r.call1((&awaitable, yielded))) {
                    Ok(rest) => Err(rest),
                    Err(e) => {
                        let _ = awaitable.call_method0("close");
                        Ok(Resolution::Ready(Err(self.raised(py, &e))))
                    }
                }
            }
            Err(err) if err.is_instance_of::<pyo3::exceptions::PyStopIteration>(py) => {
                let value = err
                    .value(py)
                    .getattr("value")
                    .unwrap_or_else(|_| py.None().into_bound(py));
                if started.elapsed() > self.timeout {
                    return Ok(Resolution::Ready(Err(self.timed_out())));
                }
                if !(value.is_instance_of::<PyDict>() || value.is_none()) {
                    return Ok(Resolution::Ready(Err(self.bad_return(&value))));
                }
                Ok(Resolution::Ready(self.result(py, &value)))
            }
            Err(err) => Ok(Resolution::Ready(Err(self.raised(py, &err)))),
        }
    }

    /// Runs an awaitable as a task on the application's loop.
    fn schedule(&self, py: Python<'_>, awaitable: Bound<'_, PyAny>) -> Resolution {
        let Some(event_loop) = self.event_loop.get(py) else {
            // Closing the coroutine avoids a "never awaited" warning.
            let _ = awaitable.call_method0("close");
            self.stats.raised.fetch_add(1, Ordering::Relaxed);
            return Resolution::Ready(Err(failure(
                format!(
                    "Resolver for `{}` is async but no event loop is serving: publish with `await manager.publish(...)` or serve first",
                    self.field
                ),
                "no_event_loop",
            )));
        };
        let (tx, rx) = oneshot::channel();
        let pending = Pending {
            core: Arc::new(PendingCore {
                state: Mutex::new(PendingState {
                    awaitable: Some(awaitable.unbind()),
                    task: None,
                    tx: Some(tx),
                    timed_out: false,
                }),
                timeout: self.timeout,
                field: self.field.clone(),
                stats: self.stats.clone(),
            }),
            event_loop: event_loop.clone_ref(py),
            executor: self.executor.clone_ref(py),
        };
        let pending = match Py::new(py, pending) {
            Ok(p) => p,
            Err(e) => return Resolution::Ready(Err(self.raised(py, &e))),
        };
        let started = if on_loop_thread(py, event_loop.bind(py)) {
            Pending::start(pending.bind(py));
            Ok(())
        } else {
            pending
                .bind(py)
                .getattr("start")
                .and_then(|start| {
                    event_loop
                        .bind(py)
                        .call_method1("call_soon_threadsafe", (start,))
                })
                .map(drop)
        };
        if let Err(e) = started {
            return Resolution::Ready(Err(self.raised(py, &e)));
        }
        let guard = CancelOnDrop(Some(pending));
        Resolution::Pending(Box::pin(async move {
            // Moved in whole, so that dropping this future drops the guard.
            let mut guard = guard;
            let result = rx.await;
            guard.0 = None;
            result.unwrap_or_else(|_| {
                Err(failure("Resolver task ended without a result", "cancelled"))
            })
        }))
    }
}

/// Cancels the task when the core abandons the resolution (its group emptied).
struct CancelOnDrop(Option<Py<Pending>>);

impl Drop for CancelOnDrop {
    fn drop(&mut self) {
        let Some(pending) = self.0.take() else {
            return;
        };
        if !crate::python_alive() {
            // Nothing left to cancel, and attaching now could abort the process.
            std::mem::forget(pending);
            return;
        }
        Python::attach(|py| {
            let pending = pending.bind(py);
            pending
                .get()
                .core
                .stats
                .cancelled
                .fetch_add(1, Ordering::Relaxed);
            let event_loop = pending.get().event_loop.bind(py);
            if on_loop_thread(py, event_loop) {
                Pending::cancel(pending);
            } else if let Ok(cancel) = pending.getattr("cancel") {
                // A closed loop has nothing left to cancel.
                let _ = event_loop.call_method1("call_soon_threadsafe", (cancel,));
            }
        });
    }
}

/// One async resolution in flight: the awaitable, then its task. Called
/// with the task when it is done (it is its own done-callback).
#[pyclass(frozen, module = "fanwire._native")]
pub struct Pending {
    core: Arc<PendingCore>,
    event_loop: Py<PyAny>,
    executor: Py<Executor>,
}

/// The part of a resolution the timeout sweep holds on to. Plain Rust, and
/// without Python objects once the task is done: thousands of finished
/// resolutions waiting for their deadline to pass would otherwise be live
/// Python objects that every garbage collection walks.
pub struct PendingCore {
    // A std mutex: only ever taken on the event loop's thread, and released
    // before anything that could run other Python code that takes it.
    state: Mutex<PendingState>,
    timeout: Duration,
    field: String,
    stats: Arc<ResolverStats>,
}

struct PendingState {
    awaitable: Option<Py<PyAny>>,
    task: Option<Py<PyAny>>,
    tx: Option<oneshot::Sender<Result<Value, GraphQLError>>>,
    timed_out: bool,
}

impl PendingCore {
    fn lock(&self) -> std::sync::MutexGuard<'_, PendingState> {
        self.state.lock().unwrap_or_else(|p| p.into_inner())
    }

    fn send(&self, result: Result<Value, GraphQLError>) {
        if let Some(tx) = self.lock().tx.take() {
            let _ = tx.send(result);
        }
    }

    /// Whether the task is still running (for the timeout sweep).
    pub fn is_running(&self) -> bool {
        self.lock().task.is_some()
    }

    /// The deadline passed: cancel the task (its callback reports the timeout).
    pub fn time_out(&self, py: Python<'_>) -> PyResult<()> {
        let task = {
            let mut state = self.lock();
            state.timed_out = true;
            state.task.as_ref().map(|t| t.clone_ref(py))
        };
        if let Some(task) = task {
            task.bind(py).call_method0("cancel")?;
        }
        Ok(())
    }

    fn result(
        &self,
        py: Python<'_>,
        task: &Bound<'_, PyAny>,
    ) -> Option<Result<Value, GraphQLError>> {
        let value = match task.call_method0("result") {
            Ok(value) => value,
            Err(err) if err.is_instance_of::<pyo3::exceptions::asyncio::CancelledError>(py) => {
                if !self.lock().timed_out {
                    // Cancelled by us (nobody listens) or by the application.
                    return Some(Err(failure("Resolver was cancelled", "cancelled")));
                }
                self.stats.timeouts.fetch_add(1, Ordering::Relaxed);
                return Some(Err(timeout_error(&self.field, self.timeout)));
            }
            Err(err) => {
                self.stats.raised.fetch_add(1, Ordering::Relaxed);
                return Some(Err(raised_error(py, &self.field, &err)));
            }
        };
        if !(value.is_instance_of::<PyDict>() || value.is_none()) {
            self.stats.bad_return.fetch_add(1, Ordering::Relaxed);
            return Some(Err(failure(
                format!(
                    "Resolver for `{}` returned {}; expected a dict",
                    self.field,
                    type_name(&value)
                ),
                "bad_return",
            )));
        }
        Some(from_py(&value).map_err(|e| {
            self.stats.bad_return.fetch_add(1, Ordering::Relaxed);
            failure(
                format!(
                    "Resolver for `{}` returned a value that is not JSON: {}",
                    self.field,
                    e.value(py)
                ),
                "bad_return",
            )
        }))
    }
}

#[pymethods]
impl Pending {
    /// On the loop: wraps the awaitable in a task and arms the timeout.
    fn start(slf: &Bound<'_, Self>) {
        let py = slf.py();
        let pending = slf.get();
        let me = &*pending.core;
        let Some(awaitable) = me.lock().awaitable.take() else {
            return;
        };
        let event_loop = pending.event_loop.bind(py);
        let armed = (|| -> PyResult<Py<PyAny>> {
            // `create_task` takes coroutines; `ensure_future` any other awaitable.
            let task = match event_loop.call_method1("create_task", (awaitable.bind(py),)) {
                Ok(task) => task,
                Err(_) => ensure_future(py)?.call1((awaitable.bind(py),))?,
            };
            task.call_method1("add_done_callback", (slf,))?;
            Executor::watch(
                pending.executor.bind(py),
                event_loop,
                me.timeout,
                &pending.core,
            )?;
            Ok(task.unbind())
        })();
        match armed {
            Ok(task) => me.lock().task = Some(task),
            Err(e) => {
                let _ = awaitable.bind(py).call_method0("close");
                me.stats.raised.fetch_add(1, Ordering::Relaxed);
                me.send(Err(raised_error(py, &me.field, &e)));
            }
        }
    }

    /// The task's done-callback: its result, exception, or cancellation.
    fn __call__(slf: &Bound<'_, Self>, task: &Bound<'_, PyAny>) {
        let me = &slf.get().core;
        me.lock().task = None;
        if let Some(result) = me.result(slf.py(), task) {
            me.send(result);
        }
    }

    /// Nobody is left to receive the result: stop the work.
    fn cancel(slf: &Bound<'_, Self>) {
        let py = slf.py();
        let (awaitable, task) = {
            let mut state = slf.get().core.lock();
            state.tx = None;
            (state.awaitable.take(), state.task.take())
        };
        if let Some(awaitable) = awaitable {
            let _ = awaitable.bind(py).call_method0("close");
        }
        if let Some(task) = task {
            let _ = task.bind(py).call_method0("cancel");
        }
    }
}

/// A resolver failure as a field error with `extensions.reason`.
fn failure(message: impl Into<String>, reason: &str) -> GraphQLError {
    let mut error = GraphQLError::new(message, codes::RESOLVER_FAILED);
    error
        .extensions
        .insert("reason".into(), Value::String(reason.into()));
    error
}

fn timeout_error(field: &str, timeout: Duration) -> GraphQLError {
    failure(
        format!(
            "Resolver for `{field}` timed out after {} ms",
            timeout.as_millis()
        ),
        "timeout",
    )
}

/// Logs the exception with its traceback (logger `fanwire`) and describes it to the client.
fn raised_error(py: Python<'_>, field: &str, err: &PyErr) -> GraphQLError {
    let kind = err
        .get_type(py)
        .name()
        .map(|n| n.to_string())
        .unwrap_or_else(|_| "Exception".into());
    let message = err.value(py).to_string();
    if let Ok(logger) = logger(py) {
        let kwargs = PyDict::new(py);
        let _ = kwargs.set_item("exc_info", err.value(py));
        let _ = logger.call_method("error", ("resolver for %s raised", field), Some(&kwargs));
    }
    failure(
        format!("Resolver for `{field}` raised {kind}: {message}"),
        "exception",
    )
}

fn intern<'py>(py: Python<'py>, s: &'static str) -> &'py Bound<'py, PyString> {
    // `pyo3::intern!` needs a literal; these few keys are interned by hand.
    static TOPIC: PyOnceLock<Py<PyString>> = PyOnceLock::new();
    static DATA: PyOnceLock<Py<PyString>> = PyOnceLock::new();
    static ID: PyOnceLock<Py<PyString>> = PyOnceLock::new();
    static SEQ: PyOnceLock<Py<PyString>> = PyOnceLock::new();
    let cell = match s {
        "topic" => &TOPIC,
        "data" => &DATA,
        "id" => &ID,
        _ => &SEQ,
    };
    cell.get_or_init(py, || PyString::intern(py, s).unbind())
        .bind(py)
}

fn logger(py: Python<'_>) -> PyResult<&Bound<'_, PyAny>> {
    static LOGGER: PyOnceLock<Py<PyAny>> = PyOnceLock::new();
    LOGGER
        .get_or_try_init(py, || {
            Ok(py
                .import("logging")?
                .call_method1("getLogger", ("fanwire",))?
                .unbind())
        })
        .map(|l| l.bind(py))
}

/// `fanwire._eager.resumed`: a coroutine that finishes an eagerly started one.
fn resumed(py: Python<'_>) -> PyResult<&Bound<'_, PyAny>> {
    static RESUMED: PyOnceLock<Py<PyAny>> = PyOnceLock::new();
    RESUMED
        .get_or_try_init(py, || {
            Ok(py.import("fanwire._eager")?.getattr("resumed")?.unbind())
        })
        .map(|f| f.bind(py))
}

fn ensure_future(py: Python<'_>) -> PyResult<&Bound<'_, PyAny>> {
    static ENSURE: PyOnceLock<Py<PyAny>> = PyOnceLock::new();
    ENSURE
        .get_or_try_init(py, || {
            Ok(py.import("asyncio")?.getattr("ensure_future")?.unbind())
        })
        .map(|f| f.bind(py))
}

/// The loop running on this thread, or None.
fn running_loop_or_none(py: Python<'_>) -> PyResult<Bound<'_, PyAny>> {
    static RUNNING: PyOnceLock<Py<PyAny>> = PyOnceLock::new();
    RUNNING
        .get_or_try_init(py, || {
            Ok::<_, PyErr>(py.import("asyncio")?.getattr("_get_running_loop")?.unbind())
        })
        .and_then(|f| f.bind(py).call0())
}

/// The loop running on this thread; `RuntimeError` outside one.
pub fn running_loop(py: Python<'_>) -> PyResult<Bound<'_, PyAny>> {
    let running = running_loop_or_none(py)?;
    if running.is_none() {
        return Err(pyo3::exceptions::PyRuntimeError::new_err(
            "no running event loop",
        ));
    }
    Ok(running)
}

/// Whether this thread is running `event_loop` right now.
pub fn on_loop_thread(py: Python<'_>, event_loop: &Bound<'_, PyAny>) -> bool {
    running_loop_or_none(py).is_ok_and(|running| running.is(event_loop))
}
