//! The real services the bus tests need (PostgreSQL, NATS JetStream, Redis),
//! started if they are down and a loud failure if they cannot be had, and
//! real `fanwire` processes.
#![allow(dead_code)]

use std::io::{BufRead, BufReader};
use std::net::{SocketAddr, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::Mutex;
use std::time::{Duration, Instant};

pub const PG_URL: &str = "postgres://postgres@127.0.0.1:5432/test";
pub const NATS_URL: &str = "nats://127.0.0.1:4222";
pub const REDIS_URL: &str = "redis://127.0.0.1:6379";

/// A hang guard for waits on services and processes, never a performance bound.
pub const SLOW: Duration = Duration::from_secs(60);

fn reachable(addr: &str) -> bool {
    let addr: SocketAddr = addr.parse().unwrap();
    TcpStream::connect_timeout(&addr, Duration::from_millis(500)).is_ok()
}

/// Makes sure a service listens on `addr`, starting it with `start` (the
/// machine's documented command) if not; panics if it still does not.
fn ensure(name: &str, addr: &str, start: &str) {
    // One starter at a time within a test binary.
    static STARTING: Mutex<()> = Mutex::new(());
    let _one = STARTING.lock().unwrap_or_else(|p| p.into_inner());
    if reachable(addr) {
        return;
    }
    eprintln!("{name} is not listening on {addr}: starting it with `{start}`");
    let status = Command::new("sh").arg("-c").arg(start).status();
    let deadline = Instant::now() + Duration::from_secs(30);
    while Instant::now() < deadline {
        if reachable(addr) {
            return;
        }
        std::thread::sleep(Duration::from_millis(200));
    }
    panic!("{name} is required on {addr} and could not be started (`{start}` gave {status:?})");
}

pub fn ensure_postgres() {
    ensure(
        "PostgreSQL",
        "127.0.0.1:5432",
        "pg_ctlcluster --skip-systemctl-redirect $(ls /etc/postgresql) main start",
    );
}

pub fn ensure_nats() {
    ensure(
        "NATS",
        "127.0.0.1:4222",
        "start-stop-daemon --start --oknodo --background --exec /usr/sbin/nats-server -- \
         -a 127.0.0.1 -p 4222 -js -sd /var/lib/nats-server -l /var/log/nats-server.log",
    );
}

pub fn ensure_redis() {
    ensure(
        "Redis",
        "127.0.0.1:6379",
        "mkdir -p /var/lib/redis /var/log/redis && redis-server --daemonize yes --bind 127.0.0.1 -::1 --port 6379 \
         --save '' --appendonly no --dir /var/lib/redis --logfile /var/log/redis/ci.log",
    );
}

/// A name no other test (or earlier run) uses.
pub fn unique(prefix: &str) -> String {
    use std::sync::atomic::{AtomicU64, Ordering};
    static N: AtomicU64 = AtomicU64::new(0);
    let nanos = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_nanos();
    format!(
        "{prefix}_{}_{}_{}",
        std::process::id(),
        nanos % 1_000_000_000,
        N.fetch_add(1, Ordering::Relaxed)
    )
}

/// A port that was free a moment ago.
pub fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

pub fn temp_dir(name: &str) -> PathBuf {
    let dir = std::env::temp_dir().join(unique(name));
    std::fs::create_dir_all(&dir).unwrap();
    dir
}

/// Polls `f` (blocking) until it holds; panics with `what` if it never does.
pub fn wait_until(what: &str, mut f: impl FnMut() -> bool) {
    let deadline = Instant::now() + SLOW;
    while !f() {
        assert!(Instant::now() < deadline, "never happened: {what}");
        std::thread::sleep(Duration::from_millis(50));
    }
}

/// A `fanwire serve` process; killed (SIGKILL) when dropped.
pub struct Node {
    pub child: Child,
    pub addr: SocketAddr,
    pub log: PathBuf,
}

impl Node {
    /// Starts `fanwire serve --config CONFIG --listen 127.0.0.1:0` and waits
    /// for its "listening" line.
    pub fn start(config: &Path) -> Node {
        let log = config.with_extension(format!("{}.log", unique("node")));
        let mut child = Command::new(env!("CARGO_BIN_EXE_fanwire"))
            .args(["serve", "--listen", "127.0.0.1:0", "--config"])
            .arg(config)
            .stdout(Stdio::piped())
            .stderr(std::fs::File::create(&log).unwrap())
            .spawn()
            .expect("fanwire starts");
        let stdout = child.stdout.take().unwrap();
        let (tx, rx) = std::sync::mpsc::channel();
        std::thread::spawn(move || {
            let mut lines = BufReader::new(stdout).lines();
            if let Some(Ok(line)) = lines.next() {
                let _ = tx.send(line);
            }
            // Keep draining so the node never blocks on a full pipe.
            for _ in lines {}
        });
        let line = rx.recv_timeout(SLOW).unwrap_or_else(|_| {
            panic!(
                "fanwire never said it listens; its log:\n{}",
                std::fs::read_to_string(&log).unwrap_or_default()
            )
        });
        let addr = line
            .strip_prefix("fanwire listening on http://")
            .unwrap_or_else(|| panic!("unexpected first line {line:?}"))
            .parse()
            .unwrap();
        Node { child, addr, log }
    }

    /// kill -9.
    pub fn kill(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }

    /// Whether the process is still running (it did not crash).
    pub fn alive(&mut self) -> bool {
        self.child.try_wait().unwrap().is_none()
    }

    pub fn stderr(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }
}

impl Drop for Node {
    fn drop(&mut self) {
        self.kill();
    }
}

/// A private broker process (for tests that restart it), killed when dropped.
pub struct Broker {
    pub child: Option<Child>,
    pub port: u16,
    args: Vec<String>,
    program: String,
}

impl Broker {
    /// A NATS server with JetStream on its own port and storage folder.
    pub fn nats() -> Broker {
        let port = free_port();
        let dir = temp_dir("nats");
        let args = vec![
            "-a".into(),
            "127.0.0.1".into(),
            "-p".into(),
            port.to_string(),
            "-js".into(),
            "-sd".into(),
            dir.display().to_string(),
        ];
        Self::spawn("/usr/sbin/nats-server", args, port)
    }

    /// A Redis server that keeps nothing on disk, like the machine's.
    pub fn redis() -> Broker {
        let port = free_port();
        let dir = temp_dir("redis");
        let args = vec![
            "--bind".into(),
            "127.0.0.1".into(),
            "--port".into(),
            port.to_string(),
            "--save".into(),
            "".into(),
            "--appendonly".into(),
            "no".into(),
            "--dir".into(),
            dir.display().to_string(),
        ];
        Self::spawn("redis-server", args, port)
    }

    fn spawn(program: &str, args: Vec<String>, port: u16) -> Broker {
        let mut b = Broker {
            child: None,
            port,
            args,
            program: program.into(),
        };
        b.restart();
        b
    }

    /// Starts (again) on the same port and storage.
    pub fn restart(&mut self) {
        self.stop();
        let child = Command::new(&self.program)
            .args(&self.args)
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .unwrap_or_else(|e| panic!("cannot run {}: {e}", self.program));
        self.child = Some(child);
        let addr = format!("127.0.0.1:{}", self.port);
        wait_until(&format!("{} listens on {addr}", self.program), || {
            reachable(&addr)
        });
    }

    /// kill -9: whatever it had not written to disk is gone.
    pub fn stop(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }
}

impl Drop for Broker {
    fn drop(&mut self) {
        self.stop();
    }
}

/// Sends raw protocol lines to a service and reads until `until` appears.
fn raw(addr: &str, request: &str, until: &str) {
    use std::io::{Read, Write};
    let mut s = TcpStream::connect(addr).expect("service reachable");
    s.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
    s.write_all(request.as_bytes()).unwrap();
    let mut seen = String::new();
    let mut buf = [0u8; 4096];
    while !seen.contains(until) {
        match s.read(&mut buf) {
            Ok(0) | Err(_) => break,
            Ok(n) => seen.push_str(&String::from_utf8_lossy(&buf[..n])),
        }
    }
}

/// Deletes a test's JetStream stream from the shared NATS server (its
/// events are on disk otherwise).
pub fn drop_nats_stream(addr: &str, stream: &str) {
    // JetStream's API is plain request/reply; PING/PONG makes sure the
    // server has processed the request before the connection closes.
    raw(
        addr,
        &format!(
            "CONNECT {{\"verbose\":false}}\r\nPUB $JS.API.STREAM.DELETE.{stream} 0\r\n\r\nPING\r\n"
        ),
        "PONG",
    );
}

/// Deletes a test's Redis stream key from the shared Redis server.
pub fn drop_redis_key(addr: &str, key: &str) {
    raw(
        addr,
        &format!("*2\r\n$3\r\nDEL\r\n${}\r\n{key}\r\n", key.len()),
        ":",
    );
}
