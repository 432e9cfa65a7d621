//! A baseline for `proxy_vs_nginx.sh`: the least a hyper reverse proxy does
//! (hyper-util's server and pooled legacy client, one fixed upstream, no
//! routing, no header work), so the script can tell how much of Raftgate's
//! cost per request is its own and how much is the HTTP stack's.
//!
//! `cargo run --release -p raftgate-benches --example bare_proxy -- LISTEN UPSTREAM`

use std::convert::Infallible;

use http_body_util::combinators::UnsyncBoxBody;
use http_body_util::BodyExt;
use hyper::body::{Bytes, Incoming};
use hyper::service::service_fn;
use hyper::{Request, Response};
use hyper_util::client::legacy::connect::HttpConnector;
use hyper_util::client::legacy::Client;
use hyper_util::rt::{TokioExecutor, TokioIo};

type Body = UnsyncBoxBody<Bytes, hyper::Error>;

#[global_allocator]
static ALLOCATOR: mimalloc::MiMalloc = mimalloc::MiMalloc;

#[tokio::main]
async fn main() {
    let mut args = std::env::args().skip(1);
    let (Some(listen), Some(upstream)) = (args.next(), args.next()) else {
        eprintln!("usage: bare_proxy LISTEN_ADDR UPSTREAM_ADDR");
        std::process::exit(2);
    };
    let mut connector = HttpConnector::new();
    connector.set_nodelay(true);
    let flag = |name: &str| std::env::var(name).is_ok_and(|v| v == "1");
    let mut client_builder = Client::builder(TokioExecutor::new());
    if flag("BARE_POOL_TIMER") {
        client_builder.pool_timer(hyper_util::rt::TokioTimer::new()).timer(hyper_util::rt::TokioTimer::new());
    }
    let client: Client<HttpConnector, Body> = client_builder.build(connector);
    let mut server = hyper_util::server::conn::auto::Builder::new(TokioExecutor::new());
    if flag("BARE_HEADER_TIMEOUT") {
        server.http1().timer(hyper_util::rt::TokioTimer::new()).header_read_timeout(std::time::Duration::from_secs(30));
    }
    let server = std::sync::Arc::new(server);
    let upgrades = flag("BARE_UPGRADES");
    let listener = tokio::net::TcpListener::bind(&listen).await.expect("bind");
    loop {
        let Ok((stream, _)) = listener.accept().await else { continue };
        let _ = stream.set_nodelay(true);
        let client = client.clone();
        let upstream = upstream.clone();
        let server = server.clone();
        tokio::spawn(async move {
            let service = service_fn(move |req: Request<Incoming>| {
                let client = client.clone();
                let upstream = upstream.clone();
                async move {
                    let (mut parts, body) = req.into_parts();
                    let pq = parts.uri.path_and_query().map(|p| p.as_str()).unwrap_or("/");
                    parts.uri = format!("http://{upstream}{pq}").parse().expect("uri");
                    let req = Request::from_parts(parts, body.boxed_unsync());
                    let resp = match client.request(req).await {
                        Ok(r) => r.map(|b| b.boxed_unsync()),
                        Err(_) => {
                            let mut r =
                                Response::new(http_body_util::Empty::new().map_err(|n| match n {}).boxed_unsync());
                            *r.status_mut() = hyper::StatusCode::BAD_GATEWAY;
                            r
                        }
                    };
                    Ok::<_, Infallible>(resp)
                }
            });
            if upgrades {
                let _ = server.serve_connection_with_upgrades(TokioIo::new(stream), service).await;
            } else {
                let _ = server.serve_connection(TokioIo::new(stream), service).await;
            }
        });
    }
}
