//! What the host offers a plugin: structured logs, a clock and its config.

use std::sync::OnceLock;

use crate::wit::host as w;
use crate::Object;

fn log(level: w::Level, message: &str, fields: &[(&str, &str)]) {
    let fields: Vec<(String, String)> = fields
        .iter()
        .map(|(k, v)| ((*k).to_owned(), (*v).to_owned()))
        .collect();
    w::log(level, message, &fields);
}

/// Logs at debug level, with `key = value` fields.
pub fn debug(message: &str, fields: &[(&str, &str)]) {
    log(w::Level::Debug, message, fields);
}

/// Logs at info level.
pub fn info(message: &str, fields: &[(&str, &str)]) {
    log(w::Level::Info, message, fields);
}

/// Logs a warning.
pub fn warn(message: &str, fields: &[(&str, &str)]) {
    log(w::Level::Warn, message, fields);
}

/// Logs an error.
pub fn error(message: &str, fields: &[(&str, &str)]) {
    log(w::Level::Error, message, fields);
}

/// Wall-clock milliseconds since the Unix epoch.
pub fn now_ms() -> u64 {
    w::now_ms()
}

/// The plugin's `config` table from the host's configuration (read once:
/// it never changes during an instance's life).
pub fn config() -> &'static Object {
    static CONFIG: OnceLock<Object> = OnceLock::new();
    CONFIG.get_or_init(|| crate::object(&w::config()))
}
