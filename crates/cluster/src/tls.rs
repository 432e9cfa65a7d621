//! Mutual TLS between the nodes of one cluster.
//!
//! Every node holds a certificate signed by the cluster's CA whose subject
//! alternative names carry the URI `spiffe://<cluster_name>/node/<id>` (and
//! the DNS names or IP addresses of its advertised addresses). On the Raft
//! listener a node accepts only clients that present such a certificate of
//! its own cluster; when it dials a peer it checks the peer's chain, that the
//! certificate names the host it dialled, and that it is a node certificate
//! of its cluster. The same identity is presented when nodes call each
//! other's admin API.
//!
//! Rotation: [`ClusterTls::reload_if_changed`] re-reads the three files; a
//! set that loads completely (parses, key matches, within its validity,
//! chains to the CA file, names this node) replaces the one in service for
//! new handshakes, while established connections keep their session. A bad
//! set is refused with the file and the reason, and the old one stays.
//! Resolvers and verifiers read the set in service on every handshake, so
//! the rustls configs are built once.

use std::fmt;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use arc_swap::ArcSwap;
use raftgate_model::NodeId;
use rustls::client::danger::{HandshakeSignatureValid, ServerCertVerified, ServerCertVerifier};
use rustls::client::{ResolvesClientCert, WebPkiServerVerifier};
use rustls::crypto::CryptoProvider;
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, PrivateKeyDer, ServerName, UnixTime};
use rustls::server::danger::{ClientCertVerified, ClientCertVerifier};
use rustls::server::{ClientHello, ResolvesServerCert, WebPkiClientVerifier};
use rustls::sign::CertifiedKey;
use rustls::{ClientConfig, DigitallySignedStruct, DistinguishedName, RootCertStore};
use rustls::{ServerConfig, SignatureScheme};

/// Default of `cluster_tls.reload_interval_ms`.
pub const DEFAULT_RELOAD_INTERVAL_MS: u64 = 10_000;
/// Largest certificate, key or CA file read (PEM).
const MAX_PEM_FILE_BYTES: u64 = 1 << 20;
/// Most URIs looked at in one certificate.
const MAX_URIS_CHECKED: usize = 16;

/// Where this node's cluster certificate, key and CA are, from its config.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct TlsFiles {
    pub cert_file: PathBuf,
    pub key_file: PathBuf,
    pub ca_file: PathBuf,
    pub reload_interval_ms: u64,
}

/// A problem with one of the files of `[cluster_tls]`.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("cluster_tls.{field} ({path}): {problem}")]
pub struct TlsFileError {
    pub field: &'static str,
    pub path: String,
    pub problem: String,
}

/// Why a certificate is not a node certificate of this cluster.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum NodeCertError {
    #[error("the certificate does not parse")]
    Unparseable,
    #[error("the certificate carries no spiffe://{cluster}/node/<id> URI: it is not a node certificate of cluster {cluster:?}")]
    NoNodeUri { cluster: String },
    #[error("the certificate is a node certificate of cluster {theirs:?} ({uri}), not of cluster {ours:?}")]
    OtherCluster { theirs: String, ours: String, uri: String },
    #[error("the certificate ({uri}) is not a node certificate of cluster {cluster:?}")]
    NotANode { uri: String, cluster: String },
    #[error("the certificate names more than one node of cluster {cluster:?}")]
    SeveralNodes { cluster: String },
}

/// The node id a certificate's `spiffe://<cluster>/node/<id>` URI names.
pub fn node_of_certificate(der: &[u8], cluster: &str) -> Result<NodeId, NodeCertError> {
    let (_, cert) = x509_parser::parse_x509_certificate(der).map_err(|_| NodeCertError::Unparseable)?;
    let uris: Vec<String> = match cert.subject_alternative_name() {
        Ok(Some(ext)) => ext
            .value
            .general_names
            .iter()
            .filter_map(|n| match n {
                x509_parser::extensions::GeneralName::URI(u) => Some(u.to_string()),
                _ => None,
            })
            .take(MAX_URIS_CHECKED)
            .collect(),
        Ok(None) => Vec::new(),
        Err(_) => return Err(NodeCertError::Unparseable),
    };
    node_of_uris(&uris, cluster)
}

/// The node named by `spiffe://<cluster>/node/<id>` among `uris`.
pub fn node_of_uris(uris: &[String], cluster: &str) -> Result<NodeId, NodeCertError> {
    let mut found = None;
    let mut other: Option<NodeCertError> = None;
    for uri in uris {
        let Some(rest) = uri.strip_prefix("spiffe://") else { continue };
        let (trust, path) = rest.split_once('/').unwrap_or((rest, ""));
        let node = path.strip_prefix("node/").and_then(|id| id.parse::<NodeId>().ok()).filter(|&id| id > 0);
        match (trust == cluster, node) {
            (true, Some(id)) => {
                if found.is_some_and(|f| f != id) {
                    return Err(NodeCertError::SeveralNodes { cluster: cluster.into() });
                }
                found = Some(id);
            }
            (true, None) => {
                other.get_or_insert(NodeCertError::NotANode { uri: uri.clone(), cluster: cluster.into() });
            }
            (false, _) => {
                other.get_or_insert(NodeCertError::OtherCluster {
                    theirs: trust.into(),
                    ours: cluster.into(),
                    uri: uri.clone(),
                });
            }
        }
    }
    found.ok_or_else(|| other.unwrap_or(NodeCertError::NoNodeUri { cluster: cluster.into() }))
}

/// One loaded set of files: what handshakes use.
struct Material {
    key: Arc<CertifiedKey>,
    client_verifier: Arc<dyn ClientCertVerifier>,
    server_verifier: Arc<WebPkiServerVerifier>,
    ca_pem: Vec<u8>,
    not_after: String,
    /// The files' contents, to notice a change.
    raw: [Vec<u8>; 3],
}

fn provider() -> Arc<CryptoProvider> {
    Arc::new(rustls::crypto::ring::default_provider())
}

fn read(field: &'static str, path: &Path) -> Result<Vec<u8>, TlsFileError> {
    let err = |problem: String| TlsFileError { field, path: path.display().to_string(), problem };
    let meta = std::fs::metadata(path).map_err(|e| err(format!("cannot read: {e}")))?;
    if meta.len() > MAX_PEM_FILE_BYTES {
        return Err(err(format!("is larger than {MAX_PEM_FILE_BYTES} bytes")));
    }
    std::fs::read(path).map_err(|e| err(format!("cannot read: {e}")))
}

fn read_all(files: &TlsFiles) -> Result<[Vec<u8>; 3], TlsFileError> {
    Ok([read("cert_file", &files.cert_file)?, read("key_file", &files.key_file)?, read("ca_file", &files.ca_file)?])
}

/// Checks and loads one set of files (`raw`: cert, key, CA) for `node` of
/// `cluster`, as of `now`.
fn load(
    files: &TlsFiles,
    cluster: &str,
    node: NodeId,
    raw: [Vec<u8>; 3],
    now: UnixTime,
) -> Result<Material, TlsFileError> {
    let err = |field: &'static str, path: &Path, problem: String| TlsFileError {
        field,
        path: path.display().to_string(),
        problem,
    };
    let cert_err = |problem: String| err("cert_file", &files.cert_file, problem);
    let chain: Vec<CertificateDer<'static>> = CertificateDer::pem_slice_iter(&raw[0])
        .collect::<Result<_, _>>()
        .map_err(|e| cert_err(format!("does not parse as PEM certificates: {e}")))?;
    let leaf = chain.first().ok_or_else(|| cert_err("holds no PEM certificate".into()))?.clone();
    let key = PrivateKeyDer::from_pem_slice(&raw[1])
        .map_err(|e| err("key_file", &files.key_file, format!("holds no usable PEM private key: {e}")))?;
    let cas: Vec<CertificateDer<'static>> = CertificateDer::pem_slice_iter(&raw[2])
        .collect::<Result<_, _>>()
        .map_err(|e| err("ca_file", &files.ca_file, format!("does not parse as PEM certificates: {e}")))?;
    if cas.is_empty() {
        return Err(err("ca_file", &files.ca_file, "holds no PEM certificate".into()));
    }
    let mut roots = RootCertStore::empty();
    for (i, ca) in cas.into_iter().enumerate() {
        roots
            .add(ca)
            .map_err(|e| err("ca_file", &files.ca_file, format!("CA certificate {} is not usable: {e}", i + 1)))?;
    }

    let (_, parsed) = x509_parser::parse_x509_certificate(&leaf)
        .map_err(|e| cert_err(format!("the certificate does not parse: {e}")))?;
    let validity = parsed.validity();
    let now_s = now.as_secs() as i64;
    if validity.not_after.timestamp() < now_s {
        return Err(cert_err(format!("the certificate expired on {}", validity.not_after)));
    }
    if validity.not_before.timestamp() > now_s {
        return Err(cert_err(format!("the certificate is not valid before {}", validity.not_before)));
    }
    let not_after = validity.not_after.to_string();
    match node_of_certificate(&leaf, cluster) {
        Ok(id) if id == node => {}
        Ok(id) => {
            return Err(cert_err(format!(
                "the certificate is for node {id} (spiffe://{cluster}/node/{id}), but node.id is {node}"
            )))
        }
        Err(e) => return Err(cert_err(format!("{e} (node.cluster_name)"))),
    }

    let provider = provider();
    let key = CertifiedKey::from_der(chain.clone(), key, &provider).map_err(|e| match e {
        rustls::Error::InconsistentKeys(_) => {
            err("key_file", &files.key_file, format!("does not match the certificate in {}", files.cert_file.display()))
        }
        e => err("key_file", &files.key_file, format!("is not usable: {e}")),
    })?;
    let roots = Arc::new(roots);
    let client_verifier = WebPkiClientVerifier::builder_with_provider(roots.clone(), provider.clone())
        .build()
        .map_err(|e| err("ca_file", &files.ca_file, format!("is not usable: {e}")))?;
    let server_verifier = WebPkiServerVerifier::builder_with_provider(roots, provider)
        .build()
        .map_err(|e| err("ca_file", &files.ca_file, format!("is not usable: {e}")))?;
    // This node's own certificate must pass what its peers will check.
    client_verifier
        .verify_client_cert(&leaf, &chain[1..], now)
        .map_err(|e| cert_err(format!("the certificate does not verify against {}: {e}", files.ca_file.display())))?;
    Ok(Material { key: Arc::new(key), client_verifier, server_verifier, ca_pem: raw[2].clone(), not_after, raw })
}

/// What [`ClusterTls::reload_if_changed`] did.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Reload {
    Unchanged,
    /// A new set is in service; its certificate's end of validity.
    Reloaded {
        not_after: String,
    },
    /// The new files were refused; the previous set stays in service.
    Refused(TlsFileError),
}

struct Shared {
    files: TlsFiles,
    cluster: String,
    node: NodeId,
    current: ArcSwap<Material>,
    provider: Arc<CryptoProvider>,
    /// The last refusal logged, so that a bad set is logged once, not every poll.
    last_refused: Mutex<Option<TlsFileError>>,
}

impl fmt::Debug for Shared {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("ClusterTls").field("cluster", &self.cluster).field("node", &self.node).finish()
    }
}

/// This node's cluster TLS: the set of files in service and the rustls
/// configs of the Raft listener and of dialling peers.
pub struct ClusterTls {
    shared: Arc<Shared>,
    server: Arc<ServerConfig>,
    client: Arc<ClientConfig>,
}

impl ClusterTls {
    /// Loads and checks the files for `node` of `cluster` (at start: any
    /// problem refuses the start).
    pub fn load(files: TlsFiles, cluster: &str, node: NodeId) -> Result<Arc<Self>, TlsFileError> {
        Self::load_at(files, cluster, node, UnixTime::now())
    }

    fn load_at(files: TlsFiles, cluster: &str, node: NodeId, now: UnixTime) -> Result<Arc<Self>, TlsFileError> {
        let raw = read_all(&files)?;
        let material = load(&files, cluster, node, raw, now)?;
        let provider = provider();
        let shared = Arc::new(Shared {
            files,
            cluster: cluster.to_string(),
            node,
            current: ArcSwap::from_pointee(material),
            provider: provider.clone(),
            last_refused: Mutex::new(None),
        });
        let config_err = |e: rustls::Error| TlsFileError {
            field: "cert_file",
            path: shared.files.cert_file.display().to_string(),
            problem: format!("TLS configuration: {e}"),
        };
        let mut server = ServerConfig::builder_with_provider(provider.clone())
            .with_safe_default_protocol_versions()
            .map_err(config_err)?
            .with_client_cert_verifier(Arc::new(NodeClientVerifier(shared.clone())))
            .with_cert_resolver(Arc::new(NodeIdentity(shared.clone())));
        server.alpn_protocols = vec![b"h2".to_vec()];
        let client =
            Self::client_config_with(&shared, Arc::new(NodeServerVerifier(shared.clone()))).map_err(config_err)?;
        Ok(Arc::new(Self { shared, server: Arc::new(server), client }))
    }

    fn client_config_with(
        shared: &Arc<Shared>,
        verifier: Arc<dyn ServerCertVerifier>,
    ) -> Result<Arc<ClientConfig>, rustls::Error> {
        let mut client = ClientConfig::builder_with_provider(shared.provider.clone())
            .with_safe_default_protocol_versions()?
            .dangerous()
            .with_custom_certificate_verifier(verifier)
            .with_client_cert_resolver(Arc::new(NodeIdentity(shared.clone())));
        client.alpn_protocols = vec![b"h2".to_vec()];
        Ok(Arc::new(client))
    }

    /// The config of the Raft listener: a node certificate of this cluster required.
    pub fn server_config(&self) -> Arc<ServerConfig> {
        self.server.clone()
    }

    /// The config for dialling peers' Raft listeners.
    pub fn client_config(&self) -> Arc<ClientConfig> {
        self.client.clone()
    }

    /// A config that verifies servers against the CAs in `ca_pem` (by host
    /// name only: the admin listeners' certificates) and presents this
    /// node's certificate.
    pub fn client_config_trusting(&self, ca_pem: &[u8]) -> Result<Arc<ClientConfig>, String> {
        let mut roots = RootCertStore::empty();
        for ca in CertificateDer::pem_slice_iter(ca_pem) {
            roots.add(ca.map_err(|e| e.to_string())?).map_err(|e| e.to_string())?;
        }
        let verifier = WebPkiServerVerifier::builder_with_provider(Arc::new(roots), self.shared.provider.clone())
            .build()
            .map_err(|e| e.to_string())?;
        Self::client_config_with(&self.shared, verifier).map_err(|e| e.to_string())
    }

    pub fn cluster(&self) -> &str {
        &self.shared.cluster
    }

    /// The CA file in service (PEM).
    pub fn ca_pem(&self) -> Vec<u8> {
        self.shared.current.load().ca_pem.clone()
    }

    /// The end of validity of this node's certificate in service.
    pub fn not_after(&self) -> String {
        self.shared.current.load().not_after.clone()
    }

    pub fn reload_interval(&self) -> Duration {
        Duration::from_millis(self.shared.files.reload_interval_ms)
    }

    /// Re-reads the files; puts a changed set that loads in service, or
    /// refuses it (logged once per distinct problem) and keeps the old one.
    pub fn reload_if_changed(&self) -> Reload {
        self.reload_at(UnixTime::now())
    }

    fn reload_at(&self, now: UnixTime) -> Reload {
        let s = &self.shared;
        let loaded = read_all(&s.files).and_then(|raw| {
            if raw == s.current.load().raw {
                return Ok(None);
            }
            load(&s.files, &s.cluster, s.node, raw, now).map(Some)
        });
        let mut last = s.last_refused.lock().unwrap_or_else(|p| p.into_inner());
        match loaded {
            Ok(None) => Reload::Unchanged,
            Ok(Some(m)) => {
                let not_after = m.not_after.clone();
                s.current.store(Arc::new(m));
                *last = None;
                tracing::info!(not_after = %not_after, cert_file = %s.files.cert_file.display(), "cluster TLS: new certificate set in service for new connections");
                Reload::Reloaded { not_after }
            }
            Err(e) => {
                if last.as_ref() != Some(&e) {
                    tracing::error!(error = %e, "cluster TLS: the changed files are refused; the previous certificate set stays in service");
                    *last = Some(e.clone());
                }
                Reload::Refused(e)
            }
        }
    }

    /// Polls the files every `reload_interval_ms` for the life of the node.
    pub async fn run_reloader(self: Arc<Self>) {
        let mut tick = tokio::time::interval(self.reload_interval());
        tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        tick.tick().await;
        loop {
            tick.tick().await;
            let this = self.clone();
            // File reads block: off the runtime's workers.
            let _ = tokio::task::spawn_blocking(move || this.reload_if_changed()).await;
        }
    }
}

fn peer_error(e: NodeCertError) -> rustls::Error {
    // `General` shows its message as is (an `Other` certificate error would be shown as Debug).
    rustls::Error::General(format!("peer certificate refused: {e}"))
}

/// Presents this node's certificate in service (as server and as client).
#[derive(Debug)]
struct NodeIdentity(Arc<Shared>);

impl ResolvesServerCert for NodeIdentity {
    fn resolve(&self, _hello: ClientHello<'_>) -> Option<Arc<CertifiedKey>> {
        Some(self.0.current.load().key.clone())
    }
}

impl ResolvesClientCert for NodeIdentity {
    fn resolve(&self, _hints: &[&[u8]], _schemes: &[SignatureScheme]) -> Option<Arc<CertifiedKey>> {
        Some(self.0.current.load().key.clone())
    }

    fn has_certs(&self) -> bool {
        true
    }
}

/// The Raft listener's check of a client: chains to the CA in service and
/// is a node certificate of this cluster.
#[derive(Debug)]
struct NodeClientVerifier(Arc<Shared>);

impl ClientCertVerifier for NodeClientVerifier {
    fn root_hint_subjects(&self) -> &[DistinguishedName] {
        &[]
    }

    fn client_auth_mandatory(&self) -> bool {
        true
    }

    fn verify_client_cert(
        &self,
        end_entity: &CertificateDer<'_>,
        intermediates: &[CertificateDer<'_>],
        now: UnixTime,
    ) -> Result<ClientCertVerified, rustls::Error> {
        self.0.current.load().client_verifier.verify_client_cert(end_entity, intermediates, now)?;
        node_of_certificate(end_entity, &self.0.cluster).map_err(peer_error)?;
        Ok(ClientCertVerified::assertion())
    }

    fn verify_tls12_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        rustls::crypto::verify_tls12_signature(message, cert, dss, &self.0.provider.signature_verification_algorithms)
    }

    fn verify_tls13_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        rustls::crypto::verify_tls13_signature(message, cert, dss, &self.0.provider.signature_verification_algorithms)
    }

    fn supported_verify_schemes(&self) -> Vec<SignatureScheme> {
        self.0.provider.signature_verification_algorithms.supported_schemes()
    }
}

/// A dialling node's check of a peer: chains to the CA in service, names
/// the host dialled, and is a node certificate of this cluster.
#[derive(Debug)]
struct NodeServerVerifier(Arc<Shared>);

impl ServerCertVerifier for NodeServerVerifier {
    fn verify_server_cert(
        &self,
        end_entity: &CertificateDer<'_>,
        intermediates: &[CertificateDer<'_>],
        server_name: &ServerName<'_>,
        ocsp_response: &[u8],
        now: UnixTime,
    ) -> Result<ServerCertVerified, rustls::Error> {
        let verifier = self.0.current.load().server_verifier.clone();
        verifier.verify_server_cert(end_entity, intermediates, server_name, ocsp_response, now)?;
        node_of_certificate(end_entity, &self.0.cluster).map_err(peer_error)?;
        Ok(ServerCertVerified::assertion())
    }

    fn verify_tls12_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        rustls::crypto::verify_tls12_signature(message, cert, dss, &self.0.provider.signature_verification_algorithms)
    }

    fn verify_tls13_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        rustls::crypto::verify_tls13_signature(message, cert, dss, &self.0.provider.signature_verification_algorithms)
    }

    fn supported_verify_schemes(&self) -> Vec<SignatureScheme> {
        self.0.provider.signature_verification_algorithms.supported_schemes()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use rcgen::{
        BasicConstraints, CertificateParams, DnType, ExtendedKeyUsagePurpose, IsCa, Issuer, KeyPair, KeyUsagePurpose,
        SanType,
    };

    struct Ca {
        pem: String,
        issuer: Issuer<'static, KeyPair>,
    }

    fn ca(name: &str) -> Ca {
        let key = KeyPair::generate().unwrap();
        let mut p = CertificateParams::new(Vec::<String>::new()).unwrap();
        p.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
        p.distinguished_name.push(DnType::CommonName, name);
        p.key_usages = vec![KeyUsagePurpose::KeyCertSign, KeyUsagePurpose::CrlSign];
        let pem = p.self_signed(&key).unwrap().pem();
        Ca { pem, issuer: Issuer::new(p, key) }
    }

    /// A node certificate and key (PEM) for `uri`, valid from `from` to `to` (days from now).
    fn leaf(ca: &Ca, uri: &str, from: i64, to: i64) -> (String, String) {
        let key = KeyPair::generate().unwrap();
        let mut p = CertificateParams::new(vec!["localhost".to_string(), "127.0.0.1".to_string()]).unwrap();
        p.subject_alt_names.push(SanType::URI(uri.try_into().unwrap()));
        p.extended_key_usages = vec![ExtendedKeyUsagePurpose::ServerAuth, ExtendedKeyUsagePurpose::ClientAuth];
        let day = 86_400;
        let now = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).unwrap().as_secs() as i64;
        p.not_before = rcgen::date_time_ymd(1970, 1, 1) + std::time::Duration::from_secs((now + from * day) as u64);
        p.not_after = rcgen::date_time_ymd(1970, 1, 1) + std::time::Duration::from_secs((now + to * day) as u64);
        (p.signed_by(&key, &ca.issuer).unwrap().pem(), key.serialize_pem())
    }

    fn write(dir: &Path, cert: &str, key: &str, ca: &str) -> TlsFiles {
        std::fs::write(dir.join("node.crt"), cert).unwrap();
        std::fs::write(dir.join("node.key"), key).unwrap();
        std::fs::write(dir.join("ca.pem"), ca).unwrap();
        TlsFiles {
            cert_file: dir.join("node.crt"),
            key_file: dir.join("node.key"),
            ca_file: dir.join("ca.pem"),
            reload_interval_ms: 1_000,
        }
    }

    #[test]
    fn only_a_node_uri_of_this_cluster_names_a_node() {
        let uris = |u: &[&str]| u.iter().map(|s| s.to_string()).collect::<Vec<_>>();
        assert_eq!(node_of_uris(&uris(&["spiffe://prod/node/3"]), "prod"), Ok(3));
        assert_eq!(node_of_uris(&uris(&["https://x", "spiffe://prod/node/3"]), "prod"), Ok(3));
        assert!(matches!(
            node_of_uris(&uris(&["spiffe://staging/node/3"]), "prod"),
            Err(NodeCertError::OtherCluster { theirs, .. }) if theirs == "staging"
        ));
        assert!(matches!(
            node_of_uris(&uris(&["spiffe://prod/operator/alice"]), "prod"),
            Err(NodeCertError::NotANode { .. })
        ));
        for bad in ["spiffe://prod/node/0", "spiffe://prod/node/x", "spiffe://prod/node/", "spiffe://prod"] {
            assert!(node_of_uris(&uris(&[bad]), "prod").is_err(), "{bad}");
        }
        assert!(matches!(node_of_uris(&[], "prod"), Err(NodeCertError::NoNodeUri { .. })));
        assert!(matches!(
            node_of_uris(&uris(&["spiffe://prod/node/1", "spiffe://prod/node/2"]), "prod"),
            Err(NodeCertError::SeveralNodes { .. })
        ));
        // A prefix of the cluster name is another cluster.
        assert!(node_of_uris(&uris(&["spiffe://prod2/node/1"]), "prod").is_err());
    }

    #[test]
    fn the_uri_is_read_from_the_certificate() {
        let ca = ca("test");
        let (cert, _) = leaf(&ca, "spiffe://prod/node/7", -1, 30);
        let der = CertificateDer::from_pem_slice(cert.as_bytes()).unwrap();
        assert_eq!(node_of_certificate(&der, "prod"), Ok(7));
        assert!(node_of_certificate(&der, "other").is_err());
        assert_eq!(node_of_certificate(b"garbage", "prod"), Err(NodeCertError::Unparseable));
    }

    #[test]
    fn a_bad_set_at_start_names_the_field_and_the_problem() {
        let dir = tempfile::tempdir().unwrap();
        let authority = ca("test");
        let start = |cert: &str, key: &str, ca: &str| {
            let files = write(dir.path(), cert, key, ca);
            ClusterTls::load(files, "prod", 1).map(|_| ()).unwrap_err()
        };
        let (good, key) = leaf(&authority, "spiffe://prod/node/1", -1, 30);
        let (_, other_key) = leaf(&authority, "spiffe://prod/node/1", -1, 30);
        let e = start(&good, &other_key, &authority.pem);
        assert_eq!(e.field, "key_file", "{e}");
        assert!(e.problem.contains("does not match"), "{e}");
        let (expired, expired_key) = leaf(&authority, "spiffe://prod/node/1", -30, -1);
        let e = start(&expired, &expired_key, &authority.pem);
        assert!(e.field == "cert_file" && e.problem.contains("expired"), "{e}");
        let (early, early_key) = leaf(&authority, "spiffe://prod/node/1", 2, 30);
        assert!(start(&early, &early_key, &authority.pem).problem.contains("not valid before"));
        let (two, two_key) = leaf(&authority, "spiffe://prod/node/2", -1, 30);
        assert!(start(&two, &two_key, &authority.pem).problem.contains("node.id is 1"));
        let (staging, staging_key) = leaf(&authority, "spiffe://staging/node/1", -1, 30);
        assert!(start(&staging, &staging_key, &authority.pem).problem.contains("\"staging\""));
        let e = start(&good, &key, &ca("another").pem);
        assert!(e.field == "cert_file" && e.problem.contains("does not verify"), "{e}");
        assert_eq!(start("not pem", &key, &authority.pem).field, "cert_file");
        assert_eq!(start(&good, "not pem", &authority.pem).field, "key_file");
        assert_eq!(start(&good, &key, "").field, "ca_file");
        let missing =
            TlsFiles { cert_file: dir.path().join("nope.crt"), ..write(dir.path(), &good, &key, &authority.pem) };
        let e = ClusterTls::load(missing, "prod", 1).map(|_| ()).unwrap_err();
        assert!(e.field == "cert_file" && e.problem.contains("cannot read"), "{e}");
    }

    #[test]
    fn a_bad_new_set_is_refused_and_the_old_one_stays_in_service() {
        let dir = tempfile::tempdir().unwrap();
        let authority = ca("test");
        let (cert, key) = leaf(&authority, "spiffe://prod/node/1", -1, 30);
        let tls = ClusterTls::load(write(dir.path(), &cert, &key, &authority.pem), "prod", 1).unwrap();
        let before = tls.not_after();
        assert_eq!(tls.reload_if_changed(), Reload::Unchanged);
        // A key that does not match the certificate: refused, old set kept.
        let (new_cert, new_key) = leaf(&authority, "spiffe://prod/node/1", -1, 60);
        std::fs::write(dir.path().join("node.crt"), &new_cert).unwrap();
        assert!(matches!(tls.reload_if_changed(), Reload::Refused(e) if e.field == "key_file"));
        assert_eq!(tls.not_after(), before);
        assert!(Arc::ptr_eq(&tls.shared.current.load().key, &tls.shared.current.load().key));
        let key_in_service = tls.shared.current.load().key.cert[0].clone();
        assert_eq!(key_in_service, CertificateDer::from_pem_slice(cert.as_bytes()).unwrap());
        // Unparseable: refused too.
        std::fs::write(dir.path().join("node.key"), "garbage").unwrap();
        assert!(matches!(tls.reload_if_changed(), Reload::Refused(e) if e.field == "key_file"));
        // The matching key arrives: the new set is in service.
        std::fs::write(dir.path().join("node.key"), &new_key).unwrap();
        assert!(matches!(tls.reload_if_changed(), Reload::Reloaded { .. }));
        assert_ne!(tls.not_after(), before);
        // An expired set is refused.
        let (old, old_key) = leaf(&authority, "spiffe://prod/node/1", -30, -1);
        write(dir.path(), &old, &old_key, &authority.pem);
        assert!(matches!(tls.reload_if_changed(), Reload::Refused(e) if e.problem.contains("expired")));
        assert_eq!(tls.shared.current.load().key.cert[0], CertificateDer::from_pem_slice(new_cert.as_bytes()).unwrap());
    }

    /// One TLS handshake between two nodes' configs over an in-memory pipe.
    async fn handshake(server: &ClusterTls, client: &ClusterTls) -> Result<(), String> {
        let (a, b) = tokio::io::duplex(64 * 1024);
        let acceptor = tokio_rustls::TlsAcceptor::from(server.server_config());
        let connector = tokio_rustls::TlsConnector::from(client.client_config());
        let name = ServerName::try_from("127.0.0.1").unwrap();
        let (s, c) = tokio::join!(acceptor.accept(a), connector.connect(name, b));
        match (s, c) {
            (Ok(_), Ok(_)) => Ok(()),
            (s, c) => {
                let text = |e: Option<std::io::Error>| e.map_or("ok".to_string(), |e| e.to_string());
                Err(format!("server: {}; client: {}", text(s.err()), text(c.err())))
            }
        }
    }

    #[tokio::test]
    async fn nodes_of_one_cluster_shake_hands_others_are_refused_with_the_reason() {
        let dirs: Vec<_> = (0..4).map(|_| tempfile::tempdir().unwrap()).collect();
        let authority = ca("test");
        let node = |dir: &Path, ca: &Ca, uri: &str, cluster: &str, id| {
            let (cert, key) = leaf(ca, uri, -1, 30);
            ClusterTls::load(write(dir, &cert, &key, &authority.pem), cluster, id)
        };
        let one = node(dirs[0].path(), &authority, "spiffe://prod/node/1", "prod", 1).unwrap();
        let two = node(dirs[1].path(), &authority, "spiffe://prod/node/2", "prod", 2).unwrap();
        handshake(&one, &two).await.unwrap();
        handshake(&two, &one).await.unwrap();
        let staging = node(dirs[2].path(), &authority, "spiffe://staging/node/3", "staging", 3).unwrap();
        let e = handshake(&one, &staging).await.unwrap_err();
        assert!(e.contains("cluster \"staging\""), "{e}");
        let e = handshake(&staging, &one).await.unwrap_err();
        assert!(e.contains("refused: the certificate is a node certificate of cluster \"staging\""), "{e}");
        // Another CA: its own files load (its CA file holds its CA), peers refuse it.
        let foreign = ca("foreign");
        let (cert, key) = leaf(&foreign, "spiffe://prod/node/4", -1, 30);
        let four = ClusterTls::load(write(dirs[3].path(), &cert, &key, &foreign.pem), "prod", 4).unwrap();
        let e = handshake(&one, &four).await.unwrap_err();
        assert!(e.to_lowercase().contains("unknown"), "{e}");
    }
}
