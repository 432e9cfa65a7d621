//! [`ClusterNode`]: this node's Raft, its storage and every bounded call into them.

use std::collections::{BTreeMap, BTreeSet};
use std::future::Future;
use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

use openraft::error::{CheckIsLeaderError, ClientWriteError, ForwardToLeader, InitializeError, RaftError};
use openraft::{ChangeMembers, RaftMetrics, ServerState};
use raftgate_model::governance::Actor;
use raftgate_model::{Command, Effect, NodeId, NodeInfo, Proposal};
use raftgate_store::{Applied, ApplyObserver, LogStore, OpenError, Outcome, SledKv, StateMachineStore};

use crate::config::RaftTimeouts;
use crate::env::NodeEnv;
use crate::error::ClusterError;
use crate::network::NetworkFactory;
use crate::raft_service::RaftService;
use crate::view::LeaderView;
use crate::Raft;

/// sled page cache per node.
pub(crate) const STORE_CACHE_BYTES: u64 = 64 << 20;
/// How often the store's seal (its durable lower bound) is rewritten.
const SEAL_INTERVAL: Duration = Duration::from_secs(2);

/// A member's role as this node sees it.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Role {
    Leader,
    Follower,
    Candidate,
    Learner,
    Shutdown,
}

impl Role {
    pub fn as_str(self) -> &'static str {
        match self {
            Role::Leader => "leader",
            Role::Follower => "follower",
            Role::Candidate => "candidate",
            Role::Learner => "learner",
            Role::Shutdown => "shutdown",
        }
    }
}

/// Voters and learners of the last membership this node knows.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Membership {
    pub voters: BTreeMap<NodeId, NodeInfo>,
    pub learners: BTreeMap<NodeId, NodeInfo>,
    /// Log index of the membership entry.
    pub log_index: Option<u64>,
}

impl Membership {
    fn from_config(config: &openraft::Membership<NodeId, NodeInfo>, log_index: Option<u64>) -> Self {
        let voter_ids: BTreeSet<NodeId> = config.voter_ids().collect();
        let mut out = Membership { log_index, ..Default::default() };
        for (id, node) in config.nodes() {
            let target = if voter_ids.contains(id) { &mut out.voters } else { &mut out.learners };
            target.insert(*id, node.clone());
        }
        out
    }

    pub fn get(&self, id: NodeId) -> Option<&NodeInfo> {
        self.voters.get(&id).or_else(|| self.learners.get(&id))
    }

    pub fn all(&self) -> impl Iterator<Item = (NodeId, &NodeInfo, bool)> {
        let voters = self.voters.iter().map(|(id, n)| (*id, n, true));
        voters.chain(self.learners.iter().map(|(id, n)| (*id, n, false)))
    }
}

/// This node's own report of itself.
#[derive(Clone, Debug)]
pub struct NodeStatus {
    pub id: NodeId,
    pub region: String,
    pub role: Role,
    pub term: u64,
    pub leader_id: Option<NodeId>,
    pub last_log_index: Option<u64>,
    pub committed_index: Option<u64>,
    pub applied_index: Option<u64>,
    pub snapshot_index: Option<u64>,
    /// Leader only.
    pub millis_since_quorum_ack: Option<u64>,
    pub leader_view_age_ms: Option<u64>,
    /// Followers and learners: time since a leader's message was last accepted.
    pub last_leader_contact_ms: Option<u64>,
    /// Leader only: (follower, last index it holds).
    pub replication: Vec<(NodeId, Option<u64>)>,
    pub state_revision: u64,
    pub membership: Membership,
}

/// Result of a successful write.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Written {
    pub effect: Effect,
    pub log_index: u64,
}

/// One node's consensus: Raft, its storage, and the age of its view.
pub struct ClusterNode {
    id: NodeId,
    info: NodeInfo,
    raft: Raft,
    log: LogStore<SledKv>,
    sm: StateMachineStore<SledKv>,
    view: Arc<LeaderView>,
    incarnations: Arc<crate::incarnation::Incarnations>,
    cluster: Arc<crate::incarnation::ClusterName>,
    timeouts: RaftTimeouts,
    env: NodeEnv,
    sealer: tokio::task::JoinHandle<()>,
    elections: tokio::task::JoinHandle<()>,
}

#[derive(Debug, thiserror::Error)]
pub enum StartError {
    #[error(transparent)]
    Store(#[from] OpenError),
    #[error("invalid raft settings: {0}")]
    Config(String),
    #[error("raft did not start: {0}")]
    Raft(String),
    #[error("recording this run of the data dir: {0}")]
    Incarnation(String),
}

fn forward(f: ForwardToLeader<NodeId, NodeInfo>) -> ClusterError {
    ClusterError::NotLeader { leader_id: f.leader_id, leader_admin_addr: f.leader_node.map(|n| n.admin_addr) }
}

fn write_error(e: RaftError<NodeId, ClientWriteError<NodeId, NodeInfo>>) -> ClusterError {
    match e {
        RaftError::APIError(ClientWriteError::ForwardToLeader(f)) => forward(f),
        RaftError::APIError(ClientWriteError::ChangeMembershipError(e)) => ClusterError::Conflict(e.to_string()),
        RaftError::Fatal(f) => ClusterError::Unavailable(format!("raft stopped: {f}")),
    }
}

fn read_error(e: RaftError<NodeId, CheckIsLeaderError<NodeId, NodeInfo>>) -> ClusterError {
    match e {
        RaftError::APIError(CheckIsLeaderError::ForwardToLeader(f)) => forward(f),
        RaftError::APIError(CheckIsLeaderError::QuorumNotEnough(q)) => ClusterError::Unavailable(q.to_string()),
        RaftError::Fatal(f) => ClusterError::Unavailable(format!("raft stopped: {f}")),
    }
}

impl ClusterNode {
    /// Opens the store in `data_dir` and starts Raft. The node then waits to
    /// be bootstrapped or added to a cluster.
    pub async fn start(
        id: NodeId,
        info: NodeInfo,
        data_dir: &Path,
        cluster_name: &str,
        timeouts: RaftTimeouts,
        env: NodeEnv,
    ) -> Result<Arc<Self>, StartError> {
        timeouts.validate().map_err(|e| StartError::Config(e.to_string()))?;
        let config =
            timeouts.openraft_config(cluster_name).validate().map_err(|e| StartError::Config(e.to_string()))?;
        let cluster = Arc::new(crate::incarnation::ClusterName::new(cluster_name).map_err(StartError::Config)?);
        let (log, sm) = raftgate_store::open(data_dir, STORE_CACHE_BYTES, env.flush).await?;
        let view = Arc::new(LeaderView::default());
        let incarnations =
            crate::incarnation::Incarnations::start(id, log.kv().clone()).await.map_err(StartError::Incarnation)?;
        let network = NetworkFactory::new(view.clone(), env.dialer.clone(), incarnations.clone(), cluster.clone());
        let raft = Raft::new(id, Arc::new(config), network, log.clone(), sm.clone())
            .await
            .map_err(|e| StartError::Raft(e.to_string()))?;
        spawn_quorum_ack_recorder(raft.metrics(), view.clone(), log.clone(), incarnations.clone());
        spawn_apply_recorder(sm.subscribe(), view.clone());
        let sealer = spawn_sealer(log.clone());
        let elections = spawn_election_timer(raft.clone(), view.clone(), &timeouts);
        Ok(Arc::new(Self { id, info, raft, log, sm, view, incarnations, cluster, timeouts, env, sealer, elections }))
    }

    pub fn id(&self) -> NodeId {
        self.id
    }

    pub fn info(&self) -> &NodeInfo {
        &self.info
    }

    pub fn timeouts(&self) -> &RaftTimeouts {
        &self.timeouts
    }

    pub fn env(&self) -> &NodeEnv {
        &self.env
    }

    /// The cluster name this node was started with (`node.cluster_name`).
    pub fn cluster_name(&self) -> &str {
        &self.raft.config().cluster_name
    }

    pub fn view(&self) -> &Arc<LeaderView> {
        &self.view
    }

    /// The gRPC service peers use to reach this node's Raft.
    pub fn raft_service(&self) -> RaftService {
        RaftService::new(self.raft.clone(), self.view.clone(), self.incarnations.clone(), self.cluster.clone())
    }

    /// A copy of the current metrics (never hold the watch guard: it blocks Raft).
    fn metrics(&self) -> RaftMetrics<NodeId, NodeInfo> {
        self.raft.metrics().borrow().clone()
    }

    /// Initializes a new cluster with `members` as voters. Every listed node may
    /// call it with the same list. Returns false if this node already holds a
    /// cluster (it then keeps what it has).
    pub async fn bootstrap(&self, members: BTreeMap<NodeId, NodeInfo>) -> Result<bool, ClusterError> {
        match bounded(self.timeouts.write_timeout(), "bootstrap", self.raft.initialize(members)).await? {
            Ok(()) => Ok(true),
            Err(RaftError::APIError(InitializeError::NotAllowed(_))) => Ok(false),
            Err(RaftError::APIError(InitializeError::NotInMembers(e))) => Err(ClusterError::Invalid(e.to_string())),
            Err(RaftError::Fatal(f)) => Err(ClusterError::Unavailable(format!("raft stopped: {f}"))),
        }
    }

    pub fn membership(&self) -> Membership {
        let m = self.metrics();
        Membership::from_config(m.membership_config.membership(), m.membership_config.log_id().map(|l| l.index))
    }

    /// The leader this node knows of, with its address if known.
    pub fn leader(&self) -> Option<(NodeId, Option<NodeInfo>)> {
        let m = self.metrics();
        let id = m.current_leader?;
        Some((id, m.membership_config.membership().get_node(&id).cloned()))
    }

    pub fn is_leader(&self) -> bool {
        self.metrics().state == ServerState::Leader
    }

    pub fn status(&self) -> NodeStatus {
        let m = self.metrics();
        let role = match m.state {
            ServerState::Leader => Role::Leader,
            ServerState::Follower => Role::Follower,
            ServerState::Candidate => Role::Candidate,
            ServerState::Learner => Role::Learner,
            ServerState::Shutdown => Role::Shutdown,
        };
        let replication = m
            .replication
            .as_ref()
            .map(|r| r.iter().filter(|(id, _)| **id != self.id).map(|(id, l)| (*id, l.map(|l| l.index))).collect())
            .unwrap_or_default();
        let millis_since_quorum_ack = if role == Role::Leader { m.millis_since_quorum_ack } else { None };
        NodeStatus {
            id: self.id,
            region: self.info.region.clone(),
            role,
            term: m.current_term,
            leader_id: m.current_leader,
            last_log_index: m.last_log_index,
            committed_index: self.log.committed_index(),
            applied_index: m.last_applied.map(|l| l.index),
            snapshot_index: m.snapshot.map(|l| l.index),
            millis_since_quorum_ack,
            leader_view_age_ms: self.view.view_age_ms(),
            last_leader_contact_ms: self.view.last_contact_age_ms(),
            replication,
            state_revision: self.sm.read(|a| a.state.revision()),
            membership: self.membership(),
        }
    }

    /// A request that arrives while no leader is known (an election runs)
    /// waits for one, at most [`RaftTimeouts::leader_wait`], instead of failing
    /// at once; if none is known by then, the request fails as before.
    async fn await_leader(&self) {
        if self.raft.metrics().borrow().current_leader.is_some() {
            return;
        }
        let wait = self.raft.wait(Some(self.timeouts.leader_wait()));
        let _ = wait.metrics(|m| m.current_leader.is_some(), "a leader is known").await;
    }

    /// Proposes `command`, stamped with this node's clock, and waits until it is
    /// applied here. Fails with `NotLeader` on a follower and `Unavailable` if it
    /// is not committed within the write timeout.
    pub async fn write(&self, command: Command) -> Result<Written, ClusterError> {
        self.write_as(command, None).await
    }

    /// Like [`write`](Self::write), recording `actor` in the audit trail.
    pub async fn write_as(&self, command: Command, actor: Option<Actor>) -> Result<Written, ClusterError> {
        let kind = command.kind();
        self.await_leader().await;
        let proposal = Proposal { leader_time_ms: self.env.clock.now_ms(), command, actor };
        let resp = bounded(self.timeouts.write_timeout(), kind, self.raft.client_write(proposal))
            .await?
            .map_err(write_error)?;
        match resp.data {
            Outcome::Applied { effect } => Ok(Written { effect, log_index: resp.log_id.index }),
            Outcome::Rejected { rejection } => Err(ClusterError::Rejected(rejection)),
            Outcome::Internal => Err(ClusterError::Internal("a command produced no outcome".into())),
        }
    }

    /// Confirms leadership with a quorum (read index) and reads the applied state
    /// once it has caught up. `NotLeader` on a follower.
    pub async fn linearizable_read<R>(&self, f: impl FnOnce(&Applied) -> R) -> Result<R, ClusterError> {
        self.await_leader().await;
        bounded(self.timeouts.read_timeout(), "read", self.raft.ensure_linearizable()).await?.map_err(read_error)?;
        Ok(self.sm.read(f))
    }

    /// Changes (to the applied log index) whenever the applied state changes.
    pub fn subscribe_applied(&self) -> tokio::sync::watch::Receiver<u64> {
        self.sm.subscribe()
    }

    /// Shows `observer` every applied change, synchronously (see [`ApplyObserver`]).
    pub fn observe_applied(&self, observer: Arc<dyn ApplyObserver>) {
        self.sm.set_observer(observer);
    }

    /// Reads this node's applied state as it is, without contacting anyone.
    pub fn local_read<R>(&self, f: impl FnOnce(&Applied) -> R) -> R {
        self.sm.read(f)
    }

    /// Leader only: adds `id` as a learner. It then receives the log.
    pub async fn add_learner(&self, id: NodeId, info: NodeInfo) -> Result<Membership, ClusterError> {
        if id == 0 {
            return Err(ClusterError::Invalid("node id must be greater than 0".into()));
        }
        info.validate().map_err(|e| ClusterError::Invalid(format!("member {id}: {e}")))?;
        // Confirms leadership and that earlier membership changes have committed.
        self.linearizable_read(|_| ()).await?;
        let m = self.membership();
        if let Some((_, _, voter)) = m.all().find(|(other, _, _)| *other == id) {
            let role = if voter { "voter" } else { "learner" };
            return Err(ClusterError::Conflict(format!("node {id} is already a member ({role})")));
        }
        if let Some((other, _, _)) =
            m.all().find(|(_, n, _)| n.raft_addr == info.raft_addr || n.admin_addr == info.admin_addr)
        {
            return Err(ClusterError::Conflict(format!("node {other} already uses that raft or admin address")));
        }
        let resp = bounded(self.timeouts.write_timeout(), "add learner", self.raft.add_learner(id, info, false))
            .await?
            .map_err(write_error)?;
        Ok(Self::committed_membership(resp))
    }

    /// Leader only: makes learner `id` a voter.
    pub async fn promote(&self, id: NodeId) -> Result<Membership, ClusterError> {
        self.linearizable_read(|_| ()).await?;
        let m = self.membership();
        if m.voters.contains_key(&id) {
            return Err(ClusterError::Conflict(format!("node {id} is already a voter")));
        }
        if !m.learners.contains_key(&id) {
            return Err(ClusterError::NotFound(format!("node {id} is not a member; add it as a learner first")));
        }
        self.change_membership(ChangeMembers::AddVoterIds(BTreeSet::from([id]))).await
    }

    /// Leader only: removes voter or learner `id` from the cluster.
    pub async fn remove(&self, id: NodeId) -> Result<Membership, ClusterError> {
        self.linearizable_read(|_| ()).await?;
        let m = self.membership();
        let change = if m.voters.contains_key(&id) {
            if m.voters.len() == 1 {
                return Err(ClusterError::Conflict(format!("node {id} is the last voter; a cluster must keep one")));
            }
            ChangeMembers::RemoveVoters(BTreeSet::from([id]))
        } else if m.learners.contains_key(&id) {
            ChangeMembers::RemoveNodes(BTreeSet::from([id]))
        } else {
            return Err(ClusterError::NotFound(format!("node {id} is not a member")));
        };
        self.change_membership(change).await
    }

    async fn change_membership(&self, change: ChangeMembers<NodeId, NodeInfo>) -> Result<Membership, ClusterError> {
        let resp =
            bounded(self.timeouts.write_timeout(), "membership change", self.raft.change_membership(change, false))
                .await?
                .map_err(write_error)?;
        Ok(Self::committed_membership(resp))
    }

    /// The membership a committed change produced (metrics may not show it yet).
    fn committed_membership(resp: openraft::raft::ClientWriteResponse<raftgate_store::TypeConfig>) -> Membership {
        match &resp.membership {
            Some(m) => Membership::from_config(m, Some(resp.log_id.index)),
            None => Membership { log_index: Some(resp.log_id.index), ..Default::default() },
        }
    }

    /// Builds a snapshot of everything this node has applied, purges its
    /// log through that snapshot, and asks for the store to be rewritten
    /// into fresh files at the next start (sled keeps deleted bytes in old
    /// segments). Local to this node. Returns (snapshot index, purged index).
    pub async fn compact_log(&self) -> Result<(u64, u64), ClusterError> {
        let fatal = |e: openraft::error::Fatal<NodeId>| ClusterError::Unavailable(format!("raft stopped: {e}"));
        let Some(applied) = self.metrics().last_applied else {
            return Err(ClusterError::Conflict("this node has applied nothing yet".into()));
        };
        let limit = self.timeouts.write_timeout().max(Duration::from_secs(10));
        self.raft.trigger().snapshot().await.map_err(fatal)?;
        let m = self
            .raft
            .wait(Some(limit))
            .metrics(|m| m.snapshot.is_some_and(|s| s.index >= applied.index), "snapshot")
            .await
            .map_err(|e| ClusterError::Unavailable(format!("snapshot not built in time: {e}")))?;
        let snapshot = m.snapshot.map_or(applied.index, |s| s.index);
        self.raft.trigger().purge_log(snapshot).await.map_err(fatal)?;
        // A leader purges only what every follower has received.
        let m = self
            .raft
            .wait(Some(limit))
            .metrics(|m| m.purged.is_some_and(|p| p.index >= snapshot), "purge")
            .await
            .map_err(|e| ClusterError::Unavailable(format!("log not purged in time (a follower behind?): {e}")))?;
        self.log.request_rewrite().await.map_err(ClusterError::Internal)?;
        Ok((snapshot, m.purged.map_or(0, |p| p.index)))
    }

    /// Stops Raft, flushes storage and writes the seal.
    pub async fn shutdown(&self) {
        self.sealer.abort();
        self.elections.abort();
        if let Err(e) = self.raft.shutdown().await {
            tracing::warn!(error = %e, "raft shutdown");
        }
        if let Err(e) = self.log.clone().seal().await {
            tracing::error!(error = %e, "flushing storage at shutdown");
        }
    }
}

/// Runs `fut` for at most `limit`; past it the caller gets `Unavailable`.
async fn bounded<T>(limit: Duration, what: &str, fut: impl Future<Output = T>) -> Result<T, ClusterError> {
    tokio::time::timeout(limit, fut).await.map_err(|_| {
        ClusterError::Unavailable(format!(
            "{what} did not complete within {} ms (no quorum reachable?); its outcome is unknown",
            limit.as_millis()
        ))
    })
}

/// Rewrites the store's seal every `SEAL_INTERVAL`.
/// Starts this node's elections. openraft 0.9 draws a node's election
/// timeout once, when the node starts, and checks it on a tick of 1.5
/// heartbeat intervals: two nodes whose timeouts round to the same tick
/// campaign in lockstep and split the vote in every round for as long as
/// their ticks stay aligned (the simulation found this: after a leader crash
/// the other two stayed candidates forever). So openraft's own election timer
/// is off (`enable_elect: false`) and this task runs the Raft paper's: a voter
/// that has heard from no leader and seen its vote unchanged for a timeout
/// drawn afresh each round from [election_timeout_min, election_timeout_max)
/// starts an election; after having had a leader it first waits out the
/// leader's lease (election_timeout_max); once a voter refused it for having
/// an older log it waits 2 x election_timeout_max more in every round until a
/// leader is elected, so that a node with a newer log wins (openraft's timer
/// backs off like this for one round only, which was not enough across
/// regions). Vote handling is openraft's, unchanged.
fn spawn_election_timer(raft: Raft, view: Arc<LeaderView>, timeouts: &RaftTimeouts) -> tokio::task::JoinHandle<()> {
    use openraft::AsyncRuntime;
    use rand::Rng;
    use tokio::time::Instant;
    let (min, max) = (timeouts.election_timeout_min_ms, timeouts.election_timeout_max_ms);
    let draw = move || Duration::from_millis(raftgate_store::SeededTokio::thread_rng().gen_range(min..max));
    let lease = Duration::from_millis(max);
    tokio::spawn(async move {
        let mut metrics = raft.metrics();
        let mut quiet_since = Instant::now();
        let mut timeout = draw();
        let mut last_vote = None;
        let mut leader_term = 0;
        loop {
            let (state, vote) = {
                let m = metrics.borrow_and_update();
                (m.state, m.vote)
            };
            if state == ServerState::Shutdown {
                return;
            }
            let now = Instant::now();
            if state == ServerState::Leader || last_vote != Some(vote) {
                last_vote = Some(vote);
                quiet_since = now;
            }
            if let Some(age) = view.last_contact_age_ms() {
                quiet_since = quiet_since.max(now - Duration::from_millis(age));
            }
            let mut wait = if vote.is_committed() { lease + timeout } else { timeout };
            if vote.is_committed() {
                leader_term = leader_term.max(vote.leader_id().term);
            }
            // Refused for an older log since the last leader: let a node
            // with a newer log win, until some leader is elected.
            if !vote.is_committed() && view.greater_log_term() > leader_term {
                wait += 2 * lease;
            }
            let deadline = quiet_since + wait;
            if now >= deadline && state != ServerState::Leader {
                tracing::debug!(
                    waited_ms = wait.as_millis() as u64,
                    term = vote.leader_id().term,
                    "no leader heard: starting an election"
                );
                if raft.trigger().elect().await.is_err() {
                    return;
                }
                quiet_since = now;
                timeout = draw();
                continue;
            }
            tokio::select! {
                _ = tokio::time::sleep_until(deadline) => {}
                changed = metrics.changed() => if changed.is_err() { return },
            }
        }
    })
}

fn spawn_sealer(mut log: LogStore<SledKv>) -> tokio::task::JoinHandle<()> {
    tokio::spawn(async move {
        let mut tick = tokio::time::interval(SEAL_INTERVAL);
        loop {
            tick.tick().await;
            if let Err(e) = log.seal().await {
                tracing::error!(error = %e, "cannot write the store seal");
            }
        }
    })
}

/// Keeps `view` told how far this node has applied, so that a view waiting
/// for its commit index to be applied is credited (see [`LeaderView`]).
fn spawn_apply_recorder(mut applied: tokio::sync::watch::Receiver<u64>, view: Arc<LeaderView>) {
    tokio::spawn(async move {
        loop {
            let index = *applied.borrow_and_update();
            // The watch carries the index, 0 for nothing (index 0 is the
            // bootstrap membership entry, applied before any view matters).
            view.record_applied(Some(index));
            if applied.changed().await.is_err() {
                return;
            }
        }
    });
}

/// Keeps `view` told when a quorum last acknowledged this node as leader.
/// Metrics change whenever the leader's lease is extended, so recording the
/// instant (now - age) at each change keeps the age right between changes.
fn spawn_quorum_ack_recorder(
    mut metrics: tokio::sync::watch::Receiver<RaftMetrics<NodeId, NodeInfo>>,
    view: Arc<LeaderView>,
    log: LogStore<SledKv>,
    incarnations: Arc<crate::incarnation::Incarnations>,
) {
    tokio::spawn(async move {
        let mut members = BTreeSet::new();
        loop {
            let (ack, now_members) = {
                let m = metrics.borrow_and_update();
                let ack = if m.state == ServerState::Leader { m.millis_since_quorum_ack } else { None };
                let now_members: BTreeSet<NodeId> = m.membership_config.nodes().map(|(id, _)| *id).collect();
                (ack, now_members)
            };
            view.record_leader_metrics(ack, log.committed_index());
            if now_members != members {
                if let Err(e) = incarnations.forget_all_but(&now_members).await {
                    tracing::error!(error = %e, "forgetting removed nodes' data dir runs");
                }
                members = now_members;
            }
            if metrics.changed().await.is_err() {
                return;
            }
        }
    });
}
