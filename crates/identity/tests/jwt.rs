//! Behaviour of the JWT verifier: every accepted shape and every refusal.

use std::sync::{Arc, OnceLock};

use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use base64::Engine;
use jsonwebtoken::jwk::{AlgorithmParameters, Jwk as LibJwk};
use jsonwebtoken::{Algorithm, EncodingKey};
use proptest::prelude::*;
use raftgate_identity::jwt::{
    BuildError, IssuerSet, IssuerVerifier, JwtRejection, ABSOLUTE_MAX_TOKEN_BYTES, MAX_EXP_AHEAD_S,
    MAX_JWKS_DOCUMENT_BYTES, MAX_SCOPES,
};
use raftgate_model::identity::{Jwk, Jwks, JwtAlgorithm, JwtIssuer, SecretRef};
use raftgate_model::ObjectId;
use serde_json::{json, Value};

const NOW: u64 = 1_700_000_000;
const ISS: &str = "https://idp.example.com/";
const HS_ISS: &str = "https://hs.example.com/";
const LEEWAY: u64 = 30;
const HS_SECRET: &[u8] = b"0123456789abcdef0123456789abcdef";

/// A fixed 2048-bit test key (`openssl genrsa -traditional 2048`): the
/// ring backend of rcgen cannot generate RSA keys.
const RSA_PRIVATE_PEM: &str = "-----BEGIN RSA PRIVATE KEY-----
MIIEogIBAAKCAQEA2UJB6JU3OWlOI93U91zV+FqqEIdbK3Ux8YBk6dkJL5j82354
u/1f2TIP5aXqVWLeu0Q+VMY8eChqTDt/LR4qPiPwHddaNnUMm9HNSw6bLKjFmkHI
BxIcL1a9UlT16xNo8kz0JAYkgL85qUELlVRzWJMSWlulTpCMYpSvhX9mc2j7RHkM
RMPGPfGvU/mzXrQffeJHJeotY9etU48+QVdYqX5yRJa2mUix/65Jd5at/pNLqMw6
IP2SwjIORagVWABmEQjdlyCozo5Jbtq6Hck7wBrPPHjPt1OmmZXHg3stM3Np1Hur
5KjbU+3/ZLy2LKY6neXqhuHzOBmiZzCivMbQSQIDAQABAoIBACKcYBSV5OjUAltL
ZTiNBRdeFjaw4ZDQSEcRbcIlTcXT6QBsqv5D1KesxoSOxICa0iHiMs3dkNeRlLGV
TuLYqeEhZ4jRfHEtf3c5Wquo5YadUnGLJjseIvhVqK57k3vCKVdkdAZjJiCOljiF
ALvm6sNDFsrnS7Py6jJwPnAVhjQ/S30pNh416wFkXt/CfJ+SaUrZU/NOUP3tXF8f
q2dM6RWvX+Wf58YdU2wawpbpcWutbTVg/YXeuYuE+VVdcqJWaOfd+0++0mUauOpB
CEC116oQn4yVchyH9HymTMizBTa6GLAheyISr5B8/b0aCe+g3jyCBaPyYwsRLsts
F+NwJYkCgYEA+J42jLe0/2mxv4YY3iKbaKmleZVgwIQ8djQg2ii9cYjubdijp7UY
9fxINU8dd/KiTkR+BDixMQokTBYTT37ymekunJ9SoZnhjLI9P4JP71VLNr9600+U
VUoNcXX3tOzGtcjRPfNc8NMqbCAgcO+dByVelxtj4zaZXYrs628Axc0CgYEA37Wt
iHQh4ne6GcErCHSTyGprP6PgYLfHACMlHNRqeM9RHykgFEXiMHjkxK9VBht3WXG8
z1s6tHe2i3xlJJkXuNoKmkaxvbJo8HMnotnNEuVUbe3LyffpExa/7KRKjIxHbQrp
6tIyjyAUpQ4PIgxbQp1pl4MtkF5ge3nVBo0k+G0CgYBGw9HHD+sm4BDF8QdXAwa1
LcR57PjTE1CaXJAVSI9Tp6QmBAnhDH0EV0C+W7yJjbiBCqHL1c8ppDdcqNPqRroK
8QJhdj/w23oFsB4a256hAugbtzjguMAB3sggyXEuQE73IyfbuE92BMUIbcSOIMXT
aOGZpSQzYjEZHRf+k2Pm6QKBgFHp10HYrDOdfWJCzfwJm7dN6DlkSxt/D3noZIV6
7gWQe/a5+0oRELKJAdNXE/3pfrkcoXMXx5YfI5NNmEdfW0VPaYR2EE0Sj8RDlibW
M3YQzOp3oSAyC4D22o3O1pFCKEEwNtjJ4MNxjr2lOTtRZPUuaGSXHs73D8MGqE7+
zaO9AoGAL0XQoql/2W+gC1N/azqyHyypFnL9xgI9GdWe1ky5X5aOEYnlkg4NrPWS
QvhrEJHdXOEzUXhmEcYXwi6+ISRUKb/x2g/e6ERdB7K7rC6wtiu0fp/pCBDCQ+OU
9ziFzQlCseqx7UjlgEL4hvGTFVKOWIWPNG2pHe2VVa/dKGec8k0=
-----END RSA PRIVATE KEY-----
";

const RSA_PUBLIC_PEM: &str = "-----BEGIN PUBLIC KEY-----
MIIBIjANBgkqhkiG9w0BAQEFAAOCAQ8AMIIBCgKCAQEA2UJB6JU3OWlOI93U91zV
+FqqEIdbK3Ux8YBk6dkJL5j82354u/1f2TIP5aXqVWLeu0Q+VMY8eChqTDt/LR4q
PiPwHddaNnUMm9HNSw6bLKjFmkHIBxIcL1a9UlT16xNo8kz0JAYkgL85qUELlVRz
WJMSWlulTpCMYpSvhX9mc2j7RHkMRMPGPfGvU/mzXrQffeJHJeotY9etU48+QVdY
qX5yRJa2mUix/65Jd5at/pNLqMw6IP2SwjIORagVWABmEQjdlyCozo5Jbtq6Hck7
wBrPPHjPt1OmmZXHg3stM3Np1Hur5KjbU+3/ZLy2LKY6neXqhuHzOBmiZzCivMbQ
SQIDAQAB
-----END PUBLIC KEY-----
";

// ---------------------------------------------------------------------------
// Helpers

fn b64(bytes: impl AsRef<[u8]>) -> String {
    URL_SAFE_NO_PAD.encode(bytes)
}

fn id(s: &str) -> ObjectId {
    ObjectId::parse(s).unwrap()
}

/// A signing key and the public JWK that verifies it.
struct Signer {
    key: EncodingKey,
    alg: Algorithm,
    jwk: Jwk,
}

fn public_jwk(kty: &str, kid: Option<&str>) -> Jwk {
    Jwk {
        kty: kty.into(),
        kid: kid.map(Into::into),
        alg: None,
        use_: None,
        n: None,
        e: None,
        crv: None,
        x: None,
        y: None,
    }
}

fn rsa(kid: Option<&str>) -> Signer {
    let key = EncodingKey::from_rsa_pem(RSA_PRIVATE_PEM.as_bytes()).unwrap();
    let lib = LibJwk::from_encoding_key(&key, Algorithm::RS256).unwrap();
    let AlgorithmParameters::RSA(p) = lib.algorithm else { panic!("not an RSA JWK") };
    let jwk = Jwk { n: Some(p.n), e: Some(p.e), ..public_jwk("RSA", kid) };
    Signer { key, alg: Algorithm::RS256, jwk }
}

fn ec(curve: &'static rcgen::SignatureAlgorithm, alg: Algorithm, kid: Option<&str>) -> Signer {
    let pair = rcgen::KeyPair::generate_for(curve).unwrap();
    let key = EncodingKey::from_ec_pem(pair.serialize_pem().as_bytes()).unwrap();
    let point = pair.public_key_raw();
    assert_eq!(point[0], 0x04, "uncompressed SEC1 point");
    let (x, y) = point[1..].split_at((point.len() - 1) / 2);
    let crv = if alg == Algorithm::ES256 { "P-256" } else { "P-384" };
    let jwk = Jwk { crv: Some(crv.into()), x: Some(b64(x)), y: Some(b64(y)), ..public_jwk("EC", kid) };
    Signer { key, alg, jwk }
}

fn p256(kid: Option<&str>) -> Signer {
    ec(&rcgen::PKCS_ECDSA_P256_SHA256, Algorithm::ES256, kid)
}

fn p384(kid: Option<&str>) -> Signer {
    ec(&rcgen::PKCS_ECDSA_P384_SHA384, Algorithm::ES384, kid)
}

fn ed25519(kid: Option<&str>) -> Signer {
    let pair = rcgen::KeyPair::generate_for(&rcgen::PKCS_ED25519).unwrap();
    let key = EncodingKey::from_ed_pem(pair.serialize_pem().as_bytes()).unwrap();
    let jwk = Jwk { crv: Some("Ed25519".into()), x: Some(b64(pair.public_key_raw())), ..public_jwk("OKP", kid) };
    Signer { key, alg: Algorithm::EdDSA, jwk }
}

fn hs() -> Signer {
    Signer { key: EncodingKey::from_secret(HS_SECRET).unwrap(), alg: Algorithm::HS256, jwk: public_jwk("oct", None) }
}

fn spec(name: &str, algorithms: Vec<JwtAlgorithm>, keys: Vec<Jwk>) -> JwtIssuer {
    JwtIssuer {
        id: id(name),
        issuer: ISS.into(),
        audiences: vec!["api".into()],
        algorithms,
        jwks: Some(Jwks { keys }),
        jwks_url: None,
        secret: None,
        consumer_claim: "sub".into(),
        leeway_s: LEEWAY as u32,
        max_token_bytes: 8 * 1024,
    }
}

fn hs_spec(name: &str) -> JwtIssuer {
    JwtIssuer {
        issuer: HS_ISS.into(),
        jwks: None,
        secret: Some(SecretRef::parse("env:IDP_SECRET").unwrap()),
        ..spec(name, vec![JwtAlgorithm::HS256], vec![])
    }
}

fn verifier(spec: &JwtIssuer) -> IssuerVerifier {
    IssuerVerifier::new(spec, None).unwrap()
}

fn hs_verifier() -> IssuerVerifier {
    IssuerVerifier::new(&hs_spec("hs-idp"), Some(HS_SECRET)).unwrap()
}

fn claims() -> Value {
    json!({"iss": ISS, "sub": "alice", "aud": "api", "exp": NOW + 600, "iat": NOW, "jti": "t-1"})
}

fn hs_claims() -> Value {
    let mut c = claims();
    c["iss"] = json!(HS_ISS);
    c
}

fn header(alg: &str, kid: Option<&str>) -> Value {
    match kid {
        Some(kid) => json!({"alg": alg, "typ": "JWT", "kid": kid}),
        None => json!({"alg": alg, "typ": "JWT"}),
    }
}

/// Signs `header_b64.payload_b64` as given (segments need not be canonical).
fn sign_message(message: &str, signer: &Signer) -> String {
    let sig = jsonwebtoken::crypto::sign(message.as_bytes(), &signer.key, signer.alg).unwrap();
    format!("{message}.{sig}")
}

fn sign_with(header: &Value, claims: &Value, signer: &Signer) -> String {
    sign_message(&format!("{}.{}", b64(header.to_string()), b64(claims.to_string())), signer)
}

/// A properly signed token naming the signer's alg and the JWK's kid.
fn token(claims: &Value, signer: &Signer) -> String {
    let alg = serde_json::to_value(signer.alg).unwrap();
    sign_with(&header(alg.as_str().unwrap(), signer.jwk.kid.as_deref()), claims, signer)
}

fn rsa_verifier() -> (IssuerVerifier, Signer) {
    let signer = rsa(Some("rsa-1"));
    let v = verifier(&spec("idp", vec![JwtAlgorithm::RS256, JwtAlgorithm::PS256], vec![signer.jwk.clone()]));
    (v, signer)
}

fn es256_verifier() -> (IssuerVerifier, Signer) {
    let signer = p256(Some("ec-1"));
    let v = verifier(&spec("idp", vec![JwtAlgorithm::ES256], vec![signer.jwk.clone()]));
    (v, signer)
}

fn refused(v: &IssuerVerifier, token: &str) -> JwtRejection {
    v.verify(token, NOW).expect_err("the token must be refused")
}

fn replace_signature(token: &str, sig: &[u8]) -> String {
    let (message, _) = token.rsplit_once('.').unwrap();
    format!("{message}.{}", b64(sig))
}

fn signature_of(token: &str) -> Vec<u8> {
    URL_SAFE_NO_PAD.decode(token.rsplit_once('.').unwrap().1).unwrap()
}

// ---------------------------------------------------------------------------
// Accepted tokens

#[test]
fn a_valid_rs256_token_is_accepted_with_its_claims_mapped() {
    let (v, signer) = rsa_verifier();
    let mut c = claims();
    c["scope"] = json!("orders:read orders:write");
    let t = v.verify(&token(&c, &signer), NOW).unwrap();
    assert_eq!(t.issuer, id("idp"));
    assert_eq!(t.consumer, "alice");
    assert_eq!(t.jti.as_deref(), Some("t-1"));
    assert_eq!(t.kid.as_deref(), Some("rsa-1"));
    assert_eq!(t.exp_s, NOW + 600);
    assert_eq!(t.iat_s, Some(NOW));
    assert_eq!(t.scopes, vec!["orders:read", "orders:write"]);
    assert_eq!(v.id(), &id("idp"));
    assert_eq!(v.issuer(), ISS);
}

#[test]
fn a_valid_ps256_token_is_accepted_with_the_same_rsa_key() {
    let (v, mut signer) = rsa_verifier();
    signer.alg = Algorithm::PS256;
    assert_eq!(v.verify(&token(&claims(), &signer), NOW).unwrap().consumer, "alice");
}

#[test]
fn a_valid_es256_token_is_accepted_with_its_claims_mapped() {
    let (v, signer) = es256_verifier();
    let t = v.verify(&token(&claims(), &signer), NOW).unwrap();
    assert_eq!((t.consumer.as_str(), t.kid.as_deref(), t.exp_s), ("alice", Some("ec-1"), NOW + 600));
}

#[test]
fn a_valid_es384_token_is_accepted() {
    let signer = p384(Some("ec-384"));
    let v = verifier(&spec("idp", vec![JwtAlgorithm::ES384], vec![signer.jwk.clone()]));
    assert_eq!(v.verify(&token(&claims(), &signer), NOW).unwrap().kid.as_deref(), Some("ec-384"));
}

#[test]
fn a_valid_eddsa_token_is_accepted_with_its_claims_mapped() {
    let signer = ed25519(Some("ed-1"));
    let v = verifier(&spec("idp", vec![JwtAlgorithm::EdDSA], vec![signer.jwk.clone()]));
    let t = v.verify(&token(&claims(), &signer), NOW).unwrap();
    assert_eq!((t.consumer.as_str(), t.kid.as_deref(), t.jti.as_deref()), ("alice", Some("ed-1"), Some("t-1")));
}

#[test]
fn a_valid_hs256_token_is_accepted_with_its_claims_mapped() {
    let v = hs_verifier();
    let t = v.verify(&token(&hs_claims(), &hs()), NOW).unwrap();
    assert_eq!(t.issuer, id("hs-idp"));
    assert_eq!(t.consumer, "alice");
    assert_eq!(t.kid, None, "an HMAC secret has no kid");
}

#[test]
fn a_token_without_kid_uses_the_only_key_that_fits_and_reports_its_kid() {
    let (v, signer) = es256_verifier();
    let t = v.verify(&sign_with(&header("ES256", None), &claims(), &signer), NOW).unwrap();
    assert_eq!(t.kid.as_deref(), Some("ec-1"), "revocation by issuer key must see the key used");
}

#[test]
fn fractional_numeric_dates_are_accepted() {
    let (v, signer) = es256_verifier();
    let mut c = claims();
    c["exp"] = json!((NOW + 600) as f64 + 0.5);
    c["nbf"] = json!(NOW as f64 - 0.5);
    assert_eq!(v.verify(&token(&c, &signer), NOW).unwrap().exp_s, NOW + 600);
}

// ---------------------------------------------------------------------------
// Algorithms and keys

#[test]
fn a_token_signed_with_alg_none_is_refused_in_any_casing() {
    let (v, signer) = rsa_verifier();
    let hs = hs_verifier();
    let real_sig = signature_of(&token(&claims(), &signer));
    for alg in ["none", "None", "NONE", "nOnE", "NoNe"] {
        for sig in [&[][..], &real_sig[..]] {
            let unsigned = format!("{}.{}", b64(header(alg, Some("rsa-1")).to_string()), b64(claims().to_string()));
            assert_eq!(refused(&v, &format!("{unsigned}.{}", b64(sig))), JwtRejection::AlgorithmNotAllowed, "{alg}");
            let unsigned = format!("{}.{}", b64(header(alg, None).to_string()), b64(hs_claims().to_string()));
            assert_eq!(refused(&hs, &format!("{unsigned}.{}", b64(sig))), JwtRejection::AlgorithmNotAllowed, "{alg}");
        }
    }
}

#[test]
fn algorithm_names_are_case_sensitive() {
    let v = hs_verifier();
    let t = sign_with(&header("hs256", None), &hs_claims(), &hs());
    assert_eq!(refused(&v, &t), JwtRejection::AlgorithmNotAllowed);
}

#[test]
fn an_hs256_token_keyed_with_the_rsa_public_key_is_refused_by_an_rs256_issuer() {
    let (v, _) = rsa_verifier();
    for public in [RSA_PUBLIC_PEM.as_bytes().to_vec(), RSA_PUBLIC_PEM.trim_end().as_bytes().to_vec()] {
        let forger = Signer { key: EncodingKey::from_secret(&public).unwrap(), alg: Algorithm::HS256, jwk: hs().jwk };
        for kid in [Some("rsa-1"), None] {
            let t = sign_with(&header("HS256", kid), &claims(), &forger);
            assert_eq!(refused(&v, &t), JwtRejection::AlgorithmNotAllowed);
        }
    }
}

#[test]
fn an_hmac_issuer_refuses_public_key_algorithms() {
    let v = hs_verifier();
    let signer = rsa(None);
    assert_eq!(refused(&v, &token(&hs_claims(), &signer)), JwtRejection::AlgorithmNotAllowed);
}

#[test]
fn a_public_key_issuer_cannot_be_given_an_hmac_secret_nor_mix_algorithms() {
    let s = spec("idp", vec![JwtAlgorithm::RS256], vec![rsa(Some("rsa-1")).jwk]);
    assert!(matches!(IssuerVerifier::new(&s, Some(HS_SECRET)), Err(BuildError::Secret(_))));
    let mixed = spec("idp", vec![JwtAlgorithm::RS256, JwtAlgorithm::HS256], vec![rsa(Some("rsa-1")).jwk]);
    assert!(matches!(IssuerVerifier::new(&mixed, Some(HS_SECRET)), Err(BuildError::InvalidSpec(_))));
}

#[test]
fn hmac_issuers_need_a_secret_at_least_as_long_as_the_hash() {
    assert!(matches!(IssuerVerifier::new(&hs_spec("hs-idp"), None), Err(BuildError::Secret(_))));
    assert!(matches!(IssuerVerifier::new(&hs_spec("hs-idp"), Some(&[7u8; 31])), Err(BuildError::Secret(_))));
    let mut s = hs_spec("hs-idp");
    s.algorithms = vec![JwtAlgorithm::HS256, JwtAlgorithm::HS512];
    assert!(matches!(IssuerVerifier::new(&s, Some(&[7u8; 63])), Err(BuildError::Secret(_))));
    IssuerVerifier::new(&s, Some(&[7u8; 64])).unwrap();
}

#[test]
fn an_unknown_kid_is_refused_with_its_own_reason() {
    let (v, signer) = es256_verifier();
    let t = sign_with(&header("ES256", Some("rotated-away")), &claims(), &signer);
    assert_eq!(refused(&v, &t), JwtRejection::UnknownKid);
    assert_eq!(JwtRejection::UnknownKid.reason(), "unknown_kid");
}

#[test]
fn an_issuer_without_keys_yet_refuses_with_unknown_kid() {
    let mut s = spec("idp", vec![JwtAlgorithm::ES256], vec![]);
    s.jwks = None;
    s.jwks_url = Some("https://idp.example.com/jwks.json".into());
    let v = verifier(&s);
    let signer = p256(None);
    assert_eq!(refused(&v, &token(&claims(), &signer)), JwtRejection::UnknownKid);
}

#[test]
fn a_token_without_kid_is_refused_when_several_keys_fit() {
    let (a, b) = (p256(None), p256(None));
    let v = verifier(&spec("idp", vec![JwtAlgorithm::ES256], vec![a.jwk.clone(), b.jwk.clone()]));
    assert_eq!(refused(&v, &token(&claims(), &a)), JwtRejection::AmbiguousKey);
}

#[test]
fn a_jwk_with_an_alg_only_verifies_that_alg() {
    let mut signer = rsa(Some("rsa-1"));
    signer.jwk.alg = Some(JwtAlgorithm::PS256);
    let v = verifier(&spec("idp", vec![JwtAlgorithm::RS256, JwtAlgorithm::PS256], vec![signer.jwk.clone()]));
    assert_eq!(refused(&v, &token(&claims(), &signer)), JwtRejection::KeyAlgorithmMismatch, "RS256 on a PS256 key");
    let no_kid = sign_with(&header("RS256", None), &claims(), &signer);
    assert_eq!(refused(&v, &no_kid), JwtRejection::UnknownKid, "no key serves RS256");
    signer.alg = Algorithm::PS256;
    v.verify(&token(&claims(), &signer), NOW).unwrap();
}

#[test]
fn a_kid_naming_a_key_of_another_type_or_curve_is_refused() {
    let ec = p256(Some("ec-1"));
    let rsa = rsa(Some("rsa-1"));
    let v = verifier(&spec(
        "idp",
        vec![JwtAlgorithm::RS256, JwtAlgorithm::ES256, JwtAlgorithm::ES384],
        vec![ec.jwk.clone(), rsa.jwk.clone()],
    ));
    let t = sign_with(&header("RS256", Some("ec-1")), &claims(), &rsa);
    assert_eq!(refused(&v, &t), JwtRejection::KeyAlgorithmMismatch);
    let p384 = p384(None);
    let t = sign_with(&header("ES384", Some("ec-1")), &claims(), &p384);
    assert_eq!(refused(&v, &t), JwtRejection::KeyAlgorithmMismatch, "a P-256 key never verifies ES384");
}

#[test]
fn weak_or_broken_keys_are_refused_when_building() {
    let mut weak = rsa(Some("weak")).jwk;
    weak.n = Some(b64([0xC1u8; 128]));
    let e = IssuerVerifier::new(&spec("idp", vec![JwtAlgorithm::RS256], vec![weak]), None).unwrap_err();
    assert!(matches!(e, BuildError::InvalidSpec(_)), "{e}");

    let mut even_e = rsa(Some("even")).jwk;
    even_e.e = Some(b64([1u8, 0, 0]));
    let e = IssuerVerifier::new(&spec("idp", vec![JwtAlgorithm::RS256], vec![even_e]), None).unwrap_err();
    assert!(matches!(&e, BuildError::InvalidKey { key, .. } if key.contains("even")), "{e}");

    let mut off_curve = p256(Some("bad-point")).jwk;
    off_curve.x = Some(b64([1u8; 32]));
    off_curve.y = Some(b64([2u8; 32]));
    let e = IssuerVerifier::new(&spec("idp", vec![JwtAlgorithm::ES256], vec![off_curve]), None).unwrap_err();
    assert!(matches!(&e, BuildError::InvalidKey { key, .. } if key.contains("bad-point")), "{e}");

    let mut short_ed = ed25519(Some("short")).jwk;
    short_ed.x = Some(b64([9u8; 31]));
    let e = IssuerVerifier::new(&spec("idp", vec![JwtAlgorithm::EdDSA], vec![short_ed]), None).unwrap_err();
    assert!(matches!(e, BuildError::InvalidKey { .. }), "{e}");
}

// ---------------------------------------------------------------------------
// Signatures

#[test]
fn a_stripped_signature_is_refused() {
    let (rv, rs) = rsa_verifier();
    let (ev, es) = es256_verifier();
    let hv = hs_verifier();
    for (v, t) in [(&rv, token(&claims(), &rs)), (&ev, token(&claims(), &es)), (&hv, token(&hs_claims(), &hs()))] {
        let (message, _) = t.rsplit_once('.').unwrap();
        assert_eq!(refused(v, &format!("{message}.")), JwtRejection::BadSignature);
    }
}

#[test]
fn a_signature_from_another_key_is_refused() {
    let (ev, _) = es256_verifier();
    let foreign = p256(Some("ec-1"));
    assert_eq!(refused(&ev, &token(&claims(), &foreign)), JwtRejection::BadSignature);

    let ed = ed25519(Some("ed-1"));
    let edv = verifier(&spec("idp", vec![JwtAlgorithm::EdDSA], vec![ed.jwk.clone()]));
    assert_eq!(refused(&edv, &token(&claims(), &ed25519(Some("ed-1")))), JwtRejection::BadSignature);

    let other_secret = Signer { key: EncodingKey::from_secret(&[0x55; 32]).unwrap(), ..hs() };
    assert_eq!(refused(&hs_verifier(), &token(&hs_claims(), &other_secret)), JwtRejection::BadSignature);

    // One RSA test key: take its signature over other claims.
    let (rv, rs) = rsa_verifier();
    let mut other = claims();
    other["sub"] = json!("mallory");
    let moved = replace_signature(&token(&claims(), &rs), &signature_of(&token(&other, &rs)));
    assert_eq!(refused(&rv, &moved), JwtRejection::BadSignature);
    let mut flipped = signature_of(&token(&claims(), &rs));
    flipped[10] ^= 1;
    assert_eq!(refused(&rv, &replace_signature(&token(&claims(), &rs), &flipped)), JwtRejection::BadSignature);
}

#[test]
fn es256_signatures_with_a_zero_r_or_s_are_refused() {
    let (v, signer) = es256_verifier();
    let t = token(&claims(), &signer);
    let sig = signature_of(&t);
    assert_eq!(sig.len(), 64);
    let mut zero_r = sig.clone();
    zero_r[..32].fill(0);
    let mut zero_s = sig.clone();
    zero_s[32..].fill(0);
    for bad in [vec![0u8; 64], zero_r, zero_s, sig[..63].to_vec()] {
        assert_eq!(refused(&v, &replace_signature(&t, &bad)), JwtRejection::BadSignature);
    }
    v.verify(&t, NOW).unwrap();
}

// ---------------------------------------------------------------------------
// Headers

#[test]
fn tokens_carrying_jku_x5u_jwk_or_x5c_headers_are_refused() {
    let (v, signer) = es256_verifier();
    let jwk = serde_json::to_value(&signer.jwk).unwrap();
    let cases = [
        ("jku", json!("https://attacker.example/jwks.json")),
        ("x5u", json!("https://attacker.example/cert.pem")),
        ("jwk", jwk),
        ("x5c", json!(["MIIB"])),
        ("jku", Value::Null),
    ];
    for (name, value) in cases {
        let mut h = header("ES256", Some("ec-1"));
        h[name] = value;
        assert_eq!(refused(&v, &sign_with(&h, &claims(), &signer)), JwtRejection::ForbiddenHeader, "{name}");
    }
    // Escaped member names are the same names.
    let h = r#"{"alg":"ES256","kid":"ec-1","\u006aku":"https://attacker.example/"}"#;
    let t = sign_message(&format!("{}.{}", b64(h), b64(claims().to_string())), &signer);
    assert_eq!(refused(&v, &t), JwtRejection::ForbiddenHeader);
}

#[test]
fn a_crit_header_is_refused() {
    let (v, signer) = es256_verifier();
    for crit in [json!(["exp"]), json!(["b64"]), json!([]), json!("x")] {
        let mut h = header("ES256", Some("ec-1"));
        h["crit"] = crit.clone();
        assert_eq!(refused(&v, &sign_with(&h, &claims(), &signer)), JwtRejection::CriticalHeader, "{crit}");
    }
}

// ---------------------------------------------------------------------------
// Shape

#[test]
fn an_oversized_token_is_refused() {
    let (v, signer) = es256_verifier();
    let mut c = claims();
    c["pad"] = json!("x".repeat(9000));
    let big = token(&c, &signer);
    assert_eq!(refused(&v, &big), JwtRejection::TooLarge);
    let set = IssuerSet::new(vec![Arc::new(v)]);
    assert_eq!(set.verify(&big, &[], NOW), Err(JwtRejection::TooLarge));
    let huge = "a".repeat(ABSOLUTE_MAX_TOKEN_BYTES + 1);
    assert_eq!(IssuerSet::new(vec![]).verify(&huge, &[], NOW), Err(JwtRejection::TooLarge));
}

#[test]
fn a_token_over_its_issuers_limit_is_refused_even_if_another_issuer_allows_more() {
    let signer = p256(Some("ec-1"));
    let mut small = spec("small", vec![JwtAlgorithm::ES256], vec![signer.jwk.clone()]);
    small.max_token_bytes = 1024;
    let mut roomy = hs_spec("roomy");
    roomy.max_token_bytes = 16 * 1024;
    let set = IssuerSet::new(vec![
        Arc::new(verifier(&small)),
        Arc::new(IssuerVerifier::new(&roomy, Some(HS_SECRET)).unwrap()),
    ]);
    let mut c = claims();
    c["pad"] = json!("x".repeat(2000));
    assert_eq!(set.verify(&token(&c, &signer), &[], NOW), Err(JwtRejection::TooLarge));
    set.verify(&token(&claims(), &signer), &[], NOW).unwrap();
}

#[test]
fn malformed_base64url_is_refused() {
    let signer = hs();
    let v = hs_verifier();
    let h = r#"{"alg":"HS256" }"#;
    let p = hs_claims().to_string();
    let (h64, p64) = (b64(h), b64(&p));
    assert_ne!(h64.len() % 4, 0, "the header needs trailing bits for this test");
    let flip_last = |s: &str| {
        let alphabet = "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_";
        let last = alphabet.find(s.chars().last().unwrap()).unwrap() ^ 1;
        format!("{}{}", &s[..s.len() - 1], &alphabet[last..=last])
    };
    let bad_messages = [
        format!("{h64}==.{p64}"),                          // padding
        format!("{}.{p64}", h64.replace('e', "+")),        // standard alphabet
        format!("{}.{p64}", b64(h).replacen('e', "/", 1)), // standard alphabet
        format!("{} .{p64}", h64),                         // whitespace
        format!("{}.{p64}", flip_last(&h64)),              // non-canonical trailing bits
        format!("{h64}.{p64}é"),                           // not ASCII
    ];
    for message in bad_messages {
        assert_eq!(refused(&v, &sign_message(&message, &signer)), JwtRejection::Malformed, "{message}");
    }
    let good = sign_message(&format!("{h64}.{p64}"), &signer);
    v.verify(&good, NOW).unwrap();
    let (message, sig) = good.rsplit_once('.').unwrap();
    assert_eq!(refused(&v, &format!("{message}.{sig}=")), JwtRejection::Malformed, "padded signature");
    assert_eq!(refused(&v, &format!("{message}.{}", sig.replace('-', "+"))), JwtRejection::Malformed);
}

#[test]
fn tokens_with_other_than_three_segments_are_refused() {
    let v = hs_verifier();
    let t = token(&hs_claims(), &hs());
    let (h, rest) = t.split_once('.').unwrap();
    let jwe_like = format!("{h}.{}.{}.{}.{}", b64("key"), b64("iv"), b64("ct"), b64("tag"));
    for bad in [
        format!("{t}.xyz"),
        format!("{t}."),
        jwe_like,
        rest.to_string(),
        h.to_string(),
        String::new(),
        "..".into(),
        format!(".{t}"),
    ] {
        assert_eq!(refused(&v, &bad), JwtRejection::Malformed, "{bad}");
        let set = IssuerSet::new(vec![Arc::new(hs_verifier())]);
        assert_eq!(set.verify(&bad, &[], NOW), Err(JwtRejection::Malformed), "{bad}");
    }
}

#[test]
fn a_header_or_payload_that_is_not_one_json_object_is_refused() {
    let v = hs_verifier();
    let signer = hs();
    let h = header("HS256", None).to_string();
    let p = hs_claims().to_string();
    let exp = NOW + 600;
    let cases = [
        (r#"["HS256"]"#.to_string(), p.clone()),
        (h.clone(), format!("[{p}]")),
        (h.clone(), r#""alice""#.to_string()),
        (h.clone(), "{".to_string()),
        (h.clone(), format!("{p} {{}}")),
        (format!("{h}x"), p.clone()),
        (r#"{"alg":"HS256","alg":"HS256"}"#.to_string(), p.clone()),
        (r#"{"alg":"HS256","kid":7}"#.to_string(), p.clone()),
        (r#"{"alg":256}"#.to_string(), p.clone()),
        (r#"{"typ":"JWT"}"#.to_string(), p.clone()),
        (h.clone(), format!(r#"{{"iss":"{HS_ISS}","sub":"alice","aud":"api","exp":{exp},"exp":{exp}}}"#)),
        (h.clone(), format!(r#"{{"iss":"{HS_ISS}","sub":"alice","sub":"root","aud":"api","exp":{exp}}}"#)),
        (String::new(), p.clone()),
        (h.clone(), String::new()),
    ];
    for (h, p) in cases {
        let t = sign_message(&format!("{}.{}", b64(&h), b64(&p)), &signer);
        assert_eq!(refused(&v, &t), JwtRejection::Malformed, "{h} . {p}");
    }
}

// ---------------------------------------------------------------------------
// Claims

#[test]
fn a_token_expired_beyond_the_leeway_is_refused_and_one_within_it_accepted() {
    let (v, signer) = es256_verifier();
    let with_exp = |exp: u64| {
        let mut c = claims();
        c["exp"] = json!(exp);
        c["iat"] = json!(exp - 600);
        token(&c, &signer)
    };
    v.verify(&with_exp(NOW - LEEWAY + 1), NOW).unwrap();
    v.verify(&with_exp(NOW), NOW).unwrap();
    assert_eq!(refused(&v, &with_exp(NOW - LEEWAY)), JwtRejection::Expired);
    assert_eq!(refused(&v, &with_exp(NOW - 3600)), JwtRejection::Expired);
}

#[test]
fn a_token_whose_nbf_is_in_the_future_is_refused() {
    let (v, signer) = es256_verifier();
    let with_nbf = |nbf: u64| {
        let mut c = claims();
        c["nbf"] = json!(nbf);
        token(&c, &signer)
    };
    assert_eq!(refused(&v, &with_nbf(NOW + LEEWAY + 1)), JwtRejection::NotYetValid);
    v.verify(&with_nbf(NOW + LEEWAY), NOW).unwrap();
    v.verify(&with_nbf(NOW - 10), NOW).unwrap();
}

#[test]
fn a_token_issued_in_the_future_is_refused() {
    let (v, signer) = es256_verifier();
    let mut c = claims();
    c["iat"] = json!(NOW + LEEWAY + 1);
    assert_eq!(refused(&v, &token(&c, &signer)), JwtRejection::NotYetValid);
    c["iat"] = json!(NOW + 5);
    v.verify(&token(&c, &signer), NOW).unwrap();
}

#[test]
fn a_token_without_a_numeric_exp_is_refused() {
    let (v, signer) = es256_verifier();
    let mut c = claims();
    c.as_object_mut().unwrap().remove("exp");
    assert_eq!(refused(&v, &token(&c, &signer)), JwtRejection::MissingExp);
    for bad in [json!("1700000600"), json!(-5), json!(null), json!(true), json!([NOW + 600])] {
        c["exp"] = bad.clone();
        assert_eq!(refused(&v, &token(&c, &signer)), JwtRejection::InvalidClaim, "{bad}");
    }
    let mut c = claims();
    c["nbf"] = json!("yesterday");
    assert_eq!(refused(&v, &token(&c, &signer)), JwtRejection::InvalidClaim);
}

#[test]
fn a_token_expiring_more_than_366_days_ahead_is_refused() {
    let (v, signer) = es256_verifier();
    let mut c = claims();
    c["exp"] = json!(NOW + MAX_EXP_AHEAD_S + 1);
    assert_eq!(refused(&v, &token(&c, &signer)), JwtRejection::ExpiryTooFar);
    c["exp"] = json!(u64::MAX);
    assert_eq!(refused(&v, &token(&c, &signer)), JwtRejection::ExpiryTooFar);
    c["exp"] = json!(1e300);
    assert_eq!(refused(&v, &token(&c, &signer)), JwtRejection::ExpiryTooFar);
    c["exp"] = json!(NOW + MAX_EXP_AHEAD_S);
    v.verify(&token(&c, &signer), NOW).unwrap();
    assert_eq!(MAX_EXP_AHEAD_S, 366 * 24 * 3600);
}

#[test]
fn a_token_from_another_issuer_is_refused() {
    let (v, signer) = es256_verifier();
    let set =
        IssuerSet::new(vec![Arc::new(verifier(&spec("idp", vec![JwtAlgorithm::ES256], vec![signer.jwk.clone()])))]);
    for other in [json!("https://idp.example.com"), json!("https://IDP.example.com/"), json!("https://evil.example/")] {
        let mut c = claims();
        c["iss"] = other.clone();
        let t = token(&c, &signer);
        assert_eq!(refused(&v, &t), JwtRejection::WrongIssuer, "{other}");
        assert_eq!(set.verify(&t, &[], NOW), Err(JwtRejection::UnknownIssuer), "{other}");
    }
    let mut c = claims();
    c.as_object_mut().unwrap().remove("iss");
    assert_eq!(refused(&v, &token(&c, &signer)), JwtRejection::WrongIssuer);
    assert_eq!(set.verify(&token(&c, &signer), &[], NOW), Err(JwtRejection::UnknownIssuer));
    c["iss"] = json!([ISS]);
    assert_eq!(set.verify(&token(&c, &signer), &[], NOW), Err(JwtRejection::UnknownIssuer));
}

#[test]
fn a_token_for_another_audience_is_refused_in_string_and_array_form() {
    let (v, signer) = es256_verifier();
    let with_aud = |aud: Option<Value>| {
        let mut c = claims();
        match aud {
            Some(aud) => c["aud"] = aud,
            None => {
                c.as_object_mut().unwrap().remove("aud");
            }
        }
        token(&c, &signer)
    };
    assert_eq!(refused(&v, &with_aud(Some(json!("other")))), JwtRejection::WrongAudience);
    assert_eq!(refused(&v, &with_aud(Some(json!(["other", "API"])))), JwtRejection::WrongAudience);
    assert_eq!(refused(&v, &with_aud(Some(json!([])))), JwtRejection::WrongAudience);
    assert_eq!(refused(&v, &with_aud(None)), JwtRejection::WrongAudience);
    assert_eq!(refused(&v, &with_aud(Some(json!(42)))), JwtRejection::InvalidClaim);
    assert_eq!(refused(&v, &with_aud(Some(json!(["api", 42])))), JwtRejection::InvalidClaim);
    v.verify(&with_aud(Some(json!(["other", "api"]))), NOW).unwrap();
    v.verify(&with_aud(Some(json!("api"))), NOW).unwrap();

    let mut open = spec("idp", vec![JwtAlgorithm::ES256], vec![signer.jwk.clone()]);
    open.audiences.clear();
    verifier(&open).verify(&with_aud(None), NOW).unwrap();
}

#[test]
fn a_missing_or_non_string_consumer_claim_is_refused() {
    let (v, signer) = es256_verifier();
    let mut c = claims();
    c.as_object_mut().unwrap().remove("sub");
    assert_eq!(refused(&v, &token(&c, &signer)), JwtRejection::MissingConsumerClaim);
    for bad in [
        json!(42),
        json!(null),
        json!(["alice"]),
        json!({"id": "alice"}),
        json!(""),
        json!("al\u{7}ice"),
        json!("a".repeat(257)),
    ] {
        c["sub"] = bad.clone();
        assert_eq!(refused(&v, &token(&c, &signer)), JwtRejection::InvalidConsumerClaim, "{bad}");
    }
    c["sub"] = json!("a".repeat(256));
    v.verify(&token(&c, &signer), NOW).unwrap();
}

#[test]
fn the_consumer_comes_from_the_issuers_consumer_claim() {
    let signer = p256(Some("ec-1"));
    let mut s = spec("idp", vec![JwtAlgorithm::ES256], vec![signer.jwk.clone()]);
    s.consumer_claim = "client_id".into();
    let v = Arc::new(verifier(&s));
    let mut c = claims();
    c["client_id"] = json!("svc-orders");
    assert_eq!(v.verify(&token(&c, &signer), NOW).unwrap().consumer, "svc-orders");
    let set = IssuerSet::new(vec![v.clone(), Arc::new(hs_verifier())]);
    assert_eq!(set.verify(&token(&c, &signer), &[], NOW).unwrap().consumer, "svc-orders");
    c.as_object_mut().unwrap().remove("client_id");
    assert_eq!(refused(&v, &token(&c, &signer)), JwtRejection::MissingConsumerClaim, "sub is not the claim");
}

#[test]
fn scopes_come_from_scope_and_scp() {
    let (v, signer) = es256_verifier();
    let scopes = |extra: Value| {
        let mut c = claims();
        for (k, val) in extra.as_object().unwrap() {
            c[k] = val.clone();
        }
        v.verify(&token(&c, &signer), NOW).map(|t| t.scopes)
    };
    assert_eq!(scopes(json!({"scope": "read  write"})).unwrap(), vec!["read", "write"]);
    assert_eq!(scopes(json!({"scp": ["write", "admin"]})).unwrap(), vec!["write", "admin"]);
    assert_eq!(scopes(json!({"scp": "a b"})).unwrap(), vec!["a", "b"]);
    assert_eq!(
        scopes(json!({"scope": "read write", "scp": ["write", "admin"]})).unwrap(),
        vec!["read", "write", "admin"]
    );
    assert_eq!(scopes(json!({})).unwrap(), Vec::<String>::new());
    assert_eq!(scopes(json!({"scope": ""})).unwrap(), Vec::<String>::new());
    assert_eq!(scopes(json!({"scope": ["read"]})), Err(JwtRejection::InvalidClaim));
    assert_eq!(scopes(json!({"scp": ["read", 1]})), Err(JwtRejection::InvalidClaim));
    assert_eq!(scopes(json!({"scp": 7})), Err(JwtRejection::InvalidClaim));
    let many: Vec<String> = (0..=MAX_SCOPES).map(|i| format!("s{i}")).collect();
    assert_eq!(scopes(json!({"scope": many.join(" ")})), Err(JwtRejection::InvalidClaim));
    assert_eq!(scopes(json!({"scp": many})), Err(JwtRejection::InvalidClaim));
    assert_eq!(scopes(json!({"scp": many[..MAX_SCOPES]})).unwrap().len(), MAX_SCOPES);
}

#[test]
fn a_jti_must_be_revocable_text() {
    let (v, signer) = es256_verifier();
    let mut c = claims();
    for bad in [json!(7), json!(""), json!("j".repeat(257)), json!("a\nb")] {
        c["jti"] = bad.clone();
        assert_eq!(refused(&v, &token(&c, &signer)), JwtRejection::InvalidClaim, "{bad}");
    }
    c.as_object_mut().unwrap().remove("jti");
    assert_eq!(v.verify(&token(&c, &signer), NOW).unwrap().jti, None);
}

// ---------------------------------------------------------------------------
// The set

#[test]
fn the_issuer_set_picks_the_issuer_by_iss_and_honours_the_allowed_list() {
    let (es, signer) = es256_verifier();
    let set = IssuerSet::new(vec![Arc::new(es), Arc::new(hs_verifier())]);
    let t = token(&claims(), &signer);
    assert_eq!(set.verify(&t, &[], NOW).unwrap().issuer, id("idp"));
    assert_eq!(set.verify(&t, &[id("idp")], NOW).unwrap().issuer, id("idp"));
    assert_eq!(set.verify(&t, &[id("hs-idp")], NOW), Err(JwtRejection::IssuerNotAllowed));
    let h = token(&hs_claims(), &hs());
    assert_eq!(set.verify(&h, &[id("idp"), id("hs-idp")], NOW).unwrap().issuer, id("hs-idp"));
    assert_eq!(set.verify(&h, &[id("idp")], NOW), Err(JwtRejection::IssuerNotAllowed));
    // Rejections of the chosen issuer come through.
    let mut expired = claims();
    expired["exp"] = json!(NOW - 3600);
    assert_eq!(set.verify(&token(&expired, &signer), &[], NOW), Err(JwtRejection::Expired));
}

#[test]
fn issuer_objects_sharing_an_iss_are_each_tried() {
    let a = p256(Some("a"));
    let b = p256(Some("b"));
    let set = IssuerSet::new(vec![
        Arc::new(verifier(&spec("idp-a", vec![JwtAlgorithm::ES256], vec![a.jwk.clone()]))),
        Arc::new(verifier(&spec("idp-b", vec![JwtAlgorithm::ES256], vec![b.jwk.clone()]))),
    ]);
    assert_eq!(set.verify(&token(&claims(), &b), &[], NOW).unwrap().issuer, id("idp-b"));
    assert_eq!(set.verify(&token(&claims(), &a), &[], NOW).unwrap().issuer, id("idp-a"));
    assert_eq!(set.verify(&token(&claims(), &b), &[id("idp-a")], NOW), Err(JwtRejection::UnknownKid));
}

// ---------------------------------------------------------------------------
// Fetched keys

#[test]
fn fetched_jwks_replace_the_keys_and_skip_keys_not_for_signing() {
    let mut s = spec("idp", vec![JwtAlgorithm::ES256, JwtAlgorithm::RS256], vec![]);
    s.jwks = None;
    s.jwks_url = Some("https://idp.example.com/jwks.json".into());
    let v = verifier(&s);
    let signer = p256(Some("ec-new"));
    let t = token(&claims(), &signer);
    assert_eq!(refused(&v, &t), JwtRejection::UnknownKid);

    let rsa = rsa(Some("enc-key")).jwk;
    let doc = json!({"keys": [
        {"kty": "oct", "kid": "sym", "k": b64(HS_SECRET)},
        {"kty": "RSA", "kid": "enc-key", "use": "enc", "n": rsa.n, "e": rsa.e},
        {"kty": "RSA", "kid": "oaep", "alg": "RSA-OAEP", "n": rsa.n, "e": rsa.e},
        {"kty": "RSA", "kid": "wrap", "key_ops": ["wrapKey"], "n": rsa.n, "e": rsa.e},
        {"kty": "OKP", "kid": "x", "crv": "X25519", "x": b64([1u8; 32])},
        {"kty": "EC", "kid": "p521", "crv": "P-521", "x": "AA", "y": "AA"},
        {"kty": "PQ", "kid": "future"},
        serde_json::to_value(&signer.jwk).unwrap(),
    ]});
    let fetched = v.with_fetched_jwks(doc.to_string().as_bytes()).unwrap();
    assert_eq!(fetched.verify(&t, NOW).unwrap().kid.as_deref(), Some("ec-new"));
    let enc = sign_with(&header("RS256", Some("enc-key")), &claims(), &self::rsa(None));
    assert_eq!(refused(&fetched, &enc), JwtRejection::UnknownKid, "encryption keys never verify");
    assert_eq!(refused(&v, &t), JwtRejection::UnknownKid, "the original is unchanged");
}

#[test]
fn fetched_jwks_get_the_checks_of_inline_keys() {
    let (v, _) = es256_verifier();
    let weak = json!({"keys": [{"kty": "RSA", "kid": "weak", "use": "sig", "n": b64([0xC1u8; 128]), "e": "AQAB"}]});
    assert!(matches!(v.with_fetched_jwks(weak.to_string().as_bytes()), Err(BuildError::InvalidKey { .. })));
    let off_curve = json!({"keys": [{"kty": "EC", "crv": "P-256", "x": b64([1u8; 32]), "y": b64([2u8; 32])}]});
    assert!(matches!(v.with_fetched_jwks(off_curve.to_string().as_bytes()), Err(BuildError::InvalidKey { .. })));
    let k = p256(Some("dup")).jwk;
    let dup = json!({"keys": [k, k]});
    assert!(matches!(v.with_fetched_jwks(dup.to_string().as_bytes()), Err(BuildError::InvalidKey { .. })));
    let many = json!({"keys": (0..33).map(|i| json!({"kty": "EC", "kid": format!("k{i}"), "crv": "P-256", "x": k.x, "y": k.y})).collect::<Vec<_>>()});
    assert!(matches!(v.with_fetched_jwks(many.to_string().as_bytes()), Err(BuildError::TooManyKeys { .. })));
    for garbage in [&b"not json"[..], b"[]", b"{\"keys\": 5}", b"{\"keys\": [1]}"] {
        assert!(matches!(v.with_fetched_jwks(garbage), Err(BuildError::JwksDocument(_))));
    }
    let huge = vec![b' '; MAX_JWKS_DOCUMENT_BYTES + 1];
    assert!(matches!(v.with_fetched_jwks(&huge), Err(BuildError::JwksTooLarge { .. })));
    assert_eq!(hs_verifier().with_fetched_jwks(b"{\"keys\":[]}").unwrap_err(), BuildError::HmacIssuerTakesNoKeys);
}

// ---------------------------------------------------------------------------
// Reasons and robustness

#[test]
fn verifiers_can_be_shared_across_threads() {
    fn shareable<T: Send + Sync>() {}
    shareable::<IssuerVerifier>();
    shareable::<IssuerSet>();
    shareable::<JwtRejection>();
}

#[test]
fn every_rejection_has_a_distinct_snake_case_reason() {
    let reasons: Vec<&str> = JwtRejection::ALL.iter().map(|r| r.reason()).collect();
    for (i, r) in reasons.iter().enumerate() {
        assert!(r.bytes().all(|b| b.is_ascii_lowercase() || b == b'_'), "{r}");
        assert!(!reasons[..i].contains(r), "{r} twice");
    }
    assert_eq!(JwtRejection::BadSignature.reason(), "bad_signature");
}

fn fuzz_set() -> &'static IssuerSet {
    static SET: OnceLock<IssuerSet> = OnceLock::new();
    SET.get_or_init(|| {
        let ec = fuzz_signer();
        let ec = verifier(&spec("idp", vec![JwtAlgorithm::ES256], vec![ec.jwk.clone()]));
        IssuerSet::new(vec![Arc::new(ec), Arc::new(hs_verifier())])
    })
}

fn fuzz_signer() -> &'static Signer {
    static SIGNER: OnceLock<Signer> = OnceLock::new();
    SIGNER.get_or_init(|| p256(Some("ec-1")))
}

fn json_leaf() -> impl Strategy<Value = Value> {
    prop_oneof![
        Just(Value::Null),
        any::<bool>().prop_map(Value::Bool),
        any::<i64>().prop_map(|n| json!(n)),
        any::<u64>().prop_map(|n| json!(n)),
        any::<f64>().prop_map(|f| serde_json::Number::from_f64(f).map_or(Value::Null, Value::Number)),
        (NOW - 100..NOW + 1000).prop_map(|n| json!(n)),
        Just(json!(ISS)),
        Just(json!(HS_ISS)),
        Just(json!("api")),
        ".{0,12}".prop_map(Value::String),
    ]
}

fn json_value() -> impl Strategy<Value = Value> {
    json_leaf().prop_recursive(3, 24, 6, |inner| {
        prop_oneof![
            prop::collection::vec(inner.clone(), 0..6).prop_map(Value::Array),
            prop::collection::btree_map("[a-z]{1,4}", inner, 0..4).prop_map(|m| Value::Object(m.into_iter().collect())),
        ]
    })
}

fn claim_name() -> impl Strategy<Value = String> {
    prop_oneof![
        prop::sample::select(vec!["iss", "sub", "aud", "exp", "nbf", "iat", "jti", "scope", "scp", "client_id"])
            .prop_map(String::from),
        "[a-z]{1,6}",
    ]
}

fn header_value() -> impl Strategy<Value = Value> {
    let alg = prop_oneof![
        prop::sample::select(vec!["ES256", "HS256", "RS256", "none", "EdDSA", "hs256"]).prop_map(|s| json!(s)),
        json_leaf(),
    ];
    let kid = prop::option::of(prop_oneof![Just(json!("ec-1")), json_leaf()]);
    let extra = prop::collection::btree_map(
        prop::sample::select(vec!["typ", "jku", "x5c", "crit", "cty", "b64"]).prop_map(String::from),
        json_value(),
        0..2,
    );
    (alg, kid, extra).prop_map(|(alg, kid, extra)| {
        let mut h = json!({"alg": alg});
        if let Some(kid) = kid {
            h["kid"] = kid;
        }
        for (k, v) in extra {
            h[k] = v;
        }
        h
    })
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 256, ..ProptestConfig::default() })]

    #[test]
    fn arbitrary_strings_never_panic(s in ".{0,600}") {
        let _ = fuzz_set().verify(&s, &[], NOW);
    }

    #[test]
    fn arbitrary_segments_never_panic(
        parts in prop::collection::vec(prop::collection::vec(any::<u8>(), 0..200), 0..5),
        dots in "[A-Za-z0-9_=+/.-]{0,300}",
    ) {
        let token = parts.iter().map(b64).collect::<Vec<_>>().join(".");
        let _ = fuzz_set().verify(&token, &[], NOW);
        let _ = fuzz_set().verify(&dots, &[], NOW);
    }

    #[test]
    fn arbitrary_signed_headers_and_claims_never_panic(
        header in header_value(),
        claims in prop::collection::btree_map(claim_name(), json_value(), 0..10),
        sig in prop::collection::vec(any::<u8>(), 0..100),
        sign_with_hs in any::<bool>(),
    ) {
        let claims = Value::Object(claims.into_iter().collect());
        let message = format!("{}.{}", b64(header.to_string()), b64(claims.to_string()));
        let signer = if sign_with_hs { hs() } else { Signer { key: fuzz_signer().key.clone(), alg: Algorithm::ES256, jwk: public_jwk("EC", None) } };
        let _ = fuzz_set().verify(&sign_message(&message, &signer), &[], NOW);
        let _ = fuzz_set().verify(&format!("{message}.{}", b64(&sig)), &[id("idp")], NOW);
    }
}
