//! Plugin load time with a cold and a warm compile cache, for the Python
//! filter and the Python resolver of `examples/resolver-component` (19 MB
//! componentize-py components) and a Rust filter: what a start or a reload
//! costs the first time and every time after. A load is
//! `Plugin::load`: compile or read the cache, check, pre-link, create the
//! first instance. Run with `bash benches/plugins.sh` (builds the plugins
//! first); prints a table of medians, asserts nothing.

#[path = "../tests/common/mod.rs"]
mod common;

use std::time::{Duration, Instant};

use common::{temp_dir, wasm};
use fanwire_plugins::{
    CacheResult, Kind, LoadOptions, Plugin, PluginMetrics, Runtime, RuntimeConfig,
};
use serde_json::Map;

fn options(name: &str, kind: Kind) -> LoadOptions {
    LoadOptions {
        name: name.into(),
        kind,
        config: Map::new(),
        timeout_ms: 1000,
        memory_mb: 64,
    }
}

fn median(mut samples: Vec<Duration>) -> Duration {
    samples.sort();
    samples[samples.len() / 2]
}

fn ms(d: Duration) -> String {
    format!("{:.1} ms", d.as_secs_f64() * 1e3)
}

fn main() {
    if !std::env::args().any(|a| a == "--bench") {
        println!("compile cache benchmarks: run with `bash benches/plugins.sh`");
        return;
    }
    let dir = temp_dir("cache-bench");
    let cached = Runtime::new(
        RuntimeConfig {
            cache_dir: Some(dir.to_path_buf()),
            ..RuntimeConfig::default()
        },
        PluginMetrics::new(),
    )
    .unwrap();
    println!("| plugin | runs | cold cache (compile + write) | warm cache | entry size |");
    println!("|---|---|---|---|---|");
    // (name, world, cold runs, warm runs): a Python component compiles for
    // seconds.
    for (name, kind, cold_runs, warm_runs) in [
        ("python-filter", Kind::EventFilter, 3, 7),
        ("resolver-component", Kind::FieldResolver, 3, 7),
        ("row-filter", Kind::EventFilter, 7, 15),
    ] {
        let bytes = wasm(name);
        let load = || Plugin::load(&cached, &bytes, options(name, kind)).unwrap();
        let cold = median(
            (0..cold_runs)
                .map(|_| {
                    std::fs::remove_dir_all(&dir).unwrap_or(());
                    let start = Instant::now();
                    load();
                    start.elapsed()
                })
                .collect(),
        );
        let warm = median(
            (0..warm_runs)
                .map(|_| {
                    let start = Instant::now();
                    load();
                    start.elapsed()
                })
                .collect(),
        );
        let metrics = cached.metrics();
        assert_eq!(metrics.cache_count(name, CacheResult::Miss), cold_runs);
        assert_eq!(metrics.cache_count(name, CacheResult::Hit), warm_runs);
        let size: u64 = std::fs::read_dir(&dir)
            .unwrap()
            .map(|e| e.unwrap().metadata().unwrap().len())
            .sum();
        println!(
            "| {name} ({:.1} MB component) | {cold_runs} / {warm_runs} | {} | {} | {:.1} MB |",
            bytes.len() as f64 / 1e6,
            ms(cold),
            ms(warm),
            size as f64 / 1e6
        );
    }
}
