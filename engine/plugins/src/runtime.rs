//! The wasmtime engine every plugin shares: compiler settings, the pooling
//! allocator, and the epoch ticker that enforces call deadlines.

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::Duration;

use wasmtime::component::{Component, HasSelf, Linker};
use wasmtime::{Config, Engine, InstanceAllocationStrategy, PoolingAllocationConfig};

use crate::bindings::{v0_1, v0_2, v0_3, v0_4};
use crate::cache::CompileCache;
use crate::config::RuntimeConfig;
use crate::host::HostState;
use crate::metrics::PluginMetrics;
use crate::LoadError;

/// How often the epoch advances: the resolution of call deadlines.
pub const EPOCH_TICK: Duration = Duration::from_millis(1);

/// Address space reserved per pooled linear memory, guard excluded: 4 GiB,
/// all a 32-bit memory can address, so guest code needs no bounds checks.
pub const MEMORY_RESERVATION: u64 = 4 << 30;

/// The shared plugin runtime: one per host.
#[derive(Debug, Clone)]
pub struct Runtime {
    inner: Arc<Inner>,
}

struct Inner {
    engine: Engine,
    linker: Linker<HostState>,
    cache: Option<CompileCache>,
    config: RuntimeConfig,
    metrics: PluginMetrics,
    stop: Arc<AtomicBool>,
}

impl std::fmt::Debug for Inner {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Runtime")
            .field("config", &self.config)
            .field("cache", &self.cache)
            .finish_non_exhaustive()
    }
}

impl Drop for Inner {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Relaxed);
    }
}

impl Runtime {
    /// Builds the engine (pooling allocator, epoch interruption) and starts
    /// the epoch ticker thread.
    pub fn new(config: RuntimeConfig, metrics: PluginMetrics) -> Result<Runtime, LoadError> {
        Self::build(config, metrics, true)
    }

    /// The same runtime without the pooling allocator: every instance is
    /// allocated on demand (for comparisons in benchmarks).
    pub fn without_pooling(
        config: RuntimeConfig,
        metrics: PluginMetrics,
    ) -> Result<Runtime, LoadError> {
        Self::build(config, metrics, false)
    }

    fn build(
        config: RuntimeConfig,
        metrics: PluginMetrics,
        pooling: bool,
    ) -> Result<Runtime, LoadError> {
        let mut wasm = Config::new();
        wasm.epoch_interruption(true);
        if pooling {
            let mut pool = PoolingAllocationConfig::default();
            let slot = (config.max_memory_mb as usize) << 20;
            pool.total_component_instances(config.pool_instances)
                .total_core_instances(config.pool_instances.saturating_mul(16))
                .total_memories(config.pool_instances.saturating_mul(4))
                .total_tables(config.pool_instances.saturating_mul(16))
                .max_memory_size(slot)
                .max_memories_per_component(4)
                .max_tables_per_module(4)
                // CPython (componentize-py) has large function tables and instances.
                .table_elements(64 * 1024)
                .max_core_instance_size(4 << 20)
                .max_component_instance_size(1 << 20);
            wasm.allocation_strategy(InstanceAllocationStrategy::Pooling(pool));
            // Every slot reserves a 32-bit memory's whole index space (plus
            // wasmtime's guard), so cranelift drops the bounds check of every
            // guest load and store: a resolver call runs ~10% fewer
            // instructions. Address space only (`PROT_NONE` until a memory
            // grows): `MEMORY_RESERVATION` (or the slot, when larger) + guard
            // per memory slot, 4 slots per pooled instance (see
            // docs/architecture.md). A memory still grows no further than
            // `max_memory_size` above, and each store's limiter holds it to
            // the plugin's own `memory_mb`.
            wasm.memory_reservation(MEMORY_RESERVATION.max(slot as u64));
        }
        let engine = Engine::new(&wasm).map_err(|e| LoadError::Runtime(format!("{e:#}")))?;
        let mut linker = Linker::new(&engine);
        // Each version's `host` under its own name: a 0.1 plugin imports
        // `fanwire:plugin/host@0.1.0`, a 0.2 plugin `...@0.2.0`, and so on.
        v0_1::host::add_to_linker::<HostState, HasSelf<HostState>>(&mut linker, |s| s)
            .and_then(|()| {
                v0_2::host::add_to_linker::<HostState, HasSelf<HostState>>(&mut linker, |s| s)
            })
            .and_then(|()| {
                v0_3::host::add_to_linker::<HostState, HasSelf<HostState>>(&mut linker, |s| s)
            })
            .and_then(|()| {
                v0_4::host::add_to_linker::<HostState, HasSelf<HostState>>(&mut linker, |s| s)
            })
            .map_err(|e| LoadError::Runtime(format!("{e:#}")))?;
        let cache = config
            .cache_folder()
            .map(|dir| CompileCache::new(dir, &engine));
        match &cache {
            Some(cache) => {
                tracing::debug!(dir = %cache.dir().display(), "plugin compile cache")
            }
            None => tracing::debug!("plugin compile cache off: plugins compile on every load"),
        }
        let stop = Arc::new(AtomicBool::new(false));
        let ticker = (engine.clone(), stop.clone());
        std::thread::Builder::new()
            .name("fanwire-plugin-epoch".into())
            .spawn(move || {
                let (engine, stop) = ticker;
                while !stop.load(Ordering::Relaxed) {
                    std::thread::sleep(EPOCH_TICK);
                    engine.increment_epoch();
                }
            })
            .map_err(|e| LoadError::Runtime(format!("cannot start the epoch ticker: {e}")))?;
        Ok(Runtime {
            inner: Arc::new(Inner {
                engine,
                linker,
                cache,
                config,
                metrics,
                stop,
            }),
        })
    }

    /// The wasmtime engine.
    pub(crate) fn engine(&self) -> &Engine {
        &self.inner.engine
    }

    /// Compiles `bytes` for this engine, through the compile cache when it
    /// is on (counted for `plugin`).
    pub(crate) fn compile(&self, bytes: &[u8], plugin: &str) -> Result<Component, LoadError> {
        match &self.inner.cache {
            Some(cache) => cache.component(self.engine(), bytes, plugin, self.metrics()),
            None => Component::new(self.engine(), bytes)
                .map_err(|e| LoadError::Compile(format!("{e:#}"))),
        }
    }

    /// The compile cache folder, when the cache is on.
    pub fn cache_dir(&self) -> Option<&std::path::Path> {
        self.inner.cache.as_ref().map(CompileCache::dir)
    }

    /// A linker with the `host` interface; each plugin clones it.
    pub(crate) fn linker(&self) -> &Linker<HostState> {
        &self.inner.linker
    }

    /// The runtime's limits.
    pub fn config(&self) -> &RuntimeConfig {
        &self.inner.config
    }

    /// The metrics every plugin of this runtime reports to.
    pub fn metrics(&self) -> &PluginMetrics {
        &self.inner.metrics
    }
}
