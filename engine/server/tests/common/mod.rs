//! A real server on 127.0.0.1:0 and a real WebSocket client, for the integration tests.
#![allow(dead_code)]

use std::time::Duration;

use fanwire_server::{Config, Server};
use futures_util::{SinkExt, StreamExt};
use serde_json::{json, Value};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;
use tokio::sync::oneshot;
use tokio_tungstenite::tungstenite::client::IntoClientRequest;
use tokio_tungstenite::tungstenite::http::HeaderValue;
use tokio_tungstenite::tungstenite::Message;
use tokio_tungstenite::{MaybeTlsStream, WebSocketStream};

/// A guard for a test's waits: never a performance bound, only a hang breaker.
pub const WAIT: Duration = Duration::from_secs(10);

pub const SCHEMA: &str = r#"
type Query { ok: Boolean }
type Subscription {
  orderCreated(tenantId: ID!): Order @topic(name: "orders:{tenantId}")
  tick(topic: String! = "demo"): Tick! @topic(name: "ticks:{topic}")
}
type Order { id: ID! cents: Int! status: String customer: Customer }
type Customer { name: String! }
type Tick { seq: Int! blob: String }
"#;

pub struct TestServer {
    pub addr: std::net::SocketAddr,
    pub engine: std::sync::Arc<fanwire_core::Engine>,
    stop: Option<oneshot::Sender<()>>,
    done: Option<tokio::task::JoinHandle<()>>,
}

impl TestServer {
    pub async fn start(tweak: impl FnOnce(&mut Config)) -> TestServer {
        let dir = std::env::temp_dir().join(format!(
            "fanwire-test-{}-{}",
            std::process::id(),
            rand_suffix()
        ));
        std::fs::create_dir_all(&dir).unwrap();
        let schema = dir.join("schema.graphql");
        std::fs::write(&schema, SCHEMA).unwrap();
        let mut config = Config::default();
        config.server.listen = "127.0.0.1:0".parse().unwrap();
        config.server.schema = Some(schema);
        // The plugin compile cache in the test's folder, never the user's.
        config.plugin_runtime.cache_dir = Some(dir.join("plugin-cache"));
        tweak(&mut config);
        let server = Server::bind(config).await.expect("server binds");
        let addr = server.local_addr().unwrap();
        let engine = server.engine().clone();
        let (stop, stopped) = oneshot::channel::<()>();
        let done = tokio::spawn(server.run(async {
            let _ = stopped.await;
        }));
        TestServer {
            addr,
            engine,
            stop: Some(stop),
            done: Some(done),
        }
    }

    /// Triggers graceful shutdown without waiting for it.
    pub fn begin_shutdown(&mut self) {
        if let Some(stop) = self.stop.take() {
            let _ = stop.send(());
        }
    }

    /// Triggers graceful shutdown and waits for `run` to return.
    pub async fn shutdown(&mut self) {
        self.begin_shutdown();
        if let Some(done) = self.done.take() {
            tokio::time::timeout(WAIT, done)
                .await
                .expect("shutdown finishes")
                .unwrap();
        }
    }

    pub fn metrics(&self) -> String {
        self.engine.metrics().encode()
    }

    /// `fanwire_drops_total{reason}`, read from the counter itself: 0
    /// before its first increment (the text has no such series yet), and a
    /// renamed family fails to compile rather than reading as 0.
    pub fn drops(&self, reason: &'static str) -> u64 {
        let reason = fanwire_core::metrics::Reason { reason };
        self.engine.metrics().drops.get_or_create(&reason).get()
    }

    /// `fanwire_connection_rejections_total{reason}`, as [`Self::drops`].
    pub fn rejections(&self, reason: &'static str) -> u64 {
        let reason = fanwire_core::metrics::Reason { reason };
        self.engine
            .metrics()
            .connection_rejections
            .get_or_create(&reason)
            .get()
    }

    /// Reads one sample from the metrics text, e.g. `fanwire_projections_total`.
    pub fn metric(&self, name: &str) -> f64 {
        metric_value(&self.metrics(), name)
    }

    pub async fn client(&self, protocol: &str) -> Client {
        Client::connect(self.addr, Some(protocol)).await
    }

    /// A graphql-transport-ws client that has been acknowledged.
    pub async fn ready_client(&self) -> Client {
        let mut c = self.client("graphql-transport-ws").await;
        c.send(json!({"type": "connection_init"})).await;
        assert_eq!(c.recv().await, json!({"type": "connection_ack"}));
        c
    }

    /// `POST /publish?wait=dispatched`: answered once the events are fanned
    /// out, so the reply counts `deliveries` and their frames are queued.
    pub async fn publish(&self, body: &str, token: Option<&str>) -> (u16, Value) {
        http_request(self.addr, "POST", "/publish?wait=dispatched", body, token).await
    }

    /// Publishes one batch on `ticks:demo`: an event per `seq`, each with a
    /// 16 KB blob (enough to back up a socket that is not read).
    pub async fn publish_blobs(&self, seqs: &[u64]) {
        let blob = "x".repeat(16 * 1024);
        let batch: Vec<_> = seqs
            .iter()
            .map(|seq| serde_json::json!({"topic":"ticks:demo","data":{"seq":seq,"blob":blob}}))
            .collect();
        let (status, body) = self
            .publish(&serde_json::Value::Array(batch).to_string(), None)
            .await;
        assert_eq!(status, 200, "{body}");
    }

    /// Polls until `f` holds; fails the test if it never does.
    pub async fn eventually(&self, what: &str, f: impl Fn(&TestServer) -> bool) {
        let deadline = tokio::time::Instant::now() + WAIT;
        while !f(self) {
            assert!(
                tokio::time::Instant::now() < deadline,
                "never happened: {what}\n{}",
                self.metrics()
            );
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
    }
}

impl Drop for TestServer {
    fn drop(&mut self) {
        if let Some(stop) = self.stop.take() {
            let _ = stop.send(());
        }
    }
}

fn rand_suffix() -> u64 {
    use std::sync::atomic::{AtomicU64, Ordering};
    static N: AtomicU64 = AtomicU64::new(0);
    N.fetch_add(1, Ordering::Relaxed)
}

/// The sample of series `name` (with its labels, e.g.
/// `fanwire_bus_up{component="postgres"}`) in a metrics text; panics when the
/// series is absent, so a renamed metric fails an `== 0` assertion rather
/// than passing it.
pub fn metric_value(text: &str, name: &str) -> f64 {
    metric_sample(text, name)
        .unwrap_or_else(|| panic!("no series `{name}` in the metrics:\n{text}"))
}

/// The sample of series `name`, or `None` while it does not exist yet (a
/// labelled series appears on its first increment): for waits only.
pub fn metric_sample(text: &str, name: &str) -> Option<f64> {
    text.lines()
        .find_map(|l| l.strip_prefix(name).and_then(|rest| rest.strip_prefix(' ')))
        .map(|v| {
            v.trim()
                .parse()
                .unwrap_or_else(|e| panic!("sample of `{name}` is not a number ({e}): {v}"))
        })
}

pub struct Client {
    pub ws: WebSocketStream<MaybeTlsStream<TcpStream>>,
    pub protocol: Option<String>,
}

impl Client {
    pub async fn connect(addr: std::net::SocketAddr, protocol: Option<&str>) -> Client {
        let stream = TcpStream::connect(addr).await.expect("the server accepts");
        Client::upgrade(stream, addr, protocol).await
    }

    /// A graphql-transport-ws client whose socket's receive buffer is fixed
    /// at `bytes` (the kernel does not grow a buffer that is set): what it
    /// leaves unread backs up into the server after a known, small amount.
    pub async fn with_receive_buffer(addr: std::net::SocketAddr, bytes: u32) -> Client {
        let socket = tokio::net::TcpSocket::new_v4().unwrap();
        socket.set_recv_buffer_size(bytes).unwrap();
        let stream = socket.connect(addr).await.expect("the server accepts");
        Client::upgrade(stream, addr, Some("graphql-transport-ws")).await
    }

    async fn upgrade(
        stream: TcpStream,
        addr: std::net::SocketAddr,
        protocol: Option<&str>,
    ) -> Client {
        let mut req = format!("ws://{addr}/graphql")
            .into_client_request()
            .unwrap();
        if let Some(p) = protocol {
            req.headers_mut()
                .insert("Sec-WebSocket-Protocol", HeaderValue::from_str(p).unwrap());
        }
        let (ws, res) = tokio_tungstenite::client_async(req, MaybeTlsStream::Plain(stream))
            .await
            .expect("upgrade succeeds");
        let protocol = res
            .headers()
            .get("Sec-WebSocket-Protocol")
            .map(|v| v.to_str().unwrap().to_owned());
        Client { ws, protocol }
    }

    pub async fn send(&mut self, v: Value) {
        self.send_text(&v.to_string()).await;
    }

    pub async fn send_text(&mut self, text: &str) {
        self.ws.send(Message::Text(text.into())).await.unwrap();
    }

    /// The next text message as JSON (pings are answered and skipped).
    pub async fn recv(&mut self) -> Value {
        loop {
            let msg = tokio::time::timeout(WAIT, self.ws.next())
                .await
                .expect("a message arrives")
                .expect("the socket is open")
                .expect("a valid frame");
            match msg {
                Message::Text(t) => return serde_json::from_str(t.as_str()).unwrap(),
                Message::Ping(_) | Message::Pong(_) => continue,
                other => panic!("expected a text frame, got {other:?}"),
            }
        }
    }

    /// Waits for the server's close frame and returns its code and reason.
    pub async fn closed(&mut self) -> (u16, String) {
        loop {
            let msg = tokio::time::timeout(WAIT, self.ws.next())
                .await
                .expect("the server closes");
            match msg {
                Some(Ok(Message::Close(Some(frame)))) => {
                    return (frame.code.into(), frame.reason.to_string())
                }
                Some(Ok(Message::Close(None))) => panic!("closed without a code"),
                None => panic!("the stream ended without a close frame"),
                Some(Ok(_)) => continue,
                Some(Err(e)) => panic!("socket error instead of a close frame: {e}"),
            }
        }
    }

    pub async fn subscribe(&mut self, id: &str, query: &str, variables: Value) {
        self.send(json!({"id": id, "type": "subscribe", "payload": {"query": query, "variables": variables}})).await;
    }
}

/// A minimal HTTP/1.1 request over a fresh connection; returns status and JSON body.
pub async fn http_request(
    addr: std::net::SocketAddr,
    method: &str,
    path: &str,
    body: &str,
    token: Option<&str>,
) -> (u16, Value) {
    let (status, text) = http_raw(addr, method, path, body, token).await;
    (
        status,
        serde_json::from_str(&text).unwrap_or(Value::String(text)),
    )
}

pub async fn http_raw(
    addr: std::net::SocketAddr,
    method: &str,
    path: &str,
    body: &str,
    token: Option<&str>,
) -> (u16, String) {
    let mut stream = TcpStream::connect(addr).await.unwrap();
    let auth = token
        .map(|t| format!("Authorization: Bearer {t}\r\n"))
        .unwrap_or_default();
    let req = format!(
        "{method} {path} HTTP/1.1\r\nHost: test\r\n{auth}Content-Type: application/json\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{body}",
        body.len()
    );
    stream.write_all(req.as_bytes()).await.unwrap();
    let mut raw = Vec::new();
    tokio::time::timeout(WAIT, stream.read_to_end(&mut raw))
        .await
        .expect("response arrives")
        .unwrap();
    let text = String::from_utf8_lossy(&raw).into_owned();
    let status = text
        .split(' ')
        .nth(1)
        .and_then(|s| s.parse().ok())
        .expect("status line");
    let body = text
        .split_once("\r\n\r\n")
        .map(|(_, b)| b.to_owned())
        .unwrap_or_default();
    (status, body)
}

/// A hot file swap under continuous publishing, shared by the filter and
/// the resolver reload tests: `clients` clients subscribe with the two
/// `queries` in turn (two selections, so two groups handle each event),
/// events numbered from 0 (their data made by `event`) are published to
/// `topic` while each version `1..=versions` is swapped in and seen live,
/// and `read` takes a client's message to `(event number, version that
/// handled it)`.
pub struct ReloadUnderLoad {
    pub clients: usize,
    pub queries: [&'static str; 2],
    pub topic: &'static str,
    pub event: fn(u64) -> Value,
    pub read: fn(&Value) -> (u64, u32),
}

/// What a [`ReloadUnderLoad`] run saw, once every check passed.
pub struct Reloaded {
    /// The number of the last event published.
    pub published: u64,
    /// Per version, from the file's swap until a client saw it.
    pub reload_ms: Vec<f64>,
    /// The versions that handled events.
    pub versions: std::collections::BTreeSet<u32>,
    /// The clients, all still open.
    pub clients: Vec<Client>,
}

impl ReloadUnderLoad {
    /// Runs the load, calling `swap(version)` for each version in turn, and
    /// checks that every client got every event exactly once and in order,
    /// from versions that only move forward, that no event was handled by
    /// two versions for different clients, and that each connection still
    /// answers a ping.
    pub async fn run(
        &self,
        server: &TestServer,
        versions: u32,
        mut swap: impl FnMut(u32),
    ) -> Reloaded {
        use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
        use std::sync::Arc;

        let mut clients = Vec::new();
        for n in 0..self.clients {
            let mut c = server.ready_client().await;
            c.subscribe("s", self.queries[n % 2], json!({})).await;
            clients.push(c);
        }
        let wanted = self.clients as f64;
        server
            .eventually("every subscription is live", |s| {
                s.metric("fanwire_subscriptions") >= wanted
            })
            .await;

        let newest_seen = Arc::new(AtomicU64::new(0));
        let last = Arc::new(AtomicU64::new(u64::MAX));
        let mut readers = Vec::new();
        for mut c in clients {
            let (newest_seen, last, read) = (newest_seen.clone(), last.clone(), self.read);
            readers.push(tokio::spawn(async move {
                let mut seen: Vec<(u64, u32)> = Vec::new();
                loop {
                    let (n, by) = read(&c.recv().await);
                    newest_seen.fetch_max(u64::from(by), Ordering::Relaxed);
                    seen.push((n, by));
                    if n == last.load(Ordering::Relaxed) {
                        return (seen, c);
                    }
                }
            }));
        }

        let stop = Arc::new(AtomicBool::new(false));
        let publisher = {
            let (engine, stop, topic, event) =
                (server.engine.clone(), stop.clone(), self.topic, self.event);
            tokio::spawn(async move {
                let mut n = 0u64;
                while !stop.load(Ordering::Relaxed) {
                    // As a host's publish does: wait for room, then hand over.
                    engine.room().await;
                    engine.publish(
                        vec![fanwire_core::Event::new(topic, event(n))],
                        fanwire_core::Order::Numbered,
                    );
                    n += 1;
                    if n % 16 == 0 {
                        tokio::time::sleep(Duration::from_millis(1)).await;
                    }
                }
                n
            })
        };
        let mut reload_ms = Vec::new();
        for version in 1..=versions {
            let started = std::time::Instant::now();
            swap(version);
            let deadline = tokio::time::Instant::now() + WAIT;
            while newest_seen.load(Ordering::Relaxed) < u64::from(version) {
                assert!(
                    tokio::time::Instant::now() < deadline,
                    "version {version} never went live"
                );
                tokio::time::sleep(Duration::from_millis(1)).await;
            }
            reload_ms.push(started.elapsed().as_secs_f64() * 1000.0);
        }
        stop.store(true, Ordering::Relaxed);
        let published = publisher.await.unwrap();
        // The last event tells the readers they are done.
        last.store(published, Ordering::Relaxed);
        server.engine.publish(
            vec![fanwire_core::Event::new(
                self.topic,
                (self.event)(published),
            )],
            fanwire_core::Order::Numbered,
        );

        let mut version_of: Vec<Option<u32>> = vec![None; published as usize + 1];
        let mut still_open = Vec::new();
        for reader in readers {
            let (seen, mut c) = tokio::time::timeout(WAIT * 3, reader)
                .await
                .expect("every client got every event")
                .unwrap();
            // Every accepted event, exactly once, in order ...
            let numbers: Vec<u64> = seen.iter().map(|(n, _)| *n).collect();
            if numbers != (0..=published).collect::<Vec<_>>() {
                let first_gap = numbers.iter().enumerate().find(|(i, n)| **n != *i as u64);
                let drops_and_faults: Vec<String> = server
                    .metrics()
                    .lines()
                    .filter(|l| l.contains("drops") || l.contains("faults"))
                    .map(str::to_owned)
                    .collect();
                panic!(
                    "lost, repeated or reordered events: {} received of {}, first difference at {first_gap:?}\n{}",
                    numbers.len(),
                    published + 1,
                    drops_and_faults.join("\n")
                );
            }
            // ... handled by versions that only move forward ...
            assert!(
                seen.windows(2).all(|w| w[0].1 <= w[1].1),
                "an event was handled by an older version after a newer one"
            );
            // ... and by one version for every group and client.
            for (n, by) in seen {
                let slot = &mut version_of[n as usize];
                assert!(
                    slot.is_none_or(|v| v == by),
                    "event {n} was handled by two versions"
                );
                *slot = Some(by);
            }
            // The connection is still open.
            c.send(json!({"type": "ping"})).await;
            assert_eq!(c.recv().await, json!({"type": "pong"}));
            still_open.push(c);
        }
        Reloaded {
            published,
            reload_ms,
            versions: version_of.iter().flatten().copied().collect(),
            clients: still_open,
        }
    }
}

/// Writes `bytes` to `path` the way deploy tools do: a temporary file
/// renamed over it, so a watcher never reads a half-written file.
pub fn replace_file(path: &std::path::Path, bytes: &[u8]) {
    let tmp = path.with_extension("tmp");
    std::fs::write(&tmp, bytes).unwrap();
    std::fs::rename(&tmp, path).unwrap();
}

/// Captures every log line of this test process (once), so tests can check
/// that a log says why, or show what led to a failure: `info` and up, and
/// the bus and sources' `debug` lines. Every server test shares the
/// process: a needle must name something only its own test has.
pub fn logs() -> std::sync::Arc<std::sync::Mutex<Vec<u8>>> {
    use std::sync::{Arc, Mutex, OnceLock};
    static LOGS: OnceLock<Arc<Mutex<Vec<u8>>>> = OnceLock::new();
    LOGS.get_or_init(|| {
        let buffer = Arc::new(Mutex::new(Vec::new()));
        let sink = buffer.clone();
        let subscriber = tracing_subscriber::fmt()
            .with_ansi(false)
            .with_writer(move || LogWriter(sink.clone()))
            .with_env_filter(tracing_subscriber::EnvFilter::new("info,fanwire_bus=debug"))
            .finish();
        let _ = tracing::subscriber::set_global_default(subscriber);
        buffer
    })
    .clone()
}

struct LogWriter(std::sync::Arc<std::sync::Mutex<Vec<u8>>>);

impl std::io::Write for LogWriter {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        self.0.lock().unwrap().extend_from_slice(buf);
        Ok(buf.len())
    }
    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

/// Whether any captured log line contains `needle`.
pub fn logged(needle: &str) -> bool {
    String::from_utf8_lossy(&logs().lock().unwrap()).contains(needle)
}

/// The captured log lines that contain `needle`.
pub fn logged_lines(needle: &str) -> String {
    String::from_utf8_lossy(&logs().lock().unwrap())
        .lines()
        .filter(|line| line.contains(needle))
        .collect::<Vec<_>>()
        .join("\n")
}
