//! Test plugin: a field resolver for `fanwire:plugin@0.3.0`, written against
//! the 0.3 bindings directly, as resolvers built before 0.4 were: `resolve`
//! receives the group's whole field call with every event, and there is no
//! `prepare`. The host must keep loading it beside 0.4 resolvers
//! (`testing/resolver`) and resolve with it correctly. What it does is its
//! `mode`, taken from the field's arguments (`mode`) if the field has one,
//! else from its config (`{"mode": "..."}`), else `echo`:
//!
//! - `pass`: the event's data as it came, not parsed (for benchmarks of
//!   the host's share of a call);
//! - `echo`: the event's data (an object) with `"by": "<version>"` added;
//! - `upper`: the data with its `payload` member (config `field`)
//!   upper-cased, and `"by"` as for `echo`;
//! - `call`: what the host sent, as JSON: the field, arguments, variables,
//!   principal and the event (topic, id, seq, data);
//! - `error`: a guest error with the message `refused by the resolver` and
//!   the code from the arguments or config (`code`), or none;
//! - `not-json`: text that is not JSON;
//! - `trap`: a panic (a trap: the release profile aborts on panic);
//! - `spin`: a loop that never ends;
//! - `hog`: memory allocated without bound.
//!
//! The version lives in the binary as a fixed-width marker
//! (`fanwire-resolver:` and 8 digits), as in `testing/resolver`.

wit_bindgen::generate!({ path: "../../../wit/v0.3.0", world: "field-resolver" });

use exports::fanwire::plugin::resolver::{FieldCall, Guest};
use fanwire::plugin::host;
use fanwire::plugin::types::{Event, GraphqlError};
use serde_json::{json, Map, Value};

// The SDK's allocator (the file, not the crate: see Cargo.toml), so this
// plugin's calls cost what an SDK resolver's do.
#[path = "../../../sdk/src/alloc.rs"]
mod alloc;

#[global_allocator]
static ALLOCATOR: alloc::Allocator = alloc::Allocator::new();

/// Patched in the `.wasm` file by the tests; read through `black_box` so the
/// compiler keeps the bytes in the data segment.
static VERSION: &str = "fanwire-resolver:00000000";

fn version() -> String {
    std::hint::black_box(VERSION)["fanwire-resolver:".len()..].to_owned()
}

/// The config, read once per instance (it does not change while one lives).
fn config() -> &'static Map<String, Value> {
    static CONFIG: std::sync::OnceLock<Map<String, Value>> = std::sync::OnceLock::new();
    CONFIG.get_or_init(|| object(&host::config()))
}

fn object(text: &str) -> Map<String, Value> {
    match serde_json::from_str(text) {
        Ok(Value::Object(map)) => map,
        _ => Map::new(),
    }
}

/// `key` from the field's arguments, else from the config.
fn setting(
    arguments: &Map<String, Value>,
    config: &Map<String, Value>,
    key: &str,
) -> Option<String> {
    arguments
        .get(key)
        .or_else(|| config.get(key))
        .and_then(Value::as_str)
        .map(str::to_owned)
}

/// The event's data with `"by"` set, as JSON text.
fn stamped(data: Value) -> String {
    let mut data = data;
    if let Value::Object(map) = &mut data {
        map.insert("by".into(), Value::String(version()));
    }
    data.to_string()
}

struct Resolver;

impl Guest for Resolver {
    fn resolve(event: Event, call: FieldCall) -> Result<String, GraphqlError> {
        let config = config();
        let arguments = object(&call.arguments);
        let mode = setting(&arguments, config, "mode").unwrap_or_else(|| "echo".into());
        if mode == "pass" {
            return Ok(event.data);
        }
        let data: Value = serde_json::from_str(&event.data).unwrap_or(Value::Null);
        match mode.as_str() {
            "echo" => Ok(stamped(data)),
            "upper" => {
                let field =
                    setting(&Map::new(), config, "field").unwrap_or_else(|| "payload".into());
                let mut data = data;
                if let Some(Value::String(s)) = data.get_mut(&field) {
                    *s = s.to_uppercase();
                }
                Ok(stamped(data))
            }
            "call" => {
                let p = &call.principal;
                Ok(json!({
                    "field": call.field,
                    "arguments": arguments,
                    "variables": object(&call.variables),
                    "principal": {
                        "subject": p.subject,
                        "tenant": p.tenant,
                        "roles": p.roles,
                        "claims": object(&p.claims),
                    },
                    "event": {
                        "topic": event.topic,
                        "id": event.id,
                        "seq": event.seq,
                        "data": data,
                    },
                })
                .to_string())
            }
            "error" => Err(GraphqlError {
                message: "refused by the resolver".into(),
                code: setting(&arguments, config, "code"),
            }),
            "not-json" => Ok("{not json".into()),
            "trap" => panic!("trap requested"),
            "spin" => {
                let mut n: u64 = 0;
                loop {
                    n = std::hint::black_box(n.wrapping_add(1));
                }
            }
            "hog" => {
                let mut hoard: Vec<Vec<u8>> = Vec::new();
                loop {
                    hoard.push(std::hint::black_box(vec![1u8; 1 << 20]));
                }
            }
            other => Err(GraphqlError {
                message: format!("unknown mode {other:?}"),
                code: Some("BAD_MODE".into()),
            }),
        }
    }
}

export!(Resolver);
