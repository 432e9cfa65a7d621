//! Rate limits and quotas in the data plane against a real upstream. The
//! quota lease loop is driven by hand: the node's batch of asks is applied
//! to a real model `State` as a `QuotaLeases` command, and the result fed
//! back as the node's apply observer does.

mod support;

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;

use http::Request;
use raftgate_model::{Command, State};
use raftgate_proxy::{GatewayConfig, IdentityConfig, Limits, TrafficConfig};
use serde_json::json;
use support::*;

const NODE: u64 = 7;

async fn start(route: serde_json::Value) -> (TestGateway, Arc<AtomicUsize>, State) {
    let hits = Arc::new(AtomicUsize::new(0));
    let counter = hits.clone();
    let up = TestUpstream::start(move |_req: Request<hyper::body::Incoming>| {
        counter.fetch_add(1, Ordering::SeqCst);
        async move { hyper::Response::new(full("ok")) }
    })
    .await;
    let config = GatewayConfig {
        region: "local".into(),
        limits: Limits::default(),
        https_port: None,
        identity: IdentityConfig::default(),
        traffic: TrafficConfig { node_id: NODE, ..TrafficConfig::default() },
        ..Default::default()
    };
    let upstreams = json!([{"id": "u", "targets": [{"addr": up.addr.to_string()}]}]);
    let gw = TestGateway::start_config(json!([route.clone()]), upstreams.clone(), config, None).await;
    std::mem::forget(up);
    let mut state = State::default();
    let now = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).unwrap().as_millis() as u64;
    state
        .apply(
            now,
            &Command::PutUpstream {
                upstream: serde_json::from_value(upstreams[0].clone()).unwrap(),
                expected_revision: None,
            },
        )
        .unwrap();
    state
        .apply(now, &Command::PutRoute { route: serde_json::from_value(route).unwrap(), expected_revision: None })
        .unwrap();
    (gw, hits, state)
}

/// One batch interval: the node's asks applied to the ledger and fed back.
fn pump(gw: &TestGateway, state: &mut State) {
    let leases = gw.gateway.quota_leases();
    let asks = leases.batch(gw.gateway.wall_ms());
    if asks.is_empty() {
        return;
    }
    let cmd = Command::QuotaLeases { node: NODE, incarnation: leases.incarnation(), asks };
    state.apply(gw.gateway.wall_ms(), &cmd).unwrap();
    leases.applied(state, &[&cmd]);
}

#[tokio::test]
async fn a_rate_limit_allows_its_burst_then_answers_429_with_ratelimit_headers() {
    let (gw, hits, _) = start(json!({"id": "r", "upstream": "u",
        "limits": {"rate_limits": [{"key": ["client_ip"], "rate_per_s": 1, "burst": 3}]}}))
    .await;
    for i in 0..3 {
        let a = get(&gw.url("/x")).await;
        assert_eq!(a.status, 200, "request {i}");
        assert_eq!(a.headers["ratelimit-limit"], "3");
        assert_eq!(a.headers["ratelimit-remaining"], (2 - i).to_string().as_str());
    }
    let limited = get(&gw.url("/x")).await;
    assert_eq!(limited.status, 429);
    assert_eq!(limited.json()["error"]["code"], "rate_limited");
    assert_eq!(limited.headers["ratelimit-remaining"], "0");
    assert!(limited.headers["retry-after"].to_str().unwrap().parse::<u64>().unwrap() >= 1);
    assert_eq!(hits.load(Ordering::SeqCst), 3, "the limited request never reached the upstream");
}

#[tokio::test]
async fn a_quota_admits_exactly_its_limit_from_leases_granted_by_the_ledger() {
    let (gw, hits, mut state) = start(json!({"id": "r", "upstream": "u",
        "limits": {"quotas": [{"name": "per-hour", "key": ["route"], "window": "hour", "limit": 25}]}}))
    .await;
    let first = get(&gw.url("/x")).await;
    assert_eq!(first.status, 429, "no lease yet: the node does not admit on credit");
    assert_eq!(first.headers["retry-after"], "1");
    let mut admitted = 0;
    for _ in 0..40 {
        pump(&gw, &mut state);
        for _ in 0..5 {
            let a = get(&gw.url("/x")).await;
            if a.status == 200 {
                admitted += 1;
                assert!(a.headers.contains_key("ratelimit-remaining"));
            } else {
                assert_eq!(a.status, 429);
            }
        }
    }
    assert_eq!(admitted, 25, "the whole limit is used, and not one more");
    assert_eq!(hits.load(Ordering::SeqCst), 25);
    let entry = state.quota_entries().values().next().unwrap();
    assert_eq!(entry.held(), 25);
    let spent = get(&gw.url("/x")).await;
    assert_eq!(spent.status, 429);
    let retry: u64 = spent.headers["retry-after"].to_str().unwrap().parse().unwrap();
    assert!((1..=3_600).contains(&retry), "the budget is spent: retry when the window resets ({retry} s)");
}

#[tokio::test]
async fn an_idle_key_gives_its_lease_back() {
    let (gw, _, mut state) = start(json!({"id": "r", "upstream": "u",
        "limits": {"quotas": [{"name": "q", "key": ["route"], "window": "hour", "limit": 1000}]}}))
    .await;
    let _ = get(&gw.url("/x")).await;
    pump(&gw, &mut state);
    for _ in 0..20 {
        let _ = get(&gw.url("/x")).await;
        pump(&gw, &mut state);
    }
    let held = state.quota_entries().values().next().unwrap().held();
    assert!(held > 0);
    // No traffic for the idle period: the next batches give the rest back.
    for _ in 0..25 {
        pump(&gw, &mut state);
    }
    let e = state.quota_entries().values().next().unwrap();
    let used = gw
        .gateway
        .quota_leases()
        .usage(
            &raftgate_model::traffic::QuotaKey::parse_ledger_key(state.quota_entries().keys().next().unwrap()).unwrap(),
        )
        .unwrap()
        .0;
    assert_eq!(e.held(), used, "only what was used stays held");
}

#[tokio::test]
async fn an_overloaded_upstream_sheds_low_priority_plans_first_and_fast() {
    use raftgate_identity::apikey::{generate, KeyHasher};
    let delay_ms = Arc::new(std::sync::atomic::AtomicU64::new(300));
    let d = delay_ms.clone();
    let up = TestUpstream::start(move |_req: Request<hyper::body::Incoming>| {
        let ms = d.load(Ordering::SeqCst);
        async move {
            tokio::time::sleep(std::time::Duration::from_millis(ms)).await;
            hyper::Response::new(full("ok"))
        }
    })
    .await;
    let hasher = KeyHasher::new(b"traffic test secret");
    let config = GatewayConfig {
        region: "local".into(),
        limits: Limits::default(),
        https_port: None,
        identity: IdentityConfig { key_hasher: hasher.clone(), ..IdentityConfig::default() },
        traffic: TrafficConfig { node_id: NODE, ..TrafficConfig::default() },
        ..Default::default()
    };
    let upstream = json!({"id": "u", "targets": [{"addr": up.addr.to_string()}],
        "adaptive_concurrency": {"initial_limit": 8, "min_limit": 2, "max_limit": 100}});
    let route = json!({"id": "r", "upstream": "u", "auth": {"api_key": {}}});
    let gw = TestGateway::start_config(json!([route]), json!([upstream]), config, None).await;
    let mut state = State::default();
    let mut keys = std::collections::HashMap::new();
    for (plan, priority, consumer) in [("bronze", "low", "cheap"), ("platinum", "critical", "vip")] {
        let p = serde_json::from_value(json!({"id": plan, "priority": priority})).unwrap();
        state.apply(1, &Command::PutPlan { plan: p, expected_revision: None }).unwrap();
        let c = serde_json::from_value(json!({"id": consumer, "plan": plan})).unwrap();
        state.apply(1, &Command::PutConsumer { consumer: c, expected_revision: None }).unwrap();
        let k = generate().unwrap();
        let cmd = Command::CreateApiKey {
            id: k.id.clone(),
            consumer: raftgate_model::ObjectId::parse(consumer).unwrap(),
            hash: hasher.digest(&k.key),
            expires_ms: None,
            rotates: None,
        };
        state.apply(1, &cmd).unwrap();
        keys.insert(consumer, k.key);
    }
    let s = &state;
    gw.gateway.publish_identity(1, s.consumers(), s.api_keys(), s.cert_owners(), s.issuers(), s.plans());
    let call = |who: &'static str| {
        let url = gw.url("/x");
        let key = keys[who].clone();
        async move {
            let started = std::time::Instant::now();
            let req = Request::get(url).header("x-api-key", key).body(full("")).unwrap();
            let a = send(&http1_client(), req).await;
            (a.status, a.body.clone(), started.elapsed())
        }
    };
    // Six slow VIP requests in flight: 75% of the limit of 8.
    let slow: Vec<_> = (0..6).map(|_| tokio::spawn(call("vip"))).collect();
    tokio::time::sleep(std::time::Duration::from_millis(100)).await;
    let (status, body, took) = call("cheap").await;
    assert_eq!(status, 503, "a low-priority plan is shed above half the limit");
    assert!(String::from_utf8_lossy(&body).contains("overloaded"));
    assert!(took < std::time::Duration::from_millis(200), "shed at once, not after the upstream's delay: {took:?}");
    let (status, _, _) = call("vip").await;
    assert_eq!(status, 200, "a critical plan still gets through below the limit");
    for s in slow {
        assert_eq!(s.await.unwrap().0, 200);
    }
    // Fast again: the cheap consumer is served.
    delay_ms.store(1, Ordering::SeqCst);
    assert_eq!(call("cheap").await.0, 200);
}

#[tokio::test]
async fn a_consumers_plan_sets_its_limits_and_a_plan_change_applies_live() {
    use raftgate_identity::apikey::{generate, KeyHasher};
    let up = TestUpstream::echo("u").await;
    let hasher = KeyHasher::new(b"traffic test secret");
    let config = GatewayConfig {
        region: "local".into(),
        limits: Limits::default(),
        https_port: None,
        identity: IdentityConfig { key_hasher: hasher.clone(), ..IdentityConfig::default() },
        traffic: TrafficConfig { node_id: NODE, ..TrafficConfig::default() },
        ..Default::default()
    };
    let route = json!({"id": "r", "upstream": "u", "auth": {"api_key": {}}});
    let gw = TestGateway::start_config(
        json!([route]),
        json!([{"id": "u", "targets": [{"addr": up.addr.to_string()}]}]),
        config,
        None,
    )
    .await;
    let mut state = State::default();
    for (plan, burst) in [("free", 2), ("pro", 100)] {
        let p = serde_json::from_value(
            json!({"id": plan, "limits": {"rate_limits": [{"key": ["consumer"], "rate_per_s": 1, "burst": burst}]}}),
        )
        .unwrap();
        state.apply(1, &Command::PutPlan { plan: p, expected_revision: None }).unwrap();
    }
    let put_consumer = |state: &mut State, plan: &str| {
        let c = serde_json::from_value(json!({"id": "acme", "plan": plan})).unwrap();
        state.apply(1, &Command::PutConsumer { consumer: c, expected_revision: None }).unwrap();
    };
    put_consumer(&mut state, "free");
    let k = generate().unwrap();
    let cmd = Command::CreateApiKey {
        id: k.id.clone(),
        consumer: raftgate_model::ObjectId::parse("acme").unwrap(),
        hash: hasher.digest(&k.key),
        expires_ms: None,
        rotates: None,
    };
    state.apply(1, &cmd).unwrap();
    let publish = |s: &State| {
        gw.gateway.publish_identity(
            s.identity_revision(),
            s.consumers(),
            s.api_keys(),
            s.cert_owners(),
            s.issuers(),
            s.plans(),
        )
    };
    publish(&state);
    let call = || {
        let req = Request::get(gw.url("/x")).header("x-api-key", k.key.clone()).body(full("")).unwrap();
        async move { send(&http1_client(), req).await }
    };
    assert_eq!(call().await.status, 200);
    let second = call().await;
    assert_eq!(second.status, 200);
    assert_eq!(second.headers["ratelimit-limit"], "2", "the free plan's burst");
    assert_eq!(call().await.status, 429);
    put_consumer(&mut state, "pro");
    publish(&state);
    let a = call().await;
    assert_eq!(a.status, 200, "the new plan's limits apply to the next request");
    assert_eq!(a.headers["ratelimit-limit"], "100");
}
