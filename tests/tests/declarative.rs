//! `raftgatectl apply -f | diff -f | dump` on 3 nodes: one atomic write per
//! apply, through a follower; dump → apply → dump gives the same bytes; a
//! bad object refuses the whole file; --prune deletes only listed kinds.

use std::time::Duration;

use raftgate_tests::{ctl, wait_for_leader, Cluster};

const GATEWAY: &str = r#"
upstreams:
  - id: u1
    targets: [{ addr: "127.0.0.1:9001" }]
  - id: u2
    targets: [{ addr: "127.0.0.1:9002" }]
plans:
  - id: gold
routes:
  - id: r1
    upstream: u1
    paths: [{ prefix: /a }]
  - id: r2
    upstream: u2
    paths: [{ prefix: /b }]
"#;

fn run(ep: &str, args: &[&str]) -> (bool, String, String) {
    let mut all = vec!["--endpoint", ep, "--config", "/dev/null"];
    all.extend_from_slice(args);
    ctl(&all)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn apply_diff_dump_round_trip_atomically() {
    let cluster = Cluster::start(3);
    let eps: Vec<String> = cluster.nodes.iter().map(|n| n.addrs.admin.clone()).collect();
    let leader = wait_for_leader(&eps, Duration::from_secs(30)).await.expect("a leader");
    let ep = cluster.nodes.iter().find(|n| n.addrs.id != leader).unwrap().addrs.admin.clone();
    let dir = tempfile::tempdir().unwrap();
    let file = |name: &str, text: &str| {
        let p = dir.path().join(name);
        std::fs::write(&p, text).unwrap();
        p.display().to_string()
    };
    let gateway = file("gateway.yaml", GATEWAY);

    let (ok, out, err) = run(&ep, &["diff", "-f", &gateway]);
    assert!(ok, "{err}");
    assert!(out.contains("+ route r1 (create)") && out.contains("5 changes (dry run"), "{out}");
    let (_, routes, _) = run(&ep, &["-o", "json", "route", "list"]);
    assert!(!routes.contains("r1"), "a diff writes nothing");

    let (ok, out, err) = run(&ep, &["-o", "json", "apply", "-f", &gateway]);
    assert!(ok, "{err}");
    let reply: serde_json::Value = serde_json::from_str(&out).unwrap();
    assert_eq!(reply["applied"], true);
    assert_eq!(reply["changes"].as_array().unwrap().len(), 5);
    let index = reply["log_index"].as_u64().unwrap();

    // Every object came in one entry: one audit record each, all at that write.
    let (ok, out, err) = run(&ep, &["-o", "json", "audit", "list"]);
    assert!(ok, "{err}");
    let records: serde_json::Value = serde_json::from_str(&out).unwrap();
    let batch: Vec<_> = records["records"].as_array().unwrap().iter().filter(|r| r["rpc"] == "ApplyConfig").collect();
    assert_eq!(batch.len(), 5, "{out}");

    let (ok, first, err) = run(&ep, &["dump"]);
    assert!(ok, "{err}");
    let dumped = file("dump.yaml", &first);
    let (ok, out, err) = run(&ep, &["apply", "-f", &dumped, "--prune"]);
    assert!(ok, "{err}");
    assert!(out.contains("no changes"), "the dump is what is there: {out}");
    let (ok, second, _) = run(&ep, &["dump"]);
    assert!(ok);
    assert_eq!(first, second, "dump → apply → dump is byte-identical");
    assert!(first.contains("id: r2") && first.contains("id: gold"), "{first}");

    // One bad object refuses the file whole, and names it.
    let bad = file(
        "bad.yaml",
        "upstreams:\n  - id: u3\n    targets: [{ addr: \"127.0.0.1:9003\" }]\nroutes:\n  - id: r3\n    upstream: missing\n    paths: [{ prefix: /c }]\n",
    );
    let (ok, _, err) = run(&ep, &["apply", "-f", &bad]);
    assert!(!ok && err.contains("put_route") && err.contains("missing"), "{err}");
    let (_, now, _) = run(&ep, &["dump"]);
    assert_eq!(now, first, "nothing of a refused file is written");
    let typo = file("typo.yaml", "routs: []\n");
    let (ok, _, err) = run(&ep, &["apply", "-f", &typo]);
    assert!(!ok && err.contains("unknown field `routs`"), "{err}");
    let dup = file("dup.yaml", "plans:\n  - id: p\n  - id: p\n");
    let (ok, _, err) = run(&ep, &["apply", "-f", &dup]);
    assert!(!ok && err.contains("listed twice"), "{err}");

    // Prune deletes what the listed kinds do not name; plans are not listed, so kept.
    let smaller = file(
        "smaller.yaml",
        "upstreams:\n  - id: u1\n    targets: [{ addr: \"127.0.0.1:9001\" }]\nroutes:\n  - id: r1\n    upstream: u1\n    paths: [{ prefix: /a }]\n",
    );
    let (ok, out, err) = run(&ep, &["apply", "-f", &smaller, "--prune"]);
    assert!(ok, "{err}");
    assert!(out.contains("- route r2 (delete)") && out.contains("- upstream u2 (delete)"), "{out}");
    let (_, after, _) = run(&ep, &["dump"]);
    assert!(!after.contains("id: r2") && !after.contains("id: u2") && after.contains("id: gold"), "{after}");
    assert!(index > 0);
}
