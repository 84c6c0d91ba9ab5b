//! Load client for `benches/bus.sh`: latency from a database row or from a
//! publish on another node to the frame a subscriber receives, and delivery
//! throughput with the subscribers spread over nodes. Loopback only; every
//! phase is bounded in time. Prints one `RESULT key=value ...` line.
//!
//! ```text
//! bus_bench --ws ws://127.0.0.1:4002/graphql [--ws ...] --connections 1000 \
//!     (--publish http://127.0.0.1:4001/publish | --pg-url URL --pg-table T) \
//!     --events 2000 --rate 200 [--batch 100 with --rate 0] --label NAME
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
use tokio::net::TcpStream;
use tokio_tungstenite::tungstenite::client::IntoClientRequest;
use tokio_tungstenite::tungstenite::http::HeaderValue;
use tokio_tungstenite::tungstenite::Message;

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
            other => panic!("unknown flag {other}"),
        }
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

async fn client(
    url: String,
    query: &'static str,
    index: usize,
    events: usize,
    seen: Arc<Mutex<Seen>>,
    warm: Arc<AtomicUsize>,
    received: Arc<AtomicUsize>,
) {
    let mut req = url.into_client_request().unwrap();
    req.headers_mut().insert(
        "Sec-WebSocket-Protocol",
        HeaderValue::from_static("graphql-transport-ws"),
    );
    let (mut ws, _) = tokio_tungstenite::connect_async(req)
        .await
        .expect("connects");
    ws.send(Message::Text(r#"{"type":"connection_init"}"#.into()))
        .await
        .unwrap();
    let subscribe = json!({"id": "b", "type": "subscribe", "payload": {"query": query}});
    let mut warmed = false;
    let mut local = Vec::with_capacity(events);
    let mut counts = vec![0u16; events];
    while let Some(Ok(msg)) = ws.next().await {
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
                warm.fetch_add(1, Ordering::Relaxed);
            }
            continue;
        }
        local.push(now_us() - ts);
        if let Some(c) = counts.get_mut(seq as usize) {
            *c += 1;
        }
        {
            let mut s = seen.lock().unwrap();
            s.first_at.get_or_insert(at);
            s.last_at = Some(at);
        }
        received.fetch_add(1, Ordering::Relaxed);
        if local.len() >= events && counts.iter().all(|&c| c > 0) {
            break;
        }
    }
    let mut s = seen.lock().unwrap();
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

enum Publisher {
    Http(Http),
    Pg(tokio_postgres::Client, String),
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
    let seen = Arc::new(Mutex::new(Seen {
        latencies_us: Vec::new(),
        counts: Vec::new(),
        first_at: None,
        last_at: None,
    }));
    let warm = Arc::new(AtomicUsize::new(0));
    let received = Arc::new(AtomicUsize::new(0));
    let mut tasks = Vec::new();
    for i in 0..a.connections {
        let url = a.ws[i % a.ws.len()].clone();
        tasks.push(tokio::spawn(client(
            url,
            query,
            i,
            a.events,
            seen.clone(),
            warm.clone(),
            received.clone(),
        )));
        if i % 100 == 99 {
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }
    let mut publisher = match (&a.publish, &a.pg_url, &a.pg_table) {
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
    while warm.load(Ordering::Relaxed) < a.connections {
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
            let ts = a.publish.is_some().then_some(ts);
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
    let mut last = (received.load(Ordering::Relaxed), Instant::now());
    loop {
        let now = received.load(Ordering::Relaxed);
        if now >= expected || last.1.elapsed() > Duration::from_secs(10) {
            break;
        }
        if now != last.0 {
            last = (now, Instant::now());
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    for t in &tasks {
        t.abort();
    }
    for t in tasks {
        let _ = t.await;
    }
    let mut s = seen.lock().unwrap();
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
