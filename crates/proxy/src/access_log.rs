//! One structured line per request (tracing target `raftgate::access`,
//! written as JSON lines by the node), sampled, with secrets kept out and
//! privacy options for personal data.
//!
//! Fields (each can be dropped by name with `access_log.drop_fields`):
//!
//! | field | value |
//! |---|---|
//! | `request_id` | the `X-Request-Id` sent upstream and to the client |
//! | `trace_id`, `span_id` | W3C trace context of this hop (see `trace`) |
//! | `client_ip` | the client address (through trusted proxies), full, truncated (IPv4 /24, IPv6 /48) or a keyed hash |
//! | `method`, `host`, `path` | as the client sent them (path without query, at most 1,024 bytes) |
//! | `query` | the query string with credential-bearing parameters' values replaced by `REDACTED` |
//! | `protocol` | `HTTP/1.1`, `HTTP/2` … |
//! | `tls` | whether the connection was HTTPS |
//! | `status` | the status sent to the client |
//! | `duration_ms` | request to response head, milliseconds (fractional) |
//! | `route`, `upstream` | the matched route and its upstream |
//! | `consumer`, `auth` | the authenticated consumer and how (`jwt`, `api_key`, `mtls`) |
//! | `error` | the gateway's error code when it answered itself |
//! | `user_agent`, `referer` | those headers, at most 256 bytes |
//! | `bytes_in` | the request's `Content-Length`, when it has one |
//! | `graphql_operation` | on a GraphQL route, the admitted operation's name (`-`: anonymous; at most 128 bytes of GraphQL name characters) |
//! | `graphql_type` | on a GraphQL route, `query`, `mutation` or `subscription` |
//!
//! Never logged: `Authorization`, cookies, API-key headers, request or
//! response bodies. Sampling keeps `sample_rate` of the requests, plus
//! every answer with status 400 and up when `errors_always` is set.

use std::net::IpAddr;
use std::time::Duration;

use http::{HeaderMap, HeaderValue, Method, StatusCode, Uri, Version};
use rand::RngCore;

/// Every field, in the order of the table above.
pub const FIELDS: [&str; 22] = [
    "request_id",
    "trace_id",
    "span_id",
    "client_ip",
    "method",
    "host",
    "path",
    "query",
    "protocol",
    "tls",
    "status",
    "duration_ms",
    "route",
    "upstream",
    "consumer",
    "auth",
    "error",
    "user_agent",
    "referer",
    "bytes_in",
    "graphql_operation",
    "graphql_type",
];
const MAX_PATH_BYTES: usize = 1_024;
const MAX_QUERY_BYTES: usize = 1_024;
const MAX_HEADER_FIELD_BYTES: usize = 256;
/// Query parameters whose values are never logged, on top of the route's
/// own API-key parameter.
pub const DEFAULT_REDACTED_PARAMS: [&str; 16] = [
    "access_token",
    "api_key",
    "apikey",
    "auth",
    "client_secret",
    "code",
    "id_token",
    "jwt",
    "key",
    "password",
    "refresh_token",
    "secret",
    "session",
    "sig",
    "signature",
    "token",
];

/// A set of [`FIELDS`], by index.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct FieldSet(u32);

impl FieldSet {
    /// The set of these field names; an unknown name is an error naming it.
    pub fn parse<'a>(names: impl IntoIterator<Item = &'a str>) -> Result<Self, String> {
        let mut bits = 0;
        for n in names {
            let i = FIELDS
                .iter()
                .position(|f| *f == n)
                .ok_or_else(|| format!("unknown access-log field {n:?}; fields are {}", FIELDS.join(", ")))?;
            bits |= 1 << i;
        }
        Ok(Self(bits))
    }

    fn has(&self, name: &str) -> bool {
        FIELDS.iter().position(|f| *f == name).is_some_and(|i| self.0 & (1 << i) != 0)
    }
}

/// How client addresses appear in the log.
#[derive(Clone)]
pub enum IpPrivacy {
    Full,
    /// IPv4 to its /24, IPv6 to its /48.
    Truncate,
    /// The first 16 hex digits of HMAC-SHA256(key, address): the same
    /// client gives the same value on every node sharing the key, and the
    /// address cannot be recovered by trying all of them without it.
    Hash(ring::hmac::Key),
}

impl std::fmt::Debug for IpPrivacy {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            IpPrivacy::Full => "Full",
            IpPrivacy::Truncate => "Truncate",
            IpPrivacy::Hash(_) => "Hash(..)",
        })
    }
}

impl IpPrivacy {
    /// Hashing keyed by a key derived from `secret` (the node's key-hash
    /// secret), so the log key is not the secret itself.
    pub fn hashed_with(secret: &[u8]) -> Self {
        let root = ring::hmac::Key::new(ring::hmac::HMAC_SHA256, secret);
        let derived = ring::hmac::sign(&root, b"raftgate access-log client-ip v1");
        IpPrivacy::Hash(ring::hmac::Key::new(ring::hmac::HMAC_SHA256, derived.as_ref()))
    }

    pub fn show(&self, ip: IpAddr) -> String {
        match (self, ip.to_canonical()) {
            (IpPrivacy::Full, ip) => ip.to_string(),
            (IpPrivacy::Truncate, IpAddr::V4(v4)) => {
                let [a, b, c, _] = v4.octets();
                format!("{a}.{b}.{c}.0")
            }
            (IpPrivacy::Truncate, IpAddr::V6(v6)) => {
                let s = v6.segments();
                std::net::Ipv6Addr::new(s[0], s[1], s[2], 0, 0, 0, 0, 0).to_string()
            }
            (IpPrivacy::Hash(key), ip) => {
                let tag = ring::hmac::sign(key, ip.to_string().as_bytes());
                tag.as_ref()[..8].iter().map(|b| format!("{b:02x}")).collect()
            }
        }
    }
}

/// What the node's config asks of the access log.
#[derive(Clone, Debug)]
pub struct AccessLogPolicy {
    pub enabled: bool,
    /// Requests logged, per million (sampling).
    pub sample_per_million: u32,
    /// Log every answer with status 400 or above, sampled or not.
    pub errors_always: bool,
    pub client_ip: IpPrivacy,
    pub dropped: FieldSet,
    /// Query parameter names (lower case) whose values are replaced.
    pub redacted_params: Vec<String>,
}

impl Default for AccessLogPolicy {
    fn default() -> Self {
        Self {
            enabled: true,
            sample_per_million: 1_000_000,
            errors_always: true,
            client_ip: IpPrivacy::Full,
            dropped: FieldSet::default(),
            redacted_params: DEFAULT_REDACTED_PARAMS.iter().map(|s| s.to_string()).collect(),
        }
    }
}

/// The parts of a request the log line needs, taken before the request
/// moves on through the pipeline.
pub struct RequestFacts {
    sampled: bool,
    method: Method,
    uri: Uri,
    version: Version,
    host: Option<HeaderValue>,
    user_agent: Option<HeaderValue>,
    referer: Option<HeaderValue>,
    bytes_in: Option<u64>,
    client_ip: IpAddr,
}

/// What the pipeline learned on the way, for the log line.
#[derive(Default)]
pub struct Seen {
    pub route: Option<std::sync::Arc<raftgate_model::Route>>,
    pub principal: Option<crate::auth::Principal>,
    pub error: Option<&'static str>,
    /// A login route's attempt, counted when the answer is known.
    pub login: Option<crate::abuse::LoginAttempt>,
    /// The operation a GraphQL route admitted.
    pub graphql: Option<raftgate_graphql::Operation>,
}

impl AccessLogPolicy {
    /// The facts to keep for this request, or None when it will not be logged.
    pub fn facts(
        &self,
        headers: &HeaderMap,
        method: &Method,
        uri: &Uri,
        version: Version,
        client_ip: impl FnOnce() -> IpAddr,
    ) -> Option<RequestFacts> {
        if !self.enabled || !tracing::enabled!(target: "raftgate::access", tracing::Level::INFO) {
            return None;
        }
        let sampled =
            self.sample_per_million >= 1_000_000 || rand::thread_rng().next_u32() % 1_000_000 < self.sample_per_million;
        if !sampled && !self.errors_always {
            return None;
        }
        let get = |name: http::header::HeaderName| headers.get(name).cloned();
        Some(RequestFacts {
            sampled,
            method: method.clone(),
            uri: uri.clone(),
            version,
            host: get(http::header::HOST),
            user_agent: get(http::header::USER_AGENT),
            referer: get(http::header::REFERER),
            bytes_in: headers.get(http::header::CONTENT_LENGTH).and_then(|v| v.to_str().ok()?.trim().parse().ok()),
            client_ip: client_ip(),
        })
    }

    /// Writes the line (if sampled, or an error kept by `errors_always`).
    #[allow(clippy::too_many_arguments)]
    pub fn emit(
        &self,
        facts: RequestFacts,
        request_id: &str,
        trace: Option<&crate::trace::TraceContext>,
        tls: bool,
        status: StatusCode,
        elapsed: Duration,
        seen: &Seen,
    ) {
        let kept_error = self.errors_always && status.as_u16() >= 400;
        if !(facts.sampled || kept_error) {
            return;
        }
        let d = &self.dropped;
        let keep = |name: &str| !d.has(name);
        let text = |v: &Option<HeaderValue>, max: usize| {
            v.as_ref().map(|v| truncate(&String::from_utf8_lossy(v.as_bytes()), max))
        };
        let route = seen.route.as_ref();
        let api_key_param = route.and_then(|r| r.auth.as_ref()?.api_key.as_ref()?.query.as_deref());
        let query = facts.uri.query().map(|q| redact_query(q, &self.redacted_params, api_key_param));
        tracing::info!(
            target: "raftgate::access",
            request_id = keep("request_id").then_some(request_id),
            trace_id = trace.filter(|_| keep("trace_id")).map(|t| t.trace_id_hex()),
            span_id = trace.filter(|_| keep("span_id")).map(|t| t.span_id_hex()),
            client_ip = keep("client_ip").then(|| self.client_ip.show(facts.client_ip)),
            method = keep("method").then_some(facts.method.as_str()),
            host = text(&facts.host, MAX_HEADER_FIELD_BYTES).filter(|_| keep("host")),
            path = keep("path").then(|| truncate(facts.uri.path(), MAX_PATH_BYTES)),
            query = query.filter(|_| keep("query")),
            protocol = keep("protocol").then(|| format!("{:?}", facts.version)),
            tls = keep("tls").then_some(tls),
            status = keep("status").then_some(status.as_u16()),
            duration_ms = keep("duration_ms").then_some(elapsed.as_secs_f64() * 1e3),
            route = route.filter(|_| keep("route")).map(|r| r.id.as_str()),
            upstream = route.filter(|_| keep("upstream")).map(|r| r.upstream.as_str()),
            consumer = seen.principal.as_ref().filter(|_| keep("consumer")).map(|p| p.consumer.as_str()),
            auth = seen.principal.as_ref().filter(|_| keep("auth")).map(|p| p.method),
            error = seen.error.filter(|_| keep("error")),
            user_agent = text(&facts.user_agent, MAX_HEADER_FIELD_BYTES).filter(|_| keep("user_agent")),
            referer = text(&facts.referer, MAX_HEADER_FIELD_BYTES).filter(|_| keep("referer")),
            bytes_in = facts.bytes_in.filter(|_| keep("bytes_in")),
            graphql_operation = seen.graphql.as_ref().filter(|_| keep("graphql_operation")).map(crate::graphql::log_name),
            graphql_type = seen.graphql.as_ref().filter(|_| keep("graphql_type")).map(|o| o.kind.as_str()),
            "request"
        );
    }
}

fn truncate(s: &str, max: usize) -> String {
    if s.len() <= max {
        return s.to_string();
    }
    let cut = (0..=max).rev().find(|&i| s.is_char_boundary(i)).unwrap_or(0);
    format!("{}…", &s[..cut])
}

/// The query with the values of credential-bearing parameters replaced.
/// Names compare case-insensitively, after percent-decoding.
pub fn redact_query(query: &str, redacted: &[String], extra: Option<&str>) -> String {
    let query = truncate(query, MAX_QUERY_BYTES);
    let mut out = String::with_capacity(query.len());
    for (i, pair) in query.split('&').enumerate() {
        if i > 0 {
            out.push('&');
        }
        let (name, value) = match pair.split_once('=') {
            Some((n, v)) => (n, Some(v)),
            None => (pair, None),
        };
        let decoded =
            crate::router::percent_decode(name).unwrap_or(std::borrow::Cow::Borrowed(name)).to_ascii_lowercase();
        let secret = redacted.contains(&decoded) || extra.is_some_and(|e| e.eq_ignore_ascii_case(&decoded));
        out.push_str(name);
        match value {
            Some(_) if secret => out.push_str("=REDACTED"),
            Some(v) => {
                out.push('=');
                out.push_str(v);
            }
            None => {}
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    fn defaults() -> Vec<String> {
        DEFAULT_REDACTED_PARAMS.iter().map(|s| s.to_string()).collect()
    }

    #[test]
    fn credential_parameters_are_redacted_whatever_their_case_or_encoding() {
        let q = "page=2&API_KEY=abc&t%6Fken=xyz&x-key=keep&flag";
        assert_eq!(redact_query(q, &defaults(), None), "page=2&API_KEY=REDACTED&t%6Fken=REDACTED&x-key=keep&flag");
        assert_eq!(redact_query("k=1&mine=2", &defaults(), Some("mine")), "k=1&mine=REDACTED");
    }

    #[test]
    fn truncated_and_hashed_addresses_hide_the_host_part() {
        let v4: IpAddr = "203.0.113.77".parse().unwrap();
        let v6: IpAddr = "2001:db8:abcd:12::1".parse().unwrap();
        let mapped: IpAddr = "::ffff:203.0.113.77".parse().unwrap();
        assert_eq!(IpPrivacy::Truncate.show(v4), "203.0.113.0");
        assert_eq!(IpPrivacy::Truncate.show(v6), "2001:db8:abcd::");
        assert_eq!(IpPrivacy::Truncate.show(mapped), "203.0.113.0");
        let key = IpPrivacy::Hash(ring::hmac::Key::new(ring::hmac::HMAC_SHA256, b"k"));
        let other = IpPrivacy::Hash(ring::hmac::Key::new(ring::hmac::HMAC_SHA256, b"other"));
        assert_eq!(key.show(v4), key.show(mapped));
        assert_eq!(key.show(v4).len(), 16);
        assert_ne!(key.show(v4), other.show(v4));
        assert!(!key.show(v4).contains("203"));
    }

    #[test]
    fn unknown_field_names_are_refused_by_name() {
        assert!(FieldSet::parse(["client_ip", "user_agent"]).unwrap().has("client_ip"));
        let graphql = FieldSet::parse(["graphql_operation", "graphql_type"]).unwrap();
        assert!(graphql.has("graphql_operation") && graphql.has("graphql_type") && !graphql.has("route"));
        let err = FieldSet::parse(["clientip"]).unwrap_err();
        assert!(err.contains("\"clientip\"") && err.contains("client_ip"), "{err}");
    }

    /// Collects the fields of every event, as a tracing subscriber.
    struct Capture(std::sync::Arc<std::sync::Mutex<Vec<(String, String)>>>);

    impl tracing::Subscriber for Capture {
        fn enabled(&self, _: &tracing::Metadata<'_>) -> bool {
            true
        }
        fn new_span(&self, _: &tracing::span::Attributes<'_>) -> tracing::span::Id {
            tracing::span::Id::from_u64(1)
        }
        fn record(&self, _: &tracing::span::Id, _: &tracing::span::Record<'_>) {}
        fn record_follows_from(&self, _: &tracing::span::Id, _: &tracing::span::Id) {}
        fn event(&self, event: &tracing::Event<'_>) {
            struct Fields<'a>(&'a mut Vec<(String, String)>);
            impl tracing::field::Visit for Fields<'_> {
                fn record_debug(&mut self, f: &tracing::field::Field, v: &dyn std::fmt::Debug) {
                    self.0.push((f.name().to_string(), format!("{v:?}")));
                }
                fn record_str(&mut self, f: &tracing::field::Field, v: &str) {
                    self.0.push((f.name().to_string(), v.to_string()));
                }
            }
            event.record(&mut Fields(&mut self.0.lock().unwrap()));
        }
        fn enter(&self, _: &tracing::span::Id) {}
        fn exit(&self, _: &tracing::span::Id) {}
    }

    fn logged(policy: &AccessLogPolicy, seen: &Seen) -> Vec<(String, String)> {
        let lines = std::sync::Arc::new(std::sync::Mutex::new(Vec::new()));
        tracing::subscriber::with_default(Capture(lines.clone()), || {
            let uri: Uri = "/graphql".parse().unwrap();
            let ip: IpAddr = "192.0.2.1".parse().unwrap();
            let facts = policy.facts(&HeaderMap::new(), &Method::POST, &uri, Version::HTTP_11, || ip).unwrap();
            policy.emit(facts, "rid", None, false, StatusCode::OK, Duration::from_millis(1), seen);
        });
        let out = lines.lock().unwrap().clone();
        out
    }

    #[test]
    fn a_graphql_operation_is_logged_by_name_and_type_unless_dropped() {
        let seen = Seen {
            graphql: Some(raftgate_graphql::Operation {
                name: Some("SearchProducts".into()),
                kind: raftgate_graphql::OperationType::Mutation,
                depth: 2,
                fields: 3,
                aliases: 0,
                cost: 4,
            }),
            ..Seen::default()
        };
        let policy = AccessLogPolicy::default();
        let fields = logged(&policy, &seen);
        let get = |name: &str| fields.iter().find(|(k, _)| k == name).map(|(_, v)| v.as_str());
        assert_eq!(get("graphql_operation"), Some("SearchProducts"));
        assert_eq!(get("graphql_type"), Some("mutation"));
        let anonymous = Seen {
            graphql: seen.graphql.clone().map(|o| raftgate_graphql::Operation { name: None, ..o }),
            ..Seen::default()
        };
        assert!(logged(&policy, &anonymous).contains(&("graphql_operation".into(), "-".into())));
        let dropped = AccessLogPolicy { dropped: FieldSet::parse(["graphql_operation"]).unwrap(), ..policy };
        let fields = logged(&dropped, &seen);
        assert!(!fields.iter().any(|(k, _)| k == "graphql_operation"), "{fields:?}");
        assert!(fields.iter().any(|(k, _)| k == "graphql_type"));
        assert!(
            !logged(&dropped, &Seen::default()).iter().any(|(k, _)| k.starts_with("graphql")),
            "not a GraphQL route"
        );
    }

    #[test]
    fn long_fields_are_cut_on_a_character_boundary() {
        let s = "é".repeat(600);
        let t = truncate(&s, MAX_PATH_BYTES);
        assert!(t.len() <= MAX_PATH_BYTES + '…'.len_utf8());
        assert!(t.ends_with('…'));
    }
}
