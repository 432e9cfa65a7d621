//! A gateway on loopback fed with routes and upstreams directly (the
//! replicated path is covered by the black-box tests), real upstream
//! servers started by the test, and clients that speak HTTP/1.1, h2c or raw
//! bytes.

#![allow(dead_code)]

use std::collections::BTreeMap;
use std::convert::Infallible;
use std::future::Future;
use std::net::SocketAddr;
use std::sync::Arc;

use bytes::Bytes;
use http_body_util::combinators::UnsyncBoxBody;
use http_body_util::{BodyExt, Full};
use hyper::body::Incoming;
use hyper::service::service_fn;
use hyper::{Request, Response};
use hyper_util::client::legacy::connect::HttpConnector;
use hyper_util::client::legacy::Client;
use hyper_util::rt::{TokioExecutor, TokioIo};
use raftgate_model::{ObjectId, Route, Stored, Table, Upstream};
use raftgate_proxy::{Gateway, GatewayConfig, Limits};
use serde_json::Value;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::oneshot;

pub type TestBody = UnsyncBoxBody<Bytes, Box<dyn std::error::Error + Send + Sync>>;

pub fn full(b: impl Into<Bytes>) -> TestBody {
    Full::new(b.into()).map_err(|never| match never {}).boxed_unsync()
}

pub struct TestGateway {
    pub gateway: Arc<Gateway>,
    pub addr: SocketAddr,
    revision: u64,
    stop: Option<oneshot::Sender<()>>,
    pub task: tokio::task::JoinHandle<()>,
}

fn table<T: Clone>(items: Vec<(String, T)>, revision: u64) -> Table<T> {
    let map: BTreeMap<ObjectId, Stored<T>> = items
        .into_iter()
        .map(|(id, spec)| (ObjectId::parse(id).unwrap(), Stored { spec, revision, updated_ms: 0 }))
        .collect();
    Arc::new(map)
}

impl TestGateway {
    pub async fn start(routes: Value, upstreams: Value) -> Self {
        Self::start_with(routes, upstreams, Limits::default()).await
    }

    pub async fn start_with(routes: Value, upstreams: Value, limits: Limits) -> Self {
        Self::start_full(routes, upstreams, limits, None, None).await
    }

    pub async fn start_full(
        routes: Value,
        upstreams: Value,
        limits: Limits,
        tls: Option<Arc<raftgate_proxy::tls::TlsSource>>,
        https_port: Option<u16>,
    ) -> Self {
        let config = GatewayConfig {
            region: "local".into(),
            limits,
            https_port,
            identity: raftgate_proxy::IdentityConfig::default(),
            traffic: Default::default(),
            ..Default::default()
        };
        Self::start_config(routes, upstreams, config, tls).await
    }

    pub async fn start_config(
        routes: Value,
        upstreams: Value,
        config: GatewayConfig,
        tls: Option<Arc<raftgate_proxy::tls::TlsSource>>,
    ) -> Self {
        let gateway = Gateway::new(config);
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let (tx, rx) = oneshot::channel::<()>();
        let task = tokio::spawn(raftgate_proxy::server::serve(gateway.clone(), listener, tls, async {
            let _ = rx.await;
        }));
        let mut gw = Self { gateway, addr, revision: 0, stop: Some(tx), task };
        gw.publish(routes, upstreams);
        gw
    }

    /// Validates and publishes a new routing state, as a node does after apply.
    pub fn publish(&mut self, routes: Value, upstreams: Value) {
        self.revision += 1;
        let routes: Vec<Route> = serde_json::from_value(routes).unwrap();
        let upstreams: Vec<Upstream> = serde_json::from_value(upstreams).unwrap();
        for r in &routes {
            r.validate().unwrap();
        }
        for u in &upstreams {
            u.validate().unwrap();
        }
        let routes = table(routes.into_iter().map(|r| (r.id.to_string(), r)).collect(), self.revision);
        let upstreams = table(upstreams.into_iter().map(|u| (u.id.to_string(), u)).collect(), self.revision);
        self.gateway.publish(self.revision, &routes, &upstreams);
    }

    pub fn url(&self, path: &str) -> String {
        format!("http://{}{path}", self.addr)
    }

    pub async fn shutdown(mut self) {
        if let Some(tx) = self.stop.take() {
            let _ = tx.send(());
        }
        let _ = self.task.await;
    }
}

/// An upstream server on loopback running `handler` for every request.
pub struct TestUpstream {
    pub addr: SocketAddr,
    task: tokio::task::JoinHandle<()>,
}

impl TestUpstream {
    pub async fn start<F, Fut>(handler: F) -> Self
    where
        F: Fn(Request<Incoming>) -> Fut + Clone + Send + Sync + 'static,
        Fut: Future<Output = Response<TestBody>> + Send + 'static,
    {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        Self::serve(listener, handler)
    }

    pub fn serve<F, Fut>(listener: TcpListener, handler: F) -> Self
    where
        F: Fn(Request<Incoming>) -> Fut + Clone + Send + Sync + 'static,
        Fut: Future<Output = Response<TestBody>> + Send + 'static,
    {
        let addr = listener.local_addr().unwrap();
        let task = tokio::spawn(async move {
            let mut conns = tokio::task::JoinSet::new();
            loop {
                let Ok((stream, _)) = listener.accept().await else { continue };
                let handler = handler.clone();
                conns.spawn(async move {
                    let service = service_fn(move |req| {
                        let handler = handler.clone();
                        async move { Ok::<_, Infallible>(handler(req).await) }
                    });
                    let _ = hyper_util::server::conn::auto::Builder::new(TokioExecutor::new())
                        .serve_connection_with_upgrades(TokioIo::new(stream), service)
                        .await;
                });
            }
        });
        Self { addr, task }
    }

    /// Echoes method, path, query and headers as JSON, plus `name`.
    pub async fn echo(name: &'static str) -> Self {
        Self::start(move |req: Request<Incoming>| async move {
            let headers: serde_json::Map<String, Value> = req
                .headers()
                .iter()
                .map(|(k, v)| (k.to_string(), Value::String(v.to_str().unwrap_or("").to_string())))
                .collect();
            let method = req.method().to_string();
            let path = req.uri().path().to_string();
            let query = req.uri().query().unwrap_or("").to_string();
            let version = format!("{:?}", req.version());
            let body = req.into_body().collect().await.map(|b| b.to_bytes().len()).unwrap_or(0);
            let v = serde_json::json!({"upstream": name, "method": method, "path": path, "query": query,
                "headers": headers, "version": version, "body_bytes": body});
            let mut resp = Response::new(full(v.to_string()));
            resp.headers_mut().insert("x-upstream-secret", "s".parse().unwrap());
            resp.headers_mut().insert("content-type", "application/json".parse().unwrap());
            resp
        })
        .await
    }

    /// Stops accepting and closes every connection.
    pub fn kill(&self) {
        self.task.abort();
    }
}

impl Drop for TestUpstream {
    fn drop(&mut self) {
        self.task.abort();
    }
}

pub fn http1_client() -> Client<HttpConnector, TestBody> {
    Client::builder(TokioExecutor::new()).build(HttpConnector::new())
}

pub fn h2c_client() -> Client<HttpConnector, TestBody> {
    Client::builder(TokioExecutor::new()).http2_only(true).build(HttpConnector::new())
}

pub struct Answer {
    pub status: u16,
    pub headers: http::HeaderMap,
    pub body: Bytes,
}

impl Answer {
    pub fn json(&self) -> Value {
        serde_json::from_slice(&self.body).unwrap_or_else(|_| panic!("not JSON: {:?}", self.body))
    }
}

pub async fn send(client: &Client<HttpConnector, TestBody>, req: Request<TestBody>) -> Answer {
    let resp = client.request(req).await.expect("gateway answers");
    let status = resp.status().as_u16();
    let headers = resp.headers().clone();
    let body = resp.into_body().collect().await.expect("body").to_bytes();
    Answer { status, headers, body }
}

pub async fn get(url: &str) -> Answer {
    let req = Request::get(url).body(full("")).unwrap();
    send(&http1_client(), req).await
}

/// Writes raw bytes on a new connection and reads until the server closes
/// it or `max_ms` passes; returns what came back and whether it closed.
pub async fn raw(addr: SocketAddr, bytes: &[u8], max_ms: u64) -> (String, bool) {
    let mut s = TcpStream::connect(addr).await.unwrap();
    s.write_all(bytes).await.unwrap();
    let mut out = Vec::new();
    let mut buf = [0u8; 4096];
    let deadline = tokio::time::Instant::now() + std::time::Duration::from_millis(max_ms);
    loop {
        match tokio::time::timeout_at(deadline, s.read(&mut buf)).await {
            Ok(Ok(0)) | Ok(Err(_)) => return (String::from_utf8_lossy(&out).into_owned(), true),
            Ok(Ok(n)) => out.extend_from_slice(&buf[..n]),
            Err(_) => return (String::from_utf8_lossy(&out).into_owned(), false),
        }
    }
}
