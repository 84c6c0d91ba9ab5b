//! The exceptions the package raises, one class per thing a caller handles.

use pyo3::create_exception;
use pyo3::exceptions::{PyException, PyRuntimeError, PyValueError};

create_exception!(
    fanwire,
    SchemaError,
    PyValueError,
    "The SDL does not validate, or a field or topic does not fit the schema."
);
create_exception!(
    fanwire,
    ConfigError,
    PyValueError,
    "A `SubscriptionConfig` or server setting is out of range."
);
create_exception!(
    fanwire,
    PublishError,
    PyValueError,
    "An event could not be published: empty topic or data that is not JSON."
);
create_exception!(
    fanwire,
    ServerError,
    PyRuntimeError,
    "The in-process server could not start (for example, the port is taken)."
);
create_exception!(
    fanwire,
    ConnectionRejected,
    PyException,
    "Raised by a connection policy to refuse a `connection_init` (close 4403 with the message)."
);
