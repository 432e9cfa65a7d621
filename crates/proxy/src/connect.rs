//! How the data plane opens connections to upstream targets: the OS's TCP
//! stack, or a dialer the embedder supplies (the simulation's network).
//! Everything above the byte stream (TLS, HTTP/1 and HTTP/2, pooling,
//! timeouts) is the same either way.

use std::future::Future;
use std::io;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::Duration;

use http::Uri;
use hyper_util::client::legacy::connect::{Connected, Connection, HttpConnector};
use hyper_util::rt::TokioIo;
use tokio::io::{AsyncRead, AsyncWrite};
use tokio::net::TcpStream;

/// A byte stream to a target, as a custom dialer returns it.
pub trait DialedIo: AsyncRead + AsyncWrite + Send + Unpin + 'static {}
impl<T: AsyncRead + AsyncWrite + Send + Unpin + 'static> DialedIo for T {}

type DialFuture = Pin<Box<dyn Future<Output = io::Result<Box<dyn DialedIo>>> + Send>>;

/// Opens a connection to `host:port`.
#[derive(Clone)]
pub struct Dial(Arc<dyn Fn(String) -> DialFuture + Send + Sync>);

impl Dial {
    pub fn new<F, Fut, S>(dial: F) -> Self
    where
        F: Fn(String) -> Fut + Send + Sync + 'static,
        Fut: Future<Output = io::Result<S>> + Send + 'static,
        S: DialedIo,
    {
        Self(Arc::new(move |addr| {
            let f = dial(addr);
            Box::pin(async move { f.await.map(|s| Box::new(s) as Box<dyn DialedIo>) })
        }))
    }
}

impl std::fmt::Debug for Dial {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Dial(..)")
    }
}

type BoxError = Box<dyn std::error::Error + Send + Sync>;

/// The TCP layer under an upstream's client (TLS wraps it).
#[derive(Clone)]
pub struct TargetConnector {
    tcp: HttpConnector,
    dial: Option<Dial>,
    connect_timeout: Duration,
}

impl TargetConnector {
    pub fn new(tcp: HttpConnector, dial: Option<Dial>, connect_timeout: Duration) -> Self {
        Self { tcp, dial, connect_timeout }
    }
}

impl tower_service::Service<Uri> for TargetConnector {
    type Response = TargetStream;
    type Error = BoxError;
    type Future = Pin<Box<dyn Future<Output = Result<TargetStream, BoxError>> + Send>>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), BoxError>> {
        match self.dial {
            None => self.tcp.poll_ready(cx).map_err(Into::into),
            Some(_) => Poll::Ready(Ok(())),
        }
    }

    fn call(&mut self, uri: Uri) -> Self::Future {
        match &self.dial {
            None => {
                let connecting = self.tcp.call(uri);
                Box::pin(async move { connecting.await.map(TargetStream::Tcp).map_err(Into::into) })
            }
            Some(dial) => {
                let timeout = self.connect_timeout;
                let Some(authority) = uri.authority() else {
                    return Box::pin(async { Err("target URI has no authority".into()) });
                };
                let port = uri.port_u16().unwrap_or(80);
                let connecting = (dial.0)(format!("{}:{port}", authority.host()));
                Box::pin(async move {
                    match tokio::time::timeout(timeout, connecting).await {
                        Ok(Ok(s)) => Ok(TargetStream::Dialed(TokioIo::new(s))),
                        Ok(Err(e)) => Err(e.into()),
                        Err(_) => Err("connect timed out".into()),
                    }
                })
            }
        }
    }
}

/// A connection to a target.
pub enum TargetStream {
    Tcp(TokioIo<TcpStream>),
    Dialed(TokioIo<Box<dyn DialedIo>>),
}

impl Connection for TargetStream {
    fn connected(&self) -> Connected {
        match self {
            Self::Tcp(s) => s.connected(),
            Self::Dialed(_) => Connected::new(),
        }
    }
}

impl hyper::rt::Read for TargetStream {
    fn poll_read(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: hyper::rt::ReadBufCursor<'_>,
    ) -> Poll<io::Result<()>> {
        match self.get_mut() {
            Self::Tcp(s) => Pin::new(s).poll_read(cx, buf),
            Self::Dialed(s) => Pin::new(s).poll_read(cx, buf),
        }
    }
}

impl hyper::rt::Write for TargetStream {
    fn poll_write(self: Pin<&mut Self>, cx: &mut Context<'_>, buf: &[u8]) -> Poll<io::Result<usize>> {
        match self.get_mut() {
            Self::Tcp(s) => Pin::new(s).poll_write(cx, buf),
            Self::Dialed(s) => Pin::new(s).poll_write(cx, buf),
        }
    }

    fn poll_flush(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        match self.get_mut() {
            Self::Tcp(s) => Pin::new(s).poll_flush(cx),
            Self::Dialed(s) => Pin::new(s).poll_flush(cx),
        }
    }

    fn poll_shutdown(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        match self.get_mut() {
            Self::Tcp(s) => Pin::new(s).poll_shutdown(cx),
            Self::Dialed(s) => Pin::new(s).poll_shutdown(cx),
        }
    }

    fn is_write_vectored(&self) -> bool {
        match self {
            Self::Tcp(s) => s.is_write_vectored(),
            Self::Dialed(s) => s.is_write_vectored(),
        }
    }

    fn poll_write_vectored(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[io::IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        match self.get_mut() {
            Self::Tcp(s) => Pin::new(s).poll_write_vectored(cx, bufs),
            Self::Dialed(s) => Pin::new(s).poll_write_vectored(cx, bufs),
        }
    }
}
