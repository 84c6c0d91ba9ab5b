//! What the fuzz targets share: a schema, an engine with a connection
//! policy the input steers, and the checks every frame a connection sends
//! must pass.
//!
//! # Layout
//!
//! - `fuzz_targets/protocol.rs`: text frames through both subprotocols'
//!   decoders (a decoded message re-encodes to itself) and through a whole
//!   `Connection`, so the session's state transitions are fuzzed too.
//! - `fuzz_targets/prepare.rs`: a query and variables through `prepare` with
//!   default and tight limits; what is accepted is measured again here.
//! - `fuzz_targets/publish.rs`: `/publish` bodies; accepted exactly when
//!   they have a valid shape.
//! - `fuzz_targets/notify.rs`: PostgreSQL NOTIFY payloads.
//! - `fuzz_targets/plugin_return.rs`: what a plugin returns across the WIT
//!   boundary (paths, replacement JSON, claims, ack, principal).
//! - `run.sh`: installs cargo-fuzz and runs every target on its corpus.

use std::collections::VecDeque;
use std::sync::{Arc, Mutex, OnceLock};

use fanwire_core::hooks::{Accepted, ConnectionRequest, Hooks};
use fanwire_core::outbox::Frame;
use fanwire_core::protocol::assemble_next;
use fanwire_core::{Connection, ConnectionPolicy, Engine, Limits, Principal, Schema};
use serde_json::Value;

/// A schema with every kind of type a document can select through
/// (interfaces, unions, lists, recursion, a JSON scalar).
pub const SDL: &str = r#"
type Query { ping: String }
type Mutation { touch: Boolean }

scalar JSON

enum Status { NEW PAID SHIPPED }

interface Node { id: ID! }

type Customer implements Node {
  id: ID!
  name: String!
  email: String
}

type Line {
  sku: String!
  qty: Int!
  price: Float
}

type Order implements Node {
  id: ID!
  status: Status!
  total: Float
  quantity: Int
  paid: Boolean
  tags: [String!]
  lines: [Line!]!
  matrix: [[Int!]]
  customer: Customer
  parent: Order
  meta: JSON
}

type Refund {
  id: ID!
  amount: Int!
  reason: String
}

union Activity = Order | Refund

input Filter { status: Status, min: Float, nested: Filter, tags: [String!] }

type Subscription {
  orderCreated(tenantId: ID!): Order @topic(name: "orders:{tenantId}")
  orderUpdated(tenantId: ID!, region: String = "eu"): Order @topic(name: "orders:{region}:{tenantId}")
  activity(tenantId: Int!): Activity @topic(name: "activity:{tenantId}")
  node(tenantId: ID!): Node @topic(name: "nodes:{tenantId}")
  filtered(tenantId: ID!, filter: Filter): Order @topic(name: "filtered:{tenantId}")
  ticks: Int
}
"#;

/// The fuzz schema, parsed.
pub fn schema() -> Schema {
    Schema::parse(SDL).expect("the fuzz schema is valid")
}

/// The fuzz schema, parsed once per process.
pub fn shared_schema() -> &'static Schema {
    static SCHEMA: OnceLock<Schema> = OnceLock::new();
    SCHEMA.get_or_init(schema)
}

/// Accepts or rejects as the init payload says (`"reject": reason`), acks
/// with its `"ack"` member, and names the principal a target set last.
#[derive(Debug, Default)]
pub struct SteeredPolicy {
    principal: Mutex<Principal>,
}

impl SteeredPolicy {
    /// The principal the next accepted init gets.
    pub fn set_principal(&self, principal: Principal) {
        *self.principal.lock().unwrap_or_else(|p| p.into_inner()) = principal;
    }
}

impl ConnectionPolicy for SteeredPolicy {
    fn check(&self, request: &ConnectionRequest<'_>) -> Result<Accepted, String> {
        if let Some(reason) = request.init_payload.get("reject") {
            return Err(reason.as_str().unwrap_or("rejected").to_owned());
        }
        Ok(Accepted {
            principal: self
                .principal
                .lock()
                .unwrap_or_else(|p| p.into_inner())
                .clone(),
            ack: request.init_payload.get("ack").cloned(),
        })
    }
}

/// One engine for every input of a target (a schema parse per input would
/// cost most of the time). It keeps no history, so an input's outcome does
/// not depend on earlier inputs; [`assert_engine_empty`] checks it is empty again.
pub struct Fixture {
    /// The engine.
    pub engine: Arc<Engine>,
    /// Its connection policy.
    pub policy: Arc<SteeredPolicy>,
}

/// The shared fixture; small queue and subscription limits so the fuzzer
/// reaches them.
pub fn fixture() -> &'static Fixture {
    static FIXTURE: OnceLock<Fixture> = OnceLock::new();
    FIXTURE.get_or_init(|| {
        let policy = Arc::new(SteeredPolicy::default());
        let limits = Limits {
            max_subscriptions_per_connection: 8,
            queue_depth: 4,
            history_per_topic: 0,
            ..Limits::default()
        };
        let hooks = Hooks {
            connection: policy.clone(),
            ..Hooks::default()
        };
        let engine = Engine::with_hooks(schema(), limits, hooks).expect("valid limits");
        Fixture { engine, policy }
    })
}

/// Reads what a connection sent and checks each frame: control frames are
/// JSON objects with a `type`, results are JSON, a close frame is the last
/// frame and its reason fits a close frame.
#[derive(Debug, Default)]
pub struct Checked {
    /// A close frame has been sent.
    pub closed: bool,
    /// Frames read so far.
    pub frames: usize,
}

impl Checked {
    /// Drains the connection's outbox and checks every frame in it.
    pub fn drain(&mut self, conn: &Connection) {
        let mut out = VecDeque::new();
        conn.outbox().drain_into(&mut out);
        for frame in out {
            self.frames += 1;
            assert!(!self.closed, "a frame after the close frame: {frame:?}");
            match frame {
                Frame::Text(text) => {
                    let value: Value = parse(text.as_bytes(), "a control frame");
                    assert!(
                        value.get("type").and_then(Value::as_str).is_some(),
                        "a control frame without a type: {text}"
                    );
                }
                Frame::Next {
                    prefix, payload, ..
                } => {
                    let frame = assemble_next(&prefix, &payload);
                    let value: Value = parse(&frame, "a result frame");
                    assert!(
                        value.get("id").and_then(Value::as_str).is_some(),
                        "a result frame without an id"
                    );
                }
                Frame::Close(close) => {
                    assert!(close.reason.len() <= 123, "close reason too long");
                    self.closed = true;
                }
                Frame::Revoke { .. } => {}
            }
        }
    }
}

/// Parses JSON the engine wrote; only nesting deeper than serde_json reads
/// (data an event carried through a `JSON` field) is let through unread.
fn parse(bytes: &[u8], what: &str) -> Value {
    match serde_json::from_slice(bytes) {
        Ok(value) => value,
        Err(e) if e.to_string().contains("recursion limit") => Value::Null,
        Err(e) => panic!(
            "{what} is not JSON ({e}): {}",
            String::from_utf8_lossy(bytes)
        ),
    }
}

/// Asserts that every connection of the shared engine is gone and left
/// nothing behind in the registry.
pub fn assert_engine_empty(engine: &Engine) {
    assert_eq!(
        engine.registry().counts(),
        (0, 0, 0),
        "topics, groups or subscriptions left behind"
    );
    assert_eq!(engine.metrics().connections.get(), 0, "connections gauge");
}
