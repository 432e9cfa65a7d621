//! The node's observability listener (`listen.metrics`): Prometheus
//! metrics, liveness and readiness, apart from the data plane so that a
//! scrape or a probe never competes with traffic for connection slots.
//!
//! - `GET /metrics`: the data plane's and the consensus's metrics in the
//!   OpenMetrics text format (`prometheus-client`'s encoder).
//! - `GET /healthz`: 200 while the process serves at all (liveness).
//! - `GET /readyz`: 200 once this node has replayed the log it started
//!   with, its view of the cluster is within the staleness bound and its
//!   data-plane listeners are serving; 503 with the failing checks
//!   otherwise, and from the moment shutdown begins, so a load balancer
//!   drains the node before it stops.
//!
//! Bounded: at most [`MAX_CONNECTIONS`] connections, each with a header
//! read timeout; bodies are never read.

use std::convert::Infallible;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Weak};
use std::time::Duration;

use bytes::Bytes;
use http::{Method, Request, Response, StatusCode};
use http_body_util::Full;
use hyper::body::Incoming;
use hyper_util::rt::{TokioIo, TokioTimer};
use prometheus_client::collector::Collector;
use prometheus_client::encoding::{DescriptorEncoder, EncodeMetric};
use prometheus_client::metrics::gauge::ConstGauge;
use prometheus_client::metrics::MetricType;
use prometheus_client::registry::Registry;
use raftgate_cluster::{ClusterNode, Role};
use raftgate_proxy::metrics::DataPlaneCollector;
use raftgate_proxy::Gateway;
use tokio::net::TcpListener;

/// Concurrent connections to the observability listener.
pub const MAX_CONNECTIONS: usize = 64;
/// Time for a scraper or probe to send its request head.
const HEADER_READ_TIMEOUT: Duration = Duration::from_secs(10);

/// What `/metrics` and `/readyz` read.
pub struct Observer {
    registry: Registry,
    node: Weak<ClusterNode>,
    gateway: Weak<Gateway>,
    /// The commit index this node knew at start: ready once applied to it.
    startup_commit: Option<u64>,
    /// Set while the data-plane listeners serve; cleared when shutdown begins.
    pub data_plane_up: AtomicBool,
}

impl Observer {
    pub fn new(node: &Arc<ClusterNode>, gateway: &Arc<Gateway>) -> Arc<Self> {
        let mut registry = Registry::default();
        registry.register_collector(Box::new(DataPlaneCollector::new(gateway)));
        registry.register_collector(Box::new(ConsensusCollector(Arc::downgrade(node))));
        Arc::new(Self {
            registry,
            node: Arc::downgrade(node),
            gateway: Arc::downgrade(gateway),
            startup_commit: node.status().committed_index,
            data_plane_up: AtomicBool::new(false),
        })
    }

    /// The OpenMetrics text of every metric.
    pub fn metrics_text(&self) -> String {
        let mut out = String::with_capacity(16 * 1024);
        if prometheus_client::encoding::text::encode(&mut out, &self.registry).is_err() {
            out.clear();
        }
        out
    }

    /// The readiness checks that fail now (empty: ready).
    pub fn not_ready(&self) -> Vec<&'static str> {
        let mut failing = Vec::new();
        let (Some(node), Some(gateway)) = (self.node.upgrade(), self.gateway.upgrade()) else {
            return vec!["stopping"];
        };
        let status = node.status();
        match (status.applied_index, self.startup_commit) {
            (None, _) => failing.push("no_applied_state"),
            (Some(applied), Some(start)) if applied < start => failing.push("replaying_log"),
            _ => {}
        }
        if gateway.stale_view_age_ms().is_some() {
            failing.push("stale_view");
        }
        if !self.data_plane_up.load(Ordering::Relaxed) {
            failing.push("listeners_down");
        }
        failing
    }
}

/// Raft metrics, read from the node's status at scrape time.
#[derive(Debug)]
struct ConsensusCollector(Weak<ClusterNode>);

fn gauge(encoder: &mut DescriptorEncoder, name: &str, help: &str, v: i64) -> Result<(), std::fmt::Error> {
    ConstGauge::new(v).encode(encoder.encode_descriptor(name, help, None, MetricType::Gauge)?)
}

impl Collector for ConsensusCollector {
    fn encode(&self, mut encoder: DescriptorEncoder) -> Result<(), std::fmt::Error> {
        let Some(node) = self.0.upgrade() else { return Ok(()) };
        let s = node.status();
        let idx = |i: Option<u64>| i.map_or(-1, |i| i as i64);
        gauge(&mut encoder, "raftgate_raft_term", "Current Raft term.", s.term as i64)?;
        gauge(
            &mut encoder,
            "raftgate_raft_leader_id",
            "The node this node takes for leader (0: none).",
            s.leader_id.map_or(0, |l| l as i64),
        )?;
        let mut e = encoder.encode_descriptor(
            "raftgate_raft_role",
            "1 for this node's current Raft role.",
            None,
            MetricType::Gauge,
        )?;
        for (role, name) in [
            (Role::Leader, "leader"),
            (Role::Follower, "follower"),
            (Role::Candidate, "candidate"),
            (Role::Learner, "learner"),
            (Role::Shutdown, "shutdown"),
        ] {
            let v = i64::from(s.role == role);
            ConstGauge::new(v).encode(e.encode_family(&[("role", name)])?)?;
        }
        gauge(
            &mut encoder,
            "raftgate_raft_last_log_index",
            "Index of the last log entry (-1: none).",
            idx(s.last_log_index),
        )?;
        gauge(
            &mut encoder,
            "raftgate_raft_commit_index",
            "Highest committed index this node knows (-1: none).",
            idx(s.committed_index),
        )?;
        gauge(
            &mut encoder,
            "raftgate_raft_applied_index",
            "Highest index applied to the state (-1: none).",
            idx(s.applied_index),
        )?;
        gauge(
            &mut encoder,
            "raftgate_raft_snapshot_index",
            "Index of the latest snapshot (-1: none).",
            idx(s.snapshot_index),
        )?;
        let mut e = encoder.encode_descriptor(
            "raftgate_raft_follower_lag_entries",
            "Leader only: entries each follower or learner is behind the leader's log.",
            None,
            MetricType::Gauge,
        )?;
        let last = s.last_log_index.unwrap_or(0);
        for (id, matched) in &s.replication {
            let lag = last.saturating_sub(matched.unwrap_or(0)) as i64;
            let id = id.to_string();
            ConstGauge::new(lag).encode(e.encode_family(&[("follower", id.as_str())])?)?;
        }
        let voters = s.membership.voters.len() as i64;
        let learners = s.membership.learners.len() as i64;
        let mut e = encoder.encode_descriptor("raftgate_raft_members", "Members by kind.", None, MetricType::Gauge)?;
        ConstGauge::new(voters).encode(e.encode_family(&[("kind", "voter")])?)?;
        ConstGauge::new(learners).encode(e.encode_family(&[("kind", "learner")])?)?;
        // Seconds as float; absent when this node never had a view.
        if let Some(age) = s.leader_view_age_ms {
            ConstGauge::new(age as f64 / 1e3).encode(encoder.encode_descriptor(
                "raftgate_view_age_seconds",
                "Age of this node's view of the cluster (staleness); authenticated routes fail closed beyond the bound.",
                None,
                MetricType::Gauge,
            )?)?;
        }
        if let Some(ack) = s.millis_since_quorum_ack {
            ConstGauge::new(ack as f64 / 1e3).encode(encoder.encode_descriptor(
                "raftgate_raft_quorum_ack_age_seconds",
                "Leader only: time since a quorum last acknowledged it.",
                None,
                MetricType::Gauge,
            )?)?;
        }
        let mut e = encoder.encode_descriptor("raftgate_build", "Build information.", None, MetricType::Info)?;
        e.encode_info(&[("version", env!("CARGO_PKG_VERSION"))])?;
        Ok(())
    }
}

fn reply(status: StatusCode, content_type: &'static str, body: String) -> Response<Full<Bytes>> {
    let mut resp = Response::new(Full::new(Bytes::from(body)));
    *resp.status_mut() = status;
    resp.headers_mut().insert(http::header::CONTENT_TYPE, http::HeaderValue::from_static(content_type));
    resp.headers_mut().insert(http::header::CACHE_CONTROL, http::HeaderValue::from_static("no-store"));
    resp
}

/// Answers one request on the observability listener.
pub fn answer(observer: &Observer, req: &Request<Incoming>) -> Response<Full<Bytes>> {
    if req.method() != Method::GET && req.method() != Method::HEAD {
        return reply(StatusCode::METHOD_NOT_ALLOWED, "application/json", r#"{"error":"only GET"}"#.into());
    }
    match req.uri().path() {
        "/metrics" => {
            reply(StatusCode::OK, "application/openmetrics-text; version=1.0.0; charset=utf-8", observer.metrics_text())
        }
        "/healthz" => reply(StatusCode::OK, "application/json", r#"{"status":"ok"}"#.into()),
        "/readyz" => {
            let failing = observer.not_ready();
            let status = if failing.is_empty() { StatusCode::OK } else { StatusCode::SERVICE_UNAVAILABLE };
            let body = serde_json::json!({ "ready": failing.is_empty(), "failing": failing });
            reply(status, "application/json", body.to_string())
        }
        _ => reply(StatusCode::NOT_FOUND, "application/json", r#"{"error":"not found"}"#.into()),
    }
}

/// Serves the observability listener until `stop` completes.
pub async fn serve(listener: TcpListener, observer: Arc<Observer>, stop: impl std::future::Future<Output = ()>) {
    let slots = Arc::new(tokio::sync::Semaphore::new(MAX_CONNECTIONS));
    tokio::pin!(stop);
    loop {
        let permit = tokio::select! {
            _ = &mut stop => return,
            p = slots.clone().acquire_owned() => match p { Ok(p) => p, Err(_) => return },
        };
        let (stream, _) = tokio::select! {
            _ = &mut stop => return,
            accepted = listener.accept() => match accepted {
                Ok(a) => a,
                Err(e) => {
                    tracing::warn!(error = %e, "metrics listener: accept failed");
                    tokio::time::sleep(Duration::from_millis(100)).await;
                    continue;
                }
            },
        };
        let observer = observer.clone();
        tokio::spawn(async move {
            let _permit = permit;
            let service = hyper::service::service_fn(move |req: Request<Incoming>| {
                let resp = answer(&observer, &req);
                async move { Ok::<_, Infallible>(resp) }
            });
            let conn = hyper::server::conn::http1::Builder::new()
                .timer(TokioTimer::new())
                .header_read_timeout(HEADER_READ_TIMEOUT)
                .serve_connection(TokioIo::new(stream), service);
            let _ = conn.await;
        });
    }
}
