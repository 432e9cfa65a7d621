//! Headers the gateway owns on the way to the upstream and back.
//!
//! Hop-by-hop headers (RFC 9110 §7.6.1, plus any named in `Connection`) are
//! never forwarded. The upstream learns who the client is from
//! `X-Forwarded-For` (the client address appended to any list the client
//! sent), `X-Forwarded-Proto`, `X-Forwarded-Host` and `Forwarded` (RFC 7239,
//! appended likewise), and every request carries an `X-Request-Id`: the
//! client's own if it is a sane token, otherwise a fresh random one. A
//! verified client certificate is passed on as `X-Forwarded-Client-Cert`.

use std::net::{IpAddr, SocketAddr};
use std::sync::Arc;

use http::header::{HeaderMap, HeaderName, HeaderValue, CONNECTION};
use raftgate_model::route::{is_hop_by_hop, HeaderOps};

pub const X_REQUEST_ID: HeaderName = HeaderName::from_static("x-request-id");
/// The consumer the gateway authenticated the request as (client-sent ones are removed).
pub const X_CONSUMER_ID: HeaderName = HeaderName::from_static("x-consumer-id");
const X_FORWARDED_FOR: HeaderName = HeaderName::from_static("x-forwarded-for");
const X_FORWARDED_PROTO: HeaderName = HeaderName::from_static("x-forwarded-proto");
const X_FORWARDED_HOST: HeaderName = HeaderName::from_static("x-forwarded-host");
const FORWARDED: HeaderName = HeaderName::from_static("forwarded");
/// Longest client-supplied request id that is propagated.
pub const MAX_REQUEST_ID_BYTES: usize = 128;

/// The client's request id if it is 1 to 128 characters of `A-Z a-z 0-9 - _ . : /`, else a new one.
pub fn request_id(headers: &HeaderMap) -> String {
    if let Some(v) = headers.get(&X_REQUEST_ID).and_then(|v| v.to_str().ok()) {
        let ok = !v.is_empty()
            && v.len() <= MAX_REQUEST_ID_BYTES
            && v.bytes().all(|b| b.is_ascii_alphanumeric() || matches!(b, b'-' | b'_' | b'.' | b':' | b'/'));
        if ok {
            return v.to_string();
        }
    }
    const HEX: &[u8; 16] = b"0123456789abcdef";
    let bytes: [u8; 16] = rand::random();
    let mut id = String::with_capacity(32);
    for b in bytes {
        id.push(HEX[usize::from(b >> 4)] as char);
        id.push(HEX[usize::from(b & 15)] as char);
    }
    id
}

/// Hop-by-hop headers (RFC 9110 §7.6.1 and the legacy ones).
const HOP_BY_HOP: [HeaderName; 9] = [
    CONNECTION,
    HeaderName::from_static("keep-alive"),
    HeaderName::from_static("proxy-connection"),
    http::header::TE,
    http::header::TRAILER,
    http::header::TRANSFER_ENCODING,
    http::header::UPGRADE,
    http::header::PROXY_AUTHENTICATE,
    http::header::PROXY_AUTHORIZATION,
];

/// Removes hop-by-hop headers, including those `Connection` names.
pub fn strip_hop_by_hop(headers: &mut HeaderMap) {
    // Most requests carry none: one pass over the names beats a hashed
    // lookup of each of the nine.
    if !headers.keys().any(|k| HOP_BY_HOP.contains(k)) {
        return;
    }
    if headers.contains_key(CONNECTION) {
        let named: Vec<HeaderName> = headers
            .get_all(CONNECTION)
            .iter()
            .filter_map(|v| v.to_str().ok())
            .flat_map(|v| v.split(','))
            .filter_map(|t| HeaderName::from_bytes(t.trim().to_ascii_lowercase().as_bytes()).ok())
            .collect();
        for name in named {
            headers.remove(name);
        }
    }
    for name in &HOP_BY_HOP {
        if headers.contains_key(name) {
            headers.remove(name);
        }
    }
    debug_assert!(!headers.keys().any(|k| is_hop_by_hop(k.as_str())));
}

/// Applies a route's header operations: remove, then set, then add.
pub fn apply_ops(headers: &mut HeaderMap, ops: &HeaderOps) {
    for name in &ops.remove {
        headers.remove(name.as_str());
    }
    for (name, value) in &ops.set {
        if let (Ok(n), Ok(v)) = (HeaderName::from_bytes(name.as_bytes()), HeaderValue::from_str(value)) {
            headers.insert(n, v);
        }
    }
    for (name, value) in &ops.add {
        if let (Ok(n), Ok(v)) = (HeaderName::from_bytes(name.as_bytes()), HeaderValue::from_str(value)) {
            headers.append(n, v);
        }
    }
}

/// How a client address appears in forwarding headers, computed once per
/// connection: the IP as text (`X-Forwarded-For`) and as an RFC 7239 node
/// (`Forwarded: for=`, IPv6 quoted and bracketed).
#[derive(Clone, Debug)]
pub struct ClientAddr {
    pub ip: Arc<str>,
    pub node: Arc<str>,
}

impl ClientAddr {
    pub fn new(client: SocketAddr) -> Self {
        let ip = client.ip().to_canonical();
        let node = match ip {
            IpAddr::V4(v4) => v4.to_string(),
            IpAddr::V6(v6) => format!("\"[{v6}]\""),
        };
        Self { ip: ip.to_string().into(), node: node.into() }
    }
}

/// Adds the X-Forwarded-* and Forwarded headers for a client at `client`.
pub fn add_forwarded(headers: &mut HeaderMap, client: &ClientAddr, proto: &str, host: Option<&str>) {
    append_list(headers, X_FORWARDED_FOR, &client.ip);
    headers.insert(X_FORWARDED_PROTO, HeaderValue::from_static(if proto == "https" { "https" } else { "http" }));
    if let Some(h) = host.and_then(|h| HeaderValue::from_str(h).ok()) {
        headers.insert(X_FORWARDED_HOST, h);
    }
    let mut element = String::with_capacity(64);
    element.push_str("for=");
    element.push_str(&client.node);
    element.push_str(";proto=");
    element.push_str(proto);
    if let Some(h) = host.filter(|h| h.bytes().all(|b| b.is_ascii_alphanumeric() || matches!(b, b'.' | b'-' | b':'))) {
        element.push_str(";host=");
        element.push_str(h);
    }
    append_list(headers, FORWARDED, &element);
}

const X_FORWARDED_CLIENT_CERT: HeaderName = HeaderName::from_static("x-forwarded-client-cert");

/// `X-Forwarded-Client-Cert: Hash=<sha256 hex>` for a verified client
/// certificate (Envoy's format). A value sent by the client is always
/// removed: only the gateway vouches for a certificate.
pub fn set_client_cert(headers: &mut HeaderMap, cert: Option<&crate::tls::ClientIdentity>) {
    headers.remove(&X_FORWARDED_CLIENT_CERT);
    if let Some(c) = cert {
        if let Ok(v) = HeaderValue::from_str(&format!("Hash={}", c.fingerprint_sha256)) {
            headers.insert(X_FORWARDED_CLIENT_CERT, v);
        }
    }
}

/// Appends `item` to a comma-separated header, joining repeated fields into one.
fn append_list(headers: &mut HeaderMap, name: HeaderName, item: &str) {
    if !headers.contains_key(&name) {
        if let Ok(v) = HeaderValue::from_str(item) {
            headers.insert(name, v);
        }
        return;
    }
    let mut joined: Vec<&str> = headers.get_all(&name).iter().filter_map(|v| v.to_str().ok()).collect();
    joined.push(item);
    if let Ok(v) = HeaderValue::from_str(&joined.join(", ")) {
        headers.insert(name, v);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn hop_by_hop_and_connection_named_headers_are_stripped() {
        let mut h = HeaderMap::new();
        h.insert("connection", HeaderValue::from_static("keep-alive, x-secret"));
        h.insert("keep-alive", HeaderValue::from_static("timeout=5"));
        h.insert("x-secret", HeaderValue::from_static("1"));
        h.insert("transfer-encoding", HeaderValue::from_static("chunked"));
        h.insert("x-kept", HeaderValue::from_static("1"));
        strip_hop_by_hop(&mut h);
        assert_eq!(h.keys().map(|k| k.as_str()).collect::<Vec<_>>(), ["x-kept"]);
    }

    #[test]
    fn forwarded_headers_append_to_what_the_client_sent() {
        let mut h = HeaderMap::new();
        h.insert("x-forwarded-for", HeaderValue::from_static("203.0.113.7"));
        add_forwarded(&mut h, &ClientAddr::new("10.1.2.3:5555".parse().unwrap()), "http", Some("api.example.com"));
        assert_eq!(h["x-forwarded-for"], "203.0.113.7, 10.1.2.3");
        assert_eq!(h["x-forwarded-proto"], "http");
        assert_eq!(h["x-forwarded-host"], "api.example.com");
        assert_eq!(h["forwarded"], "for=10.1.2.3;proto=http;host=api.example.com");
        let mut h6 = HeaderMap::new();
        add_forwarded(&mut h6, &ClientAddr::new("[2001:db8::1]:80".parse().unwrap()), "https", None);
        assert_eq!(h6["forwarded"], "for=\"[2001:db8::1]\";proto=https");
    }

    #[test]
    fn request_ids_are_propagated_when_sane_and_generated_otherwise() {
        let mut h = HeaderMap::new();
        h.insert("x-request-id", HeaderValue::from_static("abc-123"));
        assert_eq!(request_id(&h), "abc-123");
        h.insert("x-request-id", HeaderValue::from_static("bad id with spaces"));
        let generated = request_id(&h);
        assert_eq!(generated.len(), 32);
        assert_ne!(generated, request_id(&HeaderMap::new()));
    }

    #[test]
    fn header_ops_remove_then_set_then_add() {
        let mut h = HeaderMap::new();
        h.insert("x-a", HeaderValue::from_static("old"));
        h.insert("x-b", HeaderValue::from_static("gone"));
        let ops: HeaderOps =
            serde_json::from_str(r#"{"remove":["x-b"],"set":{"x-a":"new"},"add":{"x-c":"1"}}"#).unwrap();
        apply_ops(&mut h, &ops);
        assert_eq!(h["x-a"], "new");
        assert!(h.get("x-b").is_none());
        assert_eq!(h["x-c"], "1");
    }
}
