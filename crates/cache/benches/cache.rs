//! The cache on the request path: a hit (key build, lookup, body clone) for a
//! 4 KiB response among 10,000 stored ones, and its two halves apart; an
//! insert into a full cache, which evicts; and the storability check of a
//! typical response head.

use std::hint::black_box;

use bytes::Bytes;
use criterion::{criterion_group, criterion_main, Criterion};
use http::{HeaderMap, HeaderValue, Method, StatusCode};
use raftgate_cache::{CacheKey, Lookup, Policy, ResponseCache};

/// Stored entries for the hit benchmark.
const ENTRIES: usize = 10_000;
/// Body size of every stored response, in bytes.
const BODY_BYTES: usize = 4 * 1024;
/// Entries the insert benchmark's cache holds, so that every insert evicts.
const FULL_ENTRIES: usize = 1_000;

fn policy() -> Policy {
    Policy {
        key_query: vec!["page".into(), "sort".into()],
        key_headers: vec!["accept-language".into()],
        ..Policy::default()
    }
}

fn request_headers() -> HeaderMap {
    let mut h = HeaderMap::new();
    h.insert("accept-language", HeaderValue::from_static("en-GB"));
    h.insert("accept-encoding", HeaderValue::from_static("gzip, br"));
    h.insert("user-agent", HeaderValue::from_static("bench/1.0"));
    h
}

fn response_headers() -> HeaderMap {
    let mut h = HeaderMap::new();
    h.insert("content-type", HeaderValue::from_static("application/json"));
    h.insert("content-length", HeaderValue::from(BODY_BYTES));
    h.insert("cache-control", HeaderValue::from_static("public, max-age=300"));
    h.insert("etag", HeaderValue::from_static("\"0123456789abcdef\""));
    h.insert("date", HeaderValue::from_static("Sun, 06 Nov 1994 08:49:37 GMT"));
    h.insert("vary", HeaderValue::from_static("accept-encoding"));
    h.insert("connection", HeaderValue::from_static("keep-alive"));
    h
}

fn key(policy: &Policy, path: &str, headers: &HeaderMap) -> CacheKey {
    CacheKey::new(policy, "catalog", &Method::GET, "api.example.test", path, Some("sort=asc&page=2&utm=x"), headers)
}

fn benches(c: &mut Criterion) {
    let policy = policy();
    let request = request_headers();
    let response = response_headers();
    let body = Bytes::from(vec![b'j'; BODY_BYTES]);
    let storable = policy.storable(&Method::GET, &request, StatusCode::OK, &response).expect("storable");
    let paths: Vec<String> = (0..ENTRIES).map(|n| format!("/v1/items/{n}")).collect();

    let cache = ResponseCache::new(ENTRIES * (BODY_BYTES + 2048), ENTRIES * 2);
    for path in &paths {
        cache
            .insert(key(&policy, path, &request), &request, StatusCode::OK, &response, body.clone(), storable, 0)
            .expect("stored");
    }
    assert_eq!(cache.stats().entries, ENTRIES);
    let mut n = 0usize;
    c.bench_function("hit_4KiB_of_10k_key_lookup_clone", |b| {
        b.iter(|| {
            n = (n + 7) % ENTRIES;
            let k = key(&policy, &paths[n], &request);
            match cache.lookup(&k, &request, 1_000) {
                Lookup::Hit(hit) => black_box(hit.response.body.clone()),
                Lookup::Miss(m) => panic!("expected a hit, got {m:?}"),
            }
        })
    });

    let keys: Vec<CacheKey> = paths.iter().map(|p| key(&policy, p, &request)).collect();
    c.bench_function("lookup_only_4KiB_of_10k_prebuilt_key", |b| {
        b.iter(|| {
            n = (n + 7) % ENTRIES;
            black_box(cache.lookup(&keys[n], &request, 1_000))
        })
    });
    // The same key again and again: what a lookup costs when nothing it touches has left
    // the CPU caches (the figure above is mostly memory latency).
    c.bench_function("lookup_only_same_key_hot", |b| b.iter(|| black_box(cache.lookup(&keys[0], &request, 1_000))));
    c.bench_function("key_build_2_params_1_header", |b| {
        b.iter(|| {
            n = (n + 7) % ENTRIES;
            black_box(key(&policy, &paths[n], &request))
        })
    });

    let full = ResponseCache::new(FULL_ENTRIES * (BODY_BYTES + 2048), FULL_ENTRIES);
    let mut next = 0u64;
    let mut insert_one = |now_ms: u64| {
        next += 1;
        let path = format!("/v1/new/{next}");
        let stored = full.insert(
            key(&policy, &path, &request),
            &request,
            StatusCode::OK,
            &response,
            body.clone(),
            storable,
            now_ms,
        );
        black_box(stored).expect("stored");
    };
    for _ in 0..FULL_ENTRIES * 2 {
        insert_one(0);
    }
    let before = full.stats().evictions;
    c.bench_function("insert_4KiB_into_full_cache_evicting", |b| b.iter(|| insert_one(1)));
    assert!(full.stats().evictions > before);

    c.bench_function("storable_check_typical_response", |b| {
        b.iter(|| black_box(policy.storable(&Method::GET, &request, StatusCode::OK, &response)))
    });
}

criterion_group!(cache, benches);
criterion_main!(cache);
