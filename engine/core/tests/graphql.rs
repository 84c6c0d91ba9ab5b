//! Subscribe requests through validation, limits, topic binding and
//! projection, with no sockets: `operation::prepare` in, `Plan::execute`
//! bytes out.

use fanwire_core::error::{codes, GraphQLError, Location, PathSegment};
use fanwire_core::json::JsonText;
use fanwire_core::operation::{prepare, Prepared};
use fanwire_core::protocol::SubscribePayload;
use fanwire_core::{Engine, Limits, Schema};
use serde_json::{json, Map, Value};

const SDL: &str = r#"
type Query { ping: String }
type Mutation { touch: Boolean }

scalar JSON

enum Status { NEW PAID SHIPPED }

interface Node { id: ID! }

type Customer implements Node {
  id: ID!
  name: String!
  email: String
}

type Line {
  sku: String!
  qty: Int!
  price: Float
}

type Order implements Node {
  id: ID!
  status: Status!
  total: Float
  quantity: Int
  paid: Boolean
  tags: [String!]
  lines: [Line!]!
  matrix: [[Int!]]
  customer: Customer
  parent: Order
  meta: JSON
}

type Refund {
  id: ID!
  amount: Int!
  reason: String
}

union Activity = Order | Refund

type Subscription {
  orderCreated(tenantId: ID!): Order @topic(name: "orders:{tenantId}")
  orderRequired(tenantId: ID!): Order! @topic(name: "orders:{tenantId}")
  orderUpdated(tenantId: ID!, region: String = "eu"): Order @topic(name: "orders:{region}:{tenantId}")
  activity(tenantId: Int!): Activity @topic(name: "activity:{tenantId}")
  node(tenantId: ID!): Node @topic(name: "nodes:{tenantId}")
  ticks: Int
}
"#;

fn schema() -> Schema {
    Schema::parse(SDL).expect("the test schema is valid")
}

fn request(query: &str, variables: Value) -> SubscribePayload {
    let Value::Object(variables) = variables else {
        panic!("variables must be an object");
    };
    SubscribePayload {
        query: query.to_owned(),
        operation_name: None,
        variables,
        extensions: Map::new(),
    }
}

fn prep_with(
    limits: &Limits,
    query: &str,
    variables: Value,
) -> Result<Prepared, Vec<GraphQLError>> {
    prepare(&schema(), limits, &request(query, variables))
}

fn prep(query: &str, variables: Value) -> Prepared {
    prep_with(&Limits::default(), query, variables)
        .unwrap_or_else(|e| panic!("{query} should prepare, got {e:?}"))
}

fn refused(query: &str, variables: Value) -> Vec<GraphQLError> {
    refused_with(&Limits::default(), query, variables)
}

fn refused_with(limits: &Limits, query: &str, variables: Value) -> Vec<GraphQLError> {
    match prep_with(limits, query, variables) {
        Ok(p) => panic!("{query} should be refused, got topic {}", p.topic),
        Err(errors) => {
            assert!(!errors.is_empty(), "a refusal carries at least one error");
            errors
        }
    }
}

fn codes_of(errors: &[GraphQLError]) -> Vec<&str> {
    errors
        .iter()
        .map(|e| e.code().unwrap_or("<none>"))
        .collect()
}

/// Prepares `query` and runs its plan on `data`, returning the serialised
/// result. The plan run on `data` as text (a component resolver's answer,
/// read in place), compact or pretty-printed, must write the same bytes.
fn run(query: &str, variables: Value, data: Value) -> String {
    let prepared = prep(query, variables);
    let out = String::from_utf8(prepared.plan.execute(&data)).expect("results are UTF-8");
    for text in [
        serde_json::to_string(&data),
        serde_json::to_string_pretty(&data),
    ] {
        let text = JsonText::parse(text.unwrap()).expect("a serialised value is JSON text");
        let from_text = prepared.plan.execute_text(&text, &[]);
        assert_eq!(
            String::from_utf8(from_text).unwrap(),
            out,
            "{query} on {}",
            text.as_str()
        );
    }
    out
}

/// Like [`run`] but parses the result, for assertions on the error list.
fn run_json(query: &str, variables: Value, data: Value) -> Value {
    let text = run(query, variables, data);
    serde_json::from_str(&text).unwrap_or_else(|e| panic!("{text} is not JSON: {e}"))
}

fn location_of(query: &str, needle: &str) -> Location {
    let offset = query.find(needle).expect("needle in query");
    let before = &query[..offset];
    let line = before.matches('\n').count() + 1;
    let column = before.rsplit('\n').next().unwrap_or("").chars().count() + 1;
    Location { line, column }
}

// ---------------------------------------------------------------- errors

#[test]
fn syntax_error_is_parse_failed_with_a_location() {
    let query = "subscription {\n  orderCreated(tenantId: \"5\") { id ) }\n}";
    let errors = refused(query, json!({}));
    assert!(codes_of(&errors).iter().all(|c| *c == codes::PARSE_FAILED));
    let first = &errors[0];
    assert_eq!(first.locations, vec![location_of(query, ") }")]);
    assert!(!first.message.is_empty());
    assert!(first.path.is_empty());
}

#[test]
fn unterminated_document_is_parse_failed() {
    let errors = refused(
        "subscription { orderCreated(tenantId: \"5\") { id }",
        json!({}),
    );
    assert_eq!(codes_of(&errors)[0], codes::PARSE_FAILED);
    assert!(!errors[0].locations.is_empty());
}

#[test]
fn unknown_field_is_validation_failed_with_its_location() {
    let query = "subscription {\n  orderCreated(tenantId: \"5\") {\n    id\n    colour\n  }\n}";
    let errors = refused(query, json!({}));
    assert_eq!(codes_of(&errors), [codes::VALIDATION_FAILED]);
    assert!(
        errors[0].message.contains("colour"),
        "{}",
        errors[0].message
    );
    assert_eq!(errors[0].locations, vec![location_of(query, "colour")]);
}

#[test]
fn missing_required_argument_is_validation_failed() {
    let errors = refused("subscription { orderCreated { id } }", json!({}));
    assert_eq!(codes_of(&errors), [codes::VALIDATION_FAILED]);
    assert!(
        errors[0].message.contains("tenantId"),
        "{}",
        errors[0].message
    );
}

#[test]
fn leaf_without_and_object_without_selection_are_validation_failed() {
    for query in [
        "subscription { orderCreated(tenantId: \"5\") }",
        "subscription { orderCreated(tenantId: \"5\") { id { x } } }",
    ] {
        let errors = refused(query, json!({}));
        assert!(
            codes_of(&errors)
                .iter()
                .all(|c| *c == codes::VALIDATION_FAILED),
            "{errors:?}"
        );
        assert!(errors.iter().all(|e| !e.locations.is_empty()), "{errors:?}");
    }
}

#[test]
fn two_root_fields_are_validation_failed() {
    let errors = refused(
        "subscription { orderCreated(tenantId: \"5\") { id } ticks }",
        json!({}),
    );
    assert_eq!(codes_of(&errors), [codes::VALIDATION_FAILED]);
}

/// The spec forbids introspection fields at the root of a subscription
/// (graphql-js `SingleFieldSubscriptionsRule` agrees), so a root
/// `__typename` is a validation error, not a projection question.
#[test]
fn typename_on_the_subscription_root_is_validation_failed() {
    let query = "subscription { __typename orderCreated(tenantId: \"5\") { id } }";
    let errors = refused(query, json!({}));
    assert!(codes_of(&errors)
        .iter()
        .all(|c| *c == codes::VALIDATION_FAILED));
    let introspection = errors
        .iter()
        .find(|e| e.message.contains("introspection"))
        .expect("an error names the introspection field");
    assert_eq!(
        introspection.locations,
        vec![location_of(query, "__typename")]
    );
}

#[test]
fn query_and_mutation_are_operation_not_supported() {
    let errors = refused("query { ping }", json!({}));
    assert_eq!(codes_of(&errors), [codes::OPERATION_NOT_SUPPORTED]);
    assert!(errors[0].message.contains("query"), "{}", errors[0].message);
    let errors = refused("{ ping }", json!({}));
    assert_eq!(codes_of(&errors), [codes::OPERATION_NOT_SUPPORTED]);
    let errors = refused("mutation { touch }", json!({}));
    assert_eq!(codes_of(&errors), [codes::OPERATION_NOT_SUPPORTED]);
}

#[test]
fn operation_name_selects_among_several_operations() {
    let doc = "query Q { ping } subscription S { ticks } subscription T { orderCreated(tenantId: \"1\") { id } }";
    let schema = schema();
    let limits = Limits::default();
    let mut req = request(doc, json!({}));

    // Several operations and no name: the client must say which.
    let errors = prepare(&schema, &limits, &req).unwrap_err();
    assert_eq!(codes_of(&errors), [codes::VALIDATION_FAILED]);

    req.operation_name = Some("T".into());
    let prepared = prepare(&schema, &limits, &req).unwrap();
    assert_eq!(prepared.field, "orderCreated");
    assert_eq!(prepared.topic, "orders:1");
    assert_eq!(prepared.operation_name.as_deref(), Some("T"));

    req.operation_name = Some("S".into());
    assert_eq!(prepare(&schema, &limits, &req).unwrap().topic, "ticks");

    req.operation_name = Some("Q".into());
    let errors = prepare(&schema, &limits, &req).unwrap_err();
    assert_eq!(codes_of(&errors), [codes::OPERATION_NOT_SUPPORTED]);

    req.operation_name = Some("Nope".into());
    let errors = prepare(&schema, &limits, &req).unwrap_err();
    assert_eq!(codes_of(&errors), [codes::VALIDATION_FAILED]);
    assert!(errors[0].message.contains("Nope"), "{}", errors[0].message);
}

#[test]
fn missing_required_variable_is_bad_user_input() {
    let errors = refused(
        "subscription ($t: ID!) { orderCreated(tenantId: $t) { id } }",
        json!({}),
    );
    assert_eq!(codes_of(&errors), [codes::BAD_USER_INPUT]);
    assert!(errors[0].message.contains('t'), "{}", errors[0].message);
}

#[test]
fn explicit_null_for_a_required_variable_is_bad_user_input() {
    let errors = refused(
        "subscription ($t: ID!) { orderCreated(tenantId: $t) { id } }",
        json!({"t": null}),
    );
    assert_eq!(codes_of(&errors), [codes::BAD_USER_INPUT]);
}

#[test]
fn wrongly_typed_variables_are_bad_user_input() {
    let q = "subscription ($t: ID!) { orderCreated(tenantId: $t) { id } }";
    assert_eq!(
        codes_of(&refused(q, json!({"t": {"x": 1}}))),
        [codes::BAD_USER_INPUT]
    );
    assert_eq!(
        codes_of(&refused(q, json!({"t": true}))),
        [codes::BAD_USER_INPUT]
    );
    assert_eq!(
        codes_of(&refused(q, json!({"t": 1.5}))),
        [codes::BAD_USER_INPUT]
    );

    let q = "subscription ($t: Int!) { activity(tenantId: $t) { __typename } }";
    assert_eq!(
        codes_of(&refused(q, json!({"t": "five"}))),
        [codes::BAD_USER_INPUT]
    );
    assert_eq!(
        codes_of(&refused(q, json!({"t": 3_000_000_000u64}))),
        [codes::BAD_USER_INPUT]
    );

    let q = "subscription ($t: ID!, $s: Boolean!) { orderCreated(tenantId: $t) { id @include(if: $s) } }";
    assert_eq!(
        codes_of(&refused(q, json!({"t": "1", "s": "yes"}))),
        [codes::BAD_USER_INPUT]
    );
}

#[test]
fn undeclared_variable_is_validation_failed() {
    let errors = refused(
        "subscription { orderCreated(tenantId: $t) { id } }",
        json!({"t": "1"}),
    );
    assert_eq!(codes_of(&errors), [codes::VALIDATION_FAILED]);
}

#[test]
fn engine_prepare_applies_its_own_limits() {
    let limits = Limits {
        max_depth: 1,
        ..Limits::default()
    };
    let engine = Engine::new(schema(), limits).unwrap();
    let errors = engine
        .prepare(&request(
            "subscription { orderCreated(tenantId: \"5\") { id } }",
            json!({}),
        ))
        .unwrap_err();
    assert_eq!(codes_of(&errors), [codes::LIMIT_EXCEEDED]);
    let ok = engine
        .prepare(&request("subscription { ticks }", json!({})))
        .unwrap();
    assert_eq!(ok.topic, "ticks");
}

// ---------------------------------------------------------------- limits

#[test]
fn document_bytes_limit() {
    let query = "subscription { orderCreated(tenantId: \"5\") { id } }";
    let at = Limits {
        max_document_bytes: query.len(),
        ..Limits::default()
    };
    assert!(prep_with(&at, query, json!({})).is_ok());
    let under = Limits {
        max_document_bytes: query.len() - 1,
        ..Limits::default()
    };
    let errors = refused_with(&under, query, json!({}));
    assert_eq!(codes_of(&errors), [codes::LIMIT_EXCEEDED]);
    assert!(errors[0].message.contains(&query.len().to_string()));
}

#[test]
fn oversized_document_is_refused_before_parsing() {
    // Not even valid GraphQL: the size check comes first.
    let limits = Limits {
        max_document_bytes: 64,
        ..Limits::default()
    };
    let errors = refused_with(&limits, &"{".repeat(65), json!({}));
    assert_eq!(codes_of(&errors), [codes::LIMIT_EXCEEDED]);
}

fn nested_parent(depth: usize) -> String {
    // `orderCreated { parent { … { id } } }`: depth counts every field level.
    let mut inner = "id".to_owned();
    for _ in 0..depth.saturating_sub(2) {
        inner = format!("parent {{ {inner} }}");
    }
    format!("subscription {{ orderCreated(tenantId: \"5\") {{ {inner} }} }}")
}

#[test]
fn depth_limit() {
    let limits = Limits {
        max_depth: 4,
        ..Limits::default()
    };
    assert!(prep_with(&limits, &nested_parent(4), json!({})).is_ok());
    let errors = refused_with(&limits, &nested_parent(5), json!({}));
    assert_eq!(codes_of(&errors), [codes::LIMIT_EXCEEDED]);
    assert!(errors[0].message.contains("depth"), "{}", errors[0].message);
}

#[test]
fn depth_limit_counts_through_fragments() {
    let limits = Limits {
        max_depth: 3,
        ..Limits::default()
    };
    let query = "subscription { orderCreated(tenantId: \"5\") { ...P } }
        fragment P on Order { parent { ... on Order { parent { id } } } }";
    let errors = refused_with(&limits, query, json!({}));
    assert_eq!(codes_of(&errors), [codes::LIMIT_EXCEEDED]);
}

/// A document far deeper than the limit is a limit error, not a parser
/// failure: the client must learn which bound it hit.
#[test]
fn very_deep_document_is_limit_exceeded_not_a_parse_error() {
    for depth in [40, 100, 400] {
        let errors = refused(&nested_parent(depth), json!({}));
        assert_eq!(
            codes_of(&errors),
            [codes::LIMIT_EXCEEDED],
            "depth {depth}: {errors:?}"
        );
    }
    let limits = Limits {
        max_depth: 1,
        ..Limits::default()
    };
    let errors = refused_with(&limits, &nested_parent(12), json!({}));
    assert_eq!(codes_of(&errors), [codes::LIMIT_EXCEEDED]);
}

#[test]
fn alias_limit() {
    let limits = Limits {
        max_aliases: 2,
        ..Limits::default()
    };
    let two = "subscription { o: orderCreated(tenantId: \"5\") { a: id b: total } }";
    let errors = refused_with(&limits, two, json!({}));
    assert_eq!(codes_of(&errors), [codes::LIMIT_EXCEEDED]);
    let ok = "subscription { o: orderCreated(tenantId: \"5\") { a: id total } }";
    assert!(prep_with(&limits, ok, json!({})).is_ok());
    let zero = Limits {
        max_aliases: 0,
        ..Limits::default()
    };
    let errors = refused_with(&zero, "subscription { t: ticks }", json!({}));
    assert_eq!(codes_of(&errors), [codes::LIMIT_EXCEEDED]);
    assert!(errors[0].message.contains("alias"), "{}", errors[0].message);
}

#[test]
fn field_count_limit_expands_fragments() {
    let limits = Limits {
        max_fields: 5,
        ..Limits::default()
    };
    // 1 root + id + status + total + quantity = 5.
    let five = "subscription { orderCreated(tenantId: \"5\") { id status total quantity } }";
    assert!(prep_with(&limits, five, json!({})).is_ok());
    let six = "subscription { orderCreated(tenantId: \"5\") { id status total quantity paid } }";
    let errors = refused_with(&limits, six, json!({}));
    assert_eq!(codes_of(&errors), [codes::LIMIT_EXCEEDED]);
    assert!(errors[0].message.contains("field"), "{}", errors[0].message);

    // The fragment's two fields count at each of its two uses: 1 + 1 + 2 + 2 = 6.
    let spread = "subscription { orderCreated(tenantId: \"5\") { ...F parent { ...F } } }
        fragment F on Order { id status }";
    let errors = refused_with(&limits, spread, json!({}));
    assert_eq!(codes_of(&errors), [codes::LIMIT_EXCEEDED]);
}

// ---------------------------------------------------------------- topics

#[test]
fn topic_from_a_literal_argument() {
    let p = prep(
        "subscription { orderCreated(tenantId: \"acme\") { id } }",
        json!({}),
    );
    assert_eq!(p.field, "orderCreated");
    assert_eq!(p.topic, "orders:acme");
    assert_eq!(Value::Object(p.arguments), json!({"tenantId": "acme"}));
    assert_eq!(p.operation_name, None);

    let p = prep(
        "subscription A { activity(tenantId: 42) { __typename } }",
        json!({}),
    );
    assert_eq!(p.topic, "activity:42");
    assert_eq!(p.operation_name.as_deref(), Some("A"));
}

#[test]
fn topic_from_variables() {
    let p = prep(
        "subscription ($t: ID!) { orderCreated(tenantId: $t) { id } }",
        json!({"t": "7"}),
    );
    assert_eq!(p.topic, "orders:7");
    assert_eq!(Value::Object(p.variables), json!({"t": "7"}));

    let p = prep(
        "subscription ($t: Int!) { activity(tenantId: $t) { __typename } }",
        json!({"t": 9}),
    );
    assert_eq!(p.topic, "activity:9");

    // An Int is a valid ID input; the topic reads the same.
    let p = prep(
        "subscription ($t: ID!) { orderCreated(tenantId: $t) { id } }",
        json!({"t": 7}),
    );
    assert_eq!(p.topic, "orders:7");
}

#[test]
fn topic_uses_argument_defaults() {
    let p = prep(
        "subscription { orderUpdated(tenantId: \"5\") { id } }",
        json!({}),
    );
    assert_eq!(p.topic, "orders:eu:5");
    assert_eq!(
        Value::Object(p.arguments),
        json!({"tenantId": "5", "region": "eu"})
    );

    let p = prep(
        "subscription { orderUpdated(tenantId: \"5\", region: \"us\") { id } }",
        json!({}),
    );
    assert_eq!(p.topic, "orders:us:5");
}

#[test]
fn topic_uses_variable_defaults_then_argument_defaults() {
    let q =
        "subscription ($r: String = \"ap\") { orderUpdated(tenantId: \"5\", region: $r) { id } }";
    assert_eq!(prep(q, json!({})).topic, "orders:ap:5");
    assert_eq!(prep(q, json!({"r": "us"})).topic, "orders:us:5");

    // An unset variable without a default leaves the argument's own default.
    let q = "subscription ($r: String) { orderUpdated(tenantId: \"5\", region: $r) { id } }";
    assert_eq!(prep(q, json!({})).topic, "orders:eu:5");
    assert_eq!(prep(q, json!({"r": "us"})).topic, "orders:us:5");

    // An explicit null overrides the default and leaves the topic unnamed.
    let errors = refused(q, json!({"r": null}));
    assert_eq!(codes_of(&errors), [codes::BAD_USER_INPUT]);
    assert!(
        errors[0].message.contains("region"),
        "{}",
        errors[0].message
    );
}

#[test]
fn field_without_topic_directive_uses_its_name() {
    let p = prep("subscription { ticks }", json!({}));
    assert_eq!(p.topic, "ticks");
    assert!(p.arguments.is_empty());
    assert_eq!(
        String::from_utf8(p.plan.execute(&json!(3))).unwrap(),
        r#"{"data":{"ticks":3}}"#
    );
}

#[test]
fn root_field_inside_a_fragment_is_found() {
    let p = prep(
        "subscription { ...Root } fragment Root on Subscription { orderCreated(tenantId: \"3\") { id } }",
        json!({}),
    );
    assert_eq!(p.field, "orderCreated");
    assert_eq!(p.topic, "orders:3");
    let p = prep(
        "subscription { ... on Subscription { orderCreated(tenantId: \"4\") { id } } }",
        json!({}),
    );
    assert_eq!(p.topic, "orders:4");
}

// ---------------------------------------------------------------- projection

const ORDER: &str = r#"{"id": "o1", "status": "PAID", "total": 19.99, "quantity": 2, "paid": true,
  "tags": ["a", "b"], "lines": [{"sku": "s1", "qty": 1, "price": 9.5}, {"sku": "s2", "qty": 2}],
  "matrix": [[1, 2], [3]], "customer": {"id": "c1", "name": "Ada", "email": null},
  "secret": "never shown"}"#;

fn order() -> Value {
    serde_json::from_str(ORDER).unwrap()
}

#[test]
fn projection_follows_the_selection_order_not_the_event() {
    let out = run(
        "subscription { orderCreated(tenantId: \"5\") { total id status } }",
        json!({}),
        order(),
    );
    assert_eq!(
        out,
        r#"{"data":{"orderCreated":{"total":19.99,"id":"o1","status":"PAID"}}}"#
    );
}

#[test]
fn projection_uses_aliases_and_may_select_a_field_twice() {
    let out = run(
        "subscription { o: orderCreated(tenantId: \"5\") { key: id id amount: total again: total } }",
        json!({}),
        order(),
    );
    assert_eq!(
        out,
        r#"{"data":{"o":{"key":"o1","id":"o1","amount":19.99,"again":19.99}}}"#
    );
}

#[test]
fn typename_inside_objects_names_the_object_type() {
    let out = run(
        "subscription { orderCreated(tenantId: \"5\") { __typename kind: __typename customer { __typename name } } }",
        json!({}),
        order(),
    );
    assert_eq!(
        out,
        r#"{"data":{"orderCreated":{"__typename":"Order","kind":"Order","customer":{"__typename":"Customer","name":"Ada"}}}}"#
    );
}

#[test]
fn union_resolved_by_the_events_typename() {
    let q = "subscription { activity(tenantId: 1) {
        __typename
        ... on Order { id status }
        ... on Refund { id amount }
      } }";
    let out = run(
        q,
        json!({}),
        json!({"__typename": "Refund", "id": "r1", "amount": 5, "status": "PAID"}),
    );
    assert_eq!(
        out,
        r#"{"data":{"activity":{"__typename":"Refund","id":"r1","amount":5}}}"#
    );
    let out = run(
        q,
        json!({}),
        json!({"__typename": "Order", "id": "o1", "status": "NEW", "amount": 5}),
    );
    assert_eq!(
        out,
        r#"{"data":{"activity":{"__typename":"Order","id":"o1","status":"NEW"}}}"#
    );
}

#[test]
fn interface_fragment_inside_a_union_applies_to_implementers_only() {
    let q =
        "subscription { activity(tenantId: 1) { ... on Node { id } ... on Refund { amount } } }";
    let out = run(q, json!({}), json!({"__typename": "Order", "id": "o1"}));
    assert_eq!(out, r#"{"data":{"activity":{"id":"o1"}}}"#);
    let out = run(
        q,
        json!({}),
        json!({"__typename": "Refund", "id": "r1", "amount": 3}),
    );
    assert_eq!(out, r#"{"data":{"activity":{"amount":3}}}"#);
}

#[test]
fn interface_resolved_by_the_events_typename() {
    let q = "subscription { node(tenantId: \"1\") {
        id __typename
        ... on Customer { name }
        ...OrderBits
      } }
      fragment OrderBits on Order { status }";
    let out = run(
        q,
        json!({}),
        json!({"__typename": "Customer", "id": "c1", "name": "Ada", "status": "NEW"}),
    );
    assert_eq!(
        out,
        r#"{"data":{"node":{"id":"c1","__typename":"Customer","name":"Ada"}}}"#
    );
    let out = run(
        q,
        json!({}),
        json!({"__typename": "Order", "id": "o1", "status": "NEW"}),
    );
    assert_eq!(
        out,
        r#"{"data":{"node":{"id":"o1","__typename":"Order","status":"NEW"}}}"#
    );
}

#[test]
fn abstract_value_without_a_valid_typename_is_a_field_error() {
    let q = "subscription { activity(tenantId: 1) { __typename } }";
    for data in [
        json!({"id": "x"}),
        json!({"__typename": "Customer", "id": "x"}),
        json!({"__typename": 5}),
    ] {
        let out = run_json(q, json!({}), data.clone());
        assert_eq!(out["data"], json!({"activity": null}), "for {data}");
        let errors = out["errors"].as_array().unwrap();
        assert_eq!(errors.len(), 1, "for {data}");
        assert_eq!(errors[0]["path"], json!(["activity"]));
        assert_eq!(errors[0]["extensions"]["code"], codes::FIELD_ERROR);
    }
}

#[test]
fn inline_and_named_fragments_merge_into_one_selection() {
    let out = run(
        "subscription { orderCreated(tenantId: \"5\") {
            id
            ... on Order { status customer { name } }
            ...More
            ... { total }
          } }
          fragment More on Order { customer { email } id quantity }",
        json!({}),
        order(),
    );
    assert_eq!(
        out,
        r#"{"data":{"orderCreated":{"id":"o1","status":"PAID","customer":{"name":"Ada","email":null},"quantity":2,"total":19.99}}}"#
    );
}

#[test]
fn fragments_on_an_interface_apply_to_an_implementing_object() {
    let out = run(
        "subscription { orderCreated(tenantId: \"5\") { ...Id customer { ...Id } } }
         fragment Id on Node { id }",
        json!({}),
        order(),
    );
    assert_eq!(
        out,
        r#"{"data":{"orderCreated":{"id":"o1","customer":{"id":"c1"}}}}"#
    );
}

#[test]
fn include_and_skip_with_literals() {
    let out = run(
        "subscription { orderCreated(tenantId: \"5\") {
            id
            status @include(if: false)
            total @skip(if: true)
            quantity @include(if: true) @skip(if: false)
            paid @include(if: true) @skip(if: true)
          } }",
        json!({}),
        order(),
    );
    assert_eq!(out, r#"{"data":{"orderCreated":{"id":"o1","quantity":2}}}"#);
}

#[test]
fn include_and_skip_with_variables_and_defaults() {
    let q = "subscription ($withStatus: Boolean!, $hideTotal: Boolean = true) {
        orderCreated(tenantId: \"5\") {
          id
          status @include(if: $withStatus)
          total @skip(if: $hideTotal)
          ... on Order @include(if: $withStatus) { quantity }
          ...Cust @skip(if: $hideTotal)
        } }
        fragment Cust on Order { customer { name } }";
    let out = run(q, json!({"withStatus": true}), order());
    assert_eq!(
        out,
        r#"{"data":{"orderCreated":{"id":"o1","status":"PAID","quantity":2}}}"#
    );
    let out = run(q, json!({"withStatus": false, "hideTotal": false}), order());
    assert_eq!(
        out,
        r#"{"data":{"orderCreated":{"id":"o1","total":19.99,"customer":{"name":"Ada"}}}}"#
    );
}

#[test]
fn a_field_skipped_in_one_place_but_selected_in_another_is_kept() {
    let out = run(
        "subscription { orderCreated(tenantId: \"5\") { id @skip(if: true) ... on Order { id } } }",
        json!({}),
        order(),
    );
    assert_eq!(out, r#"{"data":{"orderCreated":{"id":"o1"}}}"#);
}

#[test]
fn lists_of_objects_scalars_and_nested_lists() {
    let out = run(
        "subscription { orderCreated(tenantId: \"5\") { tags lines { sku qty price } matrix } }",
        json!({}),
        order(),
    );
    assert_eq!(
        out,
        r#"{"data":{"orderCreated":{"tags":["a","b"],"lines":[{"sku":"s1","qty":1,"price":9.5},{"sku":"s2","qty":2,"price":null}],"matrix":[[1,2],[3]]}}}"#
    );
    let out = run(
        "subscription { orderCreated(tenantId: \"5\") { matrix tags } }",
        json!({}),
        json!({"matrix": [[], null, [4]], "tags": []}),
    );
    assert_eq!(
        out,
        r#"{"data":{"orderCreated":{"matrix":[[],null,[4]],"tags":[]}}}"#
    );
}

#[test]
fn error_in_a_nested_list_nulls_the_nearest_nullable_list() {
    // matrix: [[Int!]] — a bad Int nulls its inner list, not the whole matrix.
    let out = run_json(
        "subscription { orderCreated(tenantId: \"5\") { id matrix } }",
        json!({}),
        json!({"id": "o1", "matrix": [[1, 2], [3, "x"], [5]]}),
    );
    assert_eq!(
        out["data"],
        json!({"orderCreated": {"id": "o1", "matrix": [[1, 2], null, [5]]}})
    );
    let errors = out["errors"].as_array().unwrap();
    assert_eq!(errors.len(), 1);
    assert_eq!(errors[0]["path"], json!(["orderCreated", "matrix", 1, 1]));
    assert_eq!(errors[0]["extensions"]["code"], codes::FIELD_ERROR);
}

#[test]
fn a_scalar_where_a_list_is_expected_is_a_field_error() {
    let out = run_json(
        "subscription { orderCreated(tenantId: \"5\") { id tags } }",
        json!({}),
        json!({"id": "o1", "tags": "a"}),
    );
    assert_eq!(
        out["data"],
        json!({"orderCreated": {"id": "o1", "tags": null}})
    );
    assert_eq!(out["errors"][0]["path"], json!(["orderCreated", "tags"]));
}

#[test]
fn a_scalar_where_an_object_is_expected_is_a_field_error() {
    let out = run_json(
        "subscription { orderCreated(tenantId: \"5\") { id customer { name } } }",
        json!({}),
        json!({"id": "o1", "customer": "Ada"}),
    );
    assert_eq!(
        out["data"],
        json!({"orderCreated": {"id": "o1", "customer": null}})
    );
    assert_eq!(
        out["errors"][0]["path"],
        json!(["orderCreated", "customer"])
    );
}

#[test]
fn enum_values_are_checked() {
    let q = "subscription { orderCreated(tenantId: \"5\") { id status } }";
    let out = run(q, json!({}), json!({"id": "o1", "status": "SHIPPED"}));
    assert_eq!(
        out,
        r#"{"data":{"orderCreated":{"id":"o1","status":"SHIPPED"}}}"#
    );

    // status is non-null: the bad enum value nulls the (nullable) order.
    let out = run(q, json!({}), json!({"id": "o1", "status": "LOST"}));
    assert_eq!(
        out,
        r#"{"data":{"orderCreated":null},"errors":[{"message":"Status cannot represent value: \"LOST\"","path":["orderCreated","status"],"extensions":{"code":"FIELD_ERROR"}}]}"#
    );
    let out = run_json(q, json!({}), json!({"id": "o1", "status": 1}));
    assert_eq!(out["data"], json!({"orderCreated": null}));
    assert_eq!(out["errors"][0]["path"], json!(["orderCreated", "status"]));
}

#[test]
fn int_values_are_checked() {
    let q = "subscription { orderCreated(tenantId: \"5\") { id quantity } }";
    let ok = |data: Value, expected: &str| {
        assert_eq!(
            run(q, json!({}), data),
            format!(r#"{{"data":{{"orderCreated":{{"id":"o1","quantity":{expected}}}}}}}"#)
        );
    };
    ok(json!({"id": "o1", "quantity": 7}), "7");
    ok(
        json!({"id": "o1", "quantity": -2147483648i64}),
        "-2147483648",
    );
    // A float with no fractional part is an Int.
    ok(json!({"id": "o1", "quantity": 3.0}), "3");
    for bad in [
        json!(2.5),
        json!(2_147_483_648i64),
        json!("7"),
        json!(true),
        json!([1]),
    ] {
        let out = run_json(q, json!({}), json!({"id": "o1", "quantity": bad}));
        assert_eq!(
            out["data"],
            json!({"orderCreated": {"id": "o1", "quantity": null}}),
            "for {bad}"
        );
        let errors = out["errors"].as_array().unwrap();
        assert_eq!(errors.len(), 1, "for {bad}");
        assert_eq!(errors[0]["path"], json!(["orderCreated", "quantity"]));
        assert!(
            errors[0]["message"]
                .as_str()
                .unwrap()
                .starts_with("Int cannot represent"),
            "{}",
            errors[0]["message"]
        );
    }
}

#[test]
fn other_scalars_coerce_like_graphql_js() {
    let q =
        "subscription { orderCreated(tenantId: \"5\") { id total paid meta customer { name } } }";
    let out = run(
        q,
        json!({}),
        json!({"id": 12, "total": 3, "paid": false, "meta": {"any": [1, "x"]}, "customer": {"name": 5}}),
    );
    assert_eq!(
        out,
        r#"{"data":{"orderCreated":{"id":"12","total":3,"paid":false,"meta":{"any":[1,"x"]},"customer":{"name":"5"}}}}"#
    );
    let out = run_json(
        q,
        json!({}),
        json!({"id": "o1", "total": "3", "paid": "yes"}),
    );
    assert_eq!(
        out["data"]["orderCreated"],
        json!({"id": "o1", "total": null, "paid": null, "meta": null, "customer": null})
    );
    let paths: Vec<&Value> = out["errors"]
        .as_array()
        .unwrap()
        .iter()
        .map(|e| &e["path"])
        .collect();
    assert_eq!(
        paths,
        [
            &json!(["orderCreated", "total"]),
            &json!(["orderCreated", "paid"])
        ]
    );
    // A fractional number is no ID.
    let out = run_json(q, json!({}), json!({"id": 1.5}));
    assert_eq!(out["data"], json!({"orderCreated": null}));
    assert_eq!(out["errors"][0]["path"], json!(["orderCreated", "id"]));
}

#[test]
fn missing_nullable_fields_are_null_without_errors() {
    let out = run(
        "subscription { orderCreated(tenantId: \"5\") { id total customer { name } tags } }",
        json!({}),
        json!({"id": "o1", "total": null}),
    );
    assert_eq!(
        out,
        r#"{"data":{"orderCreated":{"id":"o1","total":null,"customer":null,"tags":null}}}"#
    );
}

#[test]
fn null_in_a_non_null_field_bubbles_to_the_nearest_nullable_parent() {
    let q = "subscription { orderCreated(tenantId: \"5\") { id customer { id name } } }";
    let out = run(
        q,
        json!({}),
        json!({"id": "o1", "customer": {"id": "c1", "name": null}}),
    );
    assert_eq!(
        out,
        r#"{"data":{"orderCreated":{"id":"o1","customer":null}},"errors":[{"message":"Cannot return null for non-nullable field Customer.name.","path":["orderCreated","customer","name"],"extensions":{"code":"FIELD_ERROR"}}]}"#
    );
}

#[test]
fn error_paths_use_response_keys() {
    let out = run_json(
        "subscription { o: orderCreated(tenantId: \"5\") { who: customer { n: name } } }",
        json!({}),
        json!({"customer": {}}),
    );
    assert_eq!(out["data"], json!({"o": {"who": null}}));
    assert_eq!(out["errors"][0]["path"], json!(["o", "who", "n"]));
}

#[test]
fn null_bubbles_through_non_null_lists_and_items() {
    // lines: [Line!]! and Line.sku: String! — a missing sku nulls the line,
    // which nulls the list, which nulls the order.
    let out = run_json(
        "subscription { orderCreated(tenantId: \"5\") { id lines { sku qty } } }",
        json!({}),
        json!({"id": "o1", "lines": [{"sku": "a", "qty": 1}, {"qty": 2}]}),
    );
    assert_eq!(out["data"], json!({"orderCreated": null}));
    let errors = out["errors"].as_array().unwrap();
    assert_eq!(errors.len(), 1, "one error, not one per level: {errors:?}");
    let typed: Vec<GraphQLError> = serde_json::from_value(out["errors"].clone()).unwrap();
    assert_eq!(
        typed[0].path,
        [
            PathSegment::Key("orderCreated".into()),
            PathSegment::Key("lines".into()),
            PathSegment::Index(1),
            PathSegment::Key("sku".into()),
        ]
    );
    assert_eq!(
        typed[0].message,
        "Cannot return null for non-nullable field Line.sku."
    );
    assert_eq!(typed[0].code(), Some(codes::FIELD_ERROR));
    assert!(typed[0].locations.is_empty());

    // A null item in [String!] nulls the nullable list only.
    let out = run_json(
        "subscription { orderCreated(tenantId: \"5\") { id tags } }",
        json!({}),
        json!({"id": "o1", "tags": ["a", null]}),
    );
    assert_eq!(
        out["data"],
        json!({"orderCreated": {"id": "o1", "tags": null}})
    );
    assert_eq!(out["errors"][0]["path"], json!(["orderCreated", "tags", 1]));
}

#[test]
fn null_reaching_the_root_makes_data_null() {
    let q = "subscription { orderRequired(tenantId: \"5\") { id status } }";
    let out = run(q, json!({}), json!({"id": "o1"}));
    assert_eq!(
        out,
        r#"{"data":null,"errors":[{"message":"Cannot return null for non-nullable field Order.status.","path":["orderRequired","status"],"extensions":{"code":"FIELD_ERROR"}}]}"#
    );
    let out = run_json(q, json!({}), Value::Null);
    assert_eq!(out["data"], Value::Null);
    assert_eq!(out["errors"][0]["path"], json!(["orderRequired"]));
    assert_eq!(out["errors"].as_array().unwrap().len(), 1);

    // A nullable root field just becomes null, without an error.
    let out = run(
        "subscription { orderCreated(tenantId: \"5\") { id } }",
        json!({}),
        Value::Null,
    );
    assert_eq!(out, r#"{"data":{"orderCreated":null}}"#);
}

#[test]
fn response_keys_are_escaped() {
    // Aliases are plain names, but the values must still be escaped JSON.
    let out = run(
        "subscription { orderCreated(tenantId: \"5\") { id customer { name } } }",
        json!({}),
        json!({"id": "a\"b\\c\n", "customer": {"name": "\u{e9}\u{1F600}"}}),
    );
    let parsed: Value = serde_json::from_str(&out).unwrap();
    assert_eq!(
        parsed,
        json!({"data": {"orderCreated": {"id": "a\"b\\c\n", "customer": {"name": "\u{e9}\u{1F600}"}}}})
    );
}

/// The plan run on `text` as a component's answer (read in place) and on
/// its parsed value: the two results, parsed.
fn run_both(query: &str, text: &str) -> (Value, Value) {
    let plan = prep(query, json!({})).plan;
    let parsed: Value = serde_json::from_str(text).unwrap();
    let text = JsonText::parse(text.to_owned()).unwrap();
    let result = |bytes: Vec<u8>| serde_json::from_slice::<Value>(&bytes).unwrap();
    (
        result(plan.execute_text(&text, &[])),
        result(plan.execute(&parsed)),
    )
}

const EVERY_LEAF: &str = "subscription { orderCreated(tenantId: \"5\") { id status total quantity paid tags meta customer { name email } lines { sku qty price } } }";

#[test]
fn answers_as_text_in_any_spelling_project_like_their_parsed_values() {
    for text in [
        // Escapes in names and values, a member twice (the last one counts).
        r#"{"i\u0064": "a\u0041\n", "status": "\u004eEW", "status": "PAID", "customer": {"name": "\ud83d\ude00", "name": "x\"y"}}"#,
        // Numbers spelled every way JSON allows.
        r#"{"id": 7, "total": 1.50, "quantity": -0, "lines": [{"sku": "s", "qty": 2e0, "price": 1E2}, {"sku": "t", "qty": 3.0, "price": -0.0}]}"#,
        r#"{"total": 0.1000000000000000055511151231257827, "quantity": 12345678901234567890, "meta": {"b": [1, {"c": null}], "a": "\u00e9"}}"#,
        // Wrong types and values at every leaf.
        r#"{"id": 1.5, "status": "LOST", "total": "1", "quantity": 2147483648, "paid": "yes", "tags": "x", "customer": [], "lines": {}}"#,
        r#"{"id": true, "status": 1, "quantity": 1.5, "paid": 0, "tags": [1, true, null], "customer": {"name": null}, "lines": [null]}"#,
        "  \n{ \"id\" : \"1\" ,\t\"tags\" : [ \"a\" , \"b\" ] , \"paid\" : false } \n",
        "null",
        "[]",
        "\"scalar\"",
    ] {
        let (from_text, from_value) = run_both(EVERY_LEAF, text);
        assert_eq!(from_text, from_value, "{text}");
    }
}

#[test]
fn json_a_parsed_value_cannot_hold_fails_only_where_it_is_selected() {
    // 1e400 is beyond f64 and "\ud800" a lone surrogate: JSON text, but no
    // `Value`. Unselected, they are never read.
    let text =
        r#"{"id": "1", "total": 1e400, "customer": {"name": "\ud800"}, "notInTheSchema": 1e400}"#;
    let query = "subscription { orderCreated(tenantId: \"5\") { id total customer { name } } }";
    let plan = prep(query, json!({})).plan;
    let out = plan.execute_text(&JsonText::parse(text.to_owned()).unwrap(), &[]);
    let out: Value = serde_json::from_slice(&out).unwrap();
    assert_eq!(out["data"]["orderCreated"]["id"], "1");
    assert_eq!(out["data"]["orderCreated"]["total"], Value::Null);
    // `name` is non-null: its error nulls the customer.
    assert_eq!(out["data"]["orderCreated"]["customer"], Value::Null);
    let errors: Vec<(&str, Value)> = out["errors"]
        .as_array()
        .unwrap()
        .iter()
        .map(|e| (e["message"].as_str().unwrap(), e["path"].clone()))
        .collect();
    assert_eq!(
        errors,
        [
            (
                "Float cannot represent value: 1e400",
                json!(["orderCreated", "total"])
            ),
            (
                "String cannot represent value: \"\\ud800\"",
                json!(["orderCreated", "customer", "name"])
            ),
        ]
    );
    let unselected = r#"{"id": "1", "notInTheSchema": [1e400, "\ud800"]}"#;
    let (from_text, _) = run_both(query, r#"{"id": "1"}"#);
    let out = plan.execute_text(&JsonText::parse(unselected.to_owned()).unwrap(), &[]);
    assert_eq!(serde_json::from_slice::<Value>(&out).unwrap(), from_text);
}

// ---------------------------------------------------------------- grouping

fn key(query: &str, variables: Value) -> String {
    prep(query, variables).group_key
}

#[test]
fn identical_subscriptions_written_differently_share_a_group_key() {
    let plain = key(
        "subscription { orderCreated(tenantId: \"5\") { id status customer { name } } }",
        json!({}),
    );
    let variants = [
        (
            "subscription Named { orderCreated(tenantId: \"5\") { id status customer { name } } }",
            json!({}),
        ),
        (
            "subscription { orderCreated(tenantId: \"5\") { ...F } } fragment F on Order { id status customer { name } }",
            json!({}),
        ),
        (
            "subscription { orderCreated(tenantId: \"5\") { id ... on Order { status } customer { ...C } } } fragment C on Customer { name }",
            json!({}),
        ),
        (
            "subscription ($t: ID!) { orderCreated(tenantId: $t) { id status customer { name } } }",
            json!({"t": "5"}),
        ),
        (
            "subscription ($s: Boolean!) { orderCreated(tenantId: \"5\") { id status @include(if: $s) customer { name } } }",
            json!({"s": true}),
        ),
        (
            "subscription { ...R } fragment R on Subscription { orderCreated(tenantId: \"5\") { id status customer { name } } }",
            json!({}),
        ),
        (
            "subscription {\n  orderCreated( tenantId : \"5\" ) {\n    id,\n    status\n    customer { name }\n  }\n}\n# a comment",
            json!({}),
        ),
    ];
    for (query, vars) in variants {
        assert_eq!(key(query, vars), plain, "{query}");
    }
}

#[test]
fn different_selections_or_arguments_get_different_group_keys() {
    let plain = key(
        "subscription { orderCreated(tenantId: \"5\") { id status } }",
        json!({}),
    );
    let others = [
        ("subscription { orderCreated(tenantId: \"5\") { id } }", json!({})),
        ("subscription { orderCreated(tenantId: \"5\") { status id } }", json!({})),
        ("subscription { orderCreated(tenantId: \"5\") { id state: status } }", json!({})),
        ("subscription { o: orderCreated(tenantId: \"5\") { id status } }", json!({})),
        ("subscription { orderCreated(tenantId: \"6\") { id status } }", json!({})),
        ("subscription { orderRequired(tenantId: \"5\") { id status } }", json!({})),
        ("subscription { orderCreated(tenantId: \"5\") { id status __typename } }", json!({})),
        (
            "subscription ($s: Boolean!) { orderCreated(tenantId: \"5\") { id status @include(if: $s) } }",
            json!({"s": false}),
        ),
    ];
    for (query, vars) in others {
        assert_ne!(key(query, vars), plain, "{query}");
    }
}

#[test]
fn arguments_outside_the_topic_still_split_groups() {
    // Same topic, different argument values: results could differ, so no sharing.
    let eu = prep(
        "subscription { orderUpdated(tenantId: \"5\") { id } }",
        json!({}),
    );
    let explicit_eu = prep(
        "subscription { orderUpdated(tenantId: \"5\", region: \"eu\") { id } }",
        json!({}),
    );
    assert_eq!(eu.topic, explicit_eu.topic);
    assert_eq!(eu.group_key, explicit_eu.group_key);
}

#[test]
fn plans_with_the_same_group_key_project_identically() {
    let a = prep(
        "subscription { orderCreated(tenantId: \"5\") { ...F } } fragment F on Order { id lines { sku } }",
        json!({}),
    );
    let b = prep(
        "subscription { orderCreated(tenantId: \"5\") { id lines { sku } } }",
        json!({}),
    );
    assert_eq!(a.group_key, b.group_key);
    assert_eq!(a.plan.fingerprint(), b.plan.fingerprint());
    assert_eq!(a.plan.execute(&order()), b.plan.execute(&order()));
}
