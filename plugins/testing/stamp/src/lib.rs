//! Test plugin: replaces each event's data with the same data plus
//! `"<field>": "<version>"` (config `field`, default `stamp`). The version lives in the binary as a fixed-width
//! marker (`fanwire-stamp:` and 8 digits) that the hot-reload test rewrites
//! to make 20 distinct versions of one plugin.

use fanwire_sdk::{host, Decision, Event, Value};

/// Patched in the `.wasm` file by the test; read through `black_box` so the
/// compiler keeps the bytes in the data segment.
static STAMP: &str = "fanwire-stamp:00000000";

fanwire_sdk::filter! {
    /// Stamps the event with this binary's version.
    fn decide(event: &Event) -> Decision {
        let stamp = std::hint::black_box(STAMP);
        let mut data = event.data.clone();
        if let Value::Object(map) = &mut data {
            let field = host::config().get("field").and_then(Value::as_str).unwrap_or("stamp");
            map.insert(field.into(), Value::String(stamp["fanwire-stamp:".len()..].to_owned()));
        }
        Decision::Replace(data)
    }
}
