//! The data plane's revocation index.
//!
//! The replicated state holds every revocation by its key string
//! (`RevocationTarget::key`). The request path needs a constant-time "is
//! this revoked?", so each node keeps a hash set of 128-bit fingerprints of
//! those keys (two independently keyed SipHashes, keys drawn at process
//! start: a client cannot aim for a collision, and a collision could only
//! refuse a credential, never admit one).
//!
//! The set is built in two levels so that a revocation costs O(1) to apply:
//! a large `base` rebuilt from the state now and then, and a small `delta`
//! of revocations since. When the delta passes an eighth of the base (at
//! least [`MIN_DELTA`]) the base is rebuilt from the state, which also drops
//! expired token revocations. Taking a revocation back rebuilds at once.
//! Consumer revocations (all of a consumer's credentials up to a time) are a
//! separate small map.

use std::collections::{HashMap, HashSet};
use std::hash::{BuildHasher, BuildHasherDefault, Hasher, RandomState};
use std::sync::Arc;

use raftgate_model::identity::{Revocation, RevocationTarget};
use raftgate_model::{Command, ObjectId, State};

/// Delta size below which the base is never rebuilt.
pub const MIN_DELTA: usize = 4_096;

/// The fingerprint of a revocation key.
pub type Fingerprint = u128;

/// Fingerprints are random already: hash them by their low bits.
#[derive(Default)]
pub struct PassThrough(u64);

impl Hasher for PassThrough {
    fn finish(&self) -> u64 {
        self.0
    }
    fn write(&mut self, bytes: &[u8]) {
        for b in bytes {
            self.0 = self.0.rotate_left(8) ^ u64::from(*b);
        }
    }
    fn write_u128(&mut self, v: u128) {
        self.0 = v as u64;
    }
}

type FingerprintSet = HashSet<Fingerprint, BuildHasherDefault<PassThrough>>;

/// The keys of the fingerprint hash, fixed for the life of the process.
#[derive(Clone, Default)]
pub struct Fingerprinter {
    a: RandomState,
    b: RandomState,
}

impl Fingerprinter {
    /// The fingerprint of `parts` joined (no separator is added).
    pub fn of(&self, parts: &[&str]) -> Fingerprint {
        let mut ha = self.a.build_hasher();
        let mut hb = self.b.build_hasher();
        for p in parts {
            ha.write(p.as_bytes());
            hb.write(p.as_bytes());
        }
        (u128::from(ha.finish()) << 64) | u128::from(hb.finish())
    }
}

/// What the request path asks, immutable once published.
#[derive(Clone)]
pub struct RevocationIndex {
    hasher: Fingerprinter,
    base: Arc<FingerprintSet>,
    delta: Arc<FingerprintSet>,
    /// Consumer id → leader time of the revocation.
    consumers: Arc<HashMap<ObjectId, u64>>,
}

impl RevocationIndex {
    /// Builds the index of every revocation in `state`.
    pub fn build(hasher: Fingerprinter, state: &State) -> Self {
        let mut base = FingerprintSet::with_capacity_and_hasher(state.revocations().len(), Default::default());
        let mut consumers = HashMap::new();
        for (key, r) in state.revocations().iter() {
            base.insert(hasher.of(&[key]));
            if let RevocationTarget::Consumer { id } = &r.target {
                consumers.insert(id.clone(), r.revoked_ms);
            }
        }
        Self { hasher, base: Arc::new(base), delta: Arc::default(), consumers: Arc::new(consumers) }
    }

    /// The index after `accepted` commands were applied to give `state`, or
    /// `None` if they changed no revocation.
    pub fn after(&self, state: &State, accepted: &[&Command]) -> Option<Self> {
        let mut added: Vec<&RevocationTarget> = Vec::new();
        for cmd in accepted {
            match cmd {
                Command::Revoke { target, .. } => added.push(target),
                Command::Unrevoke { .. } | Command::ForgetConsumer { .. } => {
                    return Some(Self::build(self.hasher.clone(), state))
                }
                _ => {}
            }
        }
        if added.is_empty() {
            return None;
        }
        if self.delta.len() + added.len() > MIN_DELTA.max(self.base.len() / 8) {
            return Some(Self::build(self.hasher.clone(), state));
        }
        let mut delta = (*self.delta).clone();
        let mut consumers = None;
        for target in added {
            delta.insert(self.hasher.of(&[&target.key()]));
            if let RevocationTarget::Consumer { id } = target {
                let revoked_ms = state.revocations().get(&target.key()).map_or(u64::MAX, |r: &Revocation| r.revoked_ms);
                consumers.get_or_insert_with(|| (*self.consumers).clone()).insert(id.clone(), revoked_ms);
            }
        }
        Some(Self {
            hasher: self.hasher.clone(),
            base: self.base.clone(),
            delta: Arc::new(delta),
            consumers: consumers.map(Arc::new).unwrap_or_else(|| self.consumers.clone()),
        })
    }

    fn contains(&self, parts: &[&str]) -> bool {
        let f = self.hasher.of(parts);
        self.delta.contains(&f) || self.base.contains(&f)
    }

    pub fn token_revoked(&self, issuer: &ObjectId, jti: &str) -> bool {
        self.contains(&["token:", issuer.as_str(), ":", jti])
    }

    pub fn issuer_key_revoked(&self, issuer: &ObjectId, kid: &str) -> bool {
        self.contains(&["issuer_key:", issuer.as_str(), ":", kid])
    }

    pub fn api_key_revoked(&self, id: &ObjectId) -> bool {
        self.contains(&["api_key:", id.as_str()])
    }

    /// `sha256`: lower-case hex of the certificate's SHA-256.
    pub fn certificate_revoked(&self, sha256: &str) -> bool {
        self.contains(&["certificate:", sha256])
    }

    /// Whether a credential of `consumer` issued at `issued_ms` (None:
    /// unknown) is revoked with all of the consumer's credentials.
    pub fn consumer_revoked(&self, consumer: &ObjectId, issued_ms: Option<u64>) -> bool {
        match self.consumers.get(consumer) {
            Some(at) => issued_ms.is_none_or(|t| t <= *at),
            None => false,
        }
    }

    /// How many fingerprints the index holds (expired ones until the next rebuild).
    pub fn len(&self) -> usize {
        self.base.len() + self.delta.len()
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use raftgate_model::identity::Digest;

    fn id(s: &str) -> ObjectId {
        ObjectId::parse(s).unwrap()
    }

    fn state_with_issuer() -> State {
        let mut s = State::default();
        let issuer = serde_json::from_value(serde_json::json!({
            "id": "idp", "issuer": "https://idp/", "algorithms": ["HS256"], "secret": "env:X"
        }))
        .unwrap();
        s.apply(1_000, &Command::PutIssuer { issuer, expected_revision: None }).unwrap();
        s
    }

    fn revoke(s: &mut State, target: RevocationTarget, until: Option<u64>) -> Command {
        let cmd = Command::Revoke { target, until_ms: until, reason: String::new() };
        s.apply(2_000, &cmd).unwrap();
        cmd
    }

    #[test]
    fn an_applied_revocation_is_in_the_next_index_and_the_old_one_is_unchanged() {
        let mut s = state_with_issuer();
        let index = RevocationIndex::build(Fingerprinter::default(), &s);
        let cmd = revoke(&mut s, RevocationTarget::Token { issuer: id("idp"), jti: "t-1".into() }, Some(9_000_000));
        let next = index.after(&s, &[&cmd]).expect("a revocation changes the index");
        assert!(next.token_revoked(&id("idp"), "t-1"));
        assert!(!next.token_revoked(&id("idp"), "t-2"));
        assert!(!index.token_revoked(&id("idp"), "t-1"), "published indexes are immutable");
        let cert = revoke(&mut s, RevocationTarget::Certificate { sha256: Digest([0xab; 32]) }, None);
        let next = next.after(&s, &[&cert]).unwrap();
        assert!(next.certificate_revoked(&"ab".repeat(32)));
        assert!(next.token_revoked(&id("idp"), "t-1"), "the delta keeps earlier revocations");
    }

    #[test]
    fn a_consumer_revocation_covers_credentials_issued_until_then() {
        let mut s = state_with_issuer();
        let consumer = serde_json::from_value(serde_json::json!({ "id": "acme" })).unwrap();
        s.apply(1_500, &Command::PutConsumer { consumer, expected_revision: None }).unwrap();
        let index = RevocationIndex::build(Fingerprinter::default(), &s);
        let cmd = revoke(&mut s, RevocationTarget::Consumer { id: id("acme") }, None);
        let next = index.after(&s, &[&cmd]).unwrap();
        assert!(next.consumer_revoked(&id("acme"), Some(1_999)));
        assert!(next.consumer_revoked(&id("acme"), Some(2_000)));
        assert!(next.consumer_revoked(&id("acme"), None), "no issue time: revoked");
        assert!(!next.consumer_revoked(&id("acme"), Some(2_001)), "credentials issued later are not");
        assert!(!next.consumer_revoked(&id("other"), None));
    }

    #[test]
    fn unrevoking_rebuilds_and_a_large_delta_folds_into_the_base() {
        let mut s = state_with_issuer();
        let mut index = RevocationIndex::build(Fingerprinter::default(), &s);
        for i in 0..MIN_DELTA + 10 {
            let cmd =
                revoke(&mut s, RevocationTarget::Token { issuer: id("idp"), jti: format!("j{i}") }, Some(9_000_000));
            index = index.after(&s, &[&cmd]).unwrap();
            assert!(index.delta.len() <= MIN_DELTA, "the delta stays bounded");
        }
        assert_eq!(index.len(), MIN_DELTA + 10);
        assert!(index.token_revoked(&id("idp"), "j0"));
        let target = RevocationTarget::Token { issuer: id("idp"), jti: "j0".into() };
        let cmd = Command::Unrevoke { target };
        s.apply(3_000, &cmd).unwrap();
        let index = index.after(&s, &[&cmd]).unwrap();
        assert!(!index.token_revoked(&id("idp"), "j0"));
        assert!(index.token_revoked(&id("idp"), "j1"));
    }

    #[test]
    fn commands_that_touch_no_revocation_leave_the_index() {
        let s = state_with_issuer();
        let index = RevocationIndex::build(Fingerprinter::default(), &s);
        let cmd = Command::DeleteApiKey { id: id("k") };
        assert!(index.after(&s, &[&cmd]).is_none());
    }
}
