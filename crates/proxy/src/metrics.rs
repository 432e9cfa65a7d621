//! The data plane's Prometheus metrics.
//!
//! Counting sits on the request path, so it is atomics only: every route
//! has a [`RouteMetrics`] (kept with its catalog counter, across snapshot
//! rebuilds, dropped with the route) indexed by method and status class,
//! and every upstream runtime a latency histogram. Nothing is keyed by
//! client input: methods outside the standard ones count as `OTHER`, so
//! the number of series is bounded by the routes and upstreams in the
//! state. [`DataPlaneCollector`] turns these into Prometheus families at
//! scrape time (through `prometheus-client`'s encoder), together with what
//! only a scrape needs: target health, ejections, the revocation set size.
//!
//! Durations are to the response head (a streamed body is not waited for),
//! in seconds.

use std::sync::atomic::{AtomicU64, Ordering::Relaxed};
use std::sync::{Arc, Weak};
use std::time::Duration;

use http::{Method, StatusCode};
use prometheus_client::collector::Collector;
use prometheus_client::encoding::{DescriptorEncoder, EncodeMetric, MetricEncoder, NoLabelSet};
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::MetricType;

use crate::gateway::Gateway;

/// Upper bounds of the latency histograms' buckets, in seconds.
pub const LATENCY_BUCKETS_S: [f64; 14] =
    [0.000_5, 0.001, 0.002_5, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0];

/// Method labels; anything else is `OTHER`.
const METHODS: [&str; 10] = ["GET", "HEAD", "POST", "PUT", "DELETE", "PATCH", "OPTIONS", "TRACE", "CONNECT", "OTHER"];
const CLASSES: [&str; 5] = ["1xx", "2xx", "3xx", "4xx", "5xx"];

fn method_index(m: &Method) -> usize {
    match *m {
        Method::GET => 0,
        Method::HEAD => 1,
        Method::POST => 2,
        Method::PUT => 3,
        Method::DELETE => 4,
        Method::PATCH => 5,
        Method::OPTIONS => 6,
        Method::TRACE => 7,
        Method::CONNECT => 8,
        _ => 9,
    }
}

const WAF_CATEGORIES: [&str; 4] = ["sqli", "xss", "cmdi", "traversal"];

fn waf_index(c: raftgate_waf::Category) -> usize {
    match c {
        raftgate_waf::Category::SqlInjection => 0,
        raftgate_waf::Category::Xss => 1,
        raftgate_waf::Category::CommandInjection => 2,
        raftgate_waf::Category::PathTraversal => 3,
    }
}

fn class_index(status: StatusCode) -> usize {
    (status.as_u16() / 100).clamp(1, 5) as usize - 1
}

/// A histogram of durations: fixed buckets, lock-free.
#[derive(Debug, Default)]
pub struct LatencyHistogram {
    /// Observations at or below each bound (not cumulative); the last is +Inf.
    buckets: [AtomicU64; LATENCY_BUCKETS_S.len() + 1],
    sum_ns: AtomicU64,
}

impl LatencyHistogram {
    pub fn observe(&self, d: Duration) {
        let s = d.as_secs_f64();
        let i = LATENCY_BUCKETS_S.iter().position(|b| s <= *b).unwrap_or(LATENCY_BUCKETS_S.len());
        self.buckets[i].fetch_add(1, Relaxed);
        self.sum_ns.fetch_add(d.as_nanos().min(u128::from(u64::MAX)) as u64, Relaxed);
    }

    pub fn count(&self) -> u64 {
        self.buckets.iter().map(|b| b.load(Relaxed)).sum()
    }

    fn encode(&self, mut encoder: MetricEncoder) -> Result<(), std::fmt::Error> {
        let mut buckets = Vec::with_capacity(self.buckets.len());
        let mut count = 0;
        for (i, b) in self.buckets.iter().enumerate() {
            let n = b.load(Relaxed);
            count += n;
            buckets.push((LATENCY_BUCKETS_S.get(i).copied().unwrap_or(f64::INFINITY), n));
        }
        let sum = self.sum_ns.load(Relaxed) as f64 / 1e9;
        encoder.encode_histogram::<NoLabelSet>(sum, count, &buckets, None)
    }
}

/// What a limit decided.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum LimitKind {
    Rate,
    Quota,
}

/// One route's counters on this node.
#[derive(Debug, Default)]
pub struct RouteMetrics {
    /// Responses by method and status class.
    responses: [[AtomicU64; CLASSES.len()]; METHODS.len()],
    pub duration: LatencyHistogram,
    /// [rate, quota] × [allowed, limited].
    limits: [[AtomicU64; 2]; 2],
    /// WAF findings: category × [blocked, logged].
    waf: [[AtomicU64; 2]; 4],
    /// Operations of a GraphQL route.
    pub graphql: GraphqlMetrics,
}

/// Most operation names one route counts by name; further names count as
/// [`OTHER_OPERATIONS`], so the series stay bounded whatever clients send.
pub const MAX_GRAPHQL_NAMES_PER_ROUTE: usize = 64;
/// The name label of operations beyond [`MAX_GRAPHQL_NAMES_PER_ROUTE`]
/// (parentheses: no GraphQL name can take it).
pub const OTHER_OPERATIONS: &str = "(other)";
/// The name label of anonymous operations.
pub const ANONYMOUS_OPERATION: &str = "(anonymous)";

/// One GraphQL route's operations: by type, by name (the first
/// [`MAX_GRAPHQL_NAMES_PER_ROUTE`] names seen) and refusals by code.
#[derive(Debug, Default)]
pub struct GraphqlMetrics {
    by_type: [AtomicU64; raftgate_graphql::OperationType::ALL.len()],
    /// Names seen so far, each with its count; only grows, up to the cap.
    /// Read-locked on every operation, write-locked to add a name.
    names: std::sync::RwLock<Vec<(Box<str>, AtomicU64)>>,
    anonymous: AtomicU64,
    other: AtomicU64,
    rejected: [AtomicU64; raftgate_graphql::Rejection::ALL.len()],
}

impl GraphqlMetrics {
    pub fn record(&self, op: &raftgate_graphql::Operation) {
        self.by_type[op.kind.index()].fetch_add(1, Relaxed);
        let Some(name) = op.name.as_deref() else {
            self.anonymous.fetch_add(1, Relaxed);
            return;
        };
        {
            let names = self.names.read().unwrap_or_else(|e| e.into_inner());
            if let Some((_, n)) = names.iter().find(|(k, _)| &**k == name) {
                n.fetch_add(1, Relaxed);
                return;
            }
        }
        let mut names = self.names.write().unwrap_or_else(|e| e.into_inner());
        if let Some((_, n)) = names.iter().find(|(k, _)| &**k == name) {
            n.fetch_add(1, Relaxed);
        } else if names.len() < MAX_GRAPHQL_NAMES_PER_ROUTE {
            names.push((name.into(), AtomicU64::new(1)));
        } else {
            self.other.fetch_add(1, Relaxed);
        }
    }

    pub fn record_rejection(&self, r: raftgate_graphql::Rejection) {
        self.rejected[r.index()].fetch_add(1, Relaxed);
    }

    /// Operations of this type so far.
    pub fn by_type(&self, kind: raftgate_graphql::OperationType) -> u64 {
        self.by_type[kind.index()].load(Relaxed)
    }

    /// Operations counted under this name label (a name, [`ANONYMOUS_OPERATION`]
    /// or [`OTHER_OPERATIONS`]).
    pub fn by_name(&self, label: &str) -> u64 {
        match label {
            ANONYMOUS_OPERATION => self.anonymous.load(Relaxed),
            OTHER_OPERATIONS => self.other.load(Relaxed),
            _ => {
                let names = self.names.read().unwrap_or_else(|e| e.into_inner());
                names.iter().find(|(k, _)| &**k == label).map_or(0, |(_, n)| n.load(Relaxed))
            }
        }
    }

    /// Refusals with this code so far.
    pub fn rejections(&self, r: raftgate_graphql::Rejection) -> u64 {
        self.rejected[r.index()].load(Relaxed)
    }

    /// Every name label with a count, for a scrape.
    fn name_counts(&self) -> Vec<(String, u64)> {
        let names = self.names.read().unwrap_or_else(|e| e.into_inner());
        let mut out: Vec<(String, u64)> = names.iter().map(|(k, n)| (k.to_string(), n.load(Relaxed))).collect();
        out.push((ANONYMOUS_OPERATION.into(), self.anonymous.load(Relaxed)));
        out.push((OTHER_OPERATIONS.into(), self.other.load(Relaxed)));
        out.retain(|(_, n)| *n > 0);
        out
    }
}

impl RouteMetrics {
    pub fn record_response(&self, method: &Method, status: StatusCode, elapsed: Duration) {
        self.responses[method_index(method)][class_index(status)].fetch_add(1, Relaxed);
        self.duration.observe(elapsed);
    }

    pub fn record_limit(&self, kind: LimitKind, allowed: bool) {
        self.limits[kind as usize][usize::from(!allowed)].fetch_add(1, Relaxed);
    }

    pub fn record_waf(&self, category: raftgate_waf::Category, blocked: bool) {
        self.waf[waf_index(category)][usize::from(!blocked)].fetch_add(1, Relaxed);
    }

    /// Responses of this route with this method and status class so far.
    pub fn responses(&self, method: &Method, status: StatusCode) -> u64 {
        self.responses[method_index(method)][class_index(status)].load(Relaxed)
    }
}

/// Counters that are not per route.
#[derive(Debug, Default)]
pub struct GatewayMetrics {
    /// Refused credentials by reason (a fixed set of static strings).
    auth_failures: Family<[(&'static str, &'static str); 1], Counter>,
    /// Responses the gateway generated itself, by error code.
    errors: Family<[(&'static str, &'static str); 1], Counter>,
}

impl GatewayMetrics {
    pub fn auth_failure(&self, reason: &'static str) {
        self.auth_failures.get_or_create(&[("reason", reason)]).inc();
    }

    pub fn gateway_error(&self, code: &'static str) {
        self.errors.get_or_create(&[("code", code)]).inc();
    }

    pub fn auth_failures(&self, reason: &'static str) -> u64 {
        self.auth_failures.get(&[("reason", reason)]).map_or(0, |c| c.get())
    }
}

/// Encodes the data plane's metrics at scrape time. Holds the gateway
/// weakly: a registry outliving the gateway encodes nothing.
#[derive(Debug)]
pub struct DataPlaneCollector(pub Weak<Gateway>);

impl DataPlaneCollector {
    pub fn new(gateway: &Arc<Gateway>) -> Self {
        Self(Arc::downgrade(gateway))
    }
}

fn counter(v: u64, mut e: MetricEncoder) -> Result<(), std::fmt::Error> {
    e.encode_counter::<NoLabelSet, _, u64>(&v, None)
}

impl Collector for DataPlaneCollector {
    fn encode(&self, mut encoder: DescriptorEncoder) -> Result<(), std::fmt::Error> {
        let Some(gateway) = self.0.upgrade() else { return Ok(()) };
        let routes = gateway.route_metrics();

        let mut e = encoder.encode_descriptor(
            "raftgate_http_requests",
            "Requests answered, by route, method and status class.",
            None,
            MetricType::Counter,
        )?;
        for (route, c) in &routes {
            let m = &c.metrics;
            for (mi, row) in m.responses.iter().enumerate() {
                for (ci, c) in row.iter().enumerate() {
                    let n = c.load(Relaxed);
                    if n > 0 {
                        let labels =
                            [("route", route.as_str()), ("method", METHODS[mi]), ("status_class", CLASSES[ci])];
                        counter(n, e.encode_family(&labels)?)?;
                    }
                }
            }
        }
        let mut e = encoder.encode_descriptor(
            "raftgate_http_request_duration_seconds",
            "Time from request to response head, by route.",
            None,
            MetricType::Histogram,
        )?;
        for (route, c) in &routes {
            c.metrics.duration.encode(e.encode_family(&[("route", route.as_str())])?)?;
        }
        let mut e = encoder.encode_descriptor(
            "raftgate_rate_limit_decisions",
            "Rate-limit and quota decisions, by route, limit kind and decision.",
            None,
            MetricType::Counter,
        )?;
        for (route, c) in &routes {
            let m = &c.metrics;
            for (ki, kind) in ["rate", "quota"].iter().enumerate() {
                for (di, decision) in ["allowed", "limited"].iter().enumerate() {
                    let n = m.limits[ki][di].load(Relaxed);
                    if n > 0 {
                        let labels = [("route", route.as_str()), ("limit", kind), ("decision", decision)];
                        counter(n, e.encode_family(&labels)?)?;
                    }
                }
            }
        }

        let mut e = encoder.encode_descriptor(
            "raftgate_waf_findings",
            "WAF findings, by route, category and action (blocked or logged).",
            None,
            MetricType::Counter,
        )?;
        for (route, c) in &routes {
            for (ci, category) in WAF_CATEGORIES.iter().enumerate() {
                for (ai, action) in ["blocked", "logged"].iter().enumerate() {
                    let n = c.metrics.waf[ci][ai].load(Relaxed);
                    if n > 0 {
                        let labels = [("route", route.as_str()), ("category", category), ("action", action)];
                        counter(n, e.encode_family(&labels)?)?;
                    }
                }
            }
        }
        encode_graphql(&mut encoder, &routes)?;
        let (lockouts, untracked) = gateway.login_guard().totals();
        counter(
            lockouts,
            encoder.encode_descriptor(
                "raftgate_login_lockouts",
                "Login lockouts (an address or an account) on this node.",
                None,
                MetricType::Counter,
            )?,
        )?;
        counter(
            untracked,
            encoder.encode_descriptor(
                "raftgate_login_failures_untracked",
                "Failed logins not counted because the lockout table was full.",
                None,
                MetricType::Counter,
            )?,
        )?;
        if let Some(d) = gateway.anomaly() {
            let (raised, dropped) = d.totals();
            let mut e = encoder.encode_descriptor(
                "raftgate_anomalies",
                "Consumer traffic anomalies raised on this node, by what happened to the event.",
                None,
                MetricType::Counter,
            )?;
            counter(raised, e.encode_family(&[("event", "raised")])?)?;
            counter(dropped, e.encode_family(&[("event", "dropped")])?)?;
        }
        let cache = gateway.response_cache().stats();
        let mut e = encoder.encode_descriptor(
            "raftgate_cache_lookups",
            "Response-cache lookups on this node, by result.",
            None,
            MetricType::Counter,
        )?;
        counter(cache.hits, e.encode_family(&[("result", "hit")])?)?;
        counter(cache.misses, e.encode_family(&[("result", "miss")])?)?;
        counter(
            cache.evictions,
            encoder.encode_descriptor(
                "raftgate_cache_evictions",
                "Entries evicted to stay within the cache's bounds.",
                None,
                MetricType::Counter,
            )?,
        )?;
        encoder
            .encode_descriptor("raftgate_cache_bytes", "Bytes held by the response cache.", None, MetricType::Gauge)?
            .encode_gauge(&(cache.bytes as i64))?;
        encoder
            .encode_descriptor("raftgate_cache_entries", "Entries in the response cache.", None, MetricType::Gauge)?
            .encode_gauge(&(cache.entries as i64))?;

        let snapshot = gateway.snapshot();
        let mut upstreams: Vec<_> = snapshot.upstreams.iter().collect();
        upstreams.sort_by(|a, b| a.0.cmp(b.0));
        let mut e = encoder.encode_descriptor(
            "raftgate_upstream_request_duration_seconds",
            "Time from sending a try to its response head, by upstream.",
            None,
            MetricType::Histogram,
        )?;
        for (id, u) in &upstreams {
            u.latency.encode(e.encode_family(&[("upstream", id.as_str())])?)?;
        }
        let now_ms = gateway.now_ms();
        let targets = |u: &crate::gateway::UpstreamRuntime| {
            u.balancer
                .targets()
                .iter()
                .map(|t| (t.addr.clone(), t.health_view(now_ms), t.ejections_total()))
                .collect::<Vec<_>>()
        };
        let mut e = encoder.encode_descriptor(
            "raftgate_upstream_target_healthy",
            "1 when the target is actively healthy and not ejected, else 0.",
            None,
            MetricType::Gauge,
        )?;
        for (id, u) in &upstreams {
            for (addr, h, _) in targets(u) {
                let up = i64::from(h.active_healthy && !h.ejected);
                e.encode_family(&[("upstream", id.as_str()), ("target", addr.as_str())])?.encode_gauge(&up)?;
            }
        }
        let mut e = encoder.encode_descriptor(
            "raftgate_upstream_target_in_flight",
            "Requests in flight to the target.",
            None,
            MetricType::Gauge,
        )?;
        for (id, u) in &upstreams {
            for (addr, h, _) in targets(u) {
                e.encode_family(&[("upstream", id.as_str()), ("target", addr.as_str())])?.encode_gauge(&h.in_flight)?;
            }
        }
        let mut e = encoder.encode_descriptor(
            "raftgate_upstream_target_ejections",
            "Passive outlier ejections of the target since this node started.",
            None,
            MetricType::Counter,
        )?;
        for (id, u) in &upstreams {
            for (addr, _, n) in targets(u) {
                counter(n, e.encode_family(&[("upstream", id.as_str()), ("target", addr.as_str())])?)?;
            }
        }

        let metrics = gateway.metrics();
        let e = encoder.encode_descriptor(
            "raftgate_auth_failures",
            "Refused credentials, by reason.",
            None,
            MetricType::Counter,
        )?;
        metrics.auth_failures.encode(e)?;
        let e = encoder.encode_descriptor(
            "raftgate_gateway_errors",
            "Responses the gateway generated itself (not the upstream's), by error code.",
            None,
            MetricType::Counter,
        )?;
        metrics.errors.encode(e)?;
        let revocations = gateway.revocations().len() as i64;
        encoder
            .encode_descriptor(
                "raftgate_revocations",
                "Entries in the applied revocation set.",
                None,
                MetricType::Gauge,
            )?
            .encode_gauge(&revocations)?;
        let stale = gateway.stale_totals();
        counter(
            stale.refused,
            encoder.encode_descriptor(
                "raftgate_stale_refusals",
                "Authenticated requests refused because this node's view was older than the staleness bound.",
                None,
                MetricType::Counter,
            )?,
        )?;
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_histogram_counts_each_observation_once_in_its_bucket() {
        let h = LatencyHistogram::default();
        h.observe(Duration::from_micros(300));
        h.observe(Duration::from_millis(3));
        h.observe(Duration::from_secs(60));
        assert_eq!(h.count(), 3);
        assert_eq!(h.buckets[0].load(Relaxed), 1);
        assert_eq!(h.buckets[3].load(Relaxed), 1);
        assert_eq!(h.buckets[LATENCY_BUCKETS_S.len()].load(Relaxed), 1);
    }

    #[test]
    fn an_unknown_method_counts_as_other_and_odd_statuses_clamp_to_a_class() {
        let m = RouteMetrics::default();
        let weird = Method::from_bytes(b"BREW").unwrap();
        m.record_response(&weird, StatusCode::from_u16(599).unwrap(), Duration::ZERO);
        assert_eq!(m.responses[9][4].load(Relaxed), 1);
        m.record_response(&Method::GET, StatusCode::OK, Duration::ZERO);
        assert_eq!(m.responses(&Method::GET, StatusCode::NO_CONTENT), 1);
    }
}

/// The GraphQL families: operations by route and type, by route and name
/// (bounded per route), and refusals by route and code.
fn encode_graphql(
    encoder: &mut DescriptorEncoder,
    routes: &[(raftgate_model::ObjectId, Arc<crate::catalog::RouteCounter>)],
) -> Result<(), std::fmt::Error> {
    let mut e = encoder.encode_descriptor(
        "raftgate_graphql_operations",
        "GraphQL operations admitted by the guard, by route and operation type.",
        None,
        MetricType::Counter,
    )?;
    for (route, c) in routes {
        for kind in raftgate_graphql::OperationType::ALL {
            let n = c.metrics.graphql.by_type(kind);
            if n > 0 {
                counter(n, e.encode_family(&[("route", route.as_str()), ("type", kind.as_str())])?)?;
            }
        }
    }
    let mut e = encoder.encode_descriptor(
        "raftgate_graphql_operations_by_name",
        "GraphQL operations admitted by the guard, by route and operation name (64 names per route, then (other)).",
        None,
        MetricType::Counter,
    )?;
    for (route, c) in routes {
        for (name, n) in c.metrics.graphql.name_counts() {
            counter(n, e.encode_family(&[("route", route.as_str()), ("operation", name.as_str())])?)?;
        }
    }
    let mut e = encoder.encode_descriptor(
        "raftgate_graphql_rejections",
        "GraphQL requests refused by the guard, by route and code.",
        None,
        MetricType::Counter,
    )?;
    for (route, c) in routes {
        for r in raftgate_graphql::Rejection::ALL {
            let n = c.metrics.graphql.rejections(r);
            if n > 0 {
                counter(n, e.encode_family(&[("route", route.as_str()), ("code", r.code())])?)?;
            }
        }
    }
    Ok(())
}

#[cfg(test)]
mod graphql_tests {
    use super::*;

    fn op(name: Option<&str>) -> raftgate_graphql::Operation {
        raftgate_graphql::Operation {
            name: name.map(str::to_string),
            kind: raftgate_graphql::OperationType::Query,
            depth: 1,
            fields: 1,
            aliases: 0,
            cost: 1,
        }
    }

    #[test]
    fn operation_names_beyond_the_cap_count_as_other() {
        let m = GraphqlMetrics::default();
        for i in 0..MAX_GRAPHQL_NAMES_PER_ROUTE + 10 {
            m.record(&op(Some(&format!("Op{i}"))));
        }
        m.record(&op(Some("Op0")));
        m.record(&op(None));
        assert_eq!(m.by_name("Op0"), 2);
        assert_eq!(m.by_name(OTHER_OPERATIONS), 10);
        assert_eq!(m.by_name(ANONYMOUS_OPERATION), 1);
        assert_eq!(m.by_type(raftgate_graphql::OperationType::Query), MAX_GRAPHQL_NAMES_PER_ROUTE as u64 + 12);
        assert_eq!(m.name_counts().len(), MAX_GRAPHQL_NAMES_PER_ROUTE + 2);
    }
}
