//! The admin API outside development: TLS, operators with roles, tokens and
//! client certificates, the permission table, and the audit trail (written
//! for every write and refusal, verified on every node, and tampering with
//! a node's stored copy found by `audit verify`).

use std::path::{Path, PathBuf};
use std::time::Duration;

use raftgate_proto::admin as pb;
use raftgate_proto::admin::admin_client::AdminClient;
use raftgate_tests::{eventually, Cluster};
use rcgen::{BasicConstraints, CertificateParams, DnType, ExtendedKeyUsagePurpose, IsCa, Issuer, KeyPair};
use serde_json::Value;
use tonic::transport::{Certificate, ClientTlsConfig, Endpoint};

struct Pki {
    ca_file: PathBuf,
    server: (PathBuf, PathBuf),
    client: (PathBuf, PathBuf),
    client_sha256: String,
}

fn pki(dir: &Path) -> Pki {
    let mut params = CertificateParams::new(Vec::<String>::new()).unwrap();
    params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
    params.distinguished_name.push(DnType::CommonName, "raftgate admin test CA");
    let key = KeyPair::generate().unwrap();
    let ca = params.self_signed(&key).unwrap();
    let ca_file = dir.join("ca.pem");
    std::fs::write(&ca_file, ca.pem()).unwrap();
    let issuer = Issuer::new(params, key);
    let leaf = |name: &str, client: bool| {
        let mut p = CertificateParams::new(vec!["127.0.0.1".to_string(), "localhost".to_string()]).unwrap();
        p.distinguished_name.push(DnType::CommonName, name);
        p.extended_key_usages =
            vec![if client { ExtendedKeyUsagePurpose::ClientAuth } else { ExtendedKeyUsagePurpose::ServerAuth }];
        let k = KeyPair::generate().unwrap();
        let c = p.signed_by(&k, &issuer).unwrap();
        let (cf, kf) = (dir.join(format!("{name}.crt")), dir.join(format!("{name}.key")));
        std::fs::write(&cf, c.pem()).unwrap();
        std::fs::write(&kf, k.serialize_pem()).unwrap();
        (cf, kf, c.der().to_vec())
    };
    let (scf, skf, _) = leaf("node", false);
    let (ccf, ckf, cder) = leaf("carol", true);
    let digest = ring_sha256(&cder);
    Pki { ca_file, server: (scf, skf), client: (ccf, ckf), client_sha256: digest }
}

fn ring_sha256(data: &[u8]) -> String {
    use sha2::Digest as _;
    sha2::Sha256::digest(data).iter().map(|b| format!("{b:02x}")).collect()
}

const BOOTSTRAP: &str = "bootstrap-token-for-the-admin-test-0123456789";

fn start(dir: &Path, pki: &Pki) -> Cluster {
    std::fs::write(dir.join("secret"), "a cluster secret of at least thirty-two bytes").unwrap();
    std::fs::write(dir.join("bootstrap"), BOOTSTRAP).unwrap();
    let extra = format!(
        "\n[raft]\nsnapshot_every_entries = 10\n\n[identity]\nkey_hash_secret = \"file:{}\"\n\n[admin]\nauth = \"required\"\nbootstrap_token = \"file:{}\"\n\n[admin.tls]\ncert_file = \"{}\"\nkey_file = \"{}\"\nca_file = \"{}\"\n",
        dir.join("secret").display(),
        dir.join("bootstrap").display(),
        pki.server.0.display(),
        pki.server.1.display(),
        pki.ca_file.display(),
    );
    Cluster::start_with(3, &extra)
}

/// Runs raftgatectl against `endpoint` with the CA, and `auth` (token or cert flags).
fn ctl(endpoint: &str, pki: &Pki, auth: &[&str], args: &[&str]) -> (bool, String, String) {
    let ca = pki.ca_file.display().to_string();
    let mut all = vec!["--endpoint", endpoint, "--ca-cert", ca.as_str(), "--config", "/dev/null", "-o", "json"];
    all.extend_from_slice(auth);
    all.extend_from_slice(args);
    raftgate_tests::ctl(&all)
}

fn json(out: &str) -> Value {
    serde_json::from_str(out).unwrap_or_else(|e| panic!("not JSON ({e}): {out}"))
}

async fn tls_client(
    addr: &str,
    pki: &Pki,
    token: &str,
) -> AdminClient<
    tonic::service::interceptor::InterceptedService<tonic::transport::Channel, impl tonic::service::Interceptor>,
> {
    let ca = Certificate::from_pem(std::fs::read(&pki.ca_file).unwrap());
    let channel = Endpoint::from_shared(format!("https://{addr}"))
        .unwrap()
        .tls_config(ClientTlsConfig::new().ca_certificate(ca))
        .unwrap()
        .timeout(Duration::from_secs(10))
        .connect_lazy();
    let header: tonic::metadata::MetadataValue<_> = format!("Bearer {token}").parse().unwrap();
    AdminClient::with_interceptor(channel, move |mut r: tonic::Request<()>| {
        r.metadata_mut().insert("authorization", header.clone());
        Ok(r)
    })
}

async fn leader(addrs: &[String], pki: &Pki) -> u64 {
    eventually(Duration::from_secs(30), || async {
        for a in addrs {
            let mut c = tls_client(a, pki, BOOTSTRAP).await;
            if let Ok(r) = c.node_status(pb::NodeStatusRequest {}).await {
                let r = r.into_inner();
                if r.role == "leader" {
                    return Some(r.id);
                }
            }
        }
        None
    })
    .await
    .expect("a leader is elected")
}

fn audit_records(endpoint: &str, pki: &Pki, auth: &[&str]) -> Vec<Value> {
    let (ok, out, err) = ctl(endpoint, pki, auth, &["audit", "list", "--limit", "1000"]);
    assert!(ok, "audit list: {err}");
    json(&out)["records"].as_array().unwrap().clone()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn roles_tokens_certificates_and_a_tamper_evident_audit_trail() {
    let dir = tempfile::tempdir().unwrap();
    let pki = pki(dir.path());
    let mut cluster = start(dir.path(), &pki);
    let addrs: Vec<String> = cluster.nodes.iter().map(|n| n.addrs.admin.clone()).collect();
    let leader_id = leader(&addrs, &pki).await;
    let follower = cluster.nodes.iter().find(|n| n.addrs.id != leader_id).unwrap().addrs.admin.clone();
    let boot = ["--token", BOOTSTRAP];

    // No credential, a plaintext connection, a made-up token: refused, with what to do.
    let (ok, _, err) = ctl(&follower, &pki, &[], &["route", "list"]);
    assert!(!ok && err.contains("not authenticated"), "{err}");
    let (ok, _, err) = raftgate_tests::ctl(&["--endpoint", &follower, "--config", "/dev/null", "route", "list"]);
    assert!(!ok, "a plaintext client gets nothing from a TLS admin listener: {err}");
    let (ok, _, err) = ctl(&follower, &pki, &["--token", "rgt_0123.made-up"], &["route", "list"]);
    assert!(!ok && err.contains("unknown or deleted admin token"), "{err}");

    // The bootstrap token creates operators and their tokens (through a follower).
    let carol_cert = format!("--certificate-sha256={}", pki.client_sha256);
    for args in [
        vec!["operator", "apply", "--id", "alice", "--role", "operator"],
        vec!["operator", "apply", "--id", "bob", "--role", "auditor"],
        vec!["operator", "apply", "--id", "carol", "--role", "admin", carol_cert.as_str()],
    ] {
        let (ok, _, err) = ctl(&follower, &pki, &boot, &args);
        assert!(ok, "{args:?}: {err}");
    }
    let token_of = |who: &str| {
        let (ok, out, err) = ctl(&follower, &pki, &boot, &["token", "create", who]);
        assert!(ok, "token create {who}: {err}");
        json(&out)["token"].as_str().unwrap().to_string()
    };
    let (alice, bob) = (token_of("alice"), token_of("bob"));
    let as_alice = ["--token", alice.as_str()];
    let as_bob = ["--token", bob.as_str()];
    let (cert, key) = (pki.client.0.display().to_string(), pki.client.1.display().to_string());
    let as_carol = ["--cert", cert.as_str(), "--key", key.as_str()];

    let (ok, out, err) = ctl(&follower, &pki, &as_carol, &["whoami"]);
    assert!(ok, "{err}");
    assert_eq!(json(&out)["principal"], "carol");
    assert_eq!(json(&out)["method"], "certificate");

    // The same credentials from the config file raftgatectl reads.
    let ctl_toml = dir.path().join("ctl.toml");
    std::fs::write(
        &ctl_toml,
        format!("endpoint = \"{follower}\"\ntoken = \"{alice}\"\nca_cert = \"{}\"\n", pki.ca_file.display()),
    )
    .unwrap();
    let (ok, out, err) = raftgate_tests::ctl(&["--config", ctl_toml.to_str().unwrap(), "-o", "json", "whoami"]);
    assert!(ok, "{err}");
    assert_eq!(json(&out)["principal"], "alice");
    assert_eq!(json(&out)["role"], "operator");

    // An operator changes routing through a follower; the audit names her, not the follower.
    let (ok, out, err) =
        ctl(&follower, &pki, &as_alice, &["upstream", "apply", "--id", "u1", "--target", "127.0.0.1:9"]);
    assert!(ok, "{err}");
    let upstream_index = json(&out)["log_index"].as_u64().unwrap();
    // …but may not change plans, reset quotas or read the audit trail.
    for args in [vec!["plan", "apply", "--id", "gold"], vec!["quota", "reset", "x"], vec!["audit", "tail"]] {
        let (ok, _, err) = ctl(&follower, &pki, &as_alice, &args);
        assert!(!ok && err.contains("forbidden") && err.contains("role operator may not call"), "{args:?}: {err}");
    }
    // An auditor reads, and writes nothing.
    let (ok, _, err) =
        ctl(&follower, &pki, &as_bob, &["route", "apply", "--id", "r1", "--upstream", "u1", "--prefix", "/"]);
    assert!(!ok && err.contains("role auditor may not call ApplyRoute"), "{err}");
    let (ok, _, err) = ctl(&follower, &pki, &as_bob, &["route", "list"]);
    assert!(ok, "{err}");
    // The admin by certificate may.
    let (ok, _, err) = ctl(&follower, &pki, &as_carol, &["plan", "apply", "--id", "gold"]);
    assert!(ok, "{err}");

    // A token that expired, and one that was deleted, are refused.
    let mut c = tls_client(&follower, &pki, BOOTSTRAP).await;
    let short = c
        .create_admin_token(pb::CreateAdminTokenRequest { operator: "alice".into(), expires_in_ms: Some(1_500) })
        .await
        .unwrap()
        .into_inner();
    tokio::time::sleep(Duration::from_millis(2_000)).await;
    let (ok, _, err) = ctl(&follower, &pki, &["--token", short.token.as_str()], &["route", "list"]);
    assert!(!ok && err.contains("expired"), "{err}");
    let bob_id = bob.trim_start_matches("rgt_").split('.').next().unwrap().to_string();
    let (ok, _, err) = ctl(&follower, &pki, &boot, &["token", "delete", &bob_id]);
    assert!(ok, "{err}");
    let refused = eventually(Duration::from_secs(5), || async {
        let (ok, _, err) = ctl(&follower, &pki, &as_bob, &["route", "list"]);
        (!ok && err.contains("unknown or deleted")).then_some(())
    })
    .await;
    assert!(refused.is_some(), "a deleted token is refused once the delete is applied");

    // A disabled operator's token is refused; bad documents name the problem; oversized requests are refused.
    let (ok, _, err) =
        ctl(&follower, &pki, &boot, &["operator", "apply", "--id", "dave", "--role", "operator", "--disabled"]);
    assert!(ok, "{err}");
    let dave = token_of("dave");
    let (ok, _, err) = ctl(&follower, &pki, &["--token", dave.as_str()], &["route", "list"]);
    assert!(!ok && err.contains("operator is disabled"), "{err}");
    let typo = dir.path().join("op.json");
    std::fs::write(&typo, r#"{"id": "erin", "role": "admin", "rolez": "x"}"#).unwrap();
    let (ok, _, err) = ctl(&follower, &pki, &boot, &["operator", "apply", "-f", typo.to_str().unwrap()]);
    assert!(!ok && err.contains("unknown field `rolez`"), "{err}");
    let big = format!(r#"{{"id":"big","upstream":"u1","paths":[{{"exact":"/{}"}}]}}"#, "x".repeat(5 << 20));
    let refused = tls_client(&follower, &pki, BOOTSTRAP)
        .await
        .apply_route(pb::ApplyObjectRequest { spec_json: big, expected_revision: None })
        .await
        .unwrap_err();
    assert!(
        matches!(
            refused.code(),
            tonic::Code::OutOfRange | tonic::Code::ResourceExhausted | tonic::Code::InvalidArgument
        ),
        "{refused:?}"
    );
    let (_, routes, _) = ctl(&follower, &pki, &boot, &["route", "list"]);
    assert!(!routes.contains("\"big\""), "nothing written");

    // The trail: every write with who, role and RPC; refusals recorded too.
    let records = eventually(Duration::from_secs(10), || async {
        let r = audit_records(&follower, &pki, &as_carol);
        r.iter().any(|x| x["action"] == "denied" && x["principal"] == "alice" && x["rpc"] == "ResetQuota").then_some(r)
    })
    .await
    .expect("alice's refused quota reset reaches the audit trail");
    let upstream = records.iter().find(|r| r["rpc"] == "ApplyUpstream").expect("the upstream write is audited");
    assert_eq!(upstream["principal"], "alice");
    assert_eq!(upstream["role"], "operator");
    assert_eq!(upstream["object"], "upstream/u1");
    assert!(upstream.get("before").is_none() && upstream["after"].is_string(), "created: no before, an after digest");
    assert!(records.iter().any(|r| r["principal"] == "bob" && r["rpc"] == "ApplyRoute" && r["action"] == "denied"));
    assert!(records.iter().any(|r| r["principal"] == "carol" && r["rpc"] == "ApplyPlan" && r["outcome"] == "applied"));
    let outcome = |r: &Value| r["outcome"].as_str().unwrap_or("").to_string();
    assert!(
        records.iter().any(|r| r["principal"] == "alice" && outcome(r).contains("expired")),
        "a real, expired token"
    );
    assert!(
        !records.iter().any(|r| outcome(r).contains("unknown or deleted") || r["principal"] == "anonymous"),
        "made-up credentials are only logged"
    );
    for w in records.windows(2) {
        assert_eq!(w[1]["prev"], w[0]["hash"], "each record links to the one before");
        assert_eq!(w[1]["seq"].as_u64().unwrap(), w[0]["seq"].as_u64().unwrap() + 1);
    }
    let (ok, out, err) = ctl(&follower, &pki, &as_carol, &["audit", "verify", "--all-nodes"]);
    assert!(ok, "{err}");
    let nodes = json(&out)["nodes"].as_array().unwrap().clone();
    assert_eq!(nodes.len(), 3);
    assert!(nodes.iter().all(|n| n["intact"] == true), "{out}");

    // Export writes JSON lines, one per record.
    let export = dir.path().join("audit.jsonl");
    let (ok, _, err) = ctl(&follower, &pki, &as_carol, &["audit", "export", "--file", export.to_str().unwrap()]);
    assert!(ok, "{err}");
    let lines = std::fs::read_to_string(&export).unwrap();
    assert!(lines.lines().count() >= records.len());
    assert!(lines.lines().all(|l| serde_json::from_str::<Value>(l).is_ok()));

    // Tamper with a stopped follower's stored copy (its snapshot on disk):
    // change who made the upstream write. verify on that node finds the record.
    let victim_id = cluster.nodes.iter().find(|n| n.addrs.id != leader_id).unwrap().addrs.id;
    let victim_addr = cluster.node(victim_id).addrs.admin.clone();
    let seq = upstream["seq"].as_u64().unwrap();
    // Enough writes that the victim's snapshot covers the record.
    for i in 0..12 {
        let (ok, _, err) = ctl(&follower, &pki, &as_carol, &["setting", "put", &format!("s{i}"), "v"]);
        assert!(ok, "{err}");
    }
    let snapshotted = eventually(Duration::from_secs(20), || async {
        let mut c = tls_client(&victim_addr, &pki, BOOTSTRAP).await;
        let s = c.node_status(pb::NodeStatusRequest {}).await.ok()?.into_inner();
        s.snapshot_index.filter(|i| *i >= upstream_index)
    })
    .await;
    assert!(snapshotted.is_some(), "the victim took a snapshot that holds the record");
    let node = cluster.node(victim_id);
    node.terminate();
    let db = sled::open(cluster.dir.path().join(format!("node-{victim_id}/raft"))).unwrap();
    let tree = db.open_tree("snapshot").unwrap();
    let data = tree.get(b"data").unwrap().expect("a snapshot was taken (snapshot_every_entries = 10)");
    let mut state: Value = serde_json::from_slice(&data).unwrap();
    let stored = state["audit"]["records"].as_array_mut().unwrap();
    let record = stored.iter_mut().find(|r| r["seq"].as_u64() == Some(seq)).expect("the record is in the snapshot");
    record["principal"] = Value::String("mallory".into());
    tree.insert(b"data", serde_json::to_vec(&state).unwrap()).unwrap();
    db.flush().unwrap();
    drop(tree);
    drop(db);
    cluster.node(victim_id).start();

    let found = eventually(Duration::from_secs(20), || async {
        let (ok, out, err) = ctl(&victim_addr, &pki, &as_carol, &["audit", "verify"]);
        if ok || !err.contains("broken") {
            return None;
        }
        Some((out, err))
    })
    .await;
    let Some((out, err)) = found else {
        cluster.dump_logs();
        panic!("verify on the tampered node did not report the break");
    };
    assert!(err.contains(&format!("broken at record {seq}")) && err.contains("content changed"), "{out}\n{err}");
    let (ok, _, _) = ctl(&follower_other(&cluster, victim_id), &pki, &as_carol, &["audit", "verify"]);
    assert!(ok, "the other copies still verify");
}

fn follower_other(cluster: &Cluster, not: u64) -> String {
    cluster.nodes.iter().find(|n| n.addrs.id != not).unwrap().addrs.admin.clone()
}
