//! Starting, serving and stopping one node.

use std::future::Future;
use std::sync::Arc;
use std::time::Duration;

use raftgate_admin::{AdminService, AuthSettings, Forwarder};
use raftgate_cluster::{ApplyObserver, ClusterError, ClusterNode, ClusterTls, NodeEnv, StartError};
use raftgate_identity::apikey::KeyHasher;
use raftgate_model::{Command, State};
use raftgate_proxy::tls::{TlsError, TlsSource};
use raftgate_proxy::traffic::LeaseTuning;
use raftgate_proxy::{Gateway, GatewayConfig, IdentityConfig, TrafficConfig, ViewAge};
use tokio::io::{AsyncRead, AsyncWrite};
use tokio::net::TcpListener;
use tokio::sync::watch;
use tokio_stream::wrappers::TcpListenerStream;
use tokio_stream::Stream;
use tonic::transport::server::Connected;

use crate::config::{AdminAuth, NodeConfig};

/// How long shutdown waits for in-flight admin requests before stopping Raft.
const DRAIN_TIMEOUT: Duration = Duration::from_secs(10);
/// Most concurrent gRPC streams per connection on each listener.
const MAX_CONCURRENT_STREAMS: u32 = 256;
/// Upper bound on any one gRPC call a node serves (writes and reads have tighter ones).
const REQUEST_TIMEOUT: Duration = Duration::from_secs(60);

#[derive(Debug, thiserror::Error)]
pub enum NodeError {
    #[error("cannot listen on {addr} (`{field}`): {source}")]
    Bind { field: &'static str, addr: String, source: std::io::Error },
    #[error("cannot create data dir {path} (`node.data_dir`): {source}")]
    DataDir { path: String, source: std::io::Error },
    #[error(transparent)]
    Start(#[from] StartError),
    #[error("bootstrap failed: {0}")]
    Bootstrap(ClusterError),
    #[error("https certificates: {0}")]
    Tls(TlsError),
    #[error("{0}")]
    AdminTls(String),
    #[error("{0}")]
    ClusterTls(String),
    #[error("{0}")]
    Config(#[from] crate::config::ConfigError),
    #[error("{listener} listener failed: {message}")]
    Server { listener: &'static str, message: String },
    #[cfg(feature = "otlp")]
    #[error(transparent)]
    Otlp(#[from] crate::otlp::OtlpError),
}

async fn bind(field: &'static str, addr: &str) -> Result<TcpListener, NodeError> {
    TcpListener::bind(addr).await.map_err(|source| NodeError::Bind { field, addr: addr.to_string(), source })
}

/// A future that completes when `stop` turns true.
async fn stopped(mut stop: watch::Receiver<bool>) {
    let _ = stop.wait_for(|s| *s).await;
}

fn server_builder() -> tonic::transport::Server {
    tonic::transport::Server::builder()
        .http2_keepalive_interval(Some(Duration::from_secs(1)))
        .http2_keepalive_timeout(Some(Duration::from_secs(2)))
        .max_concurrent_streams(Some(MAX_CONCURRENT_STREAMS))
        .timeout(REQUEST_TIMEOUT)
        .tcp_nodelay(true)
}

/// Runs a node on TCP until `shutdown` completes, then stops it in order:
/// stop accepting admin requests and finish those in flight, stop Raft,
/// flush storage.
pub async fn run_node(config: NodeConfig, shutdown: impl Future<Output = ()>) -> Result<(), NodeError> {
    // Bind first: a busy port is reported before anything is written to disk.
    let raft_listener = bind("listen.raft", &config.listen.raft).await?;
    let admin_listener = bind("listen.admin", &config.listen.admin).await?;
    match (&config.admin.tls, config.admin.auth) {
        (_, AdminAuth::None) => {
            tracing::warn!(addr = %config.listen.admin, "admin API is plaintext and unauthenticated: every local caller is an admin (loopback only, for development)")
        }
        (None, AdminAuth::Required) => {
            tracing::warn!(addr = %config.listen.admin, "admin API requires authentication but is plaintext (loopback only); configure admin.tls outside development")
        }
        (Some(_), AdminAuth::Required) => {
            tracing::info!(addr = %config.listen.admin, "admin API on TLS with authentication")
        }
    }
    let http_listener = bind("listen.http", &config.listen.http).await?;
    let https = match &config.https {
        Some(h) => {
            let tls = TlsSource::new(h.tls_settings()).map_err(NodeError::Tls)?;
            Some((bind("https.listen", &h.listen).await?, tls))
        }
        None => None,
    };
    let metrics_listener = match &config.listen.metrics {
        Some(addr) => Some(bind("listen.metrics", addr).await?),
        None => None,
    };
    // Checked before anything is written to the data dir.
    let cluster_tls = load_cluster_tls(&config)?;
    let mut env = NodeEnv::default();
    if let Some(tls) = &cluster_tls {
        env.dialer = tls.raft_dialer();
    }
    let node = start_node(&config, env).await?;

    let gateway = build_data_plane(&config, &node, None)?;
    let follower = tokio::spawn(follow_state(node.clone(), gateway.clone(), https.as_ref().map(|(_, t)| t.clone())));
    let jwks = tokio::spawn(raftgate_proxy::jwks::run_refresher(gateway.clone()));
    let (stop_tx, stop_rx) = watch::channel(false);
    let observer = crate::observe::Observer::new(&node, &gateway);
    let observe_task = metrics_listener.map(|l| {
        tracing::info!(addr = %config.listen.metrics.as_deref().unwrap_or(""), "metrics listening (/metrics, /healthz, /readyz)");
        tokio::spawn(crate::observe::serve(l, observer.clone(), stopped(stop_rx.clone())))
    });
    let mut data_plane = tokio::task::JoinSet::new();
    data_plane.spawn(raftgate_proxy::server::serve(gateway.clone(), http_listener, None, stopped(stop_rx.clone())));
    tracing::info!(addr = %config.listen.http, "data plane listening (HTTP/1.1 and h2c)");
    if let Some((listener, tls)) = https {
        data_plane.spawn(raftgate_proxy::server::serve(gateway.clone(), listener, Some(tls), stopped(stop_rx)));
        tracing::info!(addr = %config.https.as_ref().map(|h| h.listen.as_str()).unwrap_or(""), "data plane listening (HTTPS: HTTP/1.1 and h2 by ALPN)");
    }
    observer.data_plane_up.store(true, std::sync::atomic::Ordering::Relaxed);
    let shutdown = async {
        shutdown.await;
        observer.data_plane_up.store(false, std::sync::atomic::Ordering::Relaxed);
        // The data plane drains beside the admin API, before Raft stops.
        let _ = stop_tx.send(true);
    };
    let admin_incoming = TcpListenerStream::new(admin_listener);
    let result = match &cluster_tls {
        Some(tls) => {
            let raft_incoming = tls.accept(raft_listener);
            serve(node, &config, Some(&gateway), Some(tls), raft_incoming, admin_incoming, shutdown).await
        }
        None => {
            let raft_incoming = TcpListenerStream::new(raft_listener);
            serve(node, &config, Some(&gateway), None, raft_incoming, admin_incoming, shutdown).await
        }
    };
    let _ = stop_tx.send(true);
    while data_plane.join_next().await.is_some() {}
    // Every request has finished: send the spans still queued (bounded by
    // the sink; it blocks, so off the runtime's workers).
    if let Some(sink) = gateway.config().spans.clone() {
        let _ = tokio::task::spawn_blocking(move || sink.shutdown()).await;
    }
    follower.abort();
    jwks.abort();
    if let Some(t) = observe_task {
        t.abort();
    }
    result
}

/// The node's data plane, from its config, attached to its applied state
/// (revocations and quota grants are published from inside apply).
/// Upstream connections go through `dial` when given (the simulation's
/// network), else TCP. Routes arrive through [`follow_state`].
pub fn build_data_plane(
    config: &NodeConfig,
    node: &Arc<ClusterNode>,
    dial: Option<raftgate_proxy::connect::Dial>,
) -> Result<Arc<Gateway>, NodeError> {
    let https_port =
        config.https.as_ref().and_then(|h| h.listen.parse::<std::net::SocketAddr>().ok()).map(|a| a.port());
    let gateway = Gateway::with_dialer(
        GatewayConfig {
            region: config.node.region.clone(),
            limits: config.http.to_limits(),
            https_port,
            identity: identity_config(config, node)?,
            access_log: access_log_policy(config)?,
            metrics_off: config.listen.metrics.is_none(),
            edge: raftgate_proxy::gateway::EdgeConfig {
                global_ip: config.edge.ip.clone(),
                geo: load_geoip(config),
                cache_capacity_bytes: config.edge.cache_capacity_bytes,
                cache_max_entries: config.edge.cache_max_entries,
                anomaly: config.abuse.anomaly.as_ref().map(|a| a.policy()).transpose()?,
            },
            trace: raftgate_proxy::trace::TracePolicy {
                propagate: config.tracing.propagate,
                sample_per_million: (config.tracing.sample_rate * 1e6).round() as u32,
            },
            spans: span_sink(config)?,
            traffic: TrafficConfig {
                node_id: config.node.id,
                trusted_proxies: config.traffic.trusted_proxies()?,
                leases: LeaseTuning { batch_interval_ms: config.traffic.batch_interval_ms, ..LeaseTuning::default() },
            },
        },
        dial,
    );
    attach_data_plane(node, &gateway);
    Ok(gateway)
}

/// Where sampled requests go as spans: the OTLP exporter of
/// `tracing.otlp_endpoint` (None when unset).
#[cfg(feature = "otlp")]
fn span_sink(config: &NodeConfig) -> Result<Option<Arc<dyn raftgate_proxy::trace::SpanSink>>, NodeError> {
    let sink = crate::otlp::OtlpSink::start(config)?;
    Ok(sink.map(|s| s as Arc<dyn raftgate_proxy::trace::SpanSink>))
}

/// Without the `otlp` feature there is no exporter: an endpoint is refused
/// (also here, for a config that skipped validation), never ignored.
#[cfg(not(feature = "otlp"))]
fn span_sink(config: &NodeConfig) -> Result<Option<Arc<dyn raftgate_proxy::trace::SpanSink>>, NodeError> {
    match config.tracing.otlp_endpoint {
        Some(_) => Err(NodeError::Config(crate::config::ConfigError::Field {
            field: "tracing.otlp_endpoint".into(),
            problem: crate::config::OTLP_NOT_BUILT.into(),
        })),
        None => Ok(None),
    }
}

/// The GeoIP database of `edge.geoip_database`: a missing or corrupt file
/// is logged and leaves country rules failing closed (documented).
fn load_geoip(config: &NodeConfig) -> raftgate_proxy::edge::Geo {
    let path = config.edge.geoip_database.as_ref()?;
    match raftgate_geoip::GeoDb::open(path) {
        Ok(db) => {
            tracing::info!(database = %db.describe(), "GeoIP database loaded");
            Some(Arc::new(db))
        }
        Err(e) => {
            tracing::error!(error = %e, "GeoIP database not loaded: routes with country rules refuse every request until it is fixed and the node restarted");
            None
        }
    }
}

/// What the access log keeps, from `[access_log]`.
pub fn access_log_policy(config: &NodeConfig) -> Result<raftgate_proxy::access_log::AccessLogPolicy, NodeError> {
    use raftgate_proxy::access_log::{AccessLogPolicy, FieldSet, IpPrivacy, DEFAULT_REDACTED_PARAMS};
    let a = &config.access_log;
    let client_ip = match a.client_ip.as_str() {
        "truncate" => IpPrivacy::Truncate,
        "hash" => IpPrivacy::hashed_with(&config.key_hash_secret()?.0),
        _ => IpPrivacy::Full,
    };
    let dropped = FieldSet::parse(a.drop_fields.iter().map(String::as_str))
        .map_err(|e| crate::config::ConfigError::Field { field: "access_log.drop_fields".into(), problem: e })?;
    let mut redacted_params: Vec<String> = DEFAULT_REDACTED_PARAMS.iter().map(|s| s.to_string()).collect();
    redacted_params.extend(a.redact_query_params.iter().map(|p| p.to_ascii_lowercase()));
    Ok(AccessLogPolicy {
        enabled: a.enabled,
        sample_per_million: (a.sample_rate * 1e6).round() as u32,
        errors_always: a.errors_always,
        client_ip,
        dropped,
        redacted_params,
    })
}

/// How this node's data plane checks credentials, from its config.
pub fn identity_config(config: &NodeConfig, node: &Arc<ClusterNode>) -> Result<IdentityConfig, NodeError> {
    let (secret, configured) = config.key_hash_secret()?;
    if !configured {
        tracing::warn!("identity.key_hash_secret is not set: API keys are hashed with the public development secret; set it (the same on every node) outside development");
    }
    let view = node.view().clone();
    let max_staleness_ms = config.max_staleness_ms();
    let d_max = config.identity.max_one_way_delay_ms;
    tracing::info!(
        max_staleness_ms,
        max_one_way_delay_ms = d_max,
        election_timeout_max_ms = config.raft.election_timeout_max_ms,
        "revocation bound: a revoked credential is refused on every node no later than {} ms after its commit, plus the time to apply it; connected nodes refuse it within one replication delay",
        max_staleness_ms + d_max
    );
    Ok(IdentityConfig {
        key_hasher: KeyHasher::new(&secret),
        view_age: Some(ViewAge(Arc::new(move || view.view_age_ms()))),
        max_staleness_ms,
        max_one_way_delay_ms: d_max,
        token_cache_entries: config.identity.token_cache_entries,
        jwks_min_refresh_ms: config.identity.jwks_min_refresh_ms,
    })
}

/// Publishes revocations and quota grants into the data plane from inside
/// apply, so that a revocation applied on this node is enforced by it
/// before apply returns, and a grant is spendable as soon as it applies.
struct DataPlanePublisher(Arc<Gateway>);

impl ApplyObserver for DataPlanePublisher {
    fn applied(&self, state: &State, accepted: &[&Command]) {
        if accepted.iter().any(|c| c.touches_revocations()) {
            self.0.revocations_applied(state, Some(accepted));
        }
        for c in accepted {
            if let Command::PurgeCache { route, path_prefix } = c {
                self.0.purge_cache(route.as_ref(), path_prefix.as_deref());
            }
        }
        if accepted.iter().any(|c| matches!(c, Command::QuotaLeases { .. } | Command::ResetQuota { .. })) {
            self.0.quota_leases().applied(state, accepted);
        }
        // A forget drops the consumer's ledger entries: drop its leases too.
        for c in accepted {
            if let Command::ForgetConsumer { consumer, .. } = c {
                self.0.quota_leases().forget(consumer);
            }
        }
    }
    fn replaced(&self, state: &State) {
        self.0.revocations_applied(state, None);
        self.0.quota_leases().replaced(state);
    }
}

/// Connects a gateway to the node's applied state (revocations and quota
/// grants synchronously).
pub fn attach_data_plane(node: &Arc<ClusterNode>, gateway: &Arc<Gateway>) {
    node.observe_applied(Arc::new(DataPlanePublisher(gateway.clone())));
}

/// Rolls the anomaly detector every second and acts on what it raises:
/// a log line for every event, and for `revoke` an audited revocation of
/// the consumer through this node's own admin API (forwarded to the leader).
pub async fn run_anomaly_actor(
    gateway: Arc<Gateway>,
    mut events: tokio::sync::mpsc::Receiver<raftgate_proxy::abuse::AnomalyEvent>,
    link: Arc<Forwarder>,
    admin_addr: String,
    node_id: u64,
) {
    use raftgate_proxy::abuse::AnomalyAction;
    let ticker_gateway = gateway.clone();
    let ticker = tokio::spawn(async move {
        let mut tick = tokio::time::interval(Duration::from_secs(1));
        tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            tick.tick().await;
            if let Some(d) = ticker_gateway.anomaly() {
                d.tick(ticker_gateway.now_ms());
            }
        }
    });
    let mut client = link.client(&admin_addr).ok();
    while let Some(e) = events.recv().await {
        tracing::warn!(target: "raftgate::abuse", consumer = %e.consumer, action = e.action.as_str(), reason = %e.reason, "consumer traffic anomaly");
        if e.action != AnomalyAction::Revoke {
            continue;
        }
        let Some(c) = client.as_mut() else { continue };
        let req = raftgate_proto::admin::ReportAnomalyRequest {
            consumer: e.consumer.to_string(),
            reason: e.reason.clone(),
            node: node_id,
        };
        match tokio::time::timeout(Duration::from_secs(10), c.report_anomaly(req)).await {
            Ok(Ok(_)) => {
                tracing::warn!(target: "raftgate::abuse", consumer = %e.consumer, "consumer revoked after an anomaly")
            }
            Ok(Err(s)) => tracing::error!(consumer = %e.consumer, error = %s.message(), "anomaly revocation refused"),
            Err(_) => tracing::error!(consumer = %e.consumer, "anomaly revocation timed out"),
        }
    }
    ticker.abort();
}

/// Sends this node's quota asks and returns, one command per batch
/// interval, through its own admin API (which forwards to the leader). A
/// batch that fails is not retried: its returns stay unused (safe) and its
/// asks are made again by the next batch.
pub async fn run_quota_batcher(gateway: Arc<Gateway>, link: Arc<Forwarder>, admin_addr: String, timeout: Duration) {
    let interval = Duration::from_millis(gateway.config().traffic.leases.batch_interval_ms);
    let mut tick = tokio::time::interval(interval);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    let mut client = match link.client(&admin_addr) {
        Ok(c) => c,
        Err(e) => {
            tracing::error!(error = %e.message(), "quota batcher: bad admin address; quotas get no leases");
            return;
        }
    };
    loop {
        tick.tick().await;
        let asks = gateway.quota_leases().batch(gateway.wall_ms());
        if asks.is_empty() {
            continue;
        }
        let req = raftgate_proto::admin::QuotaLeasesRequest {
            node: gateway.quota_leases().node(),
            incarnation: gateway.quota_leases().incarnation(),
            asks_json: serde_json::to_string(&asks).expect("asks serialize"),
        };
        let mut req = link.node_request(req);
        req.set_timeout(timeout);
        if let Err(e) = client.submit_quota_leases(req).await {
            tracing::debug!(error = %e.message(), asks = asks.len(), "quota lease batch not committed");
            gateway.quota_leases().batch_failed(&asks);
        }
    }
}

/// Rebuilds the data plane's snapshots whenever applied routing or identity
/// changes. Runs for the life of the node; the request path never waits for it.
pub async fn follow_state(node: Arc<ClusterNode>, gateway: Arc<Gateway>, tls: Option<Arc<TlsSource>>) {
    let mut applied = node.subscribe_applied();
    let mut published = 0;
    let mut published_tls = 0;
    let mut published_identity = (0, 0);
    loop {
        let identity = node.local_read(|a| {
            let s = &a.state;
            let revision = (s.identity_revision(), s.plan_revision());
            gateway.set_cluster_size(a.membership.membership().nodes().count());
            (revision != published_identity).then(|| {
                (
                    revision,
                    s.consumers().clone(),
                    s.api_keys().clone(),
                    s.cert_owners().clone(),
                    s.issuers().clone(),
                    s.plans().clone(),
                )
            })
        });
        if let Some((revision, consumers, keys, certs, issuers, plans)) = identity {
            gateway.publish_identity(revision.0.max(revision.1), &consumers, &keys, &certs, &issuers, &plans);
            tracing::info!(
                identity_revision = revision.0,
                plan_revision = revision.1,
                consumers = consumers.len(),
                api_keys = keys.len(),
                issuers = issuers.len(),
                "identity snapshot published"
            );
            published_identity = revision;
        }
        let changed = node.local_read(|a| {
            let revision = a.state.routing_revision();
            (revision != published).then(|| (revision, a.state.routes().clone(), a.state.upstreams().clone()))
        });
        if let Some((revision, routes, upstreams)) = changed {
            let took = gateway.publish(revision, &routes, &upstreams);
            tracing::info!(
                routing_revision = revision,
                routes = routes.len(),
                upstreams = upstreams.len(),
                build_us = took.as_micros() as u64,
                "data plane snapshot published"
            );
            published = revision;
        }
        if let Some(tls) = &tls {
            let certs = node.local_read(|a| {
                (a.state.tls_revision() != published_tls)
                    .then(|| (a.state.tls_revision(), a.state.certificates().clone()))
            });
            if let Some((revision, certs)) = certs {
                let specs = certs
                    .values()
                    .map(|c| raftgate_proxy::tls::CertSpec {
                        hosts: c.spec.hosts.clone(),
                        cert_file: c.spec.cert_file.clone().into(),
                        key_file: c.spec.key_file.clone().into(),
                    })
                    .collect();
                match tls.set_replicated(specs) {
                    Ok(()) => tracing::info!(
                        tls_revision = revision,
                        certificates = certs.len(),
                        "certificate references in service"
                    ),
                    Err(e) => {
                        tracing::error!(tls_revision = revision, error = %e, "certificate references do not load on this node; the previous certificates stay in service")
                    }
                }
                published_tls = revision;
            }
        }
        if applied.changed().await.is_err() {
            return;
        }
    }
}

/// This node's cluster TLS from `[cluster_tls]`, checked completely (None
/// without the section: plaintext Raft, which validation allows on loopback only).
pub fn load_cluster_tls(config: &NodeConfig) -> Result<Option<Arc<ClusterTls>>, NodeError> {
    let Some(section) = &config.cluster_tls else {
        tracing::warn!(addr = %config.listen.raft, "Raft transport is plaintext (loopback only); configure cluster_tls outside development");
        return Ok(None);
    };
    let tls = ClusterTls::load(section.files(), &config.node.cluster_name, config.node.id)
        .map_err(|e| NodeError::ClusterTls(e.to_string()))?;
    tracing::info!(
        addr = %config.listen.raft,
        cluster = %config.node.cluster_name,
        not_after = %tls.not_after(),
        reload_interval_ms = section.reload_interval_ms,
        "Raft transport on mutual TLS: peers must present a node certificate of this cluster"
    );
    Ok(Some(tls))
}

/// Creates the data dir and starts consensus; the node serves nothing yet.
pub async fn start_node(config: &NodeConfig, env: NodeEnv) -> Result<Arc<ClusterNode>, NodeError> {
    let data_dir = &config.node.data_dir;
    std::fs::create_dir_all(data_dir)
        .map_err(|source| NodeError::DataDir { path: data_dir.display().to_string(), source })?;
    let node = ClusterNode::start(
        config.node.id,
        config.node_info(),
        data_dir,
        &config.node.cluster_name,
        config.raft.clone(),
        env,
    )
    .await?;
    Ok(node)
}

/// Serves the Raft and admin APIs of a started node on the given incoming
/// connections (plaintext Raft: the simulation; [`run_node`] serves
/// `cluster_tls`), bootstraps if configured, and stops in order when
/// `shutdown` completes or a listener fails.
pub async fn serve_node<RI, AI, IO, IE>(
    node: Arc<ClusterNode>,
    config: &NodeConfig,
    data_plane: Option<&Arc<Gateway>>,
    raft_incoming: RI,
    admin_incoming: AI,
    shutdown: impl Future<Output = ()>,
) -> Result<(), NodeError>
where
    RI: Stream<Item = Result<IO, IE>> + Send + 'static,
    AI: Stream<Item = Result<IO, IE>> + Send + 'static,
    IO: AsyncRead + AsyncWrite + Connected + Unpin + Send + 'static,
    IO::ConnectInfo: Clone + Send + Sync + 'static,
    IE: Into<Box<dyn std::error::Error + Send + Sync>> + Send + 'static,
{
    if config.cluster_tls.is_some() {
        return Err(NodeError::ClusterTls("cluster_tls: serve_node serves plaintext Raft; run_node serves TLS".into()));
    }
    serve(node, config, data_plane, None, raft_incoming, admin_incoming, shutdown).await
}

async fn serve<RI, RIO, RIE, AI, AIO, AIE>(
    node: Arc<ClusterNode>,
    config: &NodeConfig,
    data_plane: Option<&Arc<Gateway>>,
    cluster_tls: Option<&Arc<ClusterTls>>,
    raft_incoming: RI,
    admin_incoming: AI,
    shutdown: impl Future<Output = ()>,
) -> Result<(), NodeError>
where
    RI: Stream<Item = Result<RIO, RIE>> + Send + 'static,
    RIO: AsyncRead + AsyncWrite + Connected + Unpin + Send + 'static,
    RIO::ConnectInfo: Clone + Send + Sync + 'static,
    RIE: Into<Box<dyn std::error::Error + Send + Sync>> + Send + 'static,
    AI: Stream<Item = Result<AIO, AIE>> + Send + 'static,
    AIO: AsyncRead + AsyncWrite + Connected + Unpin + Send + 'static,
    AIO::ConnectInfo: Clone + Send + Sync + 'static,
    AIE: Into<Box<dyn std::error::Error + Send + Sync>> + Send + 'static,
{
    let id = config.node.id;
    let admin_tls = match &config.admin.tls {
        Some(t) => Some(AdminTlsFiles::load(t)?),
        None => None,
    };
    let auth = AuthSettings {
        required: config.admin.auth == AdminAuth::Required,
        bootstrap_token: config.bootstrap_token()?,
        secret: config.key_hash_secret()?.0,
        // Node assertions need a node certificate where one can be shown.
        node_cert_cluster: match (cluster_tls, &admin_tls) {
            (Some(t), Some(_)) => Some(t.cluster().to_string()),
            (Some(_), None) => {
                tracing::warn!("cluster_tls without admin.tls: requests nodes forward on the plaintext admin API are authenticated by the cluster secret only");
                None
            }
            (None, _) => None,
        },
    };
    let (stop_tx, stop_rx) = watch::channel(false);
    let raft_server = server_builder()
        .add_service(node.raft_service().into_server())
        .serve_with_incoming_shutdown(raft_incoming, stopped(stop_rx.clone()));
    let (mut admin, denials) = AdminService::new(node.clone(), auth);
    admin = admin.with_staleness(config.max_staleness_ms(), config.identity.max_one_way_delay_ms);
    match (&admin_tls, cluster_tls) {
        (Some(tls), None) => admin = admin.with_admin_dialer(tls.dialer()),
        (Some(tls), Some(cluster)) => {
            let client = cluster
                .client_config_trusting(&tls.ca)
                .map_err(|e| NodeError::AdminTls(format!("admin.tls.ca_file: {e}")))?;
            admin = admin.with_admin_dialer(cluster.dialer_with(client));
        }
        // Not the Raft dialer: the admin API is plaintext.
        (None, Some(_)) => admin = admin.with_admin_dialer(raftgate_cluster::Dialer::tcp()),
        (None, None) => {}
    }

    let link = admin.link();
    let mut background = tokio::task::JoinSet::new();
    if let Some(cluster) = cluster_tls {
        background.spawn(cluster.clone().run_reloader());
    }
    // Without authentication nothing is refused, so nothing needs recording
    // (and the simulation keeps the task set it replays deterministically).
    if config.admin.auth == AdminAuth::Required {
        background.spawn(raftgate_admin::run_denial_recorder(denials, link.clone(), config.node_info().admin_addr));
    } else {
        drop(denials);
    }
    if let Some(events) = data_plane.and_then(|g| g.take_anomaly_events()) {
        let gateway = data_plane.expect("events come from a gateway").clone();
        background.spawn(run_anomaly_actor(
            gateway,
            events,
            link.clone(),
            config.node_info().admin_addr,
            config.node.id,
        ));
    }
    if let Some(gateway) = data_plane {
        background.spawn(run_quota_batcher(
            gateway.clone(),
            link.clone(),
            config.node_info().admin_addr,
            Duration::from_millis(config.raft.write_timeout_ms + 1_000),
        ));
    }
    if let Some(gateway) = data_plane {
        let view = Arc::new(CatalogView(gateway.clone()));
        let gateway = gateway.clone();
        admin = admin
            .with_stale_totals(Arc::new(move || {
                let t = gateway.stale_totals();
                (t.refused, t.served)
            }))
            .with_data_plane(view);
    }
    let mut admin_builder = server_builder();
    if let Some(tls) = &admin_tls {
        admin_builder = admin_builder
            .tls_config(tls.server_config(cluster_tls.map(|c| c.ca_pem())))
            .map_err(|e| NodeError::AdminTls(format!("admin.tls: {e}")))?;
    }
    let admin_server = admin_builder
        .add_service(admin.into_server())
        .serve_with_incoming_shutdown(admin_incoming, stopped(stop_rx.clone()));
    let mut raft_task = tokio::spawn(raft_server);
    let mut admin_task = tokio::spawn(admin_server);
    tracing::info!(node = id, region = %config.node.region, raft = %config.listen.raft, admin = %config.listen.admin, "node started");

    if !config.bootstrap.members.is_empty() {
        let members = config.bootstrap_members();
        match node.bootstrap(members.clone()).await {
            Ok(true) => tracing::info!(voters = ?members.keys().collect::<Vec<_>>(), "bootstrapped a new cluster"),
            Ok(false) => tracing::info!("data dir already holds a cluster; bootstrap list ignored"),
            Err(e) => {
                stop(&node, &stop_tx, raft_task, admin_task).await;
                return Err(NodeError::Bootstrap(e));
            }
        }
    }

    let _background = background;
    let failure = tokio::select! {
        _ = shutdown => None,
        r = &mut raft_task => Some(("raft", r)),
        r = &mut admin_task => Some(("admin", r)),
    };
    if let Some((listener, result)) = failure {
        let message = match result {
            Ok(Ok(())) => "stopped unexpectedly".to_string(),
            Ok(Err(e)) => e.to_string(),
            Err(e) => e.to_string(),
        };
        node.shutdown().await;
        return Err(NodeError::Server { listener, message });
    }
    tracing::info!(node = id, "shutting down: no new requests, finishing those in flight");
    stop(&node, &stop_tx, raft_task, admin_task).await;
    tracing::info!(node = id, "stopped; storage flushed");
    Ok(())
}

async fn stop(
    node: &Arc<ClusterNode>,
    stop_tx: &watch::Sender<bool>,
    raft_task: tokio::task::JoinHandle<Result<(), tonic::transport::Error>>,
    admin_task: tokio::task::JoinHandle<Result<(), tonic::transport::Error>>,
) {
    let _ = stop_tx.send(true);
    if tokio::time::timeout(DRAIN_TIMEOUT, admin_task).await.is_err() {
        tracing::warn!("admin requests still running after {} s; stopping anyway", DRAIN_TIMEOUT.as_secs());
    }
    node.shutdown().await;
    let _ = tokio::time::timeout(DRAIN_TIMEOUT, raft_task).await;
}

/// The data plane's counters as the admin API serves them.
struct CatalogView(Arc<Gateway>);

impl raftgate_admin::DataPlaneView for CatalogView {
    fn route_traffic(&self) -> Vec<(String, u64, u64)> {
        self.0.route_traffic().into_iter().map(|(id, total, last)| (id.to_string(), total, last)).collect()
    }
    fn unknown_paths(&self, limit: usize) -> (Vec<(String, String, u64)>, u64) {
        self.0.unknown_paths().top(limit)
    }
}

/// The admin API's certificate, key and CA, read once at start.
struct AdminTlsFiles {
    cert: Vec<u8>,
    key: Vec<u8>,
    ca: Vec<u8>,
}

impl AdminTlsFiles {
    fn load(t: &crate::config::AdminTls) -> Result<Self, NodeError> {
        let read = |field: &str, path: &std::path::Path| {
            std::fs::read(path).map_err(|e| NodeError::AdminTls(format!("admin.tls.{field} {}: {e}", path.display())))
        };
        Ok(Self {
            cert: read("cert_file", &t.cert_file)?,
            key: read("key_file", &t.key_file)?,
            ca: read("ca_file", &t.ca_file)?,
        })
    }

    /// Clients may present a certificate signed by the CA (or, with
    /// `cluster_tls`, by the cluster CA in service at start: nodes calling
    /// each other); token callers need none.
    fn server_config(&self, cluster_ca: Option<Vec<u8>>) -> tonic::transport::ServerTlsConfig {
        use tonic::transport::{Certificate, Identity, ServerTlsConfig};
        let mut roots = self.ca.clone();
        if let Some(ca) = cluster_ca {
            roots.push(b'\n');
            roots.extend_from_slice(&ca);
        }
        ServerTlsConfig::new()
            .identity(Identity::from_pem(&self.cert, &self.key))
            .client_ca_root(Certificate::from_pem(roots))
            .client_auth_optional(true)
    }

    /// Dials other nodes' admin listeners over TLS, trusting only the CA.
    fn dialer(&self) -> raftgate_cluster::Dialer {
        let ca = tonic::transport::Certificate::from_pem(&self.ca);
        raftgate_cluster::Dialer::new(move |addr| {
            let endpoint = tonic::transport::Endpoint::from_shared(format!("https://{addr}"))
                .map_err(|e| e.to_string())?
                .connect_timeout(Duration::from_millis(500))
                .http2_keep_alive_interval(Duration::from_secs(1))
                .keep_alive_timeout(Duration::from_secs(2))
                .keep_alive_while_idle(true)
                .tcp_nodelay(true)
                .tls_config(tonic::transport::ClientTlsConfig::new().ca_certificate(ca.clone()))
                .map_err(|e| e.to_string())?;
            Ok(endpoint.connect_lazy())
        })
    }
}
