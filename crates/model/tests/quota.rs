//! The quota ledger: grants never over-allocate, whatever the interleaving
//! of asks, returns, expiry and resets from several nodes.

use proptest::prelude::*;
use raftgate_model::traffic::{holder, LeaseAsk, QuotaKey, QuotaScope, Window};
use raftgate_model::{Command, ObjectId, State};

const LIMIT: u64 = 1_000;
const T0: u64 = 1_767_225_600_000; // 2026-01-01T00:00:00Z

fn id(s: &str) -> ObjectId {
    ObjectId::parse(s).unwrap()
}

fn world() -> State {
    let mut s = State::default();
    s.apply(
        T0,
        &Command::PutUpstream {
            upstream: serde_json::from_value(serde_json::json!({"id": "u", "targets": [{"addr": "127.0.0.1:1"}]}))
                .unwrap(),
            expected_revision: None,
        },
    )
    .unwrap();
    let route = serde_json::from_value(serde_json::json!({
        "id": "r", "upstream": "u",
        "limits": {"quotas": [{"name": "per-minute", "key": ["consumer"], "window": "minute", "limit": LIMIT}]}
    }))
    .unwrap();
    s.apply(T0, &Command::PutRoute { route, expected_revision: None }).unwrap();
    // The quota counts by consumer: the ledger holds entries of existing consumers only.
    for c in ["acme", "c0", "c1"] {
        let consumer = serde_json::from_value(serde_json::json!({ "id": c })).unwrap();
        s.apply(T0, &Command::PutConsumer { consumer, expected_revision: None }).unwrap();
    }
    s
}

fn key(value: &str, t: u64) -> QuotaKey {
    QuotaKey {
        scope: QuotaScope::Route(id("r")),
        quota: id("per-minute"),
        value: value.into(),
        window: Window::Minute,
        window_start_ms: Window::Minute.bounds(t).0,
    }
}

/// An ask of node `node` (incarnation 0); give-backs carry epoch `epoch`.
fn lease_at(node: u64, k: QuotaKey, want: u64, give_back: u64, epoch: u64) -> Command {
    Command::QuotaLeases { node, incarnation: 0, asks: vec![LeaseAsk { key: k, epoch, want, give_back }] }
}

fn lease(s: &State, node: u64, k: QuotaKey, want: u64, give_back: u64) -> Command {
    let epoch = s.quota_entry(&k).map_or(0, |e| e.epoch);
    lease_at(node, k, want, give_back, epoch)
}

fn h(node: u64) -> String {
    holder(node, 0)
}

#[test]
fn grants_follow_the_ask_until_the_endgame_shares_the_rest() {
    let mut s = world();
    let k = key("acme", T0);
    s.apply(T0 + 1, &lease(&s, 1, k.clone(), 400, 0)).unwrap();
    s.apply(T0 + 2, &lease(&s, 2, k.clone(), 100, 0)).unwrap();
    let e = s.quota_entry(&k).unwrap();
    assert_eq!((e.held_by(&h(1)), e.held_by(&h(2))), (400, 100));
    // 500 left, 3 nodes: at most ceil(500 / 6) = 84.
    s.apply(T0 + 3, &lease(&s, 3, k.clone(), 400, 0)).unwrap();
    assert_eq!(s.quota_entry(&k).unwrap().held_by(&h(3)), 84);
    // Node 1 gives 300 back; node 3 may then get more.
    s.apply(T0 + 4, &lease(&s, 1, k.clone(), 0, 300)).unwrap();
    let e = s.quota_entry(&k).unwrap();
    assert_eq!((e.held_by(&h(1)), e.held()), (100, 284));
    // A node cannot give back more than it holds.
    s.apply(T0 + 5, &lease(&s, 2, k.clone(), 0, 10_000)).unwrap();
    assert_eq!(s.quota_entry(&k).unwrap().held_by(&h(2)), 0);
}

#[test]
fn entries_end_with_their_window_and_a_reset_starts_a_new_epoch() {
    let mut s = world();
    let k = key("acme", T0);
    s.apply(T0 + 1, &lease(&s, 1, k.clone(), 1_000, 0)).unwrap();
    assert_eq!(s.quota_entry(&k).unwrap().held_by(&h(1)), 500, "one ask takes at most half of what is left");
    for _ in 0..20 {
        s.apply(T0 + 1, &lease(&s, 1, k.clone(), 1_000, 0)).unwrap();
    }
    assert_eq!(s.quota_entry(&k).unwrap().held_by(&h(1)), 1_000, "repeated asks reach the last unit");
    let first = s.quota_entry(&k).unwrap().epoch;
    s.apply(T0 + 2, &lease(&s, 2, k.clone(), 10, 0)).unwrap();
    assert_eq!(s.quota_entry(&k).unwrap().held_by(&h(2)), 0, "nothing left");
    s.apply(T0 + 3, &Command::ResetQuota { key: k.clone() }).unwrap();
    assert!(s.quota_entry(&k).is_none());
    s.apply(T0 + 4, &lease(&s, 2, k.clone(), 10, 0)).unwrap();
    let e = s.quota_entry(&k).unwrap();
    assert!(e.epoch > first);
    assert_eq!(e.held_by(&h(2)), 10);
    // No grant for an ended window; the entry leaves after the margin.
    s.apply(T0 + 60_000, &lease(&s, 3, k.clone(), 10, 0)).unwrap();
    assert_eq!(s.quota_entry(&k).unwrap().held_by(&h(3)), 0);
    s.apply(T0 + 200_000, &lease(&s, 3, key("acme", T0 + 200_000), 1, 0)).unwrap();
    assert!(s.quota_entry(&k).is_none(), "expired entries are dropped");
    // A window start that is not one of the quota's windows is ignored.
    let mut odd = key("acme", T0 + 200_000);
    odd.window_start_ms += 1;
    s.apply(T0 + 200_001, &lease(&s, 1, odd.clone(), 5, 0)).unwrap();
    assert!(s.quota_entry(&odd).is_none());
}

#[derive(Debug, Clone)]
enum Op {
    Ask { node: u64, key: u8, want: u64 },
    Return { node: u64, key: u8, amount: u64 },
    Spend { node: u64, key: u8, amount: u64 },
    Reset { key: u8 },
    Tick { ms: u64 },
}

fn op() -> impl Strategy<Value = Op> {
    prop_oneof![
        4 => (1..=3u64, 0..2u8, 0..700u64).prop_map(|(node, key, want)| Op::Ask { node, key, want }),
        2 => (1..=3u64, 0..2u8, 0..300u64).prop_map(|(node, key, amount)| Op::Return { node, key, amount }),
        4 => (1..=3u64, 0..2u8, 0..300u64).prop_map(|(node, key, amount)| Op::Spend { node, key, amount }),
        1 => (0..2u8).prop_map(|key| Op::Reset { key }),
        1 => (0..40_000u64).prop_map(|ms| Op::Tick { ms }),
    ]
}

proptest! {
    /// Nodes that admit only from what the ledger granted them (minus what
    /// they used or gave back) never admit more than the limit in a window
    /// epoch, and the ledger never holds more than the limit.
    #[test]
    fn the_cluster_never_admits_more_than_the_limit(ops in proptest::collection::vec(op(), 1..200)) {
        let mut s = world();
        let mut t = T0 + 1;
        // Per (node, key value): (epoch, used, returned) as the node counts them.
        let mut local: std::collections::HashMap<(u64, u8), (u64, u64, u64)> = Default::default();
        // Admitted per (key value, window start, epoch).
        let mut admitted: std::collections::HashMap<(u8, u64, u64), u64> = Default::default();
        for op in ops {
            match op {
                Op::Tick { ms } => t += ms,
                Op::Reset { key: k } => {
                    let _ = s.apply(t, &Command::ResetQuota { key: key(&format!("c{k}"), t) });
                }
                Op::Ask { node, key: k, want } => {
                    s.apply(t, &lease(&s, node, key(&format!("c{k}"), t), want, 0)).unwrap();
                }
                Op::Return { node, key: k, amount } | Op::Spend { node, key: k, amount } => {
                    let qk = key(&format!("c{k}"), t);
                    let Some(entry) = s.quota_entry(&qk) else { continue };
                    let state = local.entry((node, k)).or_insert((entry.epoch, 0, 0));
                    if state.0 != entry.epoch {
                        *state = (entry.epoch, 0, 0);
                    }
                    let granted = entry.granted.get(&h(node)).copied().unwrap_or(0);
                    let available = granted - state.1 - state.2;
                    let n = amount.min(available);
                    if matches!(op, Op::Spend { .. }) {
                        state.1 += n;
                        let total = admitted.entry((k, qk.window_start_ms, entry.epoch)).or_insert(0);
                        *total += n;
                        prop_assert!(*total <= LIMIT, "admitted {} > {LIMIT}", *total);
                    } else {
                        state.2 += n;
                        let cmd = lease(&s, node, qk, 0, n);
                        s.apply(t, &cmd).unwrap();
                    }
                }
            }
            for (k, e) in s.quota_entries() {
                prop_assert!(e.held() <= e.limit, "{k}: held {} > limit {}", e.held(), e.limit);
                for (n, g) in &e.granted {
                    prop_assert!(e.returned.get(n).copied().unwrap_or(0) <= *g);
                }
            }
        }
    }
}

#[test]
fn hostile_lease_batches_are_refused_whole_or_capped() {
    let mut s = world();
    let k = key("acme", T0);
    let ask = |want, give_back| LeaseAsk { key: k.clone(), epoch: 0, want, give_back };
    let before = s.clone();
    let twice = Command::QuotaLeases { node: 1, incarnation: 0, asks: vec![ask(1, 0), ask(1, 0)] };
    assert!(s.apply(T0 + 1, &twice).is_err(), "one key twice in a command");
    let huge = Command::QuotaLeases { node: 1, incarnation: 0, asks: vec![ask(u64::MAX, 0)] };
    assert!(s.apply(T0 + 1, &huge).is_err());
    let mut far = k.clone();
    far.window_start_ms = u64::MAX - 5;
    let far = Command::QuotaLeases {
        node: 1,
        incarnation: 0,
        asks: vec![LeaseAsk { key: far, epoch: 0, want: 1, give_back: 0 }],
    };
    assert!(s.apply(T0 + 1, &far).is_err());
    assert_eq!(s, before, "refused commands change nothing");
    // Many holders of one key: past the cap, new ones get nothing.
    for node in 0..200 {
        s.apply(T0 + 1, &Command::QuotaLeases { node, incarnation: 9, asks: vec![ask(1, 0)] }).unwrap();
    }
    let e = s.quota_entry(&k).unwrap();
    assert_eq!(e.granted.len(), raftgate_model::traffic::MAX_HOLDERS_PER_ENTRY);
    assert!(e.held() <= LIMIT);
}

#[test]
fn a_restarted_node_is_a_new_holder_and_stale_give_backs_are_ignored() {
    let mut s = world();
    let k = key("acme", T0);
    s.apply(T0 + 1, &lease(&s, 1, k.clone(), 100, 0)).unwrap();
    let epoch = s.quota_entry(&k).unwrap().epoch;
    // The same node after a restart (another incarnation) holds nothing yet.
    let restarted = Command::QuotaLeases {
        node: 1,
        incarnation: 1,
        asks: vec![LeaseAsk { key: k.clone(), epoch, want: 10, give_back: 0 }],
    };
    s.apply(T0 + 2, &restarted).unwrap();
    let e = s.quota_entry(&k).unwrap();
    assert_eq!(
        (e.held_by(&holder(1, 0)), e.held_by(&holder(1, 1))),
        (100, 10),
        "the old grant stays held: never spent twice"
    );
    // After a reset, a give-back meant for the old epoch does not touch the new entry.
    s.apply(T0 + 3, &Command::ResetQuota { key: k.clone() }).unwrap();
    s.apply(T0 + 4, &lease(&s, 1, k.clone(), 50, 0)).unwrap();
    s.apply(T0 + 5, &lease_at(1, k.clone(), 0, 50, epoch)).unwrap();
    assert_eq!(s.quota_entry(&k).unwrap().held_by(&h(1)), 50);
}

#[test]
fn a_lowered_limit_applies_at_once_and_a_changed_window_is_a_new_entry() {
    let mut s = world();
    let k = key("acme", T0);
    s.apply(T0 + 1, &lease(&s, 1, k.clone(), 400, 0)).unwrap();
    let lower = serde_json::from_value(serde_json::json!({
        "id": "r", "upstream": "u",
        "limits": {"quotas": [{"name": "per-minute", "key": ["consumer"], "window": "minute", "limit": 300}]}
    }))
    .unwrap();
    s.apply(T0 + 2, &Command::PutRoute { route: lower, expected_revision: None }).unwrap();
    s.apply(T0 + 3, &lease(&s, 2, k.clone(), 100, 0)).unwrap();
    let e = s.quota_entry(&k).unwrap();
    assert_eq!((e.held_by(&h(2)), e.limit), (0, 400), "nothing more is granted above the new limit");
    let hourly = serde_json::from_value(serde_json::json!({
        "id": "r", "upstream": "u",
        "limits": {"quotas": [{"name": "per-minute", "key": ["consumer"], "window": "hour", "limit": 300}]}
    }))
    .unwrap();
    s.apply(T0 + 4, &Command::PutRoute { route: hourly, expected_revision: None }).unwrap();
    s.apply(T0 + 5, &lease(&s, 2, k.clone(), 100, 0)).unwrap();
    assert_eq!(s.quota_entry(&k).unwrap().held_by(&h(2)), 0, "asks for the old window kind are ignored");
    let mut hour_key = k.clone();
    hour_key.window = Window::Hour;
    hour_key.window_start_ms = Window::Hour.bounds(T0).0;
    s.apply(T0 + 6, &lease(&s, 2, hour_key.clone(), 100, 0)).unwrap();
    assert_eq!(s.quota_entry(&hour_key).unwrap().held_by(&h(2)), 100);
}

#[test]
fn a_reset_by_an_admin_is_in_the_audit_trail_with_what_the_entry_was() {
    use raftgate_model::governance::{Actor, Role};
    let mut s = world();
    let k = key("acme", T0);
    s.apply(T0 + 1, &lease(&s, 1, k.clone(), 100, 0)).unwrap();
    let admin = Actor { principal: "carol".into(), role: Role::Admin, rpc: "ResetQuota".into() };
    s.apply_as(T0 + 2, &Command::ResetQuota { key: k.clone() }, Some(&admin)).unwrap();
    let r = s.audit().tail(1).next().expect("recorded").clone();
    assert_eq!((r.principal.as_str(), r.rpc.as_str(), r.action.as_str()), ("carol", "ResetQuota", "reset_quota"));
    assert_eq!(r.object, format!("quota/{}", k.ledger_key()));
    assert!(r.before.is_some() && r.after.is_none(), "the entry's digest before, nothing after");
}
