//! Who administers the cluster, and what they did.
//!
//! Operators hold a [`Role`] and authenticate with an admin token (only its
//! keyed hash is stored) or a client certificate (its SHA-256). Every admin
//! write carries the [`Actor`] that made it in the same log entry, and
//! `apply` appends an [`AuditRecord`] for it: who, role, RPC, object, leader
//! time, digests of the object before and after, chained by SHA-256 to the
//! record before. Refused requests (a role that may not call an RPC, a bad
//! or expired credential) are recorded too, in batches ([`Denial`]).
//!
//! The trail keeps the newest [`MAX_AUDIT_RECORDS`]; older records leave it
//! with their hash kept as the anchor the chain continues from, so the kept
//! part still verifies on its own. Export before that if you need more.

use std::collections::VecDeque;
use std::fmt;

use serde::{Deserialize, Serialize};
use sha2::{Digest as _, Sha256};

use crate::identity::Digest;
use crate::node::NodeId;
use crate::route::{FieldError, ObjectId};

pub const MAX_OPERATORS: usize = 1_000;
pub const MAX_ADMIN_TOKENS: usize = 10_000;
pub const MAX_TOKENS_PER_OPERATOR: usize = 16;
pub const MAX_CERTIFICATES_PER_OPERATOR: usize = 16;
/// Records the trail keeps (about 480 bytes each in a snapshot: 46 MiB at most).
pub const MAX_AUDIT_RECORDS: usize = 100_000;
/// Refusals one command may record.
pub const MAX_DENIALS_PER_COMMAND: usize = 100;
const MAX_PRINCIPAL_CHARS: usize = 256;
const MAX_TEXT_CHARS: usize = 512;

fn field_err(field: &str, message: impl Into<String>) -> FieldError {
    FieldError { field: field.into(), message: message.into() }
}

/// What a caller of the admin API may do. `Node` is what cluster members
/// use among themselves (quota leases, refusal records); no operator holds it.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Role {
    /// Everything.
    Admin,
    /// Routes, upstreams, consumers, API keys, revocations; reads.
    Operator,
    /// Reads and the audit trail; no writes.
    Auditor,
    Node,
}

impl Role {
    pub fn as_str(self) -> &'static str {
        match self {
            Role::Admin => "admin",
            Role::Operator => "operator",
            Role::Auditor => "auditor",
            Role::Node => "node",
        }
    }

    pub fn parse(s: &str) -> Result<Self, FieldError> {
        match s {
            "admin" => Ok(Role::Admin),
            "operator" => Ok(Role::Operator),
            "auditor" => Ok(Role::Auditor),
            _ => Err(field_err("role", format!("must be admin, operator or auditor, got {s:?}"))),
        }
    }
}

impl fmt::Display for Role {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// A person or system that administers the cluster.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Operator {
    pub id: ObjectId,
    pub role: Role,
    /// SHA-256 of the DER of client certificates that stand for this operator.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub certificates: Vec<Digest>,
    /// A disabled operator's tokens and certificates are refused.
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub disabled: bool,
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub description: String,
}

impl Operator {
    pub fn validate(&self) -> Result<(), FieldError> {
        if self.role == Role::Node {
            return Err(field_err("role", "must be admin, operator or auditor"));
        }
        if self.certificates.len() > MAX_CERTIFICATES_PER_OPERATOR {
            return Err(field_err("certificates", format!("at most {MAX_CERTIFICATES_PER_OPERATOR}")));
        }
        validate_text("description", &self.description)
    }
}

/// A bearer token of an operator: its id (the part before the dot) and the
/// keyed hash of the whole token.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct AdminToken {
    pub id: ObjectId,
    pub operator: ObjectId,
    pub hash: Digest,
    pub created_ms: u64,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub expires_ms: Option<u64>,
}

/// The prefix of admin tokens, which keeps them apart from API keys in logs and scanners.
pub const ADMIN_TOKEN_PREFIX: &str = "rgt_";

/// The id part of an admin token `rgt_<id>.<secret>`.
pub fn admin_token_id(token: &str) -> Option<ObjectId> {
    let rest = token.strip_prefix(ADMIN_TOKEN_PREFIX)?;
    let (id, secret) = rest.split_once('.')?;
    if secret.is_empty() {
        return None;
    }
    ObjectId::parse(id).ok()
}

/// Who made an admin write, as it travels in the log entry.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Actor {
    pub principal: String,
    pub role: Role,
    /// The admin RPC, e.g. `ApplyRoute`.
    pub rpc: String,
}

impl Actor {
    pub fn validate(&self) -> Result<(), FieldError> {
        validate_principal(&self.principal)?;
        validate_name("rpc", &self.rpc)
    }
}

/// An admin request that was refused before it reached the log.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Denial {
    /// Who the caller proved to be, or what it presented (`token:<id>`,
    /// `anonymous`).
    pub principal: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub role: Option<Role>,
    pub rpc: String,
    pub reason: String,
    /// The node that refused it, and its clock at that moment (the first, if several).
    pub node: NodeId,
    pub at_ms: u64,
    /// The same refusal repeated this many times in one batch (at most 1,000,000).
    #[serde(default = "one", skip_serializing_if = "is_one")]
    pub count: u32,
}

fn one() -> u32 {
    1
}

fn is_one(n: &u32) -> bool {
    *n == 1
}

impl Denial {
    pub fn validate(&self) -> Result<(), FieldError> {
        if self.count == 0 || self.count > 1_000_000 {
            return Err(field_err("count", "must be 1 to 1000000"));
        }
        validate_principal(&self.principal)?;
        validate_name("rpc", &self.rpc)?;
        validate_text("reason", &self.reason)
    }
}

fn validate_principal(p: &str) -> Result<(), FieldError> {
    if p.is_empty() || p.chars().count() > MAX_PRINCIPAL_CHARS || p.chars().any(char::is_control) {
        return Err(field_err(
            "principal",
            format!("must be 1 to {MAX_PRINCIPAL_CHARS} characters without control characters"),
        ));
    }
    Ok(())
}

fn validate_name(field: &str, s: &str) -> Result<(), FieldError> {
    if s.is_empty() || s.len() > 64 || !s.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'_') {
        return Err(field_err(field, "must be 1 to 64 ASCII letters, digits or '_'"));
    }
    Ok(())
}

fn validate_text(field: &str, s: &str) -> Result<(), FieldError> {
    if s.chars().count() > MAX_TEXT_CHARS || s.chars().any(|c| c.is_control()) {
        return Err(field_err(field, format!("at most {MAX_TEXT_CHARS} characters, no control characters")));
    }
    Ok(())
}

/// One entry of the audit trail.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct AuditRecord {
    /// 1, 2, 3… in log order, without gaps.
    pub seq: u64,
    /// Leader time of the entry that made it (for a refusal: the refusing
    /// node's clock).
    pub time_ms: u64,
    pub principal: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub role: Option<Role>,
    pub rpc: String,
    /// The command (`put_route`, …) or `denied`.
    pub action: String,
    /// `kind/id` of the object written, if the command names one.
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub object: String,
    /// `applied`, or `denied: <reason>`.
    pub outcome: String,
    /// SHA-256 of the object's stored JSON before and after (absent: did not exist).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub before: Option<Digest>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub after: Option<Digest>,
    /// The hash of the record before (zeros for the first).
    pub prev: Digest,
    /// SHA-256 over this record's other fields and `prev`.
    pub hash: Digest,
}

/// The fields a record's hash covers, in a fixed order.
#[derive(Serialize)]
struct Hashed<'a> {
    seq: u64,
    time_ms: u64,
    principal: &'a str,
    role: Option<Role>,
    rpc: &'a str,
    action: &'a str,
    object: &'a str,
    outcome: &'a str,
    before: Option<Digest>,
    after: Option<Digest>,
    prev: Digest,
}

impl AuditRecord {
    /// What `hash` must be for this record's content.
    pub fn expected_hash(&self) -> Digest {
        let body = Hashed {
            seq: self.seq,
            time_ms: self.time_ms,
            principal: &self.principal,
            role: self.role,
            rpc: &self.rpc,
            action: &self.action,
            object: &self.object,
            outcome: &self.outcome,
            before: self.before,
            after: self.after,
            prev: self.prev,
        };
        let bytes = serde_json::to_vec(&body).expect("an audit record serializes");
        let mut h = Sha256::new();
        h.update(b"raftgate-audit-v1\n");
        h.update(&bytes);
        Digest(h.finalize().into())
    }
}

/// A record before it joins the chain.
#[derive(Clone, Debug)]
pub struct NewRecord {
    pub time_ms: u64,
    pub principal: String,
    pub role: Option<Role>,
    pub rpc: String,
    pub action: String,
    pub object: String,
    pub outcome: String,
    pub before: Option<Digest>,
    pub after: Option<Digest>,
}

/// The hash-chained audit trail.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct AuditTrail {
    records: VecDeque<AuditRecord>,
    /// The last record that left the trail (seq, hash); (0, zeros) if none.
    #[serde(default)]
    anchor_seq: u64,
    #[serde(default = "zero_digest")]
    anchor_hash: Digest,
}

fn zero_digest() -> Digest {
    Digest([0; 32])
}

/// What `verify` found.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct Verification {
    /// Records checked.
    pub checked: u64,
    /// The first record whose hash or link is wrong, and what is wrong.
    pub first_broken: Option<(u64, String)>,
    /// The seq and hash the chain ends with (what another copy must match).
    pub head: (u64, Digest),
    /// Where the kept part starts (seq of the record before it, its hash).
    pub anchor: (u64, Digest),
}

impl AuditTrail {
    pub fn append(&mut self, r: NewRecord) -> &AuditRecord {
        let (seq, prev) = self.head();
        let mut record = AuditRecord {
            seq: seq + 1,
            time_ms: r.time_ms,
            principal: r.principal,
            role: r.role,
            rpc: r.rpc,
            action: r.action,
            object: r.object,
            outcome: r.outcome,
            before: r.before,
            after: r.after,
            prev,
            hash: zero_digest(),
        };
        record.hash = record.expected_hash();
        self.records.push_back(record);
        while self.records.len() > MAX_AUDIT_RECORDS {
            let old = self.records.pop_front().expect("longer than the maximum");
            self.anchor_seq = old.seq;
            self.anchor_hash = old.hash;
        }
        self.records.back().expect("just pushed")
    }

    /// The last record's (seq, hash), or the anchor if the trail is empty.
    pub fn head(&self) -> (u64, Digest) {
        match self.records.back() {
            Some(r) => (r.seq, r.hash),
            None => (self.anchor_seq, self.anchor_hash),
        }
    }

    pub fn len(&self) -> usize {
        self.records.len()
    }

    pub fn is_empty(&self) -> bool {
        self.records.is_empty()
    }

    /// Records with `seq > after`, oldest first.
    pub fn after(&self, after: u64) -> impl Iterator<Item = &AuditRecord> {
        let first = self.records.front().map_or(0, |r| r.seq);
        let skip = after.saturating_add(1).saturating_sub(first) as usize;
        self.records.iter().skip(skip.min(self.records.len()))
    }

    /// The newest `n` records, oldest first.
    pub fn tail(&self, n: usize) -> impl Iterator<Item = &AuditRecord> {
        self.records.iter().skip(self.records.len().saturating_sub(n))
    }

    /// The kept record with this seq.
    pub fn get(&self, seq: u64) -> Option<&AuditRecord> {
        let first = self.records.front()?.seq;
        self.records.get(usize::try_from(seq.checked_sub(first)?).ok()?)
    }

    /// Edits kept records in place (`edit` returns whether it changed one)
    /// and re-chains: from the first changed record to the head, every
    /// `prev` and `hash` is recomputed, so the trail verifies again. Returns
    /// how many records changed and the seq of the first, if any. The
    /// anchor and every record before the first change keep their hashes.
    pub fn rewrite(&mut self, mut edit: impl FnMut(&mut AuditRecord) -> bool) -> (u64, Option<u64>) {
        let mut changed = 0;
        let mut first = None;
        let mut prev = self.anchor_hash;
        for r in self.records.iter_mut() {
            let edited = edit(r);
            if edited {
                changed += 1;
                first.get_or_insert(r.seq);
            }
            if first.is_some() {
                r.prev = prev;
                r.hash = r.expected_hash();
            }
            prev = r.hash;
        }
        (changed, first)
    }

    /// Drops the records up to and including `seq`; the last dropped one
    /// becomes the anchor the rest chains from. Returns how many went.
    pub fn prune_through(&mut self, seq: u64) -> u64 {
        let mut dropped = 0;
        while self.records.front().is_some_and(|r| r.seq <= seq) {
            let old = self.records.pop_front().expect("front exists");
            self.anchor_seq = old.seq;
            self.anchor_hash = old.hash;
            dropped += 1;
        }
        dropped
    }

    /// Recomputes every kept record's hash and link, from the anchor on.
    pub fn verify(&self) -> Verification {
        let mut prev = self.anchor_hash;
        let mut first_broken = None;
        let mut checked = 0;
        for (expected_seq, r) in (self.anchor_seq + 1..).zip(self.records.iter()) {
            checked += 1;
            let problem = if r.seq != expected_seq {
                Some(format!("sequence number is {}, expected {expected_seq}", r.seq))
            } else if r.prev != prev {
                Some("link broken: `prev` is not the hash of the record before".to_string())
            } else if r.hash != r.expected_hash() {
                Some("content changed: the stored hash does not match the record".to_string())
            } else {
                None
            };
            if let Some(p) = problem {
                first_broken = Some((r.seq, p));
                break;
            }
            prev = r.hash;
        }
        Verification { checked, first_broken, head: self.head(), anchor: (self.anchor_seq, self.anchor_hash) }
    }
}

/// SHA-256 of an object's canonical JSON: what audit records hold as before/after.
pub fn object_digest<T: Serialize>(object: &T) -> Digest {
    let bytes = serde_json::to_vec(object).expect("stored objects serialize");
    Digest(Sha256::digest(&bytes).into())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn rec(i: u64) -> NewRecord {
        NewRecord {
            time_ms: 1_000 + i,
            principal: format!("alice{i}"),
            role: Some(Role::Operator),
            rpc: "ApplyRoute".into(),
            action: "put_route".into(),
            object: format!("route/r{i}"),
            outcome: "applied".into(),
            before: None,
            after: Some(object_digest(&i)),
        }
    }

    #[test]
    fn an_intact_chain_verifies_and_any_edit_is_found_at_its_record() {
        let mut t = AuditTrail::default();
        for i in 0..10 {
            t.append(rec(i));
        }
        let v = t.verify();
        assert_eq!(v.checked, 10);
        assert_eq!(v.first_broken, None);
        assert_eq!(v.head.0, 10);

        let mut edited = t.clone();
        edited.records[4].principal = "mallory".into();
        assert_eq!(edited.verify().first_broken.map(|b| b.0), Some(5));

        // Rewriting the hash too moves the break to the next link.
        let mut rehashed = t.clone();
        rehashed.records[4].principal = "mallory".into();
        rehashed.records[4].hash = rehashed.records[4].expected_hash();
        let broken = rehashed.verify().first_broken.unwrap();
        assert_eq!(broken.0, 6);
        assert!(broken.1.contains("link"));

        let mut dropped = t.clone();
        dropped.records.remove(3);
        assert_eq!(dropped.verify().first_broken.map(|b| b.0), Some(5));
    }

    #[test]
    fn the_trail_is_bounded_and_its_kept_part_still_verifies() {
        let mut t = AuditTrail::default();
        let n = MAX_AUDIT_RECORDS as u64 + 5;
        for i in 0..n {
            t.append(rec(i));
        }
        assert_eq!(t.len(), MAX_AUDIT_RECORDS);
        let v = t.verify();
        assert_eq!(v.first_broken, None);
        assert_eq!(v.anchor.0, 5);
        assert_eq!(v.head.0, n);
        assert_eq!(t.after(n - 2).map(|r| r.seq).collect::<Vec<_>>(), vec![n - 1, n]);
        assert_eq!(t.after(0).next().unwrap().seq, 6);
        assert_eq!(t.tail(1).next().unwrap().seq, n);
    }

    #[test]
    fn token_ids_parse_only_from_well_formed_tokens() {
        assert_eq!(admin_token_id("rgt_abc.secret").unwrap().as_str(), "abc");
        assert!(admin_token_id("rgk_abc.secret").is_none());
        assert!(admin_token_id("rgt_abc.").is_none());
        assert!(admin_token_id("rgt_abc").is_none());
    }
}
