//! Test plugin: a field resolver for `fanwire:plugin@0.4.0`, written against
//! the bindings directly. `prepare` reads the group's call once and keeps
//! what `resolve` needs as the group's context; `resolve` reads only the
//! event and that context. What it does is its `mode`, taken from the
//! field's arguments (`mode`) if the field has one, else from its config
//! (`{"mode": "..."}`), else `echo`:
//!
//! - `pass`: the event's data as it came, not parsed (for benchmarks of
//!   the host's share of a call; its context is the 4 bytes `pass`);
//! - `echo`: the event's data (an object) with `"by": "<version>"` added,
//!   and `"prepared": "<version>"`, the version whose `prepare` made the
//!   group's context (after a reload both are the new one's);
//! - `upper`: the data with its `payload` member (config `field`)
//!   upper-cased, `"by"` and `"prepared"` as for `echo`;
//! - `call`: what `prepare` received (the field, arguments, variables and
//!   principal), carried in the context, and the event (topic, id, seq,
//!   data), as JSON;
//! - `error`: a guest error with the message `refused by the resolver` and
//!   the code from the arguments or config (`code`), or none;
//! - `not-json`: text that is not JSON;
//! - `trap`: a panic (a trap: the release profile aborts on panic);
//! - `spin`: a loop that never ends;
//! - `hog`: memory allocated without bound;
//! - `prepare-error`: `prepare` answers a guest error (`prepare refused`,
//!   the code as for `error`);
//! - `prepare-trap`: `prepare` panics;
//! - `prepare-flaky`: an instance's first `prepare` answers the guest error
//!   `not ready yet` (code `NOT_READY`), the later ones go on as `echo`.
//!
//! The version lives in the binary as a fixed-width marker
//! (`fanwire-resolver:` and 8 digits) that the hot-reload tests rewrite to
//! make distinct versions of one resolver.

wit_bindgen::generate!({ path: "../../../wit/v0.4.0", world: "field-resolver" });

use std::sync::atomic::{AtomicU32, Ordering};

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

/// This instance's `prepare` calls (for `prepare-flaky`).
static PREPARES: AtomicU32 = AtomicU32::new(0);

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

/// The event's data with `"by"` and `"prepared"` set, as JSON text.
fn stamped(data: Value, context: &Map<String, Value>) -> String {
    let mut data = data;
    if let Value::Object(map) = &mut data {
        map.insert("by".into(), Value::String(version()));
        let prepared = context.get("prepared").cloned().unwrap_or(Value::Null);
        map.insert("prepared".into(), prepared);
    }
    data.to_string()
}

struct Resolver;

impl Guest for Resolver {
    fn prepare(call: FieldCall) -> Result<String, GraphqlError> {
        let first = PREPARES.fetch_add(1, Ordering::Relaxed) == 0;
        let config = config();
        let arguments = object(&call.arguments);
        let mode = setting(&arguments, config, "mode").unwrap_or_else(|| "echo".into());
        // The smallest context there is: what the benchmarks measure.
        if mode == "pass" {
            return Ok(mode);
        }
        let code = setting(&arguments, config, "code");
        let mode = match mode.as_str() {
            "prepare-error" => {
                return Err(GraphqlError {
                    message: "prepare refused".into(),
                    code,
                })
            }
            "prepare-trap" => panic!("trap requested in prepare"),
            "prepare-flaky" if first => {
                return Err(GraphqlError {
                    message: "not ready yet".into(),
                    code: Some("NOT_READY".into()),
                })
            }
            "prepare-flaky" => "echo".to_owned(),
            _ => mode,
        };
        let mut context = json!({"mode": mode, "prepared": version(), "code": code});
        if mode == "call" {
            let p = &call.principal;
            context["call"] = json!({
                "field": call.field,
                "arguments": arguments,
                "variables": object(&call.variables),
                "principal": {
                    "subject": p.subject,
                    "tenant": p.tenant,
                    "roles": p.roles,
                    "claims": object(&p.claims),
                },
            });
        }
        Ok(context.to_string())
    }

    fn resolve(event: Event, context: String) -> Result<String, GraphqlError> {
        if context == "pass" {
            return Ok(event.data);
        }
        let context = object(&context);
        let mode = context.get("mode").and_then(Value::as_str).unwrap_or("");
        let data: Value = serde_json::from_str(&event.data).unwrap_or(Value::Null);
        match mode {
            "echo" => Ok(stamped(data, &context)),
            "upper" => {
                let field =
                    setting(&Map::new(), config(), "field").unwrap_or_else(|| "payload".into());
                let mut data = data;
                if let Some(Value::String(s)) = data.get_mut(&field) {
                    *s = s.to_uppercase();
                }
                Ok(stamped(data, &context))
            }
            "call" => {
                let mut call = context.get("call").cloned().unwrap_or(Value::Null);
                call["event"] = json!({
                    "topic": event.topic,
                    "id": event.id,
                    "seq": event.seq,
                    "data": data,
                });
                Ok(call.to_string())
            }
            "error" => Err(GraphqlError {
                message: "refused by the resolver".into(),
                code: context
                    .get("code")
                    .and_then(Value::as_str)
                    .map(str::to_owned),
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
