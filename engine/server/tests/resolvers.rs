//! Component resolvers (`[[resolvers]]`) in a running host, with stock
//! WebSocket clients: the `fanwire` binary serving resolved fields from its
//! TOML and reloading the resolver on `POST /admin/plugins/reload` and
//! SIGHUP, its start-time refusals, and a resolver replaced under a
//! continuous publish without a lost, repeated or reordered event. The
//! component is `plugins/testing/resolver` (built by `bash plugins/build.sh`),
//! whose mode the field's `mode` argument chooses and whose version marker
//! the tests rewrite.

use crate::common;
use crate::services;

use std::path::{Path, PathBuf};

use common::*;
use fanwire_plugins::ResolverSpec;
use serde_json::{json, Map, Value};

const RESOLVED_SCHEMA: &str = r#"
type Query { ok: Boolean }
type Subscription {
  tick(topic: String!, mode: String, code: String): Tick @topic(name: "ticks:{topic}")
  plain(topic: String!): Tick @topic(name: "ticks:{topic}")
}
type Tick { seq: Int! payload: String by: String }
"#;

fn dist() -> PathBuf {
    let dir = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../../plugins/dist");
    assert!(
        dir.join("resolver.wasm").is_file(),
        "no plugins in {}: run `bash plugins/build.sh` (tests/run.sh does)",
        dir.display()
    );
    dir
}

/// The resolver component's bytes with its version marker set to `version`.
fn resolver_version(version: u32) -> Vec<u8> {
    let base = std::fs::read(dist().join("resolver.wasm")).unwrap();
    let marker = b"fanwire-resolver:00000000";
    let at = base
        .windows(marker.len())
        .position(|w| w == marker)
        .expect("the resolver component carries its marker");
    let mut bytes = base;
    let digits = format!("{version:08}");
    bytes[at + marker.len() - 8..at + marker.len()].copy_from_slice(digits.as_bytes());
    bytes
}

/// A folder with the schema and a copy of the resolver component in `plugins/`.
fn folder() -> PathBuf {
    let dir = services::temp_dir("fanwire-resolvers");
    std::fs::write(dir.join("schema.graphql"), RESOLVED_SCHEMA).unwrap();
    std::fs::create_dir_all(dir.join("plugins")).unwrap();
    std::fs::copy(
        dist().join("resolver.wasm"),
        dir.join("plugins/resolver.wasm"),
    )
    .unwrap();
    dir
}

/// A client acknowledged by `addr`, subscribed to `query` as `id`.
async fn subscriber(addr: std::net::SocketAddr, id: &str, query: &str) -> Client {
    let mut c = Client::connect(addr, Some("graphql-transport-ws")).await;
    c.send(json!({"type": "connection_init"})).await;
    assert_eq!(c.recv().await, json!({"type": "connection_ack"}));
    c.subscribe(id, query, json!({})).await;
    c
}

/// The `payload` of the next message, which must be a `next`.
async fn next(c: &mut Client) -> Value {
    let msg = c.recv().await;
    assert_eq!(msg["type"], "next", "{msg}");
    msg["payload"].clone()
}

/// Publishes `{"seq": seq, "payload": payload}` on `ticks:{topic}` and
/// returns how many frames it made.
async fn publish(addr: std::net::SocketAddr, topic: &str, seq: u64, payload: &str) -> u64 {
    let body = json!({"topic": format!("ticks:{topic}"), "data": {"seq": seq, "payload": payload}});
    let (status, answer) = http_request(
        addr,
        "POST",
        "/publish?wait=dispatched",
        &body.to_string(),
        None,
    )
    .await;
    assert_eq!(status, 200, "{answer}");
    answer["deliveries"].as_u64().unwrap_or_default()
}

/// Publishes until a subscription of `subscribers` has made it into the
/// node (a frame reaches each), discarding what arrives meanwhile.
async fn until_live(addr: std::net::SocketAddr, topic: &str, subscribers: usize) {
    let deadline = tokio::time::Instant::now() + WAIT;
    while publish(addr, topic, 0, "warm-up").await < subscribers as u64 {
        assert!(
            tokio::time::Instant::now() < deadline,
            "the subscriptions never went live"
        );
        tokio::time::sleep(std::time::Duration::from_millis(20)).await;
    }
}

/// Reads messages until one carries `seq`; returns its `tick`.
async fn tick_of(c: &mut Client, seq: u64) -> Value {
    loop {
        let payload = next(c).await;
        if payload["data"]["tick"]["seq"] == seq {
            return payload["data"]["tick"].clone();
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_binary_serves_resolved_fields_from_its_toml_and_reloads_the_resolver() {
    let dir = folder();
    let config = dir.join("fanwire.toml");
    std::fs::write(
        &config,
        "[server]\nschema = \"schema.graphql\"\n\n\
         [plugin_runtime]\nfolder = \"plugins\"\nwatch = false\ncache_dir = \"plugin-cache\"\nadmin_token = \"admin\"\n\
         # Deadlines are tested in fanwire-plugins; a busy machine must not trip them here.\ncall_timeout_ms = 10000\n\n\
         [[resolvers]]\nfield = \"tick\"\npath = \"resolver.wasm\"\nname = \"ticker\"\n\n\
         [resolvers.config]\nfield = \"payload\"\n",
    )
    .unwrap();
    let mut node = services::Node::start(&config);
    let addr = node.addr;
    let mut echo = subscriber(addr, "e", r#"subscription { tick(topic: "a") { seq by } }"#).await;
    let mut upper = subscriber(
        addr,
        "u",
        r#"subscription { tick(topic: "a", mode: "upper") { seq payload } }"#,
    )
    .await;
    let mut refused = subscriber(
        addr,
        "r",
        r#"subscription { tick(topic: "a", mode: "error", code: "NOT_TODAY") { seq } }"#,
    )
    .await;
    let mut plain = subscriber(
        addr,
        "p",
        r#"subscription { plain(topic: "a") { seq payload by } }"#,
    )
    .await;
    until_live(addr, "a", 4).await;
    publish(addr, "a", 1, "hello").await;
    assert_eq!(
        tick_of(&mut echo, 1).await,
        json!({"seq": 1, "by": "00000000"})
    );
    assert_eq!(
        tick_of(&mut upper, 1).await,
        json!({"seq": 1, "payload": "HELLO"})
    );
    // The plain field has no resolver: the event's data, as always.
    loop {
        let p = next(&mut plain).await;
        if p["data"]["plain"]["seq"] == 1 {
            assert_eq!(
                p["data"]["plain"],
                json!({"seq": 1, "payload": "hello", "by": null})
            );
            break;
        }
    }
    // The guest's error reaches its group alone, with its code and path.
    let p = next(&mut refused).await;
    assert_eq!(p["data"], json!({"tick": null}), "{p}");
    assert_eq!(p["errors"][0]["path"], json!(["tick"]), "{p}");
    assert_eq!(p["errors"][0]["extensions"]["code"], "NOT_TODAY", "{p}");
    assert_eq!(p["errors"][0]["message"], "refused by the resolver", "{p}");

    // A new version through the admin route, then another on SIGHUP.
    let target = dir.join("plugins/resolver.wasm");
    replace_file(&target, &resolver_version(1));
    let (status, body) =
        http_request(addr, "POST", "/admin/plugins/reload", "", Some("admin")).await;
    assert_eq!(status, 200, "{body}");
    assert_eq!(body["reloaded"], json!(["ticker"]), "{body}");
    publish(addr, "a", 2, "x").await;
    assert_eq!(
        tick_of(&mut echo, 2).await,
        json!({"seq": 2, "by": "00000001"})
    );
    replace_file(&target, &resolver_version(2));
    let pid = node.child.id().to_string();
    assert!(std::process::Command::new("kill")
        .args(["-HUP", &pid])
        .status()
        .unwrap()
        .success());
    let deadline = tokio::time::Instant::now() + WAIT;
    let mut seq = 3;
    loop {
        publish(addr, "a", seq, "x").await;
        if tick_of(&mut echo, seq).await["by"] == "00000002" {
            break;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "SIGHUP never put version 2 in force"
        );
        seq += 1;
        tokio::time::sleep(std::time::Duration::from_millis(20)).await;
    }
    let (_, metrics) = http_raw(addr, "GET", "/metrics", "", None).await;
    assert!(
        metric_value(
            &metrics,
            "fanwire_plugin_decisions_total{plugin=\"ticker\",kind=\"value\"}"
        ) >= 4.0,
        "{metrics}"
    );
    assert!(
        metric_value(
            &metrics,
            "fanwire_plugin_decisions_total{plugin=\"ticker\",kind=\"error\"}"
        ) >= 1.0,
        "{metrics}"
    );
    assert!(node.alive(), "{}", node.stderr());
}

/// Runs `fanwire serve` on a config whose resolvers cannot work and
/// returns what it printed; it must exit with an error.
fn refused_start(dir: &Path, resolvers: &str) -> String {
    let config = dir.join(format!("refused-{}.toml", services::unique("r")));
    std::fs::write(
        &config,
        format!(
            "[server]\nschema = \"schema.graphql\"\n\n\
             [plugin_runtime]\nfolder = \"plugins\"\nwatch = false\ncache_dir = \"plugin-cache\"\n\n{resolvers}"
        ),
    )
    .unwrap();
    let out = std::process::Command::new(env!("CARGO_BIN_EXE_fanwire"))
        .args(["serve", "--listen", "127.0.0.1:0", "--config"])
        .arg(&config)
        .env("NO_COLOR", "1")
        .output()
        .unwrap();
    assert!(!out.status.success(), "it started");
    String::from_utf8_lossy(&out.stderr).into_owned()
}

#[test]
fn the_binary_refuses_to_start_with_a_resolver_that_cannot_work() {
    let dir = folder();
    std::fs::copy(
        dist().join("row-filter.wasm"),
        dir.join("plugins/row-filter.wasm"),
    )
    .unwrap();
    let err = refused_start(
        &dir,
        "[[resolvers]]\nfield = \"tock\"\npath = \"resolver.wasm\"\n",
    );
    assert!(
        err.contains(
            "the schema's Subscription type has no field `tock` (its fields: plain, tick)"
        ),
        "{err}"
    );
    let err = refused_start(
        &dir,
        "[[resolvers]]\nfield = \"tick\"\npath = \"resolver.wasm\"\n\n\
         [[resolvers]]\nfield = \"tick\"\npath = \"resolver.wasm\"\nname = \"again\"\n",
    );
    assert!(err.contains("two resolvers for the field `tick`"), "{err}");
    let err = refused_start(
        &dir,
        "[[resolvers]]\nfield = \"tick\"\npath = \"row-filter.wasm\"\n",
    );
    assert!(
        err.contains("resolver row-filter")
            && err.contains("wrong world: the config says field-resolver"),
        "{err}"
    );
    let err = refused_start(
        &dir,
        "[[resolvers]]\nfield = \"tick\"\npath = \"nowhere.wasm\"\n",
    );
    assert!(err.contains("nowhere.wasm"), "{err}");
    let err = refused_start(
        &dir,
        "[[resolvers]]\nfield = \"tick\"\npath = \"resolver.wasm\"\nkind = \"event-filter\"\n",
    );
    assert!(err.contains("unknown field `kind`"), "{err}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_resolver_replaced_under_load_serves_every_event_once_in_order_old_values_then_new() {
    const CLIENTS: usize = 20;
    const VERSIONS: u32 = 5;
    let dir = folder();
    let target = dir.join("plugins/resolver.wasm");
    let server = TestServer::start(|c| {
        c.server.schema = Some(dir.join("schema.graphql"));
        c.resolvers = vec![ResolverSpec {
            field: "tick".into(),
            path: target.clone(),
            name: None,
            // This test is about swaps, not deadlines: a busy machine may
            // preempt a call for longer than the default.
            timeout_ms: Some(10_000),
            memory_mb: None,
            config: Map::new(),
        }];
        c.plugin_runtime.watch_interval_ms = 20;
        c.limits.queue_depth = 1_000_000;
    })
    .await;
    let load = ReloadUnderLoad {
        clients: CLIENTS,
        // Two groups (different selections): each event is resolved for both.
        queries: [
            r#"subscription { tick(topic: "load") { seq by } }"#,
            r#"subscription { tick(topic: "load") { by seq payload } }"#,
        ],
        topic: "ticks:load",
        event: |seq| json!({"seq": seq, "payload": "p"}),
        read: |msg| {
            assert_eq!(msg["type"], "next", "{msg}");
            assert!(msg["payload"].get("errors").is_none(), "{msg}");
            let tick = &msg["payload"]["data"]["tick"];
            let by = tick["by"].as_str().unwrap().parse().unwrap();
            (tick["seq"].as_u64().unwrap(), by)
        },
    };
    let Reloaded {
        published,
        versions,
        clients: _still_open,
        ..
    } = load
        .run(&server, VERSIONS, |version| {
            replace_file(&target, &resolver_version(version))
        })
        .await;
    assert_eq!(versions.last(), Some(&VERSIONS));
    let m = server.metrics();
    assert_eq!(
        metric_value(
            &m,
            "fanwire_plugin_reloads_total{plugin=\"resolver\",kind=\"loaded\"}"
        ),
        f64::from(VERSIONS + 1),
        "{m}"
    );
    assert_eq!(metric_value(&m, "fanwire_connections"), CLIENTS as f64);
    eprintln!(
        "resolver hot reload under load: {} events x {CLIENTS} clients, {VERSIONS} versions",
        published + 1
    );
}
