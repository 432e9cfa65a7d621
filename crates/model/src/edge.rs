//! Edge policies of a route: who may reach it (IP and country rules), what
//! is inspected (WAF), what browsers may do with it (CORS), and what the
//! gateway does to its responses (caching, compression).
//!
//! Each is an optional field of [`crate::Route`], validated here once; the
//! data plane compiles and enforces them (`raftgate_proxy::edge`).

use std::net::IpAddr;

use serde::{Deserialize, Serialize};

use crate::route::{FieldError, Method};

/// Entries in any one list of an edge policy.
pub const MAX_EDGE_LIST: usize = 256;
/// Longest cache lifetime a route may ask for.
pub const MAX_CACHE_TTL_S: u32 = 86_400 * 7;
/// Largest response a route may cache.
pub const MAX_CACHE_OBJECT_BYTES: u32 = 16 << 20;
/// Largest body the WAF may be told to inspect.
pub const MAX_WAF_BODY_BYTES: u32 = 1 << 20;
/// Longest CORS preflight cache time (browsers cap it lower anyway).
pub const MAX_CORS_MAX_AGE_S: u32 = 86_400;

fn err(field: impl Into<String>, message: impl Into<String>) -> FieldError {
    FieldError { field: field.into(), message: message.into() }
}

fn is_false(b: &bool) -> bool {
    !*b
}

/// An address block: `10.0.0.0/8`, `2001:db8::/32`, or one address.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub struct Cidr {
    addr: IpAddr,
    prefix: u8,
}

impl std::str::FromStr for Cidr {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, String> {
        let (a, p) = s.split_once('/').unwrap_or((s, ""));
        let addr: IpAddr = a.parse().map_err(|_| format!("{s:?} is not an address or CIDR block"))?;
        let max = if addr.is_ipv4() { 32 } else { 128 };
        let prefix = if p.is_empty() { max } else { p.parse().map_err(|_| format!("{s:?}: bad prefix length"))? };
        if prefix > max {
            return Err(format!("{s:?}: prefix longer than {max}"));
        }
        Ok(Self { addr, prefix })
    }
}

impl std::fmt::Display for Cidr {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}/{}", self.addr, self.prefix)
    }
}

impl Serialize for Cidr {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.collect_str(self)
    }
}

impl<'de> Deserialize<'de> for Cidr {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let s = String::deserialize(d)?;
        s.parse().map_err(serde::de::Error::custom)
    }
}

impl Cidr {
    /// Whether `ip` is in the block (an IPv4-mapped IPv6 address counts as IPv4).
    pub fn contains(&self, ip: IpAddr) -> bool {
        match (self.addr.to_canonical(), ip.to_canonical()) {
            (IpAddr::V4(net), IpAddr::V4(ip)) => {
                let prefix = if self.addr.is_ipv6() { self.prefix.saturating_sub(96) } else { self.prefix };
                let mask = if prefix == 0 { 0 } else { u32::MAX << (32 - prefix) };
                u32::from(net) & mask == u32::from(ip) & mask
            }
            (IpAddr::V6(net), IpAddr::V6(ip)) => {
                let mask = if self.prefix == 0 { 0 } else { u128::MAX << (128 - self.prefix) };
                u128::from(net) & mask == u128::from(ip) & mask
            }
            _ => false,
        }
    }
}

/// An ISO 3166-1 alpha-2 country code, upper case (`DE`, `US`).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct CountryCode([u8; 2]);

impl CountryCode {
    pub fn as_str(&self) -> &str {
        std::str::from_utf8(&self.0).unwrap_or("??")
    }

    pub fn letters(&self) -> [u8; 2] {
        self.0
    }
}

impl std::str::FromStr for CountryCode {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, String> {
        match s.as_bytes() {
            [a, b] if a.is_ascii_uppercase() && b.is_ascii_uppercase() => Ok(Self([*a, *b])),
            _ => Err(format!("{s:?} is not an ISO 3166-1 alpha-2 code (two upper-case letters, e.g. \"DE\")")),
        }
    }
}

impl Serialize for CountryCode {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(self.as_str())
    }
}

impl<'de> Deserialize<'de> for CountryCode {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let s = String::deserialize(d)?;
        s.parse().map_err(serde::de::Error::custom)
    }
}

/// Who may reach a route, by client address (through trusted proxies, as
/// rate limits see it) and by the country a GeoIP database gives for it.
/// Deny lists win; a non-empty allow list admits only what it lists. A
/// country rule on a node without a GeoIP database, or for an address the
/// database does not know, refuses (fails closed) unless
/// `unknown_country_allowed` is set.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct IpRules {
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub allow: Vec<Cidr>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub deny: Vec<Cidr>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub allow_countries: Vec<CountryCode>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub deny_countries: Vec<CountryCode>,
    #[serde(default, skip_serializing_if = "is_false")]
    pub unknown_country_allowed: bool,
}

impl IpRules {
    pub fn validate(&self, at: &str) -> Result<(), FieldError> {
        for (name, len) in [
            ("allow", self.allow.len()),
            ("deny", self.deny.len()),
            ("allow_countries", self.allow_countries.len()),
            ("deny_countries", self.deny_countries.len()),
        ] {
            if len > MAX_EDGE_LIST {
                return Err(err(format!("{at}.{name}"), format!("at most {MAX_EDGE_LIST} entries")));
            }
        }
        if self.allow.is_empty() && self.deny.is_empty() && !self.uses_countries() {
            return Err(err(at, "lists no address or country"));
        }
        Ok(())
    }

    pub fn uses_countries(&self) -> bool {
        !self.allow_countries.is_empty() || !self.deny_countries.is_empty()
    }
}

/// What the WAF does with a finding.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum WafMode {
    /// Refuse with 403 `request_blocked`.
    #[default]
    Block,
    /// Let the request through; log and count the finding.
    Log,
}

/// Inspection of a route's requests for SQL injection, XSS, command
/// injection and path traversal (path, query, headers and, up to
/// `max_body_bytes`, JSON and form bodies).
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct WafPolicy {
    #[serde(default)]
    pub mode: WafMode,
    /// Inspect request bodies (read whole, at most `max_body_bytes`). In
    /// block mode a larger body is refused with 413: what was not read
    /// was not inspected.
    #[serde(default = "default_true")]
    pub inspect_body: bool,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub max_body_bytes: Option<u32>,
    /// Request headers not inspected (e.g. one that carries free text by design).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub skip_headers: Vec<String>,
}

fn default_true() -> bool {
    true
}

/// Default bytes of a body the WAF reads.
pub const DEFAULT_WAF_BODY_BYTES: u32 = 64 << 10;

impl WafPolicy {
    pub fn validate(&self, at: &str) -> Result<(), FieldError> {
        if let Some(n) = self.max_body_bytes {
            if n == 0 || n > MAX_WAF_BODY_BYTES {
                return Err(err(format!("{at}.max_body_bytes"), format!("must be 1 to {MAX_WAF_BODY_BYTES}")));
            }
        }
        if self.skip_headers.len() > MAX_EDGE_LIST {
            return Err(err(format!("{at}.skip_headers"), format!("at most {MAX_EDGE_LIST} entries")));
        }
        for (i, h) in self.skip_headers.iter().enumerate() {
            if http_token(h).is_err() {
                return Err(err(format!("{at}.skip_headers[{i}]"), "must be a header name"));
            }
        }
        Ok(())
    }

    pub fn body_limit(&self) -> u32 {
        self.max_body_bytes.unwrap_or(DEFAULT_WAF_BODY_BYTES)
    }
}

fn http_token(s: &str) -> Result<(), ()> {
    let ok = !s.is_empty()
        && s.len() <= 256
        && s.bytes().all(|b| b.is_ascii_alphanumeric() || b"!#$%&'*+-.^_`|~".contains(&b));
    if ok {
        Ok(())
    } else {
        Err(())
    }
}

/// Cross-origin resource sharing for browsers (the Fetch standard's CORS
/// protocol): preflights are answered by the gateway, actual responses get
/// the `Access-Control-*` headers.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Cors {
    /// `*`, exact origins (`https://app.example.com`), or one leading
    /// wildcard label (`https://*.example.com`).
    pub allow_origins: Vec<String>,
    /// Empty: the route's methods.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub allow_methods: Vec<Method>,
    /// Request headers a preflight may ask for; empty: whatever it asks
    /// (reflected). Lower case.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub allow_headers: Vec<String>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub expose_headers: Vec<String>,
    #[serde(default, skip_serializing_if = "is_false")]
    pub allow_credentials: bool,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub max_age_s: Option<u32>,
}

impl Cors {
    pub fn validate(&self, at: &str) -> Result<(), FieldError> {
        if self.allow_origins.is_empty() {
            return Err(err(format!("{at}.allow_origins"), "needs at least one origin (or \"*\")"));
        }
        for (name, len) in [
            ("allow_origins", self.allow_origins.len()),
            ("allow_headers", self.allow_headers.len()),
            ("expose_headers", self.expose_headers.len()),
        ] {
            if len > MAX_EDGE_LIST {
                return Err(err(format!("{at}.{name}"), format!("at most {MAX_EDGE_LIST} entries")));
            }
        }
        for (i, o) in self.allow_origins.iter().enumerate() {
            if o == "*" {
                if self.allow_credentials {
                    return Err(err(
                        format!("{at}.allow_origins[{i}]"),
                        "\"*\" cannot be used with allow_credentials (browsers refuse it); list the origins",
                    ));
                }
                continue;
            }
            let Some((scheme, host)) = o.split_once("://") else {
                return Err(err(
                    format!("{at}.allow_origins[{i}]"),
                    "must be scheme://host[:port], e.g. https://app.example.com",
                ));
            };
            let host_ok = !host.is_empty()
                && host.len() <= 253
                && host.bytes().all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b"-.:*[]".contains(&b))
                && (!host.contains('*') || (host.starts_with("*.") && host.matches('*').count() == 1));
            if !matches!(scheme, "http" | "https") || !host_ok {
                return Err(err(
                    format!("{at}.allow_origins[{i}]"),
                    "must be http(s)://host[:port] in lower case, with at most a leading *. label",
                ));
            }
        }
        for (name, list) in [("allow_headers", &self.allow_headers), ("expose_headers", &self.expose_headers)] {
            for (i, h) in list.iter().enumerate() {
                if http_token(h).is_err() || h.bytes().any(|b| b.is_ascii_uppercase()) {
                    return Err(err(format!("{at}.{name}[{i}]"), "must be a lower-case header name"));
                }
            }
        }
        if self.max_age_s.is_some_and(|a| a > MAX_CORS_MAX_AGE_S) {
            return Err(err(format!("{at}.max_age_s"), format!("at most {MAX_CORS_MAX_AGE_S}")));
        }
        Ok(())
    }

    /// Whether `origin` (as a browser sends it) is allowed.
    pub fn allows_origin(&self, origin: &str) -> bool {
        self.allow_origins.iter().any(|o| {
            if o == "*" {
                return true;
            }
            match o.split_once("://*.") {
                Some((scheme, suffix)) => origin
                    .strip_prefix(scheme)
                    .and_then(|r| r.strip_prefix("://"))
                    .and_then(|host| host.strip_suffix(suffix))
                    .is_some_and(|label| {
                        label.ends_with('.') && label.len() > 1 && !label[..label.len() - 1].contains('/')
                    }),
                None => o.eq_ignore_ascii_case(origin),
            }
        })
    }

    pub fn any_origin(&self) -> bool {
        self.allow_origins.iter().any(|o| o == "*")
    }
}

/// Response caching on this route (each node caches in its own memory).
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct CachePolicy {
    /// Lifetime when the response names none (`Cache-Control: max-age` and
    /// `s-maxage` win, up to `max_ttl_s`).
    pub ttl_s: u32,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub max_ttl_s: Option<u32>,
    /// Query parameters that make a different entry (others are ignored).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub key_query: Vec<String>,
    /// Request headers that make a different entry (lower case).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub key_headers: Vec<String>,
    /// Largest response body kept (default 1 MiB).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub max_object_bytes: Option<u32>,
}

/// Default largest cached response body.
pub const DEFAULT_CACHE_OBJECT_BYTES: u32 = 1 << 20;

impl CachePolicy {
    pub fn validate(&self, at: &str) -> Result<(), FieldError> {
        if self.ttl_s == 0 || self.ttl_s > MAX_CACHE_TTL_S {
            return Err(err(format!("{at}.ttl_s"), format!("must be 1 to {MAX_CACHE_TTL_S}")));
        }
        if let Some(m) = self.max_ttl_s {
            if m < self.ttl_s || m > MAX_CACHE_TTL_S {
                return Err(err(format!("{at}.max_ttl_s"), format!("must be ttl_s to {MAX_CACHE_TTL_S}")));
            }
        }
        if let Some(b) = self.max_object_bytes {
            if b == 0 || b > MAX_CACHE_OBJECT_BYTES {
                return Err(err(format!("{at}.max_object_bytes"), format!("must be 1 to {MAX_CACHE_OBJECT_BYTES}")));
            }
        }
        for (name, list) in [("key_query", &self.key_query), ("key_headers", &self.key_headers)] {
            if list.len() > MAX_EDGE_LIST {
                return Err(err(format!("{at}.{name}"), format!("at most {MAX_EDGE_LIST} entries")));
            }
            for (i, v) in list.iter().enumerate() {
                if v.is_empty() || v.len() > 256 {
                    return Err(err(format!("{at}.{name}[{i}]"), "must be 1 to 256 characters"));
                }
            }
        }
        for (i, h) in self.key_headers.iter().enumerate() {
            if http_token(h).is_err() || h.bytes().any(|b| b.is_ascii_uppercase()) {
                return Err(err(format!("{at}.key_headers[{i}]"), "must be a lower-case header name"));
            }
        }
        Ok(())
    }
}

/// A response encoding the gateway can apply.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum ContentCoding {
    Zstd,
    #[serde(rename = "br")]
    Brotli,
    Gzip,
}

/// Response compression on this route, negotiated by `Accept-Encoding`.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct CompressionPolicy {
    /// Codings offered, in the gateway's order of preference; empty: zstd, br, gzip.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub encodings: Vec<ContentCoding>,
    /// Responses with a smaller known length are sent as they are (default 1 KiB).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub min_bytes: Option<u32>,
    /// Media types compressed (`text/*`, `application/json`, `+json` suffixes
    /// …); empty: the built-in list of text types.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub content_types: Vec<String>,
}

impl CompressionPolicy {
    pub fn validate(&self, at: &str) -> Result<(), FieldError> {
        if self.content_types.len() > MAX_EDGE_LIST {
            return Err(err(format!("{at}.content_types"), format!("at most {MAX_EDGE_LIST} entries")));
        }
        for (i, t) in self.content_types.iter().enumerate() {
            let ok = t.len() <= 128
                && (t.starts_with('+') || t.split_once('/').is_some_and(|(a, b)| !a.is_empty() && !b.is_empty()))
                && t.bytes().all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b"/+-.*_".contains(&b));
            if !ok {
                return Err(err(
                    format!("{at}.content_types[{i}]"),
                    "must be a lower-case media type, type/*, or +suffix",
                ));
            }
        }
        for (i, e) in self.encodings.iter().enumerate() {
            if self.encodings[..i].contains(e) {
                return Err(err(format!("{at}.encodings[{i}]"), "listed twice"));
            }
        }
        Ok(())
    }
}

/// Credential-stuffing defence for a login route: failed logins (the
/// statuses in `failure_statuses`, from the upstream or the gateway) are
/// counted per client address and per account within `window_s`; past a
/// limit that address or account is locked out for `lockout_s` (429
/// `login_locked` with `Retry-After`), on this node. A successful login
/// clears the account's count.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct LoginProtection {
    /// Where the account name is: a JSON pointer into a JSON body
    /// (`/username`) or a form field name (`username`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub account_field: Option<String>,
    /// Or a request header (lower case).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub account_header: Option<String>,
    #[serde(default = "default_failure_statuses")]
    pub failure_statuses: Vec<u16>,
    #[serde(default = "default_ip_failures")]
    pub max_failures_per_ip: u32,
    #[serde(default = "default_account_failures")]
    pub max_failures_per_account: u32,
    #[serde(default = "default_login_window_s")]
    pub window_s: u32,
    #[serde(default = "default_lockout_s")]
    pub lockout_s: u32,
}

fn default_failure_statuses() -> Vec<u16> {
    vec![401, 403]
}
fn default_ip_failures() -> u32 {
    20
}
fn default_account_failures() -> u32 {
    5
}
fn default_login_window_s() -> u32 {
    300
}
fn default_lockout_s() -> u32 {
    900
}

/// Longest login lockout or counting window.
pub const MAX_LOGIN_WINDOW_S: u32 = 86_400;
/// Largest body read to find the account of a login.
pub const MAX_LOGIN_BODY_BYTES: u32 = 64 << 10;

impl LoginProtection {
    pub fn validate(&self, at: &str) -> Result<(), FieldError> {
        if self.account_field.is_some() && self.account_header.is_some() {
            return Err(err(format!("{at}.account_header"), "use either account_field or account_header"));
        }
        if let Some(f) = &self.account_field {
            if f.is_empty() || f.len() > 256 {
                return Err(err(format!("{at}.account_field"), "must be 1 to 256 characters"));
            }
        }
        if let Some(h) = &self.account_header {
            if http_token(h).is_err() || h.bytes().any(|b| b.is_ascii_uppercase()) {
                return Err(err(format!("{at}.account_header"), "must be a lower-case header name"));
            }
        }
        if self.failure_statuses.is_empty() || self.failure_statuses.len() > 16 {
            return Err(err(format!("{at}.failure_statuses"), "1 to 16 statuses"));
        }
        if let Some(s) = self.failure_statuses.iter().find(|s| !(400..=599).contains(*s)) {
            return Err(err(format!("{at}.failure_statuses"), format!("{s} is not a 4xx or 5xx status")));
        }
        for (name, v) in [
            ("max_failures_per_ip", self.max_failures_per_ip),
            ("max_failures_per_account", self.max_failures_per_account),
        ] {
            if v == 0 || v > 1_000_000 {
                return Err(err(format!("{at}.{name}"), "must be 1 to 1000000"));
            }
        }
        for (name, v) in [("window_s", self.window_s), ("lockout_s", self.lockout_s)] {
            if v == 0 || v > MAX_LOGIN_WINDOW_S {
                return Err(err(format!("{at}.{name}"), format!("must be 1 to {MAX_LOGIN_WINDOW_S}")));
            }
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn cidr_blocks_match_their_addresses_and_mapped_forms() {
        let net: Cidr = "10.1.0.0/16".parse().unwrap();
        assert!(net.contains("10.1.200.3".parse().unwrap()));
        assert!(net.contains("::ffff:10.1.0.9".parse().unwrap()));
        assert!(!net.contains("10.2.0.1".parse().unwrap()));
        assert!("::1".parse::<Cidr>().unwrap().contains("::1".parse().unwrap()));
        assert!("10.0.0.0/33".parse::<Cidr>().is_err());
        assert_eq!(serde_json::to_string(&net).unwrap(), "\"10.1.0.0/16\"");
        assert!(serde_json::from_str::<Cidr>("\"nope\"").is_err());
    }

    #[test]
    fn cors_wildcards_match_one_label_or_more_but_not_the_bare_domain() {
        let c = Cors { allow_origins: vec!["https://*.example.com".into()], ..Default::default() };
        c.validate("cors").unwrap();
        assert!(c.allows_origin("https://app.example.com"));
        assert!(c.allows_origin("https://a.b.example.com"));
        assert!(!c.allows_origin("https://example.com"));
        assert!(!c.allows_origin("http://app.example.com"));
        assert!(!c.allows_origin("https://evilexample.com"));
        assert!(!c.allows_origin("https://app.example.com.evil.net"));
    }

    #[test]
    fn cors_refuses_any_origin_with_credentials_and_malformed_origins() {
        let star = Cors { allow_origins: vec!["*".into()], allow_credentials: true, ..Default::default() };
        assert!(star.validate("cors").is_err());
        for bad in ["app.example.com", "ftp://x", "https://", "https://a.*.com", "https://App.example.com"] {
            let c = Cors { allow_origins: vec![bad.into()], ..Default::default() };
            assert!(c.validate("cors").is_err(), "{bad}");
        }
    }

    #[test]
    fn country_codes_are_two_upper_case_letters() {
        assert_eq!("DE".parse::<CountryCode>().unwrap().as_str(), "DE");
        for bad in ["de", "DEU", "D", "1A", ""] {
            assert!(bad.parse::<CountryCode>().is_err(), "{bad}");
        }
    }

    #[test]
    fn empty_ip_rules_and_bad_cache_lifetimes_are_refused() {
        assert!(IpRules::default().validate("ip").is_err());
        assert!(CachePolicy { ttl_s: 0, ..Default::default() }.validate("cache").is_err());
        assert!(CachePolicy { ttl_s: 10, max_ttl_s: Some(5), ..Default::default() }.validate("cache").is_err());
        assert!(CachePolicy { ttl_s: 10, key_headers: vec!["Accept".into()], ..Default::default() }
            .validate("cache")
            .is_err());
        CachePolicy { ttl_s: 10, key_headers: vec!["accept".into()], ..Default::default() }.validate("cache").unwrap();
    }
}
