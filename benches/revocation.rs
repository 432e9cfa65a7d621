//! The revocation set with 1,000,000 revoked token ids:
//!
//! - memory: resident set growth while building the replicated state's
//!   revocation table (`State`) and the data plane's index
//!   (`RevocationIndex`), printed before the benchmarks;
//! - `revocation/lookup_hit` and `lookup_miss`: one `token_revoked` call,
//!   as every request with a JWT makes (after a cache hit too);
//! - `revocation/apply_one`: folding one more revocation into the index,
//!   as apply does before it returns;
//! - `revocation/rebuild_1m`: rebuilding the index from the state (after
//!   an unrevoke, or when the delta outgrows an eighth of the base).
//!
//! Run with `cargo bench -p raftgate-benches --bench revocation`, alone.

use std::hint::black_box;
use std::time::Instant;

use criterion::{criterion_group, criterion_main, Criterion};
use raftgate_identity::revocation::{Fingerprinter, RevocationIndex};
use raftgate_model::identity::RevocationTarget;
use raftgate_model::{Command, ObjectId, State};

const REVOKED: usize = 1_000_000;
const LOOKUPS: usize = 1_024;

fn rss_bytes() -> u64 {
    let statm = std::fs::read_to_string("/proc/self/statm").unwrap_or_default();
    let pages: u64 = statm.split_whitespace().nth(1).and_then(|p| p.parse().ok()).unwrap_or(0);
    pages * 4096
}

fn mib(b: u64) -> f64 {
    b as f64 / (1 << 20) as f64
}

fn jti(i: usize) -> String {
    format!("{i:08x}-5c1e-4b7a-9d2f-{:012x}", i.wrapping_mul(2_654_435_761))
}

fn revoke(i: usize, t: u64) -> Command {
    Command::Revoke {
        target: RevocationTarget::Token { issuer: ObjectId::parse("idp").unwrap(), jti: jti(i) },
        until_ms: Some(t + 3_600_000),
        reason: String::new(),
    }
}

fn world() -> (State, RevocationIndex) {
    let t = 1_700_000_000_000;
    let mut state = State::default();
    let issuer = serde_json::from_value(serde_json::json!({
        "id": "idp", "issuer": "https://idp/", "algorithms": ["HS256"], "secret": "env:X"
    }))
    .unwrap();
    state.apply(t, &Command::PutIssuer { issuer, expected_revision: None }).unwrap();
    let before = rss_bytes();
    let started = Instant::now();
    for i in 0..REVOKED {
        state.apply(t, &revoke(i, t)).unwrap();
    }
    let state_bytes = rss_bytes().saturating_sub(before);
    let applied = started.elapsed();
    let before = rss_bytes();
    let started = Instant::now();
    let index = RevocationIndex::build(Fingerprinter::default(), &state);
    let built = started.elapsed();
    let index_bytes = rss_bytes().saturating_sub(before);
    println!(
        "revocation set, {REVOKED} token ids: replicated state +{:.1} MiB ({:.0} B/entry, applied in {:.2} s); data-plane index +{:.1} MiB ({:.1} B/entry, built in {:.0} ms)",
        mib(state_bytes),
        state_bytes as f64 / REVOKED as f64,
        applied.as_secs_f64(),
        mib(index_bytes),
        index_bytes as f64 / REVOKED as f64,
        built.as_secs_f64() * 1e3
    );
    (state, index)
}

fn bench(c: &mut Criterion) {
    let (mut state, index) = world();
    let issuer = ObjectId::parse("idp").unwrap();
    let hits: Vec<String> = (0..LOOKUPS).map(|i| jti(i * 977 % REVOKED)).collect();
    let misses: Vec<String> = (0..LOOKUPS).map(|i| jti(REVOKED + i)).collect();
    assert!(hits.iter().all(|j| index.token_revoked(&issuer, j)));
    assert!(misses.iter().all(|j| !index.token_revoked(&issuer, j)));
    let mut g = c.benchmark_group("revocation");
    let mut i = 0;
    g.bench_function("lookup_hit", |b| {
        b.iter(|| {
            i = (i + 1) % LOOKUPS;
            black_box(index.token_revoked(&issuer, &hits[i]))
        })
    });
    g.bench_function("lookup_miss", |b| {
        b.iter(|| {
            i = (i + 1) % LOOKUPS;
            black_box(index.token_revoked(&issuer, &misses[i]))
        })
    });
    let extra = revoke(REVOKED + 10_000, 1_700_000_000_000);
    state.apply(1_700_000_000_000, &extra).unwrap();
    g.bench_function("apply_one", |b| b.iter(|| black_box(index.after(&state, &[&extra]))));
    g.sample_size(10);
    g.bench_function("rebuild_1m", |b| b.iter(|| black_box(RevocationIndex::build(Fingerprinter::default(), &state))));
    g.finish();
}

criterion_group!(benches, bench);
criterion_main!(benches);
