//! Component resolvers (`[[resolvers]]`, the `field-resolver` world)
//! behind a real engine: what the guest receives, `prepare` once per group
//! and its context in every `resolve`, results in event order per group,
//! each failure (trap, deadline, memory cap, text that is not JSON, the
//! guest's own error, in `resolve` or `prepare`) confined to its group and
//! counted, a failed `prepare` asked again, a filter's redaction seen by
//! the resolver, start-time refusals, and a reload that switches versions
//! between two events and prepares the groups again. The component is
//! `plugins/testing/resolver` (0.4), whose mode the field's `mode` argument
//! chooses; `plugins/testing/resolver-0-3`, the same built against 0.3
//! (the whole call with each event, no `prepare`), must keep working.

mod common;

use std::collections::VecDeque;
use std::path::Path;
use std::sync::Arc;

use common::*;
use fanwire_core::hooks::{DataText, GroupInfo, Hooks, Resolution, Resolver};
use fanwire_core::outbox::Frame;
use fanwire_core::protocol::{assemble_next, Protocol};
use fanwire_core::testing::publish_now;
use fanwire_core::{Connection, Engine, Event, Limits, Schema};
use fanwire_plugins::resolver::WasmResolver;
use fanwire_plugins::{Kind, LoadError, PluginHost, ResolverSpec, Version};
use serde_json::{json, Map, Value};

const SCHEMA: &str = r#"
type Query { ok: Boolean }
type Tick { seq: Int, payload: String, by: String, prepared: String }
type Subscription {
  tick(topic: String!, mode: String, code: String): Tick @topic(name: "{topic}")
  tock(topic: String!): Tick @topic(name: "{topic}")
}
"#;

/// The `resolver` test component bound to `field`, from `folder`.
fn resolver_spec(
    folder: &Path,
    field: &str,
    tweak: impl FnOnce(&mut ResolverSpec),
) -> ResolverSpec {
    let mut spec = ResolverSpec {
        field: field.to_owned(),
        path: folder.join("resolver.wasm"),
        name: None,
        timeout_ms: None,
        memory_mb: None,
        config: Map::new(),
    };
    tweak(&mut spec);
    spec
}

/// A folder holding a copy of the resolver component.
fn folder() -> TempDir {
    let dir = temp_dir("resolvers");
    std::fs::write(dir.join("resolver.wasm"), wasm("resolver")).unwrap();
    dir
}

/// An engine whose hooks come from `host`; connections' principals come
/// from their init payloads.
fn engine(host: &PluginHost) -> Arc<Engine> {
    let hooks = host.hooks(Hooks {
        connection: Arc::new(FromPayload),
        ..Hooks::default()
    });
    Engine::with_hooks(Schema::parse(SCHEMA).unwrap(), Limits::default(), hooks).unwrap()
}

/// A connection as `init` (a principal) with one subscription `s`.
fn subscribe(engine: &Arc<Engine>, init: Value, query: &str) -> Connection {
    let mut c = engine.connect(Protocol::TransportWs);
    c.on_text(&json!({"type": "connection_init", "payload": init}).to_string());
    let sub = json!({"id": "s", "type": "subscribe", "payload": {"query": query}});
    c.on_text(&sub.to_string());
    c
}

/// The `next` payloads in the outbox (acks dropped; anything else fails).
fn payloads(conn: &Connection) -> Vec<Value> {
    let mut out = VecDeque::new();
    conn.outbox().drain_into(&mut out);
    out.iter()
        .filter_map(|f| match f {
            Frame::Next {
                prefix, payload, ..
            } => {
                let frame: Value = serde_json::from_slice(&assemble_next(prefix, payload)).unwrap();
                Some(frame["payload"].clone())
            }
            Frame::Text(t) if t.contains("connection_ack") => None,
            other => panic!("unexpected frame {other:?}"),
        })
        .collect()
}

fn tick(topic: &str, seq: u64, payload: &str) -> Event {
    Event::new(topic, json!({"seq": seq, "payload": payload}))
}

#[test]
fn the_guest_receives_the_event_arguments_variables_and_principal_in_0_4_and_0_3() {
    let dir = folder();
    std::fs::write(dir.join("resolver-0-3.wasm"), wasm("resolver-0-3")).unwrap();
    let host = PluginHost::with_runtime(
        runtime(),
        &[],
        &[
            resolver_spec(&dir, "tick", |_| {}),
            resolver_spec(&dir, "tock", |s| {
                s.path = dir.join("resolver-0-3.wasm");
                s.name = Some("resolver-0-3".into());
                s.config.insert("mode".into(), json!("call"));
            }),
        ],
        None,
        &dir,
        &dir,
    )
    .unwrap();
    let group_of = |field: &str| -> GroupInfo {
        group(
            field,
            "t",
            json!({"topic": "t", "mode": "call"}),
            json!({"m": "call", "n": [1, 2]}),
            &["tick.seq"],
            principal(
                Some("alice"),
                Some("acme"),
                &["r1", "r2"],
                json!({"k": "v"}),
            ),
        )
    };
    let event = Event {
        topic: "t".into(),
        data: json!({"seq": 7, "payload": "p\"q"}),
        id: Some("e-7".into()),
        seq: Some(7),
    };
    for (name, field, version) in [
        ("resolver", "tick", Version::V0_4),
        ("resolver-0-3", "tock", Version::V0_3),
    ] {
        let plugin = host.plugin(name).unwrap();
        assert_eq!(plugin.version(), version);
        assert_eq!(plugin.kind(), Kind::FieldResolver);
        let resolver = WasmResolver::new(plugin, field);
        let group = group_of(field);
        // 0.4 keeps what `prepare` read as the group's context; 0.3 keeps
        // nothing and is sent the whole call with each event.
        let context = resolver.prepare(&group).unwrap();
        assert_eq!(context.is_some(), version == Version::V0_4, "{name}");
        let text = DataText::new(&event.data);
        let Resolution::Json(value) =
            resolver.resolve_shared(&event, &event.data, Some(&text), &group, context.as_deref())
        else {
            panic!("{name}: a component resolver answers at once, with JSON text");
        };
        let value = value.to_value().unwrap();
        assert_eq!(
            value,
            json!({
                "field": field,
                "arguments": {"topic": "t", "mode": "call"},
                "variables": {"m": "call", "n": [1, 2]},
                "principal": {"subject": "alice", "tenant": "acme", "roles": ["r1", "r2"], "claims": {"k": "v"}},
                "event": {"topic": "t", "id": "e-7", "seq": 7, "data": {"seq": 7, "payload": "p\"q"}},
            }),
            "{name}"
        );
        // `resolve` alone (a caller that skips `resolve_shared`) prepares
        // for itself.
        let Resolution::Json(alone) = resolver.resolve(&event, &event.data, &group) else {
            panic!("{name}: resolve answers");
        };
        let alone = alone.to_value().unwrap();
        assert_eq!(alone, value, "{name}");
    }
    let m = host.metrics();
    assert_eq!(m.count("calls", "resolver", "prepare"), 2);
    assert_eq!(m.count("decisions", "resolver", "prepared"), 2);
    assert_eq!(m.count("calls", "resolver-0-3", "prepare"), 0);
}

#[test]
fn each_group_gets_its_value_in_event_order() {
    let dir = folder();
    let host = PluginHost::with_runtime(
        runtime(),
        &[],
        &[resolver_spec(&dir, "tick", |s| {
            s.config.insert("field".into(), json!("payload"));
        })],
        None,
        &dir,
        &dir,
    )
    .unwrap();
    let engine = engine(&host);
    let echo = subscribe(
        &engine,
        json!({}),
        r#"subscription { tick(topic: "t") { seq by } }"#,
    );
    let upper = subscribe(
        &engine,
        json!({}),
        r#"subscription { tick(topic: "t", mode: "upper") { payload seq } }"#,
    );
    // A field with no resolver is the event's data, as before.
    let plain = subscribe(
        &engine,
        json!({}),
        r#"subscription { tock(topic: "t") { seq by } }"#,
    );
    for seq in 0..50 {
        publish_now(&engine, &[tick("t", seq, &format!("p{seq}"))]);
    }
    let want = |f: &dyn Fn(u64) -> Value| (0..50).map(f).collect::<Vec<_>>();
    let data = |c: &Connection, field: &str| -> Vec<Value> {
        payloads(c)
            .into_iter()
            .map(|p| {
                assert!(p.get("errors").is_none(), "{p}");
                p["data"][field].clone()
            })
            .collect()
    };
    assert_eq!(
        data(&echo, "tick"),
        want(&|s| json!({"seq": s, "by": "00000000"}))
    );
    assert_eq!(
        data(&upper, "tick"),
        want(&|s| json!({"payload": format!("P{s}"), "seq": s}))
    );
    assert_eq!(
        data(&plain, "tock"),
        want(&|s| json!({"seq": s, "by": null}))
    );
    let m = host.metrics();
    assert_eq!(m.count("calls", "resolver", "resolve"), 100);
    assert_eq!(m.count("decisions", "resolver", "value"), 100);
    // Once per group, never per event.
    assert_eq!(m.count("calls", "resolver", "prepare"), 2);
    assert_eq!(m.count("decisions", "resolver", "prepared"), 2);
}

#[test]
fn each_failure_reaches_only_its_own_group_with_its_error_and_is_counted() {
    let dir = folder();
    let host = PluginHost::with_runtime(
        runtime(),
        &[],
        &[resolver_spec(&dir, "tick", |s| {
            // The spin mode runs into the deadline; the hog mode must meet
            // the memory cap first (16 MiB fills in far less than 2 s).
            s.timeout_ms = Some(2_000);
            s.memory_mb = Some(16);
        })],
        None,
        &dir,
        &dir,
    )
    .unwrap();
    let engine = engine(&host);
    let query = |args: &str| format!(r#"subscription {{ tick(topic: "t"{args}) {{ seq by }} }}"#);
    let ok = subscribe(&engine, json!({}), &query(""));
    let failing: Vec<(&str, Connection)> = [
        ("trap", r#", mode: "trap""#),
        ("spin", r#", mode: "spin""#),
        ("hog", r#", mode: "hog""#),
        ("not-json", r#", mode: "not-json""#),
        ("error", r#", mode: "error", code: "TEAPOT""#),
        ("error without a code", r#", mode: "error""#),
    ]
    .into_iter()
    .map(|(what, args)| (what, subscribe(&engine, json!({}), &query(args))))
    .collect();
    // (code, reason, message) of each group's error.
    let expected = [
        (
            "RESOLVER_FAILED",
            json!("trap"),
            "resolver resolver of `tick` failed (trap)",
        ),
        (
            "RESOLVER_FAILED",
            json!("timeout"),
            "failed (timeout: it ran past its deadline of 2000 ms)",
        ),
        (
            "RESOLVER_FAILED",
            json!("memory"),
            "failed (memory: it reached its cap of 16 MiB)",
        ),
        (
            "RESOLVER_FAILED",
            json!("not_json"),
            "returned text that is not JSON",
        ),
        // The guest's own errors: its code (or the default), no reason.
        ("TEAPOT", Value::Null, "refused by the resolver"),
        ("RESOLVER_FAILED", Value::Null, "refused by the resolver"),
    ];
    for seq in 0..2 {
        publish_now(&engine, &[tick("t", seq, "p")]);
        assert_eq!(
            payloads(&ok)
                .into_iter()
                .map(|p| p["data"].clone())
                .collect::<Vec<_>>(),
            [json!({"tick": {"seq": seq, "by": "00000000"}})],
            "the working group gets event {seq}"
        );
        for ((what, conn), (code, reason, message)) in failing.iter().zip(&expected) {
            let got = payloads(conn);
            assert_eq!(got.len(), 1, "{what}: {got:?}");
            assert_eq!(got[0]["data"], json!({"tick": null}), "{what}");
            let error = &got[0]["errors"][0];
            assert_eq!(error["path"], json!(["tick"]), "{what}: {error}");
            assert_eq!(error["extensions"]["code"], *code, "{what}: {error}");
            assert_eq!(error["extensions"]["reason"], *reason, "{what}: {error}");
            let text = error["message"].as_str().unwrap();
            assert!(text.contains(message), "{what}: {text}");
        }
    }
    let m = host.metrics();
    let count = |metric: &str, kind: &'static str| m.count(metric, "resolver", kind);
    for fault in ["trap", "timeout", "memory"] {
        assert_eq!(count("faults", fault), 2, "{fault}");
    }
    assert_eq!(count("decisions", "value"), 2);
    assert_eq!(count("decisions", "failed"), 6);
    assert_eq!(count("decisions", "not_json"), 2);
    assert_eq!(count("decisions", "error"), 4);
    assert_eq!(count("calls", "resolve"), 14);
    // A fault in `resolve` recycles the instance, not the group's context.
    assert_eq!(count("calls", "prepare"), 7);
}

#[test]
fn a_failed_prepare_is_each_events_field_error_until_one_succeeds() {
    let dir = folder();
    let host = PluginHost::with_runtime(
        runtime(),
        &[],
        &[resolver_spec(&dir, "tick", |_| {})],
        None,
        &dir,
        &dir,
    )
    .unwrap();
    let engine = engine(&host);
    let query =
        |args: &str| format!(r#"subscription {{ tick(topic: "t"{args}) {{ seq by prepared }} }}"#);
    let ok = subscribe(&engine, json!({}), &query(""));
    let refused = subscribe(
        &engine,
        json!({}),
        &query(r#", mode: "prepare-error", code: "TEAPOT""#),
    );
    let trapped = subscribe(&engine, json!({}), &query(r#", mode: "prepare-trap""#));
    for seq in 0..3 {
        publish_now(&engine, &[tick("t", seq, "p")]);
        assert_eq!(
            payloads(&ok)[0]["data"]["tick"],
            json!({"seq": seq, "by": "00000000", "prepared": "00000000"})
        );
        for (conn, code, reason, message) in [
            (&refused, "TEAPOT", Value::Null, "prepare refused"),
            (
                &trapped,
                "RESOLVER_FAILED",
                json!("trap"),
                "resolver resolver of `tick` failed in prepare (trap)",
            ),
        ] {
            let got = payloads(conn);
            assert_eq!(got.len(), 1, "the subscription goes on: {got:?}");
            assert_eq!(got[0]["data"], json!({"tick": null}));
            let error = &got[0]["errors"][0];
            assert_eq!(error["path"], json!(["tick"]), "{error}");
            assert_eq!(error["extensions"]["code"], code, "{error}");
            assert_eq!(error["extensions"]["reason"], reason, "{error}");
            assert_eq!(error["message"], message, "{error}");
        }
    }
    let m = host.metrics();
    let count = |metric: &str, kind: &'static str| m.count(metric, "resolver", kind);
    // The working group once; each failing one at each of its events.
    assert_eq!(count("calls", "prepare"), 1 + 3 + 3);
    assert_eq!(count("decisions", "prepared"), 1);
    assert_eq!(count("decisions", "error"), 3);
    assert_eq!(count("decisions", "failed"), 3);
    assert_eq!(count("faults", "trap"), 3);
    assert_eq!(count("calls", "resolve"), 3, "no resolve without a context");
}

#[test]
fn a_prepare_that_failed_once_is_asked_again_and_the_group_resolves_from_then_on() {
    let dir = folder();
    let host = PluginHost::with_runtime(
        runtime(),
        &[],
        &[resolver_spec(&dir, "tick", |s| {
            s.config.insert("mode".into(), json!("prepare-flaky"));
        })],
        None,
        &dir,
        &dir,
    )
    .unwrap();
    let engine = engine(&host);
    let flaky = subscribe(
        &engine,
        json!({}),
        r#"subscription { tick(topic: "t") { seq by prepared } }"#,
    );
    for seq in 0..3 {
        publish_now(&engine, &[tick("t", seq, "p")]);
    }
    let got = payloads(&flaky);
    assert_eq!(got[0]["data"], json!({"tick": null}));
    assert_eq!(got[0]["errors"][0]["extensions"]["code"], "NOT_READY");
    assert_eq!(got[0]["errors"][0]["message"], "not ready yet");
    for (seq, payload) in got.iter().enumerate().skip(1) {
        assert_eq!(
            payload["data"]["tick"],
            json!({"seq": seq, "by": "00000000", "prepared": "00000000"})
        );
    }
    assert_eq!(got.len(), 3);
    assert_eq!(host.metrics().count("calls", "resolver", "prepare"), 2);
}

#[test]
fn the_resolver_sees_the_data_after_a_filters_redaction() {
    let dir = folder();
    std::fs::write(dir.join("redact-fields.wasm"), wasm("redact-fields")).unwrap();
    let mut redact = spec(
        "redact-fields",
        Kind::EventFilter,
        json!({"fields": {"payload": "secret:read"}}),
    );
    redact.path = dir.join("redact-fields.wasm");
    let host = PluginHost::with_runtime(
        runtime(),
        &[redact],
        &[resolver_spec(&dir, "tick", |_| {})],
        None,
        &dir,
        &dir,
    )
    .unwrap();
    let engine = engine(&host);
    let query = r#"subscription { tick(topic: "t") { payload by } }"#;
    let reader = subscribe(
        &engine,
        json!({"subject": "r", "roles": ["secret:read"]}),
        query,
    );
    let other = subscribe(&engine, json!({"subject": "o"}), query);
    publish_now(&engine, &[tick("t", 1, "hidden")]);
    assert_eq!(
        payloads(&reader)[0]["data"]["tick"],
        json!({"payload": "hidden", "by": "00000000"})
    );
    assert_eq!(
        payloads(&other)[0]["data"]["tick"],
        json!({"payload": null, "by": "00000000"})
    );
}

#[test]
fn bindings_that_cannot_work_are_refused_before_anything_runs() {
    let dir = folder();
    std::fs::write(dir.join("row-filter.wasm"), wasm("row-filter")).unwrap();
    let refused = |plugins: &[fanwire_plugins::PluginSpec], resolvers: &[ResolverSpec]| {
        PluginHost::with_runtime(runtime(), plugins, resolvers, None, &dir, &dir)
            .unwrap_err()
            .to_string()
    };
    // A component that does not export the resolver world.
    let err = refused(
        &[],
        &[resolver_spec(&dir, "tick", |s| {
            s.path = dir.join("row-filter.wasm")
        })],
    );
    assert!(
        err.contains("resolver row-filter")
            && err.contains("wrong world: the config says field-resolver")
            && err.contains("fanwire:plugin/filter@"),
        "{err}"
    );
    // Two resolvers for one field.
    let err = refused(
        &[],
        &[
            resolver_spec(&dir, "tick", |_| {}),
            resolver_spec(&dir, "tick", |s| s.name = Some("other".into())),
        ],
    );
    assert!(err.contains("two resolvers for the field `tick`"), "{err}");
    // One name for two entries.
    let err = refused(
        &[],
        &[
            resolver_spec(&dir, "tick", |_| {}),
            resolver_spec(&dir, "tock", |_| {}),
        ],
    );
    assert!(err.contains("give this one a `name`"), "{err}");
    // A field resolver among [[plugins]], which have no field to bind.
    let mut misplaced = spec("resolver", Kind::FieldResolver, json!({}));
    misplaced.path = dir.join("resolver.wasm");
    let err = refused(&[misplaced], &[]);
    assert!(err.contains("[[resolvers]]"), "{err}");
    // A field the schema does not have (the host checks this against the
    // schema before loading).
    let schema = Schema::parse(SCHEMA).unwrap();
    let err =
        ResolverSpec::check_fields(&[resolver_spec(&dir, "tack", |_| {})], &schema).unwrap_err();
    assert!(matches!(err, LoadError::Config(_)));
    assert!(
        err.to_string().contains(
            "the schema's Subscription type has no field `tack` (its fields: tick, tock)"
        ),
        "{err}"
    );
}

/// The resolver component's bytes with its version marker set to `version`.
fn resolver_version(version: u32) -> Vec<u8> {
    let base = wasm("resolver");
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

#[test]
fn a_reload_switches_versions_between_two_events_and_a_bad_one_keeps_the_old() {
    let dir = folder();
    let host = PluginHost::with_runtime(
        runtime(),
        &[],
        &[resolver_spec(&dir, "tick", |s| {
            s.name = Some("ticker".into())
        })],
        None,
        &dir,
        &dir,
    )
    .unwrap();
    let engine = engine(&host);
    let conn = subscribe(
        &engine,
        json!({}),
        r#"subscription { tick(topic: "t") { seq by prepared } }"#,
    );
    let target = dir.join("resolver.wasm");
    let mut expected = Vec::new();
    let mut seq = 0;
    // Each version resolves with the context its own `prepare` made: the
    // group is prepared again when a new version goes live.
    let mut publish = |by: &str, expected: &mut Vec<Value>| {
        publish_now(&engine, &[tick("t", seq, "p")]);
        expected.push(json!({"seq": seq, "by": by, "prepared": by}));
        seq += 1;
    };
    publish("00000000", &mut expected);
    std::fs::write(&target, resolver_version(1)).unwrap();
    let report = host.reload(&engine, true);
    assert_eq!(report.reloaded, ["ticker"], "{report:?}");
    publish("00000001", &mut expected);
    // Not a resolver: refused, the previous version keeps resolving.
    std::fs::write(&target, wasm("row-filter")).unwrap();
    let report = host.reload(&engine, true);
    assert!(report.reloaded.is_empty(), "{report:?}");
    assert!(report.rejected[0].1.contains("wrong world"), "{report:?}");
    publish("00000001", &mut expected);
    std::fs::write(&target, resolver_version(2)).unwrap();
    assert_eq!(host.reload(&engine, true).reloaded, ["ticker"]);
    publish("00000002", &mut expected);
    let got: Vec<Value> = payloads(&conn)
        .into_iter()
        .map(|p| p["data"]["tick"].clone())
        .collect();
    assert_eq!(got, expected);
    assert_eq!(host.resolved_fields(), ["tick"]);
    let m = host.metrics();
    assert_eq!(m.count("reloads", "ticker", "loaded"), 3);
    assert_eq!(m.count("reloads", "ticker", "rejected"), 1);
    // Once per version in force; the refused reload changed nothing.
    assert_eq!(m.count("calls", "ticker", "prepare"), 3);
}

#[test]
fn a_0_3_resolver_file_reloaded_to_0_4_and_back_keeps_resolving() {
    let dir = temp_dir("resolver-versions");
    let target = dir.join("resolver.wasm");
    std::fs::write(&target, wasm("resolver-0-3")).unwrap();
    let host = PluginHost::with_runtime(
        runtime(),
        &[],
        &[resolver_spec(&dir, "tick", |s| {
            s.name = Some("ticker".into());
            s.config.insert("mode".into(), json!("upper"));
        })],
        None,
        &dir,
        &dir,
    )
    .unwrap();
    let engine = engine(&host);
    let conn = subscribe(
        &engine,
        json!({}),
        r#"subscription { tick(topic: "t") { seq payload prepared } }"#,
    );
    let mut seq = 0;
    for (plugin, version, prepared) in [
        ("resolver-0-3", Version::V0_3, Value::Null),
        ("resolver", Version::V0_4, json!("00000000")),
        ("resolver-0-3", Version::V0_3, Value::Null),
    ] {
        if seq > 0 {
            std::fs::write(&target, wasm(plugin)).unwrap();
            assert_eq!(host.reload(&engine, true).reloaded, ["ticker"]);
        }
        assert_eq!(host.plugin("ticker").map(|p| p.version()), Some(version));
        for _ in 0..2 {
            publish_now(&engine, &[tick("t", seq, &format!("p{seq}"))]);
            let got = payloads(&conn);
            assert_eq!(
                got[0]["data"]["tick"],
                json!({"seq": seq, "payload": format!("P{seq}"), "prepared": prepared}),
                "{plugin}"
            );
            seq += 1;
        }
    }
    assert_eq!(host.metrics().count("calls", "ticker", "prepare"), 1);
}
