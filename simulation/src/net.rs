//! The node's transports over turmoil's simulated TCP: a listener stream
//! for tonic servers and a [`Dialer`] for tonic clients. Everything above
//! the socket (HTTP/2, gRPC, keepalive, timeouts) is the production code.

use std::io;
use std::pin::Pin;
use std::task::{Context, Poll};

use futures::Stream;
use hyper_util::rt::TokioIo;
use raftgate_cluster::{endpoint_for, Dialer};
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tonic::transport::server::Connected;

/// A simulated TCP connection that tonic's server accepts.
pub struct SimStream(turmoil::net::TcpStream);

impl Connected for SimStream {
    type ConnectInfo = ();

    fn connect_info(&self) -> Self::ConnectInfo {}
}

impl AsyncRead for SimStream {
    fn poll_read(mut self: Pin<&mut Self>, cx: &mut Context<'_>, buf: &mut ReadBuf<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.0).poll_read(cx, buf)
    }
}

impl AsyncWrite for SimStream {
    fn poll_write(mut self: Pin<&mut Self>, cx: &mut Context<'_>, buf: &[u8]) -> Poll<io::Result<usize>> {
        Pin::new(&mut self.0).poll_write(cx, buf)
    }

    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.0).poll_flush(cx)
    }

    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.0).poll_shutdown(cx)
    }
}

/// Binds `0.0.0.0:port` on the current simulated host and yields accepted connections.
pub async fn incoming(port: u16) -> io::Result<impl Stream<Item = io::Result<SimStream>> + Send + 'static> {
    let listener = turmoil::net::TcpListener::bind(("0.0.0.0", port)).await?;
    Ok(futures::stream::unfold(listener, |listener| async move {
        let next = listener.accept().await.map(|(stream, _)| SimStream(stream));
        Some((next, listener))
    }))
}

/// Dials `host:port` over simulated TCP, with the production endpoint settings.
pub fn dialer() -> Dialer {
    Dialer::new(|addr| {
        let endpoint = endpoint_for(addr).map_err(|e| e.to_string())?;
        let target = addr.to_string();
        let connector = tower::service_fn(move |_: tonic::transport::Uri| {
            let target = target.clone();
            async move { turmoil::net::TcpStream::connect(target.as_str()).await.map(TokioIo::new) }
        });
        Ok(endpoint.connect_with_connector_lazy(connector))
    })
}
