//! Certificate references: a certificate applied through the admin API is
//! served by the node's HTTPS listener for its host names (SNI) without a
//! restart; one whose files do not exist on the node changes nothing there.

use std::sync::Arc;
use std::time::Duration;

use raftgate_tests::{ctl, eventually, wait_for_leader, Cluster};
use rcgen::{BasicConstraints, CertificateParams, DnType, IsCa, Issuer, KeyPair};

/// Whether a TLS handshake for `name` at `addr` verifies against `ca`.
async fn handshake(addr: &str, name: &str, ca: &rustls::pki_types::CertificateDer<'static>) -> bool {
    let mut roots = rustls::RootCertStore::empty();
    roots.add(ca.clone()).unwrap();
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let config = rustls::ClientConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .unwrap()
        .with_root_certificates(roots)
        .with_no_client_auth();
    let Ok(tcp) = tokio::net::TcpStream::connect(addr).await else { return false };
    let server = rustls::pki_types::ServerName::try_from(name.to_string()).unwrap();
    tokio_rustls::TlsConnector::from(Arc::new(config)).connect(server, tcp).await.is_ok()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_certificate_reference_is_served_for_its_hosts_without_a_restart() {
    let dir = tempfile::tempdir().unwrap();
    let mut ca_params = CertificateParams::new(Vec::<String>::new()).unwrap();
    ca_params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
    ca_params.distinguished_name.push(DnType::CommonName, "test CA");
    let ca_key = KeyPair::generate().unwrap();
    let ca = ca_params.self_signed(&ca_key).unwrap();
    let issuer = Issuer::new(ca_params, ca_key);
    let leaf = |name: &str| {
        let p = CertificateParams::new(vec![name.to_string()]).unwrap();
        let k = KeyPair::generate().unwrap();
        let c = p.signed_by(&k, &issuer).unwrap();
        let (cf, kf) = (dir.path().join(format!("{name}.crt")), dir.path().join(format!("{name}.key")));
        std::fs::write(&cf, c.pem()).unwrap();
        std::fs::write(&kf, k.serialize_pem()).unwrap();
        (cf.display().to_string(), kf.display().to_string())
    };
    let (base_cert, base_key) = leaf("localhost");
    let (api_cert, api_key) = leaf("api.example.test");
    let https = format!("127.0.0.1:{}", raftgate_tests::free_port());
    let extra = format!(
        "\n[https]\nlisten = \"{https}\"\ncertificates = [{{ hosts = [\"localhost\"], cert_file = \"{base_cert}\", key_file = \"{base_key}\" }}]\n"
    );
    let cluster = Cluster::start_with(1, &extra);
    let ep = cluster.nodes[0].addrs.admin.clone();
    wait_for_leader(std::slice::from_ref(&ep), Duration::from_secs(30)).await.expect("leader");
    let ca_der = ca.der().clone();
    assert!(eventually(Duration::from_secs(10), || async {
        handshake(&https, "localhost", &ca_der).await.then_some(())
    })
    .await
    .is_some());
    assert!(!handshake(&https, "api.example.test", &ca_der).await, "not served before the reference exists");

    // A reference to files this node does not have: refused on the node, nothing changes.
    let run = |args: &[&str]| {
        let mut all = vec!["--endpoint", ep.as_str(), "--config", "/dev/null"];
        all.extend_from_slice(args);
        ctl(&all)
    };
    let (ok, _, err) = run(&[
        "certificate",
        "apply",
        "--id",
        "ghost",
        "--host",
        "ghost.example.test",
        "--cert-file",
        "/nonexistent/x.crt",
        "--key-file",
        "/nonexistent/x.key",
    ]);
    assert!(ok, "the reference itself is valid: {err}");
    tokio::time::sleep(Duration::from_millis(300)).await;
    assert!(handshake(&https, "localhost", &ca_der).await, "the certificates in service stay");
    let (ok, _, err) = run(&["certificate", "delete", "ghost"]);
    assert!(ok, "{err}");

    let (ok, _, err) = run(&[
        "certificate",
        "apply",
        "--id",
        "api",
        "--host",
        "api.example.test",
        "--cert-file",
        &api_cert,
        "--key-file",
        &api_key,
    ]);
    assert!(ok, "{err}");
    let served = eventually(Duration::from_secs(10), || async {
        handshake(&https, "api.example.test", &ca_der).await.then_some(())
    })
    .await;
    assert!(served.is_some(), "the referenced certificate is served for its host");
    assert!(handshake(&https, "localhost", &ca_der).await, "the node's own certificate still is");

    let (ok, _, err) = run(&[
        "certificate",
        "apply",
        "--id",
        "bad",
        "--host",
        "x.example.test",
        "--cert-file",
        "relative.crt",
        "--key-file",
        "/k",
    ]);
    assert!(!ok && err.contains("cert_file") && err.contains("absolute"), "{err}");
    let (ok, out, _) = run(&["-o", "json", "certificate", "list"]);
    assert!(ok && out.contains("\"api\"") && !out.contains("\"bad\""), "{out}");
}
