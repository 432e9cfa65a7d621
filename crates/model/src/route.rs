//! Routes and upstreams: what the data plane serves and where it sends it.
//!
//! Both are replicated objects, written through the admin API and read by
//! every node's data plane from its own applied state. A [`Route`] says which
//! requests it takes (hosts, paths, methods, header and query predicates, a
//! priority) and what to do with them (rewrite, headers, limits) before they
//! go to its [`Upstream`], a set of targets with a balancing policy, health
//! rules and timeouts. `validate` checks everything that does not depend on
//! other objects; `State::apply` checks references and conflicts.

use std::collections::BTreeMap;
use std::fmt;

use serde::{Deserialize, Serialize};

use crate::path::normalize_path;

pub const MAX_ROUTES: usize = 20_000;
pub const MAX_UPSTREAMS: usize = 5_000;
pub const MAX_TARGETS: usize = 256;
const MAX_ID_CHARS: usize = 64;
const MAX_LIST: usize = 32;
const MAX_PATTERN_BYTES: usize = 1_024;
/// Compiled size limit of a route regex (bytes of the regex program).
pub const MAX_REGEX_PROGRAM_BYTES: usize = 256 * 1024;
const MAX_HEADER_VALUE_BYTES: usize = 4_096;
const MAX_PRIORITY: i32 = 1_000_000;
const MAX_TIMEOUT_MS: u32 = 3_600_000;
/// Largest request body a route may allow.
pub const MAX_BODY_LIMIT_BYTES: u64 = 1 << 30;

/// A field-level validation error: the dotted path of the field and why.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, thiserror::Error)]
#[error("{field}: {message}")]
pub struct FieldError {
    pub field: String,
    pub message: String,
}

fn field_err(field: impl Into<String>, message: impl Into<String>) -> FieldError {
    FieldError { field: field.into(), message: message.into() }
}

/// The id of a route or upstream: 1 to 64 characters of `a-z 0-9 . _ -`,
/// starting with a letter or digit.
#[derive(Clone, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(try_from = "String", into = "String")]
pub struct ObjectId(String);

impl TryFrom<String> for ObjectId {
    type Error = FieldError;
    fn try_from(s: String) -> Result<Self, FieldError> {
        Self::parse(s)
    }
}

impl From<ObjectId> for String {
    fn from(id: ObjectId) -> String {
        id.0
    }
}

impl ObjectId {
    pub fn parse(s: impl Into<String>) -> Result<Self, FieldError> {
        let s = s.into();
        let ok = s.len() <= MAX_ID_CHARS
            && s.as_bytes().first().is_some_and(|b| b.is_ascii_lowercase() || b.is_ascii_digit())
            && s.bytes().all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || matches!(b, b'.' | b'_' | b'-'));
        if ok {
            Ok(Self(s))
        } else {
            Err(field_err("id", format!("must be 1 to {MAX_ID_CHARS} characters of a-z, 0-9, '.', '_' or '-', starting with a letter or digit, got {s:?}")))
        }
    }
    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl fmt::Display for ObjectId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

/// How a route matches the request path (after normalisation, see `path`).
#[derive(Clone, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case", deny_unknown_fields)]
pub enum PathPattern {
    /// The whole path, exactly.
    Exact(String),
    /// The path equals this or continues it after a `/` (segment boundary):
    /// `/api` matches `/api`, `/api/` and `/api/v1`, not `/apix`.
    Prefix(String),
    /// Whole segments, `{name}` standing for exactly one non-empty segment:
    /// `/users/{id}/orders`.
    Template(String),
    /// A regular expression (Rust `regex` syntax) that must match the whole path.
    Regex(String),
}

impl PathPattern {
    pub fn kind(&self) -> &'static str {
        match self {
            PathPattern::Exact(_) => "exact",
            PathPattern::Prefix(_) => "prefix",
            PathPattern::Template(_) => "template",
            PathPattern::Regex(_) => "regex",
        }
    }
    pub fn pattern(&self) -> &str {
        match self {
            PathPattern::Exact(p) | PathPattern::Prefix(p) | PathPattern::Template(p) | PathPattern::Regex(p) => p,
        }
    }

    fn validate(&self, field: &str) -> Result<(), FieldError> {
        let p = self.pattern();
        if p.is_empty() || p.len() > MAX_PATTERN_BYTES {
            return Err(field_err(field, format!("must be 1 to {MAX_PATTERN_BYTES} bytes")));
        }
        match self {
            PathPattern::Regex(r) => compile_regex(r).map(|_| ()).map_err(|e| field_err(field, e)),
            PathPattern::Exact(p) | PathPattern::Prefix(p) | PathPattern::Template(p) => {
                // Parameters stand for one plain segment while the rest is checked.
                let literal: String = if matches!(self, PathPattern::Template(_)) {
                    p.split('/')
                        .map(|seg| if template_param(seg).is_some() { "p" } else { seg })
                        .collect::<Vec<_>>()
                        .join("/")
                } else {
                    p.clone()
                };
                let normal = normalize_path(&literal).map_err(|e| field_err(field, e.to_string()))?;
                if normal != literal.as_str() {
                    return Err(field_err(field, format!("must be a normalised path, e.g. {normal:?}")));
                }
                if let PathPattern::Prefix(p) = self {
                    if p.len() > 1 && p.ends_with('/') {
                        return Err(field_err(
                            field,
                            "a prefix must not end with '/' (it matches at segment boundaries)",
                        ));
                    }
                }
                if let PathPattern::Template(p) = self {
                    let mut names = Vec::new();
                    for seg in p.split('/').skip(1) {
                        match template_param(seg) {
                            Some(name) => {
                                let ok = name.bytes().next().is_some_and(|b| b.is_ascii_lowercase() || b == b'_')
                                    && name.bytes().all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'_');
                                if !ok {
                                    return Err(field_err(
                                        field,
                                        format!("parameter name {name:?} must be a-z, 0-9 or '_'"),
                                    ));
                                }
                                if names.contains(&name) {
                                    return Err(field_err(field, format!("parameter {name:?} appears twice")));
                                }
                                names.push(name);
                            }
                            None if seg.contains(['{', '}']) => {
                                return Err(field_err(field, "a parameter must be a whole segment: /{name}/"))
                            }
                            None => {}
                        }
                    }
                    if names.is_empty() {
                        return Err(field_err(field, "a template needs at least one {parameter}; use exact"));
                    }
                }
                Ok(())
            }
        }
    }
}

/// `{name}` → `name`.
pub fn template_param(segment: &str) -> Option<&str> {
    segment.strip_prefix('{')?.strip_suffix('}')
}

/// Compiles a route regex anchored to the whole input, with a size limit.
pub fn compile_regex(r: &str) -> Result<regex::Regex, String> {
    let build = |pattern: &str| {
        regex::RegexBuilder::new(pattern).size_limit(MAX_REGEX_PROGRAM_BYTES).build().map_err(|e| match e {
            regex::Error::CompiledTooBig(_) => format!("regex compiles to more than {MAX_REGEX_PROGRAM_BYTES} bytes"),
            e => format!("invalid regex: {}", e.to_string().lines().last().unwrap_or("syntax error")),
        })
    };
    // On its own first: `a)|(.*` must not close the anchoring group below.
    build(r)?;
    build(&format!("^(?:{r})$"))
}

/// How a header or query value must look for a predicate to hold.
#[derive(Clone, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case", deny_unknown_fields)]
pub enum ValueMatch {
    Exact(String),
    Prefix(String),
    /// Must match the whole value.
    Regex(String),
}

/// A predicate on a request header (name case-insensitive) or query
/// parameter: without `value`, the header or parameter must be present.
#[derive(Clone, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Predicate {
    pub name: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub value: Option<ValueMatch>,
    /// Inverts the predicate (header absent, or value not matching).
    #[serde(default, skip_serializing_if = "is_false")]
    pub invert: bool,
}

fn is_false(b: &bool) -> bool {
    !*b
}

impl Predicate {
    fn validate(&self, field: &str, header: bool) -> Result<(), FieldError> {
        let name_ok = if header { is_header_name(&self.name) } else { is_query_name(&self.name) };
        if !name_ok {
            let what = if header { "a lower-case header name" } else { "a query parameter name (no '&', '=', '#')" };
            return Err(field_err(format!("{field}.name"), format!("must be {what}, got {:?}", self.name)));
        }
        match &self.value {
            Some(ValueMatch::Regex(r)) => {
                compile_regex(r).map_err(|e| field_err(format!("{field}.value.regex"), e))?;
            }
            Some(ValueMatch::Exact(v) | ValueMatch::Prefix(v)) if v.len() > MAX_HEADER_VALUE_BYTES => {
                return Err(field_err(
                    format!("{field}.value"),
                    format!("must be at most {MAX_HEADER_VALUE_BYTES} bytes"),
                ));
            }
            _ => {}
        }
        Ok(())
    }
}

/// Lower-case RFC 9110 token.
pub fn is_header_name(s: &str) -> bool {
    !s.is_empty()
        && s.len() <= 256
        && s.bytes().all(|b| {
            b.is_ascii_lowercase()
                || b.is_ascii_digit()
                || matches!(
                    b,
                    b'!' | b'#'
                        | b'$'
                        | b'%'
                        | b'&'
                        | b'\''
                        | b'*'
                        | b'+'
                        | b'-'
                        | b'.'
                        | b'^'
                        | b'_'
                        | b'`'
                        | b'|'
                        | b'~'
                )
        })
}

fn is_query_name(s: &str) -> bool {
    !s.is_empty() && s.len() <= 256 && s.bytes().all(|b| b.is_ascii_graphic() && !matches!(b, b'&' | b'=' | b'#'))
}

/// Visible ASCII and spaces/tabs inside, as a header value may hold.
pub fn is_header_value(s: &str) -> bool {
    s.len() <= MAX_HEADER_VALUE_BYTES
        && s.bytes().all(|b| b == b'\t' || (b' '..=b'~').contains(&b))
        && !s.starts_with([' ', '\t'])
        && !s.ends_with([' ', '\t'])
}

/// HTTP methods a route may allow.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(rename_all = "UPPERCASE")]
pub enum Method {
    Get,
    Head,
    Post,
    Put,
    Patch,
    Delete,
    Options,
    Trace,
    Connect,
}

impl Method {
    pub fn as_str(self) -> &'static str {
        match self {
            Method::Get => "GET",
            Method::Head => "HEAD",
            Method::Post => "POST",
            Method::Put => "PUT",
            Method::Patch => "PATCH",
            Method::Delete => "DELETE",
            Method::Options => "OPTIONS",
            Method::Trace => "TRACE",
            Method::Connect => "CONNECT",
        }
    }
    /// Methods a route with no `methods` list allows: all but TRACE and CONNECT.
    pub const DEFAULT_ALLOWED: [Method; 7] =
        [Method::Get, Method::Head, Method::Post, Method::Put, Method::Patch, Method::Delete, Method::Options];
}

/// Header changes on the way to the upstream or back to the client. Applied
/// in the order remove, set (replaces), add (appends).
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct HeaderOps {
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub remove: Vec<String>,
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub set: BTreeMap<String, String>,
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub add: BTreeMap<String, String>,
}

impl HeaderOps {
    pub fn is_empty(&self) -> bool {
        self.remove.is_empty() && self.set.is_empty() && self.add.is_empty()
    }
    fn validate(&self, field: &str) -> Result<(), FieldError> {
        if self.remove.len() + self.set.len() + self.add.len() > MAX_LIST {
            return Err(field_err(field, format!("at most {MAX_LIST} header operations")));
        }
        for (i, name) in self.remove.iter().enumerate() {
            if !is_header_name(name) {
                return Err(field_err(
                    format!("{field}.remove[{i}]"),
                    format!("must be a lower-case header name, got {name:?}"),
                ));
            }
        }
        for (op, map) in [("set", &self.set), ("add", &self.add)] {
            for (name, value) in map {
                if !is_header_name(name) {
                    return Err(field_err(
                        format!("{field}.{op}"),
                        format!("must be a lower-case header name, got {name:?}"),
                    ));
                }
                if is_hop_by_hop(name) || name == "host" || name == "content-length" {
                    return Err(field_err(format!("{field}.{op}.{name}"), "this header is managed by the gateway"));
                }
                if !is_header_value(value) {
                    return Err(field_err(format!("{field}.{op}.{name}"), "must be visible ASCII, at most 4096 bytes"));
                }
            }
        }
        Ok(())
    }
}

/// Connection-level headers that are never forwarded (RFC 9110 §7.6.1).
pub fn is_hop_by_hop(name: &str) -> bool {
    matches!(
        name,
        "connection"
            | "keep-alive"
            | "proxy-connection"
            | "te"
            | "trailer"
            | "transfer-encoding"
            | "upgrade"
            | "proxy-authenticate"
            | "proxy-authorization"
    )
}

/// A route: which requests, and how they reach which upstream.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Route {
    pub id: ObjectId,
    /// The upstream that serves this route; must exist.
    pub upstream: ObjectId,
    /// Higher wins. See the data plane's router for the full precedence.
    #[serde(default)]
    pub priority: i32,
    /// Exact host names (`api.example.com`) or one leading wildcard label
    /// (`*.example.com`, which does not match `example.com` itself). Empty:
    /// any host. Lower-case, without port.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub hosts: Vec<String>,
    /// Empty: every path.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub paths: Vec<PathPattern>,
    /// Allowed methods; empty allows all but TRACE and CONNECT. A request
    /// whose path matches but whose method is not allowed gets 405.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub methods: Vec<Method>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub headers: Vec<Predicate>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub query: Vec<Predicate>,
    /// Remove the matched prefix before forwarding (`prefix` paths only).
    #[serde(default, skip_serializing_if = "is_false")]
    pub strip_prefix: bool,
    /// Replace the matched prefix (or the whole path, for exact, template
    /// and regex paths) with this before forwarding.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub rewrite: Option<String>,
    /// Forward the client's Host header instead of the target's address.
    #[serde(default, skip_serializing_if = "is_false")]
    pub preserve_host: bool,
    #[serde(default, skip_serializing_if = "HeaderOps::is_empty")]
    pub request_headers: HeaderOps,
    #[serde(default, skip_serializing_if = "HeaderOps::is_empty")]
    pub response_headers: HeaderOps,
    /// Time to response headers, all tries included (default 30 s).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub timeout_ms: Option<u32>,
    /// Largest request body (default 10 MiB); larger gets 413.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub max_body_bytes: Option<u64>,
    /// Plain-HTTP requests get a 308 redirect to the same URL over HTTPS.
    #[serde(default, skip_serializing_if = "is_false")]
    pub https_redirect: bool,
    /// HTTPS responses carry `Strict-Transport-Security: max-age=<this>`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub hsts_max_age_s: Option<u32>,
    /// Who may call this route and with which credentials; none: anyone.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub auth: Option<crate::identity::RouteAuth>,
    /// Rate limits and quotas of this route.
    #[serde(default, skip_serializing_if = "crate::traffic::Limits::is_empty")]
    pub limits: crate::traffic::Limits,
    /// The API this route belongs to: catalog metadata and lifecycle dates.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub api: Option<ApiInfo>,
    /// A JSON Schema the JSON request body must satisfy: a body that is not
    /// JSON or does not match gets 400 with where and why, and never reaches
    /// the upstream. Bodies up to 1 MiB are checked; larger get 413.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub request_schema: Option<serde_json::Value>,
    /// Client address and country rules (403 `ip_forbidden`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub ip: Option<crate::edge::IpRules>,
    /// Request inspection for injection and traversal attacks.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub waf: Option<crate::edge::WafPolicy>,
    /// CORS for browsers: preflights answered here, headers on responses.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub cors: Option<crate::edge::Cors>,
    /// Response caching in each node's memory.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub cache: Option<crate::edge::CachePolicy>,
    /// Response compression (gzip, br, zstd) by `Accept-Encoding`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub compression: Option<crate::edge::CompressionPolicy>,
    /// Credential-stuffing defence: failed logins counted per address and
    /// account, with a temporary lockout.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub login: Option<crate::edge::LoginProtection>,
    /// Body transformation: JSON ⇄ XML for an XML upstream and JSON field
    /// edits, each way (see `docs/transform.md`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub transform: Option<crate::transform::TransformPolicy>,
    /// A GraphQL endpoint: each operation parsed and bounded (depth,
    /// aliases, fields, cost, introspection) before it is forwarded.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub graphql: Option<crate::graphql::GraphqlPolicy>,
}

/// Largest request schema document.
pub const MAX_SCHEMA_BYTES: usize = 64 << 10;
/// Largest request body checked against a schema.
pub const MAX_VALIDATED_BODY_BYTES: u64 = 1 << 20;

/// A certificate the HTTPS listeners serve, by reference: PEM files that
/// exist at these paths on every node (mounted from a secret store). The
/// key never enters the replicated state; a node that cannot load the
/// files keeps serving its previous certificates and logs why.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct CertificateRef {
    pub id: ObjectId,
    /// Host names (or `*.suffix`) it serves, matched by SNI.
    pub hosts: Vec<String>,
    pub cert_file: String,
    pub key_file: String,
}

pub const MAX_CERTIFICATES: usize = 1_000;
const MAX_CERT_HOSTS: usize = 100;

impl CertificateRef {
    pub fn validate(&self) -> Result<(), FieldError> {
        if self.hosts.is_empty() || self.hosts.len() > MAX_CERT_HOSTS {
            return Err(field_err("hosts", format!("1 to {MAX_CERT_HOSTS} host names")));
        }
        for (i, h) in self.hosts.iter().enumerate() {
            validate_host_pattern(h).map_err(|m| field_err(format!("hosts[{i}]"), m))?;
        }
        for (f, p) in [("cert_file", &self.cert_file), ("key_file", &self.key_file)] {
            if !p.starts_with('/') || p.len() > 4_096 || p.chars().any(char::is_control) || p.contains("/../") {
                return Err(field_err(f, "must be an absolute path (the same on every node)"));
            }
        }
        Ok(())
    }
}

/// What API a route serves, who owns it, and when it goes away.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ApiInfo {
    pub name: String,
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub version: String,
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub owner: String,
    /// When the API is (or was) deprecated, UTC, `YYYY-MM-DD` or
    /// `YYYY-MM-DDTHH:MM:SSZ`: responses carry `Deprecation: @<seconds>` (RFC 9745).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub deprecated: Option<String>,
    /// When the API stops answering: responses carry `Sunset: <HTTP-date>` (RFC 8594).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub sunset: Option<String>,
}

const MAX_API_TEXT: usize = 128;

impl ApiInfo {
    pub fn validate(&self, at: &str) -> Result<(), FieldError> {
        for (f, v, required) in
            [("name", &self.name, true), ("version", &self.version, false), ("owner", &self.owner, false)]
        {
            if (required && v.is_empty()) || v.chars().count() > MAX_API_TEXT || v.chars().any(char::is_control) {
                return Err(field_err(
                    format!("{at}.{f}"),
                    format!("1 to {MAX_API_TEXT} characters without control characters"),
                ));
            }
        }
        let deprecated = self
            .deprecated
            .as_deref()
            .map(|d| utc_seconds(d).map_err(|m| field_err(format!("{at}.deprecated"), m)))
            .transpose()?;
        let sunset = self
            .sunset
            .as_deref()
            .map(|d| utc_seconds(d).map_err(|m| field_err(format!("{at}.sunset"), m)))
            .transpose()?;
        if let (Some(d), Some(s)) = (deprecated, sunset) {
            if s < d {
                return Err(field_err(format!("{at}.sunset"), "must not be before the deprecation date"));
            }
        }
        Ok(())
    }

    /// The `Deprecation` header value (`@<unix seconds>`), if set.
    pub fn deprecation_header(&self) -> Option<String> {
        let s = utc_seconds(self.deprecated.as_deref()?).ok()?;
        Some(format!("@{s}"))
    }

    /// The `Sunset` header value (an IMF-fixdate), if set.
    pub fn sunset_header(&self) -> Option<String> {
        Some(http_date(utc_seconds(self.sunset.as_deref()?).ok()?))
    }
}

/// Seconds since the Unix epoch of `YYYY-MM-DD` or `YYYY-MM-DDTHH:MM:SSZ` (UTC).
pub fn utc_seconds(s: &str) -> Result<u64, String> {
    let bad = || format!("{s:?} is not a UTC date (YYYY-MM-DD or YYYY-MM-DDTHH:MM:SSZ)");
    let b = s.as_bytes();
    let num = |r: std::ops::Range<usize>| -> Result<u64, String> {
        let part = s.get(r).ok_or_else(bad)?;
        if part.bytes().all(|c| c.is_ascii_digit()) {
            part.parse().map_err(|_| bad())
        } else {
            Err(bad())
        }
    };
    let (date, time) = match b.len() {
        10 => (s, None),
        20 if b[10] == b'T' && b[19] == b'Z' && b[13] == b':' && b[16] == b':' => (&s[..10], Some(())),
        _ => return Err(bad()),
    };
    if date.as_bytes()[4] != b'-' || date.as_bytes()[7] != b'-' {
        return Err(bad());
    }
    let (y, m, d) = (num(0..4)?, num(5..7)?, num(8..10)?);
    let leap = (y % 4 == 0 && y % 100 != 0) || y % 400 == 0;
    let days_in = [31, if leap { 29 } else { 28 }, 31, 30, 31, 30, 31, 31, 30, 31, 30, 31];
    if !(1970..=9999).contains(&y) || !(1..=12).contains(&m) || d == 0 || d > days_in[m as usize - 1] {
        return Err(bad());
    }
    let (hh, mm, ss) = if time.is_some() { (num(11..13)?, num(14..16)?, num(17..19)?) } else { (0, 0, 0) };
    if hh > 23 || mm > 59 || ss > 59 {
        return Err(bad());
    }
    Ok(days_from_civil(y as i64, m as i64, d as i64) as u64 * 86_400 + hh * 3_600 + mm * 60 + ss)
}

/// Days since 1970-01-01 of a proleptic Gregorian date (Howard Hinnant's algorithm).
fn days_from_civil(y: i64, m: i64, d: i64) -> i64 {
    let y = if m <= 2 { y - 1 } else { y };
    let era = y.div_euclid(400);
    let yoe = y - era * 400;
    let doy = (153 * (if m > 2 { m - 3 } else { m + 9 }) + 2) / 5 + d - 1;
    let doe = yoe * 365 + yoe / 4 - yoe / 100 + doy;
    era * 146_097 + doe - 719_468
}

/// The IMF-fixdate of a Unix time, e.g. `Sun, 06 Nov 1994 08:49:37 GMT`.
pub fn http_date(secs: u64) -> String {
    let days = (secs / 86_400) as i64;
    let rem = secs % 86_400;
    let z = days + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z - era * 146_097;
    let yoe = (doe - doe / 1_460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let d = doy - (153 * mp + 2) / 5 + 1;
    let m = if mp < 10 { mp + 3 } else { mp - 9 };
    let y = yoe + era * 400 + i64::from(m <= 2);
    const WEEKDAYS: [&str; 7] = ["Thu", "Fri", "Sat", "Sun", "Mon", "Tue", "Wed"];
    const MONTHS: [&str; 12] = ["Jan", "Feb", "Mar", "Apr", "May", "Jun", "Jul", "Aug", "Sep", "Oct", "Nov", "Dec"];
    format!(
        "{}, {d:02} {} {y} {:02}:{:02}:{:02} GMT",
        WEEKDAYS[days.rem_euclid(7) as usize],
        MONTHS[m as usize - 1],
        rem / 3_600,
        rem % 3_600 / 60,
        rem % 60
    )
}

pub const DEFAULT_ROUTE_TIMEOUT_MS: u32 = 30_000;
pub const DEFAULT_MAX_BODY_BYTES: u64 = 10 << 20;

impl Route {
    /// Checks every field on its own; references are checked by `apply`.
    pub fn validate(&self) -> Result<(), FieldError> {
        if !(-MAX_PRIORITY..=MAX_PRIORITY).contains(&self.priority) {
            return Err(field_err("priority", format!("must be within ±{MAX_PRIORITY}")));
        }
        for (name, len) in [
            ("hosts", self.hosts.len()),
            ("paths", self.paths.len()),
            ("headers", self.headers.len()),
            ("query", self.query.len()),
        ] {
            if len > MAX_LIST {
                return Err(field_err(name, format!("at most {MAX_LIST} entries")));
            }
        }
        for (i, h) in self.hosts.iter().enumerate() {
            validate_host_pattern(h).map_err(|m| field_err(format!("hosts[{i}]"), m))?;
            if self.hosts[..i].contains(h) {
                return Err(field_err(format!("hosts[{i}]"), "listed twice"));
            }
        }
        for (i, p) in self.paths.iter().enumerate() {
            p.validate(&format!("paths[{i}].{}", p.kind()))?;
            if self.paths[..i].contains(p) {
                return Err(field_err(format!("paths[{i}]"), "listed twice"));
            }
        }
        for (i, m) in self.methods.iter().enumerate() {
            if self.methods[..i].contains(m) {
                return Err(field_err(format!("methods[{i}]"), "listed twice"));
            }
        }
        for (i, p) in self.headers.iter().enumerate() {
            p.validate(&format!("headers[{i}]"), true)?;
        }
        for (i, p) in self.query.iter().enumerate() {
            p.validate(&format!("query[{i}]"), false)?;
        }
        if self.strip_prefix && !self.paths.iter().all(|p| matches!(p, PathPattern::Prefix(_))) {
            return Err(field_err("strip_prefix", "needs every path to be a prefix"));
        }
        if let Some(r) = &self.rewrite {
            if self.strip_prefix {
                return Err(field_err("rewrite", "use either rewrite or strip_prefix"));
            }
            let normal = normalize_path(r).map_err(|e| field_err("rewrite", e.to_string()))?;
            if normal != r.as_str() {
                return Err(field_err("rewrite", format!("must be a normalised path, e.g. {normal:?}")));
            }
        }
        self.request_headers.validate("request_headers")?;
        self.response_headers.validate("response_headers")?;
        if let Some(t) = self.timeout_ms {
            if t == 0 || t > MAX_TIMEOUT_MS {
                return Err(field_err("timeout_ms", format!("must be 1 to {MAX_TIMEOUT_MS}")));
            }
        }
        if let Some(b) = self.max_body_bytes {
            if b > MAX_BODY_LIMIT_BYTES {
                return Err(field_err("max_body_bytes", format!("must be at most {MAX_BODY_LIMIT_BYTES}")));
            }
        }
        if let Some(auth) = &self.auth {
            auth.validate("auth")?;
        }
        self.limits.validate("limits")?;
        if let Some(api) = &self.api {
            api.validate("api")?;
        }
        if let Some(schema) = &self.request_schema {
            if !(schema.is_object() || schema.is_boolean()) {
                return Err(field_err("request_schema", "must be a JSON Schema (an object or a boolean)"));
            }
            if serde_json::to_vec(schema).map_or(usize::MAX, |b| b.len()) > MAX_SCHEMA_BYTES {
                return Err(field_err("request_schema", format!("at most {MAX_SCHEMA_BYTES} bytes")));
            }
        }
        if let Some(ip) = &self.ip {
            ip.validate("ip")?;
        }
        if let Some(waf) = &self.waf {
            waf.validate("waf")?;
        }
        if let Some(cors) = &self.cors {
            cors.validate("cors")?;
        }
        if let Some(cache) = &self.cache {
            cache.validate("cache")?;
        }
        if let Some(c) = &self.compression {
            c.validate("compression")?;
        }
        if let Some(l) = &self.login {
            l.validate("login")?;
        }
        if let Some(t) = &self.transform {
            t.validate("transform")?;
        }
        if let Some(g) = &self.graphql {
            g.validate("graphql")?;
        }
        Ok(())
    }

    /// Methods this route accepts.
    pub fn allowed_methods(&self) -> &[Method] {
        if self.methods.is_empty() {
            &Method::DEFAULT_ALLOWED
        } else {
            &self.methods
        }
    }

    /// Two routes conflict when a request could match both with nothing to
    /// rank them by: same priority, same methods and predicates, and a host
    /// and path pattern in common.
    pub fn conflicts_with(&self, other: &Route) -> bool {
        if !self.may_conflict_with(other) {
            return false;
        }
        let sorted = |v: &[Predicate]| {
            let mut v = v.to_vec();
            v.sort();
            v
        };
        let mut m1 = self.allowed_methods().to_vec();
        let mut m2 = other.allowed_methods().to_vec();
        m1.sort();
        m2.sort();
        let any_host = |r: &Route| if r.hosts.is_empty() { vec!["".to_string()] } else { r.hosts.clone() };
        let any_path =
            |r: &Route| if r.paths.is_empty() { vec![PathPattern::Prefix("/".into())] } else { r.paths.clone() };
        self.priority == other.priority
            && m1 == m2
            && sorted(&self.headers) == sorted(&other.headers)
            && sorted(&self.query) == sorted(&other.query)
            && any_host(self).iter().any(|h| any_host(other).contains(h))
            && any_path(self).iter().any(|p| any_path(other).contains(p))
    }
}

impl Route {
    /// A cheap necessary condition of [`conflicts_with`](Self::conflicts_with),
    /// without allocating: same priority, a shared path and a shared host.
    /// Checking a new route against 10,000 others stays well under a millisecond.
    fn may_conflict_with(&self, other: &Route) -> bool {
        let shared_path = match (self.paths.as_slice(), other.paths.as_slice()) {
            ([], []) => true,
            ([], o) | (o, []) => o.iter().any(|p| matches!(p, PathPattern::Prefix(x) if x == "/")),
            (a, b) => a.iter().any(|p| b.contains(p)),
        };
        let shared_host =
            self.hosts.is_empty() && other.hosts.is_empty() || self.hosts.iter().any(|h| other.hosts.contains(h));
        self.priority == other.priority && shared_path && shared_host
    }
}

fn validate_host_pattern(h: &str) -> Result<(), String> {
    let name = h.strip_prefix("*.").unwrap_or(h);
    let ok = !name.is_empty()
        && h.len() <= 253
        && name.split('.').all(|l| {
            !l.is_empty()
                && l.len() <= 63
                && l.bytes().all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-')
                && !l.starts_with('-')
                && !l.ends_with('-')
        });
    if ok {
        Ok(())
    } else {
        Err(format!("must be a lower-case host name or *.suffix, without port, got {h:?}"))
    }
}

/// How an upstream picks a target for each request.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case", deny_unknown_fields)]
pub enum Balance {
    /// Weighted round robin (smooth: weights 5,1,1 give a a b a c a a).
    #[default]
    RoundRobin,
    /// The target with the fewest requests in flight (weighted).
    LeastConnections,
    /// Power of two random choices on EWMA latency × in-flight requests.
    Ewma,
    /// Consistent hashing, so that the same key keeps reaching the same target.
    Hash(HashOn),
}

#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case", deny_unknown_fields)]
pub enum HashOn {
    Header(String),
    Cookie(String),
    ClientIp,
}

/// The protocol spoken to an upstream's targets.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum UpstreamProtocol {
    #[default]
    Http1,
    /// HTTP/2 over plaintext with prior knowledge (gRPC upstreams).
    H2c,
    /// HTTP/2 over TLS (needs `tls`).
    H2,
}

/// TLS to an upstream's targets. The certificate is verified against
/// `ca_file` (a PEM file on every node), or the public web roots without it.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct UpstreamTls {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub ca_file: Option<String>,
    /// The name sent as SNI and verified in the certificate, instead of the
    /// target's host (for targets addressed by IP).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub server_name: Option<String>,
}

/// One backend address of an upstream.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Target {
    /// `host:port`.
    pub addr: String,
    /// Relative share of traffic, 1 to 1000 (default 1).
    #[serde(default = "one")]
    pub weight: u32,
    /// The region the target runs in; nodes prefer targets in their own region.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub region: Option<String>,
}

fn one() -> u32 {
    1
}

/// Retries of a failed try on the next target.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct Retries {
    /// Extra tries after the first (0 to 5).
    pub attempts: u32,
    /// Retries may add at most this percentage of the upstream's requests (1 to 100)...
    pub budget_percent: u32,
    /// ...but at least this many retries per second are always allowed.
    pub min_per_second: u32,
}

impl Default for Retries {
    fn default() -> Self {
        Self { attempts: 2, budget_percent: 20, min_per_second: 10 }
    }
}

/// Passive outlier detection: a target that fails this many tries in a row
/// (connect error, timeout, 502/503/504) is ejected, for a time that doubles
/// with each ejection up to a cap.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct Outlier {
    pub consecutive_failures: u32,
    pub base_ejection_ms: u32,
    pub max_ejection_ms: u32,
    /// Never eject more than this share of the targets (0 to 100).
    pub max_ejected_percent: u32,
}

impl Default for Outlier {
    fn default() -> Self {
        Self { consecutive_failures: 5, base_ejection_ms: 10_000, max_ejection_ms: 300_000, max_ejected_percent: 50 }
    }
}

/// Active health checks: a GET to `path` on every target every `interval_ms`.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct ActiveHealth {
    pub path: String,
    pub interval_ms: u32,
    pub timeout_ms: u32,
    /// Consecutive passes that make an unhealthy target healthy again.
    pub healthy_threshold: u32,
    /// Consecutive failures that make a target unhealthy.
    pub unhealthy_threshold: u32,
}

impl Default for ActiveHealth {
    fn default() -> Self {
        Self { path: "/".into(), interval_ms: 5_000, timeout_ms: 1_000, healthy_threshold: 2, unhealthy_threshold: 3 }
    }
}

/// A set of targets behind one name.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Upstream {
    pub id: ObjectId,
    pub targets: Vec<Target>,
    #[serde(default)]
    pub balance: Balance,
    #[serde(default)]
    pub protocol: UpstreamProtocol,
    /// TCP connect timeout per try (default 2 s).
    #[serde(default = "default_connect_ms")]
    pub connect_timeout_ms: u32,
    /// Time for one try to produce response headers (default 15 s).
    #[serde(default = "default_try_ms")]
    pub try_timeout_ms: u32,
    /// Idle pooled connections close after this long (default 60 s).
    #[serde(default = "default_idle_ms")]
    pub idle_timeout_ms: u32,
    /// Circuit breaker: requests in flight per target; beyond it the target
    /// is skipped, and with every target full the request gets 503 (default 1024).
    #[serde(default = "default_max_in_flight")]
    pub max_in_flight_per_target: u32,
    #[serde(default)]
    pub retries: Retries,
    #[serde(default)]
    pub outlier: Outlier,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub health_check: Option<ActiveHealth>,
    /// Speak TLS to the targets.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub tls: Option<UpstreamTls>,
    /// Shed load early (503 `overloaded`) with an adaptive concurrency
    /// limit instead of letting requests queue into timeouts.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub adaptive_concurrency: Option<AdaptiveConcurrency>,
}

/// An AIMD concurrency limit per upstream on each node: it grows by about
/// one per round trip while latency stays within `latency_tolerance_percent`
/// of the best recently seen, and shrinks by 10% (at most every 100 ms) when
/// latency passes it or a try fails. Under the limit, lower-priority plans
/// are shed first: low above 50% of it, normal above 80%, high above 95%.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct AdaptiveConcurrency {
    pub initial_limit: u32,
    pub min_limit: u32,
    pub max_limit: u32,
    pub latency_tolerance_percent: u32,
}

impl Default for AdaptiveConcurrency {
    fn default() -> Self {
        Self { initial_limit: 50, min_limit: 4, max_limit: 1_000, latency_tolerance_percent: 200 }
    }
}

fn default_connect_ms() -> u32 {
    2_000
}
fn default_try_ms() -> u32 {
    15_000
}
fn default_idle_ms() -> u32 {
    60_000
}
fn default_max_in_flight() -> u32 {
    1_024
}

impl Upstream {
    pub fn validate(&self) -> Result<(), FieldError> {
        if let Some(a) = &self.adaptive_concurrency {
            let ok = a.min_limit >= 1
                && a.min_limit <= a.initial_limit
                && a.initial_limit <= a.max_limit
                && a.max_limit <= 100_000;
            if !ok {
                return Err(field_err(
                    "adaptive_concurrency",
                    "needs 1 <= min_limit <= initial_limit <= max_limit <= 100000",
                ));
            }
            if !(110..=1_000).contains(&a.latency_tolerance_percent) {
                return Err(field_err("adaptive_concurrency.latency_tolerance_percent", "must be 110 to 1000"));
            }
        }
        if self.targets.is_empty() || self.targets.len() > MAX_TARGETS {
            return Err(field_err("targets", format!("must have 1 to {MAX_TARGETS} targets")));
        }
        for (i, t) in self.targets.iter().enumerate() {
            if !crate::node::is_host_port(&t.addr) {
                return Err(field_err(format!("targets[{i}].addr"), format!("must be host:port, got {:?}", t.addr)));
            }
            if self.targets[..i].iter().any(|o| o.addr == t.addr) {
                return Err(field_err(format!("targets[{i}].addr"), "listed twice"));
            }
            if !(1..=1_000).contains(&t.weight) {
                return Err(field_err(format!("targets[{i}].weight"), "must be 1 to 1000"));
            }
            if let Some(r) = &t.region {
                if r.is_empty()
                    || r.len() > 64
                    || !r.bytes().all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-' || b == b'_')
                {
                    return Err(field_err(
                        format!("targets[{i}].region"),
                        "must be 1 to 64 characters of a-z, 0-9, '-' or '_'",
                    ));
                }
            }
        }
        match &self.balance {
            Balance::Hash(HashOn::Header(h)) if !is_header_name(h) => {
                return Err(field_err("balance.hash.header", "must be a lower-case header name"))
            }
            Balance::Hash(HashOn::Cookie(c))
                if c.is_empty()
                    || c.len() > 256
                    || !c.bytes().all(|b| b.is_ascii_graphic() && !matches!(b, b';' | b'=' | b',')) =>
            {
                return Err(field_err("balance.hash.cookie", "must be a cookie name"))
            }
            _ => {}
        }
        for (name, v, max) in [
            ("connect_timeout_ms", self.connect_timeout_ms, 60_000),
            ("try_timeout_ms", self.try_timeout_ms, MAX_TIMEOUT_MS),
            ("idle_timeout_ms", self.idle_timeout_ms, MAX_TIMEOUT_MS),
            ("max_in_flight_per_target", self.max_in_flight_per_target, 1_000_000),
        ] {
            if v == 0 || v > max {
                return Err(field_err(name, format!("must be 1 to {max}")));
            }
        }
        if self.retries.attempts > 5 {
            return Err(field_err("retries.attempts", "must be 0 to 5"));
        }
        if !(1..=100).contains(&self.retries.budget_percent) {
            return Err(field_err("retries.budget_percent", "must be 1 to 100"));
        }
        if self.retries.min_per_second > 10_000 {
            return Err(field_err("retries.min_per_second", "must be at most 10000"));
        }
        let o = &self.outlier;
        if o.consecutive_failures == 0 || o.consecutive_failures > 1_000 {
            return Err(field_err("outlier.consecutive_failures", "must be 1 to 1000"));
        }
        if o.base_ejection_ms == 0 || o.base_ejection_ms > o.max_ejection_ms || o.max_ejection_ms > MAX_TIMEOUT_MS {
            return Err(field_err(
                "outlier.base_ejection_ms",
                format!("must be 1 to max_ejection_ms (at most {MAX_TIMEOUT_MS})"),
            ));
        }
        if o.max_ejected_percent > 100 {
            return Err(field_err("outlier.max_ejected_percent", "must be 0 to 100"));
        }
        if self.protocol == UpstreamProtocol::H2 && self.tls.is_none() {
            return Err(field_err("protocol", "h2 runs over TLS: add `tls`, or use h2c"));
        }
        if let Some(tls) = &self.tls {
            if self.protocol == UpstreamProtocol::H2c {
                return Err(field_err("protocol", "h2c is plaintext: use h2 with `tls`"));
            }
            if let Some(name) = &tls.server_name {
                validate_host_pattern(name)
                    .ok()
                    .filter(|_| !name.starts_with("*."))
                    .ok_or_else(|| field_err("tls.server_name", "must be a lower-case host name"))?;
            }
            if let Some(ca) = &tls.ca_file {
                if ca.is_empty() || ca.len() > 4_096 || ca.contains('\0') {
                    return Err(field_err("tls.ca_file", "must be a file path"));
                }
            }
        }
        if let Some(h) = &self.health_check {
            let normal = normalize_path(&h.path).map_err(|e| field_err("health_check.path", e.to_string()))?;
            if normal != h.path.as_str() {
                return Err(field_err("health_check.path", "must be a normalised path"));
            }
            if !(100..=3_600_000).contains(&h.interval_ms) {
                return Err(field_err("health_check.interval_ms", "must be 100 to 3600000"));
            }
            if h.timeout_ms == 0 || h.timeout_ms > h.interval_ms {
                return Err(field_err("health_check.timeout_ms", "must be 1 to interval_ms"));
            }
            if !(1..=100).contains(&h.healthy_threshold) || !(1..=100).contains(&h.unhealthy_threshold) {
                return Err(field_err("health_check", "thresholds must be 1 to 100"));
            }
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    #[test]
    fn lifecycle_dates_parse_strictly_and_format_as_http_dates() {
        assert_eq!(super::utc_seconds("1970-01-01").unwrap(), 0);
        assert_eq!(super::utc_seconds("1994-11-06T08:49:37Z").unwrap(), 784_111_777);
        assert_eq!(super::http_date(784_111_777), "Sun, 06 Nov 1994 08:49:37 GMT");
        assert_eq!(super::http_date(super::utc_seconds("2028-02-29").unwrap()), "Tue, 29 Feb 2028 00:00:00 GMT");
        for bad in [
            "2027-02-29",
            "2026-13-01",
            "2026-1-01",
            "2026-01-01T25:00:00Z",
            "2026-01-01 00:00:00",
            "soon",
            "+026-01-01",
        ] {
            assert!(super::utc_seconds(bad).is_err(), "{bad}");
        }
    }

    use super::*;

    fn route(json: &str) -> Route {
        serde_json::from_str(json).unwrap()
    }

    #[test]
    fn a_full_route_round_trips_and_validates() {
        let r = route(
            r#"{"id":"users","upstream":"api","priority":5,"hosts":["api.example.com","*.example.org"],
                "paths":[{"template":"/users/{id}"},{"prefix":"/v1"},{"regex":"/v[0-9]+/items"}],
                "methods":["GET","POST"],"headers":[{"name":"x-env","value":{"exact":"canary"}}],
                "query":[{"name":"debug","invert":true}],"request_headers":{"set":{"x-a":"1"},"remove":["x-b"]},
                "timeout_ms":1000,"max_body_bytes":1024}"#,
        );
        r.validate().unwrap();
        let back: Route = serde_json::from_slice(&serde_json::to_vec(&r).unwrap()).unwrap();
        assert_eq!(back, r);
    }

    #[test]
    fn bad_fields_are_named() {
        let cases = [
            (r#"{"id":"a","upstream":"u","paths":[{"regex":"("}]}"#, "paths[0].regex"),
            (r#"{"id":"a","upstream":"u","paths":[{"prefix":"/a/../b"}]}"#, "paths[0].prefix"),
            (r#"{"id":"a","upstream":"u","paths":[{"prefix":"/a/"}]}"#, "paths[0].prefix"),
            (r#"{"id":"a","upstream":"u","paths":[{"template":"/a/x{id}"}]}"#, "paths[0].template"),
            (r#"{"id":"a","upstream":"u","hosts":["Example.com"]}"#, "hosts[0]"),
            (r#"{"id":"a","upstream":"u","hosts":["a.*.com"]}"#, "hosts[0]"),
            (r#"{"id":"a","upstream":"u","headers":[{"name":"X-A"}]}"#, "headers[0].name"),
            (
                r#"{"id":"a","upstream":"u","request_headers":{"set":{"connection":"x"}}}"#,
                "request_headers.set.connection",
            ),
            (r#"{"id":"a","upstream":"u","strip_prefix":true,"paths":[{"exact":"/a"}]}"#, "strip_prefix"),
            (r#"{"id":"a","upstream":"u","timeout_ms":0}"#, "timeout_ms"),
        ];
        for (json, field) in cases {
            assert_eq!(route(json).validate().unwrap_err().field, field, "{json}");
        }
        assert!(serde_json::from_str::<Route>(r#"{"id":"a","upstream":"u","bogus":1}"#).is_err());
        let bad_id = serde_json::from_str::<Route>(r#"{"id":"Bad Id","upstream":"u"}"#).unwrap_err();
        assert!(bad_id.to_string().contains("id: must be"), "{bad_id}");
        assert!(ObjectId::parse("Bad Id").is_err());
    }

    #[test]
    fn a_regex_cannot_escape_its_anchors() {
        assert!(compile_regex("a)|(.*").is_err());
        let r = compile_regex("/a|/b").unwrap();
        assert!(r.is_match("/b") && !r.is_match("/bx"));
    }

    #[test]
    fn regexes_have_a_compiled_size_limit() {
        let r = route(r#"{"id":"a","upstream":"u","paths":[{"regex":"(a{1000}){1000}"}]}"#);
        assert!(r.validate().unwrap_err().message.contains("more than"));
    }

    #[test]
    fn routes_conflict_only_when_nothing_ranks_them() {
        let a = route(r#"{"id":"a","upstream":"u","hosts":["x.com"],"paths":[{"prefix":"/api"}]}"#);
        let b = route(r#"{"id":"b","upstream":"u","hosts":["x.com","y.com"],"paths":[{"prefix":"/api"}]}"#);
        assert!(a.conflicts_with(&b));
        let c = route(r#"{"id":"c","upstream":"u","priority":1,"hosts":["x.com"],"paths":[{"prefix":"/api"}]}"#);
        assert!(!a.conflicts_with(&c));
        let d = route(r#"{"id":"d","upstream":"u","hosts":["x.com"],"paths":[{"prefix":"/api"}],"methods":["GET"]}"#);
        assert!(!a.conflicts_with(&d));
        let e = route(r#"{"id":"e","upstream":"u","paths":[{"prefix":"/api"}]}"#);
        assert!(!a.conflicts_with(&e), "any-host and x.com are ranked by host specificity");
    }

    #[test]
    fn upstreams_validate_targets_and_policies() {
        let u: Upstream = serde_json::from_str(
            r#"{"id":"api","targets":[{"addr":"10.0.0.1:80","weight":3,"region":"eu-west"},{"addr":"10.0.0.2:80"}],
                "balance":{"hash":{"header":"x-user"}},"retries":{"attempts":1},"health_check":{"path":"/healthz"}}"#,
        )
        .unwrap();
        u.validate().unwrap();
        assert_eq!(u.retries.budget_percent, 20);
        let bad: Upstream = serde_json::from_str(r#"{"id":"api","targets":[{"addr":"nohost"}]}"#).unwrap();
        assert_eq!(bad.validate().unwrap_err().field, "targets[0].addr");
        let empty: Upstream = serde_json::from_str(r#"{"id":"api","targets":[]}"#).unwrap();
        assert_eq!(empty.validate().unwrap_err().field, "targets");
        let rr: Upstream =
            serde_json::from_str(r#"{"id":"api","targets":[{"addr":"a:1"}],"balance":"least_connections"}"#).unwrap();
        assert_eq!(rr.balance, Balance::LeastConnections);
    }
}
