//! The five security modules and the redaction example, deciding through
//! the real runtime with the real `.wasm` files.

mod common;

use common::*;
use fanwire_core::hooks::{Decision, EventFilter, SubscriptionPolicy, Verdict};
use fanwire_core::Event;
use fanwire_plugins::filter::WasmFilter;
use fanwire_plugins::policy::WasmSubscriptionPolicy;
use fanwire_plugins::Kind;
use serde_json::json;

fn filter(name: &str, config: serde_json::Value) -> WasmFilter {
    let rt = runtime();
    let spec = spec(name, Kind::EventFilter, config);
    WasmFilter::new(load(&rt, &spec), spec)
}

fn policy(name: &str, config: serde_json::Value) -> WasmSubscriptionPolicy {
    let rt = runtime();
    let spec = spec(name, Kind::SubscriptionPolicy, config);
    WasmSubscriptionPolicy::new(load(&rt, &spec), spec)
}

fn per_event(context: &str) -> Verdict {
    Verdict::PerEvent(Some(context.into()))
}

fn deny(d: &Decision) -> bool {
    matches!(d, Decision::Deny(_))
}

#[test]
fn row_filter_passes_only_the_subscribers_own_rows() {
    let f = filter("row-filter", json!({}));
    let alice = group(
        "orders",
        "orders",
        json!({}),
        json!({}),
        &[],
        principal(Some("alice"), None, &[], json!({})),
    );
    let bob = group(
        "orders",
        "orders",
        json!({}),
        json!({}),
        &[],
        principal(Some("42"), None, &[], json!({})),
    );
    let anon = group(
        "orders",
        "orders",
        json!({}),
        json!({}),
        &[],
        principal(None, None, &[], json!({})),
    );
    assert_eq!(f.prepare(&alice), per_event("alice"));
    assert!(matches!(f.prepare(&anon), Verdict::DenyAll(_)));
    let groups = [&alice, &bob];
    let d = decide(
        &f,
        &Event::new("orders", json!({"user_id": "alice", "x": 1})),
        &groups,
    );
    assert_eq!(d[0], Decision::Allow);
    assert!(deny(&d[1]));
    // Numbers and strings name the same user.
    let d = decide(&f, &Event::new("orders", json!({"user_id": 42})), &groups);
    assert!(deny(&d[0]));
    assert_eq!(d[1], Decision::Allow);
    for data in [
        json!({"x": 1}),
        json!({"user_id": null}),
        json!("not an object"),
    ] {
        let d = decide(&f, &Event::new("orders", data), &groups);
        assert!(d.iter().all(deny), "{d:?}");
    }
}

#[test]
fn row_filter_reads_a_configured_field() {
    let f = filter("row-filter", json!({"field": "owner.id"}));
    let alice = group(
        "orders",
        "orders",
        json!({}),
        json!({}),
        &[],
        principal(Some("alice"), None, &[], json!({})),
    );
    f.prepare(&alice);
    let d = decide(
        &f,
        &Event::new("orders", json!({"owner": {"id": "alice"}})),
        &[&alice],
    );
    assert_eq!(d, vec![Decision::Allow]);
}

#[test]
fn tenant_isolation_keeps_events_in_their_tenant() {
    let f = filter("tenant-isolation", json!({}));
    let t5 = group(
        "orders",
        "orders:5",
        json!({}),
        json!({}),
        &[],
        principal(Some("a"), Some("5"), &[], json!({})),
    );
    let t6 = group(
        "orders",
        "orders:6",
        json!({}),
        json!({}),
        &[],
        principal(Some("b"), Some("6"), &[], json!({})),
    );
    let none = group(
        "orders",
        "orders",
        json!({}),
        json!({}),
        &[],
        principal(Some("c"), None, &[], json!({})),
    );
    assert_eq!(f.prepare(&t5), per_event("5"));
    assert!(matches!(f.prepare(&none), Verdict::DenyAll(_)));
    let d = decide(
        &f,
        &Event::new("orders:5", json!({"tenant_id": 5, "id": 1})),
        &[&t5, &t6],
    );
    assert_eq!(d[0], Decision::Allow);
    assert!(deny(&d[1]));
    // Missing tenant = drop, for everyone.
    let d = decide(&f, &Event::new("orders:5", json!({"id": 1})), &[&t5, &t6]);
    assert!(d.iter().all(deny), "{d:?}");
}

#[test]
fn tenant_isolation_single_tenant_mode_lets_everything_through_without_per_event_calls() {
    let f = filter("tenant-isolation", json!({"single_tenant": true}));
    let anyone = group(
        "orders",
        "orders",
        json!({}),
        json!({}),
        &[],
        principal(None, None, &[], json!({})),
    );
    assert_eq!(f.prepare(&anyone), Verdict::AllowAll);
}

#[test]
fn scope_validator_checks_user_and_tenant_variables_against_the_principal() {
    let p = policy("scope-validator", json!({}));
    let me = || principal(Some("u1"), Some("5"), &[], json!({}));
    let ok = group(
        "orders",
        "orders:5",
        json!({"tenantId": "5"}),
        json!({"tenantId": "5", "userId": "u1"}),
        &[],
        me(),
    );
    assert_eq!(p.check(&ok), Ok(()));
    // Absent variables are fine.
    let absent = group("orders", "orders", json!({}), json!({}), &[], me());
    assert_eq!(p.check(&absent), Ok(()));
    let other_tenant = group(
        "orders",
        "orders:6",
        json!({"tenantId": 6}),
        json!({}),
        &[],
        me(),
    );
    let err = p.check(&other_tenant).unwrap_err();
    assert!(err.message.contains("tenantId"), "{err:?}");
    assert_eq!(
        err.extensions.get("code").and_then(|c| c.as_str()),
        Some("FORBIDDEN")
    );
    let other_user = group(
        "orders",
        "orders",
        json!({}),
        json!({"userId": "u2"}),
        &[],
        me(),
    );
    assert!(p.check(&other_user).unwrap_err().message.contains("userId"));
    // An anonymous principal can name no user.
    let anon = group(
        "orders",
        "orders",
        json!({}),
        json!({"userId": "u1"}),
        &[],
        principal(None, None, &[], json!({})),
    );
    assert!(p.check(&anon).is_err());
}

#[test]
fn rbac_needs_each_selected_fields_permission_with_a_configurable_mapping() {
    let p = policy(
        "rbac",
        json!({
            "permissions": {"orderCreated": "order:read", "orderCreated.customer": "customer:read", "email": "pii:read"},
            "roles": {"support": ["order:read", "customer:read"]}
        }),
    );
    let paths = [
        "orderCreated",
        "orderCreated.id",
        "orderCreated.customer",
        "orderCreated.customer.name",
    ];
    let reader = group(
        "orderCreated",
        "orders",
        json!({}),
        json!({}),
        &paths[..2],
        principal(Some("u"), None, &["order:read"], json!({})),
    );
    assert_eq!(p.check(&reader), Ok(()));
    let no_customer = group(
        "orderCreated",
        "orders",
        json!({}),
        json!({}),
        &paths,
        principal(Some("u"), None, &["order:read"], json!({})),
    );
    let err = p.check(&no_customer).unwrap_err();
    assert!(
        err.message.contains("orderCreated.customer") && err.message.contains("customer:read"),
        "{err:?}"
    );
    // A role grants permissions through the mapping.
    let support = group(
        "orderCreated",
        "orders",
        json!({}),
        json!({}),
        &paths,
        principal(Some("u"), None, &["support"], json!({})),
    );
    assert_eq!(p.check(&support), Ok(()));
    // A field name matches wherever it is selected.
    let email = group(
        "orderCreated",
        "orders",
        json!({}),
        json!({}),
        &[
            "orderCreated",
            "orderCreated.customer",
            "orderCreated.customer.email",
        ],
        principal(Some("u"), None, &["support"], json!({})),
    );
    assert!(p.check(&email).unwrap_err().message.contains("pii:read"));
    let nobody = group(
        "orderCreated",
        "orders",
        json!({}),
        json!({}),
        &[],
        principal(None, None, &[], json!({})),
    );
    assert!(p.check(&nobody).is_err());
}

#[test]
fn federation_context_must_match_the_subscription() {
    let f = filter("federation", json!({}));
    let by_argument = group(
        "orders",
        "orders",
        json!({"federationId": "fed-a"}),
        json!({}),
        &[],
        principal(Some("u"), None, &[], json!({})),
    );
    let by_claim = group(
        "orders",
        "orders",
        json!({}),
        json!({}),
        &[],
        principal(
            Some("u"),
            None,
            &[],
            json!({"federation_id": "fed-b", "service": "billing"}),
        ),
    );
    let none = group(
        "orders",
        "orders",
        json!({}),
        json!({}),
        &[],
        principal(Some("u"), None, &[], json!({})),
    );
    assert_eq!(f.prepare(&by_argument), per_event(r#"["fed-a",null]"#));
    assert_eq!(f.prepare(&by_claim), per_event(r#"["fed-b","billing"]"#));
    assert!(matches!(f.prepare(&none), Verdict::DenyAll(_)));
    let groups = [&by_argument, &by_claim];
    let d = decide(
        &f,
        &Event::new("orders", json!({"federation_id": "fed-a"})),
        &groups,
    );
    assert_eq!(d[0], Decision::Allow);
    assert!(deny(&d[1]));
    let d = decide(
        &f,
        &Event::new(
            "orders",
            json!({"federation_id": "fed-b", "service": "billing"}),
        ),
        &groups,
    );
    assert!(deny(&d[0]));
    assert_eq!(d[1], Decision::Allow);
    // The claim names a service: another service's event is dropped.
    let d = decide(
        &f,
        &Event::new(
            "orders",
            json!({"federation_id": "fed-b", "service": "shipping"}),
        ),
        &groups,
    );
    assert!(d.iter().all(deny), "{d:?}");
    let d = decide(&f, &Event::new("orders", json!({"x": 1})), &groups);
    assert!(d.iter().all(deny), "{d:?}");
    // One group per call, the contexts alternating on one instance (the
    // guest keeps the last context it parsed): each decides by its own.
    let fed_a = Event::new("orders", json!({"federation_id": "fed-a"}));
    let fed_b = Event::new(
        "orders",
        json!({"federation_id": "fed-b", "service": "billing"}),
    );
    for _ in 0..3 {
        for (group, own, other) in [(&by_argument, &fed_a, &fed_b), (&by_claim, &fed_b, &fed_a)] {
            assert_eq!(decide(&f, own, &[group]), vec![Decision::Allow]);
            assert!(deny(&decide(&f, other, &[group])[0]));
        }
    }
}

#[test]
fn redaction_filter_hides_fields_the_principal_may_not_see() {
    let f = filter(
        "redact-fields",
        json!({"fields": {"customer.email": "pii:read"}}),
    );
    let allowed = group(
        "orders",
        "orders",
        json!({}),
        json!({}),
        &[],
        principal(Some("u"), None, &["pii:read"], json!({})),
    );
    let other = group(
        "orders",
        "orders",
        json!({}),
        json!({}),
        &[],
        principal(Some("v"), None, &[], json!({})),
    );
    assert_eq!(f.prepare(&allowed), Verdict::AllowAll);
    assert_eq!(f.prepare(&other), per_event("customer.email"));
    let d = decide(
        &f,
        &Event::new("orders", json!({"customer": {"email": "x@y", "name": "n"}})),
        &[&other],
    );
    assert_eq!(d, vec![Decision::Redact(vec!["customer.email".into()])]);
}

#[test]
fn the_template_drops_drafts() {
    let f = filter("template", json!({}));
    let g = group(
        "posts",
        "posts",
        json!({}),
        json!({}),
        &[],
        principal(None, None, &[], json!({})),
    );
    assert_eq!(f.prepare(&g), per_event(""));
    let d = decide(&f, &Event::new("posts", json!({"status": "draft"})), &[&g]);
    assert!(deny(&d[0]));
    let d = decide(&f, &Event::new("posts", json!({"status": "live"})), &[&g]);
    assert_eq!(d, vec![Decision::Allow]);
}

#[test]
fn a_python_plugin_filters_through_the_same_runtime() {
    let f = filter("python-filter", json!({"min_severity": 2}));
    let staff = group(
        "alerts",
        "alerts",
        json!({}),
        json!({}),
        &[],
        principal(Some("s"), None, &["staff"], json!({})),
    );
    let user = group(
        "alerts",
        "alerts",
        json!({}),
        json!({}),
        &[],
        principal(Some("u"), None, &[], json!({})),
    );
    // A group's context says whether it is staff.
    assert_eq!(f.prepare(&staff), per_event("staff"));
    assert_eq!(f.prepare(&user), per_event(""));
    let d = decide(
        &f,
        &Event::new("alerts", json!({"severity": 3, "internal_notes": "n"})),
        &[&staff, &user],
    );
    assert_eq!(
        d,
        vec![
            Decision::Allow,
            Decision::Redact(vec!["internal_notes".into()])
        ]
    );
    let d = decide(
        &f,
        &Event::new("alerts", json!({"severity": 1})),
        &[&staff, &user],
    );
    assert!(d.iter().all(deny), "{d:?}");
}
