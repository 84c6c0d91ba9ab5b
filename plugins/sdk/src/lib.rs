//! Write Fanwire plugins in Rust: event filters, subscription and connection
//! policies, transport adapters and field resolvers, compiled to WebAssembly
//! components (`wasm32-wasip2`) that the Fanwire host loads, sandboxes and
//! hot-reloads. Built against `wit/v0.4.0`, the newest interface.
//!
//! # Layout
//!
//! - this file: the types a plugin sees ([`Event`], [`Subscription`],
//!   [`Principal`], [`Verdict`], [`Decision`], [`GraphQLError`], ...), plain
//!   Rust with `serde_json` values;
//! - [`filter`], [`policy`], [`transport`], [`resolver`]: one trait per
//!   plugin kind and the macros that export an implementation;
//! - [`host`]: what the host offers: logs, a clock, the plugin's config;
//! - [`alloc`]: the plugin's global allocator (size classes: a call's
//!   arguments are copied in through it);
//! - `wit` (hidden): the generated bindings; a plugin never needs them.
//!
//! A filter is one function:
//!
//! ```ignore
//! use fanwire_sdk::{Decision, Event};
//!
//! fanwire_sdk::filter! {
//!     /// Drafts are not published.
//!     fn decide(event: &Event) -> Decision {
//!         match event.get("status").and_then(|s| s.as_str()) {
//!             Some("draft") => Decision::deny("drafts are private"),
//!             _ => Decision::Allow,
//!         }
//!     }
//! }
//! ```
//!
//! A filter whose decision depends on the subscriber gives each group a
//! context in `prepare` (here the subject) and decides per context:
//!
//! ```ignore
//! use fanwire_sdk::{id_str, Decision, Event, EventFilter, Subscription, Verdict};
//!
//! struct Own;
//! impl EventFilter for Own {
//!     fn prepare(group: &Subscription) -> Verdict {
//!         match &group.principal.subject {
//!             Some(me) => Verdict::per_event(["user_id"]).with_context(me),
//!             None => Verdict::deny_all("anonymous"),
//!         }
//!     }
//!     fn decide(event: &Event, me: &str) -> Decision {
//!         match event.get("user_id").and_then(id_str) {
//!             Some(owner) if owner == me => Decision::Allow,
//!             _ => Decision::deny("not yours"),
//!         }
//!     }
//! }
//! fanwire_sdk::export_filter!(Own);
//! ```
//!
//! A resolver is one function too: the field's value from the event, once
//! per subscription group per event (the host then projects the value
//! through each subscriber's selection). What it needs of the group (the
//! field's arguments, the operation's variables, the principal) it reads
//! once per group in an optional `prepare`, which returns the group's
//! context: a short text that `resolve` receives with every event.
//!
//! ```ignore
//! use fanwire_sdk::{Event, FieldCall, GraphQLError, Value};
//!
//! fanwire_sdk::resolver! {
//!     /// Once per group: the subscriber, or a refusal.
//!     fn prepare(call: &FieldCall) -> Result<String, GraphQLError> {
//!         call.principal.subject.clone().ok_or_else(|| {
//!             GraphQLError::new("sign in first").with_code("UNAUTHENTICATED")
//!         })
//!     }
//!     /// Per event: the data with `payload` upper-cased and the subscriber.
//!     fn resolve(event: &Event, subject: &str) -> Result<Value, GraphQLError> {
//!         let mut value = event.data.clone();
//!         if let Some(Value::String(p)) = value.get_mut("payload") {
//!             *p = p.to_uppercase();
//!         }
//!         value["for"] = Value::from(subject);
//!         Ok(value)
//!     }
//! }
//! ```
//!
//! Enable exactly one of the features `event-filter`, `subscription-policy`,
//! `connection-policy`, `transport-adapter`, `field-resolver` (the plugin's
//! world) and build with `cargo build --target wasm32-wasip2 --release`.

/// How many world features are enabled: a component must export everything
/// its world declares, so the bindings of a second world must not be linked.
const WORLDS: usize = cfg!(feature = "event-filter") as usize
    + cfg!(feature = "subscription-policy") as usize
    + cfg!(feature = "connection-policy") as usize
    + cfg!(feature = "transport-adapter") as usize
    + cfg!(feature = "field-resolver") as usize;
const _: () = assert!(
    WORLDS <= 1,
    "fanwire-sdk: enable exactly one world feature per plugin (build plugins one at a time: `cargo build -p NAME`)"
);

#[doc(hidden)]
pub mod wit;

pub mod alloc;
pub mod filter;
pub mod host;
pub mod policy;
pub mod resolver;
pub mod transport;

use std::sync::OnceLock;

/// Every plugin built with the SDK allocates through [`alloc::Allocator`]:
/// each call copies its arguments in through the allocator (see there).
#[cfg(target_family = "wasm")]
#[global_allocator]
static ALLOCATOR: alloc::Allocator = alloc::Allocator::new();

pub use serde_json::{self, json, Map, Value};

pub use filter::EventFilter;
pub use policy::{ConnectionPolicy, SubscriptionPolicy};
pub use resolver::{FieldCall, FieldResolver};
pub use transport::TransportAdapter;

/// A JSON object.
pub type Object = Map<String, Value>;

/// Parses a JSON object sent by the host; anything else reads as empty.
fn object(text: &str) -> Object {
    match serde_json::from_str(text) {
        Ok(Value::Object(map)) => map,
        _ => Object::new(),
    }
}

/// A JSON object parsed on first use: most plugins read only a few fields.
#[derive(Debug, Default)]
pub struct LazyObject {
    text: String,
    parsed: OnceLock<Object>,
}

impl LazyObject {
    /// Wraps JSON text.
    pub fn new(text: String) -> Self {
        LazyObject {
            text,
            parsed: OnceLock::new(),
        }
    }

    /// The parsed object.
    pub fn get(&self) -> &Object {
        self.parsed.get_or_init(|| object(&self.text))
    }

    /// One member of the object.
    pub fn field(&self, key: &str) -> Option<&Value> {
        self.get().get(key)
    }

    /// The JSON text as the host sent it.
    pub fn text(&self) -> &str {
        &self.text
    }
}

/// Who is on the other end of a connection. Anonymous connections have
/// every field empty.
#[derive(Debug, Default)]
pub struct Principal {
    /// The user (a JWT's `sub`).
    pub subject: Option<String>,
    /// The tenant the user belongs to.
    pub tenant: Option<String>,
    /// Roles or permissions, e.g. `order:read`.
    pub roles: Vec<String>,
    /// Every verified claim.
    pub claims: LazyObject,
    /// When the credentials expire (Unix seconds).
    pub expires_at: Option<u64>,
}

impl Principal {
    /// Whether the principal holds `role`.
    pub fn has_role(&self, role: &str) -> bool {
        self.roles.iter().any(|r| r == role)
    }
}

/// A subscription (for a filter's `prepare`: a group of identical
/// subscriptions of one principal).
#[derive(Debug, Default)]
pub struct Subscription {
    /// The root subscription field, e.g. `orderCreated`.
    pub field: String,
    /// The concrete topic, e.g. `orders:5`.
    pub topic: String,
    /// The field's coerced arguments.
    pub arguments: LazyObject,
    /// The operation's coerced variables.
    pub variables: LazyObject,
    /// The operation name.
    pub operation_name: Option<String>,
    /// Selected field paths, dotted from the root field (`orderCreated.customer.email`).
    pub selected_paths: Vec<String>,
    /// Who subscribed.
    pub principal: Principal,
}

/// One published event.
#[derive(Debug)]
pub struct Event {
    /// Its topic.
    pub topic: String,
    /// The subscription field's value: for a filter, only the fields its
    /// `prepare` asked for; for a resolver, all of it, with the filters'
    /// redactions applied.
    pub data: Value,
    /// The publisher's id.
    pub id: Option<String>,
    /// Its position in the topic's history.
    pub seq: Option<u64>,
}

impl Event {
    /// The value at a dotted path of the data, e.g. `owner.id`.
    pub fn get(&self, path: &str) -> Option<&Value> {
        path.split('.').try_fold(&self.data, |v, key| v.get(key))
    }
}

/// What a filter says about a group, once, when it forms.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Verdict {
    /// Every event passes; `decide` is never asked.
    AllowAll,
    /// No event passes; the group's subscriptions end with this reason.
    DenyAll(String),
    /// `decide` is asked about each event, with `context`.
    PerEvent {
        /// `Some(paths)`: the event carries only these dotted paths of its
        /// data (none for an empty list); `None`: all of it.
        fields: Option<Vec<String>>,
        /// What `decide` receives for this group: what the decision depends
        /// on (a subject, a tenant, JSON for several values). Groups with
        /// equal contexts share one decision per event.
        context: String,
    },
}

impl Verdict {
    /// Per-event decisions that read only `fields` of the data, with an
    /// empty context (set one with [`Verdict::with_context`]).
    pub fn per_event<I: IntoIterator<Item = S>, S: Into<String>>(fields: I) -> Verdict {
        Verdict::PerEvent {
            fields: Some(fields.into_iter().map(Into::into).collect()),
            context: String::new(),
        }
    }

    /// Per-event decisions that read all of the data, with an empty context.
    pub fn per_event_all() -> Verdict {
        Verdict::PerEvent {
            fields: None,
            context: String::new(),
        }
    }

    /// The same verdict with the context `decide` receives for this group
    /// (no effect on `AllowAll` and `DenyAll`).
    pub fn with_context(self, context: impl Into<String>) -> Verdict {
        match self {
            Verdict::PerEvent { fields, .. } => Verdict::PerEvent {
                fields,
                context: context.into(),
            },
            other => other,
        }
    }

    /// Every event is denied, for this reason.
    pub fn deny_all(reason: impl Into<String>) -> Verdict {
        Verdict::DenyAll(reason.into())
    }
}

/// The decision about one event for one context (every group that has it).
#[derive(Debug, Clone, PartialEq)]
pub enum Decision {
    /// Deliver the event.
    Allow,
    /// Drop it for these groups.
    Deny(String),
    /// Deliver it without these dotted paths of the data.
    Redact(Vec<String>),
    /// Deliver this value instead of the data.
    Replace(Value),
}

impl Decision {
    /// Drops the event, for this reason.
    pub fn deny(reason: impl Into<String>) -> Decision {
        Decision::Deny(reason.into())
    }
}

/// A GraphQL error for one client.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct GraphQLError {
    /// The message the client sees.
    pub message: String,
    /// `extensions.code`; when none is given the host uses `FORBIDDEN` for a
    /// policy's error, `RESOLVER_FAILED` for a resolver's.
    pub code: Option<String>,
}

impl GraphQLError {
    /// An error with no code of its own.
    pub fn new(message: impl Into<String>) -> GraphQLError {
        GraphQLError {
            message: message.into(),
            code: None,
        }
    }

    /// The same error with `extensions.code` set to `code`.
    pub fn with_code(self, code: impl Into<String>) -> GraphQLError {
        GraphQLError {
            code: Some(code.into()),
            ..self
        }
    }

    /// An error with the `FORBIDDEN` code.
    pub fn forbidden(message: impl Into<String>) -> GraphQLError {
        GraphQLError {
            message: message.into(),
            code: Some("FORBIDDEN".into()),
        }
    }
}

/// Conversions from the generated types, shared by every world.
mod convert {
    use super::*;
    use crate::wit::types as w;

    impl From<w::Principal> for Principal {
        fn from(p: w::Principal) -> Self {
            Principal {
                subject: p.subject,
                tenant: p.tenant,
                roles: p.roles,
                claims: LazyObject::new(p.claims),
                expires_at: p.expires_at,
            }
        }
    }

    impl From<Principal> for w::Principal {
        fn from(p: Principal) -> Self {
            w::Principal {
                subject: p.subject,
                tenant: p.tenant,
                roles: p.roles,
                claims: p.claims.text,
                expires_at: p.expires_at,
            }
        }
    }

    impl From<w::Subscription> for Subscription {
        fn from(s: w::Subscription) -> Self {
            Subscription {
                field: s.field,
                topic: s.topic,
                arguments: LazyObject::new(s.arguments),
                variables: LazyObject::new(s.variables),
                operation_name: s.operation_name,
                selected_paths: s.selected_paths,
                principal: s.principal.into(),
            }
        }
    }

    impl From<w::Event> for Event {
        fn from(e: w::Event) -> Self {
            Event {
                topic: e.topic,
                data: serde_json::from_str(&e.data).unwrap_or(Value::Null),
                id: e.id,
                seq: e.seq,
            }
        }
    }

    impl From<GraphQLError> for w::GraphqlError {
        fn from(e: GraphQLError) -> Self {
            w::GraphqlError {
                message: e.message,
                code: e.code,
            }
        }
    }
}

/// [`id_text`] without a copy of a string id: what a filter compares on
/// every event.
pub fn id_str(value: &Value) -> Option<std::borrow::Cow<'_, str>> {
    match value {
        Value::String(s) => Some(std::borrow::Cow::Borrowed(s)),
        Value::Number(n) => Some(std::borrow::Cow::Owned(n.to_string())),
        _ => None,
    }
}

/// The text of a JSON string or number (`"42"` and `42` both read `42`), for
/// comparing ids that publishers send either way; `None` for anything else,
/// including `null`.
pub fn id_text(value: &Value) -> Option<String> {
    match value {
        Value::String(s) => Some(s.clone()),
        Value::Number(n) => Some(n.to_string()),
        _ => None,
    }
}
