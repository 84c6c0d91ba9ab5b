//! The in-process bus: one node, publish is dispatch.

use std::sync::Arc;

use fanwire_core::{Engine, Event};
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
        let deliveries = self.engine.publish_batch(&events);
        Box::pin(async move { Ok(Published::Delivered { deliveries }) })
    }

    fn status(&self) -> Status {
        self.health.status(None)
    }
}
