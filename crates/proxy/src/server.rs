//! The client-facing listener: accepts connections and serves HTTP/1.1 and
//! HTTP/2 (prior knowledge, h2c) on each with the data plane pipeline.
//!
//! Bounds: at most `max_connections` open connections (a semaphore; beyond
//! it, new connections wait in the kernel's accept queue), a request head of
//! at most `max_header_bytes` in at most `max_headers` fields (the pipeline
//! answers 431 with a JSON error beyond either; hyper itself cuts off heads
//! over twice those) that must arrive within `header_read_timeout_ms`, and
//! `max_concurrent_streams` per HTTP/2 connection. On shutdown the listener
//! stops accepting, every connection finishes the requests it has (HTTP/1
//! closes after the current response, HTTP/2 sends GOAWAY) and anything still
//! running after `drain_timeout_ms` is cut.

use std::convert::Infallible;
use std::future::Future;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use hyper::service::service_fn;
use hyper_util::rt::{TokioExecutor, TokioIo, TokioTimer};
use hyper_util::server::conn::auto;
use hyper_util::server::graceful::GracefulShutdown;
use tokio::io::{AsyncRead, AsyncWrite};
use tokio::net::TcpListener;
use tokio::sync::Semaphore;

use crate::forwarded::ClientAddr;
use crate::framing::FramingGuard;
use crate::gateway::Gateway;
use crate::pipeline::{self, ConnInfo};
use crate::tls::{ClientIdentity, TlsSource};

/// How often a TLS listener looks for changed certificate files.
pub const TLS_RELOAD_INTERVAL: Duration = Duration::from_secs(10);

/// Where the data plane's client connections come from: a TCP listener, or
/// the simulation's network.
pub trait Listener: Send + 'static {
    type Io: AsyncRead + AsyncWrite + Unpin + Send + 'static;
    fn accept(&mut self) -> impl Future<Output = std::io::Result<(Self::Io, SocketAddr)>> + Send;
}

impl Listener for TcpListener {
    type Io = tokio::net::TcpStream;

    async fn accept(&mut self) -> std::io::Result<(Self::Io, SocketAddr)> {
        let (stream, client) = TcpListener::accept(self).await?;
        let _ = stream.set_nodelay(true);
        Ok((stream, client))
    }
}

/// Serves the data plane on `listener` (TLS when `tls` is given) until
/// `shutdown` completes, then drains.
pub async fn serve<L: Listener>(
    gateway: Arc<Gateway>,
    mut listener: L,
    tls: Option<Arc<TlsSource>>,
    shutdown: impl Future<Output = ()>,
) {
    let limits = gateway.config().limits.clone();
    let mut builder = auto::Builder::new(TokioExecutor::new());
    builder
        .http1()
        .timer(TokioTimer::new())
        .header_read_timeout(Duration::from_millis(limits.header_read_timeout_ms))
        .max_buf_size(limits.max_header_bytes * 2)
        .max_headers(limits.max_headers * 2)
        .keep_alive(true);
    builder
        .http2()
        .timer(TokioTimer::new())
        .max_concurrent_streams(limits.max_concurrent_streams)
        .max_header_list_size((limits.max_header_bytes * 2) as u32)
        .keep_alive_interval(Some(Duration::from_secs(20)))
        .keep_alive_timeout(Duration::from_secs(20));
    let builder = Arc::new(builder);
    let graceful = GracefulShutdown::new();
    let permits = Arc::new(Semaphore::new(limits.max_connections));
    let reloader = tls.clone().map(|source| {
        tokio::spawn(async move {
            let mut tick = tokio::time::interval(TLS_RELOAD_INTERVAL);
            tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
            loop {
                tick.tick().await;
                source.reload_if_changed();
            }
        })
    });
    let handshake_timeout = Duration::from_millis(limits.tls_handshake_timeout_ms);
    // hyper's own ceiling on a head (see the builder above).
    let max_head_bytes = limits.max_header_bytes * 2;
    let first_bytes_timeout = Duration::from_millis(limits.header_read_timeout_ms);
    tokio::pin!(shutdown);
    loop {
        let permit = tokio::select! {
            _ = &mut shutdown => break,
            p = permits.clone().acquire_owned() => match p { Ok(p) => p, Err(_) => break },
        };
        let accepted = tokio::select! {
            _ = &mut shutdown => break,
            a = listener.accept() => a,
        };
        let (stream, client) = match accepted {
            Ok(a) => a,
            Err(e) => {
                // Out of file descriptors and the like: back off instead of spinning.
                tracing::warn!(error = %e, "accept failed");
                tokio::time::sleep(Duration::from_millis(50)).await;
                continue;
            }
        };
        let gw = gateway.clone();
        let builder = builder.clone();
        let watcher = graceful.watcher();
        let acceptor = tls.as_ref().map(|t| t.acceptor());
        // Shared with upgraded tunnels, which outlive the HTTP connection.
        let permit = Arc::new(permit);
        tokio::spawn(async move {
            match acceptor {
                None => {
                    let (stream, framing) = FramingGuard::new(stream, max_head_bytes, first_bytes_timeout);
                    let conn_info = ConnInfo {
                        client,
                        client_addr: ClientAddr::new(client),
                        proto: "http",
                        client_cert: None,
                        framing: Some(framing),
                        slot: Some(permit),
                    };
                    serve_connection(&builder, watcher, gw, conn_info, stream).await;
                }
                Some(acceptor) => {
                    let stream = match tokio::time::timeout(handshake_timeout, acceptor.accept(stream)).await {
                        Ok(Ok(s)) => s,
                        Ok(Err(e)) => {
                            tracing::debug!(client = %client, error = %e, "TLS handshake failed");
                            return;
                        }
                        Err(_) => {
                            tracing::debug!(client = %client, "TLS handshake timed out");
                            return;
                        }
                    };
                    let client_cert = stream
                        .get_ref()
                        .1
                        .peer_certificates()
                        .and_then(|certs| certs.first())
                        .map(|c| Arc::new(ClientIdentity::from_der(c.as_ref())));
                    let (stream, framing) = FramingGuard::new(stream, max_head_bytes, first_bytes_timeout);
                    let conn_info = ConnInfo {
                        client,
                        client_addr: ClientAddr::new(client),
                        proto: "https",
                        client_cert,
                        framing: Some(framing),
                        slot: Some(permit),
                    };
                    serve_connection(&builder, watcher, gw, conn_info, stream).await;
                }
            }
        });
    }
    drop(listener);
    if let Some(r) = reloader {
        r.abort();
    }
    if tokio::time::timeout(Duration::from_millis(limits.drain_timeout_ms), graceful.shutdown()).await.is_err() {
        tracing::warn!(
            drain_timeout_ms = limits.drain_timeout_ms,
            "data plane connections still open after the drain timeout"
        );
    }
}

async fn serve_connection<IO>(
    builder: &auto::Builder<TokioExecutor>,
    watcher: hyper_util::server::graceful::Watcher,
    gateway: Arc<Gateway>,
    conn_info: ConnInfo,
    io: IO,
) where
    IO: tokio::io::AsyncRead + tokio::io::AsyncWrite + Unpin + Send + 'static,
{
    let client = conn_info.client;
    let service = service_fn(move |req| {
        let gw = gateway.clone();
        let conn_info = conn_info.clone();
        async move { Ok::<_, Infallible>(pipeline::handle(gw, conn_info, req).await) }
    });
    let conn = builder.serve_connection_with_upgrades(TokioIo::new(io), service);
    if let Err(e) = watcher.watch(conn).await {
        tracing::debug!(client = %client, error = %e, "client connection ended with an error");
    }
}
