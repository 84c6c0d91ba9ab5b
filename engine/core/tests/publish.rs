//! The publish path with a dispatcher task: a publish returns once its
//! events are accepted; the dispatcher fans them out in the order they were
//! accepted; the backlog between the two is bounded and publishers wait for
//! room; a resume while accepted events wait gets each of them once.

use std::collections::{HashMap, VecDeque};
use std::future::Future;
use std::pin::pin;
use std::sync::{Arc, Mutex};
use std::task::{Context, Waker};

use fanwire_core::hooks::{GroupInfo, Resolution, Resolver, Spawner};
use fanwire_core::outbox::{Frame, WriteThrough, Written};
use fanwire_core::protocol::{assemble_next, Protocol};
use fanwire_core::{Connection, Engine, Event, Hooks, Limits, Order, Schema};
use serde_json::{json, Value};
use tokio::sync::oneshot;

const SDL: &str = r#"
type Query { a: Int }
type Tick { p: Int i: Int }
type Subscription { tick: Tick @topic(name: "ticks") }
"#;

fn engine(limits: Limits, hooks: Hooks) -> Arc<Engine> {
    Engine::with_hooks(Schema::parse(SDL).unwrap(), limits, hooks).unwrap()
}

fn with_history() -> Limits {
    Limits {
        history_per_topic: 10_000,
        queue_depth: 100_000,
        ..Limits::default()
    }
}

fn subscriber(engine: &Arc<Engine>, resume_from: Option<u64>) -> Connection {
    let mut conn = engine.connect(Protocol::TransportWs);
    conn.on_text(r#"{"type":"connection_init"}"#);
    let mut payload = json!({"query": "subscription { tick { p i } }"});
    if let Some(from) = resume_from {
        payload["extensions"] = json!({ "resumeFrom": from });
    }
    conn.on_text(&json!({"id": "s", "type": "subscribe", "payload": payload}).to_string());
    conn
}

/// The results waiting in a connection's outbox: (seq, publisher, index).
fn results(conn: &Connection) -> Vec<(u64, i64, i64)> {
    let mut out = VecDeque::new();
    conn.outbox().drain_into(&mut out);
    out.iter()
        .filter_map(|f| match f {
            Frame::Next {
                prefix, payload, ..
            } => Some(serde_json::from_slice::<Value>(&assemble_next(prefix, payload)).unwrap()),
            _ => None,
        })
        .map(|f| {
            let tick = &f["payload"]["data"]["tick"];
            (
                f["payload"]["extensions"]["seq"].as_u64().unwrap_or(0),
                tick["p"].as_i64().unwrap(),
                tick["i"].as_i64().unwrap(),
            )
        })
        .collect()
}

fn tick(p: i64, i: i64) -> Event {
    Event::new("ticks", json!({"p": p, "i": i}))
}

/// Whether `fut` is ready when polled once (it is dropped either way).
fn ready_now(fut: impl Future) -> bool {
    let fut = pin!(fut);
    fut.poll(&mut Context::from_waker(Waker::noop())).is_ready()
}

fn runtime() -> tokio::runtime::Runtime {
    tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .unwrap()
}

#[test]
fn with_a_dispatcher_a_publish_returns_at_once_and_its_receipt_counts_the_fan_out() {
    let engine = engine(with_history(), Hooks::default());
    let (a, b) = (subscriber(&engine, None), subscriber(&engine, None));
    let dispatcher = engine.dispatcher();
    let receipt = engine.publish(vec![tick(0, 0), tick(0, 1)], Order::Numbered);
    assert_eq!(receipt.accepted(), 2);
    assert_eq!(
        engine.backlog(),
        2,
        "accepted, not dispatched: nothing runs it yet"
    );
    assert!(results(&a).is_empty());

    runtime().block_on(async move {
        let task = tokio::spawn(dispatcher);
        let done = receipt.dispatched().await;
        assert_eq!(
            (done.groups, done.deliveries),
            (2, 4),
            "2 events x 1 group, x 2 members"
        );
        assert_eq!(engine.backlog(), 0);
        let seqs = |c: &Connection| results(c).iter().map(|r| r.2).collect::<Vec<_>>();
        assert_eq!(seqs(&a), [0, 1]);
        assert_eq!(seqs(&b), [0, 1]);
        drop((a, b, engine));
        // The dispatcher ends with its engine.
        task.await.unwrap();
    });
}

#[test]
fn single_publishes_and_batches_from_concurrent_publishers_arrive_once_and_in_order() {
    const PUBLISHERS: i64 = 4;
    const EACH: i64 = 300;
    let engine = engine(with_history(), Hooks::default());
    let subscribers: Vec<Connection> = (0..3).map(|_| subscriber(&engine, None)).collect();
    runtime().block_on({
        let engine = engine.clone();
        async move {
            tokio::spawn(engine.dispatcher());
            let publishers = (0..PUBLISHERS).map(|p| {
                let engine = engine.clone();
                tokio::spawn(async move {
                    let mut i = 0;
                    let mut receipts = Vec::new();
                    while i < EACH {
                        // 1, 2, 3, 1, 2, 3 ... events per publish: singles
                        // interleaved with batches.
                        let n = (1 + (i + p) % 3).min(EACH - i);
                        engine.room().await;
                        let events = (i..i + n).map(|k| tick(p, k)).collect();
                        receipts.push(engine.publish(events, Order::Numbered));
                        i += n;
                        if i % 7 == 0 {
                            tokio::task::yield_now().await;
                        }
                    }
                    for receipt in receipts {
                        receipt.dispatched().await;
                    }
                })
            });
            for publisher in publishers.collect::<Vec<_>>() {
                publisher.await.unwrap();
            }
        }
    });
    for conn in &subscribers {
        let got = results(conn);
        assert_eq!(got.len() as i64, PUBLISHERS * EACH, "each event once");
        assert!(
            got.windows(2).all(|w| w[0].0 < w[1].0),
            "a topic's results arrive in the order their numbers were given"
        );
        for p in 0..PUBLISHERS {
            let mine: Vec<i64> = got.iter().filter(|r| r.1 == p).map(|r| r.2).collect();
            assert_eq!(mine, (0..EACH).collect::<Vec<_>>(), "publisher {p}'s order");
        }
    }
    assert_eq!(engine.backlog(), 0);
}

#[test]
fn a_resume_while_accepted_events_wait_gets_each_event_once() {
    let engine = engine(with_history(), Hooks::default());
    let live = subscriber(&engine, None);
    // Taken, not run yet: what is published now waits, accepted and numbered.
    let dispatcher = engine.dispatcher();
    for i in 0..10 {
        engine.publish(vec![tick(0, i)], Order::Numbered);
    }
    assert!(results(&live).is_empty());
    let first = {
        let log = engine.history().log("ticks");
        let log = fanwire_core::history::History::lock(&log);
        log.since(0).unwrap()[0].seq.unwrap()
    };
    // It saw the first four (a client that left a node which had dispatched
    // them), and comes back while the other six wait here.
    let resumed = subscriber(&engine, Some(first + 3));
    let replayed: Vec<i64> = results(&resumed).iter().map(|r| r.2).collect();
    assert_eq!(replayed, [4, 5, 6, 7, 8, 9], "replayed from the history");
    for i in 10..12 {
        engine.publish(vec![tick(0, i)], Order::Numbered);
    }
    runtime().block_on(async {
        tokio::spawn(dispatcher);
        engine
            .publish(vec![tick(0, 12)], Order::Numbered)
            .dispatched()
            .await;
    });
    let later: Vec<i64> = results(&resumed).iter().map(|r| r.2).collect();
    assert_eq!(
        later,
        [10, 11, 12],
        "the waiting ones skipped it: no repeats"
    );
    let all: Vec<i64> = results(&live).iter().map(|r| r.2).collect();
    assert_eq!(all, (0..13).collect::<Vec<_>>());
}

/// A socket with room for everything, recording what it was handed.
#[derive(Debug, Default)]
struct OpenSocket {
    sent: Mutex<usize>,
}

impl WriteThrough for OpenSocket {
    fn try_next(&self, _: &[u8], _: &[u8]) -> Written {
        *self.sent.lock().unwrap() += 1;
        Written::Sent
    }
}

#[test]
fn a_lone_event_is_written_through_only_while_no_other_publish_waits() {
    let engine = engine(Limits::default(), Hooks::default());
    let conn = subscriber(&engine, None);
    results(&conn);
    let socket = Arc::new(OpenSocket::default());
    conn.outbox().set_write_through(Some(socket.clone()));
    let dispatcher = engine.dispatcher();
    // Two lone events accepted before the dispatcher runs: when it takes
    // the first, the second waits, so the first is queued for the writer
    // (which would send both in one write) rather than written through.
    engine.publish(vec![tick(0, 0)], Order::Numbered);
    let second = engine.publish(vec![tick(0, 1)], Order::Numbered);
    runtime().block_on(async {
        tokio::spawn(dispatcher);
        second.dispatched().await;
        assert_eq!(*socket.sent.lock().unwrap(), 0);
        assert_eq!(results(&conn).len(), 2, "queued, for one write");
        // The writer's next drain finds nothing: it has finished writing.
        assert!(results(&conn).is_empty());
        // Alone, with nothing waiting: straight to the idle socket.
        engine
            .publish(vec![tick(0, 2)], Order::Numbered)
            .dispatched()
            .await;
        assert_eq!(*socket.sent.lock().unwrap(), 1);
        assert!(results(&conn).is_empty());
    });
}

/// Resolves each event when the test releases it.
#[derive(Debug, Default)]
struct Gated {
    gates: Mutex<Vec<oneshot::Sender<()>>>,
}

impl Resolver for Gated {
    fn resolve(&self, _: &Event, data: &Value, _: &GroupInfo) -> Resolution {
        let (tx, rx) = oneshot::channel();
        self.gates.lock().unwrap().push(tx);
        let data = data.clone();
        Resolution::Pending(Box::pin(async move {
            let _ = rx.await;
            Ok(data)
        }))
    }
}

/// An engine whose `tick` resolver waits for its gates, with a spawner on `rt`.
fn gated_engine(limits: Limits, rt: &tokio::runtime::Runtime) -> (Arc<Engine>, Arc<Gated>) {
    let gated = Arc::new(Gated::default());
    let mut resolvers: HashMap<String, Arc<dyn Resolver>> = HashMap::new();
    resolvers.insert("tick".into(), gated.clone());
    let handle = rt.handle().clone();
    let spawner: Spawner = Arc::new(move |task| {
        handle.spawn(task);
    });
    let hooks = Hooks {
        resolvers,
        spawner: Some(spawner),
        ..Hooks::default()
    };
    (engine(limits, hooks), gated)
}

#[test]
fn running_resolutions_fill_their_bound_and_publishers_wait_for_room() {
    let rt = runtime();
    let limits = Limits {
        max_resolutions: 3,
        ..Limits::default()
    };
    let (engine, gated) = gated_engine(limits, &rt);
    let conn = subscriber(&engine, None);
    rt.block_on(async {
        tokio::spawn(engine.dispatcher());
        for i in 0..3 {
            assert!(engine.has_room());
            engine
                .publish(vec![tick(0, i)], Order::Numbered)
                .dispatched()
                .await;
        }
        // Dispatched, each into a resolution that has not finished.
        assert_eq!(engine.backlog(), 3);
        assert!(!engine.has_room());
        assert!(!ready_now(engine.room()), "a publisher waits");
        assert!(results(&conn).is_empty());
        let metrics = engine.metrics().encode();
        assert!(metrics.contains("fanwire_resolutions 3"), "{metrics}");
        assert!(metrics.contains("fanwire_backlog 0"), "{metrics}");

        let first = gated.gates.lock().unwrap().remove(0);
        first.send(()).unwrap();
        engine.room().await;
        assert_eq!(
            engine.backlog(),
            2,
            "one resolution delivered: room for one"
        );
        for gate in gated.gates.lock().unwrap().drain(..) {
            gate.send(()).unwrap();
        }
        for _ in 0..1_000_000 {
            if engine.backlog() == 0 {
                break;
            }
            tokio::task::yield_now().await;
        }
        assert_eq!(engine.backlog(), 0, "every resolution delivered");
    });
    let order: Vec<i64> = results(&conn).iter().map(|r| r.2).collect();
    assert_eq!(order, [0, 1, 2]);
    let metrics = engine.metrics().encode();
    assert!(metrics.contains("fanwire_resolutions 0"), "{metrics}");
}

#[test]
fn waiting_events_and_running_resolutions_are_bounded_apart() {
    let rt = runtime();
    let limits = Limits {
        max_backlog: 2,
        max_resolutions: 100,
        ..Limits::default()
    };
    let (engine, gated) = gated_engine(limits, &rt);
    let conn = subscriber(&engine, None);
    let dispatcher = engine.dispatcher();

    // No dispatcher running yet: two events wait, and fill their bound.
    let receipts: Vec<_> = (0..2)
        .map(|i| engine.publish(vec![tick(0, i)], Order::Numbered))
        .collect();
    assert!(!engine.has_room(), "2 events wait: their bound is full");
    assert!(!ready_now(engine.room()));

    rt.block_on(async {
        tokio::spawn(dispatcher);
        for receipt in receipts {
            receipt.dispatched().await;
        }
        // Both now resolve: they hold room among the resolutions only.
        assert!(engine.has_room(), "2 resolutions of 100: room for events");
        for i in 2..10 {
            engine.room().await;
            engine
                .publish(vec![tick(0, i)], Order::Numbered)
                .dispatched()
                .await;
        }
        assert_eq!(
            engine.backlog(),
            10,
            "10 resolutions running, more than max_backlog"
        );
        for _ in 0..1_000_000 {
            if gated.gates.lock().unwrap().len() == 10 {
                break;
            }
            tokio::task::yield_now().await;
        }
        for gate in gated.gates.lock().unwrap().drain(..) {
            gate.send(()).unwrap();
        }
        engine.drained().await;
    });
    let order: Vec<i64> = results(&conn).iter().map(|r| r.2).collect();
    assert_eq!(order, (0..10).collect::<Vec<_>>(), "each once, in order");
}
