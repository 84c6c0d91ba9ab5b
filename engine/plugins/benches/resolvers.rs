//! Component resolvers: what one adds per group per event over no
//! resolver, through the engine, for a Rust and a Python component, beside
//! a native resolver (the core's own share). The engine serves the schema
//! of `examples/resolver-component` with 1,000 subscriptions in 10 groups
//! (10 selections of `tick`, one authenticated principal); one ~200 B event
//! is published at a time, as `publish_now` does, with no sockets.
//!
//! The engines are timed in turn, round after round (61, or
//! `RESOLVER_BENCH_ROUNDS`), so each round's difference to the engine
//! without a resolver is taken on the same machine load; a row's figure is
//! the median over the rounds. One `resolve` call alone (1 group, host ->
//! guest -> host) is timed too.
//!
//! Run with `bash benches/resolvers.sh` (with the compile cache bench and
//! S1 with a Python resolver) or `bash benches/plugins.sh` (with the other
//! plugin benches); prints a table, asserts nothing.
//! `RESOLVER_BENCH_PROFILE=<row>:<events>` builds only that row's engine
//! and publishes `events` events to it, for `perf record` or callgrind
//! (`--toggle-collect='*publish_now*'`), then stops. Components are
//! compiled once into a compile cache under the bench's target folder, so
//! a second run starts in seconds.

#[path = "../tests/common/mod.rs"]
mod common;

use std::path::PathBuf;
use std::sync::Arc;
use std::time::{Duration, Instant};

use common::{dist, time, FromPayload};
use fanwire_core::hooks::{DataText, GroupInfo, Hooks, Resolution, Resolver};
use fanwire_core::operation::prepare;
use fanwire_core::protocol::{Protocol, SubscribePayload};
use fanwire_core::testing::publish_now;
use fanwire_core::{Connection, Engine, Event, Limits, Principal, Schema};
use fanwire_plugins::resolver::WasmResolver;
use fanwire_plugins::{
    Kind, LoadOptions, Plugin, PluginHost, PluginMetrics, ResolverSpec, Runtime, RuntimeConfig,
};
use serde_json::{json, Map, Value};

const SCHEMA: &str = include_str!("../../../examples/resolver-component/schema.graphql");

/// Groups per event: each costs one resolver call.
const GROUPS: usize = 10;

/// A native resolver that returns the event's data: the core's own cost of
/// resolving a field, without WebAssembly.
#[derive(Debug)]
struct NativePass;

impl Resolver for NativePass {
    fn resolve(&self, _: &Event, data: &Value, _: &GroupInfo) -> Resolution {
        Resolution::Ready(Ok(data.clone()))
    }
}

/// One resolver under measurement.
struct Row {
    /// Its name in the table and in `RESOLVER_BENCH_PROFILE`.
    name: &'static str,
    what: &'static str,
    /// The component (in `plugins/dist`) and its config; `None` for the
    /// native resolver and for no resolver at all.
    component: Option<(&'static str, Value)>,
    native: bool,
}

fn rows() -> Vec<Row> {
    vec![
        Row {
            name: "none",
            what: "no resolver (**baseline**)",
            component: None,
            native: false,
        },
        Row {
            name: "native",
            what: "native Rust resolver returning the data (the core's resolver path alone)",
            component: None,
            native: true,
        },
        Row {
            name: "rust-pass",
            what: "Rust component returning the data unparsed (`testing/resolver`, mode `pass`): the host's share of a call",
            component: Some(("resolver", json!({"mode": "pass"}))),
            native: false,
        },
        Row {
            name: "rust-pass-0.3",
            what: "the same built against interface 0.3 (`testing/resolver-0-3`: the whole field call with every event, no `prepare`)",
            component: Some(("resolver-0-3", json!({"mode": "pass"}))),
            native: false,
        },
        Row {
            name: "rust-format",
            what: "Rust component `format-fields` (`case = { payload = \"lower\" }`: parse, re-case, serialise)",
            component: Some(("format-fields", json!({"case": {"payload": "lower"}}))),
            native: false,
        },
        Row {
            name: "python",
            what: "Python component `resolver-component` (the example: `payload` upper-cased)",
            component: Some(("resolver-component", Value::Null)),
            native: false,
        },
    ]
}

fn runtime(profile: bool) -> Runtime {
    // A cache of the bench's own (never the user's): the Python component
    // compiles for tens of seconds, once.
    let cache_dir = PathBuf::from(env!("CARGO_TARGET_TMPDIR")).join("resolver-bench-cache");
    Runtime::new(
        RuntimeConfig {
            cache_dir: Some(cache_dir),
            // Generous: a busy machine must not turn a call into a timeout.
            call_timeout_ms: 1000,
            // valgrind cannot reserve the default pool's address space.
            pool_instances: if profile { 3 } else { 256 },
            ..RuntimeConfig::default()
        },
        PluginMetrics::new(),
    )
    .unwrap()
}

fn config(value: &Value) -> Map<String, Value> {
    value.as_object().cloned().unwrap_or_default()
}

/// An engine with 1,000 subscriptions in 10 groups (10 selections of
/// `tick`, one principal) and their connections (kept alive, never read:
/// every engine fans out to full queues alike).
fn engine(hooks: Hooks) -> (Arc<Engine>, Vec<Connection>) {
    let limits = Limits {
        max_connections: 2000,
        queue_depth: 64,
        ..Limits::default()
    };
    let engine = Engine::with_hooks(Schema::parse(SCHEMA).unwrap(), limits, hooks).unwrap();
    let connections = (0..1000)
        .map(|n| {
            let mut c = engine.connect(Protocol::TransportWs);
            let init = json!({"type": "connection_init", "payload": {
                "subject": "u1", "tenant": "t1", "roles": ["tick:read"],
                "claims": {"federation_id": "f1"}
            }});
            c.on_text(&init.to_string());
            let query = format!(
                "subscription {{ tick(topic: \"bench\") {{ seq sentAt payload g{}: topic }} }}",
                n % GROUPS
            );
            c.on_text(
                &json!({"id": "s", "type": "subscribe", "payload": {"query": query}}).to_string(),
            );
            c
        })
        .collect();
    assert_eq!(engine.registry().counts(), (1, GROUPS, 1000));
    (engine, connections)
}

fn hooks(row: &Row, runtime: &Runtime) -> Hooks {
    let base = Hooks {
        connection: Arc::new(FromPayload),
        ..Hooks::default()
    };
    if row.native {
        return Hooks {
            resolvers: [("tick".to_owned(), Arc::new(NativePass) as Arc<dyn Resolver>)]
                .into_iter()
                .collect(),
            ..base
        };
    }
    let Some((file, settings)) = &row.component else {
        return base;
    };
    let spec = ResolverSpec {
        field: "tick".into(),
        path: PathBuf::from(format!("{file}.wasm")),
        name: Some(row.name.into()),
        timeout_ms: None,
        memory_mb: None,
        config: config(settings),
    };
    let host =
        PluginHost::with_runtime(runtime.clone(), &[], &[spec], None, &dist(), &dist()).unwrap();
    host.hooks(base)
}

/// A ~200 B tick, as S1 publishes.
fn tick() -> Event {
    Event::new(
        "ticks:bench",
        json!({"seq": 42, "topic": "bench", "sentAt": 1_700_000_000.25,
               "payload": format!("Tick {}", "x".repeat(160))}),
    )
}

fn median(mut values: Vec<f64>) -> f64 {
    values.sort_by(f64::total_cmp);
    values[values.len() / 2]
}

fn us(seconds: f64) -> f64 {
    seconds * 1e6
}

/// One group's share of an event, timed apart from the engine's fan-out
/// (whose noise swamps a microsecond on a shared machine).
struct PerCall {
    /// One `resolve`, host -> guest -> host, with the event's text
    /// rendered per call.
    call: Duration,
    /// What a group with the resolver costs per event beyond one without:
    /// `resolve` and the projection of its answer, less the projection of
    /// the event's data (the engine renders the event's text once for all
    /// its groups: rendered once here). The median over alternating runs of
    /// the two.
    added: f64,
}

/// [`PerCall`] for a component row; `None` for the others.
fn per_call(row: &Row, runtime: &Runtime, event: &Event) -> Option<PerCall> {
    let (file, settings) = row.component.as_ref()?;
    let bytes = std::fs::read(dist().join(format!("{file}.wasm"))).unwrap();
    let options = LoadOptions {
        name: row.name.into(),
        kind: Kind::FieldResolver,
        config: config(settings),
        timeout_ms: 1000,
        memory_mb: 64,
    };
    let resolver = WasmResolver::new(
        Arc::new(Plugin::load(runtime, &bytes, options).unwrap()),
        "tick",
    );
    let group = GroupInfo {
        field: "tick".into(),
        topic: "ticks:bench".into(),
        arguments: config(&json!({"topic": "bench"})),
        variables: Map::new(),
        operation_name: None,
        selected_paths: vec!["tick".into(), "tick.seq".into()],
        principal: Principal {
            subject: Some("u1".into()),
            tenant: Some("t1".into()),
            roles: vec!["tick:read".into()],
            claims: config(&json!({"federation_id": "f1"})),
            ..Principal::default()
        },
        init_payload: Map::new(),
    };
    // Once per group, as the engine does (nothing for a 0.3 component).
    let context = match resolver.prepare(&group) {
        Ok(context) => context,
        Err(e) => panic!("{} prepares: {e:?}", row.name),
    };
    let call = || {
        // A fresh text per event, as the engine renders one per event.
        let text = DataText::new(&event.data);
        let answer =
            resolver.resolve_shared(event, &event.data, Some(&text), &group, context.as_deref());
        std::hint::black_box(answer)
    };
    assert!(
        matches!(call(), Resolution::Json(_)),
        "{} resolves",
        row.name
    );
    let iters = if row.name == "python" { 500 } else { 5_000 };
    let call_time = time(11, iters, || {
        call();
    });

    let request = SubscribePayload {
        query: "subscription { tick(topic: \"bench\") { seq sentAt payload g0: topic } }".into(),
        operation_name: None,
        variables: Map::new(),
        extensions: Map::new(),
    };
    let schema = Schema::parse(SCHEMA).unwrap();
    let plan = prepare(&schema, &Limits::default(), &request).unwrap().plan;
    let text = DataText::new(&event.data);
    text.get();
    let without = || plan.execute_event(&event.data, &[]);
    let with = || match resolver.resolve_shared(
        event,
        &event.data,
        Some(&text),
        &group,
        context.as_deref(),
    ) {
        Resolution::Json(answer) => plan.execute_text(&answer, &[]),
        other => panic!("{}: {other:?}", row.name),
    };
    assert_eq!(
        serde_json::from_slice::<Value>(&with()).unwrap()["data"]["tick"]["seq"],
        42
    );
    let per_iter = |f: &dyn Fn() -> Vec<u8>| {
        let start = Instant::now();
        for _ in 0..iters / 10 {
            std::hint::black_box(f());
        }
        start.elapsed().as_secs_f64() / f64::from(iters / 10)
    };
    let added = (0..101)
        .map(|_| per_iter(&with) - per_iter(&without))
        .collect();
    Some(PerCall {
        call: call_time,
        added: median(added),
    })
}

fn main() {
    // `cargo test --all-targets` runs this binary without `--bench`: the
    // figures only mean something from an optimised `cargo bench` run.
    if !std::env::args().any(|a| a == "--bench") {
        println!("resolver benchmarks: run with `bash benches/resolvers.sh`");
        return;
    }
    let profile = std::env::var("RESOLVER_BENCH_PROFILE").ok();
    let runtime = runtime(profile.is_some());
    let event = tick();
    let rows = rows();

    if let Some(target) = profile {
        let (name, events) = target
            .split_once(':')
            .expect("RESOLVER_BENCH_PROFILE=<row>:<events>");
        let row = rows
            .iter()
            .find(|r| r.name == name)
            .unwrap_or_else(|| panic!("no row {name}"));
        let events: u32 = events.parse().expect("a number of events");
        let (engine, _keep) = engine(hooks(row, &runtime));
        publish_now(&engine, std::slice::from_ref(&event));
        let start = Instant::now();
        for _ in 0..events {
            std::hint::black_box(publish_now(&engine, std::slice::from_ref(&event)));
        }
        println!("{name}: {:?} per event", start.elapsed() / events);
        return;
    }

    let engines: Vec<_> = rows
        .iter()
        .map(|row| {
            let (engine, keep) = engine(hooks(row, &runtime));
            assert_eq!(
                publish_now(&engine, std::slice::from_ref(&event)).deliveries,
                1000,
                "{}: every subscription receives the event",
                row.name
            );
            (engine, keep)
        })
        .collect();
    // Rounds of every engine in turn: per round, each engine's time per
    // event over `EVENTS` events. On a shared machine a round's difference
    // swings by microseconds: the median needs many of them.
    let rounds: usize = std::env::var("RESOLVER_BENCH_ROUNDS")
        .ok()
        .and_then(|r| r.parse().ok())
        .unwrap_or(61);
    const EVENTS: u32 = 50;
    let mut per_event: Vec<Vec<f64>> = vec![Vec::new(); rows.len()];
    for _ in 0..rounds {
        for (i, (engine, _)) in engines.iter().enumerate() {
            let start = Instant::now();
            for _ in 0..EVENTS {
                std::hint::black_box(publish_now(engine, std::slice::from_ref(&event)));
            }
            per_event[i].push(start.elapsed().as_secs_f64() / f64::from(EVENTS));
        }
    }
    println!(
        "1 event -> 1,000 subscriptions in {GROUPS} groups, medians of {rounds} rounds of {EVENTS} events per engine:"
    );
    println!();
    println!("| resolver | per event | added per group per event | one `resolve`, 1 group | added per group, apart from the fan-out |");
    println!("|---|---|---|---|---|");
    for (i, row) in rows.iter().enumerate() {
        let added: Vec<f64> = per_event[i]
            .iter()
            .zip(&per_event[0])
            .map(|(with, without)| (with - without) / GROUPS as f64)
            .collect();
        let added = if i == 0 {
            "-".to_owned()
        } else {
            format!("{:+.2} us", us(median(added)))
        };
        let (call, apart) = match per_call(row, &runtime, &event) {
            Some(p) => (
                format!("{:.2} us", us(p.call.as_secs_f64())),
                format!("{:+.2} us", us(p.added)),
            ),
            None => ("-".to_owned(), "-".to_owned()),
        };
        println!(
            "| {} | {:.1} us | {added} | {call} | {apart} |",
            row.what,
            us(median(per_event[i].clone()))
        );
    }
}
