//! The bounded per-connection queue of pre-serialised frames, and the
//! write-through that lets a result skip it when the socket is idle.

use std::collections::VecDeque;
use std::fmt;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};

use tokio::sync::Notify;

use crate::protocol::Close;

/// One frame waiting for the socket writer.
#[derive(Debug, Clone)]
pub enum Frame {
    /// A fanned-out result: the per-client prefix and the group's shared payload.
    Next {
        /// `{"id":…,"type":"next","payload":` for this subscription.
        prefix: Arc<[u8]>,
        /// The execution result, serialised once for the whole group.
        payload: Arc<[u8]>,
        /// The publish that queued it (the drop policy reads it; a writer
        /// ignores it).
        batch: Batch,
    },
    /// A control message (ack, pong, error, complete, ka), never dropped.
    Text(String),
    /// Close the socket after everything before it is sent.
    Close(Close),
    /// The server ends subscription `id` (a filter now denies it): the
    /// host hands this to `Connection::revoke`, which frees the id and
    /// sends the error.
    Revoke {
        /// The operation id.
        id: String,
        /// Why, as GraphQL errors.
        errors: Vec<crate::error::GraphQLError>,
    },
}

/// A socket that the dispatcher may write a result through to, skipping the
/// queue and the wake-up of the connection's writer. The host implements it
/// (the core performs no IO); it must never block.
pub trait WriteThrough: Send + Sync + fmt::Debug {
    /// Tries to put the result frame `prefix ++ payload ++ NEXT_SUFFIX` on
    /// the wire now.
    fn try_next(&self, prefix: &[u8], payload: &[u8]) -> Written;
}

/// What a [`WriteThrough`] socket did with a result.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Written {
    /// Written whole.
    Sent,
    /// Taken, but only partly written: the sink keeps the rest ahead of
    /// anything later, and the writer must be woken to finish it.
    Started,
    /// Not taken (the socket is backed up or has failed): queue it.
    Refused,
}

/// The results of one publish call (a lone event, a batch, a resume's
/// replay), as the outboxes see them: results pushed with the same batch
/// never push each other out of a queue (see [`Outbox`]).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct Batch(u64);

impl Batch {
    /// A batch no result has been pushed with yet: one per publish call.
    pub fn start() -> Batch {
        static NEXT: AtomicU64 = AtomicU64::new(1);
        Batch(NEXT.fetch_add(1, Ordering::Relaxed))
    }
}

/// The results of one batch queued last, back to back (control frames
/// between them do not count).
#[derive(Debug, Clone, Copy)]
struct Run {
    batch: Batch,
    len: usize,
}

#[derive(Debug, Default)]
struct State {
    frames: VecDeque<Frame>,
    results: usize,
    /// Exempt from drop-oldest: the newest results, all of one batch.
    run: Option<Run>,
    closed: bool,
    /// The writer holds frames it drained but has not finished writing;
    /// writing through now would overtake them.
    in_flight: bool,
    socket: Option<Arc<dyn WriteThrough>>,
}

/// A bounded queue between the dispatcher and one socket writer.
///
/// Slow-consumer policy: when `capacity` results are already waiting, the
/// oldest results are dropped to make room and the drops are reported to
/// the caller (who counts them), but never for a result of the same
/// [`Batch`] queued back to back with it: drop-oldest is for a client that
/// falls behind, not for a publish of more results than `capacity` that
/// merely arrives at once, before the writer runs. So a client that has
/// read what came before a batch receives all of it, and a queue holds at
/// most `max(capacity, results of one batch)` results: once another batch
/// pushes, what an earlier batch left waiting is trimmed back. Control
/// frames are never dropped; they are bounded by the client's own
/// requests. The dispatcher never waits here, so a stalled client cannot
/// delay anyone else.
///
/// Write-through: with a [`WriteThrough`] socket installed, a result pushed while
/// nothing is queued or in the writer's hands goes straight to the socket
/// from the pushing thread; only when the socket refuses it (backed up) is it
/// queued, so order is kept and the drop-oldest policy applies exactly
/// where a consumer is slow.
#[derive(Debug)]
pub struct Outbox {
    // A std mutex, not tokio's: it is held for a push or a swap, never across
    // an await, and is taken on the dispatch hot path.
    state: Mutex<State>,
    notify: Notify,
    capacity: usize,
}

/// What happened to a pushed result.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Pushed {
    /// Written through to the socket.
    Sent,
    /// Queued, after the oldest waiting results were dropped to make room.
    Queued {
        /// Older results dropped for it (0 when the queue had room).
        dropped: usize,
        /// Of those, results the same batch had queued: possible only when
        /// results of another publish came between them.
        own: usize,
    },
    /// The connection is closing; nothing was queued.
    Closed,
}

impl Outbox {
    /// An empty outbox holding at most `capacity` results.
    pub fn new(capacity: usize) -> Self {
        Outbox {
            state: Mutex::new(State::default()),
            notify: Notify::new(),
            capacity: capacity.max(1),
        }
    }

    fn lock(&self) -> MutexGuard<'_, State> {
        // A panic while holding this lock cannot leave the queue inconsistent
        // (every mutation is a single VecDeque call), so poisoning is ignored.
        self.state.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Lets results skip the queue through `socket` while it keeps up
    /// (`None` stops it: the writer is going away).
    pub fn set_write_through(&self, socket: Option<Arc<dyn WriteThrough>>) {
        self.lock().socket = socket;
    }

    /// Hands a result of `batch` to the socket: written through when
    /// `write_through` allows it and nothing waits before it, else queued,
    /// dropping the oldest results of other batches if the queue is full.
    /// The dispatcher decides `write_through` (see `Registry::dispatch`): a
    /// lone event while no other publish waits.
    pub fn push(
        &self,
        prefix: &Arc<[u8]>,
        payload: &Arc<[u8]>,
        batch: Batch,
        write_through: bool,
    ) -> Pushed {
        let mut guard = self.lock();
        let state = &mut *guard;
        if state.closed {
            return Pushed::Closed;
        }
        if write_through && state.frames.is_empty() && !state.in_flight {
            // Held under the lock: a concurrent push or drain must not slip
            // between this frame and the socket.
            if let Some(socket) = &state.socket {
                match socket.try_next(prefix, payload) {
                    Written::Sent => return Pushed::Sent,
                    Written::Started => {
                        drop(guard);
                        self.notify.notify_one();
                        return Pushed::Sent;
                    }
                    Written::Refused => {}
                }
            }
        }
        let run = match state.run {
            Some(run) if run.batch == batch => run,
            _ => Run { batch, len: 0 },
        };
        let (mut dropped, mut own) = (0, 0);
        // Results beyond the run are older than it and were waiting when
        // this batch (or its latest run) began: only they make room.
        while state.results >= self.capacity && state.results > run.len {
            let Some(pos) = state
                .frames
                .iter()
                .position(|f| matches!(f, Frame::Next { .. }))
            else {
                break;
            };
            if let Some(Frame::Next { batch: of, .. }) = state.frames.remove(pos) {
                state.results -= 1;
                dropped += 1;
                own += usize::from(of == batch);
            }
        }
        state.frames.push_back(Frame::Next {
            prefix: prefix.clone(),
            payload: payload.clone(),
            batch,
        });
        state.results += 1;
        state.run = Some(Run {
            len: run.len + 1,
            ..run
        });
        drop(guard);
        self.notify.notify_one();
        Pushed::Queued { dropped, own }
    }

    /// Queues a control frame; a `Close` seals the outbox.
    pub fn push_control(&self, frame: Frame) {
        let mut state = self.lock();
        if state.closed {
            return;
        }
        if matches!(frame, Frame::Close(_)) {
            state.closed = true;
        }
        state.frames.push_back(frame);
        drop(state);
        self.notify.notify_one();
    }

    /// Moves every waiting frame to the back of `into` (swapping buffers when
    /// `into` is empty, which keeps both allocations warm). Until a drain
    /// finds the queue empty, results do not write through: the writer is
    /// expected to finish what it took (including the rest of a write-through)
    /// before it drains again.
    pub fn drain_into(&self, into: &mut VecDeque<Frame>) {
        let mut state = self.lock();
        if into.is_empty() {
            std::mem::swap(&mut state.frames, into);
        } else {
            // A swap would hand the writer's unsent frames back to the queue.
            into.append(&mut state.frames);
        }
        state.results = 0;
        state.run = None;
        state.in_flight = !into.is_empty();
    }

    /// Frees the queue's allocation if nothing waits and a burst left it
    /// larger than a quiet connection needs, a few frames (called by an
    /// idle writer).
    pub fn shrink_if_idle(&self) {
        const KEEP: usize = 8;
        let mut state = self.lock();
        if state.frames.is_empty() && state.frames.capacity() > KEEP {
            state.frames = VecDeque::new();
        }
    }

    /// Waits until something is pushed (returns at once if a push happened
    /// since the last wait).
    pub async fn ready(&self) {
        self.notify.notified().await
    }

    /// Removes waiting results that carry `prefix` (a completed subscription).
    pub fn purge(&self, prefix: &Arc<[u8]>) {
        let mut guard = self.lock();
        let state = &mut *guard;
        let before = state.frames.len();
        state
            .frames
            .retain(|f| !matches!(f, Frame::Next { prefix: p, .. } if Arc::ptr_eq(p, prefix)));
        let removed = before - state.frames.len();
        state.results -= removed;
        // The run is the newest results of its batch, back to back: count
        // them again, since some may have gone.
        if let Some(run) = &mut state.run {
            run.len = state
                .frames
                .iter()
                .rev()
                .filter_map(|f| match f {
                    Frame::Next { batch, .. } => Some(*batch),
                    _ => None,
                })
                .take_while(|b| *b == run.batch)
                .count();
        }
    }

    /// How many frames are waiting.
    pub fn len(&self) -> usize {
        self.lock().frames.len()
    }

    /// Whether nothing is waiting.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn bytes(s: &str) -> Arc<[u8]> {
        Arc::from(s.as_bytes())
    }

    fn queued(dropped: usize, own: usize) -> Pushed {
        Pushed::Queued { dropped, own }
    }

    /// Pushes a result of a publish of its own (a lone event).
    fn lone(outbox: &Outbox, payload: &str) -> Pushed {
        outbox.push(&bytes("p"), &bytes(payload), Batch::start(), true)
    }

    #[test]
    fn full_queue_drops_oldest_result_but_keeps_control_frames() {
        let outbox = Outbox::new(2);
        outbox.push_control(Frame::Text("ack".into()));
        assert_eq!(lone(&outbox, "1"), queued(0, 0));
        assert_eq!(lone(&outbox, "2"), queued(0, 0));
        assert_eq!(lone(&outbox, "3"), queued(1, 0));
        let mut out = VecDeque::new();
        outbox.drain_into(&mut out);
        let got: Vec<String> = out
            .iter()
            .map(|f| match f {
                Frame::Text(t) => t.clone(),
                Frame::Next { payload, .. } => String::from_utf8(payload.to_vec()).unwrap(),
                Frame::Close(_) | Frame::Revoke { .. } => "close".into(),
            })
            .collect();
        assert_eq!(got, ["ack", "2", "3"]);
    }

    /// A socket that takes results until it is "full", recording what it got.
    #[derive(Debug, Default)]
    struct FakeSocket {
        room: Mutex<usize>,
        got: Mutex<Vec<String>>,
    }

    impl WriteThrough for FakeSocket {
        fn try_next(&self, _prefix: &[u8], payload: &[u8]) -> Written {
            let mut room = self.room.lock().unwrap();
            if *room == 0 {
                return Written::Refused;
            }
            *room -= 1;
            self.got
                .lock()
                .unwrap()
                .push(String::from_utf8(payload.to_vec()).unwrap());
            Written::Sent
        }
    }

    fn drained(outbox: &Outbox) -> Vec<String> {
        let mut out = VecDeque::new();
        outbox.drain_into(&mut out);
        out.iter()
            .map(|f| match f {
                Frame::Next { payload, .. } => String::from_utf8(payload.to_vec()).unwrap(),
                other => format!("{other:?}"),
            })
            .collect()
    }

    #[test]
    fn results_write_through_only_while_nothing_waits_ahead_of_them() {
        let outbox = Outbox::new(2);
        let socket = Arc::new(FakeSocket::default());
        *socket.room.lock().unwrap() = 1;
        outbox.set_write_through(Some(socket.clone()));
        assert_eq!(lone(&outbox, "1"), Pushed::Sent);
        // The socket is full: queued, and the queue's policy applies.
        assert_eq!(lone(&outbox, "2"), queued(0, 0));
        *socket.room.lock().unwrap() = 10;
        // Room again, but "2" waits: "3" must not overtake it.
        assert_eq!(lone(&outbox, "3"), queued(0, 0));
        assert_eq!(lone(&outbox, "4"), queued(1, 0));
        let mut writer = VecDeque::new();
        outbox.drain_into(&mut writer);
        // The writer holds "3" and "4" until its next drain comes back empty.
        assert_eq!(lone(&outbox, "5"), queued(0, 0));
        assert_eq!(drained(&outbox), ["5"]);
        assert!(drained(&outbox).is_empty());
        assert_eq!(lone(&outbox, "6"), Pushed::Sent);
        assert_eq!(*socket.got.lock().unwrap(), ["1", "6"]);
        // Control frames always queue; a result behind one queues too.
        outbox.push_control(Frame::Text("pong".into()));
        assert_eq!(lone(&outbox, "7"), queued(0, 0));
        assert_eq!(drained(&outbox).len(), 2);
        assert!(drained(&outbox).is_empty());
        // A fan-out that has handed its rest to the writers queues even
        // where the socket has room.
        assert_eq!(
            outbox.push(&bytes("p"), &bytes("8"), Batch::start(), false),
            queued(0, 0)
        );
        assert_eq!(drained(&outbox), ["8"]);
        assert!(drained(&outbox).is_empty());
        outbox.set_write_through(None);
        assert_eq!(lone(&outbox, "9"), queued(0, 0));
        assert_eq!(*socket.got.lock().unwrap(), ["1", "6"]);
    }

    #[test]
    fn close_seals_the_outbox() {
        let outbox = Outbox::new(4);
        outbox.push_control(Frame::Close(Close::new(
            crate::protocol::CloseCode::GoingAway,
        )));
        assert_eq!(lone(&outbox, "1"), Pushed::Closed);
        assert_eq!(outbox.len(), 1);
    }

    #[test]
    fn a_batch_larger_than_the_queue_is_kept_whole_and_trimmed_by_the_next_publish() {
        let outbox = Outbox::new(3);
        let p = bytes("p");
        outbox.push_control(Frame::Text("ack".into()));
        outbox.push(&p, &bytes("a"), Batch::start(), true);
        let batch = Batch::start();
        let pushed: Vec<Pushed> = ["1", "2", "3", "4", "5"]
            .iter()
            .map(|n| outbox.push(&p, &bytes(n), batch, true))
            .collect();
        // What waited before the batch makes room; the batch never does.
        assert_eq!(
            pushed,
            [
                queued(0, 0),
                queued(0, 0),
                queued(1, 0),
                queued(0, 0),
                queued(0, 0)
            ]
        );
        // A client that falls behind: the next publish trims the backlog.
        assert_eq!(
            outbox.push(&p, &bytes("6"), Batch::start(), true),
            queued(3, 0)
        );
        assert_eq!(drained(&outbox), ["Text(\"ack\")", "4", "5", "6"]);
    }

    #[test]
    fn a_batch_drained_as_it_is_pushed_loses_nothing() {
        let outbox = Outbox::new(2);
        let p = bytes("p");
        let batch = Batch::start();
        let mut got = Vec::new();
        for n in 0..10 {
            assert_eq!(
                outbox.push(&p, &bytes(&n.to_string()), batch, true),
                queued(0, 0)
            );
            if n % 3 == 2 {
                got.extend(drained(&outbox));
            }
        }
        got.extend(drained(&outbox));
        assert_eq!(got, (0..10).map(|n| n.to_string()).collect::<Vec<_>>());
    }

    #[test]
    fn a_result_of_the_same_batch_dropped_between_others_is_reported_as_its_own() {
        let outbox = Outbox::new(2);
        let p = bytes("p");
        let (x, y) = (Batch::start(), Batch::start());
        assert_eq!(outbox.push(&p, &bytes("x1"), x, true), queued(0, 0));
        assert_eq!(outbox.push(&p, &bytes("y1"), y, true), queued(0, 0));
        // Two publishes dispatching at once: "x1" is no longer in x's run.
        assert_eq!(outbox.push(&p, &bytes("x2"), x, true), queued(1, 1));
        assert_eq!(outbox.push(&p, &bytes("x3"), x, true), queued(1, 0));
        assert_eq!(drained(&outbox), ["x2", "x3"]);
    }

    #[test]
    fn a_purge_counts_the_run_again() {
        let outbox = Outbox::new(3);
        let (p, q) = (bytes("p"), bytes("q"));
        outbox.push(&p, &bytes("a"), Batch::start(), true);
        let batch = Batch::start();
        outbox.push(&q, &bytes("b1"), batch, true);
        outbox.push(&q, &bytes("b2"), batch, true);
        // Subscription q completes: "a" alone waits, older than the batch.
        outbox.purge(&q);
        assert_eq!(outbox.push(&p, &bytes("b3"), batch, true), queued(0, 0));
        assert_eq!(outbox.push(&p, &bytes("b4"), batch, true), queued(0, 0));
        assert_eq!(outbox.push(&p, &bytes("b5"), batch, true), queued(1, 0));
        assert_eq!(drained(&outbox), ["b3", "b4", "b5"]);
    }
}
