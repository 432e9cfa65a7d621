//! Operators, admin tokens and the audit trail over the admin API, and the
//! task that records refused requests.

use std::sync::Arc;
use std::time::{Duration, Instant};

use raftgate_cluster::{Applied, ClusterError};
use raftgate_model::governance::{Denial, Operator, ADMIN_TOKEN_PREFIX, MAX_DENIALS_PER_COMMAND};
use raftgate_model::{Command, ObjectId};
use raftgate_proto::admin as pb;
use serde_json::json;
use tonic::Status;

use crate::forward::{Forwarder, Origin};
use crate::objects::Kind;
use crate::{invalid, AdminService};

/// Longest admin token lifetime accepted: two years.
const MAX_TOKEN_LIFETIME_MS: u64 = 2 * 366 * 24 * 3_600_000;
/// Refusals are sent to the leader at most this often.
const DENIAL_BATCH_INTERVAL: Duration = Duration::from_millis(500);
/// Largest refusal batch a node accepts from another.
const MAX_DENIALS_JSON_BYTES: usize = 256 << 10;

impl Kind for Operator {
    const NAME: &'static str = "operator";
    fn id(&self) -> &ObjectId {
        &self.id
    }
    fn validate(&self) -> Result<(), raftgate_model::FieldError> {
        Operator::validate(self)
    }
    fn put(self, expected_revision: Option<u64>) -> Command {
        Command::PutOperator { operator: self, expected_revision }
    }
    fn delete(id: ObjectId, expected_revision: Option<u64>) -> Command {
        Command::DeleteOperator { id, expected_revision }
    }
    fn table(applied: &Applied) -> &raftgate_model::Table<Self> {
        applied.state.operators()
    }
}

impl AdminService {
    pub(crate) async fn create_token(
        &self,
        origin: &Origin,
        msg: &pb::CreateAdminTokenRequest,
    ) -> Result<pb::CreatedAdminToken, ClusterError> {
        if msg.expires_in_ms.is_some_and(|d| d == 0 || d > MAX_TOKEN_LIFETIME_MS) {
            return Err(ClusterError::Invalid(format!("expires_in_ms: must be 1 to {MAX_TOKEN_LIFETIME_MS}")));
        }
        let operator = ObjectId::parse(msg.operator.clone())
            .map_err(|e| ClusterError::Invalid(format!("operator: {}", e.message)))?;
        let expires_ms = msg.expires_in_ms.map(|d| self.node.env().clock.now_ms().saturating_add(d));
        let new = raftgate_identity::apikey::generate_prefixed(ADMIN_TOKEN_PREFIX)
            .map_err(|e| ClusterError::Internal(e.to_string()))?;
        let hash = self.key_hasher.digest(&new.key);
        let command = Command::CreateAdminToken { id: new.id.clone(), operator: operator.clone(), hash, expires_ms };
        let written = self.node.write_as(command, origin.actor()).await?;
        tracing::info!(token_id = %new.id, operator = %operator, "admin token created");
        Ok(pb::CreatedAdminToken {
            id: new.id.to_string(),
            operator: operator.to_string(),
            token: new.key,
            expires_ms,
            revision: written.effect.revision(),
            log_index: written.log_index,
        })
    }
}

/// Token records, never the token or its hash.
pub(crate) fn list_tokens(after: String, limit: usize) -> impl FnOnce(&Applied) -> pb::ListObjectsReply {
    move |a| {
        let objects = a
            .state
            .admin_tokens()
            .iter()
            .filter(|(id, _)| id.as_str() > after.as_str())
            .take(limit + 1)
            .map(|(id, s)| {
                let t = &s.spec;
                let spec = json!({ "id": t.id, "operator": t.operator, "created_ms": t.created_ms, "expires_ms": t.expires_ms });
                pb::Object { id: id.to_string(), spec_json: spec.to_string(), revision: s.revision, updated_ms: s.updated_ms }
            });
        crate::page(objects, limit)
    }
}

pub(crate) fn list_audit(msg: &pb::ListAuditRequest, limit: usize) -> impl FnOnce(&Applied) -> pb::ListAuditReply {
    let (after, tail) = (msg.after_seq, msg.tail as usize);
    move |a| {
        let trail = a.state.audit();
        let head_seq = trail.head().0;
        let page: Vec<&raftgate_model::governance::AuditRecord> =
            if tail > 0 { trail.tail(tail.min(limit)).collect() } else { trail.after(after).take(limit).collect() };
        // Records that left the trail leave a gap: the next page starts after the last one sent.
        let last = page.last().map_or(head_seq, |r| r.seq);
        let next_after_seq = if tail == 0 && last < head_seq { last } else { 0 };
        let records_json = page.iter().map(|r| serde_json::to_string(r).expect("records serialize")).collect();
        pb::ListAuditReply { records_json, next_after_seq, head_seq }
    }
}

pub(crate) fn verify_audit(a: &Applied, node_id: u64) -> pb::VerifyAuditReply {
    let start = Instant::now();
    let v = a.state.audit().verify();
    let took_us = start.elapsed().as_micros() as u64;
    let (broken_seq, problem) = v.first_broken.clone().unwrap_or_default();
    pb::VerifyAuditReply {
        checked: v.checked,
        intact: v.first_broken.is_none(),
        broken_seq,
        problem,
        head_seq: v.head.0,
        head_hash: v.head.1.to_string(),
        anchor_seq: v.anchor.0,
        anchor_hash: v.anchor.1.to_string(),
        took_us,
        node_id,
        applied_index: a.last_applied.map_or(0, |l| l.index),
    }
}

pub(crate) fn denials_command(msg: &pb::RecordDenialsRequest) -> Result<Command, Status> {
    if msg.denials_json.len() > MAX_DENIALS_JSON_BYTES {
        return Err(invalid("denials_json", format!("must be at most {MAX_DENIALS_JSON_BYTES} bytes")));
    }
    let denials: Vec<Denial> = serde_json::from_str(&msg.denials_json).map_err(|e| invalid("denials_json", e))?;
    if denials.is_empty() || denials.len() > MAX_DENIALS_PER_COMMAND {
        return Err(invalid("denials_json", format!("must hold 1 to {MAX_DENIALS_PER_COMMAND} refusals")));
    }
    for (i, d) in denials.iter().enumerate() {
        d.validate().map_err(|e| invalid(&format!("denials_json[{i}]"), e))?;
    }
    Ok(Command::RecordDenials { denials })
}

/// Sends the refusals this node queued to the audit trail, at most one
/// command per interval, through its own admin API (which forwards to the
/// leader). A batch that fails is logged and dropped: refusals changed
/// nothing, and the node's log still has each one.
pub async fn run_denial_recorder(
    mut rx: tokio::sync::mpsc::Receiver<Denial>,
    link: Arc<Forwarder>,
    own_admin_addr: String,
) {
    let mut batch = Vec::with_capacity(MAX_DENIALS_PER_COMMAND);
    loop {
        if rx.recv_many(&mut batch, MAX_DENIALS_PER_COMMAND).await == 0 {
            return;
        }
        // A flood of the same refusal becomes one record with a count.
        let mut merged: Vec<Denial> = Vec::with_capacity(batch.len());
        for d in batch.drain(..) {
            match merged
                .iter_mut()
                .find(|m| (&m.principal, m.role, &m.rpc, &m.reason) == (&d.principal, d.role, &d.rpc, &d.reason))
            {
                Some(m) => m.count = m.count.saturating_add(d.count).min(1_000_000),
                None => merged.push(d),
            }
        }
        batch = merged;
        let req = pb::RecordDenialsRequest { denials_json: serde_json::to_string(&batch).expect("denials serialize") };
        let sent = match link.client(&own_admin_addr) {
            Ok(mut c) => c.record_denials(link.node_request(req)).await.map(|_| ()),
            Err(e) => Err(e),
        };
        if let Err(e) = sent {
            tracing::warn!(error = %e.message(), refusals = batch.len(), "refusals not written to the audit trail");
        }
        batch.clear();
        tokio::time::sleep(DENIAL_BATCH_INTERVAL).await;
    }
}
