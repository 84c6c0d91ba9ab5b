//! Every bound a client can push against, in one place, with its reason.

use serde::{Deserialize, Serialize};

/// Why a configuration was refused.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
#[error("invalid limit `{field}`: {reason}")]
pub struct ConfigError {
    /// The offending setting.
    pub field: &'static str,
    /// What it must be instead.
    pub reason: String,
}

/// Limits on what clients may make the engine hold or do.
///
/// Each default is chosen so that one misbehaving client cannot exhaust a
/// node, while stock clients never notice the bound.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct Limits {
    /// Open WebSocket connections per node; upgrades beyond get HTTP 503.
    /// Each idle connection costs a few kilobytes.
    pub max_connections: usize,
    /// New connections accepted per second (token bucket), against reconnect storms.
    pub connections_per_second: f64,
    /// Burst allowance of the connection bucket.
    pub connection_burst: f64,
    /// Live subscriptions one connection may hold.
    pub max_subscriptions_per_connection: usize,
    /// Subscribes per second one connection may start (token bucket).
    pub subscribes_per_second: f64,
    /// Burst allowance of the subscribe bucket.
    pub subscribe_burst: f64,
    /// Largest incoming WebSocket message in bytes; larger closes with 1009.
    pub max_message_bytes: usize,
    /// Result frames a connection may have waiting; when full, the oldest
    /// result is dropped (and counted) so a slow client never blocks others.
    /// The results of one publish never push each other out, so a larger
    /// batch is queued whole (see `Outbox`).
    pub queue_depth: usize,
    /// Milliseconds a client has to send `connection_init` (close 4408).
    pub init_timeout_ms: u64,
    /// Milliseconds between server keep-alive pings; a peer silent for two
    /// intervals is dropped as dead.
    pub keep_alive_ms: u64,
    /// Largest GraphQL document in bytes, checked before parsing (parsing
    /// costs about a hundred times this in transient memory); it also bounds
    /// the parser's tokens.
    pub max_document_bytes: usize,
    /// Deepest field nesting in a document, fragments expanded; the parser
    /// and the walk through fragment spreads stop at `2 x this + 16` nested
    /// selection sets, so a deep document never reaches the stack's end.
    pub max_depth: usize,
    /// Most aliases in a document, every fragment spread expanded.
    pub max_aliases: usize,
    /// Most field selections in a document, every fragment spread expanded.
    pub max_fields: usize,
    /// Recent events kept per topic in memory so a reconnecting client can
    /// resume (`extensions.resumeFrom`); 0 keeps none. Memory grows with
    /// topics x this x event size, so size it for the topics you have.
    pub history_per_topic: usize,
    /// Events accepted but not yet fanned out that a node holds before
    /// publishers wait: between a publish and its writes nothing else grows.
    /// It is also how far the latency of a saturated node can grow (this
    /// many events' dispatch ahead of a new one), so it is small.
    pub max_backlog: usize,
    /// Async resolutions (a Python `async def` resolver awaiting I/O) that
    /// may run at once before publishers wait: how concurrent a slow
    /// resolver may be, each costing memory while it waits.
    pub max_resolutions: usize,
    /// Milliseconds a publish waits for room in a full backlog before it is
    /// refused (HTTP 503 with `Retry-After`, `PublishError` in Python).
    pub publish_wait_ms: u64,
}

impl Default for Limits {
    fn default() -> Self {
        Limits {
            max_connections: 20_000,
            connections_per_second: 2_000.0,
            connection_burst: 10_000.0,
            max_subscriptions_per_connection: 100,
            subscribes_per_second: 50.0,
            subscribe_burst: 100.0,
            max_message_bytes: 64 * 1024,
            queue_depth: 1024,
            init_timeout_ms: 3_000,
            keep_alive_ms: 15_000,
            max_document_bytes: 32 * 1024,
            max_depth: 12,
            max_aliases: 30,
            max_fields: 500,
            history_per_topic: 0,
            max_backlog: 16,
            max_resolutions: 256,
            publish_wait_ms: 2_000,
        }
    }
}

impl Limits {
    /// Checks that every limit is usable; the host refuses to start otherwise.
    pub fn validate(&self) -> Result<(), ConfigError> {
        let positive = |field: &'static str, v: f64| {
            if v.is_finite() && v > 0.0 {
                Ok(())
            } else {
                Err(ConfigError {
                    field,
                    reason: format!("must be a positive number, got {v}"),
                })
            }
        };
        let at_least = |field: &'static str, v: u64, min: u64| {
            if v >= min {
                Ok(())
            } else {
                Err(ConfigError {
                    field,
                    reason: format!("must be at least {min}, got {v}"),
                })
            }
        };
        at_least("max_connections", self.max_connections as u64, 1)?;
        positive("connections_per_second", self.connections_per_second)?;
        positive("connection_burst", self.connection_burst)?;
        at_least(
            "max_subscriptions_per_connection",
            self.max_subscriptions_per_connection as u64,
            1,
        )?;
        positive("subscribes_per_second", self.subscribes_per_second)?;
        positive("subscribe_burst", self.subscribe_burst)?;
        at_least("max_message_bytes", self.max_message_bytes as u64, 1024)?;
        at_least("queue_depth", self.queue_depth as u64, 1)?;
        at_least("init_timeout_ms", self.init_timeout_ms, 1)?;
        at_least("keep_alive_ms", self.keep_alive_ms, 100)?;
        at_least("max_document_bytes", self.max_document_bytes as u64, 64)?;
        at_least("max_depth", self.max_depth as u64, 1)?;
        at_least("max_fields", self.max_fields as u64, 1)?;
        at_least("max_backlog", self.max_backlog as u64, 1)?;
        at_least("max_resolutions", self.max_resolutions as u64, 1)?;
        if self.max_document_bytes > self.max_message_bytes {
            return Err(ConfigError {
                field: "max_document_bytes",
                reason: format!(
                    "cannot exceed max_message_bytes ({})",
                    self.max_message_bytes
                ),
            });
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn defaults_are_valid_and_bad_values_name_their_field() {
        Limits::default().validate().unwrap();
        let bad = Limits {
            queue_depth: 0,
            ..Limits::default()
        };
        assert_eq!(bad.validate().unwrap_err().field, "queue_depth");
        let bad = Limits {
            subscribes_per_second: f64::NAN,
            ..Limits::default()
        };
        assert_eq!(bad.validate().unwrap_err().field, "subscribes_per_second");
    }
}
