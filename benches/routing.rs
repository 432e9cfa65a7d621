//! Route matching figures for the data plane's compiled [`Router`]:
//!
//! - `route_match/{1,100,10000}`: one `Router::find` call, cycling through
//!   1,024 precomputed requests (90% aimed at a random route, 10% misses);
//! - `snapshot_build/10000`: compiling 10,000 routes, as every node does
//!   when the replicated routes change.
//!
//! Route sets are deterministic: about 60% prefix, 20% exact, 15% template
//! and 5% regex paths (at most 50 regex routes); a third without hosts, a
//! third on one of 50 exact hosts, a third on a wildcard; some with methods
//! or a header predicate. Run with
//! `cargo bench -p raftgate-benches --bench routing`.

use std::collections::BTreeMap;
use std::hint::black_box;
use std::sync::Arc;

use criterion::{criterion_group, criterion_main, BenchmarkId, Criterion};
use http::{HeaderMap, HeaderValue};
use raftgate_model::route::PathPattern;
use raftgate_model::{Route, Stored, Table};
use raftgate_proxy::router::{Match, RequestView, Router};
use serde_json::json;

const HOST_POOL: u64 = 50;
const SECTIONS: u64 = 100;
const MAX_REGEX_ROUTES: usize = 50;
const REQUESTS: usize = 1_024;
const MISS_PERCENT: u64 = 10;

/// Tiny deterministic PRNG (xorshift64).
struct XorShift(u64);

impl XorShift {
    fn below(&mut self, n: u64) -> u64 {
        self.0 ^= self.0 << 13;
        self.0 ^= self.0 >> 7;
        self.0 ^= self.0 << 17;
        self.0 % n
    }
}

fn routes(n: usize, rng: &mut XorShift) -> Vec<Route> {
    let mut regexes = 0;
    (0..n)
        .map(|i| {
            let section = format!("/s{}", rng.below(SECTIONS));
            let kind = rng.below(100);
            let path = match kind {
                0..60 => json!({ "prefix": format!("{section}/r{i}") }),
                60..80 => json!({ "exact": format!("{section}/r{i}/item") }),
                80..95 => json!({ "template": format!("{section}/r{i}/{{id}}/detail") }),
                _ if regexes < MAX_REGEX_ROUTES => {
                    regexes += 1;
                    json!({ "regex": format!("{section}/re{i}/[0-9]+") })
                }
                _ => json!({ "prefix": format!("{section}/r{i}") }),
            };
            let hosts = match rng.below(3) {
                0 => json!([]),
                1 => json!([format!("h{}.example.com", rng.below(HOST_POOL))]),
                _ => json!([format!("*.w{}.example.com", rng.below(HOST_POOL))]),
            };
            let methods = if rng.below(5) == 0 { json!(["GET", "POST"]) } else { json!([]) };
            let headers = if rng.below(10) == 0 {
                json!([{ "name": "x-tenant", "value": { "exact": format!("t{}", rng.below(10)) } }])
            } else {
                json!([])
            };
            let route: Route = serde_json::from_value(json!({
                "id": format!("r{i:05}"), "upstream": "u", "hosts": hosts, "paths": [path],
                "methods": methods, "headers": headers,
            }))
            .expect("generated route parses");
            route.validate().expect("generated route is valid");
            route
        })
        .collect()
}

fn table(routes: &[Route]) -> Table<Route> {
    Arc::new(
        routes
            .iter()
            .map(|r| (r.id.clone(), Stored { spec: r.clone(), revision: 1, updated_ms: 0 }))
            .collect::<BTreeMap<_, _>>(),
    )
}

struct Request {
    host: Option<String>,
    path: String,
    method: http::Method,
    headers: HeaderMap,
}

impl Request {
    fn view(&self) -> RequestView<'_> {
        RequestView {
            host: self.host.as_deref(),
            path: &self.path,
            query: None,
            method: &self.method,
            headers: &self.headers,
        }
    }
}

/// A request `route` takes (unless a better-ranked route does too).
fn request_for(route: &Route, rng: &mut XorShift) -> Request {
    let host = match route.hosts.first() {
        None if rng.below(2) == 0 => None,
        None => Some(format!("h{}.example.com", rng.below(HOST_POOL))),
        Some(h) => Some(match h.strip_prefix("*.") {
            Some(suffix) => format!("app{}.{suffix}", rng.below(3)),
            None => h.clone(),
        }),
    };
    let path = match &route.paths[0] {
        PathPattern::Prefix(p) => format!("{p}{}", ["", "/x", "/x/y/z"][rng.below(3) as usize]),
        PathPattern::Exact(p) => p.clone(),
        PathPattern::Template(t) => t.replace("{id}", &rng.below(1_000).to_string()),
        PathPattern::Regex(r) => r.replace("[0-9]+", &rng.below(1_000).to_string()),
    };
    let mut headers = HeaderMap::new();
    headers.insert("user-agent", HeaderValue::from_static("bench"));
    for p in &route.headers {
        if let Some(raftgate_model::route::ValueMatch::Exact(v)) = &p.value {
            headers.insert("x-tenant", HeaderValue::from_str(v).expect("generated value"));
        }
    }
    Request { host, path, method: http::Method::GET, headers }
}

fn requests(routes: &[Route], rng: &mut XorShift) -> Vec<Request> {
    (0..REQUESTS)
        .map(|_| {
            if rng.below(100) < MISS_PERCENT {
                Request {
                    host: Some(format!("h{}.example.com", rng.below(HOST_POOL))),
                    path: format!("/s{}/missing/{}", rng.below(SECTIONS), rng.below(1_000)),
                    method: http::Method::GET,
                    headers: HeaderMap::new(),
                }
            } else {
                request_for(&routes[rng.below(routes.len() as u64) as usize], rng)
            }
        })
        .collect()
}

fn route_match(c: &mut Criterion) {
    let mut group = c.benchmark_group("route_match");
    for n in [1, 100, 10_000] {
        let mut rng = XorShift(0x2545_f491_4f6c_dd1d ^ n as u64);
        let routes = routes(n, &mut rng);
        let router = Router::build(&table(&routes));
        assert_eq!(router.len(), n);
        let requests = requests(&routes, &mut rng);
        let found = requests.iter().filter(|r| matches!(router.find(&r.view()), Match::Found(_))).count();
        eprintln!("route_match/{n}: {found} of {REQUESTS} requests find a route");
        group.bench_function(BenchmarkId::from_parameter(n), |b| {
            let mut i = 0;
            b.iter(|| {
                let req = requests[i % REQUESTS].view();
                i += 1;
                black_box(router.find(black_box(&req)))
            })
        });
    }
    group.finish();
}

fn snapshot_build(c: &mut Criterion) {
    let mut group = c.benchmark_group("snapshot_build");
    group.sample_size(10);
    let n = 10_000;
    let table = table(&routes(n, &mut XorShift(0x2545_f491_4f6c_dd1d)));
    group.bench_function(BenchmarkId::from_parameter(n), |b| b.iter(|| Router::build(black_box(&table))));
    group.finish();
}

criterion_group!(benches, route_match, snapshot_build);
criterion_main!(benches);
