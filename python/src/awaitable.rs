//! The tokio runtime of the native module, and Rust futures on it as
//! asyncio futures. A future's outcome is handed to its loop through
//! [`interpreter::attach`], so a completion never attaches to an
//! interpreter that is shutting down (pyo3-async-runtimes' `future_into_py`,
//! used before, attached unconditionally from its blocking pool: see
//! `interpreter.rs` for why that crashed at exit).

use std::future::Future;
use std::panic::AssertUnwindSafe;
use std::sync::{Mutex, OnceLock};

use futures_util::FutureExt;
use pyo3::exceptions::PyRuntimeError;
use pyo3::prelude::*;
use pyo3::types::PyCFunction;
use pyo3::{intern, IntoPyObjectExt};

use crate::interpreter;
use crate::resolver::running_loop;

/// The tokio runtime every native future and task runs on, started on
/// first use and never shut down: its threads outlive the interpreter,
/// which is why they call into Python only through `interpreter::attach`.
pub fn runtime() -> &'static tokio::runtime::Runtime {
    static RUNTIME: OnceLock<tokio::runtime::Runtime> = OnceLock::new();
    RUNTIME.get_or_init(|| {
        tokio::runtime::Builder::new_multi_thread()
            .enable_all()
            .thread_name("fanwire-runtime")
            .build()
            .expect("the tokio runtime could not start (no threads or no epoll?)")
    })
}

/// An asyncio future of the running loop that `fut`'s outcome completes.
/// Once the asyncio future is done (cancelled, or completed), `fut` is
/// dropped if it is still running.
pub fn future_into_py<'py, F, T>(py: Python<'py>, fut: F) -> PyResult<Bound<'py, PyAny>>
where
    F: Future<Output = PyResult<T>> + Send + 'static,
    T: for<'a> IntoPyObject<'a> + Send + 'static,
{
    let event_loop = running_loop(py)?;
    let future = event_loop.call_method0(intern!(py, "create_future"))?;
    let (loop_ref, future_ref) = (event_loop.unbind(), future.clone().unbind());
    let task = runtime().spawn(async move {
        let outcome = AssertUnwindSafe(fut).catch_unwind().await;
        // On the blocking pool: a worker must not wait for the GIL.
        tokio::task::spawn_blocking(move || {
            interpreter::attach(|py| settle(py, loop_ref, future_ref, outcome));
        });
    });
    let abort = Mutex::new(Some(task.abort_handle()));
    let on_done = PyCFunction::new_closure(py, None, None, move |_args, _kwargs| {
        if let Some(abort) = abort.lock().unwrap_or_else(|p| p.into_inner()).take() {
            abort.abort();
        }
    })?;
    future.call_method1(intern!(py, "add_done_callback"), (on_done,))?;
    Ok(future)
}

/// Hands `outcome` to `future` on its loop (a closed loop has nobody left
/// to await it).
fn settle<T>(
    py: Python<'_>,
    event_loop: Py<PyAny>,
    future: Py<PyAny>,
    outcome: std::thread::Result<PyResult<T>>,
) where
    T: for<'a> IntoPyObject<'a>,
{
    let outcome = match outcome {
        Ok(result) => result.and_then(|value| value.into_py_any(py)),
        Err(panic) => {
            let message = panic
                .downcast_ref::<&str>()
                .copied()
                .or_else(|| panic.downcast_ref::<String>().map(String::as_str))
                .unwrap_or("a panic");
            Err(PyRuntimeError::new_err(format!(
                "fanwire's native module failed: {message}"
            )))
        }
    };
    let outcome = Mutex::new(Some(outcome));
    let set = PyCFunction::new_closure(py, None, None, move |args, _kwargs| -> PyResult<()> {
        let py = args.py();
        let Some(outcome) = outcome.lock().unwrap_or_else(|p| p.into_inner()).take() else {
            return Ok(());
        };
        let future = future.bind(py);
        // Cancelled meanwhile: nobody waits for the outcome.
        if future.call_method0(intern!(py, "done"))?.is_truthy()? {
            return Ok(());
        }
        match outcome {
            Ok(value) => future.call_method1(intern!(py, "set_result"), (value,))?,
            Err(err) => future.call_method1(intern!(py, "set_exception"), (err.into_value(py),))?,
        };
        Ok(())
    });
    if let Ok(set) = set {
        let _ = event_loop
            .bind(py)
            .call_method1(intern!(py, "call_soon_threadsafe"), (set,));
    }
}
