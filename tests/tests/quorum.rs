//! Without a quorum a leader must not hang: writes fail with `unavailable`
//! within the write timeout and status stops calling it leader. A write that
//! arrives during an election waits for its outcome. A follower that missed
//! more than the kept log catches up by snapshot.

use std::time::{Duration, Instant};

use raftgate_proto::admin as pb;
use raftgate_tests::{admin, applied_index, eventually, get_local, put, wait_for_leader, Cluster};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_leader_that_lost_its_quorum_refuses_writes_within_the_write_timeout() {
    let mut cluster = Cluster::start_with(3, "\n[raft]\nwrite_timeout_ms = 1500\n");
    let all: Vec<String> = cluster.nodes.iter().map(|n| n.addrs.admin.clone()).collect();
    let leader = wait_for_leader(&all, Duration::from_secs(30)).await.expect("leader");
    let leader_addr = cluster.node(leader).addrs.admin.clone();
    put(&leader_addr, "before", "1").await.expect("write with a quorum");

    let followers: Vec<u64> = cluster.nodes.iter().map(|n| n.addrs.id).filter(|id| *id != leader).collect();
    for id in followers {
        cluster.node(id).kill();
    }

    let started = Instant::now();
    let err = put(&leader_addr, "after", "1").await.expect_err("a write without a quorum must fail");
    let took = started.elapsed();
    assert_eq!(err.code(), tonic::Code::Unavailable, "{err}");
    assert!(err.message().contains("did not complete within 1500 ms"), "{}", err.message());
    // Bounded: the 1.5 s write timeout plus generous slack for a loaded machine, never a hang.
    assert!(took < Duration::from_secs(15), "write took {took:?}");

    // The node may still call itself leader; cluster status must not believe it.
    let status = eventually(Duration::from_secs(10), || async {
        let mut c = admin(&leader_addr).await;
        let s = c.cluster_status(pb::ClusterStatusRequest {}).await.ok()?.into_inner();
        (s.leader_id.is_none()).then_some(s)
    })
    .await
    .expect("cluster status stops naming a leader without a quorum");
    let unreachable = s_unreachable(&status);
    assert_eq!(unreachable, 2, "{status:?}");
}

/// A node that knows no leader holds a write for up to two election
/// timeouts: if an election ends in that time, the write succeeds instead of
/// failing with "no leader elected yet".
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_write_during_an_election_waits_for_the_leader() {
    let extra = "\n[raft]\nelection_timeout_min_ms = 1500\nelection_timeout_max_ms = 3000\nwrite_timeout_ms = 10000\n";
    let mut cluster = Cluster::start_with(3, extra);
    // Nodes 2 and 3 go before they can vote: node 1 alone has no quorum.
    cluster.node(2).kill();
    cluster.node(3).kill();
    let one = cluster.node(1).addrs.admin.clone();
    let status = eventually(Duration::from_secs(30), || async {
        let mut c = admin(&one).await;
        c.node_status(pb::NodeStatusRequest {}).await.ok().map(|r| r.into_inner())
    })
    .await
    .expect("node 1 answers");
    assert_eq!(status.leader_id, None, "no leader without a quorum: {status:?}");

    let write = tokio::spawn({
        let one = one.clone();
        async move { put(&one, "during-election", "1").await }
    });
    tokio::time::sleep(Duration::from_millis(300)).await;
    cluster.node(2).start();
    let written = write.await.unwrap();
    assert!(written.is_ok(), "the write waited for the election: {written:?}");
    // The leader acknowledged it; node 1 applies it one heartbeat later.
    let seen = eventually(Duration::from_secs(10), || async { get_local(&one, "during-election").await }).await;
    assert_eq!(seen.as_deref(), Some("1"));
}

fn s_unreachable(s: &pb::ClusterStatusReply) -> usize {
    s.members.iter().filter(|m| !m.reachable).count()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_follower_behind_the_purged_log_catches_up_from_a_snapshot() {
    let mut cluster = Cluster::start_with(3, "\n[raft]\nsnapshot_every_entries = 10\n");
    let all: Vec<String> = cluster.nodes.iter().map(|n| n.addrs.admin.clone()).collect();
    let leader = wait_for_leader(&all, Duration::from_secs(30)).await.expect("leader");
    let leader_addr = cluster.node(leader).addrs.admin.clone();
    let lagging = cluster.nodes.iter().map(|n| n.addrs.id).find(|id| *id != leader).unwrap();
    cluster.node(lagging).kill();

    let mut last = 0;
    for i in 0..60 {
        last = put(&leader_addr, &format!("k{i}"), &format!("v{i}")).await.expect("write with 2 of 3").log_index;
    }
    cluster.node(lagging).start();
    let addr = cluster.node(lagging).addrs.admin.clone();
    let caught_up = eventually(Duration::from_secs(20), || async { applied_index(&addr).await.filter(|a| *a >= last) });
    if caught_up.await.is_none() {
        cluster.dump_logs();
        panic!("lagging node did not catch up to {last}");
    }
    let mut c = admin(&addr).await;
    let s = c.node_status(pb::NodeStatusRequest {}).await.unwrap().into_inner();
    assert!(s.snapshot_index.is_some(), "the lagging node holds a snapshot: {s:?}");
    for i in [0, 30, 59] {
        assert_eq!(get_local(&addr, &format!("k{i}")).await, Some(format!("v{i}")));
    }
    let log = cluster.node(lagging).log();
    assert!(
        log.contains("snapshot received from the leader"),
        "the log was purged, so catching up needs a snapshot: {log}"
    );
}
