//! What a resolver learns about the subscription it resolves for.

use fanwire_core::hooks::GroupInfo;
use pyo3::prelude::*;
use pyo3::types::{PyDict, PyTuple};

use crate::convert::{from_py, map_to_py};

/// The verified identity of a connection, as a connection policy established it.
#[pyclass(frozen, module = "fanwire._native")]
#[derive(Debug, Clone)]
pub struct Principal {
    pub(crate) inner: fanwire_core::Principal,
}

#[pymethods]
impl Principal {
    #[new]
    #[pyo3(signature = (subject=None, *, tenant=None, roles=Vec::new(), claims=None, expires_at=None))]
    fn new(
        subject: Option<String>,
        tenant: Option<String>,
        roles: Vec<String>,
        claims: Option<&Bound<'_, PyDict>>,
        expires_at: Option<u64>,
    ) -> PyResult<Self> {
        let claims = match claims {
            Some(d) => match from_py(d.as_any())? {
                serde_json::Value::Object(m) => m,
                _ => serde_json::Map::new(),
            },
            None => serde_json::Map::new(),
        };
        Ok(Principal {
            inner: fanwire_core::Principal {
                subject,
                tenant,
                roles,
                claims,
                expires_at,
            },
        })
    }

    /// The user (JWT `sub`), or None for anonymous connections.
    #[getter]
    fn subject(&self) -> Option<&str> {
        self.inner.subject.as_deref()
    }

    /// The tenant the user belongs to.
    #[getter]
    fn tenant(&self) -> Option<&str> {
        self.inner.tenant.as_deref()
    }

    /// Roles or permissions.
    #[getter]
    fn roles<'py>(&self, py: Python<'py>) -> PyResult<Bound<'py, PyTuple>> {
        PyTuple::new(py, &self.inner.roles)
    }

    /// Every verified claim.
    #[getter]
    fn claims<'py>(&self, py: Python<'py>) -> PyResult<Bound<'py, PyDict>> {
        map_to_py(py, &self.inner.claims)
    }

    /// When the credentials expire (Unix seconds); the connection closes then.
    #[getter]
    fn expires_at(&self) -> Option<u64> {
        self.inner.expires_at
    }

    /// Whether a connection policy identified anyone.
    #[getter]
    fn is_anonymous(&self) -> bool {
        self.inner == fanwire_core::Principal::default()
    }

    fn __repr__(&self) -> String {
        format!(
            "Principal(subject={:?}, tenant={:?}, roles={:?})",
            self.inner.subject, self.inner.tenant, self.inner.roles
        )
    }

    fn __eq__(&self, other: &Bound<'_, PyAny>) -> bool {
        other
            .cast::<Principal>()
            .is_ok_and(|o| o.get().inner == self.inner)
    }

    fn __hash__(&self) -> u64 {
        use std::hash::{Hash, Hasher};
        let mut h = std::collections::hash_map::DefaultHasher::new();
        self.inner.fingerprint().hash(&mut h);
        h.finish()
    }
}

/// The subscription a resolver call serves: one value for a whole group of
/// identical subscriptions (same field, arguments, selection, principal and
/// `connection_init` payload).
#[pyclass(frozen, module = "fanwire._native")]
#[derive(Debug)]
pub struct Context {
    principal: Py<Principal>,
    connection_params: Py<PyDict>,
    variables: Py<PyDict>,
    arguments: Py<PyDict>,
    operation_name: Option<String>,
    field: String,
    topic: String,
}

impl Context {
    /// Builds the context of `group`, sharing the already converted `variables`.
    pub fn build(
        py: Python<'_>,
        group: &GroupInfo,
        variables: &Bound<'_, PyDict>,
    ) -> PyResult<Self> {
        Ok(Context {
            principal: Py::new(
                py,
                Principal {
                    inner: group.principal.clone(),
                },
            )?,
            connection_params: map_to_py(py, &group.init_payload)?.unbind(),
            variables: variables.clone().unbind(),
            arguments: map_to_py(py, &group.arguments)?.unbind(),
            operation_name: group.operation_name.clone(),
            field: group.field.clone(),
            topic: group.topic.clone(),
        })
    }
}

#[pymethods]
impl Context {
    /// Who subscribed.
    #[getter]
    fn principal(&self, py: Python<'_>) -> Py<Principal> {
        self.principal.clone_ref(py)
    }

    /// The `connection_init` payload of the subscriber's connection.
    #[getter]
    fn connection_params(&self, py: Python<'_>) -> Py<PyDict> {
        self.connection_params.clone_ref(py)
    }

    /// The operation's coerced variables.
    #[getter]
    fn variables(&self, py: Python<'_>) -> Py<PyDict> {
        self.variables.clone_ref(py)
    }

    /// The subscription field's coerced arguments.
    #[getter]
    fn arguments(&self, py: Python<'_>) -> Py<PyDict> {
        self.arguments.clone_ref(py)
    }

    /// The operation name, if the document named it.
    #[getter]
    fn operation_name(&self) -> Option<&str> {
        self.operation_name.as_deref()
    }

    /// The subscription field.
    #[getter]
    fn field(&self) -> &str {
        &self.field
    }

    /// The concrete topic, e.g. `orders:5`.
    #[getter]
    fn topic(&self) -> &str {
        &self.topic
    }

    fn __repr__(&self) -> String {
        format!(
            "Context(field={:?}, topic={:?}, operation_name={:?})",
            self.field, self.topic, self.operation_name
        )
    }
}
