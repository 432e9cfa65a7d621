//! The admin API of a Raftgate node (`raftgate.admin.v1.Admin`).
//!
//! Every node serves it. Input is validated here, at the edge, into model
//! types; a bad request gets `InvalidArgument` naming the field and changes
//! nothing. Writes, membership changes and linearizable reads that reach a
//! follower are forwarded once to the leader (marked so they are never
//! forwarded again). Errors carry a short message and a status code, never
//! an internal detail.

pub mod auth;
mod backup;
pub mod declarative;
mod forward;
mod governance;
mod identity;
mod objects;
mod privacy;
mod status;
mod traffic;

use std::sync::Arc;
use std::time::Duration;

use raftgate_cluster::{ClusterError, ClusterNode, Membership};
use raftgate_model::identity::JwtIssuer;
use raftgate_model::traffic::Plan;
use raftgate_model::{Command, Consumer, NodeInfo, ObjectId, Rejection, Route, SettingKey, SettingValue, Upstream};
use raftgate_proto::admin as pb;
use raftgate_proto::admin::admin_server::{Admin, AdminServer};
use tonic::{Request, Response, Status};

pub use auth::{AuthSettings, Authenticated, Authority};
pub use forward::Forwarder;
pub use governance::run_denial_recorder;
use raftgate_model::governance::{Denial, Operator};
use raftgate_model::route::CertificateRef;

/// Most settings one ListSettings page returns.
const MAX_PAGE: usize = 1_000;
const DEFAULT_PAGE: usize = 100;
/// Largest admin request or reply.
pub const MAX_ADMIN_MESSAGE_BYTES: usize = 4 << 20;

pub struct AdminService {
    node: Arc<ClusterNode>,
    /// Hashes new API keys (the same secret on every node).
    key_hasher: raftgate_identity::apikey::KeyHasher,
    authority: Arc<Authority>,
    forwarder: Arc<Forwarder>,
    /// How long ClusterStatus waits for each member's own report.
    status_timeout: Duration,
    /// This node's staleness bound and assumed one-way delay, reported in NodeStatus.
    staleness: Option<(u64, u64)>,
    /// The data plane's stale-view counters (refused, served), reported in NodeStatus.
    stale_totals: Option<StaleTotalsFn>,
    data_plane: Option<Arc<dyn DataPlaneView>>,
}

/// Reads the data plane's stale-view counters: (refused, served).
pub type StaleTotalsFn = Arc<dyn Fn() -> (u64, u64) + Send + Sync>;

/// What the node's data plane counts, for the catalog.
pub trait DataPlaneView: Send + Sync {
    /// (route, requests since start, requests in the last whole minute).
    fn route_traffic(&self) -> Vec<(String, u64, u64)>;
    /// The most requested unknown (method, template, count), and the overflow count.
    fn unknown_paths(&self, limit: usize) -> (Vec<(String, String, u64)>, u64);
}

impl AdminService {
    /// The service and the queue of refused requests its authority fills
    /// (give it to [`run_denial_recorder`]). Other nodes' admin APIs are
    /// dialled with the node's Raft dialer unless [`with_admin_dialer`](Self::with_admin_dialer).
    pub fn new(node: Arc<ClusterNode>, auth: AuthSettings) -> (Self, tokio::sync::mpsc::Receiver<Denial>) {
        let key_hasher = raftgate_identity::apikey::KeyHasher::new(&auth.secret);
        let (authority, denials) = Authority::new(node.clone(), auth);
        let forwarder = Arc::new(Self::make_forwarder(&node, &authority, node.env().dialer.clone()));
        let service = Self {
            node,
            key_hasher,
            authority,
            forwarder,
            status_timeout: Duration::from_millis(1_000),
            staleness: None,
            stale_totals: None,
            data_plane: None,
        };
        (service, denials)
    }

    fn make_forwarder(node: &Arc<ClusterNode>, authority: &Authority, dialer: raftgate_cluster::Dialer) -> Forwarder {
        let forward_timeout = node.timeouts().write_timeout() + Duration::from_secs(1);
        Forwarder::new(forward_timeout, dialer, authority.signer().clone(), node.env().clock.clone(), node.id())
    }

    /// Dials other nodes' admin listeners with `dialer` (TLS when the admin API uses it).
    pub fn with_admin_dialer(mut self, dialer: raftgate_cluster::Dialer) -> Self {
        self.forwarder = Arc::new(Self::make_forwarder(&self.node, &self.authority, dialer));
        self
    }

    /// Clients to admin listeners that call as this node (quota leases, refusals).
    pub fn link(&self) -> Arc<Forwarder> {
        self.forwarder.clone()
    }

    /// Reports this node's staleness bound (and whether its view is past
    /// it) in NodeStatus.
    pub fn with_staleness(mut self, max_staleness_ms: u64, max_one_way_delay_ms: u64) -> Self {
        self.staleness = Some((max_staleness_ms, max_one_way_delay_ms));
        self
    }

    /// Serves the data plane's route traffic and unknown paths.
    pub fn with_data_plane(mut self, view: Arc<dyn DataPlaneView>) -> Self {
        self.data_plane = Some(view);
        self
    }

    /// Reports the data plane's stale-view counters in NodeStatus.
    pub fn with_stale_totals(mut self, totals: StaleTotalsFn) -> Self {
        self.stale_totals = Some(totals);
        self
    }

    /// This node's own report.
    fn own_status(&self) -> pb::NodeStatusReply {
        let mut reply = status::node_status_reply(self.node.status());
        if let Some((s, d)) = self.staleness {
            reply.revocation_bound_ms = Some(s + d);
            reply.stale = reply.leader_view_age_ms.is_none_or(|age| age + d > s);
        }
        if let Some(totals) = &self.stale_totals {
            (reply.stale_refused_total, reply.stale_served_total) = totals();
        }
        reply
    }

    /// The service behind authentication and the permission table.
    pub fn into_server(self) -> Authenticated<AdminServer<Self>> {
        let authority = self.authority.clone();
        let server = AdminServer::new(self)
            .max_decoding_message_size(MAX_ADMIN_MESSAGE_BYTES)
            .max_encoding_message_size(MAX_ADMIN_MESSAGE_BYTES);
        Authenticated::new(server, authority)
    }
}

/// Maps a cluster error to the status a client sees.
pub(crate) fn to_status(e: ClusterError) -> Status {
    match e {
        ClusterError::Unavailable(m) => Status::unavailable(m),
        ClusterError::NotLeader { leader_id: Some(id), .. } => {
            Status::unavailable(format!("this node is not the leader and could not forward to leader node {id}; retry"))
        }
        ClusterError::NotLeader { leader_id: None, .. } => Status::unavailable("no leader elected yet; retry"),
        ClusterError::Invalid(m) => Status::invalid_argument(m),
        ClusterError::Conflict(m) => Status::failed_precondition(m),
        ClusterError::NotFound(m) => Status::not_found(m),
        ClusterError::Rejected(r) => match &r {
            Rejection::NotFound { .. } => Status::not_found(r.to_string()),
            Rejection::RevisionMismatch { .. } => Status::failed_precondition(r.to_string()),
            Rejection::TableFull { .. } => Status::resource_exhausted(r.to_string()),
            Rejection::Invalid { .. } => Status::invalid_argument(r.to_string()),
            Rejection::Conflict { .. } => Status::failed_precondition(r.to_string()),
        },
        ClusterError::Internal(m) => {
            tracing::error!(error = %m, "admin request failed");
            Status::internal("internal error; see the node's log")
        }
    }
}

pub(crate) fn invalid(field: &str, e: impl std::fmt::Display) -> Status {
    Status::invalid_argument(format!("{field}: {e}"))
}

fn membership_reply(m: Membership) -> pb::MembershipReply {
    pb::MembershipReply {
        log_index: m.log_index.unwrap_or(0),
        voters: m.voters.keys().copied().collect(),
        learners: m.learners.keys().copied().collect(),
    }
}

fn setting_reply(key: &SettingKey, s: &raftgate_model::Setting) -> pb::Setting {
    pb::Setting { key: key.to_string(), value: s.value.to_string(), revision: s.revision, updated_ms: s.updated_ms }
}

type Reply<T> = Result<Response<T>, Status>;

/// One page of a listing: `items` holds at most `limit + 1` objects; the
/// extra one only says that there is a next page.
pub(crate) fn page(items: impl Iterator<Item = pb::Object>, limit: usize) -> pb::ListObjectsReply {
    let mut objects: Vec<pb::Object> = items.collect();
    let more = objects.len() > limit;
    objects.truncate(limit);
    let next_after = if more { objects.last().map(|o| o.id.clone()).unwrap_or_default() } else { String::new() };
    pb::ListObjectsReply { objects, next_after }
}

fn page_limit(limit: u32) -> Result<usize, Status> {
    match limit as usize {
        0 => Ok(DEFAULT_PAGE),
        n if n <= MAX_PAGE => Ok(n),
        n => Err(invalid("limit", format!("must be at most {MAX_PAGE}, got {n}"))),
    }
}

#[tonic::async_trait]
impl Admin for AdminService {
    async fn node_status(&self, _: Request<pb::NodeStatusRequest>) -> Reply<pb::NodeStatusReply> {
        Ok(Response::new(self.own_status()))
    }

    async fn cluster_status(&self, _: Request<pb::ClusterStatusRequest>) -> Reply<pb::ClusterStatusReply> {
        let own = self.own_status();
        Ok(Response::new(status::cluster_status(&self.node, own, &self.forwarder, self.status_timeout).await))
    }

    async fn add_learner(&self, req: Request<pb::AddLearnerRequest>) -> Reply<pb::MembershipReply> {
        let origin = forward::origin(&req);
        let msg = req.into_inner();
        let member = msg.member.clone().ok_or_else(|| invalid("member", "is required"))?;
        let info = NodeInfo {
            region: member.region,
            raft_addr: member.raft_addr,
            admin_addr: member.admin_addr,
            http_addr: member.http_addr,
        };
        info.validate().map_err(|e| invalid("member", e))?;
        let local = self.node.add_learner(member.id, info).await.map(membership_reply);
        self.audit_membership(&origin, &local, "add_learner", member.id).await;
        self.forwarder.or_forward(&origin, local, msg, |mut c, r| async move { c.add_learner(r).await }).await
    }

    async fn promote(&self, req: Request<pb::PromoteRequest>) -> Reply<pb::MembershipReply> {
        let origin = forward::origin(&req);
        let msg = req.into_inner();
        let local = self.node.promote(msg.id).await.map(membership_reply);
        self.audit_membership(&origin, &local, "promote", msg.id).await;
        self.forwarder.or_forward(&origin, local, msg, |mut c, r| async move { c.promote(r).await }).await
    }

    async fn remove_node(&self, req: Request<pb::RemoveNodeRequest>) -> Reply<pb::MembershipReply> {
        let origin = forward::origin(&req);
        let msg = req.into_inner();
        let local = self.node.remove(msg.id).await.map(membership_reply);
        self.audit_membership(&origin, &local, "remove", msg.id).await;
        self.forwarder.or_forward(&origin, local, msg, |mut c, r| async move { c.remove_node(r).await }).await
    }

    async fn put_setting(&self, req: Request<pb::PutSettingRequest>) -> Reply<pb::WriteReply> {
        let origin = forward::origin(&req);
        let msg = req.into_inner();
        let command = Command::PutSetting {
            key: SettingKey::parse(msg.key.clone()).map_err(|e| invalid("key", e))?,
            value: SettingValue::parse(msg.value.clone()).map_err(|e| invalid("value", e))?,
            expected_revision: msg.expected_revision,
        };
        let local = self.write(&origin, command).await;
        self.forwarder.or_forward(&origin, local, msg, |mut c, r| async move { c.put_setting(r).await }).await
    }

    async fn delete_setting(&self, req: Request<pb::DeleteSettingRequest>) -> Reply<pb::WriteReply> {
        let origin = forward::origin(&req);
        let msg = req.into_inner();
        let command = Command::DeleteSetting {
            key: SettingKey::parse(msg.key.clone()).map_err(|e| invalid("key", e))?,
            expected_revision: msg.expected_revision,
        };
        let local = self.write(&origin, command).await;
        self.forwarder.or_forward(&origin, local, msg, |mut c, r| async move { c.delete_setting(r).await }).await
    }

    async fn get_setting(&self, req: Request<pb::GetSettingRequest>) -> Reply<pb::Setting> {
        let origin = forward::origin(&req);
        let msg = req.into_inner();
        let key = SettingKey::parse(msg.key.clone()).map_err(|e| invalid("key", e))?;
        let read = |a: &raftgate_cluster::Applied| a.state.setting(&key).map(|s| setting_reply(&key, s));
        let local = self.read(msg.consistency(), read).await.and_then(|found| {
            found.ok_or_else(|| ClusterError::NotFound(format!("setting {:?} not found", key.as_str())))
        });
        self.forwarder.or_forward(&origin, local, msg, |mut c, r| async move { c.get_setting(r).await }).await
    }

    async fn list_settings(&self, req: Request<pb::ListSettingsRequest>) -> Reply<pb::ListSettingsReply> {
        let origin = forward::origin(&req);
        let msg = req.into_inner();
        let limit = page_limit(msg.limit)?;
        let after = msg.after.clone();
        let read = |a: &raftgate_cluster::Applied| {
            let mut page: Vec<pb::Setting> = a
                .state
                .settings()
                .filter(|(k, _)| k.as_str() > after.as_str())
                .take(limit + 1)
                .map(|(k, s)| setting_reply(k, s))
                .collect();
            let more = page.len() > limit;
            page.truncate(limit);
            let next_after = if more { page.last().map(|s| s.key.clone()).unwrap_or_default() } else { String::new() };
            pb::ListSettingsReply { settings: page, next_after }
        };
        let local = self.read(msg.consistency(), read).await;
        self.forwarder.or_forward(&origin, local, msg, |mut c, r| async move { c.list_settings(r).await }).await
    }

    async fn apply_route(&self, req: Request<pb::ApplyObjectRequest>) -> Reply<pb::WriteReply> {
        self.apply_object::<Route, _, _>(req, |mut c, r| async move { c.apply_route(r).await }).await
    }
    async fn delete_route(&self, req: Request<pb::DeleteObjectRequest>) -> Reply<pb::WriteReply> {
        self.delete_object::<Route, _, _>(req, |mut c, r| async move { c.delete_route(r).await }).await
    }
    async fn get_route(&self, req: Request<pb::GetObjectRequest>) -> Reply<pb::Object> {
        self.get_object::<Route, _, _>(req, |mut c, r| async move { c.get_route(r).await }).await
    }
    async fn list_routes(&self, req: Request<pb::ListObjectsRequest>) -> Reply<pb::ListObjectsReply> {
        self.list_objects::<Route, _, _>(req, |mut c, r| async move { c.list_routes(r).await }).await
    }
    async fn apply_upstream(&self, req: Request<pb::ApplyObjectRequest>) -> Reply<pb::WriteReply> {
        self.apply_object::<Upstream, _, _>(req, |mut c, r| async move { c.apply_upstream(r).await }).await
    }
    async fn delete_upstream(&self, req: Request<pb::DeleteObjectRequest>) -> Reply<pb::WriteReply> {
        self.delete_object::<Upstream, _, _>(req, |mut c, r| async move { c.delete_upstream(r).await }).await
    }
    async fn get_upstream(&self, req: Request<pb::GetObjectRequest>) -> Reply<pb::Object> {
        self.get_object::<Upstream, _, _>(req, |mut c, r| async move { c.get_upstream(r).await }).await
    }
    async fn list_upstreams(&self, req: Request<pb::ListObjectsRequest>) -> Reply<pb::ListObjectsReply> {
        self.list_objects::<Upstream, _, _>(req, |mut c, r| async move { c.list_upstreams(r).await }).await
    }
    async fn apply_consumer(&self, req: Request<pb::ApplyObjectRequest>) -> Reply<pb::WriteReply> {
        self.apply_object::<Consumer, _, _>(req, |mut c, r| async move { c.apply_consumer(r).await }).await
    }
    async fn delete_consumer(&self, req: Request<pb::DeleteObjectRequest>) -> Reply<pb::WriteReply> {
        self.delete_object::<Consumer, _, _>(req, |mut c, r| async move { c.delete_consumer(r).await }).await
    }
    async fn get_consumer(&self, req: Request<pb::GetObjectRequest>) -> Reply<pb::Object> {
        self.get_object::<Consumer, _, _>(req, |mut c, r| async move { c.get_consumer(r).await }).await
    }
    async fn list_consumers(&self, req: Request<pb::ListObjectsRequest>) -> Reply<pb::ListObjectsReply> {
        self.list_objects::<Consumer, _, _>(req, |mut c, r| async move { c.list_consumers(r).await }).await
    }
    async fn apply_issuer(&self, req: Request<pb::ApplyObjectRequest>) -> Reply<pb::WriteReply> {
        self.apply_object::<JwtIssuer, _, _>(req, |mut c, r| async move { c.apply_issuer(r).await }).await
    }
    async fn delete_issuer(&self, req: Request<pb::DeleteObjectRequest>) -> Reply<pb::WriteReply> {
        self.delete_object::<JwtIssuer, _, _>(req, |mut c, r| async move { c.delete_issuer(r).await }).await
    }
    async fn get_issuer(&self, req: Request<pb::GetObjectRequest>) -> Reply<pb::Object> {
        self.get_object::<JwtIssuer, _, _>(req, |mut c, r| async move { c.get_issuer(r).await }).await
    }
    async fn list_issuers(&self, req: Request<pb::ListObjectsRequest>) -> Reply<pb::ListObjectsReply> {
        self.list_objects::<JwtIssuer, _, _>(req, |mut c, r| async move { c.list_issuers(r).await }).await
    }
    async fn create_api_key(&self, req: Request<pb::CreateApiKeyRequest>) -> Reply<pb::CreatedApiKey> {
        let origin = forward::origin(&req);
        let msg = req.into_inner();
        let local = self.create_key(&origin, &msg).await;
        self.forwarder.or_forward(&origin, local, msg, |mut c, r| async move { c.create_api_key(r).await }).await
    }
    async fn delete_api_key(&self, req: Request<pb::DeleteObjectRequest>) -> Reply<pb::WriteReply> {
        let origin = forward::origin(&req);
        let msg = req.into_inner();
        let id = ObjectId::parse(msg.id.clone()).map_err(|e| invalid("id", e.message))?;
        let local = self.write(&origin, Command::DeleteApiKey { id }).await;
        self.forwarder.or_forward(&origin, local, msg, |mut c, r| async move { c.delete_api_key(r).await }).await
    }
    async fn list_api_keys(&self, req: Request<pb::ListApiKeysRequest>) -> Reply<pb::ListObjectsReply> {
        let origin = forward::origin(&req);
        let msg = req.into_inner();
        let limit = page_limit(msg.limit)?;
        let consumer = match msg.consumer.as_str() {
            "" => None,
            c => Some(ObjectId::parse(c).map_err(|e| invalid("consumer", e.message))?),
        };
        let local = self.read(msg.consistency(), identity::list_keys(consumer, msg.after.clone(), limit)).await;
        self.forwarder.or_forward(&origin, local, msg, |mut c, r| async move { c.list_api_keys(r).await }).await
    }
    async fn revoke(&self, req: Request<pb::RevokeRequest>) -> Reply<pb::WriteReply> {
        let origin = forward::origin(&req);
        let msg = req.into_inner();
        let command = identity::revoke_command(&msg)?;
        let local = self.write(&origin, command).await;
        self.forwarder.or_forward(&origin, local, msg, |mut c, r| async move { c.revoke(r).await }).await
    }
    async fn unrevoke(&self, req: Request<pb::UnrevokeRequest>) -> Reply<pb::WriteReply> {
        let origin = forward::origin(&req);
        let msg = req.into_inner();
        let target = identity::target(&msg.target_json)?;
        let local = self.write(&origin, Command::Unrevoke { target }).await;
        self.forwarder.or_forward(&origin, local, msg, |mut c, r| async move { c.unrevoke(r).await }).await
    }
    async fn apply_plan(&self, req: Request<pb::ApplyObjectRequest>) -> Reply<pb::WriteReply> {
        self.apply_object::<Plan, _, _>(req, |mut c, r| async move { c.apply_plan(r).await }).await
    }
    async fn delete_plan(&self, req: Request<pb::DeleteObjectRequest>) -> Reply<pb::WriteReply> {
        self.delete_object::<Plan, _, _>(req, |mut c, r| async move { c.delete_plan(r).await }).await
    }
    async fn get_plan(&self, req: Request<pb::GetObjectRequest>) -> Reply<pb::Object> {
        self.get_object::<Plan, _, _>(req, |mut c, r| async move { c.get_plan(r).await }).await
    }
    async fn list_plans(&self, req: Request<pb::ListObjectsRequest>) -> Reply<pb::ListObjectsReply> {
        self.list_objects::<Plan, _, _>(req, |mut c, r| async move { c.list_plans(r).await }).await
    }
    async fn submit_quota_leases(&self, req: Request<pb::QuotaLeasesRequest>) -> Reply<pb::WriteReply> {
        let origin = forward::origin(&req);
        let msg = req.into_inner();
        let command = traffic::leases_command(&msg)?;
        let local = self.write(&origin, command).await;
        self.forwarder.or_forward(&origin, local, msg, |mut c, r| async move { c.submit_quota_leases(r).await }).await
    }
    async fn list_quotas(&self, req: Request<pb::ListQuotasRequest>) -> Reply<pb::ListObjectsReply> {
        let origin = forward::origin(&req);
        let msg = req.into_inner();
        let limit = page_limit(msg.limit)?;
        let local = self.read(msg.consistency(), traffic::list(msg.filter.clone(), msg.after.clone(), limit)).await;
        self.forwarder.or_forward(&origin, local, msg, |mut c, r| async move { c.list_quotas(r).await }).await
    }
    async fn reset_quota(&self, req: Request<pb::ResetQuotaRequest>) -> Reply<pb::WriteReply> {
        let origin = forward::origin(&req);
        let msg = req.into_inner();
        let command = traffic::reset_command(&msg)?;
        let local = self.write(&origin, command).await;
        self.forwarder.or_forward(&origin, local, msg, |mut c, r| async move { c.reset_quota(r).await }).await
    }
    async fn report_anomaly(&self, req: Request<pb::ReportAnomalyRequest>) -> Reply<pb::WriteReply> {
        let origin = forward::origin(&req);
        let msg = req.into_inner();
        let id = ObjectId::parse(msg.consumer.clone())
            .map_err(|e| Status::invalid_argument(format!("consumer: {}", e.message)))?;
        let reason: String = msg.reason.chars().take(256).collect();
        let target = raftgate_model::identity::RevocationTarget::Consumer { id };
        let command =
            Command::Revoke { target, until_ms: None, reason: format!("anomaly seen by node {}: {reason}", msg.node) };
        let local = self.write(&origin, command).await;
        self.forwarder.or_forward(&origin, local, msg, |mut c, r| async move { c.report_anomaly(r).await }).await
    }
    async fn purge_cache(&self, req: Request<pb::PurgeCacheRequest>) -> Reply<pb::WriteReply> {
        let origin = forward::origin(&req);
        let msg = req.into_inner();
        let route = match msg.route.as_str() {
            "" => None,
            r => Some(ObjectId::parse(r).map_err(|e| Status::invalid_argument(format!("route: {}", e.message)))?),
        };
        let path_prefix = (!msg.path_prefix.is_empty()).then(|| msg.path_prefix.clone());
        let local = self.write(&origin, Command::PurgeCache { route, path_prefix }).await;
        self.forwarder.or_forward(&origin, local, msg, |mut c, r| async move { c.purge_cache(r).await }).await
    }
    async fn apply_certificate(&self, req: Request<pb::ApplyObjectRequest>) -> Reply<pb::WriteReply> {
        self.apply_object::<CertificateRef, _, _>(req, |mut c, r| async move { c.apply_certificate(r).await }).await
    }
    async fn delete_certificate(&self, req: Request<pb::DeleteObjectRequest>) -> Reply<pb::WriteReply> {
        self.delete_object::<CertificateRef, _, _>(req, |mut c, r| async move { c.delete_certificate(r).await }).await
    }
    async fn get_certificate(&self, req: Request<pb::GetObjectRequest>) -> Reply<pb::Object> {
        self.get_object::<CertificateRef, _, _>(req, |mut c, r| async move { c.get_certificate(r).await }).await
    }
    async fn list_certificates(&self, req: Request<pb::ListObjectsRequest>) -> Reply<pb::ListObjectsReply> {
        self.list_objects::<CertificateRef, _, _>(req, |mut c, r| async move { c.list_certificates(r).await }).await
    }
    async fn apply_operator(&self, req: Request<pb::ApplyObjectRequest>) -> Reply<pb::WriteReply> {
        self.apply_object::<Operator, _, _>(req, |mut c, r| async move { c.apply_operator(r).await }).await
    }
    async fn delete_operator(&self, req: Request<pb::DeleteObjectRequest>) -> Reply<pb::WriteReply> {
        self.delete_object::<Operator, _, _>(req, |mut c, r| async move { c.delete_operator(r).await }).await
    }
    async fn get_operator(&self, req: Request<pb::GetObjectRequest>) -> Reply<pb::Object> {
        self.get_object::<Operator, _, _>(req, |mut c, r| async move { c.get_operator(r).await }).await
    }
    async fn list_operators(&self, req: Request<pb::ListObjectsRequest>) -> Reply<pb::ListObjectsReply> {
        self.list_objects::<Operator, _, _>(req, |mut c, r| async move { c.list_operators(r).await }).await
    }
    async fn create_admin_token(&self, req: Request<pb::CreateAdminTokenRequest>) -> Reply<pb::CreatedAdminToken> {
        let origin = forward::origin(&req);
        let msg = req.into_inner();
        let local = self.create_token(&origin, &msg).await;
        self.forwarder.or_forward(&origin, local, msg, |mut c, r| async move { c.create_admin_token(r).await }).await
    }
    async fn delete_admin_token(&self, req: Request<pb::DeleteObjectRequest>) -> Reply<pb::WriteReply> {
        let origin = forward::origin(&req);
        let msg = req.into_inner();
        let id = ObjectId::parse(msg.id.clone()).map_err(|e| invalid("id", e.message))?;
        let local = self.write(&origin, Command::DeleteAdminToken { id }).await;
        self.forwarder.or_forward(&origin, local, msg, |mut c, r| async move { c.delete_admin_token(r).await }).await
    }
    async fn list_admin_tokens(&self, req: Request<pb::ListObjectsRequest>) -> Reply<pb::ListObjectsReply> {
        let origin = forward::origin(&req);
        let msg = req.into_inner();
        let limit = page_limit(msg.limit)?;
        let local = self.read(msg.consistency(), governance::list_tokens(msg.after.clone(), limit)).await;
        self.forwarder.or_forward(&origin, local, msg, |mut c, r| async move { c.list_admin_tokens(r).await }).await
    }
    async fn list_audit(&self, req: Request<pb::ListAuditRequest>) -> Reply<pb::ListAuditReply> {
        let origin = forward::origin(&req);
        let msg = req.into_inner();
        let limit = page_limit(msg.limit.max(msg.tail))?;
        let local = self.read(msg.consistency(), governance::list_audit(&msg, limit)).await;
        self.forwarder.or_forward(&origin, local, msg, |mut c, r| async move { c.list_audit(r).await }).await
    }
    async fn verify_audit(&self, _: Request<pb::VerifyAuditRequest>) -> Reply<pb::VerifyAuditReply> {
        // Always this node's own copy: verifying each node's is the point.
        let id = self.node.id();
        Ok(Response::new(self.node.local_read(|a| governance::verify_audit(a, id))))
    }
    async fn record_denials(&self, req: Request<pb::RecordDenialsRequest>) -> Reply<pb::WriteReply> {
        let origin = forward::origin(&req);
        let msg = req.into_inner();
        let command = governance::denials_command(&msg)?;
        let local = self.write(&origin, command).await;
        self.forwarder.or_forward(&origin, local, msg, |mut c, r| async move { c.record_denials(r).await }).await
    }
    async fn who_am_i(&self, req: Request<pb::WhoAmIRequest>) -> Reply<pb::WhoAmIReply> {
        let caller = req.extensions().get::<auth::Caller>().ok_or_else(|| Status::unauthenticated("no caller"))?;
        Ok(Response::new(pb::WhoAmIReply {
            principal: caller.actor.principal.clone(),
            role: caller.actor.role.to_string(),
            method: caller.method.to_string(),
        }))
    }
    async fn apply_config(&self, req: Request<pb::ApplyConfigRequest>) -> Reply<pb::ApplyConfigReply> {
        let origin = forward::origin(&req);
        let msg = req.into_inner();
        let doc = declarative::parse(&msg.document_json)?;
        for (kind, apply, delete) in doc.kinds() {
            for rpc in [apply, delete].iter().take(if msg.prune { 2 } else { 1 }) {
                if !self.authority.permits(origin.caller.as_ref(), rpc) {
                    let role = origin.caller.as_ref().map_or("none".to_string(), |c| c.actor.role.to_string());
                    return Err(Status::permission_denied(format!(
                        "the document holds {kind}s, and role {role} may not call {rpc}; leave them out or ask an admin"
                    )));
                }
            }
        }
        let local = self.apply_config_local(&origin, &doc, msg.prune, msg.dry_run).await;
        self.forwarder.or_forward(&origin, local, msg, |mut c, r| async move { c.apply_config(r).await }).await
    }
    async fn dump_config(&self, req: Request<pb::DumpConfigRequest>) -> Reply<pb::DumpConfigReply> {
        let origin = forward::origin(&req);
        let msg = req.into_inner();
        let dump = |a: &raftgate_cluster::Applied| pb::DumpConfigReply {
            document_json: serde_json::to_string(&declarative::dump(a)).expect("documents serialize"),
            revision: a.state.revision(),
        };
        let local = self.read(msg.consistency(), dump).await;
        self.forwarder.or_forward(&origin, local, msg, |mut c, r| async move { c.dump_config(r).await }).await
    }
    type SaveSnapshotStream = backup::ChunkStream;
    async fn save_snapshot(&self, req: Request<pb::SaveSnapshotRequest>) -> Reply<Self::SaveSnapshotStream> {
        backup::save_snapshot(&self.node, &self.forwarder, req).await
    }
    async fn route_traffic(&self, _: Request<pb::RouteTrafficRequest>) -> Reply<pb::RouteTrafficReply> {
        let routes = self.data_plane.as_ref().map(|d| d.route_traffic()).unwrap_or_default();
        Ok(Response::new(pb::RouteTrafficReply {
            node_id: self.node.id(),
            routes: routes
                .into_iter()
                .map(|(route, total, last_minute)| pb::RouteTraffic { route, total, last_minute })
                .collect(),
        }))
    }
    async fn unknown_paths(&self, req: Request<pb::UnknownPathsRequest>) -> Reply<pb::UnknownPathsReply> {
        let limit = page_limit(req.into_inner().limit)?;
        let (paths, overflow) = self.data_plane.as_ref().map(|d| d.unknown_paths(limit)).unwrap_or_default();
        Ok(Response::new(pb::UnknownPathsReply {
            node_id: self.node.id(),
            paths: paths
                .into_iter()
                .map(|(method, template, count)| pb::UnknownPath { method, template, count })
                .collect(),
            overflow,
        }))
    }
    async fn export_consumer(&self, req: Request<pb::ExportConsumerRequest>) -> Reply<pb::ExportConsumerReply> {
        let origin = forward::origin(&req);
        let msg = req.into_inner();
        let read = privacy::export(privacy::consumer_id(&msg.consumer)?, msg.audit_after_seq);
        let local = self.read(msg.consistency(), read).await.and_then(|r| r);
        self.forwarder.or_forward(&origin, local, msg, |mut c, r| async move { c.export_consumer(r).await }).await
    }
    async fn forget_consumer(&self, req: Request<pb::ForgetConsumerRequest>) -> Reply<pb::ForgetConsumerReply> {
        let origin = forward::origin(&req);
        let msg = req.into_inner();
        let consumer = privacy::consumer_id(&msg.consumer)?;
        let pseudonym = privacy::pseudonym(&self.key_hasher, &consumer);
        let local = self.node.write_as(Command::ForgetConsumer { consumer, pseudonym }, origin.actor()).await;
        let local = local.map(|w| privacy::forget_reply(&w.effect, w.log_index));
        self.forwarder.or_forward(&origin, local, msg, |mut c, r| async move { c.forget_consumer(r).await }).await
    }
    async fn prune_audit(&self, req: Request<pb::PruneAuditRequest>) -> Reply<pb::WriteReply> {
        let origin = forward::origin(&req);
        let msg = req.into_inner();
        let local = self.write(&origin, privacy::prune_command(&msg)?).await;
        self.forwarder.or_forward(&origin, local, msg, |mut c, r| async move { c.prune_audit(r).await }).await
    }
    async fn compact_log(&self, _: Request<pb::CompactLogRequest>) -> Reply<pb::CompactLogReply> {
        // Always this node's own store.
        let (snapshot_index, purged_index) = self.node.compact_log().await.map_err(to_status)?;
        Ok(Response::new(pb::CompactLogReply {
            node_id: self.node.id(),
            snapshot_index,
            purged_index,
            rewrite_at_restart: true,
        }))
    }
    async fn list_revocations(&self, req: Request<pb::ListObjectsRequest>) -> Reply<pb::ListObjectsReply> {
        let origin = forward::origin(&req);
        let msg = req.into_inner();
        let limit = page_limit(msg.limit)?;
        let local = self.read(msg.consistency(), identity::list_revocations(msg.after.clone(), limit)).await;
        self.forwarder.or_forward(&origin, local, msg, |mut c, r| async move { c.list_revocations(r).await }).await
    }
}

/// The leader's admin client, as the forwarder hands it to a forwarding call.
type LeaderClient = raftgate_proto::admin::admin_client::AdminClient<tonic::transport::Channel>;

/// Routes, upstreams and consumers share one implementation per operation.
impl AdminService {
    async fn apply_object<K, F, Fut>(&self, req: Request<pb::ApplyObjectRequest>, fwd: F) -> Reply<pb::WriteReply>
    where
        K: objects::Kind,
        F: FnOnce(LeaderClient, Request<pb::ApplyObjectRequest>) -> Fut,
        Fut: std::future::Future<Output = Reply<pb::WriteReply>>,
    {
        let origin = forward::origin(&req);
        let msg = req.into_inner();
        let command = objects::put_command::<K>(&msg)?;
        let local = self.write(&origin, command).await;
        self.forwarder.or_forward(&origin, local, msg, fwd).await
    }

    async fn delete_object<K, F, Fut>(&self, req: Request<pb::DeleteObjectRequest>, fwd: F) -> Reply<pb::WriteReply>
    where
        K: objects::Kind,
        F: FnOnce(LeaderClient, Request<pb::DeleteObjectRequest>) -> Fut,
        Fut: std::future::Future<Output = Reply<pb::WriteReply>>,
    {
        let origin = forward::origin(&req);
        let msg = req.into_inner();
        let command = objects::delete_command::<K>(&msg)?;
        let local = self.write(&origin, command).await;
        self.forwarder.or_forward(&origin, local, msg, fwd).await
    }

    async fn get_object<K, F, Fut>(&self, req: Request<pb::GetObjectRequest>, fwd: F) -> Reply<pb::Object>
    where
        K: objects::Kind,
        F: FnOnce(LeaderClient, Request<pb::GetObjectRequest>) -> Fut,
        Fut: std::future::Future<Output = Reply<pb::Object>>,
    {
        let origin = forward::origin(&req);
        let msg = req.into_inner();
        let id = ObjectId::parse(msg.id.clone()).map_err(|e| invalid("id", e.message))?;
        let local = self.read(msg.consistency(), objects::get::<K>(&id)).await.and_then(|r| r);
        self.forwarder.or_forward(&origin, local, msg, fwd).await
    }

    async fn list_objects<K, F, Fut>(&self, req: Request<pb::ListObjectsRequest>, fwd: F) -> Reply<pb::ListObjectsReply>
    where
        K: objects::Kind,
        F: FnOnce(LeaderClient, Request<pb::ListObjectsRequest>) -> Fut,
        Fut: std::future::Future<Output = Reply<pb::ListObjectsReply>>,
    {
        let origin = forward::origin(&req);
        let msg = req.into_inner();
        let limit = page_limit(msg.limit)?;
        let local = self.read(msg.consistency(), objects::list::<K>(msg.after.clone(), limit)).await;
        self.forwarder.or_forward(&origin, local, msg, fwd).await
    }
}

impl AdminService {
    /// Records a membership change this node (the leader) made. openraft
    /// writes the change as its own entry, so the record follows it in the
    /// next one; if that write fails the change stands and the log says so.
    async fn audit_membership(
        &self,
        origin: &forward::Origin,
        done: &Result<pb::MembershipReply, ClusterError>,
        action: &str,
        node: u64,
    ) {
        let Ok(reply) = done else { return };
        let command = Command::MembershipChanged { action: action.into(), node, log_index: reply.log_index };
        if let Err(e) = self.node.write_as(command, origin.actor()).await {
            tracing::error!(action, node, error = %e, "membership change made but not written to the audit trail");
        }
    }

    /// Plans against the leader's state (so a follower forwards) and writes
    /// the plan as one batch; a dry run or an empty plan writes nothing.
    async fn apply_config_local(
        &self,
        origin: &forward::Origin,
        doc: &declarative::Document,
        prune: bool,
        dry_run: bool,
    ) -> Result<pb::ApplyConfigReply, ClusterError> {
        let changes = self
            .node
            .linearizable_read(|a| declarative::plan(a, doc, prune))
            .await?
            .map_err(|s| ClusterError::Invalid(s.message().to_string()))?;
        let mut reply = pb::ApplyConfigReply {
            changes: changes.iter().map(declarative::Change::reply).collect(),
            ..Default::default()
        };
        if dry_run || changes.is_empty() {
            return Ok(reply);
        }
        let commands = changes.into_iter().map(|c| c.command).collect();
        let written = self.write(origin, Command::Batch { commands }).await?;
        reply.applied = true;
        reply.revision = written.revision;
        reply.log_index = written.log_index;
        Ok(reply)
    }

    async fn write(&self, origin: &forward::Origin, command: Command) -> Result<pb::WriteReply, ClusterError> {
        let written = self.node.write_as(command, origin.actor()).await?;
        Ok(pb::WriteReply { revision: written.effect.revision(), log_index: written.log_index })
    }

    async fn read<R>(
        &self,
        consistency: pb::Consistency,
        f: impl FnOnce(&raftgate_cluster::Applied) -> R,
    ) -> Result<R, ClusterError> {
        match consistency {
            pb::Consistency::Local => Ok(self.node.local_read(f)),
            pb::Consistency::Linearizable => self.node.linearizable_read(f).await,
        }
    }
}
