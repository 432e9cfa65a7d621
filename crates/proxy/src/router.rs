//! The compiled route matcher: which route takes a request.
//!
//! A [`Router`] is built once per snapshot of the replicated routes and then
//! shared, read-only, by every request. Building expands each route into one
//! entry per (host pattern, path pattern) pair, sorts all entries by the
//! precedence below and gives each its position as a rank, then files the
//! entries by host (a map of exact hosts, a map of wildcard suffixes, and an
//! any-host bucket) and, within a host, by path: exact, prefix and template
//! paths in a segment trie (template parameters are wildcard edges), regexes
//! in one regex set. [`Router::find`] visits only the buckets and trie nodes
//! the request reaches, so its cost depends on the depth of the path and the
//! number of candidates, not on the number of routes; the candidates are
//! then taken in rank order and checked for headers, query and method.
//! Regexes rank last within a priority, so their set runs only when it
//! could still beat what the trie found.
//!
//! # Precedence
//!
//! A request is taken by the best-ranked entry whose host, path, header and
//! query predicates and method all match. Entries rank by, in order:
//!
//! 1. higher `priority`;
//! 2. path kind: exact, then template, then prefix, then regex (a route with
//!    no paths counts as prefix `/`);
//! 3. longer path pattern (in bytes);
//! 4. host: exact, then wildcard (longer suffix first), then any host;
//! 5. more predicates: headers plus query parameters, plus one if the route
//!    lists its methods;
//! 6. route id, ascending;
//! 7. within one route, the order of its `paths`, then of its `hosts`.
//!
//! When entries match host, path and predicates but none allows the method,
//! the answer is 405 with the union of their methods; when nothing matches
//! host, path and predicates it is 404. The request method is checked last,
//! so a route that allows it wins over a better-ranked one that does not.
//!
//! # Bounds
//!
//! Each route has at most 32 hosts and 32 paths (checked by the model), so at
//! most 1,024 entries. `find` allocates only when more than
//! `INLINE_CANDIDATES` entries reach the candidate stage, when a regex set
//! matches, when a query predicate meets an encoded pair, for the `allowed`
//! list of a 405, and for the parameters of a winning template. Its
//! recursion is bounded by the depth of the trie, not of the request path.

use std::borrow::Cow;
use std::cmp::Reverse;
use std::collections::HashMap;
use std::fmt;
use std::hash::{BuildHasherDefault, Hasher};
use std::sync::Arc;

use http::header::HeaderName;
use raftgate_model::route::{compile_regex, template_param, Method, PathPattern, Predicate, ValueMatch};
use raftgate_model::{Route, Table};
use regex::{Regex, RegexSet, RegexSetBuilder};

/// Candidates held on the stack before `find` spills them to the heap.
const INLINE_CANDIDATES: usize = 32;
/// Compiled size limit of one regex in a bucket's regex set.
const MAX_REGEX_PROGRAM_BYTES: usize = raftgate_model::route::MAX_REGEX_PROGRAM_BYTES;
/// Longest host name (RFC 1035), without a trailing dot.
const MAX_HOST_BYTES: usize = 253;
const MAX_LABEL_BYTES: usize = 63;

/// The parts of a request the router matches on.
#[derive(Debug, Clone, Copy)]
pub struct RequestView<'a> {
    /// As returned by [`normalize_host`].
    pub host: Option<&'a str>,
    /// The normalised path, without the query.
    pub path: &'a str,
    /// The raw query string, without the `?`.
    pub query: Option<&'a str>,
    pub method: &'a http::Method,
    pub headers: &'a http::HeaderMap,
}

/// The answer of [`Router::find`].
#[derive(Debug)]
pub enum Match<'r> {
    Found(RouteMatch<'r>),
    /// Some route matched host, path and predicates, but none allows the
    /// method; `allowed` is the union of their methods, sorted, deduplicated.
    MethodNotAllowed {
        allowed: Vec<Method>,
    },
    NotFound,
}

/// The route that takes a request, and how it matched.
#[derive(Debug)]
pub struct RouteMatch<'r> {
    pub route: &'r Arc<Route>,
    /// Which of the route's paths matched (`Prefix("/")` for a route without paths).
    pub pattern: &'r PathPattern,
    /// Template parameters, name and segment value, in pattern order.
    pub params: Vec<(&'r str, String)>,
}

impl RouteMatch<'_> {
    /// The path to send upstream for the request path `path`.
    ///
    /// `strip_prefix` removes the matched prefix (`/api/v1` on prefix `/api`
    /// becomes `/v1`, `/api` becomes `/`). `rewrite` replaces the matched
    /// prefix (rewrite `/b` on prefix `/a`: `/a/x` becomes `/b/x`, `/a`
    /// becomes `/b`; prefix `/` counts as matching nothing, so `/x` becomes
    /// `/b/x`), or the whole path for exact, template and regex patterns.
    /// Otherwise the path is unchanged.
    pub fn upstream_path(&self, path: &str) -> String {
        let route = &**self.route;
        match (self.pattern, &route.rewrite) {
            (PathPattern::Prefix(prefix), rewrite) if route.strip_prefix || rewrite.is_some() => {
                let rest = if prefix == "/" { path } else { path.get(prefix.len()..).unwrap_or("") };
                let base = if route.strip_prefix { "" } else { rewrite.as_deref().unwrap_or("") };
                join_path(base, rest)
            }
            (_, Some(rewrite)) => rewrite.clone(),
            (_, None) => path.to_owned(),
        }
    }
}

/// `base` followed by `rest` (empty or starting with `/`), without a double
/// slash, and `/` rather than nothing.
fn join_path(base: &str, rest: &str) -> String {
    if rest.is_empty() {
        return if base.is_empty() { "/".to_owned() } else { base.to_owned() };
    }
    let base = base.strip_suffix('/').unwrap_or(base);
    let mut out = String::with_capacity(base.len() + rest.len());
    out.push_str(base);
    out.push_str(rest);
    out
}

/// A Host header or `:authority` value in the form routes match on:
/// lower-case, without port or trailing dot; a bracketed IPv6 address keeps
/// its brackets. `None` when empty or not a valid host.
pub fn normalize_host(raw: &str) -> Option<String> {
    if let Some(rest) = raw.strip_prefix('[') {
        let (addr, after) = rest.split_once(']')?;
        if !after.is_empty() && !is_port(after.strip_prefix(':')?) {
            return None;
        }
        let ok = addr.contains(':') && addr.bytes().all(|b| b.is_ascii_hexdigit() || b == b':' || b == b'.');
        return ok.then(|| format!("[{}]", addr.to_ascii_lowercase()));
    }
    let name = match raw.split_once(':') {
        Some((name, port)) if is_port(port) => name,
        Some(_) => return None,
        None => raw,
    };
    let name = name.strip_suffix('.').unwrap_or(name);
    let ok = !name.is_empty()
        && name.len() <= MAX_HOST_BYTES
        && name.split('.').all(|label| {
            !label.is_empty()
                && label.len() <= MAX_LABEL_BYTES
                && label.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_')
        });
    ok.then(|| name.to_ascii_lowercase())
}

/// RFC 3986 `port`: digits, possibly none; at most 65535.
fn is_port(port: &str) -> bool {
    port.is_empty() || (port.bytes().all(|b| b.is_ascii_digit()) && port.parse::<u16>().is_ok())
}

/// The routes of one snapshot, compiled for matching. Immutable.
pub struct Router {
    routes: Vec<CompiledRoute>,
    /// Indexed by rank: `entries[0]` is the best-ranked.
    entries: Vec<Entry>,
    paths: PathTrie,
    exact_hosts: KeyMap<Bucket>,
    /// Keyed by the suffix after `*.`.
    wildcard_hosts: KeyMap<Bucket>,
    /// Bit `n` set when some wildcard suffix is `n` bytes long, so that a
    /// request host is looked up only at the suffixes that could be there.
    wildcard_suffix_lens: [u64; 4],
    any_host: Bucket,
    /// Best rank of any regex entry (`u32::MAX` if none): regex sets run only
    /// when they could beat what the other indexes found.
    best_regex_rank: u32,
    /// The pattern reported for routes without paths.
    match_all: PathPattern,
}

impl fmt::Debug for Router {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Router").field("routes", &self.routes.len()).field("entries", &self.entries.len()).finish()
    }
}

/// One (route, host pattern, path pattern) combination, with what `find`
/// checks of its route copied in, to spare it a cache miss.
struct Entry {
    route: u32,
    /// Index into the route's `paths`; `NO_PATH` for a route without paths.
    path: u32,
    /// The route's allowed methods (see `CompiledRoute::methods`).
    methods: u16,
    /// The route has header or query predicates.
    predicates: bool,
}

const NO_PATH: u32 = u32::MAX;

struct CompiledRoute {
    route: Arc<Route>,
    /// Bit `Method as u16` set for each allowed method.
    methods: u16,
    headers: Vec<HeaderPredicate>,
    query: Vec<QueryPredicate>,
}

struct HeaderPredicate {
    name: HeaderName,
    test: ValueTest,
    invert: bool,
}

struct QueryPredicate {
    name: Box<str>,
    test: ValueTest,
    invert: bool,
}

enum ValueTest {
    Present,
    Exact(Box<str>),
    Prefix(Box<str>),
    Regex(Regex),
}

impl ValueTest {
    fn compile(value: &Option<ValueMatch>) -> Result<Self, String> {
        Ok(match value {
            None => ValueTest::Present,
            Some(ValueMatch::Exact(v)) => ValueTest::Exact(v.as_str().into()),
            Some(ValueMatch::Prefix(v)) => ValueTest::Prefix(v.as_str().into()),
            Some(ValueMatch::Regex(r)) => ValueTest::Regex(compile_regex(r)?),
        })
    }

    fn holds(&self, value: &[u8]) -> bool {
        match self {
            ValueTest::Present => true,
            ValueTest::Exact(v) => value == v.as_bytes(),
            ValueTest::Prefix(v) => value.starts_with(v.as_bytes()),
            ValueTest::Regex(r) => std::str::from_utf8(value).is_ok_and(|v| r.is_match(v)),
        }
    }
}

impl CompiledRoute {
    fn compile(route: &Route) -> Result<Self, String> {
        let headers = route
            .headers
            .iter()
            .map(|p| {
                let name =
                    HeaderName::from_bytes(p.name.as_bytes()).map_err(|e| format!("header {:?}: {e}", p.name))?;
                Ok(HeaderPredicate { name, test: ValueTest::compile(&p.value)?, invert: p.invert })
            })
            .collect::<Result<_, String>>()?;
        let query = route
            .query
            .iter()
            .map(|p: &Predicate| {
                Ok(QueryPredicate {
                    name: p.name.as_str().into(),
                    test: ValueTest::compile(&p.value)?,
                    invert: p.invert,
                })
            })
            .collect::<Result<_, String>>()?;
        let methods = route.allowed_methods().iter().fold(0, |mask, m| mask | method_bit(*m));
        Ok(CompiledRoute { route: Arc::new(route.clone()), methods, headers, query })
    }

    /// Header and query predicates hold (the method is checked apart).
    fn admits(&self, req: &RequestView<'_>) -> bool {
        self.headers.iter().all(|p| {
            let seen = req.headers.get_all(&p.name).iter().any(|v| p.test.holds(v.as_bytes()));
            seen != p.invert
        }) && self.query.iter().all(|p| {
            let seen = query_values(req.query, &p.name).any(|v| p.test.holds(v.as_bytes()));
            seen != p.invert
        })
    }
}

fn method_bit(m: Method) -> u16 {
    1 << (m as u16)
}

/// The bit of a request method; 0 for methods no route can allow.
fn request_method_bit(m: &http::Method) -> u16 {
    let m = match m.as_str() {
        "GET" => Method::Get,
        "HEAD" => Method::Head,
        "POST" => Method::Post,
        "PUT" => Method::Put,
        "PATCH" => Method::Patch,
        "DELETE" => Method::Delete,
        "OPTIONS" => Method::Options,
        "TRACE" => Method::Trace,
        "CONNECT" => Method::Connect,
        _ => return 0,
    };
    method_bit(m)
}

const ALL_METHODS: [Method; 9] = [
    Method::Get,
    Method::Head,
    Method::Post,
    Method::Put,
    Method::Patch,
    Method::Delete,
    Method::Options,
    Method::Trace,
    Method::Connect,
];

fn methods_of(mask: u16) -> Vec<Method> {
    let mut v: Vec<Method> = ALL_METHODS.into_iter().filter(|m| mask & method_bit(*m) != 0).collect();
    v.sort();
    v
}

/// The decoded values of query parameter `name`. Pairs are split on `&`,
/// then at the first `=`; names and values are percent-decoded with `+` as
/// space, and a pair with an invalid encoding (or not UTF-8) is skipped.
fn query_values<'q>(query: Option<&'q str>, name: &'q str) -> impl Iterator<Item = Cow<'q, str>> + 'q {
    query.unwrap_or("").split('&').filter_map(move |pair| {
        let (n, v) = pair.split_once('=').unwrap_or((pair, ""));
        if percent_decode(n)? != name {
            return None;
        }
        percent_decode(v)
    })
}

/// Form-style percent decoding (`+` is a space). `None` for a malformed
/// `%XX` or a result that is not UTF-8. Borrows when nothing is encoded.
pub(crate) fn percent_decode(s: &str) -> Option<Cow<'_, str>> {
    if !s.bytes().any(|b| b == b'%' || b == b'+') {
        return Some(Cow::Borrowed(s));
    }
    let bytes = s.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        match bytes[i] {
            b'+' => out.push(b' '),
            b'%' => {
                let hex = |j: usize| bytes.get(j).and_then(|b| (*b as char).to_digit(16));
                out.push((hex(i + 1)? * 16 + hex(i + 2)?) as u8);
                i += 2;
            }
            b => out.push(b),
        }
        i += 1;
    }
    String::from_utf8(out).ok().map(Cow::Owned)
}

/// `HashMap` keyed by host names. The keys (like the trie's segments) come
/// from the admin-written routes; requests only look them up, so a fast
/// unkeyed hash cannot be flooded by clients.
type KeyMap<V> = HashMap<Box<str>, V, BuildHasherDefault<KeyHasher>>;

/// FxHash-style word hashing with a murmur3 finaliser, so that every input
/// bit reaches the low bits the table indexes by.
#[derive(Default, Clone, Copy)]
struct KeyHasher(u64);

impl KeyHasher {
    fn step(h: u64, word: u64) -> u64 {
        (h.rotate_left(5) ^ word).wrapping_mul(0x517c_c1b7_2722_0a95)
    }
}

impl Hasher for KeyHasher {
    fn write(&mut self, bytes: &[u8]) {
        self.0 = fold_words(self.0, bytes);
    }
    fn write_u8(&mut self, b: u8) {
        self.0 = Self::step(self.0, u64::from(b));
    }
    fn write_usize(&mut self, n: usize) {
        self.0 = Self::step(self.0, n as u64);
    }
    fn finish(&self) -> u64 {
        let mut h = self.0;
        h ^= h >> 33;
        h = h.wrapping_mul(0xff51_afd7_ed55_8ccd);
        h ^= h >> 33;
        h = h.wrapping_mul(0xc4ce_b9fe_1a85_ec53);
        h ^ (h >> 33)
    }
}

/// The path index of one host pattern: its root in the shared
/// [`PathTrie`] (exact, prefix and template paths) and its regexes.
struct Bucket {
    root: u32,
    regex: RegexIndex,
}

/// No node, no parameter edge.
const NONE: u32 = u32::MAX;

/// Exact, prefix and template paths of every bucket by segment, so that one
/// walk down the request path finds all three. Literal segments are edges
/// of one hash table keyed by (parent node, segment); a template parameter
/// is a node's `param` edge, which takes any non-empty segment. A prefix is
/// filed at the node where it ends and collected on the way past it; exact
/// paths and templates are collected where the request path ends.
///
/// The layout is flat (nodes, edges, ranks and segment text in four arrays)
/// so that a lookup touches few cache lines: with 10,000 routes the trie no
/// longer fits in the caches. Offsets are `u32`: the model's limits (20,000
/// routes of 32 paths of 1,024 bytes) keep every array far below 4 Gi.
struct PathTrie {
    nodes: Vec<TrieNode>,
    /// Open addressing with linear probing, at most half full.
    edges: Box<[Edge]>,
    /// `64 - log2(edges.len())`: an edge's first slot is `hash >> slot_shift`.
    slot_shift: u32,
    /// The rank lists of all nodes: per node its prefix ranks, then its end ranks.
    ranks: Vec<u32>,
    /// The literal segments of all nodes.
    text: String,
}

#[derive(Clone, Copy)]
struct TrieNode {
    /// The literal segment that leads here, in `text`.
    text_start: u32,
    text_len: u32,
    /// The node behind the parameter edge, or `NONE`.
    param: u32,
    /// Whether any literal edge leaves this node (no lookup otherwise).
    has_literal: bool,
    ranks_start: u32,
    /// Ranks of the prefixes that end here.
    prefix_len: u32,
    /// Ranks of the exact paths and templates that end here.
    end_len: u32,
}

#[derive(Clone, Copy)]
struct Edge {
    hash: u64,
    parent: u32,
    /// `NONE` for an empty slot.
    child: u32,
}

/// Hash of an edge: one multiply per 8 bytes of segment, no finaliser.
/// The table takes its slot from the top bits, which every input bit
/// reaches through the multiplies.
fn edge_hash(parent: u32, segment: &str) -> u64 {
    fold_words(u64::from(parent), segment.as_bytes())
}

/// Folds `bytes` into `h` a word at a time, the last (partial, possibly
/// empty) word tagged with its length.
fn fold_words(mut h: u64, bytes: &[u8]) -> u64 {
    let mut words = bytes.chunks_exact(8);
    for w in &mut words {
        h = KeyHasher::step(h, u64::from_le_bytes(w.try_into().expect("8 bytes")));
    }
    let rest = words.remainder();
    let last = rest.iter().rev().fold(0u64, |word, &b| word << 8 | u64::from(b));
    KeyHasher::step(h, last ^ ((rest.len() as u64) << 59))
}

/// The first segment of `segments` and what follows its `/`, if any.
fn split_segment(segments: &str) -> (&str, Option<&str>) {
    match segments.bytes().position(|b| b == b'/') {
        Some(i) => (&segments[..i], Some(&segments[i + 1..])),
        None => (segments, None),
    }
}

impl PathTrie {
    fn child(&self, parent: u32, segment: &str) -> Option<u32> {
        let hash = edge_hash(parent, segment);
        let mask = self.edges.len() - 1;
        let mut i = (hash >> self.slot_shift) as usize;
        loop {
            let edge = self.edges[i];
            if edge.child == NONE {
                return None;
            }
            if edge.hash == hash && edge.parent == parent {
                let n = &self.nodes[edge.child as usize];
                // Equal hashes are not equal segments: a client could craft a collision.
                if self.text.as_bytes().get(n.text_start as usize..)?.get(..n.text_len as usize)
                    == Some(segment.as_bytes())
                {
                    return Some(edge.child);
                }
            }
            i = (i + 1) & mask;
        }
    }

    fn prefix_ranks(&self, n: &TrieNode) -> &[u32] {
        &self.ranks[n.ranks_start as usize..][..n.prefix_len as usize]
    }

    fn end_ranks(&self, n: &TrieNode) -> &[u32] {
        &self.ranks[(n.ranks_start + n.prefix_len) as usize..][..n.end_len as usize]
    }

    /// Ranks of the entries under `root` that match `path`.
    fn collect(&self, root: u32, path: &str, out: &mut Candidates) {
        self.collect_from(root, path.strip_prefix('/').unwrap_or(path), out);
    }

    /// Recursion is bounded by the depth of the trie, not by the path.
    fn collect_from(&self, at: u32, segments: &str, out: &mut Candidates) {
        let node = &self.nodes[at as usize];
        out.extend(self.prefix_ranks(node));
        let (seg, rest) = split_segment(segments);
        let literal = if node.has_literal { self.child(at, seg) } else { None };
        let param = if seg.is_empty() || node.param == NONE { None } else { Some(node.param) };
        for child in [literal, param].into_iter().flatten() {
            match rest {
                Some(rest) => self.collect_from(child, rest, out),
                None => {
                    let node = &self.nodes[child as usize];
                    out.extend(self.prefix_ranks(node));
                    out.extend(self.end_ranks(node));
                }
            }
        }
    }
}

/// Builds the [`PathTrie`] with maps, then lays it out flat.
#[derive(Default)]
struct TrieBuilder {
    nodes: Vec<BuildNode>,
    edges: HashMap<(u32, Box<str>), u32>,
}

#[derive(Default)]
struct BuildNode {
    segment: Box<str>,
    param: Option<u32>,
    has_literal: bool,
    prefix: Vec<u32>,
    end: Vec<u32>,
}

impl TrieBuilder {
    fn new_node(&mut self, segment: &str) -> u32 {
        self.nodes.push(BuildNode { segment: segment.into(), ..BuildNode::default() });
        (self.nodes.len() - 1) as u32
    }

    /// Files `rank` under `pattern` below `root`, in rank order.
    fn insert(&mut self, root: u32, pattern: &PathPattern, rank: u32) {
        let (path, params) = match pattern {
            PathPattern::Prefix(p) if p == "/" => {
                self.nodes[root as usize].prefix.push(rank);
                return;
            }
            PathPattern::Exact(p) | PathPattern::Prefix(p) => (p, false),
            PathPattern::Template(p) => (p, true),
            PathPattern::Regex(_) => unreachable!("regexes are not filed in the trie"),
        };
        let mut at = root;
        for seg in path.strip_prefix('/').unwrap_or(path).split('/') {
            at = if params && template_param(seg).is_some() {
                match self.nodes[at as usize].param {
                    Some(child) => child,
                    None => {
                        let child = self.new_node("");
                        self.nodes[at as usize].param = Some(child);
                        child
                    }
                }
            } else {
                match self.edges.get(&(at, seg.into())) {
                    Some(&child) => child,
                    None => {
                        let child = self.new_node(seg);
                        self.edges.insert((at, seg.into()), child);
                        self.nodes[at as usize].has_literal = true;
                        child
                    }
                }
            };
        }
        let node = &mut self.nodes[at as usize];
        match pattern {
            PathPattern::Prefix(_) => node.prefix.push(rank),
            _ => node.end.push(rank),
        }
    }

    fn freeze(self) -> PathTrie {
        let mut text = String::new();
        let mut ranks = Vec::new();
        let nodes = self
            .nodes
            .iter()
            .map(|n| {
                let node = TrieNode {
                    text_start: text.len() as u32,
                    text_len: n.segment.len() as u32,
                    param: n.param.unwrap_or(NONE),
                    has_literal: n.has_literal,
                    ranks_start: ranks.len() as u32,
                    prefix_len: n.prefix.len() as u32,
                    end_len: n.end.len() as u32,
                };
                text.push_str(&n.segment);
                ranks.extend_from_slice(&n.prefix);
                ranks.extend_from_slice(&n.end);
                node
            })
            .collect();
        let capacity = (self.edges.len() * 2).next_power_of_two().max(8);
        let slot_shift = 64 - capacity.trailing_zeros();
        let mut edges = vec![Edge { hash: 0, parent: NONE, child: NONE }; capacity].into_boxed_slice();
        for ((parent, segment), child) in self.edges {
            let hash = edge_hash(parent, &segment);
            let mut i = (hash >> slot_shift) as usize;
            while edges[i].child != NONE {
                i = (i + 1) & (capacity - 1);
            }
            edges[i] = Edge { hash, parent, child };
        }
        PathTrie { nodes, edges, slot_shift, ranks, text }
    }
}

/// The regex entries of a bucket, run as one set.
#[derive(Default)]
enum RegexIndex {
    #[default]
    Empty,
    Set {
        set: RegexSet,
        /// Rank of each pattern of the set, ascending.
        ranks: Vec<u32>,
    },
    /// When the set does not compile (too big together), one by one.
    Each(Vec<(Regex, u32)>),
}

impl RegexIndex {
    fn build(regexes: Vec<(&str, Regex, u32)>) -> Self {
        if regexes.is_empty() {
            return RegexIndex::Empty;
        }
        let set = RegexSetBuilder::new(regexes.iter().map(|(src, _, _)| format!("^(?:{src})$")))
            .size_limit(MAX_REGEX_PROGRAM_BYTES.saturating_mul(regexes.len()))
            .build();
        match set {
            Ok(set) => RegexIndex::Set { set, ranks: regexes.iter().map(|r| r.2).collect() },
            Err(e) => {
                let count = regexes.len();
                tracing::warn!(error = %e, count, "route regexes too big for one set; matching them one by one");
                RegexIndex::Each(regexes.into_iter().map(|(_, re, rank)| (re, rank)).collect())
            }
        }
    }

    /// Ranks better than `below` of the regexes matching `path`.
    fn collect(&self, path: &str, below: u32, out: &mut Candidates) {
        match self {
            RegexIndex::Empty => {}
            RegexIndex::Set { set, ranks } => {
                if ranks[0] < below && set.is_match(path) {
                    for rank in set.matches(path).iter().map(|i| ranks[i]).filter(|r| *r < below) {
                        out.push(rank);
                    }
                }
            }
            RegexIndex::Each(each) => {
                for (_, rank) in each.iter().take_while(|(_, r)| *r < below).filter(|(re, _)| re.is_match(path)) {
                    out.push(*rank);
                }
            }
        }
    }
}

/// Candidate ranks: on the stack up to `INLINE_CANDIDATES`, then on the heap.
struct Candidates {
    inline: [u32; INLINE_CANDIDATES],
    len: usize,
    spill: Vec<u32>,
}

impl Candidates {
    fn new() -> Self {
        Candidates { inline: [0; INLINE_CANDIDATES], len: 0, spill: Vec::new() }
    }

    fn push(&mut self, rank: u32) {
        if self.spill.is_empty() && self.len < INLINE_CANDIDATES {
            self.inline[self.len] = rank;
            self.len += 1;
        } else {
            if self.spill.is_empty() {
                self.spill.extend_from_slice(&self.inline[..self.len]);
            }
            self.spill.push(rank);
        }
    }

    fn extend(&mut self, ranks: &[u32]) {
        for &r in ranks {
            self.push(r);
        }
    }

    fn sorted(&mut self) -> &[u32] {
        let all = if self.spill.is_empty() { &mut self.inline[..self.len] } else { &mut self.spill[..] };
        all.sort_unstable();
        all
    }

    fn clear(&mut self) {
        self.len = 0;
        self.spill.clear();
    }
}

fn has_len(lens: &[u64; 4], len: usize) -> bool {
    lens.get(len / 64).is_some_and(|word| word & (1 << (len % 64)) != 0)
}

/// Where one entry is filed.
#[derive(Clone, Copy, PartialEq, Eq, Hash)]
enum HostKey<'a> {
    Exact(&'a str),
    /// The suffix after `*.`.
    Wildcard(&'a str),
    Any,
}

/// Sort key of an entry: the precedence of the module documentation.
type RankKey = (Reverse<i32>, u8, Reverse<usize>, (u8, Reverse<usize>), Reverse<usize>, u32, u32, u32);

fn rank_key(
    route_index: u32,
    route: &Route,
    path_index: u32,
    pattern: &PathPattern,
    host_index: u32,
    host: HostKey<'_>,
) -> RankKey {
    let kind = match pattern {
        PathPattern::Exact(_) => 0,
        PathPattern::Template(_) => 1,
        PathPattern::Prefix(_) => 2,
        PathPattern::Regex(_) => 3,
    };
    let host_order = match host {
        HostKey::Exact(_) => (0, Reverse(0)),
        HostKey::Wildcard(suffix) => (1, Reverse(suffix.len())),
        HostKey::Any => (2, Reverse(0)),
    };
    let predicates = route.headers.len() + route.query.len() + usize::from(!route.methods.is_empty());
    (
        Reverse(route.priority),
        kind,
        Reverse(pattern.pattern().len()),
        host_order,
        Reverse(predicates),
        // Routes are compiled in id order.
        route_index,
        // `NO_PATH` only occurs alone, so this is the order of `paths`.
        path_index,
        host_index,
    )
}

impl Router {
    /// Compiles every route. Routes are validated before they are stored; a
    /// route that fails to compile anyway (a regex) is skipped with a warning.
    pub fn build(routes: &Table<Route>) -> Router {
        let match_all = PathPattern::Prefix("/".to_owned());
        let mut compiled = Vec::with_capacity(routes.len());
        // The compiled regex of each regex path, for buckets whose set does not compile.
        let mut path_regexes: Vec<Vec<Option<Regex>>> = Vec::with_capacity(routes.len());
        for (id, stored) in routes.iter() {
            let route = &stored.spec;
            let regexes = route
                .paths
                .iter()
                .map(|p| match p {
                    PathPattern::Regex(r) => compile_regex(r).map(Some),
                    _ => Ok(None),
                })
                .collect::<Result<Vec<_>, String>>();
            match regexes.and_then(|regexes| Ok((CompiledRoute::compile(route)?, regexes))) {
                Ok((c, regexes)) => {
                    compiled.push(c);
                    path_regexes.push(regexes);
                }
                Err(error) => tracing::warn!(route = %id, %error, "route does not compile; skipped"),
            }
        }

        // Every (route, host, path) with its key; the rank is the position after sorting.
        let mut keyed: Vec<(RankKey, HostKey<'_>, Entry)> = Vec::new();
        for (ri, c) in compiled.iter().enumerate() {
            let route = &*c.route;
            let predicates = !c.headers.is_empty() || !c.query.is_empty();
            let hosts: Vec<HostKey<'_>> = if route.hosts.is_empty() {
                vec![HostKey::Any]
            } else {
                route.hosts.iter().map(|h| h.strip_prefix("*.").map_or(HostKey::Exact(h), HostKey::Wildcard)).collect()
            };
            let paths: Vec<(u32, &PathPattern)> = if route.paths.is_empty() {
                vec![(NO_PATH, &match_all)]
            } else {
                route.paths.iter().enumerate().map(|(i, p)| (i as u32, p)).collect()
            };
            for &(pi, pattern) in &paths {
                for (hi, &host) in hosts.iter().enumerate() {
                    let key = rank_key(ri as u32, route, pi, pattern, hi as u32, host);
                    keyed.push((key, host, Entry { route: ri as u32, path: pi, methods: c.methods, predicates }));
                }
            }
        }
        keyed.sort_unstable_by_key(|a| a.0);

        let mut trie = TrieBuilder::default();
        let new_bucket = |trie: &mut TrieBuilder| Bucket { root: trie.new_node(""), regex: RegexIndex::Empty };
        let mut exact_hosts: KeyMap<Bucket> = KeyMap::default();
        let mut wildcard_hosts: KeyMap<Bucket> = KeyMap::default();
        let mut any_host = new_bucket(&mut trie);
        let mut regexes: HashMap<HostKey<'_>, Vec<(&str, Regex, u32)>> = HashMap::new();
        let mut entries = Vec::with_capacity(keyed.len());
        for (rank, (_, host, entry)) in keyed.into_iter().enumerate() {
            let rank = rank as u32;
            let pattern = compiled[entry.route as usize].route.paths.get(entry.path as usize).unwrap_or(&match_all);
            let bucket = match host {
                HostKey::Exact(h) => exact_hosts.entry(h.into()).or_insert_with(|| new_bucket(&mut trie)),
                HostKey::Wildcard(suffix) => {
                    wildcard_hosts.entry(suffix.into()).or_insert_with(|| new_bucket(&mut trie))
                }
                HostKey::Any => &mut any_host,
            };
            match pattern {
                PathPattern::Regex(src) => {
                    let re = path_regexes[entry.route as usize][entry.path as usize].clone().expect("compiled above");
                    regexes.entry(host).or_default().push((src, re, rank));
                }
                _ => trie.insert(bucket.root, pattern, rank),
            }
            entries.push(entry);
        }
        let mut best_regex_rank = u32::MAX;
        for (host, list) in regexes {
            best_regex_rank = best_regex_rank.min(list[0].2);
            let bucket = match host {
                HostKey::Exact(h) => exact_hosts.get_mut(h),
                HostKey::Wildcard(suffix) => wildcard_hosts.get_mut(suffix),
                HostKey::Any => Some(&mut any_host),
            };
            bucket.expect("filed above").regex = RegexIndex::build(list);
        }
        let mut wildcard_suffix_lens = [0u64; 4];
        for suffix in wildcard_hosts.keys() {
            // Host patterns are at most 253 bytes (checked by the model).
            if let Some(word) = wildcard_suffix_lens.get_mut(suffix.len() / 64) {
                *word |= 1 << (suffix.len() % 64);
            }
        }
        Router {
            routes: compiled,
            entries,
            paths: trie.freeze(),
            exact_hosts,
            wildcard_hosts,
            wildcard_suffix_lens,
            any_host,
            best_regex_rank,
            match_all,
        }
    }

    /// Number of routes compiled (skipped ones not counted).
    pub fn len(&self) -> usize {
        self.routes.len()
    }

    pub fn is_empty(&self) -> bool {
        self.routes.is_empty()
    }

    /// The route that takes `req`, or why none does. See the module
    /// documentation for the precedence.
    pub fn find<'r>(&'r self, req: &RequestView<'_>) -> Match<'r> {
        let method = request_method_bit(req.method);
        let mut candidates = Candidates::new();
        self.for_each_bucket(req.host, |b| self.paths.collect(b.root, req.path, &mut candidates));
        let mut allowed = 0u16;
        let mut winner = self.first_admitted(candidates.sorted(), req, method, &mut allowed);
        let below = winner.unwrap_or(u32::MAX);
        if self.best_regex_rank < below {
            candidates.clear();
            self.for_each_bucket(req.host, |b| b.regex.collect(req.path, below, &mut candidates));
            if let Some(rank) = self.first_admitted(candidates.sorted(), req, method, &mut allowed) {
                winner = Some(rank);
            }
        }
        match winner {
            Some(rank) => Match::Found(self.route_match(rank, req.path)),
            None if allowed != 0 => Match::MethodNotAllowed { allowed: methods_of(allowed) },
            None => Match::NotFound,
        }
    }

    /// The buckets a request host reaches: its exact host, each wildcard
    /// suffix (one or more labels stripped), and any host.
    fn for_each_bucket<'r>(&'r self, host: Option<&str>, mut f: impl FnMut(&'r Bucket)) {
        if let Some(host) = host {
            if let Some(b) = self.exact_hosts.get(host) {
                f(b);
            }
            if !self.wildcard_hosts.is_empty() {
                // A dot at 0 would leave an empty label before the suffix.
                let dots = host.bytes().enumerate().filter(|&(i, b)| b == b'.' && i > 0);
                for (dot, _) in dots {
                    let suffix = &host[dot + 1..];
                    if !has_len(&self.wildcard_suffix_lens, suffix.len()) {
                        continue;
                    }
                    if let Some(b) = self.wildcard_hosts.get(suffix) {
                        f(b);
                    }
                }
            }
        }
        f(&self.any_host);
    }

    /// The first of `ranks` (ascending) whose route admits the request and
    /// allows its method; the methods of admitting routes that do not are
    /// added to `allowed`.
    fn first_admitted(&self, ranks: &[u32], req: &RequestView<'_>, method: u16, allowed: &mut u16) -> Option<u32> {
        for &rank in ranks {
            let entry = &self.entries[rank as usize];
            if !entry.predicates || self.routes[entry.route as usize].admits(req) {
                if entry.methods & method != 0 {
                    return Some(rank);
                }
                *allowed |= entry.methods;
            }
        }
        None
    }

    fn route_match(&self, rank: u32, path: &str) -> RouteMatch<'_> {
        let entry = &self.entries[rank as usize];
        let route = &self.routes[entry.route as usize].route;
        let pattern = route.paths.get(entry.path as usize).unwrap_or(&self.match_all);
        let params = match pattern {
            PathPattern::Template(t) => t
                .strip_prefix('/')
                .unwrap_or(t)
                .split('/')
                .zip(path.strip_prefix('/').unwrap_or(path).split('/'))
                .filter_map(|(t, seg)| Some((template_param(t)?, seg.to_owned())))
                .collect(),
            _ => Vec::new(),
        };
        RouteMatch { route, pattern, params }
    }
}

#[cfg(test)]
mod tests {
    use http::{HeaderMap, HeaderValue};
    use raftgate_model::Stored;

    use super::*;

    fn route(json: &str) -> Route {
        let r: Route = serde_json::from_str(json).unwrap();
        r.validate().unwrap();
        r
    }

    fn table(routes: impl IntoIterator<Item = Route>) -> Table<Route> {
        Arc::new(routes.into_iter().map(|r| (r.id.clone(), Stored { spec: r, revision: 1, updated_ms: 0 })).collect())
    }

    fn router(jsons: &[&str]) -> Router {
        Router::build(&table(jsons.iter().map(|j| route(j))))
    }

    /// An owned request for tests.
    struct Req {
        host: Option<String>,
        path: String,
        query: Option<String>,
        method: http::Method,
        headers: HeaderMap,
    }

    impl Req {
        fn new(host: Option<&str>, path: &str) -> Req {
            Req {
                host: host.map(str::to_owned),
                path: path.to_owned(),
                query: None,
                method: http::Method::GET,
                headers: HeaderMap::new(),
            }
        }
        fn get(path: &str) -> Req {
            Req::new(None, path)
        }
        fn method(mut self, m: &str) -> Req {
            self.method = http::Method::from_bytes(m.as_bytes()).unwrap();
            self
        }
        fn header(mut self, name: &'static str, value: &str) -> Req {
            self.headers.append(name, HeaderValue::from_str(value).unwrap());
            self
        }
        fn query(mut self, q: &str) -> Req {
            self.query = Some(q.to_owned());
            self
        }
        fn view(&self) -> RequestView<'_> {
            RequestView {
                host: self.host.as_deref(),
                path: &self.path,
                query: self.query.as_deref(),
                method: &self.method,
                headers: &self.headers,
            }
        }
    }

    /// The id of the route that takes `req`, or "404" / "405".
    fn winner(r: &Router, req: &Req) -> String {
        match r.find(&req.view()) {
            Match::Found(m) => m.route.id.to_string(),
            Match::MethodNotAllowed { .. } => "405".into(),
            Match::NotFound => "404".into(),
        }
    }

    #[test]
    fn higher_priority_wins_over_a_more_specific_path() {
        let r = router(&[
            r#"{"id":"exact","upstream":"u","paths":[{"exact":"/a/b"}]}"#,
            r#"{"id":"urgent","upstream":"u","priority":1,"paths":[{"regex":"/.*"}]}"#,
        ]);
        assert_eq!(winner(&r, &Req::get("/a/b")), "urgent");
    }

    #[test]
    fn exact_beats_template_beats_prefix_beats_regex() {
        let all = [
            r#"{"id":"d-exact","upstream":"u","paths":[{"exact":"/a/b"}]}"#,
            r#"{"id":"c-template","upstream":"u","paths":[{"template":"/a/{x}"}]}"#,
            r#"{"id":"b-prefix","upstream":"u","paths":[{"prefix":"/a/b"}]}"#,
            r#"{"id":"a-regex","upstream":"u","paths":[{"regex":"/a/b"}]}"#,
        ];
        for n in 0..all.len() {
            let r = router(&all[n..]);
            let expected = ["d-exact", "c-template", "b-prefix", "a-regex"][n];
            assert_eq!(winner(&r, &Req::get("/a/b")), expected);
        }
    }

    #[test]
    fn longer_path_pattern_wins_within_a_kind() {
        let r = router(&[
            r#"{"id":"a","upstream":"u","paths":[{"prefix":"/api"}]}"#,
            r#"{"id":"b","upstream":"u","paths":[{"prefix":"/api/v1"}]}"#,
            r#"{"id":"c","upstream":"u","paths":[{"template":"/{x}/v1/{y}"}]}"#,
            r#"{"id":"d","upstream":"u","paths":[{"template":"/api/{v}/{y}"}]}"#,
        ]);
        assert_eq!(winner(&r, &Req::get("/api/v1/users/7")), "b");
        assert_eq!(winner(&r, &Req::get("/api/v2/x")), "d", "templates beat prefixes; the longer template wins");
        assert_eq!(winner(&r, &Req::get("/api/v2/x/y")), "a");
    }

    #[test]
    fn exact_host_beats_wildcard_beats_any_host() {
        let r = router(&[
            r#"{"id":"any","upstream":"u"}"#,
            r#"{"id":"exact","upstream":"u","hosts":["api.example.com"]}"#,
            r#"{"id":"wild","upstream":"u","hosts":["*.example.com"]}"#,
        ]);
        assert_eq!(winner(&r, &Req::new(Some("api.example.com"), "/")), "exact");
        assert_eq!(winner(&r, &Req::new(Some("www.example.com"), "/")), "wild");
        assert_eq!(winner(&r, &Req::new(Some("example.org"), "/")), "any");
    }

    #[test]
    fn longer_wildcard_suffix_beats_a_shorter_one() {
        let r = router(&[
            r#"{"id":"a","upstream":"u","hosts":["*.com"]}"#,
            r#"{"id":"b","upstream":"u","hosts":["*.example.com"]}"#,
            r#"{"id":"c","upstream":"u","hosts":["*.eu.example.com"]}"#,
        ]);
        assert_eq!(winner(&r, &Req::new(Some("x.eu.example.com"), "/")), "c");
        assert_eq!(winner(&r, &Req::new(Some("x.us.example.com"), "/")), "b");
        assert_eq!(winner(&r, &Req::new(Some("example.com"), "/")), "a");
    }

    #[test]
    fn more_predicates_win_when_everything_else_ties() {
        let r = router(&[
            r#"{"id":"a","upstream":"u","paths":[{"prefix":"/x"}]}"#,
            r#"{"id":"b","upstream":"u","paths":[{"prefix":"/x"}],"headers":[{"name":"x-a"}]}"#,
            r#"{"id":"c","upstream":"u","paths":[{"prefix":"/x"}],"headers":[{"name":"x-a"}],"methods":["GET"]}"#,
            r#"{"id":"d","upstream":"u","paths":[{"prefix":"/x"}],"headers":[{"name":"x-a"}],"query":[{"name":"q"}],"methods":["GET"]}"#,
        ]);
        assert_eq!(winner(&r, &Req::get("/x").header("x-a", "1").query("q")), "d");
        assert_eq!(winner(&r, &Req::get("/x").header("x-a", "1")), "c");
        assert_eq!(winner(&r, &Req::get("/x").header("x-a", "1").method("POST")), "b");
        assert_eq!(winner(&r, &Req::get("/x")), "a");
    }

    #[test]
    fn route_id_breaks_the_remaining_ties() {
        let r = router(&[
            r#"{"id":"b","upstream":"u","paths":[{"prefix":"/x"}],"headers":[{"name":"x-b"}]}"#,
            r#"{"id":"a","upstream":"u","paths":[{"prefix":"/x"}],"headers":[{"name":"x-a"}]}"#,
        ]);
        assert_eq!(winner(&r, &Req::get("/x").header("x-a", "1").header("x-b", "1")), "a");
        assert_eq!(winner(&r, &Req::get("/x").header("x-b", "1")), "b");
    }

    #[test]
    fn wildcard_host_matches_one_or_more_labels_but_not_the_bare_domain() {
        let r = router(&[r#"{"id":"w","upstream":"u","hosts":["*.example.com"]}"#]);
        assert_eq!(winner(&r, &Req::new(Some("a.example.com"), "/")), "w");
        assert_eq!(winner(&r, &Req::new(Some("a.b.example.com"), "/")), "w");
        assert_eq!(winner(&r, &Req::new(Some("example.com"), "/")), "404");
        assert_eq!(winner(&r, &Req::new(Some("aexample.com"), "/")), "404");
        assert_eq!(winner(&r, &Req::new(Some("a.example.com.evil"), "/")), "404");
    }

    #[test]
    fn a_request_without_host_matches_only_any_host_routes() {
        let r = router(&[
            r#"{"id":"a","upstream":"u","hosts":["a.com"],"priority":5}"#,
            r#"{"id":"b","upstream":"u","hosts":["*.a.com"],"priority":5}"#,
            r#"{"id":"c","upstream":"u","paths":[{"prefix":"/c"}]}"#,
        ]);
        assert_eq!(winner(&r, &Req::get("/c/d")), "c");
        assert_eq!(winner(&r, &Req::get("/")), "404");
    }

    #[test]
    fn prefix_matches_at_segment_boundaries_only() {
        let r = router(&[r#"{"id":"api","upstream":"u","paths":[{"prefix":"/api"}]}"#]);
        for p in ["/api", "/api/", "/api/v1", "/api/v1/x"] {
            assert_eq!(winner(&r, &Req::get(p)), "api", "{p}");
        }
        for p in ["/apix", "/ap", "/", "/x/api"] {
            assert_eq!(winner(&r, &Req::get(p)), "404", "{p}");
        }
    }

    #[test]
    fn root_prefix_and_empty_paths_match_every_path() {
        let r = router(&[r#"{"id":"all","upstream":"u"}"#]);
        let Match::Found(m) = r.find(&Req::get("/any/thing").view()) else { panic!() };
        assert_eq!(m.pattern, &PathPattern::Prefix("/".into()));
        let r = router(&[r#"{"id":"root","upstream":"u","paths":[{"prefix":"/"}]}"#]);
        assert_eq!(winner(&r, &Req::get("/")), "root");
        assert_eq!(winner(&r, &Req::get("/a/b/")), "root");
    }

    #[test]
    fn template_binds_one_non_empty_segment_per_parameter() {
        let r = router(&[
            r#"{"id":"t","upstream":"u","paths":[{"template":"/users/{id}/orders/{order}"}]}"#,
            r#"{"id":"s","upstream":"u","paths":[{"template":"/users/{id}/"}]}"#,
        ]);
        let req = Req::get("/users/42/orders/x-1");
        let Match::Found(m) = r.find(&req.view()) else { panic!() };
        assert_eq!(m.route.id.as_str(), "t");
        assert_eq!(m.params, vec![("id", "42".to_owned()), ("order", "x-1".to_owned())]);
        assert_eq!(winner(&r, &Req::get("/users/42/")), "s", "a trailing slash is a literal empty segment");
        for p in ["/users/42", "/users//orders/1", "/users/42/orders/1/more", "/users/42/orders"] {
            assert_eq!(winner(&r, &Req::get(p)), "404", "{p}");
        }
    }

    #[test]
    fn regex_must_match_the_whole_path() {
        let r = router(&[r#"{"id":"re","upstream":"u","paths":[{"regex":"/v[0-9]+/items"}]}"#]);
        assert_eq!(winner(&r, &Req::get("/v12/items")), "re");
        assert_eq!(winner(&r, &Req::get("/v12/items/1")), "404");
        assert_eq!(winner(&r, &Req::get("/x/v12/items")), "404");
    }

    #[test]
    fn regex_routes_are_checked_when_they_outrank_the_other_candidates() {
        let r = router(&[
            r#"{"id":"p","upstream":"u","paths":[{"prefix":"/a"}]}"#,
            r#"{"id":"re","upstream":"u","priority":1,"paths":[{"regex":"/a/[0-9]+"}],"methods":["POST"]}"#,
        ]);
        assert_eq!(winner(&r, &Req::get("/a/1").method("POST")), "re");
        assert_eq!(winner(&r, &Req::get("/a/1")), "p");
        assert_eq!(winner(&r, &Req::get("/a/x").method("POST")), "p");
    }

    #[test]
    fn header_predicates_check_presence_value_and_invert() {
        let r = router(&[
            r#"{"id":"present","upstream":"u","paths":[{"prefix":"/p"}],"headers":[{"name":"x-a"}]}"#,
            r#"{"id":"exact","upstream":"u","paths":[{"prefix":"/e"}],"headers":[{"name":"x-a","value":{"exact":"yes"}}]}"#,
            r#"{"id":"prefix","upstream":"u","paths":[{"prefix":"/f"}],"headers":[{"name":"x-a","value":{"prefix":"ye"}}]}"#,
            r#"{"id":"regex","upstream":"u","paths":[{"prefix":"/r"}],"headers":[{"name":"x-a","value":{"regex":"[0-9]+"}}]}"#,
            r#"{"id":"absent","upstream":"u","paths":[{"prefix":"/n"}],"headers":[{"name":"x-a","invert":true}]}"#,
            r#"{"id":"not-yes","upstream":"u","paths":[{"prefix":"/i"}],"headers":[{"name":"x-a","value":{"exact":"yes"},"invert":true}]}"#,
        ]);
        assert_eq!(winner(&r, &Req::get("/p").header("X-A", "")), "present", "header names are case-insensitive");
        assert_eq!(winner(&r, &Req::get("/p")), "404");
        assert_eq!(winner(&r, &Req::get("/e").header("x-a", "yes")), "exact");
        assert_eq!(winner(&r, &Req::get("/e").header("x-a", "yess")), "404");
        assert_eq!(winner(&r, &Req::get("/f").header("x-a", "yess")), "prefix");
        assert_eq!(winner(&r, &Req::get("/r").header("x-a", "123")), "regex");
        assert_eq!(winner(&r, &Req::get("/r").header("x-a", "123a")), "404", "the regex matches the whole value");
        assert_eq!(winner(&r, &Req::get("/n")), "absent");
        assert_eq!(winner(&r, &Req::get("/n").header("x-a", "1")), "404");
        assert_eq!(winner(&r, &Req::get("/i").header("x-a", "no")), "not-yes");
        assert_eq!(winner(&r, &Req::get("/i")), "not-yes");
        assert_eq!(winner(&r, &Req::get("/i").header("x-a", "yes")), "404");
    }

    #[test]
    fn a_header_predicate_holds_when_any_of_several_values_matches() {
        let r = router(&[
            r#"{"id":"e","upstream":"u","paths":[{"prefix":"/e"}],"headers":[{"name":"x-a","value":{"exact":"2"}}]}"#,
            r#"{"id":"i","upstream":"u","paths":[{"prefix":"/i"}],"headers":[{"name":"x-a","value":{"exact":"2"},"invert":true}]}"#,
        ]);
        assert_eq!(winner(&r, &Req::get("/e").header("x-a", "1").header("x-a", "2")), "e");
        assert_eq!(winner(&r, &Req::get("/i").header("x-a", "1").header("x-a", "2")), "404");
        assert_eq!(winner(&r, &Req::get("/i").header("x-a", "1").header("x-a", "3")), "i");
    }

    #[test]
    fn query_predicates_decode_names_and_values() {
        let r = router(&[
            r#"{"id":"q","upstream":"u","query":[{"name":"a-b","value":{"exact":"x&y z"}}]}"#,
            r#"{"id":"p","upstream":"u","paths":[{"prefix":"/p"}],"query":[{"name":"debug"}]}"#,
        ]);
        assert_eq!(winner(&r, &Req::get("/").query("a-b=x%26y+z")), "q");
        assert_eq!(winner(&r, &Req::get("/").query("z=1&a%2db=x%26y%20z&c")), "q");
        assert_eq!(winner(&r, &Req::get("/").query("a-b=x&y+z")), "404", "a raw '&' separates pairs");
        assert_eq!(winner(&r, &Req::get("/p").query("debug")), "p", "a name without '=' is present");
        assert_eq!(winner(&r, &Req::get("/p").query("debug=")), "p");
        assert_eq!(winner(&r, &Req::get("/p").query("debugx=1")), "404");
        assert_eq!(winner(&r, &Req::get("/p")), "404");
    }

    #[test]
    fn query_pairs_with_invalid_encoding_do_not_match() {
        let r = router(&[
            r#"{"id":"q","upstream":"u","paths":[{"prefix":"/q"}],"query":[{"name":"a"}]}"#,
            r#"{"id":"n","upstream":"u","paths":[{"prefix":"/n"}],"query":[{"name":"a","invert":true}]}"#,
        ]);
        for q in ["a=%zz", "a=%4", "%61%=1", "a=%ff"] {
            assert_eq!(winner(&r, &Req::get("/q").query(q)), "404", "{q}");
            assert_eq!(winner(&r, &Req::get("/n").query(q)), "n", "{q}");
        }
        assert_eq!(winner(&r, &Req::get("/q").query("a=%zz&%61=1")), "q", "a later valid pair still counts");
    }

    #[test]
    fn query_predicates_with_several_values_and_invert() {
        let r = router(&[
            r#"{"id":"v","upstream":"u","paths":[{"prefix":"/v"}],"query":[{"name":"v","value":{"prefix":"2"}}]}"#,
            r#"{"id":"n","upstream":"u","paths":[{"prefix":"/n"}],"query":[{"name":"v","value":{"regex":"[a-z]+"},"invert":true}]}"#,
        ]);
        assert_eq!(winner(&r, &Req::get("/v").query("v=1&v=20")), "v");
        assert_eq!(winner(&r, &Req::get("/v").query("v=1&v=3")), "404");
        assert_eq!(winner(&r, &Req::get("/n").query("v=1&v=ab")), "404");
        assert_eq!(winner(&r, &Req::get("/n").query("v=1&v=a1")), "n");
        assert_eq!(winner(&r, &Req::get("/n")), "n");
    }

    #[test]
    fn a_disallowed_method_gives_405_with_the_union_of_allowed_methods() {
        let r = router(&[
            r#"{"id":"a","upstream":"u","paths":[{"prefix":"/x"}],"methods":["PUT","GET"]}"#,
            r#"{"id":"b","upstream":"u","paths":[{"exact":"/x/y"}],"methods":["DELETE","GET"]}"#,
            r#"{"id":"c","upstream":"u","paths":[{"exact":"/x/y"}],"methods":["POST"],"headers":[{"name":"x-c"}]}"#,
        ]);
        match r.find(&Req::get("/x/y").method("PATCH").view()) {
            Match::MethodNotAllowed { allowed } => assert_eq!(allowed, vec![Method::Get, Method::Put, Method::Delete]),
            other => panic!("{other:?}"),
        }
        assert_eq!(winner(&r, &Req::get("/z").method("PATCH")), "404", "nothing matched the path");
        assert_eq!(
            winner(&r, &Req::get("/x/y").method("PUT")),
            "a",
            "a lower-ranked route that allows the method wins"
        );
    }

    #[test]
    fn trace_and_connect_are_refused_unless_listed() {
        let r = router(&[
            r#"{"id":"a","upstream":"u","paths":[{"prefix":"/a"}]}"#,
            r#"{"id":"t","upstream":"u","paths":[{"prefix":"/t"}],"methods":["TRACE"]}"#,
        ]);
        match r.find(&Req::get("/a").method("TRACE").view()) {
            Match::MethodNotAllowed { allowed } => assert_eq!(allowed, Method::DEFAULT_ALLOWED.to_vec()),
            other => panic!("{other:?}"),
        }
        assert_eq!(winner(&r, &Req::get("/a").method("CONNECT")), "405");
        assert_eq!(winner(&r, &Req::get("/t").method("TRACE")), "t");
    }

    #[test]
    fn an_unknown_method_is_allowed_by_no_route() {
        let r = router(&[r#"{"id":"a","upstream":"u"}"#]);
        assert_eq!(winner(&r, &Req::get("/").method("PROPFIND")), "405");
    }

    #[test]
    fn a_route_whose_predicates_fail_gives_way_to_the_next() {
        let r = router(&[
            r#"{"id":"canary","upstream":"u","priority":1,"headers":[{"name":"x-env","value":{"exact":"canary"}}]}"#,
            r#"{"id":"main","upstream":"u"}"#,
        ]);
        assert_eq!(winner(&r, &Req::get("/").header("x-env", "canary")), "canary");
        assert_eq!(winner(&r, &Req::get("/").header("x-env", "prod")), "main");
    }

    #[test]
    fn many_candidates_spill_past_the_inline_buffer() {
        let routes: Vec<Route> = (0..100)
            .map(|i| {
                route(&format!(r#"{{"id":"r{i:03}","upstream":"u","priority":{i},"headers":[{{"name":"x-{i}"}}]}}"#))
            })
            .collect();
        let r = Router::build(&table(routes));
        assert_eq!(winner(&r, &Req::get("/").header("x-3", "").header("x-7", "")), "r007");
        assert_eq!(winner(&r, &Req::get("/")), "404");
    }

    #[test]
    fn a_route_that_does_not_compile_is_skipped() {
        let mut bad = route(r#"{"id":"bad","upstream":"u"}"#);
        bad.paths = vec![PathPattern::Regex("(".into())];
        let good = route(r#"{"id":"good","upstream":"u"}"#);
        let r = Router::build(&table([bad, good]));
        assert_eq!(r.len(), 1);
        assert_eq!(winner(&r, &Req::get("/")), "good");
        assert!(Router::build(&table([])).is_empty());
    }

    fn upstream_path(json: &str, path: &str) -> String {
        let r = router(&[json]);
        let req = Req::get(path);
        let Match::Found(m) = r.find(&req.view()) else { panic!("{path} did not match") };
        m.upstream_path(path)
    }

    #[test]
    fn upstream_path_strip_prefix_removes_the_matched_prefix() {
        let j = r#"{"id":"a","upstream":"u","paths":[{"prefix":"/api"}],"strip_prefix":true}"#;
        assert_eq!(upstream_path(j, "/api/v1"), "/v1");
        assert_eq!(upstream_path(j, "/api"), "/");
        assert_eq!(upstream_path(j, "/api/"), "/");
        let root = r#"{"id":"a","upstream":"u","paths":[{"prefix":"/"}],"strip_prefix":true}"#;
        assert_eq!(upstream_path(root, "/x/y"), "/x/y");
    }

    #[test]
    fn upstream_path_rewrite_replaces_the_prefix_or_the_whole_path() {
        let prefix = r#"{"id":"a","upstream":"u","paths":[{"prefix":"/a"}],"rewrite":"/b"}"#;
        assert_eq!(upstream_path(prefix, "/a/x"), "/b/x");
        assert_eq!(upstream_path(prefix, "/a"), "/b");
        let to_root = r#"{"id":"a","upstream":"u","paths":[{"prefix":"/a"}],"rewrite":"/"}"#;
        assert_eq!(upstream_path(to_root, "/a/x"), "/x");
        assert_eq!(upstream_path(to_root, "/a"), "/");
        let from_root = r#"{"id":"a","upstream":"u","rewrite":"/b"}"#;
        assert_eq!(upstream_path(from_root, "/x"), "/b/x");
        let exact = r#"{"id":"a","upstream":"u","paths":[{"exact":"/old"}],"rewrite":"/new/"}"#;
        assert_eq!(upstream_path(exact, "/old"), "/new/");
        let template = r#"{"id":"a","upstream":"u","paths":[{"template":"/u/{id}"}],"rewrite":"/users"}"#;
        assert_eq!(upstream_path(template, "/u/1"), "/users");
        let regex = r#"{"id":"a","upstream":"u","paths":[{"regex":"/r/.*"}],"rewrite":"/s"}"#;
        assert_eq!(upstream_path(regex, "/r/1/2"), "/s");
        let plain = r#"{"id":"a","upstream":"u","paths":[{"prefix":"/a"}]}"#;
        assert_eq!(upstream_path(plain, "/a/x"), "/a/x");
    }

    #[test]
    fn normalize_host_lowercases_and_drops_port_and_trailing_dot() {
        assert_eq!(normalize_host("Example.COM").as_deref(), Some("example.com"));
        assert_eq!(normalize_host("example.com:8080").as_deref(), Some("example.com"));
        assert_eq!(normalize_host("example.com.").as_deref(), Some("example.com"));
        assert_eq!(normalize_host("Example.com.:443").as_deref(), Some("example.com"));
        assert_eq!(normalize_host("example.com:").as_deref(), Some("example.com"));
        assert_eq!(normalize_host("10.0.0.1:80").as_deref(), Some("10.0.0.1"));
    }

    #[test]
    fn normalize_host_keeps_bracketed_ipv6() {
        assert_eq!(normalize_host("[::1]").as_deref(), Some("[::1]"));
        assert_eq!(normalize_host("[2001:DB8::1]:8443").as_deref(), Some("[2001:db8::1]"));
        assert_eq!(normalize_host("[::ffff:10.0.0.1]").as_deref(), Some("[::ffff:10.0.0.1]"));
    }

    #[test]
    fn normalize_host_refuses_garbage() {
        for raw in [
            "",
            ".",
            ":80",
            "a..b",
            ".a",
            "a b",
            "a/b",
            "user@host",
            "a:b:c",
            "a:99999",
            "a:8x",
            "[::1",
            "[::1]x",
            "[::1]:x",
            "[]",
            "[zz]",
            "::1",
            "a%2eb",
            "*.example.com",
            "é.com",
        ] {
            assert_eq!(normalize_host(raw), None, "{raw:?}");
        }
        assert_eq!(normalize_host(&"a".repeat(64)), None, "labels are at most 63 bytes");
    }

    /// Tiny deterministic PRNG for the comparison with the reference.
    struct XorShift(u64);

    impl XorShift {
        fn next(&mut self) -> u64 {
            self.0 ^= self.0 << 13;
            self.0 ^= self.0 >> 7;
            self.0 ^= self.0 << 17;
            self.0
        }
        fn below(&mut self, n: usize) -> usize {
            (self.next() % n as u64) as usize
        }
        fn pick<T: Copy>(&mut self, items: &[T]) -> T {
            items[self.below(items.len())]
        }
        fn chance(&mut self, percent: usize) -> bool {
            self.below(100) < percent
        }
    }

    fn random_predicate(rng: &mut XorShift, names: &[&str]) -> Predicate {
        let value = match rng.below(4) {
            0 => None,
            1 => Some(ValueMatch::Exact(rng.pick(&["1", "2", "12"]).to_string())),
            2 => Some(ValueMatch::Prefix(rng.pick(&["1", "2"]).to_string())),
            _ => Some(ValueMatch::Regex(rng.pick(&["[0-9]", "1.*"]).to_string())),
        };
        Predicate { name: rng.pick(names).to_string(), value, invert: rng.chance(20) }
    }

    fn random_route(rng: &mut XorShift, i: usize) -> Route {
        let mut r = route(&format!(r#"{{"id":"r{i:02}","upstream":"u"}}"#));
        r.priority = rng.below(3) as i32;
        let hosts = ["a.com", "b.a.com", "c.com", "*.a.com", "*.b.a.com", "*.com"];
        while rng.chance(35) && r.hosts.len() < 3 {
            let h = rng.pick(&hosts).to_string();
            if !r.hosts.contains(&h) {
                r.hosts.push(h);
            }
        }
        let paths = [
            PathPattern::Exact("/a".into()),
            PathPattern::Exact("/a/b".into()),
            PathPattern::Exact("/a/".into()),
            PathPattern::Prefix("/".into()),
            PathPattern::Prefix("/a".into()),
            PathPattern::Prefix("/a/b".into()),
            PathPattern::Prefix("/b".into()),
            PathPattern::Template("/a/{x}".into()),
            PathPattern::Template("/{x}/b".into()),
            PathPattern::Template("/{x}/{y}".into()),
            PathPattern::Template("/a/{x}/".into()),
            PathPattern::Regex("/a/[bc]+".into()),
            PathPattern::Regex("/(a|b)(/.*)?".into()),
            PathPattern::Regex("/b.*".into()),
        ];
        while rng.chance(if r.paths.is_empty() { 85 } else { 40 }) && r.paths.len() < 3 {
            let p = paths[rng.below(paths.len())].clone();
            if !r.paths.contains(&p) {
                r.paths.push(p);
            }
        }
        let methods = [Method::Get, Method::Post, Method::Delete, Method::Trace];
        while rng.chance(30) && r.methods.len() < 2 {
            let m = rng.pick(&methods);
            if !r.methods.contains(&m) {
                r.methods.push(m);
            }
        }
        if rng.chance(30) {
            r.headers.push(random_predicate(rng, &["x-a", "x-b"]));
        }
        if rng.chance(25) {
            r.query.push(random_predicate(rng, &["q", "r"]));
        }
        r.validate().unwrap();
        r
    }

    fn random_request(rng: &mut XorShift) -> Req {
        let host = rng.pick(&[
            None,
            Some("a.com"),
            Some("b.a.com"),
            Some("x.b.a.com"),
            Some("c.com"),
            Some("com"),
            Some("z.org"),
        ]);
        let mut path = String::new();
        for _ in 0..rng.below(4) {
            path.push('/');
            path.push_str(rng.pick(&["a", "b", "c", "bc", ""]));
        }
        if path.is_empty() || path.ends_with("//") {
            path = "/".into();
        }
        let path = raftgate_model::path::normalize_path(&path).unwrap().into_owned();
        let mut req = Req::new(host, &path).method(rng.pick(&["GET", "POST", "DELETE", "TRACE", "PROPFIND"]));
        for _ in 0..rng.below(3) {
            req = req.header(rng.pick(&["x-a", "x-b"]), rng.pick(&["1", "2", "12", "x"]));
        }
        if rng.chance(50) {
            let pairs: Vec<&str> =
                (0..rng.below(3)).map(|_| rng.pick(&["q=1", "q=%32", "r", "q=%zz", "r=12", "q=x"])).collect();
            req = req.query(&pairs.join("&"));
        }
        req
    }

    fn reference_path_matches(p: &PathPattern, path: &str) -> bool {
        match p {
            PathPattern::Exact(e) => e == path,
            PathPattern::Prefix(pre) => {
                pre == "/" || path == pre || path.strip_prefix(pre.as_str()).is_some_and(|rest| rest.starts_with('/'))
            }
            PathPattern::Template(t) => {
                let (ts, ps): (Vec<&str>, Vec<&str>) = (t.split('/').collect(), path.split('/').collect());
                ts.len() == ps.len()
                    && ts.iter().zip(&ps).all(|(t, p)| if template_param(t).is_some() { !p.is_empty() } else { t == p })
            }
            PathPattern::Regex(r) => cached_regex(r).is_match(path),
        }
    }

    fn cached_regex(r: &str) -> Regex {
        thread_local!(static CACHE: std::cell::RefCell<HashMap<String, Regex>> = Default::default());
        CACHE.with(|c| c.borrow_mut().entry(r.to_owned()).or_insert_with(|| compile_regex(r).unwrap()).clone())
    }

    fn reference_predicate_holds(p: &Predicate, values: &[String]) -> bool {
        let seen = values.iter().any(|v| match &p.value {
            None => true,
            Some(ValueMatch::Exact(e)) => v == e,
            Some(ValueMatch::Prefix(e)) => v.starts_with(e.as_str()),
            Some(ValueMatch::Regex(r)) => cached_regex(r).is_match(v),
        });
        seen != p.invert
    }

    /// A linear scan over every (route, host, path) with the documented precedence.
    fn reference_find(routes: &Table<Route>, req: &Req) -> (String, Option<PathPattern>, Vec<Method>) {
        let mut best: Option<(RankKey, &Route, &PathPattern)> = None;
        let mut allowed: Vec<Method> = Vec::new();
        let root = PathPattern::Prefix("/".into());
        for (ri, stored) in routes.values().enumerate() {
            let r = &stored.spec;
            let hosts: Vec<Option<&str>> =
                if r.hosts.is_empty() { vec![None] } else { r.hosts.iter().map(|h| Some(h.as_str())).collect() };
            let paths: Vec<(u32, &PathPattern)> = if r.paths.is_empty() {
                vec![(NO_PATH, &root)]
            } else {
                r.paths.iter().enumerate().map(|(i, p)| (i as u32, p)).collect()
            };
            let headers_ok = r.headers.iter().all(|p| {
                let values: Vec<String> =
                    req.headers.get_all(p.name.as_str()).iter().map(|v| v.to_str().unwrap().to_owned()).collect();
                reference_predicate_holds(p, &values)
            });
            let query_ok = r.query.iter().all(|p| {
                let values: Vec<String> = query_values(req.query.as_deref(), &p.name).map(Cow::into_owned).collect();
                reference_predicate_holds(p, &values)
            });
            let method_ok = r.allowed_methods().iter().any(|m| m.as_str() == req.method.as_str());
            for &(pi, p) in &paths {
                for (hi, h) in hosts.iter().enumerate() {
                    let host_ok = match (h, req.host.as_deref()) {
                        (None, _) => true,
                        (Some(_), None) => false,
                        (Some(h), Some(rh)) => match h.strip_prefix("*.") {
                            Some(suffix) => rh.len() > suffix.len() + 1 && rh.ends_with(&format!(".{suffix}")),
                            None => h == &rh,
                        },
                    };
                    if !(host_ok && reference_path_matches(p, &req.path) && headers_ok && query_ok) {
                        continue;
                    }
                    if !method_ok {
                        allowed.extend(r.allowed_methods());
                        continue;
                    }
                    let key = (
                        Reverse(r.priority),
                        match p {
                            PathPattern::Exact(_) => 0,
                            PathPattern::Template(_) => 1,
                            PathPattern::Prefix(_) => 2,
                            PathPattern::Regex(_) => 3,
                        },
                        Reverse(p.pattern().len()),
                        match h {
                            None => (2, Reverse(0)),
                            Some(h) if h.starts_with("*.") => (1, Reverse(h.len() - 2)),
                            Some(_) => (0, Reverse(0)),
                        },
                        Reverse(r.headers.len() + r.query.len() + usize::from(!r.methods.is_empty())),
                        ri as u32,
                        pi,
                        hi as u32,
                    );
                    if best.as_ref().is_none_or(|b| key < b.0) {
                        best = Some((key, r, p));
                    }
                }
            }
        }
        match best {
            Some((_, r, p)) => (r.id.to_string(), Some(p.clone()), Vec::new()),
            None => {
                allowed.sort();
                allowed.dedup();
                let status = if allowed.is_empty() { "404" } else { "405" };
                (status.to_owned(), None, allowed)
            }
        }
    }

    #[test]
    fn find_agrees_with_a_linear_scan_on_random_routes_and_requests() {
        let mut rng = XorShift(0x9e37_79b9_7f4a_7c15);
        let mut found = 0;
        for _ in 0..200 {
            let n = 1 + rng.below(12);
            let routes = table((0..n).map(|i| random_route(&mut rng, i)));
            let router = Router::build(&routes);
            for _ in 0..100 {
                let req = random_request(&mut rng);
                let expected = reference_find(&routes, &req);
                let got = match router.find(&req.view()) {
                    Match::Found(m) => {
                        found += 1;
                        (m.route.id.to_string(), Some(m.pattern.clone()), Vec::new())
                    }
                    Match::MethodNotAllowed { allowed } => ("405".to_owned(), None, allowed),
                    Match::NotFound => ("404".to_owned(), None, Vec::new()),
                };
                assert_eq!(
                    got,
                    expected,
                    "request {:?} {:?} {:?} {:?} {:?} on {:#?}",
                    req.host,
                    req.method,
                    req.path,
                    req.query,
                    req.headers,
                    routes.values().map(|s| &s.spec).collect::<Vec<_>>()
                );
            }
        }
        assert!(found > 3_000, "the random cases should mostly match something, matched {found}");
    }

    #[test]
    fn router_is_send_and_sync() {
        fn check<T: Send + Sync>() {}
        check::<Router>();
    }
}
