//! A server around an engine that the embedding program built (as the
//! Python package does): its hooks are the ones in force.

use crate::common;

use std::collections::HashMap;
use std::sync::Arc;

use common::{Client, SCHEMA};
use fanwire_core::hooks::{GroupInfo, Resolution, Resolver};
use fanwire_core::{Engine, Event, Hooks, Limits, Schema};
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

    let mut client = Client::connect(addr, Some("graphql-transport-ws")).await;
    client
        .send(json!({"type": "connection_init", "payload": {"greeting": "hi"}}))
        .await;
    assert_eq!(client.recv().await, json!({"type": "connection_ack"}));
    client
        .subscribe(
            "s",
            "subscription { orderCreated(tenantId: 5) { id status } }",
            json!({}),
        )
        .await;
    let deadline = tokio::time::Instant::now() + common::WAIT;
    while engine.registry().counts().2 == 0 {
        assert!(tokio::time::Instant::now() < deadline, "never subscribed");
        tokio::time::sleep(std::time::Duration::from_millis(10)).await;
    }
    let done_publish = engine.publish(&Event::new("o:5", json!({"id": 1, "cents": 2})));
    assert_eq!(done_publish.deliveries, 1);
    assert_eq!(
        client.recv().await,
        json!({"id": "s", "type": "next", "payload": {"data": {"orderCreated": {"id": "1", "status": "hi"}}}})
    );
    let _ = stop.send(());
    done.await.unwrap();
}
