//! Graceful shutdown of the `fanwire` binary: on SIGTERM, the results already
//! queued for a client reach it, every one and in order, before its 1001
//! close, and the process exits cleanly once they have. The in-process
//! server's shutdown tests are in `websocket.rs`; only a real process shows
//! whether the binary waits for its connections before it exits.

use serde_json::json;

use crate::common::{http_raw, http_request, metric_value, Client, SCHEMA, WAIT};
use crate::services::{temp_dir, Node};

/// 2,000 results of 16 KB: 32 MB, eight times the most a socket's send
/// buffer grows to with Linux's defaults (`tcp_wmem` 4 MiB), so most of
/// them are still in the server's hands when the SIGTERM arrives.
const EVENTS: u64 = 2_000;
const BLOB_BYTES: usize = 16 * 1024;

fn config() -> std::path::PathBuf {
    let dir = temp_dir("fanwire-shutdown");
    std::fs::write(dir.join("schema.graphql"), SCHEMA).unwrap();
    let config = dir.join("fanwire.toml");
    std::fs::write(
        &config,
        r#"
[server]
schema = "schema.graphql"
# Bounds, not waits: the client reads everything well before them.
shutdown_timeout_ms = 120000
[limits]
# Room for every result, so none is dropped for the client being slow.
queue_depth = 100000
keep_alive_ms = 120000
"#,
    )
    .unwrap();
    config
}

async fn wait_for_subscription(addr: std::net::SocketAddr) {
    let deadline = tokio::time::Instant::now() + WAIT;
    loop {
        let (status, text) = http_raw(addr, "GET", "/metrics", "", None).await;
        assert_eq!(status, 200, "{text}");
        if metric_value(&text, "fanwire_subscriptions") == 1.0 {
            return;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "never subscribed:\n{text}"
        );
        tokio::time::sleep(std::time::Duration::from_millis(10)).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sigterm_flushes_every_queued_result_before_the_1001_and_then_exits() {
    let mut node = Node::start(&config());
    // A small fixed receive buffer: the client's kernel cannot take the
    // results in for it while it does not read.
    let mut c = Client::with_receive_buffer(node.addr, 64 * 1024).await;
    c.send(json!({"type": "connection_init"})).await;
    assert_eq!(c.recv().await, json!({"type": "connection_ack"}));
    c.subscribe("s", "subscription { tick { seq blob } }", json!({}))
        .await;
    wait_for_subscription(node.addr).await;

    let blob = "x".repeat(BLOB_BYTES);
    let seqs: Vec<u64> = (1..=EVENTS).collect();
    for chunk in seqs.chunks(32) {
        let batch: Vec<_> = chunk
            .iter()
            .map(|seq| json!({"topic": "ticks:demo", "data": {"seq": seq, "blob": blob}}))
            .collect();
        let (status, body) = http_request(
            node.addr,
            "POST",
            "/publish",
            &json!(batch).to_string(),
            None,
        )
        .await;
        assert_eq!(status, 200, "{body}");
    }

    let pid = node.child.id().to_string();
    let killed = std::process::Command::new("kill")
        .args(["-TERM", &pid])
        .status()
        .unwrap();
    assert!(killed.success());
    // Shutdown has begun once the listener is gone; only then does the
    // client start reading.
    let deadline = tokio::time::Instant::now() + WAIT;
    while tokio::net::TcpStream::connect(node.addr).await.is_ok() {
        assert!(
            tokio::time::Instant::now() < deadline,
            "the listener never closed"
        );
        tokio::time::sleep(std::time::Duration::from_millis(10)).await;
    }

    for seq in 1..=EVENTS {
        let msg = c.recv().await;
        assert_eq!(
            msg["payload"]["data"]["tick"]["seq"], seq,
            "every result, in order, before the close"
        );
    }
    assert_eq!(c.closed().await.0, 1001);
    let deadline = tokio::time::Instant::now() + WAIT;
    let status = loop {
        if let Some(status) = node.child.try_wait().unwrap() {
            break status;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "fanwire did not exit after its last client closed:\n{}",
            node.stderr()
        );
        tokio::time::sleep(std::time::Duration::from_millis(10)).await;
    };
    assert!(
        status.success(),
        "graceful exit, got {status}:\n{}",
        node.stderr()
    );
}
