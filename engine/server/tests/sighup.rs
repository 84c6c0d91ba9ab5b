//! The `fanwire` binary reloads its plugins on SIGHUP: a bad new version is
//! rejected with a log line that says why and the old one keeps filtering; a
//! good one replaces the old, as a subscribed client sees.

use crate::common;

use std::path::PathBuf;
use std::process::Stdio;
use std::time::Duration;

use common::{http_raw, http_request, metric_value, Client};
use serde_json::json;
use tokio::io::AsyncBufReadExt;
use tokio::process::Command;
use tokio::sync::mpsc;

const BIN: &str = env!("CARGO_BIN_EXE_fanwire");
/// A hang guard, not a performance bound.
const WAIT: Duration = Duration::from_secs(20);

fn dist() -> PathBuf {
    let dir = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../../plugins/dist");
    assert!(
        dir.join("template.wasm").is_file(),
        "no plugins in {}: run `bash plugins/build.sh` (tests/run.sh does)",
        dir.display()
    );
    dir
}

/// Waits for a stderr line containing every one of `needles`.
async fn wait_for(lines: &mut mpsc::UnboundedReceiver<String>, needles: &[&str]) -> String {
    let deadline = tokio::time::Instant::now() + WAIT;
    loop {
        let line = tokio::time::timeout_at(deadline, lines.recv())
            .await
            .unwrap_or_else(|_| panic!("no log line with {needles:?}"))
            .unwrap_or_else(|| panic!("stderr ended before a line with {needles:?}"));
        if needles.iter().all(|n| line.contains(n)) {
            return line;
        }
    }
}

fn hup(pid: &str, signal: &str) {
    assert!(std::process::Command::new("kill")
        .args([signal, pid])
        .status()
        .unwrap()
        .success());
}

/// Publishes an order on `orders:t` to the binary at `addr`.
async fn publish(addr: std::net::SocketAddr, id: u32, status: &str) {
    let body = json!({"topic": "orders:t", "data": {"id": id, "cents": 1, "status": status}});
    let (code, answer) = http_request(addr, "POST", "/publish", &body.to_string(), None).await;
    assert_eq!(code, 200, "{answer}");
}

/// Publishes a draft (`id`) and then a paid order (`id + 1`); the ids the
/// subscriber gets until the paid one: the draft only if the filter in
/// force lets drafts through.
async fn draft_then_paid(addr: std::net::SocketAddr, c: &mut Client, id: u32) -> Vec<String> {
    publish(addr, id, "draft").await;
    publish(addr, id + 1, "paid").await;
    let mut got = Vec::new();
    while got.last() != Some(&(id + 1).to_string()) {
        let msg = c.recv().await;
        assert_eq!(msg["type"], "next", "{msg}");
        got.push(
            msg["payload"]["data"]["orderCreated"]["id"]
                .as_str()
                .unwrap()
                .to_owned(),
        );
    }
    got
}

/// Observed by a subscriber of the running binary: the template filter
/// (drafts denied) stays in force when the new file is not a plugin, and is
/// replaced by redact-fields (no fields configured: everything passes) when
/// it is; the subscriber's socket stays open throughout.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sighup_reloads_plugins_and_keeps_the_old_version_when_the_new_one_is_bad() {
    let dir = std::env::temp_dir().join(format!("fanwire-sighup-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let plugin = dir.join("filter.wasm");
    std::fs::copy(dist().join("template.wasm"), &plugin).unwrap();
    std::fs::write(dir.join("schema.graphql"), common::SCHEMA).unwrap();
    let config = dir.join("fanwire.toml");
    std::fs::write(
        &config,
        "[server]\nschema = \"schema.graphql\"\n\n[plugin_runtime]\nwatch = false\ncache_dir = \"plugin-cache\"\n\n\
         [[plugins]]\npath = \"filter.wasm\"\nkind = \"event-filter\"\n",
    )
    .unwrap();
    let mut child = Command::new(BIN)
        .args(["serve", "--listen", "127.0.0.1:0", "--config"])
        .arg(&config)
        .env("NO_COLOR", "1")
        .env("RUST_LOG", "info")
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .kill_on_drop(true)
        .spawn()
        .unwrap();
    let (tx, mut lines) = mpsc::unbounded_channel();
    let mut stderr = tokio::io::BufReader::new(child.stderr.take().unwrap()).lines();
    tokio::spawn(async move {
        while let Ok(Some(line)) = stderr.next_line().await {
            if tx.send(line).is_err() {
                break;
            }
        }
    });
    let mut ready = String::new();
    tokio::time::timeout(
        WAIT,
        tokio::io::BufReader::new(child.stdout.take().unwrap()).read_line(&mut ready),
    )
    .await
    .expect("the binary starts")
    .unwrap();
    let addr: std::net::SocketAddr = ready
        .trim()
        .strip_prefix("fanwire listening on http://")
        .unwrap_or_else(|| panic!("{ready}"))
        .parse()
        .unwrap();
    let pid = child.id().unwrap().to_string();

    let mut c = Client::connect(addr, Some("graphql-transport-ws")).await;
    c.send(json!({"type": "connection_init"})).await;
    assert_eq!(c.recv().await, json!({"type": "connection_ack"}));
    c.subscribe(
        "o",
        "subscription { orderCreated(tenantId: \"t\") { id } }",
        json!({}),
    )
    .await;
    let deadline = tokio::time::Instant::now() + WAIT;
    loop {
        let (_, metrics) = http_raw(addr, "GET", "/metrics", "", None).await;
        if metric_value(&metrics, "fanwire_subscriptions") == 1.0 {
            break;
        }
        assert!(tokio::time::Instant::now() < deadline, "never subscribed");
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    // The template filter denies drafts.
    let id = 1;
    assert_eq!(
        draft_then_paid(addr, &mut c, id).await,
        [(id + 1).to_string()]
    );

    std::fs::write(&plugin, "not a plugin").unwrap();
    hup(&pid, "-HUP");
    let line = wait_for(
        &mut lines,
        &["plugin reload rejected", "not a WebAssembly file"],
    )
    .await;
    assert!(line.contains("filter"), "{line}");
    // The template filter still denies drafts.
    let id = id + 2;
    assert_eq!(
        draft_then_paid(addr, &mut c, id).await,
        [(id + 1).to_string()]
    );

    std::fs::copy(dist().join("redact-fields.wasm"), &plugin).unwrap();
    hup(&pid, "-HUP");
    wait_for(&mut lines, &["plugin reloaded", "filter"]).await;
    // redact-fields lets the draft through, on the same socket.
    let id = id + 2;
    assert_eq!(
        draft_then_paid(addr, &mut c, id).await,
        [id.to_string(), (id + 1).to_string()]
    );
    // Both versions that loaded are in the compile cache, in the folder the
    // config file names (relative to the file).
    let cached = std::fs::read_dir(dir.join("plugin-cache"))
        .unwrap()
        .filter(|e| {
            let path = e.as_ref().unwrap().path();
            path.extension().and_then(|x| x.to_str()) == Some("cwasm")
        })
        .count();
    assert_eq!(cached, 2);

    hup(&pid, "-TERM");
    assert_eq!(c.closed().await.0, 1001);
    let status = tokio::time::timeout(WAIT, child.wait())
        .await
        .expect("the binary exits")
        .unwrap();
    assert!(status.success());
}
