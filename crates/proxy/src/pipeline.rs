//! The life of one request, as named phases.
//!
//! 1. [`request_filter`]: limits and ambiguity checks, host and path
//!    normalisation. Refuses what must not go further.
//! 2. [`route`]: the snapshot's router picks a route (404 / 405 otherwise).
//! 3. [`upstream_request`]: the request the upstream will see: rewritten
//!    path, hop-by-hop headers removed, the route's header operations,
//!    forwarding headers and the request id.
//! 4. [`send`]: pick a target (locality, balancing, health, circuit
//!    breaker), send with per-try and total timeouts, retry idempotent
//!    bodiless requests on the next target within the retry budget.
//! 5. [`response_filter`]: hop-by-hop headers removed, the route's response
//!    header operations, the request id.
//! 6. logging: one structured line per request (target `raftgate::access`),
//!    and the request's span to the configured [`crate::trace::SpanSink`]
//!    when its trace is sampled.
//!
//! 2b. [`crate::auth::authenticate`]: credentials, revocation, the route's
//!    consumer, group and scope rules (401 / 403 / 503 when stale).
//! 2b′. [`crate::graphql::inspect`] (GraphQL routes only): the operation
//!    parsed and bounded before the rate limits, which may key on it; a
//!    `POST` body is read whole here and those bytes are what later stages
//!    check and the upstream receives.
//!
//! 2d and 4b. [`crate::transform`]: the route's body transformation, of
//!    the request once its body has been checked, of the response before
//!    the cache and compression see it.
//!
//! Later stages (rate limits, WAF, cache) slot in between 2b and 3, each
//! with the same shape: take the context, continue or respond.

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::{Duration, Instant};

use http::header::{HeaderValue, CONNECTION, CONTENT_LENGTH, COOKIE, HOST, TE, TRANSFER_ENCODING, UPGRADE};

use http::{HeaderMap, Method, Request, Response, StatusCode, Uri, Version};
use http_body_util::BodyExt;
use hyper::body::Incoming;
use hyper_util::rt::TokioIo;
use raftgate_model::path::normalize_path;
use raftgate_model::route::{Balance, HashOn, UpstreamProtocol, DEFAULT_MAX_BODY_BYTES, DEFAULT_ROUTE_TIMEOUT_MS};
use raftgate_model::Route;

use crate::access_log::Seen;
use crate::balance::{HashKey, Outcome};
use crate::body::{empty, is_body_too_large, IdleTimeout, Limited, ProxyBody, Tracked};
use crate::error::GatewayError;
use crate::forwarded::{self, X_REQUEST_ID};
use crate::gateway::{Gateway, Snapshot, UpstreamRuntime};
use crate::router::{normalize_host, Match, RequestView};
use crate::trace::TraceContext;

/// What the listener knows about the connection a request came on.
#[derive(Clone, Debug)]
pub struct ConnInfo {
    pub client: SocketAddr,
    /// The client address as forwarding headers show it.
    pub client_addr: forwarded::ClientAddr,
    /// `http` or `https`.
    pub proto: &'static str,
    /// The verified client certificate (mTLS listeners), kept for the
    /// identity stages.
    pub client_cert: Option<Arc<crate::tls::ClientIdentity>>,
    /// HTTP/1 framing seen on the raw bytes (see `framing`).
    pub framing: Option<Arc<crate::framing::Framing>>,
    /// The connection's slot under `max_connections`; an upgraded tunnel
    /// keeps it until the tunnel closes.
    pub slot: Option<Arc<tokio::sync::OwnedSemaphorePermit>>,
}

/// A request after [`request_filter`]: normalised host and path.
struct Checked {
    host: Option<String>,
    /// The host as the client sent it (with port), for `preserve_host`.
    raw_host: Option<HeaderValue>,
    path: String,
    upgrade: bool,
}

/// Serves one request; never fails (errors become gateway responses).
pub async fn handle(gateway: Arc<Gateway>, conn: ConnInfo, req: Request<Incoming>) -> Response<ProxyBody> {
    let started = Instant::now();
    let request_id = forwarded::request_id(req.headers());
    let config = gateway.config();
    let facts = config
        .access_log
        .facts(req.headers(), req.method(), req.uri(), req.version(), || gateway.client_ip(&conn, req.headers()));
    let trace = config.trace.propagate.then(|| TraceContext::for_request(req.headers(), &config.trace));
    let snapshot = gateway.snapshot();
    let method = req.method().clone();
    let mut seen = Seen::default();
    let response = match proxy(&gateway, &snapshot, &conn, &request_id, trace.as_ref(), req, &mut seen).await {
        Ok(r) => r,
        Err(e) => {
            gateway.metrics().gateway_error(e.code());
            seen.error = Some(e.code());
            e.response(&request_id)
        }
    };
    let elapsed = started.elapsed();
    if let (Some(attempt), Some(login)) = (&seen.login, seen.route.as_ref().and_then(|r| r.login.as_ref())) {
        gateway.login_guard().record(login, attempt, response.status().as_u16(), gateway.now_ms());
    }
    if let (Some(detector), Some(p)) = (gateway.anomaly(), &seen.principal) {
        detector.record(&p.consumer, response.status().as_u16() >= 400);
    }
    if let Some(c) = seen.route.as_ref().filter(|_| !config.metrics_off).and_then(|r| snapshot.counters.get(&r.id)) {
        c.metrics.record_response(&method, response.status(), elapsed);
    }
    if let Some(facts) = facts {
        let tls = conn.proto == "https";
        config.access_log.emit(facts, &request_id, trace.as_ref(), tls, response.status(), elapsed, &seen);
    }
    if let (Some(sink), Some(trace)) = (&config.spans, &trace) {
        if trace.sampled() {
            let now = std::time::SystemTime::now();
            sink.record(&crate::trace::FinishedSpan {
                trace,
                route: seen.route.as_ref().map(|r| r.id.as_str()),
                method: &method,
                status: response.status(),
                error: seen.error,
                scheme: conn.proto,
                start: now.checked_sub(elapsed).unwrap_or(now),
                duration: elapsed,
            });
        }
    }
    response
}

async fn proxy(
    gateway: &Gateway,
    snapshot: &Snapshot,
    conn: &ConnInfo,
    request_id: &str,
    trace: Option<&TraceContext>,
    mut req: Request<Incoming>,
    seen: &mut Seen,
) -> Result<Response<ProxyBody>, GatewayError> {
    if conn.framing.as_ref().is_some_and(|f| f.next_request_is_ambiguous()) {
        return Err(GatewayError::BadRequest);
    }
    let checked = request_filter(gateway, &req)?;
    let edge = &gateway.config().edge;
    if let Some(asked) = crate::edge::preflight_method(req.method(), req.headers()) {
        let found = match route(snapshot, &req, &checked, None) {
            Ok((r, _)) => Some(r),
            Err(_) => route(snapshot, &req, &checked, Some(&asked)).ok().map(|(r, _)| r),
        };
        if let Some(r) = found {
            if let Some(cors) = &r.cors {
                seen.route = Some(r.clone());
                if edge.global_ip.is_some() || r.ip.is_some() {
                    crate::edge::check_ip(
                        edge.global_ip.as_ref(),
                        &r,
                        gateway.client_ip(conn, req.headers()),
                        &edge.geo,
                    )?;
                }
                let mut resp = crate::edge::preflight(&r, cors, req.headers(), &asked)?;
                if let Ok(v) = HeaderValue::from_str(request_id) {
                    resp.headers_mut().insert(X_REQUEST_ID, v);
                }
                return Ok(resp);
            }
        }
    }
    let (route, upstream_path) = match route(snapshot, &req, &checked, None) {
        Err(GatewayError::RouteNotFound) => {
            gateway.unknown_paths().record(req.method().as_str(), &checked.path);
            return Err(GatewayError::RouteNotFound);
        }
        found => found?,
    };
    seen.route = Some(route.clone());
    if let Some(c) = snapshot.counters.get(&route.id) {
        c.count(gateway.wall_ms() / 60_000);
    }
    if crate::catalog::is_catch_all(&route) {
        gateway.unknown_paths().record(req.method().as_str(), &checked.path);
    }
    if route.https_redirect && conn.proto == "http" {
        return redirect_to_https(gateway, &req, &checked, request_id);
    }
    if edge.global_ip.is_some() || route.ip.is_some() {
        crate::edge::check_ip(edge.global_ip.as_ref(), &route, gateway.client_ip(conn, req.headers()), &edge.geo)?;
    }
    if let Some(login) = &route.login {
        let account =
            login.account_header.as_ref().and_then(|h| req.headers().get(h.as_str())).and_then(|v| v.to_str().ok());
        let attempt = crate::abuse::LoginAttempt {
            route: route.id.clone(),
            ip: gateway.client_ip(conn, req.headers()),
            account: account.map(|a| a.chars().take(256).collect()),
        };
        let locked = gateway.login_guard().locked(&attempt, gateway.now_ms());
        seen.login = Some(attempt);
        if let Some(retry_s) = locked {
            return Err(GatewayError::LoginLocked(retry_s));
        }
    }
    let principal = crate::auth::authenticate(gateway, &route, req.headers(), req.uri().query(), conn, request_id)?;
    seen.principal = principal.clone();
    if let (Some(detector), Some(p)) = (gateway.anomaly(), &principal) {
        if detector.throttled(&p.consumer, gateway.now_ms()) {
            let rate = u64::from(detector.policy().throttle_rate_per_s);
            let key = format!("anomaly|{}", p.consumer);
            gateway.rate_limiter().check(&key, rate, rate).map_err(GatewayError::RateLimited)?;
        }
    }
    let stats = snapshot.counters.get(&route.id).map(|c| &c.metrics);
    if let Some(waf) = &route.waf {
        let found = crate::waf::inspect_head(gateway.waf(), waf, req.uri().path(), req.uri().query(), req.headers());
        if let Some(f) = found {
            crate::waf::act(&route, waf, &f, stats, request_id)?;
        }
    }
    // GraphQL routes (crate::graphql): the operation, known before the limits.
    let graphql_body = match &route.graphql {
        Some(policy) => {
            let idle = Duration::from_millis(gateway.config().limits.stream_idle_timeout_ms);
            let inspected = crate::graphql::inspect(&route, policy, &mut req, idle, stats).await?;
            seen.graphql = Some(inspected.operation);
            inspected.body
        }
        None => None,
    };
    let rate =
        crate::traffic::check(gateway, &route, principal.as_ref(), conn, req.headers(), stats, seen.graphql.as_ref())?;
    let client = ClientSide {
        method: req.method().clone(),
        origin: route.cors.as_ref().and_then(|_| req.headers().get(http::header::ORIGIN).cloned()),
        accept_encoding: match snapshot.compressors.contains_key(&route.id) {
            true => req.headers().get_all(http::header::ACCEPT_ENCODING).iter().cloned().collect(),
            false => Vec::new(),
        },
    };
    let cache_policy = snapshot.caches.get(&route.id);
    let pending = match cache_policy {
        Some(policy) => {
            // On an authenticated route each consumer has its own entries:
            // one consumer's answer is never served to another.
            let host = match &principal {
                Some(p) => std::borrow::Cow::Owned(format!(
                    "{}\0consumer={}",
                    checked.host.as_deref().unwrap_or(""),
                    p.consumer
                )),
                None => std::borrow::Cow::Borrowed(checked.host.as_deref().unwrap_or("")),
            };
            let cache = gateway.response_cache();
            let now_ms = gateway.now_ms();
            match crate::cache::before(
                cache,
                policy,
                route.id.as_str(),
                req.method(),
                &host,
                &checked.path,
                req.uri().query(),
                req.headers(),
                now_ms,
            ) {
                crate::cache::Before::Hit(resp) => {
                    return Ok(deliver(resp, snapshot, &route, request_id, conn, rate.as_ref(), &client));
                }
                crate::cache::Before::Forward(p) => Some(p),
            }
        }
        None => None,
    };
    let upstream = snapshot.upstreams.get(&route.upstream).ok_or(GatewayError::NoHealthyUpstream)?;

    let limit = route.max_body_bytes.unwrap_or(DEFAULT_MAX_BODY_BYTES);
    if content_length(req.headers()).is_some_and(|n| n > limit) {
        return Err(GatewayError::BodyTooLarge);
    }
    let client_upgrade = checked.upgrade.then(|| hyper::upgrade::on(&mut req));
    // HTTP/2 bodies need neither Content-Length nor Transfer-Encoding.
    let has_body = !http_body::Body::is_end_stream(req.body());
    let (parts, body) = req.into_parts();
    let idle = Duration::from_millis(gateway.config().limits.stream_idle_timeout_ms);
    // Bodiless reads (GET, HEAD, a preflight…) have nothing to check.
    let reads = matches!(parts.method, Method::GET | Method::HEAD | Method::OPTIONS | Method::DELETE);
    let sends_body = !reads || has_body;
    let waf_body = route.waf.as_ref().filter(|w| w.inspect_body && sends_body);
    let schema = route.request_schema.is_some() && sends_body;
    // A log-mode WAF lets a body it cannot read whole through uninspected.
    let waf_body = waf_body.filter(|w| {
        w.mode == raftgate_model::edge::WafMode::Block
            || content_length(&parts.headers).is_none_or(|n| n <= u64::from(w.body_limit()))
    });
    let login_field = route.login.as_ref().and_then(|l| l.account_field.as_deref()).filter(|_| sends_body);
    let transform_body = crate::transform::request_policy(&route).filter(|_| sends_body);
    // What the upstream's Content-Type becomes when the body is transformed.
    let mut transformed_type = None;
    // The stages that must see the whole body, each with its own bound.
    let whole_body_limits: Vec<u64> = [
        schema.then_some(raftgate_model::route::MAX_VALIDATED_BODY_BYTES),
        waf_body.map(|w| u64::from(w.body_limit())),
        login_field.map(|_| u64::from(raftgate_model::edge::MAX_LOGIN_BODY_BYTES)),
        transform_body.map(|t| t.body_limit()),
    ]
    .into_iter()
    .flatten()
    .collect();
    let (body, body_too_large, has_body, checked_len) = match (whole_body_limits.iter().min(), graphql_body) {
        (Some(&stage_max), early) => {
            let mut bytes = match early {
                // Read whole already (GraphQL): the same bytes, within the same bound.
                Some(b) if b.len() as u64 > limit.min(stage_max) => return Err(GatewayError::BodyTooLarge),
                Some(b) => b,
                None => read_whole(&route, body, limit.min(stage_max), idle).await?,
            };
            if schema {
                check_schema(snapshot, &route, &parts.headers, &bytes)?;
            }
            if let Some(w) = waf_body {
                if let Some(f) = crate::waf::inspect_body(gateway.waf(), &parts.headers, &bytes)? {
                    crate::waf::act(&route, w, &f, stats, request_id)?;
                }
            }
            if let (Some(field), Some(attempt)) = (login_field, seen.login.as_mut()) {
                let ct = parts.headers.get(http::header::CONTENT_TYPE).and_then(|v| v.to_str().ok());
                attempt.account = crate::abuse::account_from_body(field, ct, &bytes);
                if let Some(retry_s) = gateway.login_guard().locked(attempt, gateway.now_ms()) {
                    return Err(GatewayError::LoginLocked(retry_s));
                }
            }
            // Phase 2d: transformation, after every check of the client's body.
            if let Some((out, content_type)) = crate::transform::request(&route, &parts.headers, &bytes).await? {
                bytes = out;
                transformed_type = content_type;
            }
            let len = bytes.len();
            (crate::body::full(bytes), Arc::new(std::sync::atomic::AtomicBool::new(false)), len > 0, Some(len))
        }
        // Read whole already (GraphQL), and no later stage needs it: forward those bytes.
        (None, Some(bytes)) => {
            let len = bytes.len();
            (crate::body::full(bytes), Arc::new(std::sync::atomic::AtomicBool::new(false)), len > 0, Some(len))
        }
        (None, None) => {
            let limited = Limited::new(body, limit);
            let tripped = limited.tripped();
            (IdleTimeout::new(limited, idle).boxed_unsync(), tripped, has_body, None)
        }
    };
    let mut headers = upstream_request(conn, request_id, &route, &parts.headers, &checked, upstream.spec.protocol);
    if let Some(t) = trace {
        t.apply(&mut headers);
    }
    if let Some(len) = checked_len {
        headers.insert(CONTENT_LENGTH, HeaderValue::from(len));
    }
    crate::transform::upstream_headers(&route, &mut headers, transformed_type);
    if let Some(p) = &principal {
        if let Ok(v) = HeaderValue::from_str(p.consumer.as_str()) {
            headers.insert(forwarded::X_CONSUMER_ID, v);
        }
    }
    let path_and_query = match parts.uri.query() {
        Some(q) => format!("{upstream_path}?{q}"),
        None => upstream_path,
    };
    let path_and_query = http::uri::PathAndQuery::try_from(path_and_query).map_err(|_| GatewayError::BadRequest)?;
    let exchange = Exchange {
        method: parts.method,
        path_and_query,
        headers,
        body: Some(body),
        has_body,
        upgrade: checked.upgrade,
        hash_key: hash_key(upstream, &parts.headers, conn),
    };
    let permit = match &upstream.shedder {
        Some(shedder) => {
            let priority = crate::auth::priority(gateway, principal.as_ref());
            Some(shedder.try_acquire(priority).ok_or(GatewayError::Overloaded)?)
        }
        None => None,
    };
    let sent = send(gateway, upstream, &route, exchange).await;
    if let Some(p) = permit {
        p.finish(matches!(&sent, Ok(r) if !matches!(r.status().as_u16(), 502..=504)));
    }
    if body_too_large.load(std::sync::atomic::Ordering::Relaxed) {
        return Err(GatewayError::BodyTooLarge);
    }
    let mut response = sent?;
    if let Some(client_upgrade) = client_upgrade {
        if response.status() == StatusCode::SWITCHING_PROTOCOLS {
            let upstream_upgrade = hyper::upgrade::on(&mut response);
            let idle = Duration::from_millis(gateway.config().limits.stream_idle_timeout_ms);
            tokio::spawn(tunnel(client_upgrade, upstream_upgrade, idle, conn.slot.clone()));
        }
    }
    // Phase 4b: the upstream's body transformed, before the cache and compression.
    response = crate::transform::response(&route, &client.method, response).await?;
    if let (Some(p), Some(policy)) = (pending, cache_policy) {
        response = crate::cache::after(
            p,
            gateway.response_cache(),
            policy,
            &client.method,
            &parts.headers,
            response,
            gateway.epoch(),
        );
    }
    Ok(deliver(response, snapshot, &route, request_id, conn, rate.as_ref(), &client))
}

/// What the response stages need of the request, kept before it is sent.
struct ClientSide {
    method: Method,
    /// The `Origin` of a request to a CORS route.
    origin: Option<HeaderValue>,
    /// `Accept-Encoding` of a request to a compressing route.
    accept_encoding: Vec<HeaderValue>,
}

/// Phases 5 and on, for a response from the upstream or the cache.
fn deliver(
    response: Response<ProxyBody>,
    snapshot: &Snapshot,
    route: &Route,
    request_id: &str,
    conn: &ConnInfo,
    rate: Option<&crate::traffic::RateInfo>,
    client: &ClientSide,
) -> Response<ProxyBody> {
    let mut response = response_filter(response, route, request_id, conn);
    if let Some(info) = rate {
        crate::traffic::set_rate_headers(response.headers_mut(), info);
    }
    if let Some(cors) = &route.cors {
        crate::edge::cors_headers(cors, client.origin.as_ref(), response.headers_mut());
    }
    match snapshot.compressors.get(&route.id) {
        Some(policy) => crate::edge::compress(response, policy, &client.method, &client.accept_encoding),
        None => response,
    }
}

/// A 308 to the same URL over HTTPS (this node's HTTPS port, or 443).
fn redirect_to_https(
    gateway: &Gateway,
    req: &Request<Incoming>,
    checked: &Checked,
    request_id: &str,
) -> Result<Response<ProxyBody>, GatewayError> {
    let host = checked.host.as_deref().ok_or(GatewayError::BadRequest)?;
    let port = match gateway.config().https_port {
        Some(443) | None => String::new(),
        Some(p) => format!(":{p}"),
    };
    let query = req.uri().query().map(|q| format!("?{q}")).unwrap_or_default();
    let location = format!("https://{host}{port}{}{query}", checked.path);
    let mut resp = Response::new(empty());
    *resp.status_mut() = StatusCode::PERMANENT_REDIRECT;
    resp.headers_mut()
        .insert(http::header::LOCATION, HeaderValue::from_str(&location).map_err(|_| GatewayError::BadRequest)?);
    if let Ok(v) = HeaderValue::from_str(request_id) {
        resp.headers_mut().insert(X_REQUEST_ID, v);
    }
    Ok(resp)
}

/// Phase 1: refuse what is too large, ambiguous or malformed; normalise host and path.
fn request_filter(gateway: &Gateway, req: &Request<Incoming>) -> Result<Checked, GatewayError> {
    let limits = &gateway.config().limits;
    let target_len = req.uri().path_and_query().map_or(0, |pq| pq.as_str().len());
    if target_len > limits.max_uri_bytes {
        return Err(GatewayError::UriTooLong);
    }
    let headers = req.headers();
    // hyper enforces a hard ceiling at twice these; within it the answer is ours (JSON).
    if headers.len() > limits.max_headers {
        return Err(GatewayError::HeadersTooLarge);
    }
    let head_bytes: usize = headers.iter().map(|(k, v)| k.as_str().len() + v.len() + 4).sum::<usize>() + target_len;
    if head_bytes > limits.max_header_bytes {
        return Err(GatewayError::HeadersTooLarge);
    }
    // Request smuggling: a length the two ends could read differently.
    if headers.contains_key(TRANSFER_ENCODING) && headers.contains_key(CONTENT_LENGTH) {
        return Err(GatewayError::BadRequest);
    }
    let mut lengths = headers.get_all(CONTENT_LENGTH).iter();
    if let Some(first) = lengths.next() {
        if lengths.any(|v| v != first) || first.to_str().ok().and_then(|s| s.trim().parse::<u64>().ok()).is_none() {
            return Err(GatewayError::BadRequest);
        }
    }
    if req.method() == Method::CONNECT {
        return Err(GatewayError::MethodNotAllowed(raftgate_model::route::Method::DEFAULT_ALLOWED.to_vec()));
    }
    // One host only: two Host headers, or an absolute URI naming another
    // host than the Host header, could be routed by one and served by another.
    let mut host_headers = headers.get_all(HOST).iter();
    let host_header = host_headers.next();
    if host_headers.next().is_some() {
        return Err(GatewayError::BadRequest);
    }
    let raw_host = match (req.uri().authority(), host_header) {
        (Some(a), Some(h)) if !a.as_str().eq_ignore_ascii_case(h.to_str().unwrap_or("")) => {
            return Err(GatewayError::BadRequest)
        }
        (Some(a), _) => Some(HeaderValue::from_str(a.as_str()).map_err(|_| GatewayError::BadRequest)?),
        (None, h) => h.cloned(),
    };
    let host = match &raw_host {
        Some(h) => {
            let text = h.to_str().map_err(|_| GatewayError::BadRequest)?;
            Some(normalize_host(text).ok_or(GatewayError::BadRequest)?)
        }
        None => None,
    };
    let path = normalize_path(req.uri().path()).map_err(|_| GatewayError::BadRequest)?.into_owned();
    // WebSocket is the one protocol upgrade passed through.
    let upgrade = req.version() == Version::HTTP_11
        && headers.get(UPGRADE).is_some_and(|u| u.as_bytes().eq_ignore_ascii_case(b"websocket"))
        && headers
            .get_all(CONNECTION)
            .iter()
            .filter_map(|v| v.to_str().ok())
            .any(|v| v.split(',').any(|t| t.trim().eq_ignore_ascii_case("upgrade")));
    Ok(Checked { host, raw_host, path, upgrade })
}

/// Phase 2: the route for this request and the path its upstream will see.
fn route(
    snapshot: &Snapshot,
    req: &Request<Incoming>,
    checked: &Checked,
    as_method: Option<&Method>,
) -> Result<(Arc<Route>, String), GatewayError> {
    let view = RequestView {
        host: checked.host.as_deref(),
        path: &checked.path,
        query: req.uri().query(),
        method: as_method.unwrap_or(req.method()),
        headers: req.headers(),
    };
    match snapshot.router.find(&view) {
        Match::Found(m) => Ok((m.route.clone(), m.upstream_path(&checked.path))),
        Match::MethodNotAllowed { allowed } => Err(GatewayError::MethodNotAllowed(allowed)),
        Match::NotFound => Err(GatewayError::RouteNotFound),
    }
}

/// Phase 2c: the whole body, read within `max` bytes and the route's
/// timeout (not just each chunk within the idle timeout), for the stages
/// that must see all of it (schema, WAF) before anything is sent upstream.
async fn read_whole(route: &Route, body: Incoming, max: u64, idle: Duration) -> Result<bytes::Bytes, GatewayError> {
    let total = Duration::from_millis(u64::from(route.timeout_ms.unwrap_or(DEFAULT_ROUTE_TIMEOUT_MS)));
    let collect = http_body_util::Limited::new(IdleTimeout::new(body, idle), max as usize).collect();
    match tokio::time::timeout(total, collect).await {
        Ok(Ok(c)) => Ok(c.to_bytes()),
        Ok(Err(e)) if e.is::<http_body_util::LengthLimitError>() => Err(GatewayError::BodyTooLarge),
        Ok(Err(_)) | Err(_) => Err(GatewayError::BadRequest),
    }
}

/// Phase 2c: the body checked against the route's JSON Schema.
fn check_schema(snapshot: &Snapshot, route: &Route, headers: &HeaderMap, bytes: &[u8]) -> Result<(), GatewayError> {
    let validator = snapshot.validators.get(&route.id).ok_or(GatewayError::RouteMisconfigured)?;
    if headers.get_all(http::header::CONTENT_TYPE).iter().count() > 1 {
        return Err(GatewayError::InvalidBody("the request has more than one Content-Type".into()));
    }
    let json = headers.get(http::header::CONTENT_TYPE).and_then(|v| v.to_str().ok()).is_some_and(|ct| {
        let media = ct.split(';').next().unwrap_or("").trim().to_ascii_lowercase();
        media == "application/json" || media.ends_with("+json")
    });
    if !json {
        return Err(GatewayError::InvalidBody("the body must be JSON (Content-Type: application/json)".into()));
    }
    let value = crate::body::parse_json_strict(bytes)
        .map_err(|e| GatewayError::InvalidBody(format!("the body is not valid JSON: {e}")))?;
    if let Some(err) = validator.iter_errors(&value).next() {
        let at = err.instance_path().to_string();
        let mut detail = format!("{}: {err}", if at.is_empty() { "/" } else { at.as_str() });
        if detail.len() > 300 {
            let cut = (0..=300).rev().find(|&i| detail.is_char_boundary(i)).unwrap_or(0);
            detail.truncate(cut);
            detail.push('…');
        }
        return Err(GatewayError::InvalidBody(detail));
    }
    Ok(())
}

/// Phase 3: the headers the upstream receives.
fn upstream_request(
    conn: &ConnInfo,
    request_id: &str,
    route: &Route,
    client_headers: &HeaderMap,
    checked: &Checked,
    protocol: UpstreamProtocol,
) -> HeaderMap {
    let mut headers = client_headers.clone();
    let upgrade = checked.upgrade.then(|| headers.get(UPGRADE).cloned()).flatten();
    let trailers = client_headers.get(TE).is_some_and(|v| v.as_bytes().eq_ignore_ascii_case(b"trailers"));
    forwarded::strip_hop_by_hop(&mut headers);
    forwarded::apply_ops(&mut headers, &route.request_headers);
    forwarded::add_forwarded(&mut headers, &conn.client_addr, conn.proto, checked.host.as_deref());
    forwarded::set_client_cert(&mut headers, conn.client_cert.as_deref());
    // Only the gateway says who the consumer is.
    headers.remove(forwarded::X_CONSUMER_ID);
    if let Ok(v) = HeaderValue::from_str(request_id) {
        headers.insert(X_REQUEST_ID, v);
    }
    headers.remove(HOST);
    if route.preserve_host {
        if let Some(h) = &checked.raw_host {
            headers.insert(HOST, h.clone());
        }
    }
    if let Some(u) = upgrade {
        headers.insert(CONNECTION, HeaderValue::from_static("upgrade"));
        headers.insert(UPGRADE, u);
    }
    if trailers && protocol != UpstreamProtocol::Http1 {
        headers.insert(TE, HeaderValue::from_static("trailers"));
    }
    headers
}

/// What phase 4 sends, possibly several times.
struct Exchange {
    method: Method,
    path_and_query: http::uri::PathAndQuery,
    headers: HeaderMap,
    body: Option<ProxyBody>,
    has_body: bool,
    upgrade: bool,
    hash_key: Option<Vec<u8>>,
}

fn is_idempotent(m: &Method) -> bool {
    matches!(*m, Method::GET | Method::HEAD | Method::OPTIONS | Method::PUT | Method::DELETE)
}

/// Phase 4: pick a target and send, retrying on the next target when allowed.
async fn send(
    gateway: &Gateway,
    upstream: &Arc<UpstreamRuntime>,
    route: &Route,
    mut ex: Exchange,
) -> Result<Response<ProxyBody>, GatewayError> {
    let spec = &upstream.spec;
    let total = Duration::from_millis(route.timeout_ms.unwrap_or(DEFAULT_ROUTE_TIMEOUT_MS).into());
    let deadline = tokio::time::Instant::now() + total;
    // A streamed body cannot be replayed: only bodiless idempotent requests retry.
    let retryable = is_idempotent(&ex.method) && !ex.has_body && !ex.upgrade;
    let max_tries = 1 + if retryable { spec.retries.attempts as usize } else { 0 };
    upstream.retry_budget.record_request(gateway.now_ms());
    let key = HashKey(ex.hash_key.as_deref());
    let mut tried: Vec<usize> = Vec::with_capacity(max_tries);
    let mut last_error = GatewayError::NoHealthyUpstream;
    // The upstream's own 5xx, returned as it is when no retry does better.
    let mut last_response: Option<Response<ProxyBody>> = None;
    for attempt in 0..max_tries {
        let now_ms = gateway.now_ms();
        if attempt > 0 && !upstream.retry_budget.try_acquire_retry(now_ms) {
            break;
        }
        let Some((index, in_flight)) = upstream.balancer.pick(&key, &tried, now_ms) else {
            if attempt == 0 {
                last_error = GatewayError::NoHealthyUpstream;
            }
            break;
        };
        tried.push(index);
        let target = &upstream.balancer.targets()[index];
        let uri = Uri::from_parts({
            let mut parts = http::uri::Parts::default();
            parts.scheme = Some(upstream.scheme.clone());
            parts.authority = Some(upstream.authorities[index].clone());
            parts.path_and_query = Some(ex.path_and_query.clone());
            parts
        })
        .map_err(|_| GatewayError::BadRequest)?;
        let headers = if attempt + 1 < max_tries { ex.headers.clone() } else { std::mem::take(&mut ex.headers) };
        let mut req = Request::new(ex.body.take().unwrap_or_else(empty));
        *req.method_mut() = ex.method.clone();
        *req.uri_mut() = uri;
        *req.headers_mut() = headers;
        *req.version_mut() = if spec.protocol == UpstreamProtocol::Http1 { Version::HTTP_11 } else { Version::HTTP_2 };
        let remaining = deadline.saturating_duration_since(tokio::time::Instant::now());
        let per_try = Duration::from_millis(spec.try_timeout_ms.into()).min(remaining);
        if per_try.is_zero() {
            last_error = GatewayError::UpstreamTimeout;
            break;
        }
        let sent = Instant::now();
        let outcome = tokio::time::timeout(per_try, upstream.client.request(req)).await;
        let latency_us = sent.elapsed().as_micros() as u64;
        match outcome {
            Ok(Ok(resp)) => {
                if !gateway.config().metrics_off {
                    upstream.latency.observe(sent.elapsed());
                }
                let failed = matches!(resp.status().as_u16(), 502..=504);
                let result = if failed { Outcome::Failure } else { Outcome::Success };
                upstream.balancer.record(index, result, latency_us, gateway.now_ms());
                let (parts, body) = resp.into_parts();
                let idle = Duration::from_millis(gateway.config().limits.stream_idle_timeout_ms);
                let body = Tracked::new(IdleTimeout::new(body, idle), in_flight).boxed_unsync();
                let resp = Response::from_parts(parts, body);
                if failed && attempt + 1 < max_tries {
                    last_response = Some(resp);
                    continue;
                }
                return Ok(resp);
            }
            Ok(Err(e)) => {
                if is_body_too_large(&e) {
                    return Err(GatewayError::BodyTooLarge);
                }
                // A request body can fail the try by itself (a client that
                // stops sending); only a failed connect is surely the target's.
                if e.is_connect() || !ex.has_body {
                    upstream.balancer.record(index, Outcome::Failure, latency_us, gateway.now_ms());
                }
                tracing::warn!(upstream = %spec.id, target = %target.addr, error = %error_chain(&e), "upstream try failed");
                last_error = GatewayError::UpstreamUnavailable;
            }
            Err(_) => {
                if !ex.has_body {
                    upstream.balancer.record(index, Outcome::Failure, latency_us, gateway.now_ms());
                }
                tracing::warn!(upstream = %spec.id, target = %target.addr, timeout_ms = per_try.as_millis() as u64, "upstream try timed out");
                last_error = GatewayError::UpstreamTimeout;
            }
        }
    }
    match last_response {
        Some(resp) => Ok(resp),
        None => Err(last_error),
    }
}

fn error_chain(e: &(dyn std::error::Error + 'static)) -> String {
    let mut out = e.to_string();
    let mut cur = e.source();
    while let Some(s) = cur {
        out.push_str(": ");
        out.push_str(&s.to_string());
        cur = s.source();
    }
    out
}

/// Phase 5: what the client receives.
fn response_filter(
    mut resp: Response<ProxyBody>,
    route: &Route,
    request_id: &str,
    conn: &ConnInfo,
) -> Response<ProxyBody> {
    if resp.status() != StatusCode::SWITCHING_PROTOCOLS {
        forwarded::strip_hop_by_hop(resp.headers_mut());
    }
    let headers = resp.headers_mut();
    forwarded::apply_ops(headers, &route.response_headers);
    if let Ok(v) = HeaderValue::from_str(request_id) {
        headers.insert(X_REQUEST_ID, v);
    }
    if let (Some(age), "https") = (route.hsts_max_age_s, conn.proto) {
        if let Ok(v) = HeaderValue::from_str(&format!("max-age={age}")) {
            headers.insert(http::header::STRICT_TRANSPORT_SECURITY, v);
        }
    }
    if let Some(api) = &route.api {
        lifecycle_headers(headers, api);
    }
    resp
}

/// `Deprecation` (RFC 9745) and `Sunset` (RFC 8594) of the route's API.
fn lifecycle_headers(headers: &mut HeaderMap, api: &raftgate_model::route::ApiInfo) {
    if let Some(v) = api.deprecation_header().and_then(|v| HeaderValue::from_str(&v).ok()) {
        headers.insert(http::HeaderName::from_static("deprecation"), v);
    }
    if let Some(v) = api.sunset_header().and_then(|v| HeaderValue::from_str(&v).ok()) {
        headers.insert(http::HeaderName::from_static("sunset"), v);
    }
}

/// Copies bytes both ways between an upgraded client and upstream
/// connection, until either side closes or nothing moves for `idle`. Holds
/// the client connection's slot under `max_connections` meanwhile.
async fn tunnel(
    client: hyper::upgrade::OnUpgrade,
    upstream: hyper::upgrade::OnUpgrade,
    idle: Duration,
    _slot: Option<Arc<tokio::sync::OwnedSemaphorePermit>>,
) {
    let (Ok(client), Ok(upstream)) = tokio::join!(client, upstream) else {
        tracing::debug!("upgrade did not complete on one side");
        return;
    };
    let (mut client_read, mut client_write) = tokio::io::split(TokioIo::new(client));
    let (mut upstream_read, mut upstream_write) = tokio::io::split(TokioIo::new(upstream));
    let started = tokio::time::Instant::now();
    let last = std::sync::atomic::AtomicU64::new(0);
    let _ = tokio::try_join!(
        copy_until_idle(&mut client_read, &mut upstream_write, idle, started, &last),
        copy_until_idle(&mut upstream_read, &mut client_write, idle, started, &last)
    );
}

/// Copies until EOF, an error, or `idle` without a byte in either
/// direction (`last`: milliseconds after `started` of the latest byte).
async fn copy_until_idle(
    from: &mut (dyn tokio::io::AsyncRead + Unpin + Send),
    to: &mut (dyn tokio::io::AsyncWrite + Unpin + Send),
    idle: Duration,
    started: tokio::time::Instant,
    last: &std::sync::atomic::AtomicU64,
) -> std::io::Result<()> {
    use std::sync::atomic::Ordering::Relaxed;
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let mut buf = vec![0u8; 16 * 1024];
    loop {
        let n = match tokio::time::timeout(idle, from.read(&mut buf)).await {
            Ok(read) => read?,
            Err(_) => {
                let quiet = started.elapsed().saturating_sub(Duration::from_millis(last.load(Relaxed)));
                if quiet < idle {
                    continue;
                }
                return Err(std::io::Error::new(std::io::ErrorKind::TimedOut, "tunnel idle"));
            }
        };
        last.store(started.elapsed().as_millis() as u64, Relaxed);
        if n == 0 {
            let _ = to.shutdown().await;
            return Ok(());
        }
        to.write_all(&buf[..n]).await?;
    }
}

fn content_length(headers: &HeaderMap) -> Option<u64> {
    headers.get(CONTENT_LENGTH)?.to_str().ok()?.trim().parse().ok()
}

/// The consistent-hashing key the upstream asks for, if the request has it.
fn hash_key(upstream: &UpstreamRuntime, headers: &HeaderMap, conn: &ConnInfo) -> Option<Vec<u8>> {
    let Balance::Hash(on) = &upstream.spec.balance else { return None };
    match on {
        HashOn::Header(name) => headers.get(name.as_str()).map(|v| v.as_bytes().to_vec()),
        HashOn::Cookie(name) => headers
            .get_all(COOKIE)
            .iter()
            .filter_map(|v| v.to_str().ok())
            .flat_map(|v| v.split(';'))
            .filter_map(|pair| pair.trim().split_once('='))
            .find(|(k, _)| k == name)
            .map(|(_, v)| v.as_bytes().to_vec()),
        HashOn::ClientIp => Some(conn.client.ip().to_canonical().to_string().into_bytes()),
    }
}
