//! Phase 2b of a request: authentication and authorization.
//!
//! Runs after routing, before anything is sent upstream, for routes with an
//! `auth` section. It finds the request's credential (a bearer JWT, an API
//! key, or the verified client certificate, in that order of precedence:
//! the first kind present decides), checks it against this node's identity
//! snapshot and revocation index, then the route's consumer, group and
//! scope rules:
//!
//! - no credential and the route is not anonymous, or a credential that is
//!   invalid, expired, revoked, or names an unknown or disabled consumer:
//!   401 with `WWW-Authenticate` and a generic message;
//! - a valid credential the route does not allow: 403;
//! - a valid token that falls short of the route's step-up rule (`acr`,
//!   `amr`, `auth_time`), or any other credential on such a route: 401
//!   `insufficient_user_authentication` (RFC 9470) naming what is missing;
//! - this node's view of the cluster older than the staleness bound (it may
//!   be missing revocations): 503 with `Retry-After`, unless the route opts
//!   to keep serving.
//!
//! Revocation is checked on every request, also when the verified token
//! comes from the cache. Nothing here logs a credential: refusals are
//! logged with the reason and, where known, the key id or consumer.

use std::collections::BTreeMap;
use std::sync::Arc;

use http::header::{HeaderValue, AUTHORIZATION};
use http::HeaderMap;
use raftgate_identity::cache::TokenCache;
use raftgate_identity::jwt::{IssuerSet, VerifiedToken};
use raftgate_identity::revocation::RevocationIndex;
use raftgate_model::identity::{api_key_id, ApiKey, JwtIssuer, RouteAuth, StepUp};
use raftgate_model::{Consumer, ObjectId, Route, Table};

use crate::error::GatewayError;
use crate::gateway::Gateway;
use crate::pipeline::ConnInfo;

/// Longest bearer token read from `Authorization` before any issuer is known.
pub const MAX_BEARER_BYTES: usize = 64 * 1024;
/// Longest API key accepted.
const MAX_API_KEY_BYTES: usize = 256;

/// What the identity stage reads, rebuilt when consumers, keys or issuers change.
pub struct IdentitySnapshot {
    pub revision: u64,
    pub consumers: Table<Consumer>,
    pub api_keys: Table<ApiKey>,
    pub cert_owners: Arc<BTreeMap<String, ObjectId>>,
    pub issuers: IssuerSet,
    /// The issuers as replicated (the fetcher reads their JWKS URLs).
    pub issuer_specs: Table<JwtIssuer>,
    /// Plans, whose limits apply to their consumers.
    pub plans: Table<raftgate_model::traffic::Plan>,
    /// Verified tokens; a new snapshot starts with an empty one, so a
    /// changed issuer never serves a token verified under its old keys.
    pub token_cache: TokenCache,
}

impl IdentitySnapshot {
    pub fn empty() -> Self {
        Self {
            revision: 0,
            consumers: Table::default(),
            api_keys: Table::default(),
            cert_owners: Arc::default(),
            issuers: IssuerSet::new(Vec::new()),
            issuer_specs: Table::default(),
            plans: Table::default(),
            token_cache: TokenCache::new(0),
        }
    }
}

/// Who a request was authenticated as.
#[derive(Clone, Debug)]
pub struct Principal {
    pub consumer: ObjectId,
    /// `jwt`, `api_key` or `mtls`.
    pub method: &'static str,
}

enum Credential<'a> {
    Jwt(&'a str),
    ApiKey(&'a str),
    Certificate,
}

/// Why a credential was refused, for the log line and metrics (never sent).
#[derive(Debug, Clone, Copy)]
enum Refusal {
    Missing,
    Malformed,
    Jwt(&'static str),
    UnknownKey,
    KeyMismatch,
    Expired,
    Revoked,
    UnknownConsumer,
    ConsumerDisabled,
    UnknownCertificate,
    Ambiguous,
}

impl Refusal {
    fn reason(self) -> &'static str {
        match self {
            Refusal::Missing => "missing",
            Refusal::Malformed => "malformed",
            Refusal::Jwt(r) => r,
            Refusal::UnknownKey => "unknown_key",
            Refusal::KeyMismatch => "key_mismatch",
            Refusal::Expired => "expired",
            Refusal::Revoked => "revoked",
            Refusal::UnknownConsumer => "unknown_consumer",
            Refusal::ConsumerDisabled => "consumer_disabled",
            Refusal::UnknownCertificate => "unknown_certificate",
            Refusal::Ambiguous => "ambiguous",
        }
    }
}

/// Authenticates and authorizes a request for `route`. `Ok(None)`: the
/// route has no auth, or lets this credential-less request through.
pub fn authenticate(
    gateway: &Gateway,
    route: &Route,
    headers: &HeaderMap,
    query: Option<&str>,
    conn: &ConnInfo,
    request_id: &str,
) -> Result<Option<Principal>, GatewayError> {
    let Some(auth) = &route.auth else { return Ok(None) };
    if let Some(age) = gateway.stale_view_age_ms() {
        gateway.note_stale(age, route.id.as_str(), auth.serve_when_stale);
        if !auth.serve_when_stale {
            return Err(GatewayError::StaleState);
        }
    }
    let challenge = challenge(auth, false);
    let credential = match find_credential(auth, headers, query, conn) {
        Ok(c) => c,
        Err(refusal) => return Err(refuse(gateway, route, request_id, refusal, None, challenge)),
    };
    let Some(credential) = credential else {
        if auth.anonymous {
            return Ok(None);
        }
        return Err(refuse(gateway, route, request_id, Refusal::Missing, None, challenge));
    };
    let identity = gateway.identity();
    let revocations = gateway.revocations();
    let now_ms = gateway.wall_ms();
    let (principal, scopes) = match credential {
        Credential::Jwt(token) => {
            let verified = verify_jwt(&identity, auth, token, now_ms).map_err(|r| {
                if matches!(r, Refusal::Jwt("unknown_kid")) {
                    gateway.request_jwks_refresh();
                }
                refuse(gateway, route, request_id, r, None, self::challenge(auth, true))
            })?;
            check_token(&identity, &revocations, &verified).map_err(|r| {
                refuse(gateway, route, request_id, r, Some(&verified.consumer), self::challenge(auth, true))
            })?;
            let consumer = ObjectId::parse(verified.consumer.clone()).expect("checked by check_token");
            if let Some(rule) = &auth.step_up {
                step_up(rule, &verified, now_ms / 1_000).inspect_err(|e| {
                    gateway.metrics().auth_failure(e.code());
                    tracing::info!(target: "raftgate::auth", route = %route.id, consumer = %verified.consumer, request_id, "step-up authentication required");
                })?;
            }
            (Principal { consumer, method: "jwt" }, Some(verified.scopes.clone()))
        }
        Credential::ApiKey(key) => {
            let consumer = check_api_key(gateway, &identity, &revocations, key, now_ms)
                .map_err(|(r, id)| refuse(gateway, route, request_id, r, id.as_deref(), challenge.clone()))?;
            no_step_up_proof(gateway, auth)?;
            (Principal { consumer, method: "api_key" }, None)
        }
        Credential::Certificate => {
            let cert = conn.client_cert.as_deref().expect("found by find_credential");
            let consumer = check_certificate(&identity, &revocations, cert)
                .map_err(|r| refuse(gateway, route, request_id, r, None, challenge.clone()))?;
            no_step_up_proof(gateway, auth)?;
            (Principal { consumer, method: "mtls" }, None)
        }
    };
    authorize(&identity, auth, &principal, scopes.as_deref()).inspect_err(|e| {
        gateway.metrics().auth_failure(e.code());
        tracing::info!(target: "raftgate::auth", route = %route.id, consumer = %principal.consumer, request_id, "forbidden");
    })?;
    Ok(Some(principal))
}

/// The load-shedding priority of a request: its consumer's plan's, or normal.
pub fn priority(gateway: &Gateway, principal: Option<&Principal>) -> raftgate_model::traffic::Priority {
    let Some(p) = principal else { return Default::default() };
    let identity = gateway.identity();
    let plan = identity.consumers.get(&p.consumer).and_then(|c| c.spec.plan.clone());
    plan.and_then(|id| identity.plans.get(&id).map(|p| p.spec.priority)).unwrap_or_default()
}

fn refuse(
    gateway: &Gateway,
    route: &Route,
    request_id: &str,
    refusal: Refusal,
    subject: Option<&str>,
    challenge: HeaderValue,
) -> GatewayError {
    gateway.metrics().auth_failure(refusal.reason());
    tracing::info!(
        target: "raftgate::auth",
        route = %route.id,
        reason = refusal.reason(),
        subject = subject.unwrap_or("-"),
        request_id,
        "credential refused"
    );
    GatewayError::Unauthorized(challenge)
}

/// The `WWW-Authenticate` challenge for a route's accepted credentials.
fn challenge(auth: &RouteAuth, invalid_token: bool) -> HeaderValue {
    let mut parts = Vec::new();
    if auth.jwt.is_some() {
        parts.push(if invalid_token {
            r#"Bearer realm="raftgate", error="invalid_token""#.to_string()
        } else {
            r#"Bearer realm="raftgate""#.to_string()
        });
    }
    if let Some(k) = &auth.api_key {
        parts.push(format!(r#"ApiKey realm="raftgate", header="{}""#, k.header));
    }
    if auth.mtls {
        parts.push(r#"Mutual realm="raftgate""#.to_string());
    }
    HeaderValue::from_str(&parts.join(", ")).unwrap_or_else(|_| HeaderValue::from_static(r#"Bearer realm="raftgate""#))
}

/// The first credential kind the route accepts that the request carries.
fn find_credential<'a>(
    auth: &RouteAuth,
    headers: &'a HeaderMap,
    query: Option<&'a str>,
    conn: &ConnInfo,
) -> Result<Option<Credential<'a>>, Refusal> {
    if auth.jwt.is_some() {
        let mut values = headers.get_all(AUTHORIZATION).iter();
        if let Some(v) = values.next() {
            if values.next().is_some() {
                return Err(Refusal::Ambiguous);
            }
            let text = v.to_str().map_err(|_| Refusal::Malformed)?;
            if text.len() > MAX_BEARER_BYTES {
                return Err(Refusal::Jwt("too_large"));
            }
            let (scheme, token) = text.split_once(' ').ok_or(Refusal::Malformed)?;
            if scheme.eq_ignore_ascii_case("bearer") {
                return Ok(Some(Credential::Jwt(token.trim())));
            }
        }
    }
    if let Some(k) = &auth.api_key {
        let mut values = headers.get_all(k.header.as_str()).iter();
        if let Some(v) = values.next() {
            if values.next().is_some() {
                return Err(Refusal::Ambiguous);
            }
            return Ok(Some(Credential::ApiKey(v.to_str().map_err(|_| Refusal::Malformed)?)));
        }
        if let (Some(name), Some(q)) = (&k.query, query) {
            let mut found = q.split('&').filter_map(|p| p.split_once('=')).filter(|(n, _)| n == name);
            if let Some((_, v)) = found.next() {
                if found.next().is_some() {
                    return Err(Refusal::Ambiguous);
                }
                return Ok(Some(Credential::ApiKey(v)));
            }
        }
    }
    if auth.mtls && conn.client_cert.is_some() {
        return Ok(Some(Credential::Certificate));
    }
    Ok(None)
}

fn verify_jwt(
    identity: &IdentitySnapshot,
    auth: &RouteAuth,
    token: &str,
    now_ms: u64,
) -> Result<Arc<VerifiedToken>, Refusal> {
    let now_s = now_ms / 1_000;
    let key = identity.token_cache.key(token);
    let verified = match identity.token_cache.get(key, now_s) {
        Some(hit) => hit,
        None => {
            let fresh = Arc::new(identity.issuers.verify(token, &[], now_s).map_err(|r| Refusal::Jwt(r.reason()))?);
            identity.token_cache.insert(key, fresh.clone(), now_s);
            fresh
        }
    };
    let allowed = auth.jwt.as_ref().map(|j| j.issuers.as_slice()).unwrap_or(&[]);
    if !allowed.is_empty() && !allowed.contains(&verified.issuer) {
        return Err(Refusal::Jwt("issuer_not_allowed"));
    }
    Ok(verified)
}

/// Revocations and the consumer of a verified token.
fn check_token(
    identity: &IdentitySnapshot,
    revocations: &RevocationIndex,
    token: &VerifiedToken,
) -> Result<(), Refusal> {
    if token.jti.as_deref().is_some_and(|jti| revocations.token_revoked(&token.issuer, jti))
        || token.kid.as_deref().is_some_and(|kid| revocations.issuer_key_revoked(&token.issuer, kid))
    {
        return Err(Refusal::Revoked);
    }
    let consumer = ObjectId::parse(token.consumer.clone()).map_err(|_| Refusal::UnknownConsumer)?;
    check_consumer(identity, &consumer)?;
    if revocations.consumer_revoked(&consumer, token.iat_s.map(|s| s.saturating_mul(1_000))) {
        return Err(Refusal::Revoked);
    }
    Ok(())
}

fn check_consumer(identity: &IdentitySnapshot, consumer: &ObjectId) -> Result<(), Refusal> {
    match identity.consumers.get(consumer) {
        None => Err(Refusal::UnknownConsumer),
        Some(c) if !c.spec.enabled => Err(Refusal::ConsumerDisabled),
        Some(_) => Ok(()),
    }
}

fn check_api_key(
    gateway: &Gateway,
    identity: &IdentitySnapshot,
    revocations: &RevocationIndex,
    key: &str,
    now_ms: u64,
) -> Result<ObjectId, (Refusal, Option<String>)> {
    if key.len() > MAX_API_KEY_BYTES {
        return Err((Refusal::Malformed, None));
    }
    let id = api_key_id(key).ok_or((Refusal::Malformed, None))?;
    let with_id = |r: Refusal| (r, Some(format!("key {id}")));
    let stored = identity.api_keys.get(&id).ok_or_else(|| with_id(Refusal::UnknownKey))?;
    if !gateway.key_hasher().matches(key, &stored.spec.hash) {
        return Err(with_id(Refusal::KeyMismatch));
    }
    if stored.spec.expires_ms.is_some_and(|e| e <= now_ms) {
        return Err(with_id(Refusal::Expired));
    }
    let consumer = &stored.spec.consumer;
    if revocations.api_key_revoked(&id) || revocations.consumer_revoked(consumer, Some(stored.spec.created_ms)) {
        return Err(with_id(Refusal::Revoked));
    }
    check_consumer(identity, consumer).map_err(with_id)?;
    Ok(consumer.clone())
}

fn check_certificate(
    identity: &IdentitySnapshot,
    revocations: &RevocationIndex,
    cert: &crate::tls::ClientIdentity,
) -> Result<ObjectId, Refusal> {
    if revocations.certificate_revoked(&cert.fingerprint_sha256) {
        return Err(Refusal::Revoked);
    }
    let consumer =
        cert.identity_keys().find_map(|k| identity.cert_owners.get(&k).cloned()).ok_or(Refusal::UnknownCertificate)?;
    check_consumer(identity, &consumer)?;
    // A certificate's issue time is not tracked: a consumer revocation covers all of them.
    if revocations.consumer_revoked(&consumer, None) {
        return Err(Refusal::Revoked);
    }
    Ok(consumer)
}

/// A route's step-up rule against a verified token (RFC 9470). The refusal
/// names what is missing: `acr_values` and `max_age` as the RFC defines
/// them, a missing `amr` entry in `error_description`.
fn step_up(rule: &StepUp, token: &VerifiedToken, now_s: u64) -> Result<(), GatewayError> {
    let acr_ok = rule.acr_values.is_empty() || token.acr.as_ref().is_some_and(|a| rule.acr_values.contains(a));
    let missing_amr: Vec<&str> = rule.amr.iter().filter(|m| !token.amr.contains(m)).map(String::as_str).collect();
    // An auth_time in the future (beyond a minute of skew) proves nothing.
    let age_ok = rule.max_age_s.is_none_or(|max| {
        token.auth_time_s.is_some_and(|t| t <= now_s.saturating_add(60) && now_s.saturating_sub(t) <= u64::from(max))
    });
    if acr_ok && missing_amr.is_empty() && age_ok {
        return Ok(());
    }
    Err(GatewayError::InsufficientUserAuthentication(step_up_challenge(rule, acr_ok, &missing_amr, age_ok)))
}

/// Requests authenticated by an API key or a certificate say nothing about
/// how their user authenticated: a step-up route refuses them.
fn no_step_up_proof(gateway: &Gateway, auth: &RouteAuth) -> Result<(), GatewayError> {
    match &auth.step_up {
        None => Ok(()),
        Some(rule) => {
            let all_amr: Vec<&str> = rule.amr.iter().map(String::as_str).collect();
            let e = GatewayError::InsufficientUserAuthentication(step_up_challenge(rule, false, &all_amr, false));
            gateway.metrics().auth_failure(e.code());
            Err(e)
        }
    }
}

fn step_up_challenge(rule: &StepUp, acr_ok: bool, missing_amr: &[&str], age_ok: bool) -> HeaderValue {
    let mut v = String::from(r#"Bearer realm="raftgate", error="insufficient_user_authentication""#);
    let mut wanted = Vec::new();
    if !acr_ok && !rule.acr_values.is_empty() {
        v.push_str(&format!(r#", acr_values="{}""#, rule.acr_values.join(" ")));
        wanted.push("an accepted acr".to_string());
    }
    if let (false, Some(max)) = (age_ok, rule.max_age_s) {
        v.push_str(&format!(r#", max_age="{max}""#));
        wanted.push(format!("authentication within {max} s"));
    }
    if !missing_amr.is_empty() {
        wanted.push(format!("amr {}", missing_amr.join(" ")));
    }
    v.push_str(&format!(r#", error_description="required: {}""#, wanted.join(", ")));
    // Values were checked at validation to be visible ASCII without quotes.
    HeaderValue::from_str(&v).unwrap_or_else(|_| {
        HeaderValue::from_static(r#"Bearer realm="raftgate", error="insufficient_user_authentication""#)
    })
}

/// The route's consumer, group and scope rules.
fn authorize(
    identity: &IdentitySnapshot,
    auth: &RouteAuth,
    principal: &Principal,
    scopes: Option<&[String]>,
) -> Result<(), GatewayError> {
    if !auth.consumers.is_empty() && !auth.consumers.contains(&principal.consumer) {
        return Err(GatewayError::Forbidden);
    }
    if !auth.groups.is_empty() {
        let groups = identity.consumers.get(&principal.consumer).map(|c| c.spec.groups.as_slice()).unwrap_or(&[]);
        if !auth.groups.iter().any(|g| groups.contains(g)) {
            return Err(GatewayError::Forbidden);
        }
    }
    if !auth.scopes.is_empty() {
        let held = scopes.unwrap_or(&[]);
        if !auth.scopes.iter().all(|s| held.contains(s)) {
            return Err(GatewayError::InsufficientScope);
        }
    }
    Ok(())
}
