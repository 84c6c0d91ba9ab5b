//! graphql-transport-ws and legacy graphql-ws over real sockets: exact frames and close codes.

use crate::common;

use common::{Client, TestServer, WAIT};
use serde_json::json;

const ORDER: &str = "subscription($t: ID!) { orderCreated(tenantId: $t) { id total: cents } }";

#[tokio::test]
async fn subscribe_receive_complete() {
    let server = TestServer::start(|_| {}).await;
    let mut c = server.ready_client().await;
    assert_eq!(c.protocol.as_deref(), Some("graphql-transport-ws"));
    c.subscribe("a", ORDER, json!({"t": "5"})).await;
    server
        .eventually("subscribed", |s| s.metric("fanwire_subscriptions") == 1.0)
        .await;
    let (status, body) = server
        .publish(
            r#"{"topic":"orders:5","data":{"id":1,"cents":1999,"x":true}}"#,
            None,
        )
        .await;
    assert_eq!(
        (status, body),
        (200, json!({"accepted": 1, "deliveries": 1}))
    );
    assert_eq!(
        c.recv().await,
        json!({"id": "a", "type": "next", "payload": {"data": {"orderCreated": {"id": "1", "total": 1999}}}})
    );
    c.send(json!({"id": "a", "type": "complete"})).await;
    server
        .eventually("unsubscribed", |s| s.metric("fanwire_subscriptions") == 0.0)
        .await;
    assert_eq!(server.metric("fanwire_groups"), 0.0);
    assert_eq!(server.metric("fanwire_topics"), 0.0);
    // The id is free again.
    c.subscribe("a", ORDER, json!({"t": "6"})).await;
    server
        .eventually("resubscribed", |s| s.metric("fanwire_subscriptions") == 1.0)
        .await;
    server
        .publish(r#"{"topic":"orders:6","data":{"id":"2","cents":5}}"#, None)
        .await;
    assert_eq!(c.recv().await["payload"]["data"]["orderCreated"]["id"], "2");
}

#[tokio::test]
async fn ping_is_answered_with_pong() {
    let server = TestServer::start(|_| {}).await;
    let mut c = server.ready_client().await;
    c.send(json!({"type": "ping", "payload": {"n": 1}})).await;
    assert_eq!(c.recv().await, json!({"type": "pong", "payload": {"n": 1}}));
    c.send(json!({"type": "pong"})).await;
    c.send(json!({"type": "ping"})).await;
    assert_eq!(c.recv().await, json!({"type": "pong"}));
}

#[tokio::test]
async fn invalid_documents_get_an_error_message_and_no_close() {
    let server = TestServer::start(|_| {}).await;
    let mut c = server.ready_client().await;
    c.subscribe(
        "x",
        "subscription { orderCreated(tenantId: 1) { nope } }",
        json!({}),
    )
    .await;
    let msg = c.recv().await;
    assert_eq!(msg["type"], "error");
    assert_eq!(msg["id"], "x");
    assert_eq!(
        msg["payload"][0]["extensions"]["code"],
        "GRAPHQL_VALIDATION_FAILED"
    );
    assert!(
        msg["payload"][0]["locations"][0]["line"].is_number(),
        "{msg}"
    );
    c.subscribe("x", "subscription {", json!({})).await;
    let msg = c.recv().await;
    assert_eq!(
        msg["payload"][0]["extensions"]["code"],
        "GRAPHQL_PARSE_FAILED"
    );
    c.subscribe("x", ORDER, json!({})).await;
    let msg = c.recv().await;
    assert_eq!(
        msg["payload"][0]["extensions"]["code"], "BAD_USER_INPUT",
        "{msg}"
    );
    // Still open, and the id is usable.
    c.subscribe("x", ORDER, json!({"t": "1"})).await;
    c.send(json!({"type": "ping"})).await;
    assert_eq!(c.recv().await, json!({"type": "pong"}));
    assert_eq!(server.metric("fanwire_subscriptions"), 1.0);
}

async fn expect_close(c: &mut Client, code: u16) -> String {
    let (got, reason) = c.closed().await;
    assert_eq!(got, code, "close reason: {reason}");
    reason
}

#[tokio::test]
async fn every_close_code_of_the_protocol_table() {
    let server = TestServer::start(|c| c.limits.init_timeout_ms = 200).await;

    let mut c = Client::connect(server.addr, None).await;
    assert_eq!(
        expect_close(&mut c, 4406).await,
        "Subprotocol not acceptable"
    );
    let mut c = Client::connect(server.addr, Some("something-else")).await;
    expect_close(&mut c, 4406).await;

    let mut c = server.client("graphql-transport-ws").await;
    expect_close(&mut c, 4408).await;

    let mut c = server.ready_client().await;
    c.send(json!({"type": "connection_init"})).await;
    expect_close(&mut c, 4429).await;

    let mut c = server.client("graphql-transport-ws").await;
    c.subscribe("1", ORDER, json!({"t": "1"})).await;
    expect_close(&mut c, 4401).await;

    let mut c = server.ready_client().await;
    c.subscribe("1", ORDER, json!({"t": "1"})).await;
    c.subscribe("1", ORDER, json!({"t": "1"})).await;
    assert_eq!(
        expect_close(&mut c, 4409).await,
        "Subscriber for 1 already exists"
    );

    for bad in [
        "not json",
        r#"{"type":"bogus"}"#,
        r#"{"type":"subscribe","payload":{"query":"{}"}}"#,
        "[1]",
    ] {
        let mut c = server.ready_client().await;
        c.send_text(bad).await;
        expect_close(&mut c, 4400).await;
    }
    server
        .eventually("closed connections are released", |s| {
            s.metric("fanwire_connections") == 0.0
        })
        .await;
    assert_eq!(server.metric("fanwire_subscriptions"), 0.0);
}

#[tokio::test]
async fn oversized_messages_close_with_1009() {
    let server = TestServer::start(|c| {
        c.limits.max_message_bytes = 4096;
        c.limits.max_document_bytes = 2048;
    })
    .await;
    let mut c = server.ready_client().await;
    let big = format!("subscription {{ tick {{ seq }} }} #{}", "x".repeat(3000));
    c.subscribe("1", &big, json!({})).await;
    assert_eq!(
        c.recv().await["payload"][0]["extensions"]["code"],
        "LIMIT_EXCEEDED"
    );
    c.send_text(&"y".repeat(10_000)).await;
    expect_close(&mut c, 1009).await;
}

#[tokio::test]
async fn legacy_protocol_start_data_stop() {
    let server = TestServer::start(|_| {}).await;
    let mut c = server.client("graphql-ws").await;
    assert_eq!(c.protocol.as_deref(), Some("graphql-ws"));
    c.send(json!({"type": "connection_init", "payload": {}}))
        .await;
    assert_eq!(c.recv().await, json!({"type": "connection_ack"}));
    assert_eq!(c.recv().await, json!({"type": "ka"}));
    c.send(
        json!({"id": "1", "type": "start", "payload": {"query": "subscription { tick { seq } }"}}),
    )
    .await;
    server
        .eventually("subscribed", |s| s.metric("fanwire_subscriptions") == 1.0)
        .await;
    server
        .publish(r#"{"topic":"ticks:demo","data":{"seq":7}}"#, None)
        .await;
    assert_eq!(
        c.recv().await,
        json!({"id": "1", "type": "data", "payload": {"data": {"tick": {"seq": 7}}}})
    );
    c.send(json!({"id": "1", "type": "stop"})).await;
    server
        .eventually("stopped", |s| s.metric("fanwire_subscriptions") == 0.0)
        .await;
    c.send(json!({"id": "2", "type": "start", "payload": {"query": "subscription { nope }"}}))
        .await;
    let msg = c.recv().await;
    assert_eq!(
        (msg["id"].clone(), msg["type"].clone()),
        (json!("2"), json!("data"))
    );
    assert_eq!(
        msg["payload"]["errors"][0]["extensions"]["code"],
        "GRAPHQL_VALIDATION_FAILED"
    );
    assert_eq!(c.recv().await, json!({"id": "2", "type": "complete"}));
    c.send(json!({"type": "connection_terminate"})).await;
    expect_close(&mut c, 1000).await;
}

#[tokio::test]
async fn graphql_transport_ws_is_preferred_when_both_are_offered() {
    let server = TestServer::start(|_| {}).await;
    let c = server.client("graphql-ws, graphql-transport-ws").await;
    assert_eq!(c.protocol.as_deref(), Some("graphql-transport-ws"));
}

#[tokio::test]
async fn keep_alive_pings_and_dead_peers_are_dropped() {
    let server = TestServer::start(|c| c.limits.keep_alive_ms = 100).await;
    let mut c = server.ready_client().await;
    // A reading client answers pings and stays.
    let mut pings = 0;
    while pings < 3 {
        use futures_util::StreamExt;
        match tokio::time::timeout(common::WAIT, c.ws.next())
            .await
            .unwrap()
            .unwrap()
            .unwrap()
        {
            tokio_tungstenite::tungstenite::Message::Ping(_) => pings += 1,
            other => panic!("unexpected {other:?}"),
        }
    }
    assert_eq!(server.metric("fanwire_connections"), 1.0);
    // A client that stops reading (so never answers) is dropped as dead.
    server
        .eventually("dead peer dropped", |s| {
            s.metric("fanwire_connections") == 0.0
        })
        .await;
    let m = server.metrics();
    assert_eq!(
        common::metric_value(
            &m,
            "fanwire_connection_rejections_total{reason=\"dead_peer\"}"
        ),
        1.0,
        "{m}"
    );
    // Its socket ends: the pings already sent, then nothing.
    loop {
        use futures_util::StreamExt;
        match tokio::time::timeout(common::WAIT, c.ws.next())
            .await
            .expect("the socket ends")
        {
            Some(Ok(tokio_tungstenite::tungstenite::Message::Ping(_))) => continue,
            None | Some(Err(_)) => break,
            Some(other) => panic!("unexpected {other:?}"),
        }
    }
}

#[tokio::test]
async fn graceful_shutdown_closes_clients_with_1001() {
    let mut server = TestServer::start(|_| {}).await;
    let mut a = server.ready_client().await;
    let mut b = server.client("graphql-ws").await;
    server
        .eventually("both connected", |s| s.metric("fanwire_connections") == 2.0)
        .await;
    let (mut a2, mut b2) = (
        tokio::spawn(async move { a.closed().await }),
        tokio::spawn(async move { b.closed().await }),
    );
    server.shutdown().await;
    assert_eq!((&mut a2).await.unwrap().0, 1001);
    assert_eq!((&mut b2).await.unwrap().0, 1001);
    // The listener is gone.
    assert!(tokio::net::TcpStream::connect(server.addr).await.is_err());
}

/// Publishes events `seq` 1 to `count` in batches of 32.
async fn publish_blobs(server: &TestServer, count: u64) {
    let seqs: Vec<u64> = (1..=count).collect();
    for chunk in seqs.chunks(32) {
        server.publish_blobs(chunk).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn shutdown_flushes_queued_results_before_the_1001() {
    let mut server = TestServer::start(|c| {
        c.limits.queue_depth = 100_000;
        c.limits.keep_alive_ms = 120_000;
        // A bound, not a wait: the client reads everything well before it.
        c.server.shutdown_timeout_ms = 120_000;
    })
    .await;
    let mut c = server.ready_client().await;
    c.subscribe("s", "subscription { tick { seq blob } }", json!({}))
        .await;
    server
        .eventually("subscribed", |s| s.metric("fanwire_subscriptions") == 1.0)
        .await;
    // 32 MB the client does not read: more than the kernel buffers hold, so
    // results are still queued in the server when shutdown begins.
    let events = 2_000;
    publish_blobs(&server, events).await;
    server.begin_shutdown();
    let deadline = tokio::time::Instant::now() + WAIT;
    while tokio::net::TcpStream::connect(server.addr).await.is_ok() {
        assert!(
            tokio::time::Instant::now() < deadline,
            "the listener never closed"
        );
        tokio::time::sleep(std::time::Duration::from_millis(10)).await;
    }
    for seq in 1..=events {
        let msg = c.recv().await;
        assert_eq!(
            msg["payload"]["data"]["tick"]["seq"], seq,
            "every result, in order"
        );
    }
    assert_eq!(c.closed().await.0, 1001);
    server.shutdown().await;
    assert_eq!(server.drops("queue_full"), 0);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn shutdown_returns_after_its_timeout_when_a_client_cannot_be_closed() {
    let mut server = TestServer::start(|c| {
        c.limits.queue_depth = 8;
        // Left alone, the stalled connection would live for minutes.
        c.limits.keep_alive_ms = 120_000;
        c.server.shutdown_timeout_ms = 200;
    })
    .await;
    let mut stalled = server.ready_client().await;
    stalled
        .subscribe("s", "subscription { tick { seq blob } }", json!({}))
        .await;
    server
        .eventually("subscribed", |s| s.metric("fanwire_subscriptions") == 1.0)
        .await;
    // Enough that the queue overflows: the socket is backed up and the
    // server's writer is stuck in a write the client never reads.
    let mut published = 0;
    while server.drops("queue_full") == 0 {
        assert!(published < 10_000, "the stalled socket never backed up");
        publish_blobs(&server, 64).await;
        published += 64;
    }
    // `run` returns (within `WAIT`, or `shutdown` fails the test) while the
    // connection it could not close is still open: the timeout ended the
    // wait, not the connection. (Without the timeout, `run` waits for the
    // connection to end, and it is no longer counted here.)
    server.shutdown().await;
    assert_eq!(server.metric("fanwire_connections"), 1.0, "still stuck");
    drop(stalled);
}

/// A raw upgrade request offering both subprotocols, as Python `gql` does
/// by default, optionally from another loopback address; returns the
/// response head and the socket.
async fn raw_upgrade(
    addr: std::net::SocketAddr,
    from: Option<std::net::IpAddr>,
) -> (String, tokio::net::TcpStream) {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let socket = tokio::net::TcpSocket::new_v4().unwrap();
    if let Some(ip) = from {
        socket.bind((ip, 0).into()).unwrap();
    }
    let mut stream = socket.connect(addr).await.unwrap();
    stream
        .write_all(
            b"GET /graphql HTTP/1.1\r\nHost: t\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n\
              Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\nSec-WebSocket-Version: 13\r\n\
              Sec-WebSocket-Protocol: graphql-ws, graphql-transport-ws\r\n\r\n",
        )
        .await
        .unwrap();
    // Byte by byte, so nothing after the head is taken from the socket.
    let mut head = Vec::new();
    let mut byte = [0u8; 1];
    tokio::time::timeout(common::WAIT, async {
        while !head.ends_with(b"\r\n\r\n") {
            let n = stream.read(&mut byte).await.expect("a response head");
            assert_eq!(n, 1, "closed before the head ended: {head:?}");
            head.push(byte[0]);
        }
    })
    .await
    .expect("the response head arrives");
    (String::from_utf8(head).unwrap(), stream)
}

#[tokio::test]
async fn the_upgrade_response_names_its_headers_in_canonical_case() {
    let server = TestServer::start(|_| {}).await;
    let (head, _stream) = raw_upgrade(server.addr, None).await;
    let mut lines = head.lines();
    assert_eq!(lines.next(), Some("HTTP/1.1 101 Switching Protocols"));
    let names: Vec<&str> = lines
        .filter_map(|l| l.split_once(':').map(|(name, _)| name))
        .collect();
    for name in [
        "Upgrade",
        "Connection",
        "Sec-WebSocket-Accept",
        "Sec-WebSocket-Protocol",
    ] {
        assert!(names.contains(&name), "{name} missing from\n{head}");
    }
    assert!(
        head.contains("Sec-WebSocket-Accept: s3pPLMBiTxaQ9kYGzzhZRbK+xOo=\r\n")
            && head.contains("Sec-WebSocket-Protocol: graphql-transport-ws\r\n"),
        "{head}"
    );
}

#[tokio::test]
async fn concurrent_upgrades_never_exceed_max_connections() {
    let server = TestServer::start(|c| c.limits.max_connections = 5).await;
    let heads =
        futures_util::future::join_all((0..100).map(|_| raw_upgrade(server.addr, None))).await;
    let admitted = heads
        .iter()
        .filter(|(head, _)| head.starts_with("HTTP/1.1 101 "))
        .count();
    let refused = heads
        .iter()
        .filter(|(head, _)| head.starts_with("HTTP/1.1 503 "))
        .count();
    assert_eq!((admitted, refused), (5, 95));
}

#[tokio::test]
async fn one_address_exhausting_its_bucket_does_not_stop_another() {
    let server = TestServer::start(|c| {
        c.limits.connection_burst = 4.0;
        c.limits.connections_per_second = 0.001;
        c.server.connection_share_per_address = 0.5;
    })
    .await;
    let one: std::net::IpAddr = "127.0.0.1".parse().unwrap();
    let two: std::net::IpAddr = "127.0.0.2".parse().unwrap();
    let mut open = Vec::new();
    for _ in 0..2 {
        let (head, s) = raw_upgrade(server.addr, Some(one)).await;
        assert!(head.starts_with("HTTP/1.1 101 "), "{head}");
        open.push(s);
    }
    let (head, _) = raw_upgrade(server.addr, Some(one)).await;
    assert!(head.starts_with("HTTP/1.1 429 "), "{head}");
    let retry_after: u64 = head
        .lines()
        .find_map(|l| l.strip_prefix("Retry-After: "))
        .expect("a Retry-After header")
        .parse()
        .unwrap();
    assert!(retry_after >= 1, "{head}");
    let (head, _s) = raw_upgrade(server.addr, Some(two)).await;
    assert!(head.starts_with("HTTP/1.1 101 "), "{head}");
}

#[tokio::test]
async fn an_oversized_message_sent_in_one_go_reads_the_1009_close() {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let server = TestServer::start(|c| {
        c.limits.max_message_bytes = 4096;
        c.limits.max_document_bytes = 4096;
    })
    .await;
    let (head, stream) = raw_upgrade(server.addr, None).await;
    assert!(head.starts_with("HTTP/1.1 101 "), "{head}");
    let (mut read, mut write) = stream.into_split();
    // One masked text frame of 2 MiB (a zero mask leaves the bytes as they are).
    let len: u64 = 2 << 20;
    let mut frame = vec![0x81, 0x80 | 127];
    frame.extend_from_slice(&len.to_be_bytes());
    frame.extend_from_slice(&[0, 0, 0, 0]);
    frame.resize(frame.len() + len as usize, b'x');
    let writer = tokio::spawn(async move {
        let _ = write.write_all(&frame).await;
        write
    });
    // The server's first frame is its close: 0x88, length, code.
    let mut close = [0u8; 4];
    tokio::time::timeout(common::WAIT, read.read_exact(&mut close))
        .await
        .expect("the close frame arrives")
        .expect("a close frame, not a reset");
    assert_eq!(close[0], 0x88, "{close:?}");
    assert_eq!(u16::from_be_bytes([close[2], close[3]]), 1009);
    drop(writer);
}
