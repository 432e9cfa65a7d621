//! Node configuration: a TOML file, with every field also settable by flag
//! or environment variable (flags and env override the file).
//!
//! Validation happens once, here; errors name the field (`listen.admin`,
//! `bootstrap.members[1].id`, ...).

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};

use clap::Args;
use raftgate_cluster::RaftTimeouts;
use raftgate_model::{NodeId, NodeInfo};
use serde::{Deserialize, Serialize};

#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct NodeConfig {
    pub node: NodeSection,
    pub listen: Listen,
    /// Addresses other nodes and clients use; each defaults to the listen address.
    pub advertise: Advertise,
    pub raft: RaftTimeouts,
    pub bootstrap: Bootstrap,
    pub log: LogConfig,
    /// Limits of the data-plane listeners.
    pub http: HttpLimits,
    /// An HTTPS data-plane listener (off without this section).
    pub https: Option<HttpsConfig>,
    /// Credential checks: API-key hash secret, staleness bound, token cache.
    pub identity: IdentitySection,
    /// Rate limits and quotas: trusted proxies, lease batching.
    pub traffic: TrafficSection,
    /// Who may use the admin API, and its TLS.
    pub admin: AdminSection,
    /// One JSON line per request: where, how much, and what is kept private.
    pub access_log: AccessLogSection,
    /// W3C trace context propagation.
    pub tracing: TracingSection,
    /// Edge protection for every route: global IP rules, GeoIP, cache memory.
    pub edge: EdgeSection,
    /// Traffic anomaly detection per consumer.
    pub abuse: AbuseSection,
    /// Mutual TLS between nodes (required unless `listen.raft` is loopback).
    pub cluster_tls: Option<ClusterTlsSection>,
}

/// `[cluster_tls]`: this node's certificate for the Raft transport and for
/// calls to other nodes' admin API, and the CA(s) peers must chain to.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ClusterTlsSection {
    /// This node's certificate chain (PEM); its SANs hold the URI
    /// `spiffe://<node.cluster_name>/node/<node.id>` and the names of its
    /// advertised addresses.
    pub cert_file: PathBuf,
    pub key_file: PathBuf,
    /// The CA certificates (PEM) peers' certificates must chain to; several
    /// during a CA rotation.
    pub ca_file: PathBuf,
    /// How often the three files are checked for changes.
    #[serde(default = "default_reload_interval_ms")]
    pub reload_interval_ms: u64,
}

fn default_reload_interval_ms() -> u64 {
    raftgate_cluster::tls::DEFAULT_RELOAD_INTERVAL_MS
}

impl ClusterTlsSection {
    pub fn files(&self) -> raftgate_cluster::TlsFiles {
        raftgate_cluster::TlsFiles {
            cert_file: self.cert_file.clone(),
            key_file: self.key_file.clone(),
            ca_file: self.ca_file.clone(),
            reload_interval_ms: self.reload_interval_ms,
        }
    }
}

/// `[abuse]`.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct AbuseSection {
    /// Off without this section.
    pub anomaly: Option<AnomalySection>,
}

/// `[abuse.anomaly]`: per-consumer EWMA baselines of request rate and
/// error ratio, and what to do when a consumer leaves them.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct AnomalySection {
    /// `flag` (log and count), `throttle` (hold the consumer to
    /// `throttle_rate_per_s` on this node for the cooldown) or `revoke`
    /// (revoke its credentials through the audited revocation command).
    pub action: String,
    pub rate_factor: f64,
    pub min_rate_per_s: f64,
    pub error_ratio: f64,
    pub min_requests: u32,
    pub warmup_s: u32,
    pub baseline_half_life_s: u32,
    pub throttle_rate_per_s: u32,
    pub cooldown_s: u32,
}

impl Default for AnomalySection {
    fn default() -> Self {
        let p = raftgate_proxy::abuse::AnomalyPolicy::default();
        Self {
            action: "flag".into(),
            rate_factor: p.rate_factor,
            min_rate_per_s: p.min_rate_per_s,
            error_ratio: p.error_ratio,
            min_requests: p.min_requests as u32,
            warmup_s: p.warmup_s,
            baseline_half_life_s: p.baseline_half_life_s,
            throttle_rate_per_s: p.throttle_rate_per_s,
            cooldown_s: p.cooldown_s,
        }
    }
}

impl AnomalySection {
    /// The detector's policy, or a field error.
    pub fn policy(&self) -> Result<raftgate_proxy::abuse::AnomalyPolicy, ConfigError> {
        use raftgate_proxy::abuse::{AnomalyAction, AnomalyPolicy};
        let action = match self.action.as_str() {
            "flag" => AnomalyAction::Flag,
            "throttle" => AnomalyAction::Throttle,
            "revoke" => AnomalyAction::Revoke,
            _ => return Err(field("abuse.anomaly.action", "must be \"flag\", \"throttle\" or \"revoke\"")),
        };
        if !(1.5..=1_000.0).contains(&self.rate_factor) {
            return Err(field("abuse.anomaly.rate_factor", "must be 1.5 to 1000"));
        }
        if !(0.0..=1_000_000.0).contains(&self.min_rate_per_s) {
            return Err(field("abuse.anomaly.min_rate_per_s", "must be 0 to 1000000"));
        }
        if !(0.0 < self.error_ratio && self.error_ratio < 1.0) {
            return Err(field("abuse.anomaly.error_ratio", "must be between 0 and 1"));
        }
        for (name, v, max) in [
            ("min_requests", self.min_requests, 1_000_000),
            ("warmup_s", self.warmup_s, 604_800),
            ("baseline_half_life_s", self.baseline_half_life_s, 604_800),
            ("throttle_rate_per_s", self.throttle_rate_per_s, 1_000_000),
            ("cooldown_s", self.cooldown_s, 604_800),
        ] {
            if v == 0 || v > max {
                return Err(field(format!("abuse.anomaly.{name}"), format!("must be 1 to {max}")));
            }
        }
        Ok(AnomalyPolicy {
            action,
            rate_factor: self.rate_factor,
            min_rate_per_s: self.min_rate_per_s,
            error_ratio: self.error_ratio,
            min_requests: f64::from(self.min_requests),
            warmup_s: self.warmup_s,
            baseline_half_life_s: self.baseline_half_life_s,
            throttle_rate_per_s: self.throttle_rate_per_s,
            cooldown_s: self.cooldown_s,
        })
    }
}

/// `[edge]`: what applies to every route on this node.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct EdgeSection {
    /// Address and country rules checked before each route's own.
    pub ip: Option<raftgate_model::edge::IpRules>,
    /// A MaxMind-format country database (GeoLite2-Country, GeoIP2-Country
    /// or City) for country rules. If it is missing or corrupt the node
    /// still starts, logs why, and country rules refuse every request.
    pub geoip_database: Option<PathBuf>,
    /// Memory for cached responses, all routes together.
    pub cache_capacity_bytes: usize,
    /// Cached responses, all routes together.
    pub cache_max_entries: usize,
}

impl Default for EdgeSection {
    fn default() -> Self {
        Self {
            ip: None,
            geoip_database: None,
            cache_capacity_bytes: raftgate_proxy::cache::DEFAULT_CACHE_CAPACITY_BYTES,
            cache_max_entries: raftgate_proxy::cache::DEFAULT_CACHE_MAX_ENTRIES,
        }
    }
}

impl EdgeSection {
    fn validate(&self) -> Result<(), ConfigError> {
        if let Some(ip) = &self.ip {
            ip.validate("edge.ip").map_err(|e| field(e.field, e.message))?;
        }
        if !(1 << 20..=64 << 30).contains(&self.cache_capacity_bytes) {
            return Err(field("edge.cache_capacity_bytes", "must be 1 MiB to 64 GiB"));
        }
        if !(1..=10_000_000).contains(&self.cache_max_entries) {
            return Err(field("edge.cache_max_entries", "must be 1 to 10000000"));
        }
        Ok(())
    }
}

/// Where access-log lines go.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum AccessLogOutput {
    Stdout,
    Stderr,
    File(PathBuf),
    /// A file path rolled over every hour or day (`<stem>.<date>.<ext>`),
    /// keeping at most `retain_files` files (0: all).
    Rolling {
        path: PathBuf,
        hourly: bool,
        retain_files: usize,
    },
}

/// Most rolled access-log files kept.
pub const MAX_RETAINED_ACCESS_FILES: usize = 10_000;

/// `[access_log]`: the per-request log (fields: `raftgate_proxy::access_log`).
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct AccessLogSection {
    pub enabled: bool,
    /// `stdout`, `stderr`, or a file path (appended to).
    pub output: String,
    /// Share of requests logged, 0.0 to 1.0.
    pub sample_rate: f64,
    /// Log every answer with status 400 and up, sampled or not.
    pub errors_always: bool,
    /// `full`, `truncate` (IPv4 /24, IPv6 /48) or `hash` (keyed by
    /// `identity.key_hash_secret`, the same on every node).
    pub client_ip: String,
    /// Fields left out of every line.
    pub drop_fields: Vec<String>,
    /// Query parameters whose values are replaced by `REDACTED`, on top of
    /// the built-in list and each route's API-key parameter.
    pub redact_query_params: Vec<String>,
    /// Lines buffered for the writer; beyond it lines are dropped (never
    /// blocking a request).
    pub buffered_lines: usize,
    /// For a file output: `never` (one file, appended to), `hourly` or
    /// `daily` (a new file `<stem>.<date>.<ext>` each period).
    pub rotation: String,
    /// With rotation: how many files to keep, oldest deleted first (at
    /// start and at each rollover); 0 keeps all. This is the retention of
    /// access logs: `daily` with 30 keeps about 30 days.
    pub retain_files: usize,
}

impl Default for AccessLogSection {
    fn default() -> Self {
        Self {
            enabled: true,
            output: "stdout".into(),
            sample_rate: 1.0,
            errors_always: true,
            client_ip: "full".into(),
            drop_fields: Vec::new(),
            redact_query_params: Vec::new(),
            buffered_lines: 16_384,
            rotation: "never".into(),
            retain_files: 0,
        }
    }
}

impl AccessLogSection {
    pub fn output(&self) -> Option<AccessLogOutput> {
        if !self.enabled {
            return None;
        }
        Some(match self.output.as_str() {
            "stdout" => AccessLogOutput::Stdout,
            "stderr" => AccessLogOutput::Stderr,
            path => match self.rotation.as_str() {
                "hourly" | "daily" => AccessLogOutput::Rolling {
                    path: PathBuf::from(path),
                    hourly: self.rotation == "hourly",
                    retain_files: self.retain_files,
                },
                _ => AccessLogOutput::File(PathBuf::from(path)),
            },
        })
    }

    fn validate(&self) -> Result<(), ConfigError> {
        if !(0.0..=1.0).contains(&self.sample_rate) {
            return Err(field("access_log.sample_rate", "must be 0.0 to 1.0"));
        }
        if !matches!(self.client_ip.as_str(), "full" | "truncate" | "hash") {
            return Err(field("access_log.client_ip", "must be \"full\", \"truncate\" or \"hash\""));
        }
        raftgate_proxy::access_log::FieldSet::parse(self.drop_fields.iter().map(String::as_str))
            .map_err(|e| field("access_log.drop_fields", e))?;
        if self.output.is_empty() {
            return Err(field("access_log.output", "must be stdout, stderr or a file path"));
        }
        if self.redact_query_params.len() > 64 || self.redact_query_params.iter().any(|p| p.is_empty() || p.len() > 64)
        {
            return Err(field("access_log.redact_query_params", "at most 64 names of 1 to 64 characters"));
        }
        if !(64..=1_048_576).contains(&self.buffered_lines) {
            return Err(field("access_log.buffered_lines", "must be 64 to 1048576"));
        }
        let to_file = !matches!(self.output.as_str(), "stdout" | "stderr");
        match self.rotation.as_str() {
            "never" => {}
            "hourly" | "daily" if !to_file => {
                return Err(field("access_log.rotation", "rotation needs a file path in access_log.output"))
            }
            "hourly" | "daily" => {
                let p = std::path::Path::new(&self.output);
                if p.file_name().is_none() || p.file_stem().is_none_or(|s| s.is_empty()) {
                    return Err(field(
                        "access_log.output",
                        "a rotated access log needs a file name, e.g. /var/log/raftgate/access.log",
                    ));
                }
            }
            _ => return Err(field("access_log.rotation", "must be \"never\", \"hourly\" or \"daily\"")),
        }
        if self.retain_files > MAX_RETAINED_ACCESS_FILES {
            return Err(field("access_log.retain_files", format!("must be 0 to {MAX_RETAINED_ACCESS_FILES}")));
        }
        if self.retain_files > 0 && self.rotation == "never" {
            return Err(field("access_log.retain_files", "needs access_log.rotation = \"hourly\" or \"daily\""));
        }
        Ok(())
    }
}

/// `[tracing]`: W3C `traceparent` through the gateway, and the export of
/// sampled requests as OpenTelemetry spans (OTLP over HTTP/protobuf; needs
/// a binary built with `--features otlp`, see `crate::otlp`).
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct TracingSection {
    /// Send `traceparent` upstream, continuing the client's trace.
    pub propagate: bool,
    /// Share of traces the gateway starts that are marked sampled, 0.0 to 1.0.
    pub sample_rate: f64,
    /// Base URL of an OTLP/HTTP collector, `http://collector:4318` (the
    /// OTLP/HTTP port; not 4317, which is gRPC): spans are POSTed to
    /// `<endpoint>/v1/traces`. Unset: no spans are exported.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub otlp_endpoint: Option<String>,
    /// `service.name` of the exported spans.
    pub service_name: String,
    /// Most spans in one export request.
    pub otlp_max_batch_spans: usize,
    /// Spans waiting for export; a span that finds the queue full is
    /// dropped (the request never waits for the collector).
    pub otlp_max_queue_spans: usize,
    /// Longest wait for one export attempt; a failed export is retried (at
    /// most 3 times, with backoff) only while less than this has passed
    /// since its first attempt. Also the longest shutdown waits for the
    /// last spans.
    pub otlp_export_timeout_ms: u64,
    /// Longest a span waits in the queue before its batch is sent.
    pub otlp_export_interval_ms: u64,
}

impl Default for TracingSection {
    fn default() -> Self {
        Self {
            propagate: true,
            sample_rate: 1.0,
            otlp_endpoint: None,
            service_name: "raftgate".into(),
            otlp_max_batch_spans: 512,
            otlp_max_queue_spans: 4_096,
            otlp_export_timeout_ms: 10_000,
            otlp_export_interval_ms: 5_000,
        }
    }
}

/// The message for an `otlp_endpoint` in a binary built without the feature.
pub const OTLP_NOT_BUILT: &str = "built without the otlp feature; rebuild with --features otlp";

/// The OTLP/HTTP path for traces, appended to `tracing.otlp_endpoint`.
pub const OTLP_TRACES_PATH: &str = "/v1/traces";

impl TracingSection {
    /// `<otlp_endpoint>/v1/traces`, checked: `http` or `https`, a host, no
    /// credentials, query or fragment. None when no endpoint is set.
    pub fn otlp_traces_url(&self) -> Result<Option<http::Uri>, ConfigError> {
        let Some(endpoint) = &self.otlp_endpoint else { return Ok(None) };
        let bad = |why: &str| field("tracing.otlp_endpoint", format!("{why}, got {endpoint:?}"));
        let uri: http::Uri = endpoint.parse().map_err(|_| bad("must be a URL like http://collector:4318"))?;
        if !matches!(uri.scheme_str(), Some("http" | "https")) {
            return Err(bad("must start with http:// or https://"));
        }
        let Some(authority) = uri.authority() else { return Err(bad("must name a host")) };
        if authority.host().is_empty() {
            return Err(bad("must name a host"));
        }
        if authority.as_str().contains('@') {
            return Err(bad("must not carry credentials"));
        }
        if uri.query().is_some() || endpoint.contains('#') {
            return Err(bad("must not have a query or fragment"));
        }
        let base = uri.path().trim_end_matches('/');
        let scheme = uri.scheme_str().unwrap_or("http");
        let url = format!("{scheme}://{authority}{base}{OTLP_TRACES_PATH}");
        url.parse().map(Some).map_err(|_| bad("must be a URL like http://collector:4318"))
    }

    fn validate(&self) -> Result<(), ConfigError> {
        if !(0.0..=1.0).contains(&self.sample_rate) {
            return Err(field("tracing.sample_rate", "must be 0.0 to 1.0"));
        }
        if self.otlp_endpoint.is_none() {
            return Ok(());
        }
        if cfg!(not(feature = "otlp")) {
            return Err(field("tracing.otlp_endpoint", OTLP_NOT_BUILT));
        }
        if !self.propagate {
            return Err(field(
                "tracing.otlp_endpoint",
                "needs tracing.propagate = true: the exported span is the gateway's hop of the propagated trace",
            ));
        }
        self.otlp_traces_url()?;
        let name = &self.service_name;
        if name.is_empty() || name.len() > 255 || name.chars().any(char::is_control) {
            return Err(field("tracing.service_name", "must be 1 to 255 characters, none a control character"));
        }
        let checks: [(&str, u64, u64, u64); 4] = [
            ("tracing.otlp_max_batch_spans", self.otlp_max_batch_spans as u64, 1, 8_192),
            ("tracing.otlp_max_queue_spans", self.otlp_max_queue_spans as u64, 1, 1_048_576),
            ("tracing.otlp_export_timeout_ms", self.otlp_export_timeout_ms, 100, 60_000),
            ("tracing.otlp_export_interval_ms", self.otlp_export_interval_ms, 100, 60_000),
        ];
        for (name, v, min, max) in checks {
            if v < min || v > max {
                return Err(field(name, format!("must be {min} to {max}, got {v}")));
            }
        }
        if self.otlp_max_batch_spans > self.otlp_max_queue_spans {
            return Err(field("tracing.otlp_max_batch_spans", "must not exceed tracing.otlp_max_queue_spans"));
        }
        Ok(())
    }
}

/// `[admin]`: authentication and TLS of the admin API.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct AdminSection {
    /// `required` (default): every caller presents an admin token or a
    /// client certificate, and the permission table applies. `none`: no
    /// authentication or authorization at all; only with `listen.admin` on
    /// loopback (the local dev cluster).
    pub auth: AdminAuth,
    /// An admin credential from outside the cluster, `env:NAME` or
    /// `file:/path` (at least 32 bytes): to create the first operators, and
    /// to get back in if every admin token is lost. The same on every node.
    pub bootstrap_token: Option<String>,
    /// Serve the admin API over TLS (required unless `listen.admin` is loopback).
    pub tls: Option<AdminTls>,
}

#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum AdminAuth {
    #[default]
    Required,
    None,
}

#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct AdminTls {
    /// This node's admin certificate chain and key (PEM). Its names must
    /// cover the host of `advertise.admin`: other nodes verify it.
    pub cert_file: PathBuf,
    pub key_file: PathBuf,
    /// The CA (PEM) that signed the nodes' admin certificates and the
    /// operators' client certificates.
    pub ca_file: PathBuf,
}

impl NodeConfig {
    /// The bootstrap admin token, resolved from its reference.
    pub fn bootstrap_token(&self) -> Result<Option<String>, ConfigError> {
        let Some(r) = &self.admin.bootstrap_token else { return Ok(None) };
        let r = raftgate_model::identity::SecretRef::parse(r).map_err(|e| field("admin.bootstrap_token", e.message))?;
        let bytes =
            raftgate_identity::secret::resolve(&r).map_err(|e| field("admin.bootstrap_token", e.to_string()))?;
        let token = String::from_utf8(bytes).map_err(|_| field("admin.bootstrap_token", "must be UTF-8 text"))?;
        Ok(Some(token.trim().to_string()))
    }

    fn validate_admin(&self) -> Result<(), ConfigError> {
        let loopback = self.listen.admin.parse::<SocketAddr>().is_ok_and(|a| a.ip().is_loopback());
        match self.admin.auth {
            AdminAuth::None if !loopback => {
                return Err(field(
                    "admin.auth",
                    "\"none\" is only allowed with listen.admin on loopback; create operators and tokens instead",
                ))
            }
            AdminAuth::None => {}
            AdminAuth::Required => {
                if self.identity.key_hash_secret.is_none() {
                    return Err(field(
                        "identity.key_hash_secret",
                        "is required with admin.auth = \"required\": it hashes admin tokens and signs requests nodes forward to each other",
                    ));
                }
                if self.admin.tls.is_none() && !loopback {
                    return Err(field(
                        "admin.tls",
                        "is required when listen.admin is not loopback: admin tokens must not travel in plaintext",
                    ));
                }
            }
        }
        if let Some(r) = &self.admin.bootstrap_token {
            raftgate_model::identity::SecretRef::parse(r).map_err(|e| field("admin.bootstrap_token", e.message))?;
        }
        Ok(())
    }
}

impl NodeConfig {
    fn validate_cluster_tls(&self) -> Result<(), ConfigError> {
        let loopback = self.listen.raft.parse::<SocketAddr>().is_ok_and(|a| a.ip().is_loopback());
        match &self.cluster_tls {
            None if !loopback => Err(field(
                "cluster_tls",
                "is required when listen.raft is not loopback: Raft traffic between nodes must be mutually authenticated",
            )),
            None => Ok(()),
            Some(t) => {
                if !(1_000..=3_600_000).contains(&t.reload_interval_ms) {
                    return Err(field("cluster_tls.reload_interval_ms", "must be between 1000 and 3600000"));
                }
                for (name, path) in [("cert_file", &t.cert_file), ("key_file", &t.key_file), ("ca_file", &t.ca_file)] {
                    if path.as_os_str().is_empty() {
                        return Err(field(format!("cluster_tls.{name}"), "must not be empty"));
                    }
                }
                Ok(())
            }
        }
    }
}

/// `[traffic]`: how this node enforces rate limits and quotas.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct TrafficSection {
    /// Addresses or CIDR blocks of proxies in front of the gateway whose
    /// `X-Forwarded-For` is believed for client-IP limits.
    pub trusted_proxies: Vec<String>,
    /// How often the node sends its quota asks and returns (T_b).
    pub batch_interval_ms: u64,
}

impl Default for TrafficSection {
    fn default() -> Self {
        Self { trusted_proxies: Vec::new(), batch_interval_ms: 50 }
    }
}

impl TrafficSection {
    pub fn trusted_proxies(&self) -> Result<Vec<raftgate_proxy::traffic::Cidr>, ConfigError> {
        self.trusted_proxies
            .iter()
            .enumerate()
            .map(|(i, c)| c.parse().map_err(|e: String| field(format!("traffic.trusted_proxies[{i}]"), e)))
            .collect()
    }

    fn validate(&self) -> Result<(), ConfigError> {
        if self.trusted_proxies.len() > 256 {
            return Err(field("traffic.trusted_proxies", "at most 256 entries"));
        }
        self.trusted_proxies()?;
        if !(10..=10_000).contains(&self.batch_interval_ms) {
            return Err(field("traffic.batch_interval_ms", "must be 10 to 10000"));
        }
        Ok(())
    }
}

/// `[identity]`: how this node checks credentials.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct IdentitySection {
    /// The secret that keys API-key hashes, `env:NAME` or `file:/path`; the
    /// same on every node. Unset: a public development value (logged).
    pub key_hash_secret: Option<String>,
    /// A node whose view of the cluster is older than this (plus
    /// `max_one_way_delay_ms`) may miss revocations, so its authenticated
    /// routes answer 503. Unset: election_timeout_max_ms - 2 x
    /// max_one_way_delay_ms - 100.
    pub max_staleness_ms: Option<u64>,
    /// The largest one-way network delay between nodes the bound assumes.
    pub max_one_way_delay_ms: u64,
    /// Verified JWTs cached per node.
    pub token_cache_entries: usize,
    /// Least time between two JWKS fetches of one issuer asked for by
    /// tokens with an unknown `kid`.
    pub jwks_min_refresh_ms: u64,
}

impl Default for IdentitySection {
    fn default() -> Self {
        Self {
            key_hash_secret: None,
            max_staleness_ms: None,
            max_one_way_delay_ms: 100,
            token_cache_entries: raftgate_identity::cache::DEFAULT_TOKEN_CACHE_ENTRIES,
            jwks_min_refresh_ms: 30_000,
        }
    }
}

/// Margin kept below the election timeout by the default staleness bound.
const STALENESS_MARGIN_MS: u64 = 100;

impl NodeConfig {
    /// The staleness bound S in force.
    pub fn max_staleness_ms(&self) -> u64 {
        self.identity.max_staleness_ms.unwrap_or_else(|| {
            self.raft
                .election_timeout_max_ms
                .saturating_sub(2 * self.identity.max_one_way_delay_ms + STALENESS_MARGIN_MS)
                .max(1)
        })
    }

    /// The key-hash secret: resolved from its reference, or the public
    /// development value (`None` in the second element when so).
    pub fn key_hash_secret(&self) -> Result<(Vec<u8>, bool), ConfigError> {
        match &self.identity.key_hash_secret {
            None => Ok((raftgate_proxy::gateway::DEV_KEY_HASH_SECRET.to_vec(), false)),
            Some(r) => {
                let r = raftgate_model::identity::SecretRef::parse(r)
                    .map_err(|e| field("identity.key_hash_secret", e.message))?;
                let secret = raftgate_identity::secret::resolve(&r)
                    .map_err(|e| field("identity.key_hash_secret", e.to_string()))?;
                Ok((secret, true))
            }
        }
    }

    fn validate_identity(&self) -> Result<(), ConfigError> {
        let id = &self.identity;
        if id.max_one_way_delay_ms == 0 || id.max_one_way_delay_ms > 10_000 {
            return Err(field("identity.max_one_way_delay_ms", "must be 1 to 10000"));
        }
        if !(1_000..=3_600_000).contains(&id.jwks_min_refresh_ms) {
            return Err(field("identity.jwks_min_refresh_ms", "must be 1000 to 3600000"));
        }
        if id.token_cache_entries > 1_000_000 {
            return Err(field("identity.token_cache_entries", "must be at most 1000000"));
        }
        let s = self.max_staleness_ms();
        let bound = s + 2 * id.max_one_way_delay_ms;
        if bound >= self.raft.election_timeout_max_ms {
            return Err(field(
                "identity.max_staleness_ms",
                format!(
                    "max_staleness_ms + 2 x max_one_way_delay_ms ({bound}) must stay below raft.election_timeout_max_ms ({}): otherwise a deposed leader could serve revoked credentials after a new leader took over",
                    self.raft.election_timeout_max_ms
                ),
            ));
        }
        if let Some(r) = &id.key_hash_secret {
            raftgate_model::identity::SecretRef::parse(r).map_err(|e| field("identity.key_hash_secret", e.message))?;
        }
        Ok(())
    }
}

/// Data-plane listener limits; each maps to `raftgate_proxy::Limits`.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct HttpLimits {
    pub max_uri_bytes: usize,
    pub max_header_bytes: usize,
    pub max_headers: usize,
    pub header_read_timeout_ms: u64,
    pub max_concurrent_streams: u32,
    pub max_connections: usize,
    pub drain_timeout_ms: u64,
    pub tls_handshake_timeout_ms: u64,
    pub stream_idle_timeout_ms: u64,
}

impl Default for HttpLimits {
    fn default() -> Self {
        let d = raftgate_proxy::Limits::default();
        Self {
            max_uri_bytes: d.max_uri_bytes,
            max_header_bytes: d.max_header_bytes,
            max_headers: d.max_headers,
            header_read_timeout_ms: d.header_read_timeout_ms,
            max_concurrent_streams: d.max_concurrent_streams,
            max_connections: d.max_connections,
            drain_timeout_ms: d.drain_timeout_ms,
            tls_handshake_timeout_ms: d.tls_handshake_timeout_ms,
            stream_idle_timeout_ms: d.stream_idle_timeout_ms,
        }
    }
}

impl HttpLimits {
    pub fn to_limits(&self) -> raftgate_proxy::Limits {
        raftgate_proxy::Limits {
            max_uri_bytes: self.max_uri_bytes,
            max_header_bytes: self.max_header_bytes,
            max_headers: self.max_headers,
            header_read_timeout_ms: self.header_read_timeout_ms,
            max_concurrent_streams: self.max_concurrent_streams,
            max_connections: self.max_connections,
            drain_timeout_ms: self.drain_timeout_ms,
            tls_handshake_timeout_ms: self.tls_handshake_timeout_ms,
            stream_idle_timeout_ms: self.stream_idle_timeout_ms,
        }
    }

    fn validate(&self) -> Result<(), ConfigError> {
        let checks: [(&str, u64, u64, u64); 9] = [
            ("http.max_uri_bytes", self.max_uri_bytes as u64, 256, 65_536),
            ("http.max_header_bytes", self.max_header_bytes as u64, 8_192, 1 << 20),
            ("http.max_headers", self.max_headers as u64, 16, 1_000),
            ("http.header_read_timeout_ms", self.header_read_timeout_ms, 100, 600_000),
            ("http.max_concurrent_streams", self.max_concurrent_streams.into(), 1, 10_000),
            ("http.max_connections", self.max_connections as u64, 1, 1_000_000),
            ("http.drain_timeout_ms", self.drain_timeout_ms, 0, 600_000),
            ("http.tls_handshake_timeout_ms", self.tls_handshake_timeout_ms, 100, 60_000),
            ("http.stream_idle_timeout_ms", self.stream_idle_timeout_ms, 100, 86_400_000),
        ];
        for (name, v, min, max) in checks {
            if v < min || v > max {
                return Err(field(name, format!("must be {min} to {max}, got {v}")));
            }
        }
        Ok(())
    }
}

/// The HTTPS listener: certificates from files on this node.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct HttpsConfig {
    pub listen: String,
    /// The first certificate also serves clients without SNI or with an unknown name.
    pub certificates: Vec<CertificateConfig>,
    /// Verify client certificates against this CA (PEM).
    #[serde(default)]
    pub client_ca_file: Option<PathBuf>,
    /// `required` (default with a CA) or `optional`.
    #[serde(default)]
    pub client_auth: Option<String>,
}

#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct CertificateConfig {
    /// Host names (or `*.suffix`) this certificate serves.
    #[serde(default)]
    pub hosts: Vec<String>,
    pub cert_file: PathBuf,
    pub key_file: PathBuf,
}

impl HttpsConfig {
    pub fn tls_settings(&self) -> raftgate_proxy::tls::TlsSettings {
        use raftgate_proxy::tls::{CertSpec, ClientAuth, TlsSettings};
        TlsSettings {
            certificates: self
                .certificates
                .iter()
                .map(|c| CertSpec {
                    hosts: c.hosts.clone(),
                    cert_file: c.cert_file.clone(),
                    key_file: c.key_file.clone(),
                })
                .collect(),
            client_ca_file: self.client_ca_file.clone(),
            client_auth: if self.client_auth.as_deref() == Some("optional") {
                ClientAuth::Optional
            } else {
                ClientAuth::Required
            },
        }
    }

    fn validate(&self) -> Result<(), ConfigError> {
        self.listen
            .parse::<SocketAddr>()
            .map_err(|_| field("https.listen", format!("must be ip:port, got {:?}", self.listen)))?;
        if self.certificates.is_empty() {
            return Err(field("https.certificates", "needs at least one certificate"));
        }
        for (i, c) in self.certificates.iter().enumerate() {
            for h in &c.hosts {
                let name = h.strip_prefix("*.").unwrap_or(h);
                if name.is_empty() || !name.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'.') {
                    return Err(field(format!("https.certificates[{i}].hosts"), format!("{h:?} is not a host name")));
                }
            }
        }
        match self.client_auth.as_deref() {
            None | Some("required") | Some("optional") => {}
            Some(other) => {
                return Err(field("https.client_auth", format!("must be required or optional, got {other:?}")))
            }
        }
        if self.client_auth.is_some() && self.client_ca_file.is_none() {
            return Err(field("https.client_auth", "needs https.client_ca_file"));
        }
        Ok(())
    }
}

#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct NodeSection {
    /// Unique in the cluster, never reused, greater than 0.
    pub id: NodeId,
    pub region: String,
    pub data_dir: PathBuf,
    pub cluster_name: String,
}

impl Default for NodeSection {
    fn default() -> Self {
        Self { id: 0, region: "local".into(), data_dir: PathBuf::new(), cluster_name: "raftgate".into() }
    }
}

#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct Listen {
    pub raft: String,
    pub admin: String,
    pub http: String,
    /// Prometheus `/metrics`, `/healthz` and `/readyz` (none: not served).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub metrics: Option<String>,
}

impl Default for Listen {
    fn default() -> Self {
        Self {
            raft: "127.0.0.1:7101".into(),
            admin: "127.0.0.1:7201".into(),
            http: "127.0.0.1:7301".into(),
            metrics: None,
        }
    }
}

#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct Advertise {
    pub raft: Option<String>,
    pub admin: Option<String>,
    pub http: Option<String>,
}

/// The voters of a new cluster. Every listed node may carry the same list; a
/// node that already holds a cluster ignores it. Empty: wait to be added
/// (`raftgatectl cluster add-learner`).
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct Bootstrap {
    pub members: Vec<BootstrapMember>,
}

#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct BootstrapMember {
    pub id: NodeId,
    pub region: String,
    pub raft_addr: String,
    pub admin_addr: String,
    pub http_addr: String,
}

#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize, clap::ValueEnum)]
#[serde(rename_all = "lowercase")]
pub enum LogFormat {
    #[default]
    Human,
    Json,
}

#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct LogConfig {
    pub format: LogFormat,
    /// A tracing filter, e.g. `info` or `info,raftgate_cluster=debug`.
    pub level: String,
}

impl Default for LogConfig {
    fn default() -> Self {
        Self { format: LogFormat::Human, level: "info".into() }
    }
}

/// A configuration problem, naming the field.
#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    #[error("cannot read config file {path}: {source}")]
    Read { path: String, source: std::io::Error },
    #[error("config file {path}: {message}")]
    Parse { path: String, message: String },
    #[error("config field `{field}`: {problem}")]
    Field { field: String, problem: String },
}

fn field(field: impl Into<String>, problem: impl Into<String>) -> ConfigError {
    ConfigError::Field { field: field.into(), problem: problem.into() }
}

/// Every config field as a flag and an environment variable.
#[derive(Args, Clone, Debug, Default)]
pub struct ConfigOverrides {
    #[arg(long, env = "RAFTGATE_NODE_ID")]
    pub node_id: Option<NodeId>,
    #[arg(long, env = "RAFTGATE_REGION")]
    pub region: Option<String>,
    #[arg(long, env = "RAFTGATE_DATA_DIR")]
    pub data_dir: Option<PathBuf>,
    #[arg(long, env = "RAFTGATE_CLUSTER_NAME")]
    pub cluster_name: Option<String>,
    #[arg(long, env = "RAFTGATE_LISTEN_RAFT")]
    pub listen_raft: Option<String>,
    #[arg(long, env = "RAFTGATE_LISTEN_ADMIN")]
    pub listen_admin: Option<String>,
    #[arg(long, env = "RAFTGATE_LISTEN_HTTP")]
    pub listen_http: Option<String>,
    #[arg(long, env = "RAFTGATE_LISTEN_METRICS")]
    pub listen_metrics: Option<String>,
    #[arg(long, env = "RAFTGATE_ADVERTISE_RAFT")]
    pub advertise_raft: Option<String>,
    #[arg(long, env = "RAFTGATE_ADVERTISE_ADMIN")]
    pub advertise_admin: Option<String>,
    #[arg(long, env = "RAFTGATE_ADVERTISE_HTTP")]
    pub advertise_http: Option<String>,
    #[arg(long, env = "RAFTGATE_HEARTBEAT_INTERVAL_MS")]
    pub heartbeat_interval_ms: Option<u64>,
    #[arg(long, env = "RAFTGATE_ELECTION_TIMEOUT_MIN_MS")]
    pub election_timeout_min_ms: Option<u64>,
    #[arg(long, env = "RAFTGATE_ELECTION_TIMEOUT_MAX_MS")]
    pub election_timeout_max_ms: Option<u64>,
    #[arg(long, env = "RAFTGATE_RPC_TIMEOUT_MS")]
    pub rpc_timeout_ms: Option<u64>,
    #[arg(long, env = "RAFTGATE_WRITE_TIMEOUT_MS")]
    pub write_timeout_ms: Option<u64>,
    #[arg(long, env = "RAFTGATE_READ_TIMEOUT_MS")]
    pub read_timeout_ms: Option<u64>,
    #[arg(long, env = "RAFTGATE_SNAPSHOT_EVERY_ENTRIES")]
    pub snapshot_every_entries: Option<u64>,
    /// A voter of a new cluster, `ID=REGION,RAFT_ADDR,ADMIN_ADDR,HTTP_ADDR`;
    /// repeat the flag, or separate members with `;` in the variable.
    #[arg(long = "bootstrap-member", env = "RAFTGATE_BOOTSTRAP_MEMBERS", value_delimiter = ';')]
    pub bootstrap_members: Vec<String>,
    /// `env:NAME` or `file:/path` of the API-key hash secret.
    #[arg(long, env = "RAFTGATE_KEY_HASH_SECRET")]
    pub key_hash_secret: Option<String>,
    #[arg(long, env = "RAFTGATE_MAX_STALENESS_MS")]
    pub max_staleness_ms: Option<u64>,
    #[arg(long, env = "RAFTGATE_LOG_FORMAT")]
    pub log_format: Option<LogFormat>,
    #[arg(long, env = "RAFTGATE_LOG_LEVEL")]
    pub log_level: Option<String>,
}

impl NodeConfig {
    /// Reads `path` (if given), applies the overrides and validates.
    pub fn load(path: Option<&Path>, overrides: &ConfigOverrides) -> Result<Self, ConfigError> {
        let mut config = match path {
            Some(p) => Self::from_file(p)?,
            None => Self::default(),
        };
        config.apply(overrides)?;
        config.validate()?;
        Ok(config)
    }

    pub fn from_file(path: &Path) -> Result<Self, ConfigError> {
        let shown = path.display().to_string();
        let text = std::fs::read_to_string(path).map_err(|source| ConfigError::Read { path: shown.clone(), source })?;
        Self::from_toml(&text).map_err(|message| ConfigError::Parse { path: shown, message })
    }

    pub fn from_toml(text: &str) -> Result<Self, String> {
        toml::from_str(text).map_err(|e| e.to_string().trim_end().to_string())
    }

    fn apply(&mut self, o: &ConfigOverrides) -> Result<(), ConfigError> {
        fn set<T: Clone>(target: &mut T, value: &Option<T>) {
            if let Some(v) = value {
                *target = v.clone();
            }
        }
        set(&mut self.node.id, &o.node_id);
        set(&mut self.node.region, &o.region);
        set(&mut self.node.data_dir, &o.data_dir);
        set(&mut self.node.cluster_name, &o.cluster_name);
        set(&mut self.listen.raft, &o.listen_raft);
        set(&mut self.listen.admin, &o.listen_admin);
        set(&mut self.listen.http, &o.listen_http);
        if o.listen_metrics.is_some() {
            self.listen.metrics = o.listen_metrics.clone();
        }
        for (target, value) in [
            (&mut self.advertise.raft, &o.advertise_raft),
            (&mut self.advertise.admin, &o.advertise_admin),
            (&mut self.advertise.http, &o.advertise_http),
        ] {
            if value.is_some() {
                *target = value.clone();
            }
        }
        set(&mut self.raft.heartbeat_interval_ms, &o.heartbeat_interval_ms);
        set(&mut self.raft.election_timeout_min_ms, &o.election_timeout_min_ms);
        set(&mut self.raft.election_timeout_max_ms, &o.election_timeout_max_ms);
        set(&mut self.raft.rpc_timeout_ms, &o.rpc_timeout_ms);
        set(&mut self.raft.write_timeout_ms, &o.write_timeout_ms);
        set(&mut self.raft.read_timeout_ms, &o.read_timeout_ms);
        set(&mut self.raft.snapshot_every_entries, &o.snapshot_every_entries);
        if o.key_hash_secret.is_some() {
            self.identity.key_hash_secret = o.key_hash_secret.clone();
        }
        if o.max_staleness_ms.is_some() {
            self.identity.max_staleness_ms = o.max_staleness_ms;
        }
        set(&mut self.log.format, &o.log_format);
        set(&mut self.log.level, &o.log_level);
        if !o.bootstrap_members.is_empty() {
            self.bootstrap.members = o
                .bootstrap_members
                .iter()
                .map(|m| parse_member(m).map_err(|p| field("--bootstrap-member", format!("{m:?}: {p}"))))
                .collect::<Result<_, _>>()?;
        }
        Ok(())
    }

    /// This node's identity as other members see it.
    pub fn node_info(&self) -> NodeInfo {
        NodeInfo {
            region: self.node.region.clone(),
            raft_addr: self.advertise.raft.clone().unwrap_or_else(|| self.listen.raft.clone()),
            admin_addr: self.advertise.admin.clone().unwrap_or_else(|| self.listen.admin.clone()),
            http_addr: self.advertise.http.clone().unwrap_or_else(|| self.listen.http.clone()),
        }
    }

    /// The bootstrap voters by id (validated: no duplicate ids or addresses).
    pub fn bootstrap_members(&self) -> BTreeMap<NodeId, NodeInfo> {
        self.bootstrap
            .members
            .iter()
            .map(|m| {
                let info = NodeInfo {
                    region: m.region.clone(),
                    raft_addr: m.raft_addr.clone(),
                    admin_addr: m.admin_addr.clone(),
                    http_addr: m.http_addr.clone(),
                };
                (m.id, info)
            })
            .collect()
    }

    pub fn validate(&self) -> Result<(), ConfigError> {
        if self.node.id == 0 {
            return Err(field("node.id", "is required and must be greater than 0"));
        }
        if self.node.data_dir.as_os_str().is_empty() {
            return Err(field("node.data_dir", "is required"));
        }
        let name_ok = !self.node.cluster_name.is_empty()
            && self.node.cluster_name.len() <= 64
            && self.node.cluster_name.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_');
        if !name_ok {
            return Err(field("node.cluster_name", "must be 1 to 64 characters of A-Z, a-z, 0-9, '-' or '_'"));
        }
        for (name, addr) in [
            ("listen.raft", &self.listen.raft),
            ("listen.admin", &self.listen.admin),
            ("listen.http", &self.listen.http),
        ] {
            addr.parse::<SocketAddr>().map_err(|_| field(name, format!("must be ip:port, got {addr:?}")))?;
        }
        let listens = [&self.listen.raft, &self.listen.admin, &self.listen.http];
        if listens[0] == listens[1] || listens[0] == listens[2] || listens[1] == listens[2] {
            return Err(field("listen", "raft, admin and http must be different addresses"));
        }
        if let Some(https) = &self.https {
            https.validate()?;
            if listens.contains(&&https.listen) {
                return Err(field("https.listen", "must differ from the raft, admin and http addresses"));
            }
        }
        self.http.validate()?;
        self.access_log.validate()?;
        self.edge.validate()?;
        if let Some(a) = &self.abuse.anomaly {
            a.policy()?;
        }
        self.tracing.validate()?;
        if let Some(m) = &self.listen.metrics {
            m.parse::<SocketAddr>().map_err(|_| field("listen.metrics", format!("must be ip:port, got {m:?}")))?;
            if listens.contains(&m) {
                return Err(field("listen.metrics", "must differ from the raft, admin and http addresses"));
            }
        }
        self.raft.validate().map_err(|e| field(format!("raft.{}", e.field), e.problem))?;
        self.validate_identity()?;
        self.traffic.validate()?;
        self.validate_admin()?;
        self.validate_cluster_tls()?;
        self.node_info().validate().map_err(|e| match e {
            raftgate_model::NodeInfoError::Region(_) => field("node.region", e.to_string()),
            raftgate_model::NodeInfoError::Address { field: f, .. } => {
                field(format!("advertise.{}", f.trim_end_matches("_addr")), e.to_string())
            }
        })?;
        self.validate_bootstrap()
    }

    fn validate_bootstrap(&self) -> Result<(), ConfigError> {
        let members = &self.bootstrap.members;
        if members.is_empty() {
            return Ok(());
        }
        let mut seen_ids = BTreeMap::new();
        let mut seen_addrs = BTreeMap::new();
        for (i, m) in members.iter().enumerate() {
            let at = |f: &str| format!("bootstrap.members[{i}].{f}");
            if m.id == 0 {
                return Err(field(at("id"), "must be greater than 0"));
            }
            if let Some(first) = seen_ids.insert(m.id, i) {
                return Err(field(
                    at("id"),
                    format!("node id {} is already listed at bootstrap.members[{first}]", m.id),
                ));
            }
            let info = NodeInfo {
                region: m.region.clone(),
                raft_addr: m.raft_addr.clone(),
                admin_addr: m.admin_addr.clone(),
                http_addr: m.http_addr.clone(),
            };
            info.validate().map_err(|e| match &e {
                raftgate_model::NodeInfoError::Region(_) => field(at("region"), e.to_string()),
                raftgate_model::NodeInfoError::Address { field: f, .. } => field(at(f), e.to_string()),
            })?;
            for addr in [&m.raft_addr, &m.admin_addr] {
                if let Some(first) = seen_addrs.insert(addr.clone(), i) {
                    return Err(field(
                        at("raft_addr"),
                        format!("address {addr} is already used by bootstrap.members[{first}]"),
                    ));
                }
            }
        }
        match self.bootstrap_members().get(&self.node.id) {
            None => Err(field("bootstrap.members", format!("must include this node (id {})", self.node.id))),
            Some(me) if *me != self.node_info() => Err(field(
                "bootstrap.members",
                format!(
                    "the entry for this node (id {}) differs from its own region and addresses {}",
                    self.node.id,
                    self.node_info()
                ),
            )),
            Some(_) => Ok(()),
        }
    }
}

/// Parses `ID=REGION,RAFT_ADDR,ADMIN_ADDR,HTTP_ADDR`.
pub fn parse_member(s: &str) -> Result<BootstrapMember, String> {
    let (id, rest) = s.split_once('=').ok_or("expected ID=REGION,RAFT_ADDR,ADMIN_ADDR,HTTP_ADDR")?;
    let id = id.trim().parse().map_err(|_| format!("node id {id:?} is not a number"))?;
    let parts: Vec<&str> = rest.split(',').map(str::trim).collect();
    let [region, raft, admin, http] = parts[..] else {
        return Err("expected four comma-separated fields after '=': REGION,RAFT_ADDR,ADMIN_ADDR,HTTP_ADDR".into());
    };
    Ok(BootstrapMember {
        id,
        region: region.into(),
        raft_addr: raft.into(),
        admin_addr: admin.into(),
        http_addr: http.into(),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    const GOOD: &str = r#"
[node]
id = 1
region = "eu-west"
data_dir = "data/1"

[listen]
raft = "127.0.0.1:7101"
admin = "127.0.0.1:7201"
http = "127.0.0.1:7301"

[bootstrap]
members = [
  { id = 1, region = "eu-west", raft_addr = "127.0.0.1:7101", admin_addr = "127.0.0.1:7201", http_addr = "127.0.0.1:7301" },
  { id = 2, region = "us-east", raft_addr = "127.0.0.1:7102", admin_addr = "127.0.0.1:7202", http_addr = "127.0.0.1:7302" },
]

[admin]
auth = "none"
"#;

    fn load(text: &str) -> Result<NodeConfig, String> {
        let c = NodeConfig::from_toml(text)?;
        c.validate().map_err(|e| e.to_string())?;
        Ok(c)
    }

    #[test]
    fn a_complete_file_loads() {
        let c = load(GOOD).unwrap();
        assert_eq!(c.node.id, 1);
        assert_eq!(c.bootstrap_members().len(), 2);
        assert_eq!(c.raft, RaftTimeouts::default());
    }

    #[test]
    fn the_admin_api_is_open_only_on_loopback_and_authenticated_needs_a_cluster_secret() {
        let open_remote = GOOD.replace("admin = \"127.0.0.1:7201\"", "admin = \"0.0.0.0:7201\"");
        let err = load(&open_remote).unwrap_err();
        assert!(err.contains("admin.auth") && err.contains("loopback"), "{err}");

        let required = GOOD.replace("auth = \"none\"", "auth = \"required\"");
        let err = load(&required).unwrap_err();
        assert!(err.contains("identity.key_hash_secret"), "{err}");

        let with_secret = format!("{required}\n[identity]\nkey_hash_secret = \"env:RAFTGATE_SECRET\"\n");
        load(&with_secret).unwrap();
        let remote = with_secret.replace("admin = \"127.0.0.1:7201\"", "admin = \"0.0.0.0:7201\"");
        let err = load(&remote).unwrap_err();
        assert!(err.contains("admin.tls"), "{err}");

        let bad_token = with_secret.replace("auth = \"required\"", "auth = \"required\"\nbootstrap_token = \"plain\"");
        assert!(load(&bad_token).unwrap_err().contains("admin.bootstrap_token"));
    }

    #[test]
    fn cluster_tls_is_required_off_loopback_and_its_interval_is_bounded() {
        let off_loopback = GOOD.replace("raft = \"127.0.0.1:7101\"", "raft = \"0.0.0.0:7101\"")
            + "\n[advertise]\nraft = \"127.0.0.1:7101\"\n";
        let err = load(&off_loopback).unwrap_err();
        assert!(err.contains("cluster_tls") && err.contains("loopback"), "{err}");
        let tls = "\n[cluster_tls]\ncert_file = \"n.crt\"\nkey_file = \"n.key\"\nca_file = \"ca.pem\"\n";
        let c = load(&format!("{off_loopback}{tls}")).unwrap();
        assert_eq!(c.cluster_tls.unwrap().reload_interval_ms, 10_000);
        let err = load(&format!("{GOOD}{tls}reload_interval_ms = 10\n")).unwrap_err();
        assert!(err.contains("cluster_tls.reload_interval_ms"), "{err}");
        let err = load(&format!("{GOOD}{tls}crl_file = \"x\"\n")).unwrap_err();
        assert!(err.contains("crl_file"), "{err}");
    }

    #[test]
    fn an_unknown_field_is_named() {
        let err = load(&GOOD.replace("region = \"eu-west\"\ndata_dir", "regoin = \"x\"\ndata_dir")).unwrap_err();
        assert!(err.contains("unknown field `regoin`"), "{err}");
    }

    #[test]
    fn a_duplicate_node_id_is_refused_by_field() {
        let err = load(&GOOD.replace("{ id = 2,", "{ id = 1,")).unwrap_err();
        assert!(err.contains("bootstrap.members[1].id") && err.contains("already listed"), "{err}");
    }

    #[test]
    fn bootstrap_must_include_this_node() {
        let err = load(&GOOD.replace("id = 1\nregion", "id = 3\nregion")).unwrap_err();
        assert!(err.contains("must include this node (id 3)"), "{err}");
    }

    #[test]
    fn bad_values_name_their_field() {
        let err = load(&GOOD.replace("admin = \"127.0.0.1:7201\"", "admin = \"nope\"")).unwrap_err();
        assert!(err.contains("`listen.admin`"), "{err}");
        let err = load(&GOOD.replace("[listen]", "[raft]\nelection_timeout_max_ms = 10\n[listen]")).unwrap_err();
        assert!(err.contains("`raft.election_timeout_max_ms`"), "{err}");
        let err = load("[node]\nid = 0\n").unwrap_err();
        assert!(err.contains("`node.id`"), "{err}");
        let err = load("[node\nid = 1").unwrap_err();
        assert!(err.contains("line 1"), "{err}");
    }

    #[test]
    fn the_staleness_bound_must_stay_below_the_election_timeout() {
        let c = load(GOOD).unwrap();
        assert_eq!(c.max_staleness_ms(), 1_200 - 200 - 100, "the default leaves room for two one-way delays");
        let err = load(&format!("{GOOD}\n[identity]\nmax_staleness_ms = 1100\n")).unwrap_err();
        assert!(err.contains("`identity.max_staleness_ms`") && err.contains("election_timeout_max_ms"), "{err}");
        let err = load(&format!("{GOOD}\n[identity]\nkey_hash_secret = \"plain\"\n")).unwrap_err();
        assert!(err.contains("`identity.key_hash_secret`"), "{err}");
        let err = load(&format!("{GOOD}\n[traffic]\ntrusted_proxies = [\"10.0.0.0/40\"]\n")).unwrap_err();
        assert!(err.contains("`traffic.trusted_proxies[0]`"), "{err}");
    }

    #[test]
    fn access_log_retention_needs_a_rotated_file() {
        let with = |t: &str| load(&format!("{GOOD}\n[access_log]\n{t}\n"));
        let c = with("output = \"/var/log/raftgate/access.log\"\nrotation = \"daily\"\nretain_files = 30").unwrap();
        assert_eq!(
            c.access_log.output(),
            Some(AccessLogOutput::Rolling {
                path: "/var/log/raftgate/access.log".into(),
                hourly: false,
                retain_files: 30
            })
        );
        let err = with("rotation = \"daily\"").unwrap_err();
        assert!(err.contains("`access_log.rotation`") && err.contains("file path"), "{err}");
        let err = with("output = \"/tmp/a.log\"\nretain_files = 3").unwrap_err();
        assert!(err.contains("`access_log.retain_files`"), "{err}");
        let err = with("output = \"/tmp/a.log\"\nrotation = \"weekly\"").unwrap_err();
        assert!(err.contains("`access_log.rotation`"), "{err}");
        let err = with("output = \"/tmp/a.log\"\nrotation = \"hourly\"\nretain_files = 10001").unwrap_err();
        assert!(err.contains("`access_log.retain_files`"), "{err}");
    }

    #[test]
    #[cfg(not(feature = "otlp"))]
    fn an_otlp_endpoint_is_refused_by_a_build_without_the_otlp_feature() {
        let err = load(&format!("{GOOD}\n[tracing]\notlp_endpoint = \"http://collector:4318\"\n")).unwrap_err();
        assert!(err.contains("`tracing.otlp_endpoint`") && err.contains(OTLP_NOT_BUILT), "{err}");
        assert!(err.contains("rebuild with --features otlp"), "{err}");
    }

    #[test]
    #[cfg(feature = "otlp")]
    fn otlp_settings_load_and_bad_ones_name_their_field() {
        let with = |extra: &str| format!("{GOOD}\n[tracing]\notlp_endpoint = \"http://collector:4318\"\n{extra}\n");
        let c = load(&with("service_name = \"edge\"")).unwrap();
        assert_eq!(c.tracing.service_name, "edge");
        for (extra, field, words) in [
            ("propagate = false", "`tracing.otlp_endpoint`", "propagate"),
            ("service_name = \"\"", "`tracing.service_name`", "1 to 255"),
            ("otlp_max_batch_spans = 0", "`tracing.otlp_max_batch_spans`", "1 to 8192"),
            ("otlp_max_queue_spans = 2000000", "`tracing.otlp_max_queue_spans`", "1 to 1048576"),
            ("otlp_export_timeout_ms = 10", "`tracing.otlp_export_timeout_ms`", "100 to 60000"),
            ("otlp_export_interval_ms = 0", "`tracing.otlp_export_interval_ms`", "100 to 60000"),
            (
                "otlp_max_batch_spans = 600\notlp_max_queue_spans = 500",
                "`tracing.otlp_max_batch_spans`",
                "must not exceed",
            ),
        ] {
            let err = load(&with(extra)).unwrap_err();
            assert!(err.contains(field) && err.contains(words), "{extra}: {err}");
        }
        let err = load(&with("").replace("http://collector:4318", "collector:4318")).unwrap_err();
        assert!(err.contains("`tracing.otlp_endpoint`") && err.contains("http://"), "{err}");
    }

    #[test]
    fn the_otlp_endpoint_is_a_base_url_that_gets_the_traces_path() {
        let url = |e: &str| TracingSection { otlp_endpoint: Some(e.into()), ..Default::default() }.otlp_traces_url();
        assert_eq!(url("http://collector:4318").unwrap().unwrap().to_string(), "http://collector:4318/v1/traces");
        assert_eq!(
            url("https://otel.example/base/").unwrap().unwrap().to_string(),
            "https://otel.example/base/v1/traces"
        );
        assert_eq!(url("http://[::1]:4318").unwrap().unwrap().to_string(), "http://[::1]:4318/v1/traces");
        for bad in
            ["collector:4318", "ftp://collector", "http://u:p@collector:4318", "http://c:4318/?x=1", "http://c/#f", ""]
        {
            let err = url(bad).unwrap_err().to_string();
            assert!(err.contains("`tracing.otlp_endpoint`"), "{bad:?}: {err}");
        }
        assert!(TracingSection::default().otlp_traces_url().unwrap().is_none());
    }

    #[test]
    fn flags_override_the_file() {
        let mut c = NodeConfig::from_toml(GOOD).unwrap();
        let o =
            ConfigOverrides { heartbeat_interval_ms: Some(100), region: Some("eu-west".into()), ..Default::default() };
        c.apply(&o).unwrap();
        assert_eq!(c.raft.heartbeat_interval_ms, 100);
        c.validate().unwrap();
    }

    #[test]
    fn a_member_flag_parses_and_a_bad_one_is_explained() {
        let m = parse_member("2=us-east,h:1,h:2,h:3").unwrap();
        assert_eq!((m.id, m.region.as_str(), m.http_addr.as_str()), (2, "us-east", "h:3"));
        assert!(parse_member("x=a,b,c,d").unwrap_err().contains("not a number"));
        assert!(parse_member("2=a,b").unwrap_err().contains("four"));
    }
}
