//! Edge stages against a real upstream on loopback: CORS, IP and country
//! rules, the response cache, compression, trace propagation and span sinks.

mod support;

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;

use http::Request;
use hyper::Response;
use raftgate_proxy::gateway::EdgeConfig;
use raftgate_proxy::{GatewayConfig, Limits, TrafficConfig};
use serde_json::json;
use support::*;

fn upstream(id: &str, addr: std::net::SocketAddr) -> serde_json::Value {
    json!({"id": id, "targets": [{"addr": addr.to_string()}]})
}

/// An upstream that counts its requests and answers `body` with `headers`.
async fn counting(
    body: &'static str,
    headers: &'static [(&'static str, &'static str)],
) -> (TestUpstream, Arc<AtomicUsize>) {
    let hits = Arc::new(AtomicUsize::new(0));
    let h = hits.clone();
    let up = TestUpstream::start(move |_req| {
        let h = h.clone();
        async move {
            h.fetch_add(1, Ordering::SeqCst);
            let mut resp = Response::new(full(body));
            for (k, v) in headers {
                resp.headers_mut().insert(*k, v.parse().unwrap());
            }
            resp
        }
    })
    .await;
    (up, hits)
}

fn req(method: &str, url: String, headers: &[(&str, &str)]) -> Request<TestBody> {
    let mut b = Request::builder().method(method).uri(url);
    for (k, v) in headers {
        b = b.header(*k, *v);
    }
    b.body(full("")).unwrap()
}

#[tokio::test]
async fn a_cors_preflight_is_answered_by_the_gateway_and_never_forwarded() {
    let (up, hits) = counting("{}", &[("content-type", "application/json")]).await;
    let gw = TestGateway::start(
        json!([{"id": "api", "upstream": "u", "paths": [{"prefix": "/api"}], "methods": ["GET", "POST"],
                "cors": {"allow_origins": ["https://*.example.com"], "expose_headers": ["x-total"],
                         "allow_credentials": true, "max_age_s": 600}}]),
        json!([upstream("u", up.addr)]),
    )
    .await;
    let client = http1_client();
    let pre = [
        ("origin", "https://app.example.com"),
        ("access-control-request-method", "POST"),
        ("access-control-request-headers", "Content-Type, X-Trace"),
    ];
    let a = send(&client, req("OPTIONS", gw.url("/api/items"), &pre)).await;
    assert_eq!(a.status, 204);
    assert_eq!(a.headers["access-control-allow-origin"], "https://app.example.com");
    assert_eq!(a.headers["access-control-allow-credentials"], "true");
    assert_eq!(a.headers["access-control-allow-methods"], "GET, POST");
    assert_eq!(a.headers["access-control-allow-headers"], "content-type, x-trace");
    assert_eq!(a.headers["access-control-max-age"], "600");
    assert!(a.headers.contains_key("x-request-id"));
    assert_eq!(hits.load(Ordering::SeqCst), 0, "preflights never reach the upstream");

    // An origin, or a method, the route does not allow.
    let bad_origin = [("origin", "https://evil.test"), ("access-control-request-method", "POST")];
    let a = send(&client, req("OPTIONS", gw.url("/api/items"), &bad_origin)).await;
    assert_eq!(a.status, 403);
    assert_eq!(a.json()["error"]["code"], "cors_rejected");
    // A method no route takes here: the path's 405, as without CORS.
    let bad_method = [("origin", "https://app.example.com"), ("access-control-request-method", "DELETE")];
    let a = send(&client, req("OPTIONS", gw.url("/api/items"), &bad_method)).await;
    assert_eq!(a.status, 405);
    assert!(!a.headers.contains_key("access-control-allow-origin"));

    // The actual request: forwarded, with the CORS headers on the answer.
    let a = send(&client, req("GET", gw.url("/api/items"), &[("origin", "https://app.example.com")])).await;
    assert_eq!(a.status, 200);
    assert_eq!(a.headers["access-control-allow-origin"], "https://app.example.com");
    assert_eq!(a.headers["access-control-expose-headers"], "x-total");
    assert!(a.headers.get_all("vary").iter().any(|v| v == "Origin"));
    let a = send(&client, req("GET", gw.url("/api/items"), &[("origin", "https://evil.test")])).await;
    assert_eq!(a.status, 200);
    assert!(!a.headers.contains_key("access-control-allow-origin"));
    assert_eq!(hits.load(Ordering::SeqCst), 2);
}

#[tokio::test]
async fn ip_rules_refuse_denied_addresses_globally_and_per_route() {
    let up = TestUpstream::echo("u").await;
    let routes = json!([
        {"id": "open", "upstream": "u", "paths": [{"prefix": "/open"}]},
        {"id": "office", "upstream": "u", "paths": [{"prefix": "/office"}], "ip": {"allow": ["10.0.0.0/8"]}},
        {"id": "nolocal", "upstream": "u", "paths": [{"prefix": "/nolocal"}], "ip": {"deny": ["127.0.0.0/8"]}}
    ]);
    let gw = TestGateway::start(routes.clone(), json!([upstream("u", up.addr)])).await;
    assert_eq!(get(&gw.url("/open")).await.status, 200);
    let a = get(&gw.url("/office")).await;
    assert_eq!(a.status, 403);
    assert_eq!(a.json()["error"]["code"], "ip_forbidden");
    assert_eq!(get(&gw.url("/nolocal")).await.status, 403);

    // A client address from X-Forwarded-For counts only through a trusted proxy.
    let config = GatewayConfig {
        traffic: TrafficConfig { trusted_proxies: vec!["127.0.0.1".parse().unwrap()], ..Default::default() },
        edge: EdgeConfig {
            global_ip: Some(serde_json::from_value(json!({"deny": ["192.0.2.0/24"]})).unwrap()),
            ..Default::default()
        },
        ..Default::default()
    };
    let gw = TestGateway::start_config(routes, json!([upstream("u", up.addr)]), config, None).await;
    let client = http1_client();
    let from = |ip: &'static str| [("x-forwarded-for", ip)];
    assert_eq!(send(&client, req("GET", gw.url("/office"), &from("10.1.2.3"))).await.status, 200);
    assert_eq!(send(&client, req("GET", gw.url("/open"), &from("192.0.2.9"))).await.status, 403, "global deny");
    assert_eq!(send(&client, req("GET", gw.url("/open"), &from("198.51.100.1"))).await.status, 200);
}

#[tokio::test]
async fn country_rules_follow_the_geoip_database_and_fail_closed_without_it() {
    use raftgate_geoip::{writer, GeoDb};
    let up = TestUpstream::echo("u").await;
    let db = writer::build(
        &[
            ("10.1.0.0".parse().unwrap(), 16, "DE".parse().unwrap()),
            ("10.2.0.0".parse().unwrap(), 16, "FR".parse().unwrap()),
        ],
        "Test-Country",
    )
    .unwrap();
    let routes = json!([{"id": "eu", "upstream": "u", "paths": [{"prefix": "/"}], "ip": {"allow_countries": ["DE"]}}]);
    let trusted = TrafficConfig { trusted_proxies: vec!["127.0.0.1".parse().unwrap()], ..Default::default() };
    let config = GatewayConfig {
        traffic: trusted.clone(),
        edge: EdgeConfig { geo: Some(Arc::new(GeoDb::from_bytes(db).unwrap())), ..Default::default() },
        ..Default::default()
    };
    let gw = TestGateway::start_config(routes.clone(), json!([upstream("u", up.addr)]), config, None).await;
    let client = http1_client();
    let from = |ip: &'static str| [("x-forwarded-for", ip)];
    assert_eq!(send(&client, req("GET", gw.url("/x"), &from("10.1.9.9"))).await.status, 200);
    assert_eq!(send(&client, req("GET", gw.url("/x"), &from("10.2.9.9"))).await.status, 403);
    assert_eq!(send(&client, req("GET", gw.url("/x"), &from("10.3.9.9"))).await.status, 403, "unknown: refused");

    // No database (missing or corrupt at start): country rules refuse.
    let config = GatewayConfig { traffic: trusted, ..Default::default() };
    let gw = TestGateway::start_config(routes, json!([upstream("u", up.addr)]), config, None).await;
    assert_eq!(send(&client, req("GET", gw.url("/x"), &from("10.1.9.9"))).await.status, 403);
}

#[tokio::test]
async fn a_cached_response_is_served_from_memory_until_purged() {
    let (up, hits) = counting(r#"{"items":[1,2,3]}"#, &[("content-type", "application/json")]).await;
    let gw = TestGateway::start(
        json!([{"id": "list", "upstream": "u", "paths": [{"prefix": "/items"}],
                "cache": {"ttl_s": 60, "key_query": ["page"]}}]),
        json!([upstream("u", up.addr)]),
    )
    .await;
    let first = get(&gw.url("/items?page=1&utm=a")).await;
    assert_eq!(first.status, 200);
    assert_eq!(first.headers["x-cache-status"], "MISS");
    let second = get(&gw.url("/items?utm=b&page=1")).await;
    assert_eq!(second.headers["x-cache-status"], "HIT");
    assert_eq!(second.body, first.body);
    assert!(second.headers.contains_key("age"));
    assert!(second.headers.contains_key("x-request-id"));
    assert_eq!(hits.load(Ordering::SeqCst), 1, "the hit never reached the upstream");

    // Another chosen parameter value is another entry; a client's no-cache bypasses.
    assert_eq!(get(&gw.url("/items?page=2")).await.headers["x-cache-status"], "MISS");
    let bypass = send(&http1_client(), req("GET", gw.url("/items?page=1"), &[("cache-control", "no-cache")])).await;
    assert_eq!(bypass.headers["x-cache-status"], "BYPASS");
    assert_eq!(hits.load(Ordering::SeqCst), 3);

    assert!(gw.gateway.response_cache().purge_route("list") >= 2);
    assert_eq!(get(&gw.url("/items?page=1")).await.headers["x-cache-status"], "MISS");
}

#[tokio::test]
async fn responses_the_upstream_marks_private_are_not_cached() {
    let (up, hits) = counting("secret", &[("cache-control", "private, max-age=60")]).await;
    let gw = TestGateway::start(
        json!([{"id": "me", "upstream": "u", "paths": [{"prefix": "/me"}], "cache": {"ttl_s": 60}}]),
        json!([upstream("u", up.addr)]),
    )
    .await;
    for _ in 0..2 {
        let a = get(&gw.url("/me")).await;
        assert_eq!(a.headers["x-cache-status"], "UNCACHEABLE");
    }
    assert_eq!(hits.load(Ordering::SeqCst), 2);
}

#[tokio::test]
async fn json_responses_are_compressed_as_the_client_asks_and_decode_to_the_original() {
    use tokio::io::AsyncReadExt;
    let big: &'static str =
        Box::leak(format!("[{}]", vec![r#"{"id":1,"name":"widget"}"#; 700].join(",")).into_boxed_str());
    let (up, _) = counting(big, &[("content-type", "application/json")]).await;
    let (small_up, _) = counting("{}", &[("content-type", "application/json")]).await;
    let gw = TestGateway::start(
        json!([{"id": "big", "upstream": "u", "paths": [{"prefix": "/big"}], "compression": {}},
               {"id": "small", "upstream": "s", "paths": [{"prefix": "/small"}], "compression": {}}]),
        json!([upstream("u", up.addr), upstream("s", small_up.addr)]),
    )
    .await;
    let client = http1_client();
    let a = send(&client, req("GET", gw.url("/big"), &[("accept-encoding", "gzip")])).await;
    assert_eq!(a.headers["content-encoding"], "gzip");
    assert!(a.body.len() < big.len() / 4, "{} bytes", a.body.len());
    let mut plain = String::new();
    async_compression::tokio::bufread::GzipDecoder::new(&a.body[..]).read_to_string(&mut plain).await.unwrap();
    assert_eq!(plain, big);

    let a = send(&client, req("GET", gw.url("/big"), &[("accept-encoding", "br;q=1, gzip;q=0.5")])).await;
    assert_eq!(a.headers["content-encoding"], "br");
    let mut plain = String::new();
    async_compression::tokio::bufread::BrotliDecoder::new(&a.body[..]).read_to_string(&mut plain).await.unwrap();
    assert_eq!(plain, big);

    let a = send(&client, req("GET", gw.url("/big"), &[])).await;
    assert!(!a.headers.contains_key("content-encoding"));
    assert_eq!(a.body.len(), big.len());
    assert!(a.headers.get_all("vary").iter().any(|v| v.to_str().unwrap().contains("Accept-Encoding")));
    let a = send(&client, req("GET", gw.url("/small"), &[("accept-encoding", "gzip")])).await;
    assert!(!a.headers.contains_key("content-encoding"), "below the minimum size");
}

#[tokio::test]
async fn trace_context_reaches_the_upstream_with_the_clients_trace_id() {
    let up = TestUpstream::echo("u").await;
    let gw = TestGateway::start_with(
        json!([{"id": "r", "upstream": "u", "paths": [{"prefix": "/"}]}]),
        json!([upstream("u", up.addr)]),
        Limits::default(),
    )
    .await;
    let client = http1_client();
    let parent = "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01";
    let a = send(&client, req("GET", gw.url("/t"), &[("traceparent", parent), ("tracestate", "v=1")])).await;
    let h = &a.json()["headers"];
    let sent = h["traceparent"].as_str().unwrap();
    assert!(sent.starts_with("00-4bf92f3577b34da6a3ce929d0e0e4736-"), "{sent}");
    assert!(!sent.contains("00f067aa0ba902b7"), "the gateway's own span id");
    assert_eq!(h["tracestate"], "v=1");

    let a = send(&client, req("GET", gw.url("/t"), &[("traceparent", "garbage"), ("tracestate", "v=1")])).await;
    let h = &a.json()["headers"];
    assert_eq!(h["traceparent"].as_str().unwrap().len(), 55, "a new trace");
    assert!(h.get("tracestate").is_none());
}

/// What a span sink was given: trace id (hex), route, status, parent, span id.
type SpanRow = (String, Option<String>, u16, Option<[u8; 8]>, [u8; 8]);

/// A span sink that keeps what it is given.
#[derive(Debug, Default)]
struct Recorded(std::sync::Mutex<Vec<SpanRow>>);

impl raftgate_proxy::trace::SpanSink for Recorded {
    fn record(&self, s: &raftgate_proxy::trace::FinishedSpan<'_>) {
        let trace = hex(&s.trace.trace_id);
        let row = (trace, s.route.map(String::from), s.status.as_u16(), s.trace.parent_id, s.trace.span_id);
        self.0.lock().unwrap().push(row);
    }
}

fn hex(b: &[u8]) -> String {
    b.iter().map(|b| format!("{b:02x}")).collect()
}

#[tokio::test]
async fn a_span_sink_gets_each_sampled_request_with_the_span_id_sent_upstream() {
    let up = TestUpstream::echo("u").await;
    let sink = Arc::new(Recorded::default());
    let config = GatewayConfig { spans: Some(sink.clone()), ..Default::default() };
    let routes = json!([{"id": "r", "upstream": "u", "paths": [{"prefix": "/t"}]}]);
    let gw = TestGateway::start_config(routes, json!([upstream("u", up.addr)]), config, None).await;
    let client = http1_client();
    let sampled = "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01";
    let a = send(&client, req("GET", gw.url("/t"), &[("traceparent", sampled)])).await;
    let sent = a.json()["headers"]["traceparent"].as_str().unwrap().to_string();
    let unsampled = "00-0000000000000000000000000000abcd-00f067aa0ba902b7-00";
    send(&client, req("GET", gw.url("/t"), &[("traceparent", unsampled)])).await;
    let other = "00-1111111111111111111111111111abcd-00f067aa0ba902b7-01";
    assert_eq!(send(&client, req("GET", gw.url("/none"), &[("traceparent", other)])).await.status, 404);

    let spans = sink.0.lock().unwrap().clone();
    assert_eq!(spans.len(), 2, "the unsampled request is not recorded: {spans:?}");
    let (trace, route, status, parent, span_id) = &spans[0];
    assert_eq!((trace.as_str(), route.as_deref(), *status), ("4bf92f3577b34da6a3ce929d0e0e4736", Some("r"), 200));
    assert_eq!(*parent, Some([0x00, 0xf0, 0x67, 0xaa, 0x0b, 0xa9, 0x02, 0xb7]));
    assert_eq!(sent, format!("00-{trace}-{}-01", hex(span_id)), "the span is the hop the upstream saw");
    assert_eq!((spans[1].1.as_deref(), spans[1].2), (None, 404), "an unmatched request has no route");
}

#[tokio::test]
async fn route_metrics_count_responses_by_method_and_class() {
    let up = TestUpstream::echo("u").await;
    let gw = TestGateway::start(
        json!([{"id": "r", "upstream": "u", "paths": [{"prefix": "/"}], "methods": ["GET"]}]),
        json!([upstream("u", up.addr)]),
    )
    .await;
    for _ in 0..3 {
        get(&gw.url("/m")).await;
    }
    let metrics = gw.gateway.route_metrics();
    let (_, counter) = metrics.iter().find(|(id, _)| id.as_str() == "r").unwrap();
    assert_eq!(counter.metrics.responses(&http::Method::GET, http::StatusCode::OK), 3);
    assert_eq!(counter.metrics.duration.count(), 3);
}

#[tokio::test]
async fn the_waf_blocks_attacks_in_block_mode_and_only_logs_them_in_log_mode() {
    let up = TestUpstream::echo("u").await;
    let gw = TestGateway::start(
        json!([{"id": "shop", "upstream": "u", "paths": [{"prefix": "/shop"}], "methods": ["GET", "POST"],
                "waf": {"mode": "block", "max_body_bytes": 4096}},
               {"id": "watch", "upstream": "u", "paths": [{"prefix": "/watch"}], "waf": {"mode": "log"}}]),
        json!([upstream("u", up.addr)]),
    )
    .await;
    let client = http1_client();
    let a = get(&gw.url("/shop/search?q=%27%20OR%201%3D1--")).await;
    assert_eq!(a.status, 403);
    assert_eq!(a.json()["error"]["code"], "request_blocked");
    let a = send(&client, req("GET", gw.url("/shop/item"), &[("x-note", "<script>alert(1)</script>")])).await;
    assert_eq!(a.status, 403);
    assert_eq!(get(&gw.url("/shop/search?q=O%27Brien%20select%20the%20best")).await.status, 200, "benign text passes");
    assert_eq!(get(&gw.url("/watch/search?q=%27%20OR%201%3D1--")).await.status, 200, "log mode lets it through");

    let post = |path: &str, body: String| {
        Request::post(gw.url(path)).header("content-type", "application/json").body(full(body)).unwrap()
    };
    let a = send(&client, post("/shop/order", r#"{"note":"; cat /etc/passwd"}"#.into())).await;
    assert_eq!(a.status, 403);
    let benign = r#"{"name":"O'Brien","items":[{"sku":"A-1","qty":2}],"note":"leave at the door; thanks"}"#;
    let a = send(&client, post("/shop/order", benign.into())).await;
    assert_eq!(a.status, 200);
    assert_eq!(a.json()["body_bytes"], benign.len(), "the inspected body reaches the upstream whole");
    // Bounded work: larger than the inspection limit, or nested too deep.
    let a = send(&client, post("/shop/order", format!(r#"{{"pad":"{}"}}"#, "a".repeat(5000)))).await;
    assert_eq!(a.status, 413);
    let a = send(&client, post("/shop/order", format!("{}{}", "[".repeat(1000), "]".repeat(1000)))).await;
    assert_eq!(a.status, 400);
    let counted = gw.gateway.route_metrics();
    let (_, shop) = counted.iter().find(|(id, _)| id.as_str() == "shop").unwrap();
    assert_eq!(shop.metrics.responses(&http::Method::GET, http::StatusCode::FORBIDDEN), 2);
}

#[tokio::test]
async fn failed_logins_lock_out_the_account_and_the_upstream_stops_seeing_them() {
    let hits = Arc::new(AtomicUsize::new(0));
    let h = hits.clone();
    let up = TestUpstream::start(move |req: Request<hyper::body::Incoming>| {
        let h = h.clone();
        async move {
            use http_body_util::BodyExt;
            h.fetch_add(1, Ordering::SeqCst);
            let body = req.into_body().collect().await.unwrap().to_bytes();
            let ok = body.windows(7).any(|w| w == b"correct");
            let mut resp = Response::new(full(if ok { "welcome" } else { "no" }));
            *resp.status_mut() = if ok { http::StatusCode::OK } else { http::StatusCode::UNAUTHORIZED };
            resp
        }
    })
    .await;
    let gw = TestGateway::start(
        json!([{"id": "login", "upstream": "u", "paths": [{"exact": "/login"}], "methods": ["POST"],
                "login": {"account_field": "/user", "max_failures_per_account": 3, "max_failures_per_ip": 100,
                          "window_s": 60, "lockout_s": 300}}]),
        json!([upstream("u", up.addr)]),
    )
    .await;
    let client = http1_client();
    let login = |user: &str, password: &str| {
        Request::post(gw.url("/login"))
            .header("content-type", "application/json")
            .body(full(format!(r#"{{"user":"{user}","password":"{password}"}}"#)))
            .unwrap()
    };
    for _ in 0..3 {
        assert_eq!(send(&client, login("alice", "guess")).await.status, 401);
    }
    let locked = send(&client, login("alice", "correct")).await;
    assert_eq!(locked.status, 429);
    assert_eq!(locked.json()["error"]["code"], "login_locked");
    assert!(locked.headers["retry-after"].to_str().unwrap().parse::<u64>().unwrap() > 200);
    assert_eq!(hits.load(Ordering::SeqCst), 3, "a locked-out attempt never reaches the upstream");
    assert_eq!(send(&client, login("bob", "correct")).await.status, 200, "other accounts still log in");
}
