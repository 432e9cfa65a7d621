//! Plans, quota leases and the quota ledger over the admin API.
//!
//! Nodes send their quota asks and returns here (to their own admin API,
//! which forwards to the leader) as one command per batch interval.
//! Operators read the ledger with `ListQuotas` and start a key's window
//! over with `ResetQuota`.

use raftgate_cluster::Applied;
use raftgate_model::traffic::{LeaseAsk, QuotaKey};
use raftgate_model::Command;
use raftgate_proto::admin as pb;
use tonic::Status;

use crate::invalid;

/// Largest asks document accepted.
const MAX_ASKS_BYTES: usize = 4 << 20;

pub(crate) fn leases_command(msg: &pb::QuotaLeasesRequest) -> Result<Command, Status> {
    if msg.asks_json.len() > MAX_ASKS_BYTES {
        return Err(invalid("asks_json", format!("must be at most {MAX_ASKS_BYTES} bytes")));
    }
    if msg.node == 0 {
        return Err(invalid("node", "must be a node id"));
    }
    let asks: Vec<LeaseAsk> = serde_json::from_str(&msg.asks_json).map_err(|e| invalid("asks_json", e))?;
    Ok(Command::QuotaLeases { node: msg.node, incarnation: msg.incarnation, asks })
}

pub(crate) fn reset_command(msg: &pb::ResetQuotaRequest) -> Result<Command, Status> {
    let key = QuotaKey::parse_ledger_key(&msg.key).ok_or_else(|| {
        invalid("key", "must be a ledger key as `quota list` shows it (SCOPE/ID/QUOTA/VALUE@WINDOW_START)")
    })?;
    Ok(Command::ResetQuota { key })
}

/// Ledger entries whose key contains `filter`, with what each node holds.
pub(crate) fn list(filter: String, after: String, limit: usize) -> impl FnOnce(&Applied) -> pb::ListObjectsReply {
    move |a| {
        use std::ops::Bound;
        let objects = a
            .state
            .quota_entries()
            .range::<str, _>((Bound::Excluded(after.as_str()), Bound::Unbounded))
            .filter(|(k, _)| k.contains(filter.as_str()))
            .take(limit + 1)
            .map(|(k, e)| {
                let nodes: serde_json::Map<String, serde_json::Value> =
                    e.held_by_node().into_iter().map(|(n, h)| (n.to_string(), serde_json::json!(h))).collect();
                let spec = serde_json::json!({
                    "limit": e.limit,
                    "held": e.held(),
                    "unallocated": e.limit - e.held(),
                    "held_by_node": nodes,
                    "granted": e.granted,
                    "returned": e.returned,
                    "window_end_ms": e.window_end_ms,
                    "epoch": e.epoch,
                });
                pb::Object { id: k.clone(), spec_json: spec.to_string(), revision: e.epoch, updated_ms: 0 }
            });
        crate::page(objects, limit)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn bad_lease_batches_and_reset_keys_name_the_field() {
        let bad = pb::QuotaLeasesRequest { node: 1, asks_json: "not json".into(), incarnation: 0 };
        assert!(leases_command(&bad).unwrap_err().message().starts_with("asks_json"));
        let zero = pb::QuotaLeasesRequest { node: 0, asks_json: "[]".into(), incarnation: 0 };
        assert!(leases_command(&zero).unwrap_err().message().starts_with("node"));
        let reset = pb::ResetQuotaRequest { key: "garbage".into() };
        assert!(reset_command(&reset).unwrap_err().message().starts_with("key"));
    }
}
