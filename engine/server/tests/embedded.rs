//! A server around an engine that the embedding program built (as the
//! Python package does): its hooks are the ones in force.

use crate::common;

use std::collections::HashMap;
use std::sync::Arc;

use common::{Client, SCHEMA};
use fanwire_core::hooks::{GroupInfo, Resolution, Resolver};
use fanwire_core::{Engine, Event, Hooks, Limits, Order, Schema};
use fanwire_server::{Config, Server};
use serde_json::{json, Value};

/// Adds the subscriber's init payload `greeting` to every order.
#[derive(Debug)]
struct Greeter;

impl Resolver for Greeter {
    fn resolve(&self, _: &Event, data: &Value, group: &GroupInfo) -> Resolution {
        let mut data = data.clone();
        data["status"] = group.init_payload["greeting"].clone();
        Resolution::Ready(Ok(data))
    }
}

/// A client of the server at `addr`, acknowledged with `init` as its
/// payload, whose subscription `query` (id `s`) the engine has registered.
async fn subscribed(
    engine: &Engine,
    addr: std::net::SocketAddr,
    init: Value,
    query: &str,
) -> Client {
    let mut client = Client::connect(addr, Some("graphql-transport-ws")).await;
    client
        .send(json!({"type": "connection_init", "payload": init}))
        .await;
    assert_eq!(client.recv().await, json!({"type": "connection_ack"}));
    client.subscribe("s", query, json!({})).await;
    let deadline = tokio::time::Instant::now() + common::WAIT;
    while engine.registry().counts().2 == 0 {
        assert!(tokio::time::Instant::now() < deadline, "never subscribed");
        tokio::time::sleep(std::time::Duration::from_millis(10)).await;
    }
    client
}

#[tokio::test]
async fn bind_engine_serves_the_given_engine_and_its_hooks() {
    let mut schema = Schema::parse(SCHEMA).unwrap();
    schema.bind_topic("orderCreated", "o:{tenantId}").unwrap();
    let limits = Limits {
        queue_depth: 7,
        ..Limits::default()
    };
    let mut resolvers: HashMap<String, Arc<dyn Resolver>> = HashMap::new();
    resolvers.insert("orderCreated".into(), Arc::new(Greeter));
    let hooks = Hooks {
        resolvers,
        ..Hooks::default()
    };
    let engine = Engine::with_hooks(schema, limits, hooks).unwrap();
    let mut config = Config::default();
    config.server.listen = "127.0.0.1:0".parse().unwrap();
    // The engine's limits win over the config's; no schema file is needed.
    config.limits.queue_depth = 1;
    let server = Server::bind_engine(engine.clone(), config).await.unwrap();
    assert_eq!(server.engine().limits().queue_depth, 7);
    let addr = server.local_addr().unwrap();
    let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
    let done = tokio::spawn(server.run(async {
        let _ = stopped.await;
    }));

    let mut client = subscribed(
        &engine,
        addr,
        json!({"greeting": "hi"}),
        "subscription { orderCreated(tenantId: 5) { id status } }",
    )
    .await;
    // Served: the node's dispatcher fans out; the receipt says when it has.
    let done_publish = engine
        .publish(
            vec![Event::new("o:5", json!({"id": 1, "cents": 2}))],
            Order::Numbered,
        )
        .dispatched()
        .await;
    assert_eq!(done_publish.deliveries, 1);
    assert_eq!(
        client.recv().await,
        json!({"id": "s", "type": "next", "payload": {"data": {"orderCreated": {"id": "1", "status": "hi"}}}})
    );
    let _ = stop.send(());
    done.await.unwrap();
}

/// Resolves each event when the test releases it.
#[derive(Debug, Default)]
struct Gated {
    gates: std::sync::Mutex<Vec<tokio::sync::oneshot::Sender<()>>>,
}

impl Resolver for Gated {
    fn resolve(&self, _: &Event, data: &Value, _: &GroupInfo) -> Resolution {
        let (tx, rx) = tokio::sync::oneshot::channel();
        self.gates.lock().unwrap().push(tx);
        let data = data.clone();
        Resolution::Pending(Box::pin(async move {
            let _ = rx.await;
            Ok(data)
        }))
    }
}

/// The raw answer to one `POST /publish`.
async fn post_publish(addr: std::net::SocketAddr, body: &str) -> String {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let mut stream = tokio::net::TcpStream::connect(addr).await.unwrap();
    let req = format!(
        "POST /publish HTTP/1.1\r\nHost: t\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{body}",
        body.len()
    );
    stream.write_all(req.as_bytes()).await.unwrap();
    let mut raw = Vec::new();
    tokio::time::timeout(common::WAIT, stream.read_to_end(&mut raw))
        .await
        .expect("an answer")
        .unwrap();
    String::from_utf8(raw).unwrap()
}

#[tokio::test]
async fn a_full_backlog_makes_a_publish_wait_then_refuses_it_with_503() {
    let mut schema = Schema::parse(SCHEMA).unwrap();
    schema.bind_topic("orderCreated", "o:{tenantId}").unwrap();
    let limits = Limits {
        max_resolutions: 1,
        publish_wait_ms: 300,
        ..Limits::default()
    };
    let gated = Arc::new(Gated::default());
    let mut resolvers: HashMap<String, Arc<dyn Resolver>> = HashMap::new();
    resolvers.insert("orderCreated".into(), gated.clone());
    let spawner: fanwire_core::hooks::Spawner = Arc::new(|task| {
        tokio::spawn(task);
    });
    let hooks = Hooks {
        resolvers,
        spawner: Some(spawner),
        ..Hooks::default()
    };
    let engine = Engine::with_hooks(schema, limits, hooks).unwrap();
    let mut config = Config::default();
    config.server.listen = "127.0.0.1:0".parse().unwrap();
    let server = Server::bind_engine(engine.clone(), config).await.unwrap();
    let addr = server.local_addr().unwrap();
    let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
    let done = tokio::spawn(server.run(async {
        let _ = stopped.await;
    }));
    let mut client = subscribed(
        &engine,
        addr,
        json!({}),
        "subscription { orderCreated(tenantId: 5) { id } }",
    )
    .await;
    let order = |id: u32| json!({"topic": "o:5", "data": {"id": id}}).to_string();

    // The oldest resolution that started, once one has.
    let gate = || async {
        let deadline = tokio::time::Instant::now() + common::WAIT;
        loop {
            if let Some(gate) = gated.gates.lock().unwrap().pop() {
                return gate;
            }
            assert!(tokio::time::Instant::now() < deadline, "never resolving");
            tokio::time::sleep(std::time::Duration::from_millis(10)).await;
        }
    };

    // Accepted, dispatched, and now resolving: the bound of one resolution is full.
    assert!(post_publish(addr, &order(1))
        .await
        .starts_with("HTTP/1.1 200"));
    let first = gate().await;
    let refused = post_publish(addr, &order(2)).await;
    assert!(refused.starts_with("HTTP/1.1 503"), "{refused}");
    assert!(refused.contains("Retry-After: 1"), "{refused}");
    assert!(refused.contains("saturated"), "{refused}");
    let backlog = engine
        .metrics()
        .drops
        .get_or_create(&fanwire_core::metrics::Reason { reason: "backlog" })
        .get();
    assert_eq!(backlog, 1);

    // The resolution finishes: room again, and nothing accepted was lost.
    first.send(()).unwrap();
    assert!(post_publish(addr, &order(3))
        .await
        .starts_with("HTTP/1.1 200"));
    gate().await.send(()).unwrap();
    for id in ["1", "3"] {
        assert_eq!(
            client.recv().await["payload"]["data"]["orderCreated"]["id"],
            id
        );
    }
    let _ = stop.send(());
    done.await.unwrap();
}
