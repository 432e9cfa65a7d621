//! API keys and revocations over the admin API.
//!
//! A new API key is made on the node that serves the request (from the
//! system's secure random source) and only its keyed hash goes into the
//! command, so the key never enters the Raft log, a snapshot or a log line.
//! When that node is not the leader the request is forwarded and the
//! leader makes the key; the reply carries it once.

use raftgate_cluster::{Applied, ClusterError};
use raftgate_model::identity::RevocationTarget;
use raftgate_model::{Command, KeyRotation, ObjectId};
use raftgate_proto::admin as pb;
use serde_json::json;
use tonic::Status;

use crate::{invalid, AdminService};

/// Longest key lifetime or rotation overlap accepted: ten years.
const MAX_KEY_LIFETIME_MS: u64 = 10 * 366 * 24 * 3_600_000;
/// Largest revocation target document.
const MAX_TARGET_BYTES: usize = 4_096;

impl AdminService {
    pub(crate) async fn create_key(
        &self,
        origin: &crate::forward::Origin,
        msg: &pb::CreateApiKeyRequest,
    ) -> Result<pb::CreatedApiKey, ClusterError> {
        let parsed = parse_create(msg, |old| {
            self.node.local_read(|a| a.state.api_keys().get(old).map(|k| k.spec.consumer.clone()))
        });
        let (consumer, rotates) = parsed.map_err(|s| match s.code() {
            tonic::Code::NotFound => ClusterError::NotFound(s.message().to_string()),
            _ => ClusterError::Invalid(s.message().to_string()),
        })?;
        let now_ms = self.node.env().clock.now_ms();
        let expires_ms = msg.expires_in_ms.map(|d| now_ms.saturating_add(d));
        let new = raftgate_identity::apikey::generate().map_err(|e| ClusterError::Internal(e.to_string()))?;
        let hash = self.key_hasher.digest(&new.key);
        let command =
            Command::CreateApiKey { id: new.id.clone(), consumer: consumer.clone(), hash, expires_ms, rotates };
        let written = self.node.write_as(command, origin.actor()).await?;
        tracing::info!(key_id = %new.id, consumer = %consumer, "api key created");
        Ok(pb::CreatedApiKey {
            id: new.id.to_string(),
            consumer: consumer.to_string(),
            key: new.key,
            expires_ms,
            revision: written.effect.revision(),
            log_index: written.log_index,
        })
    }
}

/// The consumer and rotation of a create request; `owner` finds the
/// consumer of the key being rotated (apply checks it again).
fn parse_create(
    msg: &pb::CreateApiKeyRequest,
    owner: impl FnOnce(&ObjectId) -> Option<ObjectId>,
) -> Result<(ObjectId, Option<KeyRotation>), Status> {
    if msg.expires_in_ms.is_some_and(|d| d == 0 || d > MAX_KEY_LIFETIME_MS) {
        return Err(invalid("expires_in_ms", format!("must be 1 to {MAX_KEY_LIFETIME_MS}")));
    }
    if msg.overlap_ms > MAX_KEY_LIFETIME_MS {
        return Err(invalid("overlap_ms", format!("must be at most {MAX_KEY_LIFETIME_MS}")));
    }
    let given = match msg.consumer.as_str() {
        "" => None,
        c => Some(ObjectId::parse(c).map_err(|e| invalid("consumer", e.message))?),
    };
    if msg.rotates.is_empty() {
        let consumer = given.ok_or_else(|| invalid("consumer", "is required"))?;
        return Ok((consumer, None));
    }
    let old = ObjectId::parse(msg.rotates.clone()).map_err(|e| invalid("rotates", e.message))?;
    let consumer = match (given, owner(&old)) {
        (Some(c), _) => c,
        (None, Some(c)) => c,
        (None, None) => return Err(Status::not_found(format!("api key {:?} not found", old.as_str()))),
    };
    Ok((consumer, Some(KeyRotation { old, overlap_ms: msg.overlap_ms })))
}

pub(crate) fn target(json: &str) -> Result<RevocationTarget, Status> {
    if json.len() > MAX_TARGET_BYTES {
        return Err(invalid("target_json", format!("must be at most {MAX_TARGET_BYTES} bytes")));
    }
    let target: RevocationTarget = serde_json::from_str(json).map_err(|e| invalid("target_json", e))?;
    target.validate().map_err(|e| invalid("target_json", e))?;
    Ok(target)
}

pub(crate) fn revoke_command(msg: &pb::RevokeRequest) -> Result<Command, Status> {
    let target = target(&msg.target_json)?;
    if msg.reason.len() > 256 || msg.reason.chars().any(char::is_control) {
        return Err(invalid("reason", "must be at most 256 bytes without control characters"));
    }
    Ok(Command::Revoke { target, until_ms: msg.until_ms, reason: msg.reason.clone() })
}

/// Key records, never the key or its hash.
pub(crate) fn list_keys(
    consumer: Option<ObjectId>,
    after: String,
    limit: usize,
) -> impl FnOnce(&Applied) -> pb::ListObjectsReply {
    move |a| {
        let keys = a.state.api_keys();
        let ids: Box<dyn Iterator<Item = &ObjectId>> = match &consumer {
            Some(c) => Box::new(a.state.keys_of(c)),
            None => Box::new(keys.keys()),
        };
        let objects = ids
            .filter(|id| id.as_str() > after.as_str())
            .filter_map(|id| keys.get(id))
            .take(limit + 1)
            .map(|s| {
                let k = &s.spec;
                let spec = json!({ "id": k.id, "consumer": k.consumer, "created_ms": k.created_ms, "expires_ms": k.expires_ms });
                pb::Object { id: k.id.to_string(), spec_json: spec.to_string(), revision: s.revision, updated_ms: s.updated_ms }
            });
        crate::page(objects, limit)
    }
}

pub(crate) fn list_revocations(after: String, limit: usize) -> impl FnOnce(&Applied) -> pb::ListObjectsReply {
    move |a| {
        use std::ops::Bound;
        let objects = a
            .state
            .revocations()
            .range::<str, _>((Bound::Excluded(after.as_str()), Bound::Unbounded))
            .take(limit + 1)
            .map(|(key, r)| pb::Object {
                id: key.clone(),
                spec_json: serde_json::to_string(r).expect("revocations serialize"),
                revision: 0,
                updated_ms: r.revoked_ms,
            });
        crate::page(objects, limit)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_rotation_takes_the_consumer_of_the_old_key() {
        let msg = pb::CreateApiKeyRequest { rotates: "k1".into(), overlap_ms: 1_000, ..Default::default() };
        let (consumer, rot) = parse_create(&msg, |_| Some(ObjectId::parse("acme").unwrap())).unwrap();
        assert_eq!(consumer.as_str(), "acme");
        assert_eq!(rot.unwrap().old.as_str(), "k1");
        assert_eq!(parse_create(&msg, |_| None).unwrap_err().code(), tonic::Code::NotFound);
        let none = pb::CreateApiKeyRequest::default();
        assert_eq!(parse_create(&none, |_| None).unwrap_err().code(), tonic::Code::InvalidArgument);
    }

    #[test]
    fn malformed_revocation_targets_name_the_field() {
        for bad in
            [r#"{"kind":"nope"}"#, r#"{"kind":"api_key"}"#, "not json", r#"{"kind":"certificate","sha256":"xyz"}"#]
        {
            let err = target(bad).unwrap_err();
            assert_eq!(err.code(), tonic::Code::InvalidArgument, "{bad}");
            assert!(err.message().starts_with("target_json"), "{}", err.message());
        }
        assert!(target(r#"{"kind":"api_key","id":"k1"}"#).is_ok());
    }
}
