//! Handing a burst's memory back to the system once the server is quiet.
//!
//! A burst (a large publish, clients that fall behind) grows buffers that
//! each connection frees once its writer is idle. glibc's malloc keeps what
//! is freed in its arenas (one per thread that allocated) for the next
//! allocation: after S1, 100 idle connections held 1.6 MB more than before
//! it with as much in use, 2 MB of the arenas free (`malloc_stats`), and
//! the server kept it. `malloc_trim(0)` returns the free pages of every
//! arena.
//! It holds each arena's lock while it walks that arena's free chunks, so
//! it runs only at a quiet moment: once a second a task compares the
//! node's activity (events in, frames out, open connections) with the
//! second before, and trims after the first quiet second that follows any.
//! Nothing on the publish or write path pays for it.

use std::sync::Arc;
use std::time::{Duration, Instant};

use fanwire_core::Engine;
use tokio::sync::watch;
use tokio::time::MissedTickBehavior;

/// How often the node's activity is compared; a burst's memory goes back
/// between one and two of these after its last write.
const CHECK_EVERY: Duration = Duration::from_secs(1);

/// What changes while the node works: events accepted, frames written,
/// connections open.
fn activity(engine: &Engine) -> (u64, u64, i64) {
    let metrics = engine.metrics();
    (
        metrics.events_in.get(),
        metrics.frames_out.get(),
        metrics.connections.get(),
    )
}

/// Trims after every busy spell until shutdown; does nothing where the
/// allocator is not glibc's.
pub(crate) async fn trim_when_quiet(engine: Arc<Engine>, mut shutdown: watch::Receiver<bool>) {
    if !TRIMS {
        return;
    }
    let mut ticker = tokio::time::interval(CHECK_EVERY);
    ticker.set_missed_tick_behavior(MissedTickBehavior::Delay);
    let mut last = activity(&engine);
    let mut busy = false;
    loop {
        tokio::select! {
            _ = ticker.tick() => {}
            _ = crate::stopped(&mut shutdown) => return,
        }
        let now = activity(&engine);
        if now != last {
            last = now;
            busy = true;
        } else if busy {
            busy = false;
            let started = Instant::now();
            let released = trim();
            tracing::debug!(
                released,
                took_us = started.elapsed().as_micros() as u64,
                "malloc_trim after a busy spell"
            );
        }
    }
}

#[cfg(all(target_os = "linux", target_env = "gnu"))]
const TRIMS: bool = true;

#[cfg(not(all(target_os = "linux", target_env = "gnu")))]
const TRIMS: bool = false;

/// Returns the arenas' free pages to the system; whether any were.
#[cfg(all(target_os = "linux", target_env = "gnu"))]
fn trim() -> bool {
    // SAFETY: malloc_trim takes no pointers and only changes the
    // allocator's own state, under the allocator's locks.
    unsafe { libc::malloc_trim(0) == 1 }
}

#[cfg(not(all(target_os = "linux", target_env = "gnu")))]
fn trim() -> bool {
    false
}
