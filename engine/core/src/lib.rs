//! Fanwire's engine core: everything between a client's frames and an
//! event's fan-out, with no IO, no pyo3 and no wasmtime, so the Rust host,
//! the plugin runtime and the Python package all build on it.
//!
//! # Layout
//!
//! - [`config`]: every client-facing limit, with defaults and validation.
//! - [`schema`]: SDL parsed and validated, each subscription field bound to a topic.
//! - [`operation`]: a subscribe request parsed, validated, limited and compiled.
//! - [`projection`]: the compiled selection set, run once per group per event.
//! - [`protocol`]: graphql-transport-ws and legacy graphql-ws as state machines.
//! - [`connection`]: one client without its socket: session, subscriptions, outbox.
//! - [`outbox`]: the bounded per-connection queue of pre-serialised frames.
//! - [`registry`]: topic index and subscription groups; dispatch.
//! - [`engine`]: what all connections share; `publish` enters here.
//! - [`backlog`]: accepted events waiting for the dispatcher, bounded.
//! - [`history`]: per-topic windows of recent events, for resuming subscriptions.
//! - [`hooks`]: the extension points: policies, event filters, resolvers.
//! - [`json`]: a resolver's answer kept as JSON text, projected in place.
//! - [`principal`]: who is connected, as a connection policy established it.
//! - [`event`], [`error`], [`metrics`], [`ratelimit`]: the shared vocabulary.

pub mod backlog;
pub mod config;
pub mod connection;
pub mod engine;
pub mod error;
pub mod event;
pub mod history;
pub mod hooks;
pub mod json;
pub mod metrics;
pub mod operation;
pub mod outbox;
pub mod principal;
pub mod projection;
pub mod protocol;
pub mod ratelimit;
pub mod registry;
pub mod schema;

/// Internals the fuzz targets (`tests/fuzz`) call directly; not an API.
#[doc(hidden)]
pub mod fuzzing {
    /// Applies a filter's redaction of dotted `path` to `value`, as dispatch does.
    pub fn redact(value: &mut serde_json::Value, path: &str) {
        crate::hooks::redact(value, &path.split('.').collect::<Vec<_>>());
    }
}

/// Shortcuts for tests, benches and fuzz targets; not an API.
#[doc(hidden)]
pub mod testing {
    use crate::{Dispatched, Engine, Event, Order};

    /// Publishes events and returns what their fan-out did, on an engine
    /// with no dispatcher task (whose `publish` dispatches before it returns).
    pub fn publish_now(engine: &Engine, events: &[Event]) -> Dispatched {
        engine
            .publish(events.to_vec(), Order::Numbered)
            .try_dispatched()
            .expect("an engine without a dispatcher task dispatches before `publish` returns")
    }
}

pub use backlog::{Order, Receipt};
pub use config::{ConfigError, Limits};
pub use connection::Connection;
pub use engine::Engine;
pub use error::GraphQLError;
pub use event::Event;
pub use hooks::{AcceptAll, ConnectionPolicy, Hooks};
pub use principal::Principal;
pub use registry::Dispatched;
pub use schema::{Schema, SchemaError};
