//! Mutual TLS between nodes, end to end: certificates made by
//! `raftgatectl certs`, three nodes on `cluster_tls` and `admin.tls` that
//! replicate and forward; nodes with a certificate from another CA or of
//! another cluster never catch up, and the leader's log says why; a node
//! with an expired certificate does not start; new certificates issued over
//! the old files are reloaded and used for new connections.

use std::path::{Path, PathBuf};
use std::time::Duration;

use raftgate_proto::admin as pb;
use raftgate_proto::admin::admin_client::AdminClient;
use raftgate_tests::{ctl, eventually, NodeAddrs, NodeProcess};
use tonic::transport::{Certificate, Channel, ClientTlsConfig, Endpoint};

const RELOAD_MS: u64 = 1_000;

/// `raftgatectl certs init` for `nodes` of cluster `cluster` into `out`.
fn certs_init(out: &Path, cluster: &str, nodes: &[u64]) {
    let out_s = out.display().to_string();
    let specs: Vec<String> = nodes.iter().map(|id| format!("{id}=127.0.0.1,localhost")).collect();
    let mut args = vec!["certs", "init", "--out", out_s.as_str(), "--cluster", cluster];
    for s in &specs {
        args.extend(["--node", s.as_str()]);
    }
    let (ok, stdout, err) = ctl(&args);
    assert!(ok, "certs init: {err}");
    assert!(stdout.contains("ca.key (mode 0600)"), "{stdout}");
}

/// `raftgatectl certs node` over any existing files.
fn certs_node(ca_dir: &Path, cluster: &str, id: u64, out: &Path) {
    let (ca, out, id) = (ca_dir.display().to_string(), out.display().to_string(), id.to_string());
    let (ok, _, err) = ctl(&[
        "certs",
        "node",
        "--ca-dir",
        &ca,
        "--cluster",
        cluster,
        "--id",
        &id,
        "--host",
        "127.0.0.1",
        "--host",
        "localhost",
        "--out",
        &out,
        "--force",
    ]);
    assert!(ok, "certs node: {err}");
}

/// Config for a node on cluster TLS and admin TLS with `pki/node-<id>.*`
/// (its own certificate) trusting `ca`.
fn tls_toml(pki: &Path, id: u64, ca: &Path) -> String {
    let (cert, key) = (pki.join(format!("node-{id}.crt")), pki.join(format!("node-{id}.key")));
    format!(
        "\n[admin]\nauth = \"none\"\n\n[admin.tls]\ncert_file = \"{c}\"\nkey_file = \"{k}\"\nca_file = \"{ca}\"\n\n[cluster_tls]\ncert_file = \"{c}\"\nkey_file = \"{k}\"\nca_file = \"{ca}\"\nreload_interval_ms = {RELOAD_MS}\n",
        c = cert.display(),
        k = key.display(),
        ca = ca.display(),
    )
}

fn set_cluster_name(node: &NodeProcess, name: &str) {
    let text = std::fs::read_to_string(&node.config_path).unwrap();
    std::fs::write(&node.config_path, text.replacen("[node]\n", &format!("[node]\ncluster_name = \"{name}\"\n"), 1))
        .unwrap();
}

/// An admin client over TLS trusting `ca`.
fn admin(addr: &str, ca: &Path) -> AdminClient<Channel> {
    let tls = ClientTlsConfig::new().ca_certificate(Certificate::from_pem(std::fs::read(ca).unwrap()));
    let channel = Endpoint::from_shared(format!("https://{addr}"))
        .unwrap()
        .tls_config(tls)
        .unwrap()
        .connect_timeout(Duration::from_millis(500))
        .timeout(Duration::from_secs(10))
        .connect_lazy();
    AdminClient::new(channel)
}

async fn leader(addrs: &[&NodeAddrs], ca: &Path) -> Option<u64> {
    for a in addrs {
        let status = admin(&a.admin, ca).cluster_status(pb::ClusterStatusRequest {}).await;
        if let Some(l) = status.ok().and_then(|s| s.into_inner().leader_id) {
            return Some(l);
        }
    }
    None
}

async fn put(addr: &str, ca: &Path, key: &str, value: &str) -> Result<u64, tonic::Status> {
    let req = pb::PutSettingRequest { key: key.into(), value: value.into(), expected_revision: None };
    admin(addr, ca).put_setting(req).await.map(|r| r.into_inner().log_index)
}

async fn applied(addr: &str, ca: &Path) -> Option<u64> {
    admin(addr, ca).node_status(pb::NodeStatusRequest {}).await.ok()?.into_inner().applied_index
}

async fn local(addr: &str, ca: &Path, key: &str) -> Option<String> {
    let req = pb::GetSettingRequest { key: key.into(), consistency: pb::Consistency::Local as i32 };
    admin(addr, ca).get_setting(req).await.ok().map(|r| r.into_inner().value)
}

fn dump(nodes: &[NodeProcess]) -> String {
    nodes.iter().map(|n| format!("===== node {} =====\n{}", n.addrs.id, n.log())).collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn three_nodes_on_mutual_tls_replicate_forward_and_take_rotated_certificates() {
    let dir = tempfile::tempdir().unwrap();
    let pki = dir.path().join("pki");
    certs_init(&pki, "raftgate", &[1, 2, 3]);
    let ca: PathBuf = pki.join("ca.pem");
    let addrs: Vec<NodeAddrs> = (1..=3).map(NodeAddrs::new).collect();
    let mut nodes: Vec<NodeProcess> = addrs
        .iter()
        .map(|a| NodeProcess::configure(dir.path(), a.clone(), &addrs, &tls_toml(&pki, a.id, &ca)))
        .collect();
    for n in &mut nodes {
        n.start();
    }
    let all: Vec<&NodeAddrs> = addrs.iter().collect();
    let leader_id = eventually(Duration::from_secs(20), || leader(&all, &ca)).await;
    let leader_id = leader_id.unwrap_or_else(|| panic!("no leader\n{}", dump(&nodes)));
    let on = |id: u64| addrs.iter().find(|a| a.id == id).unwrap().clone();
    let follower = addrs.iter().find(|a| a.id != leader_id).unwrap().clone();
    assert!(nodes[0].log().contains("Raft transport on mutual TLS"), "{}", nodes[0].log());

    // A write replicates to every node.
    let index = put(&on(leader_id).admin, &ca, "tls.first", "1").await.expect("write on the leader");
    for a in &addrs {
        let got =
            eventually(Duration::from_secs(10), || async { applied(&a.admin, &ca).await.filter(|i| *i >= index) });
        assert!(got.await.is_some(), "node {} did not apply\n{}", a.id, dump(&nodes));
    }
    // A write sent to a follower is forwarded (over mutual TLS) and succeeds.
    put(&follower.admin, &ca, "tls.forwarded", "2")
        .await
        .unwrap_or_else(|e| panic!("forwarded write: {e}\n{}", dump(&nodes)));
    assert_eq!(local(&on(leader_id).admin, &ca, "tls.forwarded").await.as_deref(), Some("2"));

    // Rotation: new certificates over the old files, reloaded by every node.
    for id in 1..=3 {
        certs_node(&pki, "raftgate", id, &pki);
    }
    for n in &nodes {
        let reloaded = eventually(Duration::from_secs(10), || async {
            n.log().contains("new certificate set in service").then_some(())
        });
        assert!(reloaded.await.is_some(), "node {} did not reload\n{}", n.addrs.id, n.log());
    }
    // A restarted node makes new handshakes, all with the new certificates.
    let restarted = nodes.iter_mut().find(|n| n.addrs.id == follower.id).unwrap();
    restarted.kill();
    let index = put(&on(leader_id).admin, &ca, "tls.while.down", "3").await.expect("write with one node down");
    restarted.start();
    let got =
        eventually(Duration::from_secs(15), || async { applied(&follower.admin, &ca).await.filter(|i| *i >= index) });
    assert!(got.await.is_some(), "the restarted node did not catch up\n{}", dump(&nodes));
    assert_eq!(local(&follower.admin, &ca, "tls.while.down").await.as_deref(), Some("3"));
    put(&follower.admin, &ca, "tls.after.rotation", "4").await.expect("forwarded write after rotation");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_foreign_ca_or_another_clusters_certificate_cannot_join_and_an_expired_one_cannot_start() {
    let dir = tempfile::tempdir().unwrap();
    let (pki, foreign) = (dir.path().join("pki"), dir.path().join("foreign"));
    certs_init(&pki, "raftgate", &[1]);
    certs_init(&foreign, "raftgate", &[2]);
    let ca = pki.join("ca.pem");
    // Node 3 holds a certificate of our CA, but for cluster "other" (and says so).
    certs_node(&pki, "other", 3, &pki);

    let a1 = NodeAddrs::new(1);
    let mut n1 = NodeProcess::configure(dir.path(), a1.clone(), std::slice::from_ref(&a1), &tls_toml(&pki, 1, &ca));
    let a2 = NodeAddrs::new(2);
    let foreign_ca = foreign.join("ca.pem");
    let mut n2 = NodeProcess::configure(dir.path(), a2.clone(), &[], &tls_toml(&foreign, 2, &foreign_ca));
    let a3 = NodeAddrs::new(3);
    let mut n3 = NodeProcess::configure(dir.path(), a3.clone(), &[], &tls_toml(&pki, 3, &ca));
    set_cluster_name(&n3, "other");
    n1.start();
    n2.start();
    n3.start();
    let just_one = [&a1];
    let leader_id = eventually(Duration::from_secs(20), || leader(&just_one, &ca)).await;
    assert_eq!(leader_id, Some(1), "{}", n1.log());

    let ca_s = ca.display().to_string();
    for a in [&a2, &a3] {
        let id = a.id.to_string();
        let flags = ["--endpoint", &a1.admin, "--ca-cert", &ca_s, "--config", "/dev/null"];
        let (ok, _, err) = ctl(&[&flags[..], &a.add_learner_args(&id)].concat());
        assert!(ok, "add-learner {id}: {err}");
    }
    let index = put(&a1.admin, &ca, "only.for.members", "1").await.expect("write on the leader");
    // The leader's log says why each handshake failed.
    let why = eventually(Duration::from_secs(10), || async {
        let log = n1.log();
        (log.contains("UnknownIssuer") && log.contains("node certificate of cluster \"other\"")).then_some(())
    });
    assert!(why.await.is_some(), "{}", n1.log());
    // Neither learner catches up.
    tokio::time::sleep(Duration::from_secs(2)).await;
    assert!(applied(&a2.admin, &foreign_ca).await.unwrap_or(0) < index, "{}", n2.log());
    assert!(applied(&a3.admin, &ca).await.unwrap_or(0) < index, "{}", n3.log());
    assert!(n1.is_running() && n2.is_running() && n3.is_running());

    // A node whose own certificate has expired refuses to start and writes nothing.
    expired_node_cert(&pki, 4);
    let a4 = NodeAddrs::new(4);
    let mut n4 = NodeProcess::configure(dir.path(), a4.clone(), &[], &tls_toml(&pki, 4, &ca));
    n4.start();
    let exited = eventually(Duration::from_secs(10), || {
        let running = n4.is_running();
        async move { (!running).then_some(()) }
    });
    assert!(exited.await.is_some(), "a node with an expired certificate kept running\n{}", n4.log());
    let log = n4.log();
    assert!(log.contains("cluster_tls.cert_file") && log.contains("expired"), "{log}");
    assert!(!dir.path().join("node-4").exists(), "the data dir was created");
}

/// Writes `pki/node-<id>.crt|key`: a node certificate of our CA that expired yesterday.
fn expired_node_cert(pki: &Path, id: u64) {
    use rcgen::{CertificateParams, ExtendedKeyUsagePurpose, Issuer, KeyPair, SanType};
    let ca_key = KeyPair::from_pem(&std::fs::read_to_string(pki.join("ca.key")).unwrap()).unwrap();
    let issuer = Issuer::from_ca_cert_pem(&std::fs::read_to_string(pki.join("ca.pem")).unwrap(), ca_key).unwrap();
    let mut p = CertificateParams::new(vec!["127.0.0.1".to_string()]).unwrap();
    p.subject_alt_names.push(SanType::URI(format!("spiffe://raftgate/node/{id}").as_str().try_into().unwrap()));
    p.extended_key_usages = vec![ExtendedKeyUsagePurpose::ServerAuth, ExtendedKeyUsagePurpose::ClientAuth];
    let now = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).unwrap();
    let epoch = rcgen::date_time_ymd(1970, 1, 1);
    p.not_before = epoch + (now - Duration::from_secs(30 * 86_400));
    p.not_after = epoch + (now - Duration::from_secs(86_400));
    let key = KeyPair::generate().unwrap();
    let cert = p.signed_by(&key, &issuer).unwrap();
    std::fs::write(pki.join(format!("node-{id}.crt")), cert.pem()).unwrap();
    std::fs::write(pki.join(format!("node-{id}.key")), key.serialize_pem()).unwrap();
}
