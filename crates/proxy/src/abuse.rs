//! Abuse defences that learn from traffic, per node.
//!
//! [`LoginGuard`]: credential stuffing. On a route with `login`, failed
//! logins (the route's failure statuses, whether the upstream or the
//! gateway answered) are counted per client address and per account in a
//! window; past the route's limit the address or account is locked out
//! (429 `login_locked`, `Retry-After`). A success clears the account. The
//! table is bounded ([`MAX_TRACKED_LOGINS`], keyed by a keyed hash so
//! clients cannot aim collisions); when it is full of live entries new
//! keys go uncounted (counted as overflow) rather than evicting lockouts.
//!
//! [`AnomalyDetector`]: per-consumer baselines. Each authenticated
//! consumer's request rate and error ratio are kept as EWMAs (a short one,
//! time constant [`SHORT_TAU_S`], against a long baseline with the
//! configured half-life, learned only while the consumer looks normal).
//! When the short rate exceeds `rate_factor` × the baseline (and
//! `min_rate_per_s`), or the short error ratio exceeds `error_ratio` over
//! at least `min_requests`, the detector raises an [`AnomalyEvent`] once
//! per cooldown and applies the action: `flag` (log, metric), `throttle`
//! (the consumer is held to `throttle_rate_per_s` on this node for the
//! cooldown) or `revoke` (the node asks the cluster to revoke the
//! consumer's credentials through the normal, audited revocation command).

use std::collections::hash_map::RandomState;
use std::collections::HashMap;
use std::hash::BuildHasher;
use std::net::IpAddr;
use std::sync::atomic::{AtomicU64, Ordering::Relaxed};
use std::sync::{Arc, Mutex, RwLock};

use raftgate_model::edge::LoginProtection;
use raftgate_model::ObjectId;

/// Addresses and accounts tracked for login failures on a node.
pub const MAX_TRACKED_LOGINS: usize = 100_000;
const LOGIN_SHARDS: usize = 16;
/// Consumers with a traffic baseline on a node (ids come from the
/// replicated consumer table, never from client input).
pub const MAX_TRACKED_CONSUMERS: usize = 100_000;
/// Time constant of the short EWMAs, in seconds.
pub const SHORT_TAU_S: f64 = 10.0;
/// Anomaly events waiting for the node to act on them; more are dropped
/// (and counted) until it catches up.
pub const ANOMALY_QUEUE: usize = 64;

#[derive(Clone, Copy, Debug)]
struct Failures {
    window_start_ms: u64,
    failures: u32,
    locked_until_ms: u64,
    /// When this entry is of no more use.
    expires_ms: u64,
}

/// Who is trying to log in, as the pipeline saw it.
#[derive(Clone, Debug)]
pub struct LoginAttempt {
    pub route: ObjectId,
    pub ip: IpAddr,
    pub account: Option<String>,
}

/// Failed-login counts and lockouts per (route, address) and (route, account).
pub struct LoginGuard {
    shards: Vec<Mutex<HashMap<u64, Failures>>>,
    keys: RandomState,
    overflow: AtomicU64,
    lockouts: AtomicU64,
}

impl Default for LoginGuard {
    fn default() -> Self {
        Self {
            shards: (0..LOGIN_SHARDS).map(|_| Mutex::new(HashMap::new())).collect(),
            keys: RandomState::new(),
            overflow: AtomicU64::new(0),
            lockouts: AtomicU64::new(0),
        }
    }
}

impl LoginGuard {
    fn key(&self, route: &ObjectId, kind: u8, value: &[u8]) -> u64 {
        self.keys.hash_one((route.as_str(), kind, value))
    }

    fn keys_of(&self, a: &LoginAttempt) -> Vec<(u64, bool)> {
        let ip = a.ip.to_canonical().to_string();
        let mut keys = vec![(self.key(&a.route, 0, ip.as_bytes()), false)];
        if let Some(acct) = &a.account {
            keys.push((self.key(&a.route, 1, acct.to_lowercase().as_bytes()), true));
        }
        keys
    }

    fn shard(&self, key: u64) -> std::sync::MutexGuard<'_, HashMap<u64, Failures>> {
        self.shards[(key as usize) % LOGIN_SHARDS].lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Seconds until the attempt's address or account may try again, if locked.
    pub fn locked(&self, a: &LoginAttempt, now_ms: u64) -> Option<u64> {
        self.keys_of(a)
            .into_iter()
            .filter_map(|(k, _)| self.shard(k).get(&k).map(|f| f.locked_until_ms))
            .filter(|until| *until > now_ms)
            .max()
            .map(|until| (until - now_ms).div_ceil(1_000))
    }

    /// Counts the outcome of a login attempt.
    pub fn record(&self, policy: &LoginProtection, a: &LoginAttempt, status: u16, now_ms: u64) {
        let failed = policy.failure_statuses.contains(&status);
        let window_ms = u64::from(policy.window_s) * 1_000;
        let lockout_ms = u64::from(policy.lockout_s) * 1_000;
        for (k, is_account) in self.keys_of(a) {
            let mut shard = self.shard(k);
            if !failed {
                if is_account && (200..300).contains(&status) {
                    shard.remove(&k);
                }
                continue;
            }
            if !shard.contains_key(&k) && shard.len() >= MAX_TRACKED_LOGINS / LOGIN_SHARDS {
                shard.retain(|_, f| f.expires_ms > now_ms);
                if shard.len() >= MAX_TRACKED_LOGINS / LOGIN_SHARDS {
                    self.overflow.fetch_add(1, Relaxed);
                    continue;
                }
            }
            let f = shard.entry(k).or_insert(Failures {
                window_start_ms: now_ms,
                failures: 0,
                locked_until_ms: 0,
                expires_ms: now_ms + window_ms,
            });
            if now_ms >= f.window_start_ms + window_ms {
                f.window_start_ms = now_ms;
                f.failures = 0;
            }
            f.failures = f.failures.saturating_add(1);
            let limit = if is_account { policy.max_failures_per_account } else { policy.max_failures_per_ip };
            if f.failures >= limit && f.locked_until_ms <= now_ms {
                f.locked_until_ms = now_ms + lockout_ms;
                f.failures = 0;
                f.window_start_ms = now_ms;
                self.lockouts.fetch_add(1, Relaxed);
                tracing::warn!(
                    target: "raftgate::abuse",
                    route = %a.route,
                    by = if is_account { "account" } else { "address" },
                    lockout_s = policy.lockout_s,
                    "login locked out after repeated failures"
                );
            }
            f.expires_ms = (f.window_start_ms + window_ms).max(f.locked_until_ms);
        }
    }

    /// (lockouts so far, failures not counted because the table was full).
    pub fn totals(&self) -> (u64, u64) {
        (self.lockouts.load(Relaxed), self.overflow.load(Relaxed))
    }
}

/// The account named by a login request: a JSON pointer into a JSON body,
/// or a form field. Bounded by the body (read up to the model's limit).
pub fn account_from_body(field: &str, content_type: Option<&str>, body: &[u8]) -> Option<String> {
    let media = content_type.unwrap_or("").split(';').next().unwrap_or("").trim().to_ascii_lowercase();
    let value = if media == "application/json" || media.ends_with("+json") {
        let v: serde_json::Value = serde_json::from_slice(body).ok()?;
        let pointer = if field.starts_with('/') { field.to_string() } else { format!("/{field}") };
        match v.pointer(&pointer)? {
            serde_json::Value::String(s) => s.clone(),
            serde_json::Value::Number(n) => n.to_string(),
            _ => return None,
        }
    } else if media == "application/x-www-form-urlencoded" {
        let text = std::str::from_utf8(body).ok()?;
        text.split('&').find_map(|pair| {
            let (k, v) = pair.split_once('=')?;
            (crate::router::percent_decode(k)? == field)
                .then(|| crate::router::percent_decode(v).map(|v| v.into_owned()))?
        })?
    } else {
        return None;
    };
    (!value.is_empty()).then(|| value.chars().take(256).collect())
}

/// What the detector does on an anomaly.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum AnomalyAction {
    Flag,
    Throttle,
    Revoke,
}

impl AnomalyAction {
    pub fn as_str(self) -> &'static str {
        match self {
            AnomalyAction::Flag => "flag",
            AnomalyAction::Throttle => "throttle",
            AnomalyAction::Revoke => "revoke",
        }
    }
}

/// The node's anomaly settings (`[abuse.anomaly]`).
#[derive(Clone, Debug)]
pub struct AnomalyPolicy {
    pub action: AnomalyAction,
    /// Short rate above this many times the baseline is anomalous.
    pub rate_factor: f64,
    /// …and above this many requests per second.
    pub min_rate_per_s: f64,
    /// Short error ratio (status 400 and up) above this is anomalous…
    pub error_ratio: f64,
    /// …over at least this many requests in the short window.
    pub min_requests: f64,
    /// A consumer's baseline is trusted after this long.
    pub warmup_s: u32,
    /// Half-life of the baseline EWMA.
    pub baseline_half_life_s: u32,
    /// Rate a throttled consumer is held to on this node.
    pub throttle_rate_per_s: u32,
    /// Time between two events for one consumer (and the throttle's length).
    pub cooldown_s: u32,
}

impl Default for AnomalyPolicy {
    fn default() -> Self {
        Self {
            action: AnomalyAction::Flag,
            rate_factor: 10.0,
            min_rate_per_s: 20.0,
            error_ratio: 0.5,
            min_requests: 50.0,
            warmup_s: 600,
            baseline_half_life_s: 3_600,
            throttle_rate_per_s: 1,
            cooldown_s: 600,
        }
    }
}

/// One consumer that looks abnormal.
#[derive(Clone, Debug, PartialEq)]
pub struct AnomalyEvent {
    pub consumer: ObjectId,
    pub action: AnomalyAction,
    /// Why, for the log and the revocation's reason.
    pub reason: String,
}

#[derive(Default)]
struct ConsumerTraffic {
    requests: AtomicU64,
    errors: AtomicU64,
    model: Mutex<Baseline>,
}

#[derive(Default)]
struct Baseline {
    /// Short EWMAs of requests and errors per second.
    short_rate: f64,
    short_errors: f64,
    /// Long EWMA of requests per second.
    baseline: f64,
    seen_s: u32,
    /// An event is not raised again (and a throttle lasts) until then.
    quiet_until_ms: u64,
}

/// Per-consumer baselines on this node.
pub struct AnomalyDetector {
    policy: AnomalyPolicy,
    consumers: RwLock<HashMap<ObjectId, Arc<ConsumerTraffic>>>,
    throttled_until: RwLock<HashMap<ObjectId, u64>>,
    events: tokio::sync::mpsc::Sender<AnomalyEvent>,
    dropped: AtomicU64,
    raised: AtomicU64,
}

impl AnomalyDetector {
    pub fn new(policy: AnomalyPolicy) -> (Self, tokio::sync::mpsc::Receiver<AnomalyEvent>) {
        let (events, rx) = tokio::sync::mpsc::channel(ANOMALY_QUEUE);
        let d = Self {
            policy,
            consumers: RwLock::new(HashMap::new()),
            throttled_until: RwLock::new(HashMap::new()),
            events,
            dropped: AtomicU64::new(0),
            raised: AtomicU64::new(0),
        };
        (d, rx)
    }

    pub fn policy(&self) -> &AnomalyPolicy {
        &self.policy
    }

    /// Counts one answered request of an authenticated consumer.
    pub fn record(&self, consumer: &ObjectId, error: bool) {
        let known = self.consumers.read().unwrap_or_else(|p| p.into_inner()).get(consumer).cloned();
        let traffic = match known {
            Some(t) => t,
            None => {
                let mut map = self.consumers.write().unwrap_or_else(|p| p.into_inner());
                if map.len() >= MAX_TRACKED_CONSUMERS && !map.contains_key(consumer) {
                    return;
                }
                map.entry(consumer.clone()).or_default().clone()
            }
        };
        traffic.requests.fetch_add(1, Relaxed);
        if error {
            traffic.errors.fetch_add(1, Relaxed);
        }
    }

    /// Whether the consumer is being throttled now.
    pub fn throttled(&self, consumer: &ObjectId, now_ms: u64) -> bool {
        self.throttled_until.read().unwrap_or_else(|p| p.into_inner()).get(consumer).is_some_and(|t| *t > now_ms)
    }

    /// Rolls one second: updates every consumer's EWMAs and raises events.
    pub fn tick(&self, now_ms: u64) {
        let p = &self.policy;
        let short_alpha = 1.0 - (-1.0 / SHORT_TAU_S).exp();
        let long_alpha = 1.0 - 0.5f64.powf(1.0 / f64::from(p.baseline_half_life_s.max(1)));
        let consumers: Vec<(ObjectId, Arc<ConsumerTraffic>)> = self
            .consumers
            .read()
            .unwrap_or_else(|p| p.into_inner())
            .iter()
            .map(|(k, v)| (k.clone(), v.clone()))
            .collect();
        for (id, t) in consumers {
            let n = t.requests.swap(0, Relaxed) as f64;
            let e = t.errors.swap(0, Relaxed) as f64;
            let mut m = t.model.lock().unwrap_or_else(|p| p.into_inner());
            m.short_rate += (n - m.short_rate) * short_alpha;
            m.short_errors += (e - m.short_errors) * short_alpha;
            m.seen_s = m.seen_s.saturating_add(1);
            if m.seen_s <= p.warmup_s {
                // Learning: the baseline follows the traffic closely at first.
                let a = (1.0 / f64::from(m.seen_s)).max(long_alpha);
                m.baseline += (n - m.baseline) * a;
                continue;
            }
            let rate_limit = (p.rate_factor * m.baseline).max(p.min_rate_per_s);
            let window_requests = m.short_rate * SHORT_TAU_S;
            let ratio = if m.short_rate > 0.0 { m.short_errors / m.short_rate } else { 0.0 };
            let reason = if m.short_rate > rate_limit {
                Some(format!("{:.1} requests/s against a baseline of {:.1}", m.short_rate, m.baseline))
            } else if window_requests >= p.min_requests && ratio > p.error_ratio {
                Some(format!("{:.0}% of recent requests failed", ratio * 100.0))
            } else {
                None
            };
            match reason {
                None => m.baseline += (n - m.baseline) * long_alpha,
                Some(reason) if now_ms >= m.quiet_until_ms => {
                    m.quiet_until_ms = now_ms + u64::from(p.cooldown_s) * 1_000;
                    if p.action == AnomalyAction::Throttle {
                        self.throttled_until
                            .write()
                            .unwrap_or_else(|p| p.into_inner())
                            .insert(id.clone(), m.quiet_until_ms);
                    }
                    self.raised.fetch_add(1, Relaxed);
                    let event = AnomalyEvent { consumer: id.clone(), action: p.action, reason };
                    if self.events.try_send(event).is_err() {
                        self.dropped.fetch_add(1, Relaxed);
                    }
                }
                Some(_) => {}
            }
        }
        self.throttled_until.write().unwrap_or_else(|p| p.into_inner()).retain(|_, t| *t > now_ms);
    }

    /// (events raised, events dropped because the queue was full).
    pub fn totals(&self) -> (u64, u64) {
        (self.raised.load(Relaxed), self.dropped.load(Relaxed))
    }

    /// Forgets consumers that no longer exist (called when identity changes).
    pub fn retain(&self, exists: impl Fn(&ObjectId) -> bool) {
        self.consumers.write().unwrap_or_else(|p| p.into_inner()).retain(|id, _| exists(id));
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn policy() -> LoginProtection {
        serde_json::from_value(serde_json::json!({"max_failures_per_ip": 5, "max_failures_per_account": 3,
            "window_s": 60, "lockout_s": 120}))
        .unwrap()
    }

    fn attempt(ip: &str, account: &str) -> LoginAttempt {
        LoginAttempt {
            route: ObjectId::parse("login").unwrap(),
            ip: ip.parse().unwrap(),
            account: Some(account.into()),
        }
    }

    #[test]
    fn an_account_is_locked_after_its_failures_from_any_address_until_the_lockout_ends() {
        let g = LoginGuard::default();
        let p = policy();
        for (i, ip) in ["10.0.0.1", "10.0.0.2", "10.0.0.3"].iter().enumerate() {
            assert_eq!(g.locked(&attempt(ip, "alice"), 1_000 + i as u64), None);
            g.record(&p, &attempt(ip, "alice"), 401, 1_000 + i as u64);
        }
        assert_eq!(g.locked(&attempt("10.9.9.9", "Alice"), 2_000), Some(120));
        assert_eq!(g.locked(&attempt("10.9.9.9", "bob"), 2_000), None, "other accounts are free");
        assert_eq!(g.locked(&attempt("10.9.9.9", "alice"), 2_000 + 120_000), None);
        assert_eq!(g.totals().0, 1);
    }

    #[test]
    fn an_address_is_locked_after_failures_across_accounts_and_success_clears_an_account() {
        let g = LoginGuard::default();
        let p = policy();
        g.record(&p, &attempt("10.0.0.1", "a"), 401, 0);
        g.record(&p, &attempt("10.0.0.1", "a"), 401, 1);
        g.record(&p, &attempt("10.0.0.1", "a"), 200, 2);
        g.record(&p, &attempt("10.0.0.1", "a"), 401, 3);
        g.record(&p, &attempt("10.0.0.1", "a"), 401, 4);
        assert_eq!(g.locked(&attempt("10.0.0.2", "a"), 5), None, "the success reset the account");
        g.record(&p, &attempt("10.0.0.1", "b"), 403, 5);
        assert!(g.locked(&attempt("10.0.0.1", "zed"), 6).is_some(), "five failures from one address");
    }

    #[test]
    fn failures_outside_the_window_start_a_new_count() {
        let g = LoginGuard::default();
        let p = policy();
        g.record(&p, &attempt("10.0.0.1", "a"), 401, 0);
        g.record(&p, &attempt("10.0.0.1", "a"), 401, 1);
        g.record(&p, &attempt("10.0.0.1", "a"), 401, 61_000);
        assert_eq!(g.locked(&attempt("10.0.0.1", "a"), 61_001), None);
    }

    #[test]
    fn the_account_comes_from_a_json_pointer_or_a_form_field() {
        let json = br#"{"user":{"name":"alice"},"password":"x"}"#;
        assert_eq!(account_from_body("/user/name", Some("application/json"), json).as_deref(), Some("alice"));
        let form = b"username=b%40example.com&password=x";
        assert_eq!(
            account_from_body("username", Some("application/x-www-form-urlencoded"), form).as_deref(),
            Some("b@example.com")
        );
        assert_eq!(account_from_body("username", Some("text/plain"), form), None);
        assert_eq!(account_from_body("/missing", Some("application/json"), json), None);
    }

    fn consumer() -> ObjectId {
        ObjectId::parse("acme").unwrap()
    }

    fn run(d: &AnomalyDetector, seconds: std::ops::Range<u64>, per_s: u64, errors_per_s: u64) {
        for s in seconds {
            for i in 0..per_s {
                d.record(&consumer(), i < errors_per_s);
            }
            d.tick(s * 1_000);
        }
    }

    #[test]
    fn a_burst_far_above_the_baseline_raises_one_event_per_cooldown() {
        let p = AnomalyPolicy {
            warmup_s: 60,
            min_rate_per_s: 5.0,
            rate_factor: 5.0,
            cooldown_s: 300,
            ..Default::default()
        };
        let (d, mut rx) = AnomalyDetector::new(p);
        run(&d, 0..120, 2, 0);
        assert!(rx.try_recv().is_err(), "steady traffic is normal");
        run(&d, 120..150, 100, 0);
        let e = rx.try_recv().expect("an anomaly");
        assert_eq!(e.consumer, consumer());
        assert!(e.reason.contains("requests/s"), "{}", e.reason);
        assert!(rx.try_recv().is_err(), "one event per cooldown");
    }

    #[test]
    fn a_rising_error_ratio_is_anomalous_and_throttle_holds_for_the_cooldown() {
        let p = AnomalyPolicy {
            action: AnomalyAction::Throttle,
            warmup_s: 30,
            min_requests: 20.0,
            cooldown_s: 60,
            ..Default::default()
        };
        let (d, mut rx) = AnomalyDetector::new(p);
        run(&d, 0..60, 5, 0);
        assert!(!d.throttled(&consumer(), 60_000));
        run(&d, 60..90, 5, 5);
        let e = rx.try_recv().expect("an anomaly");
        assert!(e.reason.contains("failed"), "{}", e.reason);
        assert_eq!(e.action, AnomalyAction::Throttle);
        assert!(d.throttled(&consumer(), 90_000));
        assert!(!d.throttled(&consumer(), 90_000 + 61_000 + 60_000));
    }
}
