//! The data plane against real upstream servers on loopback: proxying,
//! normalisation, limits, errors, HTTP/2, trailers, WebSocket, retries and
//! live route changes.

mod support;

use std::time::Duration;

use http::Request;
use serde_json::json;
use support::*;

fn upstream(id: &str, targets: &[std::net::SocketAddr]) -> serde_json::Value {
    json!({"id": id, "targets": targets.iter().map(|a| json!({"addr": a.to_string()})).collect::<Vec<_>>()})
}

#[tokio::test]
async fn a_request_is_proxied_with_rewritten_path_and_forwarding_headers() {
    let up = TestUpstream::echo("api").await;
    let gw = TestGateway::start(
        json!([{"id": "api", "upstream": "api", "paths": [{"prefix": "/api"}], "strip_prefix": true,
                "request_headers": {"set": {"x-added": "yes"}, "remove": ["x-drop"]},
                "response_headers": {"remove": ["x-upstream-secret"], "add": {"x-served-by": "raftgate"}}}]),
        json!([upstream("api", &[up.addr])]),
    )
    .await;
    let req = Request::get(gw.url("/api/v1/users?limit=5"))
        .header("x-drop", "1")
        .header("x-request-id", "client-id-1")
        .header("x-forwarded-for", "203.0.113.9")
        .header("connection", "x-hop")
        .header("x-hop", "secret")
        .body(full(""))
        .unwrap();
    let a = send(&http1_client(), req).await;
    assert_eq!(a.status, 200);
    let v = a.json();
    assert_eq!(v["path"], "/v1/users");
    assert_eq!(v["query"], "limit=5");
    let h = &v["headers"];
    assert_eq!(h["x-added"], "yes");
    assert!(h.get("x-drop").is_none() && h.get("x-hop").is_none(), "{h}");
    assert_eq!(h["x-request-id"], "client-id-1");
    assert_eq!(h["x-forwarded-for"], "203.0.113.9, 127.0.0.1");
    assert_eq!(h["x-forwarded-proto"], "http");
    assert_eq!(h["forwarded"], format!("for=127.0.0.1;proto=http;host={}", gw.addr.ip()));
    assert_eq!(h["host"], up.addr.to_string(), "the target's address, unless preserve_host");
    assert_eq!(a.headers["x-request-id"], "client-id-1");
    assert_eq!(a.headers["x-served-by"], "raftgate");
    assert!(a.headers.get("x-upstream-secret").is_none());
}

#[tokio::test]
async fn unmatched_requests_get_a_json_error_with_code_and_request_id() {
    let up = TestUpstream::echo("api").await;
    let gw = TestGateway::start(
        json!([{"id": "r", "upstream": "api", "paths": [{"exact": "/only"}], "methods": ["GET", "HEAD"]}]),
        json!([upstream("api", &[up.addr])]),
    )
    .await;
    let a = get(&gw.url("/nope")).await;
    assert_eq!(a.status, 404);
    let v = a.json();
    assert_eq!(v["error"]["code"], "route_not_found");
    assert_eq!(v["error"]["request_id"], a.headers["x-request-id"].to_str().unwrap());
    let post = Request::post(gw.url("/only")).body(full("x")).unwrap();
    let a = send(&http1_client(), post).await;
    assert_eq!(a.status, 405);
    assert_eq!(a.json()["error"]["code"], "method_not_allowed");
    assert_eq!(a.headers["allow"], "GET, HEAD");
}

#[tokio::test]
async fn trace_and_connect_are_refused_unless_a_route_allows_them() {
    let up = TestUpstream::echo("api").await;
    let gw = TestGateway::start(json!([{"id": "all", "upstream": "api"}]), json!([upstream("api", &[up.addr])])).await;
    let trace = Request::builder().method("TRACE").uri(gw.url("/x")).body(full("")).unwrap();
    assert_eq!(send(&http1_client(), trace).await.status, 405);
    let (resp, _) = raw(gw.addr, b"CONNECT example.com:443 HTTP/1.1\r\nHost: example.com:443\r\n\r\n", 1_000).await;
    assert!(resp.starts_with("HTTP/1.1 405"), "{resp}");
    assert_eq!(get(&gw.url("/x")).await.status, 200);
}

#[tokio::test]
async fn path_tricks_cannot_bypass_the_route_that_guards_a_path() {
    let admin = TestUpstream::echo("admin").await;
    let public = TestUpstream::echo("public").await;
    let gw = TestGateway::start(
        json!([{"id": "admin", "upstream": "admin", "paths": [{"prefix": "/admin"}]},
               {"id": "public", "upstream": "public"}]),
        json!([upstream("admin", &[admin.addr]), upstream("public", &[public.addr])]),
    )
    .await;
    for path in ["/admin", "/admin/../admin", "/%61dmin", "//admin", "/x/../admin", "/./admin", "/%2e%2e/admin"] {
        let (resp, _) =
            raw(gw.addr, format!("GET {path} HTTP/1.1\r\nHost: h\r\nConnection: close\r\n\r\n").as_bytes(), 2_000)
                .await;
        assert!(resp.contains(r#""upstream":"admin""#) && resp.contains(r#""path":"/admin""#), "{path}: {resp}");
    }
    for path in ["/admin%2F..%2Fpublic", "/adm%zzin", "/admin;x", "/public/..;/admin", "/admin%3Bx"] {
        let (resp, _) =
            raw(gw.addr, format!("GET {path} HTTP/1.1\r\nHost: h\r\nConnection: close\r\n\r\n").as_bytes(), 2_000)
                .await;
        assert!(resp.starts_with("HTTP/1.1 400"), "{path}: {resp}");
    }
    assert_eq!(get(&gw.url("/administrator")).await.json()["upstream"], "public", "prefixes match whole segments");
}

#[tokio::test]
async fn ambiguous_framing_is_refused_with_400_and_the_connection_closed() {
    let up = TestUpstream::echo("api").await;
    let gw = TestGateway::start(json!([{"id": "all", "upstream": "api"}]), json!([upstream("api", &[up.addr])])).await;
    let smuggle = b"POST /x HTTP/1.1\r\nHost: h\r\nContent-Length: 4\r\nTransfer-Encoding: chunked\r\n\r\n0\r\n\r\nGET /smuggled HTTP/1.1\r\nHost: h\r\n\r\n";
    let (resp, closed) = raw(gw.addr, smuggle, 2_000).await;
    assert!(resp.starts_with("HTTP/1.1 400"), "{resp}");
    assert!(resp.contains("bad_request"), "{resp}");
    assert!(closed, "the connection is closed after an ambiguous request");
    assert_eq!(resp.matches("HTTP/1.1 ").count(), 1, "the smuggled request is never served: {resp}");
    // The same on a keep-alive connection, after an ordinary request.
    let mut stream = b"GET /first HTTP/1.1\r\nHost: h\r\n\r\n".to_vec();
    stream.extend_from_slice(smuggle);
    let (resp, closed) = raw(gw.addr, &stream, 2_000).await;
    assert!(resp.starts_with("HTTP/1.1 200") && resp.contains("HTTP/1.1 400") && closed, "{resp}");
    assert_eq!(resp.matches("HTTP/1.1 ").count(), 2, "{resp}");
    let (resp, closed) =
        raw(gw.addr, b"POST /x HTTP/1.1\r\nHost: h\r\nContent-Length: 3\r\nContent-Length: 4\r\n\r\nabcd", 2_000).await;
    assert!(resp.starts_with("HTTP/1.1 400") && closed, "{resp}");
    let (resp, closed) = raw(gw.addr, b"GET /x HTTP/1.1\r\nHost: h\r\nX-Bad: a\x01b\r\n\r\n", 2_000).await;
    assert!(resp.starts_with("HTTP/1.1 400") && closed, "{resp}");
    // Chunked and Content-Length bodies on one connection are not mistaken for smuggling.
    let ok = b"POST /a HTTP/1.1\r\nHost: h\r\nContent-Length: 3\r\n\r\nabcPOST /b HTTP/1.1\r\nHost: h\r\nTransfer-Encoding: chunked\r\n\r\n3\r\nabc\r\n0\r\n\r\nGET /c HTTP/1.1\r\nHost: h\r\nConnection: close\r\n\r\n";
    let (resp, _) = raw(gw.addr, ok, 2_000).await;
    assert_eq!(resp.matches("HTTP/1.1 200").count(), 3, "{resp}");
}

#[tokio::test]
async fn size_limits_answer_413_414_and_431() {
    let up = TestUpstream::echo("api").await;
    let gw = TestGateway::start(
        json!([{"id": "small", "upstream": "api", "max_body_bytes": 10}]),
        json!([upstream("api", &[up.addr])]),
    )
    .await;
    let big = Request::post(gw.url("/x")).body(full(vec![b'a'; 11])).unwrap();
    let a = send(&http1_client(), big).await;
    assert_eq!((a.status, a.json()["error"]["code"].as_str()), (413, Some("body_too_large")));
    // Chunked, so the size is only known while streaming.
    let (resp, _) = raw(
        gw.addr,
        b"POST /x HTTP/1.1\r\nHost: h\r\nConnection: close\r\nTransfer-Encoding: chunked\r\n\r\n8\r\naaaaaaaa\r\n8\r\naaaaaaaa\r\n0\r\n\r\n",
        2_000,
    )
    .await;
    assert!(resp.starts_with("HTTP/1.1 413"), "{resp}");
    let ok = Request::post(gw.url("/x")).body(full(vec![b'a'; 10])).unwrap();
    assert_eq!(send(&http1_client(), ok).await.json()["body_bytes"], 10);
    let long = format!("/{}", "a".repeat(9_000));
    assert_eq!(get(&gw.url(&long)).await.status, 414);
    let mut many = String::from("GET /x HTTP/1.1\r\nHost: h\r\nConnection: close\r\n");
    for i in 0..150 {
        many.push_str(&format!("x-h{i}: v\r\n"));
    }
    many.push_str("\r\n");
    let (resp, _) = raw(gw.addr, many.as_bytes(), 2_000).await;
    assert!(resp.starts_with("HTTP/1.1 431") && resp.contains("headers_too_large"), "{resp}");
    let huge = format!("GET /x HTTP/1.1\r\nHost: h\r\nConnection: close\r\nx-big: {}\r\n\r\n", "b".repeat(70 * 1024));
    let (resp, _) = raw(gw.addr, huge.as_bytes(), 2_000).await;
    assert!(resp.starts_with("HTTP/1.1 431") && resp.contains("headers_too_large"), "{resp}");
    // Far beyond the limit, hyper cuts the head off itself (still 431).
    let enormous = format!("GET /x HTTP/1.1\r\nHost: h\r\nx-big: {}\r\n\r\n", "b".repeat(200 * 1024));
    let (resp, _) = raw(gw.addr, enormous.as_bytes(), 2_000).await;
    assert!(resp.starts_with("HTTP/1.1 431"), "{resp}");
}

#[tokio::test]
async fn h2c_clients_reach_http1_and_h2c_upstreams() {
    let h1 = TestUpstream::echo("h1").await;
    let h2 = TestUpstream::echo("h2").await;
    let gw = TestGateway::start(
        json!([{"id": "a", "upstream": "h1", "paths": [{"prefix": "/h1"}]},
               {"id": "b", "upstream": "h2", "paths": [{"prefix": "/h2"}]}]),
        json!([upstream("h1", &[h1.addr]), {"id": "h2", "protocol": "h2c", "targets": [{"addr": h2.addr.to_string()}]}]),
    )
    .await;
    let a = send(&h2c_client(), Request::get(gw.url("/h1/x")).body(full("")).unwrap()).await;
    assert_eq!((a.status, a.json()["version"].as_str()), (200, Some("HTTP/1.1")));
    let a = send(&h2c_client(), Request::get(gw.url("/h2/x")).body(full("")).unwrap()).await;
    assert_eq!((a.status, a.json()["version"].as_str()), (200, Some("HTTP/2.0")));
    let a = send(&http1_client(), Request::get(gw.url("/h2/x")).body(full("")).unwrap()).await;
    assert_eq!(a.json()["version"], "HTTP/2.0");
}

#[tokio::test]
async fn grpc_streams_and_trailers_pass_through_h2c() {
    use http_body_util::{BodyExt, StreamBody};
    // A gRPC-shaped upstream: echoes the request body as the response body
    // and ends with grpc-status trailers.
    let up = TestUpstream::start(|req: Request<hyper::body::Incoming>| async move {
        let body = req.into_body().collect().await.unwrap().to_bytes();
        let mut trailers = http::HeaderMap::new();
        trailers.insert("grpc-status", "0".parse().unwrap());
        trailers.insert("grpc-message", "ok".parse().unwrap());
        let frames = vec![
            Ok::<_, Box<dyn std::error::Error + Send + Sync>>(hyper::body::Frame::data(body)),
            Ok(hyper::body::Frame::trailers(trailers)),
        ];
        let mut resp = hyper::Response::new(StreamBody::new(futures::stream::iter(frames)).boxed_unsync());
        resp.headers_mut().insert("content-type", "application/grpc".parse().unwrap());
        resp
    })
    .await;
    let gw = TestGateway::start(
        json!([{"id": "grpc", "upstream": "grpc", "paths": [{"prefix": "/echo.Echo"}], "methods": ["POST"]}]),
        json!([{"id": "grpc", "protocol": "h2c", "targets": [{"addr": up.addr.to_string()}]}]),
    )
    .await;
    let msg = b"\x00\x00\x00\x00\x05hello".to_vec();
    let req = Request::post(gw.url("/echo.Echo/Say"))
        .header("content-type", "application/grpc")
        .header("te", "trailers")
        .body(full(msg.clone()))
        .unwrap();
    let resp = h2c_client().request(req).await.unwrap();
    assert_eq!(resp.status(), 200);
    let collected = resp.into_body().collect().await.unwrap();
    let trailers = collected.trailers().cloned().expect("trailers reach the client");
    assert_eq!(trailers["grpc-status"], "0");
    assert_eq!(trailers["grpc-message"], "ok");
    assert_eq!(collected.to_bytes().as_ref(), msg.as_slice());
}

#[tokio::test]
async fn websocket_upgrades_are_tunnelled_both_ways() {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let up = TestUpstream::start(|mut req: Request<hyper::body::Incoming>| async move {
        let on_upgrade = hyper::upgrade::on(&mut req);
        tokio::spawn(async move {
            let mut io = hyper_util::rt::TokioIo::new(on_upgrade.await.unwrap());
            let mut buf = [0u8; 64];
            loop {
                let n = io.read(&mut buf).await.unwrap_or(0);
                if n == 0 {
                    return;
                }
                let mut echoed = b"echo:".to_vec();
                echoed.extend_from_slice(&buf[..n]);
                if io.write_all(&echoed).await.is_err() {
                    return;
                }
            }
        });
        let mut resp = hyper::Response::new(full(""));
        *resp.status_mut() = http::StatusCode::SWITCHING_PROTOCOLS;
        resp.headers_mut().insert("connection", "upgrade".parse().unwrap());
        resp.headers_mut().insert("upgrade", "websocket".parse().unwrap());
        resp.headers_mut().insert("sec-websocket-accept", "s3pPLMBiTxaQ9kYGzzhZRbK+xOo=".parse().unwrap());
        resp
    })
    .await;
    let gw = TestGateway::start(json!([{"id": "ws", "upstream": "ws"}]), json!([upstream("ws", &[up.addr])])).await;
    let mut s = tokio::net::TcpStream::connect(gw.addr).await.unwrap();
    s.write_all(b"GET /chat HTTP/1.1\r\nHost: h\r\nConnection: Upgrade\r\nUpgrade: websocket\r\nSec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\nSec-WebSocket-Version: 13\r\n\r\n").await.unwrap();
    let mut head = Vec::new();
    let mut byte = [0u8; 1];
    while !head.ends_with(b"\r\n\r\n") {
        s.read_exact(&mut byte).await.unwrap();
        head.push(byte[0]);
    }
    let head = String::from_utf8(head).unwrap().to_ascii_lowercase();
    assert!(head.starts_with("http/1.1 101"), "{head}");
    assert!(head.contains("upgrade: websocket") && head.contains("sec-websocket-accept"), "{head}");
    for msg in [&b"ping"[..], b"second"] {
        s.write_all(msg).await.unwrap();
        let mut buf = vec![0u8; 5 + msg.len()];
        tokio::time::timeout(Duration::from_secs(5), s.read_exact(&mut buf)).await.unwrap().unwrap();
        assert_eq!(&buf[..5], b"echo:");
        assert_eq!(&buf[5..], msg);
    }
}

#[tokio::test]
async fn a_slow_upstream_gets_504_and_the_error_names_no_address() {
    let up = TestUpstream::start(|_req| async {
        tokio::time::sleep(Duration::from_secs(5)).await;
        hyper::Response::new(full("late"))
    })
    .await;
    let gw = TestGateway::start(
        json!([{"id": "slow", "upstream": "slow", "timeout_ms": 300}]),
        json!([{"id": "slow", "try_timeout_ms": 200, "retries": {"attempts": 0}, "targets": [{"addr": up.addr.to_string()}]}]),
    )
    .await;
    let a = get(&gw.url("/x")).await;
    assert_eq!(a.status, 504);
    assert_eq!(a.json()["error"]["code"], "upstream_timeout");
    let text = String::from_utf8_lossy(&a.body).to_string();
    assert!(!text.contains("127.0.0.1") && !text.contains(&up.addr.port().to_string()), "{text}");
}

#[tokio::test]
async fn an_unreachable_upstream_gets_502_then_503_once_ejected() {
    let dead = std::net::TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap();
    let gw = TestGateway::start(
        json!([{"id": "r", "upstream": "dead"}]),
        json!([{"id": "dead", "retries": {"attempts": 0}, "outlier": {"consecutive_failures": 2, "max_ejected_percent": 100},
                "targets": [{"addr": dead.to_string()}]}]),
    )
    .await;
    let a = get(&gw.url("/x")).await;
    assert_eq!((a.status, a.json()["error"]["code"].as_str()), (502, Some("upstream_unavailable")));
    assert_eq!(get(&gw.url("/x")).await.status, 502);
    let a = get(&gw.url("/x")).await;
    assert_eq!((a.status, a.json()["error"]["code"].as_str()), (503, Some("no_healthy_upstream")));
}

#[tokio::test]
async fn killing_one_of_three_targets_under_load_causes_no_client_error() {
    let a = TestUpstream::echo("a").await;
    let b = TestUpstream::echo("b").await;
    let c = TestUpstream::echo("c").await;
    let gw = TestGateway::start(
        json!([{"id": "r", "upstream": "pool"}]),
        json!([{"id": "pool", "retries": {"attempts": 2, "min_per_second": 1000}, "connect_timeout_ms": 500,
                "targets": [{"addr": a.addr.to_string()}, {"addr": b.addr.to_string()}, {"addr": c.addr.to_string()}]}]),
    )
    .await;
    let client = http1_client();
    let url = gw.url("/work");
    let mut workers = Vec::new();
    for _ in 0..8 {
        let client = client.clone();
        let url = url.clone();
        workers.push(tokio::spawn(async move {
            let mut statuses = Vec::new();
            for _ in 0..150 {
                let req = Request::get(url.as_str()).body(full("")).unwrap();
                let resp = client.request(req).await.expect("gateway answers");
                statuses.push(resp.status().as_u16());
                let _ = http_body_util::BodyExt::collect(resp.into_body()).await;
            }
            statuses
        }));
    }
    tokio::time::sleep(Duration::from_millis(100)).await;
    b.kill();
    let mut total = 0;
    for w in workers {
        let statuses = w.await.unwrap();
        total += statuses.len();
        assert!(statuses.iter().all(|s| *s == 200), "client-visible errors: {statuses:?}");
    }
    assert_eq!(total, 1_200);
}

#[tokio::test]
async fn a_long_streaming_response_survives_a_route_update() {
    use http_body_util::{BodyExt, StreamBody};
    let up = TestUpstream::start(|_req| async {
        let chunks = futures::stream::unfold(0u32, |i| async move {
            if i == 10 {
                return None;
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
            Some((
                Ok::<_, Box<dyn std::error::Error + Send + Sync>>(hyper::body::Frame::data(bytes::Bytes::from(
                    format!("chunk{i};"),
                ))),
                i + 1,
            ))
        });
        hyper::Response::new(StreamBody::new(chunks).boxed_unsync())
    })
    .await;
    let other = TestUpstream::echo("other").await;
    let mut gw =
        TestGateway::start(json!([{"id": "stream", "upstream": "s"}]), json!([upstream("s", &[up.addr])])).await;
    let resp = http1_client().request(Request::get(gw.url("/feed")).body(full("")).unwrap()).await.unwrap();
    assert_eq!(resp.status(), 200);
    // Re-point the route and remove the streaming upstream while the body flows.
    gw.publish(json!([{"id": "stream", "upstream": "o"}]), json!([upstream("o", &[other.addr])]));
    let body = resp.into_body().collect().await.unwrap().to_bytes();
    let expected: String = (0..10).map(|i| format!("chunk{i};")).collect();
    assert_eq!(body, expected.as_bytes());
    assert_eq!(get(&gw.url("/feed")).await.json()["upstream"], "other", "new requests follow the new route");
}

#[tokio::test]
async fn shutdown_lets_a_request_in_flight_finish() {
    let up = TestUpstream::start(|_req| async {
        tokio::time::sleep(Duration::from_millis(300)).await;
        hyper::Response::new(full("done"))
    })
    .await;
    let gw = TestGateway::start(json!([{"id": "r", "upstream": "u"}]), json!([upstream("u", &[up.addr])])).await;
    let url = gw.url("/slow");
    let inflight = tokio::spawn(async move { get(&url).await });
    tokio::time::sleep(Duration::from_millis(100)).await;
    let addr = gw.addr;
    gw.shutdown().await;
    let a = inflight.await.unwrap();
    assert_eq!((a.status, a.body.as_ref()), (200, &b"done"[..]));
    assert!(tokio::net::TcpStream::connect(addr).await.is_err(), "no longer accepting");
}

#[tokio::test]
async fn active_health_checks_take_a_failing_target_out_and_bring_it_back() {
    use std::sync::atomic::{AtomicBool, Ordering};
    use std::sync::Arc;
    let healthy = Arc::new(AtomicBool::new(true));
    let flag = healthy.clone();
    let flaky = TestUpstream::start(move |req: Request<hyper::body::Incoming>| {
        let flag = flag.clone();
        async move {
            let mut resp = hyper::Response::new(full("flaky"));
            if req.uri().path() == "/healthz" && !flag.load(Ordering::SeqCst) {
                *resp.status_mut() = http::StatusCode::SERVICE_UNAVAILABLE;
            }
            resp
        }
    })
    .await;
    let steady = TestUpstream::start(|_req| async { hyper::Response::new(full("steady")) }).await;
    let gw = TestGateway::start(
        json!([{"id": "r", "upstream": "u"}]),
        json!([{"id": "u", "targets": [{"addr": flaky.addr.to_string()}, {"addr": steady.addr.to_string()}],
                "health_check": {"path": "/healthz", "interval_ms": 100, "timeout_ms": 100, "healthy_threshold": 2, "unhealthy_threshold": 2}}]),
    )
    .await;
    let bodies = |n: usize| {
        let url = gw.url("/x");
        async move {
            let mut out = Vec::new();
            for _ in 0..n {
                out.push(String::from_utf8_lossy(&get(&url).await.body).to_string());
            }
            out
        }
    };
    assert!(bodies(10).await.contains(&"flaky".to_string()));
    healthy.store(false, Ordering::SeqCst);
    tokio::time::sleep(Duration::from_millis(600)).await;
    assert!(bodies(10).await.iter().all(|b| b == "steady"), "an unhealthy target gets no traffic");
    healthy.store(true, Ordering::SeqCst);
    tokio::time::sleep(Duration::from_millis(600)).await;
    assert!(bodies(10).await.contains(&"flaky".to_string()), "a recovered target gets traffic again");
}

mod grpc {
    use std::pin::Pin;

    use futures::Stream;
    use raftgate_proto::testing::echo_client::EchoClient;
    use raftgate_proto::testing::echo_server::{Echo, EchoServer};
    use raftgate_proto::testing::{EchoReply, EchoRequest};
    use tonic::{Request, Response, Status};

    use super::*;

    struct EchoService;

    #[tonic::async_trait]
    impl Echo for EchoService {
        async fn say(&self, req: Request<EchoRequest>) -> Result<Response<EchoReply>, Status> {
            let r = req.into_inner();
            if r.fail_with != 0 {
                return Err(Status::new(tonic::Code::from(r.fail_with), "asked to fail"));
            }
            Ok(Response::new(EchoReply { message: format!("echo: {}", r.message) }))
        }

        type RepeatStream = Pin<Box<dyn Stream<Item = Result<EchoReply, Status>> + Send>>;

        async fn repeat(&self, req: Request<EchoRequest>) -> Result<Response<Self::RepeatStream>, Status> {
            let r = req.into_inner();
            let mut items: Vec<Result<EchoReply, Status>> =
                (0..r.count).map(|i| Ok(EchoReply { message: format!("{} #{i}", r.message) })).collect();
            if r.fail_with != 0 {
                items.push(Err(Status::new(tonic::Code::from(r.fail_with), "stream failed")));
            }
            Ok(Response::new(Box::pin(futures::stream::iter(items))))
        }
    }

    #[tokio::test]
    async fn real_grpc_calls_and_streams_keep_their_status_through_the_gateway() {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        tokio::spawn(
            tonic::transport::Server::builder()
                .add_service(EchoServer::new(EchoService))
                .serve_with_incoming(tokio_stream::wrappers::TcpListenerStream::new(listener)),
        );
        let gw = TestGateway::start(
            json!([{"id": "echo", "upstream": "echo", "paths": [{"prefix": "/raftgate.testing.v1.Echo"}], "methods": ["POST"]}]),
            json!([{"id": "echo", "protocol": "h2c", "targets": [{"addr": addr.to_string()}]}]),
        )
        .await;
        let mut client = EchoClient::connect(gw.url("")).await.unwrap();
        let reply = client.say(EchoRequest { message: "hi".into(), count: 0, fail_with: 0 }).await.unwrap();
        assert_eq!(reply.into_inner().message, "echo: hi");

        let err = client.say(EchoRequest { message: "x".into(), count: 0, fail_with: 7 }).await.unwrap_err();
        assert_eq!((err.code(), err.message()), (tonic::Code::PermissionDenied, "asked to fail"));

        let mut stream =
            client.repeat(EchoRequest { message: "m".into(), count: 3, fail_with: 14 }).await.unwrap().into_inner();
        let mut got = Vec::new();
        let end = loop {
            match stream.message().await {
                Ok(Some(m)) => got.push(m.message),
                Ok(None) => break None,
                Err(status) => break Some(status),
            }
        };
        assert_eq!(got, ["m #0", "m #1", "m #2"]);
        let end = end.expect("the trailing status reaches the client");
        assert_eq!((end.code(), end.message()), (tonic::Code::Unavailable, "stream failed"));
    }
}

#[tokio::test]
async fn idle_client_connections_are_closed() {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let up = TestUpstream::echo("api").await;
    let limits = raftgate_proxy::Limits { header_read_timeout_ms: 300, ..Default::default() };
    let gw =
        TestGateway::start_with(json!([{"id": "r", "upstream": "api"}]), json!([upstream("api", &[up.addr])]), limits)
            .await;
    let mut s = tokio::net::TcpStream::connect(gw.addr).await.unwrap();
    s.write_all(b"GET /x HTTP/1.1\r\nHost: h\r\n\r\n").await.unwrap();
    let mut buf = vec![0u8; 4096];
    let n = s.read(&mut buf).await.unwrap();
    assert!(String::from_utf8_lossy(&buf[..n]).starts_with("HTTP/1.1 200"));
    // Idle after the response: the gateway closes within the limit (plus slack).
    let closed = tokio::time::timeout(Duration::from_secs(3), async {
        loop {
            match s.read(&mut buf).await {
                Ok(0) | Err(_) => return,
                Ok(_) => {}
            }
        }
    })
    .await;
    assert!(closed.is_ok(), "an idle keep-alive connection stayed open");
    // A client that connects and sends nothing is cut off too.
    let mut silent = tokio::net::TcpStream::connect(gw.addr).await.unwrap();
    let cut = tokio::time::timeout(Duration::from_secs(3), silent.read(&mut buf)).await;
    assert!(matches!(cut, Ok(Ok(0)) | Ok(Err(_))), "a silent connection was kept: {cut:?}");
    // A client that never finishes its head is cut off too.
    let mut slow = tokio::net::TcpStream::connect(gw.addr).await.unwrap();
    slow.write_all(b"GET /x HTTP/1.1\r\nHost: h\r\n").await.unwrap();
    let cut = tokio::time::timeout(Duration::from_secs(3), slow.read(&mut buf)).await;
    assert!(matches!(cut, Ok(Ok(_)) | Ok(Err(_))), "a slow head was not cut off");
}

#[tokio::test]
async fn a_stalled_upstream_body_is_cut_after_the_stream_idle_timeout() {
    use http_body_util::{BodyExt, StreamBody};
    let up = TestUpstream::start(|_req| async {
        let chunks = futures::stream::unfold(0u32, |i| async move {
            if i > 0 {
                // Stalls after the first chunk, far longer than the idle timeout.
                tokio::time::sleep(Duration::from_secs(30)).await;
            }
            Some((
                Ok::<_, Box<dyn std::error::Error + Send + Sync>>(hyper::body::Frame::data(bytes::Bytes::from_static(
                    b"first",
                ))),
                i + 1,
            ))
        });
        hyper::Response::new(StreamBody::new(chunks).boxed_unsync())
    })
    .await;
    let limits = raftgate_proxy::Limits { stream_idle_timeout_ms: 300, ..Default::default() };
    let gw = TestGateway::start_with(json!([{"id": "r", "upstream": "u"}]), json!([upstream("u", &[up.addr])]), limits)
        .await;
    let resp = http1_client().request(Request::get(gw.url("/stream")).body(full("")).unwrap()).await.unwrap();
    assert_eq!(resp.status(), 200);
    let outcome = tokio::time::timeout(Duration::from_secs(5), resp.into_body().collect()).await;
    assert!(matches!(outcome, Ok(Err(_))), "the stalled body was not cut: {outcome:?}");
}

#[tokio::test]
async fn one_host_per_request_and_preserve_host_forwards_it() {
    let up = TestUpstream::echo("api").await;
    let gw = TestGateway::start(
        json!([{"id": "r", "upstream": "api", "preserve_host": true}]),
        json!([upstream("api", &[up.addr])]),
    )
    .await;
    let (resp, _) =
        raw(gw.addr, b"GET /x HTTP/1.1\r\nHost: Shop.Example.com:8080\r\nConnection: close\r\n\r\n", 2_000).await;
    assert!(resp.contains(r#""host":"Shop.Example.com:8080""#), "{resp}");
    let (resp, closed) = raw(gw.addr, b"GET /x HTTP/1.1\r\nHost: a.example\r\nHost: b.example\r\n\r\n", 2_000).await;
    assert!(resp.starts_with("HTTP/1.1 400") && closed, "{resp}");
    let (resp, _) =
        raw(gw.addr, b"GET http://public.example/x HTTP/1.1\r\nHost: internal.example\r\n\r\n", 2_000).await;
    assert!(resp.starts_with("HTTP/1.1 400"), "{resp}");
}

#[tokio::test]
async fn the_upstreams_own_5xx_reaches_the_client_when_retries_run_out() {
    let up = TestUpstream::start(|_req| async {
        let mut resp = hyper::Response::new(full("busy"));
        *resp.status_mut() = http::StatusCode::SERVICE_UNAVAILABLE;
        resp.headers_mut().insert("retry-after", "7".parse().unwrap());
        resp
    })
    .await;
    let gw = TestGateway::start(
        json!([{"id": "r", "upstream": "u"}]),
        json!([{"id": "u", "retries": {"attempts": 2}, "outlier": {"consecutive_failures": 100}, "targets": [{"addr": up.addr.to_string()}]}]),
    )
    .await;
    let a = get(&gw.url("/x")).await;
    assert_eq!((a.status, a.body.as_ref()), (503, &b"busy"[..]));
    assert_eq!(a.headers["retry-after"], "7");
}
