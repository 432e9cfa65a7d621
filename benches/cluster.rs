//! Cluster figures on real `raftgate` processes on loopback:
//!
//! - failover: SIGKILL the leader, time until a surviving node acknowledges a
//!   write; 10 runs (the killed node is restarted and caught up in between);
//! - replication: 1,000 writes through the leader, each timed from the call
//!   until every node reports it applied; p50 / p99.
//!
//! Run with `benches/run.sh` (it builds the release binaries first). Nothing
//! else should run on the machine meanwhile.

use std::time::{Duration, Instant};

use raftgate_proto::admin as pb;
use raftgate_proto::admin::admin_client::AdminClient;
use raftgate_tests::{admin, applied_index, eventually, wait_for_leader, Cluster};
use tonic::transport::Channel;

const FAILOVER_RUNS: usize = 10;
const WRITES: usize = 1_000;

fn percentile(sorted: &[Duration], p: f64) -> Duration {
    let i = ((sorted.len() as f64 - 1.0) * p).round() as usize;
    sorted[i]
}

fn ms(d: Duration) -> f64 {
    d.as_secs_f64() * 1e3
}

async fn put(c: &mut AdminClient<Channel>, key: &str) -> Option<u64> {
    let req = pb::PutSettingRequest { key: key.into(), value: "v".into(), expected_revision: None };
    c.put_setting(req).await.ok().map(|r| r.into_inner().log_index)
}

async fn status(c: &mut AdminClient<Channel>) -> Option<pb::NodeStatusReply> {
    c.node_status(pb::NodeStatusRequest {}).await.ok().map(|r| r.into_inner())
}

async fn failover(cluster: &mut Cluster, all: &[String]) -> Vec<Duration> {
    let mut times = Vec::new();
    for run in 0..FAILOVER_RUNS {
        let leader = wait_for_leader(all, Duration::from_secs(30)).await.expect("leader");
        let survivors: Vec<String> =
            cluster.nodes.iter().filter(|n| n.addrs.id != leader).map(|n| n.addrs.admin.clone()).collect();
        let mut clients = Vec::new();
        for a in &survivors {
            clients.push(admin(a).await);
        }
        cluster.node(leader).kill();
        let killed = Instant::now();
        'write: loop {
            for c in clients.iter_mut() {
                if put(c, &format!("failover.{run}")).await.is_some() {
                    break 'write;
                }
            }
            assert!(killed.elapsed() < Duration::from_secs(60), "no write accepted after kill");
            tokio::time::sleep(Duration::from_millis(5)).await;
        }
        let took = killed.elapsed();
        eprintln!("failover run {run}: killed node {leader}, write accepted after {:.0} ms", ms(took));
        times.push(took);
        // Restart the killed node and let it catch up before the next run.
        cluster.node(leader).start();
        let addr = cluster.node(leader).addrs.admin.clone();
        let target = applied_index(&survivors[0]).await.unwrap_or(0);
        eventually(Duration::from_secs(30), || async { applied_index(&addr).await.filter(|a| *a >= target) })
            .await
            .expect("restarted node caught up");
    }
    times
}

async fn replication(all: &[String]) -> Vec<Duration> {
    let leader = wait_for_leader(all, Duration::from_secs(30)).await.expect("leader");
    let mut leader_client = None;
    let mut others = Vec::new();
    for a in all {
        let mut c = admin(a).await;
        if status(&mut c).await.map(|s| s.id) == Some(leader) {
            leader_client = Some(c);
        } else {
            others.push(c);
        }
    }
    let mut leader_client = leader_client.expect("leader client");
    let mut times = Vec::with_capacity(WRITES);
    for i in 0..WRITES {
        let start = Instant::now();
        let index = put(&mut leader_client, &format!("k{}", i % 500)).await.expect("write");
        for c in others.iter_mut() {
            while status(c).await.and_then(|s| s.applied_index).unwrap_or(0) < index {
                tokio::task::yield_now().await;
            }
        }
        times.push(start.elapsed());
    }
    times
}

fn main() {
    let runtime = tokio::runtime::Builder::new_multi_thread().worker_threads(2).enable_all().build().unwrap();
    runtime.block_on(async {
        let mut cluster = Cluster::start(3);
        let all: Vec<String> = cluster.nodes.iter().map(|n| n.addrs.admin.clone()).collect();
        wait_for_leader(&all, Duration::from_secs(30)).await.expect("leader");

        let mut repl = replication(&all).await;
        repl.sort();
        let mut fo = failover(&mut cluster, &all).await;
        fo.sort();

        println!("timeouts (node defaults): {:?}", raftgate_cluster::RaftTimeouts::default());
        println!(
            "write applied on all 3 nodes ({WRITES} writes): p50 {:.2} ms, p99 {:.2} ms, max {:.2} ms",
            ms(percentile(&repl, 0.5)),
            ms(percentile(&repl, 0.99)),
            ms(*repl.last().unwrap())
        );
        println!(
            "leader kill -9 to first acknowledged write ({FAILOVER_RUNS} runs): median {:.0} ms, max {:.0} ms",
            ms(percentile(&fo, 0.5)),
            ms(*fo.last().unwrap())
        );
    });
}
