//! The PostgreSQL source against the machine's real PostgreSQL: a row
//! trigger reaches a subscriber, an event too big for NOTIFY goes through the
//! outbox, and killing the listener's connection loses nothing.

mod common;
mod services;

use common::{http_raw, metric_value, TestServer};
use serde_json::{json, Value};
use services::{ensure_postgres, unique, PG_URL};
use tokio_postgres::{Client, NoTls};

const SCHEMA: &str = r#"
type Query { ok: Boolean }
type Subscription {
  orderChanged(tenantId: ID!): OrderChange @topic(name: "orders:{tenantId}")
  item(stream: String!): Item @topic(name: "items:{stream}")
  rowChanged(stream: String!): RowChange @topic(name: "rows:{stream}")
}
type OrderChange { op: String! table: String new: Order old: Order tenant_id: ID }
type Order { id: ID! cents: Int! status: String }
type Item { n: Int! blob: String }
type RowChange { op: String! new: Row }
type Row { n: Int! }
"#;

/// The documented SQL, exactly as users install it.
const INSTALL: &str = include_str!("../../../docs/postgres.sql");

async fn connect() -> Client {
    ensure_postgres();
    let (client, connection) = tokio_postgres::connect(PG_URL, NoTls)
        .await
        .expect("PostgreSQL at 127.0.0.1:5432, database test, user postgres");
    tokio::spawn(connection);
    // Tests in parallel would race on CREATE OR REPLACE FUNCTION: one
    // transaction (a simple-query batch is one) holding a lock to its commit.
    client
        .batch_execute(&format!("SELECT pg_advisory_xact_lock(775501); {INSTALL}"))
        .await
        .expect("docs/postgres.sql installs");
    client
}

async fn server(tweak: impl FnOnce(&mut fanwire_bus::PostgresConfig)) -> TestServer {
    let dir = services::temp_dir("pg-schema");
    let schema = dir.join("schema.graphql");
    std::fs::write(&schema, SCHEMA).unwrap();
    let server = TestServer::start(|c| {
        c.server.schema = Some(schema);
        c.sources.postgres.url = Some(PG_URL.into());
        tweak(&mut c.sources.postgres);
    })
    .await;
    wait_metric(&server, "fanwire_bus_up{component=\"postgres\"}", 1.0).await;
    server
}

async fn bus_metric(server: &TestServer, name: &str) -> f64 {
    let (_, text) = http_raw(server.addr, "GET", "/metrics", "", None).await;
    metric_value(&text, name)
}

async fn wait_metric(server: &TestServer, name: &str, at_least: f64) {
    let deadline = tokio::time::Instant::now() + services::SLOW;
    while bus_metric(server, name).await < at_least {
        assert!(
            tokio::time::Instant::now() < deadline,
            "{name} never reached {at_least}"
        );
        tokio::time::sleep(std::time::Duration::from_millis(20)).await;
    }
}

fn data(frame: &Value, field: &str) -> Value {
    assert_eq!(frame["type"], "next", "{frame}");
    frame["payload"]["data"][field].clone()
}

#[tokio::test]
async fn a_row_trigger_reaches_a_subscriber_with_its_projection() {
    let db = connect().await;
    let (table, channel) = (unique("orders"), unique("ch"));
    db.batch_execute(&format!(
        "CREATE TABLE {table} (id serial PRIMARY KEY, tenant_id int, user_id int, cents int, status text);
         CREATE TRIGGER fanwire AFTER INSERT OR UPDATE OR DELETE ON {table}
             FOR EACH ROW EXECUTE FUNCTION fanwire_row_change('orders:{{tenant_id}}', 'notify', '{channel}');"
    ))
    .await
    .unwrap();
    let server = server(|pg| pg.channels = vec![channel.clone()]).await;
    let mut c = server.ready_client().await;
    c.subscribe(
        "o",
        r#"subscription { orderChanged(tenantId: "5") { op new { id cents status } old { cents } } }"#,
        json!({}),
    )
    .await;
    server
        .eventually("subscribed", |s| s.metric("fanwire_subscriptions") == 1.0)
        .await;

    db.batch_execute(&format!(
        "INSERT INTO {table} (tenant_id, user_id, cents, status) VALUES (6, 1, 5, 'other tenant');
         INSERT INTO {table} (tenant_id, user_id, cents, status) VALUES (5, 1, 1999, 'new');
         UPDATE {table} SET cents = 2500 WHERE tenant_id = 5;
         DELETE FROM {table} WHERE tenant_id = 5;"
    ))
    .await
    .unwrap();
    let inserted = data(&c.recv().await, "orderChanged");
    assert_eq!(inserted["op"], "INSERT");
    assert_eq!(inserted["new"]["cents"], 1999);
    assert_eq!(inserted["new"]["status"], "new");
    assert!(
        inserted["new"]["id"].is_string(),
        "ID is serialised as a string"
    );
    assert_eq!(inserted["old"], Value::Null);
    let updated = data(&c.recv().await, "orderChanged");
    assert_eq!(
        (
            &updated["op"],
            &updated["new"]["cents"],
            &updated["old"]["cents"]
        ),
        (&json!("UPDATE"), &json!(2500), &json!(1999))
    );
    let deleted = data(&c.recv().await, "orderChanged");
    assert_eq!(
        (&deleted["op"], &deleted["new"], &deleted["old"]["cents"]),
        (&json!("DELETE"), &Value::Null, &json!(2500))
    );

    // Not JSON: counted and dropped. A /publish-shaped payload is taken as is.
    db.batch_execute(&format!(
        r#"NOTIFY {channel}, 'not json';
           NOTIFY {channel}, '{{"topic": "orders:5", "data": {{"op": "MANUAL"}}}}';"#
    ))
    .await
    .unwrap();
    assert_eq!(data(&c.recv().await, "orderChanged")["op"], "MANUAL");
    assert_eq!(
        bus_metric(
            &server,
            "fanwire_source_invalid_total{component=\"postgres\"}"
        )
        .await,
        1.0
    );
    db.batch_execute(&format!("DROP TABLE {table}"))
        .await
        .unwrap();
}

#[tokio::test]
async fn an_event_too_big_for_notify_goes_through_the_outbox() {
    let db = connect().await;
    let outbox = unique("outbox");
    db.execute("SELECT fanwire_create_outbox($1)", &[&outbox])
        .await
        .unwrap();
    let server = server(|pg| {
        pg.outbox_table = Some(outbox.clone());
        pg.cursor = outbox.clone();
    })
    .await;
    let mut c = server.ready_client().await;
    c.subscribe(
        "i",
        r#"subscription { item(stream: "big") { n blob } }"#,
        json!({}),
    )
    .await;
    server
        .eventually("subscribed", |s| s.metric("fanwire_subscriptions") == 1.0)
        .await;

    let blob = "x".repeat(20_000);
    let event = json!({"n": 1, "blob": blob});
    // NOTIFY refuses it...
    let refused = db
        .execute(
            "SELECT fanwire_notify('fanwire_unused', 'items:big', $1::text::jsonb)",
            &[&event.to_string()],
        )
        .await
        .unwrap_err();
    assert!(
        format!("{refused:?}").contains("over NOTIFY"),
        "{refused:?}"
    );
    // ...the outbox carries it.
    db.execute(
        "SELECT fanwire_publish('items:big', $1::text::jsonb, $2)",
        &[&event.to_string(), &outbox],
    )
    .await
    .unwrap();
    let item = data(&c.recv().await, "item");
    assert_eq!(item["n"], 1);
    assert_eq!(item["blob"].as_str().unwrap().len(), 20_000);
    db.batch_execute(&format!("DROP TABLE {outbox}"))
        .await
        .unwrap();
}

#[tokio::test]
async fn killing_the_listener_while_rows_are_inserted_loses_and_repeats_nothing() {
    const ROWS: i32 = 200;
    let db = connect().await;
    let (table, outbox, app) = (unique("rows"), unique("outbox"), unique("fanwire_listener"));
    db.execute("SELECT fanwire_create_outbox($1)", &[&outbox])
        .await
        .unwrap();
    db.batch_execute(&format!(
        "CREATE TABLE {table} (n int NOT NULL);
         CREATE TRIGGER fanwire AFTER INSERT ON {table}
             FOR EACH ROW EXECUTE FUNCTION fanwire_row_change('rows:kill', 'outbox', '{outbox}');"
    ))
    .await
    .unwrap();
    let url = format!("{PG_URL}?application_name={app}");
    let dir = services::temp_dir("pg-schema");
    let schema = dir.join("schema.graphql");
    std::fs::write(&schema, SCHEMA).unwrap();
    let server = TestServer::start(|c| {
        c.server.schema = Some(schema);
        c.sources.postgres.url = Some(url);
        c.sources.postgres.outbox_table = Some(outbox.clone());
        c.sources.postgres.cursor = outbox.clone();
        // Frequent polls make a lost wake-up show quickly, not hide it.
        c.sources.postgres.poll_ms = 50;
    })
    .await;
    wait_metric(&server, "fanwire_bus_up{component=\"postgres\"}", 1.0).await;
    let mut c = server.ready_client().await;
    c.subscribe(
        "r",
        r#"subscription { rowChanged(stream: "kill") { op new { n } } }"#,
        json!({}),
    )
    .await;
    server
        .eventually("subscribed", |s| s.metric("fanwire_subscriptions") == 1.0)
        .await;

    // One committed transaction per row, while the listener is killed.
    let inserter = {
        let (writer, connection) = tokio_postgres::connect(PG_URL, NoTls).await.unwrap();
        tokio::spawn(connection);
        let table = table.clone();
        tokio::spawn(async move {
            for n in 1..=ROWS {
                writer
                    .execute(&format!("INSERT INTO {table} (n) VALUES ($1)"), &[&n])
                    .await
                    .unwrap();
                tokio::time::sleep(std::time::Duration::from_millis(3)).await;
            }
        })
    };
    let terminate = format!(
        "SELECT count(pg_terminate_backend(pid)) FROM pg_stat_activity WHERE application_name = '{app}'"
    );
    let mut got = Vec::new();
    let mut kills = 0;
    while got.len() < ROWS as usize {
        let change = data(&c.recv().await, "rowChanged");
        assert_eq!(change["op"], "INSERT");
        got.push(change["new"]["n"].as_i64().unwrap());
        if got.len() == 40 || got.len() == 120 {
            // The listener may still be reconnecting from the last kill.
            loop {
                let killed: i64 = db.query_one(&terminate, &[]).await.unwrap().get(0);
                if killed > 0 {
                    kills += 1;
                    break;
                }
                tokio::time::sleep(std::time::Duration::from_millis(10)).await;
            }
        }
    }
    inserter.await.unwrap();
    assert_eq!(kills, 2);
    let expected: Vec<i64> = (1..=ROWS as i64).collect();
    assert_eq!(got, expected, "every committed row once, in order");
    assert!(bus_metric(&server, "fanwire_bus_retries_total{component=\"postgres\"}").await >= 2.0);
    // Nothing more arrives: no row was delivered twice.
    db.execute(&format!("INSERT INTO {table} (n) VALUES (0)"), &[])
        .await
        .unwrap();
    assert_eq!(data(&c.recv().await, "rowChanged")["new"]["n"], 0);
    db.batch_execute(&format!("DROP TABLE {table}; DROP TABLE {outbox}"))
        .await
        .unwrap();
}
