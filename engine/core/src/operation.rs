//! Turning a subscribe request into a prepared subscription: parse,
//! validate, enforce limits, coerce variables, bind the topic, compile the plan.

use std::collections::HashMap;

use apollo_compiler::ast::{self, OperationType, Value as AstValue};
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
    let ast = parse(limits, &request.query)?;
    // Limits first: they are linear in the document's size, while validation
    // walks every fragment expansion and reports every conflict it finds.
    check_limits(&ast, limits)?;
    let doc = ast
        .to_executable_validate(schema.apollo())
        .map_err(|e| diagnostics(&e.errors, codes::VALIDATION_FAILED))?;

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

/// Parses a document within the size, token and nesting bounds, so that a
/// hostile document is refused before its tree is built.
fn parse(limits: &Limits, query: &str) -> Result<ast::Document, Vec<GraphQLError>> {
    if query.len() > limits.max_document_bytes {
        return Err(vec![GraphQLError::new(
            format!(
                "The document is {} bytes; the limit is {}",
                query.len(),
                limits.max_document_bytes
            ),
            codes::LIMIT_EXCEEDED,
        )]);
    }
    let recursion_limit = nesting_limit(limits);
    // Every token (whitespace included) is at least one byte, plus the end
    // token: the byte check above already bounds the tokens, and this bound
    // keeps the lexer to it whatever it counts.
    let token_limit = limits.max_document_bytes.saturating_add(1);
    let mut parser = Parser::new()
        .recursion_limit(recursion_limit)
        .token_limit(token_limit);
    match parser.parse_ast(query, "subscription.graphql") {
        Ok(ast) => Ok(ast),
        // The parser's recursion bound guards the stack; hitting it means the
        // document nests too deeply, which the client must hear as a limit.
        Err(_) if parser.recursion_reached() > recursion_limit => Err(too_deep(limits)),
        Err(_) if parser.tokens_reached() > token_limit => Err(vec![GraphQLError::new(
            format!("The document has more than {token_limit} tokens"),
            codes::LIMIT_EXCEEDED,
        )]),
        Err(e) => Err(diagnostics(&e.errors, codes::PARSE_FAILED)),
    }
}

/// How many selection sets (fields, fragments, spreads) may nest along one
/// path: room for `max_depth` fields with a fragment or two at each level.
fn nesting_limit(limits: &Limits) -> usize {
    limits.max_depth.saturating_mul(2).saturating_add(16)
}

fn too_deep(limits: &Limits) -> Vec<GraphQLError> {
    vec![GraphQLError::new(
        format!(
            "The document nests too deeply; the depth limit is {}",
            limits.max_depth
        ),
        codes::LIMIT_EXCEEDED,
    )]
}

/// Errors in one response, as graphql-js caps them: one document must not
/// turn into a frame of thousands of errors.
pub const MAX_ERRORS: usize = 100;

fn diagnostics(
    list: &apollo_compiler::validation::DiagnosticList,
    code: &str,
) -> Vec<GraphQLError> {
    let mut errors: Vec<GraphQLError> = list
        .iter()
        .take(MAX_ERRORS)
        .map(|d| GraphQLError::from_apollo(d.to_json(), code))
        .collect();
    if list.len() > MAX_ERRORS {
        errors.push(GraphQLError::new(
            "Too many validation errors, error limit reached. Validation aborted.",
            code,
        ));
    }
    errors
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

/// What a selection set costs with its fragments expanded.
#[derive(Clone, Copy, Default)]
struct Cost {
    /// Fields nested along the deepest path.
    depth: usize,
    /// Selection sets (fields, inline fragments, spreads) along the deepest path.
    height: usize,
    /// Field selections.
    fields: usize,
    /// Aliased field selections.
    aliases: usize,
}

/// Measures operations against the depth, alias and field-count limits.
///
/// Each fragment is measured once and its cost reused wherever it is spread,
/// so the walk is linear in the document even when the expansion is
/// exponential; counts saturate, and the walk stops at the first limit
/// passed (every count only grows, so a partial count over a limit means the
/// whole is over it). A fragment cycle counts as nothing here: validation
/// reports it.
struct Meter<'a> {
    limits: &'a Limits,
    nesting_limit: usize,
    fragments: HashMap<&'a str, &'a [ast::Selection]>,
    /// `None` while the fragment is being measured.
    measured: HashMap<&'a str, Option<Cost>>,
}

impl<'a> Meter<'a> {
    /// The cost of a selection set that sits `level` sets below the operation.
    fn set(&mut self, set: &'a [ast::Selection], level: usize) -> Result<Cost, Vec<GraphQLError>> {
        if level > self.nesting_limit {
            return Err(too_deep(self.limits));
        }
        let mut total = Cost::default();
        for selection in set {
            let inner = match selection {
                ast::Selection::Field(f) => {
                    let sub = self.set(&f.selection_set, level.saturating_add(1))?;
                    Cost {
                        depth: sub.depth.saturating_add(1),
                        height: sub.height.saturating_add(1),
                        fields: sub.fields.saturating_add(1),
                        aliases: sub.aliases.saturating_add(usize::from(f.alias.is_some())),
                    }
                }
                ast::Selection::InlineFragment(i) => {
                    let sub = self.set(&i.selection_set, level.saturating_add(1))?;
                    Cost {
                        height: sub.height.saturating_add(1),
                        ..sub
                    }
                }
                ast::Selection::FragmentSpread(s) => {
                    self.fragment(s.fragment_name.as_str(), level)?
                }
            };
            total.depth = total.depth.max(inner.depth);
            total.height = total.height.max(inner.height);
            total.fields = total.fields.saturating_add(inner.fields);
            total.aliases = total.aliases.saturating_add(inner.aliases);
            self.check(&total)?;
        }
        Ok(total)
    }

    /// The cost of spreading fragment `name` in a set `level` sets deep.
    fn fragment(&mut self, name: &'a str, level: usize) -> Result<Cost, Vec<GraphQLError>> {
        let cost = match self.measured.get(name) {
            Some(Some(cost)) => *cost,
            Some(None) => return Ok(Cost::default()),
            None => {
                let Some(set) = self.fragments.get(name).copied() else {
                    // Validation reports the unknown fragment.
                    return Ok(Cost::default());
                };
                self.measured.insert(name, None);
                let sub = self.set(set, level.saturating_add(1))?;
                let cost = Cost {
                    height: sub.height.saturating_add(1),
                    ..sub
                };
                self.measured.insert(name, Some(cost));
                cost
            }
        };
        if level.saturating_add(cost.height) > self.nesting_limit {
            return Err(too_deep(self.limits));
        }
        Ok(cost)
    }

    fn check(&self, cost: &Cost) -> Result<(), Vec<GraphQLError>> {
        let over = |what: &str, max: usize| {
            Err(vec![GraphQLError::new(
                format!("The document's {what} exceeds the limit of {max} (fragments expanded)"),
                codes::LIMIT_EXCEEDED,
            )])
        };
        let limits = self.limits;
        if cost.depth > limits.max_depth {
            return over("depth", limits.max_depth);
        }
        if cost.aliases > limits.max_aliases {
            return over("alias count", limits.max_aliases);
        }
        if cost.fields > limits.max_fields {
            return over("field count", limits.max_fields);
        }
        Ok(())
    }
}

/// Depth, alias and field-count limits of every operation, fragments expanded.
fn check_limits(doc: &ast::Document, limits: &Limits) -> Result<(), Vec<GraphQLError>> {
    let mut fragments = HashMap::new();
    let mut operations = Vec::new();
    for definition in &doc.definitions {
        match definition {
            ast::Definition::OperationDefinition(op) => operations.push(&op.selection_set[..]),
            ast::Definition::FragmentDefinition(f) => {
                // A repeated name is a validation error; the first one is measured.
                fragments
                    .entry(f.name.as_str())
                    .or_insert(&f.selection_set[..]);
            }
            _ => {}
        }
    }
    let mut meter = Meter {
        limits,
        nesting_limit: nesting_limit(limits),
        fragments,
        measured: HashMap::new(),
    };
    for operation in operations {
        meter.set(operation, 0)?;
    }
    Ok(())
}
