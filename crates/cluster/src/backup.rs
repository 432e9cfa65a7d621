//! Backup, restore and disaster recovery of a node's replicated state.
//!
//! - [`snapshot_file`]: on the leader, confirm leadership with a quorum
//!   (read index), then copy the applied state (at an index ≥ the read index)
//!   into a snapshot file (`raftgate_model::backup`).
//! - [`restore`]: seed an EMPTY data dir from a snapshot file so that the
//!   node starts as a one-voter cluster of itself holding exactly that state.
//! - [`recover`]: re-form a one-voter cluster from a stopped node's own data
//!   dir after quorum is lost for good, keeping everything its log holds.
//!
//! Both seed through `raftgate_store::seed` (see there for what openraft
//! needs), into a fresh sibling directory that is renamed into place when
//! complete: an interrupted or refused run leaves the data dir as it was.
//! A seeded store has no peer run records (incarnations), so it trusts no
//! member of the old cluster; an old member must never be started against
//! the new cluster: wipe its data dir and add it back as a learner.

use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};

use openraft::{CommittedLeaderId, LogId, StoredMembership, Vote};
use raftgate_model::backup::{self, AppliedLogId, SnapshotFileError, SnapshotHeader, SnapshotMembership, StateCounts};
use raftgate_model::{NodeId, NodeInfo, State};
use raftgate_store::seed::Seed;
use raftgate_store::{FlushMode, OpenError};

use crate::node::STORE_CACHE_BYTES;
use crate::{ClusterError, ClusterNode};

/// Largest piece of a snapshot file sent in one gRPC message.
pub const SNAPSHOT_CHUNK_BYTES: usize = 1 << 20;

/// A consistent snapshot file of the cluster's state, taken on the leader.
/// `NotLeader` on a follower.
pub async fn snapshot_file(node: &ClusterNode, created_ms: u64) -> Result<Vec<u8>, ClusterError> {
    // Cloning the state is cheap (its tables are shared); serializing it
    // happens after the read lock is released, so apply never waits for it.
    let (state, last_applied, membership) =
        node.linearizable_read(|a| (a.state.clone(), a.last_applied, a.membership.clone())).await?;
    let last_applied = last_applied.ok_or_else(|| ClusterError::Unavailable("nothing applied yet".into()))?;
    let header = SnapshotHeader {
        cluster_name: node.cluster_name().to_string(),
        last_applied: AppliedLogId { term: last_applied.leader_id.term, index: last_applied.index },
        membership: describe_membership(&membership),
        created_ms,
        created_by: node.id(),
        body_bytes: 0,
        body_sha256: String::new(),
    };
    let body = tokio::task::spawn_blocking(move || state.to_bytes())
        .await
        .map_err(|e| ClusterError::Internal(format!("serializing the snapshot: {e}")))?;
    Ok(backup::encode(header, &body))
}

fn describe_membership(m: &StoredMembership<NodeId, NodeInfo>) -> SnapshotMembership {
    let config = m.membership();
    SnapshotMembership {
        log_index: m.log_id().map(|l| l.index),
        voters: config.voter_ids().collect(),
        learners: config.learner_ids().collect(),
        nodes: config.nodes().map(|(id, n)| (*id, n.clone())).collect(),
    }
}

/// Why a restore or a recovery was refused or failed. When refused, nothing
/// was written.
#[derive(Debug, thiserror::Error)]
pub enum BackupError {
    #[error("{path}: {source}")]
    File { path: String, source: SnapshotFileError },
    #[error("cannot read {path}: {source}")]
    Read { path: String, source: std::io::Error },
    #[error("the snapshot is from cluster {file:?} but this node's node.cluster_name is {node:?}; restore it into a node configured for {file:?} (or set --cluster-name)")]
    OtherCluster { file: String, node: String },
    #[error("data dir {path} is not empty ({found}); restore only seeds an empty data dir: point node.data_dir at a new directory (or move this one away)")]
    NotEmpty { path: String, found: String },
    #[error("data dir {path} holds no Raft state: there is nothing to recover from (recover runs on a surviving member's own data dir)")]
    NothingToRecover { path: String },
    #[error("{path} exists: an earlier restore or recovery was interrupted; remove it and run again")]
    LeftOver { path: String },
    #[error(transparent)]
    Store(#[from] OpenError),
    #[error("{what}: {source}")]
    Io { what: String, source: std::io::Error },
}

fn io(what: impl Into<String>) -> impl FnOnce(std::io::Error) -> BackupError {
    let what = what.into();
    move |source| BackupError::Io { what, source }
}

/// The node a data dir is seeded for.
pub struct SeedTarget<'a> {
    pub data_dir: &'a Path,
    pub node_id: NodeId,
    pub info: NodeInfo,
    pub cluster_name: &'a str,
}

/// What a seeded data dir holds.
#[derive(Debug)]
pub struct Seeded {
    pub last_applied: AppliedLogId,
    pub counts: StateCounts,
}

/// Reads and checks a snapshot file for `cluster_name`: everything short of writing.
pub fn read_snapshot(path: &Path, cluster_name: &str) -> Result<(SnapshotHeader, State, Vec<u8>), BackupError> {
    let shown = path.display().to_string();
    let bytes = std::fs::read(path).map_err(|source| BackupError::Read { path: shown.clone(), source })?;
    let (header, state) = backup::decode(&bytes).map_err(|source| BackupError::File { path: shown, source })?;
    if header.cluster_name != cluster_name {
        return Err(BackupError::OtherCluster { file: header.cluster_name, node: cluster_name.to_string() });
    }
    Ok((header, state, bytes))
}

/// What is in `dir`, if anything: None for a missing or empty directory.
fn contents(dir: &Path) -> Result<Option<String>, BackupError> {
    let entries = match std::fs::read_dir(dir) {
        Ok(e) => e,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(None),
        Err(e) if e.kind() == std::io::ErrorKind::NotADirectory => return Ok(Some("it is a file".into())),
        Err(e) => return Err(io(format!("reading data dir {}", dir.display()))(e)),
    };
    let names: Vec<String> =
        entries.filter_map(|e| e.ok()).map(|e| e.file_name().to_string_lossy().into_owned()).collect();
    if names.is_empty() {
        return Ok(None);
    }
    let shown: Vec<&str> = names.iter().take(5).map(String::as_str).collect();
    let more = if names.len() > 5 { format!(" and {} more", names.len() - 5) } else { String::new() };
    Ok(Some(format!("it holds {}{more}", shown.join(", "))))
}

/// `<data_dir>.<suffix>` beside the data dir.
fn sibling(dir: &Path, suffix: &str) -> PathBuf {
    let mut name = dir.file_name().map(|n| n.to_os_string()).unwrap_or_default();
    name.push(format!(".{suffix}"));
    dir.with_file_name(name)
}

fn sync_dir(dir: &Path) -> Result<(), BackupError> {
    std::fs::File::open(dir).and_then(|f| f.sync_all()).map_err(io(format!("syncing {}", dir.display())))
}

fn parent(dir: &Path) -> PathBuf {
    match dir.parent() {
        Some(p) if !p.as_os_str().is_empty() => p.to_path_buf(),
        _ => PathBuf::from("."),
    }
}

/// Seeds a fresh sibling directory for `target` with `state` at `last_applied`
/// and returns it; the caller renames it into place.
async fn seed_beside(
    target: &SeedTarget<'_>,
    state_bytes: Vec<u8>,
    last_applied: LogId<NodeId>,
    vote_term: u64,
) -> Result<PathBuf, BackupError> {
    let tmp = sibling(target.data_dir, "seeding");
    if tmp.exists() {
        return Err(BackupError::LeftOver { path: tmp.display().to_string() });
    }
    std::fs::create_dir_all(&tmp).map_err(io(format!("creating {}", tmp.display())))?;
    let members = BTreeMap::from([(target.node_id, target.info.clone())]);
    let membership = openraft::Membership::new(vec![BTreeSet::from([target.node_id])], members);
    let seed = Seed {
        state: state_bytes,
        last_applied,
        membership: StoredMembership::new(Some(last_applied), membership),
        // Not committed: the node's election timer elects it in the next term.
        vote: Vote::new(vote_term, target.node_id),
        snapshot_id: format!("seeded-{}-{}", last_applied.leader_id.term, last_applied.index),
    };
    if let Err(e) = raftgate_store::seed::seed(&tmp, STORE_CACHE_BYTES, FlushMode::Blocking, &seed).await {
        let _ = std::fs::remove_dir_all(&tmp);
        return Err(e.into());
    }
    sync_dir(&tmp)?;
    Ok(tmp)
}

/// Seeds the EMPTY (or missing) data dir of `target` from the snapshot file at `path`.
pub async fn restore(target: &SeedTarget<'_>, path: &Path) -> Result<Seeded, BackupError> {
    let (header, state, bytes) = read_snapshot(path, target.cluster_name)?;
    if let Some(found) = contents(target.data_dir)? {
        return Err(BackupError::NotEmpty { path: target.data_dir.display().to_string(), found });
    }
    let (_, body) =
        backup::verify(&bytes).map_err(|source| BackupError::File { path: path.display().to_string(), source })?;
    let applied = header.last_applied;
    let log_id = LogId::new(CommittedLeaderId::new(applied.term, target.node_id), applied.index);
    let tmp = seed_beside(target, body.to_vec(), log_id, applied.term).await?;
    // rename(2) replaces an empty directory.
    std::fs::rename(&tmp, target.data_dir).map_err(io(format!("moving {} into place", tmp.display())))?;
    sync_dir(&parent(target.data_dir))?;
    Ok(Seeded { last_applied: applied, counts: StateCounts::of(&state) })
}

/// What a recovery kept, and what it could not know.
#[derive(Debug)]
pub struct Recovery {
    pub seeded: Seeded,
    pub snapshot_index: Option<u64>,
    /// The highest index this node knew to be committed.
    pub known_committed: Option<u64>,
    /// Entries applied beyond the snapshot.
    pub entries_applied: u64,
    /// The old data dir, kept as it was.
    pub kept_at: PathBuf,
}

/// Checks that `data_dir` holds Raft state to recover from. `deep` opens
/// the store to look for a vote, an entry or a snapshot; without it only
/// the files are looked at, so nothing at all is touched.
pub fn check_recoverable(data_dir: &Path, deep: bool) -> Result<(), BackupError> {
    let nothing = || BackupError::NothingToRecover { path: data_dir.display().to_string() };
    if contents(data_dir)?.is_none() || contents(&data_dir.join("raft"))?.is_none() {
        return Err(nothing());
    }
    if deep && !raftgate_store::seed::holds_data(data_dir, STORE_CACHE_BYTES)? {
        return Err(nothing());
    }
    Ok(())
}

/// Re-forms a one-voter cluster of `target` from its own stopped data dir:
/// its snapshot plus every entry its log holds, applied; the old data dir
/// is moved aside (`<data_dir>.before-recover-<ms>`), never deleted.
pub async fn recover(target: &SeedTarget<'_>, now_ms: u64) -> Result<Recovery, BackupError> {
    check_recoverable(target.data_dir, true)?;
    let r = raftgate_store::seed::read_for_recovery(target.data_dir, STORE_CACHE_BYTES, FlushMode::Blocking).await?;
    let last = r
        .applied
        .last_applied
        .ok_or_else(|| BackupError::NothingToRecover { path: target.data_dir.display().to_string() })?;
    let vote_term = r.vote.map_or(0, |v| v.leader_id().term).max(last.leader_id.term);
    let counts = StateCounts::of(&r.applied.state);
    let state_bytes = r.applied.state.to_bytes();
    let tmp = seed_beside(target, state_bytes, last, vote_term).await?;
    let kept_at = sibling(target.data_dir, &format!("before-recover-{now_ms}"));
    std::fs::rename(target.data_dir, &kept_at).map_err(io(format!("moving {} aside", target.data_dir.display())))?;
    std::fs::rename(&tmp, target.data_dir).map_err(io(format!("moving {} into place", tmp.display())))?;
    sync_dir(&parent(target.data_dir))?;
    Ok(Recovery {
        seeded: Seeded { last_applied: AppliedLogId { term: last.leader_id.term, index: last.index }, counts },
        snapshot_index: r.snapshot_index,
        known_committed: r.known_committed,
        entries_applied: r.entries_applied,
        kept_at,
    })
}
