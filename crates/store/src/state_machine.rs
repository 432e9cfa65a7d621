//! The state machine for openraft's `RaftStateMachine`: applies committed
//! entries to the model's [`State`] and keeps the last snapshot on disk.
//!
//! The state lives in memory. Its durable form is the last snapshot; on start
//! openraft re-applies the committed log after it, so a restarted node ends
//! with exactly the state it had.

use std::io::Cursor;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, RwLock};

use openraft::storage::{RaftStateMachine, Snapshot, SnapshotMeta};
use openraft::{
    Entry, EntryPayload, LogId, OptionalSend, RaftSnapshotBuilder, StorageError, StorageIOError, StoredMembership,
};
use raftgate_model::{Command, NodeInfo, State};

use crate::kv::{KvError, KvStore, Space, Write};
use crate::{Outcome, TypeConfig};

type NodeId = u64;
type StorageResult<T> = Result<T, StorageError<NodeId>>;
type Meta = SnapshotMeta<NodeId, NodeInfo>;

pub(crate) const SNAPSHOT_META: &[u8] = b"meta";
pub(crate) const SNAPSHOT_DATA: &[u8] = b"data";

/// The applied state of this node: the model state, the last applied log id
/// and the last applied membership.
#[derive(Clone, Debug, Default)]
pub struct Applied {
    pub state: State,
    pub last_applied: Option<LogId<NodeId>>,
    pub membership: StoredMembership<NodeId, NodeInfo>,
}

/// Sees every change of the applied state synchronously, while apply still
/// holds it: what the observer publishes is in force before openraft learns
/// that the entries were applied (revocations rely on this).
pub trait ApplyObserver: Send + Sync + 'static {
    /// A batch was applied; `accepted` holds its commands that took effect.
    fn applied(&self, state: &State, accepted: &[&Command]);
    /// The state was replaced wholesale (observer registered, snapshot installed).
    fn replaced(&self, state: &State);
}

struct Shared<K> {
    kv: K,
    observer: RwLock<Option<Arc<dyn ApplyObserver>>>,
    applied: RwLock<Applied>,
    /// Serialises snapshot writes so that a slow build cannot overwrite a newer one.
    snapshot_write: tokio::sync::Mutex<()>,
    snapshot_seq: AtomicU64,
    /// The last applied log index, sent after every applied batch or
    /// installed snapshot (the data plane rebuilds its snapshot from it).
    applied_index: tokio::sync::watch::Sender<u64>,
}

/// The state machine. Clones share one applied state.
#[derive(Clone)]
pub struct StateMachineStore<K> {
    shared: Arc<Shared<K>>,
}

#[derive(Debug, thiserror::Error)]
pub enum SnapshotLoadError {
    #[error("reading the snapshot: {0}")]
    Kv(#[from] KvError),
    #[error("snapshot meta does not decode: {0}")]
    Meta(serde_json::Error),
    #[error("snapshot data: {0}")]
    Data(#[from] raftgate_model::StateDecodeError),
}

impl<K: KvStore> StateMachineStore<K> {
    /// Restores the state from the last snapshot in `kv`, if there is one.
    pub fn open(kv: K) -> Result<Self, SnapshotLoadError> {
        let applied = match load_snapshot(&kv)? {
            Some((meta, data)) => Applied {
                state: State::from_bytes(&data)?,
                last_applied: meta.last_log_id,
                membership: meta.last_membership,
            },
            None => Applied::default(),
        };
        // The watch starts at what the snapshot holds: after a compaction
        // nothing is replayed at start, and a reader waiting for an index the
        // snapshot covers (the staleness view) would otherwise wait for the
        // next write.
        let applied_index = tokio::sync::watch::Sender::new(applied.last_applied.map_or(0, |l| l.index));
        Ok(Self {
            shared: Arc::new(Shared {
                kv,
                observer: RwLock::new(None),
                applied: RwLock::new(applied),
                snapshot_write: tokio::sync::Mutex::new(()),
                snapshot_seq: AtomicU64::new(0),
                applied_index,
            }),
        })
    }

    /// Changes whenever entries are applied or a snapshot is installed.
    pub fn subscribe(&self) -> tokio::sync::watch::Receiver<u64> {
        self.shared.applied_index.subscribe()
    }

    fn notify_applied(&self, index: Option<u64>) {
        self.shared.applied_index.send_replace(index.unwrap_or(0));
    }

    /// Registers the observer of applied changes and shows it the current
    /// state, under the same lock apply takes, so it misses nothing.
    pub fn set_observer(&self, observer: Arc<dyn ApplyObserver>) {
        let applied = self.shared.applied.write().unwrap_or_else(|p| p.into_inner());
        observer.replaced(&applied.state);
        *self.shared.observer.write().unwrap_or_else(|p| p.into_inner()) = Some(observer);
        drop(applied);
    }

    fn observer(&self) -> Option<Arc<dyn ApplyObserver>> {
        self.shared.observer.read().unwrap_or_else(|p| p.into_inner()).clone()
    }

    /// Reads the applied state. Keep `f` short: apply waits while it runs.
    pub fn read<R>(&self, f: impl FnOnce(&Applied) -> R) -> R {
        f(&self.shared.applied.read().unwrap_or_else(|p| p.into_inner()))
    }

    /// Stores a snapshot unless a newer one is already stored.
    async fn persist_snapshot(&self, meta: &Meta, data: &[u8]) -> StorageResult<()> {
        let _guard = self.shared.snapshot_write.lock().await;
        let sig = Some(meta.signature());
        let stored = load_snapshot(&self.shared.kv).map_err(|e| StorageIOError::read_snapshot(sig.clone(), &e))?;
        if let Some((stored_meta, _)) = stored {
            if stored_meta.last_log_id > meta.last_log_id {
                tracing::info!(stale = %meta.snapshot_id, kept = %stored_meta.snapshot_id, "not storing an older snapshot over a newer one");
                return Ok(());
            }
        }
        let meta_bytes = serde_json::to_vec(meta).expect("snapshot meta serializes");
        let batch =
            vec![Write::Put(SNAPSHOT_META.to_vec(), meta_bytes), Write::Put(SNAPSHOT_DATA.to_vec(), data.to_vec())];
        self.shared.kv.write(Space::Snapshot, batch).map_err(|e| StorageIOError::write_snapshot(sig.clone(), &e))?;
        self.shared.kv.flush().await.map_err(|e| StorageIOError::write_snapshot(sig, &e))?;
        Ok(())
    }
}

fn load_snapshot<K: KvStore>(kv: &K) -> Result<Option<(Meta, Vec<u8>)>, SnapshotLoadError> {
    let Some(meta) = kv.get(Space::Snapshot, SNAPSHOT_META)? else { return Ok(None) };
    let meta: Meta = serde_json::from_slice(&meta).map_err(SnapshotLoadError::Meta)?;
    let data = kv.get(Space::Snapshot, SNAPSHOT_DATA)?.unwrap_or_default();
    Ok(Some((meta, data)))
}

impl<K: KvStore> RaftSnapshotBuilder<TypeConfig> for StateMachineStore<K> {
    async fn build_snapshot(&mut self) -> StorageResult<Snapshot<TypeConfig>> {
        let (data, last_log_id, last_membership) =
            self.read(|a| (a.state.to_bytes(), a.last_applied, a.membership.clone()));
        let seq = self.shared.snapshot_seq.fetch_add(1, Ordering::Relaxed);
        let snapshot_id = match last_log_id {
            Some(id) => format!("{}-{}-{seq}", id.leader_id.term, id.index),
            None => format!("empty-{seq}"),
        };
        let meta = Meta { last_log_id, last_membership, snapshot_id };
        self.persist_snapshot(&meta, &data).await?;
        Ok(Snapshot { meta, snapshot: Box::new(Cursor::new(data)) })
    }
}

impl<K: KvStore> RaftStateMachine<TypeConfig> for StateMachineStore<K> {
    type SnapshotBuilder = Self;

    async fn applied_state(&mut self) -> StorageResult<(Option<LogId<NodeId>>, StoredMembership<NodeId, NodeInfo>)> {
        Ok(self.read(|a| (a.last_applied, a.membership.clone())))
    }

    async fn apply<I>(&mut self, entries: I) -> StorageResult<Vec<Outcome>>
    where
        I: IntoIterator<Item = Entry<TypeConfig>> + OptionalSend,
        I::IntoIter: OptionalSend,
    {
        let entries: Vec<Entry<TypeConfig>> = entries.into_iter().collect();
        let observer = self.observer();
        let mut applied = self.shared.applied.write().unwrap_or_else(|p| p.into_inner());
        let mut outcomes = Vec::with_capacity(entries.len());
        let mut accepted: Vec<&Command> = Vec::new();
        for entry in &entries {
            let log_id = entry.log_id;
            debug_assert!(applied.last_applied < Some(log_id), "applied index only grows");
            applied.last_applied = Some(log_id);
            let outcome = match &entry.payload {
                EntryPayload::Blank => Outcome::Internal,
                EntryPayload::Normal(p) => match applied.state.apply_as(p.leader_time_ms, &p.command, p.actor.as_ref())
                {
                    Ok(effect) => {
                        accepted.push(&p.command);
                        Outcome::Applied { effect }
                    }
                    Err(rejection) => Outcome::Rejected { rejection },
                },
                EntryPayload::Membership(m) => {
                    applied.membership = StoredMembership::new(Some(log_id), m.clone());
                    Outcome::Internal
                }
            };
            outcomes.push(outcome);
        }
        if let Some(observer) = &observer {
            observer.applied(&applied.state, &accepted);
        }
        let last = applied.last_applied.map(|l| l.index);
        drop(applied);
        self.notify_applied(last);
        Ok(outcomes)
    }

    async fn get_snapshot_builder(&mut self) -> Self::SnapshotBuilder {
        self.clone()
    }

    async fn begin_receiving_snapshot(&mut self) -> StorageResult<Box<Cursor<Vec<u8>>>> {
        Ok(Box::new(Cursor::new(Vec::new())))
    }

    async fn install_snapshot(&mut self, meta: &Meta, snapshot: Box<Cursor<Vec<u8>>>) -> StorageResult<()> {
        let data = snapshot.into_inner();
        let state = State::from_bytes(&data).map_err(|e| StorageIOError::read_snapshot(Some(meta.signature()), &e))?;
        self.persist_snapshot(meta, &data).await?;
        let mut applied = self.shared.applied.write().unwrap_or_else(|p| p.into_inner());
        *applied = Applied { state, last_applied: meta.last_log_id, membership: meta.last_membership.clone() };
        if let Some(observer) = self.observer() {
            observer.replaced(&applied.state);
        }
        drop(applied);
        self.notify_applied(meta.last_log_id.map(|l| l.index));
        Ok(())
    }

    async fn get_current_snapshot(&mut self) -> StorageResult<Option<Snapshot<TypeConfig>>> {
        let loaded = load_snapshot(&self.shared.kv).map_err(|e| StorageIOError::read_snapshot(None, &e))?;
        Ok(loaded.map(|(meta, data)| Snapshot { meta, snapshot: Box::new(Cursor::new(data)) }))
    }
}
