//! The native JWT connection policy in a running host: HS256, RS256 and
//! ES256; valid, expired, wrongly signed, wrong-algorithm and missing
//! tokens; a live token's expiry (whole or fractional) closes the connection
//! with 4403, an absurd one neither panics nor expires; required `iss`/`aud`;
//! the payload token against the upgrade's `Authorization` header.

use crate::common;

use std::path::PathBuf;
use std::time::{SystemTime, UNIX_EPOCH};

use common::*;
use fanwire_plugins::jwt::{JwtAlgorithm, JwtConfig};
use jsonwebtoken::{encode, Algorithm, EncodingKey, Header};
use serde_json::{json, Value};

fn keys() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../plugins/tests/keys")
}

fn now() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap()
        .as_secs()
}

fn sign(algorithm: Algorithm, claims: Value) -> String {
    let key = match algorithm {
        Algorithm::HS256 => EncodingKey::from_secret(b"test-secret"),
        Algorithm::RS256 => {
            EncodingKey::from_rsa_pem(&std::fs::read(keys().join("rsa-private.pem")).unwrap())
                .unwrap()
        }
        Algorithm::ES256 => {
            EncodingKey::from_ec_pem(&std::fs::read(keys().join("ec-private.pem")).unwrap())
                .unwrap()
        }
        other => panic!("no test key for {other:?}"),
    };
    encode(&Header::new(algorithm), &claims, &key).unwrap()
}

fn jwt(algorithm: JwtAlgorithm) -> JwtConfig {
    let mut config = JwtConfig::new(algorithm);
    match algorithm {
        JwtAlgorithm::HS256 => config.secret = Some("test-secret".into()),
        JwtAlgorithm::RS256 => config.public_key_file = Some(keys().join("rsa-public.pem")),
        JwtAlgorithm::ES256 => config.public_key_file = Some(keys().join("ec-public.pem")),
    }
    config
}

async fn server(algorithm: JwtAlgorithm) -> TestServer {
    TestServer::start(|c| c.auth.jwt = Some(jwt(algorithm))).await
}

/// Sends `connection_init` with `payload`; the ack, or the close code and reason.
async fn init(server: &TestServer, payload: Value) -> Result<Value, (u16, String)> {
    let mut c = server.client("graphql-transport-ws").await;
    answer(&mut c, payload).await
}

/// A client whose upgrade request carries `Authorization: {authorization}`.
async fn client_with_header(server: &TestServer, authorization: &str) -> Client {
    use tokio_tungstenite::tungstenite::client::IntoClientRequest;
    use tokio_tungstenite::tungstenite::http::HeaderValue;
    let mut req = format!("ws://{}/graphql", server.addr)
        .into_client_request()
        .unwrap();
    let headers = req.headers_mut();
    headers.insert(
        "Sec-WebSocket-Protocol",
        HeaderValue::from_static("graphql-transport-ws"),
    );
    headers.insert(
        "Authorization",
        HeaderValue::from_str(authorization).unwrap(),
    );
    let (ws, _) = tokio_tungstenite::connect_async(req)
        .await
        .expect("upgrade succeeds");
    Client {
        ws,
        protocol: Some("graphql-transport-ws".into()),
    }
}

/// Sends `connection_init` with `payload` on `c`; the ack, or the close code and reason.
async fn answer(c: &mut Client, payload: Value) -> Result<Value, (u16, String)> {
    c.send(json!({"type": "connection_init", "payload": payload}))
        .await;
    use futures_util::StreamExt;
    use tokio_tungstenite::tungstenite::Message;
    loop {
        let msg = tokio::time::timeout(WAIT, c.ws.next())
            .await
            .expect("an answer arrives")
            .expect("the socket is open")
            .expect("a valid frame");
        match msg {
            Message::Text(t) => return Ok(serde_json::from_str(t.as_str()).unwrap()),
            Message::Close(Some(frame)) => {
                return Err((frame.code.into(), frame.reason.to_string()))
            }
            _ => continue,
        }
    }
}

/// The token with one character of its signature changed.
fn tampered(mut token: String) -> String {
    let at = token.rfind('.').unwrap() + 1;
    let flipped = if &token[at..at + 1] == "A" { "B" } else { "A" };
    token.replace_range(at..at + 1, flipped);
    token
}

fn claims(exp: u64) -> Value {
    json!({"sub": "user-1", "tenant_id": 5, "roles": ["order:read"], "exp": exp})
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn valid_tokens_of_each_algorithm_are_accepted() {
    for (config, alg) in [
        (JwtAlgorithm::HS256, Algorithm::HS256),
        (JwtAlgorithm::RS256, Algorithm::RS256),
        (JwtAlgorithm::ES256, Algorithm::ES256),
    ] {
        let server = server(config).await;
        let token = sign(alg, claims(now() + 3600));
        let ack = init(&server, json!({"token": token})).await;
        assert_eq!(ack, Ok(json!({"type": "connection_ack"})), "{config:?}");
        // `Authorization: Bearer` in the payload works too.
        let ack = init(&server, json!({"Authorization": format!("Bearer {token}")})).await;
        assert_eq!(ack, Ok(json!({"type": "connection_ack"})), "{config:?}");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn expired_invalid_wrong_algorithm_and_missing_tokens_are_closed_with_4403() {
    let server = server(JwtAlgorithm::RS256).await;
    let cases = [
        (
            "expired",
            json!({"token": sign(Algorithm::RS256, claims(now() - 120))}),
            "expired",
        ),
        ("missing", json!({}), "Missing"),
        ("garbage", json!({"token": "not.a.jwt"}), "Invalid token"),
        (
            "wrong signature",
            json!({"token": tampered(sign(Algorithm::RS256, claims(now() + 3600)))}),
            "signature",
        ),
        (
            "wrong algorithm",
            json!({"token": sign(Algorithm::HS256, claims(now() + 3600))}),
            "algorithm",
        ),
        (
            "ES256 for RS256",
            json!({"token": sign(Algorithm::ES256, claims(now() + 3600))}),
            "algorithm",
        ),
    ];
    for (what, payload, why) in cases {
        let (code, reason) = init(&server, payload).await.expect_err(what);
        assert_eq!(code, 4403, "{what}");
        assert!(reason.contains(why), "{what}: {reason}");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_live_tokens_expiry_closes_the_connection() {
    // The token must still be valid when the server checks it (zero leeway)
    // and expire while the test waits: a margin no busy machine eats
    // between signing and the check, and a close wait (`WAIT`) well past it.
    const LIFETIME_S: u64 = 5;
    let server = server(JwtAlgorithm::HS256).await;
    let mut c = server.client("graphql-transport-ws").await;
    let token = sign(Algorithm::HS256, claims(now() + LIFETIME_S));
    c.send(json!({"type": "connection_init", "payload": {"token": token}}))
        .await;
    assert_eq!(c.recv().await, json!({"type": "connection_ack"}));
    const _: () = assert!(WAIT.as_secs() >= 2 * LIFETIME_S);
    let (code, reason) = c.closed().await;
    assert_eq!((code, reason.as_str()), (4403, "Authentication expired"));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_principal_reaches_the_security_plugins() {
    // tenant isolation keyed on the JWT's tenant claim: tenant 5 sees only tenant 5.
    let dist = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../../plugins/dist");
    let server = TestServer::start(|c| {
        c.auth.jwt = Some(jwt(JwtAlgorithm::HS256));
        c.plugins = vec![fanwire_plugins::PluginSpec {
            name: None,
            path: dist.join("tenant-isolation.wasm"),
            kind: fanwire_plugins::Kind::EventFilter,
            order: 0,
            fields: Vec::new(),
            topics: Vec::new(),
            timeout_ms: None,
            memory_mb: None,
            config: serde_json::Map::new(),
        }];
        c.plugin_runtime.watch = false;
        c.plugin_runtime.call_timeout_ms = 10_000;
    })
    .await;
    let mut c = server.client("graphql-transport-ws").await;
    let token = sign(Algorithm::HS256, claims(now() + 3600));
    c.send(json!({"type": "connection_init", "payload": {"token": token}}))
        .await;
    assert_eq!(c.recv().await, json!({"type": "connection_ack"}));
    c.subscribe(
        "1",
        "subscription { orderCreated(tenantId: \"x\") { id } }",
        json!({}),
    )
    .await;
    server
        .eventually("subscribed", |s| s.metric("fanwire_subscriptions") >= 1.0)
        .await;
    for (id, tenant) in [(1, 6), (2, 5)] {
        let body =
            json!({"topic": "orders:x", "data": {"id": id, "cents": 1, "tenant_id": tenant}});
        assert_eq!(server.publish(&body.to_string(), None).await.0, 200);
    }
    let msg = c.recv().await;
    assert_eq!(msg["payload"]["data"]["orderCreated"]["id"], "2", "{msg}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_fractional_exp_is_enforced_on_the_live_connection() {
    let server = server(JwtAlgorithm::HS256).await;
    let exp = now() as f64 + 2.4;
    let mut claims = claims(0);
    claims["exp"] = json!(exp);
    let mut c = server.client("graphql-transport-ws").await;
    let ack = answer(&mut c, json!({"token": sign(Algorithm::HS256, claims)})).await;
    assert_eq!(ack, Ok(json!({"type": "connection_ack"})));
    let (code, reason) = c.closed().await;
    assert_eq!((code, reason.as_str()), (4403, "Authentication expired"));
}

/// An expiry beyond what the clock can hold is no practical expiry: the
/// connection lives and receives events; one jsonwebtoken cannot read is refused.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn absurd_exp_values_never_panic_the_connection() {
    let server = server(JwtAlgorithm::HS256).await;
    for (i, exp) in [json!(1u64 << 63), json!(u64::MAX)].into_iter().enumerate() {
        let mut claims = claims(0);
        claims["exp"] = exp.clone();
        let mut c = server.client("graphql-transport-ws").await;
        let ack = answer(&mut c, json!({"token": sign(Algorithm::HS256, claims)})).await;
        assert_eq!(ack, Ok(json!({"type": "connection_ack"})), "{exp}");
        c.subscribe(
            "1",
            "subscription { orderCreated(tenantId: \"abs\") { id } }",
            json!({}),
        )
        .await;
        server
            .eventually("subscribed", |s| s.metric("fanwire_subscriptions") >= 1.0)
            .await;
        let body = json!({"topic": "orders:abs", "data": {"id": i, "cents": 1}});
        assert_eq!(server.publish(&body.to_string(), None).await.0, 200);
        let msg = c.recv().await;
        assert_eq!(
            msg["payload"]["data"]["orderCreated"]["id"],
            i.to_string(),
            "{exp}: {msg}"
        );
        c.send(json!({"id": "1", "type": "complete"})).await;
        server
            .eventually("unsubscribed", |s| s.metric("fanwire_subscriptions") == 0.0)
            .await;
    }
    for exp in [json!(1e300), json!(-1), json!("9999999999")] {
        let mut claims = claims(0);
        claims["exp"] = exp.clone();
        let (code, reason) = init(&server, json!({"token": sign(Algorithm::HS256, claims)}))
            .await
            .expect_err(&exp.to_string());
        assert_eq!(code, 4403, "{exp}");
        assert!(reason.contains("exp"), "{exp}: {reason}");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_configured_issuer_and_audience_are_required() {
    let server = TestServer::start(|c| {
        let mut config = jwt(JwtAlgorithm::HS256);
        config.issuer = Some("https://issuer.test".into());
        config.audience = Some("fanwire".into());
        c.auth.jwt = Some(config);
    })
    .await;
    let with = |iss: Value, aud: Value| {
        let mut claims = claims(now() + 3600);
        claims["iss"] = iss;
        claims["aud"] = aud;
        json!({"token": sign(Algorithm::HS256, claims)})
    };
    let ok = init(
        &server,
        with(json!("https://issuer.test"), json!("fanwire")),
    )
    .await;
    assert_eq!(ok, Ok(json!({"type": "connection_ack"})));
    let mut no_iss = claims(now() + 3600);
    no_iss["aud"] = json!("fanwire");
    let mut no_aud = claims(now() + 3600);
    no_aud["iss"] = json!("https://issuer.test");
    let cases = [
        ("no iss", json!({"token": sign(Algorithm::HS256, no_iss)})),
        ("no aud", json!({"token": sign(Algorithm::HS256, no_aud)})),
        ("iss null", with(Value::Null, json!("fanwire"))),
        ("iss a number", with(json!(1), json!("fanwire"))),
        ("iss an object", with(json!({"x": 1}), json!("fanwire"))),
        ("aud null", with(json!("https://issuer.test"), Value::Null)),
    ];
    for (what, payload) in cases {
        let (code, reason) = init(&server, payload).await.expect_err(what);
        assert_eq!(code, 4403, "{what}");
        assert!(reason.contains("claim"), "{what}: {reason}");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_payload_token_when_present_else_the_header_with_any_bearer_case() {
    let server = server(JwtAlgorithm::HS256).await;
    let token = sign(Algorithm::HS256, claims(now() + 3600));
    let ack = Ok(json!({"type": "connection_ack"}));
    for header in [
        format!("Bearer {token}"),
        format!("bearer {token}"),
        token.clone(),
    ] {
        let mut c = client_with_header(&server, &header).await;
        assert_eq!(answer(&mut c, json!({})).await, ack, "{header}");
        let mut c = client_with_header(&server, &header).await;
        assert_eq!(
            answer(&mut c, json!({"token": null})).await,
            ack,
            "{header}"
        );
    }
    // A payload token that is present is the token, even beside a good header.
    let header = format!("Bearer {token}");
    for (payload, why) in [
        (json!({"token": "not.a.jwt"}), "Invalid token"),
        (json!({"token": ""}), "Missing"),
        (json!({"token": 42}), "must be a token string"),
    ] {
        let mut c = client_with_header(&server, &header).await;
        let (code, reason) = answer(&mut c, payload.clone()).await.expect_err(why);
        assert_eq!(code, 4403, "{payload}");
        assert!(reason.contains(why), "{payload}: {reason}");
    }
    let mut c = client_with_header(&server, "Basic dXNlcjpwdw==").await;
    let (code, reason) = answer(&mut c, json!({})).await.unwrap_err();
    assert_eq!(code, 4403);
    assert!(reason.contains("scheme"), "{reason}");
}
