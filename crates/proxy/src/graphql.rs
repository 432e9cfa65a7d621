//! Phase 2b′ of a request to a GraphQL route: the operation, known before
//! the rate limits.
//!
//! Runs after authentication and before [`crate::traffic::check`], so a
//! limit or quota can key on the operation (`graphql_operation`,
//! `graphql_type`). A `POST` body is read whole here, within
//! [`body_limit`], and the same bytes go on to the later body stages
//! (schema, WAF, login) and to the upstream with a `Content-Length`; a
//! `GET` carries its operation in the query string and no body is read.
//! A request the guard refuses gets 400 with a GraphQL-shaped body
//! (`GatewayError::GraphqlRejected`) and is never forwarded.
//!
//! The measured operation goes to the access log (`graphql_operation`,
//! `graphql_type`) and to the route's GraphQL metrics.

use std::time::Duration;

use bytes::Bytes;
use http::header::{CONTENT_LENGTH, CONTENT_TYPE};
use http::{Method, Request};
use http_body_util::BodyExt;
use hyper::body::Incoming;
use raftgate_graphql::{Guard, Operation, Rejection};
use raftgate_model::graphql::GraphqlPolicy;
use raftgate_model::route::{DEFAULT_MAX_BODY_BYTES, DEFAULT_ROUTE_TIMEOUT_MS};
use raftgate_model::Route;

use crate::body::IdleTimeout;
use crate::error::GatewayError;
use crate::metrics::RouteMetrics;

/// What the stage learned: the operation, and the body it read (`POST`).
pub struct Inspected {
    pub operation: Operation,
    /// The request body, read whole; forward it instead of the consumed stream.
    pub body: Option<Bytes>,
}

/// The most body bytes a request to this GraphQL route is read to: the
/// policy's bound and the route's `max_body_bytes`, whichever is smaller.
pub fn body_limit(route: &Route, policy: &GraphqlPolicy) -> u64 {
    policy.max_body_bytes().min(route.max_body_bytes.unwrap_or(DEFAULT_MAX_BODY_BYTES))
}

/// Inspects the request's operation, reading a `POST` body whole.
pub async fn inspect(
    route: &Route,
    policy: &GraphqlPolicy,
    req: &mut Request<Incoming>,
    idle: Duration,
    stats: Option<&RouteMetrics>,
) -> Result<Inspected, GatewayError> {
    let refuse = |r: Rejection| {
        if let Some(s) = stats {
            s.graphql.record_rejection(r);
        }
        GatewayError::GraphqlRejected(r)
    };
    let guard = Guard::new(policy);
    let (inspected, body) = match *req.method() {
        Method::GET => (guard.inspect(raftgate_graphql::Request::Get { query_string: req.uri().query() }), None),
        Method::POST => {
            let bytes = read_body(route, body_limit(route, policy), req, idle).await.map_err(|e| match e {
                BodyError::TooLarge => refuse(Rejection::DocumentTooLarge),
                BodyError::Broken => GatewayError::BadRequest,
            })?;
            let mut types = req.headers().get_all(CONTENT_TYPE).iter();
            let content_type = match (types.next(), types.next()) {
                (Some(v), None) => v.to_str().ok(),
                // None, or two that the upstream could read differently.
                _ => None,
            };
            let request = raftgate_graphql::Request::Post { content_type, body: &bytes };
            (guard.inspect(request), Some(bytes))
        }
        _ => (guard.inspect(raftgate_graphql::Request::Other), None),
    };
    let operation = inspected.map_err(refuse)?;
    if let Some(s) = stats {
        s.graphql.record(&operation);
    }
    Ok(Inspected { operation, body })
}

enum BodyError {
    TooLarge,
    /// The client stopped sending, went idle or broke the stream.
    Broken,
}

/// The whole body within `max` bytes and the route's timeout.
async fn read_body(route: &Route, max: u64, req: &mut Request<Incoming>, idle: Duration) -> Result<Bytes, BodyError> {
    let declared = req.headers().get(CONTENT_LENGTH).and_then(|v| v.to_str().ok()?.trim().parse::<u64>().ok());
    if declared.is_some_and(|n| n > max) {
        return Err(BodyError::TooLarge);
    }
    let total = Duration::from_millis(u64::from(route.timeout_ms.unwrap_or(DEFAULT_ROUTE_TIMEOUT_MS)));
    let limit = usize::try_from(max).unwrap_or(usize::MAX);
    let collect = http_body_util::Limited::new(IdleTimeout::new(req.body_mut(), idle), limit).collect();
    match tokio::time::timeout(total, collect).await {
        Ok(Ok(c)) => Ok(c.to_bytes()),
        Ok(Err(e)) if e.is::<http_body_util::LengthLimitError>() => Err(BodyError::TooLarge),
        Ok(Err(_)) | Err(_) => Err(BodyError::Broken),
    }
}

/// The access-log value of the operation's name (`-`: anonymous).
pub fn log_name(op: &Operation) -> &str {
    op.name.as_deref().unwrap_or("-")
}
