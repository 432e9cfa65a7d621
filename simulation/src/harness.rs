//! A simulated Raftgate cluster: real nodes as turmoil hosts, simulated
//! clients driving the admin API, fault injection, and the invariant checks
//! run after every step.

use std::cell::{Cell, RefCell};
use std::collections::{BTreeMap, BTreeSet};
use std::rc::Rc;
use std::sync::{Arc, Weak};
use std::time::Duration;

use raftgate_cluster::{ClusterNode, NodeEnv, RaftTimeouts, Role, WallClock};
use raftgate_model::NodeId;
use raftgate_node::config::{BootstrapMember, NodeConfig};
use raftgate_proto::admin::admin_client::AdminClient;
use raftgate_proto::admin::{Consistency, GetSettingRequest, PutSettingRequest};
use raftgate_store::FlushMode;
use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};
use tonic::Code;
use turmoil::Sim;

use crate::history::{History, Kind, Record, REGISTER_PREFIX};
use crate::invariants::{state_digest, Checker};
use crate::net;

pub const RAFT_PORT: u16 = 7001;
pub const ADMIN_PORT: u16 = 7002;
pub const HTTP_PORT: u16 = 7003;
/// The simulated wall clock starts here (2026-01-01T00:00:00Z), so entry
/// timestamps look like real ones.
const EPOCH_MS: u64 = 1_767_225_600_000;
/// A client gives up on a request after this long and counts its outcome as unknown.
const CLIENT_TIMEOUT: Duration = Duration::from_secs(2);
/// Shared registers the clients write and read linearizably.
const REGISTERS: usize = 3;
/// The limit of the quota the lease clients lease from.
pub const LEASE_LIMIT: u64 = 500;
/// After healing, the cluster must converge within this much simulated time.
const CONVERGE_WITHIN: Duration = Duration::from_secs(60);

/// A node of the simulated cluster; its host is named `n{id}`.
#[derive(Clone, Debug)]
pub struct SimNode {
    pub id: NodeId,
    pub region: String,
}

impl SimNode {
    pub fn new(id: NodeId, region: &str) -> Self {
        Self { id, region: region.to_string() }
    }

    pub fn host(&self) -> String {
        host(self.id)
    }

    fn member(&self) -> BootstrapMember {
        let h = self.host();
        BootstrapMember {
            id: self.id,
            region: self.region.clone(),
            raft_addr: format!("{h}:{RAFT_PORT}"),
            admin_addr: format!("{h}:{ADMIN_PORT}"),
            http_addr: format!("{h}:{HTTP_PORT}"),
        }
    }
}

pub fn host(id: NodeId) -> String {
    format!("n{id}")
}

#[derive(Clone, Debug)]
pub struct Options {
    pub seed: u64,
    /// Bootstrapped as the initial voters.
    pub voters: Vec<SimNode>,
    /// Started empty, to be added to the cluster by the scenario.
    pub spares: Vec<SimNode>,
    pub timeouts: RaftTimeouts,
    /// Per-message latency range on every link.
    pub latency: (Duration, Duration),
    /// Chance per message that a link breaks (for TCP: the connection drops).
    pub fail_rate: f64,
    /// Chance per message that a broken link is repaired.
    pub repair_rate: f64,
    pub clients: usize,
    /// Clients that send quota lease batches (asks and returns) for random
    /// nodes against one quota of [`LEASE_LIMIT`].
    pub lease_clients: usize,
    /// Pause between a client's operations.
    pub think_time: Duration,
    /// Longest the cluster may go without acknowledging a write while the
    /// scenario runs (a majority is always connected in every scenario).
    pub max_ack_gap: Duration,
    /// Longest a failover may take, fault to a new leader with a committed entry.
    pub failover_bound: Duration,
}

impl Options {
    /// Three nodes on a LAN with the default timeouts.
    pub fn lan(seed: u64) -> Self {
        Self {
            seed,
            voters: (1..=3).map(|i| SimNode::new(i, "lan")).collect(),
            spares: Vec::new(),
            timeouts: RaftTimeouts::default(),
            latency: (Duration::from_millis(1), Duration::from_millis(5)),
            fail_rate: 0.0,
            repair_rate: 0.0,
            clients: 3,
            lease_clients: 0,
            think_time: Duration::from_millis(20),
            max_ack_gap: Duration::from_secs(8),
            failover_bound: Duration::from_secs(5),
        }
    }
}

/// A run that broke an invariant, with what is needed to replay it.
#[derive(Debug)]
pub struct Failure {
    pub scenario: String,
    pub seed: u64,
    pub at_ms: u64,
    pub message: String,
    /// The last events before the failure (faults, leaders, failovers).
    pub recent_events: Vec<String>,
}

impl std::fmt::Display for Failure {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "scenario {} seed {} failed at {} ms of simulated time: {}\n  replay: cargo run -p simulation --release -- --scenario {} --seed {}",
            self.scenario, self.seed, self.at_ms, self.message, self.scenario, self.seed
        )?;
        for e in &self.recent_events {
            write!(f, "\n    {e}")?;
        }
        Ok(())
    }
}

impl std::error::Error for Failure {}

/// What a passing run measured.
#[derive(Clone, Debug)]
pub struct Report {
    pub seed: u64,
    pub history_digest: u64,
    pub sim_ms: u64,
    pub acked_writes: usize,
    pub unknown_writes: usize,
    pub reads: usize,
    /// (label, simulated milliseconds)
    pub failovers_ms: Vec<(String, u64)>,
    /// Register keys whose linearizability search ran out of budget.
    pub lin_inconclusive: usize,
    /// Lease batches acknowledged, and units granted in the end (all nodes).
    pub lease_batches: usize,
    pub units_granted: u64,
    pub events: Vec<String>,
}

type Registry = Rc<RefCell<BTreeMap<NodeId, Weak<ClusterNode>>>>;

pub struct Harness<'a> {
    sim: Sim<'a>,
    scenario: String,
    opts: Options,
    data: tempfile::TempDir,
    registry: Registry,
    history: Rc<RefCell<History>>,
    checker: Checker,
    stop: Rc<Cell<bool>>,
    lease_acks: Rc<Cell<usize>>,
    crashed: BTreeSet<NodeId>,
    cuts: BTreeSet<(NodeId, NodeId)>,
    /// Current voters and learners, as the scenario changed them.
    members: BTreeSet<NodeId>,
}

fn data_root() -> std::io::Result<tempfile::TempDir> {
    // Blocking flushes fsync on every log append: memory-backed storage keeps
    // the simulation fast where the machine has it.
    let shm = std::path::Path::new("/dev/shm");
    if shm.is_dir() {
        if let Ok(d) = tempfile::Builder::new().prefix("raftgate-sim-").tempdir_in(shm) {
            return Ok(d);
        }
    }
    tempfile::Builder::new().prefix("raftgate-sim-").tempdir()
}

impl<'a> Harness<'a> {
    pub fn new(scenario: &str, opts: Options) -> Self {
        raftgate_store::seed_thread_rng(opts.seed);
        let sim = turmoil::Builder::new()
            .rng_seed(opts.seed)
            .simulation_duration(Duration::from_secs(3_600))
            .tick_duration(Duration::from_millis(1))
            .min_message_latency(opts.latency.0)
            .max_message_latency(opts.latency.1)
            .fail_rate(opts.fail_rate)
            .repair_rate(opts.repair_rate)
            .build();
        let data = data_root().expect("a temporary directory for simulated data dirs");
        let mut h = Self {
            sim,
            scenario: scenario.to_string(),
            members: opts.voters.iter().map(|n| n.id).collect(),
            opts,
            data,
            registry: Rc::default(),
            history: Rc::default(),
            checker: Checker::default(),
            stop: Rc::default(),
            lease_acks: Rc::default(),
            crashed: BTreeSet::new(),
            cuts: BTreeSet::new(),
        };
        let voters: Vec<BootstrapMember> = h.opts.voters.iter().map(SimNode::member).collect();
        for n in h.opts.voters.clone() {
            h.add_host(&n, voters.clone());
        }
        for n in h.opts.spares.clone() {
            h.add_host(&n, Vec::new());
        }
        for c in 0..h.opts.clients {
            h.add_client(c);
        }
        for c in 0..h.opts.lease_clients {
            h.add_lease_client(c);
        }
        h
    }

    fn add_lease_client(&mut self, client: usize) {
        let targets: Vec<String> = self.opts.voters.iter().map(|n| n.member().admin_addr).collect();
        let nodes: Vec<NodeId> = self.opts.voters.iter().map(|n| n.id).collect();
        let stop = self.stop.clone();
        let acks = self.lease_acks.clone();
        let seed = self.opts.seed ^ (0x5851_f42d_4c95_7f2du64.wrapping_mul(client as u64 + 1));
        self.sim.client(format!("leases{client}"), async move {
            run_lease_client(client, targets, nodes, seed, acks, stop).await;
            Ok(())
        });
    }

    fn config(&self, n: &SimNode, bootstrap: Vec<BootstrapMember>) -> NodeConfig {
        let m = n.member();
        let mut c = NodeConfig::default();
        c.node.id = n.id;
        c.node.region = n.region.clone();
        c.node.data_dir = self.data.path().join(n.host());
        c.node.cluster_name = "sim".into();
        c.listen.raft = m.raft_addr;
        c.listen.admin = m.admin_addr;
        c.listen.http = m.http_addr;
        c.raft = self.opts.timeouts.clone();
        c.bootstrap.members = bootstrap;
        c.admin.auth = raftgate_node::config::AdminAuth::None;
        c
    }

    fn add_host(&mut self, n: &SimNode, bootstrap: Vec<BootstrapMember>) {
        let config = self.config(n, bootstrap);
        let registry = self.registry.clone();
        self.sim.host(n.host(), move || {
            let config = config.clone();
            let registry = registry.clone();
            async move {
                let raft_in = net::incoming(RAFT_PORT).await?;
                let admin_in = net::incoming(ADMIN_PORT).await?;
                let env = NodeEnv {
                    dialer: net::dialer(),
                    clock: WallClock::new(|| EPOCH_MS + turmoil::sim_elapsed().unwrap_or_default().as_millis() as u64),
                    flush: FlushMode::Blocking,
                };
                let node = raftgate_node::start_node(&config, env).await?;
                registry.borrow_mut().insert(config.node.id, Arc::downgrade(&node));
                raftgate_node::serve_node(node, &config, None, raft_in, admin_in, std::future::pending()).await?;
                Ok(())
            }
        });
    }

    fn add_client(&mut self, client: usize) {
        let targets: Vec<String> = self.opts.voters.iter().map(|n| n.member().admin_addr).collect();
        let history = self.history.clone();
        let stop = self.stop.clone();
        let seed = self.opts.seed ^ (0x9e37_79b9_7f4a_7c15u64.wrapping_mul(client as u64 + 1));
        let think = self.opts.think_time;
        self.sim.client(format!("client{client}"), async move {
            run_client(client, targets, seed, think, history, stop).await;
            Ok(())
        });
    }

    pub fn now_us(&self) -> u64 {
        self.sim.elapsed().as_micros() as u64
    }

    fn fail(&self, message: impl Into<String>) -> Failure {
        Failure {
            scenario: self.scenario.clone(),
            seed: self.opts.seed,
            at_ms: self.now_us() / 1000,
            message: message.into(),
            recent_events: {
                let h = self.history.borrow();
                h.events[h.events.len().saturating_sub(20)..].to_vec()
            },
        }
    }

    fn event(&self, what: String) {
        self.history.borrow_mut().events.push(format!("{} {what}", self.now_us() / 1000));
    }

    /// Running nodes, strongly held only for the length of a check.
    fn live(&self) -> Vec<Arc<ClusterNode>> {
        self.registry
            .borrow()
            .iter()
            .filter(|(id, _)| !self.crashed.contains(id))
            .filter_map(|(_, w)| w.upgrade())
            .collect()
    }

    /// One step of simulated time, then every invariant on every node.
    fn step(&mut self) -> Result<(), Failure> {
        self.sim.step().map_err(|e| self.fail(format!("a host failed: {e}")))?;
        let now = self.now_us();
        let mut events = Vec::new();
        for node in self.live() {
            self.checker.observe(now, &node, &mut events).map_err(|m| self.fail(m))?;
            // The quota ledger never holds more than a limit, on any node's view.
            let over =
                node.local_read(|a| {
                    a.state.quota_entries().iter().find(|(_, e)| e.held() > e.limit).map(|(k, e)| {
                        format!("node {}: quota {k} holds {} of a limit of {}", node.id(), e.held(), e.limit)
                    })
                });
            if let Some(m) = over {
                return Err(self.fail(m));
            }
        }
        if let Some((since, label)) = self.checker.failover_pending() {
            if now - since > self.opts.failover_bound.as_micros() as u64 {
                let m = format!("failover after {label} took longer than {:?}", self.opts.failover_bound);
                return Err(self.fail(m));
            }
        }
        self.history.borrow_mut().events.extend(events);
        Ok(())
    }

    /// Runs for `d` of simulated time.
    pub fn run_for(&mut self, d: Duration) -> Result<(), Failure> {
        let until = self.sim.elapsed() + d;
        while self.sim.elapsed() < until {
            self.step()?;
        }
        Ok(())
    }

    /// Runs until `cond` holds, failing after `within`.
    pub fn run_until(
        &mut self,
        within: Duration,
        what: &str,
        mut cond: impl FnMut(&Self) -> bool,
    ) -> Result<(), Failure> {
        let until = self.sim.elapsed() + within;
        while !cond(self) {
            if self.sim.elapsed() >= until {
                return Err(self.fail(format!("{what}: not within {within:?}")));
            }
            self.step()?;
        }
        Ok(())
    }

    /// The node that is leader in the highest term, among running nodes.
    pub fn leader(&self) -> Option<(NodeId, u64)> {
        self.live()
            .iter()
            .map(|n| n.status())
            .filter(|s| s.role == Role::Leader)
            .max_by_key(|s| s.term)
            .map(|s| (s.id, s.term))
    }

    /// Runs until some node leads and has committed in its term.
    pub fn await_leader(&mut self) -> Result<(NodeId, u64), Failure> {
        let within = self.opts.failover_bound * 3;
        self.run_until(within, "a leader is elected", |h| {
            h.live().iter().any(|n| {
                let s = n.status();
                s.role == Role::Leader && n.local_read(|a| a.last_applied.is_some_and(|l| l.leader_id.term == s.term))
            })
        })?;
        Ok(self.leader().expect("a leader was just seen"))
    }

    pub fn ids(&self) -> Vec<NodeId> {
        self.members.iter().copied().collect()
    }

    pub fn followers_of(&self, leader: NodeId) -> Vec<NodeId> {
        self.members.iter().copied().filter(|&i| i != leader).collect()
    }

    /// Starts timing a failover: the current leader is about to be cut off.
    pub fn expect_failover(&mut self, label: &str) {
        let now = self.now_us();
        self.event(format!("expect failover: {label}"));
        self.checker.expect_failover(now, label);
    }

    pub fn failover_expected(&self) -> bool {
        self.checker.failover_pending().is_some()
    }

    /// Runs until `id` has applied everything the leader has committed.
    pub fn await_caught_up(&mut self, id: NodeId) -> Result<(), Failure> {
        self.run_until(Duration::from_secs(30), &format!("node {id} catches up"), |h| {
            let live = h.live();
            let Some(node) = live.iter().find(|n| n.id() == id) else { return false };
            let Some(leader) = h.leader().and_then(|(l, _)| live.iter().find(|n| n.id() == l).cloned()) else {
                return false;
            };
            let target = leader.status().committed_index;
            node.status().applied_index >= target
        })
    }

    /// Runs until the pending failover completes (bounded by the failover bound).
    pub fn await_failover(&mut self) -> Result<(), Failure> {
        let within = self.opts.failover_bound * 2;
        self.run_until(within, "failover", |h| h.checker.failover_pending().is_none())
    }

    pub fn crash(&mut self, id: NodeId) {
        self.event(format!("crash n{id}"));
        self.sim.crash(host(id));
        self.crashed.insert(id);
    }

    pub fn restart(&mut self, id: NodeId) {
        self.event(format!("restart n{id}"));
        self.sim.bounce(host(id));
        self.crashed.remove(&id);
    }

    /// A copy of a crashed node's data dir, to be put back later.
    pub fn copy_data_dir(&self, id: NodeId, to: &str) -> std::io::Result<()> {
        assert!(self.crashed.contains(&id), "copy a data dir only while its node is down");
        copy_dir(&self.data.path().join(host(id)), &self.data.path().join(to))
    }

    /// Replaces a crashed node's data dir with a copy made earlier.
    pub fn restore_data_dir(&self, id: NodeId, from: &str) -> std::io::Result<()> {
        assert!(self.crashed.contains(&id), "restore a data dir only while its node is down");
        let dir = self.data.path().join(host(id));
        std::fs::remove_dir_all(&dir)?;
        copy_dir(&self.data.path().join(from), &dir)
    }

    /// Cuts every link between the two groups, both ways.
    pub fn partition(&mut self, a: &[NodeId], b: &[NodeId]) {
        self.event(format!("partition {a:?} | {b:?}"));
        for &x in a {
            for &y in b {
                self.sim.partition(host(x), host(y));
                self.cuts.insert((x.min(y), x.max(y)));
            }
        }
    }

    /// Messages from `from` to `to` are lost; the other way works.
    pub fn partition_oneway(&mut self, from: NodeId, to: NodeId) {
        self.event(format!("partition n{from} -> n{to}"));
        self.sim.partition_oneway(host(from), host(to));
        self.cuts.insert((from.min(to), from.max(to)));
    }

    /// Heals every cut link.
    pub fn repair_all(&mut self) {
        self.event("repair all".into());
        for (a, b) in std::mem::take(&mut self.cuts) {
            self.sim.repair(host(a), host(b));
        }
    }

    pub fn set_link_latency(&mut self, a: NodeId, b: NodeId, latency: Duration) {
        self.sim.set_link_latency(host(a), host(b), latency);
    }

    pub fn set_link_fail_rate(&mut self, a: NodeId, b: NodeId, rate: f64) {
        self.sim.set_link_fail_rate(host(a), host(b), rate);
    }

    /// Changes membership through the leader's admin path (real code, run
    /// inside the leader's host by a simulated operator client).
    pub fn change_membership(&mut self, change: MembershipChange) -> Result<(), Failure> {
        self.event(format!("membership {change:?}"));
        let done: Rc<RefCell<Option<Result<(), String>>>> = Rc::default();
        let targets: Vec<String> = self.members.iter().map(|&i| format!("{}:{ADMIN_PORT}", host(i))).collect();
        let out = done.clone();
        let name = format!("operator{}", self.now_us());
        let req = change.clone();
        self.sim.client(name, async move {
            *out.borrow_mut() = Some(run_operator(req, targets).await);
            Ok(())
        });
        self.run_until(Duration::from_secs(30), "membership change", |_| done.borrow().is_some())?;
        let result = done.borrow_mut().take().expect("set above");
        result.map_err(|e| self.fail(format!("membership change {change:?} failed: {e}")))?;
        match change {
            MembershipChange::AddLearner(n) => {
                self.members.insert(n.id);
            }
            MembershipChange::Promote(_) => {}
            MembershipChange::Remove(id) => {
                self.members.remove(&id);
            }
        }
        Ok(())
    }

    /// Stops the clients, heals the network, restarts crashed nodes, waits for
    /// every member to converge, and checks the end-state invariants.
    pub fn finish(mut self) -> Result<Report, Failure> {
        let scripted_until = self.now_us();
        self.stop.set(true);
        self.repair_all();
        for id in self.crashed.clone() {
            if self.members.contains(&id) {
                self.restart(id);
            }
        }
        // Clients finish their last request (bounded by their timeout).
        self.run_for(CLIENT_TIMEOUT + Duration::from_millis(100))?;
        let members = self.members.clone();
        self.run_until(CONVERGE_WITHIN, "all members converge after healing", |h| {
            let live = h.live();
            let of_members: Vec<_> = live.iter().filter(|n| members.contains(&n.id())).collect();
            if of_members.len() != members.len() {
                return false;
            }
            let digests: BTreeSet<(Option<u64>, u64)> = of_members
                .iter()
                .map(|n| n.local_read(|a| (a.last_applied.map(|l| l.index), state_digest(a))))
                .collect();
            let committed = of_members.iter().map(|n| n.status().committed_index).max().flatten();
            digests.len() == 1 && digests.iter().next().is_some_and(|(i, _)| *i >= committed)
        })?;

        let history = self.history.borrow();
        // Every acknowledged write is present on every member (unique keys;
        // register keys are covered by the linearizability check).
        for node in self.live().iter().filter(|n| members.contains(&n.id())) {
            let missing = node.local_read(|a| {
                history
                    .acked_writes()
                    .filter(|(k, _, _)| !k.starts_with(REGISTER_PREFIX))
                    .find(|(k, v, _)| {
                        let key = raftgate_model::SettingKey::parse(*k).expect("client keys are valid");
                        a.state.setting(&key).map(|s| s.value.as_str()) != Some(*v)
                    })
                    .map(|(k, v, t)| format!("{k}={v} (acknowledged at {} ms)", t / 1000))
            });
            if let Some(m) = missing {
                return Err(self.fail(format!("acknowledged write lost on node {}: {m}", node.id())));
            }
        }
        let lin_inconclusive = history
            .check_linearizable()
            .map_err(|(key, e)| self.fail(format!("register {key} is not linearizable: {e}")))?;

        // The majority side kept acknowledging writes throughout.
        let mut acks: Vec<u64> = history.acked_writes().map(|(_, _, t)| t).filter(|&t| t <= scripted_until).collect();
        acks.sort_unstable();
        let bound = self.opts.max_ack_gap.as_micros() as u64;
        let first = acks.first().copied().unwrap_or(scripted_until);
        if first > bound {
            return Err(self.fail(format!("no write acknowledged in the first {:?}", self.opts.max_ack_gap)));
        }
        for pair in acks.windows(2).chain(std::iter::once([*acks.last().unwrap_or(&first), scripted_until].as_slice()))
        {
            if pair[1] - pair[0] > bound {
                return Err(self.fail(format!(
                    "no write acknowledged from {} ms to {} ms (bound {:?})",
                    pair[0] / 1000,
                    pair[1] / 1000,
                    self.opts.max_ack_gap
                )));
            }
        }
        let counts = history.count();
        let units_granted = self
            .live()
            .first()
            .map(|n| n.local_read(|a| a.state.quota_entries().values().map(|e| e.held()).sum()))
            .unwrap_or(0);
        Ok(Report {
            seed: self.opts.seed,
            history_digest: history.digest(),
            sim_ms: self.now_us() / 1000,
            acked_writes: counts.acked_writes,
            unknown_writes: counts.unknown_writes,
            reads: counts.reads,
            failovers_ms: self.checker.failovers.iter().map(|(l, us)| (l.clone(), us / 1000)).collect(),
            lin_inconclusive,
            lease_batches: self.lease_acks.get(),
            units_granted,
            events: history.events.clone(),
        })
    }
}

#[derive(Clone, Debug)]
pub enum MembershipChange {
    AddLearner(SimNode),
    Promote(NodeId),
    Remove(NodeId),
}

/// Sends one membership change to any reachable member, retrying on others.
async fn run_operator(change: MembershipChange, targets: Vec<String>) -> Result<(), String> {
    use raftgate_proto::admin::{AddLearnerRequest, Member, PromoteRequest, RemoveNodeRequest};
    let dialer = net::dialer();
    let mut last = String::from("no target");
    for attempt in 0..20 {
        let addr = &targets[attempt % targets.len()];
        let mut client = AdminClient::new(dialer.dial(addr)?);
        let call = async {
            match &change {
                MembershipChange::AddLearner(n) => {
                    let m = n.member();
                    let member = Member {
                        id: n.id,
                        region: m.region,
                        raft_addr: m.raft_addr,
                        admin_addr: m.admin_addr,
                        http_addr: m.http_addr,
                    };
                    let req = AddLearnerRequest { member: Some(member) };
                    client.add_learner(req).await.map(|_| ())
                }
                MembershipChange::Promote(id) => client.promote(PromoteRequest { id: *id }).await.map(|_| ()),
                MembershipChange::Remove(id) => client.remove_node(RemoveNodeRequest { id: *id }).await.map(|_| ()),
            }
        };
        match tokio::time::timeout(Duration::from_secs(5), call).await {
            Ok(Ok(())) => return Ok(()),
            Ok(Err(s)) if s.code() == Code::Unavailable || s.code() == Code::DeadlineExceeded => {
                last = s.message().to_string()
            }
            Ok(Err(s)) => return Err(format!("{}: {}", s.code(), s.message())),
            Err(_) => last = "timed out".into(),
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    Err(last)
}

fn now_us() -> u64 {
    turmoil::sim_elapsed().unwrap_or_default().as_micros() as u64
}

/// One simulated client: writes unique keys (for the lost-write check) and
/// writes and linearizably reads shared registers (for the linearizability
/// check), moving to another node when one fails it.
async fn run_client(
    client: usize,
    targets: Vec<String>,
    seed: u64,
    think: Duration,
    history: Rc<RefCell<History>>,
    stop: Rc<Cell<bool>>,
) {
    let dialer = net::dialer();
    let mut clients: Vec<AdminClient<tonic::transport::Channel>> =
        targets.iter().map(|a| AdminClient::new(dialer.dial(a).expect("valid simulated address"))).collect();
    let mut rng = StdRng::seed_from_u64(seed);
    let mut target = client % targets.len();
    let mut n = 0u64;
    while !stop.get() {
        n += 1;
        let c = &mut clients[target];
        let invoke_us = now_us();
        let roll = rng.gen_range(0..4);
        let (kind, ok) = if roll < 2 {
            let key = format!("u-{client}-{n}");
            let value = format!("v{n}");
            let req = PutSettingRequest { key: key.clone(), value: value.clone(), expected_revision: None };
            let ok = matches!(tokio::time::timeout(CLIENT_TIMEOUT, c.put_setting(req)).await, Ok(Ok(_)));
            (Kind::Write { key, value }, ok)
        } else {
            let key = format!("{REGISTER_PREFIX}{}", rng.gen_range(0..REGISTERS));
            if roll == 2 {
                let value = format!("c{client}-{n}");
                let req = PutSettingRequest { key: key.clone(), value: value.clone(), expected_revision: None };
                let ok = matches!(tokio::time::timeout(CLIENT_TIMEOUT, c.put_setting(req)).await, Ok(Ok(_)));
                (Kind::Write { key, value }, ok)
            } else {
                let req = GetSettingRequest { key: key.clone(), consistency: Consistency::Linearizable as i32 };
                match tokio::time::timeout(CLIENT_TIMEOUT, c.get_setting(req)).await {
                    Ok(Ok(s)) => (Kind::Read { key, value: Some(s.into_inner().value) }, true),
                    Ok(Err(s)) if s.code() == Code::NotFound => (Kind::Read { key, value: None }, true),
                    _ => (Kind::Read { key, value: None }, false),
                }
            }
        };
        let complete_us = ok.then(now_us);
        match (&kind, ok) {
            // A failed read tells nothing; a failed write may still commit.
            (Kind::Read { .. }, false) => {}
            _ => history.borrow_mut().records.push(Record { client, kind, invoke_us, complete_us }),
        }
        if !ok {
            target = (target + 1) % targets.len();
        }
        tokio::time::sleep(think + Duration::from_millis(rng.gen_range(0..20))).await;
    }
}

/// One simulated lease client: client 0 first writes a route with a quota
/// of [`LEASE_LIMIT`] per hour; then every client sends lease batches for
/// random nodes (random asks and returns), as nodes' batchers do, through
/// random members, during whatever the scenario does.
async fn run_lease_client(
    client: usize,
    targets: Vec<String>,
    nodes: Vec<NodeId>,
    seed: u64,
    acks: Rc<Cell<usize>>,
    stop: Rc<Cell<bool>>,
) {
    use raftgate_model::traffic::{LeaseAsk, QuotaKey, QuotaScope, Window};
    use raftgate_proto::admin::{ApplyObjectRequest, QuotaLeasesRequest};
    let dialer = net::dialer();
    let mut clients: Vec<AdminClient<tonic::transport::Channel>> =
        targets.iter().map(|a| AdminClient::new(dialer.dial(a).expect("valid simulated address"))).collect();
    let mut rng = StdRng::seed_from_u64(seed);
    if client == 0 {
        let upstream = serde_json::json!({"id": "u", "targets": [{"addr": "127.0.0.1:9"}]});
        let route = serde_json::json!({"id": "metered", "upstream": "u",
            "limits": {"quotas": [{"name": "q", "key": ["route"], "window": "hour", "limit": LEASE_LIMIT}]}});
        for spec in [upstream, route] {
            let mut target = 0;
            loop {
                let req = ApplyObjectRequest { spec_json: spec.to_string(), expected_revision: None };
                let c = &mut clients[target % targets.len()];
                let call =
                    if spec.get("upstream").is_some() { c.apply_route(req).await } else { c.apply_upstream(req).await };
                if call.is_ok() || stop.get() {
                    break;
                }
                target += 1;
                tokio::time::sleep(Duration::from_millis(100)).await;
            }
        }
    }
    let mut target = client % targets.len();
    while !stop.get() {
        let now_ms = EPOCH_MS + turmoil::sim_elapsed().unwrap_or_default().as_millis() as u64;
        let key = QuotaKey {
            scope: QuotaScope::Route(raftgate_model::ObjectId::parse("metered").expect("valid id")),
            quota: raftgate_model::ObjectId::parse("q").expect("valid id"),
            value: "metered".into(),
            window: Window::Hour,
            window_start_ms: Window::Hour.bounds(now_ms).0,
        };
        // The entry's epoch as the target sees it, so that give-backs count.
        let list = raftgate_proto::admin::ListQuotasRequest {
            consistency: Consistency::Local as i32,
            filter: String::new(),
            after: String::new(),
            limit: 1,
        };
        let epoch = match tokio::time::timeout(CLIENT_TIMEOUT, clients[target].list_quotas(list)).await {
            Ok(Ok(r)) => r.into_inner().objects.first().map_or(0, |o| o.revision),
            _ => 0,
        };
        let ask = LeaseAsk { key, epoch, want: rng.gen_range(0..80), give_back: rng.gen_range(0..30) };
        let node = nodes[rng.gen_range(0..nodes.len())];
        let req = QuotaLeasesRequest {
            node,
            incarnation: 0,
            asks_json: serde_json::to_string(&vec![ask]).expect("asks serialize"),
        };
        match tokio::time::timeout(CLIENT_TIMEOUT, clients[target].submit_quota_leases(req)).await {
            Ok(Ok(_)) => acks.set(acks.get() + 1),
            _ => target = (target + 1) % targets.len(),
        }
        tokio::time::sleep(Duration::from_millis(rng.gen_range(10..60))).await;
    }
}

fn copy_dir(from: &std::path::Path, to: &std::path::Path) -> std::io::Result<()> {
    std::fs::create_dir_all(to)?;
    for entry in std::fs::read_dir(from)? {
        let entry = entry?;
        let target = to.join(entry.file_name());
        if entry.file_type()?.is_dir() {
            copy_dir(&entry.path(), &target)?;
        } else {
            std::fs::copy(entry.path(), target)?;
        }
    }
    Ok(())
}
