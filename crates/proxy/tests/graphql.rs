//! GraphQL routes against a real upstream on loopback: admitted operations
//! reach the upstream with their body intact, refused ones get a
//! GraphQL-shaped 400 and never do, GET queries work, and a rate limit can
//! key on the operation's name.

mod support;

use std::sync::{Arc, Mutex};

use bytes::Bytes;
use http::Request;
use http_body_util::BodyExt;
use hyper::Response;
use serde_json::{json, Value};
use support::*;

/// What the upstream received: method, query string, Content-Length and body.
type Seen = Arc<Mutex<Vec<(String, String, Option<String>, Bytes)>>>;

async fn recording() -> (TestUpstream, Seen) {
    let seen: Seen = Arc::default();
    let log = seen.clone();
    let up = TestUpstream::start(move |req: Request<hyper::body::Incoming>| {
        let log = log.clone();
        async move {
            let method = req.method().to_string();
            let query = req.uri().query().unwrap_or("").to_string();
            let len = req.headers().get("content-length").map(|v| v.to_str().unwrap_or("").to_string());
            let body = req.into_body().collect().await.map(|b| b.to_bytes()).unwrap_or_default();
            log.lock().unwrap().push((method, query, len, body));
            let mut resp = Response::new(full(r#"{"data":{}}"#));
            resp.headers_mut().insert("content-type", "application/json".parse().unwrap());
            resp
        }
    })
    .await;
    (up, seen)
}

async fn gateway(route: Value) -> (TestGateway, TestUpstream, Seen) {
    let (up, seen) = recording().await;
    let gw = TestGateway::start(json!([route]), json!([{"id": "u", "targets": [{"addr": up.addr.to_string()}]}])).await;
    (gw, up, seen)
}

fn graphql_route() -> Value {
    json!({"id": "gql", "upstream": "u", "paths": [{"exact": "/graphql"}], "methods": ["GET", "POST"],
           "graphql": {"max_depth": 5, "max_aliases": 3, "max_fields": 50, "max_cost": 500,
                       "max_document_bytes": 4096}})
}

async fn post(gw: &TestGateway, content_type: &str, body: impl Into<Bytes>) -> Answer {
    let req = Request::post(gw.url("/graphql")).header("content-type", content_type).body(full(body)).unwrap();
    send(&http1_client(), req).await
}

async fn post_json(gw: &TestGateway, body: Value) -> Answer {
    post(gw, "application/json", body.to_string()).await
}

#[tokio::test]
async fn a_valid_query_is_forwarded_with_its_body_intact() {
    let (gw, _up, seen) = gateway(graphql_route()).await;
    let body = json!({"query": "query Me($n: Int) { me { id friends(first: $n) { name } } }",
                      "operationName": "Me", "variables": {"n": 10}})
    .to_string();
    let a = post(&gw, "application/json", body.clone()).await;
    assert_eq!(a.status, 200, "{:?}", a.body);
    let seen = seen.lock().unwrap();
    assert_eq!(seen.len(), 1);
    let (method, _, len, got) = &seen[0];
    assert_eq!(method, "POST");
    assert_eq!(got.as_ref(), body.as_bytes());
    assert_eq!(len.as_deref(), Some(body.len().to_string().as_str()));
    let c = gw.gateway.route_metrics().into_iter().find(|(id, _)| id.as_str() == "gql").unwrap().1;
    assert_eq!(c.metrics.graphql.by_name("Me"), 1);
    assert_eq!(c.metrics.graphql.by_type(raftgate_graphql::OperationType::Query), 1);
}

#[tokio::test]
async fn refused_operations_get_a_graphql_shaped_400_and_never_reach_the_upstream() {
    let (gw, _up, seen) = gateway(graphql_route()).await;
    let deep = format!("{{ {} x {} }}", "a { ".repeat(6), "} ".repeat(6));
    let aliases = "{ a: f b: f c: f d: f }";
    let cost = "{ users(first: 1000) { id } }";
    let introspection = "{ __schema { types { name } } }";
    let oversize = format!("{{ a }} #{}", "x".repeat(5_000));
    let ambiguous = "query A { a } query B { b }";
    let cases: Vec<(Value, &str)> = vec![
        (json!({"query": deep}), "GRAPHQL_DEPTH_LIMIT"),
        (json!({"query": aliases}), "GRAPHQL_ALIAS_LIMIT"),
        (json!({"query": cost}), "GRAPHQL_COST_LIMIT"),
        (json!({"query": introspection}), "GRAPHQL_INTROSPECTION_DISABLED"),
        (json!({"query": "{ a "}), "GRAPHQL_PARSE_FAILED"),
        (json!({"query": oversize}), "GRAPHQL_DOCUMENT_TOO_LARGE"),
        (json!({"query": ambiguous}), "GRAPHQL_OPERATION_AMBIGUOUS"),
        (json!({"query": ambiguous, "operationName": "C"}), "GRAPHQL_OPERATION_NOT_FOUND"),
        (json!([{"query": "{ a }"}, {"query": "{ b }"}]), "GRAPHQL_BATCH_NOT_SUPPORTED"),
        (json!({"query": "{ ...F } fragment F on Q { ...F }"}), "GRAPHQL_FRAGMENT_INVALID"),
        (json!({"variables": {}}), "GRAPHQL_REQUEST_INVALID"),
    ];
    for (body, code) in cases {
        let a = post_json(&gw, body).await;
        assert_eq!(a.status, 400, "{code}");
        assert_eq!(a.headers["content-type"], "application/json", "{code}");
        let v = a.json();
        assert_eq!(v["errors"][0]["extensions"]["code"], code, "{v}");
        assert!(v["errors"][0]["message"].as_str().is_some_and(|m| !m.is_empty() && m.len() < 120), "{v}");
        assert!(v["errors"][0]["extensions"]["request_id"].is_string(), "{v}");
        assert!(v.get("data").is_none(), "{v}");
    }
    // A body larger than the route reads at all: refused the same way.
    let huge = json!({"query": "{ a }", "variables": {"pad": "x".repeat(200_000)}});
    let a = post_json(&gw, huge).await;
    assert_eq!(a.status, 400);
    assert_eq!(a.json()["errors"][0]["extensions"]["code"], "GRAPHQL_DOCUMENT_TOO_LARGE");
    let a = post(&gw, "text/plain", "{ a }").await;
    assert_eq!(a.json()["errors"][0]["extensions"]["code"], "GRAPHQL_REQUEST_INVALID");
    assert!(seen.lock().unwrap().is_empty(), "nothing refused was forwarded");
    let c = gw.gateway.route_metrics().into_iter().find(|(id, _)| id.as_str() == "gql").unwrap().1;
    assert_eq!(c.metrics.graphql.rejections(raftgate_graphql::Rejection::DepthLimit), 1);
    assert_eq!(c.metrics.graphql.rejections(raftgate_graphql::Rejection::DocumentTooLarge), 2);
}

#[tokio::test]
async fn get_queries_are_forwarded_and_get_mutations_refused() {
    let (gw, _up, seen) = gateway(graphql_route()).await;
    let a = get(&gw.url("/graphql?query=query%20Me%20%7B%20me%20%7B%20id%20%7D%20%7D&operationName=Me")).await;
    assert_eq!(a.status, 200, "{:?}", a.body);
    let a = get(&gw.url("/graphql?query=mutation%20%7B%20like%20%7D")).await;
    assert_eq!(a.status, 400);
    assert_eq!(a.json()["errors"][0]["extensions"]["code"], "GRAPHQL_GET_NOT_ALLOWED");
    let seen = seen.lock().unwrap();
    assert_eq!(seen.len(), 1);
    assert_eq!(seen[0].0, "GET");
    assert!(seen[0].1.starts_with("query=query%20Me"), "the query string is forwarded as sent");
}

#[tokio::test]
async fn an_application_graphql_body_is_forwarded_as_sent() {
    let (gw, _up, seen) = gateway(graphql_route()).await;
    let a = post(&gw, "application/graphql", "query Feed { feed(first: 5) { id } }").await;
    assert_eq!(a.status, 200, "{:?}", a.body);
    assert_eq!(seen.lock().unwrap()[0].3.as_ref(), b"query Feed { feed(first: 5) { id } }");
}

#[tokio::test]
async fn a_rate_limit_keyed_by_operation_name_limits_one_operation_and_not_another() {
    let mut route = graphql_route();
    route["limits"] = json!({"rate_limits": [{"key": ["graphql_operation"], "rate_per_s": 1, "burst": 2}]});
    let (gw, _up, seen) = gateway(route).await;
    let op = |name: &str| json!({"query": format!("query {name} {{ a }}"), "operationName": name});
    for i in 0..2 {
        assert_eq!(post_json(&gw, op("Search")).await.status, 200, "Search {i}");
    }
    let limited = post_json(&gw, op("Search")).await;
    assert_eq!(limited.status, 429);
    assert_eq!(limited.json()["error"]["code"], "rate_limited");
    assert_eq!(post_json(&gw, op("Profile")).await.status, 200, "another operation has its own bucket");
    assert_eq!(seen.lock().unwrap().len(), 3);
}

#[tokio::test]
async fn the_later_body_stages_check_the_bytes_the_graphql_stage_read() {
    let mut route = graphql_route();
    route["waf"] = json!({"mode": "block", "inspect_body": true});
    route["request_schema"] = json!({"type": "object", "required": ["query"]});
    let (gw, _up, seen) = gateway(route).await;
    let clean = json!({"query": "query Q($t: String) { search(term: $t) { id } }", "variables": {"t": "shoes"}});
    assert_eq!(post_json(&gw, clean).await.status, 200);
    let attack = json!({"query": "query Q($t: String) { search(term: $t) { id } }",
                        "variables": {"t": "' union select username, password from users--"}});
    let a = post_json(&gw, attack).await;
    assert_eq!(a.status, 403, "{:?}", a.body);
    assert_eq!(a.json()["error"]["code"], "request_blocked");
    assert_eq!(seen.lock().unwrap().len(), 1);
}
