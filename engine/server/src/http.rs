//! HTTP routing: the WebSocket upgrade, publish, health, metrics and the
//! demo page; and the bounds on HTTP connections themselves (how many, how
//! long a request head may take, how fast one address may connect).

use std::convert::Infallible;
use std::io;
use std::net::{IpAddr, SocketAddr};
use std::pin::Pin;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::task::{ready, Context, Poll};
use std::time::{Duration, Instant};

use bytes::Bytes;
use fanwire_bus::Published;
use fanwire_core::metrics::Reason;
use fanwire_core::protocol::Protocol;
use http_body_util::{BodyExt, Full};
use hyper::body::{Body as _, Incoming};
use hyper::header::{self, HeaderValue};
use hyper::server::conn::http1;
use hyper::service::service_fn;
use hyper::{Method, Request, Response, StatusCode};
use hyper_util::rt::{TokioIo, TokioTimer};
use serde_json::json;
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::net::TcpStream;
use tokio_tungstenite::tungstenite::handshake::derive_accept_key;

use crate::{publish, ws, App};

type Body = Full<Bytes>;

/// What a client may still send after its message or body is refused as
/// too large: the server reads and drops up to this much (for at most
/// [`DISCARD_TIME`]) so the client reads the 1009 close or the 413 instead
/// of a connection reset, then closes.
pub(crate) const DISCARD_BYTES: usize = 8 << 20;
/// How long the server keeps discarding (see [`DISCARD_BYTES`]).
pub(crate) const DISCARD_TIME: Duration = Duration::from_secs(5);

/// A bound on concurrent connections, checked and counted in one atomic
/// step so that concurrent takers can never overshoot it.
#[derive(Debug)]
pub(crate) struct Slots {
    taken: AtomicUsize,
    max: usize,
}

impl Slots {
    /// Room for `max` at once.
    pub(crate) fn new(max: usize) -> Arc<Slots> {
        Arc::new(Slots {
            taken: AtomicUsize::new(0),
            max,
        })
    }

    /// A place, if one is free; it is given back when the [`Slot`] drops.
    pub(crate) fn try_take(self: &Arc<Self>) -> Option<Slot> {
        self.taken
            .fetch_update(Ordering::AcqRel, Ordering::Acquire, |n| {
                (n < self.max).then_some(n + 1)
            })
            .ok()?;
        Some(Slot(self.clone()))
    }
}

/// One taken place in [`Slots`].
#[derive(Debug)]
pub(crate) struct Slot(Arc<Slots>);

impl Drop for Slot {
    fn drop(&mut self) {
        self.0.taken.fetch_sub(1, Ordering::AcqRel);
    }
}

/// Serves one TCP connection until it ends or the server shuts down;
/// `slot` is its place among `server.max_http_connections`.
pub(crate) fn spawn_connection(app: Arc<App>, stream: TcpStream, peer: SocketAddr, slot: Slot) {
    tokio::spawn(async move {
        let _slot = slot;
        let _ = stream.set_nodelay(true);
        let mut shutdown = app.shutdown.clone();
        let service_app = app.clone();
        let service = service_fn(move |req| {
            let app = service_app.clone();
            async move { Ok::<_, Infallible>(route(app, req, peer).await) }
        });
        let timeout = Duration::from_millis(app.config.server.header_read_timeout_ms);
        // hyper's header-read timer restarts before each request head, so
        // it also closes connections idle in keep-alive.
        let conn = http1::Builder::new()
            .timer(TokioTimer::new())
            .header_read_timeout(timeout)
            .title_case_headers(true)
            .serve_connection(TokioIo::new(HttpIo::new(stream)), service)
            .with_upgrades();
        tokio::pin!(conn);
        let result = tokio::select! {
            r = conn.as_mut() => r,
            _ = crate::stopped(&mut shutdown) => {
                conn.as_mut().graceful_shutdown();
                conn.await
            }
        };
        if let Err(e) = result {
            tracing::debug!(%peer, error = %e, "http connection ended with an error");
        }
    });
}

/// Answers a connection beyond `server.max_http_connections` with 503 (if
/// the socket takes it at once) and closes it.
pub(crate) fn refuse_connection(app: &App, stream: TcpStream) {
    app.engine
        .metrics()
        .connection_rejections
        .get_or_create(&Reason {
            reason: "max_http_connections",
        })
        .inc();
    const BODY: &str = r#"{"error":"too many connections"}"#;
    let response = format!(
        "HTTP/1.1 503 Service Unavailable\r\nRetry-After: 1\r\nContent-Type: application/json\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{BODY}",
        BODY.len()
    );
    let _ = stream.try_write(response.as_bytes());
}

async fn route(app: Arc<App>, req: Request<Incoming>, peer: SocketAddr) -> Response<Body> {
    match (req.method(), req.uri().path()) {
        (&Method::GET, "/graphql") => upgrade(app, req, peer),
        (&Method::POST, "/publish") => publish(app, req).await,
        (&Method::POST, "/admin/plugins/reload") => reload_plugins(app, req).await,
        (&Method::GET, "/healthz") => health(&app),
        (&Method::GET, "/metrics") => respond(
            StatusCode::OK,
            "application/openmetrics-text; version=1.0.0; charset=utf-8",
            app.node.metrics(),
        ),
        (&Method::GET, "/") => respond(
            StatusCode::OK,
            "text/html; charset=utf-8",
            crate::demo::PAGE,
        ),
        (_, "/graphql" | "/publish" | "/healthz" | "/metrics" | "/" | "/admin/plugins/reload") => {
            error(
                StatusCode::METHOD_NOT_ALLOWED,
                "method not allowed for this path",
            )
        }
        _ => error(StatusCode::NOT_FOUND, "not found"),
    }
}

/// Liveness and counts; `degraded` (still 200: the node serves its clients)
/// while the bus or a source is not connected.
fn health(app: &App) -> Response<Body> {
    respond(
        StatusCode::OK,
        "application/json",
        app.node.health().to_string(),
    )
}

fn respond(
    status: StatusCode,
    content_type: &'static str,
    body: impl Into<Bytes>,
) -> Response<Body> {
    let mut res = Response::new(Full::new(body.into()));
    *res.status_mut() = status;
    res.headers_mut()
        .insert(header::CONTENT_TYPE, HeaderValue::from_static(content_type));
    res
}

fn error(status: StatusCode, message: &str) -> Response<Body> {
    respond(
        status,
        "application/json",
        json!({ "error": message }).to_string(),
    )
}

/// Whether the request's `Authorization: Bearer` token is `token`
/// (compared in constant time; the scheme is case-insensitive, RFC 7235).
fn bearer_matches(req: &Request<Incoming>, token: &str) -> bool {
    req.headers()
        .get(header::AUTHORIZATION)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.trim().split_once(' '))
        .filter(|(scheme, _)| scheme.eq_ignore_ascii_case("bearer"))
        .is_some_and(|(_, given)| constant_time_eq(given.trim().as_bytes(), token.as_bytes()))
}

/// Why a body was not read whole.
enum BodyError {
    /// Over the limit; `drained` says whether the rest was read (and
    /// dropped) to its end, so the connection can stay open.
    TooLarge { drained: bool },
    /// The connection failed while reading.
    Read(hyper::Error),
}

/// Reads a body of at most `limit` bytes. A larger one is read on and
/// dropped up to [`DISCARD_BYTES`] more, so that the client, which is
/// likely still sending, gets the 413 rather than a reset.
async fn read_body(mut body: Incoming, limit: usize) -> Result<Bytes, BodyError> {
    if body.size_hint().lower() > limit as u64 {
        // The declared length alone is too much: answer now, and let the
        // body be read on and dropped beside the answer, so a client that
        // is still sending gets the 413 rather than a reset.
        tokio::spawn(async move {
            let _ = tokio::time::timeout(DISCARD_TIME, discard(&mut body, usize::MAX)).await;
        });
        return Err(BodyError::TooLarge { drained: true });
    }
    let mut kept = Vec::new();
    while let Some(frame) = body.frame().await {
        let frame = frame.map_err(BodyError::Read)?;
        let Ok(data) = frame.into_data() else {
            continue;
        };
        if kept.len().saturating_add(data.len()) > limit {
            let drained = tokio::time::timeout(DISCARD_TIME, discard(&mut body, DISCARD_BYTES))
                .await
                .unwrap_or(false);
            return Err(BodyError::TooLarge { drained });
        }
        kept.extend_from_slice(&data);
    }
    Ok(kept.into())
}

/// Reads the rest of a body and drops it, up to `cap` bytes; whether it
/// ended within that bound. After an early 413 the whole body is drained
/// (only [`DISCARD_TIME`] bounds it), so the connection is not reset under
/// the answer.
async fn discard(body: &mut Incoming, cap: usize) -> bool {
    let mut dropped = 0usize;
    while let Some(Ok(frame)) = body.frame().await {
        dropped = dropped.saturating_add(frame.data_ref().map_or(0, Bytes::len));
        if dropped > cap {
            return false;
        }
    }
    true
}

async fn publish(app: Arc<App>, req: Request<Incoming>) -> Response<Body> {
    if let Some(token) = &app.config.server.publish_token {
        if !bearer_matches(&req, token) {
            return error(StatusCode::UNAUTHORIZED, "missing or wrong bearer token");
        }
    }
    let wait = match wait_for_dispatch(&req) {
        Ok(wait) => wait,
        Err(reason) => return error(StatusCode::BAD_REQUEST, &reason),
    };
    let limit = app.config.server.max_publish_bytes;
    // A body that never finishes must not hold the connection: it gets the
    // same time as a request head.
    let deadline = Duration::from_millis(app.config.server.header_read_timeout_ms);
    let read = tokio::time::timeout(deadline, read_body(req.into_body(), limit)).await;
    let Ok(read) = read else {
        let mut res = error(
            StatusCode::REQUEST_TIMEOUT,
            "the body did not arrive in time",
        );
        res.headers_mut()
            .insert(header::CONNECTION, HeaderValue::from_static("close"));
        return res;
    };
    let body = match read {
        Ok(body) => body,
        Err(BodyError::TooLarge { drained }) => {
            let mut res = error(
                StatusCode::PAYLOAD_TOO_LARGE,
                &format!("body exceeds {limit} bytes"),
            );
            if !drained {
                res.headers_mut()
                    .insert(header::CONNECTION, HeaderValue::from_static("close"));
            }
            return res;
        }
        Err(BodyError::Read(e)) => {
            return error(StatusCode::BAD_REQUEST, &format!("cannot read body: {e}"))
        }
    };
    let events = match publish::parse_events(&body) {
        Ok(events) => events,
        Err(reason) => {
            app.engine
                .metrics()
                .drops
                .get_or_create(&Reason {
                    reason: "bad_publish",
                })
                .inc();
            return error(StatusCode::BAD_REQUEST, &reason);
        }
    };
    let accepted = events.len();
    let (status, body) = match app.node.bus().publish(events).await {
        Ok(Published::Accepted(receipt)) if wait => {
            let done = receipt.dispatched().await;
            (
                StatusCode::OK,
                json!({ "accepted": accepted, "deliveries": done.delivered() }),
            )
        }
        Ok(Published::Accepted(_)) => (StatusCode::OK, json!({ "accepted": accepted })),
        Ok(Published::Stored) => (
            StatusCode::OK,
            json!({ "accepted": accepted, "stored": true }),
        ),
        // Delivered on this node already; held here until the broker is back.
        Ok(Published::Queued) => (
            StatusCode::ACCEPTED,
            json!({ "accepted": accepted, "queued": true }),
        ),
        Err(e) => {
            let mut res = respond(
                StatusCode::SERVICE_UNAVAILABLE,
                "application/json",
                json!({ "error": e.to_string() }).to_string(),
            );
            res.headers_mut()
                .insert(header::RETRY_AFTER, HeaderValue::from_static("1"));
            return res;
        }
    };
    respond(status, "application/json", body.to_string())
}

/// Whether a publish asks to be answered once its events are fanned out
/// (`?wait=dispatched`), rather than once they are accepted.
fn wait_for_dispatch(req: &Request<Incoming>) -> Result<bool, String> {
    let mut wait = false;
    for pair in req.uri().query().unwrap_or_default().split('&') {
        match pair.split_once('=').unwrap_or((pair, "")) {
            ("wait", "dispatched") => wait = true,
            ("wait", "accepted") => wait = false,
            ("wait", other) => {
                return Err(format!(
                    "unknown wait={other:?}: use wait=dispatched or wait=accepted"
                ))
            }
            _ => {}
        }
    }
    Ok(wait)
}

/// `POST /admin/plugins/reload`: reloads every plugin whose file changed
/// (bearer `plugin_runtime.admin_token`); answers what was reloaded and rejected.
async fn reload_plugins(app: Arc<App>, req: Request<Incoming>) -> Response<Body> {
    let Some(token) = &app.config.plugin_runtime.admin_token else {
        return error(
            StatusCode::NOT_FOUND,
            "the admin API is disabled: set plugin_runtime.admin_token",
        );
    };
    if !bearer_matches(&req, token) {
        return error(StatusCode::UNAUTHORIZED, "missing or wrong bearer token");
    }
    match crate::reload_plugins(&app).await {
        Some(report) => {
            let rejected: Vec<_> = report
                .rejected
                .iter()
                .map(|(plugin, reason)| json!({"plugin": plugin, "reason": reason}))
                .collect();
            let body = json!({
                "reloaded": report.reloaded,
                "rejected": rejected,
                "revoked_groups": report.revoked,
            });
            respond(StatusCode::OK, "application/json", body.to_string())
        }
        None => error(StatusCode::NOT_FOUND, "no plugins are configured"),
    }
}

fn constant_time_eq(a: &[u8], b: &[u8]) -> bool {
    a.len() == b.len() && a.iter().zip(b).fold(0u8, |acc, (x, y)| acc | (x ^ y)) == 0
}

/// The key of a client's per-address connection bucket: its IPv4 address,
/// or the /64 of its IPv6 address (what one host usually holds).
fn address_key(peer: SocketAddr) -> IpAddr {
    match peer.ip() {
        IpAddr::V6(v6) => match v6.to_ipv4_mapped() {
            Some(v4) => IpAddr::V4(v4),
            None => IpAddr::V6((u128::from(v6) & !((1u128 << 64) - 1)).into()),
        },
        v4 => v4,
    }
}

/// Takes a connection token from the client's address bucket, then from
/// the node's; `Err` holds how long the client should wait.
fn admit(app: &App, peer: SocketAddr) -> Result<(), Duration> {
    let now = Instant::now();
    // A poisoned lock only means a panic elsewhere mid-update of a bucket;
    // the numbers are still usable.
    app.address_buckets
        .lock()
        .unwrap_or_else(|p| p.into_inner())
        .try_take(address_key(peer), now)?;
    let mut global = app
        .connection_bucket
        .lock()
        .unwrap_or_else(|p| p.into_inner());
    if global.try_take(now) {
        Ok(())
    } else {
        Err(global.wait(now))
    }
}

fn upgrade(app: Arc<App>, mut req: Request<Incoming>, peer: SocketAddr) -> Response<Body> {
    let headers = req.headers();
    let has_token = |name: header::HeaderName, token: &str| {
        headers
            .get_all(name)
            .iter()
            .filter_map(|v| v.to_str().ok())
            .any(|v| v.split(',').any(|t| t.trim().eq_ignore_ascii_case(token)))
    };
    let key = headers
        .get(header::SEC_WEBSOCKET_KEY)
        .map(|k| derive_accept_key(k.as_bytes()));
    let version_ok = headers
        .get(header::SEC_WEBSOCKET_VERSION)
        .is_some_and(|v| v == "13");
    let (Some(accept), true, true, true) = (
        key,
        version_ok,
        has_token(header::UPGRADE, "websocket"),
        has_token(header::CONNECTION, "upgrade"),
    ) else {
        return error(
            StatusCode::UPGRADE_REQUIRED,
            "this endpoint speaks GraphQL over WebSocket only",
        );
    };
    let metrics = app.engine.metrics();
    // Held by the connection's task until it ends.
    let Some(slot) = app.websockets.try_take() else {
        metrics
            .connection_rejections
            .get_or_create(&Reason {
                reason: "max_connections",
            })
            .inc();
        return error(StatusCode::SERVICE_UNAVAILABLE, "too many connections");
    };
    if let Err(wait) = admit(&app, peer) {
        metrics
            .connection_rejections
            .get_or_create(&Reason {
                reason: "rate_limited",
            })
            .inc();
        let mut res = error(
            StatusCode::TOO_MANY_REQUESTS,
            "too many new connections; retry after the Retry-After seconds, with jitter",
        );
        let seconds = wait.as_secs_f64().ceil().clamp(1.0, 3600.0) as u64;
        res.headers_mut()
            .insert(header::RETRY_AFTER, HeaderValue::from(seconds));
        return res;
    }
    let offered: Vec<&str> = headers
        .get_all(header::SEC_WEBSOCKET_PROTOCOL)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .collect();
    let mut protocol = Protocol::negotiate(&offered.join(","));
    // A subprotocol that a transport-adapter plugin serves: the session
    // runs graphql-transport-ws and the adapter translates (see ws.rs).
    let mut adapter = None;
    if protocol.is_none() {
        let names: Vec<&str> = offered
            .iter()
            .flat_map(|o| o.split(','))
            .map(str::trim)
            .collect();
        adapter = app.node.plugins().and_then(|p| {
            p.transports()
                .into_iter()
                .find(|t| names.contains(&t.subprotocol()))
        });
        if adapter.is_some() {
            protocol = Some(Protocol::TransportWs);
        }
    }

    let mut res = Response::new(Full::new(Bytes::new()));
    *res.status_mut() = StatusCode::SWITCHING_PROTOCOLS;
    let h = res.headers_mut();
    h.insert(header::UPGRADE, HeaderValue::from_static("websocket"));
    h.insert(header::CONNECTION, HeaderValue::from_static("Upgrade"));
    if let Ok(accept) = HeaderValue::from_str(&accept) {
        h.insert(header::SEC_WEBSOCKET_ACCEPT, accept);
    }
    // With no acceptable subprotocol the reference server omits the header,
    // which makes browsers fail the handshake without a reason. Echoing the
    // client's first choice lets every client see the 4406 close and why.
    let chosen = adapter
        .as_ref()
        .map(|a| a.subprotocol())
        .or(protocol.map(Protocol::name))
        .or_else(|| offered.first().and_then(|o| o.split(',').next()));
    if let Some(value) = chosen.and_then(|p| HeaderValue::from_str(p.trim()).ok()) {
        h.insert(header::SEC_WEBSOCKET_PROTOCOL, value);
    }
    let headers: Vec<(String, String)> = req
        .headers()
        .iter()
        .filter_map(|(name, value)| {
            Some((name.as_str().to_owned(), value.to_str().ok()?.to_owned()))
        })
        .collect();
    let on_upgrade = hyper::upgrade::on(&mut req);
    tokio::spawn(async move {
        let _slot = slot;
        // The socket itself, not hyper's boxed IO: results write to it from
        // the dispatching thread (see wire.rs).
        match on_upgrade.await.map(|u| u.downcast::<TokioIo<HttpIo>>()) {
            Ok(Ok(parts)) => match parts.io.into_inner().into_stream().await {
                Ok(stream) => {
                    ws::serve(app, stream, parts.read_buf, protocol, headers, adapter).await
                }
                Err(e) => tracing::debug!(error = %e, "websocket upgrade failed"),
            },
            // Every connection is served over a TcpStream (spawn_connection).
            Ok(Err(_)) => tracing::error!("websocket upgrade over an unexpected transport"),
            Err(e) => tracing::debug!(error = %e, "websocket upgrade failed"),
        }
    });
    res
}

/// The socket under an HTTP connection. It writes the header names of a
/// 101 response in their canonical case (`Sec-WebSocket-Protocol`): hyper
/// writes `sec-websocket-protocol`, or `Sec-Websocket-Protocol` with
/// title case, and clients that look the name up case-sensitively (Python
/// `gql`) then miss the chosen subprotocol and fall back to another.
/// Every other write passes straight through.
#[derive(Debug)]
pub(crate) struct HttpIo {
    stream: TcpStream,
    /// A rewritten 101 head not yet written: it goes before any other byte.
    head: Vec<u8>,
    head_written: usize,
}

const SWITCHING_PROTOCOLS: &[u8] = b"HTTP/1.1 101 ";

impl HttpIo {
    fn new(stream: TcpStream) -> Self {
        HttpIo {
            stream,
            head: Vec::new(),
            head_written: 0,
        }
    }

    fn poll_write_head(&mut self, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        while self.head_written < self.head.len() {
            let rest = &self.head[self.head_written..];
            let n = ready!(Pin::new(&mut self.stream).poll_write(cx, rest))?;
            if n == 0 {
                return Poll::Ready(Err(io::ErrorKind::WriteZero.into()));
            }
            self.head_written += n;
        }
        self.head = Vec::new();
        self.head_written = 0;
        Poll::Ready(Ok(()))
    }

    /// Takes `buf` if it is a 101 response head: its bytes are kept,
    /// rewritten, and written before anything else.
    fn take_switching_head(
        &mut self,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Option<io::Result<usize>> {
        if !buf.starts_with(SWITCHING_PROTOCOLS) {
            return None;
        }
        self.head = canonical_head(buf);
        self.head_written = 0;
        // Whatever the socket does not take now, flush writes.
        match self.poll_write_head(cx) {
            Poll::Ready(Err(e)) => Some(Err(e)),
            _ => Some(Ok(buf.len())),
        }
    }

    /// The socket, once any kept head has been written.
    pub(crate) async fn into_stream(mut self) -> io::Result<TcpStream> {
        std::future::poll_fn(|cx| self.poll_write_head(cx)).await?;
        Ok(self.stream)
    }
}

/// `buf` with the header names of its head (up to the blank line) in
/// canonical case; the same length, so byte counts stay true.
fn canonical_head(buf: &[u8]) -> Vec<u8> {
    let mut out = buf.to_vec();
    let end = out
        .windows(4)
        .position(|w| w == b"\r\n\r\n")
        .unwrap_or(out.len());
    let line_end = |out: &[u8], from: usize| {
        out[from..end]
            .windows(2)
            .position(|w| w == b"\r\n")
            .map_or(end, |i| from + i)
    };
    // The status line is left alone.
    let mut at = line_end(&out, 0) + 2;
    while at < end {
        let next = line_end(&out, at);
        if let Some(colon) = out[at..next].iter().position(|&b| b == b':') {
            canonical_name(&mut out[at..at + colon]);
        }
        at = next + 2;
    }
    out
}

/// `sec-websocket-accept` becomes `Sec-WebSocket-Accept`, in place.
fn canonical_name(name: &mut [u8]) {
    for word in name.split_mut(|&b| b == b'-') {
        if word.eq_ignore_ascii_case(b"websocket") {
            word.copy_from_slice(b"WebSocket");
        } else if let Some((first, rest)) = word.split_first_mut() {
            first.make_ascii_uppercase();
            rest.make_ascii_lowercase();
        }
    }
}

impl AsyncRead for HttpIo {
    fn poll_read(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        Pin::new(&mut self.get_mut().stream).poll_read(cx, buf)
    }
}

impl AsyncWrite for HttpIo {
    fn poll_write(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        let this = self.get_mut();
        ready!(this.poll_write_head(cx))?;
        if let Some(taken) = this.take_switching_head(cx, buf) {
            return Poll::Ready(taken);
        }
        Pin::new(&mut this.stream).poll_write(cx, buf)
    }

    fn poll_write_vectored(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[io::IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        let this = self.get_mut();
        ready!(this.poll_write_head(cx))?;
        // hyper puts a whole response head in one slice.
        if let Some(first) = bufs.iter().find(|b| !b.is_empty()) {
            if let Some(taken) = this.take_switching_head(cx, first) {
                return Poll::Ready(taken);
            }
        }
        Pin::new(&mut this.stream).poll_write_vectored(cx, bufs)
    }

    fn is_write_vectored(&self) -> bool {
        self.stream.is_write_vectored()
    }

    fn poll_flush(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        let this = self.get_mut();
        ready!(this.poll_write_head(cx))?;
        Pin::new(&mut this.stream).poll_flush(cx)
    }

    fn poll_shutdown(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        let this = self.get_mut();
        ready!(this.poll_write_head(cx))?;
        Pin::new(&mut this.stream).poll_shutdown(cx)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_switching_head_gets_canonical_names() {
        let head = b"HTTP/1.1 101 Switching Protocols\r\nupgrade: websocket\r\nconnection: Upgrade\r\nSec-Websocket-Accept: x=\r\nsec-websocket-protocol: graphql-ws\r\ndate: now\r\n\r\n";
        let out = canonical_head(head);
        assert_eq!(
            String::from_utf8(out).unwrap(),
            "HTTP/1.1 101 Switching Protocols\r\nUpgrade: websocket\r\nConnection: Upgrade\r\nSec-WebSocket-Accept: x=\r\nSec-WebSocket-Protocol: graphql-ws\r\nDate: now\r\n\r\n"
        );
    }

    #[test]
    fn ipv6_clients_share_a_bucket_per_64() {
        let a: SocketAddr = "[2001:db8:1:2:aaaa::1]:5".parse().unwrap();
        let b: SocketAddr = "[2001:db8:1:2:bbbb::9]:6".parse().unwrap();
        let c: SocketAddr = "[2001:db8:1:3::1]:6".parse().unwrap();
        assert_eq!(address_key(a), address_key(b));
        assert_ne!(address_key(a), address_key(c));
        let mapped: SocketAddr = "[::ffff:10.0.0.1]:1".parse().unwrap();
        assert_eq!(address_key(mapped), "10.0.0.1".parse::<IpAddr>().unwrap());
    }

    #[test]
    fn slots_never_exceed_their_bound() {
        let slots = Slots::new(2);
        let a = slots.try_take().unwrap();
        let _b = slots.try_take().unwrap();
        assert!(slots.try_take().is_none());
        drop(a);
        assert!(slots.try_take().is_some());
    }
}
