//! Consumers as replicated objects through raftgatectl, on a real
//! single-node cluster: created from flags and from a file, read back,
//! refused whole when invalid, replaced with a revision check, deleted.

use std::time::Duration;

use raftgate_tests::{ctl, wait_for_leader, Cluster};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn consumers_are_created_read_replaced_and_deleted_through_raftgatectl() {
    let cluster = Cluster::start(1);
    let ep = cluster.nodes[0].addrs.admin.clone();
    assert!(wait_for_leader(std::slice::from_ref(&ep), Duration::from_secs(30)).await.is_some(), "no leader");

    let (ok, out, err) = ctl(&[
        "--endpoint",
        &ep,
        "consumer",
        "apply",
        "--id",
        "acme",
        "--name",
        "ACME Corp",
        "--group",
        "partners",
        "--plan",
        "gold",
        "--meta",
        "crm.id=42",
    ]);
    assert!(ok && out.contains("consumer acme: applied"), "{out}{err}");
    let file = cluster.dir.path().join("consumers.yaml");
    std::fs::write(&file, "- id: beta\n  groups: [internal]\n- id: gamma\n  enabled: false\n").unwrap();
    let (ok, out, err) = ctl(&["--endpoint", &ep, "consumer", "apply", "-f", file.to_str().unwrap()]);
    assert!(ok && out.contains("consumer beta: applied") && out.contains("consumer gamma: applied"), "{out}{err}");

    let (ok, out, _) = ctl(&["--endpoint", &ep, "--output", "json", "consumer", "get", "acme"]);
    assert!(ok);
    let v: serde_json::Value = serde_json::from_str(&out).unwrap();
    assert_eq!(v["spec"]["groups"][0], "partners");
    assert_eq!(v["spec"]["metadata"]["crm.id"], "42");
    let revision = v["revision"].as_u64().unwrap().to_string();

    // Invalid input is refused whole, naming the field, and changes nothing.
    let (ok, _, err) = ctl(&["--endpoint", &ep, "consumer", "apply", "--id", "acme", "--group", "Bad Group"]);
    assert!(!ok && err.contains("invalid request"), "{err}");
    let (ok, _, err) = ctl(&["--endpoint", &ep, "consumer", "apply", "--id", "acme", "--meta", "k=line\u{7}"]);
    assert!(!ok && err.contains("metadata.k"), "{err}");
    // A stale revision is refused; the current one is accepted.
    let (ok, _, err) =
        ctl(&["--endpoint", &ep, "consumer", "apply", "--id", "acme", "--disabled", "--expected-revision", "999"]);
    assert!(!ok && err.contains("revision"), "{err}");
    let (ok, _, err) =
        ctl(&["--endpoint", &ep, "consumer", "apply", "--id", "acme", "--disabled", "--expected-revision", &revision]);
    assert!(ok, "{err}");

    let (ok, out, _) = ctl(&["--endpoint", &ep, "--output", "json", "consumer", "list"]);
    assert!(ok);
    let list: serde_json::Value = serde_json::from_str(&out).unwrap();
    let ids: Vec<&str> = list["objects"].as_array().unwrap().iter().map(|o| o["id"].as_str().unwrap()).collect();
    assert_eq!(ids, ["acme", "beta", "gamma"]);
    assert_eq!(list["objects"][0]["spec"]["enabled"], false);

    let (ok, _, err) = ctl(&["--endpoint", &ep, "consumer", "delete", "beta"]);
    assert!(ok, "{err}");
    let (ok, _, err) = ctl(&["--endpoint", &ep, "consumer", "get", "beta"]);
    assert!(!ok && err.contains("not found"), "{err}");
}
