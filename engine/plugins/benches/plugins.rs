//! Plugin runtime figures: per-call overhead, instantiation with and without
//! pooling, dispatch of one event to 1,000 subscriptions in 10 groups with
//! and without the security plugins, and the time to load a new version
//! (component resolvers have their own bench, `resolvers.rs`).
//! Run with `bash benches/plugins.sh` (builds the plugins first); prints a
//! table, asserts nothing.

#[path = "../tests/common/mod.rs"]
mod common;

use std::sync::Arc;
use std::time::{Duration, Instant};

use common::{dist, time, wasm, FromPayload};
use fanwire_core::hooks::{Asked, Decision, EventFilter, GroupInfo, Hooks, Verdict};
use fanwire_core::protocol::Protocol;
use fanwire_core::testing::publish_now;
use fanwire_core::{Engine, Event, Limits, Principal, Schema};
use fanwire_plugins::filter::WasmFilter;
use fanwire_plugins::{
    Kind, LoadOptions, Plugin, PluginHost, PluginMetrics, PluginSpec, Runtime, RuntimeConfig,
};
use serde_json::{json, Map};

fn options(name: &str) -> LoadOptions {
    LoadOptions {
        name: name.into(),
        kind: Kind::EventFilter,
        config: Map::new(),
        timeout_ms: 1000,
        memory_mb: 64,
    }
}

fn spec(name: &str, kind: Kind) -> PluginSpec {
    PluginSpec {
        name: None,
        path: dist().join(format!("{name}.wasm")),
        kind,
        order: 0,
        fields: Vec::new(),
        topics: Vec::new(),
        timeout_ms: Some(1000),
        memory_mb: None,
        config: Map::new(),
    }
}

fn group(principal: Principal) -> GroupInfo {
    GroupInfo {
        field: "orderCreated".into(),
        topic: "orders:t1".into(),
        arguments: Map::new(),
        variables: Map::new(),
        operation_name: None,
        selected_paths: vec!["orderCreated".into(), "orderCreated.id".into()],
        principal,
        init_payload: Map::new(),
    }
}

/// `groups` prepared by `filter`, as the engine hands them to `decide`
/// (the verdicts own the contexts).
fn prepared(filter: &dyn EventFilter, groups: &[&GroupInfo]) -> Vec<Verdict> {
    groups.iter().map(|g| filter.prepare(g)).collect()
}

fn asked<'a>(groups: &[&'a GroupInfo], verdicts: &'a [Verdict]) -> Vec<Asked<'a>> {
    groups
        .iter()
        .zip(verdicts)
        .map(|(group, v)| Asked {
            group,
            context: match v {
                Verdict::PerEvent(context) => context.as_deref(),
                _ => None,
            },
        })
        .collect()
}

/// A native filter that asks about every event and allows it: the core's
/// own cost of running a filter, without WebAssembly.
#[derive(Debug)]
struct NativeAllow;

impl EventFilter for NativeAllow {
    fn name(&self) -> &str {
        "native-allow"
    }
    fn prepare(&self, _: &GroupInfo) -> Verdict {
        Verdict::PerEvent(None)
    }
    fn decide(&self, _: &Event, groups: &[Asked<'_>]) -> Vec<Decision> {
        vec![Decision::Allow; groups.len()]
    }
}

const SCHEMA: &str = "type Query { ok: Boolean }
type Subscription { orderCreated(tenantId: ID!): Order @topic(name: \"orders:{tenantId}\") }
type Order { id: ID! cents: Int! status: String }";

/// An engine with 1,000 subscriptions in 10 groups (10 selection sets, one
/// principal), and their connections (kept alive).
fn engine_with_subscriptions(hooks: Hooks) -> (Arc<Engine>, Vec<fanwire_core::Connection>) {
    let limits = Limits {
        max_connections: 2000,
        queue_depth: 64,
        ..Limits::default()
    };
    let engine = Engine::with_hooks(Schema::parse(SCHEMA).unwrap(), limits, hooks).unwrap();
    let mut connections = Vec::new();
    for n in 0..1000 {
        let mut c = engine.connect(Protocol::TransportWs);
        let init = json!({"type": "connection_init", "payload": {
            "subject": "u1", "tenant": "t1", "roles": ["order:read"], "claims": {"federation_id": "f1"}
        }});
        c.on_text(&init.to_string());
        let query = format!(
            "subscription {{ orderCreated(tenantId: \"t1\") {{ id cents g{}: id }} }}",
            n % 10
        );
        let sub = json!({"id": "s", "type": "subscribe", "payload": {"query": query}});
        c.on_text(&sub.to_string());
        connections.push(c);
    }
    assert_eq!(engine.registry().counts(), (1, 10, 1000));
    (engine, connections)
}

fn main() {
    // `cargo test --all-targets` runs this binary without `--bench`: the
    // figures only mean something from an optimised `cargo bench` run.
    if !std::env::args().any(|a| a == "--bench") {
        println!("plugin benchmarks: run with `bash benches/plugins.sh`");
        return;
    }
    // No compile cache: the load rows measure compiling (the cache has its
    // own bench, compile_cache.rs), and nothing is written to the user's cache.
    let config = RuntimeConfig {
        cache: false,
        ..RuntimeConfig::default()
    };
    let pooled = Runtime::new(config.clone(), PluginMetrics::new()).unwrap();
    let unpooled = Runtime::without_pooling(config, PluginMetrics::new()).unwrap();
    let template = wasm("template");
    let row = wasm("row-filter");
    println!("| measurement | median |");
    println!("|---|---|");

    // 1. A trivial filter: one decide call with one group.
    let plugin = Arc::new(Plugin::load(&pooled, &template, options("template")).unwrap());
    let filter = WasmFilter::new(plugin.clone(), spec("template", Kind::EventFilter));
    let g = group(Principal {
        subject: Some("u1".into()),
        ..Principal::default()
    });
    let event = Event::new(
        "orders:t1",
        json!({"id": 1, "cents": 100, "status": "live", "user_id": "u1"}),
    );
    let one = prepared(&filter, &[&g]);
    let one = asked(&[&g], &one);
    let per_call = time(11, 20_000, || {
        std::hint::black_box(filter.decide(&event, &one));
    });
    println!("| trivial filter (template), one `decide` with 1 group, host -> guest -> host | {:.2} us |", per_call.as_secs_f64() * 1e6);
    let groups: Vec<GroupInfo> = (0..10).map(|_| g.clone()).collect();
    let refs: Vec<&GroupInfo> = groups.iter().collect();
    let ten = prepared(&filter, &refs);
    let ten = asked(&refs, &ten);
    let per_call10 = time(11, 5_000, || {
        std::hint::black_box(filter.decide(&event, &ten));
    });
    println!(
        "| same, 10 groups (one context: one decision crosses) | {:.2} us |",
        per_call10.as_secs_f64() * 1e6
    );
    // The row filter at every interface version, 10 groups of 10 subjects:
    // 0.1 lowers 10 `subscription` records, 0.2 and later 10 short contexts.
    let subjects: Vec<GroupInfo> = (0..10)
        .map(|n| {
            group(Principal {
                subject: Some(format!("u{n}")),
                ..Principal::default()
            })
        })
        .collect();
    let subject_refs: Vec<&GroupInfo> = subjects.iter().collect();
    for (name, label) in [
        ("legacy-filter", "0.1"),
        ("row-filter-0-2", "0.2"),
        ("row-filter", "0.4"),
    ] {
        let bytes = wasm(name);
        let p = Arc::new(Plugin::load(&pooled, &bytes, options(name)).unwrap());
        let f = WasmFilter::new(p, spec(name, Kind::EventFilter));
        let verdicts = prepared(&f, &subject_refs);
        let a = asked(&subject_refs, &verdicts);
        let t = time(11, 5_000, || {
            std::hint::black_box(f.decide(&event, &a));
        });
        println!(
            "| row filter at {label} ({name}), one `decide` with 10 groups of 10 subjects | {:.2} us |",
            t.as_secs_f64() * 1e6
        );
    }

    // The three security event filters as S1 calls them: one group, one
    // context, the whole event (each trims it to the fields it asked for).
    let s1_event = Event::new(
        "orders:t1",
        json!({"id": 1, "cents": 100, "status": "live", "note": "x".repeat(120),
               "user_id": "u1", "tenant_id": "t1", "federation_id": "f1"}),
    );
    let me = group(Principal {
        subject: Some("u1".into()),
        tenant: Some("t1".into()),
        claims: json!({"federation_id": "f1"}).as_object().unwrap().clone(),
        ..Principal::default()
    });
    for name in ["tenant-isolation", "row-filter", "federation"] {
        let bytes = wasm(name);
        let p = Arc::new(Plugin::load(&pooled, &bytes, options(name)).unwrap());
        let f = WasmFilter::new(p, spec(name, Kind::EventFilter));
        let verdicts = prepared(&f, &[&me]);
        let a = asked(&[&me], &verdicts);
        assert_eq!(f.decide(&s1_event, &a), vec![Decision::Allow]);
        // `PLUGINS_BENCH_PROFILE=<filter>:<calls>`: only call that filter,
        // for `perf record` or callgrind, then stop.
        if let Ok(target) = std::env::var("PLUGINS_BENCH_PROFILE") {
            if let Some((n, calls)) = target.split_once(':') {
                if n == name {
                    let calls = calls.parse::<u32>().unwrap();
                    let mut runs: Vec<Duration> = (0..15)
                        .map(|_| {
                            let start = Instant::now();
                            for _ in 0..calls / 15 {
                                std::hint::black_box(f.decide(&s1_event, &a));
                            }
                            start.elapsed() / (calls / 15)
                        })
                        .collect();
                    runs.sort();
                    println!("{name}: min {:?}, median {:?} per call", runs[0], runs[7]);
                    return;
                }
                continue;
            }
        }
        let t = time(11, 20_000, || {
            std::hint::black_box(f.decide(&s1_event, &a));
        });
        println!(
            "| {name}, one `decide` with 1 group (S1's shape) | {:.2} us |",
            t.as_secs_f64() * 1e6
        );
    }

    // 2. Instantiation.
    let unpooled_plugin = Plugin::load(&unpooled, &template, options("template")).unwrap();
    let inst_pooled = time(11, 500, || plugin.instantiate_once().unwrap());
    let inst_unpooled = time(11, 500, || unpooled_plugin.instantiate_once().unwrap());
    println!(
        "| instantiate a Rust plugin, pooling allocator | {:.1} us |",
        inst_pooled.as_secs_f64() * 1e6
    );
    println!(
        "| instantiate a Rust plugin, on-demand allocator | {:.1} us |",
        inst_unpooled.as_secs_f64() * 1e6
    );

    // 3. One event to 1,000 subscriptions in 10 groups.
    let base = Hooks {
        connection: Arc::new(FromPayload),
        ..Hooks::default()
    };
    let (plain, _keep_plain) = engine_with_subscriptions(base.clone());
    let native: Vec<Arc<dyn EventFilter>> = (0..3).map(|_| Arc::new(NativeAllow) as _).collect();
    let (native, _keep_native) = engine_with_subscriptions(Hooks {
        filters: native,
        ..base.clone()
    });
    let specs = vec![
        spec("scope-validator", Kind::SubscriptionPolicy),
        {
            let mut s = spec("rbac", Kind::SubscriptionPolicy);
            s.config = json!({"permissions": {"orderCreated": "order:read"}})
                .as_object()
                .unwrap()
                .clone();
            s
        },
        spec("tenant-isolation", Kind::EventFilter),
        spec("row-filter", Kind::EventFilter),
        spec("federation", Kind::EventFilter),
    ];
    let host =
        PluginHost::with_runtime(pooled.clone(), &specs, &[], None, &dist(), &dist()).unwrap();
    let (secured, _keep_secured) = engine_with_subscriptions(host.hooks(base.clone()));
    let event = Event::new(
        "orders:t1",
        json!({"id": 1, "cents": 100, "status": "live", "user_id": "u1", "tenant_id": "t1", "federation_id": "f1"}),
    );
    for engine in [&plain, &native, &secured] {
        assert_eq!(
            publish_now(engine, std::slice::from_ref(&event)).deliveries,
            1000,
            "every subscription receives the event"
        );
    }
    let t_plain = time(11, 200, || {
        std::hint::black_box(publish_now(&plain, std::slice::from_ref(&event)));
    });
    let t_native = time(11, 200, || {
        std::hint::black_box(publish_now(&native, std::slice::from_ref(&event)));
    });
    let t_secured = time(11, 200, || {
        std::hint::black_box(publish_now(&secured, std::slice::from_ref(&event)));
    });
    println!(
        "| 1 event -> 1,000 subscriptions in 10 groups, no plugins | {:.1} us |",
        t_plain.as_secs_f64() * 1e6
    );
    println!(
        "| same, with 3 native no-op filters (the core's filter path alone) | {:.1} us |",
        t_native.as_secs_f64() * 1e6
    );
    println!(
        "| same, with the 5 security plugins at 0.3 (3 filters run per event) | {:.1} us |",
        t_secured.as_secs_f64() * 1e6
    );
    println!(
        "| added by the plugins | {:.1} us |",
        (t_secured.as_secs_f64() - t_plain.as_secs_f64()) * 1e6
    );

    // 4. Loading a new version (what a reload does before the swap).
    let load = time(7, 3, || {
        Plugin::load(&pooled, &row, options("row-filter")).unwrap();
    });
    println!(
        "| load a new version of row-filter (compile + check + instantiate) | {:.1} ms |",
        load.as_secs_f64() * 1e3
    );
    let python = dist().join("python-filter.wasm");
    if let Ok(bytes) = std::fs::read(&python) {
        let start = Instant::now();
        let p = Plugin::load(&pooled, &bytes, options("python-filter")).unwrap();
        println!(
            "| load the Python plugin (18 MB component) | {:.0} ms |",
            start.elapsed().as_secs_f64() * 1e3
        );
        let f = WasmFilter::new(Arc::new(p), spec("python-filter", Kind::EventFilter));
        let verdicts = prepared(&f, &[&g]);
        let a = asked(&[&g], &verdicts);
        let py_call = time(5, 500, || {
            std::hint::black_box(f.decide(&event, &a));
        });
        println!(
            "| Python filter, one `decide` with 1 group | {:.1} us |",
            py_call.as_secs_f64() * 1e6
        );
    }
}
