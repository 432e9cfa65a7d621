//! TLS connections of the cluster transport: the accepting side (handshakes
//! off the accept loop, bounded and timed) and the dialling side (a tonic
//! connector that does TCP, then TLS with this node's certificate).
//!
//! A handshake that fails is logged with its reason, at most once per peer
//! address per [`REFUSAL_LOG_INTERVAL`]: a peer that retries every few
//! milliseconds must not flood the log.

use std::collections::HashMap;
use std::future::Future;
use std::pin::Pin;
use std::sync::{Arc, Mutex};
use std::task::{Context, Poll};
use std::time::{Duration, Instant};

use hyper_util::rt::TokioIo;
use rustls::pki_types::ServerName;
use rustls::{ClientConfig, ServerConfig};
use tokio::net::{TcpListener, TcpStream};
use tokio_rustls::{TlsAcceptor, TlsConnector};
use tokio_stream::wrappers::ReceiverStream;
use tonic::transport::Channel;

use crate::env::Dialer;
use crate::network::{endpoint_for, CONNECT_TIMEOUT};
use crate::tls::ClusterTls;

/// Longest a TLS handshake may take, on either side.
pub const TLS_HANDSHAKE_TIMEOUT: Duration = Duration::from_secs(10);
/// Handshakes in progress on one listener; accepting pauses beyond this.
pub const MAX_HANDSHAKES_IN_FLIGHT: usize = 128;
/// Finished connections waiting for the gRPC server to take them.
const ACCEPTED_QUEUE: usize = 64;
/// How often a refused handshake with the same peer address is logged.
pub const REFUSAL_LOG_INTERVAL: Duration = Duration::from_secs(60);
/// Peer addresses whose last refusal is remembered.
const MAX_REFUSAL_KEYS: usize = 1_024;
/// Pause after a failed accept (out of file descriptors, say).
const ACCEPT_ERROR_PAUSE: Duration = Duration::from_millis(50);

/// Logs refused handshakes, at most once per key per interval.
#[derive(Default)]
pub struct RefusalLog {
    last: Mutex<HashMap<String, Instant>>,
}

impl RefusalLog {
    /// Whether a refusal for `key` should be logged now (and records it).
    pub fn should_log(&self, key: &str) -> bool {
        let now = Instant::now();
        let mut last = self.last.lock().unwrap_or_else(|p| p.into_inner());
        if let Some(t) = last.get(key) {
            if now.duration_since(*t) < REFUSAL_LOG_INTERVAL {
                return false;
            }
        }
        if last.len() >= MAX_REFUSAL_KEYS {
            last.retain(|_, t| now.duration_since(*t) < REFUSAL_LOG_INTERVAL);
            if last.len() >= MAX_REFUSAL_KEYS {
                return false;
            }
        }
        last.insert(key.to_string(), now);
        true
    }
}

/// The TLS connections accepted on `listener`, for tonic's
/// `serve_with_incoming`. Handshakes run in their own tasks, at most
/// [`MAX_HANDSHAKES_IN_FLIGHT`] at once, each within [`TLS_HANDSHAKE_TIMEOUT`].
pub fn accept_tls(
    listener: TcpListener,
    config: Arc<ServerConfig>,
    what: &'static str,
) -> ReceiverStream<Result<tokio_rustls::server::TlsStream<TcpStream>, std::io::Error>> {
    let (tx, rx) = tokio::sync::mpsc::channel(ACCEPTED_QUEUE);
    let handshakes = Arc::new(tokio::sync::Semaphore::new(MAX_HANDSHAKES_IN_FLIGHT));
    let refusals = Arc::new(RefusalLog::default());
    let acceptor = TlsAcceptor::from(config);
    tokio::spawn(async move {
        loop {
            let Ok(permit) = handshakes.clone().acquire_owned().await else { return };
            let accepted = tokio::select! {
                _ = tx.closed() => return,
                a = listener.accept() => a,
            };
            let (tcp, peer) = match accepted {
                Ok(a) => a,
                Err(e) => {
                    tracing::warn!(listener = what, error = %e, "accept failed");
                    tokio::time::sleep(ACCEPT_ERROR_PAUSE).await;
                    continue;
                }
            };
            let (acceptor, tx, refusals) = (acceptor.clone(), tx.clone(), refusals.clone());
            tokio::spawn(async move {
                let _permit = permit;
                let _ = tcp.set_nodelay(true);
                let reason = match tokio::time::timeout(TLS_HANDSHAKE_TIMEOUT, acceptor.accept(tcp)).await {
                    Ok(Ok(stream)) => {
                        let _ = tx.send(Ok(stream)).await;
                        return;
                    }
                    Ok(Err(e)) => e.to_string(),
                    Err(_) => format!("the handshake did not finish within {} s", TLS_HANDSHAKE_TIMEOUT.as_secs()),
                };
                if refusals.should_log(&peer.ip().to_string()) {
                    tracing::warn!(listener = what, peer = %peer, reason = %reason, "TLS handshake refused (logged once a minute per peer address)");
                }
            });
        }
    });
    ReceiverStream::new(rx)
}

/// Connects TCP, then TLS with `config`, to the host and port of the URI.
#[derive(Clone)]
struct TlsConnect {
    config: Arc<ClientConfig>,
    refusals: Arc<RefusalLog>,
}

type Connecting =
    Pin<Box<dyn Future<Output = Result<TokioIo<tokio_rustls::client::TlsStream<TcpStream>>, std::io::Error>> + Send>>;

impl tower_service::Service<http::Uri> for TlsConnect {
    type Response = TokioIo<tokio_rustls::client::TlsStream<TcpStream>>;
    type Error = std::io::Error;
    type Future = Connecting;

    fn poll_ready(&mut self, _cx: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
        Poll::Ready(Ok(()))
    }

    fn call(&mut self, uri: http::Uri) -> Self::Future {
        let (config, refusals) = (self.config.clone(), self.refusals.clone());
        Box::pin(async move {
            use std::io::{Error, ErrorKind};
            let host = uri.host().unwrap_or_default().trim_start_matches('[').trim_end_matches(']').to_string();
            let port = uri.port_u16().ok_or_else(|| Error::new(ErrorKind::InvalidInput, "address without a port"))?;
            let name = ServerName::try_from(host.clone())
                .map_err(|_| Error::new(ErrorKind::InvalidInput, format!("{host:?} is not a host name")))?;
            let tcp = tokio::time::timeout(CONNECT_TIMEOUT, TcpStream::connect((host.as_str(), port)))
                .await
                .map_err(|_| Error::new(ErrorKind::TimedOut, "connect timed out"))??;
            tcp.set_nodelay(true)?;
            let shaken =
                tokio::time::timeout(TLS_HANDSHAKE_TIMEOUT, TlsConnector::from(config).connect(name, tcp)).await;
            let error = match shaken {
                Ok(Ok(stream)) => return Ok(TokioIo::new(stream)),
                Ok(Err(e)) => e,
                Err(_) => Error::new(ErrorKind::TimedOut, "TLS handshake timed out"),
            };
            let peer = format!("{host}:{port}");
            if refusals.should_log(&peer) {
                tracing::warn!(peer = %peer, reason = %error, "TLS handshake with a peer failed (logged once a minute per peer address)");
            }
            Err(error)
        })
    }
}

/// A lazily connected channel to `addr` over TLS with `config`, with the
/// keepalive settings of the plaintext transport.
pub fn tls_channel(addr: &str, config: Arc<ClientConfig>, refusals: Arc<RefusalLog>) -> Result<Channel, String> {
    let endpoint = endpoint_for(addr)
        .map_err(|e| e.to_string())?
        // The connect timeout covers TCP and the TLS handshake.
        .connect_timeout(CONNECT_TIMEOUT + TLS_HANDSHAKE_TIMEOUT);
    Ok(endpoint.connect_with_connector_lazy(TlsConnect { config, refusals }))
}

impl ClusterTls {
    /// Dials peers' Raft listeners over mutual TLS.
    pub fn raft_dialer(&self) -> Dialer {
        self.dialer_with(self.client_config())
    }

    /// Dials over TLS with `config` (see [`ClusterTls::client_config_trusting`]).
    pub fn dialer_with(&self, config: Arc<ClientConfig>) -> Dialer {
        let refusals = Arc::new(RefusalLog::default());
        Dialer::new(move |addr| tls_channel(addr, config.clone(), refusals.clone()))
    }

    /// The Raft listener's incoming connections over mutual TLS.
    pub fn accept(
        &self,
        listener: TcpListener,
    ) -> ReceiverStream<Result<tokio_rustls::server::TlsStream<TcpStream>, std::io::Error>> {
        accept_tls(listener, self.server_config(), "raft")
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_refusal_is_logged_once_per_peer_per_interval() {
        let log = RefusalLog::default();
        assert!(log.should_log("10.0.0.1"));
        assert!(!log.should_log("10.0.0.1"));
        assert!(log.should_log("10.0.0.2"));
    }
}
