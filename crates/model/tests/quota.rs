//! The quota ledger: grants never over-allocate, whatever the interleaving
//! of asks, returns, expiry and resets from several nodes.

use proptest::prelude::*;
use raftgate_model::traffic::{LeaseAsk, QuotaKey, QuotaScope, Window};
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
    s
}

fn key(value: &str, t: u64) -> QuotaKey {
    QuotaKey {
        scope: QuotaScope::Route(id("r")),
        quota: id("per-minute"),
        value: value.into(),
        window_start_ms: Window::Minute.bounds(t).0,
    }
}

fn lease(node: u64, k: QuotaKey, want: u64, give_back: u64) -> Command {
    Command::QuotaLeases { node, asks: vec![LeaseAsk { key: k, want, give_back }] }
}

#[test]
fn grants_follow_the_ask_until_the_endgame_shares_the_rest() {
    let mut s = world();
    let k = key("acme", T0);
    s.apply(T0 + 1, &lease(1, k.clone(), 400, 0)).unwrap();
    s.apply(T0 + 2, &lease(2, k.clone(), 100, 0)).unwrap();
    let e = s.quota_entry(&k).unwrap();
    assert_eq!((e.held_by(1), e.held_by(2)), (400, 100));
    // 500 left, 3 nodes: at most ceil(500 / 6) = 84.
    s.apply(T0 + 3, &lease(3, k.clone(), 400, 0)).unwrap();
    assert_eq!(s.quota_entry(&k).unwrap().held_by(3), 84);
    // Node 1 gives 300 back; node 3 may then get more.
    s.apply(T0 + 4, &lease(1, k.clone(), 0, 300)).unwrap();
    let e = s.quota_entry(&k).unwrap();
    assert_eq!((e.held_by(1), e.held()), (100, 284));
    // A node cannot give back more than it holds.
    s.apply(T0 + 5, &lease(2, k.clone(), 0, 10_000)).unwrap();
    assert_eq!(s.quota_entry(&k).unwrap().held_by(2), 0);
}

#[test]
fn entries_end_with_their_window_and_a_reset_starts_a_new_epoch() {
    let mut s = world();
    let k = key("acme", T0);
    s.apply(T0 + 1, &lease(1, k.clone(), 1_000, 0)).unwrap();
    assert_eq!(s.quota_entry(&k).unwrap().held_by(1), 500, "one ask takes at most half of what is left");
    for _ in 0..20 {
        s.apply(T0 + 1, &lease(1, k.clone(), 1_000, 0)).unwrap();
    }
    assert_eq!(s.quota_entry(&k).unwrap().held_by(1), 1_000, "repeated asks reach the last unit");
    let first = s.quota_entry(&k).unwrap().epoch;
    s.apply(T0 + 2, &lease(2, k.clone(), 10, 0)).unwrap();
    assert_eq!(s.quota_entry(&k).unwrap().held_by(2), 0, "nothing left");
    s.apply(T0 + 3, &Command::ResetQuota { key: k.clone() }).unwrap();
    assert!(s.quota_entry(&k).is_none());
    s.apply(T0 + 4, &lease(2, k.clone(), 10, 0)).unwrap();
    let e = s.quota_entry(&k).unwrap();
    assert!(e.epoch > first);
    assert_eq!(e.held_by(2), 10);
    // No grant for an ended window; the entry leaves after the margin.
    s.apply(T0 + 60_000, &lease(3, k.clone(), 10, 0)).unwrap();
    assert_eq!(s.quota_entry(&k).unwrap().held_by(3), 0);
    s.apply(T0 + 200_000, &lease(3, key("acme", T0 + 200_000), 1, 0)).unwrap();
    assert!(s.quota_entry(&k).is_none(), "expired entries are dropped");
    // A window start that is not one of the quota's windows is ignored.
    let mut odd = key("acme", T0 + 200_000);
    odd.window_start_ms += 1;
    s.apply(T0 + 200_001, &lease(1, odd.clone(), 5, 0)).unwrap();
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
                    s.apply(t, &lease(node, key(&format!("c{k}"), t), want, 0)).unwrap();
                }
                Op::Return { node, key: k, amount } | Op::Spend { node, key: k, amount } => {
                    let qk = key(&format!("c{k}"), t);
                    let Some(entry) = s.quota_entry(&qk) else { continue };
                    let state = local.entry((node, k)).or_insert((entry.epoch, 0, 0));
                    if state.0 != entry.epoch {
                        *state = (entry.epoch, 0, 0);
                    }
                    let granted = entry.granted.get(&node).copied().unwrap_or(0);
                    let available = granted - state.1 - state.2;
                    let n = amount.min(available);
                    if matches!(op, Op::Spend { .. }) {
                        state.1 += n;
                        let total = admitted.entry((k, qk.window_start_ms, entry.epoch)).or_insert(0);
                        *total += n;
                        prop_assert!(*total <= LIMIT, "admitted {} > {LIMIT}", *total);
                    } else {
                        state.2 += n;
                        s.apply(t, &lease(node, qk, 0, n)).unwrap();
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
