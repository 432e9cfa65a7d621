//! Which target of an upstream gets the next try, and what the node knows of
//! each target's health.
//!
//! A [`Balancer`] is built for each upstream whenever the routing snapshot is
//! rebuilt. Its configuration is immutable; what must survive a rebuild (requests
//! in flight, latency, failure streaks, ejections, active health) lives in one
//! [`TargetState`] per target, which the caller keeps in a registry keyed by
//! (upstream id, addr) and hands to every new `Balancer`.
//!
//! For each try, [`Balancer::pick`] narrows the targets to the candidates —
//! actively healthy, not ejected by passive outlier detection, below the
//! per-target in-flight cap (the circuit breaker), not already tried by this
//! request, in the node's own region — and lets the upstream's policy choose
//! among them: smooth weighted round robin, least connections, power of two
//! choices on EWMA latency, or a consistent-hash ring. The pick reserves an
//! in-flight slot, released when the returned [`InFlight`] guard drops.
//! The outcome of the try goes back through [`Balancer::record`], which may
//! eject the target; active probes go through [`TargetState::record_probe`].
//! A [`RetryBudget`] bounds how many retries an upstream may add.
//!
//! Time is always passed in as monotonic milliseconds (`now_ms`), so that all
//! of this is deterministic under test and nothing here reads a clock.
//! Counters are relaxed atomics: they are statistics and thresholds, not
//! locks, and under concurrency a limit may be overshot by the number of
//! racing callers (two targets ejected at once, one retry too many).

use std::fmt;
use std::sync::atomic::Ordering::Relaxed;
use std::sync::atomic::{AtomicBool, AtomicU32, AtomicU64, AtomicUsize};
use std::sync::{Arc, Mutex, PoisonError};

use raftgate_model::route::{Balance, HashOn, Outlier, Retries, MAX_TARGETS};
use raftgate_model::Upstream;
use rand::Rng;
use serde::Serialize;

/// Weight of the newest sample in a target's latency EWMA, in tenths
/// (alpha = 0.3). Per sample rather than per unit of time: a sample older than
/// 7 tries weighs under 10%, so the estimate follows a target that slows down
/// within a few requests without jumping on a single slow one.
const EWMA_NEW_SAMPLE_TENTHS: u64 = 3;
/// Latency samples are clamped to one hour (the longest timeout), so the
/// fixed-point EWMA cannot overflow.
const MAX_LATENCY_US: u64 = 3_600_000_000;
/// Latency assumed for a target with no successful try yet: 10 ms, a typical
/// in-datacenter response time. A new target is neither avoided nor flooded;
/// its first response replaces the guess.
pub const UNKNOWN_LATENCY_US: u64 = 10_000;
/// Points on the consistent-hash ring per unit of target weight (ketama's 160).
pub const RING_POINTS_PER_WEIGHT: u64 = 160;
/// Cap on the points of one ring (8 bytes each, so at most 512 KiB plus one
/// point per target). Above it, points are scaled down in proportion to
/// weight, each target keeping at least one.
pub const MAX_RING_POINTS: u64 = 65_536;
/// The retry budget counts requests and retries over this sliding window...
pub const RETRY_WINDOW_MS: u64 = 10_000;
/// ...kept as this many buckets of one second each.
const RETRY_BUCKETS: usize = 10;
const RETRY_BUCKET_MS: u64 = RETRY_WINDOW_MS / RETRY_BUCKETS as u64;

/// Passive outcome of one try, as classified by the caller: a connect error,
/// a timeout or a 502/503/504 is a failure; any other response a success.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Outcome {
    Success,
    Failure,
}

/// Runtime state of one target. It outlives snapshot rebuilds: the caller
/// keeps one per (upstream id, addr) and hands the same `Arc` to each new
/// [`Balancer`].
#[derive(Debug)]
pub struct TargetState {
    pub addr: String,
    in_flight: AtomicU32,
    /// EWMA of successful tries' latency in µs; 0 until the first sample.
    ewma_us: AtomicU64,
    consecutive_failures: AtomicU32,
    /// Ejected while `now_ms < ejected_until_ms`.
    ejected_until_ms: AtomicU64,
    /// Ejections so far; the next ejection lasts `base * 2^ejection_count`.
    ejection_count: AtomicU32,
    /// Ejections since this node started (never reset; for metrics).
    ejections_total: AtomicU64,
    active_healthy: AtomicBool,
    probe_passes: AtomicU32,
    probe_failures: AtomicU32,
}

/// A target's state as shown by status output.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct TargetHealth {
    pub addr: String,
    pub in_flight: u32,
    /// 0 until the first successful try.
    pub ewma_us: u64,
    pub ejected: bool,
    /// Time left in the current ejection (0 when not ejected).
    pub ejected_for_ms: u64,
    pub ejection_count: u32,
    pub active_healthy: bool,
    pub consecutive_failures: u32,
}

impl TargetState {
    pub fn new(addr: String) -> Arc<TargetState> {
        Arc::new(TargetState {
            addr,
            in_flight: AtomicU32::new(0),
            ewma_us: AtomicU64::new(0),
            consecutive_failures: AtomicU32::new(0),
            ejected_until_ms: AtomicU64::new(0),
            ejection_count: AtomicU32::new(0),
            ejections_total: AtomicU64::new(0),
            active_healthy: AtomicBool::new(true),
            probe_passes: AtomicU32::new(0),
            probe_failures: AtomicU32::new(0),
        })
    }

    pub fn ejections_total(&self) -> u64 {
        self.ejections_total.load(Relaxed)
    }

    pub fn in_flight(&self) -> u32 {
        self.in_flight.load(Relaxed)
    }

    /// EWMA latency of successful tries in µs, 0 while unknown.
    pub fn ewma_us(&self) -> u64 {
        self.ewma_us.load(Relaxed)
    }

    pub fn is_ejected(&self, now_ms: u64) -> bool {
        now_ms < self.ejected_until_ms.load(Relaxed)
    }

    /// Actively healthy and not ejected.
    pub fn is_available(&self, now_ms: u64) -> bool {
        self.active_healthy.load(Relaxed) && !self.is_ejected(now_ms)
    }

    /// Records the passive outcome of one try.
    ///
    /// A success ends the failure streak and feeds `latency_us` into the EWMA
    /// (alpha 0.3, see [`EWMA_NEW_SAMPLE_TENTHS`]). A failure extends the
    /// streak; when it reaches `outlier.consecutive_failures` and `may_eject`
    /// allows (the caller's [`Balancer::may_eject`]), the target is ejected for
    /// `min(base_ejection_ms * 2^ejection_count, max_ejection_ms)` and the
    /// streak restarts. Failures while ejected are of tries sent before the
    /// ejection and are not counted. A target that stays clear of ejection for
    /// `max_ejection_ms` after its last one returns to the base ejection time.
    pub fn record(&self, outcome: Outcome, latency_us: u64, now_ms: u64, outlier: &Outlier, may_eject: bool) {
        match outcome {
            Outcome::Success => {
                if self.consecutive_failures.load(Relaxed) != 0 {
                    self.consecutive_failures.store(0, Relaxed);
                }
                let sample = latency_us.clamp(1, MAX_LATENCY_US);
                let _ = self.ewma_us.fetch_update(Relaxed, Relaxed, |old| {
                    Some(if old == 0 {
                        sample
                    } else {
                        (old * (10 - EWMA_NEW_SAMPLE_TENTHS) + sample * EWMA_NEW_SAMPLE_TENTHS) / 10
                    })
                });
                let forgive_at = self.ejected_until_ms.load(Relaxed).saturating_add(u64::from(outlier.max_ejection_ms));
                if self.ejection_count.load(Relaxed) != 0 && now_ms >= forgive_at {
                    self.ejection_count.store(0, Relaxed);
                }
            }
            Outcome::Failure => {
                let until = self.ejected_until_ms.load(Relaxed);
                if now_ms < until {
                    return;
                }
                let streak = saturating_increment(&self.consecutive_failures);
                if streak < outlier.consecutive_failures.max(1) || !may_eject {
                    return;
                }
                let count = self.ejection_count.load(Relaxed);
                let ejection_ms = ejection_ms(outlier, count);
                let new_until = now_ms.saturating_add(ejection_ms);
                // One winner per ejection when failures race.
                if self.ejected_until_ms.compare_exchange(until, new_until, Relaxed, Relaxed).is_ok() {
                    saturating_increment(&self.ejection_count);
                    self.ejections_total.fetch_add(1, Relaxed);
                    self.consecutive_failures.store(0, Relaxed);
                    tracing::warn!(target_addr = %self.addr, streak, ejection_ms, "target ejected after consecutive failures");
                }
            }
        }
    }

    /// Records one active health probe. The target turns unhealthy after
    /// `unhealthy_threshold` failed probes in a row and healthy again after
    /// `healthy_threshold` passed probes in a row (a threshold of 0 counts as
    /// 1). Returns the new state when it flipped.
    /// Forgets active health-check results (healthy again, no streaks):
    /// for an upstream whose health checks were turned off.
    pub fn clear_probe_verdict(&self) {
        self.active_healthy.store(true, Relaxed);
        self.probe_passes.store(0, Relaxed);
        self.probe_failures.store(0, Relaxed);
    }

    pub fn record_probe(&self, passed: bool, healthy_threshold: u32, unhealthy_threshold: u32) -> Option<bool> {
        let (streak, other, threshold) = if passed {
            (&self.probe_passes, &self.probe_failures, healthy_threshold)
        } else {
            (&self.probe_failures, &self.probe_passes, unhealthy_threshold)
        };
        other.store(0, Relaxed);
        let n = saturating_increment(streak);
        if n >= threshold.max(1) && self.active_healthy.compare_exchange(!passed, passed, Relaxed, Relaxed).is_ok() {
            streak.store(0, Relaxed);
            tracing::info!(target_addr = %self.addr, healthy = passed, "active health changed");
            return Some(passed);
        }
        None
    }

    pub fn health_view(&self, now_ms: u64) -> TargetHealth {
        let ejected_for_ms = self.ejected_until_ms.load(Relaxed).saturating_sub(now_ms);
        TargetHealth {
            addr: self.addr.clone(),
            in_flight: self.in_flight(),
            ewma_us: self.ewma_us(),
            ejected: ejected_for_ms > 0,
            ejected_for_ms,
            ejection_count: self.ejection_count.load(Relaxed),
            active_healthy: self.active_healthy.load(Relaxed),
            consecutive_failures: self.consecutive_failures.load(Relaxed),
        }
    }

    /// Takes an in-flight slot unless `cap` are taken already.
    fn try_reserve(self: &Arc<Self>, cap: u32) -> Option<InFlight> {
        self.in_flight.fetch_update(Relaxed, Relaxed, |n| (n < cap).then_some(n + 1)).ok()?;
        Some(InFlight { target: Arc::clone(self) })
    }
}

fn saturating_increment(counter: &AtomicU32) -> u32 {
    let old = counter.fetch_update(Relaxed, Relaxed, |n| Some(n.saturating_add(1))).unwrap_or(u32::MAX);
    old.saturating_add(1)
}

/// `min(base * 2^count, max)`, without overflow.
fn ejection_ms(outlier: &Outlier, count: u32) -> u64 {
    let base = u64::from(outlier.base_ejection_ms);
    let max = u64::from(outlier.max_ejection_ms).max(base);
    base.saturating_mul(1u64 << count.min(32)).min(max)
}

/// One request in flight on a target; the slot is released on drop.
#[derive(Debug)]
#[must_use = "the in-flight slot is released as soon as the guard drops"]
pub struct InFlight {
    target: Arc<TargetState>,
}

impl InFlight {
    pub fn target(&self) -> &Arc<TargetState> {
        &self.target
    }
}

impl Drop for InFlight {
    fn drop(&mut self) {
        self.target.in_flight.fetch_sub(1, Relaxed);
    }
}

/// What hash balancing keys on, extracted by the caller per the upstream's
/// [`HashOn`]: the header value, cookie value or client IP bytes. `None` (no
/// such header or cookie) falls back to round robin.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct HashKey<'a>(pub Option<&'a [u8]>);

impl HashKey<'static> {
    /// For upstreams that do not hash, and requests without the key.
    pub const NONE: HashKey<'static> = HashKey(None);
}

/// Target selection for one upstream: immutable configuration, the shared
/// [`TargetState`]s, and a little selection state of its own.
#[derive(Debug)]
pub struct Balancer {
    states: Vec<Arc<TargetState>>,
    weights: Vec<u32>,
    /// Targets in the node's region, or without a region (local everywhere).
    local: TargetSet,
    policy: Policy,
    max_in_flight: u32,
    outlier: Outlier,
    /// Smooth weighted round robin's current weight per target.
    round_robin: Mutex<Vec<i64>>,
    /// Where least connections starts looking, so that ties rotate.
    rotation: AtomicUsize,
}

#[derive(Debug)]
enum Policy {
    RoundRobin,
    LeastConnections,
    Ewma,
    Hash { on: HashOn, ring: Ring },
}

impl Balancer {
    /// `states` are the targets' states in the upstream's order; `local_region`
    /// is the node's region.
    ///
    /// # Panics
    /// If `states` does not match `upstream.targets` one for one, or there are
    /// more than [`MAX_TARGETS`] (a validated upstream never has).
    pub fn new(upstream: &Upstream, states: Vec<Arc<TargetState>>, local_region: &str) -> Balancer {
        assert!(upstream.targets.len() <= MAX_TARGETS, "an upstream has at most {MAX_TARGETS} targets");
        assert_eq!(states.len(), upstream.targets.len(), "one state per target");
        let mut local = TargetSet::default();
        for (i, (target, state)) in upstream.targets.iter().zip(&states).enumerate() {
            assert_eq!(target.addr, state.addr, "states in the upstream's target order");
            if target.region.as_deref().is_none_or(|r| r == local_region) {
                local.insert(i);
            }
        }
        let weights: Vec<u32> = upstream.targets.iter().map(|t| t.weight.max(1)).collect();
        let policy = match &upstream.balance {
            Balance::RoundRobin => Policy::RoundRobin,
            Balance::LeastConnections => Policy::LeastConnections,
            Balance::Ewma => Policy::Ewma,
            Balance::Hash(on) => Policy::Hash { on: on.clone(), ring: Ring::new(&states, &weights) },
        };
        Balancer {
            round_robin: Mutex::new(vec![0; states.len()]),
            states,
            weights,
            local,
            policy,
            max_in_flight: upstream.max_in_flight_per_target,
            outlier: upstream.outlier.clone(),
            rotation: AtomicUsize::new(0),
        }
    }

    pub fn targets(&self) -> &[Arc<TargetState>] {
        &self.states
    }

    /// What the caller extracts into a [`HashKey`]; `None` when the upstream
    /// does not hash.
    pub fn hash_on(&self) -> Option<&HashOn> {
        match &self.policy {
            Policy::Hash { on, .. } => Some(on),
            _ => None,
        }
    }

    /// Picks a target for one try and reserves an in-flight slot on it.
    ///
    /// Candidates, in order of preference, the first non-empty set winning:
    /// local targets not in `exclude` (the indexes this request already
    /// tried), then any targets not in `exclude`, then local targets, then any
    /// targets; always only those available and below the in-flight cap. So a
    /// retry goes to another target, even in another region, before it reuses
    /// one, and a node spills to other regions only when its own targets are
    /// unavailable or full. `None` means no target can take the try: the
    /// caller answers 503.
    pub fn pick(&self, key: &HashKey<'_>, exclude: &[usize], now_ms: u64) -> Option<(usize, InFlight)> {
        let mut fresh = TargetSet::default();
        let mut any = TargetSet::default();
        for (i, state) in self.states.iter().enumerate() {
            if state.is_available(now_ms) && state.in_flight() < self.max_in_flight {
                any.insert(i);
                if !exclude.contains(&i) {
                    fresh.insert(i);
                }
            }
        }
        for mut candidates in [fresh.intersection(&self.local), fresh, any.intersection(&self.local), any] {
            while let Some(i) = self.choose(&candidates, key) {
                if let Some(guard) = self.states[i].try_reserve(self.max_in_flight) {
                    return Some((i, guard));
                }
                // Filled up since the scan above.
                candidates.remove(i);
            }
        }
        None
    }

    /// Whether one more target may be ejected: at most
    /// `floor(targets * max_ejected_percent / 100)` are ejected at once, so
    /// an upstream with a single target (below 100%) never ejects it, and 0%
    /// turns ejection off.
    pub fn may_eject(&self, now_ms: u64) -> bool {
        let allowed = self.states.len() as u64 * u64::from(self.outlier.max_ejected_percent) / 100;
        let ejected = self.states.iter().filter(|s| s.is_ejected(now_ms)).count() as u64;
        ejected < allowed
    }

    /// Records the outcome of a try on target `index` (as returned by
    /// [`pick`](Self::pick)), with the upstream's outlier rules and
    /// [`may_eject`](Self::may_eject). An index out of range is ignored.
    pub fn record(&self, index: usize, outcome: Outcome, latency_us: u64, now_ms: u64) {
        let Some(state) = self.states.get(index) else { return };
        let may_eject = outcome == Outcome::Failure && self.may_eject(now_ms);
        state.record(outcome, latency_us, now_ms, &self.outlier, may_eject);
    }

    /// The policy's choice among `candidates`, without reserving it.
    fn choose(&self, candidates: &TargetSet, key: &HashKey<'_>) -> Option<usize> {
        if candidates.is_empty() {
            return None;
        }
        match (&self.policy, key.0) {
            (Policy::Hash { ring, .. }, Some(key)) => ring.first_candidate(key, candidates),
            (Policy::RoundRobin | Policy::Hash { .. }, _) => self.smooth_round_robin(candidates),
            (Policy::LeastConnections, _) => self.least_loaded(candidates),
            (Policy::Ewma, _) => self.two_choices(candidates),
        }
    }

    /// nginx's smooth weighted round robin: each candidate gains its weight,
    /// the highest is picked and loses the candidates' total weight.
    fn smooth_round_robin(&self, candidates: &TargetSet) -> Option<usize> {
        let mut current = self.round_robin.lock().unwrap_or_else(PoisonError::into_inner);
        let mut total = 0i64;
        let mut best: Option<usize> = None;
        for i in candidates.iter() {
            let weight = i64::from(self.weights[i]);
            current[i] += weight;
            total += weight;
            if best.is_none_or(|b| current[i] > current[b]) {
                best = Some(i);
            }
        }
        let best = best?;
        current[best] -= total;
        Some(best)
    }

    /// The fewest requests in flight per unit of weight; ties go to the first
    /// from a starting point that rotates with every pick.
    fn least_loaded(&self, candidates: &TargetSet) -> Option<usize> {
        let start = self.rotation.fetch_add(1, Relaxed) % candidates.len();
        let load = |i: usize| (u64::from(self.states[i].in_flight()), u64::from(self.weights[i]));
        let mut best: Option<(usize, (u64, u64))> = None;
        for i in candidates.iter().skip(start).chain(candidates.iter().take(start)) {
            let (in_flight, weight) = load(i);
            // in_flight / weight < best_in_flight / best_weight, without division.
            if best.is_none_or(|(_, (b_in_flight, b_weight))| in_flight * b_weight < b_in_flight * weight) {
                best = Some((i, (in_flight, weight)));
            }
        }
        best.map(|(i, _)| i)
    }

    /// Power of two random choices: of two distinct random candidates, the one
    /// with the lower `ewma_us * (in_flight + 1) / weight`.
    fn two_choices(&self, candidates: &TargetSet) -> Option<usize> {
        let n = candidates.len();
        if n == 1 {
            return candidates.nth(0);
        }
        let mut rng = rand::thread_rng();
        let first = rng.gen_range(0..n);
        let mut second = rng.gen_range(0..n - 1);
        if second >= first {
            second += 1;
        }
        let (a, b) = (candidates.nth(first)?, candidates.nth(second)?);
        let cost = |i: usize| {
            let state = &self.states[i];
            let ewma = match state.ewma_us() {
                0 => UNKNOWN_LATENCY_US,
                us => us,
            };
            u128::from(ewma) * (u128::from(state.in_flight()) + 1)
        };
        // cost(a) / weight(a) <= cost(b) / weight(b), without division.
        let a_wins = cost(a) * u128::from(self.weights[b]) <= cost(b) * u128::from(self.weights[a]);
        Some(if a_wins { a } else { b })
    }
}

/// A consistent-hash ring: points sorted by position, each naming its target.
/// A key goes to the first candidate clockwise from its own position, so
/// removing or skipping a target moves only the keys that were on it. Points
/// are placed by hashing the target's address, so every node builds the
/// same ring whatever the targets' order.
struct Ring {
    /// The point's position in the high 56 bits, its target index in the low
    /// 8 (`MAX_TARGETS` is 256), so that sorting orders by position.
    points: Vec<u64>,
}

const RING_INDEX_BITS: u32 = 8;
const RING_INDEX_MASK: u64 = (1 << RING_INDEX_BITS) - 1;
const _: () = assert!(MAX_TARGETS <= 1 << RING_INDEX_BITS);

impl Ring {
    fn new(states: &[Arc<TargetState>], weights: &[u32]) -> Ring {
        let total_weight: u64 = weights.iter().map(|&w| u64::from(w)).sum();
        let scaled = total_weight * RING_POINTS_PER_WEIGHT > MAX_RING_POINTS;
        let mut points = Vec::new();
        for (i, (state, &weight)) in states.iter().zip(weights).enumerate() {
            let weight = u64::from(weight);
            let count =
                if scaled { (weight * MAX_RING_POINTS / total_weight).max(1) } else { weight * RING_POINTS_PER_WEIGHT };
            for replica in 0..count {
                let mut h = Fnv1a::new();
                h.write(state.addr.as_bytes());
                h.write(&[0]);
                h.write(&replica.to_le_bytes());
                points.push((h.finish() & !RING_INDEX_MASK) | i as u64);
            }
        }
        points.sort_unstable();
        Ring { points }
    }

    fn first_candidate(&self, key: &[u8], candidates: &TargetSet) -> Option<usize> {
        let mut h = Fnv1a::new();
        h.write(key);
        let position = h.finish() >> RING_INDEX_BITS;
        let start = self.points.partition_point(|p| p >> RING_INDEX_BITS < position);
        let (before, after) = self.points.split_at(start);
        after.iter().chain(before).map(|p| (p & RING_INDEX_MASK) as usize).find(|&i| candidates.contains(i))
    }
}

impl fmt::Debug for Ring {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Ring").field("points", &self.points.len()).finish()
    }
}

/// FNV-1a 64 with a final avalanche (`MurmurHash3`'s `fmix64`): stable across
/// Rust versions and platforms, unlike std's hashers, and well spread even for
/// inputs that differ in one byte, unlike plain FNV.
struct Fnv1a(u64);

impl Fnv1a {
    fn new() -> Fnv1a {
        Fnv1a(0xcbf2_9ce4_8422_2325)
    }
    fn write(&mut self, bytes: &[u8]) {
        for &b in bytes {
            self.0 = (self.0 ^ u64::from(b)).wrapping_mul(0x0000_0100_0000_01b3);
        }
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

/// A set of target indexes (below [`MAX_TARGETS`]) without allocation.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
struct TargetSet([u64; MAX_TARGETS / 64]);

impl TargetSet {
    fn insert(&mut self, i: usize) {
        self.0[i / 64] |= 1 << (i % 64);
    }
    fn remove(&mut self, i: usize) {
        self.0[i / 64] &= !(1 << (i % 64));
    }
    fn contains(&self, i: usize) -> bool {
        self.0[i / 64] & (1 << (i % 64)) != 0
    }
    fn intersection(&self, other: &TargetSet) -> TargetSet {
        TargetSet(std::array::from_fn(|w| self.0[w] & other.0[w]))
    }
    fn len(&self) -> usize {
        self.0.iter().map(|w| w.count_ones() as usize).sum()
    }
    fn is_empty(&self) -> bool {
        self.0.iter().all(|&w| w == 0)
    }
    fn nth(&self, n: usize) -> Option<usize> {
        self.iter().nth(n)
    }
    fn iter(&self) -> impl Iterator<Item = usize> + '_ {
        self.0.iter().enumerate().flat_map(|(w, &bits)| {
            let mut bits = bits;
            std::iter::from_fn(move || {
                if bits == 0 {
                    return None;
                }
                let bit = bits.trailing_zeros() as usize;
                bits &= bits - 1;
                Some(w * 64 + bit)
            })
        })
    }
}

/// Retry budget of one upstream (as in Finagle and Envoy): over the last
/// [`RETRY_WINDOW_MS`], retries may be at most `budget_percent`% of requests,
/// but `min_per_second` retries per second of the window are always allowed,
/// so that a quiet upstream can still retry. Call
/// [`record_request`](Self::record_request) once per request (not per retry)
/// and [`try_acquire_retry`](Self::try_acquire_retry) before each retry.
///
/// The window is [`RETRY_BUCKETS`] one-second buckets reused in a ring, so
/// memory is fixed; it covers between 9 and 10 seconds.
#[derive(Debug)]
pub struct RetryBudget {
    budget_percent: u64,
    min_retries_per_window: u64,
    buckets: [RetryBucket; RETRY_BUCKETS],
}

#[derive(Debug, Default)]
struct RetryBucket {
    /// `now_ms / RETRY_BUCKET_MS + 1` of the second this bucket counts; 0 unused.
    tick: AtomicU64,
    requests: AtomicU64,
    retries: AtomicU64,
}

impl RetryBudget {
    pub fn new(retries: &Retries) -> Self {
        RetryBudget {
            budget_percent: u64::from(retries.budget_percent),
            min_retries_per_window: u64::from(retries.min_per_second) * (RETRY_WINDOW_MS / 1_000),
            buckets: Default::default(),
        }
    }

    pub fn record_request(&self, now_ms: u64) {
        self.bucket(now_ms).requests.fetch_add(1, Relaxed);
    }

    /// Takes one retry from the budget, or refuses.
    pub fn try_acquire_retry(&self, now_ms: u64) -> bool {
        let (requests, retries) = self.window_totals(now_ms);
        let allowed = retries < self.min_retries_per_window || retries < requests * self.budget_percent / 100;
        if allowed {
            self.bucket(now_ms).retries.fetch_add(1, Relaxed);
        }
        allowed
    }

    fn tick(now_ms: u64) -> u64 {
        now_ms / RETRY_BUCKET_MS + 1
    }

    /// The bucket for `now_ms`, emptied first if it still counts an older second.
    fn bucket(&self, now_ms: u64) -> &RetryBucket {
        let tick = Self::tick(now_ms);
        let bucket = &self.buckets[(tick % RETRY_BUCKETS as u64) as usize];
        let seen = bucket.tick.load(Relaxed);
        // Racing callers may lose a count or two at the turn of a second.
        if seen < tick && bucket.tick.compare_exchange(seen, tick, Relaxed, Relaxed).is_ok() {
            bucket.requests.store(0, Relaxed);
            bucket.retries.store(0, Relaxed);
        }
        bucket
    }

    /// (requests, retries) in the window ending at `now_ms`.
    fn window_totals(&self, now_ms: u64) -> (u64, u64) {
        let tick = Self::tick(now_ms);
        self.buckets
            .iter()
            .filter(|b| {
                let t = b.tick.load(Relaxed);
                t <= tick && t + RETRY_BUCKETS as u64 > tick
            })
            .fold((0, 0), |(requests, retries), b| {
                (requests + b.requests.load(Relaxed), retries + b.retries.load(Relaxed))
            })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn upstream(targets: &[(&str, u32, Option<&str>)], balance: Balance) -> Upstream {
        let targets: Vec<serde_json::Value> = targets
            .iter()
            .map(|(addr, weight, region)| serde_json::json!({"addr": addr, "weight": weight, "region": region}))
            .collect();
        let mut u: Upstream = serde_json::from_value(serde_json::json!({"id": "api", "targets": targets})).unwrap();
        u.balance = balance;
        u
    }

    fn balancer(u: &Upstream, region: &str) -> Balancer {
        let states = u.targets.iter().map(|t| TargetState::new(t.addr.clone())).collect();
        Balancer::new(u, states, region)
    }

    fn simple(n: usize, balance: Balance) -> Balancer {
        let names: Vec<String> = (0..n).map(|i| format!("t{i}:80")).collect();
        let targets: Vec<_> = names.iter().map(|a| (a.as_str(), 1, None)).collect();
        balancer(&upstream(&targets, balance), "eu")
    }

    /// Picks and releases at once; returns the target's address.
    fn pick_addr(b: &Balancer, key: &HashKey<'_>, now_ms: u64) -> String {
        let (i, guard) = b.pick(key, &[], now_ms).expect("a target");
        assert_eq!(guard.target().addr, b.targets()[i].addr);
        b.targets()[i].addr.clone()
    }

    fn eject(b: &Balancer, i: usize, now_ms: u64) {
        for _ in 0..b.outlier.consecutive_failures {
            b.record(i, Outcome::Failure, 0, now_ms);
        }
        assert!(b.targets()[i].is_ejected(now_ms));
    }

    #[test]
    fn smooth_weighted_round_robin_interleaves_weights_5_1_1() {
        let u = upstream(&[("a:1", 5, None), ("b:1", 1, None), ("c:1", 1, None)], Balance::RoundRobin);
        let b = balancer(&u, "eu");
        let seq: Vec<String> = (0..14).map(|_| pick_addr(&b, &HashKey::NONE, 0)).collect();
        let expected = ["a:1", "a:1", "b:1", "a:1", "c:1", "a:1", "a:1"];
        assert_eq!(seq[..7], expected);
        assert_eq!(seq[7..], expected);
    }

    #[test]
    fn round_robin_spreads_evenly_over_equal_targets() {
        let b = simple(4, Balance::RoundRobin);
        let mut counts = [0; 4];
        for _ in 0..400 {
            let (i, _guard) = b.pick(&HashKey::NONE, &[], 0).unwrap();
            counts[i] += 1;
        }
        assert_eq!(counts, [100; 4]);
    }

    #[test]
    fn least_connections_picks_the_idle_target() {
        let b = simple(3, Balance::LeastConnections);
        let (first, _g1) = b.pick(&HashKey::NONE, &[], 0).unwrap();
        let (second, _g2) = b.pick(&HashKey::NONE, &[], 0).unwrap();
        assert_ne!(first, second);
        let idle = 3 - first - second;
        for _ in 0..10 {
            assert_eq!(b.pick(&HashKey::NONE, &[], 0).unwrap().0, idle);
        }
    }

    #[test]
    fn least_connections_weighs_in_flight_by_weight() {
        let u = upstream(&[("a:1", 3, None), ("b:1", 1, None)], Balance::LeastConnections);
        let b = balancer(&u, "eu");
        // Held guards: a takes three for every one on b.
        let guards: Vec<_> = (0..8).map(|_| b.pick(&HashKey::NONE, &[], 0).unwrap()).collect();
        let on_a = guards.iter().filter(|(i, _)| *i == 0).count();
        assert_eq!(on_a, 6);
    }

    #[test]
    fn ewma_prefers_the_faster_target_on_average() {
        let b = simple(3, Balance::Ewma);
        let outlier = Outlier::default();
        b.targets()[0].record(Outcome::Success, 1_000, 0, &outlier, false);
        b.targets()[1].record(Outcome::Success, 20_000, 0, &outlier, false);
        b.targets()[2].record(Outcome::Success, 20_000, 0, &outlier, false);
        let fast = (0..3_000).filter(|_| b.pick(&HashKey::NONE, &[], 0).unwrap().0 == 0).count();
        // Two random choices of three: the fast one is in the pair 2/3 of the time.
        assert!(fast > 1_700, "fast target picked {fast} of 3000");
    }

    #[test]
    fn ewma_moves_three_tenths_of_the_way_to_each_sample() {
        let t = TargetState::new("a:1".into());
        let outlier = Outlier::default();
        assert_eq!(t.ewma_us(), 0, "unknown until the first sample");
        t.record(Outcome::Success, 10_000, 0, &outlier, true);
        assert_eq!(t.ewma_us(), 10_000);
        t.record(Outcome::Success, 20_000, 0, &outlier, true);
        assert_eq!(t.ewma_us(), 13_000);
        t.record(Outcome::Failure, 90_000, 0, &outlier, true);
        assert_eq!(t.ewma_us(), 13_000, "failures do not feed latency");
    }

    #[test]
    fn consistent_hash_keeps_keys_and_moves_only_a_removed_targets_keys() {
        let hash = Balance::Hash(HashOn::Header("x-user".into()));
        let five: Vec<(String, u32, Option<&str>)> = (0..5).map(|i| (format!("10.0.0.{i}:80"), 1, None)).collect();
        let five: Vec<_> = five.iter().map(|(a, w, r)| (a.as_str(), *w, *r)).collect();
        let before = balancer(&upstream(&five, hash.clone()), "eu");
        let after = balancer(&upstream(&[&five[..2], &five[3..]].concat(), hash), "eu");
        let keys: Vec<String> = (0..10_000).map(|k| format!("user-{k}")).collect();
        let placed: Vec<String> = keys.iter().map(|k| pick_addr(&before, &HashKey(Some(k.as_bytes())), 0)).collect();
        for (k, addr) in keys.iter().zip(&placed).take(100) {
            assert_eq!(&pick_addr(&before, &HashKey(Some(k.as_bytes())), 0), addr, "same key, same target");
        }
        let mut moved = 0;
        for (k, addr) in keys.iter().zip(&placed) {
            if &pick_addr(&after, &HashKey(Some(k.as_bytes())), 0) != addr {
                assert_eq!(addr, "10.0.0.2:80", "only the removed target's keys move");
                moved += 1;
            }
        }
        assert!(moved > 1_000 && moved < 3_000, "{moved} of 10000 keys moved");
    }

    #[test]
    fn consistent_hash_spreads_keys_in_proportion_to_weight() {
        let u = upstream(&[("a:1", 1, None), ("b:1", 1, None), ("c:1", 2, None)], Balance::Hash(HashOn::ClientIp));
        let b = balancer(&u, "eu");
        let mut counts = [0; 3];
        for k in 0..10_000u32 {
            counts[b.pick(&HashKey(Some(&k.to_be_bytes())), &[], 0).unwrap().0] += 1;
        }
        for (count, expected) in counts.into_iter().zip([2_500, 2_500, 5_000]) {
            assert!(count * 10 > expected * 8 && count * 10 < expected * 12, "{counts:?}");
        }
    }

    #[test]
    fn consistent_hash_skips_an_ejected_target_without_moving_other_keys() {
        let b = simple(5, Balance::Hash(HashOn::ClientIp));
        let keys: Vec<[u8; 4]> = (0..1_000u32).map(u32::to_be_bytes).collect();
        let placed: Vec<usize> = keys.iter().map(|k| b.pick(&HashKey(Some(k)), &[], 0).unwrap().0).collect();
        eject(&b, 1, 0);
        for (k, &i) in keys.iter().zip(&placed) {
            let now = b.pick(&HashKey(Some(k)), &[], 0).unwrap().0;
            if i == 1 {
                assert_ne!(now, 1);
            } else {
                assert_eq!(now, i);
            }
        }
    }

    #[test]
    fn hash_without_a_key_falls_back_to_round_robin() {
        let b = simple(3, Balance::Hash(HashOn::Cookie("session".into())));
        let mut picked: Vec<usize> = (0..3).map(|_| b.pick(&HashKey::NONE, &[], 0).unwrap().0).collect();
        picked.sort_unstable();
        assert_eq!(picked, [0, 1, 2]);
    }

    #[test]
    fn hash_ring_is_capped_and_every_target_keeps_a_point() {
        let mut targets = vec![("heavy:1", 1_000, None)];
        let names: Vec<String> = (0..255).map(|i| format!("t{i}:80")).collect();
        targets.extend(names.iter().map(|a| (a.as_str(), 1, None)));
        let b = balancer(&upstream(&targets, Balance::Hash(HashOn::ClientIp)), "eu");
        let Policy::Hash { ring, .. } = &b.policy else { panic!("hash policy") };
        assert!(ring.points.len() as u64 <= MAX_RING_POINTS + MAX_TARGETS as u64);
        for i in 0..targets.len() {
            assert!(ring.points.iter().any(|p| (p & RING_INDEX_MASK) as usize == i), "target {i} on the ring");
        }
    }

    #[test]
    fn locality_prefers_the_local_region_and_targets_without_one() {
        let u = upstream(&[("eu:1", 1, Some("eu")), ("us:1", 1, Some("us")), ("any:1", 1, None)], Balance::RoundRobin);
        let b = balancer(&u, "eu");
        for _ in 0..20 {
            assert_ne!(pick_addr(&b, &HashKey::NONE, 0), "us:1");
        }
    }

    #[test]
    fn locality_spills_to_other_regions_when_local_targets_are_ejected_or_full() {
        let mut u = upstream(&[("eu:1", 1, Some("eu")), ("us:1", 1, Some("us"))], Balance::RoundRobin);
        u.max_in_flight_per_target = 1;
        let b = balancer(&u, "eu");
        let (local, guard) = b.pick(&HashKey::NONE, &[], 0).unwrap();
        assert_eq!(local, 0);
        assert_eq!(b.pick(&HashKey::NONE, &[], 0).unwrap().0, 1, "local target at its cap");
        drop(guard);
        assert_eq!(pick_addr(&b, &HashKey::NONE, 0), "eu:1");
        eject(&b, 0, 0);
        assert_eq!(pick_addr(&b, &HashKey::NONE, 1), "us:1", "local target ejected");
    }

    #[test]
    fn circuit_breaker_caps_in_flight_and_dropping_the_guard_releases_a_slot() {
        let mut u = upstream(&[("a:1", 1, None), ("b:1", 1, None)], Balance::LeastConnections);
        u.max_in_flight_per_target = 2;
        let b = balancer(&u, "eu");
        let mut guards: Vec<_> = (0..4).map(|_| b.pick(&HashKey::NONE, &[], 0).unwrap()).collect();
        assert!(b.targets().iter().all(|t| t.in_flight() == 2));
        assert!(b.pick(&HashKey::NONE, &[], 0).is_none(), "every target full: 503");
        let (freed, _) = guards.pop().unwrap();
        assert_eq!(b.targets()[freed].in_flight(), 1);
        assert_eq!(b.pick(&HashKey::NONE, &[], 0).unwrap().0, freed);
        drop(guards);
        assert!(b.targets().iter().all(|t| t.in_flight() == 0));
    }

    #[test]
    fn exclude_sends_a_retry_to_another_target_and_reuses_only_when_all_were_tried() {
        let b = simple(3, Balance::RoundRobin);
        for _ in 0..10 {
            let (i, _g) = b.pick(&HashKey::NONE, &[0], 0).unwrap();
            assert_ne!(i, 0);
            assert_eq!(b.pick(&HashKey::NONE, &[0, 2], 0).unwrap().0, 1);
        }
        assert!(b.pick(&HashKey::NONE, &[0, 1, 2], 0).is_some(), "all tried: reuse one");
        eject(&b, 1, 0);
        assert_eq!(b.pick(&HashKey::NONE, &[0, 2], 0).unwrap().0 % 2, 0, "reused, but never the ejected one");
    }

    #[test]
    fn exclude_moves_a_hashed_retry_to_the_next_target_on_the_ring() {
        let b = simple(4, Balance::Hash(HashOn::Header("x-user".into())));
        let key = HashKey(Some(b"alice"));
        let (home, _g) = b.pick(&key, &[], 0).unwrap();
        let (next, _g2) = b.pick(&key, &[home], 0).unwrap();
        assert_ne!(next, home);
        assert_eq!(b.pick(&key, &[home], 0).unwrap().0, next, "the retry target is stable too");
    }

    #[test]
    fn consecutive_failures_eject_with_doubling_time_capped_at_max() {
        let outlier = Outlier {
            consecutive_failures: 3,
            base_ejection_ms: 1_000,
            max_ejection_ms: 3_000,
            max_ejected_percent: 100,
        };
        let t = TargetState::new("a:1".into());
        let mut now = 0;
        for expected_ms in [1_000, 2_000, 3_000, 3_000] {
            t.record(Outcome::Failure, 0, now, &outlier, true);
            t.record(Outcome::Failure, 0, now, &outlier, true);
            assert!(t.is_available(now), "two failures are not enough");
            t.record(Outcome::Failure, 0, now, &outlier, true);
            assert!(!t.is_available(now));
            assert_eq!(t.health_view(now).ejected_for_ms, expected_ms);
            t.record(Outcome::Failure, 0, now + 1, &outlier, true);
            assert_eq!(t.health_view(now).ejected_for_ms, expected_ms, "failures while ejected do not extend it");
            assert!(!t.is_available(now + expected_ms - 1));
            now += expected_ms;
            assert!(t.is_available(now), "back after the ejection time");
            assert_eq!(t.health_view(now).consecutive_failures, 0);
        }
    }

    #[test]
    fn a_success_breaks_the_failure_streak_and_a_long_clean_run_resets_the_backoff() {
        let outlier = Outlier {
            consecutive_failures: 2,
            base_ejection_ms: 1_000,
            max_ejection_ms: 8_000,
            max_ejected_percent: 100,
        };
        let t = TargetState::new("a:1".into());
        t.record(Outcome::Failure, 0, 0, &outlier, true);
        t.record(Outcome::Success, 100, 0, &outlier, true);
        t.record(Outcome::Failure, 0, 0, &outlier, true);
        assert!(t.is_available(0));
        t.record(Outcome::Failure, 0, 0, &outlier, true);
        assert_eq!(t.health_view(0).ejection_count, 1);
        // Clean for max_ejection_ms after the ejection ended at 1_000.
        t.record(Outcome::Success, 100, 9_000, &outlier, true);
        assert_eq!(t.health_view(9_000).ejection_count, 0);
        t.record(Outcome::Failure, 0, 9_000, &outlier, true);
        t.record(Outcome::Failure, 0, 9_000, &outlier, true);
        assert_eq!(t.health_view(9_000).ejected_for_ms, 1_000, "back to the base time");
    }

    #[test]
    fn max_ejected_percent_bounds_ejections() {
        let b = simple(5, Balance::RoundRobin); // default outlier: 5 failures, 50% -> 2 of 5
        eject(&b, 0, 0);
        eject(&b, 1, 0);
        assert!(!b.may_eject(0));
        for _ in 0..20 {
            b.record(2, Outcome::Failure, 0, 0);
        }
        assert!(b.targets()[2].is_available(0), "a third ejection would exceed 50%");
        let later = u64::from(b.outlier.base_ejection_ms);
        assert!(b.may_eject(later), "room again once the first ejections end");
        b.record(2, Outcome::Failure, 0, later);
        assert!(!b.targets()[2].is_available(later), "the long streak ejects as soon as allowed");
    }

    #[test]
    fn a_single_target_is_never_ejected_below_100_percent() {
        let b = simple(1, Balance::RoundRobin);
        assert!(!b.may_eject(0));
        for _ in 0..100 {
            b.record(0, Outcome::Failure, 0, 0);
        }
        assert!(b.pick(&HashKey::NONE, &[], 0).is_some());
    }

    #[test]
    fn probe_thresholds_flip_active_health() {
        let t = TargetState::new("a:1".into());
        assert_eq!(t.record_probe(false, 2, 3), None);
        assert_eq!(t.record_probe(false, 2, 3), None);
        assert_eq!(t.record_probe(false, 2, 3), Some(false));
        assert!(!t.is_available(0));
        assert_eq!(t.record_probe(false, 2, 3), None, "already unhealthy");
        assert_eq!(t.record_probe(true, 2, 3), None);
        assert_eq!(t.record_probe(false, 2, 3), None, "a failure restarts the pass streak");
        assert_eq!(t.record_probe(true, 2, 3), None);
        assert_eq!(t.record_probe(true, 2, 3), Some(true));
        assert!(t.is_available(0));
    }

    #[test]
    fn no_available_target_means_no_pick() {
        let b = simple(2, Balance::Ewma);
        b.targets()[0].record_probe(false, 1, 1);
        eject(&b, 1, 0);
        assert!(b.pick(&HashKey::NONE, &[], 0).is_none());
        assert!(b.pick(&HashKey::NONE, &[], u64::from(b.outlier.base_ejection_ms)).is_some());
    }

    #[test]
    fn health_view_reports_the_state() {
        let b = simple(1, Balance::RoundRobin);
        let (_, _guard) = b.pick(&HashKey::NONE, &[], 0).unwrap();
        b.record(0, Outcome::Success, 2_500, 0);
        b.record(0, Outcome::Failure, 0, 0);
        let view = b.targets()[0].health_view(0);
        assert_eq!(
            view,
            TargetHealth {
                addr: "t0:80".into(),
                in_flight: 1,
                ewma_us: 2_500,
                ejected: false,
                ejected_for_ms: 0,
                ejection_count: 0,
                active_healthy: true,
                consecutive_failures: 1,
            }
        );
    }

    #[test]
    fn retry_budget_always_allows_min_per_second() {
        let budget = RetryBudget::new(&Retries { attempts: 2, budget_percent: 20, min_per_second: 2 });
        let allowed = (0..30).filter(|_| budget.try_acquire_retry(0)).count();
        assert_eq!(allowed, 20, "2 per second over a 10 s window");
        assert!(!budget.try_acquire_retry(9_999));
        assert!(budget.try_acquire_retry(RETRY_WINDOW_MS), "the window has moved on");
    }

    #[test]
    fn retry_budget_allows_the_percentage_of_requests_and_refuses_beyond() {
        let budget = RetryBudget::new(&Retries { attempts: 2, budget_percent: 20, min_per_second: 0 });
        assert!(!budget.try_acquire_retry(0), "no requests, no budget");
        for _ in 0..100 {
            budget.record_request(0);
        }
        assert_eq!((0..30).filter(|_| budget.try_acquire_retry(0)).count(), 20);
        for _ in 0..50 {
            budget.record_request(5_000);
        }
        assert_eq!((0..30).filter(|_| budget.try_acquire_retry(5_000)).count(), 10);
        // At 12 s the requests of second 0 have left the window, the retries too.
        assert_eq!((0..30).filter(|_| budget.try_acquire_retry(12_000)).count(), 0, "10 retries of 50 requests");
        assert!(!budget.try_acquire_retry(20_000), "everything expired");
    }
}
