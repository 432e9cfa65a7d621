//! Quotas under load on a local 3-node cluster of real `raftgate` processes:
//!
//! 1. Raft entries per second caused by quotas: as many requests per second
//!    as the machine gives (aiming at 10,000), spread over the three nodes,
//!    against a quota that never runs out; the applied index's growth over
//!    the run, against the same run's open-route baseline and the design's
//!    bound of (N + 1) / T_b entries per second.
//! 2. Utilisation: a quota of 5,000 per hour with load 80/10/10 and demand
//!    far above the limit: admitted / limit.
//! 3. Ramp: all traffic moves from one node to another that held nothing;
//!    the time until the new node admits at its full rate again.
//!
//! Run with `cargo bench -p raftgate-benches --bench quota_load` after
//! `cargo build --release --bins`, alone.

use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use http_body_util::{BodyExt, Empty};
use hyper_util::client::legacy::Client;
use hyper_util::rt::TokioExecutor;
use raftgate_proto::admin as pb;
use raftgate_tests::{admin, applied_index, wait_for_leader, Cluster};

const RUN: Duration = Duration::from_secs(10);
const CLIENTS_PER_NODE: usize = 16;
const NODES: u64 = 3;
const BATCH_MS: u64 = 50;

type Http = Client<hyper_util::client::legacy::connect::HttpConnector, Empty<bytes::Bytes>>;

async fn status(client: &Http, http: &str, path: &str) -> Option<u16> {
    let req = http::Request::get(format!("http://{http}{path}")).body(Empty::new()).ok()?;
    let resp = client.request(req).await.ok()?;
    let code = resp.status().as_u16();
    let _ = resp.into_body().collect().await;
    Some(code)
}

/// `clients` loops against `http` until `stop`; counts (admitted, refused).
fn drive(
    http: String,
    path: &'static str,
    clients: usize,
    stop: Arc<AtomicBool>,
    ok: Arc<AtomicU64>,
    refused: Arc<AtomicU64>,
) -> Vec<tokio::task::JoinHandle<()>> {
    (0..clients)
        .map(|_| {
            let (http, stop, ok, refused) = (http.clone(), stop.clone(), ok.clone(), refused.clone());
            tokio::spawn(async move {
                let client: Http = Client::builder(TokioExecutor::new()).build_http();
                while !stop.load(Ordering::Relaxed) {
                    match status(&client, &http, path).await {
                        Some(200) => ok.fetch_add(1, Ordering::Relaxed),
                        Some(_) => refused.fetch_add(1, Ordering::Relaxed),
                        None => 0,
                    };
                }
            })
        })
        .collect()
}

/// Load on every node (`weights` clients each) for `RUN`: (requests/s, entries/s, admitted).
async fn entries_per_second(https: &[String], admin_addr: &str, path: &'static str) -> (f64, f64, u64) {
    let stop = Arc::new(AtomicBool::new(false));
    let (ok, refused) = (Arc::new(AtomicU64::new(0)), Arc::new(AtomicU64::new(0)));
    let before = applied_index(admin_addr).await.expect("applied index");
    let started = Instant::now();
    let mut tasks = Vec::new();
    for h in https {
        tasks.extend(drive(h.clone(), path, CLIENTS_PER_NODE, stop.clone(), ok.clone(), refused.clone()));
    }
    tokio::time::sleep(RUN).await;
    stop.store(true, Ordering::Relaxed);
    for t in tasks {
        let _ = t.await;
    }
    let secs = started.elapsed().as_secs_f64();
    let after = applied_index(admin_addr).await.expect("applied index");
    let requests = ok.load(Ordering::Relaxed) + refused.load(Ordering::Relaxed);
    (requests as f64 / secs, (after - before) as f64 / secs, ok.load(Ordering::Relaxed))
}

#[tokio::main(flavor = "multi_thread", worker_threads = 2)]
async fn main() {
    let cluster = Cluster::start(NODES);
    let admins: Vec<String> = cluster.nodes.iter().map(|n| n.addrs.admin.clone()).collect();
    let https: Vec<String> = cluster.nodes.iter().map(|n| n.addrs.http.clone()).collect();
    wait_for_leader(&admins, Duration::from_secs(30)).await.expect("leader");
    let mut c = admin(&admins[0]).await;
    let (up, _task) = raftgate_tests::start_upstream("bench").await;
    let apply =
        |spec: serde_json::Value| pb::ApplyObjectRequest { spec_json: spec.to_string(), expected_revision: None };
    c.apply_upstream(apply(serde_json::json!({"id": "u", "targets": [{"addr": up}]}))).await.expect("upstream");
    let quota = |name: &str, limit: u64| serde_json::json!({"quotas": [{"name": name, "key": ["route"], "window": "hour", "limit": limit}]});
    for (id, limits) in [
        ("open", serde_json::json!({})),
        ("big", quota("big", 1_000_000_000)),
        ("skew", quota("skew", 5_000)),
        ("ramp", quota("ramp", 1_000_000_000)),
    ] {
        let route =
            serde_json::json!({"id": id, "upstream": "u", "paths": [{"prefix": format!("/{id}")}], "limits": limits});
        c.apply_route(apply(route)).await.expect("route");
    }
    tokio::time::sleep(Duration::from_secs(1)).await;

    let (open_rps, open_eps, _) = entries_per_second(&https, &admins[0], "/open").await;
    let (rps, eps, _) = entries_per_second(&https, &admins[0], "/big").await;
    let bound = (NODES + 1) as f64 * 1_000.0 / BATCH_MS as f64;
    println!("raft entries per second, {NODES} nodes, {CLIENTS_PER_NODE} clients per node, {} s:", RUN.as_secs());
    println!("  open route (baseline): {open_rps:.0} requests/s, {open_eps:.1} entries/s");
    println!(
        "  quota route: {rps:.0} requests/s, {eps:.1} entries/s (bound (N + 1) / T_b = {bound:.0}/s; {:.3} entries per request)",
        eps / rps.max(1.0)
    );

    // Utilisation under 80/10/10 with demand far above a limit of 5,000.
    let stop = Arc::new(AtomicBool::new(false));
    let (ok, refused) = (Arc::new(AtomicU64::new(0)), Arc::new(AtomicU64::new(0)));
    let mut tasks = Vec::new();
    for (h, clients) in https.iter().zip([8, 1, 1]) {
        tasks.extend(drive(h.clone(), "/skew", clients, stop.clone(), ok.clone(), refused.clone()));
    }
    let started = Instant::now();
    let mut last = 0;
    let mut quiet = Instant::now();
    while started.elapsed() < Duration::from_secs(30) && quiet.elapsed() < Duration::from_secs(2) {
        tokio::time::sleep(Duration::from_millis(100)).await;
        let now = ok.load(Ordering::Relaxed);
        if now != last {
            last = now;
            quiet = Instant::now();
        }
    }
    stop.store(true, Ordering::Relaxed);
    for t in tasks {
        let _ = t.await;
    }
    let admitted = ok.load(Ordering::Relaxed);
    println!(
        "utilisation, limit 5000, load 80/10/10: admitted {admitted} ({:.1}%), refused {}",
        admitted as f64 / 50.0,
        refused.load(Ordering::Relaxed)
    );

    // Ramp: node 1 takes all traffic, then node 3 does.
    let stop = Arc::new(AtomicBool::new(false));
    let (ok1, ref1) = (Arc::new(AtomicU64::new(0)), Arc::new(AtomicU64::new(0)));
    let first = drive(https[0].clone(), "/ramp", CLIENTS_PER_NODE, stop.clone(), ok1.clone(), ref1.clone());
    tokio::time::sleep(Duration::from_secs(3)).await;
    let steady = ok1.load(Ordering::Relaxed) as f64 / 3.0;
    stop.store(true, Ordering::Relaxed);
    for t in first {
        let _ = t.await;
    }
    let stop = Arc::new(AtomicBool::new(false));
    let (ok3, ref3) = (Arc::new(AtomicU64::new(0)), Arc::new(AtomicU64::new(0)));
    let switched = Instant::now();
    let second = drive(https[2].clone(), "/ramp", CLIENTS_PER_NODE, stop.clone(), ok3.clone(), ref3.clone());
    let mut full_rate_after = None;
    let (mut last_ok, mut last_ref) = (0, 0);
    while switched.elapsed() < Duration::from_secs(5) {
        tokio::time::sleep(Duration::from_millis(50)).await;
        let (o, r) = (ok3.load(Ordering::Relaxed), ref3.load(Ordering::Relaxed));
        let (d_ok, d_ref) = (o - last_ok, r - last_ref);
        (last_ok, last_ref) = (o, r);
        if full_rate_after.is_none() && d_ok > 0 && d_ref * 100 <= d_ok {
            full_rate_after = Some(switched.elapsed());
        }
    }
    stop.store(true, Ordering::Relaxed);
    for t in second {
        let _ = t.await;
    }
    println!(
        "ramp: node 1 steady at {steady:.0} admitted/s; all traffic moved to node 3, which admitted at full rate (under 1% refused per 50 ms) after {} ms; refused meanwhile: {}",
        full_rate_after.map_or("-".to_string(), |d| d.as_millis().to_string()),
        ref3.load(Ordering::Relaxed)
    );
    drop(cluster);
}
