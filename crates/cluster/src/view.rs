//! How old this node's view of the cluster is.
//!
//! openraft 0.9 does not record when a follower last heard from a leader, and
//! timing the last AppendEntries is not enough: a deposed leader cut off with
//! one follower keeps heartbeating it. So the leader sends, with every
//! AppendEntries, how long ago a quorum last acknowledged it; the receiver
//! records `view_time = receive_time - that age`. The age of the view is then
//! `now - view_time`: how long ago the state this node serves was known to be
//! current at a leader with a quorum. A leader's own view age is its time
//! since quorum ack.
//!
//! Contact is not enough either: a node that restarts, or falls behind, hears
//! a current leader long before it has applied what that leader had
//! committed. So a view is credited only once this node's applied index has
//! reached the commit index that came with it (the leader's `leader_commit`,
//! or a leader's own commit index at its quorum ack); until then it waits in
//! a short queue. The simulation found this: a restarted node let a revoked
//! key through while it replayed its log (`regression_restart_replays_before_vouching`).

use std::collections::VecDeque;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Mutex;
use tokio::time::Instant;

/// Instants are stored as milliseconds after `origin` plus one; 0 means never.
const NEVER: u64 = 0;
/// Views waiting for their commit index to be applied. When full, the newest
/// replaces the last (it is later in time and in index), so none is lost
/// that would date the view later.
const MAX_PENDING_VIEWS: usize = 64;

/// Shared between the Raft transport (which records) and readers (status,
/// later the data plane's staleness check). Lock-free.
#[derive(Debug)]
pub struct LeaderView {
    origin: Instant,
    /// Milliseconds after `origin` at which the view was known current.
    view_at_ms: AtomicU64,
    /// Milliseconds after `origin` at which a leader's message was last accepted.
    contact_at_ms: AtomicU64,
    /// For a leader: milliseconds after `origin` of its last quorum ack.
    quorum_ack_at_ms: AtomicU64,
    /// Term of this node's last candidacy that a voter refused for having a
    /// newer log (0: none).
    greater_log_term: AtomicU64,
    /// This node's applied log index plus one (0: nothing applied).
    applied: AtomicU64,
    /// (view instant, commit index plus one) not yet applied, oldest first.
    pending: Mutex<VecDeque<(u64, u64)>>,
}

impl Default for LeaderView {
    fn default() -> Self {
        Self {
            origin: Instant::now(),
            view_at_ms: AtomicU64::new(NEVER),
            contact_at_ms: AtomicU64::new(NEVER),
            quorum_ack_at_ms: AtomicU64::new(NEVER),
            greater_log_term: AtomicU64::new(0),
            applied: AtomicU64::new(0),
            pending: Mutex::new(VecDeque::new()),
        }
    }
}

impl LeaderView {
    /// Milliseconds since `origin`, plus one so that no instant is `NEVER`.
    fn now_ms(&self) -> u64 {
        self.origin.elapsed().as_millis() as u64 + 1
    }

    fn age(&self, at: &AtomicU64) -> Option<u64> {
        match at.load(Ordering::Acquire) {
            NEVER => None,
            t => Some(self.now_ms().saturating_sub(t)),
        }
    }

    /// A follower accepted AppendEntries from a leader whose quorum ack was
    /// `leader_quorum_age_ms` old when it sent the message, with the leader's
    /// commit index `leader_commit`.
    pub fn record_append(&self, leader_quorum_age_ms: Option<u64>, leader_commit: Option<u64>) {
        let now = self.now_ms();
        self.contact_at_ms.store(now, Ordering::Release);
        if let Some(age) = leader_quorum_age_ms {
            self.credit(now.saturating_sub(age).max(1), leader_commit);
        }
    }

    /// This node is leader and openraft reports its last quorum ack as
    /// `millis_since_quorum_ack` old (None: not leader, or no ack yet), when
    /// its commit index is `committed`.
    pub fn record_leader_metrics(&self, millis_since_quorum_ack: Option<u64>, committed: Option<u64>) {
        match millis_since_quorum_ack {
            Some(age) => {
                let at = self.now_ms().saturating_sub(age).max(1);
                self.quorum_ack_at_ms.store(at, Ordering::Release);
                self.credit(at, committed);
            }
            None => self.quorum_ack_at_ms.store(NEVER, Ordering::Release),
        }
    }

    /// The state was current at `at` up to `commit`: the view moves to `at`
    /// once this node has applied `commit`.
    fn credit(&self, at: u64, commit: Option<u64>) {
        let need = commit.map_or(0, |c| c + 1);
        if self.applied.load(Ordering::Acquire) >= need {
            self.view_at_ms.fetch_max(at, Ordering::AcqRel);
            return;
        }
        let mut pending = self.pending.lock().unwrap_or_else(|p| p.into_inner());
        // Checked again under the lock: `record_applied` drains under it.
        if self.applied.load(Ordering::Acquire) >= need {
            self.view_at_ms.fetch_max(at, Ordering::AcqRel);
            return;
        }
        if pending.back().is_some_and(|&(a, n)| a >= at && n <= need) {
            return; // an earlier-applicable view at least as new is waiting
        }
        if pending.len() >= MAX_PENDING_VIEWS {
            pending.pop_back();
        }
        pending.push_back((at, need));
    }

    /// This node has applied the log up to `index` (entries or a snapshot).
    pub fn record_applied(&self, index: Option<u64>) {
        let applied = index.map_or(0, |i| i + 1);
        let mut pending = self.pending.lock().unwrap_or_else(|p| p.into_inner());
        self.applied.fetch_max(applied, Ordering::AcqRel);
        let applied = self.applied.load(Ordering::Acquire);
        let mut newest = NEVER;
        pending.retain(|&(at, need)| {
            if need <= applied {
                newest = newest.max(at);
                false
            } else {
                true
            }
        });
        if newest != NEVER {
            self.view_at_ms.fetch_max(newest, Ordering::AcqRel);
        }
    }

    /// A voter refused this node's candidacy in `term` because its log is newer.
    pub fn record_greater_log(&self, term: u64) {
        self.greater_log_term.fetch_max(term, Ordering::AcqRel);
    }

    /// The last term in which this node's candidacy was refused for an older log (0: never).
    pub fn greater_log_term(&self) -> u64 {
        self.greater_log_term.load(Ordering::Acquire)
    }

    /// How long ago a quorum acknowledged this node as leader (None: not leader).
    pub fn quorum_ack_age_ms(&self) -> Option<u64> {
        self.age(&self.quorum_ack_at_ms)
    }

    /// Age of the newest view of the cluster this node holds (None: never had one).
    pub fn view_age_ms(&self) -> Option<u64> {
        self.age(&self.view_at_ms)
    }

    /// Time since this node last accepted a message from a leader.
    pub fn last_contact_age_ms(&self) -> Option<u64> {
        self.age(&self.contact_at_ms)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn a_new_view_has_no_age() {
        let v = LeaderView::default();
        assert_eq!(v.view_age_ms(), None);
        assert_eq!(v.quorum_ack_age_ms(), None);
    }

    #[tokio::test(start_paused = true)]
    async fn the_view_is_dated_by_the_leaders_quorum_age_not_by_arrival() {
        let v = LeaderView::default();
        tokio::time::sleep(std::time::Duration::from_millis(30)).await;
        v.record_append(Some(20), None);
        let age = v.view_age_ms().unwrap();
        assert!(age >= 20, "age {age} must include the leader's quorum age");
        assert!(v.last_contact_age_ms().unwrap() < age);
    }

    #[tokio::test(start_paused = true)]
    async fn an_older_view_never_replaces_a_newer_one() {
        let v = LeaderView::default();
        tokio::time::sleep(std::time::Duration::from_millis(50)).await;
        v.record_append(Some(0), None);
        // A deposed leader's heartbeat with a stale quorum age arrives later.
        v.record_append(Some(40), None);
        assert!(v.view_age_ms().unwrap() < 40);
    }

    #[tokio::test]
    async fn losing_leadership_clears_the_quorum_ack() {
        let v = LeaderView::default();
        v.record_leader_metrics(Some(5), None);
        assert!(v.quorum_ack_age_ms().is_some());
        v.record_leader_metrics(None, None);
        assert_eq!(v.quorum_ack_age_ms(), None);
        assert!(v.view_age_ms().is_some());
    }

    #[tokio::test(start_paused = true)]
    async fn a_view_counts_only_once_its_commit_is_applied() {
        let v = LeaderView::default();
        v.record_applied(Some(3));
        // A leader that had committed index 9 vouches for state this node
        // has not applied yet: no view, though the leader is in contact.
        v.record_append(Some(0), Some(9));
        assert_eq!(v.view_age_ms(), None);
        assert!(v.last_contact_age_ms().is_some());
        tokio::time::sleep(std::time::Duration::from_millis(30)).await;
        v.record_applied(Some(9));
        // Dated when the leader vouched, not when it was applied.
        assert!(v.view_age_ms().unwrap() >= 30);
        v.record_append(Some(0), Some(9));
        assert_eq!(v.view_age_ms(), Some(0));
    }

    #[tokio::test(start_paused = true)]
    async fn a_leader_behind_on_apply_does_not_vouch() {
        let v = LeaderView::default();
        v.record_leader_metrics(Some(0), Some(5));
        assert_eq!(v.view_age_ms(), None);
        v.record_applied(Some(5));
        assert_eq!(v.view_age_ms(), Some(0));
    }

    #[tokio::test(start_paused = true)]
    async fn the_pending_queue_is_bounded_and_keeps_the_newest() {
        let v = LeaderView::default();
        for i in 0..(MAX_PENDING_VIEWS as u64 * 3) {
            tokio::time::sleep(std::time::Duration::from_millis(1)).await;
            v.record_append(Some(0), Some(100 + i));
        }
        assert!(v.pending.lock().unwrap().len() <= MAX_PENDING_VIEWS);
        v.record_applied(Some(10_000));
        assert_eq!(v.view_age_ms(), Some(0));
    }
}
