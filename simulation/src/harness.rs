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

use crate::dataplane::{self, Target};
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
/// A restarted node's data plane serves its routes again within this long
/// (it replays its log and publishes the routes it holds).
const RESTART_GRACE_US: u64 = 2_000_000;
/// The `t_apply` of the revocation bound: how long a node that has learned
/// of a commit takes to apply it (in the simulation, the same millisecond).
pub const T_APPLY_MS: u64 = 5;
/// Fencing: a node cut off from a quorum refuses authenticated requests
/// once its view is older than max_staleness - d_max, which is at most
/// max_staleness after the cut; this much more covers the 1 ms step.
const FENCE_SLACK_US: u64 = 2_000;

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
    /// Clients that send HTTP requests to every node's data plane.
    pub data_plane_clients: usize,
    /// The nodes' `identity.max_one_way_delay_ms` (d_max): at least the
    /// largest one-way latency of any link.
    pub max_one_way_delay_ms: u64,
    /// The API key is revoked this long (a seeded draw) after it is made.
    pub revoke_after_ms: (u64, u64),
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
            data_plane_clients: 2,
            max_one_way_delay_ms: 100,
            revoke_after_ms: (500, 5_000),
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
    pub data_plane: DataPlaneReport,
    pub events: Vec<String>,
}

/// What the data-plane clients saw.
#[derive(Clone, Debug, Default)]
pub struct DataPlaneReport {
    pub requests: usize,
    /// Let through to the upstream.
    pub passed: usize,
    /// Authenticated requests refused with 503 by a node whose view was stale.
    pub stale_refusals: usize,
    /// Requests with the revoked key refused after the revocation applied somewhere.
    pub revoked_refusals: usize,
    /// Simulated ms from the revocation's commit (its first apply) to the
    /// last request that passed with the key (None: none passed after it).
    pub revoked_last_pass_ms: Option<u64>,
    /// The revocation bound of this run: max_staleness + d_max + t_apply.
    pub revocation_bound_ms: u64,
    /// Simulated ms from the commit to the last node applying the revocation
    /// (None: not revoked in this run).
    pub revocation_applied_everywhere_ms: Option<u64>,
}

/// When things happened to each node, for the data-plane invariants.
#[derive(Default)]
struct Timeline {
    /// Crashes: (down at, back up at).
    down: BTreeMap<NodeId, Vec<(u64, Option<u64>)>>,
    /// Cut off from a quorum of voters: (since, until).
    isolated: BTreeMap<NodeId, Vec<(u64, Option<u64>)>>,
    /// First time each node's applied state held the open route.
    route_at: BTreeMap<NodeId, u64>,
    /// First time each node's applied state held the revocation.
    revoked_at: BTreeMap<NodeId, u64>,
}

impl Timeline {
    fn open(intervals: &mut Vec<(u64, Option<u64>)>, at: u64) {
        if intervals.last().is_none_or(|(_, end)| end.is_some()) {
            intervals.push((at, None));
        }
    }

    fn close(intervals: &mut [(u64, Option<u64>)], at: u64) {
        if let Some((_, end @ None)) = intervals.last_mut() {
            *end = Some(at);
        }
    }

    /// The node was running from `from` to `to` (no crash overlapped).
    fn up_throughout(&self, id: NodeId, from: u64, to: u64) -> bool {
        self.down.get(&id).is_none_or(|v| v.iter().all(|&(d, u)| d > to || u.is_some_and(|u| u < from)))
    }

    /// The start of an isolation of `id` that began before `before` and
    /// still held at `until`.
    fn isolated_through(&self, id: NodeId, before: u64, until: u64) -> Option<u64> {
        self.isolated.get(&id)?.iter().find(|&&(s, e)| s < before && e.is_none_or(|e| e >= until)).map(|&(s, _)| s)
    }
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
    /// Directed: messages from .0 to .1 are lost.
    blocked: BTreeSet<(NodeId, NodeId)>,
    /// Current voters and learners, as the scenario changed them.
    members: BTreeSet<NodeId>,
    /// Current voters.
    voters: BTreeSet<NodeId>,
    dp: Rc<RefCell<dataplane::Log>>,
    /// Data-plane requests checked so far.
    dp_checked: usize,
    timeline: Timeline,
    dp_report: DataPlaneReport,
    /// The nodes' max_staleness and d_max, in simulated microseconds.
    max_staleness_us: u64,
    d_max_us: u64,
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
            blocked: BTreeSet::new(),
            voters: BTreeSet::new(),
            dp: Rc::default(),
            dp_checked: 0,
            timeline: Timeline::default(),
            dp_report: DataPlaneReport::default(),
            max_staleness_us: 0,
            d_max_us: 0,
        };
        h.voters = h.members.clone();
        let probe = h.config(&h.opts.voters[0], Vec::new());
        h.max_staleness_us = probe.max_staleness_ms() * 1000;
        h.d_max_us = probe.identity.max_one_way_delay_ms * 1000;
        h.dp_report.revocation_bound_ms = probe.max_staleness_ms() + probe.identity.max_one_way_delay_ms + T_APPLY_MS;
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
        if h.opts.data_plane_clients > 0 {
            h.add_data_plane_clients();
        }
        h
    }

    /// The upstream host, the client that writes routes and keys (and
    /// revokes one), and the clients that send HTTP to every node.
    fn add_data_plane_clients(&mut self) {
        self.sim.host(dataplane::UPSTREAM_HOST, dataplane::run_upstream);
        let targets: Vec<String> = self.opts.voters.iter().map(|n| n.member().admin_addr).collect();
        let log = self.dp.clone();
        let seed = self.opts.seed ^ 0x2545_f491_4f6c_dd1d;
        let revoke_after = self.opts.revoke_after_ms;
        self.sim.client("setup", async move {
            dataplane::run_setup(targets, seed, revoke_after, log).await;
            Ok(())
        });
        let nodes: Vec<(NodeId, String)> =
            self.opts.voters.iter().chain(&self.opts.spares).map(|n| (n.id, n.member().http_addr)).collect();
        for c in 0..self.opts.data_plane_clients {
            let log = self.dp.clone();
            let stop = self.stop.clone();
            let nodes = nodes.clone();
            let seed = self.opts.seed ^ (0xd6e8_feb8_6659_fd93u64.wrapping_mul(c as u64 + 1));
            self.sim.client(format!("http{c}"), async move {
                dataplane::run_client(c, nodes, seed, log, stop).await;
                Ok(())
            });
        }
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
        c.identity.max_one_way_delay_ms = self.opts.max_one_way_delay_ms;
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
                let http_in = dataplane::SimListener::bind(HTTP_PORT).await?;
                let env = NodeEnv {
                    dialer: net::dialer(),
                    clock: WallClock::new(|| EPOCH_MS + turmoil::sim_elapsed().unwrap_or_default().as_millis() as u64),
                    flush: FlushMode::Blocking,
                };
                let node = raftgate_node::start_node(&config, env).await?;
                registry.borrow_mut().insert(config.node.id, Arc::downgrade(&node));
                // The data plane as the node binary runs it, on simulated TCP.
                let gateway = raftgate_node::build_data_plane(&config, &node, Some(dataplane::upstream_dial()))?;
                tokio::spawn(raftgate_node::follow_state(node.clone(), gateway.clone(), None));
                tokio::spawn(raftgate_proxy::server::serve(gateway.clone(), http_in, None, std::future::pending()));
                raftgate_node::serve_node(node, &config, Some(&gateway), raft_in, admin_in, std::future::pending())
                    .await?;
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

    /// A failure of the scenario's own making (files, setup).
    pub fn error(&self, message: String) -> Failure {
        self.fail(message)
    }

    /// Checks that `id` runs on a data dir the others refused: it is not
    /// counted by the leader (its applied index stays behind the commit) and
    /// its view vouches for nothing.
    pub fn expect_refused(&mut self, id: NodeId) -> Result<(), Failure> {
        let live = self.live();
        let Some(node) = live.iter().find(|n| n.id() == id) else {
            return Err(self.fail(format!("node {id} is not running")));
        };
        let status = node.status();
        let committed =
            self.leader().and_then(|(l, _)| live.iter().find(|n| n.id() == l)).map(|n| n.status().committed_index);
        let view_age = node.view().view_age_ms();
        let vouches = view_age.is_some_and(|a| a + self.d_max_us / 1000 <= self.max_staleness_us / 1000);
        if status.role == Role::Leader || vouches || committed.flatten() <= status.applied_index {
            return Err(self.fail(format!(
                "node {id} on an old data dir was not refused: {} (leader committed {committed:?})",
                self.describe(id)
            )));
        }
        self.event(format!("n{id} refused: {}", self.describe(id)));
        Ok(())
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
            self.observe_data_plane_state(now, &node);
        }
        self.check_data_plane(now)?;
        if let Some((since, label)) = self.checker.failover_pending() {
            if now - since > self.opts.failover_bound.as_micros() as u64 {
                let m = format!("failover after {label} took longer than {:?}", self.opts.failover_bound);
                return Err(self.fail(m));
            }
        }
        self.history.borrow_mut().events.extend(events);
        Ok(())
    }

    /// Notes when a node first holds the open route and the revocation.
    fn observe_data_plane_state(&mut self, now: u64, node: &ClusterNode) {
        let id = node.id();
        let revoked_key = self.dp.borrow().revoked_id.as_ref().map(|k| {
            let id = raftgate_model::ObjectId::parse(k).expect("key ids are valid ids");
            raftgate_model::identity::RevocationTarget::ApiKey { id }.key()
        });
        let need_route = !self.timeline.route_at.contains_key(&id);
        let need_revoked = revoked_key.is_some() && !self.timeline.revoked_at.contains_key(&id);
        if !need_route && !need_revoked {
            return;
        }
        let (route, revoked) = node.local_read(|a| {
            let open = raftgate_model::ObjectId::parse("open").expect("valid id");
            let route = need_route && a.state.routes().contains_key(&open);
            let revoked = revoked_key.as_ref().is_some_and(|k| need_revoked && a.state.revocations().contains_key(k));
            (route, revoked)
        });
        if route {
            self.timeline.route_at.insert(id, now);
        }
        if revoked {
            if self.timeline.revoked_at.is_empty() {
                self.event(format!("revocation applied first on n{id}"));
            }
            self.timeline.revoked_at.insert(id, now);
        }
    }

    /// A node's consensus status, for failure messages.
    fn describe(&self, id: NodeId) -> String {
        match self.live().iter().find(|n| n.id() == id) {
            Some(n) => {
                let s = n.status();
                format!(
                    "{:?} term {} applied {:?} committed {:?} view age {:?} ms",
                    s.role, s.term, s.applied_index, s.committed_index, s.leader_view_age_ms
                )
            }
            None => "down".into(),
        }
    }

    /// Checks the data-plane requests that completed since the last step.
    fn check_data_plane(&mut self, _now: u64) -> Result<(), Failure> {
        let dp = self.dp.clone();
        let dp = dp.borrow();
        let committed = self.timeline.revoked_at.values().min().copied();
        let bound_us = self.dp_report.revocation_bound_ms * 1000;
        for r in &dp.requests[self.dp_checked..] {
            self.dp_report.requests += 1;
            if r.passed {
                self.dp_report.passed += 1;
            }
            let authenticated = r.target != Target::Open;
            if authenticated && !r.passed && r.status == Some(503) {
                self.dp_report.stale_refusals += 1;
            }
            if r.target == Target::Revoked && committed.is_some_and(|c| r.sent_us >= c) && r.status == Some(401) {
                self.dp_report.revoked_refusals += 1;
            }
            // Once a node has applied the revocation it never lets the key
            // through again; no node does later than the bound after commit.
            if r.target == Target::Revoked && r.passed {
                if let Some(&at) = self.timeline.revoked_at.get(&r.node) {
                    if at <= r.sent_us {
                        return Err(self.fail(format!(
                            "node {} let a revoked key through at {} ms, after applying its revocation at {} ms",
                            r.node,
                            r.sent_us / 1000,
                            at / 1000
                        )));
                    }
                }
                if let Some(c) = committed {
                    if r.sent_us > c + bound_us {
                        return Err(self.fail(format!(
                            "node {} let a revoked key through {} ms after the revocation committed (bound {} ms); now {}",
                            r.node,
                            (r.sent_us - c) / 1000,
                            bound_us / 1000,
                            self.describe(r.node)
                        )));
                    }
                    if r.sent_us >= c {
                        let late = (r.sent_us - c) / 1000;
                        self.dp_report.revoked_last_pass_ms =
                            Some(late.max(self.dp_report.revoked_last_pass_ms.unwrap_or(0)));
                    }
                }
            }
            // A node cut off from a quorum fences itself in time.
            if authenticated && r.passed {
                let fenced_by = self.max_staleness_us + FENCE_SLACK_US;
                if let Some(since) =
                    self.timeline.isolated_through(r.node, r.sent_us.saturating_sub(fenced_by), r.done_us)
                {
                    return Err(self.fail(format!(
                        "node {} served an authenticated request {} ms after it was cut off from a quorum (max staleness {} ms)",
                        r.node,
                        (r.sent_us - since) / 1000,
                        self.max_staleness_us / 1000
                    )));
                }
            }
            // The data plane never pauses: an open route is served by every
            // running node that holds it, partitioned or not, leader or not.
            if r.target == Target::Open && !r.passed && self.opts.fail_rate == 0.0 {
                let held = self.timeline.route_at.get(&r.node).is_some_and(|&t| t < r.sent_us);
                let up = self.timeline.up_throughout(r.node, r.sent_us.saturating_sub(RESTART_GRACE_US), r.done_us);
                if held && up {
                    return Err(self.fail(format!(
                        "node {}'s data plane failed a request to an open route at {} ms: {}",
                        r.node,
                        r.sent_us / 1000,
                        r.status.map_or("no answer".to_string(), |s| format!("status {s}"))
                    )));
                }
            }
        }
        self.dp_checked = dp.requests.len();
        Ok(())
    }

    /// Every data-plane client got its open route and its valid key served
    /// (by some node: a client moves on after every request) with no gap
    /// longer than the admin-write bound while the scenario ran.
    fn check_data_plane_served(&self, scripted_until: u64) -> Result<(), Failure> {
        if self.opts.data_plane_clients == 0 {
            return Ok(());
        }
        let dp = self.dp.borrow();
        let bound = self.opts.max_ack_gap.as_micros() as u64;
        for client in 0..self.opts.data_plane_clients {
            let mine: Vec<_> =
                dp.requests.iter().filter(|r| r.client == client && r.sent_us <= scripted_until).collect();
            let Some(start) = mine.first().map(|r| r.sent_us) else {
                return Err(self.fail(format!("data-plane client {client} sent no request")));
            };
            for target in [Target::Open, Target::Kept] {
                let mut last = start;
                let served = mine.iter().filter(|r| r.target == target && r.passed).map(|r| r.done_us);
                for t in served.chain(std::iter::once(scripted_until)) {
                    if t.saturating_sub(last) > bound {
                        return Err(self.fail(format!(
                            "data-plane client {client}: no {target:?} request served from {} ms to {} ms (bound {:?})",
                            last / 1000,
                            t / 1000,
                            self.opts.max_ack_gap
                        )));
                    }
                    last = last.max(t);
                }
            }
        }
        Ok(())
    }

    /// Recomputes which running nodes are cut off from every leader that
    /// could hold a quorum: nodes outside the group of voters a majority can
    /// form over two-way links, that no member of that group can send to.
    /// Run after any change of links, crashes or membership.
    fn update_isolation(&mut self) {
        let now = self.now_us();
        let nodes: Vec<NodeId> = self.registry.borrow().keys().copied().collect();
        let cut = |a: NodeId, b: NodeId| self.cuts.contains(&(a.min(b), a.max(b)));
        let mut quorate = BTreeSet::new();
        for &n in &nodes {
            if self.crashed.contains(&n) || quorate.contains(&n) {
                continue;
            }
            let mut seen = BTreeSet::from([n]);
            let mut todo = vec![n];
            while let Some(x) = todo.pop() {
                for &y in &nodes {
                    if !self.crashed.contains(&y) && !seen.contains(&y) && !cut(x, y) {
                        seen.insert(y);
                        todo.push(y);
                    }
                }
            }
            if seen.intersection(&self.voters).count() * 2 > self.voters.len() {
                quorate = seen;
                break;
            }
        }
        let isolated: BTreeSet<NodeId> = nodes
            .iter()
            .copied()
            .filter(|n| !self.crashed.contains(n) && !quorate.contains(n))
            .filter(|&n| !quorate.iter().any(|&l| !self.blocked.contains(&(l, n))))
            .collect();
        for &n in &nodes {
            let intervals = self.timeline.isolated.entry(n).or_default();
            if isolated.contains(&n) {
                Timeline::open(intervals, now);
            } else {
                Timeline::close(intervals, now);
            }
        }
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
        let now = self.now_us();
        Timeline::open(self.timeline.down.entry(id).or_default(), now);
        self.update_isolation();
    }

    pub fn restart(&mut self, id: NodeId) {
        self.event(format!("restart n{id}"));
        self.sim.bounce(host(id));
        self.crashed.remove(&id);
        let now = self.now_us();
        Timeline::close(self.timeline.down.entry(id).or_default(), now);
        self.update_isolation();
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
                self.blocked.insert((x, y));
                self.blocked.insert((y, x));
            }
        }
        self.update_isolation();
    }

    /// Messages from `from` to `to` are lost; the other way works.
    pub fn partition_oneway(&mut self, from: NodeId, to: NodeId) {
        self.event(format!("partition n{from} -> n{to}"));
        self.sim.partition_oneway(host(from), host(to));
        self.cuts.insert((from.min(to), from.max(to)));
        self.blocked.insert((from, to));
        self.update_isolation();
    }

    /// Heals every cut link.
    pub fn repair_all(&mut self) {
        self.event("repair all".into());
        for (a, b) in std::mem::take(&mut self.cuts) {
            self.sim.repair(host(a), host(b));
        }
        self.blocked.clear();
        self.update_isolation();
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
            MembershipChange::Promote(id) => {
                self.voters.insert(id);
            }
            MembershipChange::Remove(id) => {
                self.members.remove(&id);
                self.voters.remove(&id);
            }
        }
        self.update_isolation();
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
        self.check_data_plane_served(scripted_until)?;
        let revoked = &self.timeline.revoked_at;
        self.dp_report.revocation_applied_everywhere_ms = revoked
            .values()
            .min()
            .map(|first| (members.iter().filter_map(|m| revoked.get(m)).max().unwrap_or(first) - first) / 1000);
        let counts = history.count();
        let units_granted = self
            .live()
            .first()
            .map(|n| n.local_read(|a| a.state.quota_entries().values().map(|e| e.held()).sum()))
            .unwrap_or(0);
        Ok(Report {
            seed: self.opts.seed,
            history_digest: {
                let mut h = std::hash::DefaultHasher::new();
                std::hash::Hash::hash(&history.digest(), &mut h);
                std::hash::Hash::hash(&self.dp.borrow().requests, &mut h);
                std::hash::Hasher::finish(&h)
            },
            sim_ms: self.now_us() / 1000,
            acked_writes: counts.acked_writes,
            unknown_writes: counts.unknown_writes,
            reads: counts.reads,
            failovers_ms: self.checker.failovers.iter().map(|(l, us)| (l.clone(), us / 1000)).collect(),
            lin_inconclusive,
            lease_batches: self.lease_acks.get(),
            units_granted,
            data_plane: self.dp_report.clone(),
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
