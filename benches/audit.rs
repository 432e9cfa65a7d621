//! The audit trail with 100,000 records:
//!
//! - `audit/verify_100k`: recomputing the whole hash chain, as
//!   `raftgatectl audit verify` makes a node do;
//! - `audit/apply_audited` against `audit/apply_plain`: the cost an audit
//!   record adds to applying one admin write (the same setting put, with
//!   and without an actor), as a ratio in the same run;
//! - printed first: snapshot bytes per record (the trail's share of the
//!   state's bytes).
//!
//! Run with `cargo bench -p raftgate-benches --bench audit`, alone.

use std::hint::black_box;

use criterion::{criterion_group, criterion_main, Criterion};
use raftgate_model::governance::{Actor, Role};
use raftgate_model::{Command, SettingKey, SettingValue, State};

const RECORDS: u64 = 100_000;

fn put(i: u64) -> Command {
    Command::PutSetting {
        key: SettingKey::parse(format!("app.setting-{}", i % 5_000)).unwrap(),
        value: SettingValue::parse(format!("value {i}")).unwrap(),
        expected_revision: None,
    }
}

fn actor() -> Actor {
    Actor { principal: "alice@example.com".into(), role: Role::Operator, rpc: "PutSetting".into() }
}

fn state_with(records: u64, audited: bool) -> State {
    let mut s = State::default();
    let a = actor();
    for i in 0..records {
        s.apply_as(1_700_000_000_000 + i, &put(i), audited.then_some(&a)).unwrap();
    }
    s
}

fn bench(c: &mut Criterion) {
    let audited = state_with(RECORDS, true);
    let plain = state_with(RECORDS, false);
    let extra = audited.to_bytes().len() - plain.to_bytes().len();
    println!(
        "audit trail: {RECORDS} records, {} in the trail, {:.0} snapshot bytes per record ({:.1} MiB)",
        audited.audit().len(),
        extra as f64 / RECORDS as f64,
        extra as f64 / (1 << 20) as f64
    );
    let v = audited.audit().verify();
    assert!(v.first_broken.is_none() && v.checked == RECORDS);

    let mut g = c.benchmark_group("audit");
    g.sample_size(20);
    g.bench_function("verify_100k", |b| b.iter(|| black_box(audited.audit().verify())));
    let a = actor();
    let mut s1 = plain.clone();
    let mut i = RECORDS;
    g.bench_function("apply_plain", |b| {
        b.iter(|| {
            i += 1;
            s1.apply_as(1_800_000_000_000 + i, &put(i), None).unwrap()
        })
    });
    let mut s2 = audited.clone();
    g.bench_function("apply_audited", |b| {
        b.iter(|| {
            i += 1;
            s2.apply_as(1_800_000_000_000 + i, &put(i), Some(&a)).unwrap()
        })
    });
    g.finish();
}

criterion_group!(benches, bench);
criterion_main!(benches);
