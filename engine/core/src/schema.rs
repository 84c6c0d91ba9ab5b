//! The schema: SDL, validated, with each subscription field bound to a topic.

use std::collections::HashMap;

use apollo_compiler::validation::Valid;
use serde_json::{Map, Value};

/// The directive every schema may use without declaring it.
const TOPIC_DIRECTIVE: &str = "directive @topic(name: String!) on FIELD_DEFINITION\n";

/// Why a schema was refused.
#[derive(Debug, thiserror::Error)]
pub enum SchemaError {
    /// The SDL does not parse or validate.
    #[error("invalid schema:\n{0}")]
    Invalid(String),
    /// There is no `Subscription` root type.
    #[error("the schema has no subscription root type")]
    NoSubscriptionType,
    /// A `@topic` template names something that is not an argument of its field.
    #[error(
        "Subscription.{field}: @topic(name: \"{template}\") uses {{{arg}}}, which is not an argument of the field"
    )]
    UnknownTopicArgument {
        /// The subscription field.
        field: String,
        /// The template as written.
        template: String,
        /// The unknown placeholder.
        arg: String,
    },
    /// A topic was bound to a field that the subscription type does not have.
    #[error("the subscription type has no field `{field}`")]
    UnknownField {
        /// The field asked for.
        field: String,
    },
    /// A `@topic` template has an unbalanced brace or an empty placeholder.
    #[error(
        "Subscription.{field}: @topic(name: \"{template}\") is not a valid template (use {{argName}} placeholders)"
    )]
    BadTopicTemplate {
        /// The subscription field.
        field: String,
        /// The template as written.
        template: String,
    },
}

#[derive(Debug, Clone, PartialEq, Eq)]
enum Part {
    Literal(String),
    Argument(String),
}

/// A topic name with `{argument}` placeholders, e.g. `orders:{tenantId}`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TopicTemplate {
    parts: Vec<Part>,
}

impl TopicTemplate {
    /// Parses a template; `None` when braces do not pair up.
    pub fn parse(template: &str) -> Option<TopicTemplate> {
        let mut parts = Vec::new();
        let mut rest = template;
        while let Some(open) = rest.find(['{', '}']) {
            if rest.as_bytes()[open] == b'}' {
                return None;
            }
            if open > 0 {
                parts.push(Part::Literal(rest[..open].to_owned()));
            }
            let after = &rest[open + 1..];
            let close = after.find('}')?;
            let name = &after[..close];
            if name.is_empty() || name.contains('{') {
                return None;
            }
            parts.push(Part::Argument(name.to_owned()));
            rest = &after[close + 1..];
        }
        if !rest.is_empty() {
            parts.push(Part::Literal(rest.to_owned()));
        }
        Some(TopicTemplate { parts })
    }

    /// The argument names the template uses.
    pub fn arguments(&self) -> impl Iterator<Item = &str> {
        self.parts.iter().filter_map(|p| match p {
            Part::Argument(a) => Some(a.as_str()),
            Part::Literal(_) => None,
        })
    }

    /// Fills the placeholders from coerced argument values.
    pub fn render(&self, args: &Map<String, Value>) -> Result<String, String> {
        let mut out = String::new();
        for part in &self.parts {
            match part {
                Part::Literal(s) => out.push_str(s),
                Part::Argument(name) => match args.get(name) {
                    Some(Value::String(s)) => out.push_str(s),
                    Some(v @ (Value::Number(_) | Value::Bool(_))) => out.push_str(&v.to_string()),
                    _ => {
                        return Err(format!(
                            "argument \"{name}\" is needed to name the topic but has no value"
                        ))
                    }
                },
            }
        }
        Ok(out)
    }
}

/// A validated schema and the topic of every subscription field.
#[derive(Debug)]
pub struct Schema {
    inner: Valid<apollo_compiler::Schema>,
    subscription_type: String,
    topics: HashMap<String, TopicTemplate>,
}

impl Schema {
    /// Parses and validates SDL. Fields without `@topic` use their own name as topic.
    pub fn parse(sdl: &str) -> Result<Schema, SchemaError> {
        let declares_topic = apollo_compiler::ast::Document::parse(sdl, "schema.graphql")
            .map(|doc| {
                doc.definitions.iter().any(
                    |d| matches!(d, apollo_compiler::ast::Definition::DirectiveDefinition(def) if def.name == "topic"),
                )
            })
            .unwrap_or(false);
        let build = |extra: Option<&str>| {
            let mut builder = apollo_compiler::Schema::builder().parse(sdl, "schema.graphql");
            if !declares_topic {
                builder = builder.parse(TOPIC_DIRECTIVE, "fanwire-builtins.graphql");
            }
            if let Some(extra) = extra {
                builder = builder.parse(extra, "fanwire-query-root.graphql");
            }
            builder
                .build()
                .map_err(|e| SchemaError::Invalid(e.errors.to_string()))
        };
        let mut unvalidated = build(None)?;
        if unvalidated.schema_definition.query.is_none() {
            unvalidated = build(Some(hidden_query_root(&unvalidated).as_str()))?;
        }
        let inner = unvalidated
            .validate()
            .map_err(|e| SchemaError::Invalid(e.errors.to_string()))?;
        let subscription_type = inner
            .root_operation(apollo_compiler::ast::OperationType::Subscription)
            .ok_or(SchemaError::NoSubscriptionType)?
            .to_string();
        let object = inner
            .get_object(&subscription_type)
            .ok_or(SchemaError::NoSubscriptionType)?;
        let mut topics = HashMap::new();
        for (name, field) in &object.fields {
            let template_text = field
                .directives
                .get("topic")
                .and_then(|d| d.specified_argument_by_name("name"))
                .and_then(|v| v.as_str())
                .unwrap_or(name.as_str());
            topics.insert(name.to_string(), topic_template(field, template_text)?);
        }
        Ok(Schema {
            inner,
            subscription_type,
            topics,
        })
    }

    /// Binds a subscription field to a topic template, replacing what `@topic`
    /// (or the field's name) said; hosts that declare topics in code use this.
    pub fn bind_topic(&mut self, field: &str, template: &str) -> Result<(), SchemaError> {
        let definition = self
            .inner
            .get_object(&self.subscription_type)
            .and_then(|object| object.fields.get(field))
            .ok_or_else(|| SchemaError::UnknownField {
                field: field.to_owned(),
            })?;
        let bound = topic_template(definition, template)?;
        self.topics.insert(field.to_owned(), bound);
        Ok(())
    }

    /// The validated apollo-compiler schema.
    pub fn apollo(&self) -> &Valid<apollo_compiler::Schema> {
        &self.inner
    }

    /// The name of the subscription root type.
    pub fn subscription_type(&self) -> &str {
        &self.subscription_type
    }

    /// The topic template of a subscription field.
    pub fn topic(&self, field: &str) -> Option<&TopicTemplate> {
        self.topics.get(field)
    }

    /// Names of every subscription field.
    pub fn subscription_fields(&self) -> impl Iterator<Item = &str> {
        self.topics.keys().map(String::as_str)
    }
}

/// SDL for a query root, for a schema that declares only subscriptions:
/// GraphQL requires one, Fanwire never serves it, and users should not have
/// to write one. It is `Query` when that name is free (the implicit root);
/// otherwise a free name added to the schema definition.
fn hidden_query_root(schema: &apollo_compiler::Schema) -> String {
    const FIELD: &str = "\"Fanwire serves subscriptions only.\" _fanwire: Boolean";
    let explicit = schema.schema_definition.location().is_some();
    if !explicit && !schema.types.contains_key("Query") {
        return format!("type Query {{ {FIELD} }}\n");
    }
    let mut name = String::from("FanwireQuery");
    while schema.types.contains_key(name.as_str()) {
        name.push('_');
    }
    format!("extend schema {{ query: {name} }}\ntype {name} {{ {FIELD} }}\n")
}

/// Parses `template` and checks that its placeholders are arguments of `field`.
fn topic_template(
    field: &apollo_compiler::schema::FieldDefinition,
    template: &str,
) -> Result<TopicTemplate, SchemaError> {
    let parsed = TopicTemplate::parse(template).ok_or_else(|| SchemaError::BadTopicTemplate {
        field: field.name.to_string(),
        template: template.to_owned(),
    })?;
    if let Some(arg) = parsed
        .arguments()
        .find(|a| !field.arguments.iter().any(|d| d.name == *a))
    {
        return Err(SchemaError::UnknownTopicArgument {
            field: field.name.to_string(),
            template: template.to_owned(),
            arg: arg.to_owned(),
        });
    }
    Ok(parsed)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn templates_parse_and_render() {
        let t = TopicTemplate::parse("orders:{tenantId}:{kind}").unwrap();
        let args = serde_json::json!({"tenantId": 5, "kind": "new"});
        assert_eq!(t.render(args.as_object().unwrap()).unwrap(), "orders:5:new");
        assert!(TopicTemplate::parse("a{b").is_none());
        assert!(TopicTemplate::parse("a}b").is_none());
        assert!(TopicTemplate::parse("a{}b").is_none());
        assert!(t.render(&Map::new()).is_err());
    }

    #[test]
    fn topic_directive_is_predeclared_or_accepted_when_declared() {
        let sdl = "type Query { a: Int } type Subscription { tick(topic: String!): Int @topic(name: \"{topic}\") plain: Int }";
        let schema = Schema::parse(sdl).unwrap();
        assert_eq!(
            schema.topic("plain"),
            TopicTemplate::parse("plain").as_ref()
        );
        let declared = format!("{TOPIC_DIRECTIVE}{sdl}");
        assert!(Schema::parse(&declared).is_ok());
    }

    #[test]
    fn bad_schemas_are_refused_with_a_reason() {
        assert!(matches!(
            Schema::parse("type Query { a: Int }"),
            Err(SchemaError::NoSubscriptionType)
        ));
        assert!(matches!(
            Schema::parse("type Query { a: Int"),
            Err(SchemaError::Invalid(_))
        ));
        let unknown = "type Query { a: Int } type Subscription { t: Int @topic(name: \"x:{id}\") }";
        assert!(matches!(
            Schema::parse(unknown),
            Err(SchemaError::UnknownTopicArgument { .. })
        ));
    }

    #[test]
    fn topics_bound_in_code_replace_the_directive_and_are_checked() {
        let sdl = "type Query { a: Int } type Subscription { t(id: ID!): Int @topic(name: \"old:{id}\") }";
        let mut schema = Schema::parse(sdl).unwrap();
        schema.bind_topic("t", "new:{id}").unwrap();
        assert_eq!(schema.topic("t"), TopicTemplate::parse("new:{id}").as_ref());
        assert!(matches!(
            schema.bind_topic("t", "x:{nope}"),
            Err(SchemaError::UnknownTopicArgument { .. })
        ));
        assert!(matches!(
            schema.bind_topic("t", "x:{"),
            Err(SchemaError::BadTopicTemplate { .. })
        ));
        assert!(matches!(
            schema.bind_topic("missing", "x"),
            Err(SchemaError::UnknownField { .. })
        ));
        assert_eq!(schema.topic("t"), TopicTemplate::parse("new:{id}").as_ref());
    }
}
