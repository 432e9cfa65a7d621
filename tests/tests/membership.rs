//! Membership through raftgatectl: grow a single-node cluster by a learner,
//! promote it, remove it; refuse what would break the cluster.

use std::time::Duration;

use raftgate_tests::{applied_index, ctl, eventually, get_local, put, wait_for_leader, NodeAddrs, NodeProcess};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_learner_joins_is_promoted_and_removed_and_bad_changes_are_refused() {
    let dir = tempfile::tempdir().unwrap();
    let a1 = NodeAddrs::new(1);
    let a2 = NodeAddrs::new(2);
    let mut n1 = NodeProcess::configure(dir.path(), a1.clone(), std::slice::from_ref(&a1), "");
    let mut n2 = NodeProcess::configure(dir.path(), a2.clone(), &[], "");
    n1.start();
    n2.start();
    let ep = a1.admin.clone();
    assert_eq!(wait_for_leader(std::slice::from_ref(&ep), Duration::from_secs(30)).await, Some(1), "{}", n1.log());

    put(&ep, "seed", "1").await.expect("write on a single-node cluster");

    // The last voter cannot be removed.
    let (ok, _, err) = ctl(&["--endpoint", &ep, "cluster", "remove", "1"]);
    assert!(!ok && err.contains("last voter"), "{err}");

    let add = |id: &str, a: &NodeAddrs| ctl(&[&["--endpoint", &ep][..], &a.add_learner_args(id)].concat());
    let (ok, out, err) = add("2", &a2);
    assert!(ok, "add-learner: {err}");
    assert!(out.contains("learners [2]"), "{out}");

    // The learner receives the log.
    let last = put(&ep, "after.join", "x").await.unwrap().log_index;
    let caught_up =
        eventually(Duration::from_secs(10), || async { applied_index(&a2.admin).await.filter(|a| *a >= last) });
    assert!(caught_up.await.is_some(), "learner did not catch up: {}", n2.log());
    assert_eq!(get_local(&a2.admin, "seed").await.as_deref(), Some("1"));

    // Joining a node that is already a member is refused and changes nothing.
    let (ok, _, err) = add("2", &a2);
    assert!(!ok && err.contains("already a member"), "{err}");
    // A malformed address is refused with the field named.
    let mut bad = a2.clone();
    bad.raft = "nowhere".into();
    let (ok, _, err) = add("3", &bad);
    assert!(!ok && err.contains("raft_addr"), "{err}");

    // Promote, through the learner's own endpoint (forwarded to the leader).
    let (ok, out, err) = ctl(&["--endpoint", &a2.admin, "cluster", "promote", "2"]);
    assert!(ok, "promote: {err}");
    assert!(out.contains("voters [1,2]"), "{out}");
    let (ok, _, err) = ctl(&["--endpoint", &ep, "cluster", "promote", "2"]);
    assert!(!ok && err.contains("already a voter"), "{err}");

    // Remove node 2 again; the cluster keeps taking writes.
    let (ok, out, err) = ctl(&["--endpoint", &ep, "cluster", "remove", "2"]);
    assert!(ok, "remove: {err}");
    assert!(out.contains("voters [1]") && out.contains("learners []"), "{out}");
    put(&ep, "after.remove", "y").await.expect("write after removal");

    // Each accepted change is in the audit trail; the refused ones changed nothing and are not.
    let (ok, out, err) = ctl(&["--endpoint", &ep, "-o", "json", "audit", "list"]);
    assert!(ok, "{err}");
    let actions: Vec<String> = serde_json::from_str::<serde_json::Value>(&out).unwrap()["records"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|r| r["object"] == "node/2")
        .map(|r| r["action"].as_str().unwrap().to_string())
        .collect();
    assert_eq!(actions, ["add_learner", "promote", "remove_node"], "{out}");
    let (ok, _, err) = ctl(&["--endpoint", &ep, "cluster", "remove", "7"]);
    assert!(!ok && err.contains("not a member"), "{err}");
}
