//! Deterministic simulation of a Raftgate cluster.
//!
//! The real node code (consensus, sled storage, the admin service, the data
//! plane) runs as
//! turmoil hosts; only the network (turmoil's TCP), the clock (turmoil's
//! simulated time) and the data directory (a temporary one per host, kept
//! across simulated crashes) differ from production. Simulated clients drive
//! the admin API; invariants are checked after every simulated millisecond.
//! A seed replays the same run exactly.

pub mod dataplane;
pub mod harness;
pub mod history;
pub mod invariants;
pub mod lincheck;
pub mod net;
pub mod scenarios;
