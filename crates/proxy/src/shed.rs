//! Load shedding: an adaptive concurrency limit per upstream.
//!
//! An overloaded upstream answers slower before it fails; a fixed limit is
//! either too low for a healthy one or too high for a sick one. This limit
//! follows the upstream (AIMD on latency): it grows by about one per round
//! trip while a request's time to response headers stays within the
//! tolerance of the best recently seen, and shrinks by 10% (at most every
//! 100 ms) when latency passes it or a try fails. A request that finds the
//! upstream at its limit gets 503 `overloaded` at once instead of waiting
//! into a timeout; below the limit, lower-priority plans are refused first
//! (see [`Priority`] and [`admits`]).

use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Instant;

use raftgate_model::route::AdaptiveConcurrency;
use raftgate_model::traffic::Priority;

/// Least time between two decreases.
const DECREASE_EVERY_US: u64 = 100_000;
/// The baseline drifts up by 1/1024 per sample, so an upstream that got
/// slower for good is accepted as its new normal over ~1,000 requests.
const BASELINE_DRIFT: u64 = 1_024;

/// Whether a request of `priority` may start with `in_flight` requests
/// running against a limit of `limit`.
pub fn admits(priority: Priority, in_flight: u64, limit: u64) -> bool {
    let percent = match priority {
        Priority::Low => 50,
        Priority::Normal => 80,
        Priority::High => 95,
        Priority::Critical => 100,
    };
    in_flight * 100 < limit * percent
}

pub struct AdaptiveLimit {
    config: AdaptiveConcurrency,
    /// The limit, times 1,000 (fractional additive increase).
    limit_milli: AtomicU64,
    in_flight: AtomicU64,
    /// The best recent latency (µs), drifting up slowly; 0: none yet.
    baseline_us: AtomicU64,
    /// When the limit last went down (µs after `epoch`).
    decreased_at_us: AtomicU64,
    epoch: Instant,
}

/// A request's place under the limit; records its outcome when done.
pub struct Permit<'a> {
    limit: &'a AdaptiveLimit,
    started: Instant,
    done: bool,
}

impl AdaptiveLimit {
    pub fn new(config: AdaptiveConcurrency) -> Self {
        Self {
            limit_milli: AtomicU64::new(u64::from(config.initial_limit) * 1_000),
            config,
            in_flight: AtomicU64::new(0),
            baseline_us: AtomicU64::new(0),
            decreased_at_us: AtomicU64::new(0),
            epoch: Instant::now(),
        }
    }

    pub fn limit(&self) -> u64 {
        self.limit_milli.load(Ordering::Relaxed) / 1_000
    }

    pub fn in_flight(&self) -> u64 {
        self.in_flight.load(Ordering::Relaxed)
    }

    /// A place for one request of `priority`, or `None` to shed it.
    pub fn try_acquire(&self, priority: Priority) -> Option<Permit<'_>> {
        let limit = self.limit();
        let mut current = self.in_flight.load(Ordering::Acquire);
        loop {
            if !admits(priority, current, limit) {
                return None;
            }
            match self.in_flight.compare_exchange_weak(current, current + 1, Ordering::AcqRel, Ordering::Acquire) {
                Ok(_) => return Some(Permit { limit: self, started: Instant::now(), done: false }),
                Err(now) => current = now,
            }
        }
    }

    fn record(&self, latency_us: u64, ok: bool) {
        let latency_us = latency_us.max(1);
        let baseline = self.baseline_us.load(Ordering::Relaxed);
        let drifted = if baseline == 0 { latency_us } else { baseline + baseline / BASELINE_DRIFT + 1 };
        self.baseline_us.store(drifted.min(latency_us), Ordering::Relaxed);
        let reference = if baseline == 0 { latency_us } else { baseline };
        let too_slow = latency_us * 100 > reference * u64::from(self.config.latency_tolerance_percent);
        let min = u64::from(self.config.min_limit) * 1_000;
        let max = u64::from(self.config.max_limit) * 1_000;
        if !ok || too_slow {
            // Shifted by one period so that the first decrease is allowed at once.
            let now = self.epoch.elapsed().as_micros() as u64 + DECREASE_EVERY_US;
            let last = self.decreased_at_us.load(Ordering::Relaxed);
            if now.saturating_sub(last) >= DECREASE_EVERY_US
                && self.decreased_at_us.compare_exchange(last, now, Ordering::Relaxed, Ordering::Relaxed).is_ok()
            {
                let l = self.limit_milli.load(Ordering::Relaxed);
                self.limit_milli.store((l * 9 / 10).max(min), Ordering::Relaxed);
            }
        } else {
            // +1/limit per success: about +1 per round trip of the whole window.
            let l = self.limit_milli.load(Ordering::Relaxed);
            let step = 1_000_000 / (l / 1_000).max(1);
            self.limit_milli.store((l + step).min(max), Ordering::Relaxed);
        }
    }
}

impl Permit<'_> {
    /// The request got response headers (`ok`: not a failure of the upstream).
    pub fn finish(mut self, ok: bool) {
        self.done = true;
        self.limit.record(self.started.elapsed().as_micros() as u64, ok);
        self.limit.in_flight.fetch_sub(1, Ordering::AcqRel);
    }
}

impl Drop for Permit<'_> {
    fn drop(&mut self) {
        if !self.done {
            // Abandoned (client gone, or an error before any answer): no sample.
            self.limit.in_flight.fetch_sub(1, Ordering::AcqRel);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn limit(initial: u32) -> AdaptiveLimit {
        AdaptiveLimit::new(AdaptiveConcurrency { initial_limit: initial, ..AdaptiveConcurrency::default() })
    }

    #[test]
    fn lower_priorities_are_shed_first() {
        assert!(admits(Priority::Low, 4, 10) && !admits(Priority::Low, 5, 10));
        assert!(admits(Priority::Normal, 7, 10) && !admits(Priority::Normal, 8, 10));
        assert!(admits(Priority::Critical, 9, 10) && !admits(Priority::Critical, 10, 10));
    }

    #[test]
    fn the_limit_grows_while_fast_and_shrinks_when_latency_jumps() {
        let l = limit(10);
        for _ in 0..100 {
            l.record(1_000, true);
        }
        assert!(l.limit() > 10, "grew to {}", l.limit());
        let grown = l.limit();
        l.record(50_000, true);
        assert!(l.limit() < grown, "a latency jump shrinks it");
        let once = l.limit();
        l.record(50_000, true);
        assert_eq!(l.limit(), once, "at most one decrease per 100 ms");
        l.decreased_at_us.store(0, Ordering::Relaxed);
        l.record(1_000, false);
        assert!(l.limit() < once, "a failure shrinks it too");
    }

    #[test]
    fn permits_count_requests_in_flight() {
        let l = limit(4);
        let a = l.try_acquire(Priority::Critical).unwrap();
        let b = l.try_acquire(Priority::Critical).unwrap();
        assert!(l.try_acquire(Priority::Low).is_none(), "low is shed at 50% of the limit");
        let c = l.try_acquire(Priority::Critical).unwrap();
        let d = l.try_acquire(Priority::Critical).unwrap();
        assert!(l.try_acquire(Priority::Critical).is_none());
        a.finish(true);
        drop(b);
        assert_eq!(l.in_flight(), 2);
        c.finish(true);
        d.finish(true);
        assert_eq!(l.in_flight(), 0);
    }
}
