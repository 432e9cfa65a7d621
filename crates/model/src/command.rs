//! The write vocabulary of the cluster.
//!
//! One enum is every change the cluster can make to its replicated state.
//! Admin RPCs, and in later parts quota leases and revocations, all become a
//! [`Command`] wrapped in a [`Proposal`] that the leader stamps with its clock.

use serde::{Deserialize, Serialize};

use crate::consumer::Consumer;
use crate::governance::{Actor, Denial, Operator};
use crate::identity::{Digest, JwtIssuer, RevocationTarget};
use crate::node::NodeId;
use crate::route::{ObjectId, Route, Upstream};
use crate::state::{SettingKey, SettingValue};
use crate::traffic::{LeaseAsk, Plan, QuotaKey};

/// A change to the replicated state. Fields are already validated types, so a
/// command that decodes is well formed; `State::apply` checks it against the
/// state (revisions, existence, table sizes).
// Commands live for one write each; boxing the large variants would buy nothing.
#[allow(clippy::large_enum_variant)]
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "type", rename_all = "snake_case", deny_unknown_fields)]
pub enum Command {
    /// Create or replace a cluster setting. With `expected_revision`, the write
    /// only happens if the setting's current revision matches (0: must not exist).
    PutSetting {
        key: SettingKey,
        value: SettingValue,
        #[serde(default, skip_serializing_if = "Option::is_none")]
        expected_revision: Option<u64>,
    },
    /// Delete a cluster setting; rejected if it does not exist or, with
    /// `expected_revision`, if its revision differs.
    DeleteSetting {
        key: SettingKey,
        #[serde(default, skip_serializing_if = "Option::is_none")]
        expected_revision: Option<u64>,
    },
    /// Create or replace a route. Its upstream must exist and it must not
    /// conflict with another route (see [`Route::conflicts_with`]).
    PutRoute {
        route: Route,
        #[serde(default, skip_serializing_if = "Option::is_none")]
        expected_revision: Option<u64>,
    },
    DeleteRoute {
        id: ObjectId,
        #[serde(default, skip_serializing_if = "Option::is_none")]
        expected_revision: Option<u64>,
    },
    /// Create or replace an upstream.
    PutUpstream {
        upstream: Upstream,
        #[serde(default, skip_serializing_if = "Option::is_none")]
        expected_revision: Option<u64>,
    },
    /// Delete an upstream; rejected while a route still uses it.
    DeleteUpstream {
        id: ObjectId,
        #[serde(default, skip_serializing_if = "Option::is_none")]
        expected_revision: Option<u64>,
    },
    PutConsumer {
        consumer: Consumer,
        #[serde(default, skip_serializing_if = "Option::is_none")]
        expected_revision: Option<u64>,
    },
    /// Delete a consumer with its API keys (its revocations stay).
    DeleteConsumer {
        id: ObjectId,
        #[serde(default, skip_serializing_if = "Option::is_none")]
        expected_revision: Option<u64>,
    },
    PutIssuer {
        issuer: JwtIssuer,
        #[serde(default, skip_serializing_if = "Option::is_none")]
        expected_revision: Option<u64>,
    },
    /// Delete a JWT issuer; rejected while a route names it.
    DeleteIssuer {
        id: ObjectId,
        #[serde(default, skip_serializing_if = "Option::is_none")]
        expected_revision: Option<u64>,
    },
    /// Add an API key (its id and keyed hash; the key itself never travels
    /// in a command). With `rotates`, the old key of the same consumer
    /// expires `overlap_ms` after this command, if not sooner.
    CreateApiKey {
        id: ObjectId,
        consumer: ObjectId,
        hash: Digest,
        #[serde(default, skip_serializing_if = "Option::is_none")]
        expires_ms: Option<u64>,
        #[serde(default, skip_serializing_if = "Option::is_none")]
        rotates: Option<KeyRotation>,
    },
    DeleteApiKey {
        id: ObjectId,
    },
    /// Refuse a credential on every node. Token revocations carry the
    /// token's expiry (`until_ms`) and are dropped after it.
    Revoke {
        target: RevocationTarget,
        #[serde(default, skip_serializing_if = "Option::is_none")]
        until_ms: Option<u64>,
        #[serde(default, skip_serializing_if = "String::is_empty")]
        reason: String,
    },
    /// Take a revocation back.
    Unrevoke {
        target: RevocationTarget,
    },
    PutPlan {
        plan: Plan,
        #[serde(default, skip_serializing_if = "Option::is_none")]
        expected_revision: Option<u64>,
    },
    /// Delete a plan; rejected while a consumer is on it.
    DeletePlan {
        id: ObjectId,
        #[serde(default, skip_serializing_if = "Option::is_none")]
        expected_revision: Option<u64>,
    },
    /// One node's quota asks and returns for one batch interval.
    QuotaLeases {
        node: NodeId,
        /// Drawn by the node at start: grants are held per (node, incarnation).
        #[serde(default)]
        incarnation: u64,
        asks: Vec<LeaseAsk>,
    },
    /// Forget a quota key's ledger entry: the window starts over.
    ResetQuota {
        key: QuotaKey,
    },
    /// Drop cached responses on every node: all of them, a route's, and/or
    /// those whose path starts with a prefix. Changes no state; each node's
    /// data plane purges when it applies it.
    PurgeCache {
        #[serde(default, skip_serializing_if = "Option::is_none")]
        route: Option<ObjectId>,
        #[serde(default, skip_serializing_if = "Option::is_none")]
        path_prefix: Option<String>,
    },
    /// Create or replace an operator of the admin API.
    PutOperator {
        operator: Operator,
        #[serde(default, skip_serializing_if = "Option::is_none")]
        expected_revision: Option<u64>,
    },
    /// Delete an operator with its admin tokens.
    DeleteOperator {
        id: ObjectId,
        #[serde(default, skip_serializing_if = "Option::is_none")]
        expected_revision: Option<u64>,
    },
    /// Add an admin token (its id and keyed hash; the token never travels in a command).
    CreateAdminToken {
        id: ObjectId,
        operator: ObjectId,
        hash: Digest,
        #[serde(default, skip_serializing_if = "Option::is_none")]
        expires_ms: Option<u64>,
    },
    DeleteAdminToken {
        id: ObjectId,
    },
    /// Admin requests nodes refused, for the audit trail.
    RecordDenials {
        denials: Vec<Denial>,
    },
    /// Create or replace a certificate reference of the HTTPS listeners.
    PutCertificate {
        certificate: crate::route::CertificateRef,
        #[serde(default, skip_serializing_if = "Option::is_none")]
        expected_revision: Option<u64>,
    },
    DeleteCertificate {
        id: ObjectId,
        #[serde(default, skip_serializing_if = "Option::is_none")]
        expected_revision: Option<u64>,
    },
    /// A membership change (made by openraft's own entry) for the audit
    /// trail: `action` is add_learner, promote or remove. Changes nothing else.
    MembershipChanged {
        action: String,
        node: NodeId,
        log_index: u64,
    },
    /// Erase a consumer (GDPR/CCPA): delete it, its API keys, certificate
    /// identities, the revocations that target it and its quota ledger
    /// entries; put `pseudonym` in its place in routes' `auth.consumers`
    /// and in kept audit records, which are then re-chained. The pseudonym
    /// is made by the admin node (keyed HMAC of the id); `apply` checks its
    /// shape only.
    ForgetConsumer {
        consumer: ObjectId,
        pseudonym: ObjectId,
    },
    /// Drop audit records up to `through_seq` after they were exported; the
    /// dropped part's last hash stays as the anchor. `through_hash` must be
    /// the hash of record `through_seq` (what the export ends with), and
    /// `export_digest` is the SHA-256 of the export file, kept in the
    /// prune's own record.
    PruneAudit {
        through_seq: u64,
        through_hash: Digest,
        export_digest: Digest,
    },
    /// Object writes applied all together or not at all (a declarative
    /// `apply -f`): if any is rejected, none takes effect.
    Batch {
        commands: Vec<Command>,
    },
}

/// Most commands one [`Command::Batch`] may hold.
pub const MAX_BATCH_COMMANDS: usize = 20_000;

/// The key an API key replaces, and how long both stay valid.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct KeyRotation {
    pub old: ObjectId,
    pub overlap_ms: u64,
}

impl Command {
    /// A short name for logs and audit records.
    pub fn kind(&self) -> &'static str {
        match self {
            Command::PutSetting { .. } => "put_setting",
            Command::DeleteSetting { .. } => "delete_setting",
            Command::PutRoute { .. } => "put_route",
            Command::DeleteRoute { .. } => "delete_route",
            Command::PutUpstream { .. } => "put_upstream",
            Command::DeleteUpstream { .. } => "delete_upstream",
            Command::PutConsumer { .. } => "put_consumer",
            Command::DeleteConsumer { .. } => "delete_consumer",
            Command::PutIssuer { .. } => "put_issuer",
            Command::DeleteIssuer { .. } => "delete_issuer",
            Command::CreateApiKey { .. } => "create_api_key",
            Command::DeleteApiKey { .. } => "delete_api_key",
            Command::Revoke { .. } => "revoke",
            Command::Unrevoke { .. } => "unrevoke",
            Command::PutPlan { .. } => "put_plan",
            Command::DeletePlan { .. } => "delete_plan",
            Command::QuotaLeases { .. } => "quota_leases",
            Command::ResetQuota { .. } => "reset_quota",
            Command::PurgeCache { .. } => "purge_cache",
            Command::PutOperator { .. } => "put_operator",
            Command::DeleteOperator { .. } => "delete_operator",
            Command::CreateAdminToken { .. } => "create_admin_token",
            Command::DeleteAdminToken { .. } => "delete_admin_token",
            Command::RecordDenials { .. } => "record_denials",
            Command::Batch { .. } => "batch",
            Command::PutCertificate { .. } => "put_certificate",
            Command::MembershipChanged { action, .. } => match action.as_str() {
                "add_learner" => "add_learner",
                "promote" => "promote",
                _ => "remove_node",
            },
            Command::DeleteCertificate { .. } => "delete_certificate",
            Command::ForgetConsumer { .. } => "forget_consumer",
            Command::PruneAudit { .. } => "prune_audit",
        }
    }

    /// Whether applying it may change the revocation set.
    pub fn touches_revocations(&self) -> bool {
        matches!(self, Command::Revoke { .. } | Command::Unrevoke { .. } | Command::ForgetConsumer { .. })
    }

    /// Whether it erases data that older log entries and snapshots still
    /// hold (a node compacts its store after it, see the store crate).
    pub fn erases_data(&self) -> bool {
        matches!(self, Command::ForgetConsumer { .. } | Command::PruneAudit { .. })
    }

    /// Whether a batch may hold it: puts and deletes of declarative objects
    /// (credentials, revocations and node traffic have their own paths).
    pub fn batchable(&self) -> bool {
        matches!(
            self,
            Command::PutSetting { .. }
                | Command::DeleteSetting { .. }
                | Command::PutRoute { .. }
                | Command::DeleteRoute { .. }
                | Command::PutUpstream { .. }
                | Command::DeleteUpstream { .. }
                | Command::PutConsumer { .. }
                | Command::DeleteConsumer { .. }
                | Command::PutIssuer { .. }
                | Command::DeleteIssuer { .. }
                | Command::PutPlan { .. }
                | Command::DeletePlan { .. }
                | Command::PutCertificate { .. }
                | Command::DeleteCertificate { .. }
        )
    }
}

/// A command as it travels through the Raft log: the leader's wall-clock time
/// at proposal (milliseconds since the Unix epoch) and the command itself.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Proposal {
    pub leader_time_ms: u64,
    pub command: Command,
    /// Who asked for it, for admin writes: `apply` appends the audit record.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub actor: Option<Actor>,
}
