//! The extension points, driven without sockets: connection and
//! subscription policies, event filters (verdicts, batched decisions,
//! redaction, replacement, fail-closed), hook swaps, and resolvers.

use std::collections::VecDeque;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};

use fanwire_core::error::{codes, GraphQLError};
use fanwire_core::hooks::{
    Accepted, Asked, ConnectionRequest, DataText, Decision, EventFilter, GroupInfo, Resolution,
    Resolver, Spawner, SubscriptionPolicy, Verdict,
};
use fanwire_core::json::JsonText;
use fanwire_core::outbox::Frame;
use fanwire_core::protocol::{assemble_next, Protocol};
use fanwire_core::testing::publish_now;
use fanwire_core::{Connection, ConnectionPolicy, Engine, Event, Hooks, Limits, Principal, Schema};
use serde_json::{json, Value};

const SDL: &str = r#"
type Query { a: Int }
type Order { id: ID! user_id: String secret: String total: Float }
type Subscription {
  orders: Order @topic(name: "orders")
  mustOrder: Order! @topic(name: "orders")
}
"#;

/// Accepts `{"user": "..."}` as the principal's subject.
#[derive(Debug)]
struct UserFromInit;

impl ConnectionPolicy for UserFromInit {
    fn check(&self, request: &ConnectionRequest<'_>) -> Result<Accepted, String> {
        let user = request
            .init_payload
            .get("user")
            .and_then(Value::as_str)
            .ok_or("no user")?;
        let expires_at = request.init_payload.get("exp").and_then(Value::as_u64);
        Ok(Accepted {
            principal: Principal {
                subject: Some(user.into()),
                expires_at,
                ..Principal::default()
            },
            ack: None,
        })
    }
}

/// Row filter: an event's `user_id` must be the subscriber's; counts calls.
#[derive(Debug, Default)]
struct RowFilter {
    decide_calls: AtomicUsize,
    prepare_calls: AtomicUsize,
    groups_seen: AtomicUsize,
}

impl EventFilter for RowFilter {
    fn name(&self) -> &str {
        "row"
    }
    fn prepare(&self, group: &GroupInfo) -> Verdict {
        self.prepare_calls.fetch_add(1, Ordering::SeqCst);
        match group.principal.subject.as_deref() {
            Some("admin") => Verdict::AllowAll,
            Some("banned") => Verdict::DenyAll("banned users get nothing".into()),
            // The subject is all `decide` needs: it comes back as the context.
            subject => Verdict::PerEvent(subject.map(Arc::from)),
        }
    }
    fn decide(&self, event: &Event, groups: &[Asked<'_>]) -> Vec<Decision> {
        self.decide_calls.fetch_add(1, Ordering::SeqCst);
        self.groups_seen.fetch_add(groups.len(), Ordering::SeqCst);
        groups
            .iter()
            .map(|g| {
                if event.data.get("user_id").and_then(Value::as_str) == g.context {
                    Decision::Allow
                } else {
                    Decision::Deny("not yours".into())
                }
            })
            .collect()
    }
}

/// Redacts `secret` for everyone, and replaces the payload for user "r".
#[derive(Debug)]
struct Redactor;

impl EventFilter for Redactor {
    fn name(&self) -> &str {
        "redact"
    }
    fn prepare(&self, _: &GroupInfo) -> Verdict {
        Verdict::PerEvent(None)
    }
    fn decide(&self, _: &Event, groups: &[Asked<'_>]) -> Vec<Decision> {
        groups
            .iter()
            .map(|g| match g.group.principal.subject.as_deref() {
                Some("r") => Decision::Replace(json!({"id": "replaced"})),
                _ => Decision::Redact(vec!["secret".into()]),
            })
            .collect()
    }
}

/// A broken filter that answers for nobody.
#[derive(Debug)]
struct Mute;

impl EventFilter for Mute {
    fn name(&self) -> &str {
        "mute"
    }
    fn prepare(&self, _: &GroupInfo) -> Verdict {
        Verdict::PerEvent(None)
    }
    fn decide(&self, _: &Event, _: &[Asked<'_>]) -> Vec<Decision> {
        Vec::new()
    }
}

fn engine(hooks: Hooks) -> Arc<Engine> {
    Engine::with_hooks(Schema::parse(SDL).unwrap(), Limits::default(), hooks).unwrap()
}

fn connect(engine: &Arc<Engine>, user: &str, query: &str) -> Connection {
    let mut conn = engine.connect(Protocol::TransportWs);
    conn.on_text(&json!({"type": "connection_init", "payload": {"user": user}}).to_string());
    conn.on_text(&json!({"id": "s", "type": "subscribe", "payload": {"query": query}}).to_string());
    conn
}

fn frames(conn: &Connection) -> Vec<Value> {
    let mut out = VecDeque::new();
    conn.outbox().drain_into(&mut out);
    out.iter()
        .filter_map(|f| match f {
            Frame::Next {
                prefix, payload, ..
            } => Some(serde_json::from_slice(&assemble_next(prefix, payload)).unwrap()),
            Frame::Text(t) => {
                let v: Value = serde_json::from_str(t).unwrap();
                (v["type"] != "connection_ack").then_some(v)
            }
            Frame::Close(c) => Some(json!({"close": c.code.code(), "reason": c.reason})),
            Frame::Revoke { id, errors } => Some(json!({"revoke": id, "errors": errors})),
        })
        .collect()
}

fn data(frames: &[Value]) -> Vec<Value> {
    frames
        .iter()
        .map(|f| f["payload"]["data"]["orders"].clone())
        .collect()
}

fn order(user: &str, id: u32) -> Event {
    Event::new(
        "orders",
        json!({"id": id, "user_id": user, "secret": "s3", "total": 1.5}),
    )
}

const Q: &str = "subscription { orders { id user_id secret } }";

#[test]
fn row_filter_decides_once_per_event_for_all_groups_and_groups_split_by_principal() {
    let row = Arc::new(RowFilter::default());
    let engine = engine(Hooks {
        connection: Arc::new(UserFromInit),
        filters: vec![row.clone()],
        ..Hooks::default()
    });
    let alice: Vec<Connection> = (0..3).map(|_| connect(&engine, "alice", Q)).collect();
    let bob = connect(&engine, "bob", Q);
    let admin = connect(&engine, "admin", Q);
    assert_eq!(engine.registry().counts().1, 3, "one group per principal");

    let done = publish_now(&engine, &[order("alice", 1)]);
    assert_eq!((done.groups, done.deliveries, done.filtered), (2, 4, 1));
    publish_now(&engine, &[order("bob", 2)]);
    assert_eq!(
        row.decide_calls.load(Ordering::SeqCst),
        2,
        "one decide per event"
    );
    assert_eq!(
        row.groups_seen.load(Ordering::SeqCst),
        4,
        "alice's and bob's groups each time; admin is AllowAll"
    );
    assert_eq!(
        row.prepare_calls.load(Ordering::SeqCst),
        3,
        "prepare once per group"
    );

    for conn in &alice {
        assert_eq!(
            data(&frames(conn)),
            [json!({"id": "1", "user_id": "alice", "secret": "s3"})]
        );
    }
    assert_eq!(
        data(&frames(&bob)),
        [json!({"id": "2", "user_id": "bob", "secret": "s3"})]
    );
    assert_eq!(data(&frames(&admin)).len(), 2);
}

#[test]
fn redaction_replacement_and_fail_closed() {
    let engine = engine(Hooks {
        connection: Arc::new(UserFromInit),
        filters: vec![Arc::new(Redactor)],
        ..Hooks::default()
    });
    let plain = connect(&engine, "p", Q);
    let replaced = connect(&engine, "r", Q);
    let strict = connect(&engine, "p", "subscription { mustOrder { id secret } }");
    publish_now(&engine, &[order("p", 1)]);
    assert_eq!(
        data(&frames(&plain)),
        [json!({"id": "1", "user_id": "p", "secret": null})]
    );
    assert_eq!(
        data(&frames(&replaced)),
        [json!({"id": "replaced", "user_id": null, "secret": null})]
    );
    // Redacting a field the client selected leaves a null, not the secret.
    assert_eq!(
        frames(&strict)[0]["payload"]["data"]["mustOrder"],
        json!({"id": "1", "secret": null})
    );

    let engine = engine_with_filters(vec![Arc::new(Mute)]);
    let conn = connect(&engine, "p", Q);
    let done = publish_now(&engine, &[order("p", 1)]);
    assert_eq!(
        (done.deliveries, done.filtered),
        (0, 1),
        "a filter that cannot answer denies"
    );
    assert!(frames(&conn).is_empty());
}

fn engine_with_filters(filters: Vec<Arc<dyn EventFilter>>) -> Arc<Engine> {
    engine(Hooks {
        connection: Arc::new(UserFromInit),
        filters,
        ..Hooks::default()
    })
}

#[test]
fn swapping_hooks_reprepares_groups_and_revokes_those_now_denied() {
    let engine = engine_with_filters(vec![]);
    let mut banned = connect(&engine, "banned", Q);
    let mut fine = connect(&engine, "alice", Q);
    publish_now(&engine, &[order("alice", 1)]);
    assert_eq!(data(&frames(&banned)).len(), 1);
    assert_eq!(data(&frames(&fine)).len(), 1);

    let revoked = engine.set_hooks(Hooks {
        connection: Arc::new(UserFromInit),
        filters: vec![Arc::new(RowFilter::default())],
        ..Hooks::default()
    });
    assert_eq!(revoked, 1);
    let got = frames(&banned);
    assert_eq!(got[0]["revoke"], "s");
    assert_eq!(got[0]["errors"][0]["extensions"]["code"], "FORBIDDEN");
    // The host hands the revoke to the connection: error frame, id freed.
    banned.revoke(
        "s",
        serde_json::from_value(got[0]["errors"].clone()).unwrap(),
    );
    let got = frames(&banned);
    assert_eq!(got[0]["type"], "error");
    assert_eq!(got[0]["payload"][0]["message"], "banned users get nothing");
    assert_eq!(banned.subscription_count(), 0);
    banned.on_text(&json!({"id": "s", "type": "subscribe", "payload": {"query": Q}}).to_string());
    assert!(
        frames(&banned).iter().all(|f| f.get("close").is_none()),
        "the id is free again"
    );

    // The new version decides from now on: alice still gets hers only.
    publish_now(&engine, &[order("bob", 2)]);
    publish_now(&engine, &[order("alice", 3)]);
    assert_eq!(
        data(&frames(&fine)),
        [json!({"id": "3", "user_id": "alice", "secret": "s3"})]
    );
    fine.on_expired();
    assert_eq!(frames(&fine).last().unwrap()["close"], 4403);
}

#[derive(Debug)]
struct TenantScope;

impl SubscriptionPolicy for TenantScope {
    fn check(&self, sub: &GroupInfo) -> Result<(), GraphQLError> {
        if sub.selected_paths.iter().any(|p| p == "orders.secret")
            && sub.principal.subject.as_deref() != Some("admin")
        {
            return Err(GraphQLError::new(
                "orders.secret needs admin",
                codes::FORBIDDEN,
            ));
        }
        Ok(())
    }
}

#[test]
fn subscription_policies_see_selected_paths_and_refuse_with_an_error() {
    let engine = engine(Hooks {
        connection: Arc::new(UserFromInit),
        subscription: vec![Arc::new(TenantScope)],
        ..Hooks::default()
    });
    let denied = connect(&engine, "alice", Q);
    let got = frames(&denied);
    assert_eq!(got[0]["type"], "error");
    assert_eq!(got[0]["payload"][0]["message"], "orders.secret needs admin");
    let allowed = connect(&engine, "alice", "subscription { orders { id } }");
    assert!(frames(&allowed).is_empty());
    assert_eq!(engine.registry().counts().2, 1);

    let mut anonymous = engine.connect(Protocol::TransportWs);
    anonymous.on_text(r#"{"type":"connection_init","payload":{}}"#);
    assert_eq!(
        frames(&anonymous),
        [json!({"close": 4403, "reason": "no user"})]
    );

    let expiring = {
        let mut c = engine.connect(Protocol::TransportWs);
        c.on_text(r#"{"type":"connection_init","payload":{"user":"u","exp":1700000000}}"#);
        c
    };
    assert_eq!(
        expiring.expires_at().unwrap(),
        std::time::UNIX_EPOCH + std::time::Duration::from_secs(1_700_000_000)
    );
    assert_eq!(expiring.principal().subject.as_deref(), Some("u"));
}

/// Doubles `total`, fails on id 13, and counts its calls.
#[derive(Debug, Default)]
struct Doubler {
    calls: AtomicUsize,
}

impl Resolver for Doubler {
    fn resolve(&self, _: &Event, data: &Value, _: &GroupInfo) -> Resolution {
        self.calls.fetch_add(1, Ordering::SeqCst);
        if data["id"] == 13 {
            return Resolution::Ready(Err(GraphQLError::new("unlucky", codes::RESOLVER_FAILED)));
        }
        let mut out = data.clone();
        out["total"] = json!(data["total"].as_f64().unwrap() * 2.0);
        Resolution::Ready(Ok(out))
    }
}

#[test]
fn resolvers_run_once_per_group_and_errors_become_field_errors_with_a_path() {
    let doubler = Arc::new(Doubler::default());
    let mut resolvers = std::collections::HashMap::new();
    resolvers.insert("orders".to_owned(), doubler.clone() as Arc<dyn Resolver>);
    resolvers.insert("mustOrder".to_owned(), doubler.clone() as Arc<dyn Resolver>);
    let engine = engine(Hooks {
        connection: Arc::new(UserFromInit),
        resolvers,
        ..Hooks::default()
    });
    let a: Vec<Connection> = (0..5)
        .map(|_| connect(&engine, "u", "subscription { orders { total } }"))
        .collect();
    let must = connect(&engine, "u", "subscription { mustOrder { total } }");
    publish_now(&engine, &[order("u", 1)]);
    assert_eq!(
        doubler.calls.load(Ordering::SeqCst),
        2,
        "once per group, not per client"
    );
    for conn in &a {
        assert_eq!(
            frames(conn)[0]["payload"]["data"],
            json!({"orders": {"total": 3.0}})
        );
    }
    frames(&must);
    publish_now(&engine, &[order("u", 13)]);
    let err = &frames(&a[0])[0]["payload"];
    assert_eq!(err["data"], json!({"orders": null}));
    assert_eq!(err["errors"][0]["path"], json!(["orders"]));
    assert_eq!(err["errors"][0]["message"], "unlucky");
    assert_eq!(
        frames(&must)[0]["payload"]["data"],
        Value::Null,
        "a non-null field's error nulls data"
    );
}

/// Keeps each group's subject as its context and stamps it on the value;
/// its `prepare` fails while `failing` is set. Counts both calls.
#[derive(Debug, Default)]
struct Stamper {
    prepares: AtomicUsize,
    resolves: AtomicUsize,
    failing: std::sync::atomic::AtomicBool,
}

impl Resolver for Stamper {
    fn prepare(&self, group: &GroupInfo) -> Result<Option<Arc<str>>, GraphQLError> {
        self.prepares.fetch_add(1, Ordering::SeqCst);
        if self.failing.load(Ordering::SeqCst) {
            return Err(GraphQLError::new("not ready", "NOT_READY"));
        }
        Ok(group.principal.subject.as_deref().map(Arc::from))
    }

    fn resolve(&self, _: &Event, _: &Value, _: &GroupInfo) -> Resolution {
        unreachable!("the engine calls resolve_shared")
    }

    fn resolve_shared(
        &self,
        _: &Event,
        data: &Value,
        _: Option<&DataText<'_>>,
        _: &GroupInfo,
        context: Option<&str>,
    ) -> Resolution {
        self.resolves.fetch_add(1, Ordering::SeqCst);
        let mut out = data.clone();
        out["user_id"] = json!(context);
        Resolution::Ready(Ok(out))
    }
}

fn stamper_hooks(stamper: &Arc<Stamper>) -> Hooks {
    let mut resolvers = std::collections::HashMap::new();
    resolvers.insert("orders".to_owned(), stamper.clone() as Arc<dyn Resolver>);
    Hooks {
        connection: Arc::new(UserFromInit),
        resolvers,
        ..Hooks::default()
    }
}

#[test]
fn a_resolver_prepares_each_group_once_per_hooks_version_and_a_failed_prepare_is_asked_again() {
    let stamper = Arc::new(Stamper::default());
    let engine = engine(stamper_hooks(&stamper));
    let u = connect(&engine, "u", "subscription { orders { user_id } }");
    let v = connect(&engine, "v", "subscription { orders { user_id } }");
    let user_ids = |conn: &Connection| -> Vec<Value> {
        frames(conn)
            .iter()
            .map(|f| f["payload"]["data"]["orders"]["user_id"].clone())
            .collect()
    };
    for id in 1..=3 {
        publish_now(&engine, &[order("x", id)]);
    }
    assert_eq!(stamper.prepares.load(Ordering::SeqCst), 2, "once per group");
    assert_eq!(stamper.resolves.load(Ordering::SeqCst), 6);
    assert_eq!(user_ids(&u), vec![json!("u"); 3], "the group's own context");
    assert_eq!(user_ids(&v), vec![json!("v"); 3]);

    // New hooks: every group is prepared again, once, at its next event;
    // while `prepare` fails, each event's field is null with its error and
    // the next event asks again.
    stamper.failing.store(true, Ordering::SeqCst);
    engine.set_hooks(stamper_hooks(&stamper));
    publish_now(&engine, &[order("x", 4)]);
    publish_now(&engine, &[order("x", 5)]);
    assert_eq!(
        stamper.prepares.load(Ordering::SeqCst),
        6,
        "asked per event while failing"
    );
    assert_eq!(
        stamper.resolves.load(Ordering::SeqCst),
        6,
        "no resolve without a context"
    );
    for frame in frames(&u) {
        let payload = &frame["payload"];
        assert_eq!(payload["data"], json!({"orders": null}));
        assert_eq!(payload["errors"][0]["message"], "not ready");
        assert_eq!(payload["errors"][0]["extensions"]["code"], "NOT_READY");
        assert_eq!(payload["errors"][0]["path"], json!(["orders"]));
    }
    frames(&v);
    stamper.failing.store(false, Ordering::SeqCst);
    publish_now(&engine, &[order("x", 6)]);
    publish_now(&engine, &[order("x", 7)]);
    assert_eq!(
        stamper.prepares.load(Ordering::SeqCst),
        8,
        "kept once it succeeds"
    );
    assert_eq!(
        user_ids(&u),
        vec![json!("u"); 2],
        "the subscription went on"
    );
    assert_eq!(user_ids(&v), vec![json!("v"); 2]);
}

/// Redacts `secret` for user "o" only.
#[derive(Debug)]
struct RedactForO;

impl EventFilter for RedactForO {
    fn name(&self) -> &str {
        "redact-for-o"
    }
    fn prepare(&self, group: &GroupInfo) -> Verdict {
        match group.principal.subject.as_deref() {
            Some("o") => Verdict::PerEvent(None),
            _ => Verdict::AllowAll,
        }
    }
    fn decide(&self, _: &Event, groups: &[Asked<'_>]) -> Vec<Decision> {
        vec![Decision::Redact(vec!["secret".into()]); groups.len()]
    }
}

/// Resolves from the shared text when it is given, and records, per
/// subject, the text's address (or `None`).
#[derive(Debug, Default)]
struct FromText {
    seen: Mutex<Vec<(String, Option<usize>)>>,
}

impl Resolver for FromText {
    fn resolve(&self, _: &Event, data: &Value, _: &GroupInfo) -> Resolution {
        Resolution::Ready(Ok(data.clone()))
    }

    fn resolve_shared(
        &self,
        _: &Event,
        data: &Value,
        text: Option<&DataText<'_>>,
        group: &GroupInfo,
        _: Option<&str>,
    ) -> Resolution {
        let subject = group.principal.subject.clone().unwrap_or_default();
        let at = text.map(|t| t.get().as_ptr() as usize);
        self.seen.lock().unwrap().push((subject, at));
        Resolution::Ready(Ok(match text {
            Some(text) => serde_json::from_str(text.get()).unwrap(),
            None => data.clone(),
        }))
    }
}

#[test]
fn the_data_text_is_rendered_once_per_event_and_never_for_data_a_filter_changed() {
    let resolver = Arc::new(FromText::default());
    let mut resolvers = std::collections::HashMap::new();
    resolvers.insert("orders".to_owned(), resolver.clone() as Arc<dyn Resolver>);
    let engine = engine(Hooks {
        connection: Arc::new(UserFromInit),
        filters: vec![Arc::new(RedactForO)],
        resolvers,
        ..Hooks::default()
    });
    let q = "subscription { orders { id secret } }";
    let (a, b, o) = (
        connect(&engine, "a", q),
        connect(&engine, "b", q),
        connect(&engine, "o", q),
    );
    publish_now(&engine, &[order("a", 1)]);
    let mut seen = resolver.seen.lock().unwrap().clone();
    seen.sort();
    assert_eq!(seen.len(), 3, "{seen:?}");
    assert!(
        seen[0].1.is_some() && seen[0].1 == seen[1].1,
        "a and b share one rendering: {seen:?}"
    );
    assert_eq!(seen[2], ("o".to_owned(), None));
    for (conn, secret) in [(&a, json!("s3")), (&b, json!("s3")), (&o, Value::Null)] {
        assert_eq!(
            frames(conn)[0]["payload"]["data"]["orders"],
            json!({"id": "1", "secret": secret})
        );
    }
}

type Task = std::pin::Pin<Box<dyn std::future::Future<Output = ()> + Send>>;

/// Resolves asynchronously: each result waits for a gate released in reverse order.
#[derive(Debug, Default)]
struct Slow {
    gates: Mutex<Vec<tokio::sync::oneshot::Sender<()>>>,
}

impl Resolver for Slow {
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

/// Runs the spawned resolutions, opening their gates newest first; returns
/// how many there were.
fn release_in_reverse(tasks: &Mutex<Vec<Task>>, slow: &Slow) -> usize {
    let rt = tokio::runtime::Builder::new_current_thread()
        .build()
        .unwrap();
    rt.block_on(async {
        let handles: Vec<_> = tasks.lock().unwrap().drain(..).map(tokio::spawn).collect();
        let gates: Vec<_> = slow.gates.lock().unwrap().drain(..).collect();
        for gate in gates.into_iter().rev() {
            let _ = gate.send(());
            tokio::task::yield_now().await;
        }
        let count = handles.len();
        for h in handles {
            h.await.unwrap();
        }
        count
    })
}

/// An engine with `resolver` on `orders`, whose pending resolutions wait in
/// the returned list until run, and a client subscribed to `orders { id }`.
fn engine_with_queued_resolutions(
    resolver: Arc<dyn Resolver>,
) -> (Arc<Engine>, Connection, Arc<Mutex<Vec<Task>>>) {
    let tasks: Arc<Mutex<Vec<Task>>> = Arc::default();
    let queued = tasks.clone();
    let spawner: Spawner = Arc::new(move |f| queued.lock().unwrap().push(f));
    let engine = engine(Hooks {
        resolvers: [("orders".to_owned(), resolver)].into_iter().collect(),
        spawner: Some(spawner),
        ..Hooks::default()
    });
    let mut conn = engine.connect(Protocol::TransportWs);
    conn.on_text(r#"{"type":"connection_init"}"#);
    conn.on_text(&json!({"id": "s", "type": "subscribe", "payload": {"query": "subscription { orders { id } }"}}).to_string());
    (engine, conn, tasks)
}

/// The ids of the orders delivered to `conn` since the last look.
fn ids(conn: &Connection) -> Vec<Value> {
    frames(conn)
        .iter()
        .map(|f| f["payload"]["data"]["orders"]["id"].clone())
        .collect()
}

#[test]
fn async_resolutions_finishing_out_of_order_are_delivered_in_event_order() {
    let slow = Arc::new(Slow::default());
    let (engine, conn, tasks) = engine_with_queued_resolutions(slow.clone());
    for id in 1..=3 {
        publish_now(&engine, &[order("u", id)]);
    }
    assert_eq!(release_in_reverse(&tasks, &slow), 3);
    assert_eq!(ids(&conn), [json!("1"), json!("2"), json!("3")]);
}

/// Resolves event 1 asynchronously (behind a gate, as [`Slow`]) and the
/// others at once as JSON text, as a component does.
#[derive(Debug, Default)]
struct SlowThenText {
    slow: Slow,
}

impl Resolver for SlowThenText {
    fn resolve(&self, event: &Event, data: &Value, group: &GroupInfo) -> Resolution {
        if data["id"] == 1 {
            return self.slow.resolve(event, data, group);
        }
        let text = format!(" {{ \"id\" : \"{}\\u0021\" }} ", data["id"]);
        Resolution::Json(JsonText::parse(text).unwrap())
    }
}

#[test]
fn answers_as_text_wait_their_turn_behind_pending_resolutions() {
    let resolver = Arc::new(SlowThenText::default());
    let (engine, conn, tasks) = engine_with_queued_resolutions(resolver.clone());
    for id in 1..=3 {
        publish_now(&engine, &[order("u", id)]);
    }
    // Events 2 and 3 were answered at once but wait for event 1's turn.
    assert!(ids(&conn).is_empty());
    assert_eq!(release_in_reverse(&tasks, &resolver.slow), 3);
    assert_eq!(ids(&conn), [json!("1"), json!("2!"), json!("3!")]);
    // Once nothing is pending, text is delivered at once.
    publish_now(&engine, &[order("u", 4)]);
    assert_eq!(ids(&conn), [json!("4!")]);
}

/// Never resolves; records when its pending future is dropped.
#[derive(Debug, Default)]
struct Forever {
    dropped: Arc<AtomicUsize>,
}

struct DropFlag(Arc<AtomicUsize>);

impl Drop for DropFlag {
    fn drop(&mut self) {
        self.0.fetch_add(1, Ordering::SeqCst);
    }
}

impl Resolver for Forever {
    fn resolve(&self, _: &Event, _: &Value, _: &GroupInfo) -> Resolution {
        let flag = DropFlag(self.dropped.clone());
        Resolution::Pending(Box::pin(async move {
            let _flag = flag;
            std::future::pending::<()>().await;
            Ok(Value::Null)
        }))
    }
}

#[test]
fn a_pending_resolution_is_dropped_when_its_group_empties_and_not_before() {
    let forever = Arc::new(Forever::default());
    let tasks: Arc<Mutex<Vec<Task>>> = Arc::default();
    let queued = tasks.clone();
    let spawner: Spawner = Arc::new(move |f| queued.lock().unwrap().push(f));
    let mut resolvers = std::collections::HashMap::new();
    resolvers.insert("orders".to_owned(), forever.clone() as Arc<dyn Resolver>);
    let engine = engine(Hooks {
        resolvers,
        spawner: Some(spawner),
        ..Hooks::default()
    });
    let query = "subscription { orders { id } }";
    let mut a = connect(&engine, "u", query);
    let mut b = connect(&engine, "u", query);
    publish_now(&engine, &[order("u", 1)]);
    let rt = tokio::runtime::Builder::new_current_thread()
        .build()
        .unwrap();
    rt.block_on(async {
        let handles: Vec<_> = tasks.lock().unwrap().drain(..).map(tokio::spawn).collect();
        assert_eq!(handles.len(), 1, "one resolution for the group of two");
        tokio::task::yield_now().await;
        a.on_text(r#"{"id":"s","type":"complete"}"#);
        tokio::task::yield_now().await;
        assert_eq!(forever.dropped.load(Ordering::SeqCst), 0, "b still waits");
        b.close(fanwire_core::protocol::Close::new(
            fanwire_core::protocol::CloseCode::GoingAway,
        ));
        for h in handles {
            h.await.unwrap();
        }
    });
    assert_eq!(forever.dropped.load(Ordering::SeqCst), 1);
    assert_eq!(engine.registry().counts(), (0, 0, 0));
}

#[test]
fn groups_split_by_init_payload_which_resolvers_see() {
    let engine = engine(Hooks::default());
    let query = "subscription { orders { id } }";
    let mut conns = Vec::new();
    for payload in [
        json!({"user": "u", "k": 1}),
        json!({"user": "u", "k": 1}),
        json!({"user": "u", "k": 2}),
    ] {
        let mut conn = engine.connect(Protocol::TransportWs);
        conn.on_text(&json!({"type": "connection_init", "payload": payload}).to_string());
        conn.on_text(
            &json!({"id": "s", "type": "subscribe", "payload": {"query": query}}).to_string(),
        );
        conns.push(conn);
    }
    assert_eq!(engine.registry().counts(), (1, 2, 3));
}

fn engine_with_history(hooks: Hooks) -> Arc<Engine> {
    let limits = Limits {
        history_per_topic: 16,
        ..Limits::default()
    };
    Engine::with_hooks(Schema::parse(SDL).unwrap(), limits, hooks).unwrap()
}

fn resume(engine: &Arc<Engine>, user: &str, query: &str, from: u64) -> Connection {
    let mut conn = engine.connect(Protocol::TransportWs);
    conn.on_text(&json!({"type": "connection_init", "payload": {"user": user}}).to_string());
    conn.on_text(
        &json!({"id": "s", "type": "subscribe", "payload": {
            "query": query, "extensions": {"resumeFrom": from}}})
        .to_string(),
    );
    conn
}

#[test]
fn a_resume_replays_missed_events_through_the_filters_and_the_resolver() {
    let doubler = Arc::new(Doubler::default());
    let mut resolvers = std::collections::HashMap::new();
    resolvers.insert("orders".to_owned(), doubler.clone() as Arc<dyn Resolver>);
    let engine = engine_with_history(Hooks {
        connection: Arc::new(UserFromInit),
        filters: vec![Arc::new(RowFilter::default()), Arc::new(Redactor)],
        resolvers,
        ..Hooks::default()
    });
    let query = "subscription { orders { id user_id secret total } }";
    for (user, id) in [("alice", 1), ("bob", 2), ("alice", 3)] {
        publish_now(&engine, &[order(user, id)]);
    }
    let bob = resume(&engine, "bob", query, 0);
    publish_now(&engine, &[order("bob", 4)]);
    publish_now(&engine, &[order("alice", 5)]);
    assert_eq!(
        data(&frames(&bob)),
        [
            json!({"id": "2", "user_id": "bob", "secret": null, "total": 3.0}),
            json!({"id": "4", "user_id": "bob", "secret": null, "total": 3.0}),
        ],
        "alice's events are filtered out of the replay, bob's are redacted and resolved"
    );
}

#[test]
fn a_resume_during_pending_resolutions_gets_each_event_once_in_order() {
    let slow = Arc::new(Slow::default());
    let tasks: Arc<Mutex<Vec<Task>>> = Arc::default();
    let queued = tasks.clone();
    let spawner: Spawner = Arc::new(move |f| queued.lock().unwrap().push(f));
    let mut resolvers = std::collections::HashMap::new();
    resolvers.insert("orders".to_owned(), slow.clone() as Arc<dyn Resolver>);
    let engine = engine_with_history(Hooks {
        connection: Arc::new(UserFromInit),
        resolvers,
        spawner: Some(spawner),
        ..Hooks::default()
    });
    let query = "subscription { orders { id } }";
    let live = connect(&engine, "u", query);
    publish_now(&engine, &[order("u", 1)]);
    publish_now(&engine, &[order("u", 2)]);
    // Joins the live subscriber's group while its resolutions of 1 and 2
    // are still pending; the replay resolves them again for this member.
    let resumed = resume(&engine, "u", query, 0);
    publish_now(&engine, &[order("u", 3)]);
    assert_eq!(
        release_in_reverse(&tasks, &slow),
        5,
        "1, 2 and 3 live, 1 and 2 replayed"
    );
    let ids = |conn: &Connection| -> Vec<Value> {
        frames(conn)
            .iter()
            .map(|f| f["payload"]["data"]["orders"]["id"].clone())
            .collect()
    };
    assert_eq!(ids(&live), [json!("1"), json!("2"), json!("3")]);
    assert_eq!(ids(&resumed), [json!("1"), json!("2"), json!("3")]);
}
