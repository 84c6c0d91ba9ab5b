//! `loadgen`: drives a GraphQL subscription server (fanwire or the Node
//! baseline) over loopback and prints one `RESULT key=value ...` line.
//!
//! It opens `--connections` graphql-transport-ws clients (`connection_init`,
//! wait for the ack, `subscribe`), publishes warm-up ticks until every client
//! has received one (a subscribe has no acknowledgement, so this is the only
//! way to know the server registered it), then publishes `--events` ticks
//! through `POST /publish` in one of three modes (`--mode burst`: batches of
//! 100; `single`: one event per request, each waiting for its reply;
//! `concurrent`: `--publishers` connections doing `single` in parallel).
//! Each tick carries its sequence number and its wall-clock publish time;
//! clients record publish-to-receive latency and count gaps, duplicates and
//! ticks overtaken by a later tick of the same publisher. With `--idle` it
//! stops after the warm-up and reports the server's memory per connection
//! instead; with `--idle-after S` it also holds the connections idle for S
//! seconds after the run and reads the server's memory again. With `--jwt-secret`
//! the clients authenticate (an HS256 token per principal) and each tick
//! names the principal it belongs to, so a server running the security
//! filters can be measured, and checked: each client expects exactly its
//! principal's ticks, and counts any other as leaked.
//!
//! For more clients than one process may hold sockets, several load
//! generators share a run: each connects its share (`--source-addrs`
//! spreads them over 127.0.0.x), reports ready through `--ready-file` and
//! waits for `--go-file`; one publishes, the others `--receive-only`.
//!
//! Everything is bounded: connects and acks time out, warm-up gives up after
//! `--live-timeout`, and the drain after `--drain-timeout` without progress.

use std::net::{Ipv4Addr, SocketAddr};
use std::pin::pin;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use anyhow::{anyhow, bail, Context};
use clap::Parser;
use fanwire_benches::frame::{classify, Incoming};
use fanwire_benches::http::Poster;
use fanwire_benches::publishing::{Mode, Order, Plan};
use fanwire_benches::stats::{cpu_seconds, machine_ticks, peak_rss_kb, quantile, rss_kb, Seen};
use fanwire_benches::workload::{
    owner_of, pad_for, source_address, subscribe_message, ticks_of, write_event, Principal,
};
use futures_util::{SinkExt, StreamExt};
use tokio::net::{TcpSocket, TcpStream};
use tokio::sync::{watch, Semaphore};
use tokio::task::JoinSet;
use tokio::time::timeout;
use tokio_tungstenite::tungstenite::client::IntoClientRequest;
use tokio_tungstenite::tungstenite::http::HeaderValue;
use tokio_tungstenite::tungstenite::protocol::WebSocketConfig;
use tokio_tungstenite::tungstenite::Message;
use tokio_tungstenite::WebSocketStream;

/// Load generator for GraphQL subscription servers (loopback only).
#[derive(Debug, Parser)]
struct Args {
    /// WebSocket endpoint, e.g. ws://127.0.0.1:4000/graphql.
    #[arg(long)]
    url: String,
    /// Publish endpoint, e.g. http://127.0.0.1:4000/publish.
    #[arg(long)]
    publish_url: String,
    /// Concurrent client connections, one subscription each.
    #[arg(long, default_value_t = 100)]
    connections: usize,
    /// Measured events to publish.
    #[arg(long, default_value_t = 10_000)]
    events: u64,
    /// How the measured events are published: `burst` (back-to-back
    /// requests of `--batch` events), `single` (one event per request, each
    /// waiting for its reply) or `concurrent` (`--publishers` connections
    /// each doing `single`). Default: `single` with `--rate`, else `burst`.
    #[arg(long, value_enum)]
    mode: Option<Mode>,
    /// With `--mode concurrent`: publishing connections (default 8).
    #[arg(long)]
    publishers: Option<usize>,
    /// Events per second for `single` and `concurrent`, on a fixed schedule
    /// over all publishers; 0 publishes back-to-back.
    #[arg(long, default_value_t = 0.0)]
    rate: f64,
    /// Approximate size of each event's `data` in bytes.
    #[arg(long, default_value_t = 200)]
    payload_bytes: usize,
    /// Distinct subscription selections among the clients (1 = all identical).
    #[arg(long, default_value_t = 1)]
    distinct: usize,
    /// The server's process id, to read its memory and CPU from /proc.
    #[arg(long)]
    server_pid: Option<u32>,
    /// Only connect and subscribe, then report memory per connection.
    #[arg(long)]
    idle: bool,
    /// A name for this run, echoed in the result line.
    #[arg(long, default_value = "run")]
    label: String,
    /// The topic to subscribe and publish to.
    #[arg(long, default_value = "bench")]
    topic: String,
    /// Events per publish request in `burst` mode.
    #[arg(long, default_value_t = 100)]
    batch: usize,
    /// After the run, hold the connections idle this many seconds and read
    /// the server's memory again (do its buffers shrink back?).
    #[arg(long)]
    idle_after: Option<f64>,
    /// Handshakes in flight at once while connecting.
    #[arg(long, default_value_t = 128)]
    connect_concurrency: usize,
    /// Bearer token for the publish endpoint.
    #[arg(long)]
    publish_token: Option<String>,
    /// Seconds to wait for every client to receive a warm-up tick.
    #[arg(long, default_value_t = 60.0)]
    live_timeout: f64,
    /// Seconds without a new delivery after which missing ticks count as lost.
    #[arg(long, default_value_t = 10.0)]
    drain_timeout: f64,
    /// Tokio worker threads (default: one per core).
    #[arg(long)]
    threads: Option<usize>,
    /// Authenticate: each client sends an HS256 JWT signed with this secret
    /// as `connection_init`'s `token` (subject, tenant, federation and the
    /// role `tick:read`), and each tick names its owner (`user_id`,
    /// `tenant_id`, `federation_id`), so a server running the security
    /// filters passes a tick to its owner's clients only.
    #[arg(long)]
    jwt_secret: Option<String>,
    /// With `--jwt-secret`: distinct principals; client `i` is principal
    /// `i % K` and tick `n` belongs to principal `n % K`. Each client then
    /// expects only its principal's ticks; any other one it receives counts
    /// as `leaked`.
    #[arg(long, default_value_t = 1)]
    principals: usize,
    /// Spread the clients over this many loopback source addresses
    /// (127.0.0.2, 127.0.0.3, ...; at most 253): one address runs out of
    /// ephemeral ports at about 28,000 connections to one server port.
    /// 0 connects from 127.0.0.1.
    #[arg(long, default_value_t = 0)]
    source_addrs: usize,
    /// Once this many clients failed to connect, the rest do not try
    /// (counted as `skipped`): past a server's limit every further client
    /// would wait out its 20 s connect timeout.
    #[arg(long)]
    max_failures: Option<usize>,
    /// One of several load generators sharing a run (each process holds
    /// at most `ulimit -n` sockets): once every client is live, write this
    /// file and wait (up to 10 minutes) for `--go-file` before the measured
    /// phase.
    #[arg(long, requires = "go_file")]
    ready_file: Option<std::path::PathBuf>,
    /// See `--ready-file`.
    #[arg(long, requires = "ready_file")]
    go_file: Option<std::path::PathBuf>,
    /// Publish nothing measured: another load generator of the same run
    /// publishes the ticks, and this one's clients only receive them
    /// (latency is measured from the publisher's time stamp, same clock).
    #[arg(long)]
    receive_only: bool,
}

/// A per-client counter on its own cache line, so clients on different
/// threads do not slow each other down.
#[derive(Default)]
#[repr(align(64))]
struct Counter(AtomicU64);

/// What the clients report to the driver while the run goes on.
struct Shared {
    events: u64,
    /// Who publishes which ticks (for the per-publisher order check).
    plan: Plan,
    connected: AtomicUsize,
    failed: AtomicUsize,
    /// Clients that did not try to connect (`--max-failures` reached).
    skipped: AtomicUsize,
    live: AtomicUsize,
    done: AtomicUsize,
    closed: AtomicUsize,
    unexpected: AtomicU64,
    leaked: AtomicU64,
    /// Principals the ticks are spread over (1 without authentication).
    principals: usize,
    /// The `connection_init` payload of each principal.
    inits: Vec<String>,
    progress: Vec<Counter>,
    first_problem: Mutex<Option<String>>,
}

impl Shared {
    fn problem(&self, what: String) {
        let mut first = self.first_problem.lock().unwrap_or_else(|p| p.into_inner());
        first.get_or_insert(what);
    }

    fn delivered(&self) -> u64 {
        self.progress
            .iter()
            .map(|c| c.0.load(Ordering::Relaxed))
            .sum()
    }
}

/// What one client saw of the measured ticks.
struct ClientStats {
    connected: bool,
    /// The measured ticks this client should receive.
    expected: u64,
    seen: Seen,
    order: Order,
    latencies_us: Vec<u32>,
    last_receive_us: u64,
}

fn now_us() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_micros() as u64)
}

type Ws = WebSocketStream<TcpStream>;

/// Connects to `authority`, from `source` (port chosen by the kernel) if given.
async fn connect(authority: &str, source: Option<Ipv4Addr>) -> anyhow::Result<TcpStream> {
    let Some(source) = source else {
        return Ok(TcpStream::connect(authority).await?);
    };
    let server = tokio::net::lookup_host(authority)
        .await?
        .find(SocketAddr::is_ipv4)
        .ok_or_else(|| anyhow!("{authority}: no IPv4 address to connect to from {source}"))?;
    let socket = TcpSocket::new_v4()?;
    socket
        .bind(SocketAddr::from((source, 0)))
        .with_context(|| format!("cannot bind to {source}"))?;
    Ok(socket.connect(server).await?)
}

/// Opens one client: handshake, `connection_init`, ack, `subscribe`.
async fn open(
    url: &str,
    source: Option<Ipv4Addr>,
    init: &str,
    subscribe: String,
    read_buffer: usize,
) -> anyhow::Result<Ws> {
    let authority = url
        .strip_prefix("ws://")
        .and_then(|rest| rest.split('/').next())
        .ok_or_else(|| anyhow!("{url}: only ws:// URLs are supported"))?;
    let tcp = connect(authority, source).await?;
    tcp.set_nodelay(true)?;
    let mut request = url.into_client_request()?;
    request.headers_mut().insert(
        "Sec-WebSocket-Protocol",
        HeaderValue::from_static("graphql-transport-ws"),
    );
    let config = WebSocketConfig::default().read_buffer_size(read_buffer);
    let (mut ws, _) =
        tokio_tungstenite::client_async_with_config(request, tcp, Some(config)).await?;
    ws.send(Message::text(init)).await?;
    loop {
        match ws.next().await {
            Some(Ok(Message::Text(text))) => match classify(text.as_bytes()) {
                Incoming::Ack => break,
                Incoming::Ping => ws.send(Message::text(r#"{"type":"pong"}"#)).await?,
                _ => bail!("expected connection_ack, got {}", text.as_str()),
            },
            Some(Ok(Message::Close(frame))) => bail!("closed before ack: {frame:?}"),
            Some(Ok(_)) => {}
            Some(Err(e)) => return Err(e.into()),
            None => bail!("closed before ack"),
        }
    }
    ws.send(Message::text(subscribe)).await?;
    Ok(ws)
}

/// One client from connect to stop.
async fn client(
    index: usize,
    args: Arc<Args>,
    shared: Arc<Shared>,
    gate: Arc<Semaphore>,
    mut stop: watch::Receiver<bool>,
) -> ClientStats {
    let principal = index % shared.principals;
    let mut stats = ClientStats {
        connected: false,
        expected: ticks_of(principal, shared.events, shared.principals),
        seen: Seen::new(shared.events),
        order: Order::new(shared.plan.publishers),
        latencies_us: Vec::new(),
        last_receive_us: 0,
    };
    let subscribe = subscribe_message("1", &args.topic, index, args.distinct);
    // tungstenite zero-fills the whole read buffer before every read, so a
    // big one costs CPU per frame (and memory per idle connection).
    let read_buffer = if args.idle { 4096 } else { 8 * 1024 };
    let source = source_address(index, args.source_addrs);
    let opened = {
        let _permit = gate.acquire().await;
        if args
            .max_failures
            .is_some_and(|max| shared.failed.load(Ordering::Relaxed) >= max)
        {
            shared.skipped.fetch_add(1, Ordering::Relaxed);
            return stats;
        }
        timeout(
            Duration::from_secs(20),
            open(
                &args.url,
                source,
                &shared.inits[principal],
                subscribe,
                read_buffer,
            ),
        )
        .await
        .unwrap_or_else(|_| Err(anyhow!("timed out connecting")))
    };
    let mut ws = match opened {
        Ok(ws) => ws,
        Err(e) => {
            shared.failed.fetch_add(1, Ordering::Relaxed);
            shared.problem(format!("client {index}: {e:#}"));
            return stats;
        }
    };
    shared.connected.fetch_add(1, Ordering::Relaxed);
    stats.connected = true;
    if !args.idle {
        stats.latencies_us.reserve(shared.events as usize);
    }
    let mut live = false;
    let mut stopped = pin!(stop.changed());
    loop {
        let msg = tokio::select! {
            biased;
            _ = &mut stopped => break,
            msg = ws.next() => msg,
        };
        let text = match msg {
            Some(Ok(Message::Text(text))) => text,
            Some(Ok(Message::Close(frame))) => {
                shared.closed.fetch_add(1, Ordering::Relaxed);
                shared.problem(format!("client {index}: server closed: {frame:?}"));
                break;
            }
            Some(Ok(_)) => continue,
            Some(Err(e)) => {
                shared.closed.fetch_add(1, Ordering::Relaxed);
                shared.problem(format!("client {index}: {e}"));
                break;
            }
            None => {
                shared.closed.fetch_add(1, Ordering::Relaxed);
                break;
            }
        };
        match classify(text.as_bytes()) {
            Incoming::Tick { seq, .. } if seq < 0 => {
                if !live {
                    live = true;
                    shared.live.fetch_add(1, Ordering::Relaxed);
                }
            }
            Incoming::Tick { seq, .. } if owner_of(seq, shared.principals) != principal => {
                // Another principal's tick: a filter let it through.
                shared.leaked.fetch_add(1, Ordering::Relaxed);
            }
            Incoming::Tick { seq, ts_us } => {
                let now = now_us();
                if stats.seen.record(seq as u64) {
                    let publisher = shared.plan.publisher_of(seq as u64);
                    stats.order.record(publisher, seq as u64);
                    let latency = (now as f64 - ts_us).max(0.0);
                    stats.latencies_us.push(latency.min(u32::MAX as f64) as u32);
                    stats.last_receive_us = now;
                    let unique = stats.seen.unique();
                    shared.progress[index].0.store(unique, Ordering::Relaxed);
                    if unique == stats.expected {
                        shared.done.fetch_add(1, Ordering::Relaxed);
                    }
                }
            }
            Incoming::Ping => {
                if ws.send(Message::text(r#"{"type":"pong"}"#)).await.is_err() {
                    break;
                }
            }
            Incoming::Ack | Incoming::Other("pong") => {}
            Incoming::Other(_) | Incoming::Malformed => {
                shared.unexpected.fetch_add(1, Ordering::Relaxed);
                shared.problem(format!("client {index}: unexpected {}", text.as_str()));
            }
        }
    }
    // Closing politely costs a round trip per client; dropping is enough.
    drop(ws);
    stats
}

/// How long one `POST /publish` may take, reply included.
const PUBLISH_TIMEOUT: Duration = Duration::from_secs(60);

/// Publishes ticks `seqs` as one request (a JSON array when more than one),
/// stamped `ts_us`, or the current time when `None`; each names its owner
/// among `owners` when there are any.
async fn publish(
    poster: &mut Poster,
    topic: &str,
    seqs: std::ops::Range<i64>,
    ts_us: Option<u64>,
    pad: &str,
    owners: &[Principal],
) -> anyhow::Result<u64> {
    let many = seqs.end - seqs.start > 1;
    let mut body = String::with_capacity((seqs.end - seqs.start) as usize * (pad.len() + 80));
    if many {
        body.push('[');
    }
    for seq in seqs {
        if many && body.len() > 1 {
            body.push(',');
        }
        let owner = (!owners.is_empty()).then(|| &owners[owner_of(seq, owners.len())]);
        write_event(
            &mut body,
            topic,
            seq,
            ts_us.unwrap_or_else(now_us),
            pad,
            owner,
        );
    }
    if many {
        body.push(']');
    }
    let (status, reply) = timeout(PUBLISH_TIMEOUT, poster.post(body.as_bytes()))
        .await
        .map_err(|_| anyhow!("publish not answered within {PUBLISH_TIMEOUT:?}"))??;
    let reply = String::from_utf8_lossy(&reply);
    if status != 200 {
        bail!("publish answered {status}: {reply}");
    }
    let value: serde_json::Value =
        serde_json::from_str(&reply).with_context(|| format!("publish reply {reply:?}"))?;
    Ok(value["deliveries"].as_u64().unwrap_or(0))
}

/// What one publisher did.
struct Published {
    server_deliveries: u64,
    /// How long each of its requests took, reply included.
    calls_us: Vec<u32>,
}

/// The clock the measured phase runs on: a rate's schedule starts at
/// `start`, which is `start_us` on the wall clock.
#[derive(Clone, Copy)]
struct Clock {
    start: tokio::time::Instant,
    start_us: u64,
}

/// Publisher `p` of `plan`: its requests one at a time over `poster`.
async fn publisher(
    p: usize,
    plan: Plan,
    args: Arc<Args>,
    mut poster: Poster,
    pad: Arc<str>,
    owners: Arc<[Principal]>,
    clock: Clock,
) -> anyhow::Result<Published> {
    let gap = (args.rate > 0.0).then(|| Duration::from_secs_f64(1.0 / args.rate));
    let mut done = Published {
        server_deliveries: 0,
        calls_us: Vec::new(),
    };
    for request in plan.requests(p) {
        let ts_us = match gap {
            Some(gap) => {
                let due = gap.mul_f64(request.start as f64);
                tokio::time::sleep_until(clock.start + due).await;
                // Stamped with when it was due, not when it went out: if the
                // server holds up the publisher, the delay shows as latency
                // instead of quietly lowering the rate.
                Some(clock.start_us + due.as_micros() as u64)
            }
            None => None,
        };
        let call = Instant::now();
        done.server_deliveries +=
            publish(&mut poster, &args.topic, request, ts_us, &pad, &owners).await?;
        done.calls_us
            .push(call.elapsed().as_micros().min(u32::MAX as u128) as u32);
    }
    Ok(done)
}

/// Publishes the measured ticks as `plan` says, every publisher on its own
/// connection (the first reuses `poster`); returns the deliveries the
/// server reported and the sorted request times.
async fn publish_measured(
    plan: Plan,
    args: &Arc<Args>,
    poster: Poster,
    pad: &str,
    owners: &[Principal],
    clock: Clock,
) -> anyhow::Result<(u64, Vec<u32>)> {
    let pad: Arc<str> = pad.into();
    let owners: Arc<[Principal]> = owners.into();
    let mut publishers = JoinSet::new();
    let mut first = Some(poster);
    for p in 0..plan.publishers {
        let poster = match first.take() {
            Some(poster) => poster,
            None => Poster::new(&args.publish_url, args.publish_token.as_deref())?,
        };
        publishers.spawn(publisher(
            p,
            plan,
            args.clone(),
            poster,
            pad.clone(),
            owners.clone(),
            clock,
        ));
    }
    let (mut deliveries, mut calls) = (0, Vec::new());
    // The first failure returns, and dropping the set aborts the others.
    while let Some(joined) = publishers.join_next().await {
        let done = joined??;
        deliveries += done.server_deliveries;
        calls.extend_from_slice(&done.calls_us);
    }
    calls.sort_unstable();
    Ok((deliveries, calls))
}

fn kb(value: Option<u64>) -> String {
    value.map_or_else(|| "na".into(), |v| v.to_string())
}

fn secs(value: Option<f64>) -> String {
    value.map_or_else(|| "na".into(), |v| format!("{v:.2}"))
}

/// The principals and, for each, a `connection_init` carrying its HS256
/// token (valid for an hour).
fn authenticated(secret: &str, principals: usize) -> anyhow::Result<(Vec<Principal>, Vec<String>)> {
    let owners: Vec<Principal> = (0..principals).map(Principal::of).collect();
    let now_s = now_us() / 1_000_000;
    let key = jsonwebtoken::EncodingKey::from_secret(secret.as_bytes());
    let header = jsonwebtoken::Header::new(jsonwebtoken::Algorithm::HS256);
    let mut inits = Vec::with_capacity(principals);
    for p in &owners {
        let token = jsonwebtoken::encode(&header, &p.claims(now_s, 3600), &key)?;
        let init = serde_json::json!({"type": "connection_init", "payload": {"token": token}});
        inits.push(init.to_string());
    }
    Ok((owners, inits))
}

async fn run(args: Arc<Args>) -> anyhow::Result<()> {
    let n = args.connections;
    let pid = args.server_pid.map(|p| p.to_string());
    let rss_base = pid.as_deref().and_then(rss_kb);
    let (owners, inits) = match &args.jwt_secret {
        Some(secret) => authenticated(secret, args.principals.max(1))?,
        None => (
            Vec::new(),
            vec![r#"{"type":"connection_init","payload":{}}"#.to_owned()],
        ),
    };
    let principals = inits.len();
    let events = if args.idle { 0 } else { args.events };
    let mode = args.mode.unwrap_or(if args.rate > 0.0 {
        Mode::Single
    } else {
        Mode::Burst
    });
    let plan = Plan::new(mode, events, args.batch, args.publishers, args.rate)?;
    let shared = Arc::new(Shared {
        events,
        plan,
        leaked: AtomicU64::new(0),
        principals,
        inits,
        connected: AtomicUsize::new(0),
        failed: AtomicUsize::new(0),
        skipped: AtomicUsize::new(0),
        live: AtomicUsize::new(0),
        done: AtomicUsize::new(0),
        closed: AtomicUsize::new(0),
        unexpected: AtomicU64::new(0),
        progress: (0..n).map(|_| Counter::default()).collect(),
        first_problem: Mutex::new(None),
    });
    let (stop_tx, stop_rx) = watch::channel(false);
    let gate = Arc::new(Semaphore::new(args.connect_concurrency.max(1)));
    // Connected before the clients: a server that runs out of descriptors
    // while they connect can still be published to (if it keeps idle
    // keep-alive connections open that long).
    let mut poster = Poster::new(&args.publish_url, args.publish_token.as_deref())?;
    poster.connect().await?;
    let connect_start = Instant::now();
    let clients: Vec<_> = (0..n)
        .map(|i| {
            tokio::spawn(client(
                i,
                args.clone(),
                shared.clone(),
                gate.clone(),
                stop_rx.clone(),
            ))
        })
        .collect();

    let settled = || {
        shared.connected.load(Ordering::Relaxed)
            + shared.failed.load(Ordering::Relaxed)
            + shared.skipped.load(Ordering::Relaxed)
    };
    while settled() < n {
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    let connected = shared.connected.load(Ordering::Relaxed);
    let connect_s = connect_start.elapsed().as_secs_f64();
    // With no clients at all, the run measures the publish round trip alone.
    if connected == 0 && n > 0 {
        let problem = shared.first_problem.lock().unwrap().clone();
        bail!("no client connected: {}", problem.unwrap_or_default());
    }

    // Owner fields take part of the payload size.
    let owned = r#","user_id":"user-0","tenant_id":"tenant-0","federation_id":"fed-0""#.len();
    let pad = pad_for(if owners.is_empty() {
        args.payload_bytes
    } else {
        args.payload_bytes.saturating_sub(owned)
    });
    let live_deadline = Instant::now() + Duration::from_secs_f64(args.live_timeout);
    let mut warmups = 0i64;
    while shared.live.load(Ordering::Relaxed) < connected && Instant::now() < live_deadline {
        // One warm-up tick per principal per round.
        warmups += 1;
        let k = principals as i64;
        let round = -warmups * k..-(warmups - 1) * k;
        publish(&mut poster, &args.topic, round, None, &pad, &owners).await?;
        let wait_until = Instant::now() + Duration::from_millis(250);
        while shared.live.load(Ordering::Relaxed) < connected && Instant::now() < wait_until {
            tokio::time::sleep(Duration::from_millis(5)).await;
        }
    }
    let live = shared.live.load(Ordering::Relaxed);
    // Let the last warm-up ticks drain before measuring.
    tokio::time::sleep(Duration::from_millis(if args.idle { 1000 } else { 200 })).await;
    if let (Some(ready), Some(go)) = (&args.ready_file, &args.go_file) {
        let failed = shared.failed.load(Ordering::Relaxed);
        let skipped = shared.skipped.load(Ordering::Relaxed);
        // Written aside and renamed, so a reader never sees half of it.
        let partial = ready.with_extension("partial");
        std::fs::write(
            &partial,
            format!("connected={connected} live={live} failed={failed} skipped={skipped}\n"),
        )
        .and_then(|()| std::fs::rename(&partial, ready))
        .with_context(|| format!("cannot write {}", ready.display()))?;
        let deadline = Instant::now() + Duration::from_secs(600);
        while !go.exists() {
            if Instant::now() > deadline {
                bail!("{} did not appear within 10 minutes", go.display());
            }
            tokio::time::sleep(Duration::from_millis(5)).await;
        }
    }

    // Every client connected and live, nothing measured yet: what the
    // connections cost before any burst, in this same process.
    let rss_live = pid.as_deref().and_then(rss_kb);
    let server_cpu_0 = pid.as_deref().and_then(cpu_seconds);
    let own_cpu_0 = cpu_seconds("self");
    let machine_0 = machine_ticks();
    let start_us = now_us();
    let publish_start = Instant::now();
    let mut server_deliveries = 0u64;
    let mut calls_us = Vec::new();
    let mut publish_s = 0.0;
    if !args.idle {
        if !args.receive_only {
            let clock = Clock {
                start: tokio::time::Instant::now(),
                start_us,
            };
            (server_deliveries, calls_us) =
                publish_measured(plan, &args, poster, &pad, &owners, clock).await?;
            publish_s = publish_start.elapsed().as_secs_f64();
        }
        let mut last = (shared.delivered(), Instant::now());
        while shared.done.load(Ordering::Relaxed) < connected {
            tokio::time::sleep(Duration::from_millis(10)).await;
            let delivered = shared.delivered();
            if delivered != last.0 {
                last = (delivered, Instant::now());
            } else if last.1.elapsed().as_secs_f64() > args.drain_timeout {
                break;
            }
        }
    }
    let rss = pid.as_deref().and_then(rss_kb);
    let rss_peak = pid.as_deref().and_then(peak_rss_kb);
    let server_cpu = server_cpu_0.and_then(|c0| Some(pid.as_deref().and_then(cpu_seconds)? - c0));
    let own_cpu = own_cpu_0.and_then(|c0| Some(cpu_seconds("self")? - c0));
    let machine_busy = match (machine_0, machine_ticks()) {
        (Some((busy0, all0)), Some((busy1, all1))) if all1 > all0 => {
            format!(
                "{:.0}",
                100.0 * (busy1 - busy0) as f64 / (all1 - all0) as f64
            )
        }
        _ => "na".into(),
    };

    let idle_s = args.idle_after.unwrap_or(0.0).max(0.0);
    let rss_idle = if args.idle_after.is_some() {
        tokio::time::sleep(Duration::from_secs_f64(idle_s)).await;
        pid.as_deref().and_then(rss_kb)
    } else {
        None
    };

    let _ = stop_tx.send(true);
    let mut latencies = Vec::new();
    let (mut unique, mut duplicates, mut last_receive_us) = (0u64, 0u64, start_us);
    let (mut expected, mut reordered) = (0u64, 0u64);
    for handle in clients {
        let stats = handle.await?;
        if stats.connected {
            expected += stats.expected;
        }
        reordered += stats.order.reordered();
        unique += stats.seen.unique();
        duplicates += stats.seen.duplicates();
        last_receive_us = last_receive_us.max(stats.last_receive_us);
        latencies.extend_from_slice(&stats.latencies_us);
    }
    latencies.sort_unstable();
    let elapsed_s = (last_receive_us - start_us) as f64 / 1e6;
    let per_s = if elapsed_s > 0.0 {
        unique as f64 / elapsed_s
    } else {
        0.0
    };
    let publish_rate = if publish_s > 0.0 {
        shared.events as f64 / publish_s
    } else {
        0.0
    };
    let ms = |q: f64| quantile(&latencies, q) as f64 / 1000.0;
    let call_ms = |q: f64| quantile(&calls_us, q) as f64 / 1000.0;
    let per_conn = |rss: Option<u64>| match (rss, rss_base) {
        (Some(r), Some(b)) if connected > 0 => {
            format!("{:.2}", r.saturating_sub(b) as f64 / connected as f64)
        }
        _ => "na".into(),
    };
    let cpu_per_m = match server_cpu {
        Some(cpu) if unique > 0 => format!("{:.3}", cpu / unique as f64 * 1e6),
        _ => "na".into(),
    };
    let mode = if args.idle { "idle" } else { plan.mode.name() };
    println!(
        "RESULT label={} mode={mode} publishers={} batch={} conns={n} connected={connected} failed={} skipped={} live={live} connect_s={connect_s:.2} \
         distinct={} events={} rate={} payload_bytes={} principals={principals} deliveries={unique} expected={expected} \
         publish_s={publish_s:.3} publish_rate={publish_rate:.0} call_p50_ms={:.3} call_p99_ms={:.3} \
         elapsed_s={elapsed_s:.3} deliveries_per_s={per_s:.0} p50_ms={:.3} p99_ms={:.3} max_ms={:.3} \
         lost={} dup={duplicates} reordered={reordered} leaked={} closed={} unexpected={} server_deliveries={server_deliveries} \
         server_cpu_s={} server_cpu_s_per_m={cpu_per_m} loadgen_cpu_s={} machine_busy_pct={machine_busy} \
         rss_kb={} rss_base_kb={} rss_per_conn_kb={} rss_live_kb={} rss_per_conn_live_kb={} rss_peak_kb={} idle_s={idle_s} rss_idle_kb={} rss_per_conn_idle_kb={}",
        args.label,
        plan.publishers,
        plan.batch,
        shared.failed.load(Ordering::Relaxed),
        shared.skipped.load(Ordering::Relaxed),
        args.distinct,
        shared.events,
        args.rate,
        args.payload_bytes,
        call_ms(0.50),
        call_ms(0.99),
        ms(0.50),
        ms(0.99),
        ms(1.0),
        expected.saturating_sub(unique),
        shared.leaked.load(Ordering::Relaxed),
        shared.closed.load(Ordering::Relaxed),
        shared.unexpected.load(Ordering::Relaxed),
        secs(server_cpu),
        secs(own_cpu),
        kb(rss),
        kb(rss_base),
        per_conn(rss),
        kb(rss_live),
        per_conn(rss_live),
        kb(rss_peak),
        kb(rss_idle),
        per_conn(rss_idle),
    );
    if let Some(problem) = shared.first_problem.lock().unwrap().take() {
        eprintln!("loadgen {}: first problem: {problem}", args.label);
    }
    Ok(())
}

fn main() -> anyhow::Result<()> {
    let args = Arc::new(Args::parse());
    let mut builder = tokio::runtime::Builder::new_multi_thread();
    if let Some(threads) = args.threads {
        builder.worker_threads(threads.max(1));
    }
    let runtime = builder.enable_all().build()?;
    let result = runtime.block_on(run(args));
    // Thousands of client tasks have already returned; do not wait on stragglers.
    runtime.shutdown_background();
    result
}
