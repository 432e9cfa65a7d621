//! Forwarding admin requests from a follower to the leader, once.

use std::collections::HashMap;
use std::future::Future;
use std::sync::Mutex;
use std::time::Duration;

use raftgate_cluster::{ClusterError, Dialer, WallClock};
use raftgate_model::governance::{Actor, Role};
use raftgate_proto::admin::admin_client::AdminClient;
use tonic::transport::Channel;
use tonic::{Request, Response, Status};

use crate::auth::{Caller, Signer, ASSERTION};
use crate::{to_status, MAX_ADMIN_MESSAGE_BYTES};

/// Metadata key marking a request a node forwarded; such a request is never forwarded again.
const FORWARDED: &str = "x-raftgate-forwarded";
/// Channels kept to other nodes' admin listeners; the set is rebuilt when full.
const MAX_CACHED_CHANNELS: usize = 64;

/// Where a request came from: forwarded by a node or not, and its caller.
pub(crate) struct Origin {
    pub forwarded: bool,
    pub caller: Option<Caller>,
}

impl Origin {
    pub(crate) fn actor(&self) -> Option<Actor> {
        self.caller.as_ref().map(|c| c.actor.clone())
    }
}

pub(crate) fn origin<T>(req: &Request<T>) -> Origin {
    Origin { forwarded: req.metadata().contains_key(FORWARDED), caller: req.extensions().get::<Caller>().cloned() }
}

/// Admin clients to other nodes, by admin address, and the assertions
/// that tell them who the caller is.
pub struct Forwarder {
    channels: Mutex<HashMap<String, Channel>>,
    timeout: Duration,
    dialer: Dialer,
    signer: Signer,
    clock: WallClock,
    node_id: u64,
}

impl Forwarder {
    pub fn new(timeout: Duration, dialer: Dialer, signer: Signer, clock: WallClock, node_id: u64) -> Self {
        Self { channels: Mutex::new(HashMap::new()), timeout, dialer, signer, clock, node_id }
    }

    /// A request from this node itself (role `node`).
    pub fn node_request<M>(&self, msg: M) -> Request<M> {
        let mut req = Request::new(msg);
        let a = self.signer.sign(&format!("node:{}", self.node_id), Role::Node, "node", self.clock.now_ms());
        req.metadata_mut().insert(ASSERTION, a.parse().expect("base64 is valid metadata"));
        req
    }

    /// A client for the admin listener at `addr`.
    pub fn client(&self, addr: &str) -> Result<AdminClient<Channel>, Status> {
        let mut channels = self.channels.lock().unwrap_or_else(|p| p.into_inner());
        let channel = match channels.get(addr) {
            Some(c) => c.clone(),
            None => {
                let c = self
                    .dialer
                    .dial(addr)
                    .map_err(|_| Status::unavailable(format!("invalid admin address {addr:?} in membership")))?;
                if channels.len() >= MAX_CACHED_CHANNELS {
                    channels.clear();
                }
                channels.insert(addr.to_string(), c.clone());
                c
            }
        };
        Ok(AdminClient::new(channel)
            .max_decoding_message_size(MAX_ADMIN_MESSAGE_BYTES)
            .max_encoding_message_size(MAX_ADMIN_MESSAGE_BYTES))
    }

    /// Returns the local result unless it is "not the leader" for a request that
    /// was not forwarded yet; then sends `msg` to the leader with `call`.
    pub(crate) async fn or_forward<M, R, F, Fut>(
        &self,
        origin: &Origin,
        local: Result<R, ClusterError>,
        msg: M,
        call: F,
    ) -> Result<Response<R>, Status>
    where
        F: FnOnce(AdminClient<Channel>, Request<M>) -> Fut,
        Fut: Future<Output = Result<Response<R>, Status>>,
    {
        let addr = match local {
            Ok(r) => return Ok(Response::new(r)),
            Err(ClusterError::NotLeader { leader_admin_addr: Some(addr), .. }) if !origin.forwarded => addr,
            Err(e) => return Err(to_status(e)),
        };
        tracing::debug!(leader = %addr, "forwarding admin request to the leader");
        let mut req = Request::new(msg);
        req.metadata_mut().insert(FORWARDED, "1".parse().expect("static metadata value"));
        if let Some(c) = &origin.caller {
            let a = self.signer.sign(&c.actor.principal, c.actor.role, c.method, self.clock.now_ms());
            req.metadata_mut().insert(ASSERTION, a.parse().expect("base64 is valid metadata"));
        }
        req.set_timeout(self.timeout);
        call(self.client(&addr)?, req).await.map_err(|s| match s.code() {
            // The leader's own answer passes through; a transport failure says where it happened.
            tonic::Code::Unavailable if s.message().starts_with("transport") || s.message().contains("connect") => {
                Status::unavailable(format!("leader at {addr} is unreachable; retry"))
            }
            _ => s,
        })
    }
}
