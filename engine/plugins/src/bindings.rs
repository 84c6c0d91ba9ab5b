//! The host bindings of every WIT version this host loads: the one place
//! that runs `bindgen!`. Each version is a module whose worlds share that
//! version's `host` interface (linked under its own versioned name).
//!
//! Every version reuses 0.1's `types` Rust module: component records and
//! variants typecheck by structure, not by the package they were declared
//! in, and `types.wit` has not changed since 0.1 (0.3 reworded a comment),
//! so the conversions in `convert` serve all versions. A version whose
//! `types` differ must get its own module here (and its own conversions).
//! Exported interfaces cannot be shared that way (`with:` maps imports
//! only): each version's `filter`, `connection` and `transport` records are
//! Rust types of their own, of the same shape, which the adapters map.

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

/// `fanwire:plugin@0.2.0`: `filter` takes per-group contexts.
pub mod v0_2 {
    /// The `event-filter` world; also the home of 0.2's `host`.
    pub mod filter {
        wasmtime::component::bindgen!({
            path: "../../wit/v0.2.0",
            world: "event-filter",
            with: {
                "fanwire:plugin/types": crate::bindings::v0_1::types,
            },
        });
    }

    /// The `subscription-policy` world.
    pub mod subscription {
        wasmtime::component::bindgen!({
            path: "../../wit/v0.2.0",
            world: "subscription-policy",
            with: {
                "fanwire:plugin/types": crate::bindings::v0_1::types,
                "fanwire:plugin/host": super::filter::fanwire::plugin::host,
            },
        });
    }

    /// The `connection-policy` world.
    pub mod connection {
        wasmtime::component::bindgen!({
            path: "../../wit/v0.2.0",
            world: "connection-policy",
            with: {
                "fanwire:plugin/types": crate::bindings::v0_1::types,
                "fanwire:plugin/host": super::filter::fanwire::plugin::host,
            },
        });
    }

    /// The `transport-adapter` world.
    pub mod transport {
        wasmtime::component::bindgen!({
            path: "../../wit/v0.2.0",
            world: "transport-adapter",
            with: {
                "fanwire:plugin/types": crate::bindings::v0_1::types,
                "fanwire:plugin/host": super::filter::fanwire::plugin::host,
            },
        });
    }

    pub use filter::fanwire::plugin::host;
}

/// `fanwire:plugin@0.3.0`: adds the `field-resolver` world; the other
/// interfaces are 0.2's, as types of their own.
pub mod v0_3 {
    /// The `event-filter` world; also the home of 0.3's `host`.
    pub mod filter {
        wasmtime::component::bindgen!({
            path: "../../wit/v0.3.0",
            world: "event-filter",
            with: {
                "fanwire:plugin/types": crate::bindings::v0_1::types,
            },
        });
    }

    /// The `subscription-policy` world.
    pub mod subscription {
        wasmtime::component::bindgen!({
            path: "../../wit/v0.3.0",
            world: "subscription-policy",
            with: {
                "fanwire:plugin/types": crate::bindings::v0_1::types,
                "fanwire:plugin/host": super::filter::fanwire::plugin::host,
            },
        });
    }

    /// The `connection-policy` world.
    pub mod connection {
        wasmtime::component::bindgen!({
            path: "../../wit/v0.3.0",
            world: "connection-policy",
            with: {
                "fanwire:plugin/types": crate::bindings::v0_1::types,
                "fanwire:plugin/host": super::filter::fanwire::plugin::host,
            },
        });
    }

    /// The `transport-adapter` world.
    pub mod transport {
        wasmtime::component::bindgen!({
            path: "../../wit/v0.3.0",
            world: "transport-adapter",
            with: {
                "fanwire:plugin/types": crate::bindings::v0_1::types,
                "fanwire:plugin/host": super::filter::fanwire::plugin::host,
            },
        });
    }

    /// The `field-resolver` world (new in 0.3).
    pub mod resolver {
        wasmtime::component::bindgen!({
            path: "../../wit/v0.3.0",
            world: "field-resolver",
            with: {
                "fanwire:plugin/types": crate::bindings::v0_1::types,
                "fanwire:plugin/host": super::filter::fanwire::plugin::host,
            },
        });
    }

    pub use filter::fanwire::plugin::host;
}

/// `fanwire:plugin@0.4.0`: `resolver` gains `prepare` and `resolve` takes
/// the group's context; the other interfaces are 0.2's, as types of their own.
pub mod v0_4 {
    /// The `event-filter` world; also the home of 0.4's `host`.
    pub mod filter {
        wasmtime::component::bindgen!({
            path: "../../wit/v0.4.0",
            world: "event-filter",
            with: {
                "fanwire:plugin/types": crate::bindings::v0_1::types,
            },
        });
    }

    /// The `subscription-policy` world.
    pub mod subscription {
        wasmtime::component::bindgen!({
            path: "../../wit/v0.4.0",
            world: "subscription-policy",
            with: {
                "fanwire:plugin/types": crate::bindings::v0_1::types,
                "fanwire:plugin/host": super::filter::fanwire::plugin::host,
            },
        });
    }

    /// The `connection-policy` world.
    pub mod connection {
        wasmtime::component::bindgen!({
            path: "../../wit/v0.4.0",
            world: "connection-policy",
            with: {
                "fanwire:plugin/types": crate::bindings::v0_1::types,
                "fanwire:plugin/host": super::filter::fanwire::plugin::host,
            },
        });
    }

    /// The `transport-adapter` world.
    pub mod transport {
        wasmtime::component::bindgen!({
            path: "../../wit/v0.4.0",
            world: "transport-adapter",
            with: {
                "fanwire:plugin/types": crate::bindings::v0_1::types,
                "fanwire:plugin/host": super::filter::fanwire::plugin::host,
            },
        });
    }

    /// The `field-resolver` world (`prepare` new in 0.4).
    pub mod resolver {
        wasmtime::component::bindgen!({
            path: "../../wit/v0.4.0",
            world: "field-resolver",
            with: {
                "fanwire:plugin/types": crate::bindings::v0_1::types,
                "fanwire:plugin/host": super::filter::fanwire::plugin::host,
            },
        });
    }

    pub use filter::fanwire::plugin::host;
}
