//! API lifecycle headers, request body schemas, per-route counters and
//! shadow API discovery, against a real upstream on loopback.

mod support;

use http::Request;
use serde_json::json;
use support::*;

fn upstream(id: &str, addr: std::net::SocketAddr) -> serde_json::Value {
    json!({"id": id, "targets": [{"addr": addr.to_string()}]})
}

fn post(url: String, content_type: &str, body: &str) -> Request<TestBody> {
    Request::post(url).header("content-type", content_type).body(full(body.to_string())).unwrap()
}

#[tokio::test]
async fn request_bodies_are_checked_against_the_schema_before_the_upstream_sees_them() {
    let up = TestUpstream::echo("pets").await;
    let schema = json!({
        "type": "object", "required": ["name"],
        "properties": { "name": { "type": "string" }, "tags": { "type": "array", "items": { "type": "string" } } },
        "additionalProperties": false
    });
    let gw = TestGateway::start(
        json!([{"id": "create", "upstream": "pets", "paths": [{"exact": "/pets"}], "methods": ["GET", "POST"],
                "request_schema": schema}]),
        json!([upstream("pets", up.addr)]),
    )
    .await;
    let client = http1_client();

    let good = send(&client, post(gw.url("/pets"), "application/json", r#"{"name":"rex","tags":["dog"]}"#)).await;
    assert_eq!(good.status, 200);
    assert_eq!(good.json()["body_bytes"], 29, "the body reaches the upstream whole");

    let wrong = send(&client, post(gw.url("/pets"), "application/json", r#"{"name":"rex","tags":[7]}"#)).await;
    assert_eq!(wrong.status, 400);
    let e = wrong.json();
    assert_eq!(e["error"]["code"], "invalid_body");
    let message = e["error"]["message"].as_str().unwrap();
    assert!(message.starts_with("/tags/0: ") && message.contains("string"), "precise: {message}");

    let missing = send(&client, post(gw.url("/pets"), "application/json", r#"{"tags":[]}"#)).await;
    assert_eq!(missing.status, 400);
    assert!(missing.json()["error"]["message"].as_str().unwrap().contains("name"));

    let not_json = send(&client, post(gw.url("/pets"), "application/json", "{name: rex")).await;
    assert_eq!(not_json.status, 400);
    assert!(not_json.json()["error"]["message"].as_str().unwrap().contains("not valid JSON"));

    let form = send(&client, post(gw.url("/pets"), "text/plain", r#"{"name":"rex"}"#)).await;
    assert_eq!(form.status, 400);

    // What a validator and an upstream could read differently is refused.
    let twice = send(&client, post(gw.url("/pets"), "application/json", r#"{"name":"rex","name":7}"#)).await;
    assert_eq!(twice.status, 400);
    assert!(twice.json()["error"]["message"].as_str().unwrap().contains("appears twice"));
    let two_types = Request::post(gw.url("/pets"))
        .header("content-type", "application/json")
        .header("content-type", "text/plain")
        .body(full(r#"{"name":"rex"}"#))
        .unwrap();
    assert_eq!(send(&client, two_types).await.status, 400);
    // A bodiless read on the same route has nothing to check.
    assert_eq!(get(&gw.url("/pets")).await.status, 200);

    let big = format!(r#"{{"name":"{}"}}"#, "x".repeat(2 << 20));
    let too_big = send(&client, post(gw.url("/pets"), "application/json", &big)).await;
    assert_eq!(too_big.status, 413);
}

#[tokio::test]
async fn deprecated_apis_say_so_and_when_they_end() {
    let up = TestUpstream::echo("v1").await;
    let gw = TestGateway::start(
        json!([{"id": "old", "upstream": "v1", "paths": [{"prefix": "/v1"}],
                "api": {"name": "orders", "version": "1", "owner": "team-orders",
                        "deprecated": "2026-01-01", "sunset": "2026-12-31T23:59:59Z"}}]),
        json!([upstream("v1", up.addr)]),
    )
    .await;
    let a = get(&gw.url("/v1/orders")).await;
    assert_eq!(a.status, 200);
    assert_eq!(a.headers["deprecation"], "@1767225600");
    assert_eq!(a.headers["sunset"], "Thu, 31 Dec 2026 23:59:59 GMT");
}

#[tokio::test]
async fn routes_count_their_requests_and_unknown_paths_are_collected_by_template() {
    let up = TestUpstream::echo("app").await;
    let gw = TestGateway::start(
        json!([{"id": "users", "upstream": "app", "paths": [{"prefix": "/users"}]},
               {"id": "rest", "upstream": "app", "paths": [{"prefix": "/"}], "priority": -100}]),
        json!([upstream("app", up.addr)]),
    )
    .await;
    for i in 0..3 {
        assert_eq!(get(&gw.url(&format!("/users/{i}"))).await.status, 200);
    }
    for id in ["3f2504e0-4f89-11d3-9a0c-0305e82c3301", "9b2c1d6e-0000-4000-8000-000000000001"] {
        assert_eq!(get(&gw.url(&format!("/internal/export/{id}"))).await.status, 200, "served by the catch-all");
    }
    let traffic = gw.gateway.route_traffic();
    let users = traffic.iter().find(|(id, _, _)| id.as_str() == "users").unwrap();
    assert_eq!(users.1, 3);
    let rest = traffic.iter().find(|(id, _, _)| id.as_str() == "rest").unwrap();
    assert_eq!(rest.1, 2);

    let (top, overflow) = gw.gateway.unknown_paths().top(10);
    assert_eq!(overflow, 0);
    assert_eq!(top, vec![("GET".to_string(), "/internal/export/{uuid}".to_string(), 2)]);
}
