//! The compressed body: the upstream body's data frames are fed to an
//! async-compression encoder as they arrive and its output leaves in chunks
//! of at most [`OUTPUT_CHUNK_BYTES`]; nothing is buffered whole.
//!
//! Flushing: whenever the upstream body has nothing ready (its poll is
//! pending) and data went in since the last flush, the encoder flushes, so a
//! slowly streaming upstream is never held back by the compressor; the end
//! of the body finishes the stream. A body that keeps being ready is cut into
//! polls of at most [`INPUT_BYTES_PER_POLL`] input bytes (the task yields in
//! between), so one fast response cannot hold the worker thread.
//!
//! Trailers are forwarded after the compressed stream ends. A body error
//! ends the stream with that same error (unwrapped, so the caller can still
//! downcast it); the client then sees a truncated response, never a
//! complete-looking one.

use std::fmt;
use std::io;
use std::pin::Pin;
use std::task::{ready, Context, Poll};

use async_compression::tokio::bufread::{BrotliEncoder, GzipEncoder, ZstdEncoder};
use async_compression::Level as CodecLevel;
use bytes::{Buf, Bytes};
use http::HeaderMap;
use http_body::{Body, Frame};
use tokio::io::{AsyncBufRead, AsyncRead, ReadBuf};

use crate::policy::{Encoding, Level, BROTLI_WINDOW_LOG, ZSTD_WINDOW_LOG};

/// The error of a [`CompressedBody`]: the upstream body's error, or the
/// encoder's.
pub type BodyError = Box<dyn std::error::Error + Send + Sync>;

/// Largest data frame a [`CompressedBody`] yields, in bytes; also the one
/// output buffer each compressed response holds.
pub const OUTPUT_CHUNK_BYTES: usize = 16 * 1024;

/// Most upstream bytes compressed in one poll of a [`CompressedBody`]
/// before it yields to the runtime, in bytes.
pub const INPUT_BYTES_PER_POLL: usize = 256 * 1024;

/// A response body compressed as it flows. Built by
/// [`compress_response`](crate::compress_response).
pub struct CompressedBody<B> {
    codec: Codec<B>,
    out: Box<[u8]>,
    encoding: Encoding,
    done: bool,
}

impl<B> fmt::Debug for CompressedBody<B> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("CompressedBody").field("encoding", &self.encoding).field("done", &self.done).finish()
    }
}

impl<B> CompressedBody<B>
where
    B: Body<Data = Bytes> + Send + 'static,
    B::Error: Into<BodyError>,
{
    pub(crate) fn new(body: B, encoding: Encoding, level: Level) -> Self {
        let reader = BodyReader {
            body: Box::pin(body),
            chunk: Bytes::new(),
            trailers: None,
            error: None,
            ended: false,
            taken_this_poll: 0,
        };
        let codec = match encoding {
            Encoding::Gzip => {
                Codec::Gzip(Box::new(GzipEncoder::with_quality(reader, CodecLevel::Precise(level.gzip()))))
            }
            Encoding::Brotli => {
                let params = async_compression::brotli::EncoderParams::default()
                    .quality(CodecLevel::Precise(level.brotli()))
                    .window_size(BROTLI_WINDOW_LOG);
                Codec::Brotli(Box::new(BrotliEncoder::with_params(reader, params)))
            }
            Encoding::Zstd => Codec::Zstd(Box::new(ZstdEncoder::with_quality_and_params(
                reader,
                CodecLevel::Precise(level.zstd()),
                &[async_compression::zstd::CParameter::window_log(ZSTD_WINDOW_LOG)],
            ))),
        };
        CompressedBody { codec, out: vec![0; OUTPUT_CHUNK_BYTES].into_boxed_slice(), encoding, done: false }
    }
}

impl<B> CompressedBody<B> {
    /// The coding this body is compressed with.
    pub fn encoding(&self) -> Encoding {
        self.encoding
    }
}

impl<B> Body for CompressedBody<B>
where
    B: Body<Data = Bytes>,
    B::Error: Into<BodyError>,
{
    type Data = Bytes;
    type Error = BodyError;

    fn poll_frame(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<Result<Frame<Bytes>, BodyError>>> {
        let this = self.get_mut();
        if this.done {
            return Poll::Ready(None);
        }
        this.codec.reader().taken_this_poll = 0;
        let mut buf = ReadBuf::new(&mut this.out);
        let result = ready!(this.codec.poll_read(cx, &mut buf));
        Poll::Ready(match result {
            Ok(()) if !buf.filled().is_empty() => Some(Ok(Frame::data(Bytes::copy_from_slice(buf.filled())))),
            Ok(()) => {
                this.done = true;
                this.codec.reader().trailers.take().map(|t| Ok(Frame::trailers(t)))
            }
            Err(e) => {
                this.done = true;
                Some(Err(this.codec.reader().error.take().unwrap_or_else(|| Box::new(e))))
            }
        })
    }

    fn is_end_stream(&self) -> bool {
        self.done
    }
}

/// The encoder, boxed: brotli's state alone is several KiB, and the body
/// is moved around by value.
enum Codec<B> {
    Gzip(Box<GzipEncoder<BodyReader<B>>>),
    Brotli(Box<BrotliEncoder<BodyReader<B>>>),
    Zstd(Box<ZstdEncoder<BodyReader<B>>>),
}

impl<B> Codec<B>
where
    B: Body<Data = Bytes>,
    B::Error: Into<BodyError>,
{
    fn poll_read(&mut self, cx: &mut Context<'_>, buf: &mut ReadBuf<'_>) -> Poll<io::Result<()>> {
        match self {
            Codec::Gzip(e) => Pin::new(&mut **e).poll_read(cx, buf),
            Codec::Brotli(e) => Pin::new(&mut **e).poll_read(cx, buf),
            Codec::Zstd(e) => Pin::new(&mut **e).poll_read(cx, buf),
        }
    }
}

impl<B> Codec<B> {
    fn reader(&mut self) -> &mut BodyReader<B> {
        match self {
            Codec::Gzip(e) => e.get_mut(),
            Codec::Brotli(e) => e.get_mut(),
            Codec::Zstd(e) => e.get_mut(),
        }
    }
}

/// The upstream body as an `AsyncBufRead` of its data frames, for the
/// encoder. Trailers and the body's error are kept aside for
/// [`CompressedBody`] to hand on; the encoder only sees the end of input or
/// a stand-in IO error.
struct BodyReader<B> {
    body: Pin<Box<B>>,
    /// What is left of the current data frame.
    chunk: Bytes,
    trailers: Option<HeaderMap>,
    error: Option<BodyError>,
    ended: bool,
    /// Input handed to the encoder in this poll, against
    /// [`INPUT_BYTES_PER_POLL`].
    taken_this_poll: usize,
}

impl<B> AsyncBufRead for BodyReader<B>
where
    B: Body<Data = Bytes>,
    B::Error: Into<BodyError>,
{
    fn poll_fill_buf(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<&[u8]>> {
        let this = self.get_mut();
        let budget = INPUT_BYTES_PER_POLL.saturating_sub(this.taken_this_poll);
        if budget == 0 {
            // Yield: the encoder flushes what it has, and we are polled again.
            cx.waker().wake_by_ref();
            return Poll::Pending;
        }
        while this.chunk.is_empty() && !this.ended {
            match ready!(this.body.as_mut().poll_frame(cx)) {
                Some(Ok(frame)) => match frame.into_data() {
                    Ok(data) => this.chunk = data,
                    Err(frame) => {
                        if let Ok(trailers) = frame.into_trailers() {
                            this.trailers.get_or_insert_with(HeaderMap::new).extend(trailers);
                        }
                    }
                },
                Some(Err(e)) => {
                    this.ended = true;
                    this.error = Some(e.into());
                    return Poll::Ready(Err(io::Error::other("upstream response body failed")));
                }
                None => this.ended = true,
            }
        }
        let len = this.chunk.len().min(budget);
        Poll::Ready(Ok(&this.chunk[..len]))
    }

    fn consume(self: Pin<&mut Self>, amt: usize) {
        let this = self.get_mut();
        let amt = amt.min(this.chunk.len());
        this.chunk.advance(amt);
        this.taken_this_poll = this.taken_this_poll.saturating_add(amt);
    }
}

impl<B> AsyncRead for BodyReader<B>
where
    B: Body<Data = Bytes>,
    B::Error: Into<BodyError>,
{
    fn poll_read(mut self: Pin<&mut Self>, cx: &mut Context<'_>, buf: &mut ReadBuf<'_>) -> Poll<io::Result<()>> {
        let available = ready!(self.as_mut().poll_fill_buf(cx))?;
        let n = available.len().min(buf.remaining());
        buf.put_slice(&available[..n]);
        self.consume(n);
        Poll::Ready(Ok(()))
    }
}
