//! The data plane in the simulation: every node's real proxy serves HTTP on
//! simulated TCP, in front of a simulated upstream host; simulated clients
//! send requests to every node with a valid API key, with a key that gets
//! revoked mid-run, and to an open route. What they saw is checked against
//! the revocation bound, fencing and "the data plane never pauses".

use std::cell::RefCell;
use std::convert::Infallible;
use std::net::SocketAddr;
use std::rc::Rc;
use std::time::Duration;

use bytes::Bytes;
use http_body_util::{Empty, Full};
use hyper_util::rt::TokioIo;
use raftgate_proto::admin::admin_client::AdminClient;
use raftgate_proto::admin::{ApplyObjectRequest, CreateApiKeyRequest, RevokeRequest};
use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};
use tonic::Code;

use crate::net;

/// The upstream host every route sends to.
pub const UPSTREAM_HOST: &str = "up";
pub const UPSTREAM_PORT: u16 = 80;
/// A header only the upstream sets: a response with it was let through.
const FROM_UPSTREAM: &str = "x-sim-upstream";
/// A data-plane client gives up on a request after this long.
const REQUEST_TIMEOUT: Duration = Duration::from_secs(1);

/// Accepts simulated TCP connections for the proxy's listener.
pub struct SimListener(turmoil::net::TcpListener);

impl SimListener {
    pub async fn bind(port: u16) -> std::io::Result<Self> {
        turmoil::net::TcpListener::bind(("0.0.0.0", port)).await.map(Self)
    }
}

impl raftgate_proxy::server::Listener for SimListener {
    type Io = turmoil::net::TcpStream;

    async fn accept(&mut self) -> std::io::Result<(Self::Io, SocketAddr)> {
        self.0.accept().await
    }
}

/// Upstream connections over simulated TCP.
pub fn upstream_dial() -> raftgate_proxy::connect::Dial {
    raftgate_proxy::connect::Dial::new(|addr: String| async move { turmoil::net::TcpStream::connect(addr).await })
}

/// The upstream: answers every request with 200 and a header of its own.
pub async fn run_upstream() -> Result<(), Box<dyn std::error::Error>> {
    let listener = turmoil::net::TcpListener::bind(("0.0.0.0", UPSTREAM_PORT)).await?;
    loop {
        let (stream, _) = listener.accept().await?;
        tokio::spawn(async move {
            let service = hyper::service::service_fn(|_req| async {
                let mut response = http::Response::new(Full::new(Bytes::from_static(b"ok")));
                response.headers_mut().insert(FROM_UPSTREAM, http::HeaderValue::from_static("1"));
                Ok::<_, Infallible>(response)
            });
            let _ = hyper::server::conn::http1::Builder::new().serve_connection(TokioIo::new(stream), service).await;
        });
    }
}

/// Which route and credential a request used.
#[derive(Clone, Copy, Debug, Hash, PartialEq, Eq)]
pub enum Target {
    /// A route without authentication.
    Open,
    /// The authenticated route with a key that stays valid.
    Kept,
    /// The authenticated route with the key that is revoked mid-run.
    Revoked,
}

/// One data-plane request. Times are simulated microseconds.
#[derive(Clone, Debug, Hash, PartialEq, Eq)]
pub struct Request {
    pub client: usize,
    pub node: u64,
    pub target: Target,
    pub sent_us: u64,
    pub done_us: u64,
    /// `None`: no answer within the timeout (or the connection failed).
    pub status: Option<u16>,
    /// The upstream answered: the gateway let the request through.
    pub passed: bool,
}

/// What the setup client made, and what data-plane clients saw.
#[derive(Debug, Default)]
pub struct Log {
    /// The two API keys (kept, revoked) once created.
    pub keys: Option<(String, String)>,
    /// The revoked key's id.
    pub revoked_id: Option<String>,
    /// When the revocation was acknowledged to the revoking client.
    pub revoke_acked_us: Option<u64>,
    pub requests: Vec<Request>,
}

fn now_us() -> u64 {
    turmoil::sim_elapsed().unwrap_or_default().as_micros() as u64
}

/// Retries one admin call on each target in turn until it succeeds (or the
/// run stops). `AlreadyExists`-style refusals of a repeated write count as done.
async fn until_ok<T, F, Fut>(clients: &mut [AdminClient<tonic::transport::Channel>], mut call: F) -> Option<T>
where
    F: FnMut(AdminClient<tonic::transport::Channel>) -> Fut,
    Fut: std::future::Future<Output = Result<tonic::Response<T>, tonic::Status>>,
{
    let mut target = 0;
    for _ in 0..400 {
        let c = clients[target % clients.len()].clone();
        match tokio::time::timeout(Duration::from_secs(2), call(c)).await {
            Ok(Ok(r)) => return Some(r.into_inner()),
            Ok(Err(s)) if s.code() == Code::FailedPrecondition || s.code() == Code::AlreadyExists => return None,
            _ => target += 1,
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    None
}

/// Writes the upstream, an open and an authenticated route, a consumer and
/// two API keys; then, after a seeded delay, revokes one of the keys.
pub async fn run_setup(targets: Vec<String>, seed: u64, revoke_after: (u64, u64), log: Rc<RefCell<Log>>) {
    let dialer = net::dialer();
    let mut clients: Vec<_> =
        targets.iter().map(|a| AdminClient::new(dialer.dial(a).expect("valid simulated address"))).collect();
    let mut rng = StdRng::seed_from_u64(seed);
    let upstream = serde_json::json!({"id": "web", "targets": [{"addr": format!("{UPSTREAM_HOST}:{UPSTREAM_PORT}")}]});
    let open = serde_json::json!({"id": "open", "upstream": "web", "paths": [{"prefix": "/open"}]});
    let keyed = serde_json::json!({"id": "keyed", "upstream": "web", "paths": [{"prefix": "/keyed"}],
        "auth": {"api_key": {"header": "x-api-key"}}});
    let consumer = serde_json::json!({"id": "alice"});
    let apply = |spec: &serde_json::Value| ApplyObjectRequest { spec_json: spec.to_string(), expected_revision: None };
    until_ok(&mut clients, |mut c| {
        let r = apply(&upstream);
        async move { c.apply_upstream(r).await }
    })
    .await;
    for route in [&open, &keyed] {
        until_ok(&mut clients, |mut c| {
            let r = apply(route);
            async move { c.apply_route(r).await }
        })
        .await;
    }
    until_ok(&mut clients, |mut c| {
        let r = apply(&consumer);
        async move { c.apply_consumer(r).await }
    })
    .await;
    let create = || CreateApiKeyRequest { consumer: "alice".into(), ..Default::default() };
    let Some(kept) = until_ok(&mut clients, |mut c| async move { c.create_api_key(create()).await }).await else {
        return;
    };
    let Some(revoked) = until_ok(&mut clients, |mut c| async move { c.create_api_key(create()).await }).await else {
        return;
    };
    {
        let mut l = log.borrow_mut();
        l.keys = Some((kept.key, revoked.key));
        l.revoked_id = Some(revoked.id.clone());
    }
    tokio::time::sleep(Duration::from_millis(rng.gen_range(revoke_after.0..revoke_after.1))).await;
    let target = serde_json::json!({"kind": "api_key", "id": revoked.id}).to_string();
    let acked = until_ok(&mut clients, |mut c| {
        let r = RevokeRequest { target_json: target.clone(), until_ms: None, reason: "simulated".into() };
        async move { c.revoke(r).await }
    })
    .await;
    if acked.is_some() {
        log.borrow_mut().revoke_acked_us = Some(now_us());
    }
}

/// One GET over a new simulated connection.
async fn get(addr: &str, path: &str, key: Option<&str>) -> Option<(u16, bool)> {
    let stream = turmoil::net::TcpStream::connect(addr).await.ok()?;
    let (mut send, conn) = hyper::client::conn::http1::handshake(TokioIo::new(stream)).await.ok()?;
    tokio::spawn(async move {
        let _ = conn.await;
    });
    let mut req = http::Request::get(path).header(http::header::HOST, "sim");
    if let Some(k) = key {
        req = req.header("x-api-key", k);
    }
    let resp = send.send_request(req.body(Empty::<Bytes>::new()).ok()?).await.ok()?;
    Some((resp.status().as_u16(), resp.headers().contains_key(FROM_UPSTREAM)))
}

/// One data-plane client: round-robin over every node's data plane, a
/// random route and key per request, from when the keys exist until the
/// run stops.
pub async fn run_client(
    client: usize,
    nodes: Vec<(u64, String)>,
    seed: u64,
    log: Rc<RefCell<Log>>,
    stop: Rc<std::cell::Cell<bool>>,
) {
    let mut rng = StdRng::seed_from_u64(seed);
    let keys = loop {
        if stop.get() {
            return;
        }
        if let Some(k) = log.borrow().keys.clone() {
            break k;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    };
    let mut next = client;
    while !stop.get() {
        let (node, addr) = &nodes[next % nodes.len()];
        next += 1;
        let target = match rng.gen_range(0..3) {
            0 => Target::Open,
            1 => Target::Kept,
            _ => Target::Revoked,
        };
        let (path, key) = match target {
            Target::Open => ("/open", None),
            Target::Kept => ("/keyed", Some(keys.0.as_str())),
            Target::Revoked => ("/keyed", Some(keys.1.as_str())),
        };
        let sent_us = now_us();
        let answer = tokio::time::timeout(REQUEST_TIMEOUT, get(addr, path, key)).await.ok().flatten();
        log.borrow_mut().requests.push(Request {
            client,
            node: *node,
            target,
            sent_us,
            done_us: now_us(),
            status: answer.map(|a| a.0),
            passed: answer.is_some_and(|a| a.1),
        });
        tokio::time::sleep(Duration::from_millis(rng.gen_range(10..40))).await;
    }
}
