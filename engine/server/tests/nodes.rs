//! Several `fanwire` processes sharing events over the real NATS JetStream
//! and Redis Streams: publish on one node, receive on all; kill -9 a node
//! and resume on another with no gap and no duplicate; restart the broker
//! while publishing.

use crate::common;
use crate::services;

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;

use common::{http_request, Client};
use futures_util::StreamExt;
use serde_json::{json, Value};
use services::{ensure_nats, ensure_redis, unique, Broker, Node, NATS_URL, REDIS_URL, SLOW};
use tokio_tungstenite::tungstenite::Message;

const SCHEMA: &str = r#"
type Query { ok: Boolean }
type Subscription { tick(stream: String!): Tick @topic(name: "ticks:{stream}") }
type Tick { n: Int! }
"#;
const TICKS: &str = r#"subscription { tick(stream: "s") { n } }"#;

#[derive(Clone, Copy, Debug)]
enum Kind {
    Nats,
    Redis,
}

/// A config file for nodes sharing one stream (unique to the test).
fn config(kind: Kind, url: &str) -> Shared {
    config_with(kind, url, 10_000)
}

/// A config for nodes sharing a broker stream; the stream is deleted when
/// this is dropped (a shared broker would keep every test's events).
struct Shared {
    path: PathBuf,
    kind: Kind,
    url: String,
    stream: String,
}

impl std::ops::Deref for Shared {
    type Target = Path;
    fn deref(&self) -> &Path {
        &self.path
    }
}

impl Drop for Shared {
    fn drop(&mut self) {
        let Some(addr) = self.url.split("://").nth(1) else {
            return;
        };
        // A private broker of a restart test may be gone already.
        if std::net::TcpStream::connect(addr).is_err() {
            return;
        }
        match self.kind {
            Kind::Nats => services::drop_nats_stream(addr, &self.stream),
            Kind::Redis => services::drop_redis_key(addr, &self.stream),
        }
    }
}

/// The same, with the broker keeping `history` events.
fn config_with(kind: Kind, url: &str, history: u64) -> Shared {
    let dir = services::temp_dir("nodes");
    std::fs::write(dir.join("schema.graphql"), SCHEMA).unwrap();
    let (kind_name, stream) = match kind {
        Kind::Nats => ("nats", unique("fw")),
        Kind::Redis => ("redis", unique("fanwire:test")),
    };
    let subject = format!("{stream}.events");
    let path = dir.join("fanwire.toml");
    std::fs::write(
        &path,
        format!(
            r#"[server]
schema = "schema.graphql"
[limits]
history_per_topic = 1000
[bus]
kind = "{kind_name}"
url = "{url}"
stream = "{stream}"
subject = "{subject}"
history = {history}
# The restart test fills it: 20 events wait, the 21st is refused.
buffer = 20
"#
        ),
    )
    .unwrap();
    Shared {
        path,
        kind,
        url: url.into(),
        stream,
    }
}

fn nodes(config: &Path, n: usize) -> Vec<Node> {
    (0..n).map(|_| Node::start(config)).collect()
}

/// A client subscribed to the ticks, optionally resuming after `resume_from`.
async fn subscriber(addr: SocketAddr, resume_from: Option<u64>) -> Client {
    let mut c = Client::connect(addr, Some("graphql-transport-ws")).await;
    c.send(json!({"type": "connection_init"})).await;
    assert_eq!(c.recv().await, json!({"type": "connection_ack"}));
    let mut payload = json!({ "query": TICKS });
    if let Some(from) = resume_from {
        payload["extensions"] = json!({ "resumeFrom": from });
    }
    c.send(json!({"id": "t", "type": "subscribe", "payload": payload}))
        .await;
    c
}

/// The next `(seq, n)` a client gets, or `None` once its node is gone.
async fn next_tick(c: &mut Client) -> Option<(u64, i64)> {
    next_frame(c).await.map(|(seq, n)| (seq.expect("a seq"), n))
}

/// The next `(seq, n)` a client gets, where an event delivered while the
/// broker was unreachable has no `seq`; `None` once its node is gone.
async fn next_frame(c: &mut Client) -> Option<(Option<u64>, i64)> {
    next_delivery(c).await.map(|(seq, n, _)| (seq, n))
}

/// [`next_frame`] with the event's `extensions.id`: the publisher's
/// (`tick-n`), or the one the accepting node gave it.
async fn next_delivery(c: &mut Client) -> Option<(Option<u64>, i64, String)> {
    loop {
        let msg = tokio::time::timeout(SLOW, c.ws.next())
            .await
            .expect("a frame or the end of the socket");
        match msg {
            Some(Ok(Message::Text(t))) => {
                let v: Value = serde_json::from_str(t.as_str()).unwrap();
                assert_eq!(v["type"], "next", "{v}");
                let seq = v["payload"]["extensions"]["seq"].as_u64();
                let n = v["payload"]["data"]["tick"]["n"].as_i64().unwrap();
                let id = v["payload"]["extensions"]["id"].as_str().expect("an id");
                if id.starts_with("tick-") {
                    assert_eq!(id, format!("tick-{n}"), "{v}");
                }
                return Some((seq, n, id.to_string()));
            }
            Some(Ok(Message::Close(_))) | Some(Err(_)) | None => return None,
            Some(Ok(_)) => continue,
        }
    }
}

async fn frames(c: &mut Client, count: usize) -> Vec<(Option<u64>, i64)> {
    let mut out = Vec::new();
    while out.len() < count {
        out.push(next_frame(c).await.expect("the node is up"));
    }
    out
}

/// The first frame a subscribe gets: its `error` payload, or `None` for `next`.
async fn subscribe_error(addr: SocketAddr, resume_from: u64) -> Option<Value> {
    let mut c = subscriber(addr, Some(resume_from)).await;
    let first = c.recv().await;
    (first["type"] == "error").then(|| first["payload"].clone())
}

async fn ticks(c: &mut Client, count: usize) -> Vec<(u64, i64)> {
    let mut out = Vec::new();
    while out.len() < count {
        out.push(next_tick(c).await.expect("the node is up"));
    }
    out
}

async fn publish(addr: SocketAddr, n: i64) -> Result<u16, ()> {
    let body = json!({"topic": "ticks:s", "data": {"n": n}, "id": format!("tick-{n}")});
    // A dead node refuses the connection.
    let attempt = tokio::spawn(async move {
        http_request(addr, "POST", "/publish", &body.to_string(), None).await
    });
    match attempt.await {
        Ok((status, _)) => Ok(status),
        Err(_) => Err(()),
    }
}

/// Publishes an event without an id: the node gives it one.
async fn publish_without_id(addr: SocketAddr, n: i64) -> u16 {
    let body = json!({"topic": "ticks:s", "data": {"n": n}});
    http_request(addr, "POST", "/publish", &body.to_string(), None)
        .await
        .0
}

async fn health(addr: SocketAddr) -> Value {
    http_request(addr, "GET", "/healthz", "", None).await.1
}

async fn wait_subscribed(addr: SocketAddr, count: f64) {
    let deadline = tokio::time::Instant::now() + SLOW;
    loop {
        let (_, text) = common::http_raw(addr, "GET", "/metrics", "", None).await;
        if common::metric_value(&text, "fanwire_subscriptions") >= count {
            return;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "never {count} subscriptions on {addr}"
        );
        tokio::time::sleep(std::time::Duration::from_millis(20)).await;
    }
}

fn assert_in_order_once(got: &[(u64, i64)], last: i64) {
    let ns: Vec<i64> = got.iter().map(|t| t.1).collect();
    assert_eq!(
        ns,
        (1..=last).collect::<Vec<_>>(),
        "every event once, in order"
    );
    assert!(
        got.windows(2).all(|w| w[0].0 < w[1].0),
        "sequence numbers increase: {got:?}"
    );
}

async fn publish_on_one_receive_on_all(kind: Kind, url: &str, count: usize) {
    const EVENTS: i64 = 30;
    let config = config(kind, url);
    let nodes = nodes(&config, count);
    let mut clients = Vec::new();
    for node in &nodes {
        clients.push(subscriber(node.addr, None).await);
        wait_subscribed(node.addr, 1.0).await;
    }
    for n in 1..=EVENTS {
        // Round robin: every node publishes some.
        let at = nodes[n as usize % count].addr;
        assert_eq!(publish(at, n).await, Ok(200));
    }
    let mut seen = Vec::new();
    for c in &mut clients {
        let got = ticks(c, EVENTS as usize).await;
        assert_in_order_once(&got, EVENTS);
        seen.push(got);
    }
    assert!(
        seen.windows(2).all(|w| w[0] == w[1]),
        "every node numbers every event alike"
    );
    // Nothing was delivered twice: the next frame is the next event.
    assert_eq!(publish(nodes[0].addr, EVENTS + 1).await, Ok(200));
    for c in &mut clients {
        assert_eq!(next_tick(c).await.unwrap().1, EVENTS + 1);
    }
}

#[tokio::test]
async fn nats_two_nodes_publish_on_one_receive_on_all() {
    ensure_nats();
    publish_on_one_receive_on_all(Kind::Nats, NATS_URL, 2).await;
}

#[tokio::test]
async fn nats_three_nodes_publish_on_one_receive_on_all() {
    ensure_nats();
    publish_on_one_receive_on_all(Kind::Nats, NATS_URL, 3).await;
}

#[tokio::test]
async fn redis_two_nodes_publish_on_one_receive_on_all() {
    ensure_redis();
    publish_on_one_receive_on_all(Kind::Redis, REDIS_URL, 2).await;
}

#[tokio::test]
async fn redis_three_nodes_publish_on_one_receive_on_all() {
    ensure_redis();
    publish_on_one_receive_on_all(Kind::Redis, REDIS_URL, 3).await;
}

/// What clients may rely on about sequence numbers (docs/architecture.md,
/// "Sequence numbers"): log positions, the same on every node, increasing
/// per subscription, with gaps where other topics' events sit; a resume
/// from any number seen gives exactly the events after it.
async fn sequence_numbers_are_shared_log_positions(kind: Kind, url: &str) {
    const EVENTS: i64 = 12;
    let config = config(kind, url);
    let nodes = nodes(&config, 2);
    let (a, b) = (nodes[0].addr, nodes[1].addr);
    let mut s_on_a = subscriber(a, None).await;
    let mut s_on_b = subscriber(b, None).await;
    let mut t_on_b = Client::connect(b, Some("graphql-transport-ws")).await;
    t_on_b.send(json!({"type": "connection_init"})).await;
    assert_eq!(t_on_b.recv().await, json!({"type": "connection_ack"}));
    t_on_b
        .send(json!({"id": "t", "type": "subscribe", "payload": {
            "query": r#"subscription { tick(stream: "t") { n } }"#}}))
        .await;
    wait_subscribed(a, 1.0).await;
    wait_subscribed(b, 2.0).await;
    // Alternating topics, from alternating nodes, one after the other.
    for n in 1..=EVENTS {
        let (at, stream) = if n % 2 == 1 { (a, "s") } else { (b, "t") };
        let body = json!({"topic": format!("ticks:{stream}"), "data": {"n": n}});
        let (status, _) = http_request(at, "POST", "/publish", &body.to_string(), None).await;
        assert_eq!(status, 200);
    }
    let s_a = ticks(&mut s_on_a, (EVENTS / 2) as usize).await;
    let s_b = ticks(&mut s_on_b, (EVENTS / 2) as usize).await;
    let t_b = ticks(&mut t_on_b, (EVENTS / 2) as usize).await;
    assert_eq!(s_a, s_b, "the same numbers on every node");
    assert!(s_a.windows(2).all(|w| w[0].0 < w[1].0), "{s_a:?}");
    // Each topic's numbers skip exactly the other topic's events.
    let mut all: Vec<(u64, i64)> = s_a.iter().chain(&t_b).copied().collect();
    all.sort();
    let ns: Vec<i64> = all.iter().map(|e| e.1).collect();
    assert_eq!(ns, (1..=EVENTS).collect::<Vec<_>>(), "{all:?}");
    assert!(
        s_a.windows(2).all(|w| w[1].0 - w[0].0 >= 2),
        "gaps: {s_a:?}"
    );
    // From any number seen, on either node: exactly what followed.
    for (i, (seq, _)) in s_a.iter().enumerate() {
        for node in [a, b] {
            let mut resumed = subscriber(node, Some(*seq)).await;
            let rest = ticks(&mut resumed, s_a.len() - i - 1).await;
            assert_eq!(rest, s_a[i + 1..]);
        }
    }
    // Between two numbers of a topic (a position of the other topic): the
    // same, so a client can resume from a number of any topic it saw.
    let mut resumed = subscriber(b, Some(t_b[0].0)).await;
    let rest: Vec<_> = s_a.iter().filter(|e| e.0 > t_b[0].0).copied().collect();
    assert_eq!(ticks(&mut resumed, rest.len()).await, rest);
}

#[tokio::test]
async fn nats_sequence_numbers_are_shared_log_positions() {
    ensure_nats();
    sequence_numbers_are_shared_log_positions(Kind::Nats, NATS_URL).await;
}

#[tokio::test]
async fn redis_sequence_numbers_are_shared_log_positions() {
    ensure_redis();
    sequence_numbers_are_shared_log_positions(Kind::Redis, REDIS_URL).await;
}

/// Events flow to both nodes; node A is killed with -9 mid-stream; its
/// client resumes on node B from the last sequence it saw.
async fn kill_a_node_and_resume_on_another(kind: Kind, url: &str) {
    const EVENTS: i64 = 150;
    let config = config(kind, url);
    let mut nodes = nodes(&config, 2);
    let (a, b) = (nodes[0].addr, nodes[1].addr);
    let mut client = subscriber(a, None).await;
    wait_subscribed(a, 1.0).await;

    let a_alive = Arc::new(AtomicBool::new(true));
    let publisher = {
        let a_alive = a_alive.clone();
        tokio::spawn(async move {
            for n in 1..=EVENTS {
                let first = if n % 2 == 1 && a_alive.load(Ordering::SeqCst) {
                    a
                } else {
                    b
                };
                // A publish that died with node A is repeated on B with the
                // same id: if A had stored it, the repeat is dropped.
                if publish(first, n).await != Ok(200) {
                    assert_eq!(publish(b, n).await, Ok(200));
                }
                tokio::time::sleep(std::time::Duration::from_millis(5)).await;
            }
        })
    };
    let mut got = ticks(&mut client, 40).await;
    a_alive.store(false, Ordering::SeqCst);
    nodes[0].kill();
    // Whatever node A had already sent still arrives; then the socket ends.
    while let Some(tick) = next_tick(&mut client).await {
        got.push(tick);
    }
    let last_seen = got.last().unwrap().0;
    let mut resumed = subscriber(b, Some(last_seen)).await;
    while got.last().unwrap().1 < EVENTS {
        got.push(next_tick(&mut resumed).await.expect("node B is up"));
    }
    publisher.await.unwrap();
    assert_in_order_once(&got, EVENTS);
    assert!(nodes[1].alive(), "{}", nodes[1].stderr());
}

#[tokio::test]
async fn nats_kill_a_node_and_resume_on_another_with_no_gap_and_no_duplicate() {
    ensure_nats();
    kill_a_node_and_resume_on_another(Kind::Nats, NATS_URL).await;
}

#[tokio::test]
async fn redis_kill_a_node_and_resume_on_another_with_no_gap_and_no_duplicate() {
    ensure_redis();
    kill_a_node_and_resume_on_another(Kind::Redis, REDIS_URL).await;
}

/// The broker is killed and restarted while node A publishes: nodes keep
/// running, report `degraded`, buffer publishes (202) and recover by
/// themselves. Node A's own subscriber gets what A accepted meanwhile at
/// once (without a `seq`), and never again when it comes back through the
/// log; node B's gets it, numbered, once the broker is back; every accepted
/// event reaches both clients once, in order; afterwards node A numbers
/// those events like B (the promise of docs/architecture.md, "Across nodes").
async fn broker_restart_while_publishing(kind: Kind) {
    const EVENTS: i64 = 60;
    let mut broker = match kind {
        Kind::Nats => Broker::nats(),
        Kind::Redis => Broker::redis(),
    };
    let url = match kind {
        Kind::Nats => format!("nats://127.0.0.1:{}", broker.port),
        Kind::Redis => format!("redis://127.0.0.1:{}", broker.port),
    };
    let config = config(kind, &url);
    let mut nodes = nodes(&config, 2);
    let (a, b) = (nodes[0].addr, nodes[1].addr);
    let [mut on_a, mut on_b] = [subscriber(a, None).await, subscriber(b, None).await];
    wait_subscribed(a, 1.0).await;
    wait_subscribed(b, 1.0).await;

    for n in 1..=20 {
        assert_eq!(publish(a, n).await, Ok(200));
    }
    // What a broker that keeps nothing on disk loses is what no node had
    // read yet; the promise covers events read before it went down.
    let before = ticks(&mut on_b, 20).await;
    let mut got_a: Vec<(Option<u64>, i64)> = ticks(&mut on_a, 20)
        .await
        .into_iter()
        .map(|(seq, n)| (Some(seq), n))
        .collect();

    broker.stop();
    for node in [a, b] {
        let deadline = tokio::time::Instant::now() + SLOW;
        while health(node).await["status"] != "degraded" {
            assert!(tokio::time::Instant::now() < deadline, "never degraded");
            tokio::time::sleep(std::time::Duration::from_millis(20)).await;
        }
    }
    let down = health(a).await;
    assert_eq!(down["bus"]["state"], "down", "{down}");
    let mut early_ids = Vec::new();
    for n in 21..=40 {
        // Half without an id: each gets one when accepted, so it too is
        // recognised when it comes back through the log.
        let status = if n % 2 == 0 {
            publish_without_id(a, n).await
        } else {
            publish(a, n).await.unwrap()
        };
        assert_eq!(status, 202, "held while the broker is down");
        // Node A's subscriber has it already, not yet numbered.
        let (seq, got, id) = next_delivery(&mut on_a).await.expect("node A is up");
        assert_eq!((seq, got), (None, n));
        got_a.push((None, n));
        early_ids.push(id);
    }
    assert_eq!(health(a).await["bus"]["queued"], 20);
    // Where those events will sit in the log is unknown: a resume on their
    // topic waits on node A rather than missing them.
    let refused = subscribe_error(a, before[19].0).await.expect("an error");
    assert_eq!(
        refused[0]["extensions"]["code"], "RESUME_UNAVAILABLE",
        "{refused}"
    );
    // The buffer is full: refused, never delivered (the clients' counts
    // below would show it).
    assert_eq!(publish(a, 999).await, Ok(503));

    broker.restart();
    for n in 41..=EVENTS {
        // 503 until the buffer has room, 202 while it drains ahead of this
        // event, then 200. A 503 means "not accepted, retry later".
        let deadline = tokio::time::Instant::now() + SLOW;
        loop {
            match publish(a, n).await.unwrap() {
                503 => {
                    assert!(
                        tokio::time::Instant::now() < deadline,
                        "event {n} still refused with 503 after the broker restart: {}",
                        health(a).await
                    );
                    tokio::time::sleep(std::time::Duration::from_millis(50)).await
                }
                status => {
                    assert!(status == 200 || status == 202, "{status}");
                    break;
                }
            }
        }
    }
    // One more once everything drained: if anything came back to node A's
    // subscriber twice, it would arrive before this.
    let deadline = tokio::time::Instant::now() + SLOW;
    loop {
        let bus = health(a).await["bus"].clone();
        if bus["state"] == "up" && bus["queued"] == 0 {
            break;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "never drained: {bus}"
        );
        tokio::time::sleep(std::time::Duration::from_millis(20)).await;
    }
    let last = EVENTS + 1;
    assert_eq!(publish(a, last).await, Ok(200));
    got_a.extend(frames(&mut on_a, (last - 40) as usize).await);
    let mut got_b = before.clone();
    let mut ids_b = Vec::new();
    for _ in 21..=last {
        let (seq, n, id) = next_delivery(&mut on_b).await.expect("node B is up");
        got_b.push((seq.expect("a seq"), n));
        ids_b.push(id);
    }
    assert_in_order_once(&got_b, last);
    // A client that saw an event unnumbered knows it again by its id.
    assert_eq!(ids_b[..20], early_ids[..]);
    let ns: Vec<i64> = got_a.iter().map(|f| f.1).collect();
    assert_eq!(
        ns,
        (1..=last).collect::<Vec<_>>(),
        "every event once, in order"
    );
    let numbered: Vec<u64> = got_a.iter().filter_map(|f| f.0).collect();
    assert!(numbered.windows(2).all(|w| w[0] < w[1]), "{got_a:?}");
    assert_eq!(got_a.last().unwrap().0, Some(got_b.last().unwrap().0));

    // Node A now holds the events it delivered early under the log's
    // numbers: resuming there gives what node B's client saw.
    let mut resumed = subscriber(a, Some(got_b[20].0)).await;
    assert_eq!(ticks(&mut resumed, (last - 21) as usize).await, got_b[21..]);
    // From before the outage: JetStream kept everything; a Redis without
    // persistence lost events 1..20, so no node can tell what followed 20.
    match kind {
        Kind::Nats => {
            let mut resumed = subscriber(a, Some(got_b[19].0)).await;
            assert_eq!(ticks(&mut resumed, (last - 20) as usize).await, got_b[20..]);
        }
        Kind::Redis => {
            let refused = subscribe_error(a, got_b[19].0).await.expect("an error");
            assert_eq!(
                refused[0]["extensions"]["code"], "RESUME_WINDOW_EXCEEDED",
                "{refused}"
            );
        }
    }
    for node in [a, b] {
        let deadline = tokio::time::Instant::now() + SLOW;
        while health(node).await["status"] != "ok" {
            assert!(tokio::time::Instant::now() < deadline, "never recovered");
            tokio::time::sleep(std::time::Duration::from_millis(20)).await;
        }
    }
    for node in &mut nodes {
        assert!(node.alive(), "a node crashed:\n{}", node.stderr());
    }
    let (_, metrics) = common::http_raw(a, "GET", "/metrics", "", None).await;
    assert!(common::metric_value(&metrics, "fanwire_bus_retries_total{component=\"bus\"}") >= 1.0);
    assert!(common::metric_value(&metrics, "fanwire_bus_local_total") >= 20.0);
    assert!(
        metrics.lines().any(|l| l == "fanwire_bus_unconfirmed 0"),
        "{metrics}"
    );
    // Every node read everything the broker kept or was given again: a
    // restart is not mistaken for entries trimmed before a node read them.
    for node in [a, b] {
        let (_, metrics) = common::http_raw(node, "GET", "/metrics", "", None).await;
        assert_eq!(
            common::metric_value(&metrics, "fanwire_bus_lost_total"),
            0.0,
            "{metrics}"
        );
    }
}

#[tokio::test]
async fn nats_restart_while_publishing_recovers_and_delivers_every_accepted_event() {
    broker_restart_while_publishing(Kind::Nats).await;
}

#[tokio::test]
async fn redis_restart_while_publishing_recovers_and_delivers_every_accepted_event() {
    broker_restart_while_publishing(Kind::Redis).await;
}

/// A node started after events were published reads the broker's history
/// before it serves: a client that saw event 10 on another node resumes on
/// it with 11..20; a position from before the broker's history is refused
/// with a resync error rather than served with a gap.
async fn a_late_node_fills_its_window_from_the_broker(kind: Kind, url: &str) {
    // The broker keeps 10 (JetStream exactly; Redis's MAXLEN ~ at least).
    let config = config_with(kind, url, 10);
    let a = Node::start(&config);
    let mut early = subscriber(a.addr, None).await;
    wait_subscribed(a.addr, 1.0).await;
    for n in 1..=20 {
        assert_eq!(publish(a.addr, n).await, Ok(200));
    }
    let seen = ticks(&mut early, 20).await;
    let b = Node::start(&config);
    let mut resumed = subscriber(b.addr, Some(seen[9].0)).await;
    let mut got = seen[..10].to_vec();
    got.extend(ticks(&mut resumed, 10).await);
    assert_eq!(got, seen, "the same events with the same sequence numbers");
    assert_in_order_once(&got, 20);

    // Before the first retained event: the node cannot know what it missed.
    let mut stale = Client::connect(b.addr, Some("graphql-transport-ws")).await;
    stale.send(json!({"type": "connection_init"})).await;
    assert_eq!(stale.recv().await, json!({"type": "connection_ack"}));
    stale
        .send(json!({"id": "t", "type": "subscribe", "payload": {
            "query": TICKS, "extensions": {"resumeFrom": seen[0].0.saturating_sub(2)}}}))
        .await;
    let error = stale.recv().await;
    assert_eq!(error["type"], "error", "{error}");
    assert_eq!(
        error["payload"][0]["extensions"]["code"], "RESUME_WINDOW_EXCEEDED",
        "{error}"
    );
}

#[tokio::test]
async fn nats_a_late_node_fills_its_window_from_the_broker() {
    ensure_nats();
    a_late_node_fills_its_window_from_the_broker(Kind::Nats, NATS_URL).await;
}

#[tokio::test]
async fn redis_a_late_node_fills_its_window_from_the_broker() {
    ensure_redis();
    a_late_node_fills_its_window_from_the_broker(Kind::Redis, REDIS_URL).await;
}

/// Sends a signal (`STOP`, `CONT`) to a node.
fn signal(node: &Node, signal: &str) {
    let status = std::process::Command::new("kill")
        .arg(format!("-{signal}"))
        .arg(node.child.id().to_string())
        .status()
        .expect("kill runs");
    assert!(status.success(), "kill -{signal}");
}

/// A node that falls further behind than the broker keeps (here: stopped
/// while 2,000 events go by a log of 20; a NATS consumer may have a few
/// hundred in flight to it already) cannot deliver what was trimmed
/// before it read it. It says how many it missed (log, metric), delivers
/// the rest in order, and refuses resumes from before the gap.
async fn a_lagging_node_counts_what_the_broker_trimmed(kind: Kind, url: &str) {
    const EVENTS: i64 = 2000;
    let config = config_with(kind, url, 20);
    let a = Node::start(&config);
    let b = Node::start(&config);
    let mut on_b = subscriber(b.addr, None).await;
    wait_subscribed(b.addr, 1.0).await;
    assert_eq!(publish(a.addr, 1).await, Ok(200));
    let first = next_tick(&mut on_b).await.expect("node B is up");
    assert_eq!(first.1, 1);

    signal(&b, "STOP");
    for n in 2..=EVENTS {
        assert_eq!(publish(a.addr, n).await, Ok(200));
    }
    signal(&b, "CONT");
    let mut got = vec![first];
    while got.last().unwrap().1 < EVENTS {
        got.push(next_tick(&mut on_b).await.expect("node B is up"));
    }
    assert!(got.windows(2).all(|w| w[0] < w[1]), "in order, once");
    let (_, metrics) = common::http_raw(b.addr, "GET", "/metrics", "", None).await;
    let lost = common::metric_value(&metrics, "fanwire_bus_lost_total") as usize;
    assert!(
        lost > 0,
        "the broker kept about 20; got {} of {EVENTS}",
        got.len()
    );
    assert_eq!(
        lost + got.len(),
        EVENTS as usize,
        "every event delivered or counted as lost"
    );
    assert!(
        b.stderr().contains("trimmed events this node had not read"),
        "{}",
        b.stderr()
    );
    let refused = subscribe_error(b.addr, first.0).await.expect("an error");
    assert_eq!(
        refused[0]["extensions"]["code"], "RESUME_WINDOW_EXCEEDED",
        "{refused}"
    );
}

#[tokio::test]
async fn nats_a_lagging_node_counts_what_the_broker_trimmed() {
    ensure_nats();
    a_lagging_node_counts_what_the_broker_trimmed(Kind::Nats, NATS_URL).await;
}

#[tokio::test]
async fn redis_a_lagging_node_counts_what_the_broker_trimmed() {
    ensure_redis();
    a_lagging_node_counts_what_the_broker_trimmed(Kind::Redis, REDIS_URL).await;
}

/// With the in-process bus the history lives in the process: a number a
/// client got before a restart is refused with a resync error, not taken
/// for a position of the new process (which would skip its events).
#[tokio::test]
async fn in_process_bus_a_restart_refuses_numbers_from_before_it() {
    let dir = services::temp_dir("memory");
    std::fs::write(dir.join("schema.graphql"), SCHEMA).unwrap();
    let config = dir.join("fanwire.toml");
    std::fs::write(
        &config,
        "[server]\nschema = \"schema.graphql\"\n[limits]\nhistory_per_topic = 100\n",
    )
    .unwrap();
    let mut first = Node::start(&config);
    let mut c = subscriber(first.addr, None).await;
    wait_subscribed(first.addr, 1.0).await;
    assert_eq!(publish(first.addr, 1).await, Ok(200));
    let (before, _) = next_tick(&mut c).await.unwrap();
    first.kill();

    let second = Node::start(&config);
    let refused = subscribe_error(second.addr, before)
        .await
        .expect("an error");
    assert_eq!(
        refused[0]["extensions"]["code"], "RESUME_WINDOW_EXCEEDED",
        "{refused}"
    );
    // Numbers of the new process resume as usual.
    let mut live = subscriber(second.addr, None).await;
    wait_subscribed(second.addr, 1.0).await;
    for n in 2..=3 {
        assert_eq!(publish(second.addr, n).await, Ok(200));
    }
    let got = ticks(&mut live, 2).await;
    assert!(got[0].0 > before, "{got:?} after {before}");
    let mut resumed = subscriber(second.addr, Some(got[0].0)).await;
    assert_eq!(ticks(&mut resumed, 1).await, got[1..]);
}
