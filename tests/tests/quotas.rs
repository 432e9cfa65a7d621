//! Cluster-wide quotas on three real processes: a quota of 1,000 per window
//! with load spread 80/10/10 over the nodes admits at most 1,000 and at
//! least 980 while demand exceeds the limit; with one node cut off midway
//! (SIGSTOP: it keeps the lease it holds, and spends it when it wakes) the
//! cluster still admits at most 1,000.

use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use http_body_util::{BodyExt, Empty};
use hyper_util::client::legacy::Client;
use hyper_util::rt::TokioExecutor;
use raftgate_tests::{ctl, start_upstream, wait_for_leader, Cluster};

const LIMIT: u64 = 1_000;
/// A load loop stops after this long without an admitted request.
const DRY_FOR: Duration = Duration::from_secs(2);
const MAX_RUN: Duration = Duration::from_secs(60);

type Http = Client<hyper_util::client::legacy::connect::HttpConnector, Empty<bytes::Bytes>>;

async fn status(client: &Http, http: &str) -> Option<u16> {
    let req = http::Request::get(format!("http://{http}/metered")).body(Empty::new()).ok()?;
    let resp = tokio::time::timeout(Duration::from_secs(5), client.request(req)).await.ok()?.ok()?;
    let code = resp.status().as_u16();
    let _ = resp.into_body().collect().await;
    Some(code)
}

/// Sends `weight` requests per round to `http` until no request has been
/// admitted for `DRY_FOR` (or `stop` is set); counts the admitted ones.
async fn load(http: String, weight: u32, admitted: Arc<AtomicU64>, stop: Arc<AtomicBool>) {
    let client: Http = Client::builder(TokioExecutor::new()).build_http();
    let started = Instant::now();
    let mut last_admit = Instant::now();
    while !stop.load(Ordering::SeqCst) && started.elapsed() < MAX_RUN && last_admit.elapsed() < DRY_FOR {
        for _ in 0..weight {
            if status(&client, &http).await == Some(200) {
                admitted.fetch_add(1, Ordering::SeqCst);
                last_admit = Instant::now();
            }
        }
        tokio::time::sleep(Duration::from_millis(2)).await;
    }
}

async fn setup() -> (Cluster, Vec<String>, u64, tokio::task::JoinHandle<()>) {
    let cluster = Cluster::start(3);
    let admins: Vec<String> = cluster.nodes.iter().map(|n| n.addrs.admin.clone()).collect();
    let https: Vec<String> = cluster.nodes.iter().map(|n| n.addrs.http.clone()).collect();
    let leader = wait_for_leader(&admins, Duration::from_secs(30)).await.expect("leader");
    let (up, task) = start_upstream("metered").await;
    let ep = admins[0].clone();
    let (ok, _, err) = ctl(&["--endpoint", &ep, "upstream", "apply", "--id", "u", "--target", &up]);
    assert!(ok, "{err}");
    let route = cluster.dir.path().join("route.yaml");
    std::fs::write(
        &route,
        format!("id: metered\nupstream: u\npaths: [{{prefix: /metered}}]\nlimits: {{quotas: [{{name: q, key: [route], window: hour, limit: {LIMIT}}}]}}\n"),
    )
    .unwrap();
    let (ok, _, err) = ctl(&["--endpoint", &ep, "route", "apply", "-f", route.to_str().unwrap()]);
    assert!(ok, "{err}");
    // Every node routes it (the first request of each node is refused: no lease yet).
    for http in &https {
        let client: Http = Client::builder(TokioExecutor::new()).build_http();
        let mut routed = false;
        for _ in 0..200 {
            if matches!(status(&client, http).await, Some(200) | Some(429)) {
                routed = true;
                break;
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        assert!(routed, "{http} never routed /metered");
    }
    (cluster, https, leader, task)
}

fn held_by_nodes(ep: &str) -> String {
    let (_, out, _) = ctl(&["--endpoint", ep, "quota", "show", "metered"]);
    out
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_quota_of_1000_admits_between_980_and_1000_under_skewed_load() {
    let (cluster, https, _, _up) = setup().await;
    let admitted = Arc::new(AtomicU64::new(0));
    let stop = Arc::new(AtomicBool::new(false));
    let loops: Vec<_> = https
        .iter()
        .zip([8, 1, 1])
        .map(|(h, w)| tokio::spawn(load(h.clone(), w, admitted.clone(), stop.clone())))
        .collect();
    for l in loops {
        l.await.unwrap();
    }
    let total = admitted.load(Ordering::SeqCst);
    let ledger = held_by_nodes(&cluster.nodes[0].addrs.admin);
    println!("admitted {total} of {LIMIT}\n{ledger}");
    assert!(total <= LIMIT, "admitted {total} > {LIMIT}\n{ledger}");
    assert!(total >= 980, "admitted only {total} of {LIMIT} while demand exceeded it\n{ledger}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_node_cut_off_midway_spends_only_what_it_holds() {
    let (mut cluster, https, leader, _up) = setup().await;
    let cut = (1..=3u64).find(|id| *id != leader).unwrap();
    let admitted = Arc::new(AtomicU64::new(0));
    let stop = Arc::new(AtomicBool::new(false));
    let loops: Vec<_> = https
        .iter()
        .zip([8, 1, 1])
        .map(|(h, w)| tokio::spawn(load(h.clone(), w, admitted.clone(), stop.clone())))
        .collect();
    // Midway, freeze a follower: the others cannot reach it and it cannot ask for more.
    while admitted.load(Ordering::SeqCst) < LIMIT / 3 {
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    let pid = cluster.node(cut).pid();
    assert!(std::process::Command::new("kill").args(["-STOP", &pid.to_string()]).status().unwrap().success());
    // The others run dry; the frozen node's loop is stuck in a request meanwhile.
    let others: Vec<String> =
        https.iter().enumerate().filter(|(i, _)| *i as u64 + 1 != cut).map(|(_, h)| h.clone()).collect();
    let more = Arc::new(AtomicU64::new(0));
    let extra: Vec<_> = others.iter().map(|h| tokio::spawn(load(h.clone(), 4, more.clone(), stop.clone()))).collect();
    for e in extra {
        e.await.unwrap();
    }
    // It wakes and spends what it held; nobody can admit more in this window.
    assert!(std::process::Command::new("kill").args(["-CONT", &pid.to_string()]).status().unwrap().success());
    for l in loops {
        l.await.unwrap();
    }
    let total = admitted.load(Ordering::SeqCst) + more.load(Ordering::SeqCst);
    let ledger = held_by_nodes(&cluster.nodes[0].addrs.admin);
    println!("admitted {total} of {LIMIT} with node {cut} cut off midway\n{ledger}");
    assert!(total <= LIMIT, "admitted {total} > {LIMIT} with node {cut} cut off\n{ledger}");
}
