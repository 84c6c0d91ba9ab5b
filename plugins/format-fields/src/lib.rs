//! Resolver: a subscription field's value is the event's data with some
//! fields built from templates or re-cased, as its config says. Bind it to a
//! field with `[[resolvers]]` (see `plugins/README.md`).
//!
//! Config:
//! - `set`: dotted path -> template. The field at that path of the value is
//!   set to the template's text (missing objects on the way are created). In
//!   a template, `{path}` is the event's data at a dotted path (a string as
//!   is, a number or boolean as its JSON text, anything else or nothing as
//!   empty), `{$name}` the field's argument `name`, and `{{` / `}}` are
//!   literal braces. Templates read the data as published.
//! - `case`: dotted path -> `"upper"` or `"lower"`: a string at that path is
//!   re-cased (anything else there is left alone).
//!
//! ```toml
//! [[resolvers]]
//! field = "tick"
//! path = "format-fields.wasm"
//! config = { set = { label = "#{seq} on {$topic}: {payload}" }, case = { payload = "upper" } }
//! ```
//!
//! Data that is not a JSON object is returned unchanged. A config this
//! plugin cannot read is logged once, and every call answers an error naming
//! the mistake (the subscribers see it at the field, `RESOLVER_FAILED`).

use std::sync::OnceLock;

use fanwire_sdk::{host, Event, FieldCall, GraphQLError, Map, Object, Value};

/// One piece of a template.
#[derive(Debug)]
enum Part {
    Text(String),
    /// The event's data at this dotted path.
    Data(Vec<String>),
    /// The field's argument of this name.
    Argument(String),
}

/// How `case` re-cases a string.
#[derive(Debug)]
enum Case {
    Upper,
    Lower,
}

/// The config, read once.
#[derive(Debug, Default)]
struct Config {
    set: Vec<(Vec<String>, Vec<Part>)>,
    case: Vec<(Vec<String>, Case)>,
}

fn path(dotted: &str) -> Vec<String> {
    dotted.split('.').map(str::to_owned).collect()
}

fn template(text: &str) -> Result<Vec<Part>, String> {
    let mut parts = Vec::new();
    let mut literal = String::new();
    let mut chars = text.chars().peekable();
    while let Some(c) = chars.next() {
        match c {
            '{' if chars.peek() == Some(&'{') => {
                chars.next();
                literal.push('{');
            }
            '}' if chars.peek() == Some(&'}') => {
                chars.next();
                literal.push('}');
            }
            '{' => {
                let mut name = String::new();
                loop {
                    match chars.next() {
                        Some('}') => break,
                        Some('{') | None => {
                            return Err(format!("template {text:?} has an unclosed `{{`"))
                        }
                        Some(c) => name.push(c),
                    }
                }
                if name.is_empty() || name == "$" {
                    return Err(format!("template {text:?} has an empty placeholder"));
                }
                if !literal.is_empty() {
                    parts.push(Part::Text(std::mem::take(&mut literal)));
                }
                parts.push(match name.strip_prefix('$') {
                    Some(argument) => Part::Argument(argument.to_owned()),
                    None => Part::Data(path(&name)),
                });
            }
            '}' => {
                return Err(format!(
                    "template {text:?} has a `}}` that closes nothing (write `}}}}` for a brace)"
                ))
            }
            c => literal.push(c),
        }
    }
    if !literal.is_empty() {
        parts.push(Part::Text(literal));
    }
    Ok(parts)
}

/// A table of the config (`None` when absent).
fn table<'a>(
    config: &'a Map<String, Value>,
    key: &str,
) -> Result<Option<&'a Map<String, Value>>, String> {
    match config.get(key) {
        None => Ok(None),
        Some(Value::Object(table)) => Ok(Some(table)),
        Some(other) => Err(format!("`{key}` must be a table, not {other}")),
    }
}

fn read(config: &Map<String, Value>) -> Result<Config, String> {
    if let Some(unknown) = config.keys().find(|k| *k != "set" && *k != "case") {
        return Err(format!("unknown key `{unknown}` (known: set, case)"));
    }
    let mut read = Config::default();
    for (target, text) in table(config, "set")?.into_iter().flatten() {
        let Value::String(text) = text else {
            return Err(format!(
                "set.{target} must be a template string, not {text}"
            ));
        };
        read.set.push((path(target), template(text)?));
    }
    for (target, case) in table(config, "case")?.into_iter().flatten() {
        let case = match case.as_str() {
            Some("upper") => Case::Upper,
            Some("lower") => Case::Lower,
            _ => {
                return Err(format!(
                    "case.{target} must be \"upper\" or \"lower\", not {case}"
                ))
            }
        };
        read.case.push((path(target), case));
    }
    Ok(read)
}

fn config() -> &'static Result<Config, String> {
    static CONFIG: OnceLock<Result<Config, String>> = OnceLock::new();
    CONFIG.get_or_init(|| {
        let config = read(host::config()).map_err(|e| format!("format-fields: bad config: {e}"));
        if let Err(e) = &config {
            host::error(e, &[]);
        }
        config
    })
}

fn at<'a>(value: &'a Value, path: &[String]) -> Option<&'a Value> {
    path.iter().try_fold(value, |v, key| v.get(key))
}

/// The value at `path`, creating the objects on the way (a `null` there
/// becomes one); `None` when something else is in the way.
fn slot<'a>(value: &'a mut Value, path: &[String]) -> Option<&'a mut Value> {
    path.iter().try_fold(value, |v, key| {
        if v.is_null() {
            *v = Value::Object(Map::new());
        }
        let object = v.as_object_mut()?;
        Some(object.entry(key.clone()).or_insert(Value::Null))
    })
}

/// The value at `path` if there is one (nothing is created).
fn slot_if_present<'a>(value: &'a mut Value, path: &[String]) -> Option<&'a mut Value> {
    path.iter().try_fold(value, |v, key| v.get_mut(key))
}

fn fill(parts: &[Part], data: &Value, arguments: &Object) -> String {
    let mut out = String::new();
    for part in parts {
        let value = match part {
            Part::Text(text) => {
                out.push_str(text);
                continue;
            }
            Part::Data(path) => at(data, path),
            Part::Argument(name) => arguments.get(name),
        };
        match value {
            Some(Value::String(s)) => out.push_str(s),
            Some(v @ (Value::Number(_) | Value::Bool(_))) => out.push_str(&v.to_string()),
            _ => {}
        }
    }
    out
}

fanwire_sdk::resolver! {
    /// Once per group: the arguments the templates read, as a JSON object
    /// (an empty context when they read none).
    fn prepare(call: &FieldCall) -> Result<String, GraphQLError> {
        let config = config().as_ref().map_err(GraphQLError::new)?;
        let mut read = Object::new();
        for part in config.set.iter().flat_map(|(_, parts)| parts) {
            if let Part::Argument(name) = part {
                if let Some(value) = call.argument(name) {
                    read.insert(name.clone(), value.clone());
                }
            }
        }
        Ok(if read.is_empty() {
            String::new()
        } else {
            Value::Object(read).to_string()
        })
    }

    /// The data with the configured fields set, then re-cased.
    fn resolve(event: &Event, arguments: &str) -> Result<Value, GraphQLError> {
        let config = config().as_ref().map_err(GraphQLError::new)?;
        if !event.data.is_object() {
            return Ok(event.data.clone());
        }
        let arguments: Object = if arguments.is_empty() {
            Object::new()
        } else {
            // Written by `prepare` above: always an object.
            fanwire_sdk::serde_json::from_str(arguments).unwrap_or_default()
        };
        let mut value = event.data.clone();
        for (target, parts) in &config.set {
            let text = fill(parts, &event.data, &arguments);
            if let Some(slot) = slot(&mut value, target) {
                *slot = Value::String(text);
            }
        }
        for (target, case) in &config.case {
            if let Some(Value::String(s)) = slot_if_present(&mut value, target) {
                *s = match case {
                    Case::Upper => s.to_uppercase(),
                    Case::Lower => s.to_lowercase(),
                };
            }
        }
        Ok(value)
    }
}
