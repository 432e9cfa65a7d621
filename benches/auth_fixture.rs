//! Writes what the load script needs to measure authentication: two JWT
//! issuers (RS256 with the RSA key given as a PEM file, ES256 with a key
//! made here), each with its public key inline as a JWKS, and a token of
//! each for consumer `bench`, valid for a day.
//!
//!   auth_fixture RSA_PRIVATE_KEY.pem OUT_DIR
//!
//! OUT_DIR gets `issuers.yaml` (for `raftgatectl issuer apply -f`),
//! `rs256.token` and `es256.token`.

use base64::Engine;
use jsonwebtoken::{Algorithm, EncodingKey, Header};
use serde_json::json;

fn b64(b: &[u8]) -> String {
    base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(b)
}

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let args: Vec<String> = std::env::args().collect();
    let [_, rsa_pem, out] = args.as_slice() else {
        return Err("usage: auth_fixture RSA_PRIVATE_KEY.pem OUT_DIR".into());
    };
    let out = std::path::Path::new(out);
    let rsa = EncodingKey::from_rsa_pem(&std::fs::read(rsa_pem)?)?;
    let jwk = jsonwebtoken::jwk::Jwk::from_encoding_key(&rsa, Algorithm::RS256)?;
    let jsonwebtoken::jwk::AlgorithmParameters::RSA(p) = jwk.algorithm else { return Err("not an RSA key".into()) };
    let rsa_jwk = json!({"kty": "RSA", "kid": "rs-1", "alg": "RS256", "n": p.n, "e": p.e});

    let pair = rcgen::KeyPair::generate_for(&rcgen::PKCS_ECDSA_P256_SHA256)?;
    let ec = EncodingKey::from_ec_pem(pair.serialize_pem().as_bytes())?;
    let point = pair.public_key_raw();
    let (x, y) = point[1..].split_at(32);
    let ec_jwk = json!({"kty": "EC", "kid": "es-1", "crv": "P-256", "x": b64(x), "y": b64(y)});

    let issuers = [
        json!({"id": "rs", "issuer": "https://rs.bench/", "algorithms": ["RS256"], "jwks": {"keys": [rsa_jwk]}}),
        json!({"id": "es", "issuer": "https://es.bench/", "algorithms": ["ES256"], "jwks": {"keys": [ec_jwk]}}),
    ];
    std::fs::write(out.join("issuers.yaml"), serde_json::to_string(&issuers)?)?;
    let exp = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH)?.as_secs() + 86_400;
    for (name, alg, kid, iss, key) in [
        ("rs256", Algorithm::RS256, "rs-1", "https://rs.bench/", &rsa),
        ("es256", Algorithm::ES256, "es-1", "https://es.bench/", &ec),
    ] {
        let mut header = Header::new(alg);
        header.kid = Some(kid.into());
        let token = jsonwebtoken::encode(&header, &json!({"iss": iss, "sub": "bench", "exp": exp}), key)?;
        std::fs::write(out.join(format!("{name}.token")), token)?;
    }
    Ok(())
}
