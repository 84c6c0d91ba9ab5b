//! Shared helpers: the bundled plugins (built by `bash plugins/build.sh`),
//! a runtime, groups and events.
#![allow(dead_code)]

use std::path::PathBuf;
use std::sync::Arc;
use std::time::{Duration, Instant};

use fanwire_core::hooks::{
    Accepted, Asked, ConnectionPolicy, ConnectionRequest, Decision, EventFilter, GroupInfo, Verdict,
};
use fanwire_core::{Event, Principal};
use fanwire_plugins::{
    Kind, LoadOptions, Plugin, PluginMetrics, PluginSpec, Runtime, RuntimeConfig,
};
use serde_json::{Map, Value};

/// The folder the plugin build writes the `.wasm` files to.
pub fn dist() -> PathBuf {
    let dir = std::env::var_os("FANWIRE_PLUGIN_DIST")
        .map(PathBuf::from)
        .unwrap_or_else(|| PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../../plugins/dist"));
    assert!(
        dir.join("row-filter.wasm").is_file(),
        "no plugins in {}: build them with `bash plugins/build.sh` (tests/run.sh does)",
        dir.display()
    );
    dir
}

/// The bytes of a bundled plugin.
pub fn wasm(name: &str) -> Vec<u8> {
    let path = dist().join(format!("{name}.wasm"));
    std::fs::read(&path).unwrap_or_else(|e| panic!("{}: {e}", path.display()))
}

/// A runtime with test-friendly limits.
pub fn runtime() -> Runtime {
    Runtime::new(
        RuntimeConfig {
            pool_instances: 64,
            // The server tests check deadlines; here a busy machine must not trip them.
            call_timeout_ms: 10_000,
            // Never the user's cache folder; tests/cache.rs covers the cache.
            cache: false,
            ..RuntimeConfig::default()
        },
        PluginMetrics::new(),
    )
    .unwrap()
}

/// A folder removed (with what is in it) when dropped.
#[derive(Debug)]
pub struct TempDir(PathBuf);

impl std::ops::Deref for TempDir {
    type Target = std::path::Path;

    fn deref(&self) -> &std::path::Path {
        &self.0
    }
}

impl AsRef<std::path::Path> for TempDir {
    fn as_ref(&self) -> &std::path::Path {
        &self.0
    }
}

impl Drop for TempDir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

/// A fresh, empty folder under the system's temporary one.
pub fn temp_dir(what: &str) -> TempDir {
    use std::sync::atomic::{AtomicU64, Ordering};
    static N: AtomicU64 = AtomicU64::new(0);
    let dir = std::env::temp_dir().join(format!(
        "fanwire-{what}-{}-{}",
        std::process::id(),
        N.fetch_add(1, Ordering::Relaxed)
    ));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).unwrap();
    TempDir(dir)
}

/// A spec for a bundled plugin with a JSON config.
pub fn spec(name: &str, kind: Kind, config: Value) -> PluginSpec {
    PluginSpec {
        name: Some(name.to_owned()),
        path: PathBuf::from(format!("{name}.wasm")),
        kind,
        order: 0,
        fields: Vec::new(),
        topics: Vec::new(),
        timeout_ms: None,
        memory_mb: None,
        config: match config {
            Value::Object(map) => map,
            _ => Map::new(),
        },
    }
}

/// Loads a bundled plugin.
pub fn load(runtime: &Runtime, spec: &PluginSpec) -> Arc<Plugin> {
    let bytes = std::fs::read(dist().join(&spec.path)).unwrap();
    Arc::new(
        Plugin::load(
            runtime,
            &bytes,
            LoadOptions {
                name: spec.name(),
                kind: spec.kind,
                config: spec.config.clone(),
                timeout_ms: spec.timeout_ms.unwrap_or(runtime.config().call_timeout_ms),
                memory_mb: spec.memory_mb.unwrap_or(runtime.config().memory_mb),
            },
        )
        .unwrap_or_else(|e| panic!("{}: {e}", spec.name())),
    )
}

/// A principal.
pub fn principal(
    subject: Option<&str>,
    tenant: Option<&str>,
    roles: &[&str],
    claims: Value,
) -> Principal {
    Principal {
        subject: subject.map(str::to_owned),
        tenant: tenant.map(str::to_owned),
        roles: roles.iter().map(|r| (*r).to_owned()).collect(),
        claims: match claims {
            Value::Object(m) => m,
            _ => Map::new(),
        },
        expires_at: None,
    }
}

/// A group of `field` on `topic` with arguments and variables.
pub fn group(
    field: &str,
    topic: &str,
    arguments: Value,
    variables: Value,
    paths: &[&str],
    principal: Principal,
) -> GroupInfo {
    let obj = |v: Value| match v {
        Value::Object(m) => m,
        _ => Map::new(),
    };
    GroupInfo {
        field: field.to_owned(),
        topic: topic.to_owned(),
        arguments: obj(arguments),
        variables: obj(variables),
        operation_name: None,
        selected_paths: paths.iter().map(|p| (*p).to_owned()).collect(),
        principal,
        init_payload: Map::new(),
    }
}

/// `f.decide` for `groups`, each with the context its `prepare` gives (every
/// group must be decided per event), as the engine calls it.
pub fn decide(f: &dyn EventFilter, event: &Event, groups: &[&GroupInfo]) -> Vec<Decision> {
    let verdicts: Vec<Verdict> = groups.iter().map(|g| f.prepare(g)).collect();
    let asked: Vec<Asked<'_>> = groups
        .iter()
        .zip(&verdicts)
        .map(|(group, verdict)| match verdict {
            Verdict::PerEvent(context) => Asked {
                group,
                context: context.as_deref(),
            },
            other => panic!("{} answers {other:?}, not per-event", f.name()),
        })
        .collect();
    f.decide(event, &asked)
}

/// Accepts every connection as the principal its init payload describes.
#[derive(Debug)]
pub struct FromPayload;

impl ConnectionPolicy for FromPayload {
    fn check(&self, r: &ConnectionRequest<'_>) -> Result<Accepted, String> {
        let principal: Principal = serde_json::from_value(Value::Object(r.init_payload.clone()))
            .map_err(|e| e.to_string())?;
        Ok(Accepted {
            principal,
            ack: None,
        })
    }
}

/// The benches' timer: the median of `runs` timings of `f`, each over
/// `iters` iterations, per iteration.
pub fn time(runs: usize, iters: u32, mut f: impl FnMut()) -> Duration {
    let mut samples: Vec<Duration> = (0..runs)
        .map(|_| {
            let start = Instant::now();
            for _ in 0..iters {
                f();
            }
            start.elapsed() / iters
        })
        .collect();
    samples.sort();
    samples[runs / 2]
}
