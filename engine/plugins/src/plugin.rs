//! One loaded plugin version: its compiled component, pre-linked for its
//! world, a few warm instances, and the guarded call that every adapter
//! goes through (deadline, memory cap, fail closed, recycle).

use std::hash::{Hash, Hasher};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Instant;

use serde_json::{Map, Value};
use wasmtime::component::types::ComponentItem;
use wasmtime::component::Component;
use wasmtime::{Store, Trap};

use crate::bindings::{v0_1, v0_2, v0_3, v0_4};
use crate::config::Kind;
use crate::host::HostState;
use crate::metrics::{FaultKind, Function, Handles};
use crate::resolver::{ResolveFunc, ResolverFuncs};
use crate::runtime::{Runtime, EPOCH_TICK};
use crate::LoadError;

/// The WIT package every plugin speaks.
pub const PACKAGE: &str = "fanwire:plugin";

/// A version of the `fanwire:plugin` interfaces (major.minor; patch
/// releases are compatible and load alike).
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub enum Version {
    /// `0.1.x`: `filter.decide` receives whole `subscription` records.
    V0_1,
    /// `0.2.x`: `filter.prepare` names a context per group and
    /// `filter.decide` receives the distinct contexts.
    V0_2,
    /// `0.3.x`: adds the `field-resolver` world; the rest is 0.2's.
    V0_3,
    /// `0.4.x`: `resolver.prepare` gives each group a context and
    /// `resolver.resolve` receives it instead of the whole `field-call`;
    /// the rest is 0.3's.
    V0_4,
}

impl Version {
    /// `major.minor`.
    pub fn as_str(self) -> &'static str {
        match self {
            Version::V0_1 => "0.1",
            Version::V0_2 => "0.2",
            Version::V0_3 => "0.3",
            Version::V0_4 => "0.4",
        }
    }

    fn of(major: u64, minor: u64) -> Option<Version> {
        SUPPORTED
            .iter()
            .copied()
            .find(|v| v.as_str() == format!("{major}.{minor}"))
    }
}

/// The interface versions this host loads, side by side: a plugin built
/// for an older minor version keeps loading when the interface grows.
pub const SUPPORTED: &[Version] = &[Version::V0_1, Version::V0_2, Version::V0_3, Version::V0_4];

/// The deadline of an instantiation, in epoch ticks (one second).
const INSTANTIATE_TICKS: u64 = 1000;

/// What a loaded plugin is called with besides its bytes.
#[derive(Debug, Clone)]
pub struct LoadOptions {
    /// Its name in logs and metrics.
    pub name: String,
    /// The world it must export.
    pub kind: Kind,
    /// Its own settings, served by `host.config`.
    pub config: Map<String, Value>,
    /// Call deadline in milliseconds.
    pub timeout_ms: u64,
    /// Memory cap per instance in MiB.
    pub memory_mb: u64,
}

/// A component pre-linked for its world, by WIT version.
enum Pre {
    Filter01(v0_1::filter::EventFilterPre<HostState>),
    Filter02(v0_2::filter::EventFilterPre<HostState>),
    Filter03(v0_3::filter::EventFilterPre<HostState>),
    Filter04(v0_4::filter::EventFilterPre<HostState>),
    Subscription01(v0_1::subscription::SubscriptionPolicyPre<HostState>),
    Subscription02(v0_2::subscription::SubscriptionPolicyPre<HostState>),
    Subscription03(v0_3::subscription::SubscriptionPolicyPre<HostState>),
    Subscription04(v0_4::subscription::SubscriptionPolicyPre<HostState>),
    Connection01(v0_1::connection::ConnectionPolicyPre<HostState>),
    Connection02(v0_2::connection::ConnectionPolicyPre<HostState>),
    Connection03(v0_3::connection::ConnectionPolicyPre<HostState>),
    Connection04(v0_4::connection::ConnectionPolicyPre<HostState>),
    Transport01(v0_1::transport::TransportAdapterPre<HostState>),
    Transport02(v0_2::transport::TransportAdapterPre<HostState>),
    Transport03(v0_3::transport::TransportAdapterPre<HostState>),
    Transport04(v0_4::transport::TransportAdapterPre<HostState>),
    Resolver03(v0_3::resolver::FieldResolverPre<HostState>),
    Resolver04(v0_4::resolver::FieldResolverPre<HostState>),
}

/// The bindings of one live instance, by world and WIT version.
pub(crate) enum Bindings {
    Filter01(v0_1::filter::EventFilter),
    Filter02(v0_2::filter::EventFilter),
    Filter03(v0_3::filter::EventFilter),
    Filter04(v0_4::filter::EventFilter),
    Subscription01(v0_1::subscription::SubscriptionPolicy),
    Subscription02(v0_2::subscription::SubscriptionPolicy),
    Subscription03(v0_3::subscription::SubscriptionPolicy),
    Subscription04(v0_4::subscription::SubscriptionPolicy),
    Connection01(v0_1::connection::ConnectionPolicy),
    Connection02(v0_2::connection::ConnectionPolicy),
    Connection03(v0_3::connection::ConnectionPolicy),
    Connection04(v0_4::connection::ConnectionPolicy),
    Transport01(v0_1::transport::TransportAdapter),
    Transport02(v0_2::transport::TransportAdapter),
    Transport03(v0_3::transport::TransportAdapter),
    Transport04(v0_4::transport::TransportAdapter),
    Resolver03(ResolveFunc),
    Resolver04(ResolverFuncs),
}

/// One instance with its store.
pub(crate) struct Slot {
    pub store: Store<HostState>,
    pub bindings: Bindings,
}

/// A loaded, instantiable plugin version.
pub struct Plugin {
    name: Arc<str>,
    kind: Kind,
    version: Version,
    digest: String,
    runtime: Runtime,
    pre: Pre,
    config: Arc<str>,
    memory_cap: usize,
    timeout_ms: u64,
    deadline_ticks: u64,
    // A std mutex: held to pop or push a slot, never during a call.
    pool: Mutex<Vec<Slot>>,
    pub(crate) metrics: Handles,
    last_fault_log: AtomicU64,
}

impl std::fmt::Debug for Plugin {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Plugin")
            .field("name", &self.name)
            .field("kind", &self.kind)
            .field("version", &self.version)
            .field("digest", &self.digest)
            .finish()
    }
}

/// A short, stable digest of a file's bytes: names a version in logs.
pub fn digest(bytes: &[u8]) -> String {
    let mut h = std::collections::hash_map::DefaultHasher::new();
    bytes.hash(&mut h);
    format!("{:016x}", h.finish())
}

/// Finds the `fanwire:plugin` interface a component exports and checks it
/// is the one `kind` needs, in a version this host loads.
fn check_exports(
    component: &Component,
    runtime: &Runtime,
    kind: Kind,
) -> Result<Version, LoadError> {
    let ty = component.component_type();
    let exports: Vec<String> = ty
        .exports(runtime.engine())
        .filter(|(_, item)| matches!(item.ty, ComponentItem::ComponentInstance(_)))
        .map(|(name, _)| name.to_owned())
        .collect();
    let wanted = format!("{PACKAGE}/{}@", kind.interface());
    let Some(found) = exports.iter().find(|e| e.starts_with(&wanted)) else {
        let ours: Vec<&String> = exports.iter().filter(|e| e.starts_with(PACKAGE)).collect();
        return Err(LoadError::WrongWorld {
            expected: kind.world(),
            found: if ours.is_empty() {
                "no fanwire:plugin interface".to_owned()
            } else {
                format!("{ours:?}")
            },
        });
    };
    let version = &found[wanted.len()..];
    let mut parts = version.split('.').map(|p| p.parse::<u64>().ok());
    match (parts.next().flatten(), parts.next().flatten()) {
        (Some(major), Some(minor)) => Version::of(major, minor),
        _ => None,
    }
    .ok_or_else(|| LoadError::UnsupportedVersion {
        found: found.clone(),
        supported: SUPPORTED
            .iter()
            .map(|v| format!("{}.x", v.as_str()))
            .collect::<Vec<_>>()
            .join(", "),
    })
}

impl Plugin {
    /// Compiles, checks and pre-links a component, and creates its first
    /// instance, so a version that cannot run is refused here, off the hot path.
    pub fn load(
        runtime: &Runtime,
        bytes: &[u8],
        options: LoadOptions,
    ) -> Result<Plugin, LoadError> {
        if !bytes.starts_with(b"\0asm") {
            return Err(LoadError::NotWasm);
        }
        let component = runtime.compile(bytes, &options.name)?;
        let version = check_exports(&component, runtime, options.kind)?;
        let mut linker = runtime.linker().clone();
        // A guest built with a standard library may import WASI functions it
        // never calls; they trap if called. Plugins get no WASI.
        linker
            .define_unknown_imports_as_traps(&component)
            .map_err(|e| LoadError::Link(format!("{e:#}")))?;
        let instance_pre = linker
            .instantiate_pre(&component)
            .map_err(|e| LoadError::Link(format!("{e:#}")))?;
        let link = |e: wasmtime::Error| LoadError::Link(format!("{e:#}"));
        let ip = instance_pre;
        let pre = match (options.kind, version) {
            (Kind::EventFilter, Version::V0_1) => {
                Pre::Filter01(v0_1::filter::EventFilterPre::new(ip).map_err(link)?)
            }
            (Kind::EventFilter, Version::V0_2) => {
                Pre::Filter02(v0_2::filter::EventFilterPre::new(ip).map_err(link)?)
            }
            (Kind::EventFilter, Version::V0_3) => {
                Pre::Filter03(v0_3::filter::EventFilterPre::new(ip).map_err(link)?)
            }
            (Kind::EventFilter, Version::V0_4) => {
                Pre::Filter04(v0_4::filter::EventFilterPre::new(ip).map_err(link)?)
            }
            (Kind::SubscriptionPolicy, Version::V0_1) => Pre::Subscription01(
                v0_1::subscription::SubscriptionPolicyPre::new(ip).map_err(link)?,
            ),
            (Kind::SubscriptionPolicy, Version::V0_2) => Pre::Subscription02(
                v0_2::subscription::SubscriptionPolicyPre::new(ip).map_err(link)?,
            ),
            (Kind::SubscriptionPolicy, Version::V0_3) => Pre::Subscription03(
                v0_3::subscription::SubscriptionPolicyPre::new(ip).map_err(link)?,
            ),
            (Kind::SubscriptionPolicy, Version::V0_4) => Pre::Subscription04(
                v0_4::subscription::SubscriptionPolicyPre::new(ip).map_err(link)?,
            ),
            (Kind::ConnectionPolicy, Version::V0_1) => {
                Pre::Connection01(v0_1::connection::ConnectionPolicyPre::new(ip).map_err(link)?)
            }
            (Kind::ConnectionPolicy, Version::V0_2) => {
                Pre::Connection02(v0_2::connection::ConnectionPolicyPre::new(ip).map_err(link)?)
            }
            (Kind::ConnectionPolicy, Version::V0_3) => {
                Pre::Connection03(v0_3::connection::ConnectionPolicyPre::new(ip).map_err(link)?)
            }
            (Kind::ConnectionPolicy, Version::V0_4) => {
                Pre::Connection04(v0_4::connection::ConnectionPolicyPre::new(ip).map_err(link)?)
            }
            (Kind::TransportAdapter, Version::V0_1) => {
                Pre::Transport01(v0_1::transport::TransportAdapterPre::new(ip).map_err(link)?)
            }
            (Kind::TransportAdapter, Version::V0_2) => {
                Pre::Transport02(v0_2::transport::TransportAdapterPre::new(ip).map_err(link)?)
            }
            (Kind::TransportAdapter, Version::V0_3) => {
                Pre::Transport03(v0_3::transport::TransportAdapterPre::new(ip).map_err(link)?)
            }
            (Kind::TransportAdapter, Version::V0_4) => {
                Pre::Transport04(v0_4::transport::TransportAdapterPre::new(ip).map_err(link)?)
            }
            (Kind::FieldResolver, Version::V0_3) => {
                Pre::Resolver03(v0_3::resolver::FieldResolverPre::new(ip).map_err(link)?)
            }
            (Kind::FieldResolver, Version::V0_4) => {
                Pre::Resolver04(v0_4::resolver::FieldResolverPre::new(ip).map_err(link)?)
            }
            // `check_exports` found a `resolver` interface in a version that
            // has none: a hand-made component, not one the SDK builds.
            (Kind::FieldResolver, Version::V0_1 | Version::V0_2) => {
                return Err(LoadError::UnsupportedVersion {
                    found: format!("{PACKAGE}/resolver@{}", version.as_str()),
                    supported: "0.3.x (the first version with the field-resolver world)".into(),
                })
            }
        };
        let timeout = std::time::Duration::from_millis(options.timeout_ms.max(1));
        let plugin = Plugin {
            metrics: runtime.metrics().for_plugin(&options.name),
            name: Arc::from(options.name.as_str()),
            kind: options.kind,
            version,
            digest: digest(bytes),
            runtime: runtime.clone(),
            pre,
            config: Arc::from(Value::Object(options.config).to_string()),
            memory_cap: (options.memory_mb.min(runtime.config().max_memory_mb) as usize) << 20,
            timeout_ms: options.timeout_ms.max(1),
            // One tick more than the deadline: the first tick may come at once.
            deadline_ticks: (timeout.as_micros() / EPOCH_TICK.as_micros()).max(1) as u64 + 1,
            pool: Mutex::new(Vec::new()),
            last_fault_log: AtomicU64::new(0),
        };
        let slot = plugin
            .instantiate()
            .map_err(|e| LoadError::Instantiate(format!("{e:#}")))?;
        plugin.release(slot);
        Ok(plugin)
    }

    /// The name in logs and metrics.
    pub fn name(&self) -> &str {
        &self.name
    }

    /// The world it implements.
    pub fn kind(&self) -> Kind {
        self.kind
    }

    /// The interface version it was built against.
    pub fn version(&self) -> Version {
        self.version
    }

    /// A digest of the component's bytes.
    pub fn digest(&self) -> &str {
        &self.digest
    }

    /// The deadline of one call, in milliseconds.
    pub fn timeout_ms(&self) -> u64 {
        self.timeout_ms
    }

    /// The memory cap of one instance, in MiB.
    pub fn memory_mb(&self) -> u64 {
        (self.memory_cap >> 20) as u64
    }

    /// Creates and drops one instance (for benchmarks of instantiation).
    #[doc(hidden)]
    pub fn instantiate_once(&self) -> Result<(), LoadError> {
        self.instantiate()
            .map(drop)
            .map_err(|e| LoadError::Instantiate(format!("{e:#}")))
    }

    fn instantiate(&self) -> wasmtime::Result<Slot> {
        let mut store = Store::new(
            self.runtime.engine(),
            HostState {
                plugin: self.name.clone(),
                config: self.config.clone(),
                memory_cap: self.memory_cap,
                memory_hit: false,
            },
        );
        store.limiter(|s| s as &mut dyn wasmtime::ResourceLimiter);
        store.epoch_deadline_trap();
        // Instantiation runs the guest's start code (CPython initialises its
        // heap): bounded too, but by a longer deadline than a call.
        store.set_epoch_deadline(self.deadline_ticks.max(INSTANTIATE_TICKS));
        let bindings = match &self.pre {
            Pre::Filter01(p) => Bindings::Filter01(p.instantiate(&mut store)?),
            Pre::Filter02(p) => Bindings::Filter02(p.instantiate(&mut store)?),
            Pre::Filter03(p) => Bindings::Filter03(p.instantiate(&mut store)?),
            Pre::Filter04(p) => Bindings::Filter04(p.instantiate(&mut store)?),
            Pre::Subscription01(p) => Bindings::Subscription01(p.instantiate(&mut store)?),
            Pre::Subscription02(p) => Bindings::Subscription02(p.instantiate(&mut store)?),
            Pre::Subscription03(p) => Bindings::Subscription03(p.instantiate(&mut store)?),
            Pre::Subscription04(p) => Bindings::Subscription04(p.instantiate(&mut store)?),
            Pre::Connection01(p) => Bindings::Connection01(p.instantiate(&mut store)?),
            Pre::Connection02(p) => Bindings::Connection02(p.instantiate(&mut store)?),
            Pre::Connection03(p) => Bindings::Connection03(p.instantiate(&mut store)?),
            Pre::Connection04(p) => Bindings::Connection04(p.instantiate(&mut store)?),
            Pre::Transport01(p) => Bindings::Transport01(p.instantiate(&mut store)?),
            Pre::Transport02(p) => Bindings::Transport02(p.instantiate(&mut store)?),
            Pre::Transport03(p) => Bindings::Transport03(p.instantiate(&mut store)?),
            Pre::Transport04(p) => Bindings::Transport04(p.instantiate(&mut store)?),
            Pre::Resolver03(p) => {
                let bindings = p.instantiate(&mut store)?;
                Bindings::Resolver03(ResolveFunc::check(&bindings, &store)?)
            }
            Pre::Resolver04(p) => {
                let bindings = p.instantiate(&mut store)?;
                Bindings::Resolver04(ResolverFuncs::check(&bindings, &store)?)
            }
        };
        Ok(Slot { store, bindings })
    }

    fn release(&self, slot: Slot) {
        let mut pool = self.pool.lock().unwrap_or_else(|p| p.into_inner());
        if pool.len() < self.runtime.config().warm_instances.max(1) {
            pool.push(slot);
        }
    }

    /// Runs one export call on a warm instance under the deadline and the
    /// memory cap. A trap, timeout or memory fault is counted, logged (at
    /// most once a second per plugin) and returned; the instance is dropped,
    /// so the next call gets a fresh one.
    pub(crate) fn call<R>(
        &self,
        function: Function,
        f: impl FnOnce(&mut Slot) -> wasmtime::Result<R>,
    ) -> Result<R, FaultKind> {
        self.metrics.call(function);
        let popped = self.pool.lock().unwrap_or_else(|p| p.into_inner()).pop();
        let mut slot = match popped {
            Some(slot) => slot,
            None => match self.instantiate() {
                Ok(slot) => slot,
                Err(e) => return Err(self.fault(function, FaultKind::Instantiate, &e)),
            },
        };
        slot.store.set_epoch_deadline(self.deadline_ticks);
        slot.store.data_mut().memory_hit = false;
        let start = Instant::now();
        let result = f(&mut slot);
        self.metrics
            .call_seconds
            .observe(start.elapsed().as_secs_f64());
        match result {
            Ok(value) => {
                self.release(slot);
                Ok(value)
            }
            Err(e) => {
                let kind = if slot.store.data().memory_hit {
                    FaultKind::Memory
                } else if e.downcast_ref::<Trap>() == Some(&Trap::Interrupt) {
                    FaultKind::Timeout
                } else {
                    FaultKind::Trap
                };
                Err(self.fault(function, kind, &e))
            }
        }
    }

    fn fault(&self, function: Function, kind: FaultKind, error: &wasmtime::Error) -> FaultKind {
        self.metrics.fault(kind);
        let now = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map(|d| d.as_secs())
            .unwrap_or(0);
        // One line a second per plugin: a plugin failing on every event must
        // not flood the log (the metric counts every fault).
        if self.last_fault_log.swap(now, Ordering::Relaxed) != now {
            let message = match self.kind {
                Kind::FieldResolver => {
                    "resolver call failed: the group's field is null with an error, instance recycled"
                }
                _ => "plugin call failed: answered with a denial (fail closed), instance recycled",
            };
            tracing::warn!(
                plugin = %self.name,
                version = %self.digest,
                function = function.label(),
                fault = kind.label(),
                error = %format!("{error:#}"),
                "{message}"
            );
        }
        kind
    }
}
