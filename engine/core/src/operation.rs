//! Turning a subscribe request into a prepared subscription: parse,
//! validate, enforce limits, coerce variables, bind the topic, compile the plan.

use std::collections::HashMap;

use apollo_compiler::ast::{OperationType, Value as AstValue};
use apollo_compiler::executable::{ExecutableDocument, Field, Selection, SelectionSet};
use apollo_compiler::parser::Parser;
use serde_json::{Map, Value};

use crate::config::Limits;
use crate::error::{codes, GraphQLError};
use crate::projection::Plan;
use crate::protocol::SubscribePayload;
use crate::schema::Schema;

/// A validated subscription, ready to join a group.
#[derive(Debug, Clone)]
pub struct Prepared {
    /// The subscription field.
    pub field: String,
    /// The concrete topic, placeholders filled.
    pub topic: String,
    /// The field's arguments after coercion and defaults.
    pub arguments: Map<String, Value>,
    /// The coerced variables.
    pub variables: Map<String, Value>,
    /// The operation's name, if it has one.
    pub operation_name: Option<String>,
    /// The compiled selection set.
    pub plan: Plan,
    /// Equal for subscriptions that receive identical results.
    pub group_key: String,
}

/// Prepares a subscribe request, or returns the GraphQL errors for the client.
pub fn prepare(
    schema: &Schema,
    limits: &Limits,
    request: &SubscribePayload,
) -> Result<Prepared, Vec<GraphQLError>> {
    if request.query.len() > limits.max_document_bytes {
        return Err(vec![GraphQLError::new(
            format!(
                "The document is {} bytes; the limit is {}",
                request.query.len(),
                limits.max_document_bytes
            ),
            codes::LIMIT_EXCEEDED,
        )]);
    }
    let recursion_limit = limits.max_depth * 2 + 16;
    let mut parser = Parser::new()
        .recursion_limit(recursion_limit)
        .token_limit(limits.max_document_bytes);
    let ast = match parser.parse_ast(request.query.as_str(), "subscription.graphql") {
        Ok(ast) => ast,
        // The parser's recursion bound guards the stack; hitting it means the
        // document nests too deeply, which the client must hear as a limit.
        Err(_) if parser.recursion_reached() > recursion_limit => {
            return Err(vec![GraphQLError::new(
                format!(
                    "The document nests too deeply; the depth limit is {}",
                    limits.max_depth
                ),
                codes::LIMIT_EXCEEDED,
            )]);
        }
        Err(e) => return Err(diagnostics(&e.errors, codes::PARSE_FAILED)),
    };
    let doc = ast
        .to_executable_validate(schema.apollo())
        .map_err(|e| diagnostics(&e.errors, codes::VALIDATION_FAILED))?;
    check_limits(&doc, limits)?;

    let operation = doc
        .operations
        .get(request.operation_name.as_deref())
        .map_err(|e| {
            vec![GraphQLError::new(
                e.message().to_string(),
                codes::VALIDATION_FAILED,
            )]
        })?;
    if operation.operation_type != OperationType::Subscription {
        return Err(vec![GraphQLError::new(
            format!(
                "Only subscriptions are served here; this operation is a {}",
                operation.operation_type
            ),
            codes::OPERATION_NOT_SUPPORTED,
        )]);
    }

    let raw_vars: apollo_compiler::response::JsonMap =
        serde_json::from_value(Value::Object(request.variables.clone())).map_err(|e| {
            vec![GraphQLError::new(
                format!("Variables are not valid JSON: {e}"),
                codes::BAD_USER_INPUT,
            )]
        })?;
    let coerced =
        apollo_compiler::request::coerce_variable_values(schema.apollo(), operation, &raw_vars)
            .map_err(|e| {
                vec![GraphQLError::new(
                    e.message().to_string(),
                    codes::BAD_USER_INPUT,
                )]
            })?;
    let variables: Map<String, Value> = match serde_json::to_value(coerced.into_inner()) {
        Ok(Value::Object(m)) => m,
        _ => Map::new(),
    };

    let root = root_field(&doc, &operation.selection_set).ok_or_else(|| {
        vec![GraphQLError::new(
            "The subscription selects no field",
            codes::VALIDATION_FAILED,
        )]
    })?;
    let mut arguments = Map::new();
    for def in &root.definition.arguments {
        let given = root
            .arguments
            .iter()
            .find(|a| a.name == def.name)
            .map(|a| &a.value);
        let value = match (given, &def.default_value) {
            (Some(v), _) => match v.as_ref() {
                AstValue::Variable(var) if !variables.contains_key(var.as_str()) => {
                    match &def.default_value {
                        Some(d) => to_json(d, &variables),
                        None => continue,
                    }
                }
                _ => to_json(v, &variables),
            },
            (None, Some(d)) => to_json(d, &variables),
            (None, None) => continue,
        };
        arguments.insert(def.name.to_string(), value);
    }
    let template = schema.topic(root.name.as_str()).ok_or_else(|| {
        vec![GraphQLError::new(
            format!("Subscription.{} has no topic", root.name),
            codes::VALIDATION_FAILED,
        )]
    })?;
    let topic = template
        .render(&arguments)
        .map_err(|message| vec![GraphQLError::new(message, codes::BAD_USER_INPUT)])?;

    let plan = Plan::build(
        schema.apollo(),
        &doc,
        schema.subscription_type(),
        &operation.selection_set,
        &variables,
    );
    let args_text = Value::Object(arguments.clone()).to_string();
    let group_key = format!(
        "{}\u{0}{}\u{0}{}\u{0}{}",
        root.name,
        topic,
        args_text,
        plan.fingerprint()
    );
    Ok(Prepared {
        field: root.name.to_string(),
        topic,
        arguments,
        variables,
        operation_name: operation.name.as_ref().map(|n| n.to_string()),
        plan,
        group_key,
    })
}

fn diagnostics(
    list: &apollo_compiler::validation::DiagnosticList,
    code: &str,
) -> Vec<GraphQLError> {
    list.iter()
        .map(|d| GraphQLError::from_apollo(d.to_json(), code))
        .collect()
}

/// The first field of the root selection, looking through fragments
/// (validation guarantees there is exactly one).
fn root_field<'a>(doc: &'a ExecutableDocument, set: &'a SelectionSet) -> Option<&'a Field> {
    set.selections.iter().find_map(|s| match s {
        Selection::Field(f) if f.name != "__typename" => Some(f.as_ref()),
        Selection::Field(_) => None,
        Selection::InlineFragment(i) => root_field(doc, &i.selection_set),
        Selection::FragmentSpread(s) => doc
            .fragments
            .get(&s.fragment_name)
            .and_then(|f| root_field(doc, &f.selection_set)),
    })
}

fn to_json(value: &AstValue, variables: &Map<String, Value>) -> Value {
    match value {
        AstValue::Null => Value::Null,
        AstValue::Enum(e) => Value::String(e.to_string()),
        AstValue::Variable(v) => variables.get(v.as_str()).cloned().unwrap_or(Value::Null),
        AstValue::String(s) => Value::String(s.clone()),
        AstValue::Float(f) => f.try_to_f64().ok().map(Value::from).unwrap_or(Value::Null),
        AstValue::Int(i) => i
            .try_to_i32()
            .map(Value::from)
            .or_else(|_| i.try_to_f64().map(Value::from))
            .unwrap_or(Value::Null),
        AstValue::Boolean(b) => Value::Bool(*b),
        AstValue::List(items) => {
            Value::Array(items.iter().map(|i| to_json(i, variables)).collect())
        }
        AstValue::Object(fields) => Value::Object(
            fields
                .iter()
                .map(|(k, v)| (k.to_string(), to_json(v, variables)))
                .collect(),
        ),
    }
}

#[derive(Clone, Copy, Default)]
struct Stats {
    depth: usize,
    fields: usize,
    aliases: usize,
}

/// Depth, alias and field-count limits, with fragments expanded (each
/// fragment measured once, so a fragment used many times costs nothing extra).
fn check_limits(doc: &ExecutableDocument, limits: &Limits) -> Result<(), Vec<GraphQLError>> {
    fn measure<'a>(
        doc: &'a ExecutableDocument,
        set: &'a SelectionSet,
        memo: &mut HashMap<&'a str, Stats>,
    ) -> Stats {
        let mut total = Stats::default();
        for selection in &set.selections {
            let inner = match selection {
                Selection::Field(f) => {
                    let sub = measure(doc, &f.selection_set, memo);
                    Stats {
                        depth: sub.depth + 1,
                        fields: sub.fields + 1,
                        aliases: sub.aliases + usize::from(f.alias.is_some()),
                    }
                }
                Selection::InlineFragment(i) => measure(doc, &i.selection_set, memo),
                Selection::FragmentSpread(s) => {
                    let name = s.fragment_name.as_str();
                    if let Some(stats) = memo.get(name) {
                        *stats
                    } else if let Some(fragment) = doc.fragments.get(name) {
                        let stats = measure(doc, &fragment.selection_set, memo);
                        memo.insert(name, stats);
                        stats
                    } else {
                        Stats::default()
                    }
                }
            };
            total.depth = total.depth.max(inner.depth);
            total.fields = total.fields.saturating_add(inner.fields);
            total.aliases = total.aliases.saturating_add(inner.aliases);
        }
        total
    }
    let mut memo = HashMap::new();
    for operation in doc.operations.iter() {
        let stats = measure(doc, &operation.selection_set, &mut memo);
        let over = |what: &str, got: usize, max: usize| {
            vec![GraphQLError::new(
                format!("The document's {what} is {got}; the limit is {max}"),
                codes::LIMIT_EXCEEDED,
            )]
        };
        if stats.depth > limits.max_depth {
            return Err(over("depth", stats.depth, limits.max_depth));
        }
        if stats.aliases > limits.max_aliases {
            return Err(over("alias count", stats.aliases, limits.max_aliases));
        }
        if stats.fields > limits.max_fields {
            return Err(over("field count", stats.fields, limits.max_fields));
        }
    }
    Ok(())
}
