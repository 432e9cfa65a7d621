//! Unit and property tests of `State::apply`: it is deterministic and a
//! rejected command changes nothing.

use proptest::prelude::*;
use raftgate_model::{Command, Effect, Rejection, SettingKey, SettingValue, State, ValueError};

fn key(s: &str) -> SettingKey {
    SettingKey::parse(s).unwrap()
}
fn value(s: &str) -> SettingValue {
    SettingValue::parse(s).unwrap()
}
fn put(k: &str, v: &str) -> Command {
    Command::PutSetting { key: key(k), value: value(v), expected_revision: None }
}

#[test]
fn put_then_get_returns_the_value_with_its_revision_and_leader_time() {
    let mut s = State::default();
    let e = s.apply(1_000, &put("limits.default", "100")).unwrap();
    assert_eq!(e, Effect::SettingPut { key: key("limits.default"), revision: 1, created: true });
    let got = s.setting(&key("limits.default")).unwrap();
    assert_eq!((got.value.as_str(), got.revision, got.updated_ms), ("100", 1, 1_000));
    let e = s.apply(2_000, &put("limits.default", "200")).unwrap();
    assert_eq!(e, Effect::SettingPut { key: key("limits.default"), revision: 2, created: false });
}

#[test]
fn leader_time_never_goes_backwards_in_state() {
    let mut s = State::default();
    s.apply(5_000, &put("a", "1")).unwrap();
    s.apply(4_000, &put("b", "1")).unwrap();
    assert_eq!(s.setting(&key("b")).unwrap().updated_ms, 5_000);
}

#[test]
fn stale_expected_revision_is_rejected_and_changes_nothing() {
    let mut s = State::default();
    s.apply(1, &put("a", "1")).unwrap();
    let before = s.clone();
    let cmd = Command::PutSetting { key: key("a"), value: value("2"), expected_revision: Some(7) };
    let err = s.apply(2, &cmd).unwrap_err();
    assert_eq!(err, Rejection::RevisionMismatch { kind: "setting".into(), key: "a".into(), expected: 7, actual: 1 });
    assert_eq!(s, before);
    let create_only = Command::PutSetting { key: key("a"), value: value("2"), expected_revision: Some(0) };
    assert!(s.apply(3, &create_only).is_err());
    assert_eq!(s, before);
}

#[test]
fn deleting_a_missing_setting_is_rejected() {
    let mut s = State::default();
    let err = s.apply(1, &Command::DeleteSetting { key: key("nope"), expected_revision: None }).unwrap_err();
    assert!(err.to_string().contains("\"nope\" not found"), "{err}");
    assert_eq!(s, State::default());
}

#[test]
fn the_settings_table_is_bounded() {
    let mut s = State::default();
    for i in 0..raftgate_model::MAX_SETTINGS {
        s.apply(1, &put(&format!("k{i}"), "v")).unwrap();
    }
    let before = s.clone();
    assert!(matches!(s.apply(2, &put("one-more", "v")), Err(Rejection::TableFull { .. })));
    assert_eq!(s, before);
    // Replacing an existing key is still allowed when full.
    s.apply(3, &put("k0", "w")).unwrap();
}

#[test]
fn invalid_keys_and_values_are_refused_at_the_boundary() {
    assert!(matches!(SettingKey::parse(""), Err(ValueError::Key(_))));
    assert!(matches!(SettingKey::parse("Upper"), Err(ValueError::Key(_))));
    assert!(matches!(SettingKey::parse("9lives"), Err(ValueError::Key(_))));
    assert!(matches!(SettingKey::parse("a".repeat(129)), Err(ValueError::Key(_))));
    assert!(SettingKey::parse("a".repeat(128)).is_ok());
    assert_eq!(SettingValue::parse("x".repeat(4_097)), Err(ValueError::ValueTooLong(4_097)));
    assert_eq!(SettingValue::parse("bell\u{7}"), Err(ValueError::ValueControlChar));
}

#[test]
fn a_command_with_an_invalid_key_does_not_decode() {
    let json = r#"{"type":"put_setting","key":"../etc","value":"x"}"#;
    let err = serde_json::from_str::<Command>(json).unwrap_err();
    assert!(err.to_string().contains("setting key must be"), "{err}");
    let unknown = r#"{"type":"put_setting","key":"a","value":"x","extra":1}"#;
    assert!(serde_json::from_str::<Command>(unknown).is_err());
}

#[test]
fn state_round_trips_through_its_canonical_bytes() {
    let mut s = State::default();
    s.apply(1, &put("b", "2")).unwrap();
    s.apply(2, &put("a", "1")).unwrap();
    let bytes = s.to_bytes();
    let back = State::from_bytes(&bytes).unwrap();
    assert_eq!(back, s);
    assert_eq!(back.to_bytes(), bytes);
    assert!(State::from_bytes(b"{\"revision\":").is_err());
}

fn arb_command() -> impl Strategy<Value = Command> {
    let k = prop::sample::select(vec!["a", "b", "c", "limits.x", "z-1"]).prop_map(key);
    let v = "[a-z0-9 ]{0,12}".prop_map(|s| value(&s));
    let rev = prop::option::of(0u64..6);
    prop_oneof![
        (k.clone(), v, rev.clone()).prop_map(|(key, value, expected_revision)| Command::PutSetting {
            key,
            value,
            expected_revision
        }),
        (k, rev).prop_map(|(key, expected_revision)| Command::DeleteSetting { key, expected_revision }),
    ]
}

fn arb_log() -> impl Strategy<Value = Vec<(u64, Command)>> {
    prop::collection::vec((0u64..10_000, arb_command()), 0..60)
}

proptest! {
    #[test]
    fn apply_is_deterministic(log in arb_log()) {
        let mut a = State::default();
        let mut b = State::default();
        let ra: Vec<_> = log.iter().map(|(t, c)| a.apply(*t, c)).collect();
        let rb: Vec<_> = log.iter().map(|(t, c)| b.apply(*t, c)).collect();
        prop_assert_eq!(ra, rb);
        prop_assert_eq!(a.to_bytes(), b.to_bytes());
        // A state rebuilt from a snapshot continues identically.
        let mut c = State::from_bytes(&a.to_bytes()).unwrap();
        let mut a2 = a.clone();
        for (t, cmd) in &log {
            prop_assert_eq!(c.apply(*t, cmd), a2.apply(*t, cmd));
        }
        prop_assert_eq!(c.to_bytes(), a2.to_bytes());
    }

    #[test]
    fn rejected_commands_leave_state_unchanged(log in arb_log()) {
        let mut s = State::default();
        for (t, cmd) in &log {
            let before = s.to_bytes();
            let revision = s.revision();
            match s.apply(*t, cmd) {
                Ok(effect) => {
                    prop_assert_eq!(effect.revision(), revision + 1);
                    prop_assert_eq!(s.revision(), revision + 1);
                }
                Err(_) => prop_assert_eq!(s.to_bytes(), before),
            }
        }
    }
}
