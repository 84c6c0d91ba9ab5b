//! The socket side of a connection: the only module that touches
//! tokio-tungstenite. Frames in go to the core's `Connection`; the outbox
//! comes out in batches (many frames, one write) through the connection's
//! [`Wire`], which results also reach directly from the dispatcher while
//! the socket keeps up (see `wire.rs`).

use std::collections::{HashMap, VecDeque};
use std::sync::Arc;
use std::time::{Duration, Instant};

use bytes::Bytes;
use fanwire_core::metrics::Reason;
use fanwire_core::outbox::{Frame, Outbox};
use fanwire_core::protocol::{Close, CloseCode, Protocol, NEXT_SUFFIX};
use fanwire_plugins::transport::WasmTransport;
use futures_util::{SinkExt, StreamExt};
use tokio::net::TcpStream;
use tokio_tungstenite::tungstenite::error::{CapacityError, Error as WsError};
use tokio_tungstenite::tungstenite::protocol::{frame::CloseFrame, Role, WebSocketConfig};
use tokio_tungstenite::tungstenite::Message;
use tokio_tungstenite::WebSocketStream;

use crate::wire::{encode_text, Wire, WireIo};
use crate::App;

/// Frames and bytes a connection's idle writer keeps allocated: what a
/// wake-up with a few frames needs, so a steady stream does not allocate
/// per wake-up. A burst grows the buffers past these, and they are freed
/// once it is written. At 8 KiB, connections idle after S1-single still
/// held ~8 KB each of buffers, which also pin the pages around them after
/// the burst's memory is freed (see `memory.rs`).
const KEEP_FRAMES: usize = 8;
const KEEP_BYTES: usize = 1024;

/// Drain-and-write rounds per wake-up of a connection's writer.
const WRITE_ROUNDS: usize = 4;

/// How long a closing peer gets to answer our close frame.
const CLOSE_GRACE: Duration = Duration::from_secs(1);

type Ws = WebSocketStream<WireIo>;

/// Stops results from writing through to the socket when the connection
/// ends, however it ends, so the socket closes with the task.
struct WriteThroughGuard(Arc<Outbox>);

impl Drop for WriteThroughGuard {
    fn drop(&mut self) {
        self.0.set_write_through(None);
    }
}

/// Runs one WebSocket connection to its end.
/// `unread`: bytes hyper read past the upgrade request.
pub(crate) async fn serve(
    app: Arc<App>,
    stream: TcpStream,
    unread: Bytes,
    protocol: Option<Protocol>,
    headers: Vec<(String, String)>,
    adapter: Option<Arc<WasmTransport>>,
) {
    let limits = &app.config.limits;
    let ws_config = WebSocketConfig::default()
        .max_message_size(Some(limits.max_message_bytes))
        .max_frame_size(Some(limits.max_message_bytes))
        // tungstenite allocates its read buffer eagerly and zero-fills it
        // before each read: the 128 KiB default cost 128 KiB per idle
        // connection and a memset per poll, 4 KiB most of an idle
        // connection's ~9 KB. Client messages are small (a subscribe is a
        // few hundred bytes); a larger one is read in several chunks.
        .read_buffer_size(1024);
    let metrics = app.engine.metrics();
    let wire = Arc::new(Wire::new(stream, metrics.frames_out.clone()));
    let io = WireIo::new(wire.clone(), unread);
    let mut ws = WebSocketStream::from_raw_socket(io, Role::Server, Some(ws_config)).await;
    let Some(protocol) = protocol else {
        metrics
            .connection_rejections
            .get_or_create(&Reason {
                reason: "subprotocol",
            })
            .inc();
        close_and_wait(&mut ws, Close::new(CloseCode::SubprotocolNotAcceptable)).await;
        return;
    };

    let mut conn = app.engine.connect(protocol).with_headers(headers);
    let mut custom = adapter.map(|transport| Custom {
        transport,
        templates: HashMap::new(),
    });
    let outbox = conn.outbox().clone();
    // A custom subprotocol frames results with its templates, in the writer.
    if custom.is_none() {
        outbox.set_write_through(Some(wire.clone()));
    }
    let _direct = WriteThroughGuard(outbox.clone());
    let mut batch = VecDeque::new();
    let mut out = Vec::new();
    let keep_alive = Duration::from_millis(limits.keep_alive_ms);
    // A client that has not read for two keep-alive periods is treated as gone.
    let write_timeout = keep_alive * 2;
    let init_deadline = tokio::time::sleep(Duration::from_millis(limits.init_timeout_ms));
    tokio::pin!(init_deadline);
    let mut init_pending = true;
    let mut ticker = tokio::time::interval_at(tokio::time::Instant::now() + keep_alive, keep_alive);
    let mut last_seen = Instant::now();
    let mut shutdown = app.shutdown.clone();
    let mut closing = false;
    // After a read error the stream yields nothing more; the close frame
    // already queued in the outbox must still go out.
    let mut reading = true;
    // After a message too big, the rest of it is still arriving: it is
    // read and dropped after the close frame (see `discard`).
    let mut discarding = false;
    let mut revoked = Vec::new();
    // Armed once the connection policy sets an expiry on the principal.
    let mut expiry: Option<std::pin::Pin<Box<tokio::time::Sleep>>> = None;
    let mut expiry_armed = false;

    loop {
        tokio::select! {
            incoming = ws.next(), if reading => {
                last_seen = Instant::now();
                match incoming {
                    Some(Ok(Message::Text(text))) => {
                        match &custom {
                            None => conn.on_text(text.as_str()),
                            Some(c) => match c.transport.decode(text.as_str()) {
                                Ok(frame) => conn.on_text(&frame),
                                Err(reason) => conn.close(Close::with_reason(CloseCode::BadRequest, reason)),
                            },
                        }
                        if !expiry_armed {
                            if let Some(at) = conn.expires_at() {
                                expiry_armed = true;
                                let wait = at.duration_since(std::time::SystemTime::now()).unwrap_or_default();
                                expiry = Some(Box::pin(tokio::time::sleep(wait)));
                            }
                        }
                    }
                    Some(Ok(Message::Binary(_))) => conn.on_binary(),
                    Some(Ok(Message::Ping(_) | Message::Pong(_) | Message::Frame(_))) => {}
                    Some(Ok(Message::Close(_))) => {
                        // Nothing may follow the close reply that tungstenite
                        // queued; flushing sends it.
                        outbox.set_write_through(None);
                        let _ = tokio::time::timeout(CLOSE_GRACE, ws.flush()).await;
                        break;
                    }
                    None => break,
                    Some(Err(WsError::Capacity(CapacityError::MessageTooLong { size, max_size }))) => {
                        reading = false;
                        discarding = true;
                        metrics.connection_rejections.get_or_create(&Reason { reason: "message_too_big" }).inc();
                        let reason = format!("Message of {size} bytes exceeds the limit of {max_size}");
                        conn.close(Close::with_reason(CloseCode::MessageTooBig, reason));
                    }
                    Some(Err(e)) => {
                        tracing::debug!(error = %e, "websocket read failed");
                        if let Some(close) = framing_close(&e) {
                            // RFC 6455 7.1.7: a client that broke the framing
                            // is told why before its socket closes.
                            outbox.set_write_through(None);
                            let _ = tokio::time::timeout(CLOSE_GRACE, ws.send(Message::Close(Some(close_frame(close))))).await;
                        }
                        break;
                    }
                }
            }
            _ = outbox.ready() => {
                let written = write_out(&mut ws, &wire, &outbox, &mut batch, &mut out, &mut revoked, &app, &mut custom);
                match tokio::time::timeout(write_timeout, written).await {
                    Ok(Ok(Flow::Open)) => {
                        for (id, errors) in revoked.drain(..) {
                            conn.revoke(&id, errors);
                        }
                        // Idle again: a burst's buffers go back to the
                        // allocator rather than stay with the connection.
                        release_if_large(&mut batch, &mut out);
                        outbox.shrink_if_idle();
                    }
                    Ok(Ok(Flow::Closed)) => {
                        if discarding {
                            discard(&mut ws).await;
                        } else {
                            wait_for_close(&mut ws).await;
                        }
                        break;
                    }
                    Ok(Err(e)) => {
                        tracing::debug!(error = %e, "websocket write failed");
                        break;
                    }
                    Err(_) => {
                        metrics.connection_rejections.get_or_create(&Reason { reason: "write_timeout" }).inc();
                        break;
                    }
                }
            }
            _ = async { if let Some(e) = expiry.as_mut() { e.await } }, if expiry.is_some() => {
                expiry = None;
                conn.on_expired();
            }
            _ = &mut init_deadline, if init_pending => {
                init_pending = false;
                conn.on_init_timeout();
            }
            _ = ticker.tick() => {
                if last_seen.elapsed() > keep_alive * 2 {
                    metrics.connection_rejections.get_or_create(&Reason { reason: "dead_peer" }).inc();
                    break;
                }
                // Browsers and every stock client answer protocol-level pings.
                let ping = tokio::time::timeout(write_timeout, ws.send(Message::Ping(Default::default())));
                if !matches!(ping.await, Ok(Ok(()))) {
                    break;
                }
                conn.on_keep_alive();
            }
            _ = crate::stopped(&mut shutdown), if !closing => {
                closing = true;
                conn.close(Close::new(CloseCode::GoingAway));
            }
        }
    }
    drop(conn);
}

/// A custom subprotocol's translation for one connection: client frames go
/// through the adapter's `decode`, control messages through its `encode`,
/// and results are framed with the subscription's template, asked once per
/// subscription and kept here (keyed by the subscription's result prefix).
struct Custom {
    transport: Arc<WasmTransport>,
    templates: HashMap<Arc<[u8]>, (String, String)>,
}

impl Custom {
    fn frame(&mut self, prefix: &Arc<[u8]>, payload: &[u8]) -> String {
        if !self.templates.contains_key(prefix) {
            // The prefix is `{"id":<JSON string>,"type":"next","payload":`.
            let id = prefix
                .strip_prefix(b"{\"id\":".as_slice())
                .and_then(|rest| {
                    serde_json::Deserializer::from_slice(rest)
                        .into_iter::<String>()
                        .next()
                })
                .and_then(Result::ok)
                .unwrap_or_default();
            let template = self.transport.template(&id).unwrap_or_default();
            // Bounded by the subscriptions a connection may hold (ids are reused).
            if self.templates.len() > 4096 {
                self.templates.clear();
            }
            self.templates.insert(prefix.clone(), template);
        }
        let (before, after) = &self.templates[prefix];
        let mut text = String::with_capacity(before.len() + payload.len() + after.len());
        text.push_str(before);
        text.push_str(std::str::from_utf8(payload).unwrap_or_default());
        text.push_str(after);
        text
    }
}

enum Flow {
    Open,
    Closed,
}

/// Writes the outbox until it is empty, or for `WRITE_ROUNDS` rounds:
/// finish what the wire holds (the rest of a write-through or of the last
/// batch), drain, frame the batch into one buffer, hand it to the wire,
/// repeat. The final, empty drain lets results write through again. The
/// bound keeps a client that is sent to without pause from starving its
/// own reading side (its `complete`, pongs, close frame): the connection's
/// loop runs between calls, and what was pushed meanwhile wakes it again.
#[allow(clippy::too_many_arguments)]
async fn write_out(
    ws: &mut Ws,
    wire: &Wire,
    outbox: &Outbox,
    batch: &mut VecDeque<Frame>,
    out: &mut Vec<u8>,
    revoked: &mut Vec<(String, Vec<fanwire_core::GraphQLError>)>,
    app: &App,
    custom: &mut Option<Custom>,
) -> Result<Flow, WsError> {
    for _ in 0..WRITE_ROUNDS {
        wire.flush().await?;
        outbox.drain_into(batch);
        if batch.is_empty() {
            return Ok(Flow::Open);
        }
        let mut sent = 0u64;
        let mut close = None;
        while let Some(frame) = batch.pop_front() {
            match frame {
                Frame::Next {
                    prefix, payload, ..
                } => {
                    sent += 1;
                    match custom.as_mut() {
                        None => encode_text(out, &[&prefix, &payload, NEXT_SUFFIX]),
                        Some(c) => encode_text(out, &[c.frame(&prefix, &payload).as_bytes()]),
                    }
                }
                Frame::Text(text) => match custom.as_ref() {
                    None => encode_text(out, &[text.as_bytes()]),
                    Some(c) => {
                        if let Some(text) = c.transport.encode(&text) {
                            encode_text(out, &[text.as_bytes()]);
                        }
                    }
                },
                Frame::Close(c) => {
                    close = Some(c);
                    break;
                }
                // The session must free the id; the connection does that
                // and queues the error frame.
                Frame::Revoke { id, errors } => revoked.push((id, errors)),
            }
        }
        batch.clear();
        app.engine.metrics().frames_out.inc_by(sent);
        wire.send(out)?;
        if let Some(close) = close {
            // tungstenite sends the close frame (behind the wire's bytes) and
            // then expects the peer's.
            ws.send(Message::Close(Some(close_frame(close)))).await?;
            return Ok(Flow::Closed);
        }
    }
    Ok(Flow::Open)
}

/// Frees the writer's buffers if a burst left them large (they are empty).
fn release_if_large(batch: &mut VecDeque<Frame>, out: &mut Vec<u8>) {
    if batch.capacity() > KEEP_FRAMES {
        *batch = VecDeque::new();
    }
    if out.capacity() > KEEP_BYTES {
        *out = Vec::new();
    }
}

/// The close for a read error that is the client's fault at the framing
/// level; `None` for a socket error (nobody is left to tell).
fn framing_close(error: &WsError) -> Option<Close> {
    let code = match error {
        WsError::Protocol(_) => CloseCode::ProtocolError,
        WsError::Utf8(_) => CloseCode::InvalidPayload,
        _ => return None,
    };
    Some(Close::with_reason(code, error.to_string()))
}

fn close_frame(close: Close) -> CloseFrame {
    CloseFrame {
        code: close.code.code().into(),
        reason: close.reason.into(),
    }
}

async fn close_and_wait(ws: &mut Ws, close: Close) {
    if ws
        .send(Message::Close(Some(close_frame(close))))
        .await
        .is_ok()
    {
        wait_for_close(ws).await;
    }
}

/// Reads and drops what the peer still sends (the rest of a message too
/// big to parse), up to a bound, until it closes: closing a socket with
/// unread bytes resets it, and the peer could lose our close frame.
async fn discard(ws: &mut Ws) {
    use tokio::io::AsyncReadExt;
    let io = ws.get_mut();
    let mut scratch = vec![0u8; 16 * 1024];
    let mut left = crate::http::DISCARD_BYTES;
    let _ = tokio::time::timeout(crate::http::DISCARD_TIME, async {
        while left > 0 {
            match io.read(&mut scratch).await {
                Ok(0) | Err(_) => break,
                Ok(n) => left = left.saturating_sub(n),
            }
        }
    })
    .await;
}

/// After our close frame, read until the peer's close (or a short grace period).
async fn wait_for_close(ws: &mut Ws) {
    let _ = tokio::time::timeout(CLOSE_GRACE, async {
        while let Some(Ok(msg)) = ws.next().await {
            if matches!(msg, Message::Close(_)) {
                break;
            }
        }
    })
    .await;
}
