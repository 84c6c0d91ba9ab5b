//! Projection of an event payload through a selection set.
//!
//! A [`Plan`] is built once per subscription group (fragments flattened,
//! `@skip`/`@include` decided by the coerced variables, every response key
//! pre-serialised), then run once per event straight into JSON bytes. A
//! null in a non-null position bubbles up by truncating what was written.

use std::borrow::Cow;
use std::collections::HashSet;
use std::fmt;

use apollo_compiler::ast::{DirectiveList, Type, Value as AstValue};
use apollo_compiler::executable::{ExecutableDocument, Field, Selection, SelectionSet};
use apollo_compiler::schema::ExtendedType;
use apollo_compiler::validation::Valid;
use serde_json::{Map, Value};

use crate::error::{codes, GraphQLError, PathSegment};
use crate::json::{JsonText, Members, Raw};

#[derive(Debug, Clone, PartialEq)]
enum Shape {
    Named { non_null: bool },
    List { non_null: bool, item: Box<Shape> },
}

impl Shape {
    fn of(ty: &Type) -> Shape {
        match ty {
            Type::Named(_) => Shape::Named { non_null: false },
            Type::NonNullNamed(_) => Shape::Named { non_null: true },
            Type::List(inner) => Shape::List {
                non_null: false,
                item: Box::new(Shape::of(inner)),
            },
            Type::NonNullList(inner) => Shape::List {
                non_null: true,
                item: Box::new(Shape::of(inner)),
            },
        }
    }

    fn non_null(&self) -> bool {
        match self {
            Shape::Named { non_null } | Shape::List { non_null, .. } => *non_null,
        }
    }
}

#[derive(Debug, Clone, PartialEq)]
enum Leaf {
    Int,
    Float,
    String,
    Boolean,
    Id,
    Enum(String, Vec<String>),
    Custom,
}

#[derive(Debug, Clone, PartialEq)]
enum Kind {
    Typename,
    Leaf(Leaf),
    Object(Vec<PlanField>),
    /// An interface or union: the fields to write for each possible object
    /// type, chosen at run time by the payload's `__typename`.
    Abstract(String, Vec<(String, Vec<PlanField>)>),
}

#[derive(Debug, Clone, PartialEq)]
struct PlanField {
    key: String,
    /// `"key":`, ready to copy into the output.
    key_json: Vec<u8>,
    source: String,
    parent_type: String,
    shape: Shape,
    kind: Kind,
}

/// A compiled selection set for one subscription group.
#[derive(Debug, Clone, PartialEq)]
pub struct Plan {
    root_type: String,
    fields: Vec<PlanField>,
}

impl Plan {
    /// Compiles the operation's selection set. `variables` must be coerced.
    pub(crate) fn build(
        schema: &Valid<apollo_compiler::Schema>,
        doc: &ExecutableDocument,
        root_type: &str,
        selection_set: &SelectionSet,
        variables: &Map<String, Value>,
    ) -> Plan {
        let builder = Builder {
            schema,
            doc,
            variables,
            implementers: schema.implementers_map(),
        };
        Plan {
            root_type: root_type.to_owned(),
            fields: builder.fields(root_type, &[selection_set]),
        }
    }

    /// Field paths the selection reads, by field name (not alias), e.g.
    /// `orderCreated.customer.email`; what RBAC and redaction filters check.
    pub fn selected_paths(&self) -> Vec<String> {
        fn walk(fields: &[PlanField], prefix: &str, out: &mut Vec<String>) {
            for field in fields {
                let path = if prefix.is_empty() {
                    field.source.clone()
                } else {
                    format!("{prefix}.{}", field.source)
                };
                match &field.kind {
                    Kind::Typename => continue,
                    Kind::Leaf(_) => {}
                    Kind::Object(inner) => walk(inner, &path, out),
                    Kind::Abstract(_, by_type) => by_type
                        .iter()
                        .for_each(|(_, inner)| walk(inner, &path, out)),
                }
                if !out.contains(&path) {
                    out.push(path);
                }
            }
        }
        let mut out = Vec::new();
        walk(&self.fields, "", &mut out);
        out
    }

    /// The result when the root field could not be computed (a resolver
    /// failed): the field is null (or `data` is, when it is non-null) and
    /// the error carries the field's path.
    pub fn execute_field_error(&self, error: &GraphQLError, extensions: &[u8]) -> Vec<u8> {
        let mut error = error.clone();
        let mut out = b"{\"data\":".to_vec();
        match self.fields.iter().find(|f| f.kind != Kind::Typename) {
            Some(root) if !root.shape.non_null() => {
                error.path = vec![PathSegment::Key(root.key.clone())];
                out.push(b'{');
                out.extend_from_slice(&root.key_json);
                out.extend_from_slice(b"null}");
            }
            Some(root) => {
                error.path = vec![PathSegment::Key(root.key.clone())];
                out.extend_from_slice(b"null");
            }
            None => out.extend_from_slice(b"null"),
        }
        out.extend_from_slice(b",\"errors\":");
        serde_json::to_writer(&mut out, &[error]).unwrap_or_default();
        out.extend_from_slice(extensions);
        out.push(b'}');
        out
    }

    /// A stable text that is equal for plans that project identically.
    pub fn fingerprint(&self) -> String {
        format!("{:?}", self.fields)
    }

    /// Runs the plan on the root field's value and returns the serialised
    /// execution result, `{"data":…}` plus `"errors"` when there are any.
    pub fn execute(&self, root_value: &Value) -> Vec<u8> {
        self.execute_event(root_value, &[])
    }

    /// Like [`Plan::execute`], followed by the event's `extensions` member
    /// (see [`event_extensions`]).
    pub fn execute_event(&self, root_value: &Value, extensions: &[u8]) -> Vec<u8> {
        self.run(root_value, extensions)
    }

    /// Like [`Plan::execute_event`] on a resolver's answer as text, read in
    /// place: the result is the one its parsed value would give.
    pub fn execute_text(&self, root_value: &JsonText, extensions: &[u8]) -> Vec<u8> {
        self.run(root_value.root(), extensions)
    }

    fn run<'v, N: Node<'v>>(&self, root_value: N, extensions: &[u8]) -> Vec<u8> {
        let mut exec = Exec {
            out: Vec::with_capacity(256),
            errors: Vec::new(),
            path: Vec::new(),
        };
        exec.out.extend_from_slice(b"{\"data\":");
        let start = exec.out.len();
        if exec.root(self, root_value).is_err() {
            exec.out.truncate(start);
            exec.out.extend_from_slice(b"null");
        }
        if !exec.errors.is_empty() {
            exec.out.extend_from_slice(b",\"errors\":");
            // Serialising plain structs into a Vec cannot fail.
            serde_json::to_writer(&mut exec.out, &exec.errors).unwrap_or_default();
        }
        exec.out.extend_from_slice(extensions);
        exec.out.push(b'}');
        exec.out
    }
}

/// The `"extensions"` member of an event's results, with its leading comma:
/// `seq`, its place in the topic's history (to resume from), and `id` (to
/// drop a repeat), each when the event has one; empty when it has neither.
pub fn event_extensions(seq: Option<u64>, id: Option<&str>) -> Vec<u8> {
    if seq.is_none() && id.is_none() {
        return Vec::new();
    }
    let mut out = b",\"extensions\":{".to_vec();
    if let Some(seq) = seq {
        out.extend_from_slice(b"\"seq\":");
        out.extend_from_slice(seq.to_string().as_bytes());
    }
    if let Some(id) = id {
        if seq.is_some() {
            out.push(b',');
        }
        out.extend_from_slice(b"\"id\":");
        // Writing a string into a Vec cannot fail.
        serde_json::to_writer(&mut out, id).unwrap_or_default();
    }
    out.push(b'}');
    out
}

struct Builder<'a> {
    schema: &'a Valid<apollo_compiler::Schema>,
    doc: &'a ExecutableDocument,
    variables: &'a Map<String, Value>,
    implementers: apollo_compiler::collections::HashMap<
        apollo_compiler::Name,
        apollo_compiler::schema::Implementers,
    >,
}

impl<'a> Builder<'a> {
    fn fields(&self, type_name: &str, sets: &[&'a SelectionSet]) -> Vec<PlanField> {
        let mut grouped: Vec<(String, Vec<&'a Field>)> = Vec::new();
        let mut visited = HashSet::new();
        for set in sets {
            self.collect(type_name, set, &mut grouped, &mut visited);
        }
        grouped
            .into_iter()
            .map(|(key, fields)| self.field(type_name, key, &fields))
            .collect()
    }

    fn collect(
        &self,
        type_name: &str,
        set: &'a SelectionSet,
        out: &mut Vec<(String, Vec<&'a Field>)>,
        visited: &mut HashSet<&'a str>,
    ) {
        for selection in &set.selections {
            match selection {
                Selection::Field(field) => {
                    if !self.included(&field.directives) {
                        continue;
                    }
                    let key = field.response_key().as_str();
                    match out.iter_mut().find(|(k, _)| k == key) {
                        Some((_, fields)) => fields.push(field),
                        None => out.push((key.to_owned(), vec![field])),
                    }
                }
                Selection::FragmentSpread(spread) => {
                    if !self.included(&spread.directives)
                        || !visited.insert(spread.fragment_name.as_str())
                    {
                        continue;
                    }
                    if let Some(fragment) = self.doc.fragments.get(&spread.fragment_name) {
                        if self.applies(fragment.type_condition().as_str(), type_name) {
                            self.collect(type_name, &fragment.selection_set, out, visited);
                        }
                    }
                }
                Selection::InlineFragment(inline) => {
                    let applies = inline
                        .type_condition
                        .as_ref()
                        .is_none_or(|tc| self.applies(tc.as_str(), type_name));
                    if self.included(&inline.directives) && applies {
                        self.collect(type_name, &inline.selection_set, out, visited);
                    }
                }
            }
        }
    }

    fn field(&self, parent_type: &str, key: String, fields: &[&'a Field]) -> PlanField {
        let first = fields[0];
        let mut key_json = Vec::with_capacity(key.len() + 3);
        serde_json::to_writer(&mut key_json, &key).unwrap_or_default();
        key_json.push(b':');
        let (shape, kind) = if first.name == "__typename" {
            (Shape::Named { non_null: true }, Kind::Typename)
        } else {
            let ty = &first.definition.ty;
            let named = ty.inner_named_type().as_str();
            let sub_sets: Vec<&'a SelectionSet> = fields.iter().map(|f| &f.selection_set).collect();
            let kind = match self.schema.types.get(named) {
                Some(ExtendedType::Object(_)) => Kind::Object(self.fields(named, &sub_sets)),
                Some(ExtendedType::Interface(_)) | Some(ExtendedType::Union(_)) => Kind::Abstract(
                    named.to_owned(),
                    self.possible_types(named)
                        .into_iter()
                        .map(|object| {
                            let fields = self.fields(&object, &sub_sets);
                            (object, fields)
                        })
                        .collect(),
                ),
                Some(ExtendedType::Enum(e)) => Kind::Leaf(Leaf::Enum(
                    named.to_owned(),
                    e.values.keys().map(|v| v.to_string()).collect(),
                )),
                _ => Kind::Leaf(match named {
                    "Int" => Leaf::Int,
                    "Float" => Leaf::Float,
                    "String" => Leaf::String,
                    "Boolean" => Leaf::Boolean,
                    "ID" => Leaf::Id,
                    _ => Leaf::Custom,
                }),
            };
            (Shape::of(ty), kind)
        };
        PlanField {
            key,
            key_json,
            source: first.name.to_string(),
            parent_type: parent_type.to_owned(),
            shape,
            kind,
        }
    }

    fn possible_types(&self, abstract_type: &str) -> Vec<String> {
        match self.schema.types.get(abstract_type) {
            Some(ExtendedType::Union(u)) => u.members.iter().map(|m| m.to_string()).collect(),
            _ => self
                .implementers
                .get(abstract_type)
                .map(|i| i.objects.iter().map(|o| o.to_string()).collect())
                .unwrap_or_default(),
        }
    }

    fn applies(&self, condition: &str, type_name: &str) -> bool {
        condition == type_name || self.schema.is_subtype(condition, type_name)
    }

    fn included(&self, directives: &DirectiveList) -> bool {
        let flag = |name: &str| {
            directives
                .get(name)
                .and_then(|d| d.specified_argument_by_name("if"))
                .map(|v| match v.as_ref() {
                    AstValue::Boolean(b) => *b,
                    AstValue::Variable(var) => self
                        .variables
                        .get(var.as_str())
                        .and_then(Value::as_bool)
                        .unwrap_or(false),
                    _ => false,
                })
        };
        flag("skip") != Some(true) && flag("include") != Some(false)
    }
}

/// A JSON value the projector reads: a parsed [`Value`], or a resolver's
/// answer still as text ([`Raw`]), read in place.
trait Node<'v>: Copy + fmt::Display {
    /// An object's members, looked up by name.
    type Members;
    type Items: Iterator<Item = Self>;

    fn is_null(self) -> bool;
    fn items(self) -> Option<Self::Items>;
    fn members(self) -> Option<Self::Members>;
    fn member(members: &Self::Members, name: &str) -> Option<Self>;
    fn as_str(self) -> Option<Cow<'v, str>>;
    /// `f` of the value parsed, for the leaves read the general way; of
    /// `None` when it is JSON that a [`Value`] cannot hold.
    fn with_value<R>(self, f: impl FnOnce(Option<&Value>) -> R) -> R;
    /// Writes `leaf` straight from the value's own text where that text is
    /// already what the result must hold; `false` to take the general way.
    fn write_leaf(self, leaf: &Leaf, out: &mut Vec<u8>) -> bool;
}

impl<'v> Node<'v> for &'v Value {
    type Members = &'v Map<String, Value>;
    type Items = std::slice::Iter<'v, Value>;

    fn is_null(self) -> bool {
        Value::is_null(self)
    }

    fn items(self) -> Option<Self::Items> {
        self.as_array().map(|items| items.iter())
    }

    fn members(self) -> Option<Self::Members> {
        self.as_object()
    }

    fn member(members: &Self::Members, name: &str) -> Option<Self> {
        members.get(name)
    }

    fn as_str(self) -> Option<Cow<'v, str>> {
        Value::as_str(self).map(Cow::Borrowed)
    }

    fn with_value<R>(self, f: impl FnOnce(Option<&Value>) -> R) -> R {
        f(Some(self))
    }

    fn write_leaf(self, _: &Leaf, _: &mut Vec<u8>) -> bool {
        false
    }
}

impl<'v> Node<'v> for Raw<'v> {
    type Members = Members<'v>;
    type Items = std::vec::IntoIter<Raw<'v>>;

    fn is_null(self) -> bool {
        Raw::is_null(self)
    }

    fn items(self) -> Option<Self::Items> {
        Raw::items(self).map(Vec::into_iter)
    }

    fn members(self) -> Option<Self::Members> {
        Raw::members(self)
    }

    fn member(members: &Self::Members, name: &str) -> Option<Self> {
        members.get(name)
    }

    fn as_str(self) -> Option<Cow<'v, str>> {
        Raw::as_str(self)
    }

    fn with_value<R>(self, f: impl FnOnce(Option<&Value>) -> R) -> R {
        f(self.to_value().as_ref())
    }

    fn write_leaf(self, leaf: &Leaf, out: &mut Vec<u8>) -> bool {
        let text = match leaf {
            Leaf::String | Leaf::Id => self.plain_string().map(|_| self.text),
            Leaf::Enum(_, values) => self
                .plain_string()
                .filter(|s| values.iter().any(|v| v == s))
                .map(|_| self.text),
            Leaf::Boolean => matches!(self.text, "true" | "false").then_some(self.text),
            Leaf::Float => self.plain_number(),
            Leaf::Int => self
                .plain_integer()
                .filter(|i| i32::try_from(*i).is_ok())
                // JSON has no leading zeros, so an integer's text is how a
                // parsed value writes it, but for `-0`.
                .map(|_| if self.text == "-0" { "0" } else { self.text }),
            Leaf::Custom => None,
        };
        text.map(|t| out.extend_from_slice(t.as_bytes())).is_some()
    }
}

/// Why a value came out null: a plain null, or a field error already reported.
#[derive(Clone, Copy, PartialEq, Eq)]
enum Null {
    Plain,
    Reported,
}

#[derive(Clone, Copy)]
enum Step<'a> {
    Key(&'a str),
    Index(usize),
}

struct Exec<'a> {
    out: Vec<u8>,
    errors: Vec<GraphQLError>,
    path: Vec<Step<'a>>,
}

impl<'a> Exec<'a> {
    fn root<'v, N: Node<'v>>(&mut self, plan: &'a Plan, root_value: N) -> Result<(), ()> {
        self.out.push(b'{');
        for (i, field) in plan.fields.iter().enumerate() {
            if i > 0 {
                self.out.push(b',');
            }
            self.out.extend_from_slice(&field.key_json);
            match field.kind {
                Kind::Typename => self.string(&plan.root_type),
                // The single root field's value is the event's data.
                _ => self.field(field, Some(root_value))?,
            }
        }
        self.out.push(b'}');
        Ok(())
    }

    /// Writes one field; `Err` means the parent must become null.
    fn field<'v, N: Node<'v>>(&mut self, field: &'a PlanField, value: Option<N>) -> Result<(), ()> {
        self.path.push(Step::Key(&field.key));
        let start = self.out.len();
        let result = match self.value(field, &field.shape, value) {
            Ok(()) => Ok(()),
            Err(reason) => {
                self.out.truncate(start);
                if field.shape.non_null() {
                    if reason == Null::Plain {
                        self.error(format!(
                            "Cannot return null for non-nullable field {}.{}.",
                            field.parent_type, field.source
                        ));
                    }
                    Err(())
                } else {
                    self.out.extend_from_slice(b"null");
                    Ok(())
                }
            }
        };
        self.path.pop();
        result
    }

    fn value<'v, N: Node<'v>>(
        &mut self,
        field: &'a PlanField,
        shape: &'a Shape,
        value: Option<N>,
    ) -> Result<(), Null> {
        let value = match value {
            Some(v) if !v.is_null() => v,
            _ => return Err(Null::Plain),
        };
        match shape {
            Shape::List { item, .. } => {
                let Some(items) = value.items() else {
                    return Err(self.error(format!(
                        "Expected a list for field {}.{}, got: {value}",
                        field.parent_type, field.source
                    )));
                };
                self.out.push(b'[');
                for (i, element) in items.enumerate() {
                    if i > 0 {
                        self.out.push(b',');
                    }
                    self.path.push(Step::Index(i));
                    let start = self.out.len();
                    if let Err(reason) = self.value(field, item, Some(element)) {
                        self.out.truncate(start);
                        if item.non_null() {
                            if reason == Null::Plain {
                                self.error(format!(
                                    "Cannot return null for non-nullable list item of {}.{}.",
                                    field.parent_type, field.source
                                ));
                            }
                            self.path.pop();
                            return Err(Null::Reported);
                        }
                        self.out.extend_from_slice(b"null");
                    }
                    self.path.pop();
                }
                self.out.push(b']');
                Ok(())
            }
            Shape::Named { .. } => match &field.kind {
                Kind::Typename => {
                    self.string(&field.parent_type);
                    Ok(())
                }
                Kind::Leaf(leaf) => self.leaf(leaf, value),
                Kind::Object(fields) => self.object(fields, value),
                Kind::Abstract(name, by_type) => {
                    let runtime = value
                        .members()
                        .and_then(|m| N::member(&m, "__typename"))
                        .and_then(N::as_str);
                    let chosen = match runtime {
                        Some(t) => by_type.iter().find(|(n, _)| *n == t),
                        None if by_type.len() == 1 => by_type.first(),
                        None => None,
                    };
                    match chosen {
                        Some((_, fields)) => self.object(fields, value),
                        None => Err(self.error(format!(
                            "Abstract type \"{name}\" must resolve to an object type at runtime: the event needs a valid \"__typename\""
                        ))),
                    }
                }
            },
        }
    }

    fn object<'v, N: Node<'v>>(&mut self, fields: &'a [PlanField], value: N) -> Result<(), Null> {
        let Some(members) = value.members() else {
            return Err(self.error(format!("Expected an object, got: {value}")));
        };
        self.out.push(b'{');
        for (i, field) in fields.iter().enumerate() {
            if i > 0 {
                self.out.push(b',');
            }
            self.out.extend_from_slice(&field.key_json);
            if field.kind == Kind::Typename {
                self.string(&field.parent_type);
            } else if self
                .field(field, N::member(&members, &field.source))
                .is_err()
            {
                return Err(Null::Reported);
            }
        }
        self.out.push(b'}');
        Ok(())
    }

    fn leaf<'v, N: Node<'v>>(&mut self, leaf: &Leaf, value: N) -> Result<(), Null> {
        if value.write_leaf(leaf, &mut self.out) {
            return Ok(());
        }
        value.with_value(|parsed| match parsed {
            Some(parsed) => self.leaf_value(leaf, parsed),
            None => Err(self.cannot_represent(leaf, value)),
        })
    }

    fn leaf_value(&mut self, leaf: &Leaf, value: &Value) -> Result<(), Null> {
        let ok = match (leaf, value) {
            (Leaf::Int, Value::Number(n)) => {
                let int = n
                    .as_i64()
                    .or_else(|| n.as_f64().filter(|f| f.fract() == 0.0).map(|f| f as i64));
                match int.filter(|i| i32::try_from(*i).is_ok()) {
                    Some(i) => {
                        self.out.extend_from_slice(i.to_string().as_bytes());
                        return Ok(());
                    }
                    None => false,
                }
            }
            (Leaf::Float, Value::Number(_))
            | (Leaf::String | Leaf::Id, Value::String(_))
            | (Leaf::Boolean, Value::Bool(_))
            | (Leaf::Custom, _) => true,
            (Leaf::String, Value::Number(_) | Value::Bool(_)) | (Leaf::Id, Value::Number(_)) => {
                let text = value.to_string();
                if matches!(leaf, Leaf::Id) && text.contains(['.', 'e', 'E']) {
                    false
                } else {
                    self.string(&text);
                    return Ok(());
                }
            }
            (Leaf::Enum(_, values), Value::String(s)) => values.iter().any(|v| v == s),
            _ => false,
        };
        if ok {
            serde_json::to_writer(&mut self.out, value).unwrap_or_default();
            return Ok(());
        }
        Err(self.cannot_represent(leaf, value))
    }

    fn cannot_represent(&mut self, leaf: &Leaf, value: impl fmt::Display) -> Null {
        let type_name = match leaf {
            Leaf::Int => "Int",
            Leaf::Float => "Float",
            Leaf::String => "String",
            Leaf::Boolean => "Boolean",
            Leaf::Id => "ID",
            Leaf::Enum(name, _) => name,
            Leaf::Custom => "scalar",
        };
        self.error(format!("{type_name} cannot represent value: {value}"))
    }

    fn string(&mut self, s: &str) {
        serde_json::to_writer(&mut self.out, s).unwrap_or_default();
    }

    fn error(&mut self, message: String) -> Null {
        let path = self
            .path
            .iter()
            .map(|s| match s {
                Step::Key(k) => PathSegment::Key((*k).to_owned()),
                Step::Index(i) => PathSegment::Index(*i),
            })
            .collect();
        self.errors
            .push(GraphQLError::new(message, codes::FIELD_ERROR).at_path(path));
        Null::Reported
    }
}
