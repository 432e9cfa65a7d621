//! `State::apply` for identity: API keys, issuers, certificate identities
//! and revocations.

use proptest::prelude::*;
use raftgate_model::identity::{Digest, RevocationTarget, MAX_KEYS_PER_CONSUMER, REVOCATION_EXPIRY_MARGIN_MS};
use raftgate_model::{Command, Consumer, KeyRotation, ObjectId, Rejection, State};

fn id(s: &str) -> ObjectId {
    ObjectId::parse(s).unwrap()
}

fn consumer(json: serde_json::Value) -> Command {
    Command::PutConsumer { consumer: serde_json::from_value::<Consumer>(json).unwrap(), expected_revision: None }
}

fn key(kid: &str, owner: &str) -> Command {
    Command::CreateApiKey { id: id(kid), consumer: id(owner), hash: Digest([7; 32]), expires_ms: None, rotates: None }
}

fn issuer(iss: &str, oid: &str) -> Command {
    Command::PutIssuer {
        issuer: serde_json::from_value(serde_json::json!({
            "id": oid, "issuer": iss, "algorithms": ["HS256"], "secret": "env:IDP_SECRET"
        }))
        .unwrap(),
        expected_revision: None,
    }
}

fn with_consumers(names: &[&str]) -> State {
    let mut s = State::default();
    for n in names {
        s.apply(1_000, &consumer(serde_json::json!({ "id": n }))).unwrap();
    }
    s
}

#[test]
fn an_api_key_needs_an_existing_consumer_and_a_new_id() {
    let mut s = with_consumers(&["acme"]);
    let before = s.clone();
    assert!(matches!(s.apply(2_000, &key("k1", "nobody")), Err(Rejection::Invalid { .. })));
    assert_eq!(s, before);
    s.apply(2_000, &key("k1", "acme")).unwrap();
    let stored = &s.api_keys()[&id("k1")];
    assert_eq!(stored.spec.created_ms, 2_000, "creation time is the leader's");
    let before = s.clone();
    assert!(matches!(s.apply(3_000, &key("k1", "acme")), Err(Rejection::Conflict { .. })));
    assert_eq!(s, before);
    assert_eq!(s.keys_of(&id("acme")).count(), 1);
}

#[test]
fn rotation_keeps_the_old_key_for_the_overlap_only() {
    let mut s = with_consumers(&["acme", "other"]);
    s.apply(2_000, &key("old", "acme")).unwrap();
    s.apply(2_000, &key("theirs", "other")).unwrap();
    let rotate = |old: &str| Command::CreateApiKey {
        id: id("new"),
        consumer: id("acme"),
        hash: Digest([9; 32]),
        expires_ms: None,
        rotates: Some(KeyRotation { old: id(old), overlap_ms: 60_000 }),
    };
    assert!(s.apply(10_000, &rotate("theirs")).is_err(), "a key of another consumer cannot be rotated");
    s.apply(10_000, &rotate("old")).unwrap();
    assert_eq!(s.api_keys()[&id("old")].spec.expires_ms, Some(70_000));
    assert_eq!(s.api_keys()[&id("new")].spec.expires_ms, None);
}

#[test]
fn a_consumer_holds_a_bounded_number_of_keys_and_expired_ones_make_room() {
    let mut s = with_consumers(&["acme"]);
    for i in 0..MAX_KEYS_PER_CONSUMER {
        let cmd = Command::CreateApiKey {
            id: id(&format!("k{i}")),
            consumer: id("acme"),
            hash: Digest([1; 32]),
            expires_ms: (i == 0).then_some(5_000),
            rotates: None,
        };
        s.apply(2_000, &cmd).unwrap();
    }
    assert!(matches!(s.apply(3_000, &key("extra", "acme")), Err(Rejection::TableFull { .. })));
    // After k0 expires, a new key replaces it.
    s.apply(6_000, &key("extra", "acme")).unwrap();
    assert!(!s.api_keys().contains_key(&id("k0")));
    assert_eq!(s.keys_of(&id("acme")).count(), MAX_KEYS_PER_CONSUMER);
}

#[test]
fn deleting_a_consumer_deletes_its_keys_and_certificate_identities() {
    let mut s = State::default();
    let fp = "ab".repeat(32);
    s.apply(1, &consumer(serde_json::json!({ "id": "acme", "certificates": [{ "sha256": fp }] }))).unwrap();
    s.apply(2, &key("k1", "acme")).unwrap();
    assert_eq!(s.cert_owner(&format!("sha256:{fp}")), Some(&id("acme")));
    s.apply(3, &Command::DeleteConsumer { id: id("acme"), expected_revision: None }).unwrap();
    assert!(s.api_keys().is_empty());
    assert_eq!(s.keys_of(&id("acme")).count(), 0);
    assert_eq!(s.cert_owner(&format!("sha256:{fp}")), None);
}

#[test]
fn a_certificate_identity_stands_for_one_consumer_only() {
    let mut s = State::default();
    s.apply(1, &consumer(serde_json::json!({ "id": "a", "certificates": [{ "san": "svc.internal" }] }))).unwrap();
    let before = s.clone();
    let err = s.apply(2, &consumer(serde_json::json!({ "id": "b", "certificates": [{ "san": "svc.internal" }] })));
    assert!(matches!(err, Err(Rejection::Conflict { .. })), "{err:?}");
    assert_eq!(s, before);
    // The owner may change its own list.
    s.apply(3, &consumer(serde_json::json!({ "id": "a", "certificates": [{ "cn": "svc" }] }))).unwrap();
    assert_eq!(s.cert_owner("san:svc.internal"), None);
    assert_eq!(s.cert_owner("cn:svc"), Some(&id("a")));
}

#[test]
fn two_issuers_cannot_trust_the_same_iss_and_a_used_issuer_stays() {
    let mut s = State::default();
    s.apply(1, &issuer("https://idp/", "idp")).unwrap();
    assert!(matches!(s.apply(2, &issuer("https://idp/", "idp2")), Err(Rejection::Conflict { .. })));
    s.apply(
        3,
        &Command::PutUpstream {
            upstream: serde_json::from_value(serde_json::json!({ "id": "u", "targets": [{ "addr": "127.0.0.1:1" }] }))
                .unwrap(),
            expected_revision: None,
        },
    )
    .unwrap();
    let route = serde_json::from_value(serde_json::json!({
        "id": "r", "upstream": "u", "auth": { "jwt": { "issuers": ["idp"] } }
    }))
    .unwrap();
    s.apply(4, &Command::PutRoute { route, expected_revision: None }).unwrap();
    let err = s.apply(5, &Command::DeleteIssuer { id: id("idp"), expected_revision: None }).unwrap_err();
    assert!(matches!(err, Rejection::Conflict { .. }), "{err}");
    let route = serde_json::from_value(serde_json::json!({
        "id": "r2", "upstream": "u", "paths": [{"prefix": "/x"}], "auth": { "jwt": { "issuers": ["missing"] } }
    }))
    .unwrap();
    let err = s.apply(6, &Command::PutRoute { route, expected_revision: None }).unwrap_err();
    assert!(err.to_string().contains("auth.jwt.issuers[0]"), "{err}");
}

fn token(jti: &str) -> RevocationTarget {
    RevocationTarget::Token { issuer: id("idp"), jti: jti.into() }
}

#[test]
fn token_revocations_need_the_expiry_and_leave_after_it() {
    let mut s = State::default();
    s.apply(1_000, &issuer("https://idp/", "idp")).unwrap();
    let revoke =
        |jti: &str, until: Option<u64>| Command::Revoke { target: token(jti), until_ms: until, reason: String::new() };
    assert!(matches!(s.apply(2_000, &revoke("t1", None)), Err(Rejection::Invalid { .. })));
    s.apply(2_000, &revoke("t1", Some(10_000))).unwrap();
    s.apply(2_000, &revoke("t2", Some(50_000))).unwrap();
    assert_eq!(s.revocations().len(), 2);
    // Still held within the margin after exp.
    s.apply(10_000 + REVOCATION_EXPIRY_MARGIN_MS - 1, &issuer("https://idp/", "idp")).unwrap();
    assert_eq!(s.revocations().len(), 2);
    s.apply(10_000 + REVOCATION_EXPIRY_MARGIN_MS + 1, &issuer("https://idp/", "idp")).unwrap();
    assert_eq!(s.revocations().len(), 1);
    assert!(s.revocations().contains_key(&token("t2").key()));
}

#[test]
fn revocations_of_unknown_objects_are_refused_and_change_nothing() {
    let mut s = with_consumers(&["acme"]);
    let before = s.clone();
    for target in [
        RevocationTarget::ApiKey { id: id("nope") },
        RevocationTarget::Consumer { id: id("nobody") },
        RevocationTarget::IssuerKey { issuer: id("nope"), kid: "k".into() },
    ] {
        let err = s.apply(5, &Command::Revoke { target, until_ms: None, reason: String::new() }).unwrap_err();
        assert!(matches!(err, Rejection::NotFound { .. }), "{err}");
        assert_eq!(s, before);
    }
    let cert = RevocationTarget::Certificate { sha256: Digest([3; 32]) };
    s.apply(2_000, &Command::Revoke { target: cert.clone(), until_ms: None, reason: "lost laptop".into() }).unwrap();
    let stored = &s.revocations()[&cert.key()];
    assert_eq!((stored.revoked_ms, stored.reason.as_str()), (2_000, "lost laptop"));
    s.apply(7, &Command::Unrevoke { target: cert.clone() }).unwrap();
    assert!(s.revocations().is_empty());
    assert!(s.apply(8, &Command::Unrevoke { target: cert }).is_err());
}

#[derive(Debug, Clone)]
enum Op {
    Key(u8, u8),
    Rotate(u8, u8, u8),
    DeleteKey(u8),
    DeleteConsumer(u8),
    AddConsumer(u8),
    RevokeToken(u8, u16),
    Unrevoke(u8),
}

fn op() -> impl Strategy<Value = Op> {
    prop_oneof![
        (0..8u8, 0..3u8).prop_map(|(k, c)| Op::Key(k, c)),
        (0..8u8, 0..8u8, 0..3u8).prop_map(|(n, o, c)| Op::Rotate(n, o, c)),
        (0..8u8).prop_map(Op::DeleteKey),
        (0..3u8).prop_map(Op::DeleteConsumer),
        (0..3u8).prop_map(Op::AddConsumer),
        (0..6u8, 0..200u16).prop_map(|(j, t)| Op::RevokeToken(j, t)),
        (0..6u8).prop_map(Op::Unrevoke),
    ]
}

fn command(op: &Op) -> Command {
    let kid = |k: u8| id(&format!("k{k}"));
    let cid = |c: u8| id(&format!("c{c}"));
    match op {
        Op::Key(k, c) => key(&format!("k{k}"), &format!("c{c}")),
        Op::Rotate(n, o, c) => Command::CreateApiKey {
            id: kid(*n),
            consumer: cid(*c),
            hash: Digest([*n; 32]),
            expires_ms: None,
            rotates: Some(KeyRotation { old: kid(*o), overlap_ms: 500 }),
        },
        Op::DeleteKey(k) => Command::DeleteApiKey { id: kid(*k) },
        Op::DeleteConsumer(c) => Command::DeleteConsumer { id: cid(*c), expected_revision: None },
        Op::AddConsumer(c) => consumer(serde_json::json!({ "id": format!("c{c}") })),
        Op::RevokeToken(j, t) => Command::Revoke {
            target: token(&format!("j{j}")),
            until_ms: Some(*t as u64 * 1_000),
            reason: String::new(),
        },
        Op::Unrevoke(j) => Command::Unrevoke { target: token(&format!("j{j}")) },
    }
}

proptest! {
    /// Whatever the order of key, consumer and revocation commands: rejected
    /// ones change nothing, the per-consumer key index matches the key table,
    /// every key's consumer exists, and the same log gives the same bytes.
    #[test]
    fn identity_commands_keep_the_indexes_consistent(ops in proptest::collection::vec(op(), 1..60)) {
        let mut s = State::default();
        s.apply(0, &issuer("https://idp/", "idp")).unwrap();
        let mut replay = s.clone();
        for (i, op) in ops.iter().enumerate() {
            let t = i as u64 * 1_000;
            let cmd = command(op);
            let before = s.clone();
            if s.apply(t, &cmd).is_err() {
                prop_assert_eq!(&s, &before);
            }
            let _ = replay.apply(t, &cmd);
            for (kid, stored) in s.api_keys().iter() {
                prop_assert!(s.consumers().contains_key(&stored.spec.consumer));
                prop_assert!(s.keys_of(&stored.spec.consumer).any(|k| k == kid));
            }
            let indexed: usize = s.consumers().keys().map(|c| s.keys_of(c).count()).sum();
            prop_assert_eq!(indexed, s.api_keys().len());
            for r in s.revocations().values() {
                let until = r.until_ms.unwrap();
                prop_assert!(until + REVOCATION_EXPIRY_MARGIN_MS >= t.saturating_sub(1_000));
            }
        }
        prop_assert_eq!(s.to_bytes(), replay.to_bytes());
    }
}
