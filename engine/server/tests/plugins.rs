//! WASM plugins in a running host: fault containment with purpose-built bad
//! plugins, rejected reloads, the admin route, and hot reload under load.
//! The `.wasm` files come from `bash plugins/build.sh` (tests/run.sh runs it).

use crate::common;

use std::path::{Path, PathBuf};

use common::*;
use fanwire_plugins::{Kind, PluginSpec};
use serde_json::{json, Map, Value};

const ORDERS: &str = "subscription($t: ID!) { orderCreated(tenantId: $t) { id cents } }";

fn dist() -> PathBuf {
    let dir = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../../plugins/dist");
    assert!(
        dir.join("trap.wasm").is_file(),
        "no plugins in {}: run `bash plugins/build.sh` (tests/run.sh does)",
        dir.display()
    );
    dir
}

/// A fresh folder with copies of the named bundled plugins.
fn plugin_folder(names: &[&str]) -> PathBuf {
    use std::sync::atomic::{AtomicU64, Ordering};
    static N: AtomicU64 = AtomicU64::new(0);
    let dir = std::env::temp_dir().join(format!(
        "fanwire-plugins-{}-{}",
        std::process::id(),
        N.fetch_add(1, Ordering::Relaxed)
    ));
    std::fs::create_dir_all(&dir).unwrap();
    for name in names {
        std::fs::copy(
            dist().join(format!("{name}.wasm")),
            dir.join(format!("{name}.wasm")),
        )
        .unwrap();
    }
    dir
}

fn spec(
    folder: &Path,
    file: &str,
    topics: &[&str],
    tweak: impl FnOnce(&mut PluginSpec),
) -> PluginSpec {
    let mut spec = PluginSpec {
        name: None,
        path: folder.join(format!("{file}.wasm")),
        kind: Kind::EventFilter,
        order: 0,
        fields: Vec::new(),
        topics: topics.iter().map(|t| (*t).to_owned()).collect(),
        timeout_ms: None,
        memory_mb: None,
        config: Map::new(),
    };
    tweak(&mut spec);
    spec
}

/// A client subscribed to `orders:{tenant}`, once the server holds the subscription.
async fn subscribe_orders(server: &TestServer, id: &str, tenant: &str) -> Client {
    let before = server.metric("fanwire_subscriptions");
    let mut c = server.ready_client().await;
    c.subscribe(id, ORDERS, json!({"t": tenant})).await;
    server
        .eventually("the subscription is live", |s| {
            s.metric("fanwire_subscriptions") > before
        })
        .await;
    c
}

async fn publish(server: &TestServer, topic: &str, data: Value) {
    let (status, body) = server
        .publish(&json!({"topic": topic, "data": data}).to_string(), None)
        .await;
    assert_eq!(status, 200, "{body}");
}

async fn next_id(c: &mut Client) -> Value {
    let msg = c.recv().await;
    assert_eq!(msg["type"], "next", "{msg}");
    msg["payload"]["data"]["orderCreated"]["id"].clone()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_trapping_looping_or_hoarding_plugin_is_contained_and_others_keep_receiving() {
    logs();
    let folder = plugin_folder(&["trap", "spin", "hog", "template"]);
    let server = TestServer::start(|c| {
        c.plugins = vec![
            spec(&folder, "trap", &["orders:trap"], |_| {}),
            spec(&folder, "spin", &["orders:spin"], |s| {
                // The deadline stops the loop and also covers the good call
                // after it: long enough that no preemption on a busy
                // machine eats it (the loop never ends, so any deadline
                // stops it; a longer one only costs this test its length).
                s.timeout_ms = Some(2_000)
            }),
            spec(&folder, "hog", &["orders:hog"], |s| {
                s.memory_mb = Some(16);
                // The cap must stop it, not the deadline (a busy machine is slow to fill 16 MiB).
                s.timeout_ms = Some(10_000);
            }),
            spec(&folder, "template", &[], |_| {}),
        ];
        c.plugin_runtime.watch = false;
        // Deadlines are tested with the spin plugin; elsewhere a busy machine must not trip them.
        c.plugin_runtime.call_timeout_ms = 10_000;
    })
    .await;
    let mut ok = subscribe_orders(&server, "ok", "ok").await;
    let mut bad = Vec::new();
    for kind in ["trap", "spin", "hog"] {
        bad.push((kind, subscribe_orders(&server, kind, kind).await));
    }
    for (n, (kind, client)) in bad.iter_mut().enumerate() {
        let n = n as i64 * 10;
        // The bad event is denied (fail closed) ...
        publish(
            &server,
            &format!("orders:{kind}"),
            json!({"id": n + 1, "cents": 1, (*kind): true}),
        )
        .await;
        // ... while other subscriptions keep receiving ...
        publish(&server, "orders:ok", json!({"id": n + 2, "cents": 1})).await;
        assert_eq!(next_id(&mut ok).await, json!((n + 2).to_string()));
        // ... and the plugin's next call gets a fresh instance that works.
        publish(
            &server,
            &format!("orders:{kind}"),
            json!({"id": n + 3, "cents": 1}),
        )
        .await;
        assert_eq!(next_id(client).await, json!((n + 3).to_string()), "{kind}");
    }
    let m = server.metrics();
    assert_eq!(
        metric_value(
            &m,
            "fanwire_plugin_faults_total{plugin=\"trap\",kind=\"trap\"}"
        ),
        1.0,
        "{m}"
    );
    assert_eq!(
        metric_value(
            &m,
            "fanwire_plugin_faults_total{plugin=\"spin\",kind=\"timeout\"}"
        ),
        1.0,
        "{m}"
    );
    assert_eq!(
        metric_value(
            &m,
            "fanwire_plugin_faults_total{plugin=\"hog\",kind=\"memory\"}"
        ),
        1.0,
        "{m}"
    );
    assert!(
        metric_value(
            &m,
            "fanwire_plugin_decisions_total{plugin=\"template\",kind=\"allow\"}"
        ) >= 3.0,
        "{m}"
    );
    assert!(
        metric_value(&m, "fanwire_plugin_call_seconds_count{plugin=\"trap\"}") >= 2.0,
        "{m}"
    );
    // The logs say which plugin failed and how.
    for (plugin, fault) in [("trap", "trap"), ("spin", "timeout"), ("hog", "memory")] {
        assert!(
            logged(&format!("plugin={plugin}"))
                && (logged(&format!("fault=\"{fault}\"")) || logged(&format!("fault={fault}"))),
            "no log line for {plugin}: {}",
            String::from_utf8_lossy(&logs().lock().unwrap())
        );
    }
    assert!(logged("memory cap of 16 MiB reached"));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_version_that_cannot_load_is_rejected_and_the_old_one_keeps_running() {
    logs();
    let folder = plugin_folder(&["template"]);
    let server = TestServer::start(|c| {
        c.plugins = vec![spec(&folder, "template", &[], |s| {
            s.name = Some("swap".into())
        })];
        c.plugin_runtime.watch = false;
        // Deadlines are tested with the spin plugin; elsewhere a busy machine must not trip them.
        c.plugin_runtime.call_timeout_ms = 10_000;
        c.plugin_runtime.admin_token = Some("admin".into());
    })
    .await;
    let mut client = subscribe_orders(&server, "s", "1").await;
    let target = folder.join("template.wasm");
    let bad: [(&str, Vec<u8>, &str); 4] = [
        (
            "text",
            b"definitely not wasm".to_vec(),
            "not a WebAssembly file",
        ),
        (
            "core module",
            b"\0asm\x01\0\0\0".to_vec(),
            "not a valid component",
        ),
        (
            "wrong world",
            std::fs::read(dist().join("rbac.wasm")).unwrap(),
            "wrong world",
        ),
        (
            "wrong version",
            std::fs::read(dist().join("wrong-version.wasm")).unwrap(),
            "fanwire:plugin/filter@9.0.0",
        ),
    ];
    for (what, bytes, why) in bad {
        replace_file(&target, &bytes);
        let (status, body) = http_request(
            server.addr,
            "POST",
            "/admin/plugins/reload",
            "",
            Some("admin"),
        )
        .await;
        assert_eq!(status, 200, "{body}");
        assert_eq!(body["reloaded"], json!([]), "{what}: {body}");
        let reason = body["rejected"][0]["reason"].as_str().unwrap_or_default();
        assert!(reason.contains(why), "{what}: {body}");
        assert!(logged(why), "{what}: the log does not say why");
        // The previous version still decides: drafts are dropped, the rest delivered.
        publish(
            &server,
            "orders:1",
            json!({"id": 1, "cents": 1, "status": "draft"}),
        )
        .await;
        publish(&server, "orders:1", json!({"id": 2, "cents": 1})).await;
        assert_eq!(next_id(&mut client).await, json!("2"), "{what}");
    }
    let m = server.metrics();
    assert_eq!(
        metric_value(
            &m,
            "fanwire_plugin_reloads_total{plugin=\"swap\",kind=\"rejected\"}"
        ),
        4.0,
        "{m}"
    );
    assert_eq!(
        metric_value(
            &m,
            "fanwire_plugin_reloads_total{plugin=\"swap\",kind=\"loaded\"}"
        ),
        1.0,
        "{m}"
    );
    // The test's compile cache started empty: the first version and the
    // three bad ones that reached the compiler were compiled, none loaded.
    let cache =
        |result: &str| format!("fanwire_plugin_cache_total{{plugin=\"swap\",result=\"{result}\"}}");
    assert_eq!(metric_value(&m, &cache("miss")), 4.0, "{m}");
    assert_eq!(metric_sample(&m, &cache("hit")), None, "{m}");
    // The admin route wants its token.
    let (status, _) = http_request(
        server.addr,
        "POST",
        "/admin/plugins/reload",
        "",
        Some("nope"),
    )
    .await;
    assert_eq!(status, 401);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_plugin_that_cannot_load_stops_the_host_from_starting() {
    let folder = plugin_folder(&["rbac"]);
    let mut config = fanwire_server::Config::default();
    config.server.listen = "127.0.0.1:0".parse().unwrap();
    config.demo.enabled = true;
    config.plugins = vec![spec(&folder, "rbac", &[], |_| {})];
    // Not the user's compile cache.
    config.plugin_runtime.cache_dir = Some(folder.join("plugin-cache"));
    let err = fanwire_server::Server::bind(config)
        .await
        .unwrap_err()
        .to_string();
    assert!(err.contains("wrong world") && err.contains("rbac"), "{err}");
}

/// The stamp plugin's bytes with its version marker set to `version`.
fn stamp_version(base: &[u8], version: u32) -> Vec<u8> {
    let marker = b"fanwire-stamp:00000000";
    let at = base
        .windows(marker.len())
        .position(|w| w == marker)
        .expect("the stamp plugin carries its marker");
    let mut bytes = base.to_vec();
    let digits = format!("{version:08}");
    bytes[at + 14..at + 22].copy_from_slice(digits.as_bytes());
    bytes
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_filter_replaced_20_times_under_load_loses_and_duplicates_nothing() {
    const CLIENTS: usize = 40;
    const VERSIONS: u32 = 20;
    let folder = plugin_folder(&["stamp"]);
    let target = folder.join("stamp.wasm");
    let base = std::fs::read(&target).unwrap();
    let server = TestServer::start(|c| {
        c.plugins = vec![spec(&folder, "stamp", &[], |s| {
            s.config.insert("field".into(), json!("status"));
            // This test is about swaps, not deadlines: a busy CI machine may
            // preempt a call for longer than the default.
            s.timeout_ms = Some(10_000);
        })];
        c.plugin_runtime.watch_interval_ms = 20;
        c.limits.queue_depth = 1_000_000;
    })
    .await;
    let load = ReloadUnderLoad {
        clients: CLIENTS,
        // Two groups (different selections) so each event is decided for both in one call.
        queries: [
            "subscription { orderCreated(tenantId: \"load\") { id status } }",
            "subscription { orderCreated(tenantId: \"load\") { status id cents } }",
        ],
        topic: "orders:load",
        event: |n| json!({"id": n, "cents": 1}),
        read: |msg| {
            assert_eq!(msg["type"], "next", "{msg}");
            let data = &msg["payload"]["data"]["orderCreated"];
            let id = data["id"].as_str().unwrap().parse().unwrap();
            let stamp = data["status"].as_str().unwrap().parse().unwrap();
            (id, stamp)
        },
    };
    let Reloaded {
        published,
        mut reload_ms,
        versions,
        clients: _still_open,
    } = load
        .run(&server, VERSIONS, |version| {
            replace_file(&target, &stamp_version(&base, version))
        })
        .await;
    assert_eq!(versions.last(), Some(&VERSIONS));
    let m = server.metrics();
    assert_eq!(
        metric_value(
            &m,
            "fanwire_plugin_reloads_total{plugin=\"stamp\",kind=\"loaded\"}"
        ),
        f64::from(VERSIONS + 1),
        "{m}"
    );
    assert_eq!(metric_value(&m, "fanwire_connections"), CLIENTS as f64);
    reload_ms.sort_by(f64::total_cmp);
    eprintln!(
        "hot reload under load: {published} events x {CLIENTS} clients, {VERSIONS} versions; file written -> new version delivering: min {:.1} ms, median {:.1} ms, max {:.1} ms",
        reload_ms[0],
        reload_ms[reload_ms.len() / 2],
        reload_ms[reload_ms.len() - 1]
    );
}

/// The next text frame, raw (pings skipped), or the close code.
async fn raw_recv(c: &mut Client) -> Result<String, u16> {
    use futures_util::StreamExt;
    use tokio_tungstenite::tungstenite::Message;
    loop {
        let msg = tokio::time::timeout(WAIT, c.ws.next())
            .await
            .expect("a frame arrives")
            .expect("the socket is open")
            .expect("a valid frame");
        match msg {
            Message::Text(t) => return Ok(t.to_string()),
            Message::Close(Some(frame)) => return Err(frame.code.into()),
            _ => continue,
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_transport_adapter_plugin_serves_a_custom_protocol_to_a_raw_websocket_client() {
    let folder = plugin_folder(&["line-protocol"]);
    let server = TestServer::start(|c| {
        c.plugins = vec![spec(&folder, "line-protocol", &[], |s| {
            s.kind = Kind::TransportAdapter
        })];
        c.plugin_runtime.watch = false;
        // Deadlines are tested with the spin plugin; elsewhere a busy machine must not trip them.
        c.plugin_runtime.call_timeout_ms = 10_000;
    })
    .await;
    let mut c = server.client("fanwire-lines").await;
    assert_eq!(c.protocol.as_deref(), Some("fanwire-lines"));
    c.send_text("HELLO").await;
    assert_eq!(raw_recv(&mut c).await, Ok("WELCOME".into()));
    c.send_text("PING").await;
    assert_eq!(raw_recv(&mut c).await, Ok("PONG".into()));
    c.send_text(
        "SUBV 1 {\"t\": \"7\"}\nsubscription($t: ID!) { orderCreated(tenantId: $t) { id cents } }",
    )
    .await;
    server
        .eventually("subscribed", |s| s.metric("fanwire_subscriptions") >= 1.0)
        .await;
    publish(&server, "orders:7", json!({"id": 1, "cents": 5})).await;
    assert_eq!(
        raw_recv(&mut c).await,
        Ok("DATA 1 {\"data\":{\"orderCreated\":{\"id\":\"1\",\"cents\":5}}}".into())
    );
    // A validation error is an ERROR line for that id; the connection stays.
    c.send_text("SUB 2 subscription { nope }").await;
    let line = raw_recv(&mut c).await.unwrap();
    assert!(
        line.starts_with("ERROR 2 [{") && line.contains("nope"),
        "{line}"
    );
    // The host keeps graphql-transport-ws's rules: a live id reused closes 4409.
    c.send_text("SUB 1 subscription { orderCreated(tenantId: \"7\") { id } }")
        .await;
    assert_eq!(raw_recv(&mut c).await, Err(4409));

    // Subscribing before HELLO closes 4401; a frame the adapter cannot decode, 4400.
    let mut early = server.client("fanwire-lines").await;
    early
        .send_text("SUB 1 subscription { orderCreated(tenantId: \"7\") { id } }")
        .await;
    assert_eq!(raw_recv(&mut early).await, Err(4401));
    let mut garbage = server.client("fanwire-lines").await;
    garbage.send_text("HELLO").await;
    assert_eq!(raw_recv(&mut garbage).await, Ok("WELCOME".into()));
    garbage.send_text("WHAT IS THIS").await;
    assert_eq!(raw_recv(&mut garbage).await, Err(4400));
    // Stock clients are unaffected.
    let mut stock = server.ready_client().await;
    stock.send(json!({"type": "ping"})).await;
    assert_eq!(stock.recv().await, json!({"type": "pong"}));
    let m = server.metrics();
    assert!(
        metric_value(
            &m,
            "fanwire_plugin_calls_total{plugin=\"line-protocol\",kind=\"template\"}"
        ) >= 2.0,
        "{m}"
    );
}
