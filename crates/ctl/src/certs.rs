//! `raftgatectl certs`: a cluster CA and the certificates nodes and
//! operators use, made offline (no node is contacted).
//!
//! A node certificate carries the DNS names and IP addresses the node is
//! reached at and the URI `spiffe://<cluster>/node/<id>`, for both server
//! and client authentication: it serves `[cluster_tls]` and `[admin.tls]`.
//! An operator certificate carries `spiffe://<cluster>/operator/<name>`
//! and is for client authentication only; admins list its SHA-256 with
//! `operator apply --certificate-sha256`. Keys are written with mode 0600,
//! every file through a temporary file and a rename, so that a node
//! reloading its files never reads half of one.

use std::fmt::Write as _;
use std::net::IpAddr;
use std::path::{Path, PathBuf};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use clap::{Args, Subcommand};
use rcgen::{
    BasicConstraints, CertificateParams, DnType, ExtendedKeyUsagePurpose, IsCa, Issuer, KeyPair, KeyUsagePurpose,
    PublicKeyData, SanType,
};
use sha2::{Digest, Sha256};

/// Longest validity `--days` and `--ca-days` accept.
const MAX_DAYS: u64 = 36_500;
/// Most nodes or operators one `certs init` makes.
const MAX_SUBJECTS: usize = 1_000;
/// Most host names or addresses on one node certificate.
const MAX_HOSTS: usize = 64;
/// Clock skew allowed for: certificates are valid from an hour ago.
const BACKDATE: Duration = Duration::from_secs(3_600);

#[derive(Subcommand)]
pub enum CertsCmd {
    /// Create a CA, a certificate per node and per operator in a new directory.
    #[command(
        after_help = "Example:\n  raftgatectl certs init --out ./pki --cluster prod \\\n    --node 1=n1.example.com,10.0.0.1 --node 2=n2.example.com --node 3=n3.example.com --operator alice"
    )]
    Init(InitArgs),
    /// Issue one more node certificate from an existing CA (a new or replaced node, or rotation).
    #[command(
        after_help = "Example:\n  raftgatectl certs node --ca-dir ./pki --cluster prod --id 4 --host n4.example.com --out ./pki --force"
    )]
    Node(NodeArgs),
}

#[derive(Args)]
pub struct InitArgs {
    /// Directory to write into (created if missing).
    #[arg(long)]
    out: PathBuf,
    /// The cluster's name (`node.cluster_name` of its nodes).
    #[arg(long)]
    cluster: String,
    /// `ID=HOST[,HOST…]`: a node and the DNS names or IP addresses it is reached at (repeat).
    #[arg(long = "node", required = true)]
    nodes: Vec<String>,
    /// An operator to make a client certificate for (repeat).
    #[arg(long = "operator")]
    operators: Vec<String>,
    /// Validity of the node and operator certificates, in days.
    #[arg(long, default_value_t = 365)]
    days: u64,
    /// Validity of the CA, in days.
    #[arg(long, default_value_t = 3_650)]
    ca_days: u64,
    /// Overwrite files that exist.
    #[arg(long)]
    force: bool,
}

#[derive(Args)]
pub struct NodeArgs {
    /// Directory holding ca.pem and ca.key (from `certs init`).
    #[arg(long)]
    ca_dir: PathBuf,
    #[arg(long)]
    cluster: String,
    /// The node's id (`node.id`).
    #[arg(long)]
    id: u64,
    /// A DNS name or IP address the node is reached at (repeat).
    #[arg(long = "host", required = true)]
    hosts: Vec<String>,
    #[arg(long, default_value_t = 365)]
    days: u64,
    /// Directory to write node-<id>.crt and node-<id>.key into.
    #[arg(long)]
    out: PathBuf,
    /// Overwrite node-<id>.crt and node-<id>.key if they exist (rotation).
    #[arg(long)]
    force: bool,
}

/// Runs a `certs` command; the error says what is wrong and changes nothing.
pub fn run(cmd: &CertsCmd) -> Result<(), String> {
    match cmd {
        CertsCmd::Init(a) => init(a),
        CertsCmd::Node(a) => node(a),
    }
}

/// One file to write.
struct Output {
    name: String,
    contents: String,
    secret: bool,
}

fn check_cluster(name: &str) -> Result<(), String> {
    let ok = !name.is_empty()
        && name.len() <= 64
        && name.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_');
    ok.then_some(())
        .ok_or_else(|| format!("--cluster {name:?}: must be 1 to 64 characters of A-Z, a-z, 0-9, '-' or '_'"))
}

fn check_days(flag: &str, days: u64) -> Result<(), String> {
    (1..=MAX_DAYS).contains(&days).then_some(()).ok_or_else(|| format!("{flag} must be between 1 and {MAX_DAYS}"))
}

/// A DNS name or IP address as a subject alternative name.
fn host_san(host: &str) -> Result<SanType, String> {
    if let Ok(ip) = host.parse::<IpAddr>() {
        return Ok(SanType::IpAddress(ip));
    }
    let label_ok = |l: &str| {
        !l.is_empty()
            && l.len() <= 63
            && l.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'-')
            && !l.starts_with('-')
            && !l.ends_with('-')
    };
    if host.len() > 253 || !host.split('.').all(label_ok) {
        return Err(format!("host {host:?} is neither a DNS name nor an IP address"));
    }
    Ok(SanType::DnsName(host.try_into().map_err(|_| format!("host {host:?} is not a DNS name"))?))
}

fn uri_san(uri: String) -> Result<SanType, String> {
    Ok(SanType::URI(uri.as_str().try_into().map_err(|_| format!("{uri:?} is not a valid URI name"))?))
}

/// Parses `ID=HOST[,HOST…]`.
fn parse_node(s: &str) -> Result<(u64, Vec<String>), String> {
    let (id, hosts) = s.split_once('=').ok_or_else(|| format!("--node {s:?}: expected ID=HOST[,HOST…]"))?;
    let id: u64 = id.trim().parse().map_err(|_| format!("--node {s:?}: node id {id:?} is not a number"))?;
    let hosts: Vec<String> = hosts.split(',').map(|h| h.trim().to_string()).filter(|h| !h.is_empty()).collect();
    Ok((id, hosts))
}

fn validity(params: &mut CertificateParams, days: u64) -> Result<(), String> {
    let now = SystemTime::now().duration_since(UNIX_EPOCH).map_err(|_| "the system clock is before 1970")?;
    let epoch = rcgen::date_time_ymd(1970, 1, 1);
    params.not_before = epoch + now.saturating_sub(BACKDATE);
    params.not_after = epoch + now + Duration::from_secs(days * 86_400);
    Ok(())
}

fn key_pair() -> Result<KeyPair, String> {
    KeyPair::generate().map_err(|e| format!("generating a key: {e}"))
}

/// A node certificate and key for `id` of `cluster`, issued by `issuer`.
fn node_cert(
    issuer: &Issuer<'_, KeyPair>,
    cluster: &str,
    id: u64,
    hosts: &[String],
    days: u64,
) -> Result<[Output; 2], String> {
    if id == 0 {
        return Err("node ids start at 1".into());
    }
    if hosts.is_empty() || hosts.len() > MAX_HOSTS {
        return Err(format!("node {id}: give 1 to {MAX_HOSTS} hosts (DNS names or IP addresses it is reached at)"));
    }
    let mut p = CertificateParams::default();
    p.distinguished_name.push(DnType::CommonName, format!("node-{id}.{cluster}"));
    p.distinguished_name.push(DnType::OrganizationName, format!("raftgate cluster {cluster}"));
    p.subject_alt_names = hosts.iter().map(|h| host_san(h)).collect::<Result<_, _>>()?;
    p.subject_alt_names.push(uri_san(format!("spiffe://{cluster}/node/{id}"))?);
    p.key_usages = vec![KeyUsagePurpose::DigitalSignature];
    p.extended_key_usages = vec![ExtendedKeyUsagePurpose::ServerAuth, ExtendedKeyUsagePurpose::ClientAuth];
    validity(&mut p, days)?;
    let key = key_pair()?;
    let cert = p.signed_by(&key, issuer).map_err(|e| format!("signing node {id}'s certificate: {e}"))?;
    Ok([
        Output { name: format!("node-{id}.crt"), contents: cert.pem(), secret: false },
        Output { name: format!("node-{id}.key"), contents: key.serialize_pem(), secret: true },
    ])
}

fn check_operator(name: &str) -> Result<(), String> {
    let ok = !name.is_empty()
        && name.len() <= 64
        && name.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_' || b == b'.');
    ok.then_some(())
        .ok_or_else(|| format!("--operator {name:?}: must be 1 to 64 characters of A-Z, a-z, 0-9, '-', '_' or '.'"))
}

fn init(a: &InitArgs) -> Result<(), String> {
    check_cluster(&a.cluster)?;
    check_days("--days", a.days)?;
    check_days("--ca-days", a.ca_days)?;
    if a.nodes.len() > MAX_SUBJECTS || a.operators.len() > MAX_SUBJECTS {
        return Err(format!("at most {MAX_SUBJECTS} nodes and {MAX_SUBJECTS} operators"));
    }
    let nodes = a.nodes.iter().map(|n| parse_node(n)).collect::<Result<Vec<_>, _>>()?;
    let mut ids: Vec<u64> = nodes.iter().map(|(id, _)| *id).collect();
    ids.sort_unstable();
    if let Some(w) = ids.windows(2).find(|w| w[0] == w[1]) {
        return Err(format!("--node {} is given twice", w[0]));
    }
    for o in &a.operators {
        check_operator(o)?;
    }
    let mut operators = a.operators.clone();
    operators.sort();
    if let Some(w) = operators.windows(2).find(|w| w[0] == w[1]) {
        return Err(format!("--operator {} is given twice", w[0]));
    }

    let ca_key = key_pair()?;
    let mut ca = CertificateParams::default();
    // A name of its own (from its key): peers then tell "another CA"
    // (unknown issuer) from a forged signature, also during a CA rotation.
    let tag = hex(&Sha256::digest(ca_key.subject_public_key_info())[..8]);
    ca.distinguished_name.push(DnType::CommonName, format!("raftgate {} CA {tag}", a.cluster));
    ca.distinguished_name.push(DnType::OrganizationName, format!("raftgate cluster {}", a.cluster));
    ca.is_ca = IsCa::Ca(BasicConstraints::Constrained(0));
    ca.key_usages = vec![KeyUsagePurpose::KeyCertSign, KeyUsagePurpose::CrlSign, KeyUsagePurpose::DigitalSignature];
    validity(&mut ca, a.ca_days)?;
    let ca_cert = ca.self_signed(&ca_key).map_err(|e| format!("making the CA: {e}"))?;
    let mut outputs = vec![
        Output { name: "ca.pem".into(), contents: ca_cert.pem(), secret: false },
        Output { name: "ca.key".into(), contents: ca_key.serialize_pem(), secret: true },
    ];
    let issuer = Issuer::new(ca, ca_key);
    for (id, hosts) in &nodes {
        outputs.extend(node_cert(&issuer, &a.cluster, *id, hosts, a.days)?);
    }
    let mut fingerprints = Vec::new();
    for name in &a.operators {
        let mut p = CertificateParams::default();
        p.distinguished_name.push(DnType::CommonName, name.as_str());
        p.distinguished_name.push(DnType::OrganizationName, format!("raftgate cluster {}", a.cluster));
        p.subject_alt_names = vec![uri_san(format!("spiffe://{}/operator/{name}", a.cluster))?];
        p.key_usages = vec![KeyUsagePurpose::DigitalSignature];
        p.extended_key_usages = vec![ExtendedKeyUsagePurpose::ClientAuth];
        validity(&mut p, a.days)?;
        let key = key_pair()?;
        let cert = p.signed_by(&key, &issuer).map_err(|e| format!("signing {name}'s certificate: {e}"))?;
        fingerprints.push((name.clone(), hex(&Sha256::digest(cert.der().as_ref()))));
        outputs.push(Output { name: format!("operator-{name}.crt"), contents: cert.pem(), secret: false });
        outputs.push(Output { name: format!("operator-{name}.key"), contents: key.serialize_pem(), secret: true });
    }
    write_all(&a.out, &outputs, a.force)?;
    for (name, sha) in fingerprints {
        println!("operator {name}: certificate SHA-256 {sha}");
        println!("  raftgatectl operator apply --id {name} --role <ROLE> --certificate-sha256 {sha}");
    }
    Ok(())
}

fn node(a: &NodeArgs) -> Result<(), String> {
    check_cluster(&a.cluster)?;
    check_days("--days", a.days)?;
    let read = |name: &str| {
        let p = a.ca_dir.join(name);
        std::fs::read_to_string(&p).map_err(|e| format!("cannot read {}: {e}", p.display()))
    };
    let (ca_pem, ca_key) = (read("ca.pem")?, read("ca.key")?);
    let key = KeyPair::from_pem(&ca_key)
        .map_err(|e| format!("{}: not a private key: {e}", a.ca_dir.join("ca.key").display()))?;
    let shown = a.ca_dir.join("ca.pem").display().to_string();
    let (_, pem) = x509_parser::pem::parse_x509_pem(ca_pem.as_bytes())
        .map_err(|_| format!("{shown}: holds no PEM certificate"))?;
    let parsed = pem.parse_x509().map_err(|e| format!("{shown}: does not parse: {e}"))?;
    if parsed.public_key().raw != key.subject_public_key_info().as_slice() {
        return Err(format!("{} does not match the CA in {shown}", a.ca_dir.join("ca.key").display()));
    }
    if !parsed.is_ca() {
        return Err(format!("{shown}: is not a CA certificate"));
    }
    let issuer =
        Issuer::from_ca_cert_der(&pem.contents.as_slice().into(), key).map_err(|e| format!("using the CA: {e}"))?;
    let outputs = node_cert(&issuer, &a.cluster, a.id, &a.hosts, a.days)?;
    write_all(&a.out, &outputs, a.force)
}

fn hex(bytes: &[u8]) -> String {
    bytes.iter().fold(String::with_capacity(bytes.len() * 2), |mut s, b| {
        let _ = write!(s, "{b:02x}");
        s
    })
}

/// Writes every file, or none if one exists and `force` is off.
fn write_all(dir: &Path, outputs: &[Output], force: bool) -> Result<(), String> {
    if !force {
        let existing: Vec<String> =
            outputs.iter().map(|o| dir.join(&o.name)).filter(|p| p.exists()).map(|p| p.display().to_string()).collect();
        if !existing.is_empty() {
            return Err(format!("refusing to overwrite {} (pass --force to replace)", existing.join(", ")));
        }
    }
    std::fs::create_dir_all(dir).map_err(|e| format!("cannot create {}: {e}", dir.display()))?;
    for o in outputs {
        let path = dir.join(&o.name);
        write_file(&path, &o.contents, o.secret).map_err(|e| format!("cannot write {}: {e}", path.display()))?;
        println!("wrote {}{}", path.display(), if o.secret { " (mode 0600)" } else { "" });
    }
    Ok(())
}

/// Writes through a temporary file and a rename; `secret` files get mode 0600.
fn write_file(path: &Path, contents: &str, secret: bool) -> std::io::Result<()> {
    use std::io::Write as _;
    let tmp = path.with_extension(format!("{}.tmp", path.extension().and_then(|e| e.to_str()).unwrap_or("")));
    let mut options = std::fs::OpenOptions::new();
    options.write(true).create(true).truncate(true);
    #[cfg(unix)]
    {
        use std::os::unix::fs::OpenOptionsExt as _;
        options.mode(if secret { 0o600 } else { 0o644 });
    }
    let mut f = options.open(&tmp)?;
    f.write_all(contents.as_bytes())?;
    f.sync_all()?;
    #[cfg(unix)]
    {
        use std::os::unix::fs::PermissionsExt as _;
        // An existing temporary file keeps its mode through open: set it.
        std::fs::set_permissions(&tmp, std::fs::Permissions::from_mode(if secret { 0o600 } else { 0o644 }))?;
    }
    std::fs::rename(&tmp, path)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn node_flags_parse_and_bad_hosts_are_named() {
        assert_eq!(
            parse_node("2=n2.example.com,10.0.0.2").unwrap(),
            (2, vec!["n2.example.com".into(), "10.0.0.2".into()])
        );
        assert!(parse_node("x=h").is_err() && parse_node("h").is_err());
        assert!(host_san("bad_name!").unwrap_err().contains("bad_name!"));
        assert!(matches!(host_san("::1"), Ok(SanType::IpAddress(_))));
        assert!(check_cluster("prod-1").is_ok() && check_cluster("a/b").is_err());
    }
}
