//! The response cache of the data plane.
//!
//! A route opts in with a [`Policy`]; the gateway then, for each request:
//!
//! 1. asks [`Policy::request_bypass`] whether the request may be answered from
//!    the cache at all (method, request `Cache-Control`, `Range`);
//! 2. builds the request's [`CacheKey`] and calls [`ResponseCache::lookup`]; a
//!    [`Lookup::Hit`] is served as stored, with an `Age` header
//!    ([`Hit::to_response`] does both, and drops the body for `HEAD`);
//! 3. otherwise forwards the request, asks [`Policy::storable`] whether the
//!    response may be stored and for how long, collects the body up to
//!    [`Storable::max_object_bytes`] and calls [`ResponseCache::insert`];
//! 4. sets a cache-status header from [`CacheStatus`].
//!
//! Everything here is synchronous, does no IO and reads no clock: every call
//! that needs the time takes `now_ms`, a monotonic millisecond count supplied
//! by the caller. The rules of RFC 9111 that are implemented (and those that
//! are not) are listed in [`policy`].

#![forbid(unsafe_code)]

pub mod directives;
pub mod key;
mod lru;
pub mod policy;
pub mod status;
pub mod store;

pub use key::CacheKey;
pub use policy::{Policy, Storable};
pub use status::{Bypass, CacheStatus, Uncacheable};
pub use store::{CachedResponse, Hit, Lookup, Miss, ResponseCache, Stats, MAX_VARIANTS_PER_KEY};
