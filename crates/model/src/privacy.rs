//! Data subjects: what the cluster holds that names a consumer, and how a
//! forget replaces those names with a pseudonym.
//!
//! A [`Subject`] is a consumer with the identifiers that stand for it: its
//! id, its API key ids and the SHA-256 fingerprints of its client
//! certificates. Export (over the admin API) and `Command::ForgetConsumer`
//! both use it to decide which revocations, quota ledger entries and audit
//! records name the consumer, so what an export shows is exactly what a
//! forget erases or pseudonymises.
//!
//! The pseudonym is made outside `apply` (a keyed HMAC of the consumer id
//! under the cluster's secret, see the admin crate); `apply` only checks
//! its shape, so it stays deterministic and never sees the secret.

use std::collections::BTreeSet;

use crate::identity::{CertIdentity, Digest};
use crate::route::ObjectId;
use crate::traffic::{QuotaKey, QuotaScope};
use crate::State;

/// Every pseudonym reads `forgotten-<16 hex digits>`.
pub const PSEUDONYM_PREFIX: &str = "forgotten-";
const PSEUDONYM_HEX: usize = 16;

/// Whether `id` is shaped like a pseudonym a forget writes.
pub fn is_pseudonym(id: &ObjectId) -> bool {
    id.as_str().strip_prefix(PSEUDONYM_PREFIX).is_some_and(|h| {
        h.len() == PSEUDONYM_HEX && h.bytes().all(|b| b.is_ascii_digit() || (b'a'..=b'f').contains(&b))
    })
}

/// A consumer and the identifiers that name it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Subject {
    pub consumer: ObjectId,
    /// Its API keys' ids (keys it holds now; a key deleted earlier is no
    /// longer linked to it anywhere in the state).
    pub keys: BTreeSet<ObjectId>,
    /// SHA-256 fingerprints among its certificate identities.
    pub certificates: BTreeSet<Digest>,
}

impl Subject {
    /// The subject as `state` knows it (the consumer need not exist any more:
    /// then only its id names it).
    pub fn of(state: &State, consumer: &ObjectId) -> Self {
        let certificates = state
            .consumers()
            .get(consumer)
            .map(|c| {
                c.spec
                    .certificates
                    .iter()
                    .filter_map(|i| match i {
                        CertIdentity::Sha256(d) => Some(*d),
                        _ => None,
                    })
                    .collect()
            })
            .unwrap_or_default();
        Self { consumer: consumer.clone(), keys: state.keys_of(consumer).cloned().collect(), certificates }
    }

    /// The revocation keys ([`crate::identity::RevocationTarget::key`]) that target it.
    pub fn revocation_keys(&self) -> Vec<String> {
        let mut out = vec![format!("consumer:{}", self.consumer)];
        out.extend(self.keys.iter().map(|k| format!("api_key:{k}")));
        out.extend(self.certificates.iter().map(|d| format!("certificate:{d}")));
        out
    }

    /// Whether a quota ledger key counts this consumer: a quota defined on
    /// the consumer, or a key value one of whose parts is its id.
    pub fn names_ledger_key(&self, ledger_key: &str) -> bool {
        QuotaKey::parse_ledger_key(ledger_key).is_some_and(|k| self.names_quota_key(&k))
    }

    fn names_quota_key(&self, k: &QuotaKey) -> bool {
        matches!(&k.scope, QuotaScope::Consumer(id) if id == &self.consumer)
            || k.value.split('|').any(|part| part == self.consumer.as_str())
    }

    /// Whether an audit record's `object` (`kind/key`) names this subject.
    pub fn names_object(&self, object: &str) -> bool {
        self.pseudonymise_object(object, &self.consumer).is_some()
    }

    /// `object` with every identifier of the subject replaced by
    /// `pseudonym`, or `None` if it names none. Only the identifier
    /// positions of each kind are looked at, so a route that happens to
    /// share the consumer's id is left alone.
    pub fn pseudonymise_object(&self, object: &str, pseudonym: &ObjectId) -> Option<String> {
        let (kind, key) = object.split_once('/')?;
        let p = pseudonym.as_str();
        let replaced = match kind {
            "consumer" if key == self.consumer.as_str() => p.to_string(),
            "api_key" if self.keys.iter().any(|k| k.as_str() == key) => p.to_string(),
            "revocation" => {
                let (tag, id) = key.split_once(':')?;
                let named = match tag {
                    "consumer" => id == self.consumer.as_str(),
                    "api_key" => self.keys.iter().any(|k| k.as_str() == id),
                    "certificate" => self.certificates.iter().any(|d| d.to_string() == id),
                    _ => false,
                };
                if !named {
                    return None;
                }
                format!("{tag}:{p}")
            }
            "quota" => {
                let mut k = QuotaKey::parse_ledger_key(key)?;
                if !self.names_quota_key(&k) {
                    return None;
                }
                if matches!(&k.scope, QuotaScope::Consumer(id) if id == &self.consumer) {
                    k.scope = QuotaScope::Consumer(pseudonym.clone());
                }
                k.value = k
                    .value
                    .split('|')
                    .map(|part| if part == self.consumer.as_str() { p } else { part })
                    .collect::<Vec<_>>()
                    .join("|");
                k.ledger_key()
            }
            _ => return None,
        };
        Some(format!("{kind}/{replaced}"))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn id(s: &str) -> ObjectId {
        ObjectId::parse(s).unwrap()
    }

    fn subject() -> Subject {
        Subject { consumer: id("acme"), keys: [id("00aa11bb22cc33dd")].into(), certificates: [Digest([7; 32])].into() }
    }

    #[test]
    fn pseudonyms_have_one_shape() {
        assert!(is_pseudonym(&id("forgotten-0123456789abcdef")));
        assert!(!is_pseudonym(&id("forgotten-0123456789abcde")));
        assert!(!is_pseudonym(&id("forgotten-0123456789abcdeg")));
        assert!(!is_pseudonym(&id("acme")));
    }

    #[test]
    fn only_identifier_positions_are_replaced() {
        let s = subject();
        let p = id("forgotten-0123456789abcdef");
        assert_eq!(s.pseudonymise_object("consumer/acme", &p).unwrap(), "consumer/forgotten-0123456789abcdef");
        assert_eq!(s.pseudonymise_object("api_key/00aa11bb22cc33dd", &p).unwrap(), format!("api_key/{p}"));
        assert_eq!(
            s.pseudonymise_object("revocation/api_key:00aa11bb22cc33dd", &p).unwrap(),
            format!("revocation/api_key:{p}")
        );
        assert_eq!(
            s.pseudonymise_object(&format!("revocation/certificate:{}", Digest([7; 32])), &p).unwrap(),
            format!("revocation/certificate:{p}")
        );
        let ledger = QuotaKey {
            scope: QuotaScope::Route(id("acme")),
            quota: id("q"),
            value: "acme|orders".into(),
            window: crate::traffic::Window::Hour,
            window_start_ms: 3_600_000,
        }
        .ledger_key();
        let out = s.pseudonymise_object(&format!("quota/{ledger}"), &p).unwrap();
        assert_eq!(out, format!("quota/route/acme/q/{p}|orders@hour:3600000"), "the route keeps its id");
        assert!(s.names_ledger_key(&ledger));
        assert_eq!(
            s.pseudonymise_object("route/acme", &p),
            None,
            "a route named like the consumer is not the consumer"
        );
        assert_eq!(s.pseudonymise_object("consumer/acme-2", &p), None);
        assert_eq!(s.pseudonymise_object("revocation/consumer:acme2", &p), None);
    }
}
