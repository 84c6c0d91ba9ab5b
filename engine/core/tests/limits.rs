//! Hostile documents against the document limits (fragment doubling, cycles,
//! deep nesting, alias bombs, token-dense text) and the schemas users write
//! first: subscription-only ones and every snippet in the documentation.

use fanwire_core::error::{codes, GraphQLError};
use fanwire_core::operation::{prepare, Prepared, MAX_ERRORS};
use fanwire_core::protocol::SubscribePayload;
use fanwire_core::schema::SchemaError;
use fanwire_core::{Limits, Schema};
use serde_json::Map;

/// Subscription-only, as the README's snippet is: no `Query` type.
const SDL: &str = r#"
type Subscription {
  ticks: Tick @topic(name: "ticks")
}
type Tick { payload: String seq: Int next: Tick }
"#;

fn prep(limits: &Limits, query: &str) -> Result<Prepared, Vec<GraphQLError>> {
    let schema = Schema::parse(SDL).expect("a subscription-only schema is accepted");
    let request = SubscribePayload {
        query: query.to_owned(),
        operation_name: None,
        variables: Map::new(),
        extensions: Map::new(),
    };
    prepare(&schema, limits, &request)
}

/// The single error a refused document gets.
fn refused(limits: &Limits, query: &str) -> GraphQLError {
    match prep(limits, query) {
        Ok(p) => panic!("accepted: {p:?}"),
        Err(mut errors) => {
            assert_eq!(errors.len(), 1, "{errors:?}");
            errors.remove(0)
        }
    }
}

/// Limits that let through documents of up to `bytes`.
fn big(bytes: usize) -> Limits {
    Limits {
        max_document_bytes: bytes,
        max_message_bytes: bytes,
        ..Limits::default()
    }
}

/// `levels` fragments, each spreading the next twice, over 1,900 aliases:
/// 1,900 x 2^levels fields once expanded, in about 28 KB.
fn doubling(levels: usize) -> String {
    let mut doc = String::from("subscription { ticks { ...F0 } }\n");
    for i in 0..levels {
        let next = i + 1;
        doc.push_str(&format!(
            "fragment F{i} on Tick {{ ...F{next} ...F{next} }}\n"
        ));
    }
    doc.push_str(&format!("fragment F{levels} on Tick {{"));
    for a in 0..1900 {
        doc.push_str(&format!(" a{a}: payload"));
    }
    doc.push_str(" }\n");
    doc
}

#[test]
fn doubling_fragments_cannot_wrap_the_counts_around() {
    // By default the chain of 64 spreads is itself too deep to walk.
    let limits = Limits::default();
    for levels in [64, 63] {
        let doc = doubling(levels);
        assert!(doc.len() <= limits.max_document_bytes, "{}", doc.len());
        let error = refused(&limits, &doc);
        assert_eq!(
            error.code(),
            Some(codes::LIMIT_EXCEEDED),
            "{levels}: {error:?}"
        );
    }
    // With room to nest, the counts are what refuse it: they never wrap.
    let limits = Limits {
        max_depth: 100,
        ..Limits::default()
    };
    for levels in [64, 63, 20] {
        let error = refused(&limits, &doubling(levels));
        assert_eq!(
            error.code(),
            Some(codes::LIMIT_EXCEEDED),
            "{levels}: {error:?}"
        );
        assert!(
            error
                .message
                .contains("alias count exceeds the limit of 30"),
            "{levels}: {}",
            error.message
        );
    }
    // With aliases allowed, the field count stops the expansion.
    let limits = Limits {
        max_depth: 100,
        max_aliases: usize::MAX,
        ..Limits::default()
    };
    let error = refused(&limits, &doubling(64));
    assert!(
        error
            .message
            .contains("field count exceeds the limit of 500"),
        "{error:?}"
    );
}

#[test]
fn fields_doubling_without_aliases_are_counted_expanded() {
    // 2^30 `payload` selections: the same response key, so no alias, but
    // each one is a field to merge and validate.
    let mut doc = String::from("subscription { ticks { ...F0 } }\n");
    for i in 0..30 {
        doc.push_str(&format!(
            "fragment F{i} on Tick {{ ...F{} ...F{} }}\n",
            i + 1,
            i + 1
        ));
    }
    doc.push_str("fragment F30 on Tick { payload }\n");
    let error = refused(&Limits::default(), &doc);
    assert_eq!(error.code(), Some(codes::LIMIT_EXCEEDED));
    assert!(error.message.contains("field count"), "{error:?}");
}

#[test]
fn fragment_cycles_are_validation_errors_not_hangs() {
    let cases = [
        "subscription { ticks { ...A } } fragment A on Tick { ...B } fragment B on Tick { ...A }",
        "subscription { ticks { ...A } } fragment A on Tick { payload ...A ...A }",
        "subscription { ticks { ...A } } fragment A on Tick { next { ...A } }",
    ];
    for doc in cases {
        let errors = prep(&Limits::default(), doc).expect_err(doc);
        assert!(
            errors
                .iter()
                .all(|e| e.code() == Some(codes::VALIDATION_FAILED)),
            "{doc}: {errors:?}"
        );
    }
}

#[test]
fn deep_nesting_is_a_limit_error_before_the_tree_is_built() {
    let limits = big(1 << 20);
    let depth = 100_000;
    let fields = format!(
        "subscription {}{}",
        "{ ticks ".repeat(depth),
        "}".repeat(depth)
    );
    let lists = format!(
        "subscription {{ ticks(x: {}1{}) {{ seq }} }}",
        "[".repeat(depth),
        "]".repeat(depth)
    );
    let objects = format!(
        "subscription {{ ticks(x: {}1{}) {{ seq }} }}",
        "{a: ".repeat(depth),
        "}".repeat(depth)
    );
    let types = format!(
        "subscription($v: {}Int{}) {{ ticks {{ seq }} }}",
        "[".repeat(depth),
        "]".repeat(depth)
    );
    for doc in [fields, lists, objects, types] {
        let error = refused(&limits, &doc);
        assert_eq!(error.code(), Some(codes::LIMIT_EXCEEDED), "{error:?}");
        assert!(error.message.contains("nests too deeply"), "{error:?}");
    }
}

#[test]
fn nesting_through_fragments_is_bounded() {
    // Each fragment is shallow; chained, they nest without bound.
    let limits = big(1 << 20);
    let mut spreads = String::from("subscription { ticks { ...F0 } }\n");
    let mut fields = spreads.clone();
    for i in 0..5_000 {
        spreads.push_str(&format!("fragment F{i} on Tick {{ ...F{} }}\n", i + 1));
        fields.push_str(&format!(
            "fragment F{i} on Tick {{ next {{ ...F{} }} }}\n",
            i + 1
        ));
    }
    spreads.push_str("fragment F5000 on Tick { seq }\n");
    fields.push_str("fragment F5000 on Tick { seq }\n");
    let error = refused(&limits, &spreads);
    assert_eq!(error.code(), Some(codes::LIMIT_EXCEEDED), "{error:?}");
    assert!(error.message.contains("nests too deeply"), "{error:?}");
    let error = refused(&limits, &fields);
    assert_eq!(error.code(), Some(codes::LIMIT_EXCEEDED), "{error:?}");
    assert!(error.message.contains("depth"), "{error:?}");
    // A fragment reused at a deeper level than where it was first measured.
    let limits = Limits {
        max_depth: 3,
        ..Limits::default()
    };
    let reused = "subscription { ticks { ...A next { next { ...A } } } } \
                  fragment A on Tick { next { seq } }";
    let error = refused(&limits, reused);
    assert!(
        error.message.contains("depth exceeds the limit of 3"),
        "{error:?}"
    );
    // Inline fragments nest without adding depth: each definition is within
    // the parser's bound, the two together are not.
    let nest = |inner: &str| format!("{}{inner}{}", "... on Tick { ".repeat(20), " }".repeat(20));
    let doc = format!(
        "subscription {{ ticks {{ ...A ...B }} }} fragment A on Tick {{ {} }} fragment B on Tick {{ {} }}",
        nest("seq"),
        nest("...A")
    );
    let error = refused(&Limits::default(), &doc);
    assert!(error.message.contains("nests too deeply"), "{error:?}");
}

/// 2,000 aliases of one response key over two different fields: 28 KB.
fn alias_bomb() -> String {
    let mut doc = String::from("subscription { ticks {");
    for _ in 0..1000 {
        doc.push_str(" a: payload a: seq");
    }
    doc.push_str(" } }");
    doc
}

#[test]
fn an_alias_bomb_is_one_limit_error() {
    let error = refused(&Limits::default(), &alias_bomb());
    assert_eq!(error.code(), Some(codes::LIMIT_EXCEEDED));
    assert!(error.message.contains("alias count"), "{error:?}");
}

#[test]
fn validation_errors_are_capped_like_graphql_js() {
    let limits = Limits {
        max_aliases: 10_000,
        max_fields: 10_000,
        ..Limits::default()
    };
    let errors = prep(&limits, &alias_bomb()).expect_err("conflicting aliases are refused");
    assert_eq!(errors.len(), MAX_ERRORS + 1);
    assert!(errors
        .iter()
        .all(|e| e.code() == Some(codes::VALIDATION_FAILED)));
    assert_eq!(
        errors.last().unwrap().message,
        "Too many validation errors, error limit reached. Validation aborted."
    );
    let frame = serde_json::to_string(&errors).unwrap();
    assert!(frame.len() < 64 * 1024, "{} bytes", frame.len());
}

#[test]
fn a_token_dense_document_at_the_byte_limit_parses_and_one_byte_more_is_refused() {
    let limits = Limits::default();
    // Every comma is a token of one byte: as many tokens as bytes.
    let head = "subscription { ticks { seq";
    let tail = " } }";
    let commas = limits.max_document_bytes - head.len() - tail.len();
    let doc = format!("{head}{}{tail}", ",".repeat(commas));
    assert_eq!(doc.len(), limits.max_document_bytes);
    prep(&limits, &doc).expect("a document within the byte limit is within the token limit");
    let doc = format!("{head}{}{tail}", ",".repeat(commas + 1));
    let error = refused(&limits, &doc);
    assert_eq!(error.code(), Some(codes::LIMIT_EXCEEDED));
    assert!(error.message.contains("bytes"), "{error:?}");
    // A megabyte is refused by its length alone.
    let error = refused(&limits, &",".repeat(1 << 20));
    assert_eq!(error.code(), Some(codes::LIMIT_EXCEEDED));
}

#[test]
fn documents_within_the_limits_still_pass() {
    let limits = Limits::default();
    let doc =
        "subscription { ticks { ...A ...A b: seq } } fragment A on Tick { payload next { ...B } } \
               fragment B on Tick { seq }";
    let prepared = prep(&limits, doc).expect("a small document with fragments is accepted");
    assert_eq!(prepared.topic, "ticks");
    // Exactly at each limit.
    let limits = Limits {
        max_depth: 3,
        max_aliases: 2,
        max_fields: 5,
        ..Limits::default()
    };
    prep(&limits, "subscription { ticks { next { a: seq b: seq } } }")
        .expect("depth 3, 2 aliases, 4 fields are within the limits");
}

// ------------------------------------------------ subscription-only schemas

#[test]
fn a_subscription_only_schema_is_accepted_and_its_errors_are_the_users() {
    let schema = Schema::parse(SDL).unwrap();
    assert_eq!(schema.subscription_fields().collect::<Vec<_>>(), ["ticks"]);
    // An explicit schema definition without a query root, and a type that
    // already uses the name `Query` without being the root.
    let explicit = "schema { subscription: S } type S { t: Int } type Query { x: Int }";
    assert!(Schema::parse(explicit).is_ok());
    let explicit_alone = "schema { subscription: S } type S { t: Int }";
    assert!(Schema::parse(explicit_alone).is_ok());
    match Schema::parse("type Subscription { t: Nope }") {
        Err(SchemaError::Invalid(text)) => {
            assert!(text.contains("Nope"), "{text}");
            assert!(!text.contains("fanwire"), "{text}");
            assert!(!text.contains("query root"), "{text}");
        }
        other => panic!("expected an invalid schema, got {other:?}"),
    }
    assert!(matches!(
        Schema::parse("type Order { id: ID }"),
        Err(SchemaError::NoSubscriptionType)
    ));
}

/// Every GraphQL schema the documentation shows, as a user would copy it.
#[test]
fn every_schema_snippet_in_the_documentation_is_valid() {
    let root = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../..");
    let mut files = vec![root.join("README.md"), root.join("python/README.md")];
    for entry in std::fs::read_dir(root.join("docs")).unwrap() {
        let path = entry.unwrap().path();
        if path.extension().is_some_and(|e| e == "md") {
            files.push(path);
        }
    }
    let mut checked = 0;
    for file in files {
        let text = std::fs::read_to_string(&file).unwrap();
        for snippet in snippets(&text) {
            if let Err(e) = Schema::parse(&snippet) {
                panic!(
                    "{}: this schema snippet fails: {e}\n{snippet}",
                    file.display()
                );
            }
            checked += 1;
        }
    }
    assert!(checked >= 2, "only {checked} snippets found");
}

/// The ```graphql blocks of a Markdown text that declare a `Subscription`,
/// and Python `SDL = """..."""` strings.
fn snippets(text: &str) -> Vec<String> {
    let mut out = Vec::new();
    let mut rest = text;
    while let Some(start) = rest.find("```graphql\n") {
        let body = &rest[start + "```graphql\n".len()..];
        let end = body.find("```").expect("a closed code block");
        out.push(body[..end].to_owned());
        rest = &body[end..];
    }
    let mut rest = text;
    while let Some(start) = rest.find("SDL = \"\"\"") {
        let body = &rest[start + "SDL = \"\"\"".len()..];
        let end = body.find("\"\"\"").expect("a closed string");
        out.push(body[..end].to_owned());
        rest = &body[end..];
    }
    out.retain(|s| s.contains("type Subscription"));
    out
}
