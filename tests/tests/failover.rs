//! Three real nodes on loopback: writes through a follower reach every node,
//! the leader is killed with SIGKILL, a new leader takes writes, the killed
//! node restarts from its data dir and catches up, and no acknowledged write
//! is lost.

use std::collections::BTreeMap;
use std::time::{Duration, Instant};

use raftgate_tests::{applied_index, ctl, eventually, get_local, put, wait_for_leader, Cluster};

const LEADER_WAIT: Duration = Duration::from_secs(30);

/// Writes `key=value` through any of `addrs`, retrying on unavailability for up
/// to `limit`. Returns the log index once acknowledged.
async fn put_retrying(addrs: &[String], key: &str, value: &str, limit: Duration) -> Option<u64> {
    let deadline = Instant::now() + limit;
    loop {
        for a in addrs {
            if let Ok(reply) = put(a, key, value).await {
                return Some(reply.log_index);
            }
        }
        if Instant::now() > deadline {
            return None;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn acknowledged_writes_survive_a_leader_kill_and_the_killed_node_catches_up() {
    let mut cluster = Cluster::start(3);
    let all: Vec<String> = cluster.nodes.iter().map(|n| n.addrs.admin.clone()).collect();
    let Some(leader) = wait_for_leader(&all, LEADER_WAIT).await else {
        cluster.dump_logs();
        panic!("no leader elected");
    };
    let follower = cluster.nodes.iter().find(|n| n.addrs.id != leader).unwrap().addrs.admin.clone();

    // Writes through a follower are forwarded to the leader and applied on all three.
    let mut acked: BTreeMap<String, String> = BTreeMap::new();
    let mut last_index = 0;
    for i in 0..20 {
        let (k, v) = (format!("before.{i}"), format!("v{i}"));
        let reply = put(&follower, &k, &v).await.unwrap_or_else(|e| panic!("write {k} via follower: {e}"));
        last_index = last_index.max(reply.log_index);
        acked.insert(k, v);
    }
    for addr in &all {
        let caught_up =
            eventually(Duration::from_secs(10), || async { applied_index(addr).await.filter(|a| *a >= last_index) })
                .await;
        assert!(caught_up.is_some(), "node {addr} did not apply index {last_index}");
        for (k, v) in &acked {
            assert_eq!(get_local(addr, k).await.as_deref(), Some(v.as_str()), "{k} on {addr}");
        }
    }

    // kill -9 the leader; a new leader must take writes.
    cluster.node(leader).kill();
    let survivors: Vec<String> =
        cluster.nodes.iter().filter(|n| n.addrs.id != leader).map(|n| n.addrs.admin.clone()).collect();
    let killed_at = Instant::now();
    let index = put_retrying(&survivors, "after.0", "v0", LEADER_WAIT).await;
    assert!(index.is_some(), "no write accepted within {LEADER_WAIT:?} after killing the leader");
    eprintln!("failover: first write acknowledged {} ms after kill -9 of the leader", killed_at.elapsed().as_millis());
    acked.insert("after.0".into(), "v0".into());
    let new_leader = wait_for_leader(&survivors, LEADER_WAIT).await.expect("a new leader");
    assert_ne!(new_leader, leader, "the killed node cannot still lead");
    for i in 1..20 {
        let (k, v) = (format!("after.{i}"), format!("v{i}"));
        let idx = put_retrying(&survivors, &k, &v, Duration::from_secs(10)).await.expect("write after failover");
        last_index = last_index.max(idx);
        acked.insert(k, v);
    }

    // The killed node restarts from its data dir and catches up.
    cluster.node(leader).start();
    let restarted = cluster.node(leader).addrs.admin.clone();
    let caught_up =
        eventually(Duration::from_secs(20), || async { applied_index(&restarted).await.filter(|a| *a >= last_index) })
            .await;
    if caught_up.is_none() {
        cluster.dump_logs();
        panic!("restarted node {leader} did not catch up to {last_index}");
    }

    // Every acknowledged write is on every node.
    for addr in &all {
        for (k, v) in &acked {
            assert_eq!(get_local(addr, k).await.as_deref(), Some(v.as_str()), "acknowledged {k} missing on {addr}");
        }
    }

    // raftgatectl sees three reachable members and one leader.
    let (ok, out, err) = ctl(&["--endpoint", &restarted, "--output", "json", "cluster", "status"]);
    assert!(ok, "cluster status failed: {err}");
    let status: serde_json::Value = serde_json::from_str(&out).expect("JSON status");
    let members = status["members"].as_array().expect("members");
    assert_eq!(members.len(), 3);
    assert!(members.iter().all(|m| m["reachable"] == true), "{out}");
    assert_eq!(members.iter().filter(|m| m["leader"] == true).count(), 1, "{out}");
    assert!(members.iter().all(|m| m["status"]["applied_index"].as_u64() >= Some(last_index)), "{out}");
}
