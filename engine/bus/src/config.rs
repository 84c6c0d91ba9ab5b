//! The `[bus]` and `[sources.postgres]` tables of the host's configuration.

use serde::{Deserialize, Serialize};

use crate::BusError;

/// Which bus carries events between nodes.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum BusKind {
    /// In this process only (one node).
    #[default]
    Memory,
    /// NATS JetStream.
    Nats,
    /// Redis Streams.
    Redis,
}

/// The `[bus]` table.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct BusConfig {
    /// `memory`, `nats` or `redis`.
    pub kind: BusKind,
    /// The broker's URL; unset means the broker's default on 127.0.0.1.
    pub url: Option<String>,
    /// The JetStream stream, or the Redis stream key, that holds the events.
    pub stream: String,
    /// The NATS subject events are published on (bound to the stream).
    pub subject: String,
    /// Events the broker retains (JetStream `max_msgs`, Redis `MAXLEN ~`):
    /// how far back a node that starts fills its history windows, and so
    /// how far back a client reconnecting to it can resume; also how far a
    /// running node may fall behind before it misses events.
    pub history: u64,
    /// Events a node holds in memory while the broker is unreachable;
    /// beyond that, publishes are refused with 503.
    pub buffer: usize,
    /// Milliseconds a node waits at start for the broker and its history
    /// before serving degraded (resumes are refused until it catches up).
    pub startup_timeout_ms: u64,
    /// Milliseconds to wait for the broker to acknowledge a publish before
    /// the events go to the buffer instead.
    pub publish_timeout_ms: u64,
}

impl Default for BusConfig {
    fn default() -> Self {
        BusConfig {
            kind: BusKind::Memory,
            url: None,
            stream: "fanwire_events".into(),
            subject: "fanwire.events".into(),
            history: 100_000,
            buffer: 10_000,
            startup_timeout_ms: 5_000,
            publish_timeout_ms: 2_000,
        }
    }
}

impl BusConfig {
    /// A bus from a URL (`--bus`): the scheme picks the kind; `memory` is the
    /// in-process bus.
    pub fn from_url(url: &str) -> Result<BusConfig, BusError> {
        let kind = match url.split_once("://").map(|(scheme, _)| scheme) {
            _ if url == "memory" => BusKind::Memory,
            Some("nats") => BusKind::Nats,
            Some("redis") => BusKind::Redis,
            _ => {
                return Err(BusError::Config(format!(
                    "bus URL {url:?}: expected nats://HOST:PORT, redis://HOST:PORT or memory"
                )))
            }
        };
        Ok(BusConfig {
            kind,
            url: (kind != BusKind::Memory).then(|| url.to_owned()),
            ..BusConfig::default()
        })
    }

    /// The URL to connect to.
    pub fn url(&self) -> String {
        match (&self.url, self.kind) {
            (Some(url), _) => url.clone(),
            (None, BusKind::Nats) => "nats://127.0.0.1:4222".into(),
            (None, BusKind::Redis) => "redis://127.0.0.1:6379".into(),
            (None, BusKind::Memory) => "memory".into(),
        }
    }

    /// Checks every value.
    pub fn validate(&self) -> Result<(), BusError> {
        let bad = |m: String| Err(BusError::Config(m));
        if self.history == 0 {
            return bad("bus.history must be at least 1".into());
        }
        if self.buffer == 0 {
            return bad("bus.buffer must be at least 1".into());
        }
        if self.publish_timeout_ms == 0 {
            return bad("bus.publish_timeout_ms must be at least 1".into());
        }
        // JetStream stream names are single tokens.
        let token_ok = |s: &str| {
            !s.is_empty()
                && !s
                    .chars()
                    .any(|c| c.is_whitespace() || matches!(c, '.' | '*' | '>' | '/' | '\\'))
        };
        if !token_ok(&self.stream) {
            return bad(format!(
                "bus.stream {:?} must be a non-empty name without '.', '*', '>', '/' or spaces",
                self.stream
            ));
        }
        if self.subject.is_empty()
            || self
                .subject
                .split('.')
                .any(|t| t.is_empty() || t.contains(['*', '>', ' ']))
        {
            return bad(format!(
                "bus.subject {:?} must be a literal NATS subject",
                self.subject
            ));
        }
        Ok(())
    }
}

/// The `[sources]` table.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct SourcesConfig {
    /// `[sources.postgres]`.
    pub postgres: PostgresConfig,
}

impl SourcesConfig {
    /// Checks every value.
    pub fn validate(&self) -> Result<(), BusError> {
        self.postgres.validate()
    }
}

/// The `[sources.postgres]` table: LISTEN/NOTIFY channels and an outbox.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct PostgresConfig {
    /// e.g. `postgres://postgres@127.0.0.1/app`; unset: no PostgreSQL source.
    pub url: Option<String>,
    /// Channels to LISTEN on; each notification becomes an event.
    pub channels: Vec<String>,
    /// An outbox table to read (see docs/postgres.md); its NOTIFY channel
    /// is the table's name and only wakes the reader.
    pub outbox_table: Option<String>,
    /// The name under which the outbox position is saved in
    /// `fanwire_outbox_cursors`, so a restart catches up where it stopped.
    pub cursor: String,
    /// Milliseconds between outbox reads when no NOTIFY arrives; also how
    /// long rows held back by an older, still open transaction can wait.
    pub poll_ms: u64,
    /// Rows per outbox read.
    pub batch: usize,
}

impl Default for PostgresConfig {
    fn default() -> Self {
        PostgresConfig {
            url: None,
            channels: Vec::new(),
            outbox_table: None,
            cursor: "fanwire".into(),
            poll_ms: 1_000,
            batch: 500,
        }
    }
}

impl PostgresConfig {
    /// Checks every value.
    pub fn validate(&self) -> Result<(), BusError> {
        let bad = |m: &str| Err(BusError::Config(format!("sources.postgres.{m}")));
        if self.url.is_none() {
            return Ok(());
        }
        if self.channels.is_empty() && self.outbox_table.is_none() {
            return bad("url is set but there is nothing to read: set channels or outbox_table");
        }
        if self.channels.iter().any(|c| c.is_empty()) || self.outbox_table.as_deref() == Some("") {
            return bad("channels and outbox_table must not be empty names");
        }
        if self.cursor.is_empty() {
            return bad("cursor must not be empty");
        }
        if self.poll_ms < 10 {
            return bad("poll_ms must be at least 10");
        }
        if self.batch == 0 {
            return bad("batch must be at least 1");
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn bus_urls_pick_the_kind() {
        assert_eq!(
            BusConfig::from_url("nats://127.0.0.1:4222").unwrap().kind,
            BusKind::Nats
        );
        let redis = BusConfig::from_url("redis://127.0.0.1:6379/0").unwrap();
        assert_eq!(
            (redis.kind, redis.url()),
            (BusKind::Redis, "redis://127.0.0.1:6379/0".into())
        );
        assert_eq!(BusConfig::from_url("memory").unwrap().kind, BusKind::Memory);
        assert!(BusConfig::from_url("kafka://x").is_err());
    }

    #[test]
    fn bad_values_are_refused() {
        let bad = BusConfig {
            stream: "a.b".into(),
            ..BusConfig::default()
        };
        assert!(bad
            .validate()
            .unwrap_err()
            .to_string()
            .contains("bus.stream"));
        BusConfig::default().validate().unwrap();
        let pg = PostgresConfig {
            url: Some("postgres://x".into()),
            ..PostgresConfig::default()
        };
        assert!(pg
            .validate()
            .unwrap_err()
            .to_string()
            .contains("nothing to read"));
    }
}
