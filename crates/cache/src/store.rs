//! The store: stored responses, bounded in bytes and in entries, shared by
//! all the threads of the data plane.
//!
//! The cache is split into shards by key hash, each behind its own `Mutex`
//! and each with its own least-recently-used order, share of
//! `capacity_bytes` and share of `max_entries`; every call locks one shard
//! (the purge calls lock each in turn). An entry's size is its body, its
//! headers (names, values and [`HEADER_OVERHEAD_BYTES`] each), its canonical
//! key, its `Vary` values and [`ENTRY_OVERHEAD_BYTES`]. Inserting evicts
//! least-recently-used entries of the shard until the new one fits; an entry
//! larger than its shard's share is refused. A key holds at most
//! [`MAX_VARIANTS_PER_KEY`] responses that differ by their `Vary` fields;
//! a further one evicts the least recently used of them. Expired entries
//! are removed when a lookup meets them (and by [`ResponseCache::remove_expired`]).
//!
//! Stored headers are the response's less the hop-by-hop ones (and those
//! `Connection` names), `Set-Cookie` and `Age`; the body should own its
//! buffer (a slice of a larger `Bytes` keeps all of it alive, and only the
//! slice is counted).

use std::borrow::Cow;
use std::collections::HashMap;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, PoisonError};

use bytes::Bytes;
use http::header::{self, HeaderMap, HeaderName, HeaderValue};
use http::{Method, Response, StatusCode};

use crate::directives::{connection_tokens, trim_ows, Vary};
use crate::key::CacheKey;
use crate::lru::Lru;
use crate::policy::{content_length, Storable};
use crate::status::Uncacheable;

/// Most stored responses under one key that differ by their `Vary` fields.
pub const MAX_VARIANTS_PER_KEY: usize = 8;
/// Shards of a cache made by [`ResponseCache::new`].
pub const DEFAULT_SHARDS: usize = 16;
/// Bytes counted for each entry besides its contents (bookkeeping).
pub const ENTRY_OVERHEAD_BYTES: usize = 192;
/// Bytes counted for each stored header field besides its name and value.
pub const HEADER_OVERHEAD_BYTES: usize = 32;

/// Response fields that are never stored: hop-by-hop ones (RFC 9110 §7.6.1,
/// and those of RFC 2616 proxies still send), cookies, and `Age` (the cache
/// sends its own).
const NOT_STORED: [&str; 11] = [
    "connection",
    "keep-alive",
    "proxy-connection",
    "te",
    "trailer",
    "transfer-encoding",
    "upgrade",
    "proxy-authenticate",
    "proxy-authorization",
    "set-cookie",
    "age",
];

/// A stored response.
#[derive(Debug)]
pub struct CachedResponse {
    pub status: StatusCode,
    pub headers: HeaderMap,
    pub body: Bytes,
}

/// A response served from the cache.
#[derive(Debug, Clone)]
pub struct Hit {
    pub response: Arc<CachedResponse>,
    /// The value for the `Age` header, in seconds: the upstream `Age` plus the time in this cache.
    pub age_s: u64,
    /// How much longer the entry is fresh, in milliseconds (> 0).
    pub fresh_for_ms: u64,
}

impl Hit {
    /// The response to send for a request with `method`: the stored status,
    /// headers and `Age`, and the body unless the method is `HEAD`.
    pub fn to_response(&self, method: &Method) -> Response<Bytes> {
        let body = if method == Method::HEAD { Bytes::new() } else { self.response.body.clone() };
        let mut response = Response::new(body);
        *response.status_mut() = self.response.status;
        *response.headers_mut() = self.response.headers.clone();
        response.headers_mut().insert(header::AGE, HeaderValue::from(self.age_s));
        response
    }
}

/// Why a lookup found nothing to serve.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Miss {
    /// Nothing is stored under the key.
    Absent,
    /// Responses are stored under the key, but none for this request's `Vary` fields.
    VaryMismatch,
    /// The response for this request had expired; it was removed.
    Expired,
}

/// What a lookup found.
#[derive(Debug, Clone)]
pub enum Lookup {
    Hit(Hit),
    Miss(Miss),
}

/// Counters for metrics.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Stats {
    /// Entries held now.
    pub entries: usize,
    /// Bytes held now (as counted for the capacity).
    pub bytes: usize,
    /// Lookups that found a fresh response.
    pub hits: u64,
    /// Lookups that did not (including those that met an expired response).
    pub misses: u64,
    /// Responses stored.
    pub inserts: u64,
    /// Entries removed to make room (bytes, entries, or variants of one key).
    pub evictions: u64,
    /// Entries removed because they had expired.
    pub expired: u64,
    /// Entries removed by a purge.
    pub purged: u64,
}

#[derive(Debug, Default)]
struct Counters {
    entries: AtomicUsize,
    bytes: AtomicUsize,
    hits: AtomicU64,
    misses: AtomicU64,
    inserts: AtomicU64,
    evictions: AtomicU64,
    expired: AtomicU64,
    purged: AtomicU64,
}

/// The request's value of one field named by a stored response's `Vary`.
#[derive(Debug)]
struct VaryField {
    name: HeaderName,
    /// The field lines, trimmed and joined with `,`; `None` when absent.
    value: Option<Box<[u8]>>,
}

#[derive(Debug)]
struct Entry {
    key: CacheKey,
    vary: Box<[VaryField]>,
    response: Arc<CachedResponse>,
    stored_at_ms: u64,
    expires_at_ms: u64,
    initial_age_s: u64,
    size_bytes: usize,
    /// The shard's use counter when the entry was last stored or served.
    last_used: u64,
}

/// Slab indices of the entries under one key hash, oldest first, held inline in the
/// index so that a lookup follows no further pointer to find them.
#[derive(Debug, Clone, Copy, Default)]
struct Slots {
    at: [usize; MAX_VARIANTS_PER_KEY],
    len: usize,
}

impl Slots {
    /// Adds `i` as the newest; false when full.
    fn push(&mut self, i: usize) -> bool {
        if self.len == MAX_VARIANTS_PER_KEY {
            return false;
        }
        self.at[self.len] = i;
        self.len += 1;
        true
    }

    /// Removes `i`, keeping the order of the others.
    fn remove(&mut self, i: usize) {
        if let Some(pos) = self.iter().position(|&s| s == i) {
            self.at.copy_within(pos + 1..self.len, pos);
            self.len -= 1;
        }
    }
}

impl std::ops::Deref for Slots {
    type Target = [usize];

    fn deref(&self) -> &[usize] {
        &self.at[..self.len]
    }
}

#[derive(Debug)]
struct Shard {
    lru: Lru<Entry>,
    /// The entries under each key hash.
    index: HashMap<[u8; 32], Slots>,
    bytes: usize,
    capacity_bytes: usize,
    max_entries: usize,
    uses: u64,
}

/// The response cache. All methods take `&self`; share it in an `Arc`.
#[derive(Debug)]
pub struct ResponseCache {
    shards: Box<[Mutex<Shard>]>,
    capacity_bytes: usize,
    max_entries: usize,
    counters: Counters,
}

impl ResponseCache {
    /// A cache of at most `capacity_bytes` and `max_entries`, in [`DEFAULT_SHARDS`] shards.
    pub fn new(capacity_bytes: usize, max_entries: usize) -> Self {
        Self::with_shards(capacity_bytes, max_entries, DEFAULT_SHARDS)
    }

    /// A cache in `shards` shards (at least 1, at most `max_entries`). Each shard holds an
    /// equal share of `capacity_bytes` and `max_entries`, and the largest entry it takes is
    /// its share of `capacity_bytes`.
    pub fn with_shards(capacity_bytes: usize, max_entries: usize, shards: usize) -> Self {
        let n = shards.min(max_entries).max(1);
        let share = |total: usize, i: usize| total / n + usize::from(i < total % n);
        let shards = (0..n)
            .map(|i| {
                Mutex::new(Shard {
                    lru: Lru::new(),
                    index: HashMap::new(),
                    bytes: 0,
                    capacity_bytes: share(capacity_bytes, i),
                    max_entries: share(max_entries, i),
                    uses: 0,
                })
            })
            .collect();
        ResponseCache { shards, capacity_bytes, max_entries, counters: Counters::default() }
    }

    pub fn capacity_bytes(&self) -> usize {
        self.capacity_bytes
    }

    pub fn max_entries(&self) -> usize {
        self.max_entries
    }

    /// The response stored under `key` for a request with `request_headers`, if one is
    /// fresh at `now_ms`. Expired responses met on the way are removed.
    pub fn lookup(&self, key: &CacheKey, request_headers: &HeaderMap, now_ms: u64) -> Lookup {
        let found = self.with_shard(key, |shard, counters| shard.lookup(key, request_headers, now_ms, counters));
        let counter = if found.is_ok() { &self.counters.hits } else { &self.counters.misses };
        counter.fetch_add(1, Ordering::Relaxed);
        match found {
            Ok(hit) => Lookup::Hit(hit),
            Err(miss) => Lookup::Miss(miss),
        }
    }

    /// Stores a response under `key` for the request with `request_headers`, fresh for
    /// `storable.ttl_ms` from `now_ms`, evicting least-recently-used entries to make room.
    /// It replaces the stored responses under `key` that this request would have been
    /// served. `storable` comes from [`crate::Policy::storable`] on the same response.
    #[allow(clippy::too_many_arguments)]
    pub fn insert(
        &self,
        key: CacheKey,
        request_headers: &HeaderMap,
        status: StatusCode,
        response_headers: &HeaderMap,
        body: Bytes,
        storable: Storable,
        now_ms: u64,
    ) -> Result<(), Uncacheable> {
        if body.len() > storable.max_object_bytes {
            return Err(Uncacheable::TooLarge);
        }
        if response_headers.contains_key(header::CONTENT_LENGTH)
            && content_length(response_headers) != Some(body.len() as u64)
        {
            return Err(Uncacheable::Incomplete);
        }
        if storable.ttl_ms == 0 {
            return Err(Uncacheable::NotFresh);
        }
        if response_headers.contains_key(header::SET_COOKIE) {
            return Err(Uncacheable::SetCookie);
        }
        let names = match Vary::parse(response_headers) {
            Ok(Vary::Fields(names)) => names,
            Ok(Vary::Any) => return Err(Uncacheable::VaryStar),
            Err(_) => return Err(Uncacheable::VaryInvalid),
        };
        let vary: Box<[VaryField]> = names
            .into_iter()
            .map(|name| {
                let value = vary_value(request_headers, &name).map(|v| Box::<[u8]>::from(v.as_ref()));
                VaryField { name, value }
            })
            .collect();
        let headers = stored_headers(response_headers);
        let size_bytes = ENTRY_OVERHEAD_BYTES
            + key.canonical().len()
            + body.len()
            + headers.iter().map(|(n, v)| n.as_str().len() + v.len() + HEADER_OVERHEAD_BYTES).sum::<usize>()
            + vary.iter().map(|f| f.name.as_str().len() + f.value.as_ref().map_or(0, |v| v.len())).sum::<usize>();
        let entry = Entry {
            vary,
            response: Arc::new(CachedResponse { status, headers, body }),
            stored_at_ms: now_ms,
            expires_at_ms: now_ms.saturating_add(storable.ttl_ms),
            initial_age_s: storable.age_s,
            size_bytes,
            last_used: 0,
            key,
        };
        let shard = self.shard_of(&entry.key);
        self.locked(shard, |s, counters| s.insert(entry, request_headers, counters))?;
        self.counters.inserts.fetch_add(1, Ordering::Relaxed);
        Ok(())
    }

    /// Removes every entry; returns how many went.
    pub fn purge_all(&self) -> usize {
        self.purge_where(|_| true)
    }

    /// Removes the entries of route `route_id`; returns how many went.
    pub fn purge_route(&self, route_id: &str) -> usize {
        self.purge_where(|k| k.route_id() == route_id)
    }

    /// Removes the entries whose path starts with `path_prefix`, of route `route_id` or
    /// (`None`) of any route; returns how many went.
    pub fn purge_prefix(&self, route_id: Option<&str>, path_prefix: &str) -> usize {
        self.purge_where(|k| route_id.is_none_or(|r| k.route_id() == r) && k.path().starts_with(path_prefix))
    }

    /// Removes every variant stored under `key`; returns how many went.
    pub fn purge_key(&self, key: &CacheKey) -> usize {
        let purged = self.with_shard(key, |shard, _| {
            let doomed = shard.same_key(key);
            doomed.iter().filter(|&&i| shard.remove(i).is_some()).count()
        });
        self.counters.purged.fetch_add(purged as u64, Ordering::Relaxed);
        purged
    }

    /// Removes every entry expired at `now_ms`; returns how many went. Lookups remove the
    /// expired entries they meet, so calling this is optional housekeeping.
    pub fn remove_expired(&self, now_ms: u64) -> usize {
        let removed = (0..self.shards.len())
            .map(|i| self.locked(i, |shard, _| shard.remove_where(|e| now_ms >= e.expires_at_ms)))
            .sum::<usize>();
        self.counters.expired.fetch_add(removed as u64, Ordering::Relaxed);
        removed
    }

    pub fn stats(&self) -> Stats {
        let c = &self.counters;
        Stats {
            entries: c.entries.load(Ordering::Relaxed),
            bytes: c.bytes.load(Ordering::Relaxed),
            hits: c.hits.load(Ordering::Relaxed),
            misses: c.misses.load(Ordering::Relaxed),
            inserts: c.inserts.load(Ordering::Relaxed),
            evictions: c.evictions.load(Ordering::Relaxed),
            expired: c.expired.load(Ordering::Relaxed),
            purged: c.purged.load(Ordering::Relaxed),
        }
    }

    fn purge_where(&self, doomed: impl Fn(&CacheKey) -> bool) -> usize {
        let purged = (0..self.shards.len())
            .map(|i| self.locked(i, |shard, _| shard.remove_where(|e| doomed(&e.key))))
            .sum::<usize>();
        self.counters.purged.fetch_add(purged as u64, Ordering::Relaxed);
        purged
    }

    fn shard_of(&self, key: &CacheKey) -> usize {
        (key.shard_bits() % self.shards.len() as u64) as usize
    }

    fn with_shard<R>(&self, key: &CacheKey, f: impl FnOnce(&mut Shard, &Counters) -> R) -> R {
        self.locked(self.shard_of(key), f)
    }

    /// Runs `f` on shard `i` under its lock and carries its change of size into the counters.
    fn locked<R>(&self, i: usize, f: impl FnOnce(&mut Shard, &Counters) -> R) -> R {
        let mut shard = self.shards[i].lock().unwrap_or_else(PoisonError::into_inner);
        let (entries, bytes) = (shard.lru.len(), shard.bytes);
        let r = f(&mut shard, &self.counters);
        adjust(&self.counters.entries, entries, shard.lru.len());
        adjust(&self.counters.bytes, bytes, shard.bytes);
        r
    }

    /// Checks the structure of every shard against its bounds and the counters.
    #[cfg(test)]
    fn check_invariants(&self) -> Result<(), String> {
        let (mut entries, mut bytes) = (0, 0);
        for m in self.shards.iter() {
            let s = m.lock().unwrap_or_else(PoisonError::into_inner);
            let listed: Vec<(usize, &Entry)> = s.lru.iter().collect();
            if listed.len() != s.lru.len() {
                return Err(format!("list has {} nodes, len says {}", listed.len(), s.lru.len()));
            }
            let indexed: usize = s.index.values().map(|slots| slots.len()).sum();
            if indexed != listed.len() {
                return Err(format!("index holds {indexed}, list {}", listed.len()));
            }
            for (hash, slots) in &s.index {
                if slots.is_empty() || slots.len() > MAX_VARIANTS_PER_KEY {
                    return Err(format!("{} variants under one key", slots.len()));
                }
                for &i in slots.iter() {
                    match s.lru.get(i) {
                        Some(e) if e.key.hash() == hash => {}
                        _ => return Err(format!("index slot {i} does not hold its key")),
                    }
                }
            }
            let sum: usize = listed.iter().map(|(_, e)| e.size_bytes).sum();
            if sum != s.bytes || s.bytes > s.capacity_bytes || s.lru.len() > s.max_entries {
                return Err(format!(
                    "shard holds {sum} bytes, counts {} of {}, {} entries of {}",
                    s.bytes,
                    s.capacity_bytes,
                    s.lru.len(),
                    s.max_entries
                ));
            }
            entries += s.lru.len();
            bytes += s.bytes;
        }
        let stats = self.stats();
        if stats.entries != entries || stats.bytes != bytes {
            return Err(format!("stats say {}/{}, shards {entries}/{bytes}", stats.entries, stats.bytes));
        }
        if bytes > self.capacity_bytes || entries > self.max_entries {
            return Err(format!("{bytes} bytes, {entries} entries over the bounds"));
        }
        Ok(())
    }
}

impl Shard {
    fn lookup(&mut self, key: &CacheKey, request: &HeaderMap, now_ms: u64, counters: &Counters) -> Result<Hit, Miss> {
        let candidates = self.same_key(key);
        if candidates.is_empty() {
            return Err(Miss::Absent);
        }
        let mut found = None;
        let mut expired_match = false;
        // Newest first: a response stored later for the same request is preferred.
        for &i in candidates.iter().rev() {
            let Some(e) = self.lru.get(i) else { continue };
            if found.is_none() && vary_matches(&e.vary, request) {
                if now_ms >= e.expires_at_ms {
                    expired_match = true;
                } else {
                    found = Some(i);
                }
            }
        }
        let expired = self.remove_some(&candidates, |e| now_ms >= e.expires_at_ms);
        counters.expired.fetch_add(expired as u64, Ordering::Relaxed);
        let Some(i) = found else {
            return Err(if expired_match { Miss::Expired } else { Miss::VaryMismatch });
        };
        self.uses += 1;
        let uses = self.uses;
        self.lru.touch(i);
        let e = self.lru.get_mut(i).ok_or(Miss::Absent)?;
        e.last_used = uses;
        let in_cache_s = now_ms.saturating_sub(e.stored_at_ms) / 1000;
        Ok(Hit {
            response: Arc::clone(&e.response),
            age_s: e.initial_age_s.saturating_add(in_cache_s),
            fresh_for_ms: e.expires_at_ms - now_ms,
        })
    }

    fn insert(&mut self, mut entry: Entry, request: &HeaderMap, counters: &Counters) -> Result<(), Uncacheable> {
        if entry.size_bytes > self.capacity_bytes || self.max_entries == 0 {
            return Err(Uncacheable::TooLarge);
        }
        let same = self.same_key(&entry.key);
        self.remove_some(&same, |e| vary_matches(&e.vary, request));
        let mut evicted = 0u64;
        while let Some(slots) = self.index.get(entry.key.hash()) {
            if slots.len() < MAX_VARIANTS_PER_KEY {
                break;
            }
            let oldest = slots.iter().copied().min_by_key(|&i| self.lru.get(i).map_or(0, |e| e.last_used));
            match oldest.and_then(|i| self.remove(i)) {
                Some(_) => evicted += 1,
                None => break,
            }
        }
        while self.lru.len() >= self.max_entries || self.bytes.saturating_add(entry.size_bytes) > self.capacity_bytes {
            match self.lru.back().and_then(|i| self.remove(i)) {
                Some(_) => evicted += 1,
                None => break,
            }
        }
        counters.evictions.fetch_add(evicted, Ordering::Relaxed);
        self.uses += 1;
        entry.last_used = self.uses;
        let hash = *entry.key.hash();
        self.bytes += entry.size_bytes;
        let i = self.lru.push_front(entry);
        let pushed = self.index.entry(hash).or_default().push(i);
        debug_assert!(pushed, "room was made for the variant");
        Ok(())
    }

    /// The slab indices of the entries stored under `key` (same hash and same canonical
    /// key), oldest first.
    fn same_key(&self, key: &CacheKey) -> Slots {
        let mut found = Slots::default();
        let Some(slots) = self.index.get(key.hash()) else { return found };
        for &i in slots.iter() {
            if self.lru.get(i).is_some_and(|e| e.key.canonical() == key.canonical()) {
                found.push(i);
            }
        }
        found
    }

    /// Removes those of `indices` whose entry satisfies `doomed`; returns how many.
    fn remove_some(&mut self, indices: &[usize], doomed: impl Fn(&Entry) -> bool) -> usize {
        let mut n = 0;
        for &i in indices {
            if self.lru.get(i).is_some_and(&doomed) && self.remove(i).is_some() {
                n += 1;
            }
        }
        n
    }

    /// Removes every entry that satisfies `doomed`; returns how many.
    fn remove_where(&mut self, doomed: impl Fn(&Entry) -> bool) -> usize {
        if self.lru.len() == 0 {
            return 0;
        }
        let all: Vec<usize> = self.lru.iter().filter(|(_, e)| doomed(e)).map(|(i, _)| i).collect();
        if all.len() == self.lru.len() {
            self.lru.clear();
            self.index.clear();
            self.bytes = 0;
            return all.len();
        }
        all.into_iter().filter(|&i| self.remove(i).is_some()).count()
    }

    fn remove(&mut self, i: usize) -> Option<Entry> {
        let e = self.lru.remove(i)?;
        let hash = e.key.hash();
        if let Some(slots) = self.index.get_mut(hash) {
            slots.remove(i);
            if slots.is_empty() {
                self.index.remove(hash);
            }
        }
        self.bytes -= e.size_bytes;
        Some(e)
    }
}

/// Whether the request's values of the stored `Vary` fields are the stored ones.
fn vary_matches(fields: &[VaryField], request: &HeaderMap) -> bool {
    fields.iter().all(|f| vary_value(request, &f.name).as_deref() == f.value.as_deref())
}

/// A request field's lines, trimmed and joined with `,`; `None` when absent.
fn vary_value<'a>(request: &'a HeaderMap, name: &HeaderName) -> Option<Cow<'a, [u8]>> {
    let mut lines = request.get_all(name).iter();
    let first = trim_ows(lines.next()?.as_bytes());
    let Some(second) = lines.next() else { return Some(Cow::Borrowed(first)) };
    let mut joined = first.to_vec();
    for line in std::iter::once(second).chain(lines) {
        joined.push(b',');
        joined.extend_from_slice(trim_ows(line.as_bytes()));
    }
    Some(Cow::Owned(joined))
}

/// The response headers that are stored.
fn stored_headers(response: &HeaderMap) -> HeaderMap {
    let listed = connection_tokens(response);
    let mut kept = HeaderMap::with_capacity(response.len());
    for (name, value) in response {
        if !NOT_STORED.contains(&name.as_str()) && !listed.contains(name) {
            kept.append(name.clone(), value.clone());
        }
    }
    kept
}

fn adjust(counter: &AtomicUsize, before: usize, after: usize) {
    if after > before {
        counter.fetch_add(after - before, Ordering::Relaxed);
    } else if before > after {
        counter.fetch_sub(before - after, Ordering::Relaxed);
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::policy::Policy;
    use proptest::prelude::*;

    fn key(path: &str) -> CacheKey {
        CacheKey::new(&Policy::default(), "r", &Method::GET, "h", path, None, &HeaderMap::new())
    }

    fn storable(ttl_ms: u64) -> Storable {
        Storable { ttl_ms, age_s: 0, max_object_bytes: usize::MAX }
    }

    fn vary_on(name: &'static str) -> HeaderMap {
        let mut h = HeaderMap::new();
        h.insert(header::VARY, HeaderValue::from_static(name));
        h
    }

    fn request_with(name: &'static str, value: u8) -> HeaderMap {
        let mut h = HeaderMap::new();
        h.insert(name, HeaderValue::from(u16::from(value)));
        h
    }

    #[derive(Debug, Clone)]
    enum Op {
        Insert { path: u8, variant: u8, body_bytes: usize, ttl_ms: u64 },
        Lookup { path: u8, variant: u8 },
        Tick { ms: u64 },
        PurgePrefix { path: u8 },
    }

    fn op() -> impl Strategy<Value = Op> {
        prop_oneof![
            6 => (0u8..40, 0u8..12, 0usize..3_000, 1u64..5_000)
                .prop_map(|(path, variant, body_bytes, ttl_ms)| Op::Insert { path, variant, body_bytes, ttl_ms }),
            4 => (0u8..40, 0u8..12).prop_map(|(path, variant)| Op::Lookup { path, variant }),
            1 => (0u64..2_000).prop_map(|ms| Op::Tick { ms }),
            1 => (0u8..40).prop_map(|path| Op::PurgePrefix { path }),
        ]
    }

    proptest! {
        #[test]
        fn capacity_and_entry_bounds_hold_over_random_operations(
            capacity_bytes in 0usize..40_000,
            max_entries in 0usize..40,
            shards in 1usize..5,
            ops in proptest::collection::vec(op(), 1..200),
        ) {
            let cache = ResponseCache::with_shards(capacity_bytes, max_entries, shards);
            let vary = vary_on("x-v");
            let mut now_ms = 0u64;
            for op in ops {
                match op {
                    Op::Insert { path, variant, body_bytes, ttl_ms } => {
                        let body = Bytes::from(vec![b'x'; body_bytes]);
                        let _ = cache.insert(
                            key(&format!("/p{path}")),
                            &request_with("x-v", variant),
                            StatusCode::OK,
                            &vary,
                            body,
                            storable(ttl_ms),
                            now_ms,
                        );
                    }
                    Op::Lookup { path, variant } => {
                        if let Lookup::Hit(hit) = cache.lookup(&key(&format!("/p{path}")), &request_with("x-v", variant), now_ms) {
                            prop_assert!(hit.fresh_for_ms > 0);
                        }
                    }
                    Op::Tick { ms } => now_ms += ms,
                    Op::PurgePrefix { path } => {
                        cache.purge_prefix(Some("r"), &format!("/p{path}"));
                    }
                }
                let stats = cache.stats();
                prop_assert!(stats.bytes <= capacity_bytes, "{} bytes > {}", stats.bytes, capacity_bytes);
                prop_assert!(stats.entries <= max_entries, "{} entries > {}", stats.entries, max_entries);
                if let Err(e) = cache.check_invariants() {
                    prop_assert!(false, "{}", e);
                }
            }
        }
    }

    #[test]
    fn concurrent_inserts_and_lookups_keep_the_invariants() {
        let cache = Arc::new(ResponseCache::new(256 * 1024, 300));
        let threads: Vec<_> = (0..4u64)
            .map(|t| {
                let cache = Arc::clone(&cache);
                std::thread::spawn(move || {
                    for n in 0..2_000u64 {
                        let k = key(&format!("/t{}/{}", t, n % 500));
                        let body = Bytes::from(vec![b'b'; (n as usize * 37) % 4_000]);
                        let _ = cache.insert(
                            k.clone(),
                            &HeaderMap::new(),
                            StatusCode::OK,
                            &HeaderMap::new(),
                            body,
                            storable(1_000),
                            n,
                        );
                        let _ = cache.lookup(&k, &HeaderMap::new(), n);
                        if n % 700 == 0 {
                            cache.purge_prefix(None, &format!("/t{t}/1"));
                        }
                    }
                })
            })
            .collect();
        for t in threads {
            t.join().expect("no thread panicked");
        }
        cache.check_invariants().expect("invariants");
        let stats = cache.stats();
        assert!(stats.bytes <= cache.capacity_bytes() && stats.entries <= cache.max_entries());
        assert_eq!(stats.hits + stats.misses, 8_000);
        assert!(stats.evictions > 0, "the cache was too small for the load, so it evicted");
    }

    #[test]
    fn a_key_holds_at_most_max_variants_and_drops_the_least_recently_used() {
        let cache = ResponseCache::with_shards(1 << 20, 100, 1);
        let k = key("/v");
        let vary = vary_on("x-v");
        for v in 0..MAX_VARIANTS_PER_KEY as u8 {
            cache
                .insert(
                    k.clone(),
                    &request_with("x-v", v),
                    StatusCode::OK,
                    &vary,
                    Bytes::from_static(b"b"),
                    storable(10_000),
                    0,
                )
                .expect("stored");
        }
        // Use variant 0 so that variant 1 is now the least recently used.
        assert!(matches!(cache.lookup(&k, &request_with("x-v", 0), 1), Lookup::Hit(_)));
        cache
            .insert(
                k.clone(),
                &request_with("x-v", 200),
                StatusCode::OK,
                &vary,
                Bytes::from_static(b"b"),
                storable(10_000),
                2,
            )
            .expect("stored");
        assert_eq!(cache.stats().entries, MAX_VARIANTS_PER_KEY);
        assert!(matches!(cache.lookup(&k, &request_with("x-v", 0), 3), Lookup::Hit(_)));
        assert!(matches!(cache.lookup(&k, &request_with("x-v", 1), 3), Lookup::Miss(Miss::VaryMismatch)));
        assert!(matches!(cache.lookup(&k, &request_with("x-v", 200), 3), Lookup::Hit(_)));
        cache.check_invariants().expect("invariants");
    }
}
