//! What simulated clients did and saw, and what the checker observed: the
//! event history whose digest proves a seed replays exactly.

use std::collections::BTreeMap;
use std::hash::{DefaultHasher, Hash, Hasher};

use crate::lincheck::{self, NotLinearizable, Op, OpKind};

#[derive(Clone, Debug, Hash, PartialEq, Eq)]
pub enum Kind {
    Write { key: String, value: String },
    Read { key: String, value: Option<String> },
}

/// One client operation. Times are simulated microseconds since the start.
#[derive(Clone, Debug, Hash, PartialEq, Eq)]
pub struct Record {
    pub client: usize,
    pub kind: Kind,
    pub invoke_us: u64,
    /// `None`: a write whose outcome the client never learned.
    pub complete_us: Option<u64>,
}

#[derive(Debug, Default)]
pub struct History {
    pub records: Vec<Record>,
    /// Faults injected and leaders observed, in order.
    pub events: Vec<String>,
}

/// Keys of the shared registers the linearizability check covers.
pub const REGISTER_PREFIX: &str = "r-";

impl History {
    /// A digest of everything that happened; equal digests mean equal histories.
    pub fn digest(&self) -> u64 {
        let mut h = DefaultHasher::new();
        self.records.hash(&mut h);
        self.events.hash(&mut h);
        h.finish()
    }

    pub fn acked_writes(&self) -> impl Iterator<Item = (&str, &str, u64)> {
        self.records.iter().filter_map(|r| match (&r.kind, r.complete_us) {
            (Kind::Write { key, value }, Some(t)) => Some((key.as_str(), value.as_str(), t)),
            _ => None,
        })
    }

    pub fn count(&self) -> Counts {
        let mut c = Counts::default();
        for r in &self.records {
            match (&r.kind, r.complete_us) {
                (Kind::Write { .. }, Some(_)) => c.acked_writes += 1,
                (Kind::Write { .. }, None) => c.unknown_writes += 1,
                (Kind::Read { .. }, _) => c.reads += 1,
            }
        }
        c
    }

    /// Checks every register key. Returns how many keys the search could not
    /// decide within its budget.
    pub fn check_linearizable(&self) -> Result<usize, (String, NotLinearizable)> {
        let mut per_key: BTreeMap<&str, Vec<Op>> = BTreeMap::new();
        for r in &self.records {
            let (key, kind) = match &r.kind {
                Kind::Write { key, value } => (key, OpKind::Write(value.clone())),
                Kind::Read { key, value } => (key, OpKind::Read(value.clone())),
            };
            if key.starts_with(REGISTER_PREFIX) {
                per_key.entry(key).or_default().push(Op { kind, invoke: r.invoke_us, complete: r.complete_us });
            }
        }
        let mut inconclusive = 0;
        for (key, ops) in per_key {
            match lincheck::check_register(&ops) {
                Ok(()) => {}
                Err(e) if e.inconclusive => inconclusive += 1,
                Err(e) => return Err((key.to_string(), e)),
            }
        }
        Ok(inconclusive)
    }
}

#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Counts {
    pub acked_writes: usize,
    pub unknown_writes: usize,
    pub reads: usize,
}
