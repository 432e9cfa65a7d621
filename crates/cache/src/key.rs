//! The cache key of a request.
//!
//! A key is made of the route id, the method class (`HEAD` shares `GET`'s,
//! so a `HEAD` is answered from a stored `GET`), the host (lower-cased), the
//! path as sent, the route's chosen query parameters and the route's chosen
//! request headers. Every part is length-prefixed in a canonical byte string,
//! so no two different requests share one; the string is kept with the key
//! and compared on a hit, and its SHA-256 picks the shard and map slot.
//!
//! Query parameters: only the names in [`Policy::key_query`] count, in the
//! policy's order, each with all its values in the order they were sent (so
//! the order of different parameters does not matter, but that of repeated
//! ones does). A parameter sent without `=` has the empty value. Names and
//! values are compared after the one normalisation RFC 3986 §6.2.2 allows
//! every server: percent-encoded unreserved characters are decoded and other
//! percent-escapes upper-cased; `+` is kept as it is. Request headers: only
//! the names in [`Policy::key_headers`] count (case-insensitively), each with
//! all its field lines in order; an absent header differs from an empty one.

use std::borrow::Cow;
use std::ops::Range;

use http::{HeaderMap, Method, Request};
use sha2::{Digest as _, Sha256};

use crate::policy::Policy;

/// Starts every canonical key; a change of layout changes it.
const KEY_LAYOUT: &[u8] = b"raftgate-cache/1\0";

/// The cache key of one request.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CacheKey {
    hash: [u8; 32],
    canonical: Box<[u8]>,
    route: Range<usize>,
    path: Range<usize>,
}

impl CacheKey {
    /// The key of a request to route `route_id`. `host` is the request's
    /// authority host (and port, if sent), `path` its path without the query
    /// and `query` the part after `?`, if any.
    pub fn new(
        policy: &Policy,
        route_id: &str,
        method: &Method,
        host: &str,
        path: &str,
        query: Option<&str>,
        headers: &HeaderMap,
    ) -> Self {
        let parts = 6 + 2 * (policy.key_query.len() + policy.key_headers.len());
        let named: usize = policy.key_query.iter().chain(&policy.key_headers).map(String::len).sum();
        let sent = route_id.len() + host.len() + path.len() + query.map_or(0, str::len);
        let mut buf = Vec::with_capacity(KEY_LAYOUT.len() + 8 * parts + named + sent + 64);
        buf.extend_from_slice(KEY_LAYOUT);
        let route = put(&mut buf, route_id.as_bytes());
        put(&mut buf, method_class(method).as_bytes());
        let at = begin(&mut buf);
        buf.extend(host.bytes().map(|c| c.to_ascii_lowercase()));
        end(&mut buf, at);
        let path = put(&mut buf, if path.is_empty() { b"/" } else { path.as_bytes() });

        put_count(&mut buf, policy.key_query.len());
        for name in &policy.key_query {
            let name = normalize(name.as_bytes());
            put(&mut buf, &name);
            let count_at = buf.len();
            put_count(&mut buf, 0);
            let mut count = 0usize;
            for (_, value) in query_params(query).filter(|(n, _)| normalize(n) == name) {
                put(&mut buf, &normalize(value));
                count += 1;
            }
            buf[count_at..count_at + 8].copy_from_slice(&(count as u64).to_le_bytes());
        }

        put_count(&mut buf, policy.key_headers.len());
        for name in &policy.key_headers {
            let at = begin(&mut buf);
            buf.extend(name.bytes().map(|c| c.to_ascii_lowercase()));
            end(&mut buf, at);
            let count_at = buf.len();
            put_count(&mut buf, 0);
            let mut count = 0usize;
            for value in headers.get_all(name.as_str()) {
                put(&mut buf, value.as_bytes());
                count += 1;
            }
            buf[count_at..count_at + 8].copy_from_slice(&(count as u64).to_le_bytes());
        }

        let hash: [u8; 32] = Sha256::digest(&buf).into();
        CacheKey { hash, canonical: buf.into_boxed_slice(), route, path }
    }

    /// The key of `request` to route `route_id`; the host is the URI's
    /// authority (HTTP/2, absolute-form) or else the `Host` header.
    pub fn from_request<B>(policy: &Policy, route_id: &str, request: &Request<B>) -> Self {
        let uri = request.uri();
        let host = match uri.authority() {
            Some(a) => a.as_str().rsplit('@').next().unwrap_or(""),
            None => request.headers().get(http::header::HOST).and_then(|h| h.to_str().ok()).unwrap_or(""),
        };
        CacheKey::new(policy, route_id, request.method(), host, uri.path(), uri.query(), request.headers())
    }

    /// The SHA-256 of the canonical key.
    pub fn hash(&self) -> &[u8; 32] {
        &self.hash
    }

    /// The canonical, unambiguous byte string the hash is taken of.
    pub fn canonical(&self) -> &[u8] {
        &self.canonical
    }

    /// The route the key belongs to.
    pub fn route_id(&self) -> &str {
        std::str::from_utf8(&self.canonical[self.route.clone()]).unwrap_or("")
    }

    /// The request path the key was built from.
    pub fn path(&self) -> &str {
        std::str::from_utf8(&self.canonical[self.path.clone()]).unwrap_or("")
    }

    /// The first 8 bytes of the hash, to pick a shard.
    pub(crate) fn shard_bits(&self) -> u64 {
        let mut b = [0u8; 8];
        b.copy_from_slice(&self.hash[..8]);
        u64::from_le_bytes(b)
    }
}

/// The method a stored response answers: `HEAD` is answered from `GET`.
pub fn method_class(method: &Method) -> &str {
    if method == Method::HEAD {
        Method::GET.as_str()
    } else {
        method.as_str()
    }
}

/// The `name=value` pairs of a query, split at `&` and at the first `=`; a pair without
/// `=` has the empty value.
fn query_params(query: Option<&str>) -> impl Iterator<Item = (&[u8], &[u8])> {
    query.unwrap_or("").as_bytes().split(|&c| c == b'&').filter(|p| !p.is_empty()).map(|p| {
        match p.iter().position(|&c| c == b'=') {
            Some(i) => (&p[..i], &p[i + 1..]),
            None => (p, &b""[..]),
        }
    })
}

/// Appends `part` with its length before it; returns where `part` lies in `buf`.
fn put(buf: &mut Vec<u8>, part: &[u8]) -> Range<usize> {
    let at = begin(buf);
    buf.extend_from_slice(part);
    end(buf, at);
    at + 8..buf.len()
}

/// Reserves a length prefix; [`end`] fills it in.
fn begin(buf: &mut Vec<u8>) -> usize {
    let at = buf.len();
    buf.extend_from_slice(&[0; 8]);
    at
}

fn end(buf: &mut [u8], at: usize) {
    let len = (buf.len() - at - 8) as u64;
    buf[at..at + 8].copy_from_slice(&len.to_le_bytes());
}

fn put_count(buf: &mut Vec<u8>, n: usize) {
    buf.extend_from_slice(&(n as u64).to_le_bytes());
}

/// RFC 3986 §6.2.2 normalisation of a query component: `%XX` of an
/// unreserved character is decoded, other escapes get upper-case hex digits;
/// invalid escapes and everything else are kept byte for byte.
fn normalize(s: &[u8]) -> Cow<'_, [u8]> {
    if !s.contains(&b'%') {
        return Cow::Borrowed(s);
    }
    let mut out = Vec::with_capacity(s.len());
    let mut i = 0;
    while i < s.len() {
        if s[i] == b'%' && i + 2 < s.len() {
            if let (Some(h), Some(l)) = (hex(s[i + 1]), hex(s[i + 2])) {
                let c = h * 16 + l;
                if c.is_ascii_alphanumeric() || b"-._~".contains(&c) {
                    out.push(c);
                } else {
                    out.extend_from_slice(&[b'%', s[i + 1].to_ascii_uppercase(), s[i + 2].to_ascii_uppercase()]);
                }
                i += 3;
                continue;
            }
        }
        out.push(s[i]);
        i += 1;
    }
    Cow::Owned(out)
}

fn hex(c: u8) -> Option<u8> {
    match c {
        b'0'..=b'9' => Some(c - b'0'),
        b'a'..=b'f' => Some(c - b'a' + 10),
        b'A'..=b'F' => Some(c - b'A' + 10),
        _ => None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn normalize_decodes_only_unreserved_escapes() {
        assert_eq!(&*normalize(b"a%41%2b%2F%7e"), b"aA%2B%2F~");
        assert_eq!(&*normalize(b"100%"), b"100%");
        assert_eq!(&*normalize(b"%4"), b"%4");
        assert_eq!(&*normalize(b"%zz+"), b"%zz+");
    }
}
