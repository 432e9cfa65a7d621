//! What operators see and load balancers probe, on real processes:
//! Prometheus metrics, /healthz and /readyz (which fails once a node is cut
//! off from its quorum), JSON access lines with secrets redacted and client
//! addresses truncated, and a cache purge that reaches every node.

use std::time::Duration;

use raftgate_tests::{ctl, eventually, http_get_raw, start_upstream, wait_for_leader, Cluster};

fn header<'a>(response: &'a str, name: &str) -> Option<&'a str> {
    let head = response.split("\r\n\r\n").next()?;
    head.lines().find_map(|l| {
        let (k, v) = l.split_once(':')?;
        k.trim().eq_ignore_ascii_case(name).then(|| v.trim())
    })
}

fn status(response: &str) -> u16 {
    response.get(9..12).and_then(|s| s.parse().ok()).unwrap_or(0)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn metrics_probes_access_logs_and_cache_purges_work_on_every_node() {
    // A GeoIP database that is not there: the node starts anyway and says why.
    let extra =
        "\n[access_log]\nclient_ip = \"truncate\"\n[edge]\ngeoip_database = \"does-not-exist/GeoLite2-Country.mmdb\"\n";
    let mut cluster = Cluster::start_with(3, extra);
    let admins: Vec<String> = cluster.nodes.iter().map(|n| n.addrs.admin.clone()).collect();
    let https: Vec<String> = cluster.nodes.iter().map(|n| n.addrs.http.clone()).collect();
    let metrics: Vec<String> = cluster.nodes.iter().map(|n| n.addrs.metrics.clone()).collect();
    let Some(leader) = wait_for_leader(&admins, Duration::from_secs(30)).await else {
        cluster.dump_logs();
        panic!("no leader");
    };
    let (up_addr, _up) = start_upstream("catalog").await;
    let file = cluster.dir.path().join("catalog.yaml");
    std::fs::write(
        &file,
        format!(
            "upstreams:\n  - id: catalog\n    targets:\n      - addr: \"{up_addr}\"\nroutes:\n  - id: products\n    upstream: catalog\n    paths:\n      - prefix: /products\n    cache:\n      ttl_s: 300\n"
        ),
    )
    .unwrap();
    let (ok, _, err) = ctl(&["--endpoint", &admins[0], "apply", "-f", file.to_str().unwrap()]);
    assert!(ok, "{err}");

    // Every node caches on its own: MISS, then HIT.
    for http in &https {
        let first = eventually(Duration::from_secs(10), || async {
            http_get_raw(http, "/products/1?api_key=hunter2", &[]).await.filter(|r| status(r) == 200)
        })
        .await
        .unwrap_or_else(|| panic!("{http} never served the route"));
        assert_eq!(header(&first, "x-cache-status"), Some("MISS"), "{first}");
        let second = http_get_raw(http, "/products/1?api_key=hunter2", &[]).await.unwrap();
        assert_eq!(header(&second, "x-cache-status"), Some("HIT"), "{second}");
    }

    // One purge, through any node, empties every node's cache.
    let (ok, _, err) = ctl(&["--endpoint", &admins[2], "cache", "purge", "--route", "products"]);
    assert!(ok, "{err}");
    for http in &https {
        let purged = eventually(Duration::from_secs(10), || async {
            let r = http_get_raw(http, "/products/1?api_key=hunter2", &[]).await?;
            (header(&r, "x-cache-status") == Some("MISS")).then_some(())
        })
        .await;
        assert!(purged.is_some(), "{http} still serves the purged entry");
    }
    let (ok, _, err) = ctl(&["--endpoint", &admins[0], "cache", "purge", "--route", "nope"]);
    assert!(!ok);
    assert!(err.contains("not found"), "{err}");

    // Prometheus text on the metrics listener, in base units.
    let text = http_get_raw(&metrics[0], "/metrics", &[]).await.expect("metrics answer");
    assert_eq!(status(&text), 200);
    assert!(header(&text, "content-type").unwrap().starts_with("application/openmetrics-text"));
    let requests = text
        .lines()
        .find(|l| l.starts_with("raftgate_http_requests_total{route=\"products\",method=\"GET\",status_class=\"2xx\"}"))
        .unwrap_or_else(|| panic!("no request counter in:\n{text}"));
    assert!(requests.rsplit(' ').next().unwrap().parse::<u64>().unwrap() >= 3, "{requests}");
    for name in [
        "raftgate_http_request_duration_seconds_bucket{le=\"0.005\",route=\"products\"}",
        "raftgate_upstream_target_healthy{upstream=\"catalog\"",
        "raftgate_raft_term ",
        "raftgate_raft_applied_index ",
        "raftgate_raft_members{kind=\"voter\"} 3",
        "raftgate_view_age_seconds ",
    ] {
        assert!(text.contains(name), "{name} missing from:\n{text}");
    }
    let leader_text = http_get_raw(&metrics[(leader - 1) as usize], "/metrics", &[]).await.unwrap();
    assert_eq!(leader_text.matches("raftgate_raft_follower_lag_entries{follower=").count(), 2, "{leader_text}");

    // Access lines: JSON, the API key redacted, the address truncated.
    let log = std::fs::read_to_string(&cluster.nodes[0].log_path).unwrap();
    let line = log
        .lines()
        .rfind(|l| l.starts_with('{') && l.contains("\"route\":\"products\""))
        .unwrap_or_else(|| panic!("no access line in:\n{log}"));
    let v: serde_json::Value = serde_json::from_str(line).unwrap();
    assert_eq!(v["query"], "api_key=REDACTED");
    assert_eq!(v["client_ip"], "127.0.0.0");
    assert_eq!(v["status"], 200);
    assert_eq!(v["upstream"], "catalog");
    assert!(v["trace_id"].as_str().is_some_and(|t| t.len() == 32));
    assert!(!log.contains("hunter2"), "the key never reaches a log");
    assert!(log.contains("GeoIP database not loaded"), "a missing GeoIP database is reported at start");

    // Probes: ready while connected; a node cut off from its quorum stops being ready.
    for m in &metrics {
        let ready = eventually(Duration::from_secs(10), || async {
            http_get_raw(m, "/readyz", &[]).await.filter(|r| status(r) == 200)
        })
        .await;
        assert!(ready.is_some(), "{m} never ready");
    }
    let survivor = (1..=3).find(|id| *id != leader).unwrap();
    for id in (1..=3).filter(|id| *id != survivor) {
        cluster.node(id).kill();
    }
    let m = &metrics[(survivor - 1) as usize];
    let unready = eventually(Duration::from_secs(15), || async {
        http_get_raw(m, "/readyz", &[]).await.filter(|r| status(r) == 503)
    })
    .await
    .expect("an isolated node stops being ready");
    assert!(unready.contains("stale_view"), "{unready}");
    let health = http_get_raw(m, "/healthz", &[]).await.unwrap();
    assert_eq!(status(&health), 200, "still alive");
}
