//! Runs of a node's data dir, so that a node restarted on an old copy of its
//! data dir cannot act as if it were current.
//!
//! Raft assumes storage never goes back: a node that restarts on a restored
//! backup or a rolled-back volume has forgotten votes it cast and entries it
//! acknowledged, and could vote twice in a term or help elect a leader
//! without a committed entry. Nothing in the data dir itself can tell (the
//! copy holds its own markers), but its peers can:
//!
//! - every start bumps a counter kept in the data dir and draws a random
//!   nonce: the run is `(node, generation, nonce)`, its [`Origin`];
//! - every Raft request and every answer carries the sender's origin;
//! - each node keeps (durably) the newest origin it has seen from each peer.
//!   A message from an older generation, or from the same generation with
//!   another nonce (a copy that was restarted once more), is refused: the
//!   request fails, the answer is treated as unreachable.
//!
//! A node on an old copy therefore cannot vote, be elected, or count towards
//! a commit with any peer that saw its later run, and its view never vouches
//! for its state (it applies nothing new). The remedy is the usual one:
//! remove it from the cluster (every node then forgets its runs) and add it
//! back with an empty data dir. A copy
//! can only pass with peers that never saw the run after it (for example,
//! all of them restored from the same old backup: that is a disaster
//! recovery, not this).

use std::collections::HashMap;
use std::sync::{Arc, Mutex};

use raftgate_model::NodeId;
use raftgate_store::{KvStore, SledKv, Space, Write};
use rand::RngCore;

/// The metadata key requests and answers carry their sender's origin in.
pub const ORIGIN_HEADER: &str = "x-raftgate-origin";
/// The metadata key requests and answers carry their sender's cluster name in.
pub const CLUSTER_HEADER: &str = "x-raftgate-cluster";
const GENERATION_KEY: &[u8] = b"incarnation";
const PEER_PREFIX: &[u8] = b"peer-incarnation/";
/// Distinct refused origins logged (later ones only counted).
const MAX_LOGGED_REFUSALS: usize = 64;

/// One run of a node's data dir.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub struct Origin {
    pub node: NodeId,
    pub generation: u64,
    pub nonce: u64,
}

impl Origin {
    pub fn encode(&self) -> String {
        format!("{}.{}.{:016x}", self.node, self.generation, self.nonce)
    }

    pub fn parse(s: &str) -> Option<Self> {
        let mut parts = s.splitn(3, '.');
        let node = parts.next()?.parse().ok()?;
        let generation = parts.next()?.parse().ok()?;
        let nonce = u64::from_str_radix(parts.next()?, 16).ok()?;
        Some(Self { node, generation, nonce })
    }

    fn to_bytes(self) -> Vec<u8> {
        let mut b = self.generation.to_be_bytes().to_vec();
        b.extend_from_slice(&self.nonce.to_be_bytes());
        b
    }

    fn from_bytes(node: NodeId, b: &[u8]) -> Option<Self> {
        let generation = u64::from_be_bytes(b.get(0..8)?.try_into().ok()?);
        let nonce = u64::from_be_bytes(b.get(8..16)?.try_into().ok()?);
        Some(Self { node, generation, nonce })
    }
}

/// Why a peer's message was refused.
#[derive(Debug, thiserror::Error)]
pub enum Refused {
    #[error("node {node} runs generation {got} of its data dir, but generation {seen} was seen from it: it restarted on an old copy of its data dir; remove it from the cluster and add it back with an empty data dir")]
    OldCopy { node: NodeId, got: u64, seen: u64 },
    #[error("node {node} answered without its origin")]
    Missing { node: NodeId },
    #[error("a message claiming to be from node {claimed} came from node {actual}")]
    WrongNode { claimed: NodeId, actual: NodeId },
    #[error("recording node {node}'s run: {message}")]
    Storage { node: NodeId, message: String },
}

/// This node's run, and the newest run seen from each peer.
pub struct Incarnations {
    me: Origin,
    /// `me`, encoded once for every message's metadata.
    header: tonic::metadata::AsciiMetadataValue,
    kv: SledKv,
    seen: Mutex<HashMap<NodeId, Origin>>,
    logged: Mutex<std::collections::HashSet<Origin>>,
    /// Serialises the durable write of a newer origin.
    write: tokio::sync::Mutex<()>,
}

impl Incarnations {
    /// Starts a new run of the data dir: bumps and flushes the generation.
    pub async fn start(node: NodeId, kv: SledKv) -> Result<Arc<Self>, String> {
        let previous = match kv.get(Space::Meta, GENERATION_KEY).map_err(|e| e.to_string())? {
            Some(b) => u64::from_be_bytes(b.as_slice().try_into().map_err(|_| "the incarnation record is damaged")?),
            None => 0,
        };
        let generation = previous + 1;
        kv.write(Space::Meta, vec![Write::Put(GENERATION_KEY.to_vec(), generation.to_be_bytes().to_vec())])
            .map_err(|e| e.to_string())?;
        kv.flush().await.map_err(|e| e.to_string())?;
        let nonce = <raftgate_store::SeededTokio as openraft::AsyncRuntime>::thread_rng().next_u64();
        let mut seen = HashMap::new();
        let end = {
            let mut e = PEER_PREFIX.to_vec();
            e.push(0xff);
            e
        };
        let stored = kv
            .range(Space::Meta, std::ops::Bound::Included(PEER_PREFIX.to_vec()), std::ops::Bound::Excluded(end))
            .map_err(|e| e.to_string())?;
        for (k, v) in stored {
            let id = k.get(PEER_PREFIX.len()..).and_then(|b| b.try_into().ok()).map(u64::from_be_bytes);
            if let Some(o) = id.and_then(|id| Origin::from_bytes(id, &v)) {
                seen.insert(o.node, o);
            }
        }
        let me = Origin { node, generation, nonce };
        let header = me.encode().parse().map_err(|_| "an origin is always ASCII".to_string())?;
        tracing::info!(node, generation, "data dir run started");
        Ok(Arc::new(Self {
            me,
            header,
            kv,
            seen: Mutex::new(seen),
            logged: Mutex::default(),
            write: tokio::sync::Mutex::new(()),
        }))
    }

    pub fn me(&self) -> Origin {
        self.me
    }

    /// This run as the value of [`ORIGIN_HEADER`].
    pub fn header(&self) -> tonic::metadata::AsciiMetadataValue {
        self.header.clone()
    }

    /// Accepts a message from `origin` (claimed to come from `from` when the
    /// sender is known), recording a newer run durably first; refuses one
    /// from an older run.
    pub async fn check(&self, origin: Option<Origin>, from: Option<NodeId>) -> Result<(), Refused> {
        let Some(origin) = origin else {
            return Err(Refused::Missing { node: from.unwrap_or_default() });
        };
        if let Some(actual) = from.filter(|&f| f != origin.node) {
            return Err(Refused::WrongNode { claimed: origin.node, actual });
        }
        if origin.node == self.me.node {
            return Ok(());
        }
        match self.judge(origin) {
            Judgement::Current => Ok(()),
            Judgement::Refused(e) => Err(self.refused(origin, e)),
            Judgement::Newer => {
                let _one = self.write.lock().await;
                // Another message may have recorded it (or a newer one) meanwhile.
                match self.judge(origin) {
                    Judgement::Current => return Ok(()),
                    Judgement::Refused(e) => return Err(self.refused(origin, e)),
                    Judgement::Newer => {}
                }
                let mut key = PEER_PREFIX.to_vec();
                key.extend_from_slice(&origin.node.to_be_bytes());
                let stored = self.kv.write(Space::Meta, vec![Write::Put(key, origin.to_bytes())]);
                let flushed = match stored {
                    Ok(()) => self.kv.flush().await,
                    Err(e) => Err(e),
                };
                flushed.map_err(|e| Refused::Storage { node: origin.node, message: e.to_string() })?;
                self.seen.lock().unwrap_or_else(|p| p.into_inner()).insert(origin.node, origin);
                Ok(())
            }
        }
    }

    /// Forgets the runs of nodes no longer in the membership, so that one
    /// removed and added back with an empty data dir starts afresh.
    pub async fn forget_all_but(&self, members: &std::collections::BTreeSet<NodeId>) -> Result<(), String> {
        if members.is_empty() {
            return Ok(()); // not a member of anything yet: nothing to judge by
        }
        let _one = self.write.lock().await;
        let gone: Vec<NodeId> = {
            let seen = self.seen.lock().unwrap_or_else(|p| p.into_inner());
            seen.keys().copied().filter(|n| !members.contains(n)).collect()
        };
        if gone.is_empty() {
            return Ok(());
        }
        let batch = gone
            .iter()
            .map(|n| {
                let mut key = PEER_PREFIX.to_vec();
                key.extend_from_slice(&n.to_be_bytes());
                Write::Delete(key)
            })
            .collect();
        self.kv.write(Space::Meta, batch).map_err(|e| e.to_string())?;
        self.kv.flush().await.map_err(|e| e.to_string())?;
        let mut seen = self.seen.lock().unwrap_or_else(|p| p.into_inner());
        for n in &gone {
            seen.remove(n);
        }
        tracing::info!(nodes = ?gone, "forgot the data dir runs of removed nodes");
        Ok(())
    }

    fn judge(&self, origin: Origin) -> Judgement {
        let seen = self.seen.lock().unwrap_or_else(|p| p.into_inner());
        match seen.get(&origin.node) {
            None => Judgement::Newer,
            Some(s) if origin.generation > s.generation => Judgement::Newer,
            Some(s) if *s == origin => Judgement::Current,
            Some(s) => {
                Judgement::Refused(Refused::OldCopy { node: origin.node, got: origin.generation, seen: s.generation })
            }
        }
    }

    fn refused(&self, origin: Origin, e: Refused) -> Refused {
        let mut logged = self.logged.lock().unwrap_or_else(|p| p.into_inner());
        if logged.len() < MAX_LOGGED_REFUSALS && logged.insert(origin) {
            tracing::error!(peer = origin.node, error = %e, "refusing a peer's Raft messages");
        }
        e
    }
}

/// This node's cluster name, which every Raft request and answer carries:
/// a node of another cluster (a config pointing at the wrong addresses) is
/// refused before anything of it is recorded, with or without TLS.
pub struct ClusterName {
    name: String,
    header: tonic::metadata::AsciiMetadataValue,
    /// Peers already logged (at most [`MAX_LOGGED_REFUSALS`]).
    logged: Mutex<std::collections::HashSet<NodeId>>,
}

/// A Raft message from another cluster.
#[derive(Debug, PartialEq, Eq, thiserror::Error)]
pub enum ForeignCluster {
    #[error("node {node} is a node of cluster {theirs:?}, not of this node's cluster {ours:?}: check the addresses in the membership and node.cluster_name")]
    Other { node: String, theirs: String, ours: String },
    #[error("node {node} sent no cluster name (this node is in cluster {ours:?})")]
    Missing { node: String, ours: String },
}

impl ClusterName {
    pub fn new(name: &str) -> Result<Self, String> {
        let header = name.parse().map_err(|_| format!("cluster name {name:?} is not valid metadata"))?;
        Ok(Self { name: name.to_string(), header, logged: Mutex::default() })
    }

    /// This node's cluster as the value of [`CLUSTER_HEADER`].
    pub fn header(&self) -> tonic::metadata::AsciiMetadataValue {
        self.header.clone()
    }

    /// Accepts a message whose metadata names this cluster; `from` is the
    /// sender as far as known (for the message). The first refusal per peer is logged.
    pub fn check(&self, metadata: &tonic::metadata::MetadataMap, from: Option<NodeId>) -> Result<(), ForeignCluster> {
        let theirs = metadata.get(CLUSTER_HEADER).map(|v| v.to_str().unwrap_or("(not ASCII)"));
        if theirs == Some(self.name.as_str()) {
            return Ok(());
        }
        let node = from.map_or_else(|| "(unknown)".to_string(), |n| n.to_string());
        let ours = self.name.clone();
        let e = match theirs {
            Some(t) => ForeignCluster::Other { node, theirs: t.chars().take(64).collect(), ours },
            None => ForeignCluster::Missing { node, ours },
        };
        let key = from.unwrap_or_default();
        let mut logged = self.logged.lock().unwrap_or_else(|p| p.into_inner());
        if logged.len() < MAX_LOGGED_REFUSALS && logged.insert(key) {
            tracing::error!(peer = key, error = %e, "refusing a peer's Raft messages: another cluster");
        }
        Err(e)
    }
}

enum Judgement {
    Current,
    Newer,
    Refused(Refused),
}

#[cfg(test)]
mod tests {
    use super::*;

    async fn open(dir: &std::path::Path) -> SledKv {
        SledKv::open(dir, 1 << 20, raftgate_store::FlushMode::Blocking).unwrap()
    }

    #[test]
    fn a_message_from_another_cluster_or_without_a_cluster_name_is_refused() {
        let ours = ClusterName::new("prod").unwrap();
        let mut md = tonic::metadata::MetadataMap::new();
        md.insert(CLUSTER_HEADER, ours.header());
        assert_eq!(ours.check(&md, Some(2)), Ok(()));
        md.insert(CLUSTER_HEADER, "staging".parse().unwrap());
        let e = ours.check(&md, Some(2)).unwrap_err();
        let text = e.to_string();
        assert!(text.contains("\"staging\"") && text.contains("\"prod\"") && text.contains("node 2"), "{text}");
        // Logged once, refused every time.
        assert!(ours.check(&md, Some(2)).is_err());
        let e = ours.check(&tonic::metadata::MetadataMap::new(), None).unwrap_err();
        assert!(matches!(e, ForeignCluster::Missing { .. }), "{e}");
    }

    #[test]
    fn an_origin_round_trips_and_garbage_does_not_parse() {
        let o = Origin { node: 3, generation: 7, nonce: 0xdead_beef };
        assert_eq!(Origin::parse(&o.encode()), Some(o));
        for bad in ["", "3", "3.7", "x.7.1", "3.7.zz", "3.-1.1"] {
            assert_eq!(Origin::parse(bad), None, "{bad}");
        }
    }

    #[tokio::test]
    async fn each_start_is_a_new_generation() {
        let dir = tempfile::tempdir().unwrap();
        let kv = open(dir.path()).await;
        let a = Incarnations::start(1, kv.clone()).await.unwrap().me();
        let b = Incarnations::start(1, kv).await.unwrap().me();
        assert_eq!(b.generation, a.generation + 1);
    }

    #[tokio::test]
    async fn an_old_run_and_a_forked_run_are_refused_a_newer_one_is_recorded_durably() {
        let dir = tempfile::tempdir().unwrap();
        let kv = open(dir.path()).await;
        let me = Incarnations::start(1, kv.clone()).await.unwrap();
        let peer = |generation, nonce| Some(Origin { node: 2, generation, nonce });
        me.check(peer(5, 1), Some(2)).await.unwrap();
        me.check(peer(5, 1), Some(2)).await.unwrap();
        assert!(matches!(me.check(peer(4, 9), Some(2)).await, Err(Refused::OldCopy { got: 4, seen: 5, .. })));
        // A copy of the data dir restarted: same generation, another nonce.
        assert!(matches!(me.check(peer(5, 2), Some(2)).await, Err(Refused::OldCopy { .. })));
        me.check(peer(6, 3), Some(2)).await.unwrap();
        assert!(matches!(me.check(None, Some(2)).await, Err(Refused::Missing { .. })));
        assert!(matches!(me.check(peer(7, 3), Some(3)).await, Err(Refused::WrongNode { .. })));
        drop(me);
        // After a restart of this node the peer's newest run is still known.
        let again = Incarnations::start(1, kv.clone()).await.unwrap();
        assert!(again.check(peer(5, 1), Some(2)).await.is_err());
        again.check(peer(6, 3), Some(2)).await.unwrap();
        // Removed from the cluster, then added back with an empty data dir.
        again.forget_all_but(&[1, 3].into()).await.unwrap();
        again.check(peer(1, 4), Some(2)).await.unwrap();
        drop(again);
        let third = Incarnations::start(1, kv).await.unwrap();
        third.check(peer(1, 4), Some(2)).await.unwrap();
        assert!(third.check(peer(1, 5), Some(2)).await.is_err());
    }
}
