//! Plans, rate limits and cluster-wide quotas, and the quota ledger.
//!
//! A [`Limits`] section (on a route, a consumer or a plan) holds local rate
//! limits, enforced by each node on its own, and quotas, enforced across
//! the cluster with escrow leases: the replicated [`QuotaEntry`] of a
//! (policy, key, window) records how much of the limit each node was
//! granted, and a node admits only from its own grant, so the cluster
//! never admits more than the limit. Nodes ask for grants and give unused
//! ones back in one [`Command::QuotaLeases`](crate::Command) per batch
//! interval; `apply` sizes the grants (see [`grant_size`]) and keeps
//! `Σ granted − returned ≤ limit` for every entry.
//!
//! Windows are UTC: minute, hour, day and calendar month. Entries leave the
//! ledger once their window has ended (by the leader's clock).

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};

use crate::node::NodeId;
use crate::route::{is_header_name, FieldError, ObjectId};

/// Most plans.
pub const MAX_PLANS: usize = 1_000;
/// Most rate limits or quotas in one limits section.
const MAX_POLICIES: usize = 8;
/// Most ledger entries (policy × key × window) at once.
pub const MAX_QUOTA_ENTRIES: usize = 1_000_000;
/// Most asks in one lease command.
pub const MAX_ASKS_PER_BATCH: usize = 10_000;
/// Longest quota key value (the joined key parts).
pub const MAX_QUOTA_KEY_BYTES: usize = 512;
/// Ledger entries stay this long after their window ends (late returns).
pub const QUOTA_EXPIRY_MARGIN_MS: u64 = 60_000;
/// Most holders (node incarnations) one ledger entry records; asks from
/// further holders get nothing until the window ends.
pub const MAX_HOLDERS_PER_ENTRY: usize = 64;
/// Latest window start accepted (the start of the year 9999).
const MAX_WINDOW_START_MS: u64 = 253_370_764_800_000;
const MAX_RATE: u32 = 1_000_000;
const MAX_LIMIT: u64 = 1_000_000_000_000;

fn field_err(field: impl Into<String>, message: impl Into<String>) -> FieldError {
    FieldError { field: field.into(), message: message.into() }
}

/// What a limit counts requests by. Several parts combine (`[consumer, route]`).
#[derive(Clone, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case", deny_unknown_fields)]
pub enum KeyPart {
    /// The authenticated consumer (anonymous requests share one key).
    Consumer,
    /// The client address (from `X-Forwarded-For` only behind a trusted proxy).
    ClientIp,
    /// The route.
    Route,
    /// A request header's value (missing: the empty value).
    Header(String),
    /// The GraphQL operation's name on a GraphQL route (`-`: anonymous, or
    /// not a GraphQL route).
    GraphqlOperation,
    /// The GraphQL operation's type: `query`, `mutation` or `subscription`
    /// (`-`: not a GraphQL route).
    GraphqlType,
}

fn validate_key(field: &str, key: &[KeyPart]) -> Result<(), FieldError> {
    if key.is_empty() || key.len() > 4 {
        return Err(field_err(
            field,
            "name 1 to 4 key parts (consumer, client_ip, route, {header: NAME}, graphql_operation, graphql_type)",
        ));
    }
    for (i, p) in key.iter().enumerate() {
        if let KeyPart::Header(h) = p {
            if !is_header_name(h) {
                return Err(field_err(format!("{field}[{i}].header"), "must be a lower-case header name"));
            }
        }
        if key[..i].contains(p) {
            return Err(field_err(format!("{field}[{i}]"), "listed twice"));
        }
    }
    Ok(())
}

/// A local rate limit: a token bucket (GCRA) of `rate_per_s` with `burst`.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RateLimit {
    pub key: Vec<KeyPart>,
    pub rate_per_s: u32,
    /// Requests allowed at once above the steady rate (at least 1).
    #[serde(default = "one")]
    pub burst: u32,
    /// Divide the rate (and burst) by the number of live nodes, so the
    /// cluster as a whole allows about `rate_per_s`.
    #[serde(default, skip_serializing_if = "is_false")]
    pub cluster_share: bool,
}

fn one() -> u32 {
    1
}
fn is_false(b: &bool) -> bool {
    !*b
}

/// A quota window, in UTC.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Window {
    Minute,
    Hour,
    Day,
    Month,
}

impl Window {
    pub fn name(self) -> &'static str {
        match self {
            Window::Minute => "minute",
            Window::Hour => "hour",
            Window::Day => "day",
            Window::Month => "month",
        }
    }

    pub fn from_name(s: &str) -> Option<Self> {
        [Window::Minute, Window::Hour, Window::Day, Window::Month].into_iter().find(|w| w.name() == s)
    }

    /// The window holding `t_ms` (ms since the Unix epoch): its start and end.
    /// Times past the year 9999 are clamped there.
    pub fn bounds(self, t_ms: u64) -> (u64, u64) {
        let t_ms = t_ms.min(MAX_WINDOW_START_MS);
        let fixed = |len: u64| {
            let start = t_ms - t_ms % len;
            (start, start + len)
        };
        match self {
            Window::Minute => fixed(60_000),
            Window::Hour => fixed(3_600_000),
            Window::Day => fixed(86_400_000),
            Window::Month => {
                let day = t_ms / 86_400_000;
                let (y, m, _) = civil_from_days(day as i64);
                let start = days_from_civil(y, m, 1) as u64 * 86_400_000;
                let (ny, nm) = if m == 12 { (y + 1, 1) } else { (y, m + 1) };
                let end = days_from_civil(ny, nm, 1) as u64 * 86_400_000;
                (start, end)
            }
        }
    }
}

/// Days since 1970-01-01 of a proleptic Gregorian date (H. Hinnant's algorithm).
fn days_from_civil(y: i64, m: u32, d: u32) -> i64 {
    let y = if m <= 2 { y - 1 } else { y };
    let era = y.div_euclid(400);
    let yoe = y - era * 400;
    let mp = (m + 9) % 12;
    let doy = (153 * mp as i64 + 2) / 5 + d as i64 - 1;
    let doe = yoe * 365 + yoe / 4 - yoe / 100 + doy;
    era * 146_097 + doe - 719_468
}

fn civil_from_days(z: i64) -> (i64, u32, u32) {
    let z = z + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z - era * 146_097;
    let yoe = (doe - doe / 1_460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let d = (doy - (153 * mp + 2) / 5 + 1) as u32;
    let m = if mp < 10 { mp + 3 } else { mp - 9 } as u32;
    let y = yoe + era * 400 + i64::from(m <= 2);
    (y, m, d)
}

/// A cluster-wide quota: at most `limit` requests per key per window.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Quota {
    /// Unique within its limits section; names the quota in the ledger.
    pub name: ObjectId,
    pub key: Vec<KeyPart>,
    pub window: Window,
    pub limit: u64,
}

/// Rate limits and quotas of a route, a consumer or a plan.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Limits {
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub rate_limits: Vec<RateLimit>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub quotas: Vec<Quota>,
}

impl Limits {
    pub fn is_empty(&self) -> bool {
        self.rate_limits.is_empty() && self.quotas.is_empty()
    }

    pub fn validate(&self, field: &str) -> Result<(), FieldError> {
        if self.rate_limits.len() > MAX_POLICIES || self.quotas.len() > MAX_POLICIES {
            return Err(field_err(field, format!("at most {MAX_POLICIES} rate limits and {MAX_POLICIES} quotas")));
        }
        for (i, r) in self.rate_limits.iter().enumerate() {
            let f = format!("{field}.rate_limits[{i}]");
            validate_key(&format!("{f}.key"), &r.key)?;
            if r.rate_per_s == 0 || r.rate_per_s > MAX_RATE {
                return Err(field_err(format!("{f}.rate_per_s"), format!("must be 1 to {MAX_RATE}")));
            }
            if r.burst == 0 || r.burst > MAX_RATE {
                return Err(field_err(format!("{f}.burst"), format!("must be 1 to {MAX_RATE}")));
            }
        }
        for (i, q) in self.quotas.iter().enumerate() {
            let f = format!("{field}.quotas[{i}]");
            validate_key(&format!("{f}.key"), &q.key)?;
            if q.limit == 0 || q.limit > MAX_LIMIT {
                return Err(field_err(format!("{f}.limit"), format!("must be 1 to {MAX_LIMIT}")));
            }
            if self.quotas[..i].iter().any(|o| o.name == q.name) {
                return Err(field_err(format!("{f}.name"), "listed twice"));
            }
        }
        Ok(())
    }
}

/// How a plan's traffic ranks when an upstream sheds load: lower-priority
/// plans are shed first.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Priority {
    Low,
    #[default]
    Normal,
    High,
    Critical,
}

/// A tier of service: the limits every consumer on it gets.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Plan {
    pub id: ObjectId,
    #[serde(default)]
    pub priority: Priority,
    #[serde(default, skip_serializing_if = "Limits::is_empty")]
    pub limits: Limits,
}

impl Plan {
    pub fn validate(&self) -> Result<(), FieldError> {
        self.limits.validate("limits")
    }
}

/// Where a quota is defined.
#[derive(Clone, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(tag = "on", content = "id", rename_all = "snake_case")]
pub enum QuotaScope {
    Route(ObjectId),
    Consumer(ObjectId),
    Plan(ObjectId),
}

impl QuotaScope {
    fn tag(&self) -> (&'static str, &ObjectId) {
        match self {
            QuotaScope::Route(id) => ("route", id),
            QuotaScope::Consumer(id) => ("consumer", id),
            QuotaScope::Plan(id) => ("plan", id),
        }
    }
}

/// One (quota, key value, window) as the ledger names it.
#[derive(Clone, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct QuotaKey {
    pub scope: QuotaScope,
    pub quota: ObjectId,
    /// The joined values of the quota's key parts for one request.
    pub value: String,
    /// The window kind, so that changing a quota's window starts a new entry.
    pub window: Window,
    /// Start of the window, ms since the epoch.
    pub window_start_ms: u64,
}

impl QuotaKey {
    /// The ledger's map key: unique per quota key (ids hold no `/` or `@`;
    /// the free-text value comes before the window start, which is digits).
    pub fn ledger_key(&self) -> String {
        let (tag, id) = self.scope.tag();
        format!("{tag}/{id}/{}/{}@{}:{}", self.quota, self.value, self.window.name(), self.window_start_ms)
    }
}

impl QuotaKey {
    /// The quota key a [`QuotaKey::ledger_key`] names.
    pub fn parse_ledger_key(s: &str) -> Option<QuotaKey> {
        let (rest, window) = s.rsplit_once('@')?;
        let (kind, start) = window.split_once(':')?;
        let window = Window::from_name(kind)?;
        let window_start_ms = start.parse().ok()?;
        let mut parts = rest.splitn(4, '/');
        let (tag, id, quota, value) = (parts.next()?, parts.next()?, parts.next()?, parts.next()?);
        let id = ObjectId::parse(id).ok()?;
        let scope = match tag {
            "route" => QuotaScope::Route(id),
            "consumer" => QuotaScope::Consumer(id),
            "plan" => QuotaScope::Plan(id),
            _ => return None,
        };
        Some(QuotaKey { scope, quota: ObjectId::parse(quota).ok()?, value: value.to_string(), window, window_start_ms })
    }
}

/// One node's ask for one quota key in a lease command.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct LeaseAsk {
    pub key: QuotaKey,
    /// The entry epoch the node's counters belong to (0: none yet). A give
    /// back for another epoch (the entry was reset since) is ignored.
    #[serde(default)]
    pub epoch: u64,
    /// More units wanted (0: none).
    #[serde(default)]
    pub want: u64,
    /// Units of its grant the node will not use and gives back.
    #[serde(default)]
    pub give_back: u64,
}

/// A quota key's entry in the replicated ledger.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct QuotaEntry {
    pub limit: u64,
    pub window_end_ms: u64,
    /// Per holder (see [`holder`]): units granted so far in this epoch (only grows).
    pub granted: BTreeMap<String, u64>,
    /// Per holder: units given back so far (only grows, at most `granted`).
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub returned: BTreeMap<String, u64>,
    /// The revision that created the entry; a reset makes a new one, so
    /// nodes start counting their use afresh.
    pub epoch: u64,
}

impl QuotaEntry {
    /// Units held by nodes now (granted minus returned), over all nodes.
    pub fn held(&self) -> u64 {
        self.granted.keys().map(|h| self.held_by(h)).sum()
    }

    pub fn held_by(&self, holder: &str) -> u64 {
        let g = self.granted.get(holder).copied().unwrap_or(0);
        g.saturating_sub(self.returned.get(holder).copied().unwrap_or(0))
    }

    /// Holders that hold or have held units of this entry.
    pub fn active_nodes(&self) -> usize {
        self.granted.len()
    }

    /// Units held per node, over its incarnations.
    pub fn held_by_node(&self) -> BTreeMap<NodeId, u64> {
        let mut out = BTreeMap::new();
        for h in self.granted.keys() {
            let node = h.split_once('.').and_then(|(n, _)| n.parse().ok()).unwrap_or(0);
            *out.entry(node).or_insert(0) += self.held_by(h);
        }
        out
    }
}

/// The ledger's name for one run of a node: its id and the incarnation it
/// drew at start. A restarted node is a new holder, so it can never spend
/// again what it was granted before (that stays held until the window ends).
pub fn holder(node: NodeId, incarnation: u64) -> String {
    format!("{node}.{incarnation}")
}

/// How much of `want` the ledger grants when `remaining` units are left
/// and `active` nodes (the asker included) share the key: all of it while
/// plenty is left, at most ⌈remaining / (2·active)⌉ near the limit, so the
/// last units are shared and little is stranded on one node.
pub fn grant_size(want: u64, remaining: u64, active: usize) -> u64 {
    let share = 2 * active.max(1) as u64;
    let cap = remaining.div_ceil(share);
    want.min(cap).min(remaining)
}

pub(crate) fn validate_asks(asks: &[LeaseAsk]) -> Result<(), FieldError> {
    if asks.len() > MAX_ASKS_PER_BATCH {
        return Err(field_err("asks", format!("at most {MAX_ASKS_PER_BATCH} per command")));
    }
    let mut seen = std::collections::BTreeSet::new();
    for (i, a) in asks.iter().enumerate() {
        if a.key.value.len() > MAX_QUOTA_KEY_BYTES {
            return Err(field_err(format!("asks[{i}].key.value"), format!("at most {MAX_QUOTA_KEY_BYTES} bytes")));
        }
        if a.want > MAX_LIMIT || a.give_back > MAX_LIMIT {
            return Err(field_err(format!("asks[{i}]"), format!("want and give_back must be at most {MAX_LIMIT}")));
        }
        if a.key.window_start_ms > MAX_WINDOW_START_MS {
            return Err(field_err(format!("asks[{i}].key.window_start_ms"), "is past the year 9999"));
        }
        if !seen.insert(&a.key) {
            return Err(field_err(format!("asks[{i}].key"), "asked twice in one command"));
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ms(y: i64, m: u32, d: u32) -> u64 {
        days_from_civil(y, m, d) as u64 * 86_400_000
    }

    #[test]
    fn calendar_months_start_on_the_first_in_utc() {
        let t = ms(2026, 12, 2) + 3_723_000;
        assert_eq!(Window::Month.bounds(t), (ms(2026, 12, 1), ms(2027, 1, 1)));
        assert_eq!(Window::Month.bounds(ms(2028, 2, 29)), (ms(2028, 2, 1), ms(2028, 3, 1)), "leap year");
        assert_eq!(Window::Month.bounds(ms(2027, 2, 28) + 86_399_999), (ms(2027, 2, 1), ms(2027, 3, 1)));
        assert_eq!(Window::Day.bounds(t), (ms(2026, 12, 2), ms(2026, 12, 3)));
        assert_eq!(Window::Hour.bounds(t).0, ms(2026, 12, 2) + 3_600_000);
        assert_eq!(Window::Minute.bounds(59_999), (0, 60_000));
        for day in [-1_000i64, 0, 1, 59, 60, 365, 10_000, 20_000, 100_000] {
            let (y, m, d) = civil_from_days(day);
            assert_eq!(days_from_civil(y, m, d), day);
        }
    }

    #[test]
    fn ledger_keys_parse_back_even_with_slashes_and_ats_in_the_value() {
        let k = QuotaKey {
            scope: QuotaScope::Plan(ObjectId::parse("gold").unwrap()),
            quota: ObjectId::parse("hourly").unwrap(),
            value: "a/b@c|10.0.0.1".into(),
            window: Window::Hour,
            window_start_ms: 3_600_000,
        };
        assert_eq!(QuotaKey::parse_ledger_key(&k.ledger_key()), Some(k));
        assert_eq!(QuotaKey::parse_ledger_key("nope/x/y/z@hour:1"), None);
        assert_eq!(QuotaKey::parse_ledger_key("route/x/y/z@hour:abc"), None);
        assert_eq!(QuotaKey::parse_ledger_key("route/x/y/z@week:1"), None);
        assert_eq!(Window::Day.bounds(u64::MAX).0 % 86_400_000, 0, "far-future times do not overflow");
    }

    #[test]
    fn grants_shrink_as_the_remaining_budget_shrinks() {
        assert_eq!(grant_size(100, 1_000_000, 3), 100, "far from the limit: all of it");
        assert_eq!(grant_size(100, 600, 3), 100);
        assert_eq!(grant_size(100, 300, 3), 50, "endgame: at most remaining / (2 x active)");
        assert_eq!(grant_size(100, 1, 3), 1, "the last unit still goes out");
        assert_eq!(grant_size(100, 0, 3), 0);
        assert_eq!(grant_size(0, 10, 1), 0);
    }

    #[test]
    fn limits_are_validated_whole() {
        let bad: Limits = serde_json::from_value(
            serde_json::json!({"quotas": [{"name": "q", "key": [], "window": "hour", "limit": 5}]}),
        )
        .unwrap();
        assert_eq!(bad.validate("limits").unwrap_err().field, "limits.quotas[0].key");
        let bad: Limits =
            serde_json::from_value(serde_json::json!({"rate_limits": [{"key": ["consumer"], "rate_per_s": 0}]}))
                .unwrap();
        assert_eq!(bad.validate("limits").unwrap_err().field, "limits.rate_limits[0].rate_per_s");
        let ok: Limits = serde_json::from_value(serde_json::json!({
            "rate_limits": [{"key": ["client_ip"], "rate_per_s": 10, "burst": 20}],
            "quotas": [{"name": "hourly", "key": ["consumer", {"header": "x-tenant"}], "window": "hour", "limit": 10000}]
        }))
        .unwrap();
        ok.validate("limits").unwrap();
    }
}
