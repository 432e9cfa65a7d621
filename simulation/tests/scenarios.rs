//! Every scenario over a handful of seeds (raise with SIM_SEEDS=N), the
//! determinism check, and the seeds that once found bugs.

use simulation::harness::Report;
use simulation::scenarios;

/// Seeds per scenario in the test suite (4 keeps the suite's simulation
/// stage near two minutes on 2 cores); the long campaigns run through
/// `cargo run -p simulation --release -- --seeds N`.
const SUITE_SEEDS: u64 = 4;

/// `default`, or `SIM_SEEDS` when set.
fn seeds(default: u64) -> u64 {
    std::env::var("SIM_SEEDS").ok().and_then(|s| s.parse().ok()).unwrap_or(default)
}

fn run(name: &str, seeds: u64) -> Vec<Report> {
    let scenario = scenarios::by_name(name).expect("known scenario");
    (0..seeds).map(|seed| scenario(seed).unwrap_or_else(|failure| panic!("{failure}"))).collect()
}

/// Checks what every run must show: writes acknowledged and reads served.
fn check_progress(reports: &[Report]) {
    for r in reports {
        assert!(r.acked_writes > 20, "seed {}: only {} writes acknowledged", r.seed, r.acked_writes);
        assert!(r.reads > 5, "seed {}: only {} linearizable reads", r.seed, r.reads);
        assert_eq!(r.lin_inconclusive, 0, "seed {}: the linearizability search gave up", r.seed);
        let dp = &r.data_plane;
        assert!(dp.requests > 50 && dp.passed > 20, "seed {}: data plane served too little: {dp:?}", r.seed);
        assert!(dp.revoked_refusals > 0, "seed {}: the revoked key was never refused: {dp:?}", r.seed);
        assert!(dp.revocation_applied_everywhere_ms.is_some(), "seed {}: the key was not revoked: {dp:?}", r.seed);
    }
}

/// Some node was cut off and refused authenticated requests (fenced).
fn check_fenced(reports: &[Report]) {
    for r in reports {
        assert!(r.data_plane.stale_refusals > 0, "seed {}: no node fenced itself: {:?}", r.seed, r.data_plane);
    }
}

fn check_failovers(reports: &[Report]) {
    for r in reports {
        assert!(!r.failovers_ms.is_empty(), "seed {}: the failover was not measured", r.seed);
    }
}

#[test]
fn quota_leases_partition() {
    let r = run("quota_leases_partition", seeds(SUITE_SEEDS));
    check_progress(&r);
    check_failovers(&r);
    for report in &r {
        assert!(report.lease_batches > 20, "seed {}: only {} lease batches", report.seed, report.lease_batches);
        let limit = simulation::harness::LEASE_LIMIT;
        assert!(
            report.units_granted > 0 && report.units_granted <= limit,
            "seed {}: {}",
            report.seed,
            report.units_granted
        );
    }
}

#[test]
fn leader_crash_restart() {
    let r = run("leader_crash_restart", seeds(SUITE_SEEDS));
    check_progress(&r);
    check_failovers(&r);
}

#[test]
fn follower_crash() {
    check_progress(&run("follower_crash", seeds(SUITE_SEEDS)));
}

#[test]
fn minority_partition() {
    let r = run("minority_partition", seeds(SUITE_SEEDS));
    check_progress(&r);
    check_fenced(&r);
}

#[test]
fn majority_partition() {
    let r = run("majority_partition", seeds(SUITE_SEEDS));
    check_progress(&r);
    check_failovers(&r);
    check_fenced(&r);
}

#[test]
fn asymmetric_partition() {
    let r = run("asymmetric_partition", seeds(SUITE_SEEDS));
    check_progress(&r);
    check_failovers(&r);
}

#[test]
fn flapping_link() {
    check_progress(&run("flapping_link", seeds(SUITE_SEEDS)));
}

#[test]
fn message_loss_delay() {
    check_progress(&run("message_loss_delay", seeds(SUITE_SEEDS)));
}

#[test]
fn three_regions() {
    let r = run("three_regions", seeds(SUITE_SEEDS));
    check_progress(&r);
}

#[test]
fn rolling_restart() {
    let r = run("rolling_restart", seeds(SUITE_SEEDS));
    check_progress(&r);
    check_failovers(&r);
}

#[test]
fn membership_during_partition() {
    check_progress(&run("membership_during_partition", seeds(SUITE_SEEDS)));
}

#[test]
fn stale_data_dir() {
    let r = run("stale_data_dir", seeds(SUITE_SEEDS));
    check_progress(&r);
}

#[test]
fn a_seed_replays_the_same_history_and_another_seed_differs() {
    let a = scenarios::leader_crash_restart(11).unwrap_or_else(|f| panic!("{f}"));
    let b = scenarios::leader_crash_restart(11).unwrap_or_else(|f| panic!("{f}"));
    assert_eq!(a.events, b.events);
    assert_eq!(a.history_digest, b.history_digest);
    assert_eq!((a.acked_writes, a.unknown_writes, a.reads), (b.acked_writes, b.unknown_writes, b.reads));
    let c = scenarios::leader_crash_restart(12).unwrap_or_else(|f| panic!("{f}"));
    assert_ne!(a.history_digest, c.history_digest);
}

/// Found openraft 0.9's fixed per-node election timeout: after the leader
/// crashed, the other two campaigned in lockstep and split every vote.
#[test]
fn regression_lockstep_split_vote() {
    let r = scenarios::leader_crash_restart(1).unwrap_or_else(|f| panic!("{f}"));
    assert_eq!(r.failovers_ms.len(), 1);
}

/// Found the first replacement election timer ignoring openraft's back-off
/// after a vote refused for an older log: a stale candidate kept deposing
/// the up-to-date one, and no leader was elected.
#[test]
fn regression_stale_candidate_duel() {
    let r = scenarios::majority_partition(1).unwrap_or_else(|f| panic!("{f}"));
    assert_eq!(r.failovers_ms.len(), 1);
}

/// Found the back-off for an older log outliving its election: a node
/// refused in an early election waited the back-off again when the leader's
/// region was cut off much later, and failover overran its bound.
#[test]
fn regression_stale_back_off_after_region_cut() {
    let r = scenarios::three_regions(280).unwrap_or_else(|f| panic!("{f}"));
    assert_eq!(r.failovers_ms.len(), 1);
}

/// The same stale back-off on a LAN, after a leader crash.
#[test]
fn regression_stale_back_off_after_leader_crash() {
    let r = scenarios::leader_crash_restart(537).unwrap_or_else(|f| panic!("{f}"));
    assert_eq!(r.failovers_ms.len(), 1);
}

/// Found a restarted node vouching for its state while it replayed its log:
/// the old leader, back after a crash, heard the new leader at once and let
/// a key through that had been revoked while it was down. A view now counts
/// only once the commit index that came with it is applied.
#[test]
fn regression_restart_replays_before_vouching() {
    let r = scenarios::leader_crash_restart(2).unwrap_or_else(|f| panic!("{f}"));
    assert!(r.data_plane.revoked_refusals > 0);
}
