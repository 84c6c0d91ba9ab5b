//! `fanwire._native`: the Rust half of the `fanwire` Python package. The
//! engine is `fanwire-core`'s, the in-process server `fanwire-server`'s;
//! this crate only adapts them to Python.
//!
//! # Layout
//!
//! - [`manager`]: `Manager`, the schema and resolvers, then the engine.
//! - [`resolver`]: Python functions (sync or async) as core `Resolver`s.
//! - [`context`]: `Context` and `Principal`, what a resolver sees.
//! - [`policy`]: a Python function as the connection policy.
//! - [`connection`]: `NativeConnection`, the core connection for a socket
//!   that a Python framework holds.
//! - [`server`]: `RunningServer`, the Rust server inside the process.
//! - [`executor`]: runs Rust futures on the application's asyncio loop.
//! - [`awaitable`]: Rust futures on the tokio runtime as asyncio futures.
//! - [`interpreter`]: when runtime threads may call into Python, and the
//!   `atexit` hook that stops them before the interpreter finalizes.
//! - [`config`]: `SubscriptionConfig`, every limit with its default, and
//!   the node's tables.
//! - [`settings`]: `BusConfig`, `PostgresSource`, `Plugin`,
//!   `ComponentResolver`, `PluginRuntime`, `JwtAuth`: the host's TOML tables
//!   as Python classes (the same serde types, defaults and validation).
//! - [`convert`]: JSON values to Python objects and back.
//! - [`errors`]: the exception classes.

mod awaitable;
mod config;
mod connection;
mod context;
mod convert;
mod errors;
mod executor;
mod interpreter;
mod manager;
mod policy;
mod resolver;
mod server;
mod settings;

use pyo3::prelude::*;
use pyo3::types::PyCFunction;

/// The native module; import `fanwire` instead.
#[pymodule]
fn _native(m: &Bound<'_, PyModule>) -> PyResult<()> {
    let py = m.py();
    // Runs before finalization begins, after the application's loop has
    // ended: from here on no runtime thread calls into Python.
    let quiesce = PyCFunction::new_closure(py, None, None, |args, _kwargs| {
        interpreter::quiesce(args.py());
    })?;
    py.import("atexit")?.call_method1("register", (quiesce,))?;
    m.add("__version__", env!("CARGO_PKG_VERSION"))?;
    m.add_class::<manager::Manager>()?;
    m.add_class::<config::SubscriptionConfig>()?;
    m.add_class::<settings::BusConfig>()?;
    m.add_class::<settings::PostgresSource>()?;
    m.add_class::<settings::Plugin>()?;
    m.add_class::<settings::ComponentResolver>()?;
    m.add_class::<settings::PluginRuntime>()?;
    m.add_class::<settings::JwtAuth>()?;
    m.add_class::<context::Context>()?;
    m.add_class::<context::Principal>()?;
    m.add_class::<connection::NativeConnection>()?;
    m.add_class::<server::RunningServer>()?;
    m.add_class::<resolver::Pending>()?;
    // An asyncio task accepts it as its coroutine.
    py.import("collections.abc")?
        .getattr("Coroutine")?
        .call_method1("register", (py.get_type::<resolver::Pending>(),))?;
    m.add_class::<executor::Executor>()?;
    m.add("SchemaError", py.get_type::<errors::SchemaError>())?;
    m.add("ConfigError", py.get_type::<errors::ConfigError>())?;
    m.add("PublishError", py.get_type::<errors::PublishError>())?;
    m.add("ServerError", py.get_type::<errors::ServerError>())?;
    m.add(
        "ConnectionRejected",
        py.get_type::<errors::ConnectionRejected>(),
    )?;
    Ok(())
}
