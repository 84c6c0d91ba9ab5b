//! Per-instance host state: what the `host` interface serves a plugin (logs,
//! clock, config) and the memory cap its store enforces.

use std::sync::Arc;
use std::time::{SystemTime, UNIX_EPOCH};

use crate::bindings::v0_1::types;

/// The data of one plugin instance's store.
#[derive(Debug)]
pub(crate) struct HostState {
    /// The plugin's name, on every log line it writes.
    pub plugin: Arc<str>,
    /// Its `config` table as JSON text.
    pub config: Arc<str>,
    /// Its memory cap in bytes.
    pub memory_cap: usize,
    /// Set when the plugin tried to grow past the cap, to tell that trap apart.
    pub memory_hit: bool,
}

/// The largest number of core instances one component may create in its
/// store: a Rust guest needs 3, a componentize-py guest about 20.
const MAX_INSTANCES: usize = 64;

impl wasmtime::ResourceLimiter for HostState {
    fn memory_growing(
        &mut self,
        _current: usize,
        desired: usize,
        _maximum: Option<usize>,
    ) -> wasmtime::Result<bool> {
        if desired > self.memory_cap {
            self.memory_hit = true;
            // An error (not `Ok(false)`) traps at once, so the plugin cannot
            // loop on failed allocations until its deadline.
            return Err(wasmtime::Error::msg(format!(
                "plugin memory cap of {} MiB reached",
                self.memory_cap >> 20
            )));
        }
        Ok(true)
    }

    fn table_growing(
        &mut self,
        _current: usize,
        desired: usize,
        _maximum: Option<usize>,
    ) -> wasmtime::Result<bool> {
        // Table elements are pointer-sized; hold them to the same cap.
        Ok(desired.saturating_mul(std::mem::size_of::<usize>()) <= self.memory_cap)
    }

    fn instances(&self) -> usize {
        MAX_INSTANCES
    }

    fn memories(&self) -> usize {
        MAX_INSTANCES
    }

    fn tables(&self) -> usize {
        MAX_INSTANCES
    }
}

impl HostState {
    fn log(&self, level: tracing::Level, message: &str, fields: &[(String, String)]) {
        let plugin = &*self.plugin;
        // Fields are rendered as `k=v` pairs: tracing needs static field names.
        let fields: String = fields
            .iter()
            .map(|(k, v)| format!("{k}={v:?}"))
            .collect::<Vec<_>>()
            .join(" ");
        match level {
            tracing::Level::TRACE => tracing::trace!(plugin, %fields, "{message}"),
            tracing::Level::DEBUG => tracing::debug!(plugin, %fields, "{message}"),
            tracing::Level::INFO => tracing::info!(plugin, %fields, "{message}"),
            tracing::Level::WARN => tracing::warn!(plugin, %fields, "{message}"),
            _ => tracing::error!(plugin, %fields, "{message}"),
        }
    }

    fn now_ms() -> u64 {
        SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .map(|d| d.as_millis() as u64)
            .unwrap_or(0)
    }
}

/// The `host` interface of one WIT version, served by the same `HostState`
/// methods (each version's `level` enum is its own Rust type).
macro_rules! host_interface {
    ($host:path) => {
        impl $host for HostState {
            fn log(&mut self, level: Level, message: String, fields: Vec<(String, String)>) {
                let level = match level {
                    Level::Trace => tracing::Level::TRACE,
                    Level::Debug => tracing::Level::DEBUG,
                    Level::Info => tracing::Level::INFO,
                    Level::Warn => tracing::Level::WARN,
                    Level::Error => tracing::Level::ERROR,
                };
                HostState::log(self, level, &message, &fields);
            }

            fn now_ms(&mut self) -> u64 {
                HostState::now_ms()
            }

            fn config(&mut self) -> String {
                self.config.to_string()
            }
        }
    };
}

mod v0_1_host {
    use super::HostState;
    use crate::bindings::v0_1::host::Level;
    host_interface!(crate::bindings::v0_1::host::Host);
}

mod v0_2_host {
    use super::HostState;
    use crate::bindings::v0_2::host::Level;
    host_interface!(crate::bindings::v0_2::host::Host);
}

mod v0_3_host {
    use super::HostState;
    use crate::bindings::v0_3::host::Level;
    host_interface!(crate::bindings::v0_3::host::Host);
}

mod v0_4_host {
    use super::HostState;
    use crate::bindings::v0_4::host::Level;
    host_interface!(crate::bindings::v0_4::host::Host);
}

impl types::Host for HostState {}
