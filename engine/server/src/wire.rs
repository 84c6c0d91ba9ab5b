//! The socket under one WebSocket connection, shared by the connection's
//! task and whichever thread dispatches an event: every byte to the client
//! goes through one [`Wire`], in order.
//!
//! Results and control messages are framed here (a server frame is a 2-10
//! byte header and the unmasked bytes), so a dispatcher can write a result
//! straight into an idle socket ([`Direct`]): one `writev` of header, the
//! subscription's prefix and the group's shared payload, with no copy, no
//! queue and no wake-up of the connection's task. That wake-up, the task's
//! poll and tungstenite's buffer copy cost about as much as the `send`
//! itself when every event is one small frame per socket. tungstenite keeps
//! the reading side, pings, pongs and the close handshake, writing through
//! [`WireIo`].

use std::io::{self, IoSlice};
use std::pin::Pin;
use std::sync::{Arc, Mutex, MutexGuard};
use std::task::{ready, Context, Poll};

use bytes::{Buf, Bytes};
use fanwire_core::outbox::{WriteThrough, Written};
use fanwire_core::protocol::NEXT_SUFFIX;
use prometheus_client::metrics::counter::Counter;
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::net::TcpStream;

/// A flushed buffer larger than this is not kept for reuse: a burst to a
/// slow client should not pin its memory for the connection's lifetime
/// (100,000 connections x 64 KiB would be 6 GiB). The same bound as the
/// writer's own buffer (`ws.rs`, `KEEP_BYTES`), which the two swap.
const KEEP_CAPACITY: usize = 1024;

/// The write side of one connection's socket.
#[derive(Debug)]
pub(crate) struct Wire {
    stream: TcpStream,
    // A std mutex: held for one non-blocking write or a buffer swap, never
    // across an await, and taken by the dispatcher on the hot path.
    state: Mutex<State>,
    frames_out: Counter,
}

#[derive(Debug, Default)]
struct State {
    /// Bytes taken but not yet written; they go before anything later.
    pending: Vec<u8>,
    /// How much of `pending` is already written.
    written: usize,
    /// A write failed: the connection is ending, nothing more is taken directly.
    failed: bool,
}

impl State {
    fn has_pending(&self) -> bool {
        self.written < self.pending.len()
    }
}

/// The header of a final, unmasked text frame of `len` bytes.
fn text_header(len: usize) -> ([u8; 10], usize) {
    let mut header = [0u8; 10];
    header[0] = 0x81;
    if len < 126 {
        header[1] = len as u8;
        (header, 2)
    } else if let Ok(short) = u16::try_from(len) {
        header[1] = 126;
        header[2..4].copy_from_slice(&short.to_be_bytes());
        (header, 4)
    } else {
        header[1] = 127;
        header[2..10].copy_from_slice(&(len as u64).to_be_bytes());
        (header, 10)
    }
}

/// Appends one text frame holding the concatenation of `parts` to `out`.
pub(crate) fn encode_text(out: &mut Vec<u8>, parts: &[&[u8]]) {
    let len = parts.iter().map(|p| p.len()).sum();
    let (header, n) = text_header(len);
    out.reserve(n + len);
    out.extend_from_slice(&header[..n]);
    for part in parts {
        out.extend_from_slice(part);
    }
}

impl Wire {
    /// Wraps a connected socket; `frames_out` counts the results written directly.
    pub(crate) fn new(stream: TcpStream, frames_out: Counter) -> Self {
        Wire {
            stream,
            state: Mutex::default(),
            frames_out,
        }
    }

    fn lock(&self) -> MutexGuard<'_, State> {
        // Every mutation leaves `pending`/`written` consistent, so a poisoned
        // lock (a panic elsewhere while holding it) is still usable.
        self.state.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Takes `out` whole: writes what the socket accepts now and keeps the
    /// rest (behind anything already kept) for [`Wire::flush`]. Leaves `out`
    /// empty, its allocation recycled.
    pub(crate) fn send(&self, out: &mut Vec<u8>) -> io::Result<()> {
        if out.is_empty() {
            return Ok(());
        }
        let mut state = self.lock();
        if state.failed {
            return Err(io::ErrorKind::BrokenPipe.into());
        }
        if state.has_pending() {
            state.pending.extend_from_slice(out);
            out.clear();
            return Ok(());
        }
        let n = match self.stream.try_write(out) {
            Ok(n) => n,
            Err(e) if e.kind() == io::ErrorKind::WouldBlock => 0,
            Err(e) => {
                state.failed = true;
                return Err(e);
            }
        };
        if n < out.len() {
            // Keep the rest by swapping buffers rather than copying it.
            std::mem::swap(&mut state.pending, out);
            state.written = n;
        }
        out.clear();
        Ok(())
    }

    /// Writes what was kept, waiting for the socket as needed.
    pub(crate) fn poll_flush(&self, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        loop {
            {
                let mut state = self.lock();
                if !state.has_pending() {
                    return Poll::Ready(Ok(()));
                }
                let at = state.written;
                match self.stream.try_write(&state.pending[at..]) {
                    Ok(n) => {
                        state.written += n;
                        if !state.has_pending() {
                            state.written = 0;
                            if state.pending.capacity() > KEEP_CAPACITY {
                                state.pending = Vec::new();
                            } else {
                                state.pending.clear();
                            }
                            return Poll::Ready(Ok(()));
                        }
                        continue;
                    }
                    Err(e) if e.kind() == io::ErrorKind::WouldBlock => {}
                    Err(e) => {
                        state.failed = true;
                        return Poll::Ready(Err(e));
                    }
                }
            }
            // The lock is released while waiting: a dispatcher meanwhile sees
            // the kept bytes and queues instead.
            ready!(self.stream.poll_write_ready(cx))?;
        }
    }

    /// Resolves once everything kept has been written.
    pub(crate) async fn flush(&self) -> io::Result<()> {
        std::future::poll_fn(|cx| self.poll_flush(cx)).await
    }
}

impl WriteThrough for Wire {
    fn try_next(&self, prefix: &[u8], payload: &[u8]) -> Written {
        let mut state = self.lock();
        if state.failed || state.has_pending() {
            return Written::Refused;
        }
        let len = prefix.len() + payload.len() + NEXT_SUFFIX.len();
        let (header, n) = text_header(len);
        let parts = [&header[..n], prefix, payload, NEXT_SUFFIX];
        let slices = parts.map(IoSlice::new);
        let written = match self.stream.try_write_vectored(&slices) {
            Ok(written) => written,
            // Backed up: the frame waits in the outbox, where the slow-consumer
            // policy applies. Any other error ends the connection through the
            // writer, which will meet it too.
            Err(e) => {
                if e.kind() != io::ErrorKind::WouldBlock {
                    state.failed = true;
                }
                return Written::Refused;
            }
        };
        self.frames_out.inc();
        if written == n + len {
            return Written::Sent;
        }
        // Part of the frame is on the wire: the rest must follow before any
        // other byte, so it is kept here for the writer to finish.
        let mut skip = written;
        for part in parts {
            if skip >= part.len() {
                skip -= part.len();
            } else {
                state.pending.extend_from_slice(&part[skip..]);
                skip = 0;
            }
        }
        state.written = 0;
        Written::Started
    }
}

/// The socket as tungstenite sees it: reads come from the socket (after any
/// bytes hyper read past the upgrade request); writes go through the wire,
/// after whatever it holds.
#[derive(Debug)]
pub(crate) struct WireIo {
    wire: Arc<Wire>,
    unread: Bytes,
}

impl WireIo {
    /// `unread`: bytes already read from the socket that belong to the WebSocket.
    pub(crate) fn new(wire: Arc<Wire>, unread: Bytes) -> Self {
        WireIo {
            wire,
            // A slice, even an empty one, would keep hyper's whole read
            // buffer alive for the connection's lifetime (+4.6 KB per idle
            // connection in S3).
            unread: Bytes::copy_from_slice(&unread),
        }
    }
}

impl AsyncRead for WireIo {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        if !self.unread.is_empty() {
            let n = self.unread.len().min(buf.remaining());
            buf.put_slice(&self.unread[..n]);
            self.unread.advance(n);
            if self.unread.is_empty() {
                self.unread = Bytes::new();
            }
            return Poll::Ready(Ok(()));
        }
        loop {
            ready!(self.wire.stream.poll_read_ready(cx))?;
            match self.wire.stream.try_read(buf.initialize_unfilled()) {
                Ok(n) => {
                    buf.advance(n);
                    return Poll::Ready(Ok(()));
                }
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => {}
                Err(e) => return Poll::Ready(Err(e)),
            }
        }
    }
}

impl AsyncWrite for WireIo {
    fn poll_write(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        // Kept bytes go first; until they are out, tungstenite holds its frame
        // (its own buffer is where pongs and pings wait, as before).
        ready!(self.wire.poll_flush(cx))?;
        let mut out = buf.to_vec();
        self.wire.send(&mut out)?;
        Poll::Ready(Ok(buf.len()))
    }

    fn poll_flush(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        self.wire.poll_flush(cx)
    }

    fn poll_shutdown(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        // The socket closes when the connection drops its wire.
        self.wire.poll_flush(cx)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn headers_use_the_shortest_length_form() {
        for (len, expected) in [
            (0, vec![0x81, 0]),
            (125, vec![0x81, 125]),
            (126, vec![0x81, 126, 0, 126]),
            (65535, vec![0x81, 126, 0xff, 0xff]),
            (65536, vec![0x81, 127, 0, 0, 0, 0, 0, 1, 0, 0]),
        ] {
            let (header, n) = text_header(len);
            assert_eq!(header[..n], expected[..], "length {len}");
        }
    }

    #[test]
    fn encoded_frames_parse_back_with_tungstenite() {
        use tokio_tungstenite::tungstenite::protocol::frame::FrameHeader;
        for len in [0usize, 5, 125, 126, 300, 65535, 65536, 70_000] {
            let body = "y".repeat(len);
            let mut out = Vec::new();
            encode_text(&mut out, &[b"{", body.as_bytes(), b"}"]);
            let mut cursor = io::Cursor::new(out.as_slice());
            let (header, payload_len) = FrameHeader::parse(&mut cursor).unwrap().unwrap();
            assert!(header.is_final && header.mask.is_none());
            assert_eq!(payload_len as usize, len + 2);
            assert_eq!(&out[cursor.position() as usize..][1..=len], body.as_bytes());
        }
    }
}
