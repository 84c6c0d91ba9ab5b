//! Python functions as the core's `Resolver`: called once per group per
//! event, with the GIL held only while Python runs.
//!
//! A plain function runs where the event is dispatched and its result is
//! used at once. A coroutine runs in an asyncio task on the application's
//! event loop, whose coroutine is a `Pending` that steps the resolver's and
//! hands its outcome over from inside the task's step. When the dispatch
//! happens on that loop's thread the task's first step runs inline, with
//! the task current; otherwise the task is created through
//! `call_soon_threadsafe`. The core awaits the outcome in event order; when
//! the group empties the core drops that future, which cancels the task.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, RwLock};
use std::time::{Duration, Instant};

use fanwire_core::error::{codes, GraphQLError};
use fanwire_core::hooks::{GroupInfo, Resolution, Resolver};
use fanwire_core::Event;
use pyo3::exceptions::{PyException, PyStopIteration};
use pyo3::prelude::*;
use pyo3::sync::PyOnceLock;
use pyo3::types::{PyDict, PyString};
use pyo3::{ffi, intern};
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
        let resolved = crate::interpreter::attach(|py| {
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
            if returned.hasattr(intern!(py, "__await__")).unwrap_or(false) {
                return self.run_async(py, returned, started);
            }
            Resolution::Ready(Err(self.bad_return(&returned)))
        });
        resolved.unwrap_or_else(|| {
            Resolution::Ready(Err(failure(
                "The Python interpreter is shutting down",
                "shutdown",
            )))
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
        ev.set_item(key(py, "topic"), PyString::new(py, &event.topic))?;
        ev.set_item(key(py, "data"), to_py(py, data)?)?;
        ev.set_item(key(py, "id"), event.id.as_deref())?;
        ev.set_item(key(py, "seq"), event.seq)?;
        let variables = map_to_py(py, &group.variables)?;
        let context = Context::build(py, group, &variables)?;
        self.func.bind(py).call1((ev, variables, context))
    }

    /// Converts a dict (or None) result; anything else is a field error.
    fn result(&self, py: Python<'_>, returned: &Bound<'_, PyAny>) -> Result<Value, GraphQLError> {
        value_of(py, &self.field, &self.stats, returned)
    }

    fn bad_return(&self, returned: &Bound<'_, PyAny>) -> GraphQLError {
        bad_return_error(&self.field, &self.stats, returned)
    }

    fn raised(&self, py: Python<'_>, err: &PyErr) -> GraphQLError {
        self.stats.raised.fetch_add(1, Ordering::Relaxed);
        raised_error(py, &self.field, err)
    }

    fn timed_out(&self) -> GraphQLError {
        self.stats.timeouts.fetch_add(1, Ordering::Relaxed);
        timeout_error(&self.field, self.timeout)
    }

    /// Runs a coroutine (any other awaitable through one that awaits it)
    /// as a task on the application's loop. On the loop's own thread the
    /// task's first step runs inline, with the task current (as with
    /// Python 3.12's eager tasks): a resolver that finishes without
    /// suspending is delivered at once. Elsewhere the task is created on
    /// the loop through `call_soon_threadsafe`.
    fn run_async(
        &self,
        py: Python<'_>,
        awaitable: Bound<'_, PyAny>,
        started: Instant,
    ) -> Resolution {
        let Some(event_loop) = self.event_loop.get(py) else {
            // Closing the coroutine avoids a "never awaited" warning.
            let _ = awaitable.call_method0(intern!(py, "close"));
            self.stats.raised.fetch_add(1, Ordering::Relaxed);
            return Resolution::Ready(Err(failure(
                format!(
                    "Resolver for `{}` is async but no event loop is serving: publish with `await manager.publish(...)` or serve first",
                    self.field
                ),
                "no_event_loop",
            )));
        };
        let coro = if awaitable.hasattr(intern!(py, "send")).unwrap_or(false) {
            awaitable
        } else {
            match awaiting(py).and_then(|f| f.call1((awaitable,))) {
                Ok(coro) => coro,
                Err(e) => return Resolution::Ready(Err(self.raised(py, &e))),
            }
        };
        let (tx, mut rx) = oneshot::channel();
        let pending = Pending {
            core: Arc::new(PendingCore {
                state: Mutex::new(PendingState {
                    task: None,
                    tx: Some(tx),
                    timed_out: false,
                }),
                timeout: self.timeout,
                field: self.field.clone(),
                stats: self.stats.clone(),
            }),
            coro: coro.clone().unbind(),
            next: Mutex::new(Next::Step),
            event_loop: event_loop.clone_ref(py),
            executor: self.executor.clone_ref(py),
        };
        let pending = match Py::new(py, pending) {
            Ok(p) => p,
            Err(e) => {
                let _ = coro.call_method0(intern!(py, "close"));
                return Resolution::Ready(Err(self.raised(py, &e)));
            }
        };
        let event_loop = event_loop.bind(py);
        let started_task = if on_loop_thread(py, event_loop) {
            Pending::start_eagerly(pending.bind(py))
        } else {
            pending
                .bind(py)
                .getattr(intern!(py, "start"))
                .and_then(|start| {
                    event_loop.call_method1(intern!(py, "call_soon_threadsafe"), (start,))
                })
                .map(|_| false)
        };
        match started_task {
            Ok(true) => {
                // Finished in its first step: the outcome is already there.
                let result = rx.try_recv().unwrap_or_else(|_| {
                    Err(failure("Resolver task ended without a result", "cancelled"))
                });
                if started.elapsed() > self.timeout {
                    return Resolution::Ready(Err(self.timed_out()));
                }
                return Resolution::Ready(result);
            }
            Ok(false) => {}
            Err(e) => {
                Pending::abandon(pending.bind(py));
                return Resolution::Ready(Err(self.raised(py, &e)));
            }
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
        // Once the interpreter is shutting down there is nothing left to
        // cancel: `pending` is dropped unattached (pyo3 defers that).
        crate::interpreter::attach(|py| {
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

/// One async resolution in flight. It is the coroutine its asyncio task
/// runs: it steps the resolver's coroutine and, when that returns or
/// raises, hands the outcome to the engine there and then, so a resolution
/// costs one task and no done-callback.
#[pyclass(frozen, module = "fanwire._native")]
pub struct Pending {
    core: Arc<PendingCore>,
    coro: Py<PyAny>,
    next: Mutex<Next>,
    event_loop: Py<PyAny>,
    executor: Py<Executor>,
}

/// What the task's next step does with the resolver's coroutine.
enum Next {
    /// Sends into it (its first step, or the one after a bare `yield`).
    Step,
    /// Hands the task the future that the inline first step suspended on.
    Wait(Py<PyAny>),
    /// The inline first step finished it: the task just ends.
    Done,
}

/// The part of a resolution the timeout sweep holds on to. Plain Rust, and
/// without Python objects once the task is done: thousands of finished
/// resolutions waiting for their deadline to pass would otherwise be live
/// Python objects that every garbage collection walks.
pub struct PendingCore {
    // A std mutex: never held while Python code runs.
    state: Mutex<PendingState>,
    timeout: Duration,
    field: String,
    stats: Arc<ResolverStats>,
}

struct PendingState {
    task: Option<Py<PyAny>>,
    tx: Option<oneshot::Sender<Result<Value, GraphQLError>>>,
    timed_out: bool,
}

impl PendingCore {
    fn lock(&self) -> std::sync::MutexGuard<'_, PendingState> {
        self.state.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Delivers the outcome (if anyone still listens) and lets go of the task.
    fn send(&self, result: Result<Value, GraphQLError>) {
        let (tx, task) = {
            let mut state = self.lock();
            (state.tx.take(), state.task.take())
        };
        if let Some(tx) = tx {
            let _ = tx.send(result);
        }
        // Dropped outside the lock: it may be the last reference.
        drop(task);
    }

    /// Whether the task is still running (for the timeout sweep).
    pub fn is_running(&self) -> bool {
        self.lock().task.is_some()
    }

    /// The deadline passed: cancel the task (it reports the timeout).
    pub fn time_out(&self, py: Python<'_>) -> PyResult<()> {
        let task = {
            let mut state = self.lock();
            state.timed_out = true;
            state.task.as_ref().map(|t| t.clone_ref(py))
        };
        if let Some(task) = task {
            task.bind(py).call_method0(intern!(py, "cancel"))?;
        }
        Ok(())
    }

    /// What one step of the resolver's coroutine means for the task
    /// stepping this resolution: a yield passes through; a return or an
    /// exception is the outcome, delivered now.
    fn step(&self, py: Python<'_>, sent: Sent<'_>) -> PyResult<Py<PyAny>> {
        let err = match sent {
            Sent::Yielded(yielded) => return Ok(yielded.unbind()),
            Sent::Returned(value) => {
                self.send(value_of(py, &self.field, &self.stats, &value));
                return Err(PyStopIteration::new_err(()));
            }
            Sent::Raised(err) => err,
        };
        if err.is_instance_of::<pyo3::exceptions::asyncio::CancelledError>(py) {
            if self.lock().timed_out {
                self.stats.timeouts.fetch_add(1, Ordering::Relaxed);
                self.send(Err(timeout_error(&self.field, self.timeout)));
            } else {
                // Cancelled by us (nobody listens) or by the application.
                self.send(Err(failure("Resolver was cancelled", "cancelled")));
            }
            // The task ends cancelled, as asyncio expects.
            return Err(err);
        }
        self.stats.raised.fetch_add(1, Ordering::Relaxed);
        self.send(Err(raised_error(py, &self.field, &err)));
        if err.is_instance_of::<PyException>(py) {
            // Reported; the task ends normally (nothing left to retrieve).
            Err(PyStopIteration::new_err(()))
        } else {
            // KeyboardInterrupt, SystemExit: asyncio propagates those.
            Err(err)
        }
    }
}

impl Pending {
    /// Creates the task and runs its first step here and now, with the task
    /// current and in the task's context, so that what the resolver enters
    /// before suspending (`asyncio.timeout`, a TaskGroup, an anyio scope,
    /// context variables) belongs to the task it finishes in. True when
    /// that step finished the resolver (its outcome is sent already).
    fn start_eagerly(slf: &Bound<'_, Self>) -> PyResult<bool> {
        let py = slf.py();
        let me = slf.get();
        let event_loop = me.event_loop.bind(py);
        let context = asyncio_attr(py, &COPY_CONTEXT, "contextvars", "copy_context")?.call0()?;
        let kwargs = PyDict::new(py);
        kwargs.set_item(intern!(py, "context"), &context)?;
        let task = event_loop.call_method(intern!(py, "create_task"), (slf,), Some(&kwargs))?;
        let stepped = {
            let _current = CurrentTask::enter(event_loop, &task)?;
            context.call_method1(
                intern!(py, "run"),
                (slf.getattr(intern!(py, "send"))?, py.None()),
            )
        };
        match stepped {
            Ok(yielded) => {
                if !yielded.is_none() {
                    // The task waits on it when its first step comes.
                    *lock(&me.next) = Next::Wait(yielded.unbind());
                }
                me.core.lock().task = Some(task.unbind());
                if let Err(e) =
                    Executor::watch(me.executor.bind(py), event_loop, me.core.timeout, &me.core)
                {
                    Pending::cancel(slf);
                    return Err(e);
                }
                Ok(false)
            }
            // Returned or raised: `send` delivered the outcome; the task's
            // own step will find nothing left to do.
            Err(_) => {
                *lock(&me.next) = Next::Done;
                Ok(true)
            }
        }
    }

    /// Never runs the coroutine (any further): closes it, and the task (if
    /// any) ends at its next step.
    fn abandon(slf: &Bound<'_, Self>) {
        let me = slf.get();
        *lock(&me.next) = Next::Done;
        me.core.lock().tx = None;
        let _ = me
            .coro
            .bind(slf.py())
            .call_method0(intern!(slf.py(), "close"));
    }
}

/// Makes a task the loop's current one while a step of it runs outside
/// the loop's own scheduling, then restores the one that was current.
struct CurrentTask<'a, 'py> {
    event_loop: &'a Bound<'py, PyAny>,
    task: &'a Bound<'py, PyAny>,
    previous: Option<Bound<'py, PyAny>>,
}

impl<'a, 'py> CurrentTask<'a, 'py> {
    fn enter(event_loop: &'a Bound<'py, PyAny>, task: &'a Bound<'py, PyAny>) -> PyResult<Self> {
        let py = event_loop.py();
        let previous =
            asyncio_attr(py, &CURRENT_TASK, "asyncio", "current_task")?.call1((event_loop,))?;
        let previous = (!previous.is_none()).then_some(previous);
        let leave = asyncio_attr(py, &LEAVE_TASK, "asyncio.tasks", "_leave_task")?;
        let enter = asyncio_attr(py, &ENTER_TASK, "asyncio.tasks", "_enter_task")?;
        if let Some(previous) = &previous {
            leave.call1((event_loop, previous))?;
        }
        if let Err(e) = enter.call1((event_loop, task)) {
            if let Some(previous) = &previous {
                let _ = enter.call1((event_loop, previous));
            }
            return Err(e);
        }
        Ok(CurrentTask {
            event_loop,
            task,
            previous,
        })
    }
}

impl Drop for CurrentTask<'_, '_> {
    fn drop(&mut self) {
        let py = self.event_loop.py();
        // Both were looked up in `enter`; a failure here would mean asyncio
        // itself is broken, and there is nothing better to do than go on.
        if let Ok(leave) = asyncio_attr(py, &LEAVE_TASK, "asyncio.tasks", "_leave_task") {
            let _ = leave.call1((self.event_loop, self.task));
        }
        if let (Some(previous), Ok(enter)) = (
            &self.previous,
            asyncio_attr(py, &ENTER_TASK, "asyncio.tasks", "_enter_task"),
        ) {
            let _ = enter.call1((self.event_loop, previous));
        }
    }
}

static COPY_CONTEXT: PyOnceLock<Py<PyAny>> = PyOnceLock::new();
static CURRENT_TASK: PyOnceLock<Py<PyAny>> = PyOnceLock::new();
static ENTER_TASK: PyOnceLock<Py<PyAny>> = PyOnceLock::new();
static LEAVE_TASK: PyOnceLock<Py<PyAny>> = PyOnceLock::new();

/// `module.name`, looked up once.
fn asyncio_attr<'py>(
    py: Python<'py>,
    cell: &'static PyOnceLock<Py<PyAny>>,
    module: &str,
    name: &str,
) -> PyResult<&'py Bound<'py, PyAny>> {
    cell.get_or_try_init(py, || {
        Ok::<_, PyErr>(py.import(module)?.getattr(name)?.unbind())
    })
    .map(|f| f.bind(py))
}

#[pymethods]
impl Pending {
    /// On the loop, for events dispatched elsewhere: arms the timeout and
    /// starts the task.
    fn start(slf: &Bound<'_, Self>) {
        let py = slf.py();
        let me = slf.get();
        let core = &me.core;
        if core.lock().tx.is_none() {
            // Abandoned before it started.
            Pending::abandon(slf);
            return;
        }
        let event_loop = me.event_loop.bind(py);
        let armed = Executor::watch(me.executor.bind(py), event_loop, core.timeout, core)
            .and_then(|()| event_loop.call_method1(intern!(py, "create_task"), (slf,)));
        match armed {
            Ok(task) => core.lock().task = Some(task.unbind()),
            Err(e) => {
                Pending::abandon(slf);
                core.stats.raised.fetch_add(1, Ordering::Relaxed);
                core.send(Err(raised_error(py, &core.field, &e)));
            }
        }
    }

    /// Nobody is left to receive the result: stop the work.    /// Nobody is left to receive the result: stop the work.
    fn cancel(slf: &Bound<'_, Self>) {
        let task = {
            let mut state = slf.get().core.lock();
            state.tx = None;
            state.task.take()
        };
        if let Some(task) = task {
            let _ = task
                .bind(slf.py())
                .call_method0(intern!(slf.py(), "cancel"));
        }
    }

    /// Coroutine protocol: the task's step.
    fn send(slf: &Bound<'_, Self>, value: &Bound<'_, PyAny>) -> PyResult<Py<PyAny>> {
        let py = slf.py();
        let me = slf.get();
        let next = std::mem::replace(&mut *lock(&me.next), Next::Step);
        match next {
            Next::Step => me.core.step(py, send_into(me.coro.bind(py), value)),
            Next::Wait(future) => Ok(future),
            Next::Done => {
                *lock(&me.next) = Next::Done;
                Err(PyStopIteration::new_err(()))
            }
        }
    }
    fn __next__(slf: &Bound<'_, Self>) -> PyResult<Py<PyAny>> {
        Self::send(slf, &slf.py().None().into_bound(slf.py()))
    }

    /// Coroutine protocol: the task's cancellation (or any exception thrown in).
    #[pyo3(signature = (typ, val=None, tb=None))]
    fn throw(
        slf: &Bound<'_, Self>,
        typ: &Bound<'_, PyAny>,
        val: Option<&Bound<'_, PyAny>>,
        tb: Option<&Bound<'_, PyAny>>,
    ) -> PyResult<Py<PyAny>> {
        let py = slf.py();
        let me = slf.get();
        if matches!(
            std::mem::replace(&mut *lock(&me.next), Next::Step),
            Next::Done
        ) {
            *lock(&me.next) = Next::Done;
            return Err(PyErr::from_value(typ.clone()));
        }
        let coro = me.coro.bind(py);
        let thrown = match (val, tb) {
            (None, _) => coro.call_method1(intern!(py, "throw"), (typ,)),
            (Some(val), tb) => coro.call_method1(intern!(py, "throw"), (typ, val, tb)),
        };
        let sent = match thrown {
            Ok(yielded) => Sent::Yielded(yielded),
            Err(err) if err.is_instance_of::<PyStopIteration>(py) => Sent::Returned(
                err.value(py)
                    .getattr(intern!(py, "value"))
                    .unwrap_or_else(|_| py.None().into_bound(py)),
            ),
            Err(err) => Sent::Raised(err),
        };
        me.core.step(py, sent)
    }

    /// Coroutine protocol: closes the resolver's coroutine.
    fn close(&self, py: Python<'_>) -> PyResult<()> {
        self.coro
            .bind(py)
            .call_method0(intern!(py, "close"))
            .map(drop)
    }

    fn __await__(slf: Bound<'_, Self>) -> Bound<'_, Self> {
        slf
    }

    fn __iter__(slf: Bound<'_, Self>) -> Bound<'_, Self> {
        slf
    }
}

/// One step of a coroutine.
enum Sent<'py> {
    /// It suspended on this (`None` for a bare yield).
    Yielded(Bound<'py, PyAny>),
    /// It returned this.
    Returned(Bound<'py, PyAny>),
    /// It raised.
    Raised(PyErr),
}

/// Sends `value` into `coro`; a return comes back as a value, not as a
/// `StopIteration` to build and unpack.
fn send_into<'py>(coro: &Bound<'py, PyAny>, value: &Bound<'py, PyAny>) -> Sent<'py> {
    let py = coro.py();
    let mut out: *mut ffi::PyObject = std::ptr::null_mut();
    // SAFETY: both pointers are live objects while the GIL is held; `out`
    // receives a new reference when the call does not fail.
    let status = unsafe { ffi::PyIter_Send(coro.as_ptr(), value.as_ptr(), &mut out) };
    match status {
        // SAFETY: a new reference, see above.
        ffi::PySendResult::PYGEN_NEXT => Sent::Yielded(unsafe { Bound::from_owned_ptr(py, out) }),
        ffi::PySendResult::PYGEN_RETURN => {
            Sent::Returned(unsafe { Bound::from_owned_ptr(py, out) })
        }
        ffi::PySendResult::PYGEN_ERROR => Sent::Raised(PyErr::fetch(py)),
    }
}

fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|p| p.into_inner())
}

/// A returned dict (or None) as the field's value; anything else is a field error.
fn value_of(
    py: Python<'_>,
    field: &str,
    stats: &ResolverStats,
    returned: &Bound<'_, PyAny>,
) -> Result<Value, GraphQLError> {
    if !(returned.is_instance_of::<PyDict>() || returned.is_none()) {
        return Err(bad_return_error(field, stats, returned));
    }
    from_py(returned).map_err(|e| {
        stats.bad_return.fetch_add(1, Ordering::Relaxed);
        failure(
            format!(
                "Resolver for `{field}` returned a value that is not JSON: {}",
                e.value(py)
            ),
            "bad_return",
        )
    })
}

fn bad_return_error(
    field: &str,
    stats: &ResolverStats,
    returned: &Bound<'_, PyAny>,
) -> GraphQLError {
    stats.bad_return.fetch_add(1, Ordering::Relaxed);
    failure(
        format!(
            "Resolver for `{field}` returned {}; expected a dict",
            type_name(returned)
        ),
        "bad_return",
    )
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

fn key<'py>(py: Python<'py>, s: &'static str) -> &'py Bound<'py, PyString> {
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

/// `fanwire._eager.awaiting`: a coroutine awaiting an awaitable that is not one.
fn awaiting(py: Python<'_>) -> PyResult<&Bound<'_, PyAny>> {
    static AWAITING: PyOnceLock<Py<PyAny>> = PyOnceLock::new();
    AWAITING
        .get_or_try_init(py, || {
            Ok(py.import("fanwire._eager")?.getattr("awaiting")?.unbind())
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
