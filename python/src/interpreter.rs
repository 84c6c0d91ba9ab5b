//! When threads the interpreter did not start (the tokio runtime's workers
//! and blocking pool) may call into Python, and the shutdown order that
//! keeps them from doing so once the interpreter is going away.
//!
//! Why: once `Py_FinalizeEx` has marked the runtime finalizing (right after
//! the `atexit` hooks), CPython 3.11 and 3.12 end any other thread that
//! takes the GIL with `pthread_exit`, a forced unwind. A runtime thread
//! that was attached and had released the GIL for a moment (a socket send
//! inside `call_soon_threadsafe`, the eval loop's switch interval) is
//! unwound from inside CPython through pyo3's attach guard, whose
//! `PyGILState_Release` then finds its thread state no longer current:
//! "Fatal Python error: PyGILState_Release: thread state must be current",
//! and the process dies (seen as SIGSEGV on Ctrl-C under uvicorn). Checking
//! a flag before attaching is not enough, since the thread may already be
//! attached when finalization begins.
//!
//! The order: every call into Python from a runtime thread goes through
//! [`attach`], which counts itself in. The `atexit` hook [`quiesce`] shuts
//! the door (later calls get `None`: resolvers and policies answer with an
//! error, resolutions and completions nobody can receive any more are
//! dropped) and then waits, with the GIL released, for the calls still
//! inside to leave, so none is attached when finalization begins. Python
//! objects still held by runtime tasks after that are dropped without the
//! GIL, which pyo3 defers (they are never freed; the process is exiting).

use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use pyo3::prelude::*;

/// Set by [`quiesce`]: no new call into Python from runtime threads.
static CLOSED: AtomicBool = AtomicBool::new(false);

/// Calls inside [`attach`] now, on any thread.
static INSIDE: AtomicUsize = AtomicUsize::new(0);

/// How long the `atexit` hook waits for calls still inside (a sync resolver
/// that never returns must not hang the exit); past it, finalization goes on.
const QUIESCE_BOUND: Duration = Duration::from_secs(5);

/// Runs `f` attached to the interpreter, or returns `None` once the
/// interpreter is shutting down. The only way runtime threads call into
/// Python.
pub fn attach<R>(f: impl for<'py> FnOnce(Python<'py>) -> R) -> Option<R> {
    // SeqCst on both sides (here and in `quiesce`): either this call sees
    // the door shut, or `quiesce` sees it inside and waits for it.
    INSIDE.fetch_add(1, Ordering::SeqCst);
    let _leave = Leave;
    if CLOSED.load(Ordering::SeqCst) {
        return None;
    }
    Python::try_attach(f)
}

struct Leave;

impl Drop for Leave {
    fn drop(&mut self) {
        INSIDE.fetch_sub(1, Ordering::SeqCst);
    }
}

/// The `atexit` hook: shuts the door, then waits (bounded, GIL released)
/// until no runtime thread is attached.
pub fn quiesce(py: Python<'_>) {
    CLOSED.store(true, Ordering::SeqCst);
    py.detach(|| {
        let deadline = Instant::now() + QUIESCE_BOUND;
        // A poll, not a condvar: this runs once per process, and the
        // calls it waits for are usually already gone.
        while INSIDE.load(Ordering::SeqCst) > 0 && Instant::now() < deadline {
            std::thread::sleep(Duration::from_millis(1));
        }
    });
}
