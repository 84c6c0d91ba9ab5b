//! Fanwire's IO layer for events: the buses that carry events between nodes
//! and the sources that turn database changes into events. The engine core
//! stays free of IO; everything that talks to a broker or a database is here.
//!
//! # Layout
//!
//! - [`config`]: the `[bus]` and `[sources.postgres]` tables, with defaults.
//! - [`health`]: each component's state for `/healthz`, and the bus metrics.
//! - [`memory`]: the in-process bus (the default): publish is dispatch.
//! - `broker`: what every broker-backed bus shares: ids, the retry buffer,
//!   the consumer that feeds `Engine::publish` in the broker's order with
//!   the broker's sequence numbers, duplicate suppression, catch-up.
//! - `nats`: NATS JetStream as a broker log.
//! - `redis`: Redis Streams as a broker log.
//! - [`postgres`]: the PostgreSQL source: LISTEN/NOTIFY and the outbox table.
//!
//! A bus is one [`Bus`]; a source is one [`Source`]; [`start`] builds the
//! configured ones around an engine.

pub mod config;
pub mod health;
pub mod memory;
pub mod postgres;

mod broker;
mod dedup;
mod nats;
mod redis;

use std::fmt::Debug;
use std::sync::Arc;

use std::time::Duration;

use fanwire_core::metrics::Reason;
use fanwire_core::{Engine, Event, Receipt};
use futures_util::future::BoxFuture;
use tokio::sync::watch;

pub use config::{BusConfig, BusKind, PostgresConfig, SourcesConfig};
pub use health::{BusMetrics, State, Status};

/// Why a bus or source could not be started or could not take events.
#[derive(Debug, thiserror::Error)]
pub enum BusError {
    /// The configuration cannot work (bad URL, bad name).
    #[error("invalid bus configuration: {0}")]
    Config(String),
    /// The broker is unreachable and the node's buffer is full.
    #[error(
        "the {kind} broker is unreachable and {queued} events already wait for it; retry later"
    )]
    Unavailable {
        /// The bus kind.
        kind: &'static str,
        /// Events waiting in this node's buffer.
        queued: usize,
    },
    /// The broker or database refused or failed an operation.
    #[error("{0}")]
    Broker(String),
    /// This node's dispatch is behind: its backlog stayed full for as long
    /// as a publish may wait (`limits.publish_wait_ms`).
    #[error(
        "the node is saturated: its backlog (events to fan out, resolutions running) stayed full for {waited_ms} ms; retry later"
    )]
    Backlog {
        /// How long the publish waited for room.
        waited_ms: u64,
    },
}

/// What became of published events.
#[derive(Debug)]
pub enum Published {
    /// Accepted by this process's engine (in-process bus): numbered and
    /// queued for its dispatcher; the receipt says what the fan-out did.
    Accepted(Receipt),
    /// Stored by the broker; every node delivers them.
    Stored,
    /// The broker is unreachable: delivered to this node's subscribers at
    /// once (without a sequence number), held in this node's memory and
    /// appended when the broker is back (lost to other nodes if this node
    /// dies first).
    Queued,
}

impl PartialEq for Published {
    fn eq(&self, other: &Published) -> bool {
        match (self, other) {
            (Published::Accepted(a), Published::Accepted(b)) => a.accepted() == b.accepted(),
            (Published::Stored, Published::Stored) | (Published::Queued, Published::Queued) => true,
            _ => false,
        }
    }
}

/// Waits for room in the engine's backlog, at most `limits.publish_wait_ms`:
/// what every publish into this node's engine does first, so that a
/// publisher feels a dispatcher that falls behind.
pub async fn admit(engine: &Engine) -> Result<(), BusError> {
    let waited_ms = engine.limits().publish_wait_ms;
    match tokio::time::timeout(Duration::from_millis(waited_ms), engine.room()).await {
        Ok(()) => Ok(()),
        Err(_) => {
            engine
                .metrics()
                .drops
                .get_or_create(&Reason { reason: "backlog" })
                .inc();
            Err(BusError::Backlog { waited_ms })
        }
    }
}

/// Carries published events to the engine of every node.
pub trait Bus: Send + Sync + Debug {
    /// `memory`, `nats` or `redis`.
    fn kind(&self) -> &'static str;
    /// Publishes events, in order; events without an id get one.
    fn publish(&self, events: Vec<Event>) -> BoxFuture<'_, Result<Published, BusError>>;
    /// The bus's state, for `/healthz`.
    fn status(&self) -> Status;
}

/// Produces events from outside (a database) and publishes them on a bus.
pub trait Source: Send + Sync + Debug {
    /// A short name, e.g. `postgres`.
    fn name(&self) -> &'static str;
    /// The source's state, for `/healthz`.
    fn status(&self) -> Status;
}

/// The configured bus and sources of one node.
#[derive(Debug)]
pub struct Io {
    /// Where publishes go.
    pub bus: Arc<dyn Bus>,
    /// The running sources.
    pub sources: Vec<Arc<dyn Source>>,
    /// Their metrics, exposed beside the engine's.
    pub metrics: Arc<BusMetrics>,
}

/// Starts the configured bus (waiting, up to `bus.startup_timeout_ms`, until
/// it has caught up with the broker's history) and sources. An unreachable
/// broker or database is not an error: the node starts degraded and retries.
/// Every task ends when `stop` turns true.
pub async fn start(
    bus: &BusConfig,
    sources: &SourcesConfig,
    engine: Arc<Engine>,
    stop: watch::Receiver<bool>,
) -> Result<Io, BusError> {
    bus.validate()?;
    sources.validate()?;
    let metrics = Arc::new(BusMetrics::new());
    let bus: Arc<dyn Bus> = match bus.kind {
        BusKind::Memory => Arc::new(memory::MemoryBus::new(engine, metrics.clone())),
        BusKind::Nats => {
            let log = nats::NatsLog::connect(bus).await?;
            broker::BrokerBus::start(log, "nats", bus, engine, metrics.clone(), stop.clone()).await
        }
        BusKind::Redis => {
            let log = redis::RedisLog::connect(bus)?;
            broker::BrokerBus::start(log, "redis", bus, engine, metrics.clone(), stop.clone()).await
        }
    };
    let mut running: Vec<Arc<dyn Source>> = Vec::new();
    if sources.postgres.url.is_some() {
        running.push(postgres::PostgresSource::start(
            sources.postgres.clone(),
            bus.clone(),
            metrics.clone(),
            stop,
        ));
    }
    Ok(Io {
        bus,
        sources: running,
        metrics,
    })
}

/// Resolves once `stop` turns true (or its sender is gone).
pub(crate) async fn stopped(stop: &mut watch::Receiver<bool>) {
    let _ = stop.wait_for(|s| *s).await;
}
