//! The Raft log, vote and committed id, for openraft's `RaftLogStorage`.

use std::fmt::Debug;
use std::ops::{Bound, RangeBounds};
use std::path::PathBuf;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;

use openraft::storage::{LogFlushed, LogState, RaftLogReader, RaftLogStorage};
use openraft::{Entry, LogId, OptionalSend, StorageError, StorageIOError, Vote};
use serde::de::DeserializeOwned;
use serde::Serialize;

use crate::kv::{KvStore, Space, Write};
use crate::TypeConfig;

type NodeId = u64;
type StorageResult<T> = Result<T, StorageError<NodeId>>;

pub(crate) const VOTE: &[u8] = b"vote";
pub(crate) const COMMITTED: &[u8] = b"committed";
pub(crate) const LAST_PURGED: &[u8] = b"last_purged";

/// The Raft log on a [`KvStore`]. Cloning is cheap; clones share the store.
#[derive(Clone)]
pub struct LogStore<K> {
    kv: K,
    /// Where the seal file goes (see `seal`).
    seal_dir: Arc<PathBuf>,
    /// Index of the last committed entry plus one (0: nothing committed), for status reports.
    committed: Arc<AtomicU64>,
}

fn index_key(index: u64) -> Vec<u8> {
    index.to_be_bytes().to_vec()
}

fn encode<T: Serialize>(v: &T) -> Vec<u8> {
    serde_json::to_vec(v).expect("raft metadata and entries serialize to JSON")
}

fn decode<T: DeserializeOwned>(bytes: &[u8]) -> Result<T, serde_json::Error> {
    serde_json::from_slice(bytes)
}

fn to_bound(b: Bound<&u64>) -> Bound<Vec<u8>> {
    match b {
        Bound::Included(i) => Bound::Included(index_key(*i)),
        Bound::Excluded(i) => Bound::Excluded(index_key(*i)),
        Bound::Unbounded => Bound::Unbounded,
    }
}

impl<K: KvStore> LogStore<K> {
    pub fn new(kv: K, seal_dir: PathBuf) -> Self {
        Self { kv, seal_dir: Arc::new(seal_dir), committed: Arc::new(AtomicU64::new(0)) }
    }

    /// Flushes the store, then records in the seal file what is now durable.
    pub async fn seal(&mut self) -> Result<(), String> {
        // Read before flushing: everything read is then durable after the flush.
        let vote = self.read_vote().await.map_err(|e| e.to_string())?;
        let committed_index = self.committed_index();
        self.kv.flush().await.map_err(|e| e.to_string())?;
        let seal = crate::seal::Seal { vote_term: vote.map_or(0, |v| v.leader_id().term), committed_index };
        // A few bytes and one fsync every few seconds: written inline.
        crate::seal::write(&self.seal_dir, &seal).map_err(|e| format!("writing the seal: {e}"))
    }

    /// Flushes the store and asks for it to be rewritten into fresh files
    /// at the next start (see `rewrite`).
    pub async fn request_rewrite(&self) -> Result<(), String> {
        self.kv.flush().await.map_err(|e| e.to_string())?;
        crate::rewrite::request_rewrite(&self.seal_dir).map_err(|e| format!("writing the rewrite marker: {e}"))
    }

    /// The last committed log index this node knows of.
    /// The store under the log (for node-local records beside it).
    pub fn kv(&self) -> &K {
        &self.kv
    }

    pub fn committed_index(&self) -> Option<u64> {
        self.committed.load(Ordering::Relaxed).checked_sub(1)
    }

    fn read_meta<T: DeserializeOwned>(&self, key: &[u8]) -> StorageResult<Option<T>> {
        let bytes = self.kv.get(Space::Meta, key).map_err(|e| StorageIOError::read(&e))?;
        bytes.map(|b| decode(&b)).transpose().map_err(|e| StorageIOError::read(&e).into())
    }

    async fn write_meta<T: Serialize>(&self, key: &[u8], value: &T, durable: bool) -> StorageResult<()> {
        let batch = vec![Write::Put(key.to_vec(), encode(value))];
        self.kv.write(Space::Meta, batch).map_err(|e| StorageIOError::write(&e))?;
        if durable {
            self.kv.flush().await.map_err(|e| StorageIOError::write(&e))?;
        }
        Ok(())
    }

    fn decode_entry(bytes: &[u8]) -> StorageResult<Entry<TypeConfig>> {
        decode(bytes).map_err(|e| StorageIOError::read_logs(&e).into())
    }

    /// Decodes the metadata and the first and last entries, so that a damaged
    /// store is reported when the node starts rather than in the middle of a write.
    /// Returns the vote and the last log id.
    pub async fn check(&mut self) -> StorageResult<(Option<Vote<NodeId>>, Option<LogId<NodeId>>)> {
        let vote = self.read_vote().await?;
        self.read_committed().await?;
        let state = self.get_log_state().await?;
        if let Some((_, v)) = self.kv.first(Space::Log).map_err(|e| StorageIOError::read_logs(&e))? {
            Self::decode_entry(&v)?;
        }
        Ok((vote, state.last_log_id))
    }

    /// Removes every entry whose key is in `range` and flushes.
    async fn remove(&self, from: Bound<Vec<u8>>, to: Bound<Vec<u8>>) -> StorageResult<()> {
        let pairs = self.kv.range(Space::Log, from, to).map_err(|e| StorageIOError::write_logs(&e))?;
        let batch = pairs.into_iter().map(|(k, _)| Write::Delete(k)).collect();
        self.kv.write(Space::Log, batch).map_err(|e| StorageIOError::write_logs(&e))?;
        self.kv.flush().await.map_err(|e| StorageIOError::write_logs(&e))?;
        Ok(())
    }
}

impl<K: KvStore> RaftLogReader<TypeConfig> for LogStore<K> {
    async fn try_get_log_entries<RB: RangeBounds<u64> + Clone + Debug + OptionalSend>(
        &mut self,
        range: RB,
    ) -> StorageResult<Vec<Entry<TypeConfig>>> {
        let pairs = self
            .kv
            .range(Space::Log, to_bound(range.start_bound()), to_bound(range.end_bound()))
            .map_err(|e| StorageIOError::read_logs(&e))?;
        pairs.iter().map(|(_, v)| Self::decode_entry(v)).collect()
    }
}

impl<K: KvStore> RaftLogStorage<TypeConfig> for LogStore<K> {
    type LogReader = Self;

    async fn get_log_state(&mut self) -> StorageResult<LogState<TypeConfig>> {
        let last_purged_log_id: Option<LogId<NodeId>> = self.read_meta(LAST_PURGED)?;
        let last = self.kv.last(Space::Log).map_err(|e| StorageIOError::read_logs(&e))?;
        let last_log_id = match last {
            Some((_, v)) => Some(Self::decode_entry(&v)?.log_id),
            None => last_purged_log_id,
        };
        Ok(LogState { last_purged_log_id, last_log_id })
    }

    async fn get_log_reader(&mut self) -> Self::LogReader {
        self.clone()
    }

    async fn save_vote(&mut self, vote: &Vote<NodeId>) -> StorageResult<()> {
        self.write_meta(VOTE, vote, true).await
    }

    async fn read_vote(&mut self) -> StorageResult<Option<Vote<NodeId>>> {
        self.read_meta(VOTE)
    }

    async fn save_committed(&mut self, committed: Option<LogId<NodeId>>) -> StorageResult<()> {
        self.committed.store(committed.map_or(0, |c| c.index + 1), Ordering::Relaxed);
        // Not flushed: a committed id lost in a crash only means re-applying less
        // on start; the leader tells the node again. Votes and entries are flushed.
        self.write_meta(COMMITTED, &committed, false).await
    }

    async fn read_committed(&mut self) -> StorageResult<Option<LogId<NodeId>>> {
        let committed = self.read_meta::<Option<LogId<NodeId>>>(COMMITTED)?.flatten();
        self.committed.store(committed.map_or(0, |c| c.index + 1), Ordering::Relaxed);
        Ok(committed)
    }

    async fn append<I>(&mut self, entries: I, callback: LogFlushed<TypeConfig>) -> StorageResult<()>
    where
        I: IntoIterator<Item = Entry<TypeConfig>> + OptionalSend,
        I::IntoIter: OptionalSend,
    {
        let batch: Vec<Write> =
            entries.into_iter().map(|e| Write::Put(index_key(e.log_id.index), encode(&e))).collect();
        self.kv.write(Space::Log, batch).map_err(|e| StorageIOError::write_logs(&e))?;
        // Only a flushed append may be reported durable: openraft counts it toward a quorum.
        let flushed = self.kv.flush().await.map_err(|e| std::io::Error::other(e.to_string()));
        callback.log_io_completed(flushed);
        Ok(())
    }

    async fn truncate(&mut self, log_id: LogId<NodeId>) -> StorageResult<()> {
        tracing::debug!(%log_id, "truncate log from");
        self.remove(Bound::Included(index_key(log_id.index)), Bound::Unbounded).await
    }

    async fn purge(&mut self, log_id: LogId<NodeId>) -> StorageResult<()> {
        tracing::debug!(%log_id, "purge log up to");
        // Record the purge point first: a crash between the two steps leaves
        // entries that are merely redundant, never a hole openraft cannot explain.
        self.write_meta(LAST_PURGED, &log_id, true).await?;
        self.remove(Bound::Unbounded, Bound::Included(index_key(log_id.index))).await
    }
}
