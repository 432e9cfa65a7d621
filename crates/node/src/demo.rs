//! The local cluster's demo: a small upstream in the same process, and the
//! route and upstream that send every request to it, written through the
//! admin API once the cluster has a leader. `curl` against any node's HTTP
//! port then returns the demo's JSON echo of the request it received.

use std::convert::Infallible;
use std::time::Duration;

use bytes::Bytes;
use http_body_util::Full;
use hyper::service::service_fn;
use hyper::{Request, Response};
use hyper_util::rt::{TokioExecutor, TokioIo};
use raftgate_proto::admin as pb;
use raftgate_proto::admin::admin_client::AdminClient;
use tokio::net::TcpListener;

/// How long seeding waits for the new cluster to elect a leader.
const SEED_TIMEOUT: Duration = Duration::from_secs(30);

/// Answers every request with a JSON echo of what it received.
pub async fn serve_upstream(listener: TcpListener) {
    loop {
        let Ok((stream, _)) = listener.accept().await else { continue };
        tokio::spawn(async move {
            let service = service_fn(|req: Request<hyper::body::Incoming>| async move {
                let header =
                    |name: &str| req.headers().get(name).and_then(|v| v.to_str().ok()).unwrap_or("").to_string();
                let body = serde_json::json!({
                    "service": "raftgate-demo-upstream",
                    "method": req.method().as_str(),
                    "path": req.uri().path(),
                    "query": req.uri().query().unwrap_or(""),
                    "x_forwarded_for": header("x-forwarded-for"),
                    "x_request_id": header("x-request-id"),
                });
                let mut resp = Response::new(Full::new(Bytes::from(body.to_string() + "\n")));
                resp.headers_mut().insert("content-type", "application/json".parse().expect("static header"));
                Ok::<_, Infallible>(resp)
            });
            let _ = hyper_util::server::conn::auto::Builder::new(TokioExecutor::new())
                .serve_connection(TokioIo::new(stream), service)
                .await;
        });
    }
}

/// Writes the demo upstream and a catch-all route unless they exist already.
pub async fn seed(admin_endpoint: &str, upstream_addr: &str) -> Result<(), String> {
    let upstream = serde_json::json!({ "id": "demo", "targets": [{ "addr": upstream_addr }] });
    let route =
        serde_json::json!({ "id": "demo", "upstream": "demo", "paths": [{ "prefix": "/" }], "priority": -1000 });
    let deadline = tokio::time::Instant::now() + SEED_TIMEOUT;
    let endpoint = format!("http://{admin_endpoint}");
    let mut last = String::new();
    while tokio::time::Instant::now() < deadline {
        match seed_once(&endpoint, &upstream, &route).await {
            Ok(()) => return Ok(()),
            Err(e) => last = e,
        }
        tokio::time::sleep(Duration::from_millis(300)).await;
    }
    Err(format!("could not write the demo route within {} s: {last}", SEED_TIMEOUT.as_secs()))
}

async fn seed_once(endpoint: &str, upstream: &serde_json::Value, route: &serde_json::Value) -> Result<(), String> {
    let mut client = AdminClient::connect(endpoint.to_string()).await.map_err(|e| e.to_string())?;
    for (is_route, spec) in [(false, upstream), (true, route)] {
        // Revision 0: only create; an existing demo object (e.g. edited by the user) is kept.
        let req = pb::ApplyObjectRequest { spec_json: spec.to_string(), expected_revision: Some(0) };
        let result = if is_route { client.apply_route(req).await } else { client.apply_upstream(req).await };
        match result {
            Ok(_) => {}
            Err(s) if s.code() == tonic::Code::FailedPrecondition && s.message().contains("revision") => {}
            Err(s) => return Err(s.message().to_string()),
        }
    }
    Ok(())
}
