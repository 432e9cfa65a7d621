//! TLS on the data plane with certificates made by the test (rcgen):
//! SNI selection, ALPN (h2 and HTTP/1.1), client certificates (mTLS),
//! reload without dropping connections, HTTPS redirect and HSTS, and TLS to
//! upstreams verified against a CA.

mod support;

use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use http_body_util::BodyExt;
use hyper_util::rt::{TokioExecutor, TokioIo};
use raftgate_proxy::tls::{CertSpec, ClientAuth, TlsSettings, TlsSource};
use rcgen::{BasicConstraints, CertificateParams, DnType, ExtendedKeyUsagePurpose, IsCa, Issuer, KeyPair};
use rustls::pki_types::{CertificateDer, PrivateKeyDer, ServerName};
use serde_json::json;
use support::*;

struct Pki {
    dir: tempfile::TempDir,
    issuer: Issuer<'static, KeyPair>,
    ca_der: CertificateDer<'static>,
    ca_file: PathBuf,
}

struct Leaf {
    cert_file: PathBuf,
    key_file: PathBuf,
    der: CertificateDer<'static>,
    key_der: Vec<u8>,
}

impl Pki {
    fn new() -> Self {
        let dir = tempfile::tempdir().unwrap();
        let mut params = CertificateParams::new(Vec::<String>::new()).unwrap();
        params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
        params.distinguished_name.push(DnType::CommonName, "raftgate test CA");
        let key = KeyPair::generate().unwrap();
        let cert = params.self_signed(&key).unwrap();
        let ca_file = dir.path().join("ca.pem");
        std::fs::write(&ca_file, cert.pem()).unwrap();
        Self { issuer: Issuer::new(params, key), ca_der: cert.der().clone(), ca_file, dir }
    }

    fn leaf(&self, name: &str, sans: &[&str], client: bool) -> Leaf {
        let mut params = CertificateParams::new(sans.iter().map(|s| s.to_string()).collect::<Vec<_>>()).unwrap();
        params.distinguished_name.push(DnType::CommonName, name);
        params.extended_key_usages =
            vec![if client { ExtendedKeyUsagePurpose::ClientAuth } else { ExtendedKeyUsagePurpose::ServerAuth }];
        let key = KeyPair::generate().unwrap();
        let cert = params.signed_by(&key, &self.issuer).unwrap();
        let cert_file = self.dir.path().join(format!("{name}.crt"));
        let key_file = self.dir.path().join(format!("{name}.key"));
        std::fs::write(&cert_file, cert.pem()).unwrap();
        std::fs::write(&key_file, key.serialize_pem()).unwrap();
        Leaf { cert_file, key_file, der: cert.der().clone(), key_der: key.serialize_der() }
    }

    fn client_config(&self, alpn: &[&[u8]], cert: Option<&Leaf>) -> rustls::ClientConfig {
        let mut roots = rustls::RootCertStore::empty();
        roots.add(self.ca_der.clone()).unwrap();
        let builder = rustls::ClientConfig::builder_with_provider(raftgate_proxy::tls::provider())
            .with_safe_default_protocol_versions()
            .unwrap()
            .with_root_certificates(roots);
        let mut config = match cert {
            Some(leaf) => builder
                .with_client_auth_cert(vec![leaf.der.clone()], PrivateKeyDer::try_from(leaf.key_der.clone()).unwrap())
                .unwrap(),
            None => builder.with_no_client_auth(),
        };
        config.alpn_protocols = alpn.iter().map(|p| p.to_vec()).collect();
        config
    }
}

fn spec(hosts: &[&str], leaf: &Leaf) -> CertSpec {
    CertSpec {
        hosts: hosts.iter().map(|h| h.to_string()).collect(),
        cert_file: leaf.cert_file.clone(),
        key_file: leaf.key_file.clone(),
    }
}

type Tls = tokio_rustls::client::TlsStream<tokio::net::TcpStream>;

async fn tls_connect(addr: std::net::SocketAddr, config: rustls::ClientConfig, sni: &str) -> std::io::Result<Tls> {
    let tcp = tokio::net::TcpStream::connect(addr).await?;
    let name = ServerName::try_from(sni.to_string()).unwrap();
    tokio_rustls::TlsConnector::from(Arc::new(config)).connect(name, tcp).await
}

/// Sends GET `path` over an established TLS stream (h2 or HTTP/1.1 by ALPN).
async fn get_over(stream: Tls, host: &str, path: &str) -> Result<(u16, String, http::HeaderMap), String> {
    let h2 = stream.get_ref().1.alpn_protocol() == Some(b"h2");
    let io = TokioIo::new(stream);
    let req = http::Request::get(format!("https://{host}{path}")).header("host", host).body(full("")).unwrap();
    let resp = if h2 {
        let (mut send, conn) =
            hyper::client::conn::http2::handshake(TokioExecutor::new(), io).await.map_err(|e| e.to_string())?;
        tokio::spawn(conn);
        send.send_request(req).await.map_err(|e| e.to_string())?
    } else {
        let (mut send, conn) = hyper::client::conn::http1::handshake(io).await.map_err(|e| e.to_string())?;
        tokio::spawn(conn);
        send.send_request(req).await.map_err(|e| e.to_string())?
    };
    let status = resp.status().as_u16();
    let headers = resp.headers().clone();
    let body = resp.into_body().collect().await.map_err(|e| e.to_string())?.to_bytes();
    Ok((status, String::from_utf8_lossy(&body).into_owned(), headers))
}

fn peer_der(stream: &Tls) -> CertificateDer<'static> {
    stream.get_ref().1.peer_certificates().unwrap()[0].clone().into_owned()
}

fn upstream(id: &str, addr: std::net::SocketAddr) -> serde_json::Value {
    json!({"id": id, "targets": [{"addr": addr.to_string()}]})
}

#[tokio::test]
async fn sni_selects_the_certificate_and_alpn_picks_h2_or_http1() {
    let pki = Pki::new();
    let a = pki.leaf("a", &["a.example.com"], false);
    let b = pki.leaf("b", &["*.b.example.com"], false);
    let settings = TlsSettings {
        certificates: vec![spec(&["a.example.com"], &a), spec(&["*.b.example.com"], &b)],
        client_ca_file: None,
        client_auth: ClientAuth::Optional,
    };
    let up = TestUpstream::echo("api").await;
    let gw = TestGateway::start_full(
        json!([{"id": "r", "upstream": "api", "hsts_max_age_s": 31536000}]),
        json!([upstream("api", up.addr)]),
        Default::default(),
        Some(TlsSource::new(settings).unwrap()),
        None,
    )
    .await;

    let s = tls_connect(gw.addr, pki.client_config(&[b"h2", b"http/1.1"], None), "x.b.example.com").await.unwrap();
    assert_eq!(peer_der(&s), b.der, "wildcard certificate for x.b.example.com");
    assert_eq!(s.get_ref().1.alpn_protocol(), Some(&b"h2"[..]));
    assert_eq!(s.get_ref().1.protocol_version(), Some(rustls::ProtocolVersion::TLSv1_3));
    let (status, body, headers) = get_over(s, "x.b.example.com", "/hello").await.unwrap();
    assert_eq!(status, 200);
    let v: serde_json::Value = serde_json::from_str(&body).unwrap();
    assert_eq!(v["headers"]["x-forwarded-proto"], "https");
    assert_eq!(headers["strict-transport-security"], "max-age=31536000");

    let s = tls_connect(gw.addr, pki.client_config(&[b"http/1.1"], None), "a.example.com").await.unwrap();
    assert_eq!(peer_der(&s), a.der);
    assert_eq!(s.get_ref().1.alpn_protocol(), Some(&b"http/1.1"[..]));
    assert_eq!(get_over(s, "a.example.com", "/x").await.unwrap().0, 200);

    // An unknown name gets the first certificate, which the client refuses.
    let err = tls_connect(gw.addr, pki.client_config(&[], None), "unknown.org").await.unwrap_err();
    assert!(err.to_string().contains("certificate"), "{err}");

    // TLS 1.2 still works; older versions do not exist in rustls.
    let mut roots = rustls::RootCertStore::empty();
    roots.add(pki.ca_der.clone()).unwrap();
    let v12 = rustls::ClientConfig::builder_with_provider(raftgate_proxy::tls::provider())
        .with_protocol_versions(&[&rustls::version::TLS12])
        .unwrap()
        .with_root_certificates(roots)
        .with_no_client_auth();
    let s = tls_connect(gw.addr, v12, "a.example.com").await.unwrap();
    assert_eq!(s.get_ref().1.protocol_version(), Some(rustls::ProtocolVersion::TLSv1_2));
}

#[tokio::test]
async fn mtls_refuses_clients_without_a_certificate_and_forwards_the_verified_hash() {
    let pki = Pki::new();
    let server = pki.leaf("server", &["api.example.com"], false);
    let client = pki.leaf("client", &["client-1"], true);
    let settings = TlsSettings {
        certificates: vec![spec(&["api.example.com"], &server)],
        client_ca_file: Some(pki.ca_file.clone()),
        client_auth: ClientAuth::Required,
    };
    let up = TestUpstream::echo("api").await;
    let gw = TestGateway::start_full(
        json!([{"id": "r", "upstream": "api"}]),
        json!([upstream("api", up.addr)]),
        Default::default(),
        Some(TlsSource::new(settings).unwrap()),
        None,
    )
    .await;
    // Without a certificate the handshake (or the first read, with TLS 1.3) fails.
    let anonymous = match tls_connect(gw.addr, pki.client_config(&[b"http/1.1"], None), "api.example.com").await {
        Ok(s) => get_over(s, "api.example.com", "/x").await.map(|r| r.0),
        Err(e) => Err(e.to_string()),
    };
    assert!(anonymous.is_err(), "a client without a certificate was served: {anonymous:?}");

    // A certificate from another CA is refused too.
    let other = Pki::new().leaf("intruder", &["client-2"], true);
    let forged = match tls_connect(gw.addr, pki.client_config(&[b"http/1.1"], Some(&other)), "api.example.com").await {
        Ok(s) => get_over(s, "api.example.com", "/x").await.map(|r| r.0),
        Err(e) => Err(e.to_string()),
    };
    assert!(forged.is_err(), "a certificate from an unknown CA was accepted: {forged:?}");

    let s = tls_connect(gw.addr, pki.client_config(&[b"http/1.1"], Some(&client)), "api.example.com").await.unwrap();
    let (status, body, _) = get_over(s, "api.example.com", "/x").await.unwrap();
    assert_eq!(status, 200);
    let v: serde_json::Value = serde_json::from_str(&body).unwrap();
    let expected = raftgate_proxy::tls::ClientIdentity::from_der(client.der.as_ref()).fingerprint_sha256;
    assert_eq!(v["headers"]["x-forwarded-client-cert"], format!("Hash={expected}"));
}

#[tokio::test]
async fn a_client_cannot_forge_the_client_certificate_header() {
    let up = TestUpstream::echo("api").await;
    let gw = TestGateway::start(json!([{"id": "r", "upstream": "api"}]), json!([upstream("api", up.addr)])).await;
    let req = http::Request::get(gw.url("/x")).header("x-forwarded-client-cert", "Hash=forged").body(full("")).unwrap();
    let v = send(&http1_client(), req).await.json();
    assert!(v["headers"].get("x-forwarded-client-cert").is_none(), "{v}");
}

#[tokio::test]
async fn certificates_reload_without_dropping_open_connections() {
    let pki = Pki::new();
    let first = pki.leaf("first", &["api.example.com"], false);
    let dir = tempfile::tempdir().unwrap();
    let cert_file = dir.path().join("live.crt");
    let key_file = dir.path().join("live.key");
    std::fs::copy(&first.cert_file, &cert_file).unwrap();
    std::fs::copy(&first.key_file, &key_file).unwrap();
    let settings = TlsSettings {
        certificates: vec![CertSpec {
            hosts: vec!["api.example.com".into()],
            cert_file: cert_file.clone(),
            key_file: key_file.clone(),
        }],
        client_ca_file: None,
        client_auth: ClientAuth::Optional,
    };
    let source = TlsSource::new(settings).unwrap();
    let up = TestUpstream::echo("api").await;
    let gw = TestGateway::start_full(
        json!([{"id": "r", "upstream": "api"}]),
        json!([upstream("api", up.addr)]),
        Default::default(),
        Some(source.clone()),
        None,
    )
    .await;

    // An open HTTP/2 connection made with the first certificate.
    let s = tls_connect(gw.addr, pki.client_config(&[b"h2"], None), "api.example.com").await.unwrap();
    assert_eq!(peer_der(&s), first.der);
    let (mut sender, conn) =
        hyper::client::conn::http2::handshake(TokioExecutor::new(), TokioIo::new(s)).await.unwrap();
    tokio::spawn(conn);

    // A broken file keeps the old certificate in service.
    std::fs::write(&cert_file, "not a certificate").unwrap();
    assert!(!source.reload_if_changed());
    let s = tls_connect(gw.addr, pki.client_config(&[b"h2"], None), "api.example.com").await.unwrap();
    assert_eq!(peer_der(&s), first.der);

    let second = pki.leaf("second", &["api.example.com"], false);
    std::thread::sleep(Duration::from_millis(20));
    std::fs::copy(&second.cert_file, &cert_file).unwrap();
    std::fs::copy(&second.key_file, &key_file).unwrap();
    assert!(source.reload_if_changed());
    let s = tls_connect(gw.addr, pki.client_config(&[b"h2"], None), "api.example.com").await.unwrap();
    assert_eq!(peer_der(&s), second.der, "new connections get the new certificate");

    let req = http::Request::get("https://api.example.com/still-open").body(full("")).unwrap();
    let resp = sender.send_request(req).await.expect("the old connection still works");
    assert_eq!(resp.status(), 200);
}

#[tokio::test]
async fn plain_http_is_redirected_to_https_when_the_route_asks() {
    let up = TestUpstream::echo("api").await;
    let gw = TestGateway::start_full(
        json!([{"id": "secure", "upstream": "api", "paths": [{"prefix": "/secure"}], "https_redirect": true},
               {"id": "open", "upstream": "api", "paths": [{"prefix": "/open"}]}]),
        json!([upstream("api", up.addr)]),
        Default::default(),
        None,
        Some(8443),
    )
    .await;
    let req =
        http::Request::get(gw.url("/secure/a/../b?x=1")).header("host", "Shop.Example.com").body(full("")).unwrap();
    let a = send(&http1_client(), req).await;
    assert_eq!(a.status, 308);
    assert_eq!(a.headers["location"], "https://shop.example.com:8443/secure/b?x=1");
    assert_eq!(get(&gw.url("/open")).await.status, 200);
}

#[tokio::test]
async fn upstream_tls_is_verified_against_the_ca_with_an_sni_override() {
    let pki = Pki::new();
    let leaf = pki.leaf("upstream", &["upstream.internal"], false);
    // A TLS upstream (h2 and HTTP/1.1 by ALPN) that echoes the protocol it got.
    let mut server = rustls::ServerConfig::builder_with_provider(raftgate_proxy::tls::provider())
        .with_safe_default_protocol_versions()
        .unwrap()
        .with_no_client_auth()
        .with_single_cert(vec![leaf.der.clone()], PrivateKeyDer::try_from(leaf.key_der.clone()).unwrap())
        .unwrap();
    server.alpn_protocols = vec![b"h2".to_vec(), b"http/1.1".to_vec()];
    let acceptor = tokio_rustls::TlsAcceptor::from(Arc::new(server));
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    tokio::spawn(async move {
        loop {
            let Ok((tcp, _)) = listener.accept().await else { continue };
            let acceptor = acceptor.clone();
            tokio::spawn(async move {
                let Ok(tls) = acceptor.accept(tcp).await else { return };
                let service = hyper::service::service_fn(|req: http::Request<hyper::body::Incoming>| async move {
                    Ok::<_, std::convert::Infallible>(hyper::Response::new(full(format!("tls {:?}", req.version()))))
                });
                let _ = hyper_util::server::conn::auto::Builder::new(TokioExecutor::new())
                    .serve_connection(TokioIo::new(tls), service)
                    .await;
            });
        }
    });
    let ca = pki.ca_file.to_str().unwrap();
    let gw = TestGateway::start(
        json!([{"id": "h1", "upstream": "h1", "paths": [{"prefix": "/h1"}]},
               {"id": "h2", "upstream": "h2", "paths": [{"prefix": "/h2"}]},
               {"id": "bad", "upstream": "bad", "paths": [{"prefix": "/bad"}]},
               {"id": "foreign", "upstream": "foreign", "paths": [{"prefix": "/foreign"}]}]),
        json!([
            {"id": "h1", "targets": [{"addr": addr.to_string()}], "tls": {"ca_file": ca, "server_name": "upstream.internal"}},
            {"id": "h2", "protocol": "h2", "targets": [{"addr": addr.to_string()}], "tls": {"ca_file": ca, "server_name": "upstream.internal"}},
            {"id": "bad", "retries": {"attempts": 0}, "targets": [{"addr": addr.to_string()}], "tls": {"ca_file": ca, "server_name": "other.internal"}},
            {"id": "foreign", "retries": {"attempts": 0}, "targets": [{"addr": addr.to_string()}], "tls": {"server_name": "upstream.internal"}}
        ]),
    )
    .await;
    let a = get(&gw.url("/h1")).await;
    assert_eq!((a.status, String::from_utf8_lossy(&a.body).as_ref()), (200, "tls HTTP/1.1"));
    let a = get(&gw.url("/h2")).await;
    assert_eq!((a.status, String::from_utf8_lossy(&a.body).as_ref()), (200, "tls HTTP/2.0"));
    assert_eq!(get(&gw.url("/bad")).await.status, 502, "a certificate for another name is refused");
    assert_eq!(get(&gw.url("/foreign")).await.status, 502, "a CA outside the public roots is refused");
}

#[tokio::test]
async fn a_verified_client_certificate_stands_for_its_consumer_until_revoked() {
    use raftgate_model::identity::{Digest, RevocationTarget};
    use raftgate_model::{Command, State};
    let pki = Pki::new();
    let server = pki.leaf("server", &["api.example.com"], false);
    let by_san = pki.leaf("svc-a", &["svc-a.internal"], true);
    let by_hash = pki.leaf("svc-b", &["svc-b.internal"], true);
    let unknown = pki.leaf("svc-c", &["svc-c.internal"], true);
    let settings = TlsSettings {
        certificates: vec![spec(&["api.example.com"], &server)],
        client_ca_file: Some(pki.ca_file.clone()),
        client_auth: ClientAuth::Required,
    };
    let up = TestUpstream::echo("api").await;
    let gw = TestGateway::start_full(
        json!([{"id": "r", "upstream": "api", "auth": {"mtls": true, "groups": ["internal"]}}]),
        json!([upstream("api", up.addr)]),
        Default::default(),
        Some(TlsSource::new(settings).unwrap()),
        None,
    )
    .await;
    let hash_b = raftgate_proxy::tls::ClientIdentity::from_der(by_hash.der.as_ref()).fingerprint_sha256;
    let mut state = State::default();
    for c in [
        json!({"id": "svc-a", "groups": ["internal"], "certificates": [{"san": "svc-a.internal"}]}),
        json!({"id": "svc-b", "groups": ["internal"], "certificates": [{"sha256": hash_b}]}),
    ] {
        state
            .apply(1, &Command::PutConsumer { consumer: serde_json::from_value(c).unwrap(), expected_revision: None })
            .unwrap();
    }
    let publish = |s: &State| {
        gw.gateway.publish_identity(
            s.identity_revision(),
            s.consumers(),
            s.api_keys(),
            s.cert_owners(),
            s.issuers(),
            s.plans(),
        );
        gw.gateway.revocations_applied(s, None);
    };
    publish(&state);
    let call = |leaf: &Leaf| {
        let config = pki.client_config(&[b"http/1.1"], Some(leaf));
        async move {
            let s = tls_connect(gw.addr, config, "api.example.com").await.unwrap();
            get_over(s, "api.example.com", "/x").await.unwrap()
        }
    };
    let (status, body, _) = call(&by_san).await;
    assert_eq!(status, 200, "{body}");
    let v: serde_json::Value = serde_json::from_str(&body).unwrap();
    assert_eq!(v["headers"]["x-consumer-id"], "svc-a", "the SAN maps to the consumer");
    let (status, body, _) = call(&by_hash).await;
    assert_eq!(status, 200);
    assert_eq!(serde_json::from_str::<serde_json::Value>(&body).unwrap()["headers"]["x-consumer-id"], "svc-b");
    let (status, _, headers) = call(&unknown).await;
    assert_eq!(status, 401, "a verified certificate no consumer claims is refused");
    assert!(headers.contains_key("www-authenticate"));

    state
        .apply(
            2,
            &Command::Revoke {
                target: RevocationTarget::Certificate { sha256: Digest::parse(&hash_b).unwrap() },
                until_ms: None,
                reason: String::new(),
            },
        )
        .unwrap();
    publish(&state);
    assert_eq!(call(&by_hash).await.0, 401, "a revoked fingerprint is refused");
    assert_eq!(call(&by_san).await.0, 200);
}
