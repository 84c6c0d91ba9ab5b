//! The host bindings of every WIT version this host loads: the one place
//! that runs `bindgen!`. Each version is a module; the worlds of a version
//! share that version's `types` and `host` interfaces.

/// `fanwire:plugin@0.1.0`.
pub mod v0_1 {
    /// The `event-filter` world; also the home of the shared interfaces.
    pub mod filter {
        wasmtime::component::bindgen!({
            path: "../../wit/v0.1.0",
            world: "event-filter",
        });
    }

    /// The `subscription-policy` world.
    pub mod subscription {
        wasmtime::component::bindgen!({
            path: "../../wit/v0.1.0",
            world: "subscription-policy",
            with: {
                "fanwire:plugin/types": super::filter::fanwire::plugin::types,
                "fanwire:plugin/host": super::filter::fanwire::plugin::host,
            },
        });
    }

    /// The `connection-policy` world.
    pub mod connection {
        wasmtime::component::bindgen!({
            path: "../../wit/v0.1.0",
            world: "connection-policy",
            with: {
                "fanwire:plugin/types": super::filter::fanwire::plugin::types,
                "fanwire:plugin/host": super::filter::fanwire::plugin::host,
            },
        });
    }

    /// The `transport-adapter` world.
    pub mod transport {
        wasmtime::component::bindgen!({
            path: "../../wit/v0.1.0",
            world: "transport-adapter",
            with: {
                "fanwire:plugin/types": super::filter::fanwire::plugin::types,
                "fanwire:plugin/host": super::filter::fanwire::plugin::host,
            },
        });
    }

    pub use filter::fanwire::plugin::{host, types};
}
