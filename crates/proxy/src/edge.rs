//! Edge stages of the pipeline that need no upstream: IP and country
//! rules, CORS, and response compression. Each takes the request context
//! and continues, answers, or rewrites the response.
//!
//! - [`check_ip`]: the node's global rules, then the route's (403
//!   `ip_forbidden`). The client address is the one rate limits see
//!   (through trusted proxies). Country rules use the node's GeoIP
//!   database; without one, or for an address it does not know, they fail
//!   closed unless the route sets `unknown_country_allowed`.
//! - [`preflight`] / [`cors_headers`]: CORS preflights are answered here
//!   (204, never forwarded); actual responses get `Access-Control-*`.
//! - [`compress`]: gzip, br or zstd by `Accept-Encoding`, streamed.

use std::net::IpAddr;
use std::sync::Arc;

use http::header::{self, HeaderValue};
use http::{HeaderMap, Method, Response, StatusCode};
use http_body_util::BodyExt;
use raftgate_model::edge::{ContentCoding, Cors, IpRules};
use raftgate_model::Route;

use crate::body::{empty, ProxyBody};
use crate::error::GatewayError;

/// The node's GeoIP database, if it loaded.
pub type Geo = Option<Arc<raftgate_geoip::GeoDb>>;

/// Whether `ip` passes `rules`.
pub fn ip_allowed(rules: &IpRules, ip: IpAddr, geo: &Geo) -> bool {
    if rules.deny.iter().any(|c| c.contains(ip)) {
        return false;
    }
    if !rules.allow.is_empty() && !rules.allow.iter().any(|c| c.contains(ip)) {
        return false;
    }
    if !rules.uses_countries() {
        return true;
    }
    let country = geo.as_ref().and_then(|db| db.country(ip)).map(|c| c.letters());
    let Some(country) = country else { return rules.unknown_country_allowed };
    if rules.deny_countries.iter().any(|c| c.letters() == country) {
        return false;
    }
    rules.allow_countries.is_empty() || rules.allow_countries.iter().any(|c| c.letters() == country)
}

/// The global rules, then the route's.
pub fn check_ip(global: Option<&IpRules>, route: &Route, ip: IpAddr, geo: &Geo) -> Result<(), GatewayError> {
    for rules in global.into_iter().chain(route.ip.as_ref()) {
        if !ip_allowed(rules, ip, geo) {
            return Err(GatewayError::IpForbidden);
        }
    }
    Ok(())
}

/// The method a CORS preflight asks about (an `OPTIONS` request with
/// `Origin` and `Access-Control-Request-Method`).
pub fn preflight_method(method: &Method, headers: &HeaderMap) -> Option<Method> {
    if method != Method::OPTIONS || !headers.contains_key(header::ORIGIN) {
        return None;
    }
    let m = headers.get(header::ACCESS_CONTROL_REQUEST_METHOD)?;
    Method::from_bytes(m.as_bytes()).ok()
}

fn origin(headers: &HeaderMap) -> Option<&str> {
    let mut all = headers.get_all(header::ORIGIN).iter();
    match (all.next(), all.next()) {
        (Some(o), None) => o.to_str().ok(),
        _ => None,
    }
}

fn allowed_methods<'a>(cors: &'a Cors, route: &'a Route) -> &'a [raftgate_model::route::Method] {
    if cors.allow_methods.is_empty() {
        route.allowed_methods()
    } else {
        &cors.allow_methods
    }
}

/// Answers a CORS preflight for `route` (which has `cors`): 204 with the
/// `Access-Control-Allow-*` headers, or 403 `cors_rejected` naming nothing
/// when the origin, method or a requested header is not allowed.
pub fn preflight(
    route: &Route,
    cors: &Cors,
    headers: &HeaderMap,
    asked: &Method,
) -> Result<Response<ProxyBody>, GatewayError> {
    let origin = origin(headers).filter(|o| cors.allows_origin(o)).ok_or(GatewayError::CorsRejected)?;
    let methods = allowed_methods(cors, route);
    if !methods.iter().any(|m| m.as_str() == asked.as_str()) {
        return Err(GatewayError::CorsRejected);
    }
    let requested: Vec<String> = headers
        .get_all(header::ACCESS_CONTROL_REQUEST_HEADERS)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(','))
        .map(|h| h.trim().to_ascii_lowercase())
        .filter(|h| !h.is_empty())
        .take(raftgate_model::edge::MAX_EDGE_LIST)
        .collect();
    if requested.iter().any(|h| http::HeaderName::from_bytes(h.as_bytes()).is_err()) {
        return Err(GatewayError::CorsRejected);
    }
    if !cors.allow_headers.is_empty() && !requested.iter().all(|h| cors.allow_headers.contains(h)) {
        return Err(GatewayError::CorsRejected);
    }
    let mut resp = Response::new(empty());
    *resp.status_mut() = StatusCode::NO_CONTENT;
    let h = resp.headers_mut();
    allow_origin(h, cors, origin);
    let list = methods.iter().map(|m| m.as_str()).collect::<Vec<_>>().join(", ");
    h.insert(header::ACCESS_CONTROL_ALLOW_METHODS, HeaderValue::from_str(&list).map_err(|_| GatewayError::BadRequest)?);
    let allow_headers = if cors.allow_headers.is_empty() { requested } else { cors.allow_headers.clone() };
    if !allow_headers.is_empty() {
        let v = HeaderValue::from_str(&allow_headers.join(", ")).map_err(|_| GatewayError::BadRequest)?;
        h.insert(header::ACCESS_CONTROL_ALLOW_HEADERS, v);
    }
    if let Some(age) = cors.max_age_s {
        h.insert(header::ACCESS_CONTROL_MAX_AGE, HeaderValue::from(age));
    }
    h.append(
        header::VARY,
        HeaderValue::from_static("Origin, Access-Control-Request-Method, Access-Control-Request-Headers"),
    );
    Ok(resp)
}

fn allow_origin(h: &mut HeaderMap, cors: &Cors, origin: &str) {
    if cors.any_origin() && !cors.allow_credentials {
        h.insert(header::ACCESS_CONTROL_ALLOW_ORIGIN, HeaderValue::from_static("*"));
    } else if let Ok(v) = HeaderValue::from_str(origin) {
        h.insert(header::ACCESS_CONTROL_ALLOW_ORIGIN, v);
        h.append(header::VARY, HeaderValue::from_static("Origin"));
    }
    if cors.allow_credentials {
        h.insert(header::ACCESS_CONTROL_ALLOW_CREDENTIALS, HeaderValue::from_static("true"));
    }
}

/// CORS headers on an actual (non-preflight) response, when the request's
/// origin is allowed; the upstream's own `Access-Control-*` are replaced.
pub fn cors_headers(cors: &Cors, request_origin: Option<&HeaderValue>, response: &mut HeaderMap) {
    let Some(origin) = request_origin.and_then(|o| o.to_str().ok()).filter(|o| cors.allows_origin(o)) else {
        return;
    };
    for name in [
        header::ACCESS_CONTROL_ALLOW_ORIGIN,
        header::ACCESS_CONTROL_ALLOW_CREDENTIALS,
        header::ACCESS_CONTROL_EXPOSE_HEADERS,
    ] {
        response.remove(name);
    }
    allow_origin(response, cors, origin);
    if !cors.expose_headers.is_empty() {
        if let Ok(v) = HeaderValue::from_str(&cors.expose_headers.join(", ")) {
            response.insert(header::ACCESS_CONTROL_EXPOSE_HEADERS, v);
        }
    }
}

/// The compression policy of a route, compiled once per snapshot.
pub fn compression_policy(p: &raftgate_model::edge::CompressionPolicy) -> raftgate_compress::Policy {
    use raftgate_compress::Encoding;
    let mut policy = raftgate_compress::Policy::default();
    if !p.encodings.is_empty() {
        policy.encodings = p
            .encodings
            .iter()
            .map(|e| match e {
                ContentCoding::Zstd => Encoding::Zstd,
                ContentCoding::Brotli => Encoding::Brotli,
                ContentCoding::Gzip => Encoding::Gzip,
            })
            .collect();
    }
    if let Some(m) = p.min_bytes {
        policy.min_bytes = u64::from(m);
    }
    if !p.content_types.is_empty() {
        policy.content_types = p.content_types.clone();
    }
    policy
}

/// Compresses the response when the policy, the response and the
/// client's `Accept-Encoding` all allow it.
pub fn compress(
    resp: Response<ProxyBody>,
    policy: &raftgate_compress::Policy,
    method: &Method,
    accept_encoding: &[HeaderValue],
) -> Response<ProxyBody> {
    if !raftgate_compress::should_compress(resp.status(), method, resp.headers(), policy) {
        return resp;
    }
    match raftgate_compress::negotiate(accept_encoding.iter(), policy) {
        Some(enc) => raftgate_compress::compress_response(resp, enc, policy.level).map(|b| b.boxed_unsync()),
        None => {
            let mut resp = resp;
            raftgate_compress::add_vary_accept_encoding(resp.headers_mut());
            resp
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use raftgate_model::edge::{Cidr, CountryCode};

    fn cidrs(list: &[&str]) -> Vec<Cidr> {
        list.iter().map(|s| s.parse().unwrap()).collect()
    }

    #[test]
    fn deny_wins_over_allow_and_an_allow_list_admits_only_itself() {
        let rules = IpRules { allow: cidrs(&["10.0.0.0/8"]), deny: cidrs(&["10.9.0.0/16"]), ..Default::default() };
        assert!(ip_allowed(&rules, "10.1.2.3".parse().unwrap(), &None));
        assert!(!ip_allowed(&rules, "10.9.2.3".parse().unwrap(), &None));
        assert!(!ip_allowed(&rules, "192.0.2.1".parse().unwrap(), &None));
    }

    #[test]
    fn country_rules_use_the_database_and_fail_closed_without_an_answer() {
        use raftgate_geoip::{writer, Country, GeoDb};
        let de: Country = "DE".parse().unwrap();
        let fr: Country = "FR".parse().unwrap();
        let bytes = writer::build(
            &[("192.0.2.0".parse().unwrap(), 24, de), ("198.51.100.0".parse().unwrap(), 24, fr)],
            "Test-Country",
        )
        .unwrap();
        let geo: Geo = Some(Arc::new(GeoDb::from_bytes(bytes).unwrap()));
        let only_de = IpRules { allow_countries: vec!["DE".parse::<CountryCode>().unwrap()], ..Default::default() };
        assert!(ip_allowed(&only_de, "192.0.2.7".parse().unwrap(), &geo));
        assert!(!ip_allowed(&only_de, "198.51.100.7".parse().unwrap(), &geo));
        // Unknown to the database, or no database at all: refused.
        assert!(!ip_allowed(&only_de, "203.0.113.1".parse().unwrap(), &geo));
        assert!(!ip_allowed(&only_de, "192.0.2.7".parse().unwrap(), &None));
        let lenient = IpRules { unknown_country_allowed: true, ..only_de.clone() };
        assert!(ip_allowed(&lenient, "203.0.113.1".parse().unwrap(), &geo));
        let no_fr = IpRules { deny_countries: vec!["FR".parse().unwrap()], ..Default::default() };
        assert!(!ip_allowed(&no_fr, "198.51.100.7".parse().unwrap(), &geo));
        assert!(ip_allowed(&no_fr, "192.0.2.7".parse().unwrap(), &geo));
    }
}
