//! Plugins of every interface version, `fanwire:plugin@0.1.0` to `@0.4.0`,
//! loaded side by side by one runtime: each reports its version, decides
//! through the engine, a 0.1 plugin file hot-reloaded to a 0.2 one, a 0.4
//! one and back keeps deciding, and a 0.3 resolver file hot-reloaded to a
//! 0.4 one and back keeps resolving. The older plugins are real components
//! built against `wit/v0.1.0` (`plugins/testing/legacy-*`), `wit/v0.2.0`
//! (`plugins/testing/row-filter-0-2`) and `wit/v0.3.0`
//! (`plugins/testing/every-world`, every 0.3 interface but the resolver;
//! `plugins/testing/resolver-0-3`) with their own bindings; the SDK's
//! plugins and `plugins/testing/resolver` are 0.4.

mod common;

use std::path::Path;
use std::sync::Arc;

use common::*;
use fanwire_core::hooks::{
    ConnectionPolicy, ConnectionRequest, Decision, EventFilter, Hooks, SubscriptionPolicy, Verdict,
};
use fanwire_core::protocol::Protocol;
use fanwire_core::testing::publish_now;
use fanwire_core::{Connection, Engine, Event, Limits, Principal, Schema};
use fanwire_plugins::filter::WasmFilter;
use fanwire_plugins::policy::{WasmConnectionPolicy, WasmSubscriptionPolicy};
use fanwire_plugins::transport::WasmTransport;
use fanwire_plugins::{Kind, LoadError, LoadOptions, Plugin, PluginHost, Version};
use serde_json::{json, Map, Value};

fn options(name: &str, kind: Kind) -> LoadOptions {
    LoadOptions {
        name: name.into(),
        kind,
        config: Map::new(),
        timeout_ms: 10_000,
        memory_mb: 64,
    }
}

#[test]
fn each_plugin_loads_with_the_interface_version_it_was_built_for() {
    let rt = runtime();
    for (name, kind, version) in [
        ("legacy-filter", Kind::EventFilter, Version::V0_1),
        ("legacy-policy", Kind::SubscriptionPolicy, Version::V0_1),
        ("row-filter-0-2", Kind::EventFilter, Version::V0_2),
        ("row-filter", Kind::EventFilter, Version::V0_4),
        ("rbac", Kind::SubscriptionPolicy, Version::V0_4),
        ("line-protocol", Kind::TransportAdapter, Version::V0_4),
        ("every-world", Kind::EventFilter, Version::V0_3),
        ("every-world", Kind::SubscriptionPolicy, Version::V0_3),
        ("every-world", Kind::ConnectionPolicy, Version::V0_3),
        ("every-world", Kind::TransportAdapter, Version::V0_3),
        ("resolver-0-3", Kind::FieldResolver, Version::V0_3),
        ("resolver", Kind::FieldResolver, Version::V0_4),
        ("format-fields", Kind::FieldResolver, Version::V0_4),
    ] {
        let plugin = Plugin::load(&rt, &wasm(name), options(name, kind))
            .unwrap_or_else(|e| panic!("{name}: {e}"));
        assert_eq!(plugin.version(), version, "{name}");
    }
}

#[test]
fn an_unknown_version_is_refused_naming_what_it_found_and_what_loads() {
    let err = Plugin::load(
        &runtime(),
        &wasm("wrong-version"),
        options("wrong", Kind::EventFilter),
    )
    .unwrap_err();
    assert!(matches!(err, LoadError::UnsupportedVersion { .. }), "{err}");
    let message = err.to_string();
    assert!(
        message.contains("fanwire:plugin/filter@9.0.0")
            && message.contains("0.1.x, 0.2.x, 0.3.x, 0.4.x"),
        "{message}"
    );
}

#[test]
fn a_0_1_and_a_0_2_row_filter_decide_alike_and_only_0_2_keeps_contexts() {
    let rt = runtime();
    let legacy_spec = spec("legacy-filter", Kind::EventFilter, json!({}));
    let current_spec = spec("row-filter", Kind::EventFilter, json!({}));
    let legacy = WasmFilter::new(load(&rt, &legacy_spec), legacy_spec);
    let current = WasmFilter::new(load(&rt, &current_spec), current_spec);
    let of = |subject: &str, paths: &[&str]| {
        group(
            "orders",
            "orders",
            json!({}),
            json!({}),
            paths,
            principal(Some(subject), None, &[], json!({})),
        )
    };
    // Two groups of alice (different selections) and one of bob.
    let (alice, alice_too, bob) = (
        of("alice", &["orders.id"]),
        of("alice", &[]),
        of("bob", &[]),
    );
    assert_eq!(legacy.prepare(&alice), Verdict::PerEvent(None));
    assert_eq!(
        current.prepare(&alice),
        Verdict::PerEvent(Some("alice".into()))
    );
    let anonymous = group(
        "orders",
        "orders",
        json!({}),
        json!({}),
        &[],
        Principal::default(),
    );
    assert!(matches!(legacy.prepare(&anonymous), Verdict::DenyAll(_)));
    assert!(matches!(current.prepare(&anonymous), Verdict::DenyAll(_)));
    let groups = [&alice, &bob, &alice_too];
    for (data, expected) in [
        (json!({"user_id": "alice"}), [true, false, true]),
        (json!({"user_id": "bob", "x": 1}), [false, true, false]),
        (json!({"x": 1}), [false, false, false]),
    ] {
        let event = Event::new("orders", data.clone());
        for f in [&legacy, &current] {
            let allowed: Vec<bool> = decide(f, &event, &groups)
                .iter()
                .map(|d| *d == Decision::Allow)
                .collect();
            assert_eq!(allowed, expected, "{} on {data}", f.plugin().name());
        }
    }
}

#[test]
fn a_0_1_and_a_0_2_subscription_policy_run_side_by_side() {
    let rt = runtime();
    let legacy_spec = spec(
        "legacy-policy",
        Kind::SubscriptionPolicy,
        json!({"refuse": "secrets"}),
    );
    let rbac_spec = spec(
        "rbac",
        Kind::SubscriptionPolicy,
        json!({"permissions": {"orders": "order:read"}}),
    );
    let legacy = WasmSubscriptionPolicy::new(load(&rt, &legacy_spec), legacy_spec);
    let rbac = WasmSubscriptionPolicy::new(load(&rt, &rbac_spec), rbac_spec);
    let reader = principal(Some("u"), None, &["order:read"], json!({}));
    let orders = group(
        "orders",
        "orders",
        json!({}),
        json!({}),
        &[],
        reader.clone(),
    );
    let secrets = group("secrets", "secrets", json!({}), json!({}), &[], reader);
    let stranger = group(
        "orders",
        "orders",
        json!({}),
        json!({}),
        &[],
        principal(Some("v"), None, &[], json!({})),
    );
    assert_eq!(legacy.check(&orders), Ok(()));
    assert_eq!(rbac.check(&orders), Ok(()));
    let refused = legacy.check(&secrets).unwrap_err();
    assert!(
        refused.message.contains("`secrets` is refused"),
        "{refused:?}"
    );
    assert_eq!(
        refused.extensions.get("code").and_then(Value::as_str),
        Some("LEGACY_REFUSED")
    );
    assert_eq!(legacy.check(&stranger), Ok(()));
    assert!(rbac
        .check(&stranger)
        .unwrap_err()
        .message
        .contains("order:read"));
}

#[test]
fn every_0_3_world_loads_and_behaves_like_0_2() {
    let rt = runtime();
    let as_kind = |kind: Kind, config: Value| {
        let mut s = spec("every-world", kind, config);
        s.name = Some(format!("every-world-{}", kind.world()));
        (load(&rt, &s), s)
    };

    // The filter: a row filter with contexts, as at 0.2.
    let (plugin, s) = as_kind(Kind::EventFilter, json!({}));
    let filter = WasmFilter::new(plugin, s);
    let of = |subject: &str| {
        group(
            "orders",
            "orders",
            json!({}),
            json!({}),
            &[],
            principal(Some(subject), None, &[], json!({})),
        )
    };
    let (alice, bob) = (of("alice"), of("bob"));
    assert_eq!(
        filter.prepare(&alice),
        Verdict::PerEvent(Some("alice".into()))
    );
    let anonymous = group(
        "orders",
        "orders",
        json!({}),
        json!({}),
        &[],
        Principal::default(),
    );
    assert!(matches!(filter.prepare(&anonymous), Verdict::DenyAll(r) if r.contains("0.3")));
    let event = Event::new("orders", json!({"user_id": "bob", "x": 1}));
    let decided = decide(&filter, &event, &[&alice, &bob, &alice]);
    assert!(matches!(&decided[0], Decision::Deny(r) if r.contains("not the subscriber's row")));
    assert_eq!(decided[1], Decision::Allow);
    assert_eq!(decided[0], decided[2]);

    // The subscription policy keeps the guest's code.
    let (plugin, s) = as_kind(Kind::SubscriptionPolicy, json!({"refuse": "secrets"}));
    let policy = WasmSubscriptionPolicy::new(plugin, s);
    assert_eq!(policy.check(&alice), Ok(()));
    let secrets = group(
        "secrets",
        "secrets",
        json!({}),
        json!({}),
        &[],
        Principal::default(),
    );
    let refused = policy.check(&secrets).unwrap_err();
    assert_eq!(refused.code(), Some("REFUSED_0_3"), "{refused:?}");

    // The connection policy's principal and ack come back.
    let (plugin, _) = as_kind(Kind::ConnectionPolicy, json!({}));
    let connection = WasmConnectionPolicy::new(plugin);
    let payload = |v: Value| match v {
        Value::Object(m) => m,
        _ => Map::new(),
    };
    let accepted = connection
        .check(&ConnectionRequest {
            init_payload: &payload(json!({"subject": "ann"})),
            headers: &[],
        })
        .unwrap();
    assert_eq!(accepted.principal.subject.as_deref(), Some("ann"));
    assert_eq!(accepted.ack, Some(json!({"version": "0.3"})));
    let refused = connection
        .check(&ConnectionRequest {
            init_payload: &Map::new(),
            headers: &[],
        })
        .unwrap_err();
    assert!(refused.contains("no subject"), "{refused}");

    // The transport adapter's messages are 0.3's own types, mapped alike.
    let (plugin, _) = as_kind(Kind::TransportAdapter, json!({}));
    let transport = WasmTransport::new(plugin).unwrap();
    assert_eq!(transport.subprotocol(), "every-world-0.3");
    let decoded: Value = serde_json::from_str(&transport.decode("init").unwrap()).unwrap();
    assert_eq!(decoded, json!({"type": "connection_init", "payload": {}}));
    let decoded: Value =
        serde_json::from_str(&transport.decode("sub 7 subscription { a }").unwrap()).unwrap();
    assert_eq!(decoded["id"], "7");
    assert_eq!(decoded["payload"]["query"], "subscription { a }");
    assert!(transport
        .decode("what")
        .unwrap_err()
        .contains("unknown frame"));
    assert_eq!(
        transport
            .encode(r#"{"type":"complete","id":"7"}"#)
            .as_deref(),
        Some("done 7")
    );
    assert_eq!(
        transport.template("7"),
        Some(("result 7 ".to_owned(), String::new()))
    );
}

const SCHEMA: &str = "type Query { ok: Boolean }
type Subscription { orderCreated: Order @topic(name: \"orders\") }
type Order { id: ID! user_id: String status: String }";

/// An engine whose hooks come from `host`, with one subscriber per
/// (subject, tenant) and selection; the connections are kept alive.
fn engine_with(
    host: &PluginHost,
    subscribers: &[(&str, &str, &str)],
) -> (Arc<Engine>, Vec<Connection>) {
    let hooks = host.hooks(Hooks {
        connection: Arc::new(FromPayload),
        ..Hooks::default()
    });
    let engine =
        Engine::with_hooks(Schema::parse(SCHEMA).unwrap(), Limits::default(), hooks).unwrap();
    let mut connections = Vec::new();
    for (subject, tenant, selection) in subscribers {
        let mut c = engine.connect(Protocol::TransportWs);
        let init =
            json!({"type": "connection_init", "payload": {"subject": subject, "tenant": tenant}});
        c.on_text(&init.to_string());
        let query = format!("subscription {{ orderCreated {{ {selection} }} }}");
        let sub = json!({"id": "s", "type": "subscribe", "payload": {"query": query}});
        c.on_text(&sub.to_string());
        connections.push(c);
    }
    (engine, connections)
}

fn plugin_spec(folder: &Path, file: &str, name: &str) -> fanwire_plugins::PluginSpec {
    let mut s = spec(name, Kind::EventFilter, json!({}));
    s.path = folder.join(file);
    s
}

/// A fresh folder holding `files` (target name, bundled plugin).
fn folder(files: &[(&str, &str)]) -> std::path::PathBuf {
    let dir = std::env::temp_dir().join(format!(
        "fanwire-versions-{}-{}",
        std::process::id(),
        files.iter().map(|(n, _)| *n).collect::<Vec<_>>().join("-")
    ));
    std::fs::create_dir_all(&dir).unwrap();
    for (target, plugin) in files {
        std::fs::write(dir.join(target), wasm(plugin)).unwrap();
    }
    dir
}

fn delivered(engine: &Engine, data: Value) -> usize {
    publish_now(engine, &[Event::new("orders", data)]).deliveries
}

#[test]
fn one_engine_runs_0_1_and_0_2_filters_in_one_chain() {
    let dir = folder(&[
        ("rows.wasm", "legacy-filter"),
        ("tenants.wasm", "tenant-isolation"),
    ]);
    let specs = [
        plugin_spec(&dir, "rows.wasm", "rows"),
        plugin_spec(&dir, "tenants.wasm", "tenants"),
    ];
    let host = PluginHost::with_runtime(runtime(), &specs, &[], None, &dir, &dir).unwrap();
    // alice twice in t1 (two groups), bob in t1, and alice again in t2.
    let (engine, _keep) = engine_with(
        &host,
        &[
            ("alice", "t1", "id"),
            ("alice", "t1", "id status"),
            ("bob", "t1", "id"),
            ("alice", "t2", "id"),
        ],
    );
    assert_eq!(
        delivered(
            &engine,
            json!({"id": 1, "user_id": "alice", "tenant_id": "t1"})
        ),
        2
    );
    assert_eq!(
        delivered(
            &engine,
            json!({"id": 2, "user_id": "alice", "tenant_id": "t2"})
        ),
        1
    );
    assert_eq!(
        delivered(
            &engine,
            json!({"id": 3, "user_id": "bob", "tenant_id": "t1"})
        ),
        1
    );
    assert_eq!(
        delivered(
            &engine,
            json!({"id": 4, "user_id": "carol", "tenant_id": "t1"})
        ),
        0
    );
    assert_eq!(delivered(&engine, json!({"id": 5, "user_id": "alice"})), 0);
}

#[test]
fn a_0_1_filter_file_hot_reloaded_to_0_2_0_4_and_0_3_and_back_keeps_deciding() {
    let dir = folder(&[("rows.wasm", "legacy-filter")]);
    let host = PluginHost::with_runtime(
        runtime(),
        &[plugin_spec(&dir, "rows.wasm", "rows")],
        &[],
        None,
        &dir,
        &dir,
    )
    .unwrap();
    let (engine, _keep) = engine_with(
        &host,
        &[
            ("alice", "t1", "id"),
            ("bob", "t1", "id"),
            ("bob", "t1", "id status"),
        ],
    );
    let check = |version: Version| {
        assert_eq!(host.plugin("rows").map(|p| p.version()), Some(version));
        assert_eq!(
            delivered(&engine, json!({"id": 1, "user_id": "alice"})),
            1,
            "{version:?}"
        );
        assert_eq!(
            delivered(&engine, json!({"id": 2, "user_id": "bob"})),
            2,
            "{version:?}"
        );
        assert_eq!(
            delivered(&engine, json!({"id": 3, "user_id": "carol"})),
            0,
            "{version:?}"
        );
        assert_eq!(delivered(&engine, json!({"id": 4})), 0, "{version:?}");
    };
    check(Version::V0_1);
    // The groups formed under 0.1 are prepared again under 0.2 (and get
    // their contexts) when the new version goes live, and so on.
    for (plugin, version) in [
        ("row-filter-0-2", Version::V0_2),
        ("row-filter", Version::V0_4),
        ("legacy-filter", Version::V0_1),
        ("every-world", Version::V0_3),
        ("row-filter", Version::V0_4),
        ("row-filter-0-2", Version::V0_2),
    ] {
        let tmp = dir.join("rows.tmp");
        std::fs::write(&tmp, wasm(plugin)).unwrap();
        std::fs::rename(&tmp, dir.join("rows.wasm")).unwrap();
        let report = host.reload(&engine, true);
        assert_eq!(report.reloaded, vec!["rows".to_owned()], "{report:?}");
        assert_eq!(report.revoked, 0);
        check(version);
    }
}
