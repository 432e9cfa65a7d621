//! TLS on the client-facing listener (rustls).
//!
//! Certificates and keys are files on the node (PEM), named in the node's
//! config, never in the replicated state. A certificate serves the host
//! names listed with it: exact names first, then `*.suffix` wildcards (one
//! label, as certificates cover), and
//! the first certificate when the client sends no SNI or an unknown name.
//! TLS 1.3 and 1.2 only (1.3 is preferred by rustls), ALPN `h2` and
//! `http/1.1`. With a client CA, client certificates are verified
//! (`optional` or `required`) and the verified certificate's SHA-256
//! fingerprint travels with every request of the connection.
//!
//! Reload: [`TlsSource::reload_if_changed`] re-reads the files when their
//! modification time changes; a file that fails to load keeps the old
//! configuration in service (and logs why). New connections get the new
//! certificates; open connections keep the session they have.

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};
use std::time::SystemTime;

use arc_swap::ArcSwap;
use rustls::crypto::CryptoProvider;
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, PrivateKeyDer};
use rustls::server::{ClientHello, ResolvesServerCert, WebPkiClientVerifier};
use rustls::sign::CertifiedKey;
use rustls::ServerConfig;

/// One certificate and the host names it serves.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct CertSpec {
    pub hosts: Vec<String>,
    pub cert_file: PathBuf,
    pub key_file: PathBuf,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ClientAuth {
    /// A client may present a certificate; if it does, it must verify.
    Optional,
    /// Every client must present a certificate that verifies.
    Required,
}

/// TLS settings of a listener, from the node's config.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct TlsSettings {
    pub certificates: Vec<CertSpec>,
    pub client_ca_file: Option<PathBuf>,
    pub client_auth: ClientAuth,
}

#[derive(Debug, thiserror::Error)]
pub enum TlsError {
    #[error("no certificate configured")]
    NoCertificate,
    #[error("{path}: {message}")]
    File { path: String, message: String },
    #[error("TLS configuration: {0}")]
    Config(String),
}

fn file_err(path: &Path, message: impl ToString) -> TlsError {
    TlsError::File { path: path.display().to_string(), message: message.to_string() }
}

/// The verified client certificate of a connection.
#[derive(Clone, Debug)]
pub struct ClientIdentity {
    /// Lower-case hex SHA-256 of the DER certificate.
    pub fingerprint_sha256: String,
    pub der: Arc<Vec<u8>>,
    /// DNS, URI and e-mail subject alternative names (at most [`MAX_CERT_NAMES`]).
    pub sans: Vec<String>,
    /// The subject's common name.
    pub cn: Option<String>,
}

/// Most subject alternative names kept from a client certificate.
pub const MAX_CERT_NAMES: usize = 16;

impl ClientIdentity {
    /// The identity of a certificate rustls has verified.
    pub fn from_der(der: &[u8]) -> Self {
        let digest = ring::digest::digest(&ring::digest::SHA256, der);
        let fingerprint_sha256 = digest.as_ref().iter().map(|b| format!("{b:02x}")).collect();
        let (sans, cn) = names(der);
        Self { fingerprint_sha256, der: Arc::new(der.to_vec()), sans, cn }
    }

    /// The identity keys a consumer's `certificates` may name, most
    /// specific first: the fingerprint, then each SAN, then the CN.
    pub fn identity_keys(&self) -> impl Iterator<Item = String> + '_ {
        std::iter::once(format!("sha256:{}", self.fingerprint_sha256))
            .chain(self.sans.iter().map(|s| format!("san:{s}")))
            .chain(self.cn.iter().map(|c| format!("cn:{c}")))
    }
}

fn names(der: &[u8]) -> (Vec<String>, Option<String>) {
    use x509_parser::extensions::GeneralName;
    let Ok((_, cert)) = x509_parser::parse_x509_certificate(der) else { return (Vec::new(), None) };
    let mut sans = Vec::new();
    if let Ok(Some(ext)) = cert.subject_alternative_name() {
        for name in &ext.value.general_names {
            let text = match name {
                GeneralName::DNSName(s) | GeneralName::URI(s) | GeneralName::RFC822Name(s) => *s,
                _ => continue,
            };
            if sans.len() < MAX_CERT_NAMES && text.len() <= 256 {
                sans.push(text.to_string());
            }
        }
    }
    let cn = cert.subject().iter_common_name().next().and_then(|a| a.as_str().ok()).map(str::to_string);
    (sans, cn.filter(|c| c.len() <= 256))
}

pub fn provider() -> Arc<CryptoProvider> {
    Arc::new(rustls::crypto::ring::default_provider())
}

/// The certificates of a PEM CA file.
pub fn read_ca(path: &Path) -> Result<Vec<CertificateDer<'static>>, TlsError> {
    read_certs(path)
}

fn read_certs(path: &Path) -> Result<Vec<CertificateDer<'static>>, TlsError> {
    let certs: Vec<_> = CertificateDer::pem_file_iter(path)
        .map_err(|e| file_err(path, e))?
        .collect::<Result<_, _>>()
        .map_err(|e| file_err(path, e))?;
    if certs.is_empty() {
        return Err(file_err(path, "holds no PEM certificate"));
    }
    Ok(certs)
}

/// Picks the certificate for a client's SNI name.
#[derive(Debug)]
struct SniResolver {
    exact: HashMap<String, Arc<CertifiedKey>>,
    wildcard: HashMap<String, Arc<CertifiedKey>>,
    default: Arc<CertifiedKey>,
}

impl ResolvesServerCert for SniResolver {
    fn resolve(&self, hello: ClientHello<'_>) -> Option<Arc<CertifiedKey>> {
        let Some(name) = hello.server_name() else { return Some(self.default.clone()) };
        let name = name.to_ascii_lowercase();
        if let Some(k) = self.exact.get(&name) {
            return Some(k.clone());
        }
        // A wildcard certificate covers exactly one label (RFC 6125 §6.4.3).
        if let Some(k) = name.split_once('.').and_then(|(_, suffix)| self.wildcard.get(suffix)) {
            return Some(k.clone());
        }
        Some(self.default.clone())
    }
}

/// Builds a server config from the files the settings name.
pub fn load(settings: &TlsSettings) -> Result<ServerConfig, TlsError> {
    let provider = provider();
    let mut exact = HashMap::new();
    let mut wildcard = HashMap::new();
    let mut default = None;
    for spec in &settings.certificates {
        let certs = read_certs(&spec.cert_file)?;
        let key = PrivateKeyDer::from_pem_file(&spec.key_file).map_err(|e| file_err(&spec.key_file, e))?;
        let signing = provider.key_provider.load_private_key(key).map_err(|e| file_err(&spec.key_file, e))?;
        let certified = Arc::new(CertifiedKey::new(certs, signing));
        certified.keys_match().map_err(|e| file_err(&spec.key_file, format!("does not match its certificate: {e}")))?;
        for host in &spec.hosts {
            let host = host.to_ascii_lowercase();
            match host.strip_prefix("*.") {
                Some(suffix) => wildcard.entry(suffix.to_string()).or_insert_with(|| certified.clone()),
                None => exact.entry(host).or_insert_with(|| certified.clone()),
            };
        }
        default.get_or_insert(certified);
    }
    let default = default.ok_or(TlsError::NoCertificate)?;
    let builder = ServerConfig::builder_with_provider(provider.clone())
        .with_protocol_versions(&[&rustls::version::TLS13, &rustls::version::TLS12])
        .map_err(|e| TlsError::Config(e.to_string()))?;
    let builder = match &settings.client_ca_file {
        Some(ca) => {
            let mut roots = rustls::RootCertStore::empty();
            for cert in read_certs(ca)? {
                roots.add(cert).map_err(|e| file_err(ca, e))?;
            }
            let verifier = WebPkiClientVerifier::builder_with_provider(Arc::new(roots), provider);
            let verifier = match settings.client_auth {
                ClientAuth::Optional => verifier.allow_unauthenticated(),
                ClientAuth::Required => verifier,
            };
            builder.with_client_cert_verifier(verifier.build().map_err(|e| TlsError::Config(e.to_string()))?)
        }
        None => builder.with_no_client_auth(),
    };
    let mut config = builder.with_cert_resolver(Arc::new(SniResolver { exact, wildcard, default }));
    config.alpn_protocols = vec![b"h2".to_vec(), b"http/1.1".to_vec()];
    Ok(config)
}

/// The live server config of a TLS listener, reloadable from disk: the
/// node's own certificates, then the cluster's certificate references.
pub struct TlsSource {
    base: TlsSettings,
    settings: Mutex<TlsSettings>,
    current: ArcSwap<ServerConfig>,
    stamps: Mutex<Vec<Option<SystemTime>>>,
}

impl TlsSource {
    pub fn new(settings: TlsSettings) -> Result<Arc<Self>, TlsError> {
        let config = load(&settings)?;
        let stamps = Mutex::new(file_stamps(&settings));
        Ok(Arc::new(Self {
            base: settings.clone(),
            settings: Mutex::new(settings),
            current: ArcSwap::from_pointee(config),
            stamps,
        }))
    }

    /// Serves the node's certificates plus `replicated` (after them, so the
    /// node's first certificate stays the default). If any file does not
    /// load on this node, the certificates in service stay and the error says why.
    pub fn set_replicated(&self, replicated: Vec<CertSpec>) -> Result<(), TlsError> {
        let mut next = self.base.clone();
        next.certificates.extend(replicated);
        let config = load(&next)?;
        *self.stamps.lock().unwrap_or_else(|p| p.into_inner()) = file_stamps(&next);
        *self.settings.lock().unwrap_or_else(|p| p.into_inner()) = next;
        self.current.store(Arc::new(config));
        Ok(())
    }

    pub fn acceptor(&self) -> tokio_rustls::TlsAcceptor {
        tokio_rustls::TlsAcceptor::from(self.current.load_full())
    }

    /// Reloads when a file's modification time changed. Returns whether a
    /// new config is in service; a failed load keeps the old one.
    pub fn reload_if_changed(&self) -> bool {
        let settings = self.settings.lock().unwrap_or_else(|p| p.into_inner()).clone();
        let now = file_stamps(&settings);
        let mut stamps = self.stamps.lock().unwrap_or_else(|p| p.into_inner());
        if *stamps == now {
            return false;
        }
        *stamps = now;
        match load(&settings) {
            Ok(config) => {
                self.current.store(Arc::new(config));
                tracing::info!("TLS certificates reloaded");
                true
            }
            Err(e) => {
                tracing::error!(error = %e, "TLS reload failed; the previous certificates stay in service");
                false
            }
        }
    }
}

fn file_stamps(settings: &TlsSettings) -> Vec<Option<SystemTime>> {
    let files =
        settings.certificates.iter().flat_map(|c| [&c.cert_file, &c.key_file]).chain(settings.client_ca_file.as_ref());
    files.map(|f| std::fs::metadata(f).and_then(|m| m.modified()).ok()).collect()
}
