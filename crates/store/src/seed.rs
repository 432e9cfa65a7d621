//! Writing a store that openraft starts from as if it had installed a
//! snapshot and purged its log, and reading a stopped node's store for a
//! disaster recovery.
//!
//! How openraft 0.9 starts from storage (`StorageHelper::get_initial_state`):
//! it reads the vote, the committed id, the log state (last purged id, last
//! id) and the state machine's applied id and membership; re-applies the log
//! between applied and committed; takes the membership from the log after
//! the applied index, else from the state machine; and serves the stored
//! snapshot to followers that need entries before the first one in the log.
//! A seeded store therefore holds: the snapshot (meta: last log id L and the
//! membership; data: the state), `last_purged = L` and `committed = L` with
//! an empty log (so the last log id is L), and a vote for this node in L's
//! term, not committed. The node's own election timer then elects it in the
//! next term, and its first entry follows L. The seal records what the store
//! holds. Peer run records (incarnations) start empty.

use std::path::Path;

use openraft::storage::{RaftLogReader, RaftLogStorage, RaftStateMachine};
use openraft::{LogId, StoredMembership, Vote};
use raftgate_model::NodeInfo;

use crate::kv::{KvStore, SledKv, Space, Write};
use crate::log_store::{COMMITTED, LAST_PURGED, VOTE};
use crate::state_machine::{SNAPSHOT_DATA, SNAPSHOT_META};
use crate::{Applied, FlushMode, OpenError};

type NodeId = u64;
/// Log entries read and applied at a time during a recovery.
const RECOVER_CHUNK_ENTRIES: u64 = 1_024;

/// What a seeded store holds.
pub struct Seed {
    /// `State::to_bytes()` of the state.
    pub state: Vec<u8>,
    pub last_applied: LogId<NodeId>,
    pub membership: StoredMembership<NodeId, NodeInfo>,
    pub vote: Vote<NodeId>,
    pub snapshot_id: String,
}

/// Writes a new store for `seed` into `dir`, which must not hold a store yet
/// (callers seed a fresh directory and rename it into place). Everything is
/// flushed and sealed when this returns.
pub async fn seed(dir: &Path, cache_capacity_bytes: u64, flush: FlushMode, seed: &Seed) -> Result<(), OpenError> {
    let path = dir.display().to_string();
    let kv_err = |source| OpenError::Kv { path: path.clone(), source };
    if dir.join("raft").exists() {
        return Err(OpenError::Corrupt { path: path.clone(), what: "a store is already there".into() });
    }
    let kv = SledKv::open(&dir.join("raft"), cache_capacity_bytes, flush).map_err(kv_err)?;
    let meta = openraft::storage::SnapshotMeta::<NodeId, NodeInfo> {
        last_log_id: Some(seed.last_applied),
        last_membership: seed.membership.clone(),
        snapshot_id: seed.snapshot_id.clone(),
    };
    // The snapshot first: once it is in, openraft would start from it even
    // if nothing else landed (it purges the log up to it on start).
    kv.write(
        Space::Snapshot,
        vec![Write::Put(SNAPSHOT_META.to_vec(), json(&meta)), Write::Put(SNAPSHOT_DATA.to_vec(), seed.state.clone())],
    )
    .map_err(kv_err)?;
    kv.write(
        Space::Meta,
        vec![
            Write::Put(VOTE.to_vec(), json(&seed.vote)),
            Write::Put(COMMITTED.to_vec(), json(&Some(seed.last_applied))),
            Write::Put(LAST_PURGED.to_vec(), json(&seed.last_applied)),
        ],
    )
    .map_err(kv_err)?;
    kv.flush().await.map_err(kv_err)?;
    let seal =
        crate::seal::Seal { vote_term: seed.vote.leader_id().term, committed_index: Some(seed.last_applied.index) };
    crate::seal::write(dir, &seal)
        .map_err(|e| OpenError::Corrupt { path: path.clone(), what: format!("writing the seal: {e}") })?;
    Ok(())
}

fn json<T: serde::Serialize>(v: &T) -> Vec<u8> {
    serde_json::to_vec(v).expect("raft metadata serializes to JSON")
}

/// A stopped node's store, read for a disaster recovery.
pub struct Recovered {
    /// The applied state after applying every entry of the log.
    pub applied: Applied,
    /// Where its last snapshot ended.
    pub snapshot_index: Option<u64>,
    /// The highest index this node knew to be committed (its committed id, or its seal).
    pub known_committed: Option<u64>,
    /// Its last log entry.
    pub last_log: Option<LogId<NodeId>>,
    pub vote: Option<Vote<NodeId>>,
    /// Entries applied here on top of the snapshot.
    pub entries_applied: u64,
}

/// Opens the store in `dir` (checked against its seal), and applies to the
/// snapshot's state every entry its log holds after it: what this node knew
/// committed and what it held beyond that (a new leader with this log would
/// commit those too). Writes nothing to the store.
pub async fn read_for_recovery(
    dir: &Path,
    cache_capacity_bytes: u64,
    flush: FlushMode,
) -> Result<Recovered, OpenError> {
    let path = dir.display().to_string();
    let corrupt = |what: String| OpenError::Corrupt { path: path.clone(), what };
    let seal = crate::seal::read(dir).map_err(corrupt)?;
    let (mut log, mut sm) = crate::open(dir, cache_capacity_bytes, flush).await?;
    let vote = log.read_vote().await.map_err(|e| corrupt(e.to_string()))?;
    let committed = log.read_committed().await.map_err(|e| corrupt(e.to_string()))?;
    let state = log.get_log_state().await.map_err(|e| corrupt(e.to_string()))?;
    let (snapshot_applied, _) = sm.applied_state().await.map_err(|e| corrupt(e.to_string()))?;
    let known_committed = committed.map(|c| c.index).max(seal.and_then(|s| s.committed_index));
    let mut next = snapshot_applied.map_or(0, |l| l.index + 1).max(state.last_purged_log_id.map_or(0, |l| l.index + 1));
    let end = state.last_log_id.map_or(0, |l| l.index + 1);
    let mut entries_applied = 0;
    while next < end {
        let to = end.min(next + RECOVER_CHUNK_ENTRIES);
        let entries = log.try_get_log_entries(next..to).await.map_err(|e| corrupt(e.to_string()))?;
        if entries.first().map(|e| e.log_id.index) != Some(next) || entries.len() as u64 != to - next {
            return Err(corrupt(format!("its log has a hole between index {next} and {}", to - 1)));
        }
        sm.apply(entries).await.map_err(|e| corrupt(e.to_string()))?;
        entries_applied += to - next;
        next = to;
    }
    let applied = sm.read(|a| a.clone());
    log.kv().flush().await.map_err(|e| corrupt(e.to_string()))?;
    Ok(Recovered {
        applied,
        snapshot_index: snapshot_applied.map(|l| l.index),
        known_committed,
        last_log: state.last_log_id,
        vote,
        entries_applied,
    })
}

/// Whether `dir` holds a store with anything in it (a vote, a log entry or a snapshot).
pub fn holds_data(dir: &Path, cache_capacity_bytes: u64) -> Result<bool, OpenError> {
    let path = dir.display().to_string();
    if !dir.join("raft").is_dir() {
        return Ok(false);
    }
    let kv = SledKv::open(&dir.join("raft"), cache_capacity_bytes, FlushMode::Blocking)
        .map_err(|source| OpenError::Kv { path: path.clone(), source })?;
    let any = |space| kv.first(space).map(|v| v.is_some());
    let kv_err = |source| OpenError::Kv { path: path.clone(), source };
    Ok(kv.get(Space::Meta, VOTE).map_err(kv_err)?.is_some()
        || any(Space::Log).map_err(kv_err)?
        || any(Space::Snapshot).map_err(kv_err)?)
}
