//! Bodies on the way through: streamed, never buffered whole.
//!
//! [`Limited`] counts request body bytes as they pass and fails the stream
//! when a route's limit is crossed (a declared Content-Length over the limit
//! is refused before anything is sent). [`IdleTimeout`] ends a stream that
//! stalls (either direction) for longer than the stream idle timeout.
//! [`Tracked`] holds a value, such as a target's in-flight slot, until the
//! response body has been sent or dropped.

use std::future::Future;
use std::pin::Pin;
use std::task::{Context, Poll};

use bytes::Bytes;
use http_body::{Body, Frame, SizeHint};
use http_body_util::combinators::UnsyncBoxBody;
use http_body_util::{BodyExt, Empty, Full};

pub type BoxError = Box<dyn std::error::Error + Send + Sync>;
/// Every body the data plane sends, to clients and to upstreams.
pub type ProxyBody = UnsyncBoxBody<Bytes, BoxError>;

pub fn full(bytes: Bytes) -> ProxyBody {
    Full::new(bytes).map_err(|never| match never {}).boxed_unsync()
}

pub fn empty() -> ProxyBody {
    Empty::new().map_err(|never| match never {}).boxed_unsync()
}

/// The request body grew past the route's limit.
#[derive(Debug, thiserror::Error)]
#[error("request body exceeds {limit} bytes")]
pub struct BodyTooLarge {
    pub limit: u64,
}

/// Fails the stream once more than `limit` bytes have passed, and says so
/// through `tripped` (an HTTP/2 upstream swallows the body's error).
pub struct Limited<B> {
    inner: B,
    remaining: u64,
    limit: u64,
    tripped: std::sync::Arc<std::sync::atomic::AtomicBool>,
}

impl<B> Limited<B> {
    pub fn new(inner: B, limit: u64) -> Self {
        Self { inner, remaining: limit, limit, tripped: Default::default() }
    }

    /// Turns true when the limit was crossed.
    pub fn tripped(&self) -> std::sync::Arc<std::sync::atomic::AtomicBool> {
        self.tripped.clone()
    }
}

impl<B> Body for Limited<B>
where
    B: Body<Data = Bytes> + Unpin,
    B::Error: Into<BoxError>,
{
    type Data = Bytes;
    type Error = BoxError;

    fn poll_frame(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<Result<Frame<Bytes>, BoxError>>> {
        match Pin::new(&mut self.inner).poll_frame(cx) {
            Poll::Ready(Some(Ok(frame))) => {
                if let Some(data) = frame.data_ref() {
                    let len = data.len() as u64;
                    if len > self.remaining {
                        self.tripped.store(true, std::sync::atomic::Ordering::Relaxed);
                        let limit = self.limit;
                        return Poll::Ready(Some(Err(Box::new(BodyTooLarge { limit }))));
                    }
                    self.remaining -= len;
                }
                Poll::Ready(Some(Ok(frame)))
            }
            Poll::Ready(Some(Err(e))) => Poll::Ready(Some(Err(e.into()))),
            Poll::Ready(None) => Poll::Ready(None),
            Poll::Pending => Poll::Pending,
        }
    }

    fn is_end_stream(&self) -> bool {
        self.inner.is_end_stream()
    }

    fn size_hint(&self) -> SizeHint {
        self.inner.size_hint()
    }
}

/// A body that keeps `hold` alive until the body is finished or dropped.
pub struct Tracked<B, T> {
    inner: B,
    hold: Option<T>,
}

impl<B, T> Tracked<B, T> {
    pub fn new(inner: B, hold: T) -> Self {
        Self { inner, hold: Some(hold) }
    }
}

impl<B, T> Body for Tracked<B, T>
where
    B: Body + Unpin,
    T: Unpin,
{
    type Data = B::Data;
    type Error = B::Error;

    fn poll_frame(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<Result<Frame<B::Data>, B::Error>>> {
        let polled = Pin::new(&mut self.inner).poll_frame(cx);
        if matches!(polled, Poll::Ready(None) | Poll::Ready(Some(Err(_)))) {
            self.hold = None;
        }
        polled
    }

    fn is_end_stream(&self) -> bool {
        self.inner.is_end_stream()
    }

    fn size_hint(&self) -> SizeHint {
        self.inner.size_hint()
    }
}

/// A body stream went quiet for longer than the stream idle timeout.
#[derive(Debug, thiserror::Error)]
#[error("no body data for {idle_ms} ms")]
pub struct StreamIdle {
    pub idle_ms: u64,
}

/// Fails the stream when no frame arrives for `idle`. The timer is created
/// only once the body first has to wait, so bodies that are ready at once
/// (most small ones) cost no timer.
pub struct IdleTimeout<B> {
    inner: B,
    idle: std::time::Duration,
    sleep: Option<Pin<Box<tokio::time::Sleep>>>,
}

impl<B> IdleTimeout<B> {
    pub fn new(inner: B, idle: std::time::Duration) -> Self {
        Self { inner, idle, sleep: None }
    }
}

impl<B> Body for IdleTimeout<B>
where
    B: Body<Data = Bytes> + Unpin,
    B::Error: Into<BoxError>,
{
    type Data = Bytes;
    type Error = BoxError;

    fn poll_frame(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<Result<Frame<Bytes>, BoxError>>> {
        let this = &mut *self;
        match Pin::new(&mut this.inner).poll_frame(cx) {
            Poll::Ready(frame) => {
                if let Some(sleep) = this.sleep.as_mut() {
                    sleep.as_mut().reset(tokio::time::Instant::now() + this.idle);
                }
                Poll::Ready(frame.map(|r| r.map_err(Into::into)))
            }
            Poll::Pending => {
                let idle = this.idle;
                let sleep = this.sleep.get_or_insert_with(|| Box::pin(tokio::time::sleep(idle)));
                match sleep.as_mut().poll(cx) {
                    Poll::Ready(()) => {
                        Poll::Ready(Some(Err(Box::new(StreamIdle { idle_ms: idle.as_millis() as u64 }))))
                    }
                    Poll::Pending => Poll::Pending,
                }
            }
        }
    }

    fn is_end_stream(&self) -> bool {
        self.inner.is_end_stream()
    }

    fn size_hint(&self) -> SizeHint {
        self.inner.size_hint()
    }
}

/// Whether `err` (from a proxied exchange) was caused by [`BodyTooLarge`].
pub fn is_body_too_large(err: &(dyn std::error::Error + 'static)) -> bool {
    let mut cur: Option<&(dyn std::error::Error + 'static)> = Some(err);
    while let Some(e) = cur {
        if e.is::<BodyTooLarge>() {
            return true;
        }
        cur = e.source();
    }
    false
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn limited_passes_bodies_within_the_limit_and_fails_beyond() {
        let ok = Limited::new(Full::new(Bytes::from_static(b"hello")), 5);
        assert_eq!(ok.collect().await.unwrap().to_bytes(), "hello");
        let over = Limited::new(Full::new(Bytes::from_static(b"hello!")), 5);
        let err = over.collect().await.unwrap_err();
        assert!(is_body_too_large(err.as_ref()));
    }

    #[tokio::test(start_paused = true)]
    async fn a_stalled_stream_fails_after_the_idle_timeout() {
        let (mut tx, rx) = futures::channel::mpsc::channel::<Result<Frame<Bytes>, std::convert::Infallible>>(4);
        let body = http_body_util::StreamBody::new(rx);
        let mut body = IdleTimeout::new(body, std::time::Duration::from_millis(500));
        tx.try_send(Ok(Frame::data(Bytes::from_static(b"a")))).unwrap();
        assert!(body.frame().await.unwrap().is_ok());
        let waited = tokio::time::Instant::now();
        let err = body.frame().await.unwrap().unwrap_err();
        assert!(err.is::<StreamIdle>(), "{err}");
        assert_eq!(waited.elapsed(), std::time::Duration::from_millis(500));
    }

    #[tokio::test]
    async fn tracked_releases_its_hold_when_the_body_ends() {
        let hold = std::sync::Arc::new(());
        let body = Tracked::new(Full::new(Bytes::from_static(b"x")), hold.clone());
        assert_eq!(std::sync::Arc::strong_count(&hold), 2);
        let _ = body.collect().await;
        assert_eq!(std::sync::Arc::strong_count(&hold), 1);
    }
}

/// Parses JSON like `serde_json`, but refuses an object with a key twice:
/// a validator and an upstream must not be able to read different values
/// (`serde_json` keeps the last, other parsers the first).
pub fn parse_json_strict(bytes: &[u8]) -> Result<serde_json::Value, String> {
    use serde::de::{self, Deserialize, Deserializer, MapAccess, SeqAccess, Visitor};
    use serde_json::{Map, Value};

    struct Strict(Value);
    struct StrictVisitor;

    impl<'de> Visitor<'de> for StrictVisitor {
        type Value = Strict;
        fn expecting(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
            f.write_str("a JSON value")
        }
        fn visit_bool<E>(self, v: bool) -> Result<Strict, E> {
            Ok(Strict(Value::Bool(v)))
        }
        fn visit_i64<E>(self, v: i64) -> Result<Strict, E> {
            Ok(Strict(Value::from(v)))
        }
        fn visit_u64<E>(self, v: u64) -> Result<Strict, E> {
            Ok(Strict(Value::from(v)))
        }
        fn visit_f64<E>(self, v: f64) -> Result<Strict, E> {
            Ok(Strict(serde_json::Number::from_f64(v).map_or(Value::Null, Value::Number)))
        }
        fn visit_str<E>(self, v: &str) -> Result<Strict, E> {
            Ok(Strict(Value::String(v.to_string())))
        }
        fn visit_string<E>(self, v: String) -> Result<Strict, E> {
            Ok(Strict(Value::String(v)))
        }
        fn visit_unit<E>(self) -> Result<Strict, E> {
            Ok(Strict(Value::Null))
        }
        fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> Result<Strict, A::Error> {
            let mut out = Vec::new();
            while let Some(Strict(v)) = seq.next_element()? {
                out.push(v);
            }
            Ok(Strict(Value::Array(out)))
        }
        fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<Strict, A::Error> {
            let mut out = Map::new();
            while let Some(key) = map.next_key::<String>()? {
                if out.contains_key(&key) {
                    return Err(de::Error::custom(format!("the key {key:?} appears twice in one object")));
                }
                let Strict(v) = map.next_value()?;
                out.insert(key, v);
            }
            Ok(Strict(Value::Object(out)))
        }
    }

    impl<'de> Deserialize<'de> for Strict {
        fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Strict, D::Error> {
            d.deserialize_any(StrictVisitor)
        }
    }

    serde_json::from_slice::<Strict>(bytes).map(|s| s.0).map_err(|e| e.to_string())
}

#[cfg(test)]
mod strict_json_tests {
    #[test]
    fn duplicate_keys_are_refused_at_any_depth() {
        assert!(super::parse_json_strict(br#"{"a":1,"b":[{"c":true}]}"#).is_ok());
        let e = super::parse_json_strict(br#"{"role":"user","role":"admin"}"#).unwrap_err();
        assert!(e.contains("\"role\" appears twice"), "{e}");
        assert!(super::parse_json_strict(br#"{"x":[{"k":1,"k":2}]}"#).is_err());
        assert_eq!(super::parse_json_strict(b"12.5").unwrap(), serde_json::json!(12.5));
    }
}
