//! `floor`: a stand-in graphql-transport-ws server that does nothing but
//! the writes, so latency against it is the floor any server can reach on
//! this machine with this client.
//!
//! It accepts WebSocket upgrades (subprotocol graphql-transport-ws),
//! answers `connection_init` with `connection_ack`, takes one `subscribe`
//! per client (its id and `topic` variable), and on `POST /publish` (one
//! event or an array, fanwire's body format) builds each event's `next`
//! frame once (the part after the id; the id's prefix once per distinct
//! id), writes a request's frames to every subscriber of the topic as one
//! write, and answers `{"accepted":N,"deliveries":M}`. No GraphQL, no
//! selection (aliases are ignored: every frame says `tick`), no queues but
//! what a socket that cannot take a write needs.
//!
//! With `--answer at-once` it answers a publish as soon as its events are
//! parsed, and one fan-out task writes every event queued since its
//! previous round, one write per socket: the floor for a server that
//! answers before its fan-out (fanwire does), where one publish at a time
//! (S1-single) would otherwise wait for 100 writes per event.
//!
//!   floor [--listen 127.0.0.1:0] [--writes direct|tasks] [--write-threads N]
//!         [--answer after-writes|at-once]
//!
//! Prints `floor listening on http://HOST:PORT` once it accepts.

use std::collections::HashMap;
use std::io;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex, PoisonError, RwLock};

use anyhow::bail;
use clap::Parser;
use fanwire_benches::floor::{
    json_response, next_tail, parse_client_message, parse_events, parse_request_head,
    push_next_frames, upgrade_response, ClientMessage,
};
use futures_util::{SinkExt, StreamExt};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::Notify;
use tokio_tungstenite::tungstenite::protocol::{Role, WebSocketConfig};
use tokio_tungstenite::tungstenite::Message;
use tokio_tungstenite::WebSocketStream;

/// Who writes a publish's frames to the sockets.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
enum Writes {
    /// The publishing task writes each socket itself (a non-blocking write);
    /// a socket's task only takes over what its buffer could not take.
    Direct,
    /// The publishing task appends the frames to each socket's buffer and
    /// wakes the socket's writer task, which writes them.
    Tasks,
}

/// When `POST /publish` is answered.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
enum Answer {
    /// Once every subscriber's socket took the request's frames (or its
    /// writer task was woken): the publisher waits for the fan-out.
    AfterWrites,
    /// Once the events are parsed and queued for the fan-out task, which
    /// writes everything queued since its previous round in one write per
    /// socket.
    AtOnce,
}

/// The floor: the cost of the writes a subscription server cannot avoid.
#[derive(Debug, Parser)]
struct Args {
    /// Address to listen on (HTTP and WebSocket on one port).
    #[arg(long, default_value = "127.0.0.1:0")]
    listen: String,
    /// Who writes to the sockets.
    #[arg(long, value_enum, default_value_t = Writes::Direct)]
    writes: Writes,
    /// With `--writes direct`: threads sharing a publish's sockets (the
    /// publishing task plus N - 1 scoped threads).
    #[arg(long, default_value_t = 1)]
    write_threads: usize,
    /// When a publish is answered.
    #[arg(long, value_enum, default_value_t = Answer::AfterWrites)]
    answer: Answer,
}

/// What a socket's writer has not written yet.
#[derive(Default)]
struct Out {
    pending: Vec<u8>,
    /// The writer task owns the socket's writes (it was woken and has not
    /// yet found `pending` empty); a direct write now would overtake it.
    writing: bool,
}

/// One subscribed client.
struct Conn {
    stream: TcpStream,
    id: String,
    out: Mutex<Out>,
    wake: Notify,
    closed: AtomicBool,
}

/// A buffer grown past this by a burst is dropped once written, so an idle
/// connection does not keep its burst's memory (a socket's two buffers
/// swap roles, so both are bounded).
const KEEP_CAPACITY: usize = 8 * 1024;

impl Conn {
    /// Queues (or, `direct`, writes) `frames`; `false` if the socket is gone.
    fn deliver(&self, frames: &[u8], direct: bool) -> bool {
        if self.closed.load(Ordering::Relaxed) {
            return false;
        }
        let mut out = self.out.lock().unwrap_or_else(PoisonError::into_inner);
        let mut rest = frames;
        if direct && !out.writing {
            match self.stream.try_write(frames) {
                Ok(n) if n == frames.len() => return true,
                Ok(n) => rest = &frames[n..],
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => {}
                Err(_) => {
                    self.closed.store(true, Ordering::Relaxed);
                    return false;
                }
            }
        }
        out.pending.extend_from_slice(rest);
        if !out.writing {
            out.writing = true;
            drop(out);
            self.wake.notify_one();
        }
        true
    }

    /// Writes what `deliver` left, until the socket closes.
    async fn writer(self: Arc<Conn>) {
        let mut batch = Vec::new();
        loop {
            self.wake.notified().await;
            loop {
                {
                    let mut out = self.out.lock().unwrap_or_else(PoisonError::into_inner);
                    if out.pending.is_empty() {
                        out.writing = false;
                        if out.pending.capacity() > KEEP_CAPACITY {
                            out.pending = Vec::new();
                        }
                        break;
                    }
                    std::mem::swap(&mut out.pending, &mut batch);
                }
                if write_all(&self.stream, &batch).await.is_err() {
                    self.closed.store(true, Ordering::Relaxed);
                    return;
                }
                batch.clear();
                if batch.capacity() > KEEP_CAPACITY {
                    batch = Vec::new();
                }
            }
            if self.closed.load(Ordering::Relaxed) {
                return;
            }
        }
    }

    /// Reads (and drops) whatever the client sends after subscribing, to
    /// notice when it goes.
    async fn reader(self: Arc<Conn>) {
        let mut scratch = [0u8; 1024];
        loop {
            if self.stream.readable().await.is_err() {
                break;
            }
            match self.stream.try_read(&mut scratch) {
                Ok(0) => break,
                Ok(_) => {}
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => {}
                Err(_) => break,
            }
        }
        self.closed.store(true, Ordering::Relaxed);
        self.wake.notify_one();
    }
}

async fn write_all(stream: &TcpStream, mut buf: &[u8]) -> io::Result<()> {
    while !buf.is_empty() {
        stream.writable().await?;
        match stream.try_write(buf) {
            Ok(n) => buf = &buf[n..],
            Err(e) if e.kind() == io::ErrorKind::WouldBlock => {}
            Err(e) => return Err(e),
        }
    }
    Ok(())
}

/// An event ready for the sockets: its topic and its frame after the id.
type Tail = (String, Vec<u8>);

/// The server: subscribers by topic.
struct Floor {
    writes: Writes,
    write_threads: usize,
    answer: Answer,
    topics: RwLock<HashMap<String, Vec<Arc<Conn>>>>,
    /// With `--answer at-once`: events answered and not yet written, in
    /// publish order, and the fan-out task's wake-up.
    queued: Mutex<Vec<Tail>>,
    fan_out_wake: Notify,
}

impl Floor {
    /// Publishes a request's body; returns (accepted, deliveries). With
    /// `--answer at-once` the deliveries are the subscribers there are now.
    fn publish(&self, body: &[u8]) -> anyhow::Result<(usize, u64)> {
        let events = parse_events(body)?;
        let tails: Vec<Tail> = events
            .iter()
            .map(|e| (e.topic.clone(), next_tail(e.data)))
            .collect();
        let deliveries = match self.answer {
            Answer::AfterWrites => self.fan_out(tails),
            Answer::AtOnce => {
                let topics = self.topics.read().unwrap_or_else(PoisonError::into_inner);
                let subscribers: u64 = tails
                    .iter()
                    .map(|(topic, _)| topics.get(topic).map_or(0, |c| c.len() as u64))
                    .sum();
                drop(topics);
                let mut queued = self.queued.lock().unwrap_or_else(PoisonError::into_inner);
                queued.extend(tails);
                drop(queued);
                self.fan_out_wake.notify_one();
                subscribers
            }
        };
        Ok((events.len(), deliveries))
    }

    /// With `--answer at-once`: writes what publishes queued, each round
    /// everything that arrived since the previous one.
    async fn fan_out_task(self: Arc<Floor>) {
        loop {
            self.fan_out_wake.notified().await;
            let tails =
                std::mem::take(&mut *self.queued.lock().unwrap_or_else(PoisonError::into_inner));
            if !tails.is_empty() {
                self.fan_out(tails);
            }
        }
    }

    /// Writes `tails` to their topics' subscribers, one write per socket
    /// for all of a topic's events; returns the deliveries.
    fn fan_out(&self, tails: Vec<Tail>) -> u64 {
        // Each topic's tails, in publish order.
        let mut by_topic: Vec<(String, Vec<Vec<u8>>)> = Vec::new();
        for (topic, tail) in tails {
            match by_topic.iter_mut().find(|(t, _)| *t == topic) {
                Some((_, tails)) => tails.push(tail),
                None => by_topic.push((topic, vec![tail])),
            }
        }
        let topics = self.topics.read().unwrap_or_else(PoisonError::into_inner);
        let mut deliveries = 0u64;
        for (topic, tails) in &by_topic {
            let Some(conns) = topics.get(topic) else {
                continue;
            };
            let mut frames: HashMap<&str, Vec<u8>> = HashMap::new();
            for conn in conns {
                frames.entry(conn.id.as_str()).or_insert_with(|| {
                    let mut out = Vec::new();
                    push_next_frames(&mut out, &conn.id, tails);
                    out
                });
            }
            let written = self.write(conns, &frames);
            deliveries += written * tails.len() as u64;
        }
        deliveries
    }

    /// Hands each socket its frames; returns how many sockets took them.
    fn write(&self, conns: &[Arc<Conn>], frames: &HashMap<&str, Vec<u8>>) -> u64 {
        let direct = self.writes == Writes::Direct;
        let write = |part: &[Arc<Conn>]| {
            part.iter()
                .filter(|conn| conn.deliver(&frames[conn.id.as_str()], direct))
                .count() as u64
        };
        let threads = if direct { self.write_threads.max(1) } else { 1 };
        if threads == 1 || conns.len() < 2 * threads {
            return write(conns);
        }
        let part = conns.len().div_ceil(threads);
        std::thread::scope(|scope| {
            let mut chunks = conns.chunks(part);
            let mine = chunks.next().unwrap_or_default();
            let others: Vec<_> = chunks.map(|c| scope.spawn(move || write(c))).collect();
            write(mine)
                + others
                    .into_iter()
                    .map(|h| h.join().unwrap_or(0))
                    .sum::<u64>()
        })
    }

    fn subscribe(&self, topic: String, conn: Arc<Conn>) {
        let mut topics = self.topics.write().unwrap_or_else(PoisonError::into_inner);
        topics.entry(topic).or_default().push(conn);
    }
}

/// One accepted connection: a WebSocket upgrade or HTTP requests.
async fn serve(floor: Arc<Floor>, mut tcp: TcpStream) -> anyhow::Result<()> {
    tcp.set_nodelay(true)?;
    let mut buf = Vec::with_capacity(1024);
    let head = loop {
        if let Some(head) = parse_request_head(&buf)? {
            break head;
        }
        if tcp.read_buf(&mut buf).await? == 0 {
            return Ok(());
        }
    };
    match head.websocket_key {
        Some(key) => {
            tcp.write_all(upgrade_response(&key).as_bytes()).await?;
            let rest = buf.split_off(head.len);
            websocket(floor, tcp, rest).await
        }
        None => http(floor, tcp, buf).await,
    }
}

/// A client from `connection_init` to its `subscribe`; then its socket is
/// written raw.
async fn websocket(floor: Arc<Floor>, tcp: TcpStream, rest: Vec<u8>) -> anyhow::Result<()> {
    // Two short messages come this way; tungstenite's default 128 KiB read
    // buffer would be zero-filled per connection, and S3's 10,000 of them
    // would leave their pages behind in the allocator.
    let config = WebSocketConfig::default().read_buffer_size(4096);
    let mut ws = WebSocketStream::from_partially_read(tcp, rest, Role::Server, Some(config)).await;
    while let Some(message) = ws.next().await {
        let Message::Text(text) = message? else {
            continue;
        };
        match parse_client_message(text.as_str())? {
            ClientMessage::Init => {
                ws.send(Message::text(r#"{"type":"connection_ack"}"#))
                    .await?
            }
            ClientMessage::Ping => ws.send(Message::text(r#"{"type":"pong"}"#)).await?,
            ClientMessage::Subscribe { id, topic } => {
                let conn = Arc::new(Conn {
                    stream: ws.into_inner(),
                    id,
                    out: Mutex::default(),
                    wake: Notify::new(),
                    closed: AtomicBool::new(false),
                });
                tokio::spawn(conn.clone().writer());
                floor.subscribe(topic, conn.clone());
                conn.reader().await;
                return Ok(());
            }
            ClientMessage::Other => {}
        }
    }
    Ok(())
}

/// Keep-alive HTTP/1.1: `POST /publish`, nothing else.
async fn http(floor: Arc<Floor>, mut tcp: TcpStream, mut buf: Vec<u8>) -> anyhow::Result<()> {
    loop {
        let head = loop {
            if let Some(head) = parse_request_head(&buf)? {
                break head;
            }
            if tcp.read_buf(&mut buf).await? == 0 {
                return Ok(());
            }
        };
        let end = head.len + head.content_length;
        while buf.len() < end {
            if tcp.read_buf(&mut buf).await? == 0 {
                bail!("the client closed mid-request");
            }
        }
        let response = if head.method == "POST" && head.path == "/publish" {
            match floor.publish(&buf[head.len..end]) {
                Ok((accepted, deliveries)) => json_response(
                    "200 OK",
                    &format!(r#"{{"accepted":{accepted},"deliveries":{deliveries}}}"#),
                ),
                Err(e) => json_response(
                    "400 Bad Request",
                    &serde_json::json!({ "error": format!("{e:#}") }).to_string(),
                ),
            }
        } else {
            json_response("404 Not Found", r#"{"error":"only POST /publish"}"#)
        };
        tcp.write_all(response.as_bytes()).await?;
        buf.drain(..end);
        if head.close {
            return Ok(());
        }
    }
}

async fn run(args: Args) -> anyhow::Result<()> {
    let listener = TcpListener::bind(&args.listen).await?;
    let floor = Arc::new(Floor {
        writes: args.writes,
        write_threads: args.write_threads,
        answer: args.answer,
        topics: RwLock::default(),
        queued: Mutex::default(),
        fan_out_wake: Notify::new(),
    });
    if args.answer == Answer::AtOnce {
        tokio::spawn(floor.clone().fan_out_task());
    }
    println!("floor listening on http://{}", listener.local_addr()?);
    loop {
        let (tcp, _) = listener.accept().await?;
        let floor = floor.clone();
        tokio::spawn(async move {
            if let Err(e) = serve(floor, tcp).await {
                eprintln!("floor: {e:#}");
            }
        });
    }
}

fn main() -> anyhow::Result<()> {
    let args = Args::parse();
    tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()?
        .block_on(run(args))
}
