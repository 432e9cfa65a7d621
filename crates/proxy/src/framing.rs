//! Request smuggling guard for HTTP/1 connections.
//!
//! hyper reads a request that carries both Content-Length and
//! Transfer-Encoding as chunked, drops the Content-Length header and closes
//! the connection after the response (RFC 9112 §6.3 allows that). Raftgate
//! refuses such a request outright with 400, which hyper's API cannot tell
//! it about: by the time the request reaches the pipeline, the
//! Content-Length is gone. So the bytes of every HTTP/1 connection pass
//! through a [`FramingGuard`] that follows the message framing (heads,
//! Content-Length bodies, chunked bodies) and notes the number of the first
//! request whose head has both headers. The pipeline counts requests on the
//! connection and refuses that one.
//!
//! The scan stops for good (costing nothing more) at the first ambiguous
//! request, at an upgrade or HTTP/2 preface, or at anything it cannot
//! follow; hyper's own parser then decides, as without the guard. A head is
//! buffered only up to `max_head_bytes` (hyper's own ceiling, twice the
//! configured head limit).
//!
//! The guard also bounds the wait for a connection's first bytes: until the
//! client has sent enough to tell HTTP/1 from HTTP/2 (24 bytes), hyper has no
//! timer running, so a client that connects and stays silent would hold a
//! connection slot forever. After `first_bytes_timeout` such a read fails.

use std::io;
use std::pin::Pin;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::task::{Context, Poll};

use std::future::Future;

use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};

/// What the guard learned about a connection, shared with the pipeline.
#[derive(Debug, Default)]
pub struct Framing {
    /// 1-based number of the first request with both Content-Length and
    /// Transfer-Encoding; 0 while there is none.
    ambiguous: AtomicU64,
    /// Requests the pipeline has seen on this connection.
    served: AtomicU64,
}

impl Framing {
    /// Called once per request, in order: true if this request is the
    /// ambiguous one.
    pub fn next_request_is_ambiguous(&self) -> bool {
        let n = self.served.fetch_add(1, Ordering::Relaxed) + 1;
        self.ambiguous.load(Ordering::Relaxed) == n
    }
}

#[derive(Debug)]
enum Scan {
    /// Collecting a request head.
    Head,
    /// Skipping this many body bytes.
    Body(u64),
    /// Reading a chunk-size line.
    ChunkSize,
    /// Skipping chunk data plus its CRLF.
    ChunkData(u64),
    /// After the last chunk: trailer lines until an empty one.
    Trailers,
    /// Not following the stream any more.
    Done,
}

/// Follows HTTP/1 request framing over the bytes read from a connection.
#[derive(Debug)]
pub struct Scanner {
    state: Scan,
    line: Vec<u8>,
    heads: u64,
    max_head_bytes: usize,
    framing: Arc<Framing>,
}

impl Scanner {
    pub fn new(framing: Arc<Framing>, max_head_bytes: usize) -> Self {
        Self { state: Scan::Head, line: Vec::new(), heads: 0, max_head_bytes, framing }
    }

    /// Feeds bytes as they are read.
    pub fn feed(&mut self, mut bytes: &[u8]) {
        while !bytes.is_empty() {
            match &mut self.state {
                Scan::Done => return,
                Scan::Body(n) => {
                    let take = (*n).min(bytes.len() as u64);
                    *n -= take;
                    bytes = &bytes[take as usize..];
                    if *n == 0 {
                        self.state = Scan::Head;
                    }
                }
                Scan::ChunkData(n) => {
                    let take = (*n).min(bytes.len() as u64);
                    *n -= take;
                    bytes = &bytes[take as usize..];
                    if *n == 0 {
                        self.state = Scan::ChunkSize;
                    }
                }
                Scan::Head | Scan::ChunkSize | Scan::Trailers => {
                    // Collect up to the end of the head (or of the line).
                    let head = matches!(self.state, Scan::Head);
                    let before = self.line.len();
                    self.line.extend_from_slice(bytes);
                    let from = before.saturating_sub(3);
                    // httparse also accepts bare LF line endings.
                    let found =
                        if head { find_head_end(&self.line[from..]) } else { find_line_end(&self.line[from..]) };
                    match found {
                        Some(end_at) => {
                            let cut = from + end_at;
                            bytes = &bytes[cut - before..];
                            // Reuse the buffer's capacity for the next unit.
                            let mut unit = std::mem::take(&mut self.line);
                            unit.truncate(cut);
                            self.finish_unit(&unit);
                            if !matches!(self.state, Scan::Done) {
                                unit.clear();
                                self.line = unit;
                            }
                        }
                        None => {
                            if self.line.len() > self.max_head_bytes {
                                self.stop();
                            }
                            return;
                        }
                    }
                }
            }
        }
    }

    fn stop(&mut self) {
        self.state = Scan::Done;
        self.line = Vec::new();
    }

    fn finish_unit(&mut self, unit: &[u8]) {
        match self.state {
            Scan::Head => self.finish_head(unit),
            Scan::ChunkSize => {
                let line = unit.strip_suffix(b"\n").unwrap_or(unit);
                let line = line.strip_suffix(b"\r").unwrap_or(line);
                let size = line.split(|b| *b == b';').next().unwrap_or(b"");
                let size = std::str::from_utf8(size).ok().and_then(|s| u64::from_str_radix(s.trim(), 16).ok());
                self.state = match size {
                    Some(0) => Scan::Trailers,
                    Some(n) => Scan::ChunkData(n.saturating_add(2)),
                    None => Scan::Done,
                };
            }
            Scan::Trailers if unit == b"\r\n" || unit == b"\n" => self.state = Scan::Head,
            _ => {}
        }
    }

    fn finish_head(&mut self, head: &[u8]) {
        // Empty lines before a request line are ignored (RFC 9112 §2.2).
        let head = trim_leading_crlf(head);
        if head.is_empty() {
            return;
        }
        self.heads += 1;
        let mut lines = head.split(|b| *b == b'\n').map(|l| l.strip_suffix(b"\r").unwrap_or(l));
        let request_line = lines.next().unwrap_or(b"");
        if request_line.ends_with(b"HTTP/2.0") {
            return self.stop();
        }
        let (mut length, mut chunked, mut has_cl, mut has_te) = (None, false, false, false);
        let (mut upgrade, mut connection_upgrade) = (false, false);
        for line in lines {
            let Some(colon) = line.iter().position(|b| *b == b':') else { continue };
            let name = &line[..colon];
            let value = std::str::from_utf8(&line[colon + 1..]).unwrap_or("").trim();
            if name.eq_ignore_ascii_case(b"content-length") {
                has_cl = true;
                length = value.parse::<u64>().ok();
            } else if name.eq_ignore_ascii_case(b"transfer-encoding") {
                has_te = true;
                chunked = value.rsplit(',').next().is_some_and(|v| v.trim().eq_ignore_ascii_case("chunked"));
            } else if name.eq_ignore_ascii_case(b"upgrade") {
                upgrade = true;
            } else if name.eq_ignore_ascii_case(b"connection") {
                connection_upgrade |= value.split(',').any(|t| t.trim().eq_ignore_ascii_case("upgrade"));
            }
        }
        if has_cl && has_te {
            self.framing.ambiguous.store(self.heads, Ordering::Relaxed);
            return self.stop();
        }
        // Only a real upgrade hands the bytes to another protocol.
        self.state = if upgrade && connection_upgrade {
            Scan::Done
        } else if chunked {
            Scan::ChunkSize
        } else if has_te {
            Scan::Done
        } else {
            match (has_cl, length) {
                (true, Some(0)) | (false, _) => Scan::Head,
                (true, Some(n)) => Scan::Body(n),
                (true, None) => Scan::Done,
            }
        };
        if matches!(self.state, Scan::Done) {
            self.line = Vec::new();
        }
    }
}

/// Index just past the blank line ending a head (`\r\n\r\n`, `\n\n` or mixed).
fn find_head_end(b: &[u8]) -> Option<usize> {
    let mut i = 0;
    while let Some(nl) = b[i..].iter().position(|c| *c == b'\n') {
        let at = i + nl;
        match b.get(at + 1) {
            Some(b'\n') => return Some(at + 2),
            Some(b'\r') if b.get(at + 2) == Some(&b'\n') => return Some(at + 3),
            _ => i = at + 1,
        }
    }
    None
}

/// Index just past the end of the first line.
fn find_line_end(b: &[u8]) -> Option<usize> {
    b.iter().position(|c| *c == b'\n').map(|at| at + 1)
}

fn trim_leading_crlf(mut b: &[u8]) -> &[u8] {
    while let [b'\r', b'\n', rest @ ..] | [b'\n', rest @ ..] = b {
        b = rest;
    }
    b
}

/// Bytes that tell HTTP/1 from HTTP/2 (the length of the HTTP/2 preface).
const PREFACE_BYTES: usize = 24;

/// A connection whose reads pass through a [`Scanner`].
pub struct FramingGuard<IO> {
    inner: IO,
    scanner: Scanner,
    /// Until the first PREFACE_BYTES arrive: when the wait ends.
    first_bytes: Option<(usize, Pin<Box<tokio::time::Sleep>>)>,
}

impl<IO> FramingGuard<IO> {
    pub fn new(inner: IO, max_head_bytes: usize, first_bytes_timeout: std::time::Duration) -> (Self, Arc<Framing>) {
        let framing = Arc::new(Framing::default());
        let deadline = Box::pin(tokio::time::sleep(first_bytes_timeout));
        (
            Self { inner, scanner: Scanner::new(framing.clone(), max_head_bytes), first_bytes: Some((0, deadline)) },
            framing,
        )
    }
}

impl<IO: AsyncRead + Unpin> AsyncRead for FramingGuard<IO> {
    fn poll_read(mut self: Pin<&mut Self>, cx: &mut Context<'_>, buf: &mut ReadBuf<'_>) -> Poll<io::Result<()>> {
        let before = buf.filled().len();
        let this = &mut *self;
        let polled = Pin::new(&mut this.inner).poll_read(cx, buf);
        match &polled {
            Poll::Ready(Ok(())) => {
                let read = &buf.filled()[before..];
                this.scanner.feed(read);
                if let Some((seen, _)) = this.first_bytes.as_mut() {
                    *seen += read.len();
                    if *seen >= PREFACE_BYTES || read.is_empty() {
                        this.first_bytes = None;
                    }
                }
            }
            Poll::Pending => {
                if let Some((_, deadline)) = this.first_bytes.as_mut() {
                    if deadline.as_mut().poll(cx).is_ready() {
                        return Poll::Ready(Err(io::Error::new(
                            io::ErrorKind::TimedOut,
                            "no request within the time limit",
                        )));
                    }
                }
            }
            Poll::Ready(Err(_)) => {}
        }
        polled
    }
}

impl<IO: AsyncWrite + Unpin> AsyncWrite for FramingGuard<IO> {
    fn poll_write(mut self: Pin<&mut Self>, cx: &mut Context<'_>, data: &[u8]) -> Poll<io::Result<usize>> {
        Pin::new(&mut self.inner).poll_write(cx, data)
    }
    fn poll_write_vectored(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[io::IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        Pin::new(&mut self.inner).poll_write_vectored(cx, bufs)
    }
    fn is_write_vectored(&self) -> bool {
        self.inner.is_write_vectored()
    }
    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.inner).poll_flush(cx)
    }
    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.inner).poll_shutdown(cx)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Feeds `bytes` in pieces of `step` and returns the ambiguous request number.
    fn scan(bytes: &[u8], step: usize) -> u64 {
        let framing = Arc::new(Framing::default());
        let mut s = Scanner::new(framing.clone(), 64 * 1024);
        for piece in bytes.chunks(step) {
            s.feed(piece);
        }
        framing.ambiguous.load(Ordering::Relaxed)
    }

    const CL_BODY: &[u8] = b"POST /a HTTP/1.1\r\nHost: h\r\nContent-Length: 5\r\n\r\nhello";
    const CHUNKED: &[u8] =
        b"POST /b HTTP/1.1\r\nHost: h\r\nTransfer-Encoding: chunked\r\n\r\n5;ext=1\r\nhello\r\n0\r\nX-Trailer: 1\r\n\r\n";
    const GET: &[u8] = b"GET /c HTTP/1.1\r\nHost: h\r\n\r\n";
    const BOTH: &[u8] =
        b"POST /d HTTP/1.1\r\nHost: h\r\nContent-Length: 4\r\nTransfer-Encoding: chunked\r\n\r\n0\r\n\r\n";

    #[test]
    fn the_first_request_with_both_lengths_is_numbered_across_any_split() {
        let mut stream = Vec::new();
        for part in [CL_BODY, CHUNKED, GET, b"\r\n", BOTH, GET] {
            stream.extend_from_slice(part);
        }
        for step in [1, 2, 3, 7, 64, stream.len()] {
            assert_eq!(scan(&stream, step), 4, "split into pieces of {step}");
        }
    }

    #[test]
    fn ordinary_requests_are_never_flagged() {
        let mut stream = Vec::new();
        for _ in 0..10 {
            for part in [CL_BODY, CHUNKED, GET] {
                stream.extend_from_slice(part);
            }
        }
        assert_eq!(scan(&stream, 5), 0);
    }

    #[test]
    fn body_bytes_that_look_like_a_head_are_skipped() {
        let body = b"GET /x HTTP/1.1\r\nContent-Length: 1\r\nTransfer-Encoding: chunked\r\n\r\n";
        let mut stream = format!("POST /a HTTP/1.1\r\nContent-Length: {}\r\n\r\n", body.len()).into_bytes();
        stream.extend_from_slice(body);
        stream.extend_from_slice(GET);
        assert_eq!(scan(&stream, 4), 0);
    }

    #[test]
    fn bare_lf_heads_are_followed_too() {
        let mut stream = b"GET /a HTTP/1.1\nHost: h\n\n".to_vec();
        stream.extend_from_slice(b"POST /b HTTP/1.1\nContent-Length: 2\nTransfer-Encoding: chunked\n\n0\n\n");
        assert_eq!(scan(&stream, 3), 2);
    }

    #[test]
    fn an_upgrade_header_without_connection_upgrade_does_not_stop_the_scan() {
        let mut stream = b"GET /a HTTP/1.1\r\nUpgrade: websocket\r\n\r\n".to_vec();
        stream.extend_from_slice(BOTH);
        assert_eq!(scan(&stream, 5), 2);
    }

    #[tokio::test(start_paused = true)]
    async fn a_silent_connection_times_out_before_the_protocol_is_known() {
        use tokio::io::AsyncReadExt;
        let (client, server) = tokio::io::duplex(64);
        let (mut guard, _) = FramingGuard::new(server, 1024, std::time::Duration::from_secs(5));
        let mut buf = [0u8; 8];
        let err = guard.read(&mut buf).await.unwrap_err();
        assert_eq!(err.kind(), io::ErrorKind::TimedOut);
        drop(client);
    }

    #[test]
    fn upgrades_and_http2_stop_the_scan() {
        let mut ws = b"GET /ws HTTP/1.1\r\nUpgrade: websocket\r\nConnection: upgrade\r\n\r\n".to_vec();
        ws.extend_from_slice(BOTH);
        assert_eq!(scan(&ws, 9), 0, "bytes after an upgrade are not HTTP");
        let mut h2 = b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n".to_vec();
        h2.extend_from_slice(BOTH);
        assert_eq!(scan(&h2, 9), 0);
    }

    #[test]
    fn the_pipeline_refuses_exactly_the_numbered_request() {
        let framing = Framing::default();
        framing.ambiguous.store(2, Ordering::Relaxed);
        assert!(!framing.next_request_is_ambiguous());
        assert!(framing.next_request_is_ambiguous());
        assert!(!framing.next_request_is_ambiguous());
    }
}
