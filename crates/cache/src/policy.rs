//! A route's cache policy, and the RFC 9111 rules that decide whether a
//! request is looked up and whether (and for how long) a response is stored.
//!
//! This is a shared cache that never revalidates and never serves stale
//! responses; it implements this subset of RFC 9111:
//!
//! - Requests ([`Policy::request_bypass`]): a method the route does not
//!   cache, `Cache-Control: no-store`, `no-cache` or `max-age=0` (§5.2.1),
//!   a `Range` header, or an unparseable `Cache-Control` bypass the cache.
//!   Other request directives (`max-age=N`, `max-stale`, `min-fresh`,
//!   `only-if-cached`) and `Pragma` are ignored.
//! - Storing ([`Policy::storable`], §3): only `GET` responses (a `HEAD` is
//!   answered from a stored `GET`, but its own response is not stored);
//!   only the route's statuses; never `206` or a response with
//!   `Content-Range`; never when the request said `no-store`; never when the
//!   response says `no-store`, `private` or `no-cache` (the last two with or
//!   without field names: this cache neither strips fields nor revalidates);
//!   never with `Set-Cookie`; never with `Vary: *`; to a request with
//!   `Authorization`, only when the response says `public`, `s-maxage` or
//!   `must-revalidate` (§3.5). A `Content-Length` above `max_object_bytes`
//!   is refused before the body is read.
//! - Freshness (§4.2.1): the lifetime is `s-maxage` (this is a shared
//!   cache), else `max-age`, else `Expires` minus `Date` (an invalid
//!   `Expires` is already expired; `Expires` without a valid `Date` is not
//!   stored, as there is no wall clock to measure it from), else the route's
//!   `default_ttl_ms`. An upstream `Age` (§5.1) is taken off an explicit
//!   lifetime. The TTL in this cache is that, capped at `max_ttl_ms`; a zero
//!   TTL is not stored. The first of repeated directives counts; a
//!   malformed `Cache-Control` (bad syntax, non-ASCII bytes, a non-numeric
//!   `max-age`) means not storable.
//! - Serving (§4): a stored response is served while its age is below its
//!   TTL, only to requests whose fields named by its `Vary` (§4.1) match the
//!   request it was stored for (field lines joined with `,` and trimmed of
//!   whitespace; no other normalisation). `Age` on a hit is the upstream
//!   `Age` plus the time spent in this cache.
//!
//! Not implemented: heuristic freshness from `Last-Modified` (the route's
//! default TTL stands in for it), validation and `304` refreshes, serving
//! stale (`stale-while-revalidate`, `stale-if-error`), invalidation by
//! unsafe methods (§4.4; use the purge calls), `must-understand`.

use http::{header, HeaderMap, Method, StatusCode};

use crate::directives::{age_s, http_date_s, CacheControl, Vary};
use crate::status::{Bypass, Uncacheable};

/// Default TTL of a response without explicit freshness, in milliseconds.
pub const DEFAULT_TTL_MS: u64 = 60_000;
/// Default cap on any TTL, in milliseconds.
pub const DEFAULT_MAX_TTL_MS: u64 = 3_600_000;
/// Default largest body stored, in bytes.
pub const DEFAULT_MAX_OBJECT_BYTES: usize = 1 << 20;
/// The statuses cached by default: those RFC 9110 §15.1 calls heuristically
/// cacheable, less `206` (partial), `405`, `414` and `501` (errors that
/// usually depend on the request more than on the resource).
pub const DEFAULT_STATUSES: [u16; 8] = [200, 203, 204, 300, 301, 308, 404, 410];

/// A route's cache policy, filled by the caller from the route's config.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Policy {
    /// TTL of a response without explicit freshness, in milliseconds (0: store only
    /// responses that say how long they are fresh).
    pub default_ttl_ms: u64,
    /// Cap on any TTL, in milliseconds.
    pub max_ttl_ms: u64,
    /// Methods answered from the cache (default `GET` and `HEAD`). Of these two only `GET`
    /// responses are stored. Another method listed here (say `POST`) is keyed by its name
    /// and the same parts as a `GET`, never by its body.
    pub methods: Vec<Method>,
    /// Statuses stored (default [`DEFAULT_STATUSES`]).
    pub statuses: Vec<StatusCode>,
    /// Query parameter names that enter the key; the others are ignored.
    pub key_query: Vec<String>,
    /// Request header names (any case) whose values enter the key.
    pub key_headers: Vec<String>,
    /// Largest body stored, in bytes.
    pub max_object_bytes: usize,
}

impl Default for Policy {
    fn default() -> Self {
        Policy {
            default_ttl_ms: DEFAULT_TTL_MS,
            max_ttl_ms: DEFAULT_MAX_TTL_MS,
            methods: vec![Method::GET, Method::HEAD],
            statuses: DEFAULT_STATUSES.iter().filter_map(|&s| StatusCode::from_u16(s).ok()).collect(),
            key_query: Vec::new(),
            key_headers: Vec::new(),
            max_object_bytes: DEFAULT_MAX_OBJECT_BYTES,
        }
    }
}

/// Permission to store a response, from [`Policy::storable`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Storable {
    /// How long the response stays in the cache, in milliseconds (> 0).
    pub ttl_ms: u64,
    /// The response's age when it arrived (its `Age` header), in seconds.
    pub age_s: u64,
    /// The largest body to collect and store, in bytes (the route's `max_object_bytes`).
    pub max_object_bytes: usize,
}

impl Policy {
    /// Why the request must not be answered from the cache, if it must not.
    pub fn request_bypass(&self, method: &Method, request_headers: &HeaderMap) -> Option<Bypass> {
        if !self.methods.contains(method) {
            return Some(Bypass::Method);
        }
        let cc = match CacheControl::parse(request_headers) {
            Ok(cc) => cc,
            Err(_) => return Some(Bypass::InvalidCacheControl),
        };
        if cc.no_store {
            return Some(Bypass::NoStore);
        }
        if cc.no_cache {
            return Some(Bypass::NoCache);
        }
        if cc.max_age_s == Some(0) {
            return Some(Bypass::MaxAgeZero);
        }
        if request_headers.contains_key(header::RANGE) {
            return Some(Bypass::Range);
        }
        None
    }

    /// Whether the response to a request may be stored, and for how long; or why not.
    /// Call it on the response head, before reading the body.
    pub fn storable(
        &self,
        method: &Method,
        request_headers: &HeaderMap,
        status: StatusCode,
        response_headers: &HeaderMap,
    ) -> Result<Storable, Uncacheable> {
        if method == Method::HEAD {
            return Err(Uncacheable::HeadResponse);
        }
        if !self.methods.contains(method) {
            return Err(Uncacheable::Method);
        }
        let request_cc = CacheControl::parse(request_headers).map_err(|_| Uncacheable::InvalidCacheControl)?;
        if request_cc.no_store {
            return Err(Uncacheable::RequestNoStore);
        }
        if status == StatusCode::PARTIAL_CONTENT || response_headers.contains_key(header::CONTENT_RANGE) {
            return Err(Uncacheable::PartialContent);
        }
        if !self.statuses.contains(&status) {
            return Err(Uncacheable::Status);
        }
        let cc = CacheControl::parse(response_headers).map_err(|_| Uncacheable::InvalidCacheControl)?;
        if cc.no_store {
            return Err(Uncacheable::NoStore);
        }
        if cc.private {
            return Err(Uncacheable::Private);
        }
        if cc.no_cache {
            return Err(Uncacheable::NoCache);
        }
        if response_headers.contains_key(header::SET_COOKIE) {
            return Err(Uncacheable::SetCookie);
        }
        match Vary::parse(response_headers) {
            Ok(Vary::Any) => return Err(Uncacheable::VaryStar),
            Ok(Vary::Fields(_)) => {}
            Err(_) => return Err(Uncacheable::VaryInvalid),
        }
        if request_headers.contains_key(header::AUTHORIZATION)
            && !(cc.public || cc.s_maxage_s.is_some() || cc.must_revalidate)
        {
            return Err(Uncacheable::Authorization);
        }
        if let Some(length) = content_length(response_headers) {
            if length > self.max_object_bytes as u64 {
                return Err(Uncacheable::TooLarge);
            }
        }

        let age_s = age_s(response_headers).unwrap_or(0);
        let remaining_ms = match explicit_lifetime_s(&cc, response_headers)? {
            Some(lifetime_s) => lifetime_s.saturating_sub(age_s).saturating_mul(1000),
            None => self.default_ttl_ms,
        };
        let ttl_ms = remaining_ms.min(self.max_ttl_ms);
        if ttl_ms == 0 {
            return Err(Uncacheable::NotFresh);
        }
        Ok(Storable { ttl_ms, age_s, max_object_bytes: self.max_object_bytes })
    }
}

/// The freshness lifetime the response states, in seconds, if it states one.
fn explicit_lifetime_s(cc: &CacheControl, headers: &HeaderMap) -> Result<Option<u64>, Uncacheable> {
    if let Some(s) = cc.s_maxage_s.or(cc.max_age_s) {
        return Ok(Some(s));
    }
    let Some(expires) = headers.get(header::EXPIRES) else {
        return Ok(None);
    };
    let date = headers.get(header::DATE).and_then(|d| http_date_s(d.as_bytes()));
    let Some(date) = date else {
        return Err(Uncacheable::ExpiresWithoutDate);
    };
    // An invalid Expires (such as "0") is a time in the past (RFC 9111 §5.3).
    Ok(Some(match http_date_s(expires.as_bytes()) {
        Some(expires) => u64::try_from(expires.saturating_sub(date)).unwrap_or(0),
        None => 0,
    }))
}

/// The response's `Content-Length`, when it has exactly one valid value.
pub(crate) fn content_length(headers: &HeaderMap) -> Option<u64> {
    let mut values = headers.get_all(header::CONTENT_LENGTH).iter();
    let first = values.next()?;
    if values.any(|v| v != first) {
        return None;
    }
    let text = std::str::from_utf8(crate::directives::trim_ows(first.as_bytes())).ok()?;
    if text.is_empty() || !text.bytes().all(|c| c.is_ascii_digit()) {
        return None;
    }
    text.parse().ok()
}
