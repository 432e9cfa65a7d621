//! Active health checks: every `interval_ms`, a GET to the upstream's
//! health path on each target, through the upstream's own connection pool,
//! with `timeout_ms`. A 2xx or 3xx answer passes; anything else, a timeout or
//! a connection error fails. `healthy_threshold` passes in a row bring a
//! target back, `unhealthy_threshold` failures in a row take it out.
//!
//! One checker task per upstream runtime. It holds only a weak reference and
//! stops when the runtime is replaced or removed; a new runtime starts its
//! own, and target health carries over because target state does.

use std::sync::{Arc, Weak};
use std::time::Duration;

use http::{Request, Uri};

use crate::body::empty;
use crate::gateway::UpstreamRuntime;

/// Starts the checker for `runtime` if its upstream asks for one.
pub fn spawn_checker(runtime: &Arc<UpstreamRuntime>) {
    let Some(check) = runtime.spec.health_check.clone() else { return };
    let Ok(handle) = tokio::runtime::Handle::try_current() else {
        tracing::warn!(upstream = %runtime.spec.id, "no async runtime: active health checks not started");
        return;
    };
    let weak: Weak<UpstreamRuntime> = Arc::downgrade(runtime);
    handle.spawn(async move {
        let mut tick = tokio::time::interval(Duration::from_millis(check.interval_ms.into()));
        tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            tick.tick().await;
            let Some(runtime) = weak.upgrade() else { return };
            let probes = runtime.balancer.targets().iter().map(|target| {
                let runtime = runtime.clone();
                let target = target.clone();
                let check = check.clone();
                async move {
                    let passed = probe(&runtime, &target.addr, &check.path, check.timeout_ms).await;
                    if let Some(healthy) =
                        target.record_probe(passed, check.healthy_threshold, check.unhealthy_threshold)
                    {
                        tracing::warn!(upstream = %runtime.spec.id, target = %target.addr, healthy, "target health changed");
                    }
                }
            });
            futures::future::join_all(probes).await;
        }
    });
}

async fn probe(runtime: &UpstreamRuntime, addr: &str, path: &str, timeout_ms: u32) -> bool {
    let Ok(uri) = format!("{}://{addr}{path}", runtime.scheme.as_str()).parse::<Uri>() else { return false };
    let mut req = Request::new(empty());
    *req.uri_mut() = uri;
    if runtime.spec.protocol != raftgate_model::route::UpstreamProtocol::Http1 {
        *req.version_mut() = http::Version::HTTP_2;
    }
    req.headers_mut().insert(http::header::USER_AGENT, http::HeaderValue::from_static("raftgate-health-check"));
    match tokio::time::timeout(Duration::from_millis(timeout_ms.into()), runtime.client.request(req)).await {
        Ok(Ok(resp)) => resp.status().is_success() || resp.status().is_redirection(),
        _ => false,
    }
}
