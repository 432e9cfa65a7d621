//! The snapshot file: a consistent copy of a cluster's applied [`State`],
//! with a header that says where it came from and how to check it.
//!
//! Layout (docs/backup.md has the operator's view):
//!
//! ```text
//! RAFTGATE-SNAPSHOT v1\n        magic and format version, one line
//! {"cluster_name":…}\n          the header, one line of JSON (≤ MAX_HEADER_BYTES)
//! <body_bytes bytes>            the body: State::to_bytes()
//! ```
//!
//! Decoding checks, in order: the magic, the version, the header, the body
//! length (a truncated file says how much is missing), the body's SHA-256,
//! and that the body decodes as a [`State`]. Pure: bytes in, values out; the
//! callers do the file IO.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};
use sha2::{Digest as _, Sha256};

use crate::{NodeId, NodeInfo, State};

/// What the first line starts with.
pub const MAGIC: &str = "RAFTGATE-SNAPSHOT";
/// The format this build writes and reads.
pub const FORMAT_VERSION: u32 = 1;
/// Longest first line (magic, version, newline) accepted.
const MAX_MAGIC_LINE_BYTES: usize = 64;
/// Longest header line accepted.
pub const MAX_HEADER_BYTES: usize = 1 << 20;
/// Largest body accepted (the state is bounded well below this).
pub const MAX_BODY_BYTES: u64 = 8 << 30;

/// The log id of the last entry the state includes.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct AppliedLogId {
    pub term: u64,
    pub index: u64,
}

/// The membership the state was applied under.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SnapshotMembership {
    /// Log index of the membership entry.
    pub log_index: Option<u64>,
    pub voters: Vec<NodeId>,
    pub learners: Vec<NodeId>,
    pub nodes: BTreeMap<NodeId, NodeInfo>,
}

/// The header line.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SnapshotHeader {
    pub cluster_name: String,
    pub last_applied: AppliedLogId,
    pub membership: SnapshotMembership,
    /// Wall-clock time of the node that took it, ms since the Unix epoch.
    pub created_ms: u64,
    /// The node that took it (the leader).
    pub created_by: NodeId,
    pub body_bytes: u64,
    /// SHA-256 of the body, lowercase hex.
    pub body_sha256: String,
}

/// Why bytes are not a usable snapshot file.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum SnapshotFileError {
    #[error("not a Raftgate snapshot file (it does not start with {MAGIC:?})")]
    Magic,
    #[error("snapshot format version {found} is not supported (this build reads version {FORMAT_VERSION})")]
    Version { found: String },
    #[error("snapshot header is damaged: {0}")]
    Header(String),
    #[error("truncated: header says {expected} bytes, file has {found}")]
    Truncated { expected: u64, found: u64 },
    #[error("trailing data: header says {expected} bytes, file has {found}")]
    Trailing { expected: u64, found: u64 },
    #[error("checksum mismatch: header says SHA-256 {expected}, body has {found} (the file is corrupted)")]
    Checksum { expected: String, found: String },
    #[error("snapshot body does not decode as a state: {0}")]
    Body(String),
}

/// Lowercase hex of the SHA-256 of `bytes`.
pub fn sha256_hex(bytes: &[u8]) -> String {
    Sha256::digest(bytes).iter().map(|b| format!("{b:02x}")).collect()
}

/// A whole snapshot file for `header` (its body fields are filled in) and `body`.
pub fn encode(mut header: SnapshotHeader, body: &[u8]) -> Vec<u8> {
    header.body_bytes = body.len() as u64;
    header.body_sha256 = sha256_hex(body);
    let head = serde_json::to_vec(&header).expect("the header serializes");
    let mut out = Vec::with_capacity(MAX_MAGIC_LINE_BYTES + head.len() + body.len() + 1);
    out.extend_from_slice(format!("{MAGIC} v{FORMAT_VERSION}\n").as_bytes());
    out.extend_from_slice(&head);
    out.push(b'\n');
    out.extend_from_slice(body);
    out
}

/// Splits off the line that ends at the first `\n` within `max` bytes.
fn line(bytes: &[u8], max: usize) -> Option<(&[u8], &[u8])> {
    let end = bytes.iter().take(max).position(|b| *b == b'\n')?;
    Some((&bytes[..end], &bytes[end + 1..]))
}

/// Reads the magic line and the header; returns the header and the rest
/// of the bytes (the body as far as the file has it). Checks nothing about the body.
pub fn decode_header(bytes: &[u8]) -> Result<(SnapshotHeader, &[u8]), SnapshotFileError> {
    if !bytes.starts_with(MAGIC.as_bytes()) {
        return Err(SnapshotFileError::Magic);
    }
    let (first, rest) = line(bytes, MAX_MAGIC_LINE_BYTES).ok_or(SnapshotFileError::Magic)?;
    let version = String::from_utf8_lossy(&first[MAGIC.len()..]).trim().to_string();
    if version != format!("v{FORMAT_VERSION}") {
        return Err(SnapshotFileError::Version { found: version.trim_start_matches('v').to_string() });
    }
    let (head, body) = line(rest, MAX_HEADER_BYTES + 1)
        .ok_or_else(|| SnapshotFileError::Header(format!("no complete header line within {MAX_HEADER_BYTES} bytes")))?;
    let header: SnapshotHeader = serde_json::from_slice(head).map_err(|e| SnapshotFileError::Header(e.to_string()))?;
    if header.body_bytes > MAX_BODY_BYTES {
        return Err(SnapshotFileError::Header(format!(
            "body of {} bytes is over the limit of {MAX_BODY_BYTES}",
            header.body_bytes
        )));
    }
    Ok((header, body))
}

/// Checks a whole file: header, length, checksum. Returns the header and the body.
pub fn verify(bytes: &[u8]) -> Result<(SnapshotHeader, &[u8]), SnapshotFileError> {
    let (header, body) = decode_header(bytes)?;
    let found = body.len() as u64;
    if found < header.body_bytes {
        return Err(SnapshotFileError::Truncated { expected: header.body_bytes, found });
    }
    if found > header.body_bytes {
        return Err(SnapshotFileError::Trailing { expected: header.body_bytes, found });
    }
    let sha = sha256_hex(body);
    if sha != header.body_sha256 {
        return Err(SnapshotFileError::Checksum { expected: header.body_sha256.clone(), found: sha });
    }
    Ok((header, body))
}

/// [`verify`], then decodes the body.
pub fn decode(bytes: &[u8]) -> Result<(SnapshotHeader, State), SnapshotFileError> {
    let (header, body) = verify(bytes)?;
    let state = State::from_bytes(body).map_err(|e| SnapshotFileError::Body(e.to_string()))?;
    Ok((header, state))
}

/// How much of each kind a state holds, for reports.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize)]
pub struct StateCounts {
    pub routes: usize,
    pub upstreams: usize,
    pub consumers: usize,
    pub api_keys: usize,
    pub issuers: usize,
    pub revocations: usize,
    pub plans: usize,
    pub quota_entries: usize,
    pub certificates: usize,
    pub operators: usize,
    pub admin_tokens: usize,
    pub settings: usize,
    pub audit_records: usize,
}

impl StateCounts {
    pub fn of(s: &State) -> Self {
        Self {
            routes: s.routes().len(),
            upstreams: s.upstreams().len(),
            consumers: s.consumers().len(),
            api_keys: s.api_keys().len(),
            issuers: s.issuers().len(),
            revocations: s.revocations().len(),
            plans: s.plans().len(),
            quota_entries: s.quota_entries().len(),
            certificates: s.certificates().len(),
            operators: s.operators().len(),
            admin_tokens: s.admin_tokens().len(),
            settings: s.settings().count(),
            audit_records: s.audit().len(),
        }
    }

    /// `routes 3, upstreams 1, …` (every kind, zeros included).
    pub fn summary(&self) -> String {
        let v = serde_json::to_value(self).expect("counts serialize");
        let fields = v.as_object().expect("counts are an object");
        let order = [
            "routes",
            "upstreams",
            "consumers",
            "api_keys",
            "issuers",
            "revocations",
            "plans",
            "quota_entries",
            "certificates",
            "operators",
            "admin_tokens",
            "settings",
            "audit_records",
        ];
        order.iter().map(|k| format!("{k} {}", fields[*k])).collect::<Vec<_>>().join(", ")
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn header() -> SnapshotHeader {
        SnapshotHeader {
            cluster_name: "prod".into(),
            last_applied: AppliedLogId { term: 3, index: 42 },
            membership: SnapshotMembership { log_index: Some(1), voters: vec![1, 2, 3], ..Default::default() },
            created_ms: 1,
            created_by: 1,
            body_bytes: 0,
            body_sha256: String::new(),
        }
    }

    #[test]
    fn a_file_round_trips_and_every_damage_is_named() {
        let body = State::default().to_bytes();
        let file = encode(header(), &body);
        let (h, state) = decode(&file).unwrap();
        assert_eq!(h.body_bytes, body.len() as u64);
        assert_eq!(state, State::default());

        let cut = &file[..file.len() - 3];
        let e = verify(cut).unwrap_err().to_string();
        assert_eq!(e, format!("truncated: header says {} bytes, file has {}", body.len(), body.len() - 3));

        let mut bad = file.clone();
        *bad.last_mut().unwrap() ^= 1;
        assert!(matches!(verify(&bad), Err(SnapshotFileError::Checksum { .. })));

        assert_eq!(verify(b"PK\x03\x04 zip"), Err(SnapshotFileError::Magic));
        let v2 = String::from_utf8(file.clone()).unwrap().replacen("v1", "v2", 1);
        assert!(verify(v2.as_bytes()).unwrap_err().to_string().contains("version 2 is not supported"));
        let mut long = file.clone();
        long.push(b'x');
        assert!(matches!(verify(&long), Err(SnapshotFileError::Trailing { .. })));
    }
}
