//! The host's TOML configuration, with command-line overrides.

use std::net::SocketAddr;
use std::path::{Path, PathBuf};

use fanwire_bus::{BusConfig, SourcesConfig};
use fanwire_core::Limits;
use fanwire_plugins::jwt::JwtConfig;
use fanwire_plugins::{PluginSpec, ResolverSpec, RuntimeConfig};
use serde::{Deserialize, Serialize};

/// Why the configuration could not be used.
#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    /// The file could not be read.
    #[error("cannot read config file {path}: {source}")]
    Read {
        /// The file.
        path: PathBuf,
        /// The IO error.
        source: std::io::Error,
    },
    /// The file is not valid TOML or has unknown keys.
    #[error("invalid config file {path}: {source}")]
    Parse {
        /// The file.
        path: PathBuf,
        /// The TOML error, with line and column.
        source: Box<toml::de::Error>,
    },
    /// A value is out of range.
    #[error("invalid configuration: {0}")]
    Invalid(String),
}

/// The whole configuration file.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct Config {
    /// Listening address, schema, publish auth, shutdown.
    pub server: ServerConfig,
    /// Every client-facing limit (see `fanwire_core::Limits`).
    pub limits: Limits,
    /// The built-in demo event generator.
    pub demo: DemoConfig,
    /// How events travel between nodes (see `fanwire_bus::BusConfig`).
    pub bus: BusConfig,
    /// Where events come from besides publishes (`[sources.postgres]`).
    pub sources: SourcesConfig,
    /// Limits shared by every WebAssembly plugin, and the plugin folder.
    pub plugin_runtime: RuntimeConfig,
    /// The plugins that run, in order (`[[plugins]]`).
    pub plugins: Vec<PluginSpec>,
    /// Component resolvers, one per `Subscription` field (`[[resolvers]]`).
    pub resolvers: Vec<ResolverSpec>,
    /// Native connection authentication (`[auth.jwt]`).
    pub auth: AuthConfig,
}

/// The `[auth]` table.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct AuthConfig {
    /// Verify a JWT at `connection_init` (see `fanwire_plugins::jwt`).
    pub jwt: Option<JwtConfig>,
}

/// The `[server]` table.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct ServerConfig {
    /// Address to listen on.
    pub listen: SocketAddr,
    /// SDL file, relative to the config file.
    pub schema: Option<PathBuf>,
    /// Bearer token required by `POST /publish`; unset means no auth
    /// (only sensible on loopback).
    pub publish_token: Option<String>,
    /// Largest `POST /publish` body in bytes.
    pub max_publish_bytes: usize,
    /// Milliseconds to let clients receive their close frames on shutdown.
    pub shutdown_timeout_ms: u64,
    /// Milliseconds a client has to send a whole request head, counted from
    /// when the connection opens or its previous response was written: a
    /// silent, half-sent or idle keep-alive connection is closed after it.
    pub header_read_timeout_ms: u64,
    /// TCP connections not (yet) upgraded to WebSocket; one more is answered
    /// 503 and closed. Open WebSockets count against `limits.max_connections`
    /// instead, so idle sockets cannot take their places; keep the sum of
    /// both under the process's descriptor limit (`ulimit -n`).
    pub max_http_connections: usize,
    /// The share of the connection bucket (`limits.connections_per_second`
    /// and `limits.connection_burst`) that one source address (an IPv6 /64)
    /// may use, so one address cannot starve the others; 1.0 turns it off.
    pub connection_share_per_address: f64,
}

impl Default for ServerConfig {
    fn default() -> Self {
        ServerConfig {
            listen: SocketAddr::from(([127, 0, 0, 1], 4000)),
            schema: None,
            publish_token: None,
            max_publish_bytes: 1024 * 1024,
            shutdown_timeout_ms: 5_000,
            header_read_timeout_ms: 10_000,
            max_http_connections: 4096,
            connection_share_per_address: 0.5,
        }
    }
}

/// The `[demo]` table: a generator that publishes sample events.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct DemoConfig {
    /// Run the generator (and use the demo schema when no schema is set).
    pub enabled: bool,
    /// Milliseconds between generated events.
    pub interval_ms: u64,
}

impl Default for DemoConfig {
    fn default() -> Self {
        DemoConfig {
            enabled: false,
            interval_ms: 500,
        }
    }
}

impl ServerConfig {
    /// Checks the `[server]` values that do not depend on the schema.
    pub fn validate(&self) -> Result<(), ConfigError> {
        if self.max_publish_bytes < 64 {
            return Err(ConfigError::Invalid(
                "server.max_publish_bytes must be at least 64".into(),
            ));
        }
        if self.publish_token.as_deref() == Some("") {
            return Err(ConfigError::Invalid(
                "server.publish_token must not be empty (omit it to disable auth)".into(),
            ));
        }
        if self.header_read_timeout_ms == 0 {
            return Err(ConfigError::Invalid(
                "server.header_read_timeout_ms must be at least 1".into(),
            ));
        }
        if self.max_http_connections == 0 {
            return Err(ConfigError::Invalid(
                "server.max_http_connections must be at least 1".into(),
            ));
        }
        let share = self.connection_share_per_address;
        if !(share > 0.0 && share <= 1.0) {
            return Err(ConfigError::Invalid(format!(
                "server.connection_share_per_address must be above 0 and at most 1, not {share}"
            )));
        }
        Ok(())
    }
}

impl Config {
    /// Reads a TOML file; relative paths (`server.schema`, the plugin folder,
    /// plugin and resolver files, the JWT key) are resolved against the
    /// file's folder.
    pub fn load(path: &Path) -> Result<Config, ConfigError> {
        let text = std::fs::read_to_string(path).map_err(|source| ConfigError::Read {
            path: path.to_owned(),
            source,
        })?;
        let mut config: Config = toml::from_str(&text).map_err(|source| ConfigError::Parse {
            path: path.to_owned(),
            source: Box::new(source),
        })?;
        if let (Some(schema), Some(dir)) = (&config.server.schema, path.parent()) {
            if schema.is_relative() {
                config.server.schema = Some(dir.join(schema));
            }
        }
        if let Some(dir) = path.parent() {
            config.resolve_plugin_paths(dir);
        }
        Ok(config)
    }

    /// Makes the plugin folder, plugin and resolver files, compile cache
    /// folder and JWT key file absolute: the folders and key against `dir`,
    /// plugin and resolver files against the plugin folder (or `dir`).
    pub fn resolve_plugin_paths(&mut self, dir: &Path) {
        let folder = match &self.plugin_runtime.folder {
            Some(f) if f.is_relative() => dir.join(f),
            Some(f) => f.clone(),
            None => dir.to_owned(),
        };
        if self.plugin_runtime.folder.is_some() {
            self.plugin_runtime.folder = Some(folder.clone());
        }
        // An empty one stays empty, for `validate_node` to refuse.
        if let Some(cache) =
            (self.plugin_runtime.cache_dir.as_mut()).filter(|d| !d.as_os_str().is_empty())
        {
            *cache = dir.join(&*cache);
        }
        for plugin in &mut self.plugins {
            plugin.path = folder.join(&plugin.path);
        }
        for resolver in &mut self.resolvers {
            resolver.path = folder.join(&resolver.path);
        }
        if let Some(key) = self
            .auth
            .jwt
            .as_mut()
            .and_then(|j| j.public_key_file.as_mut())
        {
            *key = dir.join(&*key);
        }
    }

    /// Checks what a [`crate::Node`] reads: `[bus]`, `[sources]` and
    /// `[plugin_runtime]` (plugins, resolvers and keys are checked when they
    /// load).
    pub fn validate_node(&self) -> Result<(), ConfigError> {
        self.bus
            .validate()
            .and_then(|()| self.sources.validate())
            .map_err(|e| ConfigError::Invalid(e.to_string()))?;
        self.plugin_runtime
            .validate()
            .map_err(ConfigError::Invalid)?;
        if self
            .plugin_runtime
            .cache_dir
            .as_ref()
            .is_some_and(|d| d.as_os_str().is_empty())
        {
            return Err(ConfigError::Invalid(
                "plugin_runtime.cache_dir must not be empty (cache = false turns the compile cache off)"
                    .into(),
            ));
        }
        Ok(())
    }

    /// Checks every value; the host refuses to start on the first bad one.
    pub fn validate(&self) -> Result<(), ConfigError> {
        self.limits
            .validate()
            .map_err(|e| ConfigError::Invalid(e.to_string()))?;
        self.server.validate()?;
        self.validate_node()?;
        if self.demo.enabled && self.demo.interval_ms == 0 {
            return Err(ConfigError::Invalid(
                "demo.interval_ms must be at least 1".into(),
            ));
        }
        if self.server.schema.is_none() && !self.demo.enabled {
            return Err(ConfigError::Invalid(
                "no schema: pass --schema FILE, set server.schema in the config, or run with --demo".into(),
            ));
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn unknown_keys_and_bad_limits_are_refused() {
        let err = toml::from_str::<Config>("[server]\nlisen = \"1.2.3.4:1\"").unwrap_err();
        assert!(err.to_string().contains("lisen"), "{err}");
        let config: Config =
            toml::from_str("[server]\nschema = \"s.graphql\"\n[limits]\nqueue_depth = 0").unwrap();
        assert!(config
            .validate()
            .unwrap_err()
            .to_string()
            .contains("queue_depth"));
        // A memory cap a 32-bit plugin memory cannot have (or 0, or one whose
        // size in bytes overflows) would leave every plugin without memory.
        for max in ["0", "4097", "17592186044416"] {
            let config: Config = toml::from_str(&format!(
                "[server]\nschema = \"s.graphql\"\n[plugin_runtime]\nmax_memory_mb = {max}"
            ))
            .unwrap();
            let err = config.validate().unwrap_err().to_string();
            assert!(
                err.contains("max_memory_mb must be between 1 and 4096"),
                "{err}"
            );
        }
        let config: Config = toml::from_str(
            "[server]\nschema = \"s.graphql\"\n[plugin_runtime]\npool_instances = 0",
        )
        .unwrap();
        assert!(config
            .validate()
            .unwrap_err()
            .to_string()
            .contains("pool_instances"));
    }

    #[test]
    fn the_example_config_documents_the_defaults() {
        let path =
            Path::new(env!("CARGO_MANIFEST_DIR")).join("../../examples/standalone/fanwire.toml");
        assert_eq!(Config::load(&path).unwrap(), Config::default());
    }

    #[test]
    fn plugin_paths_resolve_against_the_plugin_folder() {
        let path = Path::new(env!("CARGO_MANIFEST_DIR"))
            .join("../../examples/standalone/demo-plugins.toml");
        let config = Config::load(&path).unwrap();
        let dir = path.parent().unwrap();
        assert_eq!(config.plugins.len(), 2);
        assert_eq!(
            config.plugins[0].path,
            dir.join("../../plugins/dist").join("redact-fields.wasm")
        );
        assert_eq!(config.plugin_runtime.admin_token.as_deref(), Some("demo"));
    }

    #[test]
    fn the_compile_cache_folder_starts_at_the_file_and_is_not_empty() {
        let mut config: Config = toml::from_str("[plugin_runtime]\ncache_dir = \"cache\"").unwrap();
        config.resolve_plugin_paths(Path::new("/etc/fanwire"));
        assert_eq!(
            config.plugin_runtime.cache_folder(),
            Some(Path::new("/etc/fanwire/cache").to_owned())
        );
        let mut config: Config = toml::from_str("[plugin_runtime]\ncache_dir = \"\"").unwrap();
        config.resolve_plugin_paths(Path::new("/etc/fanwire"));
        let err = config.validate_node().unwrap_err().to_string();
        assert!(err.contains("cache = false"), "{err}");
    }

    #[test]
    fn every_default_is_written_out_and_read_back() {
        let text = toml::to_string(&Config::default()).unwrap();
        let back: Config = toml::from_str(&text).unwrap();
        assert_eq!(back, Config::default());
    }
}
