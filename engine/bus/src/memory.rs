//! The in-process bus: one node; a publish goes straight into the engine's backlog.

use std::sync::Arc;

use fanwire_core::{Engine, Event, Order};
use futures_util::future::BoxFuture;

use crate::health::{BusMetrics, Health, Status};
use crate::{Bus, BusError, Published};

/// Publishes straight into this process's engine.
#[derive(Debug)]
pub struct MemoryBus {
    engine: Arc<Engine>,
    health: Health,
}

impl MemoryBus {
    /// A bus for one engine; always up. The engine numbers events itself,
    /// from the clock, so that a restart refuses numbers from before it.
    pub fn new(engine: Arc<Engine>, metrics: Arc<BusMetrics>) -> Self {
        engine.history().number_by_clock();
        let health = Health::new("memory", "bus", metrics);
        health.up();
        MemoryBus { engine, health }
    }
}

impl Bus for MemoryBus {
    fn kind(&self) -> &'static str {
        "memory"
    }

    fn publish(&self, events: Vec<Event>) -> BoxFuture<'_, Result<Published, BusError>> {
        Box::pin(async move {
            crate::admit(&self.engine).await?;
            Ok(Published::Accepted(
                self.engine.publish(events, Order::Numbered),
            ))
        })
    }

    fn status(&self) -> Status {
        self.health.status(None)
    }
}
