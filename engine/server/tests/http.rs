//! The HTTP side: publish errors, auth, health and metrics.

mod common;

use common::{http_raw, http_request, TestServer};
use serde_json::json;

#[tokio::test]
async fn bad_publish_bodies_get_a_reason_and_publish_nothing() {
    let server = TestServer::start(|c| c.server.max_publish_bytes = 1024).await;
    let mut c = server.ready_client().await;
    c.subscribe("1", "subscription { tick { seq } }", json!({}))
        .await;
    server
        .eventually("subscribed", |s| s.metric("fanwire_subscriptions") == 1.0)
        .await;
    for (body, status, needle) in [
        ("{", 400, "not valid JSON"),
        (
            r#"[{"topic":"ticks:demo","data":{"seq":1}},{"topic":"ticks:demo"}]"#,
            400,
            "event 1",
        ),
        (r#""hello""#, 400, "event object"),
    ] {
        let (got, reply) = server.publish(body, None).await;
        assert_eq!(got, status, "{reply}");
        assert!(reply["error"].as_str().unwrap().contains(needle), "{reply}");
    }
    let big = format!(r#"{{"topic":"ticks:demo","data":"{}"}}"#, "x".repeat(2000));
    assert_eq!(server.publish(&big, None).await.0, 413);
    assert_eq!(
        server.metric("fanwire_events_in_total"),
        0.0,
        "nothing of a bad body was published"
    );
    // A good one still goes through, and is the first frame the client sees.
    assert_eq!(
        server
            .publish(r#"{"topic":"ticks:demo","data":{"seq":9}}"#, None)
            .await
            .0,
        200
    );
    assert_eq!(c.recv().await["payload"]["data"]["tick"]["seq"], 9);
}

#[tokio::test]
async fn publish_requires_the_configured_token() {
    let server = TestServer::start(|c| c.server.publish_token = Some("s3cret".into())).await;
    let body = r#"{"topic":"t","data":1}"#;
    assert_eq!(server.publish(body, None).await.0, 401);
    assert_eq!(server.publish(body, Some("wrong")).await.0, 401);
    assert_eq!(
        server.publish(body, Some("s3cret")).await,
        (200, json!({"accepted": 1, "deliveries": 0}))
    );
}

#[tokio::test]
async fn health_metrics_page_and_unknown_routes() {
    let server = TestServer::start(|_| {}).await;
    let (status, health) = http_request(server.addr, "GET", "/healthz", "", None).await;
    assert_eq!((status, health["status"].clone()), (200, json!("ok")));
    let (status, metrics) = http_raw(server.addr, "GET", "/metrics", "", None).await;
    assert_eq!(status, 200);
    for name in [
        "fanwire_connections",
        "fanwire_deliveries_total",
        "fanwire_dispatch_seconds_bucket",
    ] {
        assert!(metrics.contains(name), "{name} missing from\n{metrics}");
    }
    let (status, page) = http_raw(server.addr, "GET", "/", "", None).await;
    assert_eq!(status, 200);
    assert!(page.contains("graphql-transport-ws"));
    assert_eq!(
        http_request(server.addr, "GET", "/nope", "", None).await.0,
        404
    );
    assert_eq!(
        http_request(server.addr, "DELETE", "/publish", "", None)
            .await
            .0,
        405
    );
}
