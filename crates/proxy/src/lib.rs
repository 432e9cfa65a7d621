//! The data plane of a Raftgate node: a hyper reverse proxy that serves
//! every request from one immutable snapshot of the replicated routes and
//! upstreams, without locks or network calls for cluster decisions.
//!
//! - [`gateway`]: the published snapshot and what survives rebuilds.
//! - [`router`]: the compiled route matcher.
//! - [`pipeline`]: the phases of a request.
//! - [`auth`]: authentication and authorization of a request.
//! - [`balance`]: target choice, health, circuit breaking, retry budget.
//! - [`server`]: the listener and its limits.
//! - [`connect`]: connections to upstream targets (TCP or a supplied dialer).
//! - [`error`]: the responses the gateway generates.
//! - [`tls`]: certificates, SNI, client certificates and reload.
//! - [`catalog`]: requests per route, and paths no route knows.
//! - [`transform`]: JSON ⇄ XML and JSON field edits on bodies.
//! - [`graphql`]: GraphQL routes: the operation measured and bounded before the limits.

pub mod abuse;
pub mod access_log;
pub mod auth;
pub mod balance;
pub mod body;
pub mod cache;
pub mod catalog;
pub mod connect;
pub mod edge;
pub mod error;
pub mod forwarded;
pub mod framing;
pub mod gateway;
pub mod graphql;
pub mod health;
pub mod jwks;
pub mod metrics;
pub mod pipeline;
pub mod router;
pub mod server;
pub mod shed;
pub mod tls;
pub mod trace;
pub mod traffic;
pub mod transform;
pub mod waf;

pub use gateway::{Gateway, GatewayConfig, IdentityConfig, Limits, StaleTotals, TrafficConfig, ViewAge};
