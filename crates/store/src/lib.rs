//! Durable Raft storage for a Raftgate node.
//!
//! openraft asks two things of storage: a log ([`LogStore`]: entries, the
//! vote, the committed id, truncation and purge) and a state machine
//! ([`StateMachineStore`]: apply committed entries, build and install
//! snapshots). Both sit on [`KvStore`], the project's own narrow interface to
//! an ordered, crash-safe key-value store; [`SledKv`] implements it on sled.
//!
//! Durability rule: nothing is reported to openraft as written until the
//! store has been flushed (sled keeps recent writes in memory and loses them
//! on `kill -9`). The state machine itself lives in memory and is rebuilt on
//! start from the last snapshot plus the committed log after it.

// openraft fixes the storage error type (StorageError, ~224 bytes); boxing it here would only add a conversion.
#![allow(clippy::result_large_err)]

mod kv;
mod log_store;
mod rewrite;
mod runtime;
mod seal;
pub mod seed;
mod state_machine;
mod types;

pub use kv::{FlushMode, KvError, KvStore, SledKv, Space, Write};
pub use log_store::LogStore;
pub use rewrite::{request_rewrite, rewrite_requested, REWRITE_MARKER};
pub use runtime::{seed_thread_rng, SeededTokio};
pub use state_machine::{Applied, ApplyObserver, SnapshotLoadError, StateMachineStore};
pub use types::{Outcome, TypeConfig};

use std::path::Path;

/// Why a data directory could not be opened as a Raftgate store.
#[derive(Debug, thiserror::Error)]
pub enum OpenError {
    #[error("cannot open data dir {path}: {source}")]
    Kv { path: String, source: KvError },
    #[error("data dir {path} is damaged: {what}")]
    Corrupt { path: String, what: String },
}

/// Opens (or creates) the store in `dir` and checks it: what it holds decodes
/// (the vote, the committed id, the snapshot, the first and last log entries)
/// and it holds at least what its seal says it held.
pub async fn open(
    dir: &Path,
    cache_capacity_bytes: u64,
    flush: FlushMode,
) -> Result<(LogStore<SledKv>, StateMachineStore<SledKv>), OpenError> {
    let path = dir.display().to_string();
    let corrupt = |what: String| OpenError::Corrupt { path: path.clone(), what };
    // Erased data leaves the disk here, before anything reads the store.
    if crate::rewrite::rewrite_if_requested(dir, cache_capacity_bytes).map_err(corrupt)? {
        tracing::info!(data_dir = %path, "store rewritten into fresh files (erased data removed from disk)");
    }
    let seal = seal::read(dir).map_err(corrupt)?;
    if seal.is_some() && !dir.join("raft").is_dir() {
        return Err(corrupt("its seal is present but the store (raft/) is missing".into()));
    }
    let kv = SledKv::open(&dir.join("raft"), cache_capacity_bytes, flush)
        .map_err(|source| OpenError::Kv { path: path.clone(), source })?;
    let mut log = LogStore::new(kv.clone(), dir.to_path_buf());
    let (vote, last_log) = log.check().await.map_err(|e| corrupt(e.to_string()))?;
    if let Some(seal) = seal {
        seal::check(&seal, vote.as_ref(), last_log).map_err(|what| {
            corrupt(format!(
                "{what}: the store was truncated or damaged; restore the data dir from a backup, \
                 or remove the node from the cluster and add it back with an empty data dir"
            ))
        })?;
    }
    let sm = StateMachineStore::open(kv).map_err(|e| corrupt(e.to_string()))?;
    Ok((log, sm))
}
