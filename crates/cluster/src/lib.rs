//! Consensus for a Raftgate node.
//!
//! [`ClusterNode`] runs openraft over the sled store and a tonic transport
//! ([`network`] sends, [`RaftService`] receives). It is the only way the rest
//! of the node talks to Raft, and it bounds every call: a write or read that
//! cannot reach a quorum fails with [`ClusterError::Unavailable`] within a
//! configured time instead of hanging (an isolated openraft leader keeps
//! calling itself leader). It also keeps the age of this node's view of the
//! cluster ([`LeaderView`]), which the staleness bound of revocation uses.

// openraft fixes the RPC error type (RPCError, ~128 bytes) of the network trait.
#![allow(clippy::result_large_err)]

pub mod backup;
mod config;
mod env;
mod error;
pub mod incarnation;
mod network;
mod node;
mod raft_service;
pub mod tls;
mod tls_io;
mod view;

pub use config::{RaftTimeouts, TimeoutError};
pub use env::{Dialer, NodeEnv, WallClock};
pub use error::ClusterError;
pub use incarnation::{Incarnations, Origin};
pub use network::{channel_to, endpoint_for, NetworkFactory};
pub use node::{ClusterNode, Membership, NodeStatus, Role, StartError, Written};
pub use raft_service::RaftService;
pub use raftgate_store::{Applied, ApplyObserver};
pub use tls::{ClusterTls, TlsFileError, TlsFiles};
pub use tls_io::{accept_tls, RefusalLog, TLS_HANDSHAKE_TIMEOUT};
pub use view::LeaderView;

/// The openraft handle type of a Raftgate node.
pub type Raft = openraft::Raft<raftgate_store::TypeConfig>;
