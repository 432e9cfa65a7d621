//! The fault scenarios. Each builds a cluster, drives it through faults
//! while clients write and read, and ends with [`Harness::finish`], which
//! heals everything and checks the end-state invariants. Invariants that
//! hold at every instant are checked after every step by the harness.

use std::time::Duration;

use raftgate_cluster::RaftTimeouts;
use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};

use crate::harness::{Failure, Harness, MembershipChange, Options, Report, SimNode};

pub type Scenario = fn(u64) -> Result<Report, Failure>;

/// Every scenario, by the name the tests and the command line use.
pub const ALL: &[(&str, Scenario)] = &[
    ("leader_crash_restart", leader_crash_restart),
    ("follower_crash", follower_crash),
    ("minority_partition", minority_partition),
    ("majority_partition", majority_partition),
    ("asymmetric_partition", asymmetric_partition),
    ("flapping_link", flapping_link),
    ("message_loss_delay", message_loss_delay),
    ("three_regions", three_regions),
    ("rolling_restart", rolling_restart),
    ("membership_during_partition", membership_during_partition),
    ("quota_leases_partition", quota_leases_partition),
    ("stale_data_dir", stale_data_dir),
];

pub fn by_name(name: &str) -> Option<Scenario> {
    ALL.iter().find(|(n, _)| *n == name).map(|(_, s)| *s)
}

fn secs(s: u64) -> Duration {
    Duration::from_secs(s)
}

fn ms(m: u64) -> Duration {
    Duration::from_millis(m)
}

/// The documented failover bound for a set of timeouts: followers wait out
/// the leader lease (election_timeout_max) and their own election timeout,
/// rounded up to openraft's tick; a split vote costs one more randomised
/// round (up to two election periods); then one round trip commits the new
/// leader's first entry.
pub fn failover_bound(t: &RaftTimeouts) -> Duration {
    ms(4 * t.election_timeout_max_ms + 2 * t.heartbeat_interval_ms)
}

fn lan(seed: u64) -> Options {
    let mut o = Options::lan(seed);
    o.failover_bound = failover_bound(&o.timeouts);
    o
}

/// The leader crashes; the others elect a new one; the old leader restarts
/// from its data dir and catches up.
pub fn leader_crash_restart(seed: u64) -> Result<Report, Failure> {
    let mut h = Harness::new("leader_crash_restart", lan(seed));
    let (leader, _) = h.await_leader()?;
    h.run_for(secs(2))?;
    h.expect_failover("leader crash");
    h.crash(leader);
    h.await_failover()?;
    h.run_for(secs(2))?;
    h.restart(leader);
    h.run_for(secs(3))?;
    h.finish()
}

/// A follower crashes for a while and restarts; the leader keeps its term.
pub fn follower_crash(seed: u64) -> Result<Report, Failure> {
    let mut rng = StdRng::seed_from_u64(seed);
    let mut h = Harness::new("follower_crash", lan(seed));
    let (leader, _) = h.await_leader()?;
    h.run_for(secs(1))?;
    let followers = h.followers_of(leader);
    let victim = followers[rng.gen_range(0..followers.len())];
    h.crash(victim);
    h.run_for(ms(rng.gen_range(1_000..4_000)))?;
    h.restart(victim);
    h.run_for(secs(3))?;
    h.finish()
}

/// One follower is cut off from both others; the majority carries on, and
/// the cut-off node rejoins (its higher term may depose the leader once).
pub fn minority_partition(seed: u64) -> Result<Report, Failure> {
    let mut rng = StdRng::seed_from_u64(seed);
    let mut h = Harness::new("minority_partition", lan(seed));
    let (leader, _) = h.await_leader()?;
    h.run_for(secs(1))?;
    let followers = h.followers_of(leader);
    let cut = followers[rng.gen_range(0..followers.len())];
    let rest: Vec<_> = h.ids().into_iter().filter(|&i| i != cut).collect();
    h.partition(&[cut], &rest);
    h.run_for(ms(rng.gen_range(2_000..6_000)))?;
    h.repair_all();
    h.run_for(secs(3))?;
    h.finish()
}

/// Five voters; the leader and one follower are cut off from the other
/// three. The three elect a new leader; the deposed leader cannot commit.
pub fn majority_partition(seed: u64) -> Result<Report, Failure> {
    let mut rng = StdRng::seed_from_u64(seed);
    let mut o = lan(seed);
    o.voters = (1..=5).map(|i| SimNode::new(i, "lan")).collect();
    let mut h = Harness::new("majority_partition", o);
    let (leader, _) = h.await_leader()?;
    h.run_for(secs(1))?;
    let followers = h.followers_of(leader);
    let with_leader = followers[rng.gen_range(0..followers.len())];
    let majority: Vec<_> = followers.iter().copied().filter(|&i| i != with_leader).collect();
    h.expect_failover("leader cut off with a follower");
    h.partition(&[leader, with_leader], &majority);
    h.await_failover()?;
    h.run_for(ms(rng.gen_range(1_000..4_000)))?;
    h.repair_all();
    h.run_for(secs(3))?;
    h.finish()
}

/// Nodes lease from one quota (random asks and returns for random nodes,
/// through random members) while the leader is cut off with a follower of
/// five; the ledger never holds more than the limit on any node's view, at
/// any step, and the majority side keeps granting.
pub fn quota_leases_partition(seed: u64) -> Result<Report, Failure> {
    let mut rng = StdRng::seed_from_u64(seed);
    let mut o = lan(seed);
    o.voters = (1..=5).map(|i| SimNode::new(i, "lan")).collect();
    o.lease_clients = 3;
    let mut h = Harness::new("quota_leases_partition", o);
    let (leader, _) = h.await_leader()?;
    h.run_for(secs(2))?;
    let followers = h.followers_of(leader);
    let with_leader = followers[rng.gen_range(0..followers.len())];
    let majority: Vec<_> = followers.iter().copied().filter(|&i| i != with_leader).collect();
    h.expect_failover("leader cut off with a follower while nodes lease");
    h.partition(&[leader, with_leader], &majority);
    h.await_failover()?;
    h.run_for(ms(rng.gen_range(1_000..3_000)))?;
    h.repair_all();
    h.run_for(secs(2))?;
    h.finish()
}

/// The leader's messages to the followers are lost while theirs still reach
/// it: A hears B, B does not hear A. The followers elect a new leader.
pub fn asymmetric_partition(seed: u64) -> Result<Report, Failure> {
    let mut rng = StdRng::seed_from_u64(seed);
    let mut h = Harness::new("asymmetric_partition", lan(seed));
    let (leader, _) = h.await_leader()?;
    h.run_for(secs(1))?;
    h.expect_failover("leader's outbound messages lost");
    for f in h.followers_of(leader) {
        h.partition_oneway(leader, f);
    }
    h.await_failover()?;
    h.run_for(ms(rng.gen_range(1_000..4_000)))?;
    h.repair_all();
    h.run_for(secs(3))?;
    h.finish()
}

/// The link between the leader and one follower goes down and up at random
/// intervals of 50 to 700 ms for eight seconds.
pub fn flapping_link(seed: u64) -> Result<Report, Failure> {
    let mut rng = StdRng::seed_from_u64(seed);
    let mut h = Harness::new("flapping_link", lan(seed));
    let (leader, _) = h.await_leader()?;
    h.run_for(secs(1))?;
    let followers = h.followers_of(leader);
    let other = followers[rng.gen_range(0..followers.len())];
    let mut elapsed = 0;
    while elapsed < 8_000 {
        let down = rng.gen_range(50..700);
        h.partition(&[leader], &[other]);
        h.run_for(ms(down))?;
        h.repair_all();
        let up = rng.gen_range(50..700);
        h.run_for(ms(up))?;
        elapsed += down + up;
    }
    h.run_for(secs(2))?;
    h.finish()
}

/// Every link has 1 to 40 ms of latency and breaks at random (turmoil drops
/// the connection; tonic reconnects), for the whole run.
pub fn message_loss_delay(seed: u64) -> Result<Report, Failure> {
    let mut o = lan(seed);
    o.latency = (ms(1), ms(40));
    o.fail_rate = 0.0005;
    o.repair_rate = 0.05;
    o.max_ack_gap = secs(12);
    let mut h = Harness::new("message_loss_delay", o);
    h.await_leader()?;
    h.run_for(secs(12))?;
    h.finish()
}

/// Five voters in three regions (us: 1, 2; eu: 3, 4; ap: 5) with 40, 75
/// and 120 ms one-way latency between regions and the WAN timeouts; then
/// the leader's whole region is cut off from the other two.
pub fn three_regions(seed: u64) -> Result<Report, Failure> {
    let mut rng = StdRng::seed_from_u64(seed);
    let mut o = Options::lan(seed);
    o.timeouts = RaftTimeouts::wan();
    o.failover_bound = failover_bound(&o.timeouts);
    // d_max covers the longest link (120 ms one way).
    o.max_one_way_delay_ms = 150;
    o.max_ack_gap = o.failover_bound + secs(8);
    o.voters = vec![
        SimNode::new(1, "us"),
        SimNode::new(2, "us"),
        SimNode::new(3, "eu"),
        SimNode::new(4, "eu"),
        SimNode::new(5, "ap"),
    ];
    let regions: Vec<(&str, Vec<u64>)> = vec![("us", vec![1, 2]), ("eu", vec![3, 4]), ("ap", vec![5])];
    let mut h = Harness::new("three_regions", o);
    let one_way = |a: &str, b: &str| match (a.min(b), a.max(b)) {
        ("eu", "us") => ms(40),
        ("ap", "us") => ms(75),
        ("ap", "eu") => ms(120),
        _ => ms(1),
    };
    for (ra, na) in &regions {
        for (rb, nb) in &regions {
            for &a in na {
                for &b in nb {
                    if a < b {
                        h.set_link_latency(a, b, one_way(ra, rb));
                    }
                }
            }
        }
    }
    let (leader, _) = h.await_leader()?;
    h.run_for(secs(3))?;
    let (_, cut) = regions.iter().find(|(_, ns)| ns.contains(&leader)).expect("the leader is in a region");
    let rest: Vec<u64> = h.ids().into_iter().filter(|i| !cut.contains(i)).collect();
    if rest.len() * 2 > h.ids().len() {
        h.expect_failover("leader's region cut off");
    }
    h.partition(cut, &rest);
    if h.failover_expected() {
        h.await_failover()?;
    }
    h.run_for(ms(rng.gen_range(2_000..6_000)))?;
    h.repair_all();
    h.run_for(secs(5))?;
    h.finish()
}

/// Every node is restarted in turn, waiting for it to catch up before the next.
pub fn rolling_restart(seed: u64) -> Result<Report, Failure> {
    let mut rng = StdRng::seed_from_u64(seed);
    let mut h = Harness::new("rolling_restart", lan(seed));
    h.await_leader()?;
    h.run_for(secs(1))?;
    for id in h.ids() {
        let was_leader = h.leader().is_some_and(|(l, _)| l == id);
        if was_leader {
            h.expect_failover("leader restarted");
        }
        h.crash(id);
        h.run_for(ms(rng.gen_range(200..1_500)))?;
        h.restart(id);
        if was_leader {
            h.await_failover()?;
        }
        h.await_caught_up(id)?;
        h.run_for(secs(1))?;
    }
    h.finish()
}

/// With one voter partitioned away, a fourth node is added as a learner,
/// promoted, and the partitioned voter is removed; then the partition heals.
pub fn membership_during_partition(seed: u64) -> Result<Report, Failure> {
    let mut o = lan(seed);
    o.spares = vec![SimNode::new(4, "lan")];
    let mut h = Harness::new("membership_during_partition", o);
    let (leader, _) = h.await_leader()?;
    h.run_for(secs(1))?;
    let followers = h.followers_of(leader);
    let cut = followers[(seed % 2) as usize];
    let rest: Vec<_> = h.ids().into_iter().filter(|&i| i != cut).chain([4]).collect();
    h.partition(&[cut], &rest);
    h.run_for(secs(1))?;
    h.change_membership(MembershipChange::AddLearner(SimNode::new(4, "lan")))?;
    h.await_caught_up(4)?;
    h.change_membership(MembershipChange::Promote(4))?;
    h.run_for(secs(1))?;
    h.change_membership(MembershipChange::Remove(cut))?;
    h.run_for(secs(2))?;
    h.repair_all();
    h.run_for(secs(3))?;
    h.finish()
}

/// A follower is restarted on a copy of its data dir taken before its last
/// run (an operator restored an old backup, a volume snapshot was rolled
/// back): it lost votes and entries it had acknowledged. The others refuse
/// its messages and answers, so it cannot vote, be elected or count towards
/// a commit, and its view never vouches for its old state; the cluster
/// carries on, and the operator removes it.
pub fn stale_data_dir(seed: u64) -> Result<Report, Failure> {
    let mut rng = StdRng::seed_from_u64(seed);
    let mut h = Harness::new("stale_data_dir", lan(seed));
    let (leader, _) = h.await_leader()?;
    h.run_for(secs(1))?;
    let followers = h.followers_of(leader);
    let victim = followers[rng.gen_range(0..followers.len())];
    h.crash(victim);
    h.copy_data_dir(victim, "old-copy").map_err(|e| h.error(format!("copying a data dir: {e}")))?;
    h.restart(victim);
    h.await_caught_up(victim)?;
    // The victim acknowledges writes in this run, then loses them.
    h.run_for(ms(rng.gen_range(1_000..3_000)))?;
    h.crash(victim);
    h.restore_data_dir(victim, "old-copy").map_err(|e| h.error(format!("restoring a data dir: {e}")))?;
    h.restart(victim);
    h.run_for(ms(rng.gen_range(2_000..4_000)))?;
    h.expect_refused(victim)?;
    h.change_membership(MembershipChange::Remove(victim))?;
    h.run_for(secs(2))?;
    h.finish()
}
