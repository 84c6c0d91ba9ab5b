//! A subscribe request through `prepare`, with the default limits and with
//! tight ones. The input is `query \0 variables-json \0 operation-name`
//! (the last two optional).
//!
//! Checks: a document over `max_document_bytes` is refused; a document
//! that is accepted, measured again here with every fragment expanded
//! (stopping as soon as it exceeds a limit), respects depth, alias and
//! field limits; a refusal carries at least one error with a message.

#![no_main]

use apollo_compiler::executable::{ExecutableDocument, Selection, SelectionSet};
use fanwire_core::operation::prepare;
use fanwire_core::protocol::SubscribePayload;
use fanwire_core::{Limits, Schema};
use fanwire_fuzz::shared_schema;
use libfuzzer_sys::fuzz_target;
use serde_json::{Map, Value};

fuzz_target!(|data: &[u8]| {
    let Ok(text) = std::str::from_utf8(data) else {
        return;
    };
    let mut parts = text.splitn(3, '\0');
    let query = parts.next().unwrap_or_default();
    let variables = match parts.next().map(serde_json::from_str::<Value>) {
        Some(Ok(Value::Object(map))) => map,
        _ => Map::new(),
    };
    let operation_name = parts.next().map(str::to_owned);
    let request = SubscribePayload {
        query: query.to_owned(),
        operation_name,
        variables,
        extensions: Map::new(),
    };
    let tight = Limits {
        max_depth: 3,
        max_aliases: 2,
        max_fields: 12,
        max_document_bytes: 2048,
        ..Limits::default()
    };
    for limits in [Limits::default(), tight] {
        check(shared_schema(), &limits, &request);
    }
});

fn check(schema: &Schema, limits: &Limits, request: &SubscribePayload) {
    match prepare(schema, limits, request) {
        Ok(prepared) => {
            assert!(
                request.query.len() <= limits.max_document_bytes,
                "accepted a document of {} bytes",
                request.query.len()
            );
            assert!(!prepared.topic.is_empty() || prepared.field.is_empty());
            let doc = ExecutableDocument::parse_and_validate(
                schema.apollo(),
                &request.query,
                "q.graphql",
            )
            .expect("a prepared document is valid");
            for operation in doc.operations.iter() {
                let mut count = Count::default();
                let within = count.walk(&doc, &operation.selection_set, 0, limits);
                assert!(
                    within,
                    "accepted a document over the limits {limits:?}: {count:?}\n{}",
                    request.query
                );
            }
        }
        Err(errors) => {
            assert!(!errors.is_empty(), "a refusal without an error");
            for e in &errors {
                assert!(!e.message.is_empty(), "an error without a message");
            }
        }
    }
}

/// Depth, aliases and fields of a document with fragments expanded.
#[derive(Debug, Default)]
struct Count {
    depth: usize,
    aliases: usize,
    fields: usize,
}

impl Count {
    /// Walks `set` at `depth`; false as soon as a limit is exceeded (so the
    /// walk is bounded by the limits, whatever the fragments multiply to).
    fn walk(
        &mut self,
        doc: &ExecutableDocument,
        set: &SelectionSet,
        depth: usize,
        limits: &Limits,
    ) -> bool {
        for selection in &set.selections {
            let ok = match selection {
                Selection::Field(f) => {
                    self.fields += 1;
                    self.aliases += usize::from(f.alias.is_some());
                    self.depth = self.depth.max(depth + 1);
                    self.fields <= limits.max_fields
                        && self.aliases <= limits.max_aliases
                        && self.depth <= limits.max_depth
                        && self.walk(doc, &f.selection_set, depth + 1, limits)
                }
                Selection::InlineFragment(i) => self.walk(doc, &i.selection_set, depth, limits),
                Selection::FragmentSpread(s) => match doc.fragments.get(&s.fragment_name) {
                    Some(f) => self.walk(doc, &f.selection_set, depth, limits),
                    None => true,
                },
            };
            if !ok {
                return false;
            }
        }
        true
    }
}
