//! Node identity as carried in the cluster membership.

use std::fmt;

use serde::{Deserialize, Serialize};

/// A node's id: unique in the cluster, never reused, never 0.
pub type NodeId = u64;

/// Where a member lives and how to reach it. Carried in the Raft membership,
/// so every node knows every other node's addresses and region.
#[derive(Clone, Debug, Default, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct NodeInfo {
    /// The region this node runs in (e.g. `eu-west-1`).
    pub region: String,
    /// `host:port` of the Raft RPC listener.
    pub raft_addr: String,
    /// `host:port` of the admin gRPC listener.
    pub admin_addr: String,
    /// `host:port` of the data-plane HTTP listener.
    pub http_addr: String,
}

/// Why a [`NodeInfo`] is not acceptable.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum NodeInfoError {
    #[error("region must be 1 to 64 characters of a-z, 0-9, '-' or '_', got {0:?}")]
    Region(String),
    #[error("{field} must be host:port with a port from 1 to 65535, got {value:?}")]
    Address { field: &'static str, value: String },
}

const MAX_REGION_CHARS: usize = 64;
const MAX_HOST_CHARS: usize = 253;

impl NodeInfo {
    /// Checks every field; the error names the first field that is wrong.
    pub fn validate(&self) -> Result<(), NodeInfoError> {
        let region_ok = !self.region.is_empty()
            && self.region.len() <= MAX_REGION_CHARS
            && self.region.bytes().all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-' || b == b'_');
        if !region_ok {
            return Err(NodeInfoError::Region(self.region.clone()));
        }
        for (field, value) in
            [("raft_addr", &self.raft_addr), ("admin_addr", &self.admin_addr), ("http_addr", &self.http_addr)]
        {
            if !is_host_port(value) {
                return Err(NodeInfoError::Address { field, value: value.clone() });
            }
        }
        Ok(())
    }
}

/// `host:port`, where host is a DNS name, an IPv4 address or `[v6]`.
pub(crate) fn is_host_port(s: &str) -> bool {
    let Some((host, port)) = s.rsplit_once(':') else { return false };
    let port_ok = matches!(port.parse::<u16>(), Ok(p) if p != 0);
    let host_ok = if let Some(v6) = host.strip_prefix('[').and_then(|h| h.strip_suffix(']')) {
        v6.parse::<std::net::Ipv6Addr>().is_ok()
    } else {
        !host.is_empty()
            && host.len() <= MAX_HOST_CHARS
            && host.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'.')
    };
    port_ok && host_ok
}

impl fmt::Display for NodeInfo {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "{{region: {}, raft: {}, admin: {}, http: {}}}",
            self.region, self.raft_addr, self.admin_addr, self.http_addr
        )
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn node() -> NodeInfo {
        NodeInfo {
            region: "eu-west".into(),
            raft_addr: "127.0.0.1:7101".into(),
            admin_addr: "node-1.internal:7201".into(),
            http_addr: "[::1]:8080".into(),
        }
    }

    #[test]
    fn a_well_formed_node_validates() {
        assert_eq!(node().validate(), Ok(()));
    }

    #[test]
    fn validation_names_the_bad_field() {
        let mut n = node();
        n.admin_addr = "localhost".into();
        assert_eq!(n.validate(), Err(NodeInfoError::Address { field: "admin_addr", value: "localhost".into() }));
        let mut n = node();
        n.http_addr = "h:0".into();
        assert!(matches!(n.validate(), Err(NodeInfoError::Address { field: "http_addr", .. })));
        let mut n = node();
        n.region = "EU West".into();
        assert!(matches!(n.validate(), Err(NodeInfoError::Region(_))));
    }
}
