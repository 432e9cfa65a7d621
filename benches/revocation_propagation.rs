//! Revocation propagation on a local 3-node cluster of real `raftgate`
//! processes: for each of 100 API keys, probes on every node's data plane
//! send the key every millisecond while the key is revoked through the
//! admin API of one node (a follower); the time from the revoke call to
//! each node's first 401 is recorded. Prints p50 / p99 / max of the time to
//! the last node, and of the revoke call's own latency (commit) as the
//! baseline of the same run.
//!
//! Run with `benches/run.sh` (it builds the release binaries first), alone.

use std::time::{Duration, Instant};

use http_body_util::{BodyExt, Empty};
use hyper_util::client::legacy::Client;
use hyper_util::rt::TokioExecutor;
use raftgate_proto::admin as pb;
use raftgate_tests::{admin, eventually, wait_for_leader, Cluster};

const REVOCATIONS: usize = 100;
const PROBE_EVERY: Duration = Duration::from_millis(1);
const PROBE_LIMIT: Duration = Duration::from_secs(10);

type Probe = Client<hyper_util::client::legacy::connect::HttpConnector, Empty<bytes::Bytes>>;

async fn status(client: &Probe, http: &str, key: &str) -> Option<u16> {
    let req = http::Request::get(format!("http://{http}/keyed")).header("x-api-key", key).body(Empty::new()).ok()?;
    let resp = client.request(req).await.ok()?;
    let code = resp.status().as_u16();
    let _ = resp.into_body().collect().await;
    Some(code)
}

/// Time from `started` until `http` first refuses `key`.
async fn until_refused(http: String, key: String, started: Instant) -> Duration {
    let client: Probe = Client::builder(TokioExecutor::new()).build_http();
    loop {
        if status(&client, &http, &key).await == Some(401) {
            return started.elapsed();
        }
        assert!(started.elapsed() < PROBE_LIMIT, "{http} kept accepting a revoked key");
        tokio::time::sleep(PROBE_EVERY).await;
    }
}

fn percentile(sorted: &[Duration], p: f64) -> Duration {
    sorted[((sorted.len() as f64 - 1.0) * p).round() as usize]
}

fn ms(d: Duration) -> f64 {
    d.as_secs_f64() * 1e3
}

#[tokio::main(flavor = "multi_thread", worker_threads = 2)]
async fn main() {
    let cluster = Cluster::start(3);
    let admins: Vec<String> = cluster.nodes.iter().map(|n| n.addrs.admin.clone()).collect();
    let https: Vec<String> = cluster.nodes.iter().map(|n| n.addrs.http.clone()).collect();
    let leader = wait_for_leader(&admins, Duration::from_secs(30)).await.expect("leader");
    let follower = (1..=3u64).find(|id| *id != leader).expect("a follower");
    let mut c = admin(&admins[(follower - 1) as usize]).await;
    let (up_addr, _up) = raftgate_tests::start_upstream("bench").await;
    let apply =
        |spec: serde_json::Value| pb::ApplyObjectRequest { spec_json: spec.to_string(), expected_revision: None };
    c.apply_upstream(apply(serde_json::json!({"id": "u", "targets": [{"addr": up_addr}]}))).await.expect("upstream");
    c.apply_consumer(apply(serde_json::json!({"id": "acme"}))).await.expect("consumer");
    c.apply_route(apply(
        serde_json::json!({"id": "keyed", "upstream": "u", "paths": [{"prefix": "/keyed"}], "auth": {"api_key": {}}}),
    ))
    .await
    .expect("route");

    let mut last_node = Vec::new();
    let mut commit = Vec::new();
    for i in 0..REVOCATIONS {
        // A key per round; the consumer holds at most 16, so delete the old ones.
        let req = pb::CreateApiKeyRequest { consumer: "acme".into(), ..Default::default() };
        let key = c.create_api_key(req).await.expect("key").into_inner();
        for http in &https {
            let accepted = eventually(Duration::from_secs(10), || async {
                let client: Probe = Client::builder(TokioExecutor::new()).build_http();
                (status(&client, http, &key.key).await == Some(200)).then_some(())
            })
            .await;
            assert!(accepted.is_some(), "{http} never accepted key {i}");
        }
        let started = Instant::now();
        let probes: Vec<_> =
            https.iter().map(|h| tokio::spawn(until_refused(h.clone(), key.key.clone(), started))).collect();
        let target = serde_json::json!({"kind": "api_key", "id": key.id}).to_string();
        c.revoke(pb::RevokeRequest { target_json: target, until_ms: None, reason: String::new() })
            .await
            .expect("revoke");
        commit.push(started.elapsed());
        let mut slowest = Duration::ZERO;
        for p in probes {
            slowest = slowest.max(p.await.expect("probe"));
        }
        last_node.push(slowest);
        c.delete_api_key(pb::DeleteObjectRequest { id: key.id.clone(), expected_revision: None })
            .await
            .expect("delete");
    }
    last_node.sort();
    commit.sort();
    println!(
        "revocation propagation, {REVOCATIONS} API keys revoked through a follower of 3 local nodes (probes every {} ms):",
        PROBE_EVERY.as_millis()
    );
    println!(
        "  revoke call (commit, baseline): p50 {:.2} ms, p99 {:.2} ms, max {:.2} ms",
        ms(percentile(&commit, 0.5)),
        ms(percentile(&commit, 0.99)),
        ms(commit[commit.len() - 1])
    );
    println!(
        "  revoke call to the last node refusing: p50 {:.2} ms, p99 {:.2} ms, max {:.2} ms",
        ms(percentile(&last_node, 0.5)),
        ms(percentile(&last_node, 0.99)),
        ms(last_node[last_node.len() - 1])
    );
    drop(cluster);
}
