//! The narrow interface Raft storage needs from a disk, and its sled implementation.
//!
//! Keeping sled behind [`KvStore`] means another engine (redb, say) can replace
//! it without touching the Raft storage code.

use std::future::Future;
use std::ops::Bound;
use std::path::Path;

/// A separate ordered key space of the store.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Space {
    /// Raft log entries by big-endian index.
    Log,
    /// Vote, committed log id, last purged log id.
    Meta,
    /// The last snapshot: its meta and its data.
    Snapshot,
}

/// One write in an atomic batch.
#[derive(Clone, Debug)]
pub enum Write {
    Put(Vec<u8>, Vec<u8>),
    Delete(Vec<u8>),
}

#[derive(Debug, thiserror::Error)]
pub enum KvError {
    #[error("another process holds the data dir lock (is another node running on it?)")]
    Locked,
    #[error("{0}")]
    Io(String),
}

type Pair = (Vec<u8>, Vec<u8>);

/// An ordered, crash-safe key-value store. Writes are durable only after
/// [`KvStore::flush`] returns.
pub trait KvStore: Clone + Send + Sync + 'static {
    fn get(&self, space: Space, key: &[u8]) -> Result<Option<Vec<u8>>, KvError>;
    /// Applies every write of `batch` to `space` atomically.
    fn write(&self, space: Space, batch: Vec<Write>) -> Result<(), KvError>;
    /// Pairs with keys in the range, in key order.
    fn range(&self, space: Space, from: Bound<Vec<u8>>, to: Bound<Vec<u8>>) -> Result<Vec<Pair>, KvError>;
    fn first(&self, space: Space) -> Result<Option<Pair>, KvError>;
    fn last(&self, space: Space) -> Result<Option<Pair>, KvError>;
    /// Makes every write before this call durable.
    fn flush(&self) -> impl Future<Output = Result<(), KvError>> + Send;
}

/// How a flush waits for the disk.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum FlushMode {
    /// sled's `flush_async`: the task yields while the disk syncs.
    Async,
    /// sled's blocking `flush` on the calling thread. Same durability; used by
    /// the simulation, where work on other threads would break determinism.
    Blocking,
}

/// [`KvStore`] on sled: one tree per [`Space`].
#[derive(Clone)]
pub struct SledKv {
    db: sled::Db,
    flush: FlushMode,
    log: sled::Tree,
    meta: sled::Tree,
    snapshot: sled::Tree,
}

fn io(e: sled::Error) -> KvError {
    match &e {
        sled::Error::Io(io) if io.kind() == std::io::ErrorKind::WouldBlock => KvError::Locked,
        sled::Error::Io(io) if io.to_string().contains("could not acquire lock") => KvError::Locked,
        _ => KvError::Io(e.to_string()),
    }
}

impl SledKv {
    /// Opens or creates the store in `dir` with a page cache of at most `cache_capacity_bytes`.
    pub fn open(dir: &Path, cache_capacity_bytes: u64, flush: FlushMode) -> Result<Self, KvError> {
        let db = sled::Config::new().path(dir).cache_capacity(cache_capacity_bytes).open().map_err(io)?;
        Ok(Self {
            log: db.open_tree("raft_log").map_err(io)?,
            meta: db.open_tree("raft_meta").map_err(io)?,
            snapshot: db.open_tree("snapshot").map_err(io)?,
            db,
            flush,
        })
    }

    fn tree(&self, space: Space) -> &sled::Tree {
        match space {
            Space::Log => &self.log,
            Space::Meta => &self.meta,
            Space::Snapshot => &self.snapshot,
        }
    }
}

fn pair((k, v): (sled::IVec, sled::IVec)) -> Pair {
    (k.to_vec(), v.to_vec())
}

impl KvStore for SledKv {
    fn get(&self, space: Space, key: &[u8]) -> Result<Option<Vec<u8>>, KvError> {
        Ok(self.tree(space).get(key).map_err(io)?.map(|v| v.to_vec()))
    }

    fn write(&self, space: Space, batch: Vec<Write>) -> Result<(), KvError> {
        let mut b = sled::Batch::default();
        for w in batch {
            match w {
                Write::Put(k, v) => b.insert(k, v),
                Write::Delete(k) => b.remove(k),
            }
        }
        self.tree(space).apply_batch(b).map_err(io)
    }

    fn range(&self, space: Space, from: Bound<Vec<u8>>, to: Bound<Vec<u8>>) -> Result<Vec<Pair>, KvError> {
        self.tree(space).range::<Vec<u8>, _>((from, to)).map(|r| r.map(pair).map_err(io)).collect()
    }

    fn first(&self, space: Space) -> Result<Option<Pair>, KvError> {
        Ok(self.tree(space).first().map_err(io)?.map(pair))
    }

    fn last(&self, space: Space) -> Result<Option<Pair>, KvError> {
        Ok(self.tree(space).last().map_err(io)?.map(pair))
    }

    async fn flush(&self) -> Result<(), KvError> {
        match self.flush {
            FlushMode::Async => self.db.flush_async().await.map_err(io)?,
            FlushMode::Blocking => self.db.flush().map_err(io)?,
        };
        Ok(())
    }
}
