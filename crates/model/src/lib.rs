//! The replicated state of a Raftgate cluster.
//!
//! Every node holds the same [`State`], built by applying the same committed
//! log of [`Command`]s in the same order. This crate is that deterministic
//! core: no IO, no async and no clock. Time enters only as the leader's
//! timestamp carried by each log entry ([`Proposal::leader_time_ms`]), so two
//! nodes that apply the same log end with byte-identical state.
//!
//! Input is validated once, at the boundary, into types that cannot hold an
//! invalid value ([`SettingKey`], [`SettingValue`], [`NodeInfo`]); `apply`
//! then only rejects what depends on the state (a stale revision, a missing
//! object, a full table) and a rejected command changes nothing.

pub mod backup;
mod command;
pub mod consumer;
pub mod edge;
pub mod governance;
pub mod graphql;
pub mod identity;
mod node;
pub mod path;
pub mod privacy;
pub mod route;
mod state;
pub mod traffic;
pub mod transform;

pub use command::{Command, KeyRotation, Proposal, MAX_BATCH_COMMANDS};
pub use consumer::Consumer;
pub use node::{NodeId, NodeInfo, NodeInfoError};
pub use route::{FieldError, ObjectId, Route, Upstream};
pub use state::{
    Effect, Rejection, Setting, SettingKey, SettingValue, State, StateDecodeError, Stored, Table, ValueError,
    MAX_SETTINGS,
};
