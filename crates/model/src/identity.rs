//! Credentials, token issuers, route authorization and revocations.
//!
//! Who may call what, as replicated objects. A consumer (see `consumer`)
//! holds credentials: API keys (stored only as a keyed hash, never the key),
//! client-certificate identities (on the consumer itself), and tokens from a
//! configured JWT issuer whose claim names it. A route's [`RouteAuth`] says
//! which credentials it accepts and who may pass. A [`Revocation`] refuses a
//! credential everywhere: the data plane checks the revocation set on every
//! request, after the signature, also when a verified token is cached.
//!
//! Secrets never enter this state: API keys as an HMAC digest, HMAC secrets
//! of JWT issuers as a reference (`env:NAME` or `file:/path`) each node
//! resolves for itself.

use std::fmt;

use base64::Engine;
use serde::{Deserialize, Serialize};

use crate::route::{FieldError, ObjectId};

/// Most API keys the cluster holds.
pub const MAX_API_KEYS: usize = 1_000_000;
/// Most API keys one consumer holds, expired ones included until pruned.
pub const MAX_KEYS_PER_CONSUMER: usize = 16;
/// Most JWT issuers.
pub const MAX_ISSUERS: usize = 256;
/// Most revocations held at once (token revocations leave when the token
/// would have expired anyway).
pub const MAX_REVOCATIONS: usize = 5_000_000;
/// Largest clock leeway an issuer may allow for `exp` and `nbf`.
pub const MAX_LEEWAY_S: u32 = 60;
pub const DEFAULT_LEEWAY_S: u32 = 30;
pub const DEFAULT_MAX_TOKEN_BYTES: u32 = 8 * 1024;
const MIN_TOKEN_BYTES: u32 = 256;
const MAX_TOKEN_BYTES: u32 = 64 * 1024;
const MAX_JWKS_KEYS: usize = 32;
/// Smallest RSA modulus accepted in a JWKS.
pub const MIN_RSA_BITS: usize = 2048;
const MAX_TEXT_BYTES: usize = 256;
const MAX_CERT_IDENTITIES: usize = 8;
/// Longest a token revocation is kept: a token valid longer than this is
/// refused by the issuer check anyway (`exp` more than a year ahead).
pub const MAX_TOKEN_REVOCATION_MS: u64 = 366 * 24 * 3_600_000;
/// Token revocations are dropped this long after the token's `exp`, which
/// covers the largest leeway.
pub const REVOCATION_EXPIRY_MARGIN_MS: u64 = (MAX_LEEWAY_S as u64 + 60) * 1_000;

fn field_err(field: impl Into<String>, message: impl Into<String>) -> FieldError {
    FieldError { field: field.into(), message: message.into() }
}

/// Printable ASCII or UTF-8 text without control characters, 1 to 256 bytes.
fn check_text(field: &str, s: &str) -> Result<(), FieldError> {
    if s.is_empty() || s.len() > MAX_TEXT_BYTES || s.chars().any(char::is_control) {
        return Err(field_err(field, format!("must be 1 to {MAX_TEXT_BYTES} bytes without control characters")));
    }
    Ok(())
}

/// A SHA-256 sized digest, written as 64 lower-case hex digits.
#[derive(Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(try_from = "String", into = "String")]
pub struct Digest(pub [u8; 32]);

impl Digest {
    pub fn parse(s: &str) -> Result<Self, FieldError> {
        let s = s.strip_prefix("sha256:").unwrap_or(s);
        let bad = || field_err("digest", "must be 64 hex digits (a SHA-256)");
        if s.len() != 64 {
            return Err(bad());
        }
        let mut out = [0u8; 32];
        for (i, pair) in s.as_bytes().chunks(2).enumerate() {
            let hex = std::str::from_utf8(pair).map_err(|_| bad())?;
            out[i] = u8::from_str_radix(hex, 16).map_err(|_| bad())?;
        }
        Ok(Self(out))
    }
}

/// All zeros: the `prev` of the first audit record.
impl Default for Digest {
    fn default() -> Self {
        Self([0; 32])
    }
}

impl fmt::Display for Digest {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        for b in self.0 {
            write!(f, "{b:02x}")?;
        }
        Ok(())
    }
}

impl fmt::Debug for Digest {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "Digest({self})")
    }
}

impl TryFrom<String> for Digest {
    type Error = FieldError;
    fn try_from(s: String) -> Result<Self, FieldError> {
        Self::parse(&s)
    }
}

impl From<Digest> for String {
    fn from(d: Digest) -> String {
        d.to_string()
    }
}

/// An API key as the cluster stores it: the key's public id and an HMAC of
/// the whole key, never the key. Keys read `rgk_<id>.<secret>`.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ApiKey {
    pub id: ObjectId,
    pub consumer: ObjectId,
    /// HMAC-SHA256 of the whole key under the cluster's key-hash secret.
    pub hash: Digest,
    /// Leader time of creation (set by `apply`).
    pub created_ms: u64,
    /// After this leader time (ms since the epoch) the key is refused.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub expires_ms: Option<u64>,
}

/// The prefix of every API key Raftgate issues.
pub const API_KEY_PREFIX: &str = "rgk_";

/// Splits `rgk_<id>.<secret>` into the key id; `None` if it is not shaped so.
pub fn api_key_id(key: &str) -> Option<ObjectId> {
    let rest = key.strip_prefix(API_KEY_PREFIX)?;
    let (id, secret) = rest.split_once('.')?;
    if secret.len() < 32 || secret.len() > 128 {
        return None;
    }
    ObjectId::parse(id).ok()
}

/// Signature algorithms a JWT issuer may allow. `none` does not exist here.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
pub enum JwtAlgorithm {
    RS256,
    RS384,
    RS512,
    PS256,
    PS384,
    PS512,
    ES256,
    ES384,
    EdDSA,
    HS256,
    HS384,
    HS512,
}

impl JwtAlgorithm {
    pub fn is_hmac(self) -> bool {
        matches!(self, JwtAlgorithm::HS256 | JwtAlgorithm::HS384 | JwtAlgorithm::HS512)
    }
    /// The JWK key type (`kty`) this algorithm verifies with.
    pub fn key_type(self) -> &'static str {
        match self {
            JwtAlgorithm::RS256
            | JwtAlgorithm::RS384
            | JwtAlgorithm::RS512
            | JwtAlgorithm::PS256
            | JwtAlgorithm::PS384
            | JwtAlgorithm::PS512 => "RSA",
            JwtAlgorithm::ES256 | JwtAlgorithm::ES384 => "EC",
            JwtAlgorithm::EdDSA => "OKP",
            JwtAlgorithm::HS256 | JwtAlgorithm::HS384 | JwtAlgorithm::HS512 => "oct",
        }
    }
}

/// Where a node reads a secret: `env:NAME` or `file:/absolute/path`. The
/// value itself never enters the replicated state.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(try_from = "String", into = "String")]
pub enum SecretRef {
    Env(String),
    File(String),
}

impl SecretRef {
    pub fn parse(s: &str) -> Result<Self, FieldError> {
        let bad = || field_err("secret", "must be env:NAME or file:/absolute/path");
        if let Some(name) = s.strip_prefix("env:") {
            let ok = !name.is_empty()
                && name.len() <= 128
                && name.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'_')
                && !name.as_bytes()[0].is_ascii_digit();
            return if ok { Ok(SecretRef::Env(name.into())) } else { Err(bad()) };
        }
        if let Some(path) = s.strip_prefix("file:") {
            let ok = path.starts_with('/') && path.len() <= 1024 && !path.chars().any(char::is_control);
            return if ok { Ok(SecretRef::File(path.into())) } else { Err(bad()) };
        }
        Err(bad())
    }
}

impl TryFrom<String> for SecretRef {
    type Error = FieldError;
    fn try_from(s: String) -> Result<Self, FieldError> {
        Self::parse(&s)
    }
}

impl From<SecretRef> for String {
    fn from(s: SecretRef) -> String {
        match s {
            SecretRef::Env(n) => format!("env:{n}"),
            SecretRef::File(p) => format!("file:{p}"),
        }
    }
}

/// One public key of a JWKS (RFC 7517). Members other than these are
/// ignored when decoding and not stored.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Jwk {
    /// `RSA`, `EC` or `OKP`.
    pub kty: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub kid: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub alg: Option<JwtAlgorithm>,
    #[serde(default, rename = "use", skip_serializing_if = "Option::is_none")]
    pub use_: Option<String>,
    /// RSA modulus and exponent (base64url).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub n: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub e: Option<String>,
    /// EC / OKP curve (`P-256`, `P-384`, `Ed25519`) and coordinates (base64url).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub crv: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub x: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub y: Option<String>,
}

fn b64url_len(field: &str, s: &Option<String>) -> Result<usize, FieldError> {
    let s = s.as_deref().ok_or_else(|| field_err(field, "is required"))?;
    let bytes = base64::engine::general_purpose::URL_SAFE_NO_PAD
        .decode(s.trim_end_matches('='))
        .map_err(|_| field_err(field, "must be base64url"))?;
    let leading_zeros = bytes.iter().take_while(|b| **b == 0).count();
    Ok(bytes.len() - leading_zeros)
}

impl Jwk {
    /// Checks the key's shape and strength (RSA at least 2048 bits, known curves).
    pub fn validate(&self, field: &str) -> Result<(), FieldError> {
        if let Some(kid) = &self.kid {
            check_text(&format!("{field}.kid"), kid)?;
        }
        if self.use_.as_deref().is_some_and(|u| u != "sig") {
            return Err(field_err(format!("{field}.use"), "must be \"sig\""));
        }
        if let Some(alg) = self.alg {
            if alg.key_type() != self.kty {
                return Err(field_err(format!("{field}.alg"), format!("{alg:?} does not use a {} key", self.kty)));
            }
        }
        match self.kty.as_str() {
            "RSA" => {
                let bits = b64url_len(&format!("{field}.n"), &self.n)? * 8;
                if bits < MIN_RSA_BITS {
                    return Err(field_err(
                        format!("{field}.n"),
                        format!("RSA keys must have at least {MIN_RSA_BITS} bits, this has {bits}"),
                    ));
                }
                if b64url_len(&format!("{field}.e"), &self.e)? == 0 {
                    return Err(field_err(format!("{field}.e"), "must not be zero"));
                }
            }
            "EC" => {
                let want = match self.crv.as_deref() {
                    Some("P-256") => 32,
                    Some("P-384") => 48,
                    _ => return Err(field_err(format!("{field}.crv"), "must be P-256 or P-384")),
                };
                for (name, v) in [("x", &self.x), ("y", &self.y)] {
                    let len = b64url_len(&format!("{field}.{name}"), v)?;
                    if len > want || len == 0 {
                        return Err(field_err(format!("{field}.{name}"), "is not a point of the curve"));
                    }
                }
            }
            "OKP" => {
                if self.crv.as_deref() != Some("Ed25519") {
                    return Err(field_err(format!("{field}.crv"), "must be Ed25519"));
                }
                if b64url_len(&format!("{field}.x"), &self.x)? == 0 {
                    return Err(field_err(format!("{field}.x"), "must be 32 bytes"));
                }
            }
            other => return Err(field_err(format!("{field}.kty"), format!("must be RSA, EC or OKP, got {other:?}"))),
        }
        Ok(())
    }
}

/// A JSON Web Key Set.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Jwks {
    pub keys: Vec<Jwk>,
}

impl Jwks {
    pub fn validate(&self, field: &str) -> Result<(), FieldError> {
        if self.keys.len() > MAX_JWKS_KEYS {
            return Err(field_err(field, format!("at most {MAX_JWKS_KEYS} keys")));
        }
        for (i, k) in self.keys.iter().enumerate() {
            k.validate(&format!("{field}.keys[{i}]"))?;
            if k.kid.is_some() && self.keys[..i].iter().any(|o| o.kid == k.kid) {
                return Err(field_err(format!("{field}.keys[{i}].kid"), "listed twice"));
            }
        }
        Ok(())
    }
}

fn default_consumer_claim() -> String {
    "sub".into()
}
fn default_leeway() -> u32 {
    DEFAULT_LEEWAY_S
}
fn default_max_token_bytes() -> u32 {
    DEFAULT_MAX_TOKEN_BYTES
}
fn is_default_claim(s: &str) -> bool {
    s == "sub"
}
fn is_default_leeway(v: &u32) -> bool {
    *v == DEFAULT_LEEWAY_S
}
fn is_default_max_token(v: &u32) -> bool {
    *v == DEFAULT_MAX_TOKEN_BYTES
}

/// A JWT issuer the gateway trusts.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct JwtIssuer {
    pub id: ObjectId,
    /// The `iss` claim tokens must carry, exactly.
    pub issuer: String,
    /// If not empty, the token's `aud` (string or array) must name one of these.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub audiences: Vec<String>,
    /// Signature algorithms accepted; the token's `alg` must be one.
    pub algorithms: Vec<JwtAlgorithm>,
    /// Public keys, inline.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub jwks: Option<Jwks>,
    /// Public keys fetched from this URL by each node.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub jwks_url: Option<String>,
    /// HMAC secret (HS256/384/512 only), by reference.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub secret: Option<SecretRef>,
    /// The claim whose value is the consumer id.
    #[serde(default = "default_consumer_claim", skip_serializing_if = "is_default_claim")]
    pub consumer_claim: String,
    /// Clock leeway for `exp` and `nbf`, seconds (at most 60).
    #[serde(default = "default_leeway", skip_serializing_if = "is_default_leeway")]
    pub leeway_s: u32,
    /// Longest token accepted, bytes.
    #[serde(default = "default_max_token_bytes", skip_serializing_if = "is_default_max_token")]
    pub max_token_bytes: u32,
}

impl JwtIssuer {
    pub fn validate(&self) -> Result<(), FieldError> {
        check_text("issuer", &self.issuer)?;
        if self.audiences.len() > 16 {
            return Err(field_err("audiences", "at most 16 entries"));
        }
        for (i, a) in self.audiences.iter().enumerate() {
            check_text(&format!("audiences[{i}]"), a)?;
        }
        if self.algorithms.is_empty() {
            return Err(field_err("algorithms", "name at least one algorithm"));
        }
        for (i, a) in self.algorithms.iter().enumerate() {
            if self.algorithms[..i].contains(a) {
                return Err(field_err(format!("algorithms[{i}]"), "listed twice"));
            }
        }
        let hmac = self.algorithms.iter().filter(|a| a.is_hmac()).count();
        if hmac > 0 && hmac < self.algorithms.len() {
            return Err(field_err(
                "algorithms",
                "HMAC (HS*) and public-key algorithms cannot be mixed in one issuer: a public key must never serve as an HMAC secret",
            ));
        }
        if hmac > 0 {
            if self.secret.is_none() {
                return Err(field_err("secret", "HS* algorithms need a secret reference (env:NAME or file:/path)"));
            }
            if self.jwks.is_some() || self.jwks_url.is_some() {
                return Err(field_err("jwks", "HS* issuers take a secret, not public keys"));
            }
        } else {
            if self.secret.is_some() {
                return Err(field_err("secret", "only HS* algorithms use a secret"));
            }
            if self.jwks.is_none() && self.jwks_url.is_none() {
                return Err(field_err("jwks", "give the public keys inline (jwks) or a jwks_url"));
            }
        }
        if let Some(jwks) = &self.jwks {
            jwks.validate("jwks")?;
        }
        if let Some(url) = &self.jwks_url {
            let ok = (url.starts_with("https://") || url.starts_with("http://"))
                && url.len() <= 2048
                && !url.chars().any(|c| c.is_control() || c == ' ');
            if !ok {
                return Err(field_err("jwks_url", "must be an http:// or https:// URL"));
            }
        }
        check_text("consumer_claim", &self.consumer_claim)?;
        if self.leeway_s > MAX_LEEWAY_S {
            return Err(field_err("leeway_s", format!("must be at most {MAX_LEEWAY_S}")));
        }
        if !(MIN_TOKEN_BYTES..=MAX_TOKEN_BYTES).contains(&self.max_token_bytes) {
            return Err(field_err("max_token_bytes", format!("must be {MIN_TOKEN_BYTES} to {MAX_TOKEN_BYTES}")));
        }
        Ok(())
    }
}

/// A client-certificate identity that maps to a consumer.
#[derive(Clone, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case", deny_unknown_fields)]
pub enum CertIdentity {
    /// SHA-256 of the certificate (DER).
    Sha256(Digest),
    /// A DNS, URI or e-mail subject alternative name, exactly.
    San(String),
    /// The subject's common name (CN), exactly.
    Cn(String),
}

impl CertIdentity {
    /// The key under which the state indexes this identity.
    pub fn key(&self) -> String {
        match self {
            CertIdentity::Sha256(d) => format!("sha256:{d}"),
            CertIdentity::San(s) => format!("san:{s}"),
            CertIdentity::Cn(s) => format!("cn:{s}"),
        }
    }

    pub fn validate(&self, field: &str) -> Result<(), FieldError> {
        match self {
            CertIdentity::Sha256(_) => Ok(()),
            CertIdentity::San(s) | CertIdentity::Cn(s) => check_text(field, s),
        }
    }
}

pub(crate) fn validate_cert_identities(ids: &[CertIdentity]) -> Result<(), FieldError> {
    if ids.len() > MAX_CERT_IDENTITIES {
        return Err(field_err("certificates", format!("at most {MAX_CERT_IDENTITIES} entries")));
    }
    for (i, c) in ids.iter().enumerate() {
        c.validate(&format!("certificates[{i}]"))?;
        if ids[..i].contains(c) {
            return Err(field_err(format!("certificates[{i}]"), "listed twice"));
        }
    }
    Ok(())
}

fn default_key_header() -> String {
    "x-api-key".into()
}

/// Where a route reads API keys.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ApiKeyAuth {
    /// Request header holding the key.
    #[serde(default = "default_key_header")]
    pub header: String,
    /// Query parameter holding the key, if keys may come in the URL.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub query: Option<String>,
}

impl Default for ApiKeyAuth {
    fn default() -> Self {
        Self { header: default_key_header(), query: None }
    }
}

/// Which JWT issuers a route accepts (bearer tokens in `Authorization`).
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct JwtAuth {
    /// Empty: every configured issuer.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub issuers: Vec<ObjectId>,
}

fn is_false(b: &bool) -> bool {
    !*b
}

/// Authentication and authorization of one route. A route without it is
/// open to anyone.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RouteAuth {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub api_key: Option<ApiKeyAuth>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub jwt: Option<JwtAuth>,
    /// Accept the verified client certificate of an mTLS listener.
    #[serde(default, skip_serializing_if = "is_false")]
    pub mtls: bool,
    /// Let requests without any credential through (as no consumer). A
    /// credential that is present must still be valid.
    #[serde(default, skip_serializing_if = "is_false")]
    pub anonymous: bool,
    /// If not empty, only these consumers may call.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub consumers: Vec<ObjectId>,
    /// If not empty, only consumers in one of these groups may call.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub groups: Vec<ObjectId>,
    /// Scopes a token must carry (all of them). Requests authenticated
    /// another way carry no scopes.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub scopes: Vec<String>,
    /// Keep serving when this node's view is older than the staleness bound
    /// (it may then miss recent revocations). Default: fail closed with 503.
    #[serde(default, skip_serializing_if = "is_false")]
    pub serve_when_stale: bool,
    /// Stronger proof than a valid token (RFC 9470): only JWTs can carry it.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub step_up: Option<StepUp>,
}

/// What a token must say about how its user authenticated (RFC 9470,
/// OpenID Connect `acr`, `amr`, `auth_time`). A request that falls short
/// gets 401 `insufficient_user_authentication` naming what is missing.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct StepUp {
    /// If not empty, the token's `acr` must be one of these.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub acr_values: Vec<String>,
    /// Every one of these must be in the token's `amr` array (e.g. `mfa`).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub amr: Vec<String>,
    /// The token's `auth_time` must be at most this many seconds ago.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub max_age_s: Option<u32>,
}

/// Most entries of each step-up list.
pub const MAX_STEP_UP_VALUES: usize = 16;
/// Longest `acr` or `amr` value a step-up rule names.
pub const MAX_STEP_UP_VALUE_BYTES: usize = 128;

impl StepUp {
    fn validate(&self, field: &str) -> Result<(), FieldError> {
        if self.acr_values.is_empty() && self.amr.is_empty() && self.max_age_s.is_none() {
            return Err(field_err(field, "name at least one of acr_values, amr or max_age_s"));
        }
        for (name, list) in [("acr_values", &self.acr_values), ("amr", &self.amr)] {
            if list.len() > MAX_STEP_UP_VALUES {
                return Err(field_err(format!("{field}.{name}"), format!("at most {MAX_STEP_UP_VALUES} entries")));
            }
            for (i, v) in list.iter().enumerate() {
                // No space, quote or backslash: the values go into a WWW-Authenticate parameter.
                if v.is_empty()
                    || v.len() > MAX_STEP_UP_VALUE_BYTES
                    || !v.bytes().all(|b| b.is_ascii_graphic() && b != b'"' && b != b'\\')
                {
                    return Err(field_err(
                        format!("{field}.{name}[{i}]"),
                        format!("must be 1 to {MAX_STEP_UP_VALUE_BYTES} visible ASCII characters without quotes or backslashes"),
                    ));
                }
            }
        }
        if self.max_age_s.is_some_and(|s| !(1..=31_536_000).contains(&s)) {
            return Err(field_err(format!("{field}.max_age_s"), "must be from 1 to 31536000"));
        }
        Ok(())
    }
}

fn is_token_char(b: u8) -> bool {
    b.is_ascii_alphanumeric() || b"!#$%&'*+-.^_`|~:/".contains(&b)
}

impl RouteAuth {
    pub fn validate(&self, field: &str) -> Result<(), FieldError> {
        if self.api_key.is_none() && self.jwt.is_none() && !self.mtls {
            return Err(field_err(field, "accept at least one of api_key, jwt or mtls"));
        }
        if let Some(k) = &self.api_key {
            if !crate::route::is_header_name(&k.header) {
                return Err(field_err(format!("{field}.api_key.header"), "must be a lower-case header name"));
            }
            if matches!(k.header.as_str(), "authorization" | "cookie" | "host") {
                return Err(field_err(format!("{field}.api_key.header"), "must not be authorization, cookie or host"));
            }
            if let Some(q) = &k.query {
                if q.is_empty() || q.len() > 64 || !q.bytes().all(|b| b.is_ascii_alphanumeric() || b"-_.".contains(&b))
                {
                    return Err(field_err(format!("{field}.api_key.query"), "must be 1 to 64 of A-Z a-z 0-9 - _ ."));
                }
            }
        }
        for (name, len) in [("consumers", self.consumers.len()), ("groups", self.groups.len())] {
            if len > 256 {
                return Err(field_err(format!("{field}.{name}"), "at most 256 entries"));
            }
        }
        if self.scopes.len() > 32 {
            return Err(field_err(format!("{field}.scopes"), "at most 32 entries"));
        }
        for (i, s) in self.scopes.iter().enumerate() {
            if s.is_empty() || s.len() > 128 || !s.bytes().all(is_token_char) {
                return Err(field_err(format!("{field}.scopes[{i}]"), "must be 1 to 128 scope characters"));
            }
        }
        if self.anonymous && !(self.consumers.is_empty() && self.groups.is_empty() && self.scopes.is_empty()) {
            return Err(field_err(
                format!("{field}.anonymous"),
                "a route that lets anonymous requests through cannot also restrict consumers, groups or scopes",
            ));
        }
        if let Some(j) = &self.jwt {
            if j.issuers.len() > 32 {
                return Err(field_err(format!("{field}.jwt.issuers"), "at most 32 entries"));
            }
        }
        if let Some(step_up) = &self.step_up {
            if self.jwt.is_none() {
                return Err(field_err(
                    format!("{field}.step_up"),
                    "needs jwt: only tokens say how their user authenticated",
                ));
            }
            if self.anonymous {
                return Err(field_err(
                    format!("{field}.step_up"),
                    "a route that lets anonymous requests through cannot require step-up",
                ));
            }
            step_up.validate(&format!("{field}.step_up"))?;
        }
        Ok(())
    }
}

/// What a revocation refuses.
#[derive(Clone, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(tag = "kind", rename_all = "snake_case", deny_unknown_fields)]
pub enum RevocationTarget {
    /// One token of an issuer, by its `jti`.
    Token { issuer: ObjectId, jti: String },
    /// One API key, by its id.
    ApiKey { id: ObjectId },
    /// Every credential of a consumer issued up to the revocation: its API
    /// keys created until then, its tokens issued (`iat`) until then or
    /// without `iat`, its certificate identities.
    Consumer { id: ObjectId },
    /// A client certificate, by SHA-256 fingerprint.
    Certificate { sha256: Digest },
    /// Every token signed with one of an issuer's keys.
    IssuerKey { issuer: ObjectId, kid: String },
}

impl RevocationTarget {
    /// The key under which the state and the data plane index it. Unique
    /// per target: ids hold no `:`, and the free-text part comes last.
    pub fn key(&self) -> String {
        match self {
            RevocationTarget::Token { issuer, jti } => format!("token:{issuer}:{jti}"),
            RevocationTarget::ApiKey { id } => format!("api_key:{id}"),
            RevocationTarget::Consumer { id } => format!("consumer:{id}"),
            RevocationTarget::Certificate { sha256 } => format!("certificate:{sha256}"),
            RevocationTarget::IssuerKey { issuer, kid } => format!("issuer_key:{issuer}:{kid}"),
        }
    }

    pub fn validate(&self) -> Result<(), FieldError> {
        match self {
            RevocationTarget::Token { jti, .. } => check_text("jti", jti),
            RevocationTarget::IssuerKey { kid, .. } => check_text("kid", kid),
            _ => Ok(()),
        }
    }
}

/// A revocation as stored.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Revocation {
    pub target: RevocationTarget,
    /// Leader time at which it was applied.
    pub revoked_ms: u64,
    /// Token revocations: the token's `exp` (ms); dropped after it.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub until_ms: Option<u64>,
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub reason: String,
}

pub(crate) fn validate_reason(reason: &str) -> Result<(), FieldError> {
    if reason.len() > MAX_TEXT_BYTES || reason.chars().any(char::is_control) {
        return Err(field_err("reason", format!("must be at most {MAX_TEXT_BYTES} bytes without control characters")));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn b64(bytes: &[u8]) -> String {
        base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(bytes)
    }

    fn rsa_jwk(bits: usize) -> Jwk {
        let mut n = vec![0xC1u8; bits / 8];
        n[0] = 0xC1;
        Jwk {
            kty: "RSA".into(),
            kid: Some("k1".into()),
            alg: Some(JwtAlgorithm::RS256),
            use_: None,
            n: Some(b64(&n)),
            e: Some(b64(&[1, 0, 1])),
            crv: None,
            x: None,
            y: None,
        }
    }

    fn issuer(jwks: Option<Jwks>) -> JwtIssuer {
        JwtIssuer {
            id: ObjectId::parse("idp").unwrap(),
            issuer: "https://idp.example.com/".into(),
            audiences: vec!["api".into()],
            algorithms: vec![JwtAlgorithm::RS256],
            jwks,
            jwks_url: None,
            secret: None,
            consumer_claim: "sub".into(),
            leeway_s: 30,
            max_token_bytes: DEFAULT_MAX_TOKEN_BYTES,
        }
    }

    #[test]
    fn rsa_keys_under_2048_bits_are_refused() {
        let ok = issuer(Some(Jwks { keys: vec![rsa_jwk(2048)] }));
        ok.validate().unwrap();
        let weak = issuer(Some(Jwks { keys: vec![rsa_jwk(1024)] }));
        let err = weak.validate().unwrap_err();
        assert_eq!(err.field, "jwks.keys[0].n");
        assert!(err.message.contains("2048"), "{err}");
    }

    #[test]
    fn hmac_and_public_key_algorithms_never_mix() {
        let mut i = issuer(Some(Jwks { keys: vec![rsa_jwk(2048)] }));
        i.algorithms = vec![JwtAlgorithm::RS256, JwtAlgorithm::HS256];
        assert_eq!(i.validate().unwrap_err().field, "algorithms");
        i.algorithms = vec![JwtAlgorithm::HS256];
        assert_eq!(i.validate().unwrap_err().field, "secret");
        i.secret = Some(SecretRef::parse("env:IDP_SECRET").unwrap());
        assert_eq!(i.validate().unwrap_err().field, "jwks", "HS issuers hold no public keys");
        i.jwks = None;
        i.validate().unwrap();
    }

    #[test]
    fn none_is_not_an_algorithm_in_any_casing() {
        for alg in ["none", "None", "NONE", "nOnE"] {
            assert!(serde_json::from_str::<JwtAlgorithm>(&format!("{alg:?}")).is_err(), "{alg}");
        }
    }

    #[test]
    fn secret_references_are_env_or_absolute_files() {
        assert_eq!(SecretRef::parse("env:IDP_1").unwrap(), SecretRef::Env("IDP_1".into()));
        assert_eq!(
            SecretRef::parse("file:/etc/raftgate/hs.key").unwrap(),
            SecretRef::File("/etc/raftgate/hs.key".into())
        );
        for bad in ["IDP", "env:", "env:1X", "env:A-B", "file:relative", "plain-secret-value"] {
            assert!(SecretRef::parse(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn leeway_is_capped_at_60_seconds() {
        let mut i = issuer(Some(Jwks { keys: vec![rsa_jwk(2048)] }));
        i.leeway_s = 61;
        assert_eq!(i.validate().unwrap_err().field, "leeway_s");
    }

    #[test]
    fn api_key_ids_come_from_the_key_shape() {
        let secret = "A".repeat(43);
        assert_eq!(api_key_id(&format!("rgk_k1.{secret}")).unwrap().as_str(), "k1");
        assert!(api_key_id(&format!("rgk_K1.{secret}")).is_none());
        assert!(api_key_id("rgk_k1.short").is_none());
        assert!(api_key_id(&format!("xyz_k1.{secret}")).is_none());
    }

    #[test]
    fn digests_round_trip_as_hex() {
        let d = Digest([0xab; 32]);
        let s = d.to_string();
        assert_eq!(s.len(), 64);
        assert_eq!(Digest::parse(&s).unwrap(), d);
        assert_eq!(Digest::parse(&format!("sha256:{s}")).unwrap(), d);
        assert!(Digest::parse("zz").is_err());
    }

    #[test]
    fn route_auth_needs_a_credential_kind() {
        let auth = RouteAuth { anonymous: true, ..Default::default() };
        assert_eq!(auth.validate("auth").unwrap_err().field, "auth");
        let auth = RouteAuth {
            api_key: Some(ApiKeyAuth { header: "authorization".into(), query: None }),
            ..Default::default()
        };
        assert_eq!(auth.validate("auth").unwrap_err().field, "auth.api_key.header");
    }

    #[test]
    fn a_step_up_rule_needs_tokens_a_requirement_and_header_safe_values() {
        let jwt = || RouteAuth { jwt: Some(JwtAuth::default()), ..Default::default() };
        let with = |step_up: StepUp| RouteAuth { step_up: Some(step_up), ..jwt() };
        let mfa = StepUp { amr: vec!["mfa".into()], ..Default::default() };
        assert_eq!(with(mfa.clone()).validate("auth"), Ok(()));
        let keys_only = RouteAuth { jwt: None, api_key: Some(ApiKeyAuth::default()), ..with(mfa.clone()) };
        assert_eq!(keys_only.validate("auth").unwrap_err().field, "auth.step_up");
        assert_eq!(with(StepUp::default()).validate("auth").unwrap_err().field, "auth.step_up");
        let quoted = StepUp { acr_values: vec!["a\"b".into()], ..Default::default() };
        assert_eq!(with(quoted).validate("auth").unwrap_err().field, "auth.step_up.acr_values[0]");
        let spaced = StepUp { amr: vec!["m fa".into()], ..Default::default() };
        assert_eq!(with(spaced).validate("auth").unwrap_err().field, "auth.step_up.amr[0]");
        let zero = StepUp { max_age_s: Some(0), ..Default::default() };
        assert_eq!(with(zero).validate("auth").unwrap_err().field, "auth.step_up.max_age_s");
    }
}
