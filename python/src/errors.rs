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
    "A `SubscriptionConfig`, bus, source, plugin or server setting is invalid, or a plugin failed to load."
);
create_exception!(
    fanwire,
    PublishError,
    PyValueError,
    "An event could not be published: empty topic, data that is not JSON, or the bus refused it (its buffer is full while the broker is down, or it is not running)."
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
