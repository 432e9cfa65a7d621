//! Data subjects and audit retention over the admin API: export and forget
//! a consumer, prune exported audit records, compact this node's store.
//!
//! Export and forget look for the same things (`raftgate_model::privacy::Subject`),
//! so an export shows exactly what a forget erases or pseudonymises. The
//! pseudonym is made here, not in `apply`: a keyed HMAC of the consumer id
//! under the cluster's key-hash secret, so the same consumer always gets the
//! same pseudonym, and no one without the secret can test a guess.

use raftgate_cluster::{Applied, ClusterError};
use raftgate_identity::apikey::KeyHasher;
use raftgate_model::identity::Digest;
use raftgate_model::privacy::{Subject, PSEUDONYM_PREFIX};
use raftgate_model::{Command, Effect, ObjectId};
use raftgate_proto::admin as pb;
use serde_json::{json, Value};
use tonic::Status;

use crate::invalid;

/// Audit records one export reply holds (about 500 bytes each: well under the message limit).
const MAX_EXPORT_AUDIT_RECORDS: usize = 4_000;

/// `forgotten-<16 hex>`: the first 8 bytes of HMAC-SHA256(secret, domain || id).
pub(crate) fn pseudonym(hasher: &KeyHasher, consumer: &ObjectId) -> ObjectId {
    let tag = hasher.digest(&format!("raftgate-forget-v1:{consumer}"));
    let hex: String = tag.0[..8].iter().map(|b| format!("{b:02x}")).collect();
    ObjectId::parse(format!("{PSEUDONYM_PREFIX}{hex}")).expect("a pseudonym is a valid id")
}

pub(crate) fn consumer_id(s: &str) -> Result<ObjectId, Status> {
    ObjectId::parse(s).map_err(|e| invalid("consumer", e.message))
}

/// Whether anything in the state still names the subject.
fn found(a: &Applied, s: &Subject) -> bool {
    let state = &a.state;
    state.consumers().contains_key(&s.consumer)
        || s.revocation_keys().iter().any(|k| state.revocations().contains_key(k))
        || state.quota_entries().keys().any(|k| s.names_ledger_key(k))
        || state.routes().values().any(|r| r.spec.auth.as_ref().is_some_and(|x| x.consumers.contains(&s.consumer)))
        || state.audit().after(0).any(|r| s.names_object(&r.object) || r.principal == s.consumer.as_str())
}

/// The export document (field list in docs/privacy.md). API keys appear
/// with their metadata only, never their hash.
pub(crate) fn export(
    consumer: ObjectId,
    audit_after_seq: u64,
) -> impl FnOnce(&Applied) -> Result<pb::ExportConsumerReply, ClusterError> {
    move |a| {
        let state = &a.state;
        let s = Subject::of(state, &consumer);
        if !found(a, &s) {
            return Err(ClusterError::NotFound(format!(
                "the cluster holds nothing about consumer {:?}",
                consumer.as_str()
            )));
        }
        let object = state
            .consumers()
            .get(&consumer)
            .map(|c| json!({ "spec": c.spec, "revision": c.revision, "updated_ms": c.updated_ms }));
        let api_keys: Vec<Value> = s
            .keys
            .iter()
            .filter_map(|k| state.api_keys().get(k))
            .map(|k| {
                json!({ "id": k.spec.id, "created_ms": k.spec.created_ms, "expires_ms": k.spec.expires_ms,
                        "revision": k.revision, "updated_ms": k.updated_ms })
            })
            .collect();
        let certificate_identities: Vec<&String> =
            state.cert_owners().iter().filter(|(_, o)| **o == consumer).map(|(k, _)| k).collect();
        let revocations: Vec<Value> = s
            .revocation_keys()
            .iter()
            .filter_map(|k| state.revocations().get(k).map(|r| json!({ "key": k, "revocation": r })))
            .collect();
        let quota_entries: Vec<Value> = state
            .quota_entries()
            .iter()
            .filter(|(k, _)| s.names_ledger_key(k))
            .map(|(k, e)| json!({ "key": k, "held": e.held(), "entry": e }))
            .collect();
        let routes: Vec<Value> = state
            .routes()
            .values()
            .filter(|r| r.spec.auth.as_ref().is_some_and(|x| x.consumers.contains(&consumer)))
            .map(|r| json!({ "id": r.spec.id, "auth_consumers": r.spec.auth.as_ref().map(|x| &x.consumers) }))
            .collect();
        let mut audit: Vec<&raftgate_model::governance::AuditRecord> = state
            .audit()
            .after(audit_after_seq)
            .filter(|r| s.names_object(&r.object) || r.principal == consumer.as_str())
            .take(MAX_EXPORT_AUDIT_RECORDS + 1)
            .collect();
        let more = audit.len() > MAX_EXPORT_AUDIT_RECORDS;
        audit.truncate(MAX_EXPORT_AUDIT_RECORDS);
        let next_audit_after_seq = if more { audit.last().map_or(0, |r| r.seq) } else { 0 };
        let doc = json!({
            "format": "raftgate-consumer-export-v1",
            "consumer": consumer,
            "revision": state.revision(),
            "applied_index": a.last_applied.map_or(0, |l| l.index),
            "object": object,
            "api_keys": api_keys,
            "certificate_identities": certificate_identities,
            "revocations": revocations,
            "quota_entries": quota_entries,
            "routes": routes,
            "audit_records": audit,
        });
        Ok(pb::ExportConsumerReply { document_json: doc.to_string(), next_audit_after_seq })
    }
}

pub(crate) fn forget_reply(effect: &Effect, log_index: u64) -> pb::ForgetConsumerReply {
    match effect {
        Effect::Forgotten { revision, pseudonym, rewritten, .. } => pb::ForgetConsumerReply {
            pseudonym: pseudonym.to_string(),
            rewritten_audit_records: *rewritten,
            revision: *revision,
            log_index,
        },
        other => pb::ForgetConsumerReply { revision: other.revision(), log_index, ..Default::default() },
    }
}

pub(crate) fn prune_command(msg: &pb::PruneAuditRequest) -> Result<Command, Status> {
    if msg.through_seq == 0 {
        return Err(invalid("through_seq", "must be at least 1"));
    }
    let through_hash = Digest::parse(&msg.through_hash).map_err(|e| invalid("through_hash", e.message))?;
    let export_digest = Digest::parse(&msg.export_sha256).map_err(|e| invalid("export_sha256", e.message))?;
    Ok(Command::PruneAudit { through_seq: msg.through_seq, through_hash, export_digest })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn pseudonyms_are_keyed_stable_and_well_formed() {
        let acme = ObjectId::parse("acme").unwrap();
        let a = pseudonym(&KeyHasher::new(b"one secret"), &acme);
        assert_eq!(a, pseudonym(&KeyHasher::new(b"one secret"), &acme));
        assert_ne!(a, pseudonym(&KeyHasher::new(b"another secret"), &acme));
        assert_ne!(a, pseudonym(&KeyHasher::new(b"one secret"), &ObjectId::parse("acme2").unwrap()));
        assert!(raftgate_model::privacy::is_pseudonym(&a), "{a}");
    }
}
