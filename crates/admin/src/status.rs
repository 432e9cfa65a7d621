//! Node and cluster status reports.
//!
//! Cluster status asks every member for its own report, in parallel and each
//! with a timeout, and judges the leader by time since quorum ack: a node
//! that calls itself leader but has not heard from a quorum recently is
//! reported, not believed.

use std::time::Duration;

use raftgate_cluster::{ClusterNode, NodeStatus};
use raftgate_model::{NodeId, NodeInfo};
use raftgate_proto::admin as pb;

use crate::forward::Forwarder;

fn member(id: NodeId, n: &NodeInfo) -> pb::Member {
    pb::Member {
        id,
        region: n.region.clone(),
        raft_addr: n.raft_addr.clone(),
        admin_addr: n.admin_addr.clone(),
        http_addr: n.http_addr.clone(),
    }
}

pub(crate) fn node_status_reply(s: NodeStatus) -> pb::NodeStatusReply {
    pb::NodeStatusReply {
        id: s.id,
        role: s.role.as_str().to_string(),
        term: s.term,
        leader_id: s.leader_id,
        last_log_index: s.last_log_index,
        committed_index: s.committed_index,
        applied_index: s.applied_index,
        snapshot_index: s.snapshot_index,
        millis_since_quorum_ack: s.millis_since_quorum_ack,
        leader_view_age_ms: s.leader_view_age_ms,
        last_leader_contact_ms: s.last_leader_contact_ms,
        replication: s
            .replication
            .iter()
            .map(|(id, matched)| pb::Replication { node_id: *id, matched_index: *matched })
            .collect(),
        state_revision: s.state_revision,
        voters: s.membership.voters.iter().map(|(id, n)| member(*id, n)).collect(),
        learners: s.membership.learners.iter().map(|(id, n)| member(*id, n)).collect(),
        region: s.region,
        revocation_bound_ms: None,
        stale: false,
        stale_refused_total: 0,
        stale_served_total: 0,
    }
}

pub(crate) async fn cluster_status(
    node: &ClusterNode,
    own: pb::NodeStatusReply,
    fwd: &Forwarder,
    timeout: Duration,
) -> pb::ClusterStatusReply {
    let me = node.status();
    let lease_ms = node.timeouts().election_timeout_max_ms;
    let members: Vec<(NodeId, NodeInfo, bool)> = me.membership.all().map(|(id, n, v)| (id, n.clone(), v)).collect();
    let own_id = me.id;
    let reports = futures::future::join_all(members.iter().map(|(id, info, _)| {
        let own = own.clone();
        async move {
            if *id == own_id {
                return Ok(own);
            }
            let mut client = fwd.client(&info.admin_addr).map_err(|s| s.message().to_string())?;
            let mut req = fwd.node_request(pb::NodeStatusRequest {});
            req.set_timeout(timeout);
            match tokio::time::timeout(timeout, client.node_status(req)).await {
                Ok(Ok(r)) => Ok(r.into_inner()),
                Ok(Err(s)) => Err(format!("{}: {}", s.code(), s.message())),
                Err(_) => Err(format!("no answer within {} ms", timeout.as_millis())),
            }
        }
    }))
    .await;

    let mut warnings = Vec::new();
    let leader = reports.iter().flatten().find(|r| {
        if r.role != "leader" {
            return false;
        }
        match r.millis_since_quorum_ack {
            Some(age) if age <= lease_ms => true,
            age => {
                warnings.push(format!(
                    "node {} reports itself leader but has no quorum ack within {lease_ms} ms ({}); not counted as leader",
                    r.id,
                    age.map_or("never".to_string(), |a| format!("last {a} ms ago"))
                ));
                false
            }
        }
    });
    let leader_id = leader.map(|l| l.id);
    for r in reports.iter().flatten().filter(|r| r.stale) {
        warnings.push(format!(
            "node {} holds a view older than its staleness bound ({}): it may miss revocations and answers 503 on authenticated routes",
            r.id,
            r.leader_view_age_ms.map_or("never had one".to_string(), |a| format!("{a} ms old"))
        ));
    }
    let lag = |id: NodeId| -> Option<u64> {
        let l = leader?;
        let last = l.last_log_index?;
        if l.id == id {
            return Some(0);
        }
        let matched = l.replication.iter().find(|r| r.node_id == id)?.matched_index;
        Some(last.saturating_sub(matched.unwrap_or(0)))
    };
    let members = members
        .iter()
        .zip(reports.iter())
        .map(|((id, info, voter), report)| pb::MemberStatus {
            member: Some(member(*id, info)),
            voter: *voter,
            reachable: report.is_ok(),
            error: report.as_ref().err().cloned().unwrap_or_default(),
            status: report.as_ref().ok().cloned(),
            lag: lag(*id),
        })
        .collect();
    pb::ClusterStatusReply { answered_by: own_id, leader_id, members, warnings }
}
