//! The GraphQL error shape that every layer reports to clients.

use serde::{Deserialize, Serialize};
use serde_json::{Map, Value};

/// A location in the client's document, 1-based like the GraphQL spec.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct Location {
    /// Line, from 1.
    pub line: usize,
    /// Column in characters, from 1.
    pub column: usize,
}

/// One step of a response path: an object key or a list index.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(untagged)]
pub enum PathSegment {
    /// A response key (alias or field name).
    Key(String),
    /// A list index.
    Index(usize),
}

/// A GraphQL error as the spec shapes it: message, locations, path, extensions.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct GraphQLError {
    /// What went wrong, for a person.
    pub message: String,
    /// Where in the document, if anywhere.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub locations: Vec<Location>,
    /// Where in the response, for field errors.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub path: Vec<PathSegment>,
    /// Machine-readable details; `code` names the class of error.
    #[serde(default, skip_serializing_if = "Map::is_empty")]
    pub extensions: Map<String, Value>,
}

impl GraphQLError {
    /// An error with a message and an `extensions.code`.
    pub fn new(message: impl Into<String>, code: &str) -> Self {
        let mut extensions = Map::new();
        extensions.insert("code".into(), Value::String(code.into()));
        GraphQLError {
            message: message.into(),
            locations: Vec::new(),
            path: Vec::new(),
            extensions,
        }
    }

    /// The same error with a response path.
    pub fn at_path(mut self, path: Vec<PathSegment>) -> Self {
        self.path = path;
        self
    }

    /// The `extensions.code`, if any.
    pub fn code(&self) -> Option<&str> {
        self.extensions.get("code").and_then(Value::as_str)
    }

    pub(crate) fn from_apollo(err: apollo_compiler::response::GraphQLError, code: &str) -> Self {
        let mut out = GraphQLError::new(err.message, code);
        out.locations = err
            .locations
            .into_iter()
            .map(|l| Location {
                line: l.line,
                column: l.column,
            })
            .collect();
        out
    }
}

/// Codes in `extensions.code`, one vocabulary for every layer.
pub mod codes {
    /// The document does not parse.
    pub const PARSE_FAILED: &str = "GRAPHQL_PARSE_FAILED";
    /// The document does not validate against the schema.
    pub const VALIDATION_FAILED: &str = "GRAPHQL_VALIDATION_FAILED";
    /// Variables do not coerce to the operation's types.
    pub const BAD_USER_INPUT: &str = "BAD_USER_INPUT";
    /// A size, depth, alias or field-count limit was exceeded.
    pub const LIMIT_EXCEEDED: &str = "LIMIT_EXCEEDED";
    /// The operation is not a subscription this server can serve.
    pub const OPERATION_NOT_SUPPORTED: &str = "OPERATION_NOT_SUPPORTED";
    /// Too many subscribes in too short a time, or too many subscriptions.
    pub const RATE_LIMITED: &str = "RATE_LIMITED";
    /// `resumeFrom` was asked of a server that keeps no history.
    pub const RESUME_UNAVAILABLE: &str = "RESUME_UNAVAILABLE";
    /// `resumeFrom` is older than the history window: the client must resync.
    pub const RESUME_WINDOW_EXCEEDED: &str = "RESUME_WINDOW_EXCEEDED";
    /// A policy or filter refused the subscription.
    pub const FORBIDDEN: &str = "FORBIDDEN";
    /// A resolver raised, returned the wrong type or timed out.
    pub const RESOLVER_FAILED: &str = "RESOLVER_FAILED";
    /// A field value did not match its declared type, or a non-null was null.
    pub const FIELD_ERROR: &str = "FIELD_ERROR";
}
