//! Phases 2d and 4b: a route's body transformation (`route.transform`).
//!
//! 2d, the request: once the other body stages (schema, WAF, login) have
//! seen the client's JSON, whole, [`request`] edits it and, for an XML
//! upstream, writes it as XML. The upstream gets the new body with its own
//! `Content-Length` and `Content-Type: application/xml`. A request without
//! a body passes unchanged; one with a body must be JSON (`application/json`
//! or `*/*+json`) without a `Content-Encoding` (else 415).
//!
//! 4b, the response, before the cache stores it and before compression:
//! [`response`] reads the upstream's body whole (bounded: more is a 502),
//! converts XML to JSON and applies the edits, and sets `Content-Length`
//! and `Content-Type: application/json`. Passed through unchanged: answers
//! to HEAD, 1xx, 204, 206 and 304, encoded bodies (`Content-Encoding`), and
//! bodies whose type the route does not transform (not XML when it converts,
//! not JSON when it only edits). `Range` is not forwarded on such a route:
//! a part of a document cannot be transformed.
//!
//! Errors have fixed messages (see [`crate::error`]); what was wrong with
//! an upstream's body goes to the node's log, never to the client.

use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use http::header::{
    HeaderValue, CONTENT_ENCODING, CONTENT_LENGTH, CONTENT_TYPE, ETAG, IF_RANGE, RANGE, TRANSFER_ENCODING,
};
use http::{HeaderMap, Method, Response, StatusCode};
use http_body_util::BodyExt;
use raftgate_model::route::DEFAULT_ROUTE_TIMEOUT_MS;
use raftgate_model::transform::TransformPolicy;
use raftgate_model::Route;
use raftgate_transform::{Limits, TransformError};

use crate::body::{full, ProxyBody};
use crate::error::GatewayError;

/// Bodies up to this size are transformed on the request's task; larger
/// ones on the blocking pool, so a big document does not stall a worker.
const INLINE_MAX_BYTES: usize = 256 << 10;

/// The route's policy when it transforms request bodies.
pub(crate) fn request_policy(route: &Route) -> Option<&TransformPolicy> {
    route.transform.as_ref().filter(|t| t.request_side().is_some())
}

/// The route's policy when it transforms response bodies.
pub(crate) fn response_policy(route: &Route) -> Option<&TransformPolicy> {
    route.transform.as_ref().filter(|t| t.response_side().is_some())
}

/// Phase 2d: the body the upstream receives and, when it changed type,
/// its `Content-Type`. `None`: send the client's body as it is.
pub(crate) async fn request(
    route: &Arc<Route>,
    headers: &HeaderMap,
    bytes: &Bytes,
) -> Result<Option<(Bytes, Option<HeaderValue>)>, GatewayError> {
    let Some(side) = request_policy(route).and_then(|p| p.request_side()) else { return Ok(None) };
    if bytes.is_empty() {
        return Ok(None);
    }
    if is_encoded(headers) || !is_json(headers) {
        return Err(GatewayError::UnsupportedMediaType);
    }
    let to_xml = side.json_to_xml.is_some();
    let out = run(route, bytes.clone(), Job::Request).await.map_err(|e| request_error(&e))?;
    let content_type = to_xml.then(|| HeaderValue::from_static("application/xml"));
    Ok(Some((Bytes::from(out), content_type)))
}

/// Phase 3 addition: what a transformed request's headers must say.
pub(crate) fn upstream_headers(route: &Route, headers: &mut HeaderMap, content_type: Option<HeaderValue>) {
    if let Some(ct) = content_type {
        headers.insert(CONTENT_TYPE, ct);
    }
    if response_policy(route).is_some() {
        headers.remove(RANGE);
        headers.remove(IF_RANGE);
    }
}

/// Phase 4b: the upstream's answer, transformed when the route and the
/// answer call for it.
pub(crate) async fn response(
    route: &Arc<Route>,
    method: &Method,
    resp: Response<ProxyBody>,
) -> Result<Response<ProxyBody>, GatewayError> {
    let Some(policy) = response_policy(route) else { return Ok(resp) };
    let Some(side) = policy.response_side() else { return Ok(resp) };
    let status = resp.status();
    let skip = method == Method::HEAD
        || status.is_informational()
        || matches!(status, StatusCode::NO_CONTENT | StatusCode::PARTIAL_CONTENT | StatusCode::NOT_MODIFIED)
        || is_encoded(resp.headers());
    let convert = side.xml_to_json.is_some() && is_xml(resp.headers());
    let edit = !side.json.is_empty() && is_json(resp.headers());
    if skip || !(convert || edit) {
        return Ok(resp);
    }
    let limit = policy.body_limit();
    if declared_length(resp.headers()).is_some_and(|n| n > limit) {
        return Err(GatewayError::UpstreamBodyTooLarge);
    }
    let (mut parts, body) = resp.into_parts();
    let total = Duration::from_millis(u64::from(route.timeout_ms.unwrap_or(DEFAULT_ROUTE_TIMEOUT_MS)));
    let collect = collect_within(body, usize::try_from(limit).unwrap_or(usize::MAX));
    let bytes = match tokio::time::timeout(total, collect).await {
        Ok(read) => read?,
        Err(_) => return Err(GatewayError::UpstreamTimeout),
    };
    let out = match run(route, bytes, Job::Response { convert }).await {
        Ok(out) => out,
        Err(e) => {
            tracing::warn!(route = %route.id, error = %e, "upstream body could not be transformed");
            return Err(response_error(&e, convert));
        }
    };
    let headers = &mut parts.headers;
    headers.remove(TRANSFER_ENCODING);
    headers.insert(CONTENT_LENGTH, HeaderValue::from(out.len()));
    if convert {
        headers.insert(CONTENT_TYPE, HeaderValue::from_static("application/json"));
    }
    // These described the upstream's bytes, not the ones the client gets.
    for name in [ETAG.as_str(), "content-md5", "digest", "content-digest", "repr-digest"] {
        headers.remove(name);
    }
    Ok(Response::from_parts(parts, full(Bytes::from(out))))
}

/// The upstream's body, whole, within `max` bytes.
async fn collect_within(mut body: ProxyBody, max: usize) -> Result<Bytes, GatewayError> {
    let mut buf = Vec::new();
    while let Some(frame) = body.frame().await {
        let frame = frame.map_err(|_| GatewayError::UpstreamUnavailable)?;
        if let Ok(data) = frame.into_data() {
            if buf.len() + data.len() > max {
                return Err(GatewayError::UpstreamBodyTooLarge);
            }
            buf.extend_from_slice(&data);
        }
    }
    Ok(Bytes::from(buf))
}

/// Which side's transformation to run.
#[derive(Clone, Copy)]
enum Job {
    Request,
    /// `convert`: the body is XML to convert (else JSON to edit).
    Response {
        convert: bool,
    },
}

/// Runs `job` on `body`: inline when small, on the blocking pool when large.
async fn run(route: &Arc<Route>, body: Bytes, job: Job) -> Result<Vec<u8>, TransformError> {
    if body.len() <= INLINE_MAX_BYTES {
        return transform(route, &body, job);
    }
    let route = route.clone();
    let task = tokio::task::spawn_blocking(move || transform(&route, &body, job));
    // A transformation does not panic on input; a join error is the pool
    // shutting down, and the request cannot be answered well anyway.
    task.await.unwrap_or(Err(TransformError::OutputTooLarge))
}

fn transform(route: &Route, body: &[u8], job: Job) -> Result<Vec<u8>, TransformError> {
    let Some(policy) = route.transform.as_ref() else { return Ok(body.to_vec()) };
    let limits = Limits::for_policy(policy);
    match job {
        Job::Request => match policy.request_side() {
            Some(side) => match &side.json_to_xml {
                Some(x) => raftgate_transform::json_body_to_xml(body, &side.json, x, &limits),
                None => raftgate_transform::edit_json_body(body, &side.json, &limits),
            },
            None => Ok(body.to_vec()),
        },
        Job::Response { convert } => match policy.response_side() {
            Some(side) => match (&side.xml_to_json, convert) {
                (Some(x), true) => raftgate_transform::xml_body_to_json(body, x, &side.json, &limits),
                _ => raftgate_transform::edit_json_body(body, &side.json, &limits),
            },
            None => Ok(body.to_vec()),
        },
    }
}

fn request_error(e: &TransformError) -> GatewayError {
    match e {
        TransformError::InputTooLarge | TransformError::TooManyNodes => GatewayError::BodyTooLarge,
        TransformError::OutputTooLarge => GatewayError::TransformedBodyTooLarge,
        TransformError::NotMappable(_) => GatewayError::JsonNotXmlMappable,
        _ => GatewayError::InvalidJson,
    }
}

fn response_error(e: &TransformError, from_xml: bool) -> GatewayError {
    match (e.is_bound(), from_xml) {
        (true, _) => GatewayError::UpstreamBodyTooLarge,
        (false, true) => GatewayError::UpstreamInvalidXml,
        (false, false) => GatewayError::UpstreamInvalidJson,
    }
}

fn declared_length(headers: &HeaderMap) -> Option<u64> {
    headers.get(CONTENT_LENGTH)?.to_str().ok()?.trim().parse().ok()
}

fn is_encoded(headers: &HeaderMap) -> bool {
    headers.get_all(CONTENT_ENCODING).iter().any(|v| !v.as_bytes().eq_ignore_ascii_case(b"identity"))
}

/// The media type of the one `Content-Type`, lower-cased; `None` when
/// absent, repeated or not text.
fn media_type(headers: &HeaderMap) -> Option<String> {
    let mut all = headers.get_all(CONTENT_TYPE).iter();
    let (Some(ct), None) = (all.next(), all.next()) else { return None };
    let ct = ct.to_str().ok()?;
    Some(ct.split(';').next().unwrap_or("").trim().to_ascii_lowercase())
}

fn is_json(headers: &HeaderMap) -> bool {
    media_type(headers).is_some_and(|m| m == "application/json" || m.ends_with("+json"))
}

fn is_xml(headers: &HeaderMap) -> bool {
    media_type(headers).is_some_and(|m| m == "application/xml" || m == "text/xml" || m.ends_with("+xml"))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn with_ct(ct: &str) -> HeaderMap {
        let mut h = HeaderMap::new();
        h.insert(CONTENT_TYPE, HeaderValue::from_str(ct).unwrap());
        h
    }

    #[test]
    fn media_types_are_matched_without_parameters_and_case() {
        assert!(is_json(&with_ct("Application/JSON; charset=utf-8")));
        assert!(is_json(&with_ct("application/problem+json")));
        assert!(!is_json(&with_ct("text/plain")));
        assert!(is_xml(&with_ct("text/xml; charset=UTF-8")));
        assert!(is_xml(&with_ct("application/soap+xml")));
        assert!(!is_xml(&with_ct("application/json")));
        let mut two = with_ct("application/json");
        two.append(CONTENT_TYPE, HeaderValue::from_static("application/json"));
        assert!(!is_json(&two));
    }

    #[test]
    fn errors_map_to_stable_gateway_codes() {
        assert_eq!(request_error(&TransformError::InvalidJson("x".into())).code(), "invalid_json");
        assert_eq!(request_error(&TransformError::TooDeep).code(), "invalid_json");
        assert_eq!(request_error(&TransformError::NotMappable("x")).code(), "json_not_xml_mappable");
        assert_eq!(request_error(&TransformError::InputTooLarge).code(), "body_too_large");
        assert_eq!(request_error(&TransformError::OutputTooLarge).code(), "transformed_body_too_large");
        assert_eq!(response_error(&TransformError::Doctype, true).code(), "upstream_invalid_xml");
        assert_eq!(response_error(&TransformError::InvalidJson("x".into()), false).code(), "upstream_invalid_json");
        assert_eq!(response_error(&TransformError::OutputTooLarge, true).code(), "upstream_body_too_large");
    }
}
