//! Audit records from `apply_as`, and all-or-nothing batches.

use raftgate_model::governance::{Actor, Role};
use raftgate_model::{Command, ObjectId, Rejection, Route, SettingKey, SettingValue, State, Upstream};

fn actor(p: &str) -> Actor {
    Actor { principal: p.into(), role: Role::Operator, rpc: "PutSetting".into() }
}

fn put(k: &str, v: &str) -> Command {
    Command::PutSetting {
        key: SettingKey::parse(k).unwrap(),
        value: SettingValue::parse(v).unwrap(),
        expected_revision: None,
    }
}

fn upstream(id: &str) -> Upstream {
    serde_json::from_value(serde_json::json!({ "id": id, "targets": [{ "addr": "127.0.0.1:9" }] })).unwrap()
}

fn route(id: &str, upstream: &str, prefix: &str) -> Route {
    serde_json::from_value(serde_json::json!({ "id": id, "upstream": upstream, "paths": [{ "prefix": prefix }] }))
        .unwrap()
}

#[test]
fn each_accepted_write_gets_a_record_with_digests_and_a_rejected_one_changes_nothing() {
    let mut s = State::default();
    s.apply_as(1_000, &put("a", "1"), Some(&actor("alice"))).unwrap();
    s.apply_as(2_000, &put("a", "2"), Some(&actor("bob"))).unwrap();
    let del = Command::DeleteSetting { key: SettingKey::parse("a").unwrap(), expected_revision: None };
    s.apply_as(3_000, &del, Some(&actor("carol"))).unwrap();
    let before = s.clone();
    assert!(s.apply_as(4_000, &del, Some(&actor("dave"))).is_err());
    assert_eq!(s, before, "a rejected write leaves no record");
    s.apply(5_000, &put("b", "1")).unwrap();

    let r: Vec<_> = s.audit().after(0).collect();
    assert_eq!(r.len(), 3, "only writes with an actor are recorded");
    assert_eq!((r[0].principal.as_str(), r[0].object.as_str(), r[0].time_ms), ("alice", "setting/a", 1_000));
    assert!(r[0].before.is_none() && r[0].after.is_some());
    assert_eq!(r[1].before, r[0].after, "the next write's before is the last write's after");
    assert_ne!(r[1].after, r[1].before);
    assert!(r[2].after.is_none() && r[2].before == r[1].after);
    assert_eq!(r[2].action, "delete_setting");
    assert!(s.audit().verify().first_broken.is_none());
}

#[test]
fn a_batch_applies_whole_or_not_at_all() {
    let mut s = State::default();
    let good = Command::Batch {
        commands: vec![
            Command::PutUpstream { upstream: upstream("u"), expected_revision: None },
            Command::PutRoute { route: route("r", "u", "/a"), expected_revision: None },
        ],
    };
    s.apply_as(1_000, &good, Some(&actor("alice"))).unwrap();
    assert_eq!(s.routes().len(), 1);
    assert_eq!(s.audit().len(), 2, "one record per object in the batch");

    let before = s.clone();
    let bad = Command::Batch {
        commands: vec![
            Command::PutRoute { route: route("r2", "u", "/b"), expected_revision: None },
            Command::PutRoute { route: route("r3", "missing", "/c"), expected_revision: None },
        ],
    };
    let err = s.apply_as(2_000, &bad, Some(&actor("alice"))).unwrap_err();
    assert!(matches!(&err, Rejection::Invalid { field, .. } if field.starts_with("commands[1]")), "{err}");
    assert_eq!(s, before, "nothing of a rejected batch stays, the audit trail included");

    let stale = Command::Batch {
        commands: vec![Command::DeleteRoute { id: ObjectId::parse("r").unwrap(), expected_revision: Some(1) }],
    };
    assert!(matches!(s.apply(3_000, &stale), Err(Rejection::Conflict { .. })), "a stale revision refuses the batch");
    let nested = Command::Batch { commands: vec![good.clone()] };
    assert!(s.apply(3_000, &nested).is_err());
    assert!(s.apply(3_000, &Command::Batch { commands: vec![] }).is_err());
}

#[test]
fn node_traffic_is_not_audited_and_membership_changes_are() {
    use raftgate_model::traffic::{LeaseAsk, QuotaKey, QuotaScope, Window};
    let mut s = State::default();
    let node = Actor { principal: "node:1".into(), role: Role::Node, rpc: "SubmitQuotaLeases".into() };
    let ask = LeaseAsk {
        key: QuotaKey {
            scope: QuotaScope::Route(ObjectId::parse("r").unwrap()),
            quota: ObjectId::parse("q").unwrap(),
            value: "v".into(),
            window: Window::Minute,
            window_start_ms: 0,
        },
        epoch: 0,
        want: 1,
        give_back: 0,
    };
    s.apply_as(1_000, &Command::QuotaLeases { node: 1, incarnation: 1, asks: vec![ask] }, Some(&node)).unwrap();
    assert_eq!(s.audit().len(), 0, "lease batches would flood the trail");

    let admin = Actor { principal: "carol".into(), role: Role::Admin, rpc: "AddLearner".into() };
    let change = Command::MembershipChanged { action: "add_learner".into(), node: 4, log_index: 17 };
    s.apply_as(2_000, &change, Some(&admin)).unwrap();
    let r = s.audit().tail(1).next().unwrap();
    assert_eq!((r.principal.as_str(), r.action.as_str(), r.object.as_str()), ("carol", "add_learner", "node/4"));
}
