//! The runbooks of docs/runbooks.md, each run on real `raftgate` processes
//! with the same `raftgatectl` commands the page tells an operator to type:
//! add a node, replace a failed node, move a voter to another region, add a
//! far region as a learner, and a rolling restart under traffic.
//!
//! The tests take turns (one lock): each starts three or four nodes, and on
//! a small machine five clusters at once would make elections, not the
//! runbooks, the thing under test.

use std::collections::BTreeMap;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use raftgate_tests::{
    applied_index, ctl, eventually, get_local, http_get, http_get_with, put, start_upstream, wait_for_leader, Cluster,
    NodeAddrs, NodeProcess,
};

const LEADER_WAIT: Duration = Duration::from_secs(30);
const CATCH_UP: Duration = Duration::from_secs(20);
/// A membership change is retried while the cluster has no leader (after a
/// kill) or is still committing the previous change.
const MEMBERSHIP_RETRY: Duration = Duration::from_secs(30);

/// One runbook at a time.
static TURN: tokio::sync::Mutex<()> = tokio::sync::Mutex::const_new(());

/// Admin addresses of the nodes still running.
fn admins(cluster: &mut Cluster) -> Vec<String> {
    cluster.nodes.iter_mut().filter_map(|n| n.is_running().then(|| n.addrs.admin.clone())).collect()
}

/// `[a,b,c]` as raftgatectl prints a membership.
fn id_list(ids: impl IntoIterator<Item = u64>) -> String {
    let ids: Vec<String> = ids.into_iter().map(|i| i.to_string()).collect();
    format!("[{}]", ids.join(","))
}

/// Runs `raftgatectl --endpoint EP ARGS`, panicking with its error output on failure.
fn ctl_ok(ep: &str, args: &[&str]) -> String {
    let full = [&["--endpoint", ep], args].concat();
    let (ok, out, err) = ctl(&full);
    assert!(ok, "raftgatectl {full:?} failed: {err}");
    out
}

/// A membership command through the first endpoint that takes it. A retry
/// after a timeout may find the change already made: that counts as done.
async fn membership(eps: &[String], args: &[&str], done_already: &str) -> String {
    let deadline = Instant::now() + MEMBERSHIP_RETRY;
    let mut last = String::new();
    while Instant::now() < deadline {
        for ep in eps {
            let full = [&["--endpoint", ep.as_str()], args].concat();
            let (ok, out, err) = ctl(&full);
            if ok {
                return out;
            }
            if err.contains(done_already) {
                return ctl_ok(ep, &["cluster", "status"]);
            }
            last = err;
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    panic!("raftgatectl {args:?} did not succeed within {MEMBERSHIP_RETRY:?}: {last}");
}

async fn add_learner(eps: &[String], a: &NodeAddrs) -> String {
    let id = a.id.to_string();
    membership(eps, &a.add_learner_args(&id), "already a member").await
}

async fn promote(eps: &[String], id: u64) -> String {
    membership(eps, &["cluster", "promote", &id.to_string()], "already a voter").await
}

async fn remove(eps: &[String], id: u64) -> String {
    membership(eps, &["cluster", "remove", &id.to_string()], "not a member").await
}

/// Writes `key=value` through the first of `eps` that acknowledges it
/// within `limit`; the acknowledged log index.
async fn put_retrying(eps: &[String], key: &str, value: &str, limit: Duration) -> Option<u64> {
    let deadline = Instant::now() + limit;
    loop {
        for ep in eps {
            if let Ok(reply) = put(ep, key, value).await {
                return Some(reply.log_index);
            }
        }
        if Instant::now() > deadline {
            return None;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

/// Writes `count` settings `prefix.i`, recording each acknowledged one.
async fn write_settings(eps: &[String], prefix: &str, count: usize, acked: &mut BTreeMap<String, String>) -> u64 {
    let mut last = 0;
    for i in 0..count {
        let (k, v) = (format!("{prefix}.{i}"), format!("v{i}"));
        let index =
            put_retrying(eps, &k, &v, LEADER_WAIT).await.unwrap_or_else(|| panic!("write {k} not acknowledged"));
        last = last.max(index);
        acked.insert(k, v);
    }
    last
}

/// Waits until the node at `admin` has applied `index`.
async fn caught_up(admin: &str, index: u64) -> bool {
    eventually(CATCH_UP, || async { applied_index(admin).await.filter(|a| *a >= index) }).await.is_some()
}

/// Every acknowledged write is in the applied state of the node at `admin`.
async fn assert_writes_present(admin: &str, acked: &BTreeMap<String, String>) {
    for (k, v) in acked {
        assert_eq!(get_local(admin, k).await.as_deref(), Some(v.as_str()), "acknowledged {k} missing on {admin}");
    }
}

/// The demo upstream and catch-all route of `raftgate dev`, through `ep`.
async fn seed_demo_route(ep: &str) -> tokio::task::JoinHandle<()> {
    let (addr, task) = start_upstream("demo").await;
    ctl_ok(ep, &["upstream", "apply", "--id", "demo", "--target", &addr]);
    ctl_ok(ep, &["route", "apply", "--id", "demo", "--upstream", "demo", "--prefix", "/"]);
    task
}

/// The node's data plane answers `/hello` from the demo upstream.
async fn serves_demo(http: &str) -> bool {
    eventually(Duration::from_secs(10), || async {
        http_get(http, "/hello", "demo.test").await.filter(|(s, b)| *s == 200 && b.starts_with("demo GET /hello"))
    })
    .await
    .is_some()
}

fn status_json(ep: &str) -> serde_json::Value {
    serde_json::from_str(&ctl_ok(ep, &["--output", "json", "cluster", "status"])).expect("JSON cluster status")
}

/// (voter ids, learner ids) from `cluster status`.
fn roles(status: &serde_json::Value) -> (Vec<u64>, Vec<u64>) {
    let members = status["members"].as_array().expect("members");
    let ids = |voter: bool| {
        members.iter().filter(|m| m["voter"] == voter).map(|m| m["id"].as_u64().unwrap()).collect::<Vec<_>>()
    };
    (ids(true), ids(false))
}

/// A fresh node (empty data dir, no bootstrap list) in the cluster's directory.
fn fresh_node(cluster: &mut Cluster, addrs: NodeAddrs, extra_toml: &str) {
    let mut node = NodeProcess::configure(cluster.dir.path(), addrs, &[], extra_toml);
    node.start();
    cluster.nodes.push(node);
}

async fn start_cluster(extra_toml: &str) -> (Cluster, u64) {
    let mut cluster = Cluster::start_with(3, extra_toml);
    let Some(leader) = wait_for_leader(&admins(&mut cluster), LEADER_WAIT).await else {
        cluster.dump_logs();
        panic!("no leader elected");
    };
    (cluster, leader)
}

/// Runbook 1.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn runbook_add_a_node_joins_as_learner_catches_up_is_promoted_and_serves() {
    let _turn = TURN.lock().await;
    let (mut cluster, _) = start_cluster("").await;
    let eps = admins(&mut cluster);
    let _demo = seed_demo_route(&eps[0]).await;
    let mut acked = BTreeMap::new();
    write_settings(&eps, "before", 5, &mut acked).await;

    let a4 = NodeAddrs::new(4);
    fresh_node(&mut cluster, a4.clone(), "");
    let out = add_learner(&eps, &a4).await;
    assert!(out.contains("learners [4]"), "{out}");

    let last = write_settings(&eps, "after", 5, &mut acked).await;
    assert!(caught_up(&a4.admin, last).await, "the learner did not catch up to {last}");
    let out = promote(&eps, 4).await;
    assert!(out.contains("voters [1,2,3,4]") && out.contains("learners []"), "{out}");

    assert!(serves_demo(&a4.http).await, "the new node does not serve the demo route");
    assert_writes_present(&a4.admin, &acked).await;
    let (voters, learners) = roles(&status_json(&a4.admin));
    assert_eq!((voters, learners), (vec![1, 2, 3, 4], vec![]));
}

/// Runbook 2.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn runbook_replace_a_failed_voter_with_a_fresh_node_keeps_every_acknowledged_write() {
    let _turn = TURN.lock().await;
    let (mut cluster, leader) = start_cluster("").await;
    let _demo = seed_demo_route(&admins(&mut cluster)[0]).await;
    let mut acked = BTreeMap::new();
    write_settings(&admins(&mut cluster), "before", 10, &mut acked).await;

    // The worst case: the failed voter is the leader. kill -9, for good.
    let failed = cluster.node(leader).addrs.clone();
    cluster.node(leader).kill();
    let survivors = admins(&mut cluster);
    let remaining: Vec<u64> = (1..=3).filter(|id| *id != failed.id).collect();
    let out = remove(&survivors, failed.id).await;
    assert!(out.contains(&format!("voters {}", id_list(remaining.clone()))), "{out}");
    write_settings(&survivors, "degraded", 5, &mut acked).await;

    // The replacement: a new id (ids are never reused), the failed node's
    // addresses and region, an empty data dir.
    let replacement = NodeAddrs { id: 4, ..failed.clone() };
    fresh_node(&mut cluster, replacement.clone(), "");
    add_learner(&survivors, &replacement).await;
    let last = write_settings(&survivors, "rejoin", 5, &mut acked).await;
    assert!(caught_up(&replacement.admin, last).await, "the replacement did not catch up");
    let out = promote(&survivors, 4).await;
    assert!(out.contains(&format!("voters {}", id_list(remaining.iter().copied().chain([4])))), "{out}");

    let everyone = admins(&mut cluster);
    let last = write_settings(&everyone, "after", 5, &mut acked).await;
    for ep in &everyone {
        assert!(caught_up(ep, last).await, "{ep} did not apply {last}");
        assert_writes_present(ep, &acked).await;
    }
    let (mut voters, learners) = roles(&status_json(&replacement.admin));
    voters.sort_unstable();
    let expected: Vec<u64> = remaining.iter().copied().chain([4]).collect();
    assert_eq!((voters, learners), (expected, vec![]));
    assert!(serves_demo(&replacement.http).await, "the replacement does not serve the demo route");
}

/// Runbook 3.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn runbook_move_a_voter_to_another_region_by_adding_first_and_removing_second() {
    let _turn = TURN.lock().await;
    let (mut cluster, _) = start_cluster("").await;
    let mut acked = BTreeMap::new();
    write_settings(&admins(&mut cluster), "before", 5, &mut acked).await;

    // Node 3 in region-3 moves to eu-central: a new node there joins first.
    let mut a4 = NodeAddrs::new(4);
    a4.region = "eu-central".into();
    fresh_node(&mut cluster, a4.clone(), "");
    let eps = admins(&mut cluster);
    add_learner(&eps, &a4).await;
    let last = write_settings(&eps, "during", 5, &mut acked).await;
    assert!(caught_up(&a4.admin, last).await, "the new voter did not catch up");
    promote(&eps, 4).await;
    let out = remove(&eps, 3).await;
    assert!(out.contains("voters [1,2,4]") && out.contains("learners []"), "{out}");
    assert_eq!(cluster.node(3).terminate().map(|s| s.success()), Some(true), "node 3 stops cleanly");

    let eps = admins(&mut cluster);
    write_settings(&eps, "after", 5, &mut acked).await;
    let table = ctl_ok(&a4.admin, &["cluster", "status"]);
    assert!(table.contains("REGION") && table.contains("eu-central"), "{table}");
    let status = status_json(&a4.admin);
    let mut regions: Vec<&str> = status["members"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|m| m["voter"] == true)
        .map(|m| m["region"].as_str().unwrap())
        .collect();
    regions.sort_unstable();
    assert_eq!(regions, ["eu-central", "region-1", "region-2"], "{status}");
    for ep in &eps {
        assert_writes_present(ep, &acked).await;
    }
}

/// Runbook 4.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn runbook_a_far_region_learner_serves_and_enforces_revocations_but_does_not_vote() {
    let _turn = TURN.lock().await;
    let secret_dir = tempfile::tempdir().unwrap();
    let secret = secret_dir.path().join("cluster-secret");
    std::fs::write(&secret, "a cluster secret the runbook nodes share, 48 bytes").unwrap();
    let identity = format!("\n[identity]\nkey_hash_secret = \"file:{}\"\n", secret.display());
    let (mut cluster, _) = start_cluster(&identity).await;
    let eps = admins(&mut cluster);
    let (up, _up) = start_upstream("orders").await;
    ctl_ok(&eps[0], &["upstream", "apply", "--id", "orders", "--target", &up]);
    ctl_ok(&eps[0], &["consumer", "apply", "--id", "acme"]);
    let route = cluster.dir.path().join("keyed.yaml");
    std::fs::write(&route, "id: keyed\nupstream: orders\npaths: [{prefix: /keyed}]\nauth: {api_key: {}}\n").unwrap();
    ctl_ok(&eps[0], &["route", "apply", "-f", route.to_str().unwrap()]);
    let created: serde_json::Value =
        serde_json::from_str(&ctl_ok(&eps[0], &["--output", "json", "key", "create", "--consumer", "acme"])).unwrap();
    let (key, key_id) = (created["key"].as_str().unwrap().to_string(), created["id"].as_str().unwrap().to_string());

    // The far site: the cluster's [raft] timeouts, a larger one-way delay.
    let mut far = NodeAddrs::new(4);
    far.region = "ap-far".into();
    fresh_node(&mut cluster, far.clone(), &format!("{identity}max_one_way_delay_ms = 150\n"));
    let out = add_learner(&eps, &far).await;
    assert!(out.contains("voters [1,2,3]") && out.contains("learners [4]"), "{out}");
    let last = put_retrying(&eps, "far.joined", "yes", LEADER_WAIT).await.expect("write");
    assert!(caught_up(&far.admin, last).await, "the far learner did not catch up");

    // It serves traffic, with the key.
    let keyed = || async {
        eventually(Duration::from_secs(10), || async {
            http_get_with(&far.http, "/keyed/1", "api.test", &[("x-api-key", &key)]).await
        })
        .await
        .map(|(s, _)| s)
    };
    assert_eq!(keyed().await, Some(200), "the learner serves the keyed route");

    // A revocation through a voter is confirmed by the learner, which then refuses the key.
    let out = ctl_ok(&eps[0], &["revoke", "key", &key_id, "--wait", "--reason", "runbook"]);
    assert_eq!(out.lines().filter(|l| l.contains("  applied  ")).count(), 4, "voters and the learner: {out}");
    assert!(out.lines().any(|l| l.contains("ap-far") && l.contains("applied")), "{out}");
    assert_eq!(keyed().await, Some(401), "the learner refuses the revoked key");

    // It does not vote: with it killed, the voters still commit at once.
    cluster.node(4).kill();
    let started = Instant::now();
    let index = put_retrying(&eps, "far.gone", "yes", Duration::from_secs(5)).await;
    assert!(index.is_some(), "writes need the learner");
    assert!(started.elapsed() < Duration::from_secs(2), "a write waited {:?}", started.elapsed());
    let status = status_json(&eps[0]);
    assert_eq!(roles(&status), (vec![1, 2, 3], vec![4]), "{status}");
    assert!(status["leader_id"].as_u64().is_some(), "{status}");
}

/// Runbook 5.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn runbook_rolling_restart_under_traffic_fails_no_request_and_loses_no_acknowledged_write() {
    let _turn = TURN.lock().await;
    let (mut cluster, leader) = start_cluster("").await;
    let _demo = seed_demo_route(&admins(&mut cluster)[0]).await;
    let https: Vec<String> = cluster.nodes.iter().map(|n| n.addrs.http.clone()).collect();
    let all_admins: Vec<String> = cluster.nodes.iter().map(|n| n.addrs.admin.clone()).collect();
    for http in &https {
        assert!(serves_demo(http).await, "{http} does not serve the demo route");
    }

    // Out of rotation: bit (id - 1) set while a node is drained or restarting,
    // as a load balancer that follows /readyz would see it.
    let out_of_rotation = Arc::new(AtomicU64::new(0));
    let stop = Arc::new(AtomicBool::new(false));
    let in_rotation = |mask: u64, n: usize| (0..n).filter(move |i| mask & (1 << i) == 0);

    let client = {
        let (out, stop, https) = (out_of_rotation.clone(), stop.clone(), https.clone());
        tokio::spawn(async move {
            let (mut sent, mut failed) = (0u64, Vec::new());
            let mut turn = 0usize;
            while !stop.load(Ordering::Relaxed) {
                let up: Vec<usize> = in_rotation(out.load(Ordering::SeqCst), https.len()).collect();
                let i = up[turn % up.len()];
                turn += 1;
                sent += 1;
                match http_get(&https[i], "/hello", "demo.test").await {
                    Some((200, _)) => {}
                    other => failed.push((i + 1, other)),
                }
                tokio::time::sleep(Duration::from_millis(10)).await;
            }
            (sent, failed)
        })
    };
    let writer = {
        let (out, stop, admins) = (out_of_rotation.clone(), stop.clone(), all_admins.clone());
        tokio::spawn(async move {
            let mut acked = BTreeMap::new();
            let (mut last, mut i) = (0, 0u64);
            while !stop.load(Ordering::Relaxed) {
                let up: Vec<String> =
                    in_rotation(out.load(Ordering::SeqCst), admins.len()).map(|n| admins[n].clone()).collect();
                let (k, v) = (format!("rolling.{i}"), format!("v{i}"));
                i += 1;
                // An unacknowledged write may or may not have committed: only acknowledged ones count.
                for ep in &up {
                    if let Ok(r) = put(ep, &k, &v).await {
                        last = r.log_index.max(last);
                        acked.insert(k, v);
                        break;
                    }
                }
                tokio::time::sleep(Duration::from_millis(50)).await;
            }
            (acked, last)
        })
    };

    // Followers first, the leader last: one leader change in all.
    let mut order: Vec<u64> = (1..=3).filter(|id| *id != leader).collect();
    order.push(leader);
    for id in order {
        out_of_rotation.fetch_or(1 << (id - 1), Ordering::SeqCst);
        tokio::time::sleep(Duration::from_millis(300)).await;
        let status = cluster.node(id).terminate();
        assert_eq!(status.map(|s| s.success()), Some(true), "node {id} did not stop cleanly on SIGTERM");
        cluster.node(id).start();
        let metrics = cluster.node(id).addrs.metrics.clone();
        let ready = eventually(Duration::from_secs(30), || async {
            http_get(&metrics, "/readyz", "probe").await.filter(|(s, _)| *s == 200)
        })
        .await;
        assert!(ready.is_some(), "node {id} not ready after restart");
        out_of_rotation.fetch_and(!(1 << (id - 1)), Ordering::SeqCst);
        // A few writes and requests with every node back before the next one goes.
        tokio::time::sleep(Duration::from_millis(500)).await;
    }
    stop.store(true, Ordering::Relaxed);
    let (sent, failed) = client.await.unwrap();
    let (acked, last) = writer.await.unwrap();
    assert!(
        failed.is_empty(),
        "{} of {sent} data-plane requests to nodes in rotation failed: {failed:?}",
        failed.len()
    );
    assert!(
        sent > 100 && acked.len() > 20,
        "too little traffic to prove anything: {sent} requests, {} writes",
        acked.len()
    );
    eprintln!("rolling restart: {sent} data-plane requests, {} acknowledged writes", acked.len());
    for ep in &all_admins {
        assert!(caught_up(ep, last).await, "{ep} did not apply {last}");
        assert_writes_present(ep, &acked).await;
    }
}
