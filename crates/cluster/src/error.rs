//! Errors of cluster operations, shaped for the admin edge.

use raftgate_model::{NodeId, Rejection};

#[derive(Debug, Clone, thiserror::Error)]
pub enum ClusterError {
    /// No quorum could be reached in time, or there is no leader yet.
    /// For a write, the outcome is unknown: it may still commit.
    #[error("unavailable: {0}")]
    Unavailable(String),
    /// This node is not the leader; the caller should send the request there.
    #[error("not the leader; leader is node {leader_id:?}")]
    NotLeader { leader_id: Option<NodeId>, leader_admin_addr: Option<String> },
    /// The request is wrong whatever the state (bad field, unknown node).
    #[error("{0}")]
    Invalid(String),
    /// The request conflicts with the current membership.
    #[error("{0}")]
    Conflict(String),
    #[error("{0}")]
    NotFound(String),
    /// The state machine refused the command; nothing changed.
    #[error("{0}")]
    Rejected(Rejection),
    /// The node is shutting down or its storage failed.
    #[error("internal error: {0}")]
    Internal(String),
}
