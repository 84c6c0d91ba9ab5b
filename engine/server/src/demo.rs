//! The demo: a schema, an event generator and a browser page.

use std::sync::Arc;
use std::time::Duration;

use fanwire_core::{Engine, Event, Order};
use serde_json::json;
use tokio::sync::watch;

/// The schema served by `fanwire serve --demo` when no schema is given.
pub const SCHEMA: &str = include_str!("demo/schema.graphql");

/// The page at `/`: subscribes from the browser and shows events as they arrive.
pub const PAGE: &str = include_str!("demo/index.html");

/// Publishes a tick on `ticks:demo` and an order for tenant 1 or 2 every
/// `interval`, until shutdown.
pub async fn generate(
    engine: Arc<Engine>,
    interval: Duration,
    mut shutdown: watch::Receiver<bool>,
) {
    let mut timer = tokio::time::interval(interval);
    let mut seq: u64 = 0;
    let statuses = ["NEW", "PAID", "SHIPPED"];
    let mut deliveries = 0usize;
    let mut reported = std::time::Instant::now();
    loop {
        tokio::select! {
            _ = timer.tick() => {}
            _ = shutdown.changed() => return,
        }
        seq += 1;
        let now = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map(|d| d.as_millis() as u64)
            .unwrap_or_default();
        // A cheap deterministic wobble so the numbers on the page move.
        let value = ((seq * 7919) % 1000) as f64 / 10.0;
        let tick = Event::new(
            "ticks:demo",
            json!({"seq": seq, "at": now.to_string(), "value": value}),
        );
        let tenant = 1 + seq % 2;
        let order = Event {
            topic: format!("orders:{tenant}"),
            data: json!({
                "id": format!("ord-{seq}"),
                "cents": 500 + (seq * 37) % 10_000,
                "status": statuses[(seq % 3) as usize],
                "tenant_id": tenant,
                "customer": {"name": format!("Customer {}", seq % 17), "email": format!("c{}@example.com", seq % 17)},
            }),
            id: Some(format!("ord-{seq}")),
            seq: None,
        };
        for event in [tick, order] {
            let receipt = engine.publish(vec![event], Order::Numbered);
            deliveries += receipt.dispatched().await.delivered();
        }
        if reported.elapsed() >= Duration::from_secs(5) {
            let subscriptions = engine.metrics().subscriptions.get();
            tracing::info!(
                events = seq * 2,
                deliveries,
                subscriptions,
                "demo generator"
            );
            reported = std::time::Instant::now();
        }
    }
}
