//! Who is calling, and may they call this RPC.
//!
//! Every admin request passes [`Authenticated`] before it reaches a handler.
//! It finds the caller from, in this order: a node's signed assertion
//! (requests forwarded by another node carry their original caller; nodes
//! call each other as `node:<id>`), a bearer token (`Authorization: Bearer
//! rgt_…`, checked against the stored keyed hash), the bootstrap token from
//! the node's config, a client certificate whose SHA-256 an operator lists.
//! Then [`need`] (the whole permission table, in one place) decides. A
//! refusal answers `Unauthenticated` or `PermissionDenied` with a message
//! that says what to present, and is queued for the audit trail.

use std::convert::Infallible;
use std::sync::Arc;
use std::task::{Context, Poll};

use base64::Engine as _;
use futures::future::BoxFuture;
use raftgate_cluster::ClusterNode;
use raftgate_identity::apikey::KeyHasher;
use raftgate_model::governance::{admin_token_id, Actor, Denial, Role};
use raftgate_model::identity::Digest;
use ring::hmac;
use serde::{Deserialize, Serialize};
use sha2::{Digest as _, Sha256};
use tonic::server::NamedService;
use tonic::Status;

/// A proven caller: principal, role, how it authenticated.
type Proven = (String, Role, &'static str);
/// A refused credential: what was presented, and why it failed.
type Refused = (String, String);

/// Metadata key of a node's signed statement of who the caller is.
pub(crate) const ASSERTION: &str = "x-raftgate-assert";
/// How long a signed assertion is good for (covers clock skew between nodes).
const ASSERTION_TTL_MS: u64 = 30_000;
/// Refusals waiting for the audit trail; beyond this they are only logged.
pub const DENIAL_QUEUE: usize = 256;

/// What an RPC needs.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Need {
    /// Status and reads of objects.
    Read,
    /// The audit trail.
    Audit,
    /// Day-to-day changes: routes, upstreams, consumers, API keys, revocations.
    Operate,
    /// Everything else that changes the cluster.
    Admin,
    /// Calls only cluster members make.
    Node,
}

/// The permission table. An RPC that is not listed is refused.
pub fn need(rpc: &str) -> Option<Need> {
    use Need::*;
    Some(match rpc {
        "NodeStatus" | "ClusterStatus" | "WhoAmI" | "RouteTraffic" | "UnknownPaths" => Read,
        "GetSetting" | "ListSettings" | "GetRoute" | "ListRoutes" | "GetUpstream" | "ListUpstreams" | "GetConsumer"
        | "ListConsumers" | "GetIssuer" | "ListIssuers" | "ListApiKeys" | "ListRevocations" | "GetPlan"
        | "ListPlans" | "ListQuotas" | "GetCertificate" | "ListCertificates" => Read,
        "ListAudit" | "VerifyAudit" | "GetOperator" | "ListOperators" | "ListAdminTokens" => Audit,
        // Personal data: as sensitive as the audit trail.
        "ExportConsumer" => Audit,
        "ForgetConsumer" | "PruneAudit" | "CompactLog" => Admin,
        "ApplyRoute" | "DeleteRoute" | "ApplyUpstream" | "DeleteUpstream" | "ApplyConsumer" | "DeleteConsumer"
        | "CreateApiKey" | "DeleteApiKey" | "Revoke" | "Unrevoke" | "PurgeCache" => Operate,
        "AddLearner" | "Promote" | "RemoveNode" | "PutSetting" | "DeleteSetting" | "ApplyIssuer" | "DeleteIssuer"
        | "ApplyPlan" | "DeletePlan" | "ResetQuota" | "ApplyOperator" | "DeleteOperator" | "CreateAdminToken"
        | "DeleteAdminToken" | "ApplyCertificate" | "DeleteCertificate" => Admin,
        // The whole state (hashes of credentials included): a backup.
        "SaveSnapshot" => Admin,
        "SubmitQuotaLeases" | "RecordDenials" | "ReportAnomaly" => Node,
        // The handler checks the caller may apply (and delete) each kind the document holds.
        "ApplyConfig" => Operate,
        "DumpConfig" => Read,
        _ => return None,
    })
}

/// Whether `role` may do what `need` asks.
pub fn allows(role: Role, need: Need) -> bool {
    match role {
        Role::Admin => need != Need::Node,
        Role::Operator => matches!(need, Need::Read | Need::Operate),
        Role::Auditor => matches!(need, Need::Read | Need::Audit),
        Role::Node => matches!(need, Need::Read | Need::Node),
    }
}

/// The authenticated caller, as handlers find it in the request's extensions.
#[derive(Clone, Debug)]
pub struct Caller {
    pub actor: Actor,
    /// token, certificate, bootstrap_token, open or node.
    pub method: &'static str,
}

/// Signs and checks the assertions nodes attach to requests they send each
/// other, with the cluster's shared secret.
#[derive(Clone)]
pub struct Signer {
    key: hmac::Key,
}

#[derive(Serialize, Deserialize)]
struct Claims {
    p: String,
    r: Role,
    m: String,
    exp: u64,
}

impl Signer {
    pub fn new(secret: &[u8]) -> Self {
        Self { key: hmac::Key::new(hmac::HMAC_SHA256, secret) }
    }

    pub(crate) fn sign(&self, principal: &str, role: Role, method: &str, now_ms: u64) -> String {
        let claims = Claims { p: principal.into(), r: role, m: method.into(), exp: now_ms + ASSERTION_TTL_MS };
        let b64 = base64::engine::general_purpose::URL_SAFE_NO_PAD;
        let body = b64.encode(serde_json::to_vec(&claims).expect("claims serialize"));
        let tag = hmac::sign(&self.key, body.as_bytes());
        format!("{body}.{}", b64.encode(tag.as_ref()))
    }

    fn verify(&self, assertion: &str, now_ms: u64) -> Result<Claims, &'static str> {
        let b64 = base64::engine::general_purpose::URL_SAFE_NO_PAD;
        let (body, tag) = assertion.split_once('.').ok_or("malformed node assertion")?;
        let tag = b64.decode(tag).map_err(|_| "malformed node assertion")?;
        hmac::verify(&self.key, body.as_bytes(), &tag).map_err(|_| "node assertion signature does not verify")?;
        let claims: Claims = serde_json::from_slice(&b64.decode(body).map_err(|_| "malformed node assertion")?)
            .map_err(|_| "malformed node assertion")?;
        if claims.exp < now_ms || claims.exp > now_ms + 2 * ASSERTION_TTL_MS {
            return Err("node assertion expired (are the nodes' clocks far apart?)");
        }
        Ok(claims)
    }
}

/// How this node authenticates admin callers.
pub struct AuthSettings {
    /// false: every caller is an admin (the local dev cluster, on loopback only).
    pub required: bool,
    /// A break-glass admin credential from the node's config.
    pub bootstrap_token: Option<String>,
    /// The cluster's shared secret: hashes tokens, signs assertions.
    pub secret: Vec<u8>,
    /// With cluster TLS (and admin TLS): a node assertion is accepted only
    /// on a connection whose client certificate is a node certificate of
    /// this cluster.
    pub node_cert_cluster: Option<String>,
}

/// Authenticates and authorises admin requests for one node.
pub struct Authority {
    node: Arc<ClusterNode>,
    hasher: KeyHasher,
    signer: Signer,
    required: bool,
    bootstrap: Option<Digest>,
    node_cert_cluster: Option<String>,
    denials: tokio::sync::mpsc::Sender<Denial>,
}

impl Authority {
    /// The authority and the queue of refusals it fills (see [`crate::run_denial_recorder`]).
    pub fn new(node: Arc<ClusterNode>, settings: AuthSettings) -> (Arc<Self>, tokio::sync::mpsc::Receiver<Denial>) {
        let hasher = KeyHasher::new(&settings.secret);
        let bootstrap = settings.bootstrap_token.as_deref().map(|t| hasher.digest(t));
        let (tx, rx) = tokio::sync::mpsc::channel(DENIAL_QUEUE);
        let authority = Self {
            node,
            signer: Signer::new(&settings.secret),
            hasher,
            required: settings.required,
            bootstrap,
            node_cert_cluster: settings.node_cert_cluster,
            denials: tx,
        };
        (Arc::new(authority), rx)
    }

    pub fn signer(&self) -> &Signer {
        &self.signer
    }

    fn now_ms(&self) -> u64 {
        self.node.env().clock.now_ms()
    }

    /// Who the caller is; `Err` with what they presented and why it failed.
    fn authenticate<B>(&self, req: &http::Request<B>) -> Result<Option<Proven>, Refused> {
        let headers = req.headers();
        if let Some(a) = headers.get(ASSERTION) {
            if let Some(cluster) = &self.node_cert_cluster {
                node_certificate(req, cluster).map_err(|why| ("node assertion".to_string(), why))?;
            }
            let claims = a
                .to_str()
                .map_err(|_| "malformed node assertion")
                .and_then(|a| self.signer.verify(a, self.now_ms()))
                .map_err(|e| ("node assertion".to_string(), e.to_string()))?;
            let method = match claims.m.as_str() {
                "token" => "token",
                "certificate" => "certificate",
                "bootstrap_token" => "bootstrap_token",
                "open" => "open",
                _ => "node",
            };
            return Ok(Some((claims.p, claims.r, method)));
        }
        if let Some(h) = headers.get(http::header::AUTHORIZATION) {
            let token = h
                .to_str()
                .ok()
                .and_then(|v| v.strip_prefix("Bearer ").or_else(|| v.strip_prefix("bearer ")))
                .map(str::trim)
                .ok_or_else(|| {
                    ("anonymous".to_string(), "the authorization header must be `Bearer <token>`".to_string())
                })?;
            return self.token(token).map(Some);
        }
        if let Some(fingerprint) = peer_certificate(req) {
            let found = self.node.local_read(|a| {
                a.state
                    .operators()
                    .values()
                    .find(|o| o.spec.certificates.contains(&fingerprint))
                    .map(|o| (o.spec.id.to_string(), o.spec.role, o.spec.disabled))
            });
            return match found {
                Some((id, _, true)) => Err((id, "operator is disabled".into())),
                Some((id, role, false)) => Ok(Some((id, role, "certificate"))),
                None => Err((format!("certificate:{fingerprint}"), "no operator lists this client certificate".into())),
            };
        }
        Ok(None)
    }

    fn token(&self, token: &str) -> Result<Proven, Refused> {
        if let Some(b) = &self.bootstrap {
            if self.hasher.matches(token, b) {
                return Ok(("bootstrap".into(), Role::Admin, "bootstrap_token"));
            }
        }
        let Some(id) = admin_token_id(token) else {
            return Err(("anonymous".into(), "not an admin token (they look like rgt_<id>.<secret>)".into()));
        };
        let who = format!("token:{id}");
        let now = self.now_ms();
        let found = self.node.local_read(|a| {
            let t = a.state.admin_tokens().get(&id)?;
            let op = a.state.operators().get(&t.spec.operator);
            Some((t.spec.clone(), op.map(|o| (o.spec.role, o.spec.disabled))))
        });
        let Some((t, op)) = found else { return Err((who, "unknown or deleted admin token".into())) };
        if !self.hasher.matches(token, &t.hash) {
            return Err((who, "admin token does not match".into()));
        }
        if t.expires_ms.is_some_and(|e| e <= now) {
            return Err((t.operator.to_string(), "admin token expired".into()));
        }
        match op {
            Some((_, true)) => Err((t.operator.to_string(), "operator is disabled".into())),
            Some((role, false)) => Ok((t.operator.to_string(), role, "token")),
            None => Err((t.operator.to_string(), "the token's operator no longer exists".into())),
        }
    }

    /// Decides on one request: the caller, or the status to answer with.
    pub(crate) fn admit<B>(&self, req: &http::Request<B>) -> Result<Caller, Status> {
        let rpc = req.uri().path().rsplit('/').next().unwrap_or("").to_string();
        let who = match self.authenticate(req) {
            Ok(Some(w)) => w,
            Ok(None) if !self.required => ("local".to_string(), Role::Admin, "open"),
            Ok(None) => {
                self.deny("anonymous", None, &rpc, "no credential", false);
                return Err(Status::unauthenticated(
                    "authentication required: present an admin token (--token, RAFTGATE_TOKEN) or a client certificate",
                ));
            }
            Err((who, why)) => {
                // Made-up credentials cost an attacker nothing: only the log
                // keeps those, so they cannot push real records out of the
                // bounded trail. Failures that name a real token or operator,
                // or a certificate our CA signed, are recorded.
                let made_up =
                    who == "anonymous" || who == "node assertion" || why.starts_with("unknown or deleted admin token");
                self.deny(&who, None, &rpc, &why, !made_up);
                return Err(Status::unauthenticated(format!("{why}; ask an admin for a valid credential")));
            }
        };
        let (principal, role, method) = who;
        let Some(need) = need(&rpc) else {
            return Err(Status::unimplemented(format!("unknown admin RPC {rpc:?}")));
        };
        // Without authentication there is nothing to authorise either.
        if self.required && !allows(role, need) {
            let why = format!("role {role} may not call {rpc}");
            self.deny(&principal, Some(role), &rpc, &why, true);
            return Err(Status::permission_denied(format!("{why}; it needs {}", needed_roles(need))));
        }
        Ok(Caller { actor: Actor { principal, role, rpc }, method })
    }

    /// Whether `caller` may do what `rpc` does (always, without authentication).
    pub(crate) fn permits(&self, caller: Option<&Caller>, rpc: &str) -> bool {
        if !self.required {
            return true;
        }
        let Some(c) = caller else { return false };
        need(rpc).is_some_and(|n| allows(c.actor.role, n))
    }

    /// Logs a refusal and, with `record`, queues it for the audit trail.
    fn deny(&self, principal: &str, role: Option<Role>, rpc: &str, reason: &str, record: bool) {
        tracing::warn!(principal, role = role.map(Role::as_str), rpc, reason, "admin request refused");
        if !record {
            return;
        }
        let rpc: String = rpc.chars().filter(|c| c.is_ascii_alphanumeric() || *c == '_').take(64).collect();
        let denial = Denial {
            principal: principal.chars().filter(|c| !c.is_control()).take(256).collect(),
            role,
            rpc: if rpc.is_empty() { "unknown".into() } else { rpc },
            reason: reason.chars().take(512).collect(),
            node: self.node.id(),
            at_ms: self.now_ms(),
            count: 1,
        };
        match self.denials.try_send(denial) {
            Ok(()) => {}
            Err(tokio::sync::mpsc::error::TrySendError::Full(_)) => {
                tracing::warn!("audit queue of refusals is full; this refusal is only in the log")
            }
            // No recorder (admin.auth = "none"): the log line above is the record.
            Err(tokio::sync::mpsc::error::TrySendError::Closed(_)) => {}
        }
    }
}

fn needed_roles(need: Need) -> &'static str {
    match need {
        Need::Read => "any role",
        Need::Audit => "role admin or auditor",
        Need::Operate => "role admin or operator",
        Need::Admin => "role admin",
        Need::Node => "a cluster node",
    }
}

/// Checks that the connection's verified client certificate is a node
/// certificate of `cluster` (a node forwarding or calling for itself).
fn node_certificate<B>(req: &http::Request<B>, cluster: &str) -> Result<u64, String> {
    use tonic::transport::server::{TcpConnectInfo, TlsConnectInfo};
    let leaf = req
        .extensions()
        .get::<TlsConnectInfo<TcpConnectInfo>>()
        .and_then(|i| i.peer_certs())
        .and_then(|c| c.first().cloned())
        .ok_or_else(|| "a node assertion needs a connection with a node certificate of this cluster".to_string())?;
    raftgate_cluster::tls::node_of_certificate(leaf.as_ref(), cluster)
        .map_err(|e| format!("a node assertion needs a node certificate of this cluster: {e}"))
}

/// SHA-256 of the DER of the client certificate the TLS handshake verified.
fn peer_certificate<B>(req: &http::Request<B>) -> Option<Digest> {
    use tonic::transport::server::{TcpConnectInfo, TlsConnectInfo};
    let info = req.extensions().get::<TlsConnectInfo<TcpConnectInfo>>()?;
    let certs = info.peer_certs()?;
    let leaf = certs.first()?;
    Some(Digest(Sha256::digest(leaf.as_ref()).into()))
}

/// The admin service behind authentication and the permission table.
#[derive(Clone)]
pub struct Authenticated<S> {
    inner: S,
    authority: Arc<Authority>,
}

impl<S> Authenticated<S> {
    pub fn new(inner: S, authority: Arc<Authority>) -> Self {
        Self { inner, authority }
    }
}

impl<S: NamedService> NamedService for Authenticated<S> {
    const NAME: &'static str = S::NAME;
}

impl<S, B> tower::Service<http::Request<B>> for Authenticated<S>
where
    S: tower::Service<http::Request<B>, Response = http::Response<tonic::body::Body>, Error = Infallible>
        + Send
        + 'static,
    S::Future: Send + 'static,
    B: Send + 'static,
{
    type Response = http::Response<tonic::body::Body>;
    type Error = Infallible;
    type Future = BoxFuture<'static, Result<Self::Response, Infallible>>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), Infallible>> {
        self.inner.poll_ready(cx)
    }

    fn call(&mut self, mut req: http::Request<B>) -> Self::Future {
        match self.authority.admit(&req) {
            Ok(caller) => {
                req.extensions_mut().insert(caller);
                Box::pin(self.inner.call(req))
            }
            Err(status) => Box::pin(async move { Ok(status.into_http()) }),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_role_gets_exactly_its_column_of_the_table() {
        assert!(
            allows(Role::Admin, Need::Admin) && allows(Role::Admin, Need::Operate) && allows(Role::Admin, Need::Audit)
        );
        assert!(!allows(Role::Admin, Need::Node), "people do not submit quota leases");
        assert!(allows(Role::Operator, Need::Operate) && !allows(Role::Operator, Need::Admin));
        assert!(!allows(Role::Operator, Need::Audit));
        assert!(allows(Role::Auditor, Need::Audit) && !allows(Role::Auditor, Need::Operate));
        assert!(allows(Role::Node, Need::Node) && !allows(Role::Node, Need::Operate));
        assert_eq!(need("ResetQuota"), Some(Need::Admin), "quota reset is admin only");
        assert_eq!(need("Revoke"), Some(Need::Operate));
        assert_eq!(need("Frobnicate"), None);
    }

    #[test]
    fn assertions_verify_only_with_the_same_secret_and_in_time() {
        let s = Signer::new(b"0123456789abcdef0123456789abcdef");
        let a = s.sign("alice", Role::Operator, "token", 1_000);
        let c = s.verify(&a, 2_000).unwrap();
        assert_eq!((c.p.as_str(), c.r), ("alice", Role::Operator));
        assert!(s.verify(&a, 1_000 + ASSERTION_TTL_MS + 1).is_err(), "expired");
        assert!(Signer::new(b"another secret of thirty-two bytes").verify(&a, 2_000).is_err());
        let (body, tag) = a.split_once('.').unwrap();
        let forged_body = base64::engine::general_purpose::URL_SAFE_NO_PAD
            .encode(br#"{"p":"alice","r":"admin","m":"token","exp":99999}"#);
        assert_ne!(forged_body, body);
        assert!(s.verify(&format!("{forged_body}.{tag}"), 2_000).is_err(), "a changed role breaks the tag");
    }
}
