//! `State::apply` for routes and upstreams: references, conflicts and
//! validation are enforced in the replicated state, and a rejected command
//! changes nothing.

use raftgate_model::{Command, Effect, ObjectId, Rejection, Route, State, Upstream};

fn upstream(id: &str) -> Upstream {
    serde_json::from_value(serde_json::json!({"id": id, "targets": [{"addr": "127.0.0.1:9000"}]})).unwrap()
}
fn route(json: serde_json::Value) -> Route {
    serde_json::from_value(json).unwrap()
}
fn put_upstream(u: Upstream) -> Command {
    Command::PutUpstream { upstream: u, expected_revision: None }
}
fn put_route(r: Route) -> Command {
    Command::PutRoute { route: r, expected_revision: None }
}
fn id(s: &str) -> ObjectId {
    ObjectId::parse(s).unwrap()
}

#[test]
fn a_route_needs_an_existing_upstream() {
    let mut s = State::default();
    let r = route(serde_json::json!({"id": "r", "upstream": "api"}));
    let err = s.apply(1, &put_route(r.clone())).unwrap_err();
    assert!(matches!(&err, Rejection::Invalid { field, .. } if field == "upstream"), "{err}");
    assert_eq!(s, State::default());
    s.apply(2, &put_upstream(upstream("api"))).unwrap();
    let e = s.apply(3, &put_route(r)).unwrap();
    assert_eq!(e, Effect::ObjectPut { kind: "route".into(), id: id("r"), revision: 2, created: true });
    assert_eq!(s.routing_revision(), 2);
    assert_eq!(s.routes().len(), 1);
}

#[test]
fn an_upstream_in_use_cannot_be_deleted() {
    let mut s = State::default();
    s.apply(1, &put_upstream(upstream("api"))).unwrap();
    s.apply(2, &put_route(route(serde_json::json!({"id": "r", "upstream": "api"})))).unwrap();
    let before = s.clone();
    let err = s.apply(3, &Command::DeleteUpstream { id: id("api"), expected_revision: None }).unwrap_err();
    assert!(err.to_string().contains("used by route(s) r"), "{err}");
    assert_eq!(s, before);
    s.apply(4, &Command::DeleteRoute { id: id("r"), expected_revision: None }).unwrap();
    s.apply(5, &Command::DeleteUpstream { id: id("api"), expected_revision: None }).unwrap();
    assert!(s.upstreams().is_empty() && s.routes().is_empty());
}

#[test]
fn a_conflicting_route_is_rejected_whole() {
    let mut s = State::default();
    s.apply(1, &put_upstream(upstream("api"))).unwrap();
    s.apply(2, &put_route(route(serde_json::json!({"id": "a", "upstream": "api", "paths": [{"prefix": "/v1"}]}))))
        .unwrap();
    let before = s.clone();
    let b = route(serde_json::json!({"id": "b", "upstream": "api", "paths": [{"exact": "/x"}, {"prefix": "/v1"}]}));
    let err = s.apply(3, &put_route(b)).unwrap_err();
    assert!(matches!(err, Rejection::Conflict { .. }), "{err}");
    assert_eq!(s, before);
    // Replacing route a with itself is not a conflict.
    s.apply(
        4,
        &put_route(route(
            serde_json::json!({"id": "a", "upstream": "api", "paths": [{"prefix": "/v1"}], "priority": 1}),
        )),
    )
    .unwrap();
}

#[test]
fn invalid_objects_are_rejected_by_apply_too() {
    let mut s = State::default();
    let mut u = upstream("api");
    u.targets.clear();
    let err = s.apply(1, &put_upstream(u)).unwrap_err();
    assert!(matches!(&err, Rejection::Invalid { field, .. } if field == "targets"), "{err}");
    assert_eq!(s, State::default());
}

#[test]
fn stale_revisions_are_refused_for_objects() {
    let mut s = State::default();
    s.apply(1, &put_upstream(upstream("api"))).unwrap();
    let stale = Command::PutUpstream { upstream: upstream("api"), expected_revision: Some(9) };
    assert!(matches!(s.apply(2, &stale), Err(Rejection::RevisionMismatch { actual: 1, .. })));
    let fresh = Command::PutUpstream { upstream: upstream("api"), expected_revision: Some(1) };
    s.apply(3, &fresh).unwrap();
}

#[test]
fn routing_state_survives_a_snapshot_round_trip_byte_for_byte() {
    let mut s = State::default();
    s.apply(1, &put_upstream(upstream("api"))).unwrap();
    s.apply(2, &put_route(route(serde_json::json!({"id": "a", "upstream": "api", "hosts": ["*.example.com"]}))))
        .unwrap();
    let bytes = s.to_bytes();
    let back = State::from_bytes(&bytes).unwrap();
    assert_eq!(back, s);
    assert_eq!(back.to_bytes(), bytes);
    // A snapshot written before routes existed still decodes.
    let old = br#"{"revision":3,"time_ms":5,"settings":{}}"#;
    assert_eq!(State::from_bytes(old).unwrap().revision(), 3);
}

#[test]
fn consumers_are_stored_replaced_and_deleted_with_revisions() {
    use raftgate_model::Consumer;
    let mut s = State::default();
    let c: Consumer = serde_json::from_value(serde_json::json!({"id": "acme", "groups": ["partners"]})).unwrap();
    let e = s.apply(1, &Command::PutConsumer { consumer: c.clone(), expected_revision: Some(0) }).unwrap();
    assert_eq!(e, Effect::ObjectPut { kind: "consumer".into(), id: id("acme"), revision: 1, created: true });
    assert_eq!(s.routing_revision(), 0, "consumers do not rebuild routing");
    let mut disabled = c.clone();
    disabled.enabled = false;
    s.apply(2, &Command::PutConsumer { consumer: disabled, expected_revision: Some(1) }).unwrap();
    assert!(!s.consumers()[&id("acme")].spec.enabled);
    let before = s.clone();
    let mut bad = c;
    bad.name = "\u{7}".into();
    assert!(matches!(
        s.apply(3, &Command::PutConsumer { consumer: bad, expected_revision: None }),
        Err(Rejection::Invalid { .. })
    ));
    assert_eq!(s, before);
    s.apply(4, &Command::DeleteConsumer { id: id("acme"), expected_revision: None }).unwrap();
    assert!(s.consumers().is_empty());
}
