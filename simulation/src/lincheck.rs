//! A linearizability checker for single-key registers (Wing & Gong's search
//! with Lowe's memoisation of visited (linearized set, value) states).
//!
//! A history is checked per key. A write whose outcome the client does not
//! know (timed out, connection lost) may have taken effect at any time after
//! it was invoked, or never: it is given an infinite completion time and is
//! not required in the linearization.

use std::collections::HashSet;

/// One operation on a register, with the simulated times it was invoked and
/// its reply received.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Op {
    pub kind: OpKind,
    pub invoke: u64,
    /// `None`: the client never learned the outcome (writes only).
    pub complete: Option<u64>,
}

#[derive(Clone, Debug, PartialEq, Eq)]
pub enum OpKind {
    Write(String),
    /// The value read; `None` when the register was absent.
    Read(Option<String>),
}

/// Largest history per key the search accepts; workloads keep below it.
pub const MAX_OPS_PER_KEY: usize = 512;

#[derive(Clone, Debug, PartialEq, Eq)]
pub struct NotLinearizable {
    /// Operations linearized in the longest prefix the search found.
    pub longest_prefix: usize,
    /// The search gave up after [`MAX_STATES`] states: neither proven nor refuted.
    pub inconclusive: bool,
    pub message: String,
}

/// States the search visits at most per key before it gives up.
pub const MAX_STATES: usize = 2_000_000;

impl std::fmt::Display for NotLinearizable {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{} (longest linearizable prefix: {} operations)", self.message, self.longest_prefix)
    }
}

/// Checks that `ops` on one register, starting absent, are linearizable.
///
/// Written values must be unique. A write of unknown outcome whose value no
/// read returned is left out before the search: it may always be taken as
/// never applied (no read depends on it), and each one kept would double the
/// states to search.
pub fn check_register(ops: &[Op]) -> Result<(), NotLinearizable> {
    let observed: std::collections::HashSet<&str> = ops
        .iter()
        .filter_map(|op| match &op.kind {
            OpKind::Read(Some(v)) => Some(v.as_str()),
            _ => None,
        })
        .collect();
    let kept: Vec<Op> = ops
        .iter()
        .filter(|op| match (&op.kind, op.complete) {
            (OpKind::Write(v), None) => observed.contains(v.as_str()),
            _ => true,
        })
        .cloned()
        .collect();
    search(&kept)
}

fn search<'h>(ops: &'h [Op]) -> Result<(), NotLinearizable> {
    if ops.len() > MAX_OPS_PER_KEY {
        return Err(NotLinearizable {
            longest_prefix: 0,
            inconclusive: true,
            message: format!("history of {} operations exceeds the checker's limit of {MAX_OPS_PER_KEY}", ops.len()),
        });
    }
    // Value ids: 0 is "absent"; written and read values get 1.. .
    let mut values: Vec<Option<&str>> = vec![None];
    let mut id_of = |v: Option<&'h str>| match values.iter().position(|x| *x == v) {
        Some(i) => i,
        None => {
            values.push(v);
            values.len() - 1
        }
    };
    let ops: Vec<(bool, usize, u64, u64)> = ops
        .iter()
        .map(|op| {
            let complete = op.complete.unwrap_or(u64::MAX);
            match &op.kind {
                OpKind::Write(v) => (true, id_of(Some(v)), op.invoke, complete),
                OpKind::Read(v) => (false, id_of(v.as_deref()), op.invoke, complete),
            }
        })
        .collect();
    let required: Vec<bool> = ops.iter().map(|o| o.3 != u64::MAX).collect();
    let mut search = Search { ops: &ops, required: &required, seen: HashSet::new(), longest: 0 };
    let mut done = vec![0u64; ops.len().div_ceil(64)];
    if search.step(&mut done, 0, 0) {
        Ok(())
    } else {
        let inconclusive = search.seen.len() >= MAX_STATES;
        let message = if inconclusive {
            format!("search gave up after {MAX_STATES} states")
        } else {
            "no order of the operations respects real time and register semantics".into()
        };
        Err(NotLinearizable { longest_prefix: search.longest, inconclusive, message })
    }
}

struct Search<'a> {
    /// (is_write, value id, invoke, complete)
    ops: &'a [(bool, usize, u64, u64)],
    required: &'a [bool],
    seen: HashSet<(Vec<u64>, usize)>,
    longest: usize,
}

impl Search<'_> {
    fn is_done(done: &[u64], i: usize) -> bool {
        done[i / 64] & (1 << (i % 64)) != 0
    }

    fn step(&mut self, done: &mut Vec<u64>, count: usize, value: usize) -> bool {
        self.longest = self.longest.max(count);
        let pending_required = (0..self.ops.len()).any(|i| self.required[i] && !Self::is_done(done, i));
        if !pending_required {
            return true;
        }
        if self.seen.len() >= MAX_STATES || !self.seen.insert((done.clone(), value)) {
            return false;
        }
        // An operation may come next only if it was invoked before every
        // pending operation completed.
        let horizon = (0..self.ops.len()).filter(|&i| !Self::is_done(done, i)).map(|i| self.ops[i].3).min();
        let Some(horizon) = horizon else { return true };
        for i in 0..self.ops.len() {
            if Self::is_done(done, i) {
                continue;
            }
            let (is_write, v, invoke, _) = self.ops[i];
            if invoke > horizon {
                continue;
            }
            if !is_write && v != value {
                continue;
            }
            done[i / 64] |= 1 << (i % 64);
            let next = if is_write { v } else { value };
            let ok = self.step(done, count + 1, next);
            done[i / 64] &= !(1 << (i % 64));
            if ok {
                return true;
            }
        }
        false
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn w(v: &str, invoke: u64, complete: u64) -> Op {
        Op { kind: OpKind::Write(v.into()), invoke, complete: Some(complete) }
    }
    fn w_unknown(v: &str, invoke: u64) -> Op {
        Op { kind: OpKind::Write(v.into()), invoke, complete: None }
    }
    fn r(v: Option<&str>, invoke: u64, complete: u64) -> Op {
        Op { kind: OpKind::Read(v.map(String::from)), invoke, complete: Some(complete) }
    }

    #[test]
    fn sequential_history_is_linearizable() {
        let h = [r(None, 0, 1), w("a", 2, 3), r(Some("a"), 4, 5), w("b", 6, 7), r(Some("b"), 8, 9)];
        assert_eq!(check_register(&h), Ok(()));
    }

    #[test]
    fn a_read_concurrent_with_a_write_may_see_either_value() {
        assert_eq!(check_register(&[w("a", 0, 1), w("b", 2, 10), r(Some("a"), 3, 4)]), Ok(()));
        assert_eq!(check_register(&[w("a", 0, 1), w("b", 2, 10), r(Some("b"), 3, 4)]), Ok(()));
    }

    #[test]
    fn a_stale_read_after_a_completed_write_is_refused() {
        let h = [w("a", 0, 1), w("b", 2, 3), r(Some("a"), 4, 5)];
        let e = check_register(&h).unwrap_err();
        assert_eq!(e.longest_prefix, 2);
        assert!(!e.inconclusive);
    }

    #[test]
    fn a_read_of_a_value_never_written_is_refused() {
        assert!(check_register(&[w("a", 0, 1), r(Some("z"), 2, 3)]).is_err());
        assert!(check_register(&[r(Some("a"), 0, 1)]).is_err());
    }

    #[test]
    fn reads_may_not_go_back_in_time() {
        // Two concurrent writes; one reader sees b then a, after both completed.
        let h = [w("a", 0, 5), w("b", 0, 5), r(Some("b"), 6, 7), r(Some("a"), 8, 9)];
        assert!(check_register(&h).is_err());
        // While they are still running, b then a is possible (b, then a linearized).
        let h = [w("a", 0, 50), w("b", 0, 50), r(Some("b"), 6, 7), r(Some("a"), 8, 9)];
        assert_eq!(check_register(&h), Ok(()));
    }

    #[test]
    fn an_unknown_write_may_take_effect_late_or_never() {
        // Never observed: fine.
        assert_eq!(check_register(&[w_unknown("x", 0), r(None, 5, 6)]), Ok(()));
        // Observed long after the client gave up: fine, it may have committed late.
        assert_eq!(check_register(&[w_unknown("x", 0), r(None, 5, 6), r(Some("x"), 100, 101)]), Ok(()));
        // But once observed, it cannot disappear again.
        let h = [w_unknown("x", 0), r(Some("x"), 5, 6), r(None, 100, 101)];
        assert!(check_register(&h).is_err());
        // And it cannot be observed before it was invoked.
        assert!(check_register(&[r(Some("x"), 0, 1), w_unknown("x", 2)]).is_err());
    }

    #[test]
    fn an_over_long_history_is_refused_not_searched() {
        let h: Vec<Op> = (0..=MAX_OPS_PER_KEY as u64).map(|i| w("a", i, i)).collect();
        assert!(check_register(&h).unwrap_err().message.contains("limit"));
    }

    #[test]
    fn unobserved_unknown_writes_do_not_blow_up_the_search() {
        // 200 writes that timed out and were never read, among a normal history.
        let mut h: Vec<Op> = (0..200).map(|i| w_unknown(&format!("lost{i}"), i)).collect();
        h.extend((0..100).flat_map(|i| {
            let t = 1_000 + i * 10;
            [w(&format!("v{i}"), t, t + 2), r(Some(&format!("v{i}")), t + 3, t + 4)]
        }));
        assert_eq!(check_register(&h), Ok(()));
        // One of them observed: it must still fit.
        h.push(r(Some("lost7"), 5_000, 5_001));
        assert_eq!(check_register(&h), Ok(()));
    }

    #[test]
    fn many_concurrent_operations_finish_quickly() {
        // 60 overlapping writes and reads of the last value: memoisation keeps this small.
        let mut h: Vec<Op> = (0..60).map(|i| w(&format!("v{i}"), i, 1_000)).collect();
        h.push(r(Some("v59"), 1_001, 1_002));
        assert_eq!(check_register(&h), Ok(()));
    }
}
