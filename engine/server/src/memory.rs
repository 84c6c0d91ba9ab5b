//! Handing a burst's memory back to the system once the server is quiet.
//!
//! A burst (a large publish, clients that fall behind) grows buffers that
//! each connection frees once its writer is idle. glibc's malloc keeps what
//! is freed in its arenas (one per thread that allocated) for the next
//! allocation: after S1, 100 idle connections held 1.6 MB more than before
//! it with as much in use, 2 MB of the arenas free (`malloc_stats`), and
//! the server kept it. `malloc_trim(0)` returns the free pages of every
//! arena. It holds each arena's lock while it walks that arena's free
//! chunks, so it runs only at a quiet moment: once a second a task compares
//! the node's activity (events in, frames out, open connections) with the
//! second before, and trims after the first quiet second that follows any.
//! Nothing on the publish or write path pays for it.
//!
//! What it cannot give back is fixed, not per connection: pages that
//! glibc's per-thread caches (tcache) and each arena's slack keep, and the
//! code a burst paged in; ~1 MB on this machine, 10 KB per connection
//! after S1's 100 but nothing to speak of after 1,000 (benches/README.md,
//! "Memory after a burst").

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
type Activity = (u64, u64, i64);

fn activity(engine: &Engine) -> Activity {
    let metrics = engine.metrics();
    (
        metrics.events_in.get(),
        metrics.frames_out.get(),
        metrics.connections.get(),
    )
}

/// Tells, from one reading of the activity per check, when a busy spell
/// has just ended: the first quiet check after one that saw activity.
#[derive(Debug)]
struct SpellEnd {
    last: Activity,
    busy: bool,
}

impl SpellEnd {
    fn new(now: Activity) -> Self {
        SpellEnd {
            last: now,
            busy: false,
        }
    }

    /// Whether the node went quiet since the previous check, after work.
    fn check(&mut self, now: Activity) -> bool {
        if now != self.last {
            self.last = now;
            self.busy = true;
            false
        } else {
            std::mem::take(&mut self.busy)
        }
    }
}

/// Trims after every busy spell until shutdown; does nothing where the
/// allocator is not glibc's.
pub(crate) async fn trim_when_quiet(engine: Arc<Engine>, mut shutdown: watch::Receiver<bool>) {
    if !TRIMS {
        return;
    }
    let mut ticker = tokio::time::interval(CHECK_EVERY);
    ticker.set_missed_tick_behavior(MissedTickBehavior::Delay);
    let mut spell = SpellEnd::new(activity(&engine));
    loop {
        tokio::select! {
            _ = ticker.tick() => {}
            _ = crate::stopped(&mut shutdown) => return,
        }
        if spell.check(activity(&engine)) {
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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_spell_ends_at_the_first_quiet_check_after_work() {
        let mut spell = SpellEnd::new((0, 0, 0));
        assert!(
            !spell.check((0, 0, 0)),
            "quiet from the start: nothing to give back"
        );
        assert!(!spell.check((5, 0, 1)), "busy");
        assert!(!spell.check((5, 9, 1)), "still busy");
        assert!(spell.check((5, 9, 1)), "the first quiet check");
        assert!(!spell.check((5, 9, 1)), "once per spell");
        assert!(!spell.check((5, 9, 0)), "a connection closed");
        assert!(spell.check((5, 9, 0)));
    }
}
