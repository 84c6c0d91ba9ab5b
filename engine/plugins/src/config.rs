//! The plugin sections of the host's TOML: the runtime's limits
//! (`[plugin_runtime]`), which plugins run (`[[plugins]]`), which fields
//! component resolvers compute (`[[resolvers]]`) and the native JWT
//! connection policy (`[auth.jwt]`, see [`crate::jwt`]).

use std::path::PathBuf;

use fanwire_core::Schema;
use serde::{Deserialize, Serialize};
use serde_json::{Map, Value};

use crate::LoadError;

/// What a plugin implements: which WIT world it must export.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum Kind {
    /// `event-filter`: per-group verdicts, batched per-event decisions.
    EventFilter,
    /// `subscription-policy`: accepts or refuses each subscribe.
    SubscriptionPolicy,
    /// `connection-policy`: accepts or refuses each `connection_init`.
    ConnectionPolicy,
    /// `transport-adapter`: a custom WebSocket subprotocol.
    TransportAdapter,
    /// `field-resolver`: computes a subscription field's value, once per
    /// group per event (from 0.3). Bound to its field in `[[resolvers]]`.
    FieldResolver,
}

impl Kind {
    /// The world's name in WIT.
    pub fn world(self) -> &'static str {
        match self {
            Kind::EventFilter => "event-filter",
            Kind::SubscriptionPolicy => "subscription-policy",
            Kind::ConnectionPolicy => "connection-policy",
            Kind::TransportAdapter => "transport-adapter",
            Kind::FieldResolver => "field-resolver",
        }
    }

    /// The interface the world exports.
    pub fn interface(self) -> &'static str {
        match self {
            Kind::EventFilter => "filter",
            Kind::SubscriptionPolicy => "subscription",
            Kind::ConnectionPolicy => "connection",
            Kind::TransportAdapter => "transport",
            Kind::FieldResolver => "resolver",
        }
    }
}

/// The `[plugin_runtime]` table: limits shared by every plugin, and where
/// plugins live.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct RuntimeConfig {
    /// The plugin folder, relative to the config file; `[[plugins]]` paths
    /// are relative to it (to the config file's folder when unset).
    pub folder: Option<PathBuf>,
    /// Watch the folder and reload a plugin when its file changes.
    pub watch: bool,
    /// Milliseconds between two looks at the folder.
    pub watch_interval_ms: u64,
    /// Default deadline of one plugin call, in milliseconds: a plugin that
    /// runs longer is stopped and its answer is a denial.
    pub call_timeout_ms: u64,
    /// Default memory cap of one plugin instance, in MiB.
    pub memory_mb: u64,
    /// Largest memory cap any plugin may ask for, in MiB: the most a memory
    /// of the pooling allocator may grow to (each slot reserves 4 GiB of
    /// address space, or this when larger; reserved, not used).
    pub max_memory_mb: u64,
    /// Instances kept warm per plugin for concurrent calls.
    pub warm_instances: usize,
    /// Component instances the pooling allocator holds across all plugins
    /// (4 memory slots each, 4 GiB of address space per slot).
    pub pool_instances: u32,
    /// Bearer token required by `POST /admin/plugins/reload`; unset
    /// disables that route (the folder watcher and SIGHUP still reload).
    pub admin_token: Option<String>,
    /// Keep each compiled plugin in `cache_dir`, so a start or reload loads
    /// it instead of compiling it again; `false` compiles on every load.
    pub cache: bool,
    /// The compile cache folder, relative to the config file; unset =
    /// `$XDG_CACHE_HOME/fanwire/plugins`, else `~/.cache/fanwire/plugins`.
    pub cache_dir: Option<PathBuf>,
}

/// The most memory one plugin instance can have, in MiB: all a 32-bit
/// WebAssembly memory addresses.
pub const MEMORY_LIMIT_MB: u64 = 4096;

impl RuntimeConfig {
    /// Checks the limits, as a message naming the `[plugin_runtime]` key:
    /// the host and the Python package refuse such a table when it is read.
    pub fn validate(&self) -> Result<(), String> {
        if self.admin_token.as_deref() == Some("") {
            return Err(
                "plugin_runtime.admin_token must not be empty (omit it to disable the admin API)"
                    .into(),
            );
        }
        if !(1..=MEMORY_LIMIT_MB).contains(&self.max_memory_mb) {
            return Err(format!(
                "plugin_runtime.max_memory_mb must be between 1 and {MEMORY_LIMIT_MB} (a 32-bit memory's 4 GiB), got {}",
                self.max_memory_mb
            ));
        }
        if !(1..=self.max_memory_mb).contains(&self.memory_mb) {
            return Err(format!(
                "plugin_runtime.memory_mb must be between 1 and max_memory_mb ({}), got {}",
                self.max_memory_mb, self.memory_mb
            ));
        }
        if self.call_timeout_ms == 0 || self.warm_instances == 0 || self.pool_instances == 0 {
            return Err(
                "plugin_runtime.call_timeout_ms, warm_instances and pool_instances must be at least 1"
                    .into(),
            );
        }
        Ok(())
    }

    /// The compile cache folder in force: `None` when the cache is off, or
    /// when no folder is set and neither `XDG_CACHE_HOME` nor `HOME` is.
    pub fn cache_folder(&self) -> Option<PathBuf> {
        if !self.cache {
            return None;
        }
        self.cache_dir.clone().or_else(crate::cache::default_dir)
    }
}

impl Default for RuntimeConfig {
    fn default() -> Self {
        RuntimeConfig {
            folder: None,
            watch: true,
            watch_interval_ms: 250,
            call_timeout_ms: 20,
            memory_mb: 64,
            max_memory_mb: 256,
            warm_instances: 4,
            pool_instances: 256,
            admin_token: None,
            cache: true,
            cache_dir: None,
        }
    }
}

/// One `[[plugins]]` entry.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct PluginSpec {
    /// The name in logs and metrics; defaults to the file's stem.
    #[serde(default)]
    pub name: Option<String>,
    /// The component file, relative to the plugin folder. Its file stem is
    /// the plugin's default name.
    pub path: PathBuf,
    /// The world the component must export.
    pub kind: Kind,
    /// Position among plugins of the same kind: lower runs first; equal
    /// orders keep the file's order.
    #[serde(default)]
    pub order: i64,
    /// Only subscriptions to these root fields (all when empty).
    #[serde(default)]
    pub fields: Vec<String>,
    /// Only these topics; a trailing `*` matches any suffix (all when empty).
    #[serde(default)]
    pub topics: Vec<String>,
    /// This plugin's call deadline in milliseconds (else the runtime's).
    #[serde(default)]
    pub timeout_ms: Option<u64>,
    /// This plugin's memory cap in MiB (else the runtime's).
    #[serde(default)]
    pub memory_mb: Option<u64>,
    /// The plugin's own settings, handed to it as a JSON object.
    #[serde(default)]
    pub config: Map<String, Value>,
}

impl PluginSpec {
    /// The name in logs and metrics.
    pub fn name(&self) -> String {
        self.name.clone().unwrap_or_else(|| {
            self.path
                .file_stem()
                .map(|s| s.to_string_lossy().into_owned())
                .unwrap_or_else(|| "plugin".into())
        })
    }

    /// Whether a subscription to `field` on `topic` is this plugin's business.
    pub fn applies_to(&self, field: &str, topic: &str) -> bool {
        let field_ok = self.fields.is_empty() || self.fields.iter().any(|f| f == field);
        let topic_ok = self.topics.is_empty()
            || self.topics.iter().any(|t| match t.strip_suffix('*') {
                Some(prefix) => topic.starts_with(prefix),
                None => t == topic,
            });
        field_ok && topic_ok
    }
}

/// One `[[resolvers]]` entry: a `field-resolver` component that computes
/// a `Subscription` field's value, once per group per event.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ResolverSpec {
    /// The `Subscription` field it computes; at most one resolver per field.
    pub field: String,
    /// The component file, relative to the plugin folder.
    pub path: PathBuf,
    /// The name in logs and metrics; defaults to the file's stem.
    #[serde(default)]
    pub name: Option<String>,
    /// This resolver's call deadline in milliseconds (else the runtime's).
    #[serde(default)]
    pub timeout_ms: Option<u64>,
    /// This resolver's memory cap in MiB (else the runtime's).
    #[serde(default)]
    pub memory_mb: Option<u64>,
    /// The resolver's own settings, handed to it as a JSON object.
    #[serde(default)]
    pub config: Map<String, Value>,
}

impl ResolverSpec {
    /// The name in logs and metrics.
    pub fn name(&self) -> String {
        self.plugin().name()
    }

    /// The same entry as a plugin of kind `field-resolver` scoped to its
    /// field: how the plugin host loads, names and reloads it.
    pub fn plugin(&self) -> PluginSpec {
        PluginSpec {
            name: self.name.clone(),
            path: self.path.clone(),
            kind: Kind::FieldResolver,
            order: 0,
            fields: vec![self.field.clone()],
            topics: Vec::new(),
            timeout_ms: self.timeout_ms,
            memory_mb: self.memory_mb,
            config: self.config.clone(),
        }
    }

    /// Checks each binding against the schema before anything loads: its
    /// field must be a field of the `Subscription` type. (The plugin host
    /// refuses two resolvers for one field.)
    pub fn check_fields(resolvers: &[ResolverSpec], schema: &Schema) -> Result<(), LoadError> {
        for r in resolvers {
            if schema.topic(&r.field).is_none() {
                let mut fields: Vec<&str> = schema.subscription_fields().collect();
                fields.sort_unstable();
                return Err(LoadError::Config(format!(
                    "resolver {} ({}): the schema's {} type has no field `{}` (its fields: {})",
                    r.name(),
                    r.path.display(),
                    schema.subscription_type(),
                    r.field,
                    fields.join(", ")
                )));
            }
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn scope_matches_fields_and_topic_prefixes() {
        let spec: PluginSpec = toml::from_str(
            "path = 'a.wasm'\nkind = 'event-filter'\nfields = ['orders']\ntopics = ['orders:*', 'exact']",
        )
        .unwrap();
        assert_eq!(spec.name(), "a");
        assert!(spec.applies_to("orders", "orders:5"));
        assert!(spec.applies_to("orders", "exact"));
        assert!(!spec.applies_to("orders", "exactly"));
        assert!(!spec.applies_to("users", "orders:5"));
    }

    #[test]
    fn resolvers_name_a_subscription_field() {
        let schema =
            Schema::parse("type Query { ok: Boolean }\ntype Subscription { tick: Int, tock: Int }")
                .unwrap();
        let spec = |field: &str| -> ResolverSpec {
            toml::from_str(&format!("field = '{field}'\npath = 'dir/upper.wasm'")).unwrap()
        };
        assert_eq!(spec("tick").name(), "upper");
        assert_eq!(spec("tick").plugin().kind, Kind::FieldResolver);
        assert!(ResolverSpec::check_fields(&[spec("tick"), spec("tock")], &schema).is_ok());
        let err = ResolverSpec::check_fields(&[spec("ok")], &schema)
            .unwrap_err()
            .to_string();
        assert!(
            err.contains("Subscription type has no field `ok` (its fields: tick, tock)"),
            "{err}"
        );
        assert!(
            toml::from_str::<ResolverSpec>("field = 'tick'\npath = 'a.wasm'\nkind = 'x'").is_err()
        );
    }
}
