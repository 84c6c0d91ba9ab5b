//! The configured plugins and component resolvers as the engine's hooks:
//! load them all at start, reload changed files off the hot path, and swap
//! a complete new set of hooks atomically (`Engine::set_hooks`), so each
//! event sees one version.

use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, SystemTime};

use fanwire_core::hooks::{ConnectionPolicy, EventFilter, Hooks, Resolver, SubscriptionPolicy};
use fanwire_core::Engine;

use crate::config::{Kind, PluginSpec, ResolverSpec, RuntimeConfig};
use crate::filter::WasmFilter;
use crate::jwt::{JwtConfig, JwtPolicy};
use crate::plugin::{LoadOptions, Plugin};
use crate::policy::{WasmConnectionPolicy, WasmSubscriptionPolicy};
use crate::resolver::WasmResolver;
use crate::runtime::Runtime;
use crate::transport::WasmTransport;
use crate::{LoadError, PluginMetrics};

/// What identifies a file's version cheaply: its size and modification time.
type Stamp = (u64, Option<SystemTime>);

fn stamp(path: &Path) -> Option<Stamp> {
    let meta = std::fs::metadata(path).ok()?;
    Some((meta.len(), meta.modified().ok()))
}

/// One configured plugin or resolver and the version of it in force.
#[derive(Debug)]
struct Entry {
    spec: PluginSpec,
    path: PathBuf,
    plugin: Arc<Plugin>,
    stamp: Option<Stamp>,
    /// For a transport adapter: the plugin with its subprotocol name.
    transport: Option<Arc<WasmTransport>>,
    /// For a field resolver (`[[resolvers]]`): the field it computes.
    resolves: Option<String>,
}

/// The adapter of a transport-adapter plugin (asks its subprotocol once).
fn transport_of(
    spec: &PluginSpec,
    plugin: &Arc<Plugin>,
) -> Result<Option<Arc<WasmTransport>>, LoadError> {
    if spec.kind != Kind::TransportAdapter {
        return Ok(None);
    }
    WasmTransport::new(plugin.clone()).map(|t| Some(Arc::new(t)))
}

/// The outcome of a reload.
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub struct ReloadReport {
    /// Plugins now running a new version.
    pub reloaded: Vec<String>,
    /// Plugins whose new version was refused (the old one keeps running), with why.
    pub rejected: Vec<(String, String)>,
    /// Subscription groups ended because a new filter denies them outright.
    pub revoked: usize,
}

/// Every configured plugin and component resolver, the runtime they share
/// and the native JWT policy.
#[derive(Debug)]
pub struct PluginHost {
    runtime: Runtime,
    jwt: Option<Arc<JwtPolicy>>,
    // A std mutex: held by one reload at a time (which may compile for a
    // while) and never by the event path, which reads the engine's hooks.
    entries: Mutex<Vec<Entry>>,
}

impl PluginHost {
    /// Loads every plugin and resolver (a failure here stops the host from
    /// starting: a missing security filter must not mean an open door) and
    /// registers the plugin metrics with the engine's. Relative paths are
    /// resolved against `base`, the config file's folder. Resolvers' fields
    /// are checked against the schema by the caller
    /// ([`ResolverSpec::check_fields`]).
    pub fn new(
        runtime_config: RuntimeConfig,
        specs: &[PluginSpec],
        resolvers: &[ResolverSpec],
        jwt: Option<&JwtConfig>,
        base: &Path,
        metrics: &fanwire_core::metrics::Metrics,
    ) -> Result<PluginHost, LoadError> {
        let plugin_metrics = PluginMetrics::new();
        plugin_metrics.register(metrics);
        let folder = match &runtime_config.folder {
            Some(folder) => base.join(folder),
            None => base.to_owned(),
        };
        let mut runtime_config = runtime_config;
        // Like the plugin folder, a relative cache folder starts at the config file's.
        runtime_config.cache_dir = runtime_config.cache_dir.map(|dir| base.join(dir));
        let runtime = Runtime::new(runtime_config, plugin_metrics)?;
        Self::with_runtime(runtime, specs, resolvers, jwt, base, &folder)
    }

    /// As [`PluginHost::new`], with a runtime built by the caller.
    pub fn with_runtime(
        runtime: Runtime,
        specs: &[PluginSpec],
        resolvers: &[ResolverSpec],
        jwt: Option<&JwtConfig>,
        base: &Path,
        folder: &Path,
    ) -> Result<PluginHost, LoadError> {
        check_resolvers(specs, resolvers)?;
        let connection_plugins = specs
            .iter()
            .filter(|s| s.kind == Kind::ConnectionPolicy)
            .count();
        if connection_plugins + usize::from(jwt.is_some()) > 1 {
            return Err(LoadError::Config(
                "at most one connection policy: [auth.jwt] or one connection-policy plugin".into(),
            ));
        }
        let jwt = jwt
            .map(|c| JwtPolicy::new(c.clone(), base).map(Arc::new))
            .transpose()?;
        let mut ordered: Vec<(PluginSpec, Option<String>)> =
            specs.iter().map(|s| (s.clone(), None)).collect();
        // A stable sort: equal orders keep the file's order.
        ordered.sort_by_key(|(s, _)| s.order);
        ordered.extend(
            resolvers
                .iter()
                .map(|r| (r.plugin(), Some(r.field.clone()))),
        );
        let mut entries = Vec::new();
        for (spec, resolves) in ordered {
            let path = folder.join(&spec.path);
            let stamp = stamp(&path);
            let what = if resolves.is_some() {
                "resolver"
            } else {
                "plugin"
            };
            let plugin = load(&runtime, &spec, &path).map_err(|e| {
                runtime.metrics().reload(&spec.name(), "rejected");
                LoadError::Config(format!("{what} {} ({}): {e}", spec.name(), path.display()))
            })?;
            let plugin = Arc::new(plugin);
            let transport = transport_of(&spec, &plugin).map_err(|e| {
                LoadError::Config(format!("plugin {} ({}): {e}", spec.name(), path.display()))
            })?;
            runtime.metrics().reload(&spec.name(), "loaded");
            tracing::info!(plugin = %spec.name(), kind = spec.kind.world(), field = resolves.as_deref(), interface = plugin.version().as_str(), version = %plugin.digest(), path = %path.display(), "plugin loaded");
            entries.push(Entry {
                spec,
                path,
                plugin,
                stamp,
                transport,
                resolves,
            });
        }
        Ok(PluginHost {
            runtime,
            jwt,
            entries: Mutex::new(entries),
        })
    }

    /// The shared runtime.
    pub fn runtime(&self) -> &Runtime {
        &self.runtime
    }

    /// The plugin metrics.
    pub fn metrics(&self) -> &PluginMetrics {
        self.runtime.metrics()
    }

    fn entries(&self) -> std::sync::MutexGuard<'_, Vec<Entry>> {
        self.entries.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// `base` with its connection policy, subscription policies and filters
    /// replaced by the configured ones, and the component resolvers added
    /// to its resolvers (the spawner is kept).
    pub fn hooks(&self, base: Hooks) -> Hooks {
        Self::build(&self.entries(), self.jwt.clone(), base)
    }

    fn build(entries: &[Entry], jwt: Option<Arc<JwtPolicy>>, base: Hooks) -> Hooks {
        let mut connection: Arc<dyn ConnectionPolicy> = base.connection.clone();
        if let Some(jwt) = jwt {
            connection = jwt;
        }
        let mut subscription: Vec<Arc<dyn SubscriptionPolicy>> = Vec::new();
        let mut filters: Vec<Arc<dyn EventFilter>> = Vec::new();
        let mut resolvers = base.resolvers.clone();
        for e in entries {
            if let Some(field) = &e.resolves {
                let resolver = WasmResolver::new(e.plugin.clone(), field.clone());
                resolvers.insert(field.clone(), Arc::new(resolver) as Arc<dyn Resolver>);
                continue;
            }
            match e.spec.kind {
                Kind::EventFilter => {
                    filters.push(Arc::new(WasmFilter::new(e.plugin.clone(), e.spec.clone())))
                }
                Kind::SubscriptionPolicy => subscription.push(Arc::new(
                    WasmSubscriptionPolicy::new(e.plugin.clone(), e.spec.clone()),
                )),
                Kind::ConnectionPolicy => {
                    connection = Arc::new(WasmConnectionPolicy::new(e.plugin.clone()))
                }
                // Adapters are chosen per connection by subprotocol (`transport_adapters`).
                Kind::TransportAdapter => {}
                // Refused in `[[plugins]]` (`check_resolvers`).
                Kind::FieldResolver => {}
            }
        }
        Hooks {
            connection,
            subscription,
            filters,
            resolvers,
            ..base
        }
    }

    /// The fields the component resolvers compute.
    pub fn resolved_fields(&self) -> Vec<String> {
        self.entries()
            .iter()
            .filter_map(|e| e.resolves.clone())
            .collect()
    }

    /// The version in force of the plugin (or resolver) named `name`.
    pub fn plugin(&self, name: &str) -> Option<Arc<Plugin>> {
        self.entries()
            .iter()
            .find(|e| e.spec.name() == name)
            .map(|e| e.plugin.clone())
    }

    /// The transport adapters in force; a connection keeps the version it
    /// started with.
    pub fn transports(&self) -> Vec<Arc<WasmTransport>> {
        self.entries()
            .iter()
            .filter_map(|e| e.transport.clone())
            .collect()
    }

    /// Puts the configured hooks in force on `engine`.
    pub fn install(&self, engine: &Engine) -> usize {
        let entries = self.entries();
        engine.set_hooks(Self::build(
            &entries,
            self.jwt.clone(),
            engine.hooks().hooks.clone(),
        ))
    }

    /// Whether any plugin file differs from the version in force (a `stat`
    /// per plugin: cheap enough to poll).
    pub fn changed(&self) -> bool {
        self.entries().iter().any(|e| stamp(&e.path) != e.stamp)
    }

    /// Reloads every plugin whose file changed (all of them with `force`):
    /// compiles and instantiates each new version here, off the event path;
    /// a version that fails is logged and counted, and the old one stays.
    /// If anything changed, the whole set is swapped into `engine` at once.
    pub fn reload(&self, engine: &Engine, force: bool) -> ReloadReport {
        let mut report = ReloadReport::default();
        let mut swapped = Vec::new();
        let mut entries = self.entries();
        for e in entries.iter_mut() {
            let now = stamp(&e.path);
            if !force && now == e.stamp {
                continue;
            }
            let name = e.spec.name();
            let bytes = match std::fs::read(&e.path) {
                Ok(bytes) => bytes,
                Err(err) => {
                    tracing::error!(plugin = %name, path = %e.path.display(), error = %err, "plugin reload rejected: cannot read the file; the previous version keeps running");
                    self.metrics().reload(&name, "rejected");
                    report.rejected.push((name, err.to_string()));
                    e.stamp = now;
                    continue;
                }
            };
            e.stamp = now;
            if crate::plugin::digest(&bytes) == e.plugin.digest() {
                continue;
            }
            match Plugin::load(&self.runtime, &bytes, options(&self.runtime, &e.spec)) {
                Ok(plugin) => {
                    let plugin = Arc::new(plugin);
                    let transport = match transport_of(&e.spec, &plugin) {
                        Ok(t) => t,
                        Err(err) => {
                            tracing::error!(plugin = %name, error = %err, "plugin reload rejected; the previous version keeps running");
                            self.metrics().reload(&name, "rejected");
                            report.rejected.push((name, err.to_string()));
                            continue;
                        }
                    };
                    swapped.push((
                        name.clone(),
                        e.plugin.digest().to_owned(),
                        plugin.digest().to_owned(),
                        plugin.version().as_str(),
                    ));
                    self.metrics().reload(&name, "loaded");
                    e.plugin = plugin;
                    e.transport = transport;
                    report.reloaded.push(name);
                }
                Err(err) => {
                    tracing::error!(plugin = %name, path = %e.path.display(), error = %err, "plugin reload rejected; the previous version keeps running");
                    self.metrics().reload(&name, "rejected");
                    report.rejected.push((name, err.to_string()));
                }
            }
        }
        if !report.reloaded.is_empty() {
            report.revoked = engine.set_hooks(Self::build(
                &entries,
                self.jwt.clone(),
                engine.hooks().hooks.clone(),
            ));
        }
        // Said once the new versions are in force: whoever acts on this
        // line (an operator, a test) must find them deciding.
        for (name, from, to, interface) in swapped {
            tracing::info!(plugin = %name, from = %from, to = %to, interface, "plugin reloaded");
        }
        report
    }

    /// Polls the plugin files every `interval` on a thread of its own and
    /// reloads what changed, until the returned guard is dropped. Polling a
    /// few `stat`s is portable (no inotify limits, works on network and
    /// container mounts) and needs no dependency; a file still being
    /// written is retried on the next look.
    pub fn watch(self: &Arc<Self>, engine: Arc<Engine>, interval: Duration) -> WatchGuard {
        let stop = Arc::new(AtomicBool::new(false));
        let (host, flag) = (Arc::downgrade(self), stop.clone());
        let spawned = std::thread::Builder::new()
            .name("fanwire-plugin-watch".into())
            .spawn(move || {
                while !flag.load(Ordering::Relaxed) {
                    std::thread::sleep(interval);
                    let Some(host) = host.upgrade() else { return };
                    if host.changed() {
                        // Let a writer finish: wait until the file stops changing.
                        loop {
                            let before: Vec<_> =
                                host.entries().iter().map(|e| stamp(&e.path)).collect();
                            std::thread::sleep(interval.min(Duration::from_millis(50)));
                            let after: Vec<_> =
                                host.entries().iter().map(|e| stamp(&e.path)).collect();
                            if before == after {
                                break;
                            }
                        }
                        host.reload(&engine, false);
                    }
                }
            });
        if let Err(e) = spawned {
            tracing::error!(error = %e, "cannot start the plugin folder watcher");
        }
        WatchGuard { stop }
    }
}

/// Stops the folder watcher when dropped.
#[derive(Debug)]
pub struct WatchGuard {
    stop: Arc<AtomicBool>,
}

impl Drop for WatchGuard {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Relaxed);
    }
}

/// Refuses what the schema need not be read for: a field resolver among
/// `[[plugins]]` (it has no field there), two resolvers for one field, and a
/// resolver whose name another entry has (their metrics would mix). The
/// plugin host runs it before loading; configuration builders may run it
/// earlier.
pub fn check_resolvers(specs: &[PluginSpec], resolvers: &[ResolverSpec]) -> Result<(), LoadError> {
    if let Some(spec) = specs.iter().find(|s| s.kind == Kind::FieldResolver) {
        return Err(LoadError::Config(format!(
            "plugin {}: a field-resolver is bound to its field in a [[resolvers]] entry (field, path), not in [[plugins]]",
            spec.name()
        )));
    }
    for (i, r) in resolvers.iter().enumerate() {
        if resolvers[..i].iter().any(|other| other.field == r.field) {
            return Err(LoadError::Config(format!(
                "two resolvers for the field `{}`: bind one [[resolvers]] entry per field",
                r.field
            )));
        }
        let name = r.name();
        let taken = specs.iter().any(|s| s.name() == name)
            || resolvers[..i].iter().any(|other| other.name() == name);
        if taken {
            return Err(LoadError::Config(format!(
                "resolver {name} (field `{}`): another plugin or resolver is named {name}; give this one a `name`",
                r.field
            )));
        }
    }
    Ok(())
}

fn options(runtime: &Runtime, spec: &PluginSpec) -> LoadOptions {
    LoadOptions {
        name: spec.name(),
        kind: spec.kind,
        config: spec.config.clone(),
        timeout_ms: spec.timeout_ms.unwrap_or(runtime.config().call_timeout_ms),
        memory_mb: spec.memory_mb.unwrap_or(runtime.config().memory_mb),
    }
}

fn load(runtime: &Runtime, spec: &PluginSpec, path: &Path) -> Result<Plugin, LoadError> {
    let bytes = std::fs::read(path).map_err(|e| LoadError::Read {
        path: path.display().to_string(),
        reason: e.to_string(),
    })?;
    Plugin::load(runtime, &bytes, options(runtime, spec))
}
