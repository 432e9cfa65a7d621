//! The sending side of the Raft transport: openraft's `RaftNetwork` over tonic.
//!
//! openraft's messages travel as JSON inside protobuf bytes fields; snapshot
//! data as raw bytes. Every call carries a deadline from openraft's
//! `RPCOption`, and every channel keeps HTTP/2 keepalive on so that it notices
//! a dead peer and recovers after a partition heals.

use std::sync::Arc;
use std::time::Duration;

use openraft::error::{InstallSnapshotError, NetworkError, RPCError, RaftError, RemoteError, Unreachable};
use openraft::network::{RPCOption, RaftNetwork, RaftNetworkFactory};
use openraft::raft::{
    AppendEntriesRequest, AppendEntriesResponse, InstallSnapshotRequest, InstallSnapshotResponse, VoteRequest,
    VoteResponse,
};
use raftgate_model::{NodeId, NodeInfo};
use raftgate_proto::raft as pb;
use raftgate_proto::raft::raft_client::RaftClient;
use raftgate_store::TypeConfig;
use serde::de::DeserializeOwned;
use serde::Serialize;
use tonic::transport::{Channel, Endpoint};

use crate::env::Dialer;
use crate::incarnation::{ClusterName, Incarnations, Origin, CLUSTER_HEADER, ORIGIN_HEADER};
use crate::view::LeaderView;

/// Largest gRPC message a node accepts or sends on the Raft transport.
pub const MAX_RAFT_MESSAGE_BYTES: usize = 16 << 20;
pub(crate) const CONNECT_TIMEOUT: Duration = Duration::from_millis(500);
const KEEPALIVE_INTERVAL: Duration = Duration::from_secs(1);
const KEEPALIVE_TIMEOUT: Duration = Duration::from_secs(2);

/// The endpoint for `addr` (`host:port`, plaintext HTTP/2): connect timeout
/// and keepalive, which is what notices a dead peer behind a live connection.
pub fn endpoint_for(addr: &str) -> Result<Endpoint, tonic::transport::Error> {
    Ok(Endpoint::from_shared(format!("http://{addr}"))?
        .connect_timeout(CONNECT_TIMEOUT)
        .http2_keep_alive_interval(KEEPALIVE_INTERVAL)
        .keep_alive_timeout(KEEPALIVE_TIMEOUT)
        .keep_alive_while_idle(true)
        .tcp_nodelay(true))
}

/// A lazily connected TCP channel to `addr`. Connection errors surface on the
/// first call, not here.
pub fn channel_to(addr: &str) -> Result<Channel, tonic::transport::Error> {
    Ok(endpoint_for(addr)?.connect_lazy())
}

/// Makes one [`PeerClient`] per replication target.
pub struct NetworkFactory {
    view: Arc<LeaderView>,
    dialer: Dialer,
    incarnations: Arc<Incarnations>,
    cluster: Arc<ClusterName>,
}

impl NetworkFactory {
    pub fn new(
        view: Arc<LeaderView>,
        dialer: Dialer,
        incarnations: Arc<Incarnations>,
        cluster: Arc<ClusterName>,
    ) -> Self {
        Self { view, dialer, incarnations, cluster }
    }
}

impl RaftNetworkFactory<TypeConfig> for NetworkFactory {
    type Network = PeerClient;

    async fn new_client(&mut self, target: NodeId, node: &NodeInfo) -> PeerClient {
        let client = self.dialer.dial(&node.raft_addr).map(|c| {
            RaftClient::new(c)
                .max_decoding_message_size(MAX_RAFT_MESSAGE_BYTES)
                .max_encoding_message_size(MAX_RAFT_MESSAGE_BYTES)
        });
        if let Err(e) = &client {
            tracing::warn!(target_node = target, addr = %node.raft_addr, error = %e, "invalid raft address");
        }
        PeerClient {
            target,
            client,
            view: self.view.clone(),
            incarnations: self.incarnations.clone(),
            cluster: self.cluster.clone(),
        }
    }
}

/// Sends Raft RPCs to one peer.
pub struct PeerClient {
    target: NodeId,
    client: Result<RaftClient<Channel>, String>,
    view: Arc<LeaderView>,
    incarnations: Arc<Incarnations>,
    cluster: Arc<ClusterName>,
}

type RpcResult<T, E = RaftError<NodeId>> = Result<T, RPCError<NodeId, NodeInfo, E>>;

#[derive(Debug, thiserror::Error)]
#[error("{0}")]
struct TransportError(String);

fn encode<T: Serialize>(v: &T) -> Vec<u8> {
    serde_json::to_vec(v).expect("openraft messages serialize to JSON")
}

fn with_deadline<T>(
    msg: T,
    option: &RPCOption,
    origin: tonic::metadata::AsciiMetadataValue,
    cluster: tonic::metadata::AsciiMetadataValue,
) -> tonic::Request<T> {
    let mut req = tonic::Request::new(msg);
    req.set_timeout(option.hard_ttl());
    req.metadata_mut().insert(ORIGIN_HEADER, origin);
    req.metadata_mut().insert(CLUSTER_HEADER, cluster);
    req
}

/// The origin a request or answer carries (None: absent or malformed).
pub(crate) fn origin_of(metadata: &tonic::metadata::MetadataMap) -> Option<Origin> {
    metadata.get(ORIGIN_HEADER).and_then(|v| v.to_str().ok()).and_then(Origin::parse)
}

impl PeerClient {
    fn request<T>(&self, msg: T, option: &RPCOption) -> tonic::Request<T> {
        with_deadline(msg, option, self.incarnations.header(), self.cluster.header())
    }

    /// Passes an answer on only if it comes from a node of this cluster and
    /// from the peer's current run of its data dir; one from another cluster
    /// or an old copy counts as unreachable (see [`crate::incarnation`]).
    async fn checked<E: std::error::Error>(
        &self,
        reply: Result<tonic::Response<pb::RaftReply>, tonic::Status>,
    ) -> RpcResult<Result<tonic::Response<pb::RaftReply>, tonic::Status>, E> {
        if let Ok(r) = &reply {
            if let Err(e) = self.cluster.check(r.metadata(), Some(self.target)) {
                return Err(RPCError::Unreachable(Unreachable::new(&TransportError(e.to_string()))));
            }
            if let Err(e) = self.incarnations.check(origin_of(r.metadata()), Some(self.target)).await {
                return Err(RPCError::Unreachable(Unreachable::new(&TransportError(e.to_string()))));
            }
        }
        Ok(reply)
    }

    fn client<E: std::error::Error>(&self) -> RpcResult<RaftClient<Channel>, E> {
        self.client.clone().map_err(|e| RPCError::Unreachable(Unreachable::new(&TransportError(e))))
    }

    /// Decodes a reply: a transport failure, a remote Raft error or the response.
    fn decode<T: DeserializeOwned, E: std::error::Error + DeserializeOwned>(
        &self,
        reply: Result<tonic::Response<pb::RaftReply>, tonic::Status>,
    ) -> RpcResult<T, E> {
        let reply = reply.map_err(|status| {
            let e = TransportError(format!("{}: {}", status.code(), status.message()));
            match status.code() {
                tonic::Code::Unavailable | tonic::Code::DeadlineExceeded | tonic::Code::Cancelled => {
                    RPCError::Unreachable(Unreachable::new(&e))
                }
                _ => RPCError::Network(NetworkError::new(&e)),
            }
        })?;
        let result: Result<T, E> =
            serde_json::from_slice(&reply.into_inner().result).map_err(|e| RPCError::Network(NetworkError::new(&e)))?;
        result.map_err(|e| RPCError::RemoteError(RemoteError::new(self.target, e)))
    }
}

impl RaftNetwork<TypeConfig> for PeerClient {
    async fn append_entries(
        &mut self,
        rpc: AppendEntriesRequest<TypeConfig>,
        option: RPCOption,
    ) -> RpcResult<AppendEntriesResponse<NodeId>> {
        let msg = pb::AppendEntriesRequest { rpc: encode(&rpc), leader_quorum_age_ms: self.view.quorum_ack_age_ms() };
        let reply = self.client()?.append_entries(self.request(msg, &option)).await;
        let reply = self.checked(reply).await?;
        self.decode(reply)
    }

    async fn install_snapshot(
        &mut self,
        rpc: InstallSnapshotRequest<TypeConfig>,
        option: RPCOption,
    ) -> RpcResult<InstallSnapshotResponse<NodeId>, RaftError<NodeId, InstallSnapshotError>> {
        let msg = pb::InstallSnapshotRequest {
            vote: encode(&rpc.vote),
            meta: encode(&rpc.meta),
            offset: rpc.offset,
            data: rpc.data,
            done: rpc.done,
        };
        let reply = self.client()?.install_snapshot(self.request(msg, &option)).await;
        let reply = self.checked(reply).await?;
        self.decode(reply)
    }

    async fn vote(&mut self, rpc: VoteRequest<NodeId>, option: RPCOption) -> RpcResult<VoteResponse<NodeId>> {
        let msg = pb::VoteRequest { rpc: encode(&rpc) };
        let reply = self.client()?.vote(self.request(msg, &option)).await;
        let reply = self.checked(reply).await?;
        let resp: VoteResponse<NodeId> = self.decode(reply)?;
        if !resp.vote_granted && resp.last_log_id > rpc.last_log_id {
            // The election timer backs off: a more up-to-date node should win.
            self.view.record_greater_log(rpc.vote.leader_id().term);
        }
        Ok(resp)
    }
}
