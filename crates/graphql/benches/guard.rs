//! What the GraphQL guard costs per request: a realistic storefront query
//! of about 2 KiB (named operation, variables, fragments, aliases, nested
//! connections with `first`) sent as a JSON POST body, from bytes to a
//! measured operation; the same document parsed and walked alone; and, as
//! the baseline, apollo-parser building its tree alone.
//!
//! Run: `cargo bench -p raftgate-graphql --bench guard`.

use std::hint::black_box;

use criterion::{criterion_group, criterion_main, Criterion, Throughput};
use raftgate_graphql::{Guard, Request};
use raftgate_model::graphql::GraphqlPolicy;
use serde_json::{json, Map};

/// The page query, shared with the tests (`tests/product_page.graphql`).
const QUERY: &str = include_str!("../tests/product_page.graphql");

fn bench(c: &mut Criterion) {
    let policy = GraphqlPolicy { max_aliases: 30, max_fields: 500, max_cost: 10_000, ..GraphqlPolicy::default() };
    let guard = Guard::new(&policy);
    let body = serde_json::to_vec(&json!({
        "query": QUERY,
        "operationName": "ProductPage",
        "variables": {"handle": "trail-running-shoe-mens", "reviews": 5, "locale": "en-IE"},
    }))
    .unwrap_or_default();
    let request = Request::Post { content_type: Some("application/json"), body: &body };
    let op = guard.inspect(request);
    eprintln!("document: {} bytes, body: {} bytes, operation: {op:?}", QUERY.len(), body.len());
    assert!(op.is_ok());

    let mut group = c.benchmark_group("graphql_guard");
    group.throughput(Throughput::Bytes(body.len() as u64));
    group.bench_function("post_json_2kib_query", |b| b.iter(|| guard.inspect(black_box(request))));
    let none = Map::new();
    group.throughput(Throughput::Bytes(QUERY.len() as u64));
    group.bench_function("document_2kib_query", |b| {
        b.iter(|| guard.inspect_document(black_box(QUERY), Some("ProductPage"), &none, false))
    });
    // Baseline in the same run: apollo-parser alone building the syntax tree
    // of the same document, the floor under any guard that parses it.
    group.bench_function("baseline_parse_only_2kib_query", |b| {
        b.iter(|| apollo_parser::Parser::new(black_box(QUERY)).recursion_limit(64).parse().errors().len())
    });
    group.finish();
}

criterion_group!(benches, bench);
criterion_main!(benches);
