//! Raft timing. Defaults suit a LAN or one machine; see `RaftTimeouts::wan`.

use std::time::Duration;

use serde::{Deserialize, Serialize};

/// Every timing knob of consensus, in milliseconds.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct RaftTimeouts {
    /// Leader heartbeat period.
    pub heartbeat_interval_ms: u64,
    /// A follower that hears no leader for a random time in
    /// [election_timeout_min_ms, election_timeout_max_ms) starts an election.
    pub election_timeout_min_ms: u64,
    pub election_timeout_max_ms: u64,
    /// Limit on one Raft RPC to a peer (append entries, vote, snapshot chunk).
    pub rpc_timeout_ms: u64,
    /// Limit on an admin write or membership change from proposal to commit;
    /// past it the caller gets `unavailable` (the outcome is then unknown).
    pub write_timeout_ms: u64,
    /// Limit on confirming leadership for a linearizable read.
    pub read_timeout_ms: u64,
    /// Build a snapshot after this many entries; the log before the snapshot
    /// is purged except the last min(this, 1000) entries, kept for followers
    /// that are a little behind (one further behind receives the snapshot).
    pub snapshot_every_entries: u64,
}

impl Default for RaftTimeouts {
    fn default() -> Self {
        Self {
            heartbeat_interval_ms: 150,
            election_timeout_min_ms: 600,
            election_timeout_max_ms: 1_200,
            rpc_timeout_ms: 1_000,
            write_timeout_ms: 5_000,
            read_timeout_ms: 3_000,
            snapshot_every_entries: 5_000,
        }
    }
}

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("config field `raft.{field}`: {problem}")]
pub struct TimeoutError {
    pub field: &'static str,
    pub problem: String,
}

impl RaftTimeouts {
    /// Values for voters spread across regions with up to ~150 ms one-way delay.
    pub fn wan() -> Self {
        Self {
            heartbeat_interval_ms: 500,
            election_timeout_min_ms: 2_500,
            election_timeout_max_ms: 5_000,
            rpc_timeout_ms: 2_000,
            write_timeout_ms: 10_000,
            read_timeout_ms: 5_000,
            snapshot_every_entries: 5_000,
        }
    }

    pub fn validate(&self) -> Result<(), TimeoutError> {
        let err = |field, problem: &str| Err(TimeoutError { field, problem: problem.to_string() });
        if !(10..=60_000).contains(&self.heartbeat_interval_ms) {
            return err("heartbeat_interval_ms", "must be from 10 to 60000");
        }
        if self.election_timeout_min_ms < 3 * self.heartbeat_interval_ms {
            return err("election_timeout_min_ms", "must be at least 3 x heartbeat_interval_ms");
        }
        if self.election_timeout_max_ms <= self.election_timeout_min_ms {
            return err("election_timeout_max_ms", "must be greater than election_timeout_min_ms");
        }
        if self.election_timeout_max_ms > 600_000 {
            return err("election_timeout_max_ms", "must be at most 600000");
        }
        if !(10..=600_000).contains(&self.rpc_timeout_ms) {
            return err("rpc_timeout_ms", "must be from 10 to 600000");
        }
        if !(100..=600_000).contains(&self.write_timeout_ms) {
            return err("write_timeout_ms", "must be from 100 to 600000");
        }
        if !(100..=600_000).contains(&self.read_timeout_ms) {
            return err("read_timeout_ms", "must be from 100 to 600000");
        }
        if !(10..=10_000_000).contains(&self.snapshot_every_entries) {
            return err("snapshot_every_entries", "must be from 10 to 10000000");
        }
        Ok(())
    }

    pub(crate) fn openraft_config(&self, cluster_name: &str) -> openraft::Config {
        openraft::Config {
            cluster_name: cluster_name.to_string(),
            heartbeat_interval: self.heartbeat_interval_ms,
            election_timeout_min: self.election_timeout_min_ms,
            election_timeout_max: self.election_timeout_max_ms,
            install_snapshot_timeout: self.rpc_timeout_ms.max(1_000),
            snapshot_policy: openraft::SnapshotPolicy::LogsSinceLast(self.snapshot_every_entries),
            // Keep snapshot chunks (sent as raw bytes) well under tonic's 4 MiB message limit.
            snapshot_max_chunk_size: 1 << 20,
            max_in_snapshot_log_to_keep: self.snapshot_every_entries.min(1_000),
            max_payload_entries: 300,
            // Elections are started by the node's own timer (see spawn_election_timer).
            enable_elect: false,
            ..Default::default()
        }
    }

    pub fn write_timeout(&self) -> Duration {
        Duration::from_millis(self.write_timeout_ms)
    }
    pub fn read_timeout(&self) -> Duration {
        Duration::from_millis(self.read_timeout_ms)
    }
    /// How long a write or read waits for a leader to be known when it arrives
    /// during an election: two election timeouts (one may split the vote),
    /// never longer than the write timeout.
    pub fn leader_wait(&self) -> Duration {
        Duration::from_millis((2 * self.election_timeout_max_ms).min(self.write_timeout_ms))
    }
    pub fn rpc_timeout(&self) -> Duration {
        Duration::from_millis(self.rpc_timeout_ms)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn defaults_and_wan_values_are_valid() {
        assert_eq!(RaftTimeouts::default().validate(), Ok(()));
        assert_eq!(RaftTimeouts::wan().validate(), Ok(()));
        assert!(RaftTimeouts::default().openraft_config("t").validate().is_ok());
        assert!(RaftTimeouts::wan().openraft_config("t").validate().is_ok());
    }

    #[test]
    fn an_election_timeout_below_the_heartbeat_is_refused_by_name() {
        let t = RaftTimeouts { election_timeout_min_ms: 100, ..Default::default() };
        assert_eq!(t.validate().unwrap_err().field, "election_timeout_min_ms");
        let t = RaftTimeouts { election_timeout_max_ms: 600, ..Default::default() };
        assert_eq!(t.validate().unwrap_err().field, "election_timeout_max_ms");
    }
}
