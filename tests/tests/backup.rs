//! Backup, restore and disaster recovery with real processes: a snapshot
//! saved through a follower restores into a fresh cluster that serves the
//! same routes, keys, revocations and audit trail; bad files and bad
//! restores are refused with a clear message and change nothing; after
//! losing two of three voters for good, the survivor re-forms a cluster
//! with every acknowledged write.

use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::{Duration, Instant};

use raftgate_proto::admin as pb;
use raftgate_tests::{
    admin, binary, ctl, ctl_ok, eventually, get_local, http_get_with, leader_of, put, start_upstream, wait_for_leader,
    Cluster, NodeAddrs, NodeProcess,
};

const KEY_HASH_ENV: &str = "RAFTGATE_TEST_BACKUP_KEY_HASH";

fn identity_toml() -> String {
    std::env::set_var(KEY_HASH_ENV, "the key-hash secret of the backup tests, shared by old and new nodes");
    format!("\n[identity]\nkey_hash_secret = \"env:{KEY_HASH_ENV}\"\n")
}

/// Runs `raftgate` with `args`; returns (exit code, stdout, stderr).
fn raftgate(args: &[&str]) -> (i32, String, String) {
    let out = Command::new(binary("raftgate")).args(args).output().expect("run raftgate");
    (
        out.status.code().unwrap_or(-1),
        String::from_utf8_lossy(&out.stdout).into_owned(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

fn data_dir(n: &NodeProcess) -> PathBuf {
    n.config_path.parent().unwrap().join(format!("node-{}", n.addrs.id))
}

/// Names (recursively) and sizes of what `dir` holds; empty if it does not exist.
fn listing(dir: &Path) -> Vec<(String, u64)> {
    let mut out = Vec::new();
    let Ok(entries) = std::fs::read_dir(dir) else { return out };
    for e in entries.flatten() {
        let p = e.path();
        if p.is_dir() {
            out.extend(listing(&p));
        } else {
            out.push((p.display().to_string(), e.metadata().map(|m| m.len()).unwrap_or(0)));
        }
    }
    out.sort();
    out
}

async fn status_of(addr: &str, path: &str, key: Option<&str>) -> Option<u16> {
    let headers: Vec<(&str, &str)> = key.map(|k| vec![("x-api-key", k)]).unwrap_or_default();
    http_get_with(addr, path, "api.test", &headers).await.map(|(s, _)| s)
}

async fn eventually_status(addr: &str, path: &str, key: Option<&str>, want: u16) -> bool {
    eventually(Duration::from_secs(15), || async { (status_of(addr, path, key).await == Some(want)).then_some(()) })
        .await
        .is_some()
}

/// Adds `n` (running, empty data dir) as a learner through `ep`, then promotes it.
fn join(ep: &str, a: &NodeAddrs) {
    let id = a.id.to_string();
    ctl_ok(&[&["--endpoint", ep][..], &a.add_learner_args(&id)].concat());
    ctl_ok(&["--endpoint", ep, "cluster", "promote", &id]);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_snapshot_saved_through_a_follower_restores_into_a_fresh_cluster_that_serves_it() {
    let extra = identity_toml();
    let mut cluster = Cluster::start_with(3, &extra);
    let admins: Vec<String> = cluster.nodes.iter().map(|n| n.addrs.admin.clone()).collect();
    let leader = wait_for_leader(&admins, Duration::from_secs(30)).await.expect("no leader");
    let follower = cluster.nodes.iter().find(|n| n.addrs.id != leader).unwrap().addrs.clone();
    let ep = follower.admin.clone();
    let (up_addr, _up) = start_upstream("orders").await;

    ctl_ok(&["--endpoint", &ep, "upstream", "apply", "--id", "orders", "--target", &up_addr]);
    ctl_ok(&["--endpoint", &ep, "consumer", "apply", "--id", "acme", "--group", "partners"]);
    let routes = cluster.dir.path().join("routes.yaml");
    std::fs::write(
        &routes,
        "id: keyed\nupstream: orders\npaths: [{prefix: /keyed}]\nauth: {api_key: {}, groups: [partners]}\n---\nid: open\nupstream: orders\npaths: [{prefix: /open}]\n",
    )
    .unwrap();
    ctl_ok(&["--endpoint", &ep, "route", "apply", "-f", routes.to_str().unwrap()]);
    let create = || -> (String, String) {
        let v: serde_json::Value =
            serde_json::from_str(&ctl_ok(&["--endpoint", &ep, "-o", "json", "key", "create", "--consumer", "acme"]))
                .unwrap();
        (v["key"].as_str().unwrap().to_string(), v["id"].as_str().unwrap().to_string())
    };
    let (good_key, _) = create();
    let (revoked_key, revoked_id) = create();
    ctl_ok(&["--endpoint", &ep, "revoke", "key", &revoked_id, "--reason", "leaked"]);
    ctl_ok(&["--endpoint", &ep, "setting", "put", "backup.marker", "before"]);
    let http = cluster.nodes[0].addrs.http.clone();
    assert!(eventually_status(&http, "/keyed/1", Some(&good_key), 200).await, "the old cluster serves the key");

    // Saved through a follower, which relays the leader's stream.
    let file = cluster.dir.path().join("cluster.rgsnap");
    let file_s = file.to_str().unwrap();
    let out = ctl_ok(&["--endpoint", &ep, "snapshot", "save", file_s]);
    assert!(out.contains("saved") && out.contains(&format!("by node {leader}")), "{out}");
    assert!(!file.with_extension("rgsnap.partial").exists());
    let bytes = std::fs::read(&file).unwrap();
    let text = String::from_utf8_lossy(&bytes);
    assert!(!text.contains(&good_key) && !text.contains(&revoked_key), "the file holds hashes, never API keys");
    let inspected = ctl_ok(&["snapshot", "inspect", file_s]);
    assert!(inspected.contains("checksum ok") && inspected.contains("routes 2") && inspected.contains("revocations 1"));
    assert!(inspected.contains("consumers 1") && inspected.contains("api_keys 2"), "{inspected}");
    for n in &mut cluster.nodes {
        n.terminate();
    }

    // A fresh node, restored, is a one-voter cluster with exactly that state.
    let fresh = tempfile::tempdir().unwrap();
    let a1 = NodeAddrs::new(1);
    let mut n1 = NodeProcess::configure(fresh.path(), a1.clone(), &[], &extra);
    let (code, out, err) = raftgate(&["restore", "--config", n1.config_path.to_str().unwrap(), "--snapshot", file_s]);
    assert_eq!(code, 0, "restore: {out}{err}");
    assert!(out.contains("routes 2") && out.contains("node 1 is the only voter"), "{out}");
    n1.start();
    let started = Instant::now();
    assert_eq!(
        wait_for_leader(std::slice::from_ref(&a1.admin), Duration::from_secs(15)).await,
        Some(1),
        "{}",
        n1.log()
    );
    eprintln!("restored node leader after {:?}", started.elapsed());
    let ep = a1.admin.clone();
    assert_eq!(get_local(&ep, "backup.marker").await.as_deref(), Some("before"));
    let listed = ctl_ok(&["--endpoint", &ep, "route", "list"]);
    assert!(listed.contains("keyed") && listed.contains("open"), "{listed}");
    assert!(ctl_ok(&["--endpoint", &ep, "revocation", "list"]).contains(&revoked_id));
    assert!(eventually_status(&a1.http, "/open/x", None, 200).await, "{}", n1.log());
    assert!(eventually_status(&a1.http, "/keyed/1", Some(&good_key), 200).await, "the valid key passes");
    assert_eq!(status_of(&a1.http, "/keyed/1", Some(&revoked_key)).await, Some(401), "the revoked key is refused");
    assert_eq!(status_of(&a1.http, "/keyed/1", None).await, Some(401));
    let verify = ctl_ok(&["--endpoint", &ep, "-o", "json", "audit", "verify"]);
    assert!(verify.contains("\"intact\": true") && !verify.contains("\"checked\": 0,"), "{verify}");
    put(&ep, "backup.marker", "after").await.expect("the restored cluster takes writes");

    // Two fresh members join and serve the route.
    let mut joined = Vec::new();
    for id in [2, 3] {
        let a = NodeAddrs::new(id);
        let mut n = NodeProcess::configure(fresh.path(), a.clone(), &[], &extra);
        n.start();
        join(&ep, &a);
        joined.push(n);
    }
    for n in &joined {
        assert!(eventually_status(&n.addrs.http, "/keyed/1", Some(&good_key), 200).await, "{}", n.log());
        assert_eq!(status_of(&n.addrs.http, "/keyed/1", Some(&revoked_key)).await, Some(401));
    }
    let status = ctl_ok(&["--endpoint", &ep, "-o", "json", "cluster", "status"]);
    assert_eq!(status.matches("\"voter\": true").count(), 3, "{status}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bad_snapshots_and_bad_restores_are_refused_and_change_nothing() {
    let dir = tempfile::tempdir().unwrap();
    let good = dir.path().join("good.rgsnap");
    let gen = |out: &Path, cluster: &str| {
        let (code, o, e) = raftgate(&[
            "gen-snapshot",
            "--out",
            out.to_str().unwrap(),
            "--routes",
            "3",
            "--revocations",
            "2",
            "--consumers",
            "1",
            "--cluster-name",
            cluster,
        ]);
        assert_eq!(code, 0, "{o}{e}");
    };
    gen(&good, "raftgate");
    let bytes = std::fs::read(&good).unwrap();
    let text = String::from_utf8(bytes.clone()).unwrap();
    let body_len = text.split_once('\n').unwrap().1.split_once('\n').unwrap().1.len();

    let node = NodeProcess::configure(dir.path(), NodeAddrs::new(1), &[], "");
    let config = node.config_path.to_str().unwrap().to_string();
    let data = data_dir(&node);
    let restore = |file: &Path| raftgate(&["restore", "--config", &config, "--snapshot", file.to_str().unwrap()]);
    let write = |name: &str, b: &[u8]| {
        let p = dir.path().join(name);
        std::fs::write(&p, b).unwrap();
        p
    };

    let cases: Vec<(PathBuf, String)> = vec![
        (
            write("truncated.rgsnap", &bytes[..bytes.len() - 100]),
            format!("truncated: header says {body_len} bytes, file has {}", body_len - 100),
        ),
        (
            {
                let mut b = bytes.clone();
                let at = b.len() - 10;
                b[at] ^= 0x20;
                write("corrupt.rgsnap", &b)
            },
            "checksum mismatch".into(),
        ),
        (write("magic.rgsnap", b"PK\x03\x04 not a snapshot"), "not a Raftgate snapshot file".into()),
        (
            write("version.rgsnap", text.replacen("RAFTGATE-SNAPSHOT v1", "RAFTGATE-SNAPSHOT v9", 1).as_bytes()),
            "snapshot format version 9 is not supported (this build reads version 1)".into(),
        ),
        (
            {
                let p = dir.path().join("other.rgsnap");
                gen(&p, "other-cluster");
                p
            },
            "the snapshot is from cluster \"other-cluster\" but this node's node.cluster_name is \"raftgate\"".into(),
        ),
    ];
    for (file, message) in &cases {
        let (code, out, err) = restore(file);
        assert_eq!(code, 2, "{}: {out}{err}", file.display());
        assert!(err.contains(message.as_str()), "{}: expected {message:?} in {err}", file.display());
        assert!(!data.exists(), "a refused restore wrote {}", data.display());
        // inspect checks the file alone (it knows no node's cluster name).
        if !message.contains("from cluster") {
            let (ok, _, err) = ctl(&["snapshot", "inspect", file.to_str().unwrap()]);
            assert!(!ok && err.contains(message.as_str()), "inspect {}: {err}", file.display());
        }
    }

    // A data dir that holds anything is left alone.
    std::fs::create_dir_all(&data).unwrap();
    std::fs::write(data.join("keep.txt"), "mine").unwrap();
    let before = listing(&data);
    let (code, _, err) = restore(&good);
    assert_eq!(code, 2);
    assert!(err.contains("is not empty (it holds keep.txt)"), "{err}");
    assert_eq!(listing(&data), before);
    std::fs::remove_file(data.join("keep.txt")).unwrap();

    // Recovery needs a data dir with Raft state, and the confirmation.
    let recover = |confirm: bool| {
        let mut args = vec!["recover", "--config", &config, "--force-new-cluster"];
        if confirm {
            args.push("--i-accept-losing-writes-not-on-this-node");
        }
        raftgate(&args)
    };
    let (code, _, err) = recover(true);
    assert_eq!(code, 2);
    assert!(err.contains("holds no Raft state: there is nothing to recover from"), "{err}");
    assert!(listing(&data).is_empty());
    std::fs::remove_dir(&data).unwrap();
    let (code, _, err) = recover(true);
    assert!(code == 2 && err.contains("holds no Raft state"), "{err}");
    assert!(!data.exists());

    let (code, out, err) = restore(&good);
    assert_eq!(code, 0, "{out}{err}");
    let before = listing(&data);
    let seal = std::fs::read(data.join("seal.json")).unwrap();
    let (code, _, err) = recover(false);
    assert_eq!(code, 2);
    assert!(err.contains("refusing without --i-accept-losing-writes-not-on-this-node"), "{err}");
    assert!(err.contains("lost for good"), "it says what would be lost: {err}");
    assert_eq!(listing(&data), before);
    assert_eq!(std::fs::read(data.join("seal.json")).unwrap(), seal);

    // Saving over an existing file needs --force (checked before connecting).
    let existing = write("existing.rgsnap", b"keep me");
    let (ok, _, err) = ctl(&["--endpoint", "127.0.0.1:1", "snapshot", "save", existing.to_str().unwrap()]);
    assert!(!ok && err.contains("exists; pass --force to replace it"), "{err}");
    assert_eq!(std::fs::read(&existing).unwrap(), b"keep me");
}

async fn last_log_index(addr: &str) -> Option<u64> {
    let mut c = admin(addr).await;
    c.node_status(pb::NodeStatusRequest {}).await.ok()?.into_inner().last_log_index
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_survivor_of_a_lost_quorum_recovers_alone_with_every_acknowledged_write() {
    let mut cluster = Cluster::start(3);
    let admins: Vec<String> = cluster.nodes.iter().map(|n| n.addrs.admin.clone()).collect();
    let leader = wait_for_leader(&admins, Duration::from_secs(30)).await.expect("no leader");
    let leader_ep = cluster.node(leader).addrs.admin.clone();
    let mut last = 0;
    for i in 0..20 {
        last = put(&leader_ep, &format!("dr.{i}"), &format!("v{i}")).await.expect("acknowledged write").log_index;
    }
    // The survivor is a follower that holds every acknowledged entry in its log
    // (it need not know them committed yet).
    let survivor = cluster.nodes.iter().find(|n| n.addrs.id != leader).unwrap().addrs.clone();
    let holds =
        eventually(Duration::from_secs(10), || async { last_log_index(&survivor.admin).await.filter(|l| *l >= last) });
    assert!(holds.await.is_some(), "the follower did not receive the log");
    for n in &mut cluster.nodes {
        n.kill();
    }

    let config = cluster.node(survivor.id).config_path.to_str().unwrap().to_string();
    let (code, _, err) = raftgate(&["recover", "--config", &config, "--force-new-cluster"]);
    assert_eq!(code, 2, "{err}");
    assert!(err.contains("refusing without --i-accept-losing-writes-not-on-this-node"), "{err}");
    let (code, out, err) =
        raftgate(&["recover", "--config", &config, "--force-new-cluster", "--i-accept-losing-writes-not-on-this-node"]);
    assert_eq!(code, 0, "{out}{err}");
    assert!(out.contains("kept: last applied index") && out.contains("settings 20"), "{out}");
    assert!(out.contains("may be lost"), "{out}");

    let n = cluster.node(survivor.id);
    n.start();
    let started = Instant::now();
    let alone = wait_for_leader(std::slice::from_ref(&survivor.admin), Duration::from_secs(10)).await;
    assert_eq!(alone, Some(survivor.id), "{}", cluster.node(survivor.id).log());
    eprintln!("survivor leads alone after {:?}", started.elapsed());
    assert_eq!(leader_of(&survivor.admin).await, Some(survivor.id));
    for i in 0..20 {
        assert_eq!(get_local(&survivor.admin, &format!("dr.{i}")).await, Some(format!("v{i}")), "write {i} lost");
    }
    let after = put(&survivor.admin, "dr.after", "new").await.expect("new writes succeed").log_index;
    assert!(after > last);

    // A fresh node joins the new cluster.
    let a4 = NodeAddrs::new(4);
    let mut n4 = NodeProcess::configure(cluster.dir.path(), a4.clone(), &[], "");
    n4.start();
    join(&survivor.admin, &a4);
    let caught_up = eventually(Duration::from_secs(10), || async { get_local(&a4.admin, "dr.after").await });
    assert_eq!(caught_up.await.as_deref(), Some("new"), "{}", n4.log());
    assert_eq!(get_local(&a4.admin, "dr.0").await.as_deref(), Some("v0"));
}
