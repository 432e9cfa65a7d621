//! The data plane's view of the replicated state.
//!
//! A [`Snapshot`] is built from the applied routes and upstreams whenever
//! routing changes, and published through an `ArcSwap`: a request loads the
//! current snapshot once (one atomic increment) and uses it to the end, so a
//! route change never disturbs a request in flight, and nothing on the
//! request path takes a lock or waits on the network.
//!
//! An upstream whose spec did not change keeps its runtime (connection pool,
//! balancer position, retry budget) across rebuilds; a changed one gets a new
//! runtime but keeps each surviving target's health and load. A removed
//! target's pooled connections close when the last request that uses the
//! old snapshot finishes.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use arc_swap::ArcSwap;
use hyper_rustls::HttpsConnector;
use hyper_util::client::legacy::connect::HttpConnector;
use hyper_util::client::legacy::Client;
use hyper_util::rt::{TokioExecutor, TokioTimer};
use raftgate_model::route::UpstreamProtocol;
use raftgate_model::{ObjectId, Route, Table, Upstream};

use raftgate_identity::apikey::KeyHasher;
use raftgate_identity::cache::TokenCache;
use raftgate_identity::jwt::{IssuerSet, IssuerVerifier};
use raftgate_identity::revocation::{Fingerprinter, RevocationIndex};
use raftgate_model::identity::{ApiKey, JwtIssuer};
use raftgate_model::{Consumer, State};

use crate::auth::IdentitySnapshot;
use crate::balance::{Balancer, RetryBudget, TargetState};
use crate::body::ProxyBody;
use crate::connect::{Dial, TargetConnector};
use crate::router::Router;

/// A number drawn at start that names this run of the node in the quota ledger.
fn incarnation() -> u64 {
    use ring::rand::SecureRandom;
    let mut b = [0u8; 8];
    if ring::rand::SystemRandom::new().fill(&mut b).is_err() {
        // No randomness: the start time in nanoseconds differs across restarts too.
        let t = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).unwrap_or_default();
        return t.as_nanos() as u64;
    }
    u64::from_le_bytes(b)
}

fn nonzero(v: usize, default: usize) -> usize {
    if v == 0 {
        default
    } else {
        v
    }
}

/// Fail-closed refusals are logged at most this often.
const STALE_LOG_INTERVAL_MS: u64 = 1_000;
/// Idle pooled connections kept per target.
pub const MAX_IDLE_PER_TARGET: usize = 256;
/// TCP keepalive on upstream connections.
const UPSTREAM_TCP_KEEPALIVE: Duration = Duration::from_secs(60);

/// Limits of the client-facing listener. Every one has a number.
#[derive(Clone, Debug)]
pub struct Limits {
    /// Longest request target (path and query), else 414.
    pub max_uri_bytes: usize,
    /// HTTP/1 read buffer, which bounds the request head; beyond it, 431.
    pub max_header_bytes: usize,
    /// Most request header fields, else 431.
    pub max_headers: usize,
    /// Time to receive a whole request head (and the keep-alive idle time
    /// between requests on HTTP/1), else the connection closes.
    pub header_read_timeout_ms: u64,
    /// Concurrent HTTP/2 streams per client connection.
    pub max_concurrent_streams: u32,
    /// Open client connections; beyond it new ones wait in the accept queue.
    pub max_connections: usize,
    /// How long shutdown waits for requests in flight.
    pub drain_timeout_ms: u64,
    /// Time for a client's TLS handshake.
    pub tls_handshake_timeout_ms: u64,
    /// A request or response body that sends nothing for this long is cut.
    pub stream_idle_timeout_ms: u64,
}

impl Default for Limits {
    fn default() -> Self {
        Self {
            max_uri_bytes: 8 * 1024,
            max_header_bytes: 64 * 1024,
            max_headers: 100,
            header_read_timeout_ms: 30_000,
            max_concurrent_streams: 256,
            max_connections: 10_000,
            drain_timeout_ms: 10_000,
            tls_handshake_timeout_ms: 10_000,
            stream_idle_timeout_ms: 300_000,
        }
    }
}

/// Where this node runs and how its listener behaves.
#[derive(Clone, Debug, Default)]
pub struct GatewayConfig {
    /// The node's region: upstream targets here are preferred.
    pub region: String,
    pub limits: Limits,
    /// Port of this node's HTTPS listener, for redirects (none: 443).
    pub https_port: Option<u16>,
    pub identity: IdentityConfig,
    pub traffic: TrafficConfig,
    pub access_log: crate::access_log::AccessLogPolicy,
    pub trace: crate::trace::TracePolicy,
    /// Receives every sampled request as a span (None: spans are not kept).
    pub spans: Option<Arc<dyn crate::trace::SpanSink>>,
    pub edge: EdgeConfig,
    /// Skip per-request metrics (responses, latency histograms): a node
    /// without a metrics listener has no one to read them.
    pub metrics_off: bool,
}

/// Edge protection on this node, for every route.
#[derive(Clone, Debug, Default)]
pub struct EdgeConfig {
    /// Address and country rules checked before each route's own.
    pub global_ip: Option<raftgate_model::edge::IpRules>,
    /// The GeoIP database for country rules (None: none configured or it
    /// did not load; country rules then refuse).
    pub geo: crate::edge::Geo,
    /// Memory for cached responses, all routes together (0: the default).
    pub cache_capacity_bytes: usize,
    /// Cached responses, all routes together (0: the default).
    pub cache_max_entries: usize,
    /// Per-consumer anomaly detection (None: off).
    pub anomaly: Option<crate::abuse::AnomalyPolicy>,
}

/// Rate limits and quotas on this node.
#[derive(Clone, Debug, Default)]
pub struct TrafficConfig {
    /// This node's id: the ledger grants leases to it by id.
    pub node_id: u64,
    /// Peers whose `X-Forwarded-For` is believed for client-IP limits.
    pub trusted_proxies: Vec<crate::traffic::Cidr>,
    pub leases: crate::traffic::LeaseTuning,
}

/// How old this node's view of the cluster is, in milliseconds (None: it
/// never had one). Read on every authenticated request: must be cheap.
#[derive(Clone)]
pub struct ViewAge(pub Arc<dyn Fn() -> Option<u64> + Send + Sync>);

impl std::fmt::Debug for ViewAge {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("ViewAge(..)")
    }
}

/// Credential checking on this node.
#[derive(Clone, Debug)]
pub struct IdentityConfig {
    /// Checks presented API keys against the stored hashes.
    pub key_hasher: KeyHasher,
    /// The age of this node's view; without it the node never counts as stale.
    pub view_age: Option<ViewAge>,
    /// A view older than this (plus `max_one_way_delay_ms`) may be missing
    /// revocations: authenticated routes then answer 503.
    pub max_staleness_ms: u64,
    /// The largest one-way delay between nodes assumed by the bound.
    pub max_one_way_delay_ms: u64,
    /// Verified tokens cached on this node.
    pub token_cache_entries: usize,
    /// Least time between two JWKS fetches of one issuer asked for by
    /// tokens with an unknown `kid`.
    pub jwks_min_refresh_ms: u64,
}

impl Default for IdentityConfig {
    fn default() -> Self {
        Self {
            key_hasher: KeyHasher::new(DEV_KEY_HASH_SECRET),
            view_age: None,
            max_staleness_ms: 900,
            max_one_way_delay_ms: 100,
            token_cache_entries: raftgate_identity::cache::DEFAULT_TOKEN_CACHE_ENTRIES,
            jwks_min_refresh_ms: 30_000,
        }
    }
}

/// The API-key hash secret used when none is configured (development only:
/// it is public, so stored hashes are then plain SHA-256-strength digests).
pub const DEV_KEY_HASH_SECRET: &[u8] = b"raftgate development key-hash secret; configure identity.key_hash_secret";

pub type UpstreamClient = Client<HttpsConnector<TargetConnector>, ProxyBody>;

/// One upstream as the data plane runs it.
pub struct UpstreamRuntime {
    pub spec: Upstream,
    pub revision: u64,
    pub balancer: Balancer,
    pub retry_budget: RetryBudget,
    /// The adaptive concurrency limit, when the upstream asks for one.
    pub shedder: Option<crate::shed::AdaptiveLimit>,
    pub client: UpstreamClient,
    /// `http` or `https`.
    pub scheme: http::uri::Scheme,
    /// Each target's address as a URI authority, in target order.
    pub authorities: Vec<http::uri::Authority>,
    /// Time to response head of each try that got one.
    pub latency: crate::metrics::LatencyHistogram,
}

impl UpstreamRuntime {
    fn new(spec: Upstream, revision: u64, states: Vec<Arc<TargetState>>, region: &str, dial: Option<Dial>) -> Self {
        let connect_timeout = Duration::from_millis(spec.connect_timeout_ms.into());
        let mut connector = HttpConnector::new();
        connector.set_connect_timeout(Some(connect_timeout));
        connector.set_nodelay(true);
        connector.set_keepalive(Some(UPSTREAM_TCP_KEEPALIVE));
        connector.enforce_http(false);
        let connector = tls_connector(&spec, TargetConnector::new(connector, dial, connect_timeout));
        let mut builder = Client::builder(TokioExecutor::new());
        builder
            .pool_idle_timeout(Duration::from_millis(spec.idle_timeout_ms.into()))
            .pool_max_idle_per_host(MAX_IDLE_PER_TARGET)
            .pool_timer(TokioTimer::new())
            .timer(TokioTimer::new());
        if matches!(spec.protocol, UpstreamProtocol::H2c | UpstreamProtocol::H2) {
            builder.http2_only(true);
        }
        let scheme = if spec.tls.is_some() { http::uri::Scheme::HTTPS } else { http::uri::Scheme::HTTP };
        // Validated as host:port when the upstream was written.
        let authorities = spec
            .targets
            .iter()
            .map(|t| t.addr.parse().unwrap_or_else(|_| http::uri::Authority::from_static("invalid.target:1")))
            .collect();
        let client = builder.build(connector);
        let balancer = Balancer::new(&spec, states, region);
        let retry_budget = RetryBudget::new(&spec.retries);
        let shedder = spec.adaptive_concurrency.clone().map(crate::shed::AdaptiveLimit::new);
        Self {
            spec,
            revision,
            balancer,
            retry_budget,
            client,
            scheme,
            authorities,
            shedder,
            latency: Default::default(),
        }
    }
}

/// The connector for an upstream: plain TCP, or TLS verified against the
/// upstream's CA file (or the public web roots) with ALPN for its protocol.
fn tls_connector(spec: &Upstream, tcp: TargetConnector) -> HttpsConnector<TargetConnector> {
    let provider = crate::tls::provider();
    let mut roots = rustls::RootCertStore::empty();
    match spec.tls.as_ref().and_then(|t| t.ca_file.as_ref()) {
        Some(ca) => match crate::tls::read_ca(std::path::Path::new(ca)) {
            Ok(certs) => {
                for c in certs {
                    if let Err(e) = roots.add(c) {
                        tracing::error!(upstream = %spec.id, ca_file = %ca, error = %e, "CA certificate refused");
                    }
                }
            }
            // Empty roots: every TLS try fails (502) until the file is fixed.
            Err(e) => tracing::error!(upstream = %spec.id, error = %e, "upstream CA file not loaded"),
        },
        None => roots.extend(webpki_roots::TLS_SERVER_ROOTS.iter().cloned()),
    }
    let config = rustls::ClientConfig::builder_with_provider(provider)
        .with_protocol_versions(&[&rustls::version::TLS13, &rustls::version::TLS12])
        .expect("ring supports TLS 1.2 and 1.3")
        .with_root_certificates(roots)
        .with_no_client_auth();
    let mut builder = hyper_rustls::HttpsConnectorBuilder::new().with_tls_config(config).https_or_http();
    if let Some(name) = spec.tls.as_ref().and_then(|t| t.server_name.clone()) {
        if let Ok(name) = rustls::pki_types::ServerName::try_from(name) {
            builder = builder.with_server_name_resolver(hyper_rustls::FixedServerNameResolver::new(name));
        }
    }
    match spec.protocol {
        UpstreamProtocol::Http1 => builder.enable_http1().wrap_connector(tcp),
        UpstreamProtocol::H2c | UpstreamProtocol::H2 => builder.enable_http2().wrap_connector(tcp),
    }
}

/// Everything a request needs, immutable once published.
pub struct Snapshot {
    /// The routing revision this snapshot was built from.
    pub revision: u64,
    pub router: Router,
    pub upstreams: HashMap<ObjectId, Arc<UpstreamRuntime>>,
    /// Request counters by route (they outlive snapshots).
    pub counters: HashMap<ObjectId, Arc<crate::catalog::RouteCounter>>,
    /// Compiled request schemas of the routes that have one.
    pub validators: HashMap<ObjectId, Arc<jsonschema::Validator>>,
    /// Compression policies of the routes that compress.
    pub compressors: HashMap<ObjectId, Arc<raftgate_compress::Policy>>,
    /// Cache policies of the routes that cache.
    pub caches: HashMap<ObjectId, Arc<raftgate_cache::Policy>>,
}

impl Snapshot {
    fn empty() -> Self {
        Self {
            revision: 0,
            router: Router::build(&Table::default()),
            upstreams: HashMap::new(),
            counters: HashMap::new(),
            validators: HashMap::new(),
            compressors: HashMap::new(),
            caches: HashMap::new(),
        }
    }
}

/// The data plane of one node: the published snapshot and the target state
/// that outlives snapshots.
pub struct Gateway {
    config: GatewayConfig,
    current: ArcSwap<Snapshot>,
    /// Target health and load by (upstream, address). Only the snapshot
    /// builder touches it; bounded by the upstream and target limits.
    targets: Mutex<HashMap<(ObjectId, String), Arc<TargetState>>>,
    epoch: Instant,
    identity: ArcSwap<IdentitySnapshot>,
    revocations: ArcSwap<RevocationIndex>,
    fingerprinter: Fingerprinter,
    /// Key sets fetched from issuers' JWKS URLs (at most one per issuer).
    jwks: Mutex<HashMap<ObjectId, crate::jwks::FetchedJwks>>,
    jwks_wanted: std::sync::atomic::AtomicBool,
    jwks_notify: tokio::sync::Notify,
    stale: StaleCounters,
    /// Held while an identity snapshot is built and stored.
    identity_publish: Mutex<()>,
    rate_limiter: crate::traffic::RateLimiter,
    quota_leases: crate::traffic::QuotaLeases,
    /// Members of the cluster (voters and learners), for cluster-share limits.
    cluster_size: std::sync::atomic::AtomicUsize,
    route_counters: crate::catalog::RouteCounters,
    unknown_paths: crate::catalog::UnknownPaths,
    metrics: crate::metrics::GatewayMetrics,
    response_cache: Arc<raftgate_cache::ResponseCache>,
    waf: raftgate_waf::Inspector,
    login_guard: crate::abuse::LoginGuard,
    anomaly: Option<crate::abuse::AnomalyDetector>,
    /// Taken by the node, which acts on anomalies.
    anomaly_events: Mutex<Option<tokio::sync::mpsc::Receiver<crate::abuse::AnomalyEvent>>>,
    /// How upstream connections are opened (None: TCP).
    dial: Option<Dial>,
}

/// Authenticated requests that met a stale view, counted for node status
/// and logged at most once a second per kind.
#[derive(Default)]
struct StaleCounters {
    refused_total: std::sync::atomic::AtomicU64,
    served_total: std::sync::atomic::AtomicU64,
    /// Gateway ms (plus the interval) of the last line, per kind.
    refused_logged_ms: std::sync::atomic::AtomicU64,
    served_logged_ms: std::sync::atomic::AtomicU64,
}

/// How many authenticated requests met a stale view since the node started.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct StaleTotals {
    /// Refused with 503 (the default).
    pub refused: u64,
    /// Served anyway by routes with `serve_when_stale`.
    pub served: u64,
}

impl Gateway {
    pub fn new(config: GatewayConfig) -> Arc<Self> {
        Self::with_dialer(config, None)
    }

    /// A gateway whose upstream connections go through `dial` (None: the
    /// OS's TCP stack). The simulation supplies its network here.
    pub fn with_dialer(config: GatewayConfig, dial: Option<Dial>) -> Arc<Self> {
        let fingerprinter = Fingerprinter::default();
        let (anomaly, anomaly_events) = match config.edge.anomaly.clone() {
            Some(p) => {
                let (d, rx) = crate::abuse::AnomalyDetector::new(p);
                (Some(d), Some(rx))
            }
            None => (None, None),
        };
        Arc::new(Self {
            current: ArcSwap::from_pointee(Snapshot::empty()),
            targets: Mutex::new(HashMap::new()),
            epoch: Instant::now(),
            identity: ArcSwap::from_pointee(IdentitySnapshot::empty()),
            revocations: ArcSwap::from_pointee(RevocationIndex::build(fingerprinter.clone(), &State::default())),
            fingerprinter,
            jwks: Mutex::new(HashMap::new()),
            jwks_wanted: std::sync::atomic::AtomicBool::new(false),
            jwks_notify: tokio::sync::Notify::new(),
            stale: StaleCounters::default(),
            identity_publish: Mutex::new(()),
            rate_limiter: crate::traffic::RateLimiter::default(),
            quota_leases: crate::traffic::QuotaLeases::new(
                config.traffic.node_id,
                incarnation(),
                config.traffic.leases,
            ),
            cluster_size: std::sync::atomic::AtomicUsize::new(1),
            route_counters: Default::default(),
            metrics: Default::default(),
            waf: crate::waf::inspector(),
            login_guard: Default::default(),
            anomaly,
            anomaly_events: Mutex::new(anomaly_events),
            response_cache: Arc::new(raftgate_cache::ResponseCache::new(
                nonzero(config.edge.cache_capacity_bytes, crate::cache::DEFAULT_CACHE_CAPACITY_BYTES),
                nonzero(config.edge.cache_max_entries, crate::cache::DEFAULT_CACHE_MAX_ENTRIES),
            )),
            unknown_paths: Default::default(),
            dial,
            config,
        })
    }

    /// Counts an authenticated request that met a stale view (`served`:
    /// its route serves anyway); logs at most once a second per kind.
    pub fn note_stale(&self, view_age_ms: u64, route: &str, served: bool) {
        use std::sync::atomic::Ordering::Relaxed;
        let (total, logged) = if served {
            (&self.stale.served_total, &self.stale.served_logged_ms)
        } else {
            (&self.stale.refused_total, &self.stale.refused_logged_ms)
        };
        let count = total.fetch_add(1, Relaxed) + 1;
        let now = self.now_ms() + STALE_LOG_INTERVAL_MS;
        let last = logged.load(Relaxed);
        if now.saturating_sub(last) < STALE_LOG_INTERVAL_MS
            || logged.compare_exchange(last, now, Relaxed, Relaxed).is_err()
        {
            return;
        }
        let age = if view_age_ms == u64::MAX { "never had a view".to_string() } else { format!("{view_age_ms} ms") };
        let max_staleness_ms = self.config.identity.max_staleness_ms;
        if served {
            tracing::warn!(view_age = %age, max_staleness_ms, served_total = count, last_route = route, "serving an authenticated route with a stale view (serve_when_stale): recent revocations may be missing");
        } else {
            tracing::warn!(view_age = %age, max_staleness_ms, refused_total = count, last_route = route, "failing closed: this node's view of the cluster is older than the staleness bound, so authenticated routes answer 503");
        }
    }

    pub fn rate_limiter(&self) -> &crate::traffic::RateLimiter {
        &self.rate_limiter
    }

    pub fn quota_leases(&self) -> &crate::traffic::QuotaLeases {
        &self.quota_leases
    }

    /// Members of the cluster as last applied (at least 1).
    pub fn cluster_size(&self) -> usize {
        self.cluster_size.load(std::sync::atomic::Ordering::Relaxed)
    }

    pub fn set_cluster_size(&self, members: usize) {
        self.cluster_size.store(members.max(1), std::sync::atomic::Ordering::Relaxed);
    }

    /// The client address limits count (see [`crate::traffic::client_ip`]).
    pub fn client_ip(&self, conn: &crate::pipeline::ConnInfo, headers: &http::HeaderMap) -> std::net::IpAddr {
        crate::traffic::client_ip(conn.client.ip(), headers, &self.config.traffic.trusted_proxies)
    }

    /// Authenticated requests that met a stale view since start.
    pub fn stale_totals(&self) -> StaleTotals {
        use std::sync::atomic::Ordering::Relaxed;
        StaleTotals { refused: self.stale.refused_total.load(Relaxed), served: self.stale.served_total.load(Relaxed) }
    }

    /// A token named a `kid` no issuer knows: fetch key sets again soon.
    pub fn request_jwks_refresh(&self) {
        if !self.jwks_wanted.swap(true, std::sync::atomic::Ordering::AcqRel) {
            self.jwks_notify.notify_one();
        }
    }

    pub(crate) fn take_jwks_refresh_request(&self) -> bool {
        self.jwks_wanted.swap(false, std::sync::atomic::Ordering::AcqRel)
    }

    pub(crate) async fn jwks_refresh_requested(&self) {
        self.jwks_notify.notified().await
    }

    pub(crate) fn fetched_jwks(&self, issuer: &ObjectId) -> Option<crate::jwks::FetchedJwks> {
        self.jwks.lock().unwrap_or_else(|p| p.into_inner()).get(issuer).cloned()
    }

    pub(crate) fn store_fetched_jwks(&self, issuer: ObjectId, fetched: crate::jwks::FetchedJwks) {
        self.jwks.lock().unwrap_or_else(|p| p.into_inner()).insert(issuer, fetched);
    }

    /// Rebuilds the identity snapshot from its own tables (new fetched keys).
    pub fn republish_identity(&self) {
        let _one_at_a_time = self.identity_publish.lock().unwrap_or_else(|p| p.into_inner());
        let s = self.identity();
        self.build_identity(s.revision, &s.consumers, &s.api_keys, &s.cert_owners, &s.issuer_specs, &s.plans);
    }

    /// The identity snapshot a request authenticates against.
    pub fn identity(&self) -> Arc<IdentitySnapshot> {
        self.identity.load_full()
    }

    /// The revocation index in force.
    pub fn revocations(&self) -> Arc<RevocationIndex> {
        self.revocations.load_full()
    }

    /// Replaces the revocation index (from the apply observer, synchronously).
    pub fn publish_revocations(&self, index: RevocationIndex) {
        self.revocations.store(Arc::new(index));
    }

    /// Applies a batch's revocations to the index, or rebuilds it when `accepted` is `None`.
    pub fn revocations_applied(&self, state: &State, accepted: Option<&[&raftgate_model::Command]>) {
        match accepted {
            None => self.publish_revocations(RevocationIndex::build(self.fingerprinter.clone(), state)),
            Some(cmds) => {
                if let Some(next) = self.revocations.load().after(state, cmds) {
                    self.publish_revocations(next);
                }
            }
        }
    }

    pub fn key_hasher(&self) -> &KeyHasher {
        &self.config.identity.key_hasher
    }

    /// Wall-clock milliseconds since the Unix epoch (credential expiry).
    pub fn wall_ms(&self) -> u64 {
        std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map_or(0, |d| d.as_millis() as u64)
    }

    /// `Some(age)` when this node's view is too old to vouch for revocations.
    pub fn stale_view_age_ms(&self) -> Option<u64> {
        let id = &self.config.identity;
        let probe = id.view_age.as_ref()?;
        match (probe.0)() {
            None => Some(u64::MAX),
            Some(age) if age.saturating_add(id.max_one_way_delay_ms) > id.max_staleness_ms => Some(age),
            Some(_) => None,
        }
    }

    /// Builds and publishes the identity snapshot. Issuers whose secret or
    /// keys do not load are left out (their tokens get 401) and logged.
    pub fn publish_identity(
        &self,
        revision: u64,
        consumers: &Table<Consumer>,
        api_keys: &Table<ApiKey>,
        cert_owners: &Arc<std::collections::BTreeMap<String, ObjectId>>,
        issuers: &Table<JwtIssuer>,
        plans: &Table<raftgate_model::traffic::Plan>,
    ) {
        // Serialised with republishes, so that a JWKS refresh never stores a
        // rebuild of an older snapshot over a newer one.
        let _one_at_a_time = self.identity_publish.lock().unwrap_or_else(|p| p.into_inner());
        self.build_identity(revision, consumers, api_keys, cert_owners, issuers, plans);
    }

    fn build_identity(
        &self,
        revision: u64,
        consumers: &Table<Consumer>,
        api_keys: &Table<ApiKey>,
        cert_owners: &Arc<std::collections::BTreeMap<String, ObjectId>>,
        issuers: &Table<JwtIssuer>,
        plans: &Table<raftgate_model::traffic::Plan>,
    ) {
        let mut verifiers = Vec::with_capacity(issuers.len());
        for stored in issuers.values() {
            let spec = &stored.spec;
            let secret = match &spec.secret {
                Some(r) => match raftgate_identity::secret::resolve(r) {
                    Ok(s) => Some(s),
                    Err(e) => {
                        tracing::error!(issuer = %spec.id, error = %e, "JWT issuer secret not loaded; its tokens are refused");
                        continue;
                    }
                },
                None => None,
            };
            let verifier = match IssuerVerifier::new(spec, secret.as_deref()) {
                Ok(v) => v,
                Err(e) => {
                    tracing::error!(issuer = %spec.id, error = %e, "JWT issuer not loaded; its tokens are refused");
                    continue;
                }
            };
            let fetched = spec.jwks_url.as_ref().and_then(|url| self.fetched_jwks(&spec.id).filter(|f| &f.url == url));
            let verifier = match fetched {
                Some(f) => match verifier.with_fetched_jwks(&f.document) {
                    Ok(v) => v,
                    Err(e) => {
                        tracing::warn!(issuer = %spec.id, error = %e, "fetched JWKS not usable; keeping the inline keys");
                        verifier
                    }
                },
                None => verifier,
            };
            verifiers.push(Arc::new(verifier));
        }
        self.jwks.lock().unwrap_or_else(|p| p.into_inner()).retain(|id, _| issuers.contains_key(id));
        let snapshot = IdentitySnapshot {
            revision,
            consumers: consumers.clone(),
            api_keys: api_keys.clone(),
            cert_owners: cert_owners.clone(),
            issuers: IssuerSet::new(verifiers),
            issuer_specs: issuers.clone(),
            plans: plans.clone(),
            token_cache: TokenCache::new(self.config.identity.token_cache_entries),
        };
        self.identity.store(Arc::new(snapshot));
    }

    pub fn config(&self) -> &GatewayConfig {
        &self.config
    }

    /// The snapshot a request uses from start to end.
    pub fn snapshot(&self) -> Arc<Snapshot> {
        self.current.load_full()
    }

    /// Monotonic milliseconds since the gateway started (balancer clock).
    /// Drops cached responses (a replicated `PurgeCache`, as it applies).
    pub fn purge_cache(&self, route: Option<&ObjectId>, path_prefix: Option<&str>) -> usize {
        let n = match (route, path_prefix) {
            (None, None) => self.response_cache.purge_all(),
            (Some(r), None) => self.response_cache.purge_route(r.as_str()),
            (r, Some(p)) => self.response_cache.purge_prefix(r.map(|r| r.as_str()), p),
        };
        tracing::info!(
            route = route.map_or("*", |r| r.as_str()),
            path_prefix = path_prefix.unwrap_or(""),
            purged = n,
            "cache purged"
        );
        n
    }

    pub fn login_guard(&self) -> &crate::abuse::LoginGuard {
        &self.login_guard
    }

    pub fn anomaly(&self) -> Option<&crate::abuse::AnomalyDetector> {
        self.anomaly.as_ref()
    }

    /// The anomaly events, once (the node's acting task takes them).
    pub fn take_anomaly_events(&self) -> Option<tokio::sync::mpsc::Receiver<crate::abuse::AnomalyEvent>> {
        self.anomaly_events.lock().unwrap_or_else(|p| p.into_inner()).take()
    }

    /// The WAF's compiled rules.
    pub fn waf(&self) -> &raftgate_waf::Inspector {
        &self.waf
    }

    /// The node's response cache (all routes).
    pub fn response_cache(&self) -> &Arc<raftgate_cache::ResponseCache> {
        &self.response_cache
    }

    /// The instant `now_ms` counts from.
    pub fn epoch(&self) -> Instant {
        self.epoch
    }

    pub fn now_ms(&self) -> u64 {
        self.epoch.elapsed().as_millis() as u64
    }

    /// Builds and publishes a snapshot of `routes` and `upstreams` at `revision`.
    /// Returns how long the build took.
    pub fn publish(&self, revision: u64, routes: &Table<Route>, upstreams: &Table<Upstream>) -> Duration {
        let started = Instant::now();
        let old = self.current.load_full();
        let router = Router::build(routes);
        let mut registry = self.targets.lock().unwrap_or_else(|p| p.into_inner());
        let mut runtimes = HashMap::with_capacity(upstreams.len());
        let mut live = std::collections::HashSet::new();
        for (id, stored) in upstreams.iter() {
            for t in &stored.spec.targets {
                live.insert((id.clone(), t.addr.clone()));
            }
            let reuse = old.upstreams.get(id).filter(|rt| rt.revision == stored.revision);
            let runtime = match reuse {
                Some(rt) => rt.clone(),
                None => {
                    let states: Vec<Arc<TargetState>> = stored
                        .spec
                        .targets
                        .iter()
                        .map(|t| {
                            registry
                                .entry((id.clone(), t.addr.clone()))
                                .or_insert_with(|| TargetState::new(t.addr.clone()))
                                .clone()
                        })
                        .collect();
                    let rt = Arc::new(UpstreamRuntime::new(
                        stored.spec.clone(),
                        stored.revision,
                        states,
                        &self.config.region,
                        self.dial.clone(),
                    ));
                    crate::health::spawn_checker(&rt);
                    rt
                }
            };
            runtimes.insert(id.clone(), runtime);
        }
        registry.retain(|k, _| live.contains(k));
        drop(registry);
        let counters = self.route_counters.for_routes(routes.keys());
        let mut validators = HashMap::new();
        for (id, stored) in routes.iter() {
            let Some(schema) = &stored.spec.request_schema else { continue };
            match jsonschema::validator_for(schema) {
                Ok(v) => {
                    validators.insert(id.clone(), Arc::new(v));
                }
                // Admin refuses such schemas; this route then refuses bodies (fail closed).
                Err(e) => tracing::error!(route = %id, error = %e, "request schema does not compile"),
            }
        }
        let compressors = routes
            .iter()
            .filter_map(|(id, stored)| {
                let c = stored.spec.compression.as_ref()?;
                Some((id.clone(), Arc::new(crate::edge::compression_policy(c))))
            })
            .collect();
        let caches = routes
            .iter()
            .filter_map(|(id, stored)| {
                let c = stored.spec.cache.as_ref()?;
                Some((id.clone(), Arc::new(crate::cache::policy(c))))
            })
            .collect();
        self.current.store(Arc::new(Snapshot {
            revision,
            router,
            upstreams: runtimes,
            counters,
            validators,
            compressors,
            caches,
        }));
        started.elapsed()
    }

    /// Requests no specific route matched, by method and path template.
    pub fn metrics(&self) -> &crate::metrics::GatewayMetrics {
        &self.metrics
    }

    /// Every route's counters (responses, latency, limits) on this node.
    pub fn route_metrics(&self) -> Vec<(ObjectId, Arc<crate::catalog::RouteCounter>)> {
        self.route_counters.all()
    }

    pub fn unknown_paths(&self) -> &crate::catalog::UnknownPaths {
        &self.unknown_paths
    }

    /// (route, requests since start, requests in the last whole minute) on this node.
    pub fn route_traffic(&self) -> Vec<(ObjectId, u64, u64)> {
        self.route_counters.read_all(self.wall_ms() / 60_000)
    }
}

#[cfg(test)]
mod tests {
    use std::collections::BTreeMap;

    use raftgate_model::Stored;

    use super::*;

    fn tables(upstreams: &[(&str, &[&str], u64)]) -> (Table<Route>, Table<Upstream>) {
        let mut map = BTreeMap::new();
        for (id, addrs, revision) in upstreams {
            let targets: Vec<_> = addrs.iter().map(|a| serde_json::json!({ "addr": a })).collect();
            let spec: Upstream = serde_json::from_value(serde_json::json!({ "id": id, "targets": targets })).unwrap();
            map.insert(ObjectId::parse(*id).unwrap(), Stored { spec, revision: *revision, updated_ms: 0 });
        }
        (Table::default(), Arc::new(map))
    }

    fn gateway() -> Arc<Gateway> {
        Gateway::new(GatewayConfig {
            region: "r".into(),
            limits: Limits::default(),
            https_port: None,
            identity: IdentityConfig::default(),
            traffic: TrafficConfig::default(),
            ..Default::default()
        })
    }

    #[test]
    fn an_unchanged_upstream_keeps_its_runtime_across_rebuilds() {
        let gw = gateway();
        let (routes, ups) = tables(&[("a", &["h:1"], 1), ("b", &["h:2"], 2)]);
        gw.publish(2, &routes, &ups);
        let first = gw.snapshot();
        let (routes, ups) = tables(&[("a", &["h:1"], 1), ("b", &["h:2", "h:3"], 3)]);
        gw.publish(3, &routes, &ups);
        let second = gw.snapshot();
        let id = |s: &str| ObjectId::parse(s).unwrap();
        assert!(Arc::ptr_eq(&first.upstreams[&id("a")], &second.upstreams[&id("a")]), "pool and balancer kept");
        assert!(
            !Arc::ptr_eq(&first.upstreams[&id("b")], &second.upstreams[&id("b")]),
            "a changed spec gets a new runtime"
        );
        // The surviving target keeps its state (load, ejection) in the new runtime.
        let old_target = &first.upstreams[&id("b")].balancer.targets()[0];
        let new_target = &second.upstreams[&id("b")].balancer.targets()[0];
        assert!(Arc::ptr_eq(old_target, new_target));
        assert_eq!(second.revision, 3);
    }

    #[test]
    fn removed_targets_leave_the_registry() {
        let gw = gateway();
        let (routes, ups) = tables(&[("a", &["h:1", "h:2"], 1)]);
        gw.publish(1, &routes, &ups);
        assert_eq!(gw.targets.lock().unwrap().len(), 2);
        let (routes, ups) = tables(&[("a", &["h:2"], 2)]);
        gw.publish(2, &routes, &ups);
        assert_eq!(gw.targets.lock().unwrap().len(), 1);
        let (routes, ups) = tables(&[]);
        gw.publish(3, &routes, &ups);
        assert!(gw.targets.lock().unwrap().is_empty());
        assert!(gw.snapshot().upstreams.is_empty());
    }
}
