//! A Python function as the core's `ConnectionPolicy`.

use fanwire_core::hooks::{Accepted, ConnectionPolicy, ConnectionRequest};
use pyo3::prelude::*;
use pyo3::types::PyDict;

use crate::context::Principal;
use crate::convert::map_to_py;
use crate::errors::ConnectionRejected;

/// Calls `func(connection_params, headers)`: a `Principal` accepts as that
/// principal, `None` accepts anonymously, `False` or `ConnectionRejected`
/// refuses (close 4403 with the exception's message).
#[derive(Debug)]
pub struct PyPolicy {
    pub func: Py<PyAny>,
}

impl ConnectionPolicy for PyPolicy {
    fn check(&self, request: &ConnectionRequest<'_>) -> Result<Accepted, String> {
        let checked = crate::interpreter::attach(|py| {
            let params = map_to_py(py, request.init_payload).map_err(|e| e.to_string())?;
            let headers = PyDict::new(py);
            for (k, v) in request.headers {
                headers.set_item(k, v).map_err(|e| e.to_string())?;
            }
            match self.func.bind(py).call1((params, headers)) {
                Ok(r) if r.is_none() => Ok(Accepted::default()),
                Ok(r) => {
                    if let Ok(p) = r.cast::<Principal>() {
                        return Ok(Accepted {
                            principal: p.get().inner.clone(),
                            ack: None,
                        });
                    }
                    if r.is_truthy().unwrap_or(false) && r.is_instance_of::<pyo3::types::PyBool>() {
                        return Ok(Accepted::default());
                    }
                    Err("Forbidden".to_owned())
                }
                Err(e) if e.is_instance_of::<ConnectionRejected>(py) => {
                    Err(e.value(py).to_string())
                }
                Err(e) => {
                    // A bug in the policy must not admit anyone; log it for the developer.
                    e.print(py);
                    Err("Forbidden".to_owned())
                }
            }
        });
        checked.unwrap_or_else(|| Err("Server shutting down".to_owned()))
    }
}
