//! The WAF stage: a route's [`WafPolicy`] over the node's compiled
//! detection rules (`raftgate-waf`: SQL injection, XSS, command injection,
//! path traversal).
//!
//! Runs after authorization and before rate limits, on the path and query
//! as the client sent them, every request header but `Authorization` and
//! the route's `skip_headers`, and (with `inspect_body`) JSON, form and
//! text bodies read whole up to the route's WAF body limit. In `block` mode
//! a finding answers 403 `request_blocked`, and a body larger than the
//! limit 413 (what was not read was not inspected); in `log` mode the
//! request goes on and a body above the limit is not inspected. Every
//! finding is logged (target `raftgate::waf`: route, category, rule,
//! where — never the matched content) and counted in
//! `raftgate_waf_findings_total`.

use http::HeaderMap;
use raftgate_model::edge::{WafMode, WafPolicy};
use raftgate_model::Route;
use raftgate_waf::{Finding, Inspector, Location};

use crate::error::GatewayError;
use crate::metrics::RouteMetrics;

/// The detector every route shares (bounds: `raftgate_waf::Limits`, body
/// size capped by the model's `MAX_WAF_BODY_BYTES`).
pub fn inspector() -> Inspector {
    Inspector::new(raftgate_waf::Limits {
        max_body_bytes: raftgate_model::edge::MAX_WAF_BODY_BYTES as usize,
        ..raftgate_waf::Limits::default()
    })
}

/// The first finding in the request head, if any.
pub fn inspect_head(
    inspector: &Inspector,
    policy: &WafPolicy,
    path: &str,
    query: Option<&str>,
    headers: &HeaderMap,
) -> Option<Finding> {
    if let Some(f) = inspector.inspect_path(path) {
        return Some(f);
    }
    if let Some(f) = query.and_then(|q| inspector.inspect_query(q)) {
        return Some(f);
    }
    headers
        .iter()
        .filter(|(name, _)| {
            *name != http::header::AUTHORIZATION
                && !policy.skip_headers.iter().any(|s| name.as_str().eq_ignore_ascii_case(s))
        })
        .find_map(|(name, value)| inspector.inspect_header(name.as_str(), value.as_bytes()))
}

/// The first finding in a body read whole; a body that cannot be parsed
/// within the bounds is an error with a message safe for the client.
pub fn inspect_body(inspector: &Inspector, headers: &HeaderMap, body: &[u8]) -> Result<Option<Finding>, GatewayError> {
    let content_type = headers.get(http::header::CONTENT_TYPE).and_then(|v| v.to_str().ok());
    inspector.inspect_body(content_type, body).map_err(|e| match e {
        raftgate_waf::BodyError::TooLarge { .. } => GatewayError::BodyTooLarge,
        other => GatewayError::InvalidBody(other.to_string()),
    })
}

/// Logs and counts a finding; in block mode, refuses the request.
pub fn act(
    route: &Route,
    policy: &WafPolicy,
    finding: &Finding,
    stats: Option<&RouteMetrics>,
    request_id: &str,
) -> Result<(), GatewayError> {
    let blocked = policy.mode == WafMode::Block;
    if let Some(s) = stats {
        s.record_waf(finding.category, blocked);
    }
    let (part, name) = match &finding.location {
        Location::Path => ("path", ""),
        Location::Query(n) => ("query", n.as_str()),
        Location::Header(n) => ("header", n.as_str()),
        Location::Body(p) => ("body", p.as_str()),
    };
    tracing::warn!(
        target: "raftgate::waf",
        route = %route.id,
        category = finding.category.as_str(),
        rule = finding.rule,
        part,
        name,
        action = if blocked { "blocked" } else { "logged" },
        request_id,
        "WAF finding"
    );
    if blocked {
        Err(GatewayError::RequestBlocked)
    } else {
        Ok(())
    }
}
