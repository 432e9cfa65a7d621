//! Bearer-token (JWT, RFC 7519) verification for the data plane.
//!
//! The data plane builds one [`IssuerVerifier`] per configured
//! [`JwtIssuer`] whenever the applied state changes (and again when an
//! issuer's JWKS is fetched), gathers them in an [`IssuerSet`], and calls
//! [`IssuerSet::verify`] on every request that carries a bearer token. The
//! request path is synchronous, does no IO and reads no clock: the caller
//! passes `now_s`. Every refusal is a [`JwtRejection`] whose
//! [`reason`](JwtRejection::reason) is a stable label for metrics and logs.
//!
//! What is refused, in order: tokens larger than the issuer allows; anything
//! but three strict base64url segments whose header and payload are JSON
//! objects (duplicate registered members included); key-carrying or
//! key-locating headers (`jku`, `x5u`, `jwk`, `x5c`) and any `crit`; an
//! `iss` naming no (allowed) issuer; an `alg` outside the issuer's allowlist
//! (`none` is not an algorithm here); a key that cannot be chosen by `kid`
//! or does not serve the `alg`; a bad signature (an ECDSA `r` or `s` of zero
//! included); then the claims: `exp` (required), `nbf`, `iat`, `aud`, the
//! consumer claim, `jti` and the scopes. HMAC issuers hold only a secret and
//! public-key issuers only public keys, so a public key can never serve as
//! an HMAC secret.

use std::collections::HashMap;
use std::fmt;
use std::marker::PhantomData;
use std::sync::Arc;

use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use base64::Engine;
use jsonwebtoken::crypto::CryptoProvider;
use jsonwebtoken::{Algorithm, DecodingKey};
use raftgate_model::identity::{Jwk, JwtAlgorithm, JwtIssuer, MAX_TOKEN_REVOCATION_MS, MIN_RSA_BITS};
use raftgate_model::{FieldError, ObjectId};
use serde::de::{self, DeserializeSeed, Deserializer, IgnoredAny, MapAccess, SeqAccess, Visitor};
use serde::Deserialize;

/// Longest token looked at before its issuer is known (no issuer may allow
/// more than this either).
pub const ABSOLUTE_MAX_TOKEN_BYTES: usize = 64 * 1024;
/// Largest JWKS document [`IssuerVerifier::with_fetched_jwks`] parses.
pub const MAX_JWKS_DOCUMENT_BYTES: usize = 256 * 1024;
/// Most usable public keys one issuer holds.
pub const MAX_KEYS: usize = 32;
/// Largest RSA modulus accepted (bits); larger ones only cost CPU.
pub const MAX_RSA_BITS: usize = 8192;
/// Smallest RSA public exponent accepted.
const MIN_RSA_EXPONENT: u64 = 3;
/// Largest RSA public exponent accepted (larger ones are a CPU sink).
const MAX_RSA_EXPONENT: u64 = (1 << 33) - 1;
/// Bytes of one P-256 coordinate.
const P256_COORDINATE_BYTES: usize = 32;
/// Bytes of one P-384 coordinate.
const P384_COORDINATE_BYTES: usize = 48;
/// Bytes of an Ed25519 public key.
const ED25519_KEY_BYTES: usize = 32;
/// Shortest HMAC secrets (RFC 7518 §3.2: at least the hash output size).
const MIN_HS256_SECRET_BYTES: usize = 32;
const MIN_HS384_SECRET_BYTES: usize = 48;
const MIN_HS512_SECRET_BYTES: usize = 64;
/// Furthest ahead a token's `exp` may lie: a token revocation is kept this
/// long, so a longer-lived token could outlive its revocation.
pub const MAX_EXP_AHEAD_S: u64 = MAX_TOKEN_REVOCATION_MS / 1000;
/// Longest consumer claim value.
pub const MAX_CONSUMER_BYTES: usize = 256;
/// Longest `jti` (a longer one could not be revoked: revocations hold at
/// most this much).
pub const MAX_JTI_BYTES: usize = 256;
/// Most scopes a token carries, from each of `scope` and `scp` and in all.
pub const MAX_SCOPES: usize = 128;
/// Most items of a claim array (`aud`, `scp`).
const MAX_CLAIM_ARRAY_ITEMS: usize = MAX_SCOPES;

/// Why a token was refused. Copy, small, and with a stable label.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, thiserror::Error)]
pub enum JwtRejection {
    /// Not three strict base64url segments; header or payload not a JSON
    /// object; a registered header or claim given twice; `alg`/`kid` not a
    /// string.
    #[error("malformed token")]
    Malformed,
    /// Longer than the issuer's `max_token_bytes` (or than
    /// [`ABSOLUTE_MAX_TOKEN_BYTES`] before the issuer is known).
    #[error("token too large")]
    TooLarge,
    /// `iss` is missing, not a string, or names no configured issuer.
    #[error("unknown issuer")]
    UnknownIssuer,
    /// `iss` is not the issuer this verifier is for.
    #[error("wrong issuer")]
    WrongIssuer,
    /// The issuer is configured but the route does not accept it.
    #[error("issuer not allowed here")]
    IssuerNotAllowed,
    /// `alg` is not in the issuer's allowlist (`none`, in any casing, never is).
    #[error("algorithm not allowed")]
    AlgorithmNotAllowed,
    /// The header carries `jku`, `x5u`, `jwk` or `x5c`.
    #[error("forbidden header")]
    ForbiddenHeader,
    /// The header carries `crit`: no extension is understood.
    #[error("critical header extension not understood")]
    CriticalHeader,
    /// No key has the token's `kid` (or, without `kid`, no key serves the
    /// `alg`). A JWKS refresh may help.
    #[error("unknown key id")]
    UnknownKid,
    /// No `kid`, and several keys serve the `alg`.
    #[error("token names no key and several fit")]
    AmbiguousKey,
    /// The key named by `kid` does not serve the token's `alg` (other key
    /// type or curve, or a JWK `alg` pinned to another algorithm).
    #[error("key does not serve the algorithm")]
    KeyAlgorithmMismatch,
    /// The signature is missing or does not verify.
    #[error("bad signature")]
    BadSignature,
    /// No `exp` claim.
    #[error("missing exp")]
    MissingExp,
    /// `exp` is past, beyond the leeway.
    #[error("token expired")]
    Expired,
    /// `exp` lies more than [`MAX_EXP_AHEAD_S`] ahead.
    #[error("token expiry too far ahead")]
    ExpiryTooFar,
    /// `nbf` (or `iat`) lies ahead, beyond the leeway.
    #[error("token not yet valid")]
    NotYetValid,
    /// The issuer has audiences and the token's `aud` names none of them
    /// (or is missing).
    #[error("wrong audience")]
    WrongAudience,
    /// A claim has the wrong type or is out of bounds: `exp`/`nbf`/`iat` not
    /// a non-negative number, `aud` not a string or array of strings, `jti`
    /// not 1 to 256 bytes of text, `scope`/`scp` misshapen or too many.
    #[error("invalid claim")]
    InvalidClaim,
    /// The issuer's consumer claim is absent.
    #[error("missing consumer claim")]
    MissingConsumerClaim,
    /// The consumer claim is not a string of 1 to 256 bytes without control
    /// characters.
    #[error("invalid consumer claim")]
    InvalidConsumerClaim,
}

impl JwtRejection {
    /// Every reason, for registering metrics up front.
    pub const ALL: [JwtRejection; 20] = [
        JwtRejection::Malformed,
        JwtRejection::TooLarge,
        JwtRejection::UnknownIssuer,
        JwtRejection::WrongIssuer,
        JwtRejection::IssuerNotAllowed,
        JwtRejection::AlgorithmNotAllowed,
        JwtRejection::ForbiddenHeader,
        JwtRejection::CriticalHeader,
        JwtRejection::UnknownKid,
        JwtRejection::AmbiguousKey,
        JwtRejection::KeyAlgorithmMismatch,
        JwtRejection::BadSignature,
        JwtRejection::MissingExp,
        JwtRejection::Expired,
        JwtRejection::ExpiryTooFar,
        JwtRejection::NotYetValid,
        JwtRejection::WrongAudience,
        JwtRejection::InvalidClaim,
        JwtRejection::MissingConsumerClaim,
        JwtRejection::InvalidConsumerClaim,
    ];

    /// A stable snake_case label for metrics and logs.
    pub fn reason(&self) -> &'static str {
        match self {
            JwtRejection::Malformed => "malformed",
            JwtRejection::TooLarge => "too_large",
            JwtRejection::UnknownIssuer => "unknown_issuer",
            JwtRejection::WrongIssuer => "wrong_issuer",
            JwtRejection::IssuerNotAllowed => "issuer_not_allowed",
            JwtRejection::AlgorithmNotAllowed => "algorithm_not_allowed",
            JwtRejection::ForbiddenHeader => "forbidden_header",
            JwtRejection::CriticalHeader => "critical_header",
            JwtRejection::UnknownKid => "unknown_kid",
            JwtRejection::AmbiguousKey => "ambiguous_key",
            JwtRejection::KeyAlgorithmMismatch => "key_algorithm_mismatch",
            JwtRejection::BadSignature => "bad_signature",
            JwtRejection::MissingExp => "missing_exp",
            JwtRejection::Expired => "expired",
            JwtRejection::ExpiryTooFar => "expiry_too_far",
            JwtRejection::NotYetValid => "not_yet_valid",
            JwtRejection::WrongAudience => "wrong_audience",
            JwtRejection::InvalidClaim => "invalid_claim",
            JwtRejection::MissingConsumerClaim => "missing_consumer_claim",
            JwtRejection::InvalidConsumerClaim => "invalid_consumer_claim",
        }
    }
}

/// Why a verifier could not be built.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum BuildError {
    #[error("issuer spec: {0}")]
    InvalidSpec(#[from] FieldError),
    /// `key` names the key (`jwks.keys[2] (kid "k1")`).
    #[error("{key}: {reason}")]
    InvalidKey { key: String, reason: String },
    #[error("secret: {0}")]
    Secret(String),
    #[error("HMAC issuers take a secret, not public keys")]
    HmacIssuerTakesNoKeys,
    #[error("JWKS document of {bytes} bytes is larger than {MAX_JWKS_DOCUMENT_BYTES}")]
    JwksTooLarge { bytes: usize },
    #[error("not a JWKS document: {0}")]
    JwksDocument(String),
    #[error("{count} usable keys, at most {MAX_KEYS}")]
    TooManyKeys { count: usize },
    #[error("no jsonwebtoken crypto provider is available")]
    NoCryptoProvider,
}

/// What a verified token says.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct VerifiedToken {
    /// The issuer object's id (not `iss`).
    pub issuer: ObjectId,
    /// The value of the issuer's consumer claim.
    pub consumer: String,
    pub jti: Option<String>,
    /// The `kid` of the key that verified the signature (also when the token
    /// named none); `None` for HMAC secrets and keys without a kid.
    pub kid: Option<String>,
    pub exp_s: u64,
    pub iat_s: Option<u64>,
    /// From `scope` (space-separated) and `scp` (space-separated string or
    /// array), de-duplicated, in order of appearance.
    pub scopes: Vec<String>,
    /// How the user authenticated (OpenID Connect), for step-up rules.
    /// Read leniently: a claim of the wrong type counts as absent (a route
    /// that needs it then refuses), it does not spoil the token elsewhere.
    pub acr: Option<String>,
    /// `amr` entries, at most [`MAX_AMR`]; beyond that the claim counts as absent.
    pub amr: Vec<String>,
    pub auth_time_s: Option<u64>,
}

/// Most `amr` entries kept from a token.
pub const MAX_AMR: usize = 32;
/// Longest `acr` or `amr` value kept from a token.
const MAX_AUTH_CONTEXT_BYTES: usize = 256;

/// What a key verifies with.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum KeyKind {
    Rsa,
    P256,
    P384,
    Ed25519,
    Hmac,
}

impl KeyKind {
    fn serves(self, alg: JwtAlgorithm) -> bool {
        use JwtAlgorithm::*;
        match self {
            KeyKind::Rsa => matches!(alg, RS256 | RS384 | RS512 | PS256 | PS384 | PS512),
            KeyKind::P256 => alg == ES256,
            KeyKind::P384 => alg == ES384,
            KeyKind::Ed25519 => alg == EdDSA,
            KeyKind::Hmac => alg.is_hmac(),
        }
    }
}

#[derive(Clone)]
struct VerifyKey {
    kid: Option<String>,
    kind: KeyKind,
    /// A JWK's `alg`: the key then verifies only that algorithm.
    alg: Option<JwtAlgorithm>,
    key: DecodingKey,
}

impl VerifyKey {
    fn serves(&self, alg: JwtAlgorithm) -> bool {
        self.kind.serves(alg) && self.alg.is_none_or(|a| a == alg)
    }
}

/// Verifies the tokens of one issuer. Built from the replicated spec; cheap
/// to share (`Arc`) and to call from any thread.
#[derive(Clone)]
pub struct IssuerVerifier {
    id: ObjectId,
    issuer: String,
    audiences: Vec<String>,
    algorithms: Vec<JwtAlgorithm>,
    hmac: bool,
    keys: Vec<VerifyKey>,
    consumer_claim: String,
    leeway_s: u64,
    max_token_bytes: usize,
    provider: &'static CryptoProvider,
}

impl fmt::Debug for IssuerVerifier {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("IssuerVerifier")
            .field("id", &self.id)
            .field("issuer", &self.issuer)
            .field("algorithms", &self.algorithms)
            .field("keys", &self.keys.iter().map(|k| (k.kind, k.kid.as_deref())).collect::<Vec<_>>())
            .finish_non_exhaustive()
    }
}

impl IssuerVerifier {
    /// Builds the verifier of `spec`. `secret` is the resolved HMAC secret of
    /// an HS* issuer (the caller resolves `env:`/`file:` references) and must
    /// be `None` for a public-key issuer. An issuer with only a `jwks_url`
    /// starts without keys (every token is then `unknown_kid`) until
    /// [`with_fetched_jwks`](Self::with_fetched_jwks).
    pub fn new(spec: &JwtIssuer, secret: Option<&[u8]>) -> Result<Self, BuildError> {
        spec.validate()?;
        let provider = CryptoProvider::try_get_default().ok_or(BuildError::NoCryptoProvider)?;
        let hmac = spec.algorithms.iter().any(|a| a.is_hmac());
        let keys = if hmac {
            let secret = secret.ok_or_else(|| BuildError::Secret("HS* issuers need the resolved secret".into()))?;
            let need = spec.algorithms.iter().map(|a| min_hmac_secret_bytes(*a)).max().unwrap_or(0);
            if secret.len() < need {
                return Err(BuildError::Secret(format!(
                    "{} bytes is too short, the allowed algorithms need at least {need}",
                    secret.len()
                )));
            }
            let key = DecodingKey::from_secret(secret).map_err(|e| BuildError::Secret(e.to_string()))?;
            vec![VerifyKey { kid: None, kind: KeyKind::Hmac, alg: None, key }]
        } else {
            if secret.is_some() {
                return Err(BuildError::Secret("public-key issuers take no secret".into()));
            }
            let jwks = spec.jwks.as_ref().map(|j| j.keys.as_slice()).unwrap_or_default();
            build_keys(provider, jwks, "jwks.keys")?
        };
        Ok(Self {
            id: spec.id.clone(),
            issuer: spec.issuer.clone(),
            audiences: spec.audiences.clone(),
            algorithms: spec.algorithms.clone(),
            hmac,
            keys,
            consumer_claim: spec.consumer_claim.clone(),
            leeway_s: u64::from(spec.leeway_s),
            max_token_bytes: usize::try_from(spec.max_token_bytes)
                .unwrap_or(ABSOLUTE_MAX_TOKEN_BYTES)
                .min(ABSOLUTE_MAX_TOKEN_BYTES),
            provider,
        })
    }

    /// This verifier with its public keys replaced by those of a fetched JWKS
    /// document (at most [`MAX_JWKS_DOCUMENT_BYTES`]). Keys of another `kty`
    /// than RSA/EC/OKP, with a `use` other than `sig`, `key_ops` without
    /// `verify`, an `alg` that is no JWS signature algorithm known here, or
    /// a curve other than P-256/P-384/Ed25519 are skipped; every other key
    /// gets the checks of inline keys, and one that fails them fails the
    /// whole document.
    pub fn with_fetched_jwks(&self, jwks_json: &[u8]) -> Result<Self, BuildError> {
        if self.hmac {
            return Err(BuildError::HmacIssuerTakesNoKeys);
        }
        if jwks_json.len() > MAX_JWKS_DOCUMENT_BYTES {
            return Err(BuildError::JwksTooLarge { bytes: jwks_json.len() });
        }
        #[derive(Deserialize)]
        struct Document {
            keys: Vec<serde_json::Value>,
        }
        let doc: Document = serde_json::from_slice(jwks_json).map_err(|e| BuildError::JwksDocument(e.to_string()))?;
        let mut usable = Vec::new();
        for (i, raw) in doc.keys.into_iter().enumerate() {
            let serde_json::Value::Object(obj) = raw else {
                return Err(BuildError::JwksDocument(format!("keys[{i}] is not an object")));
            };
            if let Some(why) = skip_reason(&obj) {
                tracing::debug!(issuer = %self.id, key = i, why, "skipping a fetched JWKS key");
                continue;
            }
            let jwk: Jwk = serde_json::from_value(serde_json::Value::Object(obj))
                .map_err(|e| BuildError::InvalidKey { key: format!("keys[{i}]"), reason: e.to_string() })?;
            usable.push(jwk);
        }
        let keys = build_keys(self.provider, &usable, "fetched keys")?;
        Ok(Self { keys, ..self.clone() })
    }

    pub fn id(&self) -> &ObjectId {
        &self.id
    }

    /// The `iss` value tokens of this issuer carry.
    pub fn issuer(&self) -> &str {
        &self.issuer
    }

    /// Verifies `token` (without the `Bearer ` prefix) at `now_s` (seconds
    /// since the epoch).
    pub fn verify(&self, token: &str, now_s: u64) -> Result<VerifiedToken, JwtRejection> {
        if token.len() > self.max_token_bytes {
            return Err(JwtRejection::TooLarge);
        }
        let parsed = Parsed::parse(token, std::slice::from_ref(&self.consumer_claim))?;
        self.check(&parsed, token.len(), now_s)
    }

    /// Everything after parsing.
    fn check(&self, token: &Parsed<'_>, token_len: usize, now_s: u64) -> Result<VerifiedToken, JwtRejection> {
        if token_len > self.max_token_bytes {
            return Err(JwtRejection::TooLarge);
        }
        match token.claims.get("iss") {
            Some(Val::Str(iss)) if *iss == self.issuer => {}
            _ => return Err(JwtRejection::WrongIssuer),
        }
        let alg = parse_algorithm(&token.alg)
            .filter(|a| self.algorithms.contains(a))
            .ok_or(JwtRejection::AlgorithmNotAllowed)?;
        let key = self.select_key(alg, token.kid.as_deref())?;
        self.check_signature(alg, key, token)?;
        self.check_claims(token, key, now_s)
    }

    fn select_key(&self, alg: JwtAlgorithm, kid: Option<&str>) -> Result<&VerifyKey, JwtRejection> {
        if self.hmac {
            // One secret; a `kid` cannot choose among anything.
            return self.keys.first().filter(|k| k.serves(alg)).ok_or(JwtRejection::KeyAlgorithmMismatch);
        }
        match kid {
            Some(kid) => {
                let key = self.keys.iter().find(|k| k.kid.as_deref() == Some(kid)).ok_or(JwtRejection::UnknownKid)?;
                if key.serves(alg) {
                    Ok(key)
                } else {
                    Err(JwtRejection::KeyAlgorithmMismatch)
                }
            }
            None => {
                let mut fitting = self.keys.iter().filter(|k| k.serves(alg));
                match (fitting.next(), fitting.next()) {
                    (Some(key), None) => Ok(key),
                    (None, _) => Err(JwtRejection::UnknownKid),
                    (Some(_), Some(_)) => Err(JwtRejection::AmbiguousKey),
                }
            }
        }
    }

    fn check_signature(&self, alg: JwtAlgorithm, key: &VerifyKey, token: &Parsed<'_>) -> Result<(), JwtRejection> {
        let sig = &token.signature;
        if sig.is_empty() {
            return Err(JwtRejection::BadSignature);
        }
        if let Some(half) = ecdsa_scalar_bytes(alg) {
            // r || s, each a non-zero scalar; the backend refuses zero too,
            // this keeps it so whatever the backend.
            if sig.len() != 2 * half {
                return Err(JwtRejection::BadSignature);
            }
            let (r, s) = sig.split_at(half);
            if r.iter().all(|b| *b == 0) || s.iter().all(|b| *b == 0) {
                return Err(JwtRejection::BadSignature);
            }
        }
        let verifier = (self.provider.verifier_factory)(&to_jwt_algorithm(alg), &key.key)
            .map_err(|_| JwtRejection::BadSignature)?;
        verifier.verify(token.signing_input, sig).map_err(|_| JwtRejection::BadSignature)
    }

    fn check_claims(&self, token: &Parsed<'_>, key: &VerifyKey, now_s: u64) -> Result<VerifiedToken, JwtRejection> {
        let claims = &token.claims;
        let leeway = self.leeway_s;
        let exp = match claims.get("exp") {
            None => return Err(JwtRejection::MissingExp),
            Some(v) => numeric_date(v, Rounding::Down).ok_or(JwtRejection::InvalidClaim)?,
        };
        if now_s >= exp.saturating_add(leeway) {
            return Err(JwtRejection::Expired);
        }
        if exp > now_s.saturating_add(MAX_EXP_AHEAD_S) {
            return Err(JwtRejection::ExpiryTooFar);
        }
        if let Some(v) = claims.get("nbf") {
            let nbf = numeric_date(v, Rounding::Up).ok_or(JwtRejection::InvalidClaim)?;
            if nbf > now_s.saturating_add(leeway) {
                return Err(JwtRejection::NotYetValid);
            }
        }
        let iat = match claims.get("iat") {
            None => None,
            Some(v) => Some(numeric_date(v, Rounding::Down).ok_or(JwtRejection::InvalidClaim)?),
        };
        // A token "issued" in the future would escape a consumer revocation
        // (which covers tokens issued up to it).
        if iat.is_some_and(|iat| iat > now_s.saturating_add(leeway)) {
            return Err(JwtRejection::NotYetValid);
        }
        if !self.audiences.is_empty() {
            let ok = match claims.get("aud") {
                None => false,
                Some(Val::Str(aud)) => self.audiences.contains(aud),
                Some(Val::Strs(auds)) => auds.iter().any(|a| self.audiences.contains(a)),
                Some(_) => return Err(JwtRejection::InvalidClaim),
            };
            if !ok {
                return Err(JwtRejection::WrongAudience);
            }
        }
        let consumer = match claims.get(&self.consumer_claim) {
            None => return Err(JwtRejection::MissingConsumerClaim),
            Some(Val::Str(s)) if is_text(s, MAX_CONSUMER_BYTES) => s.clone(),
            Some(_) => return Err(JwtRejection::InvalidConsumerClaim),
        };
        let jti = match claims.get("jti") {
            None => None,
            Some(Val::Str(s)) if is_text(s, MAX_JTI_BYTES) => Some(s.clone()),
            Some(_) => return Err(JwtRejection::InvalidClaim),
        };
        let scopes = collect_scopes(claims.get("scope"), claims.get("scp"))?;
        let acr = match claims.get("acr") {
            Some(Val::Str(s)) if is_text(s, MAX_AUTH_CONTEXT_BYTES) => Some(s.clone()),
            _ => None,
        };
        let amr = match claims.get("amr") {
            Some(Val::Strs(list))
                if list.len() <= MAX_AMR && list.iter().all(|s| is_text(s, MAX_AUTH_CONTEXT_BYTES)) =>
            {
                list.clone()
            }
            _ => Vec::new(),
        };
        let auth_time_s = claims.get("auth_time").and_then(|v| numeric_date(v, Rounding::Down));
        Ok(VerifiedToken {
            issuer: self.id.clone(),
            consumer,
            jti,
            kid: key.kid.clone(),
            exp_s: exp,
            iat_s: iat,
            scopes,
            acr,
            amr,
            auth_time_s,
        })
    }
}

/// The verifiers of all configured issuers, chosen by the token's `iss`.
#[derive(Debug, Clone, Default)]
pub struct IssuerSet {
    by_iss: HashMap<String, Vec<Arc<IssuerVerifier>>>,
    /// Every issuer's consumer claim, once each.
    consumer_claims: Vec<String>,
    /// The largest `max_token_bytes` of any issuer.
    max_token_bytes: usize,
}

impl IssuerSet {
    pub fn new(verifiers: Vec<Arc<IssuerVerifier>>) -> Self {
        let max_token_bytes = verifiers.iter().map(|v| v.max_token_bytes).max().unwrap_or(ABSOLUTE_MAX_TOKEN_BYTES);
        let mut consumer_claims: Vec<String> = Vec::new();
        let mut by_iss: HashMap<String, Vec<Arc<IssuerVerifier>>> = HashMap::new();
        for v in verifiers {
            if !consumer_claims.contains(&v.consumer_claim) {
                consumer_claims.push(v.consumer_claim.clone());
            }
            by_iss.entry(v.issuer.clone()).or_default().push(v);
        }
        for list in by_iss.values_mut() {
            list.sort_by(|a, b| a.id.cmp(&b.id));
        }
        Self { by_iss, consumer_claims, max_token_bytes }
    }

    /// Verifies `token` with the issuer its `iss` names, if that issuer is in
    /// `allowed` (empty: any). Several issuer objects may share one `iss`:
    /// they are tried in id order and the first that accepts wins; if none
    /// does, the first one's rejection is returned.
    pub fn verify(&self, token: &str, allowed: &[ObjectId], now_s: u64) -> Result<VerifiedToken, JwtRejection> {
        if token.len() > self.max_token_bytes.min(ABSOLUTE_MAX_TOKEN_BYTES) {
            return Err(JwtRejection::TooLarge);
        }
        let parsed = Parsed::parse(token, &self.consumer_claims)?;
        let Some(Val::Str(iss)) = parsed.claims.get("iss") else {
            return Err(JwtRejection::UnknownIssuer);
        };
        let candidates = self.by_iss.get(iss.as_str()).ok_or(JwtRejection::UnknownIssuer)?;
        let mut first_rejection = None;
        for v in candidates {
            if !allowed.is_empty() && !allowed.contains(&v.id) {
                continue;
            }
            match v.check(&parsed, token.len(), now_s) {
                Ok(t) => return Ok(t),
                Err(e) => {
                    first_rejection.get_or_insert(e);
                }
            }
        }
        Err(first_rejection.unwrap_or(JwtRejection::IssuerNotAllowed))
    }
}

fn min_hmac_secret_bytes(alg: JwtAlgorithm) -> usize {
    match alg {
        JwtAlgorithm::HS256 => MIN_HS256_SECRET_BYTES,
        JwtAlgorithm::HS384 => MIN_HS384_SECRET_BYTES,
        JwtAlgorithm::HS512 => MIN_HS512_SECRET_BYTES,
        _ => 0,
    }
}

fn ecdsa_scalar_bytes(alg: JwtAlgorithm) -> Option<usize> {
    match alg {
        JwtAlgorithm::ES256 => Some(P256_COORDINATE_BYTES),
        JwtAlgorithm::ES384 => Some(P384_COORDINATE_BYTES),
        _ => None,
    }
}

fn parse_algorithm(name: &str) -> Option<JwtAlgorithm> {
    Some(match name {
        "RS256" => JwtAlgorithm::RS256,
        "RS384" => JwtAlgorithm::RS384,
        "RS512" => JwtAlgorithm::RS512,
        "PS256" => JwtAlgorithm::PS256,
        "PS384" => JwtAlgorithm::PS384,
        "PS512" => JwtAlgorithm::PS512,
        "ES256" => JwtAlgorithm::ES256,
        "ES384" => JwtAlgorithm::ES384,
        "EdDSA" => JwtAlgorithm::EdDSA,
        "HS256" => JwtAlgorithm::HS256,
        "HS384" => JwtAlgorithm::HS384,
        "HS512" => JwtAlgorithm::HS512,
        _ => return None,
    })
}

fn to_jwt_algorithm(alg: JwtAlgorithm) -> Algorithm {
    match alg {
        JwtAlgorithm::RS256 => Algorithm::RS256,
        JwtAlgorithm::RS384 => Algorithm::RS384,
        JwtAlgorithm::RS512 => Algorithm::RS512,
        JwtAlgorithm::PS256 => Algorithm::PS256,
        JwtAlgorithm::PS384 => Algorithm::PS384,
        JwtAlgorithm::PS512 => Algorithm::PS512,
        JwtAlgorithm::ES256 => Algorithm::ES256,
        JwtAlgorithm::ES384 => Algorithm::ES384,
        JwtAlgorithm::EdDSA => Algorithm::EdDSA,
        JwtAlgorithm::HS256 => Algorithm::HS256,
        JwtAlgorithm::HS384 => Algorithm::HS384,
        JwtAlgorithm::HS512 => Algorithm::HS512,
    }
}

fn is_text(s: &str, max_bytes: usize) -> bool {
    !s.is_empty() && s.len() <= max_bytes && !s.chars().any(char::is_control)
}

// ---------------------------------------------------------------------------
// Keys

/// Why a fetched JWK is not for us, if it is not.
fn skip_reason(obj: &serde_json::Map<String, serde_json::Value>) -> Option<&'static str> {
    let text = |name: &str| obj.get(name).map(|v| v.as_str());
    let kty = text("kty").flatten();
    if !matches!(kty, Some("RSA" | "EC" | "OKP")) {
        return Some("kty is not RSA, EC or OKP");
    }
    if let Some(use_) = text("use") {
        if use_ != Some("sig") {
            return Some("use is not sig");
        }
    }
    if let Some(ops) = obj.get("key_ops") {
        let verifies = ops.as_array().is_some_and(|ops| ops.iter().any(|o| o.as_str() == Some("verify")));
        if !verifies {
            return Some("key_ops lacks verify");
        }
    }
    if let Some(alg) = text("alg") {
        if alg.and_then(parse_algorithm).is_none_or(JwtAlgorithm::is_hmac) {
            return Some("alg is not a public-key JWS algorithm known here");
        }
    }
    let crv = text("crv").flatten();
    match kty {
        Some("EC") if !matches!(crv, Some("P-256" | "P-384")) => Some("curve is not P-256 or P-384"),
        Some("OKP") if crv != Some("Ed25519") => Some("curve is not Ed25519"),
        _ => None,
    }
}

fn b64_field(value: &Option<String>) -> Result<Vec<u8>, String> {
    let s = value.as_deref().ok_or("is required")?;
    // Padding is tolerated in key material (some publishers add it), nothing else.
    URL_SAFE_NO_PAD.decode(s.trim_end_matches('=')).map_err(|_| "must be base64url".to_string())
}

fn strip_leading_zeros(b: &[u8]) -> &[u8] {
    let zeros = b.iter().take_while(|b| **b == 0).count();
    &b[zeros..]
}

/// Validates and decodes the keys of a JWKS.
fn build_keys(provider: &CryptoProvider, jwks: &[Jwk], field: &str) -> Result<Vec<VerifyKey>, BuildError> {
    if jwks.len() > MAX_KEYS {
        return Err(BuildError::TooManyKeys { count: jwks.len() });
    }
    let mut keys: Vec<VerifyKey> = Vec::with_capacity(jwks.len());
    for (i, jwk) in jwks.iter().enumerate() {
        let label = match &jwk.kid {
            Some(kid) => format!("{field}[{i}] (kid {kid:?})"),
            None => format!("{field}[{i}]"),
        };
        let invalid = |reason: String| BuildError::InvalidKey { key: label.clone(), reason };
        jwk.validate(&format!("{field}[{i}]")).map_err(|e| invalid(e.to_string()))?;
        if jwk.kid.is_some() && keys.iter().any(|k| k.kid == jwk.kid) {
            return Err(invalid("kid listed twice".into()));
        }
        let (kind, key) = decode_jwk(jwk).map_err(|r| invalid(r.to_string()))?;
        // Let the backend parse the key once now, for every algorithm it may
        // serve, so that a bad point fails here and not on a request.
        for alg in [JwtAlgorithm::RS256, JwtAlgorithm::ES256, JwtAlgorithm::ES384, JwtAlgorithm::EdDSA] {
            if kind.serves(alg) {
                (provider.verifier_factory)(&to_jwt_algorithm(alg), &key)
                    .map_err(|e| invalid(format!("unusable key: {e}")))?;
            }
        }
        keys.push(VerifyKey { kid: jwk.kid.clone(), kind, alg: jwk.alg, key });
    }
    Ok(keys)
}

fn decode_jwk(jwk: &Jwk) -> Result<(KeyKind, DecodingKey), String> {
    match jwk.kty.as_str() {
        "RSA" => {
            let n = b64_field(&jwk.n).map_err(|e| format!("n {e}"))?;
            let e = b64_field(&jwk.e).map_err(|e| format!("e {e}"))?;
            let (n, e) = (strip_leading_zeros(&n), strip_leading_zeros(&e));
            // `n` starts with a non-zero byte (or is empty).
            let bits = n.first().map_or(0, |b| n.len() * 8 - b.leading_zeros() as usize);
            if !(MIN_RSA_BITS..=MAX_RSA_BITS).contains(&bits) {
                return Err(format!("RSA modulus has {bits} bits, must be {MIN_RSA_BITS} to {MAX_RSA_BITS}"));
            }
            if n.last().is_some_and(|b| b % 2 == 0) {
                return Err("RSA modulus must be odd".into());
            }
            let exponent =
                if e.len() <= 8 { e.iter().fold(0u64, |acc, b| (acc << 8) | u64::from(*b)) } else { u64::MAX };
            if !(MIN_RSA_EXPONENT..=MAX_RSA_EXPONENT).contains(&exponent) || exponent % 2 == 0 {
                return Err(format!("RSA exponent must be odd, {MIN_RSA_EXPONENT} to {MAX_RSA_EXPONENT}"));
            }
            Ok((KeyKind::Rsa, DecodingKey::from_rsa_raw_components(n, e)))
        }
        "EC" => {
            let (kind, len) = match jwk.crv.as_deref() {
                Some("P-256") => (KeyKind::P256, P256_COORDINATE_BYTES),
                Some("P-384") => (KeyKind::P384, P384_COORDINATE_BYTES),
                _ => return Err("curve must be P-256 or P-384".into()),
            };
            let x = b64_field(&jwk.x).map_err(|e| format!("x {e}"))?;
            let y = b64_field(&jwk.y).map_err(|e| format!("y {e}"))?;
            if x.len() != len || y.len() != len {
                return Err(format!("x and y must be {len} bytes each"));
            }
            let mut point = Vec::with_capacity(1 + 2 * len);
            point.push(0x04); // SEC1 uncompressed point
            point.extend_from_slice(&x);
            point.extend_from_slice(&y);
            Ok((kind, DecodingKey::from_ec_der(&point)))
        }
        "OKP" => {
            if jwk.crv.as_deref() != Some("Ed25519") {
                return Err("curve must be Ed25519".into());
            }
            let x = b64_field(&jwk.x).map_err(|e| format!("x {e}"))?;
            if x.len() != ED25519_KEY_BYTES {
                return Err(format!("x must be {ED25519_KEY_BYTES} bytes"));
            }
            Ok((KeyKind::Ed25519, DecodingKey::from_ed_der(&x)))
        }
        other => Err(format!("kty {other:?} is not RSA, EC or OKP")),
    }
}

// ---------------------------------------------------------------------------
// Parsing (once per request: header once, payload once)

/// A token split, decoded and parsed, not yet verified.
struct Parsed<'t> {
    /// `header.payload`, what the signature covers.
    signing_input: &'t [u8],
    signature: Vec<u8>,
    alg: String,
    kid: Option<String>,
    claims: Claims,
}

impl<'t> Parsed<'t> {
    /// `consumer_claims`: the claim names, besides the registered ones, whose
    /// values to keep.
    fn parse(token: &'t str, consumer_claims: &[String]) -> Result<Self, JwtRejection> {
        let mut parts = token.split('.');
        let (Some(h), Some(p), Some(s), None) = (parts.next(), parts.next(), parts.next(), parts.next()) else {
            return Err(JwtRejection::Malformed);
        };
        let signing_input = &token.as_bytes()[..h.len() + 1 + p.len()];
        let header_json = URL_SAFE_NO_PAD.decode(h).map_err(|_| JwtRejection::Malformed)?;
        let header: RawHeader = parse_json(&header_json, PhantomData)?;
        if header.forbidden {
            return Err(JwtRejection::ForbiddenHeader);
        }
        if header.crit {
            return Err(JwtRejection::CriticalHeader);
        }
        let payload_json = URL_SAFE_NO_PAD.decode(p).map_err(|_| JwtRejection::Malformed)?;
        let claims = parse_json(&payload_json, ClaimsSeed { extra: consumer_claims })?;
        let signature = URL_SAFE_NO_PAD.decode(s).map_err(|_| JwtRejection::Malformed)?;
        Ok(Self { signing_input, signature, alg: header.alg, kid: header.kid, claims })
    }
}

fn parse_json<'de, S: DeserializeSeed<'de>>(bytes: &'de [u8], seed: S) -> Result<S::Value, JwtRejection> {
    let mut de = serde_json::Deserializer::from_slice(bytes);
    let value = seed.deserialize(&mut de).map_err(|_| JwtRejection::Malformed)?;
    de.end().map_err(|_| JwtRejection::Malformed)?;
    Ok(value)
}

/// A JSON value, as much of it as the checks need.
#[derive(Debug)]
enum Val {
    Str(String),
    Uint(u64),
    /// Finite and not negative.
    Float(f64),
    /// An array of strings, at most [`MAX_CLAIM_ARRAY_ITEMS`].
    Strs(Vec<String>),
    /// Anything else: negative or non-finite numbers, booleans, null,
    /// objects, arrays holding non-strings or too many items.
    Other,
}

impl<'de> Deserialize<'de> for Val {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        d.deserialize_any(ValVisitor)
    }
}

struct ValVisitor;

impl<'de> Visitor<'de> for ValVisitor {
    type Value = Val;

    fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("a JSON value")
    }
    fn visit_bool<E>(self, _: bool) -> Result<Val, E> {
        Ok(Val::Other)
    }
    fn visit_i64<E>(self, v: i64) -> Result<Val, E> {
        Ok(u64::try_from(v).map_or(Val::Other, Val::Uint))
    }
    fn visit_u64<E>(self, v: u64) -> Result<Val, E> {
        Ok(Val::Uint(v))
    }
    fn visit_f64<E>(self, v: f64) -> Result<Val, E> {
        Ok(if v.is_finite() && v >= 0.0 { Val::Float(v) } else { Val::Other })
    }
    fn visit_str<E>(self, v: &str) -> Result<Val, E> {
        Ok(Val::Str(v.to_owned()))
    }
    fn visit_string<E>(self, v: String) -> Result<Val, E> {
        Ok(Val::Str(v))
    }
    fn visit_unit<E>(self) -> Result<Val, E> {
        Ok(Val::Other)
    }
    fn visit_none<E>(self) -> Result<Val, E> {
        Ok(Val::Other)
    }
    fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> Result<Val, A::Error> {
        let mut items = Vec::new();
        let mut all_strings = true;
        loop {
            if all_strings && items.len() < MAX_CLAIM_ARRAY_ITEMS {
                match seq.next_element::<Val>()? {
                    None => break,
                    Some(Val::Str(s)) => items.push(s),
                    Some(_) => all_strings = false,
                }
            } else {
                // Past the bound or a non-string: only drain.
                match seq.next_element::<IgnoredAny>()? {
                    None => break,
                    Some(_) => all_strings = false,
                }
            }
        }
        Ok(if all_strings { Val::Strs(items) } else { Val::Other })
    }
    fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<Val, A::Error> {
        while map.next_entry::<IgnoredAny, IgnoredAny>()?.is_some() {}
        Ok(Val::Other)
    }
}

/// The header members that matter.
struct RawHeader {
    alg: String,
    kid: Option<String>,
    /// `jku`, `x5u`, `jwk` or `x5c` present (with any value, null too).
    forbidden: bool,
    /// `crit` present (with any value).
    crit: bool,
}

impl<'de> Deserialize<'de> for RawHeader {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        d.deserialize_map(HeaderVisitor)
    }
}

struct HeaderVisitor;

fn string_member<'de, A: MapAccess<'de>>(map: &mut A, slot: &mut Option<String>, name: &str) -> Result<(), A::Error> {
    if slot.is_some() {
        return Err(de::Error::custom(format_args!("{name} given twice")));
    }
    match map.next_value::<Val>()? {
        Val::Str(s) => {
            *slot = Some(s);
            Ok(())
        }
        _ => Err(de::Error::custom(format_args!("{name} must be a string"))),
    }
}

impl<'de> Visitor<'de> for HeaderVisitor {
    type Value = RawHeader;

    fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("a JOSE header object")
    }
    fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<RawHeader, A::Error> {
        let (mut alg, mut kid, mut forbidden, mut crit) = (None, None, false, false);
        while let Some(name) = map.next_key::<String>()? {
            match name.as_str() {
                "alg" => string_member(&mut map, &mut alg, "alg")?,
                "kid" => string_member(&mut map, &mut kid, "kid")?,
                "jku" | "x5u" | "jwk" | "x5c" => {
                    map.next_value::<IgnoredAny>()?;
                    forbidden = true;
                }
                "crit" => {
                    map.next_value::<IgnoredAny>()?;
                    crit = true;
                }
                _ => {
                    map.next_value::<IgnoredAny>()?;
                }
            }
        }
        let alg = alg.ok_or_else(|| de::Error::missing_field("alg"))?;
        Ok(RawHeader { alg, kid, forbidden, crit })
    }
}

/// Registered claims read by the checks.
const REGISTERED_CLAIMS: [&str; 11] =
    ["iss", "exp", "nbf", "iat", "aud", "jti", "scope", "scp", "acr", "amr", "auth_time"];

/// The claims kept from the payload: the registered ones and the consumer
/// claims asked for; the rest is skipped without being stored.
struct Claims {
    entries: Vec<(String, Val)>,
}

impl Claims {
    fn get(&self, name: &str) -> Option<&Val> {
        self.entries.iter().find(|(n, _)| n == name).map(|(_, v)| v)
    }
}

#[derive(Clone, Copy)]
struct ClaimsSeed<'a> {
    extra: &'a [String],
}

impl ClaimsSeed<'_> {
    fn wanted(&self, name: &str) -> bool {
        REGISTERED_CLAIMS.contains(&name) || self.extra.iter().any(|e| e == name)
    }
}

impl<'de> DeserializeSeed<'de> for ClaimsSeed<'_> {
    type Value = Claims;
    fn deserialize<D: Deserializer<'de>>(self, d: D) -> Result<Claims, D::Error> {
        d.deserialize_map(self)
    }
}

impl<'de> Visitor<'de> for ClaimsSeed<'_> {
    type Value = Claims;

    fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("a JWT claims object")
    }
    fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<Claims, A::Error> {
        let mut entries: Vec<(String, Val)> = Vec::new();
        while let Some(name) = map.next_key_seed(ClaimName(self))? {
            match name {
                Some(name) => {
                    if entries.iter().any(|(n, _)| *n == name) {
                        return Err(de::Error::custom(format_args!("claim {name} given twice")));
                    }
                    let value = map.next_value::<Val>()?;
                    entries.push((name, value));
                }
                None => {
                    map.next_value::<IgnoredAny>()?;
                }
            }
        }
        Ok(Claims { entries })
    }
}

/// A claim name: `Some` (owned) if the claim is wanted, `None` otherwise.
struct ClaimName<'a>(ClaimsSeed<'a>);

impl<'de> DeserializeSeed<'de> for ClaimName<'_> {
    type Value = Option<String>;
    fn deserialize<D: Deserializer<'de>>(self, d: D) -> Result<Option<String>, D::Error> {
        d.deserialize_str(self)
    }
}

impl<'de> Visitor<'de> for ClaimName<'_> {
    type Value = Option<String>;

    fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("a claim name")
    }
    fn visit_str<E>(self, v: &str) -> Result<Option<String>, E> {
        Ok(self.0.wanted(v).then(|| v.to_owned()))
    }
}

#[derive(Clone, Copy)]
enum Rounding {
    Down,
    Up,
}

/// A NumericDate (RFC 7519: seconds, fractions allowed).
fn numeric_date(v: &Val, rounding: Rounding) -> Option<u64> {
    match (v, rounding) {
        (Val::Uint(u), _) => Some(*u),
        // `as` saturates at u64::MAX.
        (Val::Float(f), Rounding::Down) => Some(f.floor() as u64),
        (Val::Float(f), Rounding::Up) => Some(f.ceil() as u64),
        _ => None,
    }
}

fn collect_scopes(scope: Option<&Val>, scp: Option<&Val>) -> Result<Vec<String>, JwtRejection> {
    let mut scopes: Vec<String> = Vec::new();
    let mut add = |items: &mut dyn Iterator<Item = &str>| -> Result<(), JwtRejection> {
        for (n, item) in items.filter(|s| !s.is_empty()).enumerate() {
            if n >= MAX_SCOPES {
                return Err(JwtRejection::InvalidClaim);
            }
            if !scopes.iter().any(|s| s == item) {
                if scopes.len() >= MAX_SCOPES {
                    return Err(JwtRejection::InvalidClaim);
                }
                scopes.push(item.to_owned());
            }
        }
        Ok(())
    };
    match scope {
        None => {}
        Some(Val::Str(s)) => add(&mut s.split(' '))?,
        Some(_) => return Err(JwtRejection::InvalidClaim),
    }
    match scp {
        None => {}
        Some(Val::Str(s)) => add(&mut s.split(' '))?,
        Some(Val::Strs(list)) => add(&mut list.iter().map(String::as_str))?,
        Some(_) => return Err(JwtRejection::InvalidClaim),
    }
    Ok(scopes)
}
