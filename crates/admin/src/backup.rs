//! `SaveSnapshot`: a consistent snapshot file of the cluster's state,
//! streamed in chunks of at most 1 MiB. The leader takes it (after a read
//! index round with a quorum); a follower forwards the call once and relays
//! the leader's stream, so the client needs no redirect. Each snapshot
//! taken is logged with its caller (reads are not written to the audit
//! trail: recording a read would itself be a replicated write).

use std::pin::Pin;

use futures::Stream;
use raftgate_cluster::backup::{snapshot_file, SNAPSHOT_CHUNK_BYTES};
use raftgate_cluster::ClusterNode;
use raftgate_proto::admin as pb;
use tonic::{Request, Response, Status};

use crate::forward::{self, Forwarder};

/// The chunks of one snapshot file.
pub type ChunkStream = Pin<Box<dyn Stream<Item = Result<pb::SnapshotChunk, Status>> + Send + 'static>>;

fn chunks(file: Vec<u8>) -> ChunkStream {
    let pieces: Vec<Result<pb::SnapshotChunk, Status>> =
        file.chunks(SNAPSHOT_CHUNK_BYTES).map(|c| Ok(pb::SnapshotChunk { data: c.to_vec() })).collect();
    Box::pin(futures::stream::iter(pieces))
}

pub(crate) async fn save_snapshot(
    node: &ClusterNode,
    forwarder: &Forwarder,
    req: Request<pb::SaveSnapshotRequest>,
) -> Result<Response<ChunkStream>, Status> {
    let origin = forward::origin(&req);
    let msg = req.into_inner();
    let caller = origin.actor().map(|a| a.principal).unwrap_or_else(|| "anonymous".into());
    let local = snapshot_file(node, node.env().clock.now_ms()).await;
    if let Ok(file) = &local {
        tracing::info!(target: "raftgate::audit", caller = %caller, bytes = file.len(), "snapshot taken for a backup");
    }
    forwarder
        .or_forward(&origin, local.map(chunks), msg, |mut c, r| async move {
            let stream = c.save_snapshot(r).await?.into_inner();
            Ok(Response::new(Box::pin(stream) as ChunkStream))
        })
        .await
}
