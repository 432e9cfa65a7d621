//! Phase 2c of a request: rate limits and cluster-wide quotas.
//!
//! Runs after authentication (limits key on consumers and plans), before
//! anything is sent upstream. The policies of a request are its route's,
//! its consumer's and its consumer's plan's. Each is checked on this node
//! alone, without a network hop:
//!
//! - a **rate limit** is a GCRA token bucket per key in a bounded map
//!   ([`RateLimiter`]);
//! - a **quota** is admitted from this node's lease of the replicated
//!   ledger ([`QuotaLeases`]): one compare-and-swap on the key's local
//!   counter. A background task (see the node crate) asks for more before
//!   the lease runs dry and gives back what an idle key holds, all keys in
//!   one command per batch interval.
//!
//! Admitted and limited responses carry `RateLimit-Limit`,
//! `RateLimit-Remaining` and `RateLimit-Reset` (IETF draft semantics, of
//! the policy with the fewest units left); limited ones answer 429 with
//! `Retry-After`.

use std::collections::HashMap;
use std::net::IpAddr;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex, RwLock};

use http::HeaderMap;
use raftgate_model::traffic::{
    KeyPart, LeaseAsk, Limits, QuotaEntry, QuotaKey, QuotaScope, RateLimit, MAX_ASKS_PER_BATCH, QUOTA_EXPIRY_MARGIN_MS,
};
use raftgate_model::{Consumer, Route, State, Table};

use crate::auth::Principal;
use crate::error::GatewayError;
use crate::gateway::Gateway;
use crate::pipeline::ConnInfo;

/// Most rate-limit keys a node tracks; beyond it idle keys are evicted.
pub const MAX_RATE_KEYS: usize = 100_000;
/// Most quota keys a node holds leases for at once.
pub const MAX_QUOTA_KEYS: usize = 100_000;
const SHARDS: usize = 16;
/// Longest key value built from a request (longer header values are cut).
const MAX_KEY_VALUE_BYTES: usize = 256;

/// What the limits stage tells the client about the tightest policy.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct RateInfo {
    pub limit: u64,
    pub remaining: u64,
    /// Seconds until the policy's window resets (or the bucket refills).
    pub reset_s: u64,
}

/// Sets `RateLimit-Limit`, `RateLimit-Remaining` and `RateLimit-Reset`.
pub fn set_rate_headers(headers: &mut HeaderMap, info: &RateInfo) {
    headers.insert("ratelimit-limit", http::HeaderValue::from(info.limit));
    headers.insert("ratelimit-remaining", http::HeaderValue::from(info.remaining));
    headers.insert("ratelimit-reset", http::HeaderValue::from(info.reset_s));
}

/// The value of a policy's key for one request.
fn key_value(
    key: &[KeyPart],
    route: &Route,
    principal: Option<&Principal>,
    client_ip: IpAddr,
    headers: &HeaderMap,
    graphql: Option<&raftgate_graphql::Operation>,
) -> String {
    let mut out = String::new();
    for (i, part) in key.iter().enumerate() {
        if i > 0 {
            out.push('|');
        }
        match part {
            KeyPart::Consumer => out.push_str(principal.map_or("-", |p| p.consumer.as_str())),
            KeyPart::ClientIp => out.push_str(&client_ip.to_canonical().to_string()),
            KeyPart::Route => out.push_str(route.id.as_str()),
            KeyPart::Header(h) => {
                let v = headers.get(h.as_str()).map(|v| v.as_bytes()).unwrap_or(b"");
                out.push_str(&String::from_utf8_lossy(&v[..v.len().min(MAX_KEY_VALUE_BYTES)]));
            }
            KeyPart::GraphqlOperation => out.push_str(graphql.and_then(|o| o.name.as_deref()).unwrap_or("-")),
            KeyPart::GraphqlType => out.push_str(graphql.map_or("-", |o| o.kind.as_str())),
        }
    }
    if out.len() > MAX_KEY_VALUE_BYTES {
        let cut = (0..=MAX_KEY_VALUE_BYTES).rev().find(|&i| out.is_char_boundary(i)).unwrap_or(0);
        out.truncate(cut);
    }
    out
}

/// Local token buckets (GCRA), keyed by policy and key value.
pub struct RateLimiter {
    /// Per shard: key → theoretical arrival time (ns after `epoch`).
    shards: Vec<Mutex<HashMap<String, u64>>>,
    per_shard: usize,
    epoch: std::time::Instant,
}

impl Default for RateLimiter {
    fn default() -> Self {
        Self::new(MAX_RATE_KEYS)
    }
}

impl RateLimiter {
    pub fn new(max_keys: usize) -> Self {
        Self {
            shards: (0..SHARDS).map(|_| Mutex::new(HashMap::new())).collect(),
            per_shard: max_keys.div_ceil(SHARDS).max(1),
            epoch: std::time::Instant::now(),
        }
    }

    fn now_ns(&self) -> u64 {
        self.epoch.elapsed().as_nanos() as u64
    }

    /// Takes one request from `key`'s bucket of `rate_per_s` with `burst`.
    /// `Ok` with what is left, `Err` with the same when limited.
    pub fn check(&self, key: &str, rate_per_s: u64, burst: u64) -> Result<RateInfo, RateInfo> {
        self.check_at(key, rate_per_s, burst, self.now_ns())
    }

    fn check_at(&self, key: &str, rate_per_s: u64, burst: u64, now: u64) -> Result<RateInfo, RateInfo> {
        let interval = 1_000_000_000 / rate_per_s.max(1);
        let tolerance = interval * burst.max(1);
        // The shard only spreads lock contention; a simple hash is enough.
        let shard_index = key.bytes().fold(0usize, |a, b| a.wrapping_mul(31).wrapping_add(b as usize)) % SHARDS;
        let mut shard = self.shards[shard_index].lock().unwrap_or_else(|p| p.into_inner());
        if !shard.contains_key(key) && shard.len() >= self.per_shard {
            // Buckets that have refilled hold no information: drop them first.
            shard.retain(|_, tat| *tat > now);
            if shard.len() >= self.per_shard {
                if let Some(victim) = shard.keys().next().cloned() {
                    shard.remove(&victim);
                }
            }
        }
        let tat = shard.get(key).copied().unwrap_or(now).max(now);
        let info = |tat: u64| {
            let used = tat.saturating_sub(now);
            let remaining = tolerance.saturating_sub(used) / interval;
            RateInfo { limit: burst, remaining, reset_s: used.div_ceil(1_000_000_000) }
        };
        let next = tat + interval;
        if next - now > tolerance {
            return Err(info(tat));
        }
        shard.insert(key.to_string(), next);
        Ok(info(next))
    }

    /// Keys tracked now.
    pub fn len(&self) -> usize {
        self.shards.iter().map(|s| s.lock().unwrap_or_else(|p| p.into_inner()).len()).sum()
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
}

/// One quota key's lease on this node.
pub struct LeaseState {
    pub key: QuotaKey,
    pub limit: u64,
    pub window_end_ms: u64,
    /// The ledger entry's epoch these counters belong to (0: no entry yet).
    epoch: AtomicU64,
    /// Units the ledger has granted this node's holder (cumulative in the epoch).
    granted: AtomicU64,
    /// Units this node can no longer use in the epoch: admitted or given
    /// back. One counter, so an admission and a give-back never take the
    /// same unit.
    spent: AtomicU64,
    /// Units admitted here in the epoch (for reports).
    admitted: AtomicU64,
    /// Units the cluster holds nowhere yet (limit − held), as of the last apply.
    unallocated: AtomicU64,
    /// Requests seen (admitted or not) since the last batch.
    seen: AtomicU64,
    /// Requests refused for want of a lease since the last batch.
    starved: AtomicBool,
    /// An ask of ours is in flight.
    pending: AtomicBool,
    /// EWMA of requests per second (f64 bits), updated by the batcher.
    rate: AtomicU64,
    /// Batcher ticks since a request was seen.
    idle_ticks: AtomicU64,
}

impl LeaseState {
    fn new(key: QuotaKey, limit: u64, window_end_ms: u64) -> Self {
        Self {
            key,
            limit,
            window_end_ms,
            epoch: AtomicU64::new(0),
            granted: AtomicU64::new(0),
            spent: AtomicU64::new(0),
            admitted: AtomicU64::new(0),
            unallocated: AtomicU64::new(limit),
            seen: AtomicU64::new(0),
            starved: AtomicBool::new(false),
            pending: AtomicBool::new(false),
            rate: AtomicU64::new(0f64.to_bits()),
            idle_ticks: AtomicU64::new(0),
        }
    }

    /// Units this node may still admit.
    pub fn available(&self) -> u64 {
        self.granted.load(Ordering::Acquire).saturating_sub(self.spent.load(Ordering::Acquire))
    }

    /// Admits one request from the lease: one compare-and-swap.
    fn try_admit(&self) -> bool {
        self.seen.fetch_add(1, Ordering::Relaxed);
        self.idle_ticks.store(0, Ordering::Relaxed);
        let mut spent = self.spent.load(Ordering::Acquire);
        loop {
            if spent >= self.granted.load(Ordering::Acquire) {
                self.starved.store(true, Ordering::Relaxed);
                return false;
            }
            match self.spent.compare_exchange_weak(spent, spent + 1, Ordering::AcqRel, Ordering::Acquire) {
                Ok(_) => {
                    self.admitted.fetch_add(1, Ordering::Relaxed);
                    return true;
                }
                Err(now) => spent = now,
            }
        }
    }

    /// Takes every unit still available for a give-back (none can be admitted after).
    fn take_all(&self) -> u64 {
        let mut spent = self.spent.load(Ordering::Acquire);
        loop {
            let granted = self.granted.load(Ordering::Acquire);
            if spent >= granted {
                return 0;
            }
            match self.spent.compare_exchange_weak(spent, granted, Ordering::AcqRel, Ordering::Acquire) {
                Ok(_) => return granted - spent,
                Err(now) => spent = now,
            }
        }
    }

    /// Stops all spending until the next grant (the entry was reset or is gone).
    fn revoke(&self) {
        self.granted.store(0, Ordering::Release);
        self.epoch.store(0, Ordering::Release);
    }

    /// Takes the ledger entry's view of this holder's lease (`None`: there
    /// is no entry). `ours`: the command was this holder's, so its ask is answered.
    fn sync(&self, holder: &str, entry: Option<&QuotaEntry>, ours: bool) {
        let Some(e) = entry else {
            self.revoke();
            if ours {
                self.pending.store(false, Ordering::Release);
            }
            return;
        };
        if self.epoch.load(Ordering::Acquire) != e.epoch {
            // A new epoch (first grant, or after a reset): nothing is granted
            // until the counters are those of the new epoch.
            self.granted.store(0, Ordering::Release);
            self.spent.store(e.returned.get(holder).copied().unwrap_or(0), Ordering::Release);
            self.admitted.store(0, Ordering::Release);
            self.epoch.store(e.epoch, Ordering::Release);
        }
        self.granted.store(e.granted.get(holder).copied().unwrap_or(0), Ordering::Release);
        self.unallocated.store(e.limit.saturating_sub(e.held()), Ordering::Release);
        if ours {
            self.pending.store(false, Ordering::Release);
        }
    }

    fn remaining_estimate(&self) -> u64 {
        self.unallocated.load(Ordering::Acquire) + self.available()
    }
}

/// What [`QuotaLeases::admit`] decided.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Admission {
    /// Admitted; about this many units are left in the cluster.
    Admitted { remaining: u64 },
    /// Refused: this node's lease is spent (`budget_spent`: and the whole
    /// window's budget with it).
    Refused { budget_spent: bool },
    /// This node tracks the most keys it may.
    Full,
}

/// Sizing of lease asks (see "Cluster-wide quotas" in the design).
#[derive(Clone, Copy, Debug)]
pub struct LeaseTuning {
    /// T_b: how often a node sends its asks and returns.
    pub batch_interval_ms: u64,
    /// T_c: the expected time for an ask to commit and apply.
    pub commit_ms: u64,
    /// k: how many intervals' worth of requests an ask covers.
    pub headroom: f64,
    pub min_ask: u64,
    pub max_ask: u64,
    /// Batches without a request after which a key's lease is given back.
    pub idle_ticks: u64,
}

impl Default for LeaseTuning {
    fn default() -> Self {
        Self { batch_interval_ms: 50, commit_ms: 20, headroom: 2.0, min_ask: 1, max_ask: 100_000, idle_ticks: 20 }
    }
}

/// This node's quota leases, by ledger key. A lease stays until its window
/// has ended (plus the ledger's margin): dropping one earlier could let a
/// new one take the ledger's grant as unspent.
pub struct QuotaLeases {
    node: u64,
    incarnation: u64,
    holder: String,
    tuning: LeaseTuning,
    /// Read on every request (shared lock); written when a key is new and by the batcher.
    keys: RwLock<HashMap<String, Arc<LeaseState>>>,
}

impl QuotaLeases {
    /// `incarnation`: drawn at process start, so that a restarted node never
    /// takes its earlier grants for unspent ones.
    pub fn new(node: u64, incarnation: u64, tuning: LeaseTuning) -> Self {
        Self {
            node,
            incarnation,
            holder: raftgate_model::traffic::holder(node, incarnation),
            tuning,
            keys: RwLock::new(HashMap::new()),
        }
    }

    pub fn node(&self) -> u64 {
        self.node
    }

    pub fn incarnation(&self) -> u64 {
        self.incarnation
    }

    /// The lease of `key`, created (empty) on first use.
    fn lease(&self, key: QuotaKey, limit: u64, window_end_ms: u64) -> Option<Arc<LeaseState>> {
        let ledger_key = key.ledger_key();
        if let Some(l) = self.keys.read().unwrap_or_else(|p| p.into_inner()).get(&ledger_key) {
            return Some(l.clone());
        }
        let mut keys = self.keys.write().unwrap_or_else(|p| p.into_inner());
        if let Some(l) = keys.get(&ledger_key) {
            return Some(l.clone());
        }
        if keys.len() >= MAX_QUOTA_KEYS {
            return None;
        }
        let l = Arc::new(LeaseState::new(key, limit, window_end_ms));
        keys.insert(ledger_key, l.clone());
        Some(l)
    }

    /// Updates leases from the applied ledger after `accepted` commands.
    pub fn applied(&self, state: &State, accepted: &[&raftgate_model::Command]) {
        let keys = self.keys.read().unwrap_or_else(|p| p.into_inner());
        for cmd in accepted {
            match cmd {
                raftgate_model::Command::QuotaLeases { node, incarnation, asks } => {
                    // Anyone's grants change what is unallocated; ours also what we hold.
                    let ours = *node == self.node && *incarnation == self.incarnation;
                    for a in asks {
                        if let Some(l) = keys.get(&a.key.ledger_key()) {
                            l.sync(&self.holder, state.quota_entry(&a.key), ours);
                        }
                    }
                }
                raftgate_model::Command::ResetQuota { key } => {
                    if let Some(l) = keys.get(&key.ledger_key()) {
                        l.revoke();
                        l.pending.store(false, Ordering::Release);
                    }
                }
                _ => {}
            }
        }
    }

    /// Drops the leases of a forgotten consumer: their ledger entries are
    /// gone, and this node must not ask for them again.
    pub fn forget(&self, consumer: &raftgate_model::ObjectId) {
        let subject = raftgate_model::privacy::Subject {
            consumer: consumer.clone(),
            keys: Default::default(),
            certificates: Default::default(),
        };
        let mut keys = self.keys.write().unwrap_or_else(|p| p.into_inner());
        keys.retain(|k, _| !subject.names_ledger_key(k));
    }

    /// Re-reads every lease from the state (snapshot installed, or start).
    pub fn replaced(&self, state: &State) {
        let keys = self.keys.read().unwrap_or_else(|p| p.into_inner());
        for l in keys.values() {
            l.sync(&self.holder, state.quota_entry(&l.key), true);
        }
    }

    /// The asks and returns of one batch interval (at most
    /// [`MAX_ASKS_PER_BATCH`], starved keys first); `now_ms` is this node's
    /// wall clock. Drops leases once their window and margin have passed.
    pub fn batch(&self, now_ms: u64) -> Vec<LeaseAsk> {
        let t = self.tuning;
        let horizon_s = (t.batch_interval_ms + t.commit_ms) as f64 / 1_000.0;
        let mut keys = self.keys.write().unwrap_or_else(|p| p.into_inner());
        keys.retain(|_, l| l.window_end_ms.saturating_add(QUOTA_EXPIRY_MARGIN_MS) > now_ms);
        let mut starved_asks = Vec::new();
        let mut asks = Vec::new();
        for l in keys.values().filter(|l| l.window_end_ms > now_ms) {
            let seen = l.seen.swap(0, Ordering::Relaxed) as f64;
            let instant = seen / (t.batch_interval_ms as f64 / 1_000.0);
            let old = f64::from_bits(l.rate.load(Ordering::Relaxed));
            let rate = if old == 0.0 { instant } else { 0.7 * old + 0.3 * instant };
            l.rate.store(rate.to_bits(), Ordering::Relaxed);
            let idle = if seen == 0.0 { l.idle_ticks.fetch_add(1, Ordering::Relaxed) + 1 } else { 0 };
            let epoch = l.epoch.load(Ordering::Acquire);
            let starved = l.starved.swap(false, Ordering::Relaxed);
            if idle >= t.idle_ticks {
                let back = l.take_all();
                if back > 0 {
                    asks.push(LeaseAsk { key: l.key.clone(), epoch, want: 0, give_back: back });
                }
                continue;
            }
            let need = rate * horizon_s;
            if (starved || (l.available() as f64) < need) && !l.pending.load(Ordering::Acquire) {
                let want = ((t.headroom * need).ceil() as u64).clamp(t.min_ask, t.max_ask);
                let ask = LeaseAsk { key: l.key.clone(), epoch, want, give_back: 0 };
                if starved {
                    starved_asks.push((l.clone(), ask));
                } else {
                    asks.push(ask);
                }
            }
        }
        // Give-backs and the starved first; the rest wait for the next batch.
        let mut out: Vec<LeaseAsk> = asks.iter().filter(|a| a.want == 0).cloned().collect();
        let mut wanting: Vec<(Option<Arc<LeaseState>>, LeaseAsk)> =
            starved_asks.into_iter().map(|(l, a)| (Some(l), a)).collect();
        wanting.extend(asks.into_iter().filter(|a| a.want > 0).map(|a| (None, a)));
        for (lease, ask) in wanting {
            if out.len() >= MAX_ASKS_PER_BATCH {
                break;
            }
            match lease.or_else(|| keys.get(&ask.key.ledger_key()).cloned()) {
                Some(l) => l.pending.store(true, Ordering::Release),
                None => continue,
            }
            out.push(ask);
        }
        out
    }

    /// A batch that was not delivered: its asks are made again by the next
    /// batch (its give-backs stay unused: safe, and they die with the window).
    pub fn batch_failed(&self, asks: &[LeaseAsk]) {
        let keys = self.keys.read().unwrap_or_else(|p| p.into_inner());
        for a in asks.iter().filter(|a| a.want > 0) {
            if let Some(l) = keys.get(&a.key.ledger_key()) {
                l.pending.store(false, Ordering::Release);
            }
        }
    }

    /// Admits one request of `key` from this node's lease (created empty on
    /// first use): a shared-lock map lookup and one compare-and-swap.
    pub fn admit(&self, key: QuotaKey, limit: u64, window_end_ms: u64) -> Admission {
        match self.lease(key, limit, window_end_ms) {
            None => Admission::Full,
            Some(l) if l.try_admit() => Admission::Admitted { remaining: l.remaining_estimate() },
            Some(l) => {
                Admission::Refused { budget_spent: l.remaining_estimate() == 0 && l.epoch.load(Ordering::Acquire) != 0 }
            }
        }
    }

    /// Leases held now.
    pub fn len(&self) -> usize {
        self.keys.read().unwrap_or_else(|p| p.into_inner()).len()
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// Units admitted here in the current epoch of `key`, and units available.
    pub fn usage(&self, key: &QuotaKey) -> Option<(u64, u64)> {
        let keys = self.keys.read().unwrap_or_else(|p| p.into_inner());
        keys.get(&key.ledger_key()).map(|l| (l.admitted.load(Ordering::Acquire), l.available()))
    }
}

/// The plan and consumer limits of a principal, from the identity snapshot.
fn consumer_limits<'a>(
    consumers: &'a Table<Consumer>,
    plans: &'a Table<raftgate_model::traffic::Plan>,
    principal: Option<&Principal>,
) -> Vec<(QuotaScope, &'a Limits)> {
    let Some(p) = principal else { return Vec::new() };
    let Some(c) = consumers.get(&p.consumer) else { return Vec::new() };
    let mut out = vec![(QuotaScope::Consumer(c.spec.id.clone()), &c.spec.limits)];
    if let Some(plan) = c.spec.plan.as_ref().and_then(|id| plans.get(id)) {
        out.push((QuotaScope::Plan(plan.spec.id.clone()), &plan.spec.limits));
    }
    out
}

fn tighter(a: Option<RateInfo>, b: RateInfo) -> Option<RateInfo> {
    match a {
        Some(a) if a.remaining <= b.remaining => Some(a),
        _ => Some(b),
    }
}

/// Checks every rate limit and quota of the request. `Ok` carries the
/// tightest policy's figures for the response headers (none: no policy).
/// `graphql`: the operation a GraphQL route admitted (keys `graphql_*`).
pub fn check(
    gateway: &Gateway,
    route: &Route,
    principal: Option<&Principal>,
    conn: &ConnInfo,
    headers: &HeaderMap,
    stats: Option<&crate::metrics::RouteMetrics>,
    graphql: Option<&raftgate_graphql::Operation>,
) -> Result<Option<RateInfo>, GatewayError> {
    use crate::metrics::LimitKind;
    let record = |kind, allowed| {
        if let Some(s) = stats {
            s.record_limit(kind, allowed);
        }
    };
    // Plain routes pay nothing here: no snapshot load, no allocation.
    if principal.is_none() && route.limits.is_empty() {
        return Ok(None);
    }
    let identity = gateway.identity();
    let mut sources: Vec<(QuotaScope, &Limits)> = vec![(QuotaScope::Route(route.id.clone()), &route.limits)];
    sources.extend(consumer_limits(&identity.consumers, &identity.plans, principal));
    if sources.iter().all(|(_, l)| l.is_empty()) {
        return Ok(None);
    }
    let client_ip = gateway.client_ip(conn, headers);
    let mut tightest = None;
    let share = gateway.cluster_size().max(1) as u64;
    for (scope, limits) in &sources {
        for (i, r) in limits.rate_limits.iter().enumerate() {
            let RateLimit { rate_per_s, burst, cluster_share, .. } = r;
            let (rate, burst) = if *cluster_share {
                ((u64::from(*rate_per_s) / share).max(1), (u64::from(*burst) / share).max(1))
            } else {
                (u64::from(*rate_per_s), u64::from(*burst))
            };
            let value = key_value(&r.key, route, principal, client_ip, headers, graphql);
            let key = format!("{scope:?}#{i}|{value}");
            match gateway.rate_limiter().check(&key, rate, burst) {
                Ok(info) => {
                    record(LimitKind::Rate, true);
                    tightest = tighter(tightest, info)
                }
                Err(info) => {
                    record(LimitKind::Rate, false);
                    return Err(GatewayError::RateLimited(info));
                }
            }
        }
    }
    let now_ms = gateway.wall_ms();
    for (scope, limits) in &sources {
        for q in &limits.quotas {
            let (start, end) = q.window.bounds(now_ms);
            let key = QuotaKey {
                scope: scope.clone(),
                quota: q.name.clone(),
                value: key_value(&q.key, route, principal, client_ip, headers, graphql),
                window: q.window,
                window_start_ms: start,
            };
            let reset_s = end.saturating_sub(now_ms).div_ceil(1_000);
            match gateway.quota_leases().admit(key, q.limit, end) {
                Admission::Admitted { remaining } => {
                    record(LimitKind::Quota, true);
                    tightest = tighter(tightest, RateInfo { limit: q.limit, remaining, reset_s })
                }
                // Either the cluster's budget is spent (wait for the window) or this
                // node's lease is: a batch interval brings more if any is left.
                Admission::Refused { budget_spent } => {
                    record(LimitKind::Quota, false);
                    let retry = if budget_spent { reset_s } else { 1 };
                    return Err(GatewayError::RateLimited(RateInfo { limit: q.limit, remaining: 0, reset_s: retry }));
                }
                Admission::Full => {
                    record(LimitKind::Quota, false);
                    return Err(GatewayError::RateLimited(RateInfo { limit: q.limit, remaining: 0, reset_s: 1 }));
                }
            }
        }
    }
    Ok(tightest)
}

/// The address a limit keyed on `client_ip` counts: the connection's peer,
/// or, when that peer is a trusted proxy, the right-most address of
/// `X-Forwarded-For` that is not one.
pub fn client_ip(peer: IpAddr, headers: &HeaderMap, trusted: &[Cidr]) -> IpAddr {
    let is_trusted = |ip: &IpAddr| trusted.iter().any(|c| c.contains(*ip));
    if !is_trusted(&peer) {
        return peer;
    }
    let mut last = peer;
    for value in headers.get_all("x-forwarded-for").iter().rev() {
        let Ok(text) = value.to_str() else { return last };
        for item in text.rsplit(',') {
            match item.trim().parse::<IpAddr>() {
                Ok(ip) if is_trusted(&ip) => last = ip,
                Ok(ip) => return ip,
                Err(_) => return last,
            }
        }
    }
    last
}

/// An address block, e.g. `10.0.0.0/8` or `2001:db8::/32`.
/// An address block (shared with the IP rules).
pub use raftgate_model::edge::Cidr;

#[cfg(test)]
mod tests {
    use super::*;
    use raftgate_model::ObjectId;

    #[test]
    fn a_bucket_allows_its_burst_then_its_rate() {
        let rl = RateLimiter::new(100);
        let t0 = 1_000_000_000_000;
        for i in 0..5 {
            assert!(rl.check_at("k", 10, 5, t0).is_ok(), "request {i} within the burst");
        }
        let limited = rl.check_at("k", 10, 5, t0).unwrap_err();
        assert_eq!(limited.remaining, 0);
        assert!(rl.check_at("other", 10, 5, t0).is_ok(), "keys are independent");
        // 100 ms later one more token (10/s).
        assert!(rl.check_at("k", 10, 5, t0 + 100_000_000).is_ok());
        assert!(rl.check_at("k", 10, 5, t0 + 100_000_000).is_err());
    }

    #[test]
    fn the_key_map_is_bounded() {
        let rl = RateLimiter::new(64);
        for i in 0..10_000 {
            let _ = rl.check_at(&format!("client-{i}"), 1, 1, 1_000 + i);
        }
        assert!(rl.len() <= 64 + SHARDS, "{} keys", rl.len());
    }

    #[test]
    fn the_client_ip_comes_from_forwarded_for_only_behind_a_trusted_proxy() {
        let trusted: Vec<Cidr> = vec!["10.0.0.0/8".parse().unwrap()];
        let mut h = HeaderMap::new();
        h.insert("x-forwarded-for", "198.51.100.7, 10.1.2.3".parse().unwrap());
        let proxy: IpAddr = "10.9.9.9".parse().unwrap();
        let stranger: IpAddr = "203.0.113.5".parse().unwrap();
        assert_eq!(client_ip(proxy, &h, &trusted), "198.51.100.7".parse::<IpAddr>().unwrap());
        assert_eq!(client_ip(stranger, &h, &trusted), stranger, "an untrusted peer cannot claim another address");
        assert!("10.0.0.0/33".parse::<Cidr>().is_err());
        assert!("::1".parse::<Cidr>().unwrap().contains("::1".parse().unwrap()));
    }

    #[test]
    fn a_lease_admits_only_what_was_granted() {
        let key = QuotaKey {
            scope: QuotaScope::Route(ObjectId::parse("r").unwrap()),
            quota: ObjectId::parse("q").unwrap(),
            value: "acme".into(),
            window: raftgate_model::traffic::Window::Minute,
            window_start_ms: 0,
        };
        let l = LeaseState::new(key, 100, 60_000);
        assert!(!l.try_admit(), "nothing granted yet");
        l.granted.store(5, Ordering::Release);
        l.epoch.store(1, Ordering::Release);
        assert!(l.try_admit() && l.try_admit() && l.try_admit());
        assert_eq!(l.take_all(), 2, "a give-back takes what is left");
        assert!(!l.try_admit(), "nothing given back can be admitted");
        assert_eq!(l.available(), 0);
        assert_eq!(l.admitted.load(Ordering::Relaxed), 3);
    }
}
