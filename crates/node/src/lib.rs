//! One Raftgate node: configuration, listeners, consensus and the admin API,
//! started and stopped as a unit.
//!
//! [`config`] reads and validates a node's configuration (TOML, flags, env);
//! [`run`] binds the listeners, starts consensus, bootstraps if asked, serves
//! until told to stop, then shuts down in order (stop accepting, finish
//! in-flight requests, stop Raft, flush storage). With the `otlp` feature,
//! [`otlp`] exports sampled requests as OpenTelemetry spans.

pub mod backup;
pub mod config;
pub mod demo;
pub mod logging;
pub mod observe;
#[cfg(feature = "otlp")]
pub mod otlp;
pub mod run;

pub use config::{ConfigError, NodeConfig};
pub use run::{build_data_plane, follow_state, run_node, serve_node, start_node, NodeError};
