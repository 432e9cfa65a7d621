//! Forgetting a consumer and pruning the audit trail.

use raftgate_model::governance::{Actor, Role};
use raftgate_model::identity::{Digest, RevocationTarget};
use raftgate_model::traffic::{LeaseAsk, QuotaKey, QuotaScope, Window};
use raftgate_model::{Command, Effect, ObjectId, Rejection, State};

const T: u64 = 1_764_000_000_000;
const PSEUDONYM: &str = "forgotten-0123456789abcdef";

fn id(s: &str) -> ObjectId {
    ObjectId::parse(s).unwrap()
}

fn admin(rpc: &str) -> Actor {
    Actor { principal: "alice".into(), role: Role::Admin, rpc: rpc.into() }
}

fn json<T: serde::de::DeserializeOwned>(v: serde_json::Value) -> T {
    serde_json::from_value(v).unwrap()
}

fn quota_key(value: &str) -> QuotaKey {
    let (start, _) = Window::Hour.bounds(T);
    QuotaKey {
        scope: QuotaScope::Route(id("orders")),
        quota: id("q"),
        value: value.into(),
        window: Window::Hour,
        window_start_ms: start,
    }
}

/// acme with two keys, a certificate, a revocation and quota use; bob beside it.
fn world() -> State {
    let mut s = State::default();
    let mut t = T;
    fn run(s: &mut State, c: Command) {
        let t = s.audit().head().0 + T;
        s.apply_as(t, &c, Some(&admin("Test"))).unwrap_or_else(|r| panic!("{}: {r}", c.kind()));
    }
    run(
        &mut s,
        Command::PutUpstream {
            upstream: json(serde_json::json!({"id": "u", "targets": [{"addr": "127.0.0.1:1"}]})),
            expected_revision: None,
        },
    );
    for c in ["acme", "bob"] {
        let consumer = json(
            serde_json::json!({"id": c, "certificates": [{"sha256": if c == "acme" { "07".repeat(32) } else { "08".repeat(32) }}]}),
        );
        run(&mut s, Command::PutConsumer { consumer, expected_revision: None });
    }
    let route = json(serde_json::json!({
        "id": "orders", "upstream": "u", "paths": [{"prefix": "/orders"}],
        "auth": {"api_key": {"header": "x-api-key"}, "consumers": ["acme"]},
        "limits": {"quotas": [{"name": "q", "key": ["consumer"], "window": "hour", "limit": 100}]}
    }));
    run(&mut s, Command::PutRoute { route, expected_revision: None });
    let shared = json(serde_json::json!({
        "id": "shared", "upstream": "u", "paths": [{"prefix": "/shared"}],
        "auth": {"api_key": {"header": "x-api-key"}, "consumers": ["acme", "bob"]}
    }));
    run(&mut s, Command::PutRoute { route: shared, expected_revision: None });
    for (key, consumer) in [("00000000000000a1", "acme"), ("00000000000000a2", "acme"), ("00000000000000b1", "bob")] {
        run(
            &mut s,
            Command::CreateApiKey {
                id: id(key),
                consumer: id(consumer),
                hash: Digest([1; 32]),
                expires_ms: None,
                rotates: None,
            },
        );
    }
    run(
        &mut s,
        Command::Revoke {
            target: RevocationTarget::ApiKey { id: id("00000000000000a1") },
            until_ms: None,
            reason: "leaked".into(),
        },
    );
    run(
        &mut s,
        Command::Revoke {
            target: RevocationTarget::ApiKey { id: id("00000000000000b1") },
            until_ms: None,
            reason: String::new(),
        },
    );
    let asks =
        ["acme", "bob"].into_iter().map(|c| LeaseAsk { key: quota_key(c), epoch: 0, want: 10, give_back: 0 }).collect();
    t += 100;
    s.apply(t, &Command::QuotaLeases { node: 1, incarnation: 1, asks }).unwrap();
    let reset = Command::ResetQuota { key: quota_key("acme") };
    // An audited write that names acme's ledger entry (then the lease again).
    run(&mut s, reset);
    let asks = vec![LeaseAsk { key: quota_key("acme"), epoch: 0, want: 5, give_back: 0 }];
    s.apply(t + 100, &Command::QuotaLeases { node: 1, incarnation: 1, asks }).unwrap();
    s
}

fn forget(consumer: &str) -> Command {
    Command::ForgetConsumer { consumer: id(consumer), pseudonym: id(PSEUDONYM) }
}

#[test]
fn a_forget_removes_the_consumer_its_keys_revocations_and_quota_entries() {
    let mut s = world();
    assert!(s.audit().after(0).any(|r| r.object.contains("acme")));
    let effect = s.apply_as(T + 1_000, &forget("acme"), Some(&admin("ForgetConsumer"))).unwrap();
    let Effect::Forgotten { rewritten, .. } = effect else { panic!("{effect:?}") };
    assert_eq!(rewritten, 5, "put_consumer, two keys, one revocation, the reset quota; nothing of bob");

    assert!(!s.consumers().contains_key(&id("acme")));
    assert!(s.consumers().contains_key(&id("bob")), "bob stays");
    assert_eq!(s.keys_of(&id("acme")).count(), 0);
    assert!(!s.api_keys().contains_key(&id("00000000000000a1")) && !s.api_keys().contains_key(&id("00000000000000a2")));
    assert!(s.api_keys().contains_key(&id("00000000000000b1")));
    assert!(!s.revocations().contains_key("api_key:00000000000000a1"));
    assert!(s.revocations().contains_key("api_key:00000000000000b1"));
    assert!(s.cert_owners().values().all(|o| o.as_str() == "bob"));
    assert!(s.quota_entry(&quota_key("acme")).is_none());
    assert!(s.quota_entry(&quota_key("bob")).is_some());

    // Nothing in the whole state names acme or its keys any more.
    let bytes = String::from_utf8(s.to_bytes()).unwrap();
    for needle in ["acme", "00000000000000a1", "00000000000000a2", &"07".repeat(32)] {
        assert!(!bytes.contains(needle), "{needle} is still in the state");
    }
    assert!(bytes.contains(PSEUDONYM));
}

#[test]
fn route_lists_get_the_pseudonym_and_never_become_empty() {
    let mut s = world();
    s.apply_as(T + 1_000, &forget("acme"), Some(&admin("ForgetConsumer"))).unwrap();
    let consumers = |r: &str| s.routes()[&id(r)].spec.auth.as_ref().unwrap().consumers.clone();
    assert_eq!(consumers("orders"), vec![id(PSEUDONYM)], "a list of one keeps one entry: nobody, not anybody");
    assert_eq!(consumers("shared"), vec![id(PSEUDONYM), id("bob")]);
}

#[test]
fn the_rewritten_trail_verifies_and_the_forget_record_names_only_the_pseudonym() {
    let mut s = world();
    let before = s.audit().verify();
    s.apply_as(T + 1_000, &forget("acme"), Some(&admin("ForgetConsumer"))).unwrap();
    let v = s.audit().verify();
    assert_eq!(v.first_broken, None, "{v:?}");
    assert_eq!(v.anchor, before.anchor);
    assert_eq!(v.head.0, before.head.0 + 1);
    let last = s.audit().tail(1).next().unwrap().clone();
    assert_eq!(last.action, "forget_consumer");
    assert_eq!(last.object, format!("consumer/{PSEUDONYM}"));
    assert!(last.outcome.contains("5 audit records"), "{}", last.outcome);
    assert_eq!(last.before, Some(before.head.1), "the forget record carries the head hash it replaced");
    // Records before the first one that named acme keep their hashes.
    let first_changed = s.audit().after(0).find(|r| r.object.contains(PSEUDONYM)).unwrap().seq;
    let old = world();
    for r in s.audit().after(0).take_while(|r| r.seq < first_changed) {
        assert_eq!(Some(r), old.audit().get(r.seq));
    }
}

#[test]
fn a_forget_is_deterministic() {
    let (mut a, mut b) = (world(), world());
    a.apply_as(T + 1_000, &forget("acme"), Some(&admin("ForgetConsumer"))).unwrap();
    b.apply_as(T + 1_000, &forget("acme"), Some(&admin("ForgetConsumer"))).unwrap();
    assert_eq!(a.to_bytes(), b.to_bytes());
}

#[test]
fn bad_forgets_change_nothing() {
    let mut s = world();
    let before = s.clone();
    let bad = Command::ForgetConsumer { consumer: id("acme"), pseudonym: id("not-a-pseudonym") };
    assert!(matches!(s.apply_as(T, &bad, Some(&admin("ForgetConsumer"))), Err(Rejection::Invalid { .. })));
    assert!(matches!(
        s.apply_as(T, &forget("nobody"), Some(&admin("ForgetConsumer"))),
        Err(Rejection::NotFound { .. })
    ));
    let again = Command::ForgetConsumer { consumer: id(PSEUDONYM), pseudonym: id(PSEUDONYM) };
    assert!(s.apply_as(T, &again, Some(&admin("ForgetConsumer"))).is_err());
    assert_eq!(s, before);
    // Once forgotten, nothing names it: a second forget finds nothing.
    s.apply_as(T + 1_000, &forget("acme"), Some(&admin("ForgetConsumer"))).unwrap();
    assert!(matches!(s.apply_as(T + 2_000, &forget("acme"), None), Err(Rejection::NotFound { .. })));
}

#[test]
fn a_consumer_deleted_earlier_can_still_be_forgotten_from_the_trail() {
    let mut s = world();
    s.apply_as(
        T + 500,
        &Command::DeleteConsumer { id: id("bob"), expected_revision: None },
        Some(&admin("DeleteConsumer")),
    )
    .unwrap();
    let effect = s.apply_as(T + 1_000, &forget("bob"), Some(&admin("ForgetConsumer"))).unwrap();
    assert!(matches!(effect, Effect::Forgotten { rewritten, .. } if rewritten >= 2), "{effect:?}");
    assert!(!String::from_utf8(s.to_bytes()).unwrap().contains("bob"));
    assert_eq!(s.audit().verify().first_broken, None);
}

#[test]
fn a_prune_keeps_the_anchor_so_the_rest_still_verifies() {
    let mut s = world();
    let head = s.audit().head().0;
    let through = head - 3;
    let hash = s.audit().get(through).unwrap().hash;
    let export_digest = Digest([9; 32]);
    let wrong = Command::PruneAudit { through_seq: through, through_hash: Digest([0; 32]), export_digest };
    let before = s.clone();
    assert!(matches!(s.apply_as(T + 1_000, &wrong, Some(&admin("PruneAudit"))), Err(Rejection::Conflict { .. })));
    let missing = Command::PruneAudit { through_seq: head + 5, through_hash: hash, export_digest };
    assert!(matches!(s.apply_as(T + 1_000, &missing, Some(&admin("PruneAudit"))), Err(Rejection::Invalid { .. })));
    assert_eq!(s, before);

    let prune = Command::PruneAudit { through_seq: through, through_hash: hash, export_digest };
    s.apply_as(T + 1_000, &prune, Some(&admin("PruneAudit"))).unwrap();
    let v = s.audit().verify();
    assert_eq!(v.first_broken, None);
    assert_eq!(v.anchor, (through, hash));
    assert_eq!(s.audit().len(), 4, "three kept and the prune's own record");
    let last = s.audit().tail(1).next().unwrap();
    assert_eq!((last.action.as_str(), last.after), ("prune_audit", Some(export_digest)));
    assert_eq!(last.object, format!("audit/through-{through}"));
}

#[test]
fn an_ask_in_flight_at_the_forget_does_not_bring_the_consumer_back_into_the_ledger() {
    let mut s = world();
    s.apply_as(T + 1_000, &forget("acme"), Some(&admin("ForgetConsumer"))).unwrap();
    let asks = vec![
        LeaseAsk { key: quota_key("acme"), epoch: 0, want: 10, give_back: 0 },
        LeaseAsk { key: quota_key("-"), epoch: 0, want: 10, give_back: 0 },
    ];
    s.apply(T + 2_000, &Command::QuotaLeases { node: 2, incarnation: 1, asks }).unwrap();
    assert!(s.quota_entry(&quota_key("acme")).is_none());
    assert!(s.quota_entry(&quota_key("-")).is_some(), "anonymous requests still get grants");
}
