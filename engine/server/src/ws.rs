//! The socket side of a connection: the only module that touches
//! tokio-tungstenite. Frames in go to the core's `Connection`; the outbox
//! comes out in batches (many frames, one flush).

use std::collections::{HashMap, VecDeque};
use std::sync::Arc;
use std::time::{Duration, Instant};

use fanwire_core::metrics::Reason;
use fanwire_core::outbox::Frame;
use fanwire_core::protocol::{assemble_next, Close, CloseCode, Protocol};
use fanwire_plugins::transport::WasmTransport;
use futures_util::{SinkExt, StreamExt};
use tokio::io::{AsyncRead, AsyncWrite};
use tokio_tungstenite::tungstenite::error::{CapacityError, Error as WsError};
use tokio_tungstenite::tungstenite::protocol::{frame::CloseFrame, Role, WebSocketConfig};
use tokio_tungstenite::tungstenite::Message;
use tokio_tungstenite::WebSocketStream;

use crate::App;

/// How long a closing peer gets to answer our close frame.
const CLOSE_GRACE: Duration = Duration::from_secs(1);

/// Runs one WebSocket connection to its end.
pub(crate) async fn serve<S>(
    app: Arc<App>,
    io: S,
    protocol: Option<Protocol>,
    headers: Vec<(String, String)>,
    adapter: Option<Arc<WasmTransport>>,
) where
    S: AsyncRead + AsyncWrite + Unpin,
{
    let limits = &app.config.limits;
    let ws_config = WebSocketConfig::default()
        .max_message_size(Some(limits.max_message_bytes))
        .max_frame_size(Some(limits.max_message_bytes))
        // tungstenite zero-fills its whole read buffer before each read: the
        // 128 KiB default cost 128 KiB per idle connection and a memset per
        // poll. Client messages are small; larger ones grow it as needed.
        .read_buffer_size(4096);
    let mut ws = WebSocketStream::from_raw_socket(io, Role::Server, Some(ws_config)).await;
    let metrics = app.engine.metrics();
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
    let mut batch = VecDeque::new();
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
                        // tungstenite queued the close reply; flushing sends it.
                        let _ = tokio::time::timeout(CLOSE_GRACE, ws.flush()).await;
                        break;
                    }
                    None => break,
                    Some(Err(WsError::Capacity(CapacityError::MessageTooLong { size, max_size }))) => {
                        reading = false;
                        metrics.connection_rejections.get_or_create(&Reason { reason: "message_too_big" }).inc();
                        let reason = format!("Message of {size} bytes exceeds the limit of {max_size}");
                        conn.close(Close::with_reason(CloseCode::MessageTooBig, reason));
                    }
                    Some(Err(e)) => {
                        tracing::debug!(error = %e, "websocket read failed");
                        break;
                    }
                }
            }
            _ = outbox.ready() => {
                let written = write_batch(&mut ws, &outbox, &mut batch, &mut revoked, &app, &mut custom);
                match tokio::time::timeout(write_timeout, written).await {
                    Ok(Ok(Flow::Open)) => {
                        for (id, errors) in revoked.drain(..) {
                            conn.revoke(&id, errors);
                        }
                    }
                    Ok(Ok(Flow::Closed)) => {
                        wait_for_close(&mut ws).await;
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

async fn write_batch<S>(
    ws: &mut WebSocketStream<S>,
    outbox: &fanwire_core::outbox::Outbox,
    batch: &mut VecDeque<Frame>,
    revoked: &mut Vec<(String, Vec<fanwire_core::GraphQLError>)>,
    app: &App,
    custom: &mut Option<Custom>,
) -> Result<Flow, WsError>
where
    S: AsyncRead + AsyncWrite + Unpin,
{
    outbox.drain_into(batch);
    let mut sent = 0u64;
    let mut flow = Flow::Open;
    let result = async {
        while let Some(frame) = batch.pop_front() {
            let message = match frame {
                Frame::Next { prefix, payload } => {
                    sent += 1;
                    let text = match custom.as_mut() {
                        // Prefix and payload are JSON produced by serde_json: valid UTF-8.
                        None => {
                            String::from_utf8(assemble_next(&prefix, &payload)).unwrap_or_default()
                        }
                        Some(c) => c.frame(&prefix, &payload),
                    };
                    Message::Text(text.into())
                }
                Frame::Text(text) => match custom.as_ref() {
                    None => Message::Text(text.into()),
                    Some(c) => match c.transport.encode(&text) {
                        Some(text) => Message::Text(text.into()),
                        None => continue,
                    },
                },
                Frame::Close(close) => {
                    flow = Flow::Closed;
                    Message::Close(Some(close_frame(close)))
                }
                // The session must free the id; the connection does that
                // and queues the error frame.
                Frame::Revoke { id, errors } => {
                    revoked.push((id, errors));
                    continue;
                }
            };
            ws.feed(message).await?;
            if matches!(flow, Flow::Closed) {
                break;
            }
        }
        ws.flush().await
    }
    .await;
    batch.clear();
    app.engine.metrics().frames_out.inc_by(sent);
    result.map(|()| flow)
}

fn close_frame(close: Close) -> CloseFrame {
    CloseFrame {
        code: close.code.code().into(),
        reason: close.reason.into(),
    }
}

async fn close_and_wait<S>(ws: &mut WebSocketStream<S>, close: Close)
where
    S: AsyncRead + AsyncWrite + Unpin,
{
    if ws
        .send(Message::Close(Some(close_frame(close))))
        .await
        .is_ok()
    {
        wait_for_close(ws).await;
    }
}

/// After our close frame, read until the peer's close (or a short grace period).
async fn wait_for_close<S>(ws: &mut WebSocketStream<S>)
where
    S: AsyncRead + AsyncWrite + Unpin,
{
    let _ = tokio::time::timeout(CLOSE_GRACE, async {
        while let Some(Ok(msg)) = ws.next().await {
            if matches!(msg, Message::Close(_)) {
                break;
            }
        }
    })
    .await;
}
