//! Responses the gateway itself generates.
//!
//! Each is a small JSON body with a stable code and the request id, e.g.
//! `{"error":{"code":"route_not_found","message":"no route matches this request","request_id":"…"}}`.
//! The message is fixed per code: never an internal error, a stack trace or
//! an upstream's address (those go to the node's log).
//!
//! | status | code | when |
//! |---|---|---|
//! | 401 | `unauthorized` | no credential, or one that is invalid, expired or revoked (`WWW-Authenticate` names what the route accepts) |
//! | 403 | `forbidden` | a valid credential the route does not allow |
//! | 403 | `insufficient_scope` | a valid token without the route's scopes |
//! | 401 | `insufficient_user_authentication` | a valid token whose `acr`, `amr` or `auth_time` falls short of the route's step-up rule (RFC 9470; `WWW-Authenticate` names what is missing) |
//! | 400 | `bad_request` | malformed or ambiguous request (bad path encoding, Content-Length with Transfer-Encoding, bad header bytes); the connection is closed |
//! | 404 | `route_not_found` | no route matches host, path and predicates |
//! | 405 | `method_not_allowed` | a route matches but not with this method (`Allow` lists the methods) |
//! | 413 | `body_too_large` | request body beyond the route's `max_body_bytes` |
//! | 414 | `uri_too_long` | request target beyond the URI limit |
//! | 431 | `headers_too_large` | header section beyond the byte or count limit |
//! | 502 | `upstream_unavailable` | every try failed to connect or the upstream broke the exchange |
//! | 503 | `no_healthy_upstream` | every target ejected, unhealthy or at its in-flight limit |
//! | 504 | `upstream_timeout` | no response headers within the try or route timeout |
//! | 503 | `overloaded` | the upstream is at its adaptive concurrency limit (`Retry-After: 1`); lower-priority plans first |
//! | 429 | `rate_limited` | a rate limit or quota is exhausted (`Retry-After`, `RateLimit-*`) |
//! | 403 | `ip_forbidden` | the client address or its country is not allowed on this route (or by the node's global rules) |
//! | 403 | `request_blocked` | the WAF found an attack in the request (route in `block` mode) |
//! | 403 | `cors_rejected` | a CORS preflight for an origin, method or header the route does not allow |
//! | 429 | `login_locked` | too many failed logins from this address or for this account (`Retry-After`) |
//! | 400 | `graphql_*` | a GraphQL route refused the operation (`graphql_depth_limit`, `graphql_cost_limit`, …; see docs/graphql.md); the body is GraphQL-shaped: `{"errors":[{"message":"…","extensions":{"code":"GRAPHQL_DEPTH_LIMIT","request_id":"…"}}]}` |
//! | 503 | `stale_state` | an authenticated route while this node's view of the cluster is older than the staleness bound (`Retry-After: 1`) |
//! | 400 | `invalid_json` | a route that transforms request bodies got one that is not JSON (syntax, a key twice, nested deeper than 64) |
//! | 400 | `json_not_xml_mappable` | valid JSON the XML mapping cannot express (a key that is not an XML name, an array in an array, a top-level array…) |
//! | 415 | `unsupported_media_type` | a route that transforms request bodies got one that is not `application/json` or `*+json`, or is `Content-Encoding`-encoded |
//! | 413 | `transformed_body_too_large` | the transformed request body would exceed the route's `transform.max_output_bytes` |
//! | 502 | `upstream_invalid_xml` | a route that converts XML responses got one that is not well-formed XML, or has a DOCTYPE or an undefined entity |
//! | 502 | `upstream_invalid_json` | a route that edits JSON responses got one that is not valid JSON |
//! | 502 | `upstream_body_too_large` | the upstream's body, or its transformation, exceeds the route's `transform` bounds |

use bytes::Bytes;
use http::header::{HeaderValue, ALLOW, CONNECTION, CONTENT_TYPE, RETRY_AFTER, WWW_AUTHENTICATE};
use http::{Response, StatusCode};
use raftgate_model::route::Method;

use crate::body::{full, ProxyBody};

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum GatewayError {
    BadRequest,
    RouteNotFound,
    MethodNotAllowed(Vec<Method>),
    BodyTooLarge,
    UriTooLong,
    HeadersTooLarge,
    UpstreamUnavailable,
    NoHealthyUpstream,
    UpstreamTimeout,
    /// 401 with this `WWW-Authenticate` challenge.
    Unauthorized(HeaderValue),
    Forbidden,
    InsufficientScope,
    /// 401 (RFC 9470) with this `WWW-Authenticate` challenge.
    InsufficientUserAuthentication(HeaderValue),
    StaleState,
    /// 429: a rate limit or quota, with the tightest policy's figures.
    RateLimited(crate::traffic::RateInfo),
    /// 503: the upstream is at its adaptive concurrency limit.
    Overloaded,
    /// 400: the body is not JSON or does not match the route's schema (where and why).
    InvalidBody(String),
    /// 500: the route's request schema did not compile on this node.
    RouteMisconfigured,
    IpForbidden,
    RequestBlocked,
    CorsRejected,
    /// 429: a login lockout, with the seconds left.
    LoginLocked(u64),
    // Body transformation (`crate::transform`).
    InvalidJson,
    JsonNotXmlMappable,
    UnsupportedMediaType,
    TransformedBodyTooLarge,
    UpstreamInvalidXml,
    UpstreamInvalidJson,
    UpstreamBodyTooLarge,
    /// 400: a GraphQL route's guard refused the operation (GraphQL-shaped body).
    GraphqlRejected(raftgate_graphql::Rejection),
}

impl GatewayError {
    pub fn status(&self) -> StatusCode {
        match self {
            GatewayError::BadRequest => StatusCode::BAD_REQUEST,
            GatewayError::RouteNotFound => StatusCode::NOT_FOUND,
            GatewayError::MethodNotAllowed(_) => StatusCode::METHOD_NOT_ALLOWED,
            GatewayError::BodyTooLarge => StatusCode::PAYLOAD_TOO_LARGE,
            GatewayError::UriTooLong => StatusCode::URI_TOO_LONG,
            GatewayError::HeadersTooLarge => StatusCode::REQUEST_HEADER_FIELDS_TOO_LARGE,
            GatewayError::UpstreamUnavailable => StatusCode::BAD_GATEWAY,
            GatewayError::NoHealthyUpstream => StatusCode::SERVICE_UNAVAILABLE,
            GatewayError::UpstreamTimeout => StatusCode::GATEWAY_TIMEOUT,
            GatewayError::Unauthorized(_) | GatewayError::InsufficientUserAuthentication(_) => StatusCode::UNAUTHORIZED,
            GatewayError::Forbidden | GatewayError::InsufficientScope => StatusCode::FORBIDDEN,
            GatewayError::StaleState => StatusCode::SERVICE_UNAVAILABLE,
            GatewayError::RateLimited(_) => StatusCode::TOO_MANY_REQUESTS,
            GatewayError::Overloaded => StatusCode::SERVICE_UNAVAILABLE,
            GatewayError::InvalidBody(_) => StatusCode::BAD_REQUEST,
            GatewayError::RouteMisconfigured => StatusCode::INTERNAL_SERVER_ERROR,
            GatewayError::LoginLocked(_) => StatusCode::TOO_MANY_REQUESTS,
            GatewayError::GraphqlRejected(_) => StatusCode::BAD_REQUEST,
            GatewayError::IpForbidden | GatewayError::RequestBlocked | GatewayError::CorsRejected => {
                StatusCode::FORBIDDEN
            }
            GatewayError::InvalidJson | GatewayError::JsonNotXmlMappable => StatusCode::BAD_REQUEST,
            GatewayError::UnsupportedMediaType => StatusCode::UNSUPPORTED_MEDIA_TYPE,
            GatewayError::TransformedBodyTooLarge => StatusCode::PAYLOAD_TOO_LARGE,
            GatewayError::UpstreamInvalidXml
            | GatewayError::UpstreamInvalidJson
            | GatewayError::UpstreamBodyTooLarge => StatusCode::BAD_GATEWAY,
        }
    }

    pub fn code(&self) -> &'static str {
        match self {
            GatewayError::BadRequest => "bad_request",
            GatewayError::RouteNotFound => "route_not_found",
            GatewayError::MethodNotAllowed(_) => "method_not_allowed",
            GatewayError::BodyTooLarge => "body_too_large",
            GatewayError::UriTooLong => "uri_too_long",
            GatewayError::HeadersTooLarge => "headers_too_large",
            GatewayError::UpstreamUnavailable => "upstream_unavailable",
            GatewayError::NoHealthyUpstream => "no_healthy_upstream",
            GatewayError::UpstreamTimeout => "upstream_timeout",
            GatewayError::Unauthorized(_) => "unauthorized",
            GatewayError::Forbidden => "forbidden",
            GatewayError::InsufficientScope => "insufficient_scope",
            GatewayError::InsufficientUserAuthentication(_) => "insufficient_user_authentication",
            GatewayError::StaleState => "stale_state",
            GatewayError::RateLimited(_) => "rate_limited",
            GatewayError::Overloaded => "overloaded",
            GatewayError::InvalidBody(_) => "invalid_body",
            GatewayError::RouteMisconfigured => "route_misconfigured",
            GatewayError::IpForbidden => "ip_forbidden",
            GatewayError::RequestBlocked => "request_blocked",
            GatewayError::CorsRejected => "cors_rejected",
            GatewayError::LoginLocked(_) => "login_locked",
            GatewayError::InvalidJson => "invalid_json",
            GatewayError::JsonNotXmlMappable => "json_not_xml_mappable",
            GatewayError::UnsupportedMediaType => "unsupported_media_type",
            GatewayError::TransformedBodyTooLarge => "transformed_body_too_large",
            GatewayError::UpstreamInvalidXml => "upstream_invalid_xml",
            GatewayError::UpstreamInvalidJson => "upstream_invalid_json",
            GatewayError::UpstreamBodyTooLarge => "upstream_body_too_large",
            GatewayError::GraphqlRejected(r) => r.gateway_code(),
        }
    }

    fn message(&self) -> &'static str {
        match self {
            GatewayError::BadRequest => "the request is malformed or ambiguous",
            GatewayError::RouteNotFound => "no route matches this request",
            GatewayError::MethodNotAllowed(_) => "this route does not allow the request method",
            GatewayError::BodyTooLarge => "the request body is larger than this route allows",
            GatewayError::UriTooLong => "the request URI is too long",
            GatewayError::HeadersTooLarge => "the request headers are too large",
            GatewayError::UpstreamUnavailable => "the upstream could not be reached",
            GatewayError::NoHealthyUpstream => "no healthy upstream target is available",
            GatewayError::UpstreamTimeout => "the upstream did not answer in time",
            GatewayError::Unauthorized(_) => "valid credentials are required",
            GatewayError::Forbidden => "these credentials may not call this route",
            GatewayError::InsufficientScope => "the token lacks a scope this route requires",
            GatewayError::InsufficientUserAuthentication(_) => {
                "a stronger or more recent authentication is required; see WWW-Authenticate"
            }
            GatewayError::StaleState => "this node cannot confirm credentials right now; retry",
            GatewayError::RateLimited(_) => "too many requests; retry after the time given",
            GatewayError::Overloaded => "the upstream is overloaded; retry shortly",
            GatewayError::InvalidBody(_) => "the request body does not match what this route accepts",
            GatewayError::RouteMisconfigured => "this route cannot check request bodies right now",
            GatewayError::IpForbidden => "requests from this address are not allowed here",
            GatewayError::RequestBlocked => "the request was blocked by the gateway's filters",
            GatewayError::CorsRejected => "this cross-origin request is not allowed",
            GatewayError::LoginLocked(_) => "too many failed logins; retry after the time given",
            GatewayError::InvalidJson => "the request body is not valid JSON",
            GatewayError::JsonNotXmlMappable => "the request body cannot be expressed as XML for this route",
            GatewayError::UnsupportedMediaType => "this route takes JSON request bodies, not encoded",
            GatewayError::TransformedBodyTooLarge => "the request body is too large once transformed",
            GatewayError::UpstreamInvalidXml => "the upstream answered with a body that is not valid XML",
            GatewayError::UpstreamInvalidJson => "the upstream answered with a body that is not valid JSON",
            GatewayError::UpstreamBodyTooLarge => "the upstream's answer is larger than this route transforms",
            GatewayError::GraphqlRejected(r) => r.message(),
        }
    }

    /// The response sent to the client.
    pub fn response(&self, request_id: &str) -> Response<ProxyBody> {
        let message = match self {
            GatewayError::InvalidBody(detail) => detail.as_str(),
            _ => self.message(),
        };
        let body = match self {
            // GraphQL clients read `errors`, as the GraphQL spec shapes a response.
            GatewayError::GraphqlRejected(r) => serde_json::json!({
                "errors": [{ "message": message, "extensions": { "code": r.code(), "request_id": request_id } }]
            }),
            _ => serde_json::json!({
                "error": { "code": self.code(), "message": message, "request_id": request_id }
            }),
        };
        let mut resp = Response::new(full(Bytes::from(body.to_string())));
        *resp.status_mut() = self.status();
        let headers = resp.headers_mut();
        headers.insert(CONTENT_TYPE, HeaderValue::from_static("application/json"));
        if let Ok(v) = HeaderValue::from_str(request_id) {
            headers.insert(crate::forwarded::X_REQUEST_ID, v);
        }
        if let GatewayError::MethodNotAllowed(allowed) = self {
            let list = allowed.iter().map(|m| m.as_str()).collect::<Vec<_>>().join(", ");
            if let Ok(v) = HeaderValue::from_str(&list) {
                headers.insert(ALLOW, v);
            }
        }
        match self {
            GatewayError::Unauthorized(challenge) | GatewayError::InsufficientUserAuthentication(challenge) => {
                headers.insert(WWW_AUTHENTICATE, challenge.clone());
            }
            GatewayError::InsufficientScope => {
                headers.insert(
                    WWW_AUTHENTICATE,
                    HeaderValue::from_static(r#"Bearer realm="raftgate", error="insufficient_scope""#),
                );
            }
            GatewayError::LoginLocked(retry_s) => {
                headers.insert(RETRY_AFTER, HeaderValue::from((*retry_s).max(1)));
            }
            GatewayError::StaleState | GatewayError::Overloaded => {
                headers.insert(RETRY_AFTER, HeaderValue::from_static("1"));
            }
            GatewayError::RateLimited(info) => {
                headers.insert(RETRY_AFTER, HeaderValue::from(info.reset_s.max(1)));
                crate::traffic::set_rate_headers(headers, info);
            }
            _ => {}
        }
        if matches!(self, GatewayError::BadRequest) {
            headers.insert(CONNECTION, HeaderValue::from_static("close"));
        }
        resp
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use http_body_util::BodyExt;

    #[tokio::test]
    async fn a_graphql_rejection_answers_400_with_a_graphql_shaped_body() {
        let e = GatewayError::GraphqlRejected(raftgate_graphql::Rejection::CostLimit);
        assert_eq!(e.code(), "graphql_cost_limit");
        let resp = e.response("rid-1");
        assert_eq!(resp.status(), StatusCode::BAD_REQUEST);
        assert_eq!(resp.headers()[CONTENT_TYPE], "application/json");
        assert!(resp.headers().get(CONNECTION).is_none(), "the connection stays open");
        let body = resp.into_body().collect().await.unwrap().to_bytes();
        let v: serde_json::Value = serde_json::from_slice(&body).unwrap();
        assert_eq!(
            v,
            serde_json::json!({"errors": [{"message": raftgate_graphql::Rejection::CostLimit.message(),
                "extensions": {"code": "GRAPHQL_COST_LIMIT", "request_id": "rid-1"}}]})
        );
    }
}
