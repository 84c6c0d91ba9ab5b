//! The host's `[bus]`, `[sources.postgres]`, `[[plugins]]`, `[[resolvers]]`,
//! `[plugin_runtime]` and `[auth.jwt]` tables as Python classes. Each wraps
//! the serde type that the TOML loader fills: keyword arguments are read
//! the way TOML keys are (same names, same defaults, unknown names and
//! wrong types refused), then checked by the same validation code, so the
//! two ways of configuring Fanwire cannot drift apart.

use std::path::{Path, PathBuf};

use fanwire_bus::{BusConfig as BusTable, PostgresConfig};
use fanwire_plugins::jwt::{JwtConfig, JwtPolicy};
use fanwire_plugins::{Kind, PluginSpec, ResolverSpec, RuntimeConfig};
use pyo3::exceptions::PyTypeError;
use pyo3::prelude::*;
use pyo3::types::PyDict;
use serde::de::DeserializeOwned;
use serde::Serialize;
use serde_json::{Map, Value};

use crate::convert::{from_py, to_py};
use crate::errors::ConfigError;

/// The working directory, against which relative paths given in Python
/// are resolved (a TOML file's paths are resolved against its folder).
pub fn cwd() -> PyResult<PathBuf> {
    std::env::current_dir()
        .map_err(|e| ConfigError::new_err(format!("cannot read the working directory: {e}")))
}

/// `path` made absolute against the working directory.
fn absolute(path: &Path) -> PyResult<PathBuf> {
    Ok(if path.is_relative() {
        cwd()?.join(path)
    } else {
        path.to_owned()
    })
}

/// Reads `T` from named arguments, as the TOML loader reads a table.
fn from_arguments<'py, T: DeserializeOwned>(
    class: &str,
    positional: &[(&str, &Bound<'py, PyAny>)],
    kwargs: Option<&Bound<'py, PyDict>>,
) -> PyResult<T> {
    let mut table = Map::new();
    let mut put = |key: String, value: &Bound<'_, PyAny>| -> PyResult<()> {
        // `pathlib.Path` and other path-likes are strings in TOML.
        let value = if value.hasattr("__fspath__")? {
            value.call_method0("__fspath__")?
        } else {
            value.clone()
        };
        let json = from_py(&value)
            .map_err(|e| ConfigError::new_err(format!("{class}.{key}: {}", e.value(value.py()))))?;
        if table.insert(key.clone(), json).is_some() {
            return Err(PyTypeError::new_err(format!(
                "{class}() got multiple values for argument '{key}'"
            )));
        }
        Ok(())
    };
    for (name, value) in positional {
        put((*name).to_owned(), value)?;
    }
    if let Some(kwargs) = kwargs {
        for (key, value) in kwargs.iter() {
            put(key.extract()?, &value)?;
        }
    }
    serde_json::from_value(Value::Object(table.clone())).map_err(|e| {
        // serde_json names the field only for unknown or missing ones:
        // find the value whose absence makes the table read.
        let culprit = table.keys().find(|key| {
            let mut rest = table.clone();
            rest.remove(*key);
            match serde_json::from_value::<T>(Value::Object(rest)) {
                Ok(_) => true,
                Err(other) => other
                    .to_string()
                    .contains(&format!("missing field `{key}`")),
            }
        });
        match culprit {
            Some(key) => ConfigError::new_err(format!("{class}.{key}: {e}")),
            None => ConfigError::new_err(format!("{class}: {e}")),
        }
    })
}

/// One field of a table as a Python value (`None` when unset).
fn field<'py, T: Serialize>(py: Python<'py>, table: &T, key: &str) -> PyResult<Bound<'py, PyAny>> {
    let value = serde_json::to_value(table).unwrap_or_default();
    to_py(py, value.get(key).unwrap_or(&Value::Null))
}

/// `Class(key=value, ...)`, with Python literals.
fn repr<T: Serialize>(py: Python<'_>, class: &str, table: &T) -> PyResult<String> {
    let Value::Object(map) = serde_json::to_value(table).unwrap_or_default() else {
        return Ok(format!("{class}()"));
    };
    let mut parts = Vec::with_capacity(map.len());
    for (k, v) in &map {
        parts.push(format!("{k}={}", to_py(py, v)?.repr()?));
    }
    Ok(format!("{class}({})", parts.join(", ")))
}

/// Defines a Python class around a TOML table type: the constructor reads
/// keyword arguments as that table (then runs `$check`), each listed field
/// gets a read-only property, and `repr` shows every value.
macro_rules! table_class {
    (
        $(#[$doc:meta])*
        $class:ident($table:ty), positional = [$($pos:ident),*],
        check = $check:expr,
        fields = [$($field:ident),* $(,)?]
        $(, methods = { $($method:item)* })?
    ) => {
        $(#[$doc])*
        #[pyclass(frozen, module = "fanwire._native")]
        #[derive(Debug, Clone)]
        pub struct $class {
            pub inner: $table,
        }

        #[pymethods]
        impl $class {
            #[new]
            #[pyo3(signature = ($($pos,)* **kwargs))]
            fn new<'py>($($pos: &Bound<'py, PyAny>,)* kwargs: Option<&Bound<'py, PyDict>>) -> PyResult<Self> {
                let mut inner: $table = from_arguments(
                    stringify!($class),
                    &[$((stringify!($pos), $pos)),*],
                    kwargs,
                )?;
                let check: fn(&mut $table) -> PyResult<()> = $check;
                check(&mut inner)?;
                Ok($class { inner })
            }

            $(
                #[getter]
                fn $field<'py>(&self, py: Python<'py>) -> PyResult<Bound<'py, PyAny>> {
                    field(py, &self.inner, stringify!($field))
                }
            )*

            fn __repr__(&self, py: Python<'_>) -> PyResult<String> {
                repr(py, stringify!($class), &self.inner)
            }

            $($($method)*)?
        }
    };
}

fn invalid(e: impl std::fmt::Display) -> PyErr {
    ConfigError::new_err(e.to_string())
}

table_class! {
    /// The `[bus]` table: how events travel between nodes.
    BusConfig(BusTable), positional = [],
    check = |bus| bus.validate().map_err(invalid),
    fields = [kind, url, stream, subject, history, buffer, startup_timeout_ms, publish_timeout_ms],
    methods = {
        /// A bus from a URL, as `fanwire serve --bus` reads it: the scheme
        /// (`nats://`, `redis://`) picks the kind, `memory` is in-process;
        /// every other setting at its default.
        #[staticmethod]
        fn from_url(url: &str) -> PyResult<BusConfig> {
            let inner = BusTable::from_url(url).map_err(invalid)?;
            inner.validate().map_err(invalid)?;
            Ok(BusConfig { inner })
        }
    }
}

table_class! {
    /// The `[sources.postgres]` table: LISTEN/NOTIFY channels and an outbox table.
    PostgresSource(PostgresConfig), positional = [],
    check = |pg| {
        if pg.url.is_none() {
            return Err(invalid("PostgresSource: url is required"));
        }
        pg.validate().map_err(invalid)
    },
    fields = [url, channels, outbox_table, cursor, poll_ms, batch]
}

table_class! {
    /// One `[[plugins]]` entry: a WebAssembly component and where it applies.
    Plugin(PluginSpec), positional = [path, kind],
    check = |spec| {
        if spec.path.as_os_str().is_empty() {
            return Err(invalid("Plugin: path must not be empty"));
        }
        if spec.kind == Kind::FieldResolver {
            return Err(invalid(
                "Plugin: a field-resolver is bound to its field with ComponentResolver(field, path)",
            ));
        }
        Ok(())
    },
    fields = [path, kind, name, order, fields, topics, timeout_ms, memory_mb, config]
}

table_class! {
    /// One `[[resolvers]]` entry: a `field-resolver` WebAssembly component
    /// that computes a `Subscription` field, once per group per event.
    ComponentResolver(ResolverSpec), positional = [field, path],
    check = |spec| {
        if spec.field.is_empty() || spec.path.as_os_str().is_empty() {
            return Err(invalid("ComponentResolver: field and path must not be empty"));
        }
        Ok(())
    },
    fields = [field, path, name, timeout_ms, memory_mb, config]
}

table_class! {
    /// The `[plugin_runtime]` table: limits shared by every plugin, the
    /// folder that relative plugin paths start from, and the compile cache.
    PluginRuntime(RuntimeConfig), positional = [],
    check = |runtime| {
        runtime.validate().map_err(invalid)?;
        if let Some(folder) = &runtime.folder {
            runtime.folder = Some(absolute(folder)?);
        }
        match &runtime.cache_dir {
            Some(dir) if dir.as_os_str().is_empty() => {
                return Err(invalid(
                    "plugin_runtime.cache_dir must not be empty (cache=False turns the compile cache off)",
                ))
            }
            Some(dir) => runtime.cache_dir = Some(absolute(dir)?),
            None => {}
        }
        Ok(())
    },
    fields = [folder, watch, watch_interval_ms, call_timeout_ms, memory_mb, max_memory_mb, warm_instances, pool_instances, admin_token, cache, cache_dir]
}

table_class! {
    /// The `[auth.jwt]` table: verify a JWT at `connection_init` (HS256,
    /// RS256 or ES256); the key is read and checked here.
    JwtAuth(JwtConfig), positional = [],
    check = |jwt| {
        if let Some(key) = &jwt.public_key_file {
            jwt.public_key_file = Some(absolute(key)?);
        }
        JwtPolicy::new(jwt.clone(), &cwd()?).map(drop).map_err(invalid)
    },
    fields = [algorithm, secret, public_key_file, token_field, issuer, audience, leeway_s, tenant_claim, roles_claim]
}
