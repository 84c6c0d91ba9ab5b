//! The extension points: connection and subscription policies, event
//! filters and resolvers. Plugins (WASM), the Python package and native
//! filters all plug in here; the engine calls them at fixed, cheap moments:
//! policies once per connection or subscribe, filters' and resolvers'
//! `prepare` once per group, `decide` once per event per filter for all
//! groups that need it, resolvers once per group per event.

use std::collections::{BTreeSet, HashMap};
use std::fmt::Debug;
use std::future::Future;
use std::pin::Pin;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};

use serde_json::{Map, Value};
use tokio::sync::Notify;

use crate::error::GraphQLError;
use crate::event::Event;
use crate::json::JsonText;
use crate::principal::Principal;

/// What a connection policy sees: the `connection_init` payload and the
/// HTTP upgrade request's headers (names lower-case).
#[derive(Debug, Clone, Copy)]
pub struct ConnectionRequest<'a> {
    /// The init payload (often carries a token).
    pub init_payload: &'a Map<String, Value>,
    /// The upgrade request's headers.
    pub headers: &'a [(String, String)],
}

/// A connection policy's yes: who connected, and an optional ack payload.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Accepted {
    /// The verified identity.
    pub principal: Principal,
    /// Sent back in `connection_ack`.
    pub ack: Option<Value>,
}

/// Decides whether a `connection_init` is accepted.
pub trait ConnectionPolicy: Send + Sync + Debug {
    /// `Ok` to accept with a principal, `Err(reason)` to close with 4403.
    fn check(&self, request: &ConnectionRequest<'_>) -> Result<Accepted, String>;
}

/// The policy of a server with no authentication: every init is accepted, anonymously.
#[derive(Debug, Default)]
pub struct AcceptAll;

impl ConnectionPolicy for AcceptAll {
    fn check(&self, _: &ConnectionRequest<'_>) -> Result<Accepted, String> {
        Ok(Accepted::default())
    }
}

/// A subscription as policies, filters and resolvers see it. One value
/// stands for a whole group: its members agree on every field here.
#[derive(Debug, Clone, PartialEq)]
pub struct GroupInfo {
    /// The subscription field.
    pub field: String,
    /// The concrete topic.
    pub topic: String,
    /// The field's coerced arguments.
    pub arguments: Map<String, Value>,
    /// The coerced variables (of the group's first member).
    pub variables: Map<String, Value>,
    /// The operation name (of the group's first member).
    pub operation_name: Option<String>,
    /// Selected field paths by field name, e.g. `orderCreated.customer.email`.
    pub selected_paths: Vec<String>,
    /// Who subscribed.
    pub principal: Principal,
    /// The `connection_init` payload of the subscriber's connection.
    pub init_payload: Map<String, Value>,
}

/// Checks a subscription when it starts.
pub trait SubscriptionPolicy: Send + Sync + Debug {
    /// `Err` refuses this subscribe with a GraphQL error; the connection stays.
    fn check(&self, subscription: &GroupInfo) -> Result<(), GraphQLError>;
}

/// What a filter says about a group, once, when the group forms (and again
/// after the filter is replaced).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Verdict {
    /// Every event passes; `decide` is never called for this group.
    AllowAll,
    /// No event passes: the group's subscriptions are ended with this reason.
    DenyAll(String),
    /// `decide` is called for each event, with this context.
    PerEvent(GroupContext),
}

/// What a filter or resolver keeps from a group's `prepare` for its
/// per-event calls, e.g. the subject a row filter compares with: the engine
/// stores it with the group and hands it back with every event, so the
/// plugin needs neither the whole group per event nor a table of its own.
/// `None` when it keeps nothing.
pub type GroupContext = Option<Arc<str>>;

/// One group a filter is asked to decide an event for.
#[derive(Debug, Clone, Copy)]
pub struct Asked<'a> {
    /// The group.
    pub group: &'a GroupInfo,
    /// The context the filter's `prepare` gave it.
    pub context: Option<&'a str>,
}

/// A filter's decision about one event for one group.
#[derive(Debug, Clone, PartialEq)]
pub enum Decision {
    /// Deliver the event.
    Allow,
    /// Drop it for this group.
    Deny(String),
    /// Deliver it with these dotted paths of `data` removed (e.g. `customer.email`).
    Redact(Vec<String>),
    /// Deliver this value instead of `data`.
    Replace(Value),
}

/// A security filter over events.
pub trait EventFilter: Send + Sync + Debug {
    /// A name for logs and metrics.
    fn name(&self) -> &str;
    /// Decides, once per group, whether events need looking at.
    fn prepare(&self, group: &GroupInfo) -> Verdict;
    /// One decision per group, in order, for one event. Called once per
    /// event with every group whose verdict was `PerEvent`. A reply of the
    /// wrong length denies the event for all of them (fail closed).
    fn decide(&self, event: &Event, groups: &[Asked<'_>]) -> Vec<Decision>;
}

/// A future producing a resolved value.
pub type ResolveFuture = Pin<Box<dyn Future<Output = Result<Value, GraphQLError>> + Send>>;

/// A resolver's answer: now, or later.
pub enum Resolution {
    /// The field value (or an error), computed synchronously.
    Ready(Result<Value, GraphQLError>),
    /// The field value as JSON text (a component's answer), computed
    /// synchronously: projected from the text, never parsed into a `Value`.
    Json(JsonText),
    /// A value still being computed (an async resolver).
    Pending(ResolveFuture),
}

impl Debug for Resolution {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Resolution::Ready(r) => f.debug_tuple("Ready").field(r).finish(),
            Resolution::Json(t) => f.debug_tuple("Json").field(t).finish(),
            Resolution::Pending(_) => f.write_str("Pending"),
        }
    }
}

/// Computes a subscription field's value from an event, once per group per event.
pub trait Resolver: Send + Sync + Debug {
    /// What the resolver keeps of a group for its resolutions (e.g. the
    /// arguments and the part of the principal a component reads), asked
    /// once per group and hooks version, before the group's first
    /// resolution: the engine stores it with the group and passes it to
    /// every [`Resolver::resolve_shared`] of the group. `Err` is that
    /// event's field error (the subscriptions go on) and is not kept: the
    /// group's next event asks again. By default nothing is kept.
    fn prepare(&self, group: &GroupInfo) -> Result<GroupContext, GraphQLError> {
        let _ = group;
        Ok(None)
    }

    /// `data` is the event's data after filters (redactions applied).
    fn resolve(&self, event: &Event, data: &Value, group: &GroupInfo) -> Resolution;

    /// What the engine calls: [`Resolver::resolve`] unless overridden, with
    /// `text`, the event's data as JSON text shared by the event's groups
    /// (`None` for a group whose data a filter changed: render `data`), and
    /// `context`, what [`Resolver::prepare`] kept of the group. A resolver
    /// that hands the data over as text (a WebAssembly component)
    /// overrides it to serialise once per event rather than once per group,
    /// and one that prepares a context overrides it to read that.
    fn resolve_shared(
        &self,
        event: &Event,
        data: &Value,
        text: Option<&DataText<'_>>,
        group: &GroupInfo,
        context: Option<&str>,
    ) -> Resolution {
        let _ = (text, context);
        self.resolve(event, data, group)
    }
}

/// An event's data as JSON text, rendered on first use and then shared by
/// every group of the event whose data no filter changed.
#[derive(Debug)]
pub struct DataText<'a> {
    data: &'a Value,
    // A `OnceCell`: one dispatching thread renders and reads it.
    text: std::cell::OnceCell<String>,
}

impl<'a> DataText<'a> {
    /// `data`, not rendered yet.
    pub fn new(data: &'a Value) -> Self {
        DataText {
            data,
            text: std::cell::OnceCell::new(),
        }
    }

    /// The data as JSON text.
    pub fn get(&self) -> &str {
        // Serialising a JSON value (string keys only) cannot fail.
        self.text
            .get_or_init(|| serde_json::to_string(self.data).unwrap_or_else(|_| "null".into()))
    }
}

/// Runs pending resolutions: the host's executor (a tokio runtime, an asyncio loop).
pub type Spawner = Arc<dyn Fn(Pin<Box<dyn Future<Output = ()> + Send>>) + Send + Sync>;

/// Every extension in force; swapped as a whole so each event sees one version.
#[derive(Clone)]
pub struct Hooks {
    /// Accepts or rejects connections.
    pub connection: Arc<dyn ConnectionPolicy>,
    /// Run at each subscribe, in order.
    pub subscription: Vec<Arc<dyn SubscriptionPolicy>>,
    /// Run on each event, in order.
    pub filters: Vec<Arc<dyn EventFilter>>,
    /// Resolvers by subscription field.
    pub resolvers: HashMap<String, Arc<dyn Resolver>>,
    /// Where pending resolutions run; without one, async resolvers are an error.
    pub spawner: Option<Spawner>,
}

impl Default for Hooks {
    fn default() -> Self {
        Hooks {
            connection: Arc::new(AcceptAll),
            subscription: Vec::new(),
            filters: Vec::new(),
            resolvers: HashMap::new(),
            spawner: None,
        }
    }
}

impl Debug for Hooks {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Hooks")
            .field("connection", &self.connection)
            .field("subscription", &self.subscription)
            .field("filters", &self.filters)
            .field("resolvers", &self.resolvers.keys().collect::<Vec<_>>())
            .field("spawner", &self.spawner.is_some())
            .finish()
    }
}

/// Hands out tickets in event order and lets holders through in that order,
/// so results resolved concurrently still reach clients in order.
#[derive(Debug, Default)]
pub(crate) struct Turnstile {
    issued: AtomicU64,
    // A std mutex: held for a set insert, never across an await.
    state: Mutex<TurnState>,
    notify: Notify,
}

#[derive(Debug, Default)]
struct TurnState {
    serving: u64,
    finished_early: BTreeSet<u64>,
}

impl Turnstile {
    pub(crate) fn ticket(&self) -> u64 {
        self.issued.fetch_add(1, Ordering::Relaxed)
    }

    pub(crate) fn is_turn(&self, ticket: u64) -> bool {
        self.state
            .lock()
            .map(|s| s.serving == ticket)
            .unwrap_or(false)
    }

    pub(crate) async fn wait_turn(&self, ticket: u64) {
        loop {
            let notified = self.notify.notified();
            tokio::pin!(notified);
            notified.as_mut().enable();
            if self.is_turn(ticket) {
                return;
            }
            notified.await;
        }
    }

    /// Marks `ticket` done (also when its work was abandoned) and lets the next through.
    pub(crate) fn done(&self, ticket: u64) {
        if let Ok(mut s) = self.state.lock() {
            // The usual case, a ticket done in its turn, touches no set (an
            // insert would allocate a node, per group and event).
            if s.serving != ticket {
                s.finished_early.insert(ticket);
                return;
            }
            s.serving += 1;
            loop {
                let serving = s.serving;
                if !s.finished_early.remove(&serving) {
                    break;
                }
                s.serving += 1;
            }
        }
        self.notify.notify_waiters();
    }
}

/// Removes dotted `path` from `value`, descending into every element of lists.
pub(crate) fn redact(value: &mut Value, path: &[&str]) {
    match (value, path) {
        (_, []) => {}
        (Value::Array(items), _) => items.iter_mut().for_each(|i| redact(i, path)),
        (Value::Object(map), [last]) => {
            map.remove(*last);
        }
        (Value::Object(map), [head, rest @ ..]) => {
            if let Some(inner) = map.get_mut(*head) {
                redact(inner, rest);
            }
        }
        _ => {}
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn redaction_follows_paths_through_lists() {
        let mut v = json!({"a": {"b": 1, "c": 2}, "items": [{"x": 1, "y": 2}, {"x": 3}]});
        redact(&mut v, &["a", "b"]);
        redact(&mut v, &["items", "x"]);
        redact(&mut v, &["missing", "z"]);
        assert_eq!(v, json!({"a": {"c": 2}, "items": [{"y": 2}, {}]}));
    }

    #[test]
    fn data_text_renders_once_and_is_shared() {
        let data = json!({"a": [1, "x"]});
        let text = DataText::new(&data);
        let first: *const str = text.get();
        assert_eq!(text.get(), r#"{"a":[1,"x"]}"#);
        assert!(std::ptr::eq(first, text.get()));
    }

    #[test]
    fn turnstile_lets_tickets_through_in_order_even_when_finished_out_of_order() {
        let t = Turnstile::default();
        let (a, b, c) = (t.ticket(), t.ticket(), t.ticket());
        assert!(t.is_turn(a) && !t.is_turn(b));
        t.done(c);
        assert!(t.is_turn(a));
        t.done(a);
        assert!(t.is_turn(b));
        t.done(b);
        assert!(t.is_turn(3));
    }
}
