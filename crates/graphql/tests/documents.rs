//! Real documents against the guard with its default policy: the attacks a
//! public GraphQL endpoint sees (deep nesting, alias bombs, fragment
//! cycles and fan-out, huge list sizes, introspection) are refused with
//! their code, and a realistic 2 KiB page query passes with its measures.

use raftgate_graphql::{Guard, OperationType, Rejection, Request};
use raftgate_model::graphql::GraphqlPolicy;
use serde_json::json;

fn inspect(body: serde_json::Value) -> Result<raftgate_graphql::Operation, Rejection> {
    let bytes = serde_json::to_vec(&body).unwrap();
    Guard::new(&GraphqlPolicy::default())
        .inspect(Request::Post { content_type: Some("application/json"), body: &bytes })
}

#[test]
fn a_deeply_nested_friends_of_friends_query_is_refused_for_depth() {
    let mut q = String::from("query Deep { user(id: 1) { ");
    for _ in 0..40 {
        q.push_str("friends { ");
    }
    q.push_str("name ");
    q.push_str(&"} ".repeat(41));
    q.push('}');
    assert_eq!(inspect(json!({"query": q})), Err(Rejection::DepthLimit));
}

#[test]
fn an_alias_bomb_is_refused_for_aliases() {
    let aliases: String = (0..1_000).map(|i| format!("a{i}: expensiveSearch(term: \"x\") {{ id }} ")).collect();
    assert_eq!(inspect(json!({"query": format!("query Bomb {{ {aliases} }}")})), Err(Rejection::AliasLimit));
}

#[test]
fn a_fragment_cycle_is_refused() {
    let q =
        "query Loop { user { ...A } } fragment A on User { friends { ...B } } fragment B on User { friends { ...A } }";
    assert_eq!(inspect(json!({"query": q})), Err(Rejection::FragmentInvalid));
}

#[test]
fn a_fragment_fan_out_bomb_is_refused_for_fields_however_small_the_document() {
    // 10 spreads per level, 6 levels: a million fields from under 1 KB.
    let mut q = String::from("query Fan { ...L0 }");
    for l in 0..6 {
        let spreads: String = (0..10).map(|_| format!("...L{} ", l + 1)).collect();
        q.push_str(&format!(" fragment L{l} on Query {{ {spreads} }}"));
    }
    q.push_str(" fragment L6 on Query { leaf }");
    assert!(q.len() < 1_000);
    assert_eq!(inspect(json!({"query": q})), Err(Rejection::FieldLimit));
}

#[test]
fn huge_page_sizes_are_refused_for_cost_also_through_variables() {
    let q = "query Dump { orders(first: 1000000) { id lines(first: 1000) { sku } } }";
    assert_eq!(inspect(json!({"query": q})), Err(Rejection::CostLimit));
    let q = "query Dump($n: Int!) { orders(first: $n) { id total } }";
    assert_eq!(inspect(json!({"query": q, "variables": {"n": 100000}})), Err(Rejection::CostLimit));
    assert_eq!(inspect(json!({"query": q, "variables": {"n": 100}})).unwrap().cost, 201);
}

#[test]
fn the_graphiql_introspection_query_is_refused_when_introspection_is_off() {
    let q = "query IntrospectionQuery { __schema { queryType { name } mutationType { name } \
             types { ...FullType } } } fragment FullType on __Type { kind name fields(includeDeprecated: true) { name } }";
    assert_eq!(
        inspect(json!({"query": q, "operationName": "IntrospectionQuery"})),
        Err(Rejection::IntrospectionDisabled)
    );
    let open = Guard::new(&GraphqlPolicy { introspection: true, ..GraphqlPolicy::default() });
    let body = serde_json::to_vec(&json!({"query": q})).unwrap();
    let op = open.inspect(Request::Post { content_type: Some("application/json"), body: &body }).unwrap();
    assert_eq!(op.name.as_deref(), Some("IntrospectionQuery"));
}

#[test]
fn a_realistic_2kib_page_query_passes_with_its_name_type_and_measures() {
    let q = include_str!("product_page.graphql");
    assert!((1_900..=2_600).contains(&q.len()), "{} bytes", q.len());
    let op =
        inspect(json!({"query": q, "operationName": "ProductPage", "variables": {"handle": "shoe", "reviews": 5}}))
            .unwrap();
    assert_eq!(op.name.as_deref(), Some("ProductPage"));
    assert_eq!(op.kind, OperationType::Query);
    assert_eq!(op.depth, 6);
    assert!(op.fields > 100 && op.fields <= 500, "{op:?}");
    assert!(op.aliases > 0 && op.aliases <= 30, "{op:?}");
    assert!(op.cost > op.fields as u64 && op.cost <= 10_000, "{op:?}");
}

#[test]
fn a_document_over_the_byte_bound_is_refused_without_parsing() {
    let q = format!("query Big {{ a }} # {}", "x".repeat(70_000));
    assert_eq!(inspect(json!({"query": q})), Err(Rejection::DocumentTooLarge));
}
