//! The compile cache with the real `.wasm` files: the first load compiles
//! and writes an entry, the next one loads it; a deleted entry is compiled
//! again; a truncated, bit-flipped or foreign entry, or one naming another
//! wasmtime or other engine settings, is refused (never loaded), compiled
//! again and rewritten; an unwritable folder still loads the plugin. What
//! happened is read from `fanwire_plugin_cache_total`, never from timings.
//! Every test has a folder of its own under the system's temporary one.

mod common;

use std::path::{Path, PathBuf};
use std::sync::Arc;

use common::*;
use fanwire_core::hooks::Decision;
use fanwire_core::Event;
use fanwire_plugins::cache::HEADER_LEN;
use fanwire_plugins::filter::WasmFilter;
use fanwire_plugins::{CacheResult, Kind, Plugin, PluginMetrics, Runtime, RuntimeConfig};
use serde_json::json;

fn config(dir: &Path) -> RuntimeConfig {
    RuntimeConfig {
        pool_instances: 16,
        call_timeout_ms: 10_000,
        cache_dir: Some(dir.to_owned()),
        ..RuntimeConfig::default()
    }
}

fn cached_runtime(dir: &Path) -> Runtime {
    Runtime::new(config(dir), PluginMetrics::new()).unwrap()
}

/// `[hit, miss, corrupt, write_error]` for `plugin`.
fn counts(runtime: &Runtime, plugin: &str) -> [u64; 4] {
    [
        CacheResult::Hit,
        CacheResult::Miss,
        CacheResult::Corrupt,
        CacheResult::WriteError,
    ]
    .map(|r| runtime.metrics().cache_count(plugin, r))
}

/// The entries in `dir`; there is no temporary file left beside them.
fn entries(dir: &Path) -> Vec<PathBuf> {
    let mut found = Vec::new();
    for file in std::fs::read_dir(dir).unwrap() {
        let path = file.unwrap().path();
        assert_eq!(
            path.extension().and_then(|e| e.to_str()),
            Some("cwasm"),
            "only entries in the cache folder: {}",
            path.display()
        );
        found.push(path);
    }
    found.sort();
    found
}

/// The single entry in `dir`.
fn entry(dir: &Path) -> PathBuf {
    let all = entries(dir);
    assert_eq!(all.len(), 1, "one entry: {all:?}");
    all.into_iter().next().unwrap()
}

fn load_template(runtime: &Runtime) -> Arc<Plugin> {
    load(runtime, &spec("template", Kind::EventFilter, json!({})))
}

/// The template's own behaviour (drafts denied, the rest allowed): the code
/// that runs is the template's.
fn assert_is_the_template(plugin: Arc<Plugin>) {
    let f = WasmFilter::new(plugin, spec("template", Kind::EventFilter, json!({})));
    let g = group(
        "posts",
        "posts",
        json!({}),
        json!({}),
        &[],
        principal(None, None, &[], json!({})),
    );
    let d = decide(&f, &Event::new("posts", json!({"status": "draft"})), &[&g]);
    assert!(matches!(d[0], Decision::Deny(_)), "{d:?}");
    let d = decide(&f, &Event::new("posts", json!({"status": "live"})), &[&g]);
    assert_eq!(d, vec![Decision::Allow]);
}

/// Rewrites the entry in `dir` with `edit`, loads the template again and
/// checks the entry was refused (not loaded), the template runs, and the
/// entry was rewritten: the load after that is a hit.
fn assert_refused_and_rewritten(dir: &Path, edit: impl FnOnce(&mut Vec<u8>)) {
    let runtime = cached_runtime(dir);
    assert_is_the_template(load_template(&runtime));
    assert_eq!(counts(&runtime, "template"), [0, 1, 0, 0]);
    let path = entry(dir);
    let good = std::fs::read(&path).unwrap();
    let mut bad = good.clone();
    edit(&mut bad);
    assert_ne!(bad, good);
    std::fs::write(&path, &bad).unwrap();

    assert_is_the_template(load_template(&runtime));
    assert_eq!(
        counts(&runtime, "template"),
        [0, 1, 1, 0],
        "the altered entry is refused and the component compiled again"
    );
    assert_eq!(std::fs::read(entry(dir)).unwrap(), good, "entry rewritten");
    assert_is_the_template(load_template(&runtime));
    assert_eq!(counts(&runtime, "template"), [1, 1, 1, 0]);
}

#[test]
fn the_python_filter_compiles_once_then_loads_from_the_cache() {
    let dir = temp_dir("cache-python");
    let spec = spec(
        "python-filter",
        Kind::EventFilter,
        json!({"min_severity": 2}),
    );
    let first = cached_runtime(&dir);
    load(&first, &spec);
    assert_eq!(counts(&first, "python-filter"), [0, 1, 0, 0]);
    let path = entry(&dir);
    let header = std::fs::read(&path).unwrap()[..HEADER_LEN].to_vec();
    assert_eq!(&header[..8], fanwire_plugins::cache::MAGIC);

    // A restart: a new engine with the same settings finds the entry.
    let second = cached_runtime(&dir);
    let plugin = load(&second, &spec);
    assert_eq!(counts(&second, "python-filter"), [1, 0, 0, 0]);
    assert_eq!(entry(&dir), path);
    // And the loaded code is the Python filter: severity below 2 is dropped.
    let f = WasmFilter::new(plugin, spec.clone());
    let g = group(
        "alerts",
        "alerts",
        json!({}),
        json!({}),
        &[],
        principal(Some("u"), None, &[], json!({})),
    );
    let d = decide(&f, &Event::new("alerts", json!({"severity": 1})), &[&g]);
    assert!(matches!(d[0], Decision::Deny(_)), "{d:?}");
    let d = decide(&f, &Event::new("alerts", json!({"severity": 3})), &[&g]);
    assert_eq!(d, vec![Decision::Redact(vec!["internal_notes".into()])]);
}

#[test]
fn a_deleted_entry_is_compiled_again() {
    let dir = temp_dir("cache-deleted");
    let runtime = cached_runtime(&dir);
    load_template(&runtime);
    std::fs::remove_file(entry(&dir)).unwrap();
    assert_is_the_template(load_template(&runtime));
    assert_eq!(counts(&runtime, "template"), [0, 2, 0, 0]);
    entry(&dir);
    load_template(&runtime);
    assert_eq!(counts(&runtime, "template"), [1, 2, 0, 0]);
}

#[test]
fn a_truncated_entry_is_refused() {
    let dir = temp_dir("cache-truncated");
    assert_refused_and_rewritten(&dir, |bytes| bytes.truncate(bytes.len() / 2));
}

#[test]
fn an_entry_cut_inside_its_header_is_refused() {
    let dir = temp_dir("cache-header");
    assert_refused_and_rewritten(&dir, |bytes| bytes.truncate(HEADER_LEN / 2));
}

#[test]
fn a_bit_flipped_entry_is_refused() {
    let dir = temp_dir("cache-flipped");
    assert_refused_and_rewritten(&dir, |bytes| {
        let middle = HEADER_LEN + (bytes.len() - HEADER_LEN) / 2;
        bytes[middle] ^= 0x10;
    });
}

#[test]
fn an_entry_naming_another_wasmtime_is_refused() {
    let dir = temp_dir("cache-version");
    // The header's wasmtime version field (bytes 72..88, see `cache`).
    assert_refused_and_rewritten(&dir, |bytes| {
        bytes[72..88].copy_from_slice(b"47.0.0\0\0\0\0\0\0\0\0\0\0")
    });
}

#[test]
fn an_entry_naming_other_engine_settings_is_refused() {
    let dir = temp_dir("cache-engine");
    // The header's engine key (bytes 40..72, see `cache`).
    assert_refused_and_rewritten(&dir, |bytes| bytes[40] ^= 1);
}

#[test]
fn an_entry_for_other_component_bytes_is_refused() {
    let dir = temp_dir("cache-foreign");
    let runtime = cached_runtime(&dir);
    load_template(&runtime);
    let template = entry(&dir);
    load(&runtime, &spec("row-filter", Kind::EventFilter, json!({})));
    let row_filter = entries(&dir).into_iter().find(|p| *p != template).unwrap();
    // A whole, well-formed entry, for the row filter, under the template's name.
    std::fs::copy(&row_filter, &template).unwrap();
    assert_is_the_template(load_template(&runtime));
    assert_eq!(counts(&runtime, "template"), [0, 1, 1, 0]);
    load_template(&runtime);
    assert_eq!(counts(&runtime, "template"), [1, 1, 1, 0]);
}

#[test]
fn other_engine_settings_keep_entries_of_their_own() {
    let dir = temp_dir("cache-settings");
    let default = cached_runtime(&dir);
    load_template(&default);
    // Another memory reservation (a slot larger than the 4 GiB every slot
    // reserves at least) is another engine.
    let larger = Runtime::new(
        RuntimeConfig {
            max_memory_mb: 8192,
            ..config(&dir)
        },
        PluginMetrics::new(),
    )
    .unwrap();
    load_template(&larger);
    assert_eq!(counts(&larger, "template"), [0, 1, 0, 0]);
    assert_eq!(entries(&dir).len(), 2);
    load_template(&default);
    assert_eq!(counts(&default, "template"), [1, 1, 0, 0]);
}

#[test]
fn an_unwritable_cache_folder_still_loads_the_plugin() {
    // Under a regular file no folder can be created, whoever runs the test
    // (a read-only mode would not stop root).
    let root = temp_dir("cache-unwritable");
    let file = root.join("a-file");
    std::fs::write(&file, b"not a folder").unwrap();
    let runtime = cached_runtime(&file.join("plugins"));
    assert_is_the_template(load_template(&runtime));
    assert_eq!(counts(&runtime, "template"), [0, 1, 0, 1]);
    assert_is_the_template(load_template(&runtime));
    assert_eq!(counts(&runtime, "template"), [0, 2, 0, 2]);
}

#[cfg(unix)]
#[test]
fn the_cache_folder_is_private() {
    use std::os::unix::fs::PermissionsExt;
    let root = temp_dir("cache-private");
    let dir = root.join("plugins");
    load_template(&cached_runtime(&dir));
    let mode = std::fs::metadata(&dir).unwrap().permissions().mode();
    assert_eq!(mode & 0o777, 0o700);
}

#[test]
fn with_the_cache_off_nothing_is_written_or_counted() {
    let dir = temp_dir("cache-off");
    let runtime = Runtime::new(
        RuntimeConfig {
            cache: false,
            ..config(&dir)
        },
        PluginMetrics::new(),
    )
    .unwrap();
    assert_eq!(runtime.cache_dir(), None);
    assert_is_the_template(load_template(&runtime));
    assert_eq!(counts(&runtime, "template"), [0, 0, 0, 0]);
    assert!(entries(&dir).is_empty());
}

#[test]
fn concurrent_loads_share_the_folder() {
    let dir = temp_dir("cache-concurrent");
    let runtimes: Vec<Runtime> = (0..4).map(|_| cached_runtime(&dir)).collect();
    std::thread::scope(|s| {
        for runtime in &runtimes {
            s.spawn(|| assert_is_the_template(load_template(runtime)));
        }
    });
    // Each found a whole entry or none; the entries written replaced each
    // other atomically, leaving one and no temporary file.
    entry(&dir);
    for runtime in &runtimes {
        let [hit, miss, corrupt, write_error] = counts(runtime, "template");
        assert_eq!((hit + miss, corrupt, write_error), (1, 0, 0));
    }
    let after = cached_runtime(&dir);
    load_template(&after);
    assert_eq!(counts(&after, "template"), [1, 0, 0, 0]);
}
