//! The HTTP side: publish errors, auth, health and metrics.

use crate::common;

use std::time::Duration;

use common::{http_raw, http_request, TestServer, WAIT};
use serde_json::json;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

#[tokio::test]
async fn bad_publish_bodies_get_a_reason_and_publish_nothing() {
    let server = TestServer::start(|c| c.server.max_publish_bytes = 1024).await;
    let mut c = server.ready_client().await;
    c.subscribe("1", "subscription { tick { seq } }", json!({}))
        .await;
    server
        .eventually("subscribed", |s| s.metric("fanwire_subscriptions") == 1.0)
        .await;
    for (body, status, needle) in [
        ("{", 400, "not valid JSON"),
        (
            r#"[{"topic":"ticks:demo","data":{"seq":1}},{"topic":"ticks:demo"}]"#,
            400,
            "event 1",
        ),
        (r#""hello""#, 400, "event object"),
    ] {
        let (got, reply) = server.publish(body, None).await;
        assert_eq!(got, status, "{reply}");
        assert!(reply["error"].as_str().unwrap().contains(needle), "{reply}");
    }
    let big = format!(r#"{{"topic":"ticks:demo","data":"{}"}}"#, "x".repeat(2000));
    assert_eq!(server.publish(&big, None).await.0, 413);
    assert_eq!(
        server.metric("fanwire_events_in_total"),
        0.0,
        "nothing of a bad body was published"
    );
    // A good one still goes through, and is the first frame the client sees.
    assert_eq!(
        server
            .publish(r#"{"topic":"ticks:demo","data":{"seq":9}}"#, None)
            .await
            .0,
        200
    );
    assert_eq!(c.recv().await["payload"]["data"]["tick"]["seq"], 9);
}

#[tokio::test]
async fn publish_answers_once_accepted_or_on_request_once_dispatched() {
    let server = TestServer::start(|_| {}).await;
    let mut c = server.ready_client().await;
    c.subscribe("t", "subscription { tick { seq } }", json!({}))
        .await;
    server
        .eventually("subscribed", |s| s.metric("fanwire_subscriptions") == 1.0)
        .await;
    let body = |seq: u64| json!({"topic": "ticks:demo", "data": {"seq": seq}}).to_string();
    // By default the answer only says the events are in: numbered, queued,
    // fanned out next, without the publisher waiting for it.
    assert_eq!(
        http_request(server.addr, "POST", "/publish", &body(1), None).await,
        (200, json!({"accepted": 1}))
    );
    assert_eq!(
        http_request(
            server.addr,
            "POST",
            "/publish?wait=accepted",
            &body(2),
            None
        )
        .await,
        (200, json!({"accepted": 1}))
    );
    assert_eq!(
        http_request(
            server.addr,
            "POST",
            "/publish?wait=dispatched",
            &body(3),
            None
        )
        .await,
        (200, json!({"accepted": 1, "deliveries": 1}))
    );
    for seq in 1..=3 {
        assert_eq!(c.recv().await["payload"]["data"]["tick"]["seq"], seq);
    }
    let (status, answer) =
        http_request(server.addr, "POST", "/publish?wait=forever", &body(4), None).await;
    assert_eq!(status, 400);
    assert!(
        answer["error"]
            .as_str()
            .unwrap()
            .contains("wait=dispatched"),
        "{answer}"
    );
}

#[tokio::test]
async fn publish_requires_the_configured_token() {
    let server = TestServer::start(|c| c.server.publish_token = Some("s3cret".into())).await;
    let body = r#"{"topic":"t","data":1}"#;
    assert_eq!(server.publish(body, None).await.0, 401);
    assert_eq!(server.publish(body, Some("wrong")).await.0, 401);
    assert_eq!(
        server.publish(body, Some("s3cret")).await,
        (200, json!({"accepted": 1, "deliveries": 0}))
    );
}

#[tokio::test]
async fn health_metrics_page_and_unknown_routes() {
    let server = TestServer::start(|_| {}).await;
    let (status, health) = http_request(server.addr, "GET", "/healthz", "", None).await;
    assert_eq!((status, health["status"].clone()), (200, json!("ok")));
    let (status, metrics) = http_raw(server.addr, "GET", "/metrics", "", None).await;
    assert_eq!(status, 200);
    for name in [
        "fanwire_connections",
        "fanwire_deliveries_total",
        "fanwire_dispatch_seconds_bucket",
    ] {
        assert!(metrics.contains(name), "{name} missing from\n{metrics}");
    }
    let (status, page) = http_raw(server.addr, "GET", "/", "", None).await;
    assert_eq!(status, 200);
    assert!(page.contains("graphql-transport-ws"));
    assert_eq!(
        http_request(server.addr, "GET", "/nope", "", None).await.0,
        404
    );
    assert_eq!(
        http_request(server.addr, "DELETE", "/publish", "", None)
            .await
            .0,
        405
    );
}

/// Reads until the server closes the connection; fails if it never does.
async fn closed_by_server(stream: &mut TcpStream, what: &str) -> Vec<u8> {
    let mut seen = Vec::new();
    let read = tokio::time::timeout(WAIT, async {
        let mut buf = [0u8; 4096];
        loop {
            match stream.read(&mut buf).await {
                Ok(0) | Err(_) => return,
                Ok(n) => seen.extend_from_slice(&buf[..n]),
            }
        }
    })
    .await;
    assert!(read.is_ok(), "the server never closed {what}");
    seen
}

#[tokio::test]
async fn silent_half_sent_and_idle_connections_are_closed() {
    let server = TestServer::start(|c| c.server.header_read_timeout_ms = 200).await;
    let mut silent = TcpStream::connect(server.addr).await.unwrap();
    let mut half = TcpStream::connect(server.addr).await.unwrap();
    half.write_all(b"GET /heal").await.unwrap();
    let mut idle = TcpStream::connect(server.addr).await.unwrap();
    // A keep-alive request: answered, then the connection idles.
    idle.write_all(b"GET /healthz HTTP/1.1\r\nHost: t\r\n\r\n")
        .await
        .unwrap();
    closed_by_server(&mut silent, "a socket that sends nothing").await;
    closed_by_server(&mut half, "a half-sent request line").await;
    let answered = closed_by_server(&mut idle, "an idle keep-alive connection").await;
    assert!(
        String::from_utf8_lossy(&answered).starts_with("HTTP/1.1 200 OK\r\n"),
        "the request before the idle time was answered"
    );
}

#[tokio::test]
async fn health_answers_while_many_idle_sockets_are_open_and_they_all_close() {
    let server = TestServer::start(|c| c.server.header_read_timeout_ms = 500).await;
    let mut idle = Vec::new();
    for i in 0..150 {
        let mut s = TcpStream::connect(server.addr).await.unwrap();
        if i % 2 == 0 {
            s.write_all(b"POST /publish HTTP/1.1\r\nHost: t\r\nContent-Le")
                .await
                .unwrap();
        }
        idle.push(s);
    }
    let (status, health) = http_request(server.addr, "GET", "/healthz", "", None).await;
    assert_eq!((status, health["status"].clone()), (200, json!("ok")));
    for s in &mut idle {
        closed_by_server(s, "an idle socket among many").await;
    }
}

#[tokio::test]
async fn connections_beyond_the_http_bound_get_503_and_the_bound_frees_up() {
    let server = TestServer::start(|c| {
        c.server.max_http_connections = 8;
        // Long enough that the idle sockets below stay for the whole test.
        c.server.header_read_timeout_ms = 600_000;
    })
    .await;
    let idle: Vec<TcpStream> = futures_util::future::join_all(
        (0..8).map(|_| async { TcpStream::connect(server.addr).await.unwrap() }),
    )
    .await;
    // Accepted in order: the eight idle ones hold every place.
    let (status, reply) = http_raw(server.addr, "GET", "/healthz", "", None).await;
    assert_eq!(status, 503, "{reply}");
    assert!(
        server
            .metrics()
            .contains("reason=\"max_http_connections\"} 1"),
        "{}",
        server.metrics()
    );
    drop(idle);
    let deadline = tokio::time::Instant::now() + WAIT;
    loop {
        if http_raw(server.addr, "GET", "/healthz", "", None).await.0 == 200 {
            break;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "the places of closed sockets were never given back"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

#[tokio::test]
async fn the_bearer_scheme_is_case_insensitive() {
    let server = TestServer::start(|c| c.server.publish_token = Some("s3cret".into())).await;
    let body = r#"{"topic":"t","data":1}"#;
    for (auth, status) in [
        ("bearer s3cret", 200),
        ("BEARER s3cret", 200),
        ("Bearer  s3cret", 200),
        ("Basic s3cret", 401),
        ("s3cret", 401),
        ("bearer wrong", 401),
    ] {
        let mut stream = TcpStream::connect(server.addr).await.unwrap();
        let req = format!(
            "POST /publish HTTP/1.1\r\nHost: t\r\nAuthorization: {auth}\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{body}",
            body.len()
        );
        stream.write_all(req.as_bytes()).await.unwrap();
        let reply = String::from_utf8(closed_by_server(&mut stream, "a publish").await).unwrap();
        assert!(
            reply.starts_with(&format!("HTTP/1.1 {status} ")),
            "{auth:?}: {reply}"
        );
    }
}

#[tokio::test]
async fn an_oversized_body_sent_in_one_go_reads_413() {
    let server = TestServer::start(|c| c.server.max_publish_bytes = 1024).await;
    let stream = TcpStream::connect(server.addr).await.unwrap();
    let (mut read, mut write) = stream.into_split();
    let body = vec![b'x'; 4 << 20];
    let mut req = format!(
        "POST /publish HTTP/1.1\r\nHost: t\r\nContent-Type: application/json\r\nContent-Length: {}\r\n\r\n",
        body.len()
    )
    .into_bytes();
    req.extend_from_slice(&body);
    // Sends while the test reads, as a client would; the server's reply
    // may come before the client has finished sending.
    let writer = tokio::spawn(async move {
        let _ = write.write_all(&req).await;
        write
    });
    let mut head = Vec::new();
    let mut buf = [0u8; 1024];
    tokio::time::timeout(WAIT, async {
        while !head.windows(4).any(|w| w == b"\r\n\r\n") {
            let n = read
                .read(&mut buf)
                .await
                .expect("the response, not a reset");
            assert!(n > 0, "closed before the status line");
            head.extend_from_slice(&buf[..n]);
        }
    })
    .await
    .expect("the response arrives");
    let head = String::from_utf8_lossy(&head);
    assert!(head.starts_with("HTTP/1.1 413 "), "{head}");
    drop(writer);
}
