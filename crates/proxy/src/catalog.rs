//! What the node sees of its APIs: requests per route (for `raftgatectl
//! catalog`), and requests no specific route matched, by method and path
//! template (shadow API discovery, `raftgatectl catalog --unknown`).
//!
//! Both are per node and bounded: one counter per configured route, and at
//! most [`MAX_UNKNOWN_PATHS`] templates (more are only counted as
//! overflow). Counting a matched request is one atomic add; recording an
//! unknown path takes one of 16 shard locks.

use std::collections::HashMap;
use std::hash::{Hash, Hasher};
use std::sync::atomic::{AtomicU64, Ordering::Relaxed};
use std::sync::{Arc, Mutex};

use raftgate_model::route::PathPattern;
use raftgate_model::{ObjectId, Route};

/// Templates kept per node, over all shards.
pub const MAX_UNKNOWN_PATHS: usize = 10_000;
const SHARDS: usize = 16;
/// Segments of a template; deeper paths end in `/…`.
const MAX_SEGMENTS: usize = 12;
const MAX_SEGMENT_CHARS: usize = 48;

/// Requests of one route on this node: in total, and per wall-clock minute.
#[derive(Debug, Default)]
pub struct RouteCounter {
    total: AtomicU64,
    /// The minute (since the epoch) `current` counts.
    minute: AtomicU64,
    current: AtomicU64,
    /// The whole minute before `minute`.
    previous: AtomicU64,
    /// Responses, latency and limit decisions, for `/metrics`.
    pub metrics: crate::metrics::RouteMetrics,
}

impl RouteCounter {
    pub fn count(&self, now_minute: u64) {
        self.total.fetch_add(1, Relaxed);
        let m = self.minute.load(Relaxed);
        if m != now_minute && self.minute.compare_exchange(m, now_minute, Relaxed, Relaxed).is_ok() {
            let last = self.current.swap(0, Relaxed);
            self.previous.store(if now_minute == m + 1 { last } else { 0 }, Relaxed);
        }
        self.current.fetch_add(1, Relaxed);
    }

    /// (total since start, requests in the last whole minute).
    pub fn read(&self, now_minute: u64) -> (u64, u64) {
        let m = self.minute.load(Relaxed);
        let last = match now_minute.checked_sub(m) {
            Some(0) => self.previous.load(Relaxed),
            Some(1) => self.current.load(Relaxed),
            _ => 0,
        };
        (self.total.load(Relaxed), last)
    }
}

/// Counters by route id, kept across snapshot rebuilds; only routes that
/// exist keep one.
#[derive(Default)]
pub struct RouteCounters {
    by_route: Mutex<HashMap<ObjectId, Arc<RouteCounter>>>,
}

impl RouteCounters {
    /// The counters for this set of routes (made for new ones, dropped for gone ones).
    pub fn for_routes<'a>(&self, ids: impl Iterator<Item = &'a ObjectId>) -> HashMap<ObjectId, Arc<RouteCounter>> {
        let mut by_route = self.by_route.lock().unwrap_or_else(|p| p.into_inner());
        let out: HashMap<ObjectId, Arc<RouteCounter>> =
            ids.map(|id| (id.clone(), by_route.entry(id.clone()).or_default().clone())).collect();
        by_route.retain(|id, _| out.contains_key(id));
        out
    }

    /// Every route's counter, by id.
    pub fn all(&self) -> Vec<(ObjectId, Arc<RouteCounter>)> {
        let by_route = self.by_route.lock().unwrap_or_else(|p| p.into_inner());
        let mut out: Vec<_> = by_route.iter().map(|(id, c)| (id.clone(), c.clone())).collect();
        out.sort_by(|a, b| a.0.cmp(&b.0));
        out
    }

    pub fn read_all(&self, now_minute: u64) -> Vec<(ObjectId, u64, u64)> {
        let by_route = self.by_route.lock().unwrap_or_else(|p| p.into_inner());
        let mut out: Vec<_> = by_route
            .iter()
            .map(|(id, c)| {
                let (total, last) = c.read(now_minute);
                (id.clone(), total, last)
            })
            .collect();
        out.sort_by(|a, b| a.0.cmp(&b.0));
        out
    }
}

/// A route that catches everything: no host, and no path or just `/`.
pub fn is_catch_all(route: &Route) -> bool {
    route.hosts.is_empty()
        && route.headers.is_empty()
        && match route.paths.as_slice() {
            [] => true,
            [PathPattern::Prefix(p)] => p == "/",
            _ => false,
        }
}

/// Request counts by (method, path template), bounded. Entries are found
/// by a keyed hash of the pieces, so counting a known template allocates
/// nothing (catch-all routes pass every request through here).
pub struct UnknownPaths {
    shards: Vec<Mutex<HashMap<u64, Unknown>>>,
    keys: std::collections::hash_map::RandomState,
    overflow: AtomicU64,
}

struct Unknown {
    method: String,
    template: String,
    count: u64,
}

impl Default for UnknownPaths {
    fn default() -> Self {
        Self {
            shards: (0..SHARDS).map(|_| Mutex::new(HashMap::new())).collect(),
            keys: Default::default(),
            overflow: AtomicU64::new(0),
        }
    }
}

impl UnknownPaths {
    pub fn record(&self, method: &str, path: &str) {
        let method = method.get(..16).unwrap_or(method);
        let mut h = std::hash::BuildHasher::build_hasher(&self.keys);
        method.hash(&mut h);
        for piece in pieces(path) {
            piece.hash(&mut h);
        }
        let key = h.finish();
        let shard = &self.shards[key as usize % SHARDS];
        let mut map = shard.lock().unwrap_or_else(|p| p.into_inner());
        if let Some(e) = map.get_mut(&key) {
            e.count += 1;
        } else if map.len() < MAX_UNKNOWN_PATHS / SHARDS {
            map.insert(key, Unknown { method: method.to_string(), template: template(path), count: 1 });
        } else {
            self.overflow.fetch_add(1, Relaxed);
        }
    }

    /// The most requested (method, template, count), and the overflow count.
    pub fn top(&self, limit: usize) -> (Vec<(String, String, u64)>, u64) {
        let mut all: Vec<(String, String, u64)> = Vec::new();
        for s in &self.shards {
            let map = s.lock().unwrap_or_else(|p| p.into_inner());
            all.extend(map.values().map(|e| (e.method.clone(), e.template.clone(), e.count)));
        }
        all.sort_by(|a, b| b.2.cmp(&a.2).then_with(|| (&a.0, &a.1).cmp(&(&b.0, &b.1))));
        all.truncate(limit);
        (all, self.overflow.load(Relaxed))
    }
}

/// A path with its variable parts replaced: numbers `{n}`, UUIDs `{uuid}`,
/// long hex `{hex}`, other long or mixed tokens `{id}`.
pub fn template(path: &str) -> String {
    pieces(path).collect()
}

/// The template's pieces, in order: `/`, a segment or its placeholder, …
fn pieces(path: &str) -> impl Iterator<Item = &str> {
    let path = path.split(['?', '#']).next().unwrap_or("");
    let mut segments = path.split('/').filter(|s| !s.is_empty()).enumerate().peekable();
    let root = segments.peek().is_none().then_some("/");
    let parts =
        segments.take(MAX_SEGMENTS + 1).flat_map(
            |(i, seg)| {
                if i == MAX_SEGMENTS {
                    ["/…", ""]
                } else {
                    ["/", segment(seg)]
                }
            },
        );
    root.into_iter().chain(parts.filter(|p| !p.is_empty()))
}

fn segment(s: &str) -> &str {
    let hex = |c: char| c.is_ascii_hexdigit();
    if s.chars().all(|c| c.is_ascii_digit()) {
        return "{n}";
    }
    let b = s.as_bytes();
    if s.len() == 36 && [8, 13, 18, 23].iter().all(|&i| b[i] == b'-') && s.chars().filter(|c| *c != '-').all(hex) {
        return "{uuid}";
    }
    if s.len() >= 16 && s.chars().all(hex) {
        return "{hex}";
    }
    let digits = s.chars().filter(char::is_ascii_digit).count();
    if s.chars().count() > MAX_SEGMENT_CHARS || (s.len() >= 12 && digits > 0 && digits * 4 >= s.len()) {
        return "{id}";
    }
    s
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn templates_fold_ids_and_keep_words() {
        assert_eq!(template("/users/42/orders/7"), "/users/{n}/orders/{n}");
        assert_eq!(template("/v1/items/3f2504e0-4f89-11d3-9a0c-0305e82c3301"), "/v1/items/{uuid}");
        assert_eq!(template("/blobs/deadbeefdeadbeef00"), "/blobs/{hex}");
        assert_eq!(template("/t/ab12cd34ef56gh78"), "/t/{id}");
        assert_eq!(template("/"), "/");
        assert_eq!(template("/a/b?x=1"), "/a/b");
        assert_eq!(template(&"/x".repeat(30)), format!("{}/…", "/x".repeat(MAX_SEGMENTS)));
    }

    #[test]
    fn unknown_paths_stay_bounded_and_count_the_rest_as_overflow() {
        let u = UnknownPaths::default();
        for i in 0..(MAX_UNKNOWN_PATHS * 2) {
            u.record("GET", &format!("/p{i}x"));
        }
        u.record("GET", "/users/1");
        u.record("GET", "/users/2");
        let (top, overflow) = u.top(usize::MAX);
        assert!(top.len() <= MAX_UNKNOWN_PATHS);
        assert!(overflow >= MAX_UNKNOWN_PATHS as u64 - 1);
        let (top, _) = u.top(1);
        assert!(top[0].2 >= 1);
    }

    #[test]
    fn a_route_counter_reports_the_last_whole_minute() {
        let c = RouteCounter::default();
        for _ in 0..3 {
            c.count(100);
        }
        c.count(101);
        assert_eq!(c.read(101), (4, 3));
        assert_eq!(c.read(102), (4, 1));
        assert_eq!(c.read(105), (4, 0));
        c.count(110);
        assert_eq!(c.read(110), (5, 0), "a gap forgets the old minute");
    }
}
