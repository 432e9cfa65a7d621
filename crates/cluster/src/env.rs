//! What a node takes from its surroundings: how to reach other nodes, what
//! time it is, and how storage waits for the disk. Production uses TCP, the
//! system clock and async flushes; the simulation passes turmoil's network,
//! its simulated clock and blocking flushes. Nothing else differs.

use std::sync::Arc;
use std::time::{SystemTime, UNIX_EPOCH};

use raftgate_store::FlushMode;
use tonic::transport::Channel;

use crate::network::channel_to;

type DialFn = dyn Fn(&str) -> Result<Channel, String> + Send + Sync;

/// Opens a (lazily connected) gRPC channel to `host:port`.
#[derive(Clone)]
pub struct Dialer(Arc<DialFn>);

impl Dialer {
    /// Plain TCP with HTTP/2 keepalive.
    pub fn tcp() -> Self {
        Self::new(|addr| channel_to(addr).map_err(|e| e.to_string()))
    }

    pub fn new(f: impl Fn(&str) -> Result<Channel, String> + Send + Sync + 'static) -> Self {
        Self(Arc::new(f))
    }

    pub fn dial(&self, addr: &str) -> Result<Channel, String> {
        (self.0)(addr)
    }
}

/// Wall-clock time in milliseconds since the Unix epoch; only the leader
/// reads it, to stamp the entries it proposes.
#[derive(Clone)]
pub struct WallClock(Arc<dyn Fn() -> u64 + Send + Sync>);

impl WallClock {
    pub fn system() -> Self {
        Self::new(|| SystemTime::now().duration_since(UNIX_EPOCH).map_or(0, |d| d.as_millis() as u64))
    }

    pub fn new(f: impl Fn() -> u64 + Send + Sync + 'static) -> Self {
        Self(Arc::new(f))
    }

    pub fn now_ms(&self) -> u64 {
        (self.0)()
    }
}

#[derive(Clone)]
pub struct NodeEnv {
    pub dialer: Dialer,
    pub clock: WallClock,
    pub flush: FlushMode,
}

impl Default for NodeEnv {
    fn default() -> Self {
        Self { dialer: Dialer::tcp(), clock: WallClock::system(), flush: FlushMode::Async }
    }
}
