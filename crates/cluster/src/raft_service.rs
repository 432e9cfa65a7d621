//! The receiving side of the Raft transport: a tonic service that hands
//! openraft's messages to the local Raft and records the leader view.

use std::sync::Arc;

use openraft::raft::{AppendEntriesResponse, InstallSnapshotRequest};
use raftgate_proto::raft as pb;
use raftgate_proto::raft::raft_server::{Raft as RaftRpc, RaftServer};
use raftgate_store::TypeConfig;
use serde::de::DeserializeOwned;
use serde::Serialize;
use tonic::{Request, Response, Status};

use crate::incarnation::{ClusterName, Incarnations, CLUSTER_HEADER, ORIGIN_HEADER};
use crate::network::origin_of;
use crate::network::MAX_RAFT_MESSAGE_BYTES;
use crate::view::LeaderView;
use crate::Raft;

/// Serves `raftgate.raft.v1.Raft` for one node.
pub struct RaftService {
    raft: Raft,
    view: Arc<LeaderView>,
    incarnations: Arc<Incarnations>,
    cluster: Arc<ClusterName>,
}

impl RaftService {
    pub fn new(raft: Raft, view: Arc<LeaderView>, incarnations: Arc<Incarnations>, cluster: Arc<ClusterName>) -> Self {
        Self { raft, view, incarnations, cluster }
    }

    /// Refuses a request from another cluster, or from an old copy of a
    /// peer's data dir (see [`crate::incarnation`]). The cluster is checked
    /// first: another cluster's runs are never recorded.
    async fn admit<T>(&self, request: &Request<T>) -> Result<(), Status> {
        let sender = origin_of(request.metadata()).map(|o| o.node);
        self.cluster.check(request.metadata(), sender).map_err(|e| Status::failed_precondition(e.to_string()))?;
        self.incarnations
            .check(origin_of(request.metadata()), None)
            .await
            .map_err(|e| Status::failed_precondition(e.to_string()))
    }

    /// An answer, carrying this node's origin.
    fn reply<T: Serialize, E: Serialize>(&self, result: &Result<T, E>) -> Result<Response<pb::RaftReply>, Status> {
        let mut response = reply(result)?;
        response.metadata_mut().insert(ORIGIN_HEADER, self.incarnations.header());
        response.metadata_mut().insert(CLUSTER_HEADER, self.cluster.header());
        Ok(response)
    }

    /// The tonic server wrapper, with message size limits set.
    pub fn into_server(self) -> RaftServer<Self> {
        RaftServer::new(self)
            .max_decoding_message_size(MAX_RAFT_MESSAGE_BYTES)
            .max_encoding_message_size(MAX_RAFT_MESSAGE_BYTES)
    }
}

fn decode<T: DeserializeOwned>(bytes: &[u8], what: &str) -> Result<T, Status> {
    serde_json::from_slice(bytes).map_err(|e| Status::invalid_argument(format!("{what} does not decode: {e}")))
}

fn reply<T: Serialize, E: Serialize>(result: &Result<T, E>) -> Result<Response<pb::RaftReply>, Status> {
    let result = serde_json::to_vec(result).map_err(|e| Status::internal(format!("encoding reply: {e}")))?;
    Ok(Response::new(pb::RaftReply { result }))
}

#[tonic::async_trait]
impl RaftRpc for RaftService {
    async fn append_entries(
        &self,
        request: Request<pb::AppendEntriesRequest>,
    ) -> Result<Response<pb::RaftReply>, Status> {
        self.admit(&request).await?;
        let msg = request.into_inner();
        let rpc: openraft::raft::AppendEntriesRequest<TypeConfig> = decode(&msg.rpc, "append entries request")?;
        let leader_commit = rpc.leader_commit.map(|l| l.index);
        let result = self.raft.append_entries(rpc).await;
        // Only a leader this node accepted dates its view: a deposed leader's
        // heartbeat is answered with HigherVote and does not count.
        if let Ok(resp) = &result {
            if !matches!(resp, AppendEntriesResponse::HigherVote(_)) {
                self.view.record_append(msg.leader_quorum_age_ms, leader_commit);
            }
        }
        self.reply(&result)
    }

    async fn vote(&self, request: Request<pb::VoteRequest>) -> Result<Response<pb::RaftReply>, Status> {
        self.admit(&request).await?;
        let rpc = decode(&request.into_inner().rpc, "vote request")?;
        self.reply(&self.raft.vote(rpc).await)
    }

    async fn install_snapshot(
        &self,
        request: Request<pb::InstallSnapshotRequest>,
    ) -> Result<Response<pb::RaftReply>, Status> {
        self.admit(&request).await?;
        let msg = request.into_inner();
        let done = msg.done;
        let req = InstallSnapshotRequest::<TypeConfig> {
            vote: decode(&msg.vote, "snapshot vote")?,
            meta: decode(&msg.meta, "snapshot meta")?,
            offset: msg.offset,
            data: msg.data,
            done: msg.done,
        };
        let snapshot_id = req.meta.snapshot_id.clone();
        let result = self.raft.install_snapshot(req).await;
        if done && result.is_ok() {
            tracing::info!(%snapshot_id, "snapshot received from the leader");
        }
        self.reply(&result)
    }
}
