//! Why a request was or was not answered from the cache, and why a response
//! was or was not stored.
//!
//! The gateway folds the outcome of a request into one [`CacheStatus`] and
//! sets a cache-status header from it: [`CacheStatus::as_str`] is the coarse
//! word (`HIT`, `MISS`, `EXPIRED`, `BYPASS`, `UNCACHEABLE`, as Kong's and
//! APISIX's cache-status headers have it) and [`CacheStatus::detail`] the
//! reason, a short fixed token. Neither allocates.

use crate::store::Miss;

/// Why a request is not looked up in the cache (it is forwarded as is).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, thiserror::Error)]
pub enum Bypass {
    /// The route does not cache this method.
    #[error("method")]
    Method,
    /// The request says `Cache-Control: no-store`; its response is not stored either.
    #[error("request-no-store")]
    NoStore,
    /// The request says `Cache-Control: no-cache`; its response may refresh the cache.
    #[error("request-no-cache")]
    NoCache,
    /// The request says `Cache-Control: max-age=0`; its response may refresh the cache.
    #[error("request-max-age-0")]
    MaxAgeZero,
    /// The request has a `Range` header: the cache stores and serves whole responses only.
    #[error("range")]
    Range,
    /// The request's `Cache-Control` could not be parsed (invalid bytes, bad syntax).
    #[error("request-cache-control-invalid")]
    InvalidCacheControl,
}

impl Bypass {
    /// The reason as a short token, for a cache-status header.
    pub fn as_str(self) -> &'static str {
        match self {
            Bypass::Method => "method",
            Bypass::NoStore => "request-no-store",
            Bypass::NoCache => "request-no-cache",
            Bypass::MaxAgeZero => "request-max-age-0",
            Bypass::Range => "range",
            Bypass::InvalidCacheControl => "request-cache-control-invalid",
        }
    }
}

/// Why a response is not stored.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, thiserror::Error)]
pub enum Uncacheable {
    /// The route does not cache this method.
    #[error("method")]
    Method,
    /// A response to `HEAD` has no body to serve a later `GET`; only `GET` responses are stored.
    #[error("head-response")]
    HeadResponse,
    /// The status is not in the route's cached statuses.
    #[error("status")]
    Status,
    /// `206 Partial Content` or a `Content-Range` header: only whole responses are stored.
    #[error("partial-content")]
    PartialContent,
    /// The request said `Cache-Control: no-store`.
    #[error("request-no-store")]
    RequestNoStore,
    /// The response says `Cache-Control: no-store`.
    #[error("no-store")]
    NoStore,
    /// The response says `Cache-Control: private` (with or without field names).
    #[error("private")]
    Private,
    /// The response says `Cache-Control: no-cache` (with or without field names): this
    /// cache does not revalidate, so such a response is not stored at all.
    #[error("no-cache")]
    NoCache,
    /// The response sets a cookie.
    #[error("set-cookie")]
    SetCookie,
    /// The response says `Vary: *`.
    #[error("vary-star")]
    VaryStar,
    /// The response's `Vary` could not be parsed or names too many fields.
    #[error("vary-invalid")]
    VaryInvalid,
    /// The request had `Authorization` and the response does not say `public`,
    /// `s-maxage` or `must-revalidate` (RFC 9111 §3.5).
    #[error("authorization")]
    Authorization,
    /// A `Cache-Control` (request or response) could not be parsed.
    #[error("cache-control-invalid")]
    InvalidCacheControl,
    /// The response has `Expires` but no valid `Date` to measure it from (this cache has no
    /// wall clock of its own).
    #[error("expires-without-date")]
    ExpiresWithoutDate,
    /// The response is already stale (`max-age=0`, `Expires` not after `Date`, an `Age` at
    /// least its lifetime, or a zero TTL from the policy).
    #[error("not-fresh")]
    NotFresh,
    /// The body is larger than the route's `max_object_bytes`, or the entry is larger than
    /// one shard of the cache can hold.
    #[error("too-large")]
    TooLarge,
    /// The body's length differs from the response's `Content-Length` (truncated, or a
    /// `HEAD` response).
    #[error("incomplete")]
    Incomplete,
}

impl Uncacheable {
    /// The reason as a short token, for a cache-status header.
    pub fn as_str(self) -> &'static str {
        match self {
            Uncacheable::Method => "method",
            Uncacheable::HeadResponse => "head-response",
            Uncacheable::Status => "status",
            Uncacheable::PartialContent => "partial-content",
            Uncacheable::RequestNoStore => "request-no-store",
            Uncacheable::NoStore => "no-store",
            Uncacheable::Private => "private",
            Uncacheable::NoCache => "no-cache",
            Uncacheable::SetCookie => "set-cookie",
            Uncacheable::VaryStar => "vary-star",
            Uncacheable::VaryInvalid => "vary-invalid",
            Uncacheable::Authorization => "authorization",
            Uncacheable::InvalidCacheControl => "cache-control-invalid",
            Uncacheable::ExpiresWithoutDate => "expires-without-date",
            Uncacheable::NotFresh => "not-fresh",
            Uncacheable::TooLarge => "too-large",
            Uncacheable::Incomplete => "incomplete",
        }
    }
}

/// What the cache did for one request.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum CacheStatus {
    /// Served from the cache.
    Hit,
    /// Not in the cache (or no stored variant matched); the response was stored.
    Miss,
    /// The stored response had expired and was removed; the new response was stored.
    Expired,
    /// The request was not looked up.
    Bypass(Bypass),
    /// The request was looked up and missed, and the response was not stored.
    Uncacheable(Uncacheable),
}

impl CacheStatus {
    /// The status after a lookup missed with `miss` and the response was offered for
    /// storage with result `stored` (the result of [`crate::Policy::storable`] and then
    /// of [`crate::ResponseCache::insert`]).
    pub fn after_miss<T>(miss: Miss, stored: Result<T, Uncacheable>) -> Self {
        match (stored, miss) {
            (Err(reason), _) => CacheStatus::Uncacheable(reason),
            (Ok(_), Miss::Expired) => CacheStatus::Expired,
            (Ok(_), Miss::Absent | Miss::VaryMismatch) => CacheStatus::Miss,
        }
    }

    /// The coarse word for a cache-status header.
    pub fn as_str(self) -> &'static str {
        match self {
            CacheStatus::Hit => "HIT",
            CacheStatus::Miss => "MISS",
            CacheStatus::Expired => "EXPIRED",
            CacheStatus::Bypass(_) => "BYPASS",
            CacheStatus::Uncacheable(_) => "UNCACHEABLE",
        }
    }

    /// The reason behind a bypass or a refusal to store, as a short token.
    pub fn detail(self) -> Option<&'static str> {
        match self {
            CacheStatus::Hit | CacheStatus::Miss | CacheStatus::Expired => None,
            CacheStatus::Bypass(b) => Some(b.as_str()),
            CacheStatus::Uncacheable(u) => Some(u.as_str()),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn display_and_as_str_agree() {
        let bypasses = [
            Bypass::Method,
            Bypass::NoStore,
            Bypass::NoCache,
            Bypass::MaxAgeZero,
            Bypass::Range,
            Bypass::InvalidCacheControl,
        ];
        for b in bypasses {
            assert_eq!(b.to_string(), b.as_str());
        }
        let refusals = [
            Uncacheable::Method,
            Uncacheable::HeadResponse,
            Uncacheable::Status,
            Uncacheable::PartialContent,
            Uncacheable::RequestNoStore,
            Uncacheable::NoStore,
            Uncacheable::Private,
            Uncacheable::NoCache,
            Uncacheable::SetCookie,
            Uncacheable::VaryStar,
            Uncacheable::VaryInvalid,
            Uncacheable::Authorization,
            Uncacheable::InvalidCacheControl,
            Uncacheable::ExpiresWithoutDate,
            Uncacheable::NotFresh,
            Uncacheable::TooLarge,
            Uncacheable::Incomplete,
        ];
        for u in refusals {
            assert_eq!(u.to_string(), u.as_str());
        }
    }

    #[test]
    fn after_miss_names_the_refusal_or_the_kind_of_miss() {
        assert_eq!(CacheStatus::after_miss(Miss::Absent, Ok(())), CacheStatus::Miss);
        assert_eq!(CacheStatus::after_miss(Miss::VaryMismatch, Ok(())), CacheStatus::Miss);
        assert_eq!(CacheStatus::after_miss(Miss::Expired, Ok(())), CacheStatus::Expired);
        let refused = CacheStatus::after_miss::<()>(Miss::Expired, Err(Uncacheable::NoStore));
        assert_eq!(refused, CacheStatus::Uncacheable(Uncacheable::NoStore));
        assert_eq!(refused.as_str(), "UNCACHEABLE");
        assert_eq!(refused.detail(), Some("no-store"));
        assert_eq!(CacheStatus::Bypass(Bypass::Range).detail(), Some("range"));
        assert_eq!(CacheStatus::Hit.detail(), None);
    }
}
