//! HTTP routing: the WebSocket upgrade, publish, health, metrics and the demo page.

use std::convert::Infallible;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Instant;

use bytes::Bytes;
use fanwire_bus::Published;
use fanwire_core::metrics::Reason;
use fanwire_core::protocol::Protocol;
use http_body_util::{BodyExt, Full, Limited};
use hyper::body::Incoming;
use hyper::header::{self, HeaderValue};
use hyper::server::conn::http1;
use hyper::service::service_fn;
use hyper::{Method, Request, Response, StatusCode};
use hyper_util::rt::TokioIo;
use serde_json::json;
use tokio::net::TcpStream;
use tokio_tungstenite::tungstenite::handshake::derive_accept_key;

use crate::{publish, ws, App};

type Body = Full<Bytes>;

/// Serves one TCP connection until it ends or the server shuts down.
pub(crate) fn spawn_connection(app: Arc<App>, stream: TcpStream, peer: SocketAddr) {
    tokio::spawn(async move {
        let _ = stream.set_nodelay(true);
        let mut shutdown = app.shutdown.clone();
        let service_app = app.clone();
        let service = service_fn(move |req| {
            let app = service_app.clone();
            async move { Ok::<_, Infallible>(route(app, req).await) }
        });
        let conn = http1::Builder::new()
            .serve_connection(TokioIo::new(stream), service)
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

async fn route(app: Arc<App>, req: Request<Incoming>) -> Response<Body> {
    match (req.method(), req.uri().path()) {
        (&Method::GET, "/graphql") => upgrade(app, req),
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
/// (compared in constant time).
fn bearer_matches(req: &Request<Incoming>, token: &str) -> bool {
    req.headers()
        .get(header::AUTHORIZATION)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.strip_prefix("Bearer "))
        .is_some_and(|given| constant_time_eq(given.as_bytes(), token.as_bytes()))
}

async fn publish(app: Arc<App>, req: Request<Incoming>) -> Response<Body> {
    if let Some(token) = &app.config.server.publish_token {
        if !bearer_matches(&req, token) {
            return error(StatusCode::UNAUTHORIZED, "missing or wrong bearer token");
        }
    }
    let limit = app.config.server.max_publish_bytes;
    let body = match Limited::new(req.into_body(), limit).collect().await {
        Ok(body) => body.to_bytes(),
        Err(e) if e.is::<http_body_util::LengthLimitError>() => {
            return error(
                StatusCode::PAYLOAD_TOO_LARGE,
                &format!("body exceeds {limit} bytes"),
            );
        }
        Err(e) => return error(StatusCode::BAD_REQUEST, &format!("cannot read body: {e}")),
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
        Ok(Published::Delivered { deliveries }) => (
            StatusCode::OK,
            json!({ "accepted": accepted, "deliveries": deliveries }),
        ),
        Ok(Published::Stored) => (
            StatusCode::OK,
            json!({ "accepted": accepted, "stored": true }),
        ),
        // Delivered on this node already; held here until the broker is back.
        Ok(Published::Queued) => (
            StatusCode::ACCEPTED,
            json!({ "accepted": accepted, "queued": true }),
        ),
        Err(e) => (
            StatusCode::SERVICE_UNAVAILABLE,
            json!({ "error": e.to_string() }),
        ),
    };
    respond(status, "application/json", body.to_string())
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

fn upgrade(app: Arc<App>, mut req: Request<Incoming>) -> Response<Body> {
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
    let limits = &app.config.limits;
    if metrics.connections.get() as usize >= limits.max_connections {
        metrics
            .connection_rejections
            .get_or_create(&Reason {
                reason: "max_connections",
            })
            .inc();
        return error(StatusCode::SERVICE_UNAVAILABLE, "too many connections");
    }
    let admitted = app
        .connection_bucket
        .lock()
        .map(|mut b| b.try_take(Instant::now()))
        .unwrap_or(false);
    if !admitted {
        metrics
            .connection_rejections
            .get_or_create(&Reason {
                reason: "rate_limited",
            })
            .inc();
        return error(
            StatusCode::TOO_MANY_REQUESTS,
            "too many new connections; retry later",
        );
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
        // The socket itself, not hyper's boxed IO: results write to it from
        // the dispatching thread (see wire.rs).
        match on_upgrade.await.map(|u| u.downcast::<TokioIo<TcpStream>>()) {
            Ok(Ok(parts)) => {
                let stream = parts.io.into_inner();
                ws::serve(app, stream, parts.read_buf, protocol, headers, adapter).await
            }
            // Every connection is served over a TcpStream (spawn_connection).
            Ok(Err(_)) => tracing::error!("websocket upgrade over an unexpected transport"),
            Err(e) => tracing::debug!(error = %e, "websocket upgrade failed"),
        }
    });
    res
}
