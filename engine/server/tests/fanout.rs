//! Grouping, slow-consumer isolation and limits, through real sockets.

use crate::common;

use std::io::{Read, Write};

use common::TestServer;
use futures_util::{SinkExt, StreamExt};
use serde_json::json;
use tokio_tungstenite::tungstenite::Message;

const TICK: &str = "subscription { tick { seq } }";

#[tokio::test]
async fn identical_subscriptions_share_one_projection_per_event() {
    let server = TestServer::start(|_| {}).await;
    let mut clients = Vec::new();
    for i in 0..20 {
        let mut c = server.ready_client().await;
        // Written differently, projected identically: one group.
        let query = if i % 2 == 0 {
            TICK
        } else {
            "subscription S { ...F } fragment F on Subscription { tick { seq } }"
        };
        c.subscribe("s", query, json!({})).await;
        clients.push(c);
    }
    // A different selection is a second group.
    let mut other = server.ready_client().await;
    other
        .subscribe("o", "subscription { tick { n: seq } }", json!({}))
        .await;
    server
        .eventually("all subscribed", |s| {
            s.metric("fanwire_subscriptions") == 21.0
        })
        .await;
    assert_eq!(server.metric("fanwire_groups"), 2.0);

    for seq in 1..=5 {
        let (status, body) = server
            .publish(
                &format!(r#"{{"topic":"ticks:demo","data":{{"seq":{seq}}}}}"#),
                None,
            )
            .await;
        assert_eq!((status, body["deliveries"].clone()), (200, json!(21)));
    }
    assert_eq!(
        server.metric("fanwire_projections_total"),
        10.0,
        "5 events x 2 groups"
    );
    for c in &mut clients {
        for seq in 1..=5 {
            assert_eq!(
                c.recv().await,
                json!({"id": "s", "type": "next", "payload": {"data": {"tick": {"seq": seq}}}})
            );
        }
    }
    for seq in 1..=5 {
        assert_eq!(other.recv().await["payload"]["data"]["tick"]["n"], seq);
    }
}

/// A client from `stalled_raw_client` that starts reading at last: the rest of
/// the upgrade response is skipped and the socket speaks WebSocket again.
async fn resume_reading(mut s: std::net::TcpStream) -> common::Client {
    s.set_read_timeout(Some(common::WAIT)).unwrap();
    let mut head = Vec::new();
    let mut byte = [0u8; 1];
    while !head.ends_with(b"\r\n\r\n") {
        assert!(head.len() < 4096, "the upgrade response ends");
        s.read_exact(&mut byte)
            .expect("the upgrade response arrives");
        head.push(byte[0]);
    }
    s.set_nonblocking(true).unwrap();
    let tcp = tokio::net::TcpStream::from_std(s).unwrap();
    let ws = tokio_tungstenite::WebSocketStream::from_raw_socket(
        tokio_tungstenite::MaybeTlsStream::Plain(tcp),
        tokio_tungstenite::tungstenite::protocol::Role::Client,
        None,
    )
    .await;
    common::Client { ws, protocol: None }
}

/// One `POST /publish` of more events than `queue_depth` arrives at once,
/// before any writer runs: a subscriber that reads as fast as it can gets
/// every event of it, in order, once. Drop-oldest still applies to a client
/// that never reads: what it left unread makes room when the next publish
/// comes, counted, and when it reads at last it has the newest results.
///
/// One worker runs the server, so a batch's dispatch always finishes before
/// any writer task runs (the test's clients run on the test's own thread).
#[tokio::test(flavor = "multi_thread", worker_threads = 1)]
async fn a_publish_larger_than_the_queue_reaches_a_reader_whole() {
    const DEPTH: usize = 64;
    const BATCH: u64 = 500;
    let server = TestServer::start(|c| {
        c.limits.queue_depth = DEPTH;
        c.server.max_publish_bytes = 16 * 1024 * 1024;
        // The stalled client must not be closed as a dead peer meanwhile.
        c.limits.keep_alive_ms = 120_000;
    })
    .await;
    let stalled = stalled_raw_client(server.addr);
    let mut reader = server.ready_client().await;
    reader.subscribe("r", TICK, json!({})).await;
    server
        .eventually("both subscribed", |s| {
            s.metric("fanwire_subscriptions") == 2.0
        })
        .await;

    // 16 KB per event for the stalled client, which subscribed to the blob:
    // a few batches fill its socket's buffers, and then its queue.
    let blob = "x".repeat(16 * 1024);
    let drops = |server: &TestServer| server.drops("queue_full") as f64;
    let mut published = 0u64;
    // Until the stalled client has lost something, and once more after.
    let mut batches_after_drops = 0;
    for batch in 0.. {
        assert!(batch < 8, "the stalled client's queue never overflowed");
        let first = published + 1;
        published += BATCH;
        let events: Vec<_> = (first..=published)
            .map(|seq| json!({"topic":"ticks:demo","data":{"seq":seq,"blob":blob}}))
            .collect();
        let body = serde_json::Value::Array(events).to_string();
        let read = async {
            for seq in first..=published {
                assert_eq!(
                    reader.recv().await,
                    json!({"id": "r", "type": "next", "payload": {"data": {"tick": {"seq": seq}}}}),
                    "every event of the batch, in order, once"
                );
            }
        };
        let ((status, body), ()) = tokio::join!(server.publish(&body, None), read);
        assert_eq!(
            (status, body),
            (200, json!({"accepted": BATCH, "deliveries": 2 * BATCH})),
            "every result of the batch was queued, none dropped by it"
        );
        if drops(&server) > 0.0 {
            batches_after_drops += 1;
            if batches_after_drops == 2 {
                break;
            }
        }
    }
    assert_eq!(
        server.metric("fanwire_deliveries_total"),
        (2 * published) as f64,
        "the responses counted what was queued"
    );

    let mut stalled = resume_reading(stalled).await;
    assert_eq!(stalled.recv().await, json!({"type": "connection_ack"}));
    let mut got = Vec::new();
    while got.last() != Some(&published) {
        let msg = stalled.recv().await;
        assert_eq!(msg["id"], "1", "{msg}");
        let seq = msg["payload"]["data"]["tick"]["seq"].as_u64().unwrap();
        assert!(
            got.last().is_none_or(|last| *last < seq),
            "in order, nothing twice: {seq} after {:?}",
            got.last()
        );
        got.push(seq);
    }
    let lost = drops(&server);
    assert_eq!(
        got.len() as f64 + lost,
        published as f64,
        "every result either arrived or was counted as dropped"
    );
    assert!(
        got.ends_with(&(published - BATCH + 1..=published).collect::<Vec<_>>()),
        "the newest results, the whole last batch, survive"
    );
}

/// A raw client that upgrades, subscribes and then never reads again.
fn stalled_raw_client(addr: std::net::SocketAddr) -> std::net::TcpStream {
    let mut s = std::net::TcpStream::connect(addr).unwrap();
    s.write_all(
        b"GET /graphql HTTP/1.1\r\nHost: t\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n\
          Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\nSec-WebSocket-Version: 13\r\n\
          Sec-WebSocket-Protocol: graphql-transport-ws\r\n\r\n",
    )
    .unwrap();
    let mut head = [0u8; 12];
    s.read_exact(&mut head).unwrap();
    assert_eq!(&head, b"HTTP/1.1 101");
    for msg in [
        r#"{"type":"connection_init"}"#.to_owned(),
        json!({"id":"1","type":"subscribe","payload":{"query":"subscription { tick { seq blob } }"}}).to_string(),
    ] {
        // A masked client text frame (mask key zero keeps the payload as is).
        let mut frame = vec![0x81u8];
        let len = msg.len();
        assert!(len < 65536);
        if len < 126 {
            frame.push(0x80 | len as u8);
        } else {
            frame.push(0x80 | 126);
            frame.extend_from_slice(&(len as u16).to_be_bytes());
        }
        frame.extend_from_slice(&[0, 0, 0, 0]);
        frame.extend_from_slice(msg.as_bytes());
        s.write_all(&frame).unwrap();
    }
    s
}

/// A client subscribed to `tick { seq blob }` that the test does not read
/// until it chooses to: the server's frames pile up in the kernel buffers,
/// then in its queue.
async fn stalled_client(server: &TestServer) -> common::Client {
    let mut c = server.ready_client().await;
    c.subscribe("s", "subscription { tick { seq blob } }", json!({}))
        .await;
    c
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_stalled_client_loses_its_oldest_frames_keeps_the_newest_and_every_control_frame() {
    let server = TestServer::start(|c| {
        c.limits.queue_depth = 8;
        // Not a dead peer nor a write timeout while the test holds it stalled.
        c.limits.keep_alive_ms = 120_000;
    })
    .await;
    let mut stalled = stalled_client(&server).await;
    let mut good = server.ready_client().await;
    good.subscribe("g", "subscription { tick { seq } }", json!({}))
        .await;
    server
        .eventually("both subscribed", |s| {
            s.metric("fanwire_subscriptions") == 2.0
        })
        .await;

    // 2,000 events of 16 KB: far more than the stalled socket's kernel
    // buffers hold. They go out in small batches, each one waiting for the
    // good client to have read the last, so only the stalled queue overflows.
    let events: u64 = 2_000;
    let (progress_tx, mut progress) = tokio::sync::watch::channel(0u64);
    let reader = tokio::spawn(async move {
        for seq in 1..=events {
            let msg = good.recv().await;
            assert_eq!(
                msg["payload"]["data"]["tick"]["seq"], seq,
                "in order, nothing lost"
            );
            let _ = progress_tx.send(seq);
        }
        good
    });
    for chunk in (1..=events).collect::<Vec<_>>().chunks(4) {
        server.publish_blobs(chunk).await;
        let last = *chunk.last().unwrap();
        tokio::time::timeout(common::WAIT, progress.wait_for(|got| *got >= last))
            .await
            .expect("the good client keeps receiving while the other one stalls")
            .expect("reader alive");
    }
    let _good = reader.await.unwrap();
    let drops = common::metric_value(
        &server.metrics(),
        "fanwire_drops_total{reason=\"queue_full\"}",
    );
    assert!(
        drops > 0.0,
        "the stalled client's queue overflowed and was trimmed\n{}",
        server.metrics()
    );

    // Control frames asked for while stalled (a pong, a subscribe's error)
    // are never dropped; once read, the client holds the newest results, in
    // order, and then both control frames.
    stalled.send(json!({"type": "ping"})).await;
    stalled.subscribe("bad", "subscription {", json!({})).await;
    let (mut seqs, mut pong, mut error) = (Vec::new(), false, false);
    while !(pong && error && seqs.last() == Some(&events)) {
        let msg = stalled.recv().await;
        match msg["type"].as_str() {
            Some("next") => {
                assert!(!pong && !error, "no result after the control frames: {msg}");
                seqs.push(msg["payload"]["data"]["tick"]["seq"].as_u64().unwrap());
            }
            Some("pong") => pong = true,
            Some("error") => {
                assert_eq!(msg["id"], "bad", "{msg}");
                error = true;
            }
            _ => panic!("unexpected {msg}"),
        }
    }
    assert!(
        seqs.windows(2).all(|w| w[0] < w[1]),
        "in order, once: {seqs:?}"
    );
    assert!(
        (seqs.len() as u64) < events,
        "the oldest results were dropped"
    );
    assert_eq!(
        drops as usize + seqs.len(),
        events as usize,
        "every result is either received or counted as dropped"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_client_that_stops_reading_is_disconnected_by_the_write_timeout() {
    // A write blocked for two keep-alive periods (3 s) ends the connection;
    // the client's pings below keep it from looking like a dead peer, as
    // long as each round of the loop takes less than those 3 s.
    let server = TestServer::start(|c| {
        c.limits.keep_alive_ms = 1_500;
        c.limits.queue_depth = 8;
    })
    .await;
    let mut stalled = stalled_client(&server).await;
    server
        .eventually("subscribed", |s| s.metric("fanwire_subscriptions") == 1.0)
        .await;
    // The client keeps talking (it is alive, not a dead peer) but never
    // reads, until its socket backs up and the server's write times out.
    let deadline = tokio::time::Instant::now() + 2 * common::WAIT;
    let mut seq = 0;
    while server.metric("fanwire_connections") > 0.0 {
        assert!(
            tokio::time::Instant::now() < deadline,
            "the stalled client was never disconnected\n{}",
            server.metrics()
        );
        stalled.send(json!({"type": "ping"})).await;
        let batch: Vec<u64> = (seq + 1..=seq + 32).collect();
        server.publish_blobs(&batch).await;
        seq += 32;
    }
    let m = server.metrics();
    assert_eq!(
        common::metric_value(
            &m,
            "fanwire_connection_rejections_total{reason=\"write_timeout\"}"
        ),
        1.0,
        "{m}"
    );
    assert_eq!(server.rejections("dead_peer"), 0, "{m}");
    // The socket ends: what the kernel held, then nothing (no close frame
    // gets through a socket the peer does not read).
    for _ in 0..=seq + 64 {
        match tokio::time::timeout(common::WAIT, stalled.ws.next())
            .await
            .expect("the socket ends")
        {
            Some(Ok(Message::Close(frame))) => panic!("unexpected close {frame:?}"),
            Some(Ok(_)) => continue,
            None | Some(Err(_)) => return,
        }
    }
    panic!("the socket never ended");
}

/// Results go straight to an idle socket from the publishing thread, and
/// through the queue once the socket backs up; a frame cut short by a full
/// socket is finished before anything else. A reader that keeps pausing
/// and pinging sees every frame whole, in order, with its pongs.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_slow_reader_gets_every_large_result_whole_and_in_order() {
    let server = TestServer::start(|c| c.limits.queue_depth = 100_000).await;
    let mut slow = server.ready_client().await;
    slow.subscribe("s", "subscription { tick { seq blob } }", json!({}))
        .await;
    server
        .eventually("subscribed", |s| s.metric("fanwire_subscriptions") == 1.0)
        .await;
    let events: u64 = 300;
    let publisher = {
        let addr = server.addr;
        tokio::spawn(async move {
            for seq in 1..=events {
                // Sizes cross the 126 and 65,536 byte frame-length forms.
                let blob = "x".repeat([10, 200, 70_000, 30_000][seq as usize % 4]);
                let body = json!({"topic":"ticks:demo","data":{"seq":seq,"blob":blob}});
                let (status, _) =
                    common::http_request(addr, "POST", "/publish", &body.to_string(), None).await;
                assert_eq!(status, 200);
            }
        })
    };
    let mut pongs = 0;
    let mut seq = 0;
    while seq < events {
        if seq % 25 == 0 {
            tokio::time::sleep(std::time::Duration::from_millis(20)).await;
            slow.ws
                .send(Message::Ping(seq.to_be_bytes().to_vec().into()))
                .await
                .unwrap();
        }
        let msg = tokio::time::timeout(common::WAIT, slow.ws.next())
            .await
            .expect("a frame arrives")
            .expect("open")
            .expect("a valid frame");
        match msg {
            Message::Text(text) => {
                seq += 1;
                let v: serde_json::Value = serde_json::from_str(text.as_str()).unwrap();
                assert_eq!(
                    v["payload"]["data"]["tick"]["seq"], seq,
                    "in order, none lost"
                );
                let blob = v["payload"]["data"]["tick"]["blob"].as_str().unwrap();
                assert_eq!(blob.len(), [10, 200, 70_000, 30_000][seq as usize % 4]);
            }
            Message::Pong(_) => pongs += 1,
            Message::Ping(_) => {}
            other => panic!("unexpected {other:?}"),
        }
    }
    publisher.await.unwrap();
    assert!(pongs > 0, "pings were answered between results");
    assert_eq!(server.drops("queue_full"), 0);
}

#[tokio::test]
async fn subscribe_rate_and_count_limits() {
    let server = TestServer::start(|c| {
        c.limits.max_subscriptions_per_connection = 2;
        c.limits.subscribe_burst = 3.0;
        c.limits.subscribes_per_second = 0.001;
    })
    .await;
    let mut c = server.ready_client().await;
    for id in ["1", "2", "3", "4"] {
        c.subscribe(id, TICK, json!({})).await;
    }
    let third = c.recv().await;
    assert_eq!(
        (third["id"].clone(), third["type"].clone()),
        (json!("3"), json!("error"))
    );
    assert!(third["payload"][0]["message"]
        .as_str()
        .unwrap()
        .contains("at most 2 subscriptions"));
    let fourth = c.recv().await;
    assert_eq!(fourth["id"], "4");
    assert_eq!(fourth["payload"][0]["extensions"]["code"], "RATE_LIMITED");
    assert!(fourth["payload"][0]["message"]
        .as_str()
        .unwrap()
        .contains("Too many subscribes"));
    assert_eq!(server.metric("fanwire_subscriptions"), 2.0);
}

#[tokio::test]
async fn connection_limits_refuse_upgrades_with_a_status() {
    let server = TestServer::start(|c| c.limits.max_connections = 1).await;
    let _first = server.ready_client().await;
    let (status, body) = common::http_request(server.addr, "GET", "/graphql", "", None).await;
    assert_eq!(status, 426, "{body}");
    let err = tokio_tungstenite::connect_async(format!("ws://{}/graphql", server.addr))
        .await
        .unwrap_err();
    assert!(err.to_string().contains("503"), "{err}");

    let server = TestServer::start(|c| {
        c.limits.connection_burst = 2.0;
        c.limits.connections_per_second = 0.001;
        // The global bucket alone (every client here has one address).
        c.server.connection_share_per_address = 1.0;
    })
    .await;
    let _a = server.ready_client().await;
    let _b = server.ready_client().await;
    let err = tokio_tungstenite::connect_async(format!("ws://{}/graphql", server.addr))
        .await
        .unwrap_err();
    assert!(err.to_string().contains("429"), "{err}");
}

/// Several backends publish at once over HTTP, each one event at a time or
/// in small batches, not waiting for the fan-out: every reading client gets
/// every event once, each publisher's events in its order, and the topic's
/// events in the order of their numbers.
#[tokio::test]
async fn concurrent_single_and_batched_publishes_reach_every_reader_once_in_order() {
    const PUBLISHERS: u64 = 4;
    const EACH: u64 = 120;
    let server = TestServer::start(|c| c.limits.history_per_topic = 10_000).await;
    let mut readers = Vec::new();
    for _ in 0..3 {
        let mut c = server.ready_client().await;
        c.subscribe("s", TICK, json!({})).await;
        readers.push(c);
    }
    server
        .eventually("subscribed", |s| s.metric("fanwire_subscriptions") == 3.0)
        .await;
    let publishers: Vec<_> = (0..PUBLISHERS)
        .map(|p| {
            let addr = server.addr;
            tokio::spawn(async move {
                let mut i = 0;
                while i < EACH {
                    // Singles and batches of two or three, interleaved.
                    let n = (1 + (i + p) % 3).min(EACH - i);
                    let events: Vec<_> = (i..i + n)
                        .map(|k| json!({"topic": "ticks:demo", "data": {"seq": p * 1000 + k}}))
                        .collect();
                    let body = if n == 1 {
                        events[0].to_string()
                    } else {
                        json!(events).to_string()
                    };
                    let answer = common::http_request(addr, "POST", "/publish", &body, None).await;
                    assert_eq!(answer, (200, json!({ "accepted": n })));
                    i += n;
                }
            })
        })
        .collect();
    for p in publishers {
        p.await.unwrap();
    }
    for reader in &mut readers {
        let mut numbers = Vec::new();
        let mut per_publisher = vec![Vec::new(); PUBLISHERS as usize];
        for _ in 0..PUBLISHERS * EACH {
            let frame = reader.recv().await;
            let id = frame["payload"]["data"]["tick"]["seq"].as_u64().unwrap();
            numbers.push(frame["payload"]["extensions"]["seq"].as_u64().unwrap());
            per_publisher[(id / 1000) as usize].push(id % 1000);
        }
        assert!(
            numbers.windows(2).all(|w| w[0] < w[1]),
            "in the topic's order: {numbers:?}"
        );
        for (p, got) in per_publisher.iter().enumerate() {
            assert_eq!(got, &(0..EACH).collect::<Vec<_>>(), "publisher {p}");
        }
    }
    assert_eq!(server.drops("queue_full"), 0);
}
