//! The bounded per-connection queue of pre-serialised frames, and the
//! write-through that lets a result skip it when the socket is idle.

use std::collections::VecDeque;
use std::fmt;
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

/// A socket that the dispatcher may hand a result to directly, skipping the
/// queue and the wake-up of the connection's writer. The host implements it
/// (the core performs no IO); it must never block.
pub trait Direct: Send + Sync + fmt::Debug {
    /// Tries to put the result frame `prefix ++ payload ++ NEXT_SUFFIX` on
    /// the wire now.
    fn try_next(&self, prefix: &[u8], payload: &[u8]) -> DirectWrite;
}

/// What a [`Direct`] socket did with a result.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum DirectWrite {
    /// Written whole.
    Sent,
    /// Taken, but only partly written: the sink keeps the rest ahead of
    /// anything later, and the writer must be woken to finish it.
    Started,
    /// Not taken (the socket is backed up or has failed): queue it.
    Refused,
}

#[derive(Debug, Default)]
struct State {
    frames: VecDeque<Frame>,
    results: usize,
    closed: bool,
    /// The writer holds frames it drained but has not finished writing;
    /// writing through now would overtake them.
    in_flight: bool,
    direct: Option<Arc<dyn Direct>>,
}

/// A bounded queue between the dispatcher and one socket writer.
///
/// Slow-consumer policy: when `capacity` results are already waiting, the
/// oldest result is dropped to make room and the drop is reported to the
/// caller (who counts it). Control frames are never dropped; they are
/// bounded by the client's own requests. The dispatcher never waits here,
/// so a stalled client cannot delay anyone else.
///
/// Write-through: with a [`Direct`] socket installed, a result pushed while
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
    /// Handed to the direct socket.
    Sent,
    /// Queued.
    Queued,
    /// Queued, and the oldest waiting result was dropped for it.
    DroppedOldest,
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

    /// Lets results skip the queue through `direct` while it keeps up
    /// (`None` stops it: the writer is going away).
    pub fn set_direct(&self, direct: Option<Arc<dyn Direct>>) {
        self.lock().direct = direct;
    }

    /// Sends a result through the direct socket, or queues it, dropping the
    /// oldest result if the queue is full.
    pub fn push_next(&self, prefix: &Arc<[u8]>, payload: &Arc<[u8]>) -> Pushed {
        self.push(prefix, payload, true)
    }

    /// Queues a result for the writer task even if it could be written
    /// through (see `Registry::dispatch`: a fan-out that is losing its CPU
    /// hands the rest to the writers, which run on every worker).
    pub fn queue_next(&self, prefix: &Arc<[u8]>, payload: &Arc<[u8]>) -> Pushed {
        self.push(prefix, payload, false)
    }

    fn push(&self, prefix: &Arc<[u8]>, payload: &Arc<[u8]>, direct: bool) -> Pushed {
        let mut state = self.lock();
        if state.closed {
            return Pushed::Closed;
        }
        if direct && state.frames.is_empty() && !state.in_flight {
            // Held under the lock: a concurrent push or drain must not slip
            // between this frame and the socket.
            if let Some(direct) = &state.direct {
                match direct.try_next(prefix, payload) {
                    DirectWrite::Sent => return Pushed::Sent,
                    DirectWrite::Started => {
                        drop(state);
                        self.notify.notify_one();
                        return Pushed::Sent;
                    }
                    DirectWrite::Refused => {}
                }
            }
        }
        let (prefix, payload) = (prefix.clone(), payload.clone());
        let mut pushed = Pushed::Queued;
        if state.results >= self.capacity {
            if let Some(pos) = state
                .frames
                .iter()
                .position(|f| matches!(f, Frame::Next { .. }))
            {
                state.frames.remove(pos);
                state.results -= 1;
                pushed = Pushed::DroppedOldest;
            }
        }
        state.frames.push_back(Frame::Next { prefix, payload });
        state.results += 1;
        drop(state);
        self.notify.notify_one();
        pushed
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
    /// expected to finish what it took (including a direct write's rest)
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
        state.in_flight = !into.is_empty();
    }

    /// Waits until something is pushed (returns at once if a push happened
    /// since the last wait).
    pub async fn ready(&self) {
        self.notify.notified().await
    }

    /// Removes waiting results that carry `prefix` (a completed subscription).
    pub fn purge(&self, prefix: &Arc<[u8]>) {
        let mut state = self.lock();
        let before = state.frames.len();
        state
            .frames
            .retain(|f| !matches!(f, Frame::Next { prefix: p, .. } if Arc::ptr_eq(p, prefix)));
        let removed = before - state.frames.len();
        state.results -= removed;
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

    #[test]
    fn full_queue_drops_oldest_result_but_keeps_control_frames() {
        let outbox = Outbox::new(2);
        outbox.push_control(Frame::Text("ack".into()));
        assert_eq!(outbox.push_next(&bytes("p"), &bytes("1")), Pushed::Queued);
        assert_eq!(outbox.push_next(&bytes("p"), &bytes("2")), Pushed::Queued);
        assert_eq!(
            outbox.push_next(&bytes("p"), &bytes("3")),
            Pushed::DroppedOldest
        );
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

    impl Direct for FakeSocket {
        fn try_next(&self, _prefix: &[u8], payload: &[u8]) -> DirectWrite {
            let mut room = self.room.lock().unwrap();
            if *room == 0 {
                return DirectWrite::Refused;
            }
            *room -= 1;
            self.got
                .lock()
                .unwrap()
                .push(String::from_utf8(payload.to_vec()).unwrap());
            DirectWrite::Sent
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
        outbox.set_direct(Some(socket.clone()));
        assert_eq!(outbox.push_next(&bytes("p"), &bytes("1")), Pushed::Sent);
        // The socket is full: queued, and the queue's policy applies.
        assert_eq!(outbox.push_next(&bytes("p"), &bytes("2")), Pushed::Queued);
        *socket.room.lock().unwrap() = 10;
        // Room again, but "2" waits: "3" must not overtake it.
        assert_eq!(outbox.push_next(&bytes("p"), &bytes("3")), Pushed::Queued);
        assert_eq!(
            outbox.push_next(&bytes("p"), &bytes("4")),
            Pushed::DroppedOldest
        );
        let mut writer = VecDeque::new();
        outbox.drain_into(&mut writer);
        // The writer holds "3" and "4" until its next drain comes back empty.
        assert_eq!(outbox.push_next(&bytes("p"), &bytes("5")), Pushed::Queued);
        assert_eq!(drained(&outbox), ["5"]);
        assert!(drained(&outbox).is_empty());
        assert_eq!(outbox.push_next(&bytes("p"), &bytes("6")), Pushed::Sent);
        assert_eq!(*socket.got.lock().unwrap(), ["1", "6"]);
        // Control frames always queue; a result behind one queues too.
        outbox.push_control(Frame::Text("pong".into()));
        assert_eq!(outbox.push_next(&bytes("p"), &bytes("7")), Pushed::Queued);
        assert_eq!(drained(&outbox).len(), 2);
        assert!(drained(&outbox).is_empty());
        // A fan-out that has handed its rest to the writers queues even
        // where the socket has room.
        assert_eq!(outbox.queue_next(&bytes("p"), &bytes("8")), Pushed::Queued);
        assert_eq!(drained(&outbox), ["8"]);
        assert!(drained(&outbox).is_empty());
        outbox.set_direct(None);
        assert_eq!(outbox.push_next(&bytes("p"), &bytes("9")), Pushed::Queued);
        assert_eq!(*socket.got.lock().unwrap(), ["1", "6"]);
    }

    #[test]
    fn close_seals_the_outbox() {
        let outbox = Outbox::new(4);
        outbox.push_control(Frame::Close(Close::new(
            crate::protocol::CloseCode::GoingAway,
        )));
        assert_eq!(outbox.push_next(&bytes("p"), &bytes("1")), Pushed::Closed);
        assert_eq!(outbox.len(), 1);
    }
}
