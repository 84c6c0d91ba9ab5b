//! Load client for `benches/bus.sh`: latency from a database row or from a
//! publish on another node to the frame a subscriber receives, and delivery
//! throughput with the subscribers spread over nodes. Loopback only; every
//! phase is bounded in time. Prints one `RESULT key=value ...` line.
//!
//! ```text
//! bus_bench --ws ws://127.0.0.1:4002/graphql [--ws ...] --connections 1000 \
//!     (--publish http://127.0.0.1:4001/publish | --pg-url URL --pg-table T) \
//!     --events 2000 --rate 200 [--batch 100 with --rate 0] --label NAME
//! bus_bench --floor --connections 1000 --events 2000 --rate 200 --label NAME
//! ```
//!
//! Each event's data is `{"seq": n, "ts": <µs since the epoch>, "pad": ...}`;
//! a row's `ts` is `clock_timestamp()` when the INSERT runs, so database
//! latency includes the commit. Latency = receive time - `ts` (one machine,
//! one clock). In rate mode `ts` is when the event was due, so a slow
//! publisher shows as latency rather than as a lower rate.

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use futures_util::{SinkExt, StreamExt};
use serde_json::json;
use tokio::io::{AsyncBufReadExt, AsyncReadExt, AsyncWriteExt, BufReader};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::watch;
use tokio_tungstenite::tungstenite::client::IntoClientRequest;
use tokio_tungstenite::tungstenite::handshake::server::{ErrorResponse, Request, Response};
use tokio_tungstenite::tungstenite::http::HeaderValue;
use tokio_tungstenite::tungstenite::protocol::WebSocketConfig;
use tokio_tungstenite::tungstenite::Message;
use tokio_tungstenite::WebSocketStream;

const TICK: &str = r#"subscription { tick(topic: "bench") { seq ts pad } }"#;
const ROW: &str = r#"subscription { row(stream: "bench") { op new { seq ts pad } } }"#;

struct Args {
    ws: Vec<String>,
    connections: usize,
    publish: Option<String>,
    pg_url: Option<String>,
    pg_table: Option<String>,
    events: usize,
    rate: f64,
    batch: usize,
    pad: usize,
    label: String,
    floor: bool,
}

fn args() -> Args {
    let mut a = Args {
        ws: Vec::new(),
        connections: 100,
        publish: None,
        pg_url: None,
        pg_table: None,
        events: 1000,
        rate: 200.0,
        batch: 100,
        pad: 150,
        label: "run".into(),
        floor: false,
    };
    let mut it = std::env::args().skip(1);
    while let Some(flag) = it.next() {
        let mut value = || it.next().unwrap_or_else(|| panic!("{flag} needs a value"));
        match flag.as_str() {
            "--ws" => a.ws.push(value()),
            "--connections" => a.connections = value().parse().unwrap(),
            "--publish" => a.publish = Some(value()),
            "--pg-url" => a.pg_url = Some(value()),
            "--pg-table" => a.pg_table = Some(value()),
            "--events" => a.events = value().parse().unwrap(),
            "--rate" => a.rate = value().parse().unwrap(),
            "--batch" => a.batch = value().parse().unwrap(),
            "--pad" => a.pad = value().parse().unwrap(),
            "--label" => a.label = value(),
            "--floor" => a.floor = true,
            other => panic!("unknown flag {other}"),
        }
    }
    if a.floor {
        assert!(
            a.ws.is_empty() && a.publish.is_none() && a.pg_url.is_none(),
            "--floor serves itself: no --ws, --publish or --pg-url"
        );
        return a;
    }
    assert!(!a.ws.is_empty(), "--ws is required");
    assert!(
        a.publish.is_some() != (a.pg_url.is_some() && a.pg_table.is_some()),
        "give --publish, or --pg-url and --pg-table"
    );
    a
}

fn now_us() -> f64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap()
        .as_micros() as f64
}

/// The number after `"key":` in a frame, without a JSON parser (cheap
/// enough not to be what is measured).
fn number(frame: &str, key: &str) -> Option<f64> {
    let at = frame.find(key)? + key.len();
    let rest = &frame[at..];
    let end = rest
        .find(|c: char| !(c.is_ascii_digit() || matches!(c, '-' | '.' | 'e' | 'E' | '+')))
        .unwrap_or(rest.len());
    rest[..end].parse().ok()
}

/// What the clients saw.
struct Seen {
    latencies_us: Vec<f64>,
    /// Copies of each measured seq, per client.
    counts: Vec<Vec<u16>>,
    first_at: Option<Instant>,
    last_at: Option<Instant>,
}

/// What all clients share.
struct Tally {
    seen: Mutex<Seen>,
    /// Clients that got a warm-up tick.
    warm: AtomicUsize,
    /// Measured ticks received, by all clients.
    received: AtomicUsize,
}

async fn client(
    url: String,
    query: &'static str,
    index: usize,
    events: usize,
    tally: Arc<Tally>,
    mut stop: watch::Receiver<bool>,
) {
    let mut req = url.into_client_request().unwrap();
    req.headers_mut().insert(
        "Sec-WebSocket-Protocol",
        HeaderValue::from_static("graphql-transport-ws"),
    );
    // tungstenite zero-fills its whole read buffer before each read: the
    // default 128 KiB made this client cost more per frame than the host.
    let config = WebSocketConfig::default().read_buffer_size(8 * 1024);
    let (mut ws, _) = tokio_tungstenite::connect_async_with_config(req, Some(config), true)
        .await
        .expect("connects");
    ws.send(Message::Text(r#"{"type":"connection_init"}"#.into()))
        .await
        .unwrap();
    let subscribe = json!({"id": "b", "type": "subscribe", "payload": {"query": query}});
    let mut warmed = false;
    let mut local = Vec::with_capacity(events);
    let mut counts = vec![0u16; events];
    loop {
        // Stopped, not aborted: a client that missed events still reports
        // what it got.
        let msg = tokio::select! {
            biased;
            _ = stop.changed() => break,
            msg = ws.next() => msg,
        };
        let Some(Ok(msg)) = msg else { break };
        let Message::Text(text) = msg else { continue };
        let text = text.as_str();
        if text.contains("connection_ack") {
            ws.send(Message::Text(subscribe.to_string().into()))
                .await
                .unwrap();
            continue;
        }
        let (Some(seq), Some(ts)) = (number(text, "\"seq\":"), number(text, "\"ts\":")) else {
            continue;
        };
        let at = Instant::now();
        if seq < 0.0 {
            if !warmed {
                warmed = true;
                tally.warm.fetch_add(1, Ordering::Relaxed);
            }
            continue;
        }
        local.push(now_us() - ts);
        if let Some(c) = counts.get_mut(seq as usize) {
            *c += 1;
        }
        {
            let mut s = tally.seen.lock().unwrap();
            s.first_at.get_or_insert(at);
            s.last_at = Some(at);
        }
        tally.received.fetch_add(1, Ordering::Relaxed);
        if local.len() >= events && counts.iter().all(|&c| c > 0) {
            break;
        }
    }
    let mut s = tally.seen.lock().unwrap();
    s.latencies_us.extend(local);
    if s.counts.len() <= index {
        s.counts.resize(index + 1, Vec::new());
    }
    s.counts[index] = counts;
}

/// A keep-alive HTTP/1.1 publisher.
struct Http {
    stream: BufReader<TcpStream>,
    host: String,
    path: String,
}

impl Http {
    async fn connect(url: &str) -> Http {
        let rest = url.strip_prefix("http://").expect("http:// URL");
        let (host, path) = rest.split_at(rest.find('/').unwrap_or(rest.len()));
        let stream = TcpStream::connect(host).await.expect("publish endpoint");
        stream.set_nodelay(true).unwrap();
        Http {
            stream: BufReader::new(stream),
            host: host.into(),
            path: if path.is_empty() {
                "/".into()
            } else {
                path.into()
            },
        }
    }

    async fn post(&mut self, body: &str) -> u16 {
        let req = format!(
            "POST {} HTTP/1.1\r\nHost: {}\r\nContent-Type: application/json\r\nContent-Length: {}\r\n\r\n{body}",
            self.path,
            self.host,
            body.len()
        );
        self.stream
            .get_mut()
            .write_all(req.as_bytes())
            .await
            .unwrap();
        let mut status = 0;
        let mut length = 0;
        let mut line = String::new();
        loop {
            line.clear();
            self.stream.read_line(&mut line).await.unwrap();
            if status == 0 {
                status = line
                    .split(' ')
                    .nth(1)
                    .and_then(|s| s.parse().ok())
                    .unwrap_or(0);
            } else if line == "\r\n" {
                break;
            } else if let Some(v) = line.to_ascii_lowercase().strip_prefix("content-length:") {
                length = v.trim().parse().unwrap();
            }
        }
        let mut body = vec![0; length];
        self.stream.read_exact(&mut body).await.unwrap();
        status
    }
}

/// The floor: a graphql-transport-ws server that does nothing per tick but
/// write one prebuilt frame to each subscribed socket, one `write` each,
/// half the sockets on each core (the most a 2-core machine can do; fanwire
/// writes a lone event's frames from one thread). Latency against it is
/// what the kernel and this client cost.
type Subscribed = Arc<Mutex<Vec<WebSocketStream<TcpStream>>>>;

/// Answers the handshake with the subprotocol the clients ask for.
#[allow(clippy::result_large_err)] // the signature tungstenite's `Callback` takes
fn echo_protocol(_: &Request, mut response: Response) -> Result<Response, ErrorResponse> {
    response.headers_mut().insert(
        "Sec-WebSocket-Protocol",
        HeaderValue::from_static("graphql-transport-ws"),
    );
    Ok(response)
}

async fn floor_server() -> (String, Subscribed) {
    let listener = TcpListener::bind("127.0.0.1:0").await.expect("binds");
    let url = format!("ws://{}/graphql", listener.local_addr().unwrap());
    let subscribed = Subscribed::default();
    let ready = subscribed.clone();
    tokio::spawn(async move {
        loop {
            let (tcp, _) = listener.accept().await.expect("accepts");
            tcp.set_nodelay(true).unwrap();
            let ready = ready.clone();
            tokio::spawn(async move {
                let mut ws = tokio_tungstenite::accept_hdr_async(tcp, echo_protocol)
                    .await
                    .expect("handshake");
                while let Some(Ok(Message::Text(text))) = ws.next().await {
                    if text.contains("connection_init") {
                        let ack = r#"{"type":"connection_ack"}"#;
                        ws.send(Message::Text(ack.into())).await.unwrap();
                    } else if text.contains("subscribe") {
                        ready.lock().unwrap().push(ws);
                        return;
                    }
                }
            });
        }
    });
    (url, subscribed)
}

/// Writes `payload` as one unmasked text frame to every subscribed socket.
fn write_to_all(subscribed: &Subscribed, payload: &[u8]) {
    let mut frame = vec![0x81];
    match payload.len() {
        n @ 0..=125 => frame.push(n as u8),
        n @ 126..=65535 => {
            frame.push(126);
            frame.extend_from_slice(&(n as u16).to_be_bytes());
        }
        n => {
            frame.push(127);
            frame.extend_from_slice(&(n as u64).to_be_bytes());
        }
    }
    frame.extend_from_slice(payload);
    let subscribed = subscribed.lock().unwrap();
    let (first, second) = subscribed.split_at(subscribed.len() / 2);
    let write = |sockets: &[WebSocketStream<TcpStream>]| {
        for ws in sockets {
            // A 200-byte frame to an idle socket never fills its buffer.
            let written = ws
                .get_ref()
                .try_write(&frame)
                .expect("socket takes the frame");
            assert_eq!(written, frame.len(), "short write to an idle socket");
        }
    };
    std::thread::scope(|scope| {
        scope.spawn(|| write(second));
        write(first);
    });
}

enum Publisher {
    Http(Http),
    Pg(tokio_postgres::Client, String),
    Floor(Subscribed),
}

impl Publisher {
    /// Publishes events `seqs`, stamped `ts` (µs; now when `None`). Returns
    /// how long the call took (for a row: the INSERT and its commit).
    async fn send(&mut self, seqs: &[i64], ts: Option<f64>, pad: &str) -> Duration {
        let start = Instant::now();
        match self {
            Publisher::Http(http) => {
                let ts = ts.unwrap_or_else(now_us);
                let events: Vec<_> = seqs
                    .iter()
                    .map(|seq| json!({"topic": "ticks:bench", "data": {"seq": seq, "ts": ts, "pad": pad}}))
                    .collect();
                let status = http
                    .post(&serde_json::Value::from(events).to_string())
                    .await;
                assert!(status == 200 || status == 202, "publish answered {status}");
            }
            Publisher::Floor(subscribed) => {
                let ts = ts.unwrap_or_else(now_us);
                for seq in seqs {
                    let next = json!({"id": "b", "type": "next", "payload": {"data": {"tick": {"seq": seq, "ts": ts, "pad": pad}}}});
                    write_to_all(subscribed, next.to_string().as_bytes());
                }
            }
            Publisher::Pg(client, table) => {
                for seq in seqs {
                    client
                        .execute(
                            &format!(
                                "INSERT INTO {table} (seq, ts, pad) VALUES ($1, \
                                 extract(epoch from clock_timestamp()) * 1000000, $2)"
                            ),
                            &[seq, &pad],
                        )
                        .await
                        .unwrap();
                }
            }
        }
        start.elapsed()
    }
}

fn percentile(sorted: &[f64], p: f64) -> f64 {
    if sorted.is_empty() {
        return f64::NAN;
    }
    sorted[((sorted.len() - 1) as f64 * p).round() as usize]
}

#[tokio::main]
async fn main() {
    let a = args();
    let pad = "x".repeat(a.pad);
    let query = if a.pg_url.is_some() { ROW } else { TICK };
    let tally = Arc::new(Tally {
        seen: Mutex::new(Seen {
            latencies_us: Vec::new(),
            counts: Vec::new(),
            first_at: None,
            last_at: None,
        }),
        warm: AtomicUsize::new(0),
        received: AtomicUsize::new(0),
    });
    let mut a = a;
    let mut floor = None;
    if a.floor {
        let (url, subscribed) = floor_server().await;
        a.ws.push(url);
        floor = Some(subscribed);
    }
    let (stop, stop_rx) = watch::channel(false);
    let mut tasks = Vec::new();
    for i in 0..a.connections {
        let url = a.ws[i % a.ws.len()].clone();
        tasks.push(tokio::spawn(client(
            url,
            query,
            i,
            a.events,
            tally.clone(),
            stop_rx.clone(),
        )));
        if i % 100 == 99 {
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }
    let mut publisher = match (&a.publish, &a.pg_url, &a.pg_table) {
        _ if floor.is_some() => Publisher::Floor(floor.take().unwrap()),
        (Some(url), _, _) => Publisher::Http(Http::connect(url).await),
        (None, Some(url), Some(table)) => {
            let (client, connection) = tokio_postgres::connect(url, tokio_postgres::NoTls)
                .await
                .expect("PostgreSQL");
            tokio::spawn(connection);
            Publisher::Pg(client, table.clone())
        }
        _ => unreachable!(),
    };
    // A subscribe has no acknowledgement: warm up until everyone has one.
    let deadline = Instant::now() + Duration::from_secs(120);
    while tally.warm.load(Ordering::Relaxed) < a.connections {
        assert!(Instant::now() < deadline, "clients never all subscribed");
        publisher.send(&[-1], None, "").await;
        tokio::time::sleep(Duration::from_millis(250)).await;
    }
    tokio::time::sleep(Duration::from_millis(300)).await;

    let started = Instant::now();
    let mut calls = Vec::new();
    if a.rate > 0.0 {
        let interval = Duration::from_secs_f64(1.0 / a.rate);
        let t0 = now_us();
        for n in 0..a.events {
            let due = started + interval * n as u32;
            tokio::time::sleep_until(due.into()).await;
            let ts = t0 + interval.as_micros() as f64 * n as f64;
            // Rows are stamped by the database when inserted.
            let ts = a.pg_url.is_none().then_some(ts);
            calls.push(publisher.send(&[n as i64], ts, &pad).await);
        }
    } else {
        let seqs: Vec<i64> = (0..a.events as i64).collect();
        for chunk in seqs.chunks(a.batch) {
            calls.push(publisher.send(chunk, None, &pad).await);
        }
    }
    let publish_s = started.elapsed().as_secs_f64();
    // Wait until everything arrived, or nothing new did for 10 s.
    let expected = a.connections * a.events;
    let mut last = (tally.received.load(Ordering::Relaxed), Instant::now());
    loop {
        let now = tally.received.load(Ordering::Relaxed);
        if now >= expected || last.1.elapsed() > Duration::from_secs(10) {
            break;
        }
        if now != last.0 {
            last = (now, Instant::now());
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    let _ = stop.send(true);
    for t in tasks {
        let _ = t.await;
    }
    let mut s = tally.seen.lock().unwrap();
    let distinct: usize = s
        .counts
        .iter()
        .map(|c| c.iter().filter(|&&n| n > 0).count())
        .sum();
    let dup: usize = s
        .counts
        .iter()
        .flat_map(|c| c.iter())
        .map(|&n| (n as usize).saturating_sub(1))
        .sum();
    let elapsed = match s.last_at {
        Some(last) => last.duration_since(started).as_secs_f64(),
        None => f64::NAN,
    };
    s.latencies_us.sort_by(|x, y| x.total_cmp(y));
    let l = &s.latencies_us;
    let mut call_ms: Vec<f64> = calls.iter().map(|d| d.as_secs_f64() * 1e3).collect();
    call_ms.sort_by(|x, y| x.total_cmp(y));
    println!(
        "RESULT label={} conns={} nodes={} events={} rate={} deliveries={} expected={} lost={} dup={} \
         publish_s={:.3} elapsed_s={:.3} deliveries_per_s={:.0} p50_ms={:.3} p99_ms={:.3} max_ms={:.3} \
         publish_call_p50_ms={:.3} publish_call_p99_ms={:.3}",
        a.label,
        a.connections,
        a.ws.len(),
        a.events,
        a.rate,
        distinct,
        expected,
        expected - distinct,
        dup,
        publish_s,
        elapsed,
        distinct as f64 / elapsed,
        percentile(l, 0.5) / 1e3,
        percentile(l, 0.99) / 1e3,
        l.last().copied().unwrap_or(f64::NAN) / 1e3,
        percentile(&call_ms, 0.5),
        percentile(&call_ms, 0.99),
    );
}
