//! The JWT connection policy on its own, with real signed tokens: required
//! `iss`/`aud`, `exp` in every shape a client can write, and which token wins
//! between the `connection_init` payload and the `Authorization` header.

use std::path::Path;
use std::time::{SystemTime, UNIX_EPOCH};

use fanwire_core::hooks::{ConnectionPolicy, ConnectionRequest};
use fanwire_core::Principal;
use fanwire_plugins::jwt::{JwtAlgorithm, JwtConfig, JwtPolicy};
use jsonwebtoken::{encode, EncodingKey, Header};
use serde_json::{json, Map, Value};

const SECRET: &str = "test-secret";

fn now() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap()
        .as_secs()
}

fn sign(claims: Value) -> String {
    encode(
        &Header::default(),
        &claims,
        &EncodingKey::from_secret(SECRET.as_bytes()),
    )
    .unwrap()
}

fn policy(issuer: Option<&str>, audience: Option<&str>) -> JwtPolicy {
    let mut config = JwtConfig::new(JwtAlgorithm::HS256);
    config.secret = Some(SECRET.into());
    config.issuer = issuer.map(str::to_owned);
    config.audience = audience.map(str::to_owned);
    JwtPolicy::new(config, Path::new(".")).unwrap()
}

fn check(policy: &JwtPolicy, payload: Value, header: Option<&str>) -> Result<Principal, String> {
    let Value::Object(payload) = payload else {
        panic!("the payload must be an object");
    };
    let headers: Vec<(String, String)> = header
        .map(|v| vec![("authorization".to_owned(), v.to_owned())])
        .unwrap_or_default();
    let request = ConnectionRequest {
        init_payload: &payload,
        headers: &headers,
    };
    policy.check(&request).map(|accepted| accepted.principal)
}

/// Claims valid for an hour, with `extra` merged in (null removes a claim).
fn claims(extra: Value) -> Value {
    let mut claims: Map<String, Value> = json!({
        "sub": "user-1", "iss": "https://issuer.test", "aud": "fanwire", "exp": now() + 3600
    })
    .as_object()
    .unwrap()
    .clone();
    for (k, v) in extra.as_object().unwrap() {
        match v {
            Value::Null => claims.remove(k),
            v => claims.insert(k.clone(), v.clone()),
        };
    }
    Value::Object(claims)
}

fn with_token(extra: Value) -> Value {
    json!({"token": sign(claims(extra))})
}

#[test]
fn a_configured_issuer_and_audience_must_be_present_and_match() {
    let policy = policy(Some("https://issuer.test"), Some("fanwire"));
    check(&policy, with_token(json!({})), None).expect("matching iss and aud are accepted");
    check(
        &policy,
        with_token(json!({"aud": ["other", "fanwire"]})),
        None,
    )
    .expect("an aud list naming us is accepted");
    let refused = [
        (json!({"iss": null}), "iss"),
        (json!({"iss": 7}), "iss"),
        (json!({"iss": {"a": 1}}), "iss"),
        (json!({"iss": "https://evil.test"}), "issuer"),
        (json!({"aud": null}), "aud"),
        (json!({"aud": 7}), "aud"),
        (json!({"aud": {"a": 1}}), "aud"),
        (json!({"aud": "someone-else"}), "audience"),
    ];
    for (extra, why) in refused {
        let reason = check(&policy, with_token(extra.clone()), None).expect_err(&extra.to_string());
        assert!(reason.contains(why), "{extra}: {reason}");
    }
    // A token whose `iss`/`aud` are explicitly null, not only absent.
    let mut explicit = claims(json!({}));
    explicit["iss"] = Value::Null;
    let reason = check(&policy, json!({"token": sign(explicit)}), None).unwrap_err();
    assert!(reason.contains("iss"), "{reason}");
    // Unconfigured, they are not required.
    let open = self::policy(None, None);
    check(&open, with_token(json!({"iss": null, "aud": null})), None)
        .expect("no iss/aud needed when none is configured");
}

#[test]
fn exp_in_every_shape_is_enforced_or_refused_never_trusted_too_far() {
    let policy = policy(None, None);
    let open = |exp: Value| {
        check(
            &policy,
            with_token(json!({"iss": null, "aud": null, "exp": exp})),
            None,
        )
    };
    // Fractional seconds (RFC 7519 NumericDate): accepted, expiring no later.
    let exp = now() + 3600;
    let principal = open(json!(exp as f64 + 0.4)).expect("a fractional exp is valid");
    assert_eq!(principal.expires_at, Some(exp));
    let principal = open(json!(exp as f64 + 0.9)).expect("a fractional exp is valid");
    assert_eq!(principal.expires_at, Some(exp), "rounded down, never later");
    // Absurdly far expiries are accepted as far expiries (the connection
    // turns them into no practical expiry, without overflowing).
    for exp in [json!(1u64 << 63), json!(u64::MAX)] {
        let principal = open(exp.clone()).unwrap_or_else(|e| panic!("{exp}: {e}"));
        assert_eq!(principal.expires_at, exp.as_u64(), "{exp}");
    }
    // Not a NumericDate jsonwebtoken can read: refused.
    for exp in [
        json!(1e300),
        json!(-5),
        json!(-0.5),
        json!("1796607317"),
        json!(true),
    ] {
        let reason = open(exp.clone()).expect_err(&exp.to_string());
        assert!(reason.contains("exp"), "{exp}: {reason}");
    }
    let reason = open(json!(now() as f64 - 120.5)).expect_err("expired");
    assert!(reason.contains("expired"), "{reason}");
}

#[test]
fn the_payload_token_wins_when_present_and_the_header_otherwise() {
    let policy = policy(None, None);
    let good = sign(claims(json!({"iss": null, "aud": null, "sub": "header"})));
    let other = sign(claims(json!({"iss": null, "aud": null, "sub": "payload"})));
    let subject = |r: Result<Principal, String>| r.map(|p| p.subject.unwrap_or_default());
    let bearer = format!("Bearer {good}");

    // The header alone, with the scheme in any case or bare.
    for header in [
        bearer.clone(),
        format!("bearer {good}"),
        format!("BEARER  {good}"),
        good.clone(),
    ] {
        assert_eq!(
            subject(check(&policy, json!({}), Some(&header))),
            Ok("header".into()),
            "{header}"
        );
    }
    // Absent or null payload fields fall back to the header.
    for payload in [json!({}), json!({"token": null}), json!({"other": 1})] {
        assert_eq!(
            subject(check(&policy, payload.clone(), Some(&bearer))),
            Ok("header".into()),
            "{payload}"
        );
    }
    // A present payload token is the token, valid or not.
    let payload_cases = [
        (json!({"token": other.clone()}), Ok("payload".to_owned())),
        (
            json!({"token": format!("bearer {other}")}),
            Ok("payload".into()),
        ),
        (
            json!({"Authorization": format!("Bearer {other}")}),
            Ok("payload".into()),
        ),
        (
            json!({"authorization": other.clone()}),
            Ok("payload".into()),
        ),
        (json!({"token": "not.a.jwt"}), Err("Invalid token")),
        (json!({"token": ""}), Err("Missing")),
        (json!({"token": "Bearer "}), Err("Missing")),
        (json!({"token": 12345}), Err("must be a token string")),
        (json!({"token": ["x"]}), Err("must be a token string")),
        (json!({"token": "Basic dXNlcjpwdw=="}), Err("scheme")),
    ];
    for (payload, expected) in payload_cases {
        let got = subject(check(&policy, payload.clone(), Some(&bearer)));
        match expected {
            Ok(sub) => assert_eq!(got, Ok(sub), "{payload}"),
            Err(why) => {
                let reason = got.expect_err(&payload.to_string());
                assert!(reason.contains(why), "{payload}: {reason}");
            }
        }
    }
    // The header's own refusals.
    for header in ["", "Bearer", "Bearer   ", "Basic dXNlcjpwdw=="] {
        let reason = check(&policy, json!({}), Some(header)).expect_err(header);
        assert!(
            reason.contains("Missing") || reason.contains("scheme"),
            "{header}: {reason}"
        );
    }
    let reason = check(&policy, json!({}), None).unwrap_err();
    assert!(reason.contains("Missing"), "{reason}");
}

#[test]
fn a_leeway_past_a_day_is_a_config_error() {
    let mut config = JwtConfig::new(JwtAlgorithm::HS256);
    config.secret = Some(SECRET.into());
    config.leeway_s = u64::MAX;
    let error = JwtPolicy::new(config, Path::new(".")).unwrap_err();
    assert!(error.to_string().contains("leeway_s"), "{error}");
}
