//! Body transformation against a real upstream on loopback: a JSON client
//! in front of an XML upstream, JSON field edits each way, and what happens
//! to bodies that are invalid, tricky or too large on either side.

mod support;

use std::sync::{Arc, Mutex};

use bytes::Bytes;
use http::Request;
use http_body_util::BodyExt;
use hyper::body::Incoming;
use hyper::Response;
use serde_json::{json, Value};
use support::*;

/// What the upstream saw of one request.
#[derive(Clone, Debug, Default)]
struct Seen {
    content_type: Option<String>,
    content_length: Option<String>,
    range: Option<String>,
    body: Bytes,
}

type Log = Arc<Mutex<Vec<Seen>>>;

/// An upstream that records each request and answers `body` as `content_type`.
async fn recording(content_type: &'static str, body: impl Into<Bytes>) -> (TestUpstream, Log) {
    let log: Log = Arc::default();
    let l = log.clone();
    let body: Bytes = body.into();
    let up = TestUpstream::start(move |req: Request<Incoming>| {
        let l = l.clone();
        let body = body.clone();
        async move {
            let header = |n: &str| req.headers().get(n).and_then(|v| v.to_str().ok()).map(str::to_string);
            let mut seen = Seen {
                content_type: header("content-type"),
                content_length: header("content-length"),
                range: header("range"),
                body: Bytes::new(),
            };
            seen.body = req.into_body().collect().await.map(|b| b.to_bytes()).unwrap_or_default();
            l.lock().unwrap().push(seen);
            let mut resp = Response::new(full(body));
            resp.headers_mut().insert("content-type", content_type.parse().unwrap());
            resp.headers_mut().insert("etag", "\"xml-v1\"".parse().unwrap());
            resp
        }
    })
    .await;
    (up, log)
}

fn upstream(addr: std::net::SocketAddr) -> Value {
    json!([{"id": "u", "targets": [{"addr": addr.to_string()}]}])
}

async fn gateway_for(up: &TestUpstream, transform: Value) -> TestGateway {
    TestGateway::start(
        json!([{"id": "orders", "upstream": "u", "paths": [{"prefix": "/orders"}], "transform": transform}]),
        upstream(up.addr),
    )
    .await
}

async fn post(gw: &TestGateway, content_type: &str, body: impl Into<Bytes>) -> Answer {
    let req = Request::post(gw.url("/orders")).header("content-type", content_type).body(full(body.into())).unwrap();
    send(&http1_client(), req).await
}

const ORDER_XML: &str = r#"<?xml version="1.0" encoding="UTF-8"?>
<order id="o-42" xmlns:p="urn:pay">
  <status>accepted</status>
  <item sku="A1"><qty>2</qty></item>
  <item sku="B2"><qty>1</qty></item>
  <p:payment method="card"><![CDATA[**** 4242]]></p:payment>
  <note/>
  <internal>drop me</internal>
</order>"#;

#[tokio::test]
async fn a_json_request_reaches_an_xml_upstream_as_the_documented_xml() {
    let (up, log) = recording("application/xml", "<ok/>").await;
    let gw = gateway_for(&up, json!({"request": {"json_to_xml": {"root": "order"}}})).await;
    let a = post(
        &gw,
        "application/json",
        r##"{"@id":"o-42","customer":{"@vip":true,"#text":"Ann & Bob"},"item":[{"sku":"A1","qty":2},{"sku":"B2","qty":1}],"note":null}"##,
    )
    .await;
    assert_eq!(a.status, 200);
    let seen = log.lock().unwrap()[0].clone();
    let expected = r#"<?xml version="1.0" encoding="UTF-8"?><order id="o-42"><customer vip="true">Ann &amp; Bob</customer><item><sku>A1</sku><qty>2</qty></item><item><sku>B2</sku><qty>1</qty></item><note/></order>"#;
    assert_eq!(seen.body, expected.as_bytes());
    assert_eq!(seen.content_type.as_deref(), Some("application/xml"));
    assert_eq!(seen.content_length, Some(expected.len().to_string()));
}

#[tokio::test]
async fn the_upstreams_xml_answer_reaches_the_client_as_json() {
    let (up, _log) = recording("application/xml; charset=utf-8", ORDER_XML).await;
    let gw = gateway_for(&up, json!({"response": {"xml_to_json": {"array_paths": ["item"]}}})).await;
    let a = send(&http1_client(), Request::get(gw.url("/orders/42")).body(full("")).unwrap()).await;
    assert_eq!(a.status, 200);
    assert_eq!(a.headers["content-type"], "application/json");
    assert_eq!(a.headers["content-length"], a.body.len().to_string());
    assert!(!a.headers.contains_key("etag"), "the upstream's ETag described the XML");
    assert_eq!(
        a.json(),
        json!({"@id": "o-42", "@xmlns:p": "urn:pay", "status": "accepted",
               "item": [{"@sku": "A1", "qty": "2"}, {"@sku": "B2", "qty": "1"}],
               "p:payment": {"@method": "card", "#text": "**** 4242"}, "note": null, "internal": "drop me"})
    );
    // Members keep the document's order.
    let text = String::from_utf8(a.body.to_vec()).unwrap();
    assert!(text.find("\"status\"") < text.find("\"item\"") && text.find("\"item\"") < text.find("\"note\""));

    // A HEAD answer has no body to transform: its headers pass unchanged.
    let head = send(&http1_client(), Request::head(gw.url("/orders/42")).body(full("")).unwrap()).await;
    assert_eq!(head.status, 200);
    assert!(head.headers["content-type"].to_str().unwrap().starts_with("application/xml"));
}

#[tokio::test]
async fn field_edits_apply_on_the_request_and_on_the_response() {
    let (up, log) = recording("application/xml", ORDER_XML).await;
    let gw = gateway_for(
        &up,
        json!({
            "request": {"json_to_xml": {"root": "order", "declaration": false},
                        "json": [{"add": {"path": "/@source", "value": "gateway"}},
                                 {"remove": {"path": "/debug"}},
                                 {"rename": {"path": "/id", "to": "orderId"}}]},
            "response": {"xml_to_json": {},
                         "json": [{"remove": {"path": "/internal"}},
                                  {"rename": {"path": "/status", "to": "state"}},
                                  {"add": {"path": "/via", "value": {"gateway": "raftgate"}}}]},
        }),
    )
    .await;
    let a = post(&gw, "application/json", r#"{"id":"o-1","debug":true,"total":9.5}"#).await;
    assert_eq!(a.status, 200);
    assert_eq!(
        log.lock().unwrap()[0].body,
        r#"<order source="gateway"><orderId>o-1</orderId><total>9.5</total></order>"#.as_bytes()
    );
    let body = a.json();
    assert_eq!(body["state"], "accepted");
    assert_eq!(body["via"], json!({"gateway": "raftgate"}));
    assert!(body.get("internal").is_none() && body.get("status").is_none());
}

#[tokio::test]
async fn json_edits_alone_keep_json_on_both_sides() {
    let (up, log) = recording("application/json", r#"{"b":1,"secret":"s","a":2}"#).await;
    let gw = gateway_for(
        &up,
        json!({"request": {"json": [{"rename": {"path": "/x", "to": "y"}}]},
               "response": {"json": [{"remove": {"path": "/secret"}}]}}),
    )
    .await;
    let a = post(&gw, "application/vnd.api+json", r#"{"x":1, "z":[true]}"#).await;
    assert_eq!(a.status, 200);
    let seen = log.lock().unwrap()[0].clone();
    assert_eq!(seen.body, r#"{"y":1,"z":[true]}"#.as_bytes());
    assert_eq!(seen.content_type.as_deref(), Some("application/vnd.api+json"));
    assert_eq!(a.body, r#"{"b":1,"a":2}"#.as_bytes());
}

#[tokio::test]
async fn invalid_json_from_the_client_gets_400_and_the_upstream_sees_nothing() {
    let (up, log) = recording("application/xml", "<ok/>").await;
    let gw = gateway_for(&up, json!({"request": {"json_to_xml": {"root": "order"}}})).await;
    for (body, code) in [
        (r#"{"id": "#, "invalid_json"),
        (r#"{"a":1,"a":2}"#, "invalid_json"),
        (r#"{"a":1} trailing"#, "invalid_json"),
        (r#"{"first name":"Ann"}"#, "json_not_xml_mappable"),
        (r#"[1,2]"#, "json_not_xml_mappable"),
        (r#"{"a":[[1]]}"#, "json_not_xml_mappable"),
    ] {
        let a = post(&gw, "application/json", body).await;
        assert_eq!(a.status, 400, "{body}");
        assert_eq!(a.json()["error"]["code"], code, "{body}");
        assert!(!String::from_utf8_lossy(&a.body).contains("first name"), "the input is never echoed");
    }
    let deep = format!("{}1{}", "[".repeat(70), "]".repeat(70));
    let a = post(&gw, "application/json", deep).await;
    assert_eq!((a.status, a.json()["error"]["code"].as_str()), (400, Some("invalid_json")));
    let a = post(&gw, "text/plain", "{}").await;
    assert_eq!((a.status, a.json()["error"]["code"].as_str()), (415, Some("unsupported_media_type")));
    assert!(log.lock().unwrap().is_empty(), "nothing reached the upstream");
}

#[tokio::test]
async fn invalid_xml_and_entity_tricks_from_the_upstream_get_502() {
    for body in [
        "<order><status>accepted</order>",
        "not xml at all",
        "<a/><b/>",
        r#"<?xml version="1.0"?><!DOCTYPE lolz [<!ENTITY lol "lol"><!ENTITY lol2 "&lol;&lol;&lol;">]><lolz>&lol2;</lolz>"#,
        r#"<!DOCTYPE r [<!ENTITY xxe SYSTEM "file:///etc/passwd">]><r>&xxe;</r>"#,
        "<r>&xxe;</r>",
        "<r>\u{1}</r>",
    ] {
        let (up, _log) = recording("text/xml", body).await;
        let gw = gateway_for(&up, json!({"response": {"xml_to_json": {}}})).await;
        let a = send(&http1_client(), Request::get(gw.url("/orders")).body(full("")).unwrap()).await;
        assert_eq!(a.status, 502, "{body}");
        assert_eq!(a.json()["error"]["code"], "upstream_invalid_xml", "{body}");
        let text = String::from_utf8_lossy(&a.body);
        assert!(!text.contains("passwd") && !text.contains("lol"), "nothing of the upstream's body is echoed");
    }
}

#[tokio::test]
async fn invalid_json_from_the_upstream_gets_502_when_the_route_edits_it() {
    let (up, _log) = recording("application/json", "{not json").await;
    let gw = gateway_for(&up, json!({"response": {"json": [{"remove": {"path": "/a"}}]}})).await;
    let a = send(&http1_client(), Request::get(gw.url("/orders")).body(full("")).unwrap()).await;
    assert_eq!((a.status, a.json()["error"]["code"].as_str()), (502, Some("upstream_invalid_json")));
}

#[tokio::test]
async fn a_response_the_route_does_not_transform_passes_unchanged() {
    let (up, _log) = recording("text/plain", "<b>not converted</b>").await;
    let gw = gateway_for(&up, json!({"response": {"xml_to_json": {}}})).await;
    let a = send(&http1_client(), Request::get(gw.url("/orders")).body(full("")).unwrap()).await;
    assert_eq!(a.status, 200);
    assert_eq!(a.body, "<b>not converted</b>".as_bytes());
    assert_eq!(a.headers["etag"], "\"xml-v1\"");
}

#[tokio::test]
async fn range_is_not_forwarded_on_a_route_that_transforms_responses() {
    let (up, log) = recording("application/xml", "<r>x</r>").await;
    let gw = gateway_for(&up, json!({"response": {"xml_to_json": {}}})).await;
    let req = Request::get(gw.url("/orders")).header("range", "bytes=0-3").body(full("")).unwrap();
    let a = send(&http1_client(), req).await;
    assert_eq!((a.status, a.body.as_ref()), (200, br#""x""#.as_ref()));
    assert_eq!(log.lock().unwrap()[0].range, None);
}

#[tokio::test]
async fn oversize_bodies_are_refused_both_ways() {
    // The client's body beyond the transform's bound: 413, nothing upstream.
    let (up, log) = recording("application/xml", "<ok/>").await;
    let gw = gateway_for(&up, json!({"request": {"json_to_xml": {}}, "max_body_bytes": 64})).await;
    let big = format!(r#"{{"a":"{}"}}"#, "x".repeat(100));
    let a = post(&gw, "application/json", big).await;
    assert_eq!((a.status, a.json()["error"]["code"].as_str()), (413, Some("body_too_large")));
    // Within the input bound but its XML beyond the output bound: 413 with its own code.
    let gw = gateway_for(&up, json!({"request": {"json_to_xml": {}}, "max_output_bytes": 64})).await;
    let a = post(&gw, "application/json", r#"{"a":1,"b":2,"c":3,"d":4,"e":5,"f":6,"g":7}"#).await;
    assert_eq!((a.status, a.json()["error"]["code"].as_str()), (413, Some("transformed_body_too_large")));
    assert!(log.lock().unwrap().is_empty());

    // The upstream's body beyond the bound: 502, whether it says so up front or not.
    let big_xml = format!("<r>{}</r>", "<i>x</i>".repeat(100));
    let (up, _log) = recording("application/xml", big_xml).await;
    let gw = gateway_for(&up, json!({"response": {"xml_to_json": {}}, "max_body_bytes": 256})).await;
    let a = send(&http1_client(), Request::get(gw.url("/orders")).body(full("")).unwrap()).await;
    assert_eq!((a.status, a.json()["error"]["code"].as_str()), (502, Some("upstream_body_too_large")));
    let chunked = TestUpstream::start(|_req| async {
        let chunks = futures::stream::iter((0..64).map(|_| {
            Ok::<_, std::convert::Infallible>(hyper::body::Frame::data(Bytes::from_static(b"<i>xxxxxxxx</i>")))
        }));
        let body = http_body_util::StreamBody::new(chunks).map_err(|never| match never {}).boxed_unsync();
        let mut resp = Response::new(body);
        resp.headers_mut().insert("content-type", "application/xml".parse().unwrap());
        resp
    })
    .await;
    let gw = gateway_for(&chunked, json!({"response": {"xml_to_json": {}}, "max_body_bytes": 256})).await;
    let a = send(&http1_client(), Request::get(gw.url("/orders")).body(full("")).unwrap()).await;
    assert_eq!((a.status, a.json()["error"]["code"].as_str()), (502, Some("upstream_body_too_large")));
    // Within the input bound, but its JSON beyond the output bound.
    let gw = gateway_for(&up, json!({"response": {"xml_to_json": {}}, "max_output_bytes": 128})).await;
    let a = send(&http1_client(), Request::get(gw.url("/orders")).body(full("")).unwrap()).await;
    assert_eq!((a.status, a.json()["error"]["code"].as_str()), (502, Some("upstream_body_too_large")));
}

#[tokio::test]
async fn a_bodiless_request_on_a_transforming_route_passes_unchanged() {
    let (up, log) = recording("application/xml", "<r/>").await;
    let gw = gateway_for(&up, json!({"request": {"json_to_xml": {}}, "response": {"xml_to_json": {}}})).await;
    let a = send(&http1_client(), Request::get(gw.url("/orders")).body(full("")).unwrap()).await;
    assert_eq!((a.status, a.json()), (200, Value::Null));
    assert!(log.lock().unwrap()[0].body.is_empty());
}

#[tokio::test]
async fn a_body_large_enough_for_the_blocking_pool_is_transformed_the_same_way() {
    let (up, log) = recording("application/xml", "<ok/>").await;
    let gw = gateway_for(&up, json!({"request": {"json_to_xml": {"declaration": false}}})).await;
    let items: Vec<Value> =
        (0..6000).map(|i| json!({"n": i, "pad": "0123456789012345678901234567890123456789"})).collect();
    let body = serde_json::to_vec(&json!({"item": items})).unwrap();
    assert!(body.len() > 256 << 10, "beyond the inline bound");
    let a = post(&gw, "application/json", body).await;
    assert_eq!(a.status, 200);
    let seen = log.lock().unwrap()[0].clone();
    assert!(seen.body.starts_with(b"<root><item><n>0</n><pad>"));
    assert!(seen.body.ends_with(b"<n>5999</n><pad>0123456789012345678901234567890123456789</pad></item></root>"));
    assert_eq!(seen.content_length, Some(seen.body.len().to_string()));
}
