//! Data-subject export and erasure, and audit pruning with export, on three
//! real processes: a consumer with two API keys, a revocation, quota use and
//! audit records is exported whole, then forgotten in one command; every node
//! refuses its keys, every node's audit chain still verifies and names only
//! the pseudonym; after a compaction and a restart of every node, no file in
//! any data dir holds the consumer id or its key ids. Then records are pruned
//! after an export the command verified, and the chain still verifies.

use std::path::Path;
use std::time::Duration;

use raftgate_tests::{
    ctl, ctl_ok, eventually, http_get_with, start_upstream, status_everywhere, wait_for_leader, Cluster,
};
use serde_json::Value;

const KEY_HASH_ENV: &str = "RAFTGATE_TEST_PRIVACY_SECRET";
/// Unusual enough that a match in a data file can only be this consumer.
const SUBJECT: &str = "zelda-subject-7731";

fn json(s: &str) -> Value {
    serde_json::from_str(s).unwrap_or_else(|e| panic!("not JSON ({e}): {s}"))
}

/// Files under `dir` (recursively) whose raw bytes contain `needle`.
fn files_containing(dir: &Path, needle: &str) -> Vec<String> {
    let mut found = Vec::new();
    let mut stack = vec![dir.to_path_buf()];
    while let Some(d) = stack.pop() {
        for entry in std::fs::read_dir(&d).unwrap() {
            let p = entry.unwrap().path();
            if p.is_dir() {
                stack.push(p);
            } else if std::fs::read(&p).unwrap().windows(needle.len()).any(|w| w == needle.as_bytes()) {
                found.push(p.display().to_string());
            }
        }
    }
    found
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_forgotten_consumer_is_gone_from_every_node_and_its_disk_and_the_audit_chain_still_verifies() {
    std::env::set_var(KEY_HASH_ENV, "a key-hash secret the three privacy test nodes share");
    let mut cluster = Cluster::start_with(3, &format!("\n[identity]\nkey_hash_secret = \"env:{KEY_HASH_ENV}\"\n"));
    let admins: Vec<String> = cluster.nodes.iter().map(|n| n.addrs.admin.clone()).collect();
    let https: Vec<String> = cluster.nodes.iter().map(|n| n.addrs.http.clone()).collect();
    if wait_for_leader(&admins, Duration::from_secs(30)).await.is_none() {
        cluster.dump_logs();
        panic!("no leader");
    }
    let (up_addr, _up) = start_upstream("orders").await;
    let ep = admins[1].clone();
    let run = |args: &[&str]| ctl_ok(&[&["--endpoint", ep.as_str()], args].concat());

    run(&["upstream", "apply", "--id", "orders", "--target", &up_addr]);
    run(&["consumer", "apply", "--id", SUBJECT, "--group", "partners"]);
    run(&["consumer", "apply", "--id", "bystander"]);
    let route = cluster.dir.path().join("route.yaml");
    std::fs::write(
        &route,
        format!(
            "id: orders\nupstream: orders\npaths: [{{prefix: /orders}}]\nauth: {{api_key: {{header: x-api-key}}, consumers: [{SUBJECT}, bystander]}}\nlimits: {{quotas: [{{name: hourly, key: [consumer], window: hour, limit: 1000}}]}}\n"
        ),
    )
    .unwrap();
    run(&["route", "apply", "-f", route.to_str().unwrap()]);
    let key = |_: ()| {
        let created = json(&run(&["--output", "json", "key", "create", "--consumer", SUBJECT, "--expires", "30d"]));
        (created["key"].as_str().unwrap().to_string(), created["id"].as_str().unwrap().to_string())
    };
    let ((key1, id1), (_key2, id2)) = (key(()), key(()));
    run(&["revoke", "key", &id2, "--reason", "rotated out"]);
    assert!(status_everywhere(&https, "/orders/1", &[("x-api-key", &key1)], 200).await, "every node admits key 1");
    let used = eventually(Duration::from_secs(10), || async {
        let (ok, out, _) = ctl(&["--endpoint", &ep, "--output", "json", "quota", "show", SUBJECT]);
        (ok && out.contains(SUBJECT)).then_some(out)
    })
    .await;
    assert!(used.is_some(), "the quota ledger holds the consumer's usage");

    // Export: everything, and never a key hash.
    let export_file = cluster.dir.path().join("subject.json");
    run(&["consumer", "export", SUBJECT, "--out", export_file.to_str().unwrap()]);
    let doc = json(&std::fs::read_to_string(&export_file).unwrap());
    assert_eq!(doc["object"]["spec"]["id"], SUBJECT);
    let keys: Vec<&str> = doc["api_keys"].as_array().unwrap().iter().map(|k| k["id"].as_str().unwrap()).collect();
    assert_eq!(keys.len(), 2, "{doc}");
    assert!(keys.contains(&id1.as_str()) && keys.contains(&id2.as_str()));
    assert!(doc["api_keys"][0].get("hash").is_none(), "key hashes are never exported");
    assert!(doc["revocations"].as_array().unwrap().iter().any(|r| r["key"] == format!("api_key:{id2}")), "{doc}");
    assert!(!doc["quota_entries"].as_array().unwrap().is_empty(), "{doc}");
    assert_eq!(doc["routes"][0]["id"], "orders");
    let actions: Vec<&str> =
        doc["audit_records"].as_array().unwrap().iter().map(|r| r["action"].as_str().unwrap()).collect();
    for a in ["put_consumer", "create_api_key", "revoke"] {
        assert!(actions.contains(&a), "the export holds the {a} record: {actions:?}");
    }

    // Forget: refused without --yes, then one command.
    let (ok, _, err) = ctl(&["--endpoint", &ep, "consumer", "forget", SUBJECT]);
    assert!(!ok && err.contains("--yes"), "{err}");
    let forgot = json(&run(&["--output", "json", "consumer", "forget", SUBJECT, "--yes"]));
    let pseudonym = forgot["pseudonym"].as_str().unwrap().to_string();
    assert!(pseudonym.starts_with("forgotten-"), "{forgot}");
    assert!(forgot["rewritten_audit_records"].as_u64().unwrap() >= 4, "{forgot}");

    assert!(status_everywhere(&https, "/orders/1", &[("x-api-key", &key1)], 401).await, "every node refuses key 1");
    run(&["audit", "verify", "--all-nodes"]);
    for admin in &admins {
        let (ok, out, err) = ctl(&["--endpoint", admin, "audit", "verify"]);
        assert!(ok, "node at {admin}: {out} {err}");
        let listed = ctl_ok(&["--endpoint", admin, "--output", "json", "audit", "list", "--local", "--limit", "1000"]);
        assert!(listed.contains(&pseudonym), "node at {admin} shows the pseudonym");
        for needle in [SUBJECT, &id1, &id2] {
            assert!(!listed.contains(needle), "node at {admin} still names {needle} in its trail");
        }
    }
    let (ok, out, err) = ctl(&["--endpoint", &ep, "consumer", "export", SUBJECT]);
    assert!(!ok && err.contains("not found"), "{out} {err}");
    let route_now = run(&["--output", "json", "route", "get", "orders"]);
    assert!(route_now.contains(&pseudonym) && route_now.contains("bystander") && !route_now.contains(SUBJECT));

    // Compact every node (snapshot, purge), restart all: nothing on disk names it.
    for admin in &admins {
        let out = json(&ctl_ok(&["--endpoint", admin, "--output", "json", "node", "compact"]));
        assert!(out["purged_index"].as_u64().unwrap() >= forgot["log_index"].as_u64().unwrap(), "{out}");
    }
    for node in &mut cluster.nodes {
        node.terminate();
    }
    for node in &mut cluster.nodes {
        node.start();
    }
    if wait_for_leader(&admins, Duration::from_secs(30)).await.is_none() {
        cluster.dump_logs();
        panic!("no leader after the restart");
    }
    for n in &cluster.nodes {
        let data_dir = cluster.dir.path().join(format!("node-{}", n.addrs.id));
        assert!(data_dir.join("raft").is_dir(), "{}", data_dir.display());
        assert!(!data_dir.join("rewrite-requested").exists(), "the rewrite ran at start");
        for needle in [SUBJECT, &id1, &id2] {
            let found = files_containing(&data_dir, needle);
            assert!(found.is_empty(), "node {}: {needle} is still on disk in {found:?}", n.addrs.id);
        }
    }
    // After the restart the key is unknown: refused with 401 on every node
    // once its view is current again (503 until then; a node restored from a
    // compacted snapshot replays nothing and must still regain its view).
    for http in &https {
        let got = eventually(Duration::from_secs(15), || async {
            http_get_with(http, "/orders/1", "api.test", &[("x-api-key", &key1)]).await.filter(|(s, _)| *s != 503)
        })
        .await;
        assert!(matches!(got, Some((401, _))), "{http}: {got:?}");
    }
    run(&["audit", "verify", "--all-nodes"]);

    // Retention: prune with export; the file verifies and the chain goes on.
    run(&["audit", "retention", "set", "--days", "90"]);
    let head = json(&run(&["--output", "json", "audit", "tail", "-n", "1"]));
    let head_seq = head["records"][0]["seq"].as_u64().unwrap();
    let through = head_seq - 2;
    let file = cluster.dir.path().join("audit-old.jsonl");
    let pruned = json(&run(&[
        "--output",
        "json",
        "audit",
        "prune",
        "--through-seq",
        &through.to_string(),
        "--export",
        file.to_str().unwrap(),
    ]));
    assert_eq!(pruned["pruned_through_seq"], through, "{pruned}");
    let lines: Vec<Value> = std::fs::read_to_string(&file).unwrap().lines().map(json).collect();
    assert_eq!(lines.last().unwrap()["seq"], through);
    assert_eq!(lines.len() as u64, pruned["records"].as_u64().unwrap());
    let (ok, _, err) =
        ctl(&["--endpoint", &ep, "audit", "prune", "--through-seq", "1", "--export", file.to_str().unwrap()]);
    assert!(!ok, "an existing export file is never overwritten, and pruned records cannot be pruned again: {err}");
    let rest = json(&run(&["--output", "json", "audit", "list", "--limit", "1000"]));
    let rest = rest["records"].as_array().unwrap();
    assert_eq!(rest[0]["seq"], through + 1, "{rest:?}");
    let last = rest.last().unwrap();
    assert_eq!(last["action"], "prune_audit");
    let sha = pruned["export_sha256"].as_str().unwrap();
    assert_eq!(last["after"], sha, "the prune's record names the export's digest");
    run(&["audit", "verify", "--all-nodes"]);
}
