//! Anomaly defence on real processes: a consumer whose request rate leaves
//! its learned baseline is revoked by the node that saw it, through the
//! normal revocation command (audited as that node), and every node then
//! refuses its key.

use std::time::Duration;

use raftgate_tests::{ctl_ok, eventually, http_get_with, start_upstream, wait_for_leader, Cluster};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_consumer_bursting_far_above_its_baseline_is_revoked_cluster_wide_and_audited() {
    let anomaly = "\n[abuse.anomaly]\naction = \"revoke\"\nwarmup_s = 3\nrate_factor = 3.0\nmin_rate_per_s = 5.0\nbaseline_half_life_s = 60\ncooldown_s = 60\n";
    let cluster = Cluster::start_with(3, anomaly);
    let admins: Vec<String> = cluster.nodes.iter().map(|n| n.addrs.admin.clone()).collect();
    let https: Vec<String> = cluster.nodes.iter().map(|n| n.addrs.http.clone()).collect();
    if wait_for_leader(&admins, Duration::from_secs(30)).await.is_none() {
        cluster.dump_logs();
        panic!("no leader");
    }
    let (up_addr, _up) = start_upstream("orders").await;
    let ep = ["--endpoint", admins[0].as_str()];
    let run = |args: &[&str]| ctl_ok(&[&ep[..], args].concat());
    run(&["upstream", "apply", "--id", "orders", "--target", &up_addr]);
    run(&["consumer", "apply", "--id", "scraper"]);
    let routes = cluster.dir.path().join("routes.yaml");
    std::fs::write(&routes, "id: keyed\nupstream: orders\npaths: [{prefix: /keyed}]\nauth: {api_key: {}}\n").unwrap();
    run(&["route", "apply", "-f", routes.to_str().unwrap()]);
    let created: serde_json::Value =
        serde_json::from_str(&run(&["--output", "json", "key", "create", "--consumer", "scraper"])).unwrap();
    let key = created["key"].as_str().unwrap().to_string();
    let with_key = [("x-api-key", key.as_str())];
    let ok = eventually(Duration::from_secs(10), || async {
        http_get_with(&https[0], "/keyed/1", "api.test", &with_key).await.filter(|(s, _)| *s == 200)
    })
    .await;
    assert!(ok.is_some(), "the key works");

    // A quiet baseline: one request a second through the warm-up.
    for _ in 0..6 {
        assert_eq!(http_get_with(&https[0], "/keyed/1", "api.test", &with_key).await.unwrap().0, 200);
        tokio::time::sleep(Duration::from_secs(1)).await;
    }
    // Then a burst, until the node that sees it revokes the consumer.
    let mut revoked = false;
    for _ in 0..400 {
        let (status, _) = http_get_with(&https[0], "/keyed/1", "api.test", &with_key).await.unwrap();
        if status == 401 {
            revoked = true;
            break;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    if !revoked {
        cluster.dump_logs();
    }
    assert!(revoked, "the burst was not stopped");
    for http in &https {
        let refused = eventually(Duration::from_secs(10), || async {
            http_get_with(http, "/keyed/1", "api.test", &with_key).await.filter(|(s, _)| *s == 401)
        })
        .await;
        assert!(refused.is_some(), "{http} still accepts the revoked consumer");
    }
    let revocations = run(&["--output", "json", "revocation", "list"]);
    assert!(revocations.contains("consumer:scraper") && revocations.contains("anomaly"), "{revocations}");
    let audit = run(&["--output", "json", "audit", "list"]);
    // (With `auth = "none"`, as here, the caller is `local`; with
    // authentication on it is the node's own identity, `node:<id>`.)
    assert!(audit.contains("\"rpc\": \"ReportAnomaly\"") && audit.contains("revocation/consumer:scraper"), "{audit}");
    assert!(revocations.contains("node 1"), "the reason names the node: {revocations}");
}
