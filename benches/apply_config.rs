//! `raftgatectl apply -f` of a 10,000-route file on a local 3-node cluster
//! of real `raftgate` processes: the time from the ApplyConfig call to
//! (a) its commit (the call returns), (b) every node having applied it,
//! (c) every node's data plane routing the last route. Baseline in the same
//! run: the same path for a 1-route file. Also prints the document's and
//! the snapshot's size (the state's bytes with the 10,000 routes).
//!
//! Run with `benches/run.sh` (it builds the release binaries first), alone.

use std::time::{Duration, Instant};

use raftgate_model::{Command, Route, State};
use raftgate_proto::admin as pb;
use raftgate_tests::{admin, eventually, http_get, wait_for_leader, Cluster};
use serde_json::json;

const ROUTES: usize = 10_000;

fn document(n: usize, tag: &str) -> serde_json::Value {
    let routes: Vec<_> = (0..n)
        .map(|i| {
            json!({"id": format!("{tag}-{i}"), "upstream": "u", "paths": [{"exact": format!("/{tag}/{i}")}],
                   "methods": ["GET", "POST"], "api": {"name": "bench", "version": "1"}})
        })
        .collect();
    json!({ "routes": routes })
}

async fn applied_everywhere(admins: &[String], index: u64) {
    for a in admins {
        let c = admin(a).await;
        eventually(Duration::from_secs(60), || {
            let mut c = c.clone();
            async move {
                let s = c.node_status(pb::NodeStatusRequest {}).await.ok()?.into_inner();
                s.applied_index.filter(|i| *i >= index)
            }
        })
        .await
        .expect("applied");
    }
}

async fn routed_everywhere(https: &[String], path: &str) {
    for h in https {
        eventually(Duration::from_secs(60), || async { http_get(h, path, "bench").await.filter(|r| r.0 != 404) })
            .await
            .expect("routed");
    }
}

/// (commit, applied on all, routed by all) for one document.
async fn apply(admins: &[String], https: &[String], n: usize, tag: &str) -> (Duration, Duration, Duration, usize) {
    let doc = document(n, tag).to_string();
    let bytes = doc.len();
    let mut c = admin(&admins[0]).await;
    let started = Instant::now();
    let reply = c
        .apply_config(pb::ApplyConfigRequest { document_json: doc, prune: false, dry_run: false })
        .await
        .expect("apply")
        .into_inner();
    let commit = started.elapsed();
    applied_everywhere(admins, reply.log_index).await;
    let applied = started.elapsed();
    routed_everywhere(https, &format!("/{tag}/{}", n - 1)).await;
    (commit, applied, started.elapsed(), bytes)
}

fn ms(d: Duration) -> f64 {
    d.as_secs_f64() * 1e3
}

#[tokio::main(flavor = "multi_thread", worker_threads = 2)]
async fn main() {
    let cluster = Cluster::start(3);
    let admins: Vec<String> = cluster.nodes.iter().map(|n| n.addrs.admin.clone()).collect();
    let https: Vec<String> = cluster.nodes.iter().map(|n| n.addrs.http.clone()).collect();
    wait_for_leader(&admins, Duration::from_secs(30)).await.expect("leader");
    let mut c = admin(&admins[0]).await;
    let up = json!({"id": "u", "targets": [{"addr": "127.0.0.1:9"}]}).to_string();
    c.apply_upstream(pb::ApplyObjectRequest { spec_json: up, expected_revision: None }).await.expect("upstream");

    let base = apply(&admins, &https, 1, "one").await;
    let big = apply(&admins, &https, ROUTES, "bulk").await;
    println!(
        "apply of 1 route (baseline): commit {:.1} ms, applied on 3 nodes {:.1} ms, routed by 3 nodes {:.1} ms",
        ms(base.0),
        ms(base.1),
        ms(base.2)
    );
    println!(
        "apply of {ROUTES} routes ({:.1} MiB document): commit {:.0} ms ({:.0}x), applied on 3 nodes {:.0} ms ({:.0}x), routed by 3 nodes {:.0} ms ({:.0}x)",
        big.3 as f64 / (1 << 20) as f64,
        ms(big.0),
        ms(big.0) / ms(base.0),
        ms(big.1),
        ms(big.1) / ms(base.1),
        ms(big.2),
        ms(big.2) / ms(base.2)
    );

    // The snapshot: the state with these routes, as a node stores it.
    let mut state = State::default();
    let upstream = serde_json::from_value(json!({"id": "u", "targets": [{"addr": "127.0.0.1:9"}]})).unwrap();
    state.apply(1, &Command::PutUpstream { upstream, expected_revision: None }).unwrap();
    let routes: Vec<Route> = serde_json::from_value(document(ROUTES, "bulk")["routes"].clone()).unwrap();
    let commands = routes.into_iter().map(|route| Command::PutRoute { route, expected_revision: Some(0) }).collect();
    state.apply(2, &Command::Batch { commands }).unwrap();
    let snapshot = state.to_bytes().len();
    println!(
        "snapshot with {ROUTES} routes: {:.1} MiB ({} bytes per route)",
        snapshot as f64 / (1 << 20) as f64,
        snapshot / ROUTES
    );
}
