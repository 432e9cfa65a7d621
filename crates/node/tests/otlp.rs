//! OTLP trace export (feature `otlp`) against a collector in this process:
//! an HTTP server on loopback that accepts `POST /v1/traces` and decodes
//! the protobuf body with the OpenTelemetry proto messages.

#![cfg(feature = "otlp")]

use std::collections::BTreeMap;
use std::convert::Infallible;
use std::net::SocketAddr;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use bytes::Bytes;
use http_body_util::{BodyExt, Full};
use hyper::service::service_fn;
use hyper::{Request, Response, StatusCode};
use hyper_util::client::legacy::connect::HttpConnector;
use hyper_util::client::legacy::Client;
use hyper_util::rt::{TokioExecutor, TokioIo};
use opentelemetry_proto::tonic::collector::trace::v1::{ExportTraceServiceRequest, ExportTraceServiceResponse};
use opentelemetry_proto::tonic::common::v1::any_value::Value;
use opentelemetry_proto::tonic::common::v1::KeyValue;
use opentelemetry_proto::tonic::trace::v1::{span::SpanKind, status::StatusCode as SpanStatus, Span};
use prost::Message;
use raftgate_model::{ObjectId, Route, Stored, Table, Upstream};
use raftgate_node::config::NodeConfig;
use raftgate_node::otlp::OtlpSink;
use raftgate_proxy::{Gateway, GatewayConfig};
use tokio::net::TcpListener;

/// A span as the collector received it, with its resource's attributes.
#[derive(Clone, Debug)]
struct Received {
    span: Span,
    resource: Vec<KeyValue>,
}

#[derive(Clone, Default)]
struct Collector {
    received: Arc<Mutex<Vec<Received>>>,
}

impl Collector {
    async fn start() -> (Self, String) {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let collector = Collector::default();
        let c = collector.clone();
        tokio::spawn(async move {
            loop {
                let Ok((stream, _)) = listener.accept().await else { continue };
                let c = c.clone();
                tokio::spawn(async move {
                    let service = service_fn(move |req: Request<hyper::body::Incoming>| {
                        let c = c.clone();
                        async move { Ok::<_, Infallible>(c.handle(req).await) }
                    });
                    let _ = hyper::server::conn::http1::Builder::new()
                        .serve_connection(TokioIo::new(stream), service)
                        .await;
                });
            }
        });
        (collector, format!("http://{addr}"))
    }

    async fn handle(&self, req: Request<hyper::body::Incoming>) -> Response<Full<Bytes>> {
        let proto = req.headers().get("content-type").is_some_and(|v| v == "application/x-protobuf");
        if req.method() != hyper::Method::POST || req.uri().path() != "/v1/traces" || !proto {
            let mut r = Response::new(Full::new(Bytes::new()));
            *r.status_mut() = StatusCode::NOT_FOUND;
            return r;
        }
        let body = req.into_body().collect().await.unwrap().to_bytes();
        let export = ExportTraceServiceRequest::decode(body).expect("an OTLP protobuf body");
        let mut received = self.received.lock().unwrap();
        for rs in export.resource_spans {
            let resource = rs.resource.map(|r| r.attributes).unwrap_or_default();
            for span in rs.scope_spans.into_iter().flat_map(|s| s.spans) {
                received.push(Received { span, resource: resource.clone() });
            }
        }
        let mut r = Response::new(Full::new(Bytes::from(ExportTraceServiceResponse::default().encode_to_vec())));
        r.headers_mut().insert("content-type", "application/x-protobuf".parse().unwrap());
        r
    }

    fn span_of(&self, trace_id: &[u8; 16]) -> Option<Received> {
        self.received.lock().unwrap().iter().find(|r| r.span.trace_id == trace_id).cloned()
    }

    async fn wait_for(&self, trace_id: &[u8; 16], within: Duration) -> Option<Received> {
        let deadline = tokio::time::Instant::now() + within;
        while tokio::time::Instant::now() < deadline {
            if let Some(r) = self.span_of(trace_id) {
                return Some(r);
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        None
    }
}

fn attr<'a>(attrs: &'a [KeyValue], key: &str) -> Option<&'a Value> {
    attrs.iter().find(|kv| kv.key == key).and_then(|kv| kv.value.as_ref()).and_then(|v| v.value.as_ref())
}

fn string(s: &str) -> Value {
    Value::StringValue(s.into())
}

fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

fn traceparent(trace: &[u8; 16], parent: &[u8; 8], flags: u8) -> String {
    format!("00-{}-{}-{flags:02x}", hex(trace), hex(parent))
}

/// An upstream that answers 503 under `/orders/fail`, else 200, and keeps
/// the `traceparent` of every request it receives.
async fn upstream() -> (SocketAddr, Arc<Mutex<Vec<String>>>) {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let seen = Arc::new(Mutex::new(Vec::new()));
    let kept = seen.clone();
    tokio::spawn(async move {
        loop {
            let Ok((stream, _)) = listener.accept().await else { continue };
            let kept = kept.clone();
            tokio::spawn(async move {
                let service = service_fn(move |req: Request<hyper::body::Incoming>| {
                    let kept = kept.clone();
                    async move {
                        if let Some(tp) = req.headers().get("traceparent").and_then(|v| v.to_str().ok()) {
                            kept.lock().unwrap().push(tp.to_string());
                        }
                        let mut r = Response::new(Full::new(Bytes::from_static(b"ok")));
                        if req.uri().path().starts_with("/orders/fail") {
                            *r.status_mut() = StatusCode::SERVICE_UNAVAILABLE;
                        }
                        Ok::<_, Infallible>(r)
                    }
                });
                let _ =
                    hyper::server::conn::http1::Builder::new().serve_connection(TokioIo::new(stream), service).await;
            });
        }
    });
    (addr, seen)
}

fn table<T>(id: &str, spec: T) -> Table<T> {
    let stored = Stored { spec, revision: 1, updated_ms: 0 };
    Arc::new(BTreeMap::from([(ObjectId::parse(id.to_string()).unwrap(), stored)]))
}

type TestClient = Client<HttpConnector, Full<Bytes>>;

async fn get(client: &TestClient, url: String, traceparent: Option<String>) -> StatusCode {
    let mut req = Request::get(url);
    if let Some(tp) = traceparent {
        req = req.header("traceparent", tp);
    }
    client.request(req.body(Full::new(Bytes::new())).unwrap()).await.unwrap().status()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sampled_requests_reach_the_collector_as_server_spans_of_their_trace_and_unsampled_ones_do_not() {
    let (collector, endpoint) = Collector::start().await;
    let (up, upstream_saw) = upstream().await;
    let mut config = NodeConfig::default();
    config.tracing.otlp_endpoint = Some(endpoint);
    config.tracing.otlp_export_interval_ms = 100;
    let sink = OtlpSink::start(&config).unwrap().expect("an endpoint is configured");
    let gateway = Gateway::new(GatewayConfig { spans: Some(sink.clone()), ..Default::default() });
    let route: Route =
        serde_json::from_value(serde_json::json!({"id": "orders", "upstream": "u", "paths": [{"prefix": "/orders"}]}))
            .unwrap();
    let upstream: Upstream =
        serde_json::from_value(serde_json::json!({"id": "u", "targets": [{"addr": up.to_string()}]})).unwrap();
    gateway.publish(1, &table("orders", route), &table("u", upstream));
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
    let server = tokio::spawn(raftgate_proxy::server::serve(gateway.clone(), listener, None, async {
        let _ = stopped.await;
    }));
    let client: TestClient = Client::builder(TokioExecutor::new()).build_http();
    let url = |path: &str| format!("http://{addr}{path}");

    // A client's sampled trace: exported while the node runs.
    let (ok_trace, client_span) = ([0x11; 16], [0x22; 8]);
    let status = get(&client, url("/orders/1"), Some(traceparent(&ok_trace, &client_span, 1))).await;
    assert_eq!(status, StatusCode::OK);
    let ok = collector.wait_for(&ok_trace, Duration::from_secs(10)).await.expect("the sampled span is exported");
    let sent_upstream = upstream_saw.lock().unwrap()[0].clone();
    assert_eq!(sent_upstream, traceparent(&ok_trace, ok.span.span_id.as_slice().try_into().unwrap(), 1));
    assert_eq!(ok.span.parent_span_id, client_span, "the client's span is the parent");
    assert_eq!(ok.span.name, "orders", "named after the route");
    assert_eq!(ok.span.kind, SpanKind::Server as i32);
    assert!(ok.span.end_time_unix_nano >= ok.span.start_time_unix_nano && ok.span.start_time_unix_nano > 0);
    let attrs = &ok.span.attributes;
    assert_eq!(attr(attrs, "http.request.method"), Some(&string("GET")));
    assert_eq!(attr(attrs, "http.route"), Some(&string("orders")));
    assert_eq!(attr(attrs, "http.response.status_code"), Some(&Value::IntValue(200)));
    assert_eq!(ok.span.status.as_ref().map_or(0, |s| s.code), SpanStatus::Unset as i32);
    assert_eq!(attr(&ok.resource, "service.name"), Some(&string("raftgate")));

    // An upstream 5xx is an error span; an unmatched path is still a span;
    // an unsampled trace is not exported.
    let fail_trace = [0x33; 16];
    let status = get(&client, url("/orders/fail"), Some(traceparent(&fail_trace, &client_span, 1))).await;
    assert_eq!(status, StatusCode::SERVICE_UNAVAILABLE);
    let lost_trace = [0x44; 16];
    assert_eq!(get(&client, url("/nowhere"), Some(traceparent(&lost_trace, &client_span, 1))).await, 404);
    let unsampled = [0x55; 16];
    assert_eq!(get(&client, url("/orders/2"), Some(traceparent(&unsampled, &client_span, 0))).await, 200);
    let _ = stop.send(());
    server.await.unwrap();
    let flushing = sink.clone();
    tokio::task::spawn_blocking(move || raftgate_proxy::trace::SpanSink::shutdown(&*flushing)).await.unwrap();

    let fail = collector.span_of(&fail_trace).expect("the 503 span is flushed at shutdown");
    assert_eq!(fail.span.status.as_ref().map(|s| s.code), Some(SpanStatus::Error as i32));
    assert_eq!(attr(&fail.span.attributes, "http.response.status_code"), Some(&Value::IntValue(503)));
    assert_eq!(attr(&fail.span.attributes, "error.type"), Some(&string("503")));
    let lost = collector.span_of(&lost_trace).expect("the unmatched span is flushed at shutdown");
    assert_eq!(lost.span.name, "unmatched");
    assert_eq!(attr(&lost.span.attributes, "http.route"), None);
    assert_eq!(attr(&lost.span.attributes, "raftgate.error"), Some(&string("route_not_found")));
    assert!(collector.span_of(&unsampled).is_none(), "an unsampled trace is not exported");
}

fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_node_sends_its_queued_spans_when_it_shuts_down() {
    let (collector, endpoint) = Collector::start().await;
    let demo = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let demo_addr = demo.local_addr().unwrap().to_string();
    tokio::spawn(raftgate_node::demo::serve_upstream(demo));
    let dir = tempfile::tempdir().unwrap();
    let (raft, admin, http) = (free_port(), free_port(), free_port());
    let text = format!(
        "[node]\nid = 1\nregion = \"local\"\ndata_dir = \"{}\"\n[listen]\nraft = \"127.0.0.1:{raft}\"\nadmin = \"127.0.0.1:{admin}\"\nhttp = \"127.0.0.1:{http}\"\n[bootstrap]\nmembers = [{{ id = 1, region = \"local\", raft_addr = \"127.0.0.1:{raft}\", admin_addr = \"127.0.0.1:{admin}\", http_addr = \"127.0.0.1:{http}\" }}]\n[admin]\nauth = \"none\"\n[access_log]\nenabled = false\n[tracing]\notlp_endpoint = \"{endpoint}\"\notlp_export_interval_ms = 60000\n",
        dir.path().join("data").display()
    );
    let config = NodeConfig::from_toml(&text).unwrap();
    config.validate().unwrap();
    let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
    let node = tokio::spawn(raftgate_node::run_node(config, async {
        let _ = stopped.await;
    }));
    raftgate_node::demo::seed(&format!("127.0.0.1:{admin}"), &demo_addr).await.unwrap();
    let client: TestClient = Client::builder(TokioExecutor::new()).build_http();
    let url = format!("http://127.0.0.1:{http}/hello");
    let deadline = tokio::time::Instant::now() + Duration::from_secs(20);
    while get(&client, url.clone(), None).await != StatusCode::OK {
        assert!(tokio::time::Instant::now() < deadline, "the demo route never served");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }

    let trace = [0x66; 16];
    assert_eq!(get(&client, url, Some(traceparent(&trace, &[0x77; 8], 1))).await, StatusCode::OK);
    tokio::time::sleep(Duration::from_millis(300)).await;
    assert!(collector.span_of(&trace).is_none(), "with a 60 s export interval nothing is sent yet");
    let _ = stop.send(());
    node.await.unwrap().unwrap();
    let span = collector.span_of(&trace).expect("shutdown sends the queued span");
    assert_eq!(span.span.name, "demo");
    assert_eq!(attr(&span.resource, "service.instance.id"), Some(&string("1")));
    assert_eq!(attr(&span.resource, "raftgate.node.region"), Some(&string("local")));
}
