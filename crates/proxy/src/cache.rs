//! The response-cache stage: the route's [`CachePolicy`] on top of the
//! node's [`ResponseCache`] (`raftgate-cache`), bounded in bytes and
//! entries for all routes together.
//!
//! Before the upstream: a request the policy does not bypass is looked up;
//! a hit is answered from memory (`Age`, `X-Cache-Status: HIT`) and never
//! reaches the upstream. After it: a storable response streams to the
//! client as usual while [`Fill`] keeps a copy (up to the object limit)
//! and stores it when the body ends; `X-Cache-Status` says MISS, EXPIRED,
//! BYPASS or UNCACHEABLE, with the reason in `X-Cache-Detail`.
//! On an authenticated route the consumer is part of the key.
//! Compression runs after this stage, so entries are stored as the
//! upstream sent them. Purges (`raftgatectl cache purge`) reach every node.

use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::Instant;

use bytes::{Bytes, BytesMut};
use http::header::{HeaderName, HeaderValue};
use http::{HeaderMap, Method, Response, StatusCode};
use http_body::{Body, Frame};
use http_body_util::BodyExt;
use raftgate_cache::{CacheKey, CacheStatus, Lookup, Miss, ResponseCache, Storable};
use raftgate_model::edge::{CachePolicy, DEFAULT_CACHE_OBJECT_BYTES};

use crate::body::{BoxError, ProxyBody};

pub const X_CACHE_STATUS: HeaderName = HeaderName::from_static("x-cache-status");
pub const X_CACHE_DETAIL: HeaderName = HeaderName::from_static("x-cache-detail");
/// Memory for cached responses on a node, all routes together.
pub const DEFAULT_CACHE_CAPACITY_BYTES: usize = 256 << 20;
/// Entries on a node, all routes together.
pub const DEFAULT_CACHE_MAX_ENTRIES: usize = 100_000;

/// The store's policy for a route's cache settings.
pub fn policy(c: &CachePolicy) -> raftgate_cache::Policy {
    let ttl_ms = u64::from(c.ttl_s) * 1_000;
    raftgate_cache::Policy {
        default_ttl_ms: ttl_ms,
        max_ttl_ms: c.max_ttl_s.map_or(ttl_ms.max(3_600_000), |m| u64::from(m) * 1_000),
        key_query: c.key_query.clone(),
        key_headers: c.key_headers.clone(),
        max_object_bytes: c.max_object_bytes.unwrap_or(DEFAULT_CACHE_OBJECT_BYTES) as usize,
        ..raftgate_cache::Policy::default()
    }
}

/// What the lookup left for after the upstream.
pub struct Pending {
    key: Option<CacheKey>,
    status: CacheStatus,
    miss: Miss,
}

/// Before the upstream: the stored response, or what to do after.
pub enum Before {
    Hit(Response<ProxyBody>),
    Forward(Pending),
}

#[allow(clippy::too_many_arguments)]
pub fn before(
    cache: &ResponseCache,
    policy: &raftgate_cache::Policy,
    route_id: &str,
    method: &Method,
    host: &str,
    path: &str,
    query: Option<&str>,
    headers: &HeaderMap,
    now_ms: u64,
) -> Before {
    if let Some(reason) = policy.request_bypass(method, headers) {
        return Before::Forward(Pending { key: None, status: CacheStatus::Bypass(reason), miss: Miss::Absent });
    }
    let key = CacheKey::new(policy, route_id, method, host, path, query, headers);
    match cache.lookup(&key, headers, now_ms) {
        Lookup::Hit(hit) => {
            let mut resp = hit.to_response(method).map(crate::body::full);
            set_status(resp.headers_mut(), CacheStatus::Hit);
            Before::Hit(resp)
        }
        Lookup::Miss(miss) => {
            let status = if miss == Miss::Expired { CacheStatus::Expired } else { CacheStatus::Miss };
            Before::Forward(Pending { key: Some(key), status, miss })
        }
    }
}

fn set_status(h: &mut HeaderMap, status: CacheStatus) {
    h.insert(X_CACHE_STATUS, HeaderValue::from_static(status.as_str()));
    if let Some(d) = status.detail() {
        h.insert(X_CACHE_DETAIL, HeaderValue::from_static(d));
    }
}

/// After the upstream: marks the response and, when it may be stored,
/// tees its body into the cache.
#[allow(clippy::too_many_arguments)]
pub fn after(
    pending: Pending,
    cache: &Arc<ResponseCache>,
    policy: &raftgate_cache::Policy,
    method: &Method,
    request_headers: &HeaderMap,
    resp: Response<ProxyBody>,
    epoch: Instant,
) -> Response<ProxyBody> {
    let Pending { key, status, miss } = pending;
    let Some(key) = key else {
        let mut resp = resp;
        set_status(resp.headers_mut(), status);
        return resp;
    };
    let storable = policy.storable(method, request_headers, resp.status(), resp.headers());
    let (mut parts, body) = resp.into_parts();
    let shown = CacheStatus::after_miss(miss, storable.as_ref().map(|_| ()).map_err(|e| *e));
    let body = match storable {
        Ok(storable) => Fill {
            inner: body,
            kept: BytesMut::new(),
            store: Some(Store {
                cache: cache.clone(),
                key,
                request_headers: vary_headers(request_headers),
                status: parts.status,
                headers: parts.headers.clone(),
                storable,
                epoch,
            }),
        }
        .boxed_unsync(),
        Err(_) => body,
    };
    set_status(&mut parts.headers, shown);
    Response::from_parts(parts, body)
}

/// The request headers a stored entry's `Vary` may name (all of them:
/// the entry keeps only those its response varies on).
fn vary_headers(h: &HeaderMap) -> HeaderMap {
    h.clone()
}

struct Store {
    cache: Arc<ResponseCache>,
    key: CacheKey,
    request_headers: HeaderMap,
    status: StatusCode,
    headers: HeaderMap,
    storable: Storable,
    epoch: Instant,
}

/// A response body that also keeps a copy for the cache, up to the
/// object limit; the copy is stored when the body ends cleanly.
struct Fill {
    inner: ProxyBody,
    kept: BytesMut,
    /// None once the copy is abandoned (too large, an error) or stored.
    store: Option<Store>,
}

impl Fill {
    fn finish(&mut self) {
        if let Some(s) = self.store.take() {
            let body = std::mem::take(&mut self.kept).freeze();
            let now_ms = s.epoch.elapsed().as_millis() as u64;
            let _ = s.cache.insert(s.key, &s.request_headers, s.status, &s.headers, body, s.storable, now_ms);
        }
    }
}

impl Body for Fill {
    type Data = Bytes;
    type Error = BoxError;

    fn poll_frame(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<Result<Frame<Bytes>, BoxError>>> {
        let this = &mut *self;
        let polled = Pin::new(&mut this.inner).poll_frame(cx);
        match &polled {
            Poll::Ready(Some(Ok(frame))) => {
                if let (Some(data), Some(store)) = (frame.data_ref(), &this.store) {
                    if this.kept.len() + data.len() > store.storable.max_object_bytes {
                        this.store = None;
                        this.kept = BytesMut::new();
                    } else {
                        this.kept.extend_from_slice(data);
                    }
                }
                // hyper may not poll again once the body says it has ended.
                if this.inner.is_end_stream() {
                    this.finish();
                }
            }
            Poll::Ready(Some(Err(_))) => this.store = None,
            Poll::Ready(None) => this.finish(),
            Poll::Pending => {}
        }
        polled
    }

    fn is_end_stream(&self) -> bool {
        self.inner.is_end_stream()
    }

    fn size_hint(&self) -> http_body::SizeHint {
        self.inner.size_hint()
    }
}
