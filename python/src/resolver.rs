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
    pub stats: Arc<ResolverStats>,
}

impl Resolver for PyResolver {
    fn resolve(&self, event: &Event, data: &Value, group: &GroupInfo) -> Resolution {
        self.stats.calls.fetch_add(1, Ordering::Relaxed);
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
                return self.schedule(py, returned);
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
            state: Mutex::new(PendingState {
                awaitable: Some(awaitable.unbind()),
                task: None,
                timer: None,
                tx: Some(tx),
                timed_out: false,
            }),
            event_loop: event_loop.clone_ref(py),
            timeout: self.timeout,
            field: self.field.clone(),
            stats: self.stats.clone(),
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
        Python::attach(|py| {
            let pending = pending.bind(py);
            pending
                .get()
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

/// One async resolution in flight: the awaitable, then its task and timer.
#[pyclass(frozen, module = "fanwire._native")]
pub struct Pending {
    // A std mutex: only ever taken on the event loop's thread, and released
    // before anything that could run other Python code that takes it.
    state: Mutex<PendingState>,
    event_loop: Py<PyAny>,
    timeout: Duration,
    field: String,
    stats: Arc<ResolverStats>,
}

struct PendingState {
    awaitable: Option<Py<PyAny>>,
    task: Option<Py<PyAny>>,
    timer: Option<Py<PyAny>>,
    tx: Option<oneshot::Sender<Result<Value, GraphQLError>>>,
    timed_out: bool,
}

impl Pending {
    fn lock(&self) -> std::sync::MutexGuard<'_, PendingState> {
        self.state.lock().unwrap_or_else(|p| p.into_inner())
    }

    fn send(&self, result: Result<Value, GraphQLError>) {
        if let Some(tx) = self.lock().tx.take() {
            let _ = tx.send(result);
        }
    }
}

#[pymethods]
impl Pending {
    /// On the loop: wraps the awaitable in a task and arms the timeout.
    fn start(slf: &Bound<'_, Self>) {
        let py = slf.py();
        let me = slf.get();
        let Some(awaitable) = me.lock().awaitable.take() else {
            return;
        };
        let event_loop = me.event_loop.bind(py);
        let armed = (|| -> PyResult<(Py<PyAny>, Py<PyAny>)> {
            let task = ensure_future(py)?.call1((awaitable.bind(py),))?;
            task.call_method1("add_done_callback", (slf.getattr("_done")?,))?;
            let timer = event_loop.call_method1(
                "call_later",
                (me.timeout.as_secs_f64(), slf.getattr("_timeout")?),
            )?;
            Ok((task.unbind(), timer.unbind()))
        })();
        match armed {
            Ok((task, timer)) => {
                let mut state = me.lock();
                state.task = Some(task);
                state.timer = Some(timer);
            }
            Err(e) => {
                let _ = awaitable.bind(py).call_method0("close");
                me.stats.raised.fetch_add(1, Ordering::Relaxed);
                me.send(Err(raised_error(py, &me.field, &e)));
            }
        }
    }

    /// The task finished: its result, exception, or cancellation.
    fn _done(slf: &Bound<'_, Self>, task: &Bound<'_, PyAny>) -> PyResult<()> {
        let py = slf.py();
        let me = slf.get();
        let (timer, timed_out) = {
            let mut state = me.lock();
            (state.timer.take(), state.timed_out)
        };
        if let Some(timer) = timer {
            timer.bind(py).call_method0("cancel")?;
        }
        let result = if task.call_method0("cancelled")?.is_truthy()? {
            if !timed_out {
                // Cancelled by us (nobody listens) or by the application.
                me.send(Err(failure("Resolver was cancelled", "cancelled")));
                return Ok(());
            }
            me.stats.timeouts.fetch_add(1, Ordering::Relaxed);
            Err(timeout_error(&me.field, me.timeout))
        } else {
            let exc = task.call_method0("exception")?;
            if !exc.is_none() {
                me.stats.raised.fetch_add(1, Ordering::Relaxed);
                Err(raised_error(py, &me.field, &PyErr::from_value(exc)))
            } else {
                let value = task.call_method0("result")?;
                if value.is_instance_of::<PyDict>() || value.is_none() {
                    from_py(&value).map_err(|e| {
                        me.stats.bad_return.fetch_add(1, Ordering::Relaxed);
                        failure(
                            format!(
                                "Resolver for `{}` returned a value that is not JSON: {}",
                                me.field,
                                e.value(py)
                            ),
                            "bad_return",
                        )
                    })
                } else {
                    me.stats.bad_return.fetch_add(1, Ordering::Relaxed);
                    Err(failure(
                        format!(
                            "Resolver for `{}` returned {}; expected a dict",
                            me.field,
                            type_name(&value)
                        ),
                        "bad_return",
                    ))
                }
            }
        };
        me.send(result);
        Ok(())
    }

    /// The timeout fired: cancel the task (its `_done` reports the timeout).
    fn _timeout(slf: &Bound<'_, Self>) -> PyResult<()> {
        let py = slf.py();
        let task = {
            let mut state = slf.get().lock();
            state.timed_out = true;
            state.timer = None;
            state.task.as_ref().map(|t| t.clone_ref(py))
        };
        if let Some(task) = task {
            task.bind(py).call_method0("cancel")?;
        }
        Ok(())
    }

    /// Nobody is left to receive the result: stop the work.
    fn cancel(slf: &Bound<'_, Self>) {
        let py = slf.py();
        let (awaitable, task, timer) = {
            let mut state = slf.get().lock();
            state.tx = None;
            (
                state.awaitable.take(),
                state.task.take(),
                state.timer.take(),
            )
        };
        if let Some(awaitable) = awaitable {
            let _ = awaitable.bind(py).call_method0("close");
        }
        if let Some(timer) = timer {
            let _ = timer.bind(py).call_method0("cancel");
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

fn ensure_future(py: Python<'_>) -> PyResult<&Bound<'_, PyAny>> {
    static ENSURE: PyOnceLock<Py<PyAny>> = PyOnceLock::new();
    ENSURE
        .get_or_try_init(py, || {
            Ok(py.import("asyncio")?.getattr("ensure_future")?.unbind())
        })
        .map(|f| f.bind(py))
}

/// Whether this thread is running `event_loop` right now.
pub fn on_loop_thread(py: Python<'_>, event_loop: &Bound<'_, PyAny>) -> bool {
    static RUNNING: PyOnceLock<Py<PyAny>> = PyOnceLock::new();
    RUNNING
        .get_or_try_init(py, || {
            Ok::<_, PyErr>(py.import("asyncio")?.getattr("_get_running_loop")?.unbind())
        })
        .and_then(|f| f.bind(py).call0())
        .is_ok_and(|running| running.is(event_loop))
}
