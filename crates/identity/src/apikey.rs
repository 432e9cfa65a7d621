//! API keys: how they are made, and how a presented key is checked.
//!
//! A key reads `rgk_<id>.<secret>`: the id is public and finds the stored
//! record; the secret is 32 random bytes. The cluster stores only
//! HMAC-SHA256(key-hash secret, whole key), so a leaked snapshot or log
//! gives nothing to present. The comparison runs in constant time.

use base64::Engine;
use raftgate_model::identity::{Digest, API_KEY_PREFIX};
use raftgate_model::ObjectId;
use ring::hmac;
use ring::rand::{SecureRandom, SystemRandom};

/// Random bytes of a key's secret part.
const SECRET_BYTES: usize = 32;
/// Random bytes of a key's id (16 hex digits).
const ID_BYTES: usize = 8;

/// Hashes and checks API keys under the cluster's key-hash secret. Every
/// node must use the same secret.
#[derive(Clone)]
pub struct KeyHasher {
    key: hmac::Key,
}

impl std::fmt::Debug for KeyHasher {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("KeyHasher(..)")
    }
}

impl KeyHasher {
    pub fn new(secret: &[u8]) -> Self {
        Self { key: hmac::Key::new(hmac::HMAC_SHA256, secret) }
    }

    /// The digest the cluster stores for `api_key`.
    pub fn digest(&self, api_key: &str) -> Digest {
        let tag = hmac::sign(&self.key, api_key.as_bytes());
        let mut out = [0u8; 32];
        out.copy_from_slice(tag.as_ref());
        Digest(out)
    }

    /// Whether `api_key` hashes to `stored`, in constant time.
    pub fn matches(&self, api_key: &str, stored: &Digest) -> bool {
        hmac::verify(&self.key, api_key.as_bytes(), &stored.0).is_ok()
    }
}

/// A new key: its id and the whole key text (shown once, never stored).
pub struct NewKey {
    pub id: ObjectId,
    pub key: String,
}

#[derive(Debug, thiserror::Error)]
#[error("the system random number generator failed")]
pub struct RandomError;

/// Makes a new key from the system's secure random source.
pub fn generate() -> Result<NewKey, RandomError> {
    generate_prefixed(API_KEY_PREFIX)
}

/// A new secret `<prefix><id>.<secret>` of the same strength (admin tokens use `rgt_`).
pub fn generate_prefixed(prefix: &str) -> Result<NewKey, RandomError> {
    let rng = SystemRandom::new();
    let mut id = [0u8; ID_BYTES];
    let mut secret = [0u8; SECRET_BYTES];
    rng.fill(&mut id).map_err(|_| RandomError)?;
    rng.fill(&mut secret).map_err(|_| RandomError)?;
    let id_hex: String = id.iter().map(|b| format!("{b:02x}")).collect();
    let id = ObjectId::parse(id_hex).expect("hex digits form an object id");
    let secret = base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(secret);
    let key = format!("{prefix}{id}.{secret}");
    Ok(NewKey { id, key })
}

#[cfg(test)]
mod tests {
    use super::*;
    use raftgate_model::identity::api_key_id;

    #[test]
    fn a_generated_key_names_its_id_and_matches_only_its_own_digest() {
        let hasher = KeyHasher::new(b"cluster secret");
        let a = generate().unwrap();
        let b = generate().unwrap();
        assert_ne!(a.key, b.key);
        assert_eq!(api_key_id(&a.key).unwrap(), a.id);
        let stored = hasher.digest(&a.key);
        assert!(hasher.matches(&a.key, &stored));
        assert!(!hasher.matches(&b.key, &stored));
        assert!(!KeyHasher::new(b"another secret").matches(&a.key, &stored), "the digest is keyed");
        assert!(!stored.to_string().contains(a.key.split('.').nth(1).unwrap()));
    }
}
