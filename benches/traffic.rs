//! Request-path cost of limits, on one thread and contended on two:
//!
//! - `rate_limit/1_thread`, `rate_limit/2_threads_same_key`: one GCRA check
//!   (`RateLimiter::check`) of a key with room to spare;
//! - `quota/1_thread`, `quota/2_threads_same_key`: one quota admission from
//!   this node's lease (`QuotaLeases::admit`, the key already leased: a
//!   shared-lock lookup and one compare-and-swap);
//! - `quota_key/build`: building the quota key of a request (the ledger
//!   key string), which the admission above includes.
//!
//! The two-thread figures are the time per operation of each thread while
//! both hammer the same key. Run with
//! `cargo bench -p raftgate-benches --bench traffic`, alone.

use std::hint::black_box;
use std::sync::Arc;
use std::time::{Duration, Instant};

use criterion::{criterion_group, criterion_main, Criterion};
use raftgate_model::traffic::{QuotaKey, QuotaScope, Window};
use raftgate_model::{Command, ObjectId, State};
use raftgate_proxy::traffic::{Admission, LeaseTuning, QuotaLeases, RateLimiter};

const NODE: u64 = 1;
const LIMIT: u64 = 1_000_000_000_000;

fn now_ms() -> u64 {
    std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).unwrap().as_millis() as u64
}

fn key(t: u64) -> QuotaKey {
    QuotaKey {
        scope: QuotaScope::Route(ObjectId::parse("orders").unwrap()),
        quota: ObjectId::parse("per-day").unwrap(),
        value: "acme".into(),
        window: Window::Day,
        window_start_ms: Window::Day.bounds(t).0,
    }
}

/// A node's leases with `key` granted half of a huge limit.
fn leased() -> (Arc<QuotaLeases>, QuotaKey, u64) {
    let t = now_ms();
    let mut state = State::default();
    let up = serde_json::json!({"id": "u", "targets": [{"addr": "127.0.0.1:1"}]});
    state
        .apply(t, &Command::PutUpstream { upstream: serde_json::from_value(up).unwrap(), expected_revision: None })
        .unwrap();
    let route = serde_json::json!({"id": "orders", "upstream": "u",
        "limits": {"quotas": [{"name": "per-day", "key": ["consumer"], "window": "day", "limit": LIMIT}]}});
    state
        .apply(t, &Command::PutRoute { route: serde_json::from_value(route).unwrap(), expected_revision: None })
        .unwrap();
    let leases = Arc::new(QuotaLeases::new(NODE, 0, LeaseTuning::default()));
    let k = key(t);
    let end = Window::Day.bounds(t).1;
    assert!(matches!(leases.admit(k.clone(), LIMIT, end), Admission::Refused { .. }), "no lease yet");
    let asks = leases.batch(t);
    let cmd = Command::QuotaLeases {
        node: NODE,
        incarnation: 0,
        asks: asks
            .into_iter()
            .map(|mut a| {
                a.want = LIMIT;
                a
            })
            .collect(),
    };
    state.apply(t, &cmd).unwrap();
    leases.applied(&state, &[&cmd]);
    assert!(matches!(leases.admit(k.clone(), LIMIT, end), Admission::Admitted { .. }));
    (leases, k, end)
}

/// Runs `op` on two threads for `iters` each; the time per op of one thread.
fn contended(iters: u64, op: impl Fn() + Sync) -> Duration {
    let started = Instant::now();
    std::thread::scope(|s| {
        for _ in 0..2 {
            s.spawn(|| {
                for _ in 0..iters {
                    op();
                }
            });
        }
    });
    started.elapsed()
}

fn rss_bytes() -> u64 {
    let statm = std::fs::read_to_string("/proc/self/statm").unwrap_or_default();
    statm.split_whitespace().nth(1).and_then(|p| p.parse::<u64>().ok()).unwrap_or(0) * 4096
}

/// Memory of a full rate-limit key map (keys like a client IP's).
fn memory_figure() {
    let before = rss_bytes();
    let rl = RateLimiter::default();
    for i in 0..raftgate_proxy::traffic::MAX_RATE_KEYS as u32 {
        let ip = std::net::Ipv4Addr::from(0x0a00_0000 + i);
        let _ = rl.check(&format!("Route(ObjectId(\"orders\"))#0|{ip}"), 10, 20);
    }
    let grown = rss_bytes().saturating_sub(before);
    println!(
        "rate-limit keys: {} tracked, +{:.1} MiB resident ({:.0} B per key)",
        rl.len(),
        grown as f64 / (1 << 20) as f64,
        grown as f64 / rl.len().max(1) as f64
    );
}

fn bench(c: &mut Criterion) {
    memory_figure();
    let mut g = c.benchmark_group("rate_limit");
    let rl = RateLimiter::default();
    g.bench_function("1_thread", |b| {
        b.iter(|| black_box(rl.check("route#0|198.51.100.7", 1_000_000_000, 1_000_000_000)))
    });
    g.bench_function("2_threads_same_key", |b| {
        b.iter_custom(|iters| {
            contended(iters, || {
                let _ = black_box(rl.check("shared", 1_000_000_000, 1_000_000_000));
            })
        })
    });
    g.finish();

    let (leases, k, end) = leased();
    let mut g = c.benchmark_group("quota");
    g.bench_function("1_thread", |b| b.iter(|| black_box(leases.admit(k.clone(), LIMIT, end))));
    g.bench_function("2_threads_same_key", |b| {
        b.iter_custom(|iters| {
            contended(iters, || {
                black_box(leases.admit(k.clone(), LIMIT, end));
            })
        })
    });
    g.finish();
    c.bench_function("quota_key/build", |b| b.iter(|| black_box(key(black_box(1_767_225_600_000)).ledger_key())));
}

criterion_group!(benches, bench);
criterion_main!(benches);
