//! The openraft type configuration of a Raftgate cluster.

use std::io::Cursor;

use raftgate_model::{Effect, NodeInfo, Proposal, Rejection};
use serde::{Deserialize, Serialize};

openraft::declare_raft_types!(
    /// Log entries carry a [`Proposal`]; members are identified by `u64` and described by [`NodeInfo`].
    pub TypeConfig:
        D = Proposal,
        R = Outcome,
        NodeId = u64,
        Node = NodeInfo,
        AsyncRuntime = crate::runtime::SeededTokio,
);

/// What applying one log entry produced.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "outcome", rename_all = "snake_case")]
pub enum Outcome {
    /// The command was accepted and changed the state.
    Applied { effect: Effect },
    /// The command was refused; the state is unchanged.
    Rejected { rejection: Rejection },
    /// A blank or membership entry: nothing for the application.
    Internal,
}
