//! Fanwire's plugin runtime: WebAssembly components behind the core's hooks.
//! The only crate that depends on wasmtime.
//!
//! # Layout
//!
//! - `bindings`: `bindgen!` for every WIT version the host loads (one place).
//! - [`runtime`]: the shared wasmtime engine: pooling allocator, epoch ticker.
//! - [`cache`]: the compile cache: components compiled once, kept on disk
//!   keyed by their sha256 and the engine, verified before they are loaded.
//! - [`plugin`]: one loaded version: compile, check world and version,
//!   pre-link, warm instances, the guarded call (deadline, memory cap, fail
//!   closed, recycle).
//! - `host`: what plugins import (log, clock, config) and the memory limiter.
//! - [`filter`], [`policy`]: plugins as the core's `EventFilter`,
//!   `SubscriptionPolicy` and `ConnectionPolicy`.
//! - [`resolver`]: a field-resolver plugin as the core's `Resolver`.
//! - [`transport`]: a custom subprotocol plugin, translated to graphql-transport-ws.
//! - [`set`]: the configured plugins and resolvers as `Hooks`; reload and
//!   atomic swap.
//! - [`jwt`]: the native JWT connection policy.
//! - [`config`]: the TOML sections (`[plugin_runtime]`, `[[plugins]]`,
//!   `[[resolvers]]`); [`metrics`]: `fanwire_plugin_*`.
//! - `convert`: core values to WIT values and back.
//! - `guest`: the JSON text and paths a plugin returns, read with no wasmtime
//!   types (the fuzz target compiles it alone).

// Every public item says what it is (STYLE.md).
#![warn(missing_docs)]

mod bindings;
pub mod cache;
pub mod config;
mod convert;
pub mod filter;
mod guest;
mod host;
pub mod jwt;
pub mod metrics;
pub mod plugin;
pub mod policy;
pub mod resolver;
pub mod runtime;
pub mod set;
pub mod transport;

pub use config::{Kind, PluginSpec, ResolverSpec, RuntimeConfig};
pub use metrics::{CacheResult, PluginMetrics};
pub use plugin::{LoadOptions, Plugin, Version};
pub use runtime::Runtime;
pub use set::{PluginHost, ReloadReport};

/// Why a plugin version could not be loaded. The host keeps the previous
/// version (or refuses to start, when there is none).
#[derive(Debug, Clone, thiserror::Error)]
pub enum LoadError {
    /// The file could not be read.
    #[error("cannot read {path}: {reason}")]
    Read {
        /// The file.
        path: String,
        /// The IO error.
        reason: String,
    },
    /// The file is not WebAssembly.
    #[error("not a WebAssembly file (no \\0asm header)")]
    NotWasm,
    /// The bytes are not a valid component (a core module, a corrupt file).
    #[error("not a valid component: {0}")]
    Compile(String),
    /// The component does not export the configured kind's interface.
    #[error("wrong world: the config says {expected}, the component exports {found}")]
    WrongWorld {
        /// The configured world.
        expected: &'static str,
        /// What the component exports instead.
        found: String,
    },
    /// The component speaks an interface version this host does not load.
    #[error("unsupported interface version: the component exports {found}; this host loads fanwire:plugin {supported}")]
    UnsupportedVersion {
        /// The export, with its version.
        found: String,
        /// The versions this host loads.
        supported: String,
    },
    /// The component's imports cannot be satisfied.
    #[error("cannot link: {0}")]
    Link(String),
    /// The first instance could not be created (start trapped, pool full).
    #[error("cannot instantiate: {0}")]
    Instantiate(String),
    /// The runtime itself could not start.
    #[error("plugin runtime: {0}")]
    Runtime(String),
    /// The configuration is inconsistent.
    #[error("plugin configuration: {0}")]
    Config(String),
}
