//! Runs Rust futures on the application's asyncio loop, so that an async
//! resolver's result is projected and delivered on the loop that produced
//! it, and a Python-held socket's writer wakes without a thread hop.
//!
//! Wakers never need the GIL: they queue their task and, once per batch,
//! write a byte to a socket pair whose read end the loop watches
//! (`loop.add_reader`). The loop's callback polls every queued task with the
//! GIL released. Futures that complete with an asyncio future resolve it.

use std::collections::VecDeque;
use std::future::Future;
use std::io::{Read, Write};
use std::os::fd::AsRawFd;
use std::os::unix::net::UnixStream;
use std::pin::Pin;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex, MutexGuard, Weak};
use std::task::{Context, Poll, Wake, Waker};

use std::time::{Duration, Instant};

use pyo3::intern;
use pyo3::prelude::*;

use crate::resolver::PendingCore;

/// A unit of work; `Some(future)` is an asyncio future to resolve when done.
pub type Job = Pin<Box<dyn Future<Output = Option<Py<PyAny>>> + Send>>;

/// Tasks polled per loop callback before yielding to the loop again.
const BATCH: usize = 4096;

/// One future and whether it is already queued.
pub struct Task {
    // std mutexes throughout: held to poll or push, never across an await.
    job: Mutex<Option<Job>>,
    queued: AtomicBool,
    shared: Weak<Shared>,
}

impl Task {
    /// Drops the future (cancelling what it waits for).
    pub fn abandon(&self) {
        drop(lock(&self.job).take());
    }
}

impl Wake for Task {
    fn wake(self: Arc<Self>) {
        self.wake_by_ref();
    }

    fn wake_by_ref(self: &Arc<Self>) {
        if !self.queued.swap(true, Ordering::AcqRel) {
            if let Some(shared) = self.shared.upgrade() {
                shared.push(self.clone());
            }
        }
    }
}

/// The run queue and the wake-up socket pair.
pub struct Shared {
    queue: Mutex<VecDeque<Arc<Task>>>,
    signalled: AtomicBool,
    wake_tx: UnixStream,
    wake_rx: UnixStream,
    attached: AtomicBool,
}

impl Shared {
    fn push(&self, task: Arc<Task>) {
        lock(&self.queue).push_back(task);
        self.signal();
    }

    fn signal(&self) {
        if !self.signalled.swap(true, Ordering::AcqRel) {
            // A full socket buffer already holds a wake-up: nothing is lost.
            let _ = (&self.wake_tx).write(&[1]);
        }
    }
}

fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    // Every critical section here is a single push, take or poll; a panic
    // inside a poll drops that future and leaves the state consistent.
    m.lock().unwrap_or_else(|p| p.into_inner())
}

/// An executor bound to one asyncio loop at a time; it also times out
/// async resolvers.
#[pyclass(frozen, module = "fanwire._native")]
pub struct Executor {
    pub(crate) shared: Arc<Shared>,
    event_loop: Mutex<Option<Py<PyAny>>>,
    // Resolutions in start order, which is deadline order (one timeout for
    // all): one loop timer for the earliest instead of one per resolution.
    deadlines: Mutex<VecDeque<(Instant, Arc<PendingCore>)>>,
    sweep_armed: AtomicBool,
}

impl Executor {
    pub fn new() -> std::io::Result<Self> {
        let (wake_tx, wake_rx) = UnixStream::pair()?;
        wake_tx.set_nonblocking(true)?;
        wake_rx.set_nonblocking(true)?;
        Ok(Executor {
            shared: Arc::new(Shared {
                queue: Mutex::default(),
                signalled: AtomicBool::new(false),
                wake_tx,
                wake_rx,
                attached: AtomicBool::new(false),
            }),
            event_loop: Mutex::new(None),
            deadlines: Mutex::default(),
            sweep_armed: AtomicBool::new(false),
        })
    }

    /// Times `pending` out after `timeout` on `event_loop` (called on that loop).
    pub fn watch(
        slf: &Bound<'_, Self>,
        event_loop: &Bound<'_, PyAny>,
        timeout: Duration,
        pending: &Arc<PendingCore>,
    ) -> PyResult<()> {
        // Deadlines are `Instant`s and the timer takes a delay: no call into
        // the loop per resolution.
        let me = slf.get();
        lock(&me.deadlines).push_back((Instant::now() + timeout, pending.clone()));
        if !me.sweep_armed.swap(true, Ordering::AcqRel) {
            event_loop.call_method1(
                intern!(slf.py(), "call_later"),
                (
                    timeout.as_secs_f64(),
                    slf.getattr(intern!(slf.py(), "_sweep"))?,
                ),
            )?;
        }
        Ok(())
    }

    /// Watches the wake-up socket from `event_loop` (and no longer from the previous one).
    pub fn attach(slf: &Bound<'_, Self>, event_loop: &Bound<'_, PyAny>) -> PyResult<()> {
        let me = slf.get();
        let mut current = lock(&me.event_loop);
        if current
            .as_ref()
            .is_some_and(|l| l.bind(slf.py()).is(event_loop))
        {
            return Ok(());
        }
        let fd = me.shared.wake_rx.as_raw_fd();
        if let Some(old) = current.take() {
            let old = old.bind(slf.py());
            if !old.call_method0("is_closed")?.is_truthy()? {
                old.call_method1("remove_reader", (fd,))?;
            }
        }
        event_loop.call_method1("add_reader", (fd, slf.getattr("_run")?))?;
        *current = Some(event_loop.clone().unbind());
        me.shared.attached.store(true, Ordering::Release);
        // Work queued before the loop was known runs now.
        me.shared.signalled.store(false, Ordering::Release);
        me.shared.signal();
        Ok(())
    }
}

/// A handle for spawning onto the executor from any thread.
#[derive(Clone)]
pub struct Spawn(pub Arc<Shared>);

impl Spawn {
    /// Whether a loop is watching (else the caller runs the work elsewhere).
    pub fn attached(&self) -> bool {
        self.0.attached.load(Ordering::Acquire)
    }

    /// Queues `job` to be polled on the loop.
    pub fn spawn(&self, job: Job) -> Arc<Task> {
        let task = Arc::new(Task {
            job: Mutex::new(Some(job)),
            queued: AtomicBool::new(true),
            shared: Arc::downgrade(&self.0),
        });
        self.0.push(task.clone());
        task
    }

    /// Polls `job` once now (on the caller's thread); if it is not done, it
    /// is parked until its waker queues it. Returns its output if done.
    pub fn run_now(&self, mut job: Job) -> (Option<Option<Py<PyAny>>>, Arc<Task>) {
        let task = Arc::new(Task {
            job: Mutex::new(None),
            queued: AtomicBool::new(false),
            shared: Arc::downgrade(&self.0),
        });
        let waker = Waker::from(task.clone());
        let mut cx = Context::from_waker(&waker);
        match job.as_mut().poll(&mut cx) {
            Poll::Ready(out) => (Some(out), task),
            Poll::Pending => {
                *lock(&task.job) = Some(job);
                (None, task)
            }
        }
    }
}

#[pymethods]
impl Executor {
    /// The timer callback: times out what is due, re-arms for the next.
    fn _sweep(slf: &Bound<'_, Self>) -> PyResult<()> {
        let py = slf.py();
        let me = slf.get();
        let Some(event_loop) = lock(&me.event_loop).as_ref().map(|l| l.clone_ref(py)) else {
            me.sweep_armed.store(false, Ordering::Release);
            return Ok(());
        };
        let event_loop = event_loop.bind(py);
        let now = Instant::now();
        loop {
            let due = {
                let mut deadlines = lock(&me.deadlines);
                match deadlines.front() {
                    Some((at, _)) if *at <= now => deadlines.pop_front(),
                    Some((at, _)) => {
                        let delay = at.duration_since(now).as_secs_f64();
                        drop(deadlines);
                        event_loop.call_method1("call_later", (delay, slf.getattr("_sweep")?))?;
                        return Ok(());
                    }
                    None => {
                        me.sweep_armed.store(false, Ordering::Release);
                        return Ok(());
                    }
                }
            };
            if let Some((_, pending)) = due {
                if pending.is_running() {
                    pending.time_out(py)?;
                }
            }
        }
    }

    /// The loop's reader callback: polls every queued task.
    fn _run(&self, py: Python<'_>) -> PyResult<()> {
        let shared = self.shared.clone();
        // Drained before the flag is cleared, never after: a wake-up written
        // between the two would be read here while the flag stayed set, and
        // every later `signal` would skip its write (no task would run again).
        // A signal that sees the flag still set pushed its task first, and
        // the queue is read below.
        let mut sink = [0u8; 256];
        while matches!((&shared.wake_rx).read(&mut sink), Ok(n) if n > 0) {}
        shared.signalled.store(false, Ordering::Release);
        let done = py.detach(|| {
            let mut done = Vec::new();
            for _ in 0..BATCH {
                let Some(task) = lock(&shared.queue).pop_front() else {
                    return done;
                };
                task.queued.store(false, Ordering::Release);
                let waker = Waker::from(task.clone());
                let mut cx = Context::from_waker(&waker);
                let mut slot = lock(&task.job);
                if let Some(job) = slot.as_mut() {
                    if let Poll::Ready(out) = job.as_mut().poll(&mut cx) {
                        *slot = None;
                        done.extend(out);
                    }
                }
            }
            // More than a batch: come back after the loop has run its other callbacks.
            shared.signal();
            done
        });
        for future in done {
            let future = future.bind(py);
            if !future.call_method0("done")?.is_truthy()? {
                future.call_method1("set_result", (py.None(),))?;
            }
        }
        Ok(())
    }
}
