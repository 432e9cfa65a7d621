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

mod kv;
mod log_store;
mod state_machine;
mod types;

pub use kv::{KvError, KvStore, SledKv, Space, Write};
pub use log_store::LogStore;
pub use state_machine::{Applied, SnapshotLoadError, StateMachineStore};
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

/// Opens (or creates) the store in `dir` and checks that what it holds decodes:
/// the vote, the committed id, the snapshot and the first and last log entries.
pub async fn open(
    dir: &Path,
    cache_capacity_bytes: u64,
) -> Result<(LogStore<SledKv>, StateMachineStore<SledKv>), OpenError> {
    let path = dir.display().to_string();
    let kv = SledKv::open(dir, cache_capacity_bytes).map_err(|source| OpenError::Kv { path: path.clone(), source })?;
    let mut log = LogStore::new(kv.clone());
    log.check().await.map_err(|e| OpenError::Corrupt { path: path.clone(), what: e.to_string() })?;
    let sm = StateMachineStore::open(kv).map_err(|e| OpenError::Corrupt { path, what: e.to_string() })?;
    Ok((log, sm))
}
