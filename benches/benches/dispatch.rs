//! Dispatch without sockets: how long `Engine::publish` takes to fan one
//! event out to N subscriptions, when they share one group (one projection,
//! one serialisation, N queue pushes) and when each is its own group (N
//! projections).
//!
//! Subscriptions are made the way a server makes them: a `Connection` per
//! client fed `connection_init` and a `subscribe` frame. Only `publish` is
//! timed; the outboxes are drained between short batches of publishes
//! (32 publishes for 100 subscribers, one for 10,000), outside the timing,
//! so queues never fill (nothing is dropped) and the drain never counts.

use std::collections::VecDeque;
use std::hint::black_box;
use std::sync::Arc;
use std::time::{Duration, Instant};

use criterion::{criterion_group, criterion_main, BenchmarkId, Criterion, Throughput};
use fanwire_benches::workload::{pad_for, subscribe_message};
use fanwire_core::outbox::Frame;
use fanwire_core::protocol::Protocol;
use fanwire_core::testing::publish_now;
use fanwire_core::{Connection, Engine, Event, Limits, Schema};

const SDL: &str = include_str!("../schema.graphql");

/// Results left queued between drains, across all outboxes. A server's
/// writers drain as results arrive, so the bench keeps the backlog (and the
/// memory it churns) small; per outbox it stays far below the default queue
/// depth, so no result is ever dropped.
const BACKLOG: usize = 3_200;

struct Fixture {
    engine: Arc<Engine>,
    connections: Vec<Connection>,
    event: Event,
    scratch: VecDeque<Frame>,
}

impl Fixture {
    fn new(subscribers: usize, distinct: bool) -> Fixture {
        let schema = Schema::parse(SDL).expect("the bench schema is valid");
        let engine = Engine::new(schema, Limits::default()).expect("default limits are valid");
        let variants = if distinct { subscribers } else { 1 };
        let connections: Vec<Connection> = (0..subscribers)
            .map(|i| {
                let mut conn = engine.connect(Protocol::TransportWs);
                conn.on_text(r#"{"type":"connection_init"}"#);
                conn.on_text(&subscribe_message("1", "bench", i, variants));
                assert_eq!(conn.subscription_count(), 1, "subscribe was refused");
                conn
            })
            .collect();
        let (_, groups, subs) = engine.registry().counts();
        assert_eq!((groups, subs), (variants, subscribers));
        let event = Event::new(
            "bench",
            serde_json::json!({"seq": 1, "ts": 1.7e15, "pad": pad_for(200)}),
        );
        let mut fixture = Fixture {
            engine,
            connections,
            event,
            scratch: VecDeque::new(),
        };
        fixture.drain();
        let done = publish_now(&fixture.engine, std::slice::from_ref(&fixture.event));
        assert_eq!((done.deliveries, done.dropped), (subscribers, 0));
        fixture.drain();
        fixture
    }

    /// Empties every outbox, keeping the queues' allocations warm.
    fn drain(&mut self) {
        for conn in &self.connections {
            conn.outbox().drain_into(&mut self.scratch);
            self.scratch.clear();
        }
    }
}

fn dispatch(c: &mut Criterion) {
    let mut group = c.benchmark_group("dispatch");
    group
        .warm_up_time(Duration::from_secs(1))
        .measurement_time(Duration::from_secs(3))
        .sample_size(50);
    for subscribers in [100, 1_000, 10_000] {
        for (name, distinct) in [("shared", false), ("distinct", true)] {
            let mut fixture = Fixture::new(subscribers, distinct);
            group.throughput(Throughput::Elements(subscribers as u64));
            let batch = (BACKLOG / subscribers).max(1) as u64;
            group.bench_function(BenchmarkId::new(name, subscribers), |b| {
                b.iter_custom(|iters| {
                    let mut timed = Duration::ZERO;
                    let mut left = iters;
                    while left > 0 {
                        let n = left.min(batch);
                        let start = Instant::now();
                        for _ in 0..n {
                            black_box(publish_now(
                                &fixture.engine,
                                black_box(std::slice::from_ref(&fixture.event)),
                            ));
                        }
                        timed += start.elapsed();
                        fixture.drain();
                        left -= n;
                    }
                    timed
                })
            });
        }
    }
    group.finish();
}

criterion_group!(benches, dispatch);
criterion_main!(benches);
