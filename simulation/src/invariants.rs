//! Invariants checked after every simulation step, on every running node.

use std::collections::BTreeMap;
use std::hash::{DefaultHasher, Hash, Hasher};

use raftgate_cluster::{Applied, ClusterNode, Role};
use raftgate_model::NodeId;

/// A digest of a node's applied state: the model state, the last applied
/// log id and the membership. Nodes at the same applied index must agree.
pub fn state_digest(a: &Applied) -> u64 {
    let mut h = DefaultHasher::new();
    a.state.to_bytes().hash(&mut h);
    a.last_applied.map(|l| (l.index, l.leader_id.term)).hash(&mut h);
    format!("{:?}", a.membership).hash(&mut h);
    h.finish()
}

/// A failover in progress since a fault.
struct PendingFailover {
    since_us: u64,
    label: String,
}

#[derive(Default)]
pub struct Checker {
    /// The one leader seen in each term.
    leader_of_term: BTreeMap<u64, NodeId>,
    /// Digest of the applied state at each applied index, as first seen.
    digest_at: BTreeMap<u64, (NodeId, u64)>,
    /// Last applied index each node was seen at.
    seen_applied: BTreeMap<NodeId, Option<u64>>,
    /// Per leader: the last `millis_since_quorum_ack` seen and the simulated
    /// time of that quorum ack. Metrics are a snapshot taken when openraft
    /// last reported, so only a changed value dates a new ack.
    quorum_ack: BTreeMap<NodeId, (u64, u64)>,
    pending: Option<PendingFailover>,
    /// Completed failovers: (label, simulated microseconds from fault to a new
    /// leader that has committed an entry of its own term).
    pub failovers: Vec<(String, u64)>,
}

impl Checker {
    /// Starts timing a failover from a fault injected now.
    pub fn expect_failover(&mut self, now_us: u64, label: impl Into<String>) {
        self.pending = Some(PendingFailover { since_us: now_us, label: label.into() });
    }

    pub fn failover_pending(&self) -> Option<(u64, &str)> {
        self.pending.as_ref().map(|p| (p.since_us, p.label.as_str()))
    }

    /// Looks at one running node. `events` receives the leaders seen.
    pub fn observe(&mut self, now_us: u64, node: &ClusterNode, events: &mut Vec<String>) -> Result<(), String> {
        let id = node.id();
        let status = node.status();
        if status.role == Role::Leader {
            match self.leader_of_term.get(&status.term) {
                Some(&other) if other != id => {
                    return Err(format!("two leaders in term {}: node {other} and node {id}", status.term));
                }
                Some(_) => {}
                None => {
                    self.leader_of_term.insert(status.term, id);
                    events.push(format!("{} leader n{id} term {}", now_us / 1000, status.term));
                }
            }
        }

        match status.millis_since_quorum_ack {
            Some(age) if status.role == Role::Leader => {
                if self.quorum_ack.get(&id).is_none_or(|&(last, _)| last != age) {
                    self.quorum_ack.insert(id, (age, now_us.saturating_sub(age * 1000)));
                }
            }
            _ => {
                self.quorum_ack.remove(&id);
            }
        }

        let applied = node.local_read(|a| a.last_applied.map(|l| (l.index, l.leader_id.term)));
        let index = applied.map(|(i, _)| i);
        if self.seen_applied.get(&id) != Some(&index) {
            self.seen_applied.insert(id, index);
            if let Some(index) = index {
                let (at, digest) = node.local_read(|a| (a.last_applied.map(|l| l.index), state_digest(a)));
                if at == Some(index) {
                    match self.digest_at.get(&index) {
                        Some(&(first, d)) if d != digest => {
                            return Err(format!(
                                "nodes {first} and {id} applied different states at index {index}: a committed entry differs"
                            ));
                        }
                        Some(_) => {}
                        None => {
                            self.digest_at.insert(index, (id, digest));
                        }
                    }
                }
            }
        }

        if let Some(p) = &self.pending {
            // A leader that can commit: an entry of its own term is applied,
            // and a quorum acknowledged it after the fault. That is a new
            // leader, or the old one back in its term after a restart.
            let own_entry_applied = applied.is_some_and(|(_, term)| term == status.term);
            let acked_since_fault = self.quorum_ack.get(&id).is_some_and(|&(_, at)| at >= p.since_us);
            if status.role == Role::Leader && own_entry_applied && acked_since_fault {
                let took = now_us - p.since_us;
                events.push(format!("{} failover {} done in {} ms", now_us / 1000, p.label, took / 1000));
                self.failovers.push((p.label.clone(), took));
                self.pending = None;
            }
        }
        Ok(())
    }
}
