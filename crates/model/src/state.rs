//! The replicated state and its pure transition function.

use std::collections::{BTreeMap, BTreeSet};
use std::fmt;
use std::sync::Arc;

use serde::{Deserialize, Serialize};

use crate::command::Command;
use crate::consumer::{Consumer, MAX_CONSUMERS};
use crate::governance::{
    object_digest, Actor, AdminToken, AuditTrail, NewRecord, Operator, MAX_ADMIN_TOKENS, MAX_DENIALS_PER_COMMAND,
    MAX_OPERATORS, MAX_TOKENS_PER_OPERATOR,
};
use crate::identity::{
    validate_reason, ApiKey, JwtIssuer, Revocation, RevocationTarget, MAX_API_KEYS, MAX_ISSUERS, MAX_KEYS_PER_CONSUMER,
    MAX_REVOCATIONS, MAX_TOKEN_REVOCATION_MS, REVOCATION_EXPIRY_MARGIN_MS,
};
use crate::privacy::{is_pseudonym, Subject, PSEUDONYM_PREFIX};
use crate::route::{ObjectId, Route, Upstream, MAX_ROUTES, MAX_UPSTREAMS};
use crate::traffic::{
    grant_size, holder, validate_asks, KeyPart, LeaseAsk, Plan, Quota, QuotaEntry, QuotaKey, QuotaScope,
    MAX_HOLDERS_PER_ENTRY, MAX_PLANS, MAX_QUOTA_ENTRIES, QUOTA_EXPIRY_MARGIN_MS,
};

/// Most settings the cluster holds; a put of a new key beyond it is rejected.
pub const MAX_SETTINGS: usize = 10_000;
const MAX_KEY_CHARS: usize = 128;
const MAX_VALUE_BYTES: usize = 4_096;

/// The name of a cluster setting: 1 to 128 characters of `a-z 0-9 . _ -`,
/// starting with a letter.
#[derive(Clone, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(try_from = "String", into = "String")]
pub struct SettingKey(String);

/// A setting's value: UTF-8 text of at most 4,096 bytes, no control characters
/// other than tab and newline.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(try_from = "String", into = "String")]
pub struct SettingValue(String);

/// Why a key or value was refused at the boundary.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ValueError {
    #[error("setting key must be 1 to {MAX_KEY_CHARS} characters of a-z, 0-9, '.', '_' or '-' starting with a letter, got {0:?}")]
    Key(String),
    #[error("setting value must be at most {MAX_VALUE_BYTES} bytes, got {0}")]
    ValueTooLong(usize),
    #[error("setting value must not contain control characters")]
    ValueControlChar,
}

impl SettingKey {
    pub fn parse(s: impl Into<String>) -> Result<Self, ValueError> {
        let s = s.into();
        let ok = s.len() <= MAX_KEY_CHARS
            && s.as_bytes().first().is_some_and(u8::is_ascii_lowercase)
            && s.bytes().all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || matches!(b, b'.' | b'_' | b'-'));
        if ok {
            Ok(Self(s))
        } else {
            Err(ValueError::Key(s))
        }
    }
    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl SettingValue {
    pub fn parse(s: impl Into<String>) -> Result<Self, ValueError> {
        let s = s.into();
        if s.len() > MAX_VALUE_BYTES {
            return Err(ValueError::ValueTooLong(s.len()));
        }
        if s.chars().any(|c| c.is_control() && c != '\t' && c != '\n') {
            return Err(ValueError::ValueControlChar);
        }
        Ok(Self(s))
    }
    pub fn as_str(&self) -> &str {
        &self.0
    }
}

macro_rules! string_newtype_conversions {
    ($t:ty) => {
        impl TryFrom<String> for $t {
            type Error = ValueError;
            fn try_from(s: String) -> Result<Self, ValueError> {
                Self::parse(s)
            }
        }
        impl From<$t> for String {
            fn from(v: $t) -> String {
                v.0
            }
        }
        impl fmt::Display for $t {
            fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str(&self.0)
            }
        }
    };
}
string_newtype_conversions!(SettingKey);
string_newtype_conversions!(SettingValue);

/// A stored setting with the revision of the write that last changed it.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Setting {
    pub value: SettingValue,
    /// The cluster revision at which this setting was last written.
    pub revision: u64,
    /// Leader time of that write, milliseconds since the Unix epoch.
    pub updated_ms: u64,
}

/// A stored route or upstream with the revision of the write that last changed it.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Stored<T> {
    pub spec: T,
    pub revision: u64,
    pub updated_ms: u64,
}

/// Routes and upstreams, shared by reference with the data plane's snapshot
/// builder (copy on write: a write while a build holds it clones the map).
pub type Table<T> = Arc<BTreeMap<ObjectId, Stored<T>>>;

/// What a successful command did.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "type", rename_all = "snake_case")]
pub enum Effect {
    SettingPut {
        key: SettingKey,
        revision: u64,
        created: bool,
    },
    SettingDeleted {
        key: SettingKey,
        revision: u64,
    },
    ObjectPut {
        kind: String,
        id: ObjectId,
        revision: u64,
        created: bool,
    },
    ObjectDeleted {
        kind: String,
        id: ObjectId,
        revision: u64,
    },
    Revoked {
        key: String,
        revision: u64,
    },
    Unrevoked {
        key: String,
        revision: u64,
    },
    Leased {
        revision: u64,
    },
    QuotaReset {
        key: String,
        revision: u64,
    },
    Audited {
        revision: u64,
    },
    Batch {
        revision: u64,
        commands: usize,
    },
    /// A consumer was forgotten: `rewritten` audit records now name the
    /// pseudonym (re-chained from `first_rewritten_seq`); `previous_head`
    /// is the trail's head before the rewrite.
    Forgotten {
        revision: u64,
        pseudonym: ObjectId,
        rewritten: u64,
        #[serde(default, skip_serializing_if = "Option::is_none")]
        first_rewritten_seq: Option<u64>,
        previous_head_seq: u64,
        previous_head: crate::identity::Digest,
    },
    /// Audit records through `through_seq` were dropped.
    AuditPruned {
        revision: u64,
        through_seq: u64,
        dropped: u64,
    },
}

impl Effect {
    /// The cluster revision the command produced.
    pub fn revision(&self) -> u64 {
        match self {
            Effect::SettingPut { revision, .. }
            | Effect::SettingDeleted { revision, .. }
            | Effect::ObjectPut { revision, .. }
            | Effect::ObjectDeleted { revision, .. }
            | Effect::Revoked { revision, .. }
            | Effect::Unrevoked { revision, .. }
            | Effect::Leased { revision }
            | Effect::QuotaReset { revision, .. }
            | Effect::Audited { revision }
            | Effect::Batch { revision, .. }
            | Effect::Forgotten { revision, .. }
            | Effect::AuditPruned { revision, .. } => *revision,
        }
    }
}

/// Why `apply` refused a command. The state is unchanged when this is returned.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize, thiserror::Error)]
#[serde(tag = "type", rename_all = "snake_case")]
pub enum Rejection {
    #[error("{kind} {key:?} not found")]
    NotFound { kind: String, key: String },
    #[error("{kind} {key:?} is at revision {actual}, the request expected {expected}")]
    RevisionMismatch { kind: String, key: String, expected: u64, actual: u64 },
    #[error("the cluster holds the maximum of {limit} {kind}s")]
    TableFull { kind: String, limit: usize },
    #[error("{field}: {message}")]
    Invalid { field: String, message: String },
    /// The command contradicts other objects (a conflicting route, an
    /// upstream still in use, a reference to a missing upstream).
    #[error("{message}")]
    Conflict { message: String },
}

/// The whole replicated state. Maps are ordered so that serialization is
/// deterministic: the same log gives byte-identical bytes on every node.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct State {
    /// Incremented by every accepted command; rejected commands leave it.
    revision: u64,
    /// The latest leader time applied; never goes backwards even if a new
    /// leader's clock is behind the old one's.
    time_ms: u64,
    settings: BTreeMap<SettingKey, Setting>,
    #[serde(default)]
    routes: Table<Route>,
    #[serde(default)]
    upstreams: Table<Upstream>,
    /// Revision of the last route or upstream change (0: none yet), so the
    /// data plane rebuilds only when routing changed.
    #[serde(default)]
    routing_revision: u64,
    #[serde(default)]
    consumers: Table<Consumer>,
    #[serde(default)]
    issuers: Table<JwtIssuer>,
    #[serde(default)]
    api_keys: Table<ApiKey>,
    /// Each consumer's API key ids (an index of `api_keys`).
    #[serde(default)]
    keys_by_consumer: BTreeMap<ObjectId, BTreeSet<ObjectId>>,
    /// Which consumer each client-certificate identity stands for (an index
    /// of the consumers' `certificates`).
    #[serde(default)]
    cert_owners: Arc<BTreeMap<String, ObjectId>>,
    /// Revision of the last change to consumers, keys or issuers (0: none).
    #[serde(default)]
    identity_revision: u64,
    /// Revocations by [`RevocationTarget::key`].
    #[serde(default)]
    revocations: Arc<BTreeMap<String, Revocation>>,
    /// Token revocations by the time they may be dropped.
    #[serde(default)]
    revocation_expiry: BTreeSet<(u64, String)>,
    #[serde(default)]
    plans: Table<Plan>,
    /// The quota ledger by [`QuotaKey::ledger_key`].
    #[serde(default)]
    quotas: BTreeMap<String, QuotaEntry>,
    /// Ledger entries by the time they may be dropped.
    #[serde(default)]
    quota_expiry: BTreeSet<(u64, String)>,
    /// Revision of the last plan change (0: none).
    #[serde(default)]
    plan_revision: u64,
    #[serde(default)]
    operators: Table<Operator>,
    #[serde(default)]
    admin_tokens: Table<AdminToken>,
    #[serde(default)]
    audit: AuditTrail,
    #[serde(default)]
    certificates: Table<crate::route::CertificateRef>,
    /// Revision of the last certificate change (0: none).
    #[serde(default)]
    tls_revision: u64,
}

/// The bytes of a snapshot did not decode into a [`State`].
#[derive(Debug, thiserror::Error)]
#[error("state snapshot does not decode: {0}")]
pub struct StateDecodeError(#[from] serde_json::Error);

impl State {
    /// Applies one committed command stamped with the leader's time and, for
    /// an admin write, appends its audit record (who, what, the object's
    /// digest before and after). Deterministic: no clock, no randomness, no
    /// IO. On `Err` nothing changed, the trail included.
    pub fn apply_as(
        &mut self,
        leader_time_ms: u64,
        command: &Command,
        actor: Option<&Actor>,
    ) -> Result<Effect, Rejection> {
        if let Command::Batch { commands } = command {
            return self.apply_batch(leader_time_ms, commands, actor);
        }
        // Node traffic (lease batches, refusal records) is not an admin write.
        let actor = actor.filter(|_| !matches!(command, Command::QuotaLeases { .. } | Command::RecordDenials { .. }));
        let Some(actor) = actor else { return self.apply(leader_time_ms, command) };
        let object = self.audited_object(command);
        let before = object.as_ref().and_then(|(kind, key)| self.object_digest(kind, key));
        let effect = self.apply(leader_time_ms, command)?;
        let after = object.as_ref().and_then(|(kind, key)| self.object_digest(kind, key));
        let (outcome, before, after) = match (&effect, command) {
            (
                Effect::Forgotten { rewritten, first_rewritten_seq, previous_head_seq, previous_head, .. },
                _,
            ) => (
                match first_rewritten_seq {
                    Some(first) => format!(
                        "applied: {rewritten} audit records pseudonymised and the chain re-hashed from seq {first} to {previous_head_seq}; `before` is the head hash before"
                    ),
                    None => "applied: no audit record named it".to_string(),
                },
                Some(*previous_head),
                Some(self.audit.head().1),
            ),
            (Effect::AuditPruned { through_seq, dropped, .. }, Command::PruneAudit { through_hash, export_digest, .. }) => (
                format!(
                    "applied: {dropped} audit records through seq {through_seq} dropped after export; `before` is the new anchor hash, `after` the export's SHA-256"
                ),
                Some(*through_hash),
                Some(*export_digest),
            ),
            _ => ("applied".to_string(), before, after),
        };
        self.audit.append(NewRecord {
            time_ms: self.time_ms,
            principal: actor.principal.clone(),
            role: Some(actor.role),
            rpc: actor.rpc.clone(),
            action: command.kind().to_string(),
            object: object.map(|(kind, key)| format!("{kind}/{key}")).unwrap_or_default(),
            outcome,
            before,
            after,
        });
        Ok(effect)
    }

    /// Applies every command of a batch to a copy and keeps the copy only if
    /// all were accepted; the rejection names the failing command.
    fn apply_batch(
        &mut self,
        leader_time_ms: u64,
        commands: &[Command],
        actor: Option<&Actor>,
    ) -> Result<Effect, Rejection> {
        if commands.is_empty() || commands.len() > crate::command::MAX_BATCH_COMMANDS {
            return Err(Rejection::Invalid {
                field: "commands".into(),
                message: format!("a batch holds 1 to {} commands", crate::command::MAX_BATCH_COMMANDS),
            });
        }
        let mut next = self.clone();
        for (i, c) in commands.iter().enumerate() {
            if !c.batchable() {
                return Err(Rejection::Invalid {
                    field: format!("commands[{i}]"),
                    message: format!("{} cannot be part of a batch", c.kind()),
                });
            }
            next.apply_as(leader_time_ms, c, actor).map_err(|r| match r {
                Rejection::Invalid { field, message } => {
                    Rejection::Invalid { field: format!("commands[{i}] ({}): {field}", c.kind()), message }
                }
                other => Rejection::Conflict { message: format!("commands[{i}] ({}): {other}", c.kind()) },
            })?;
        }
        *self = next;
        Ok(Effect::Batch { revision: self.revision, commands: commands.len() })
    }

    /// The (kind, key) of the object a command writes, for its audit record.
    fn audited_object(&self, command: &Command) -> Option<(&'static str, String)> {
        Some(match command {
            Command::PutSetting { key, .. } | Command::DeleteSetting { key, .. } => ("setting", key.to_string()),
            Command::PutRoute { route, .. } => ("route", route.id.to_string()),
            Command::DeleteRoute { id, .. } => ("route", id.to_string()),
            Command::PutUpstream { upstream, .. } => ("upstream", upstream.id.to_string()),
            Command::DeleteUpstream { id, .. } => ("upstream", id.to_string()),
            Command::PutConsumer { consumer, .. } => ("consumer", consumer.id.to_string()),
            Command::DeleteConsumer { id, .. } => ("consumer", id.to_string()),
            Command::PutIssuer { issuer, .. } => ("issuer", issuer.id.to_string()),
            Command::DeleteIssuer { id, .. } => ("issuer", id.to_string()),
            Command::CreateApiKey { id, .. } | Command::DeleteApiKey { id } => ("api_key", id.to_string()),
            Command::Revoke { target, .. } | Command::Unrevoke { target } => ("revocation", target.key()),
            Command::PutPlan { plan, .. } => ("plan", plan.id.to_string()),
            Command::DeletePlan { id, .. } => ("plan", id.to_string()),
            Command::ResetQuota { key } => ("quota", key.ledger_key()),
            Command::PurgeCache { route, path_prefix } => (
                "cache",
                format!("{}{}", route.as_ref().map_or("*", |r| r.as_str()), path_prefix.as_deref().unwrap_or("")),
            ),
            Command::PutOperator { operator, .. } => ("operator", operator.id.to_string()),
            Command::DeleteOperator { id, .. } => ("operator", id.to_string()),
            Command::CreateAdminToken { id, .. } | Command::DeleteAdminToken { id } => ("admin_token", id.to_string()),
            Command::PutCertificate { certificate, .. } => ("certificate", certificate.id.to_string()),
            Command::MembershipChanged { node, .. } => ("node", node.to_string()),
            Command::DeleteCertificate { id, .. } => ("certificate", id.to_string()),
            // The forget's own record names only the pseudonym.
            Command::ForgetConsumer { pseudonym, .. } => ("consumer", pseudonym.to_string()),
            Command::PruneAudit { through_seq, .. } => ("audit", format!("through-{through_seq}")),
            Command::QuotaLeases { .. } | Command::RecordDenials { .. } | Command::Batch { .. } => return None,
        })
    }

    /// SHA-256 of an object's stored JSON, if it exists.
    fn object_digest(&self, kind: &str, key: &str) -> Option<crate::identity::Digest> {
        fn of<T: Serialize>(t: &Table<T>, key: &str) -> Option<crate::identity::Digest> {
            let id = ObjectId::parse(key).ok()?;
            t.get(&id).map(object_digest)
        }
        match kind {
            "setting" => SettingKey::parse(key).ok().and_then(|k| self.settings.get(&k)).map(object_digest),
            "route" => of(&self.routes, key),
            "upstream" => of(&self.upstreams, key),
            "consumer" => of(&self.consumers, key),
            "issuer" => of(&self.issuers, key),
            "api_key" => of(&self.api_keys, key),
            "plan" => of(&self.plans, key),
            "operator" => of(&self.operators, key),
            "admin_token" => of(&self.admin_tokens, key),
            "certificate" => of(&self.certificates, key),
            "revocation" => self.revocations.get(key).map(object_digest),
            "quota" => self.quotas.get(key).map(object_digest),
            _ => None,
        }
    }

    /// Applies one committed command stamped with the leader's time.
    /// Deterministic: no clock, no randomness, no IO. On `Err` nothing changed.
    pub fn apply(&mut self, leader_time_ms: u64, command: &Command) -> Result<Effect, Rejection> {
        let time_ms = self.time_ms.max(leader_time_ms);
        let revision = self.revision + 1;
        let effect = match command {
            Command::PutSetting { key, value, expected_revision } => {
                let current = self.settings.get(key);
                check_revision("setting", key.as_str(), current.map(|s| s.revision), *expected_revision)?;
                if current.is_none() && self.settings.len() >= MAX_SETTINGS {
                    return Err(Rejection::TableFull { kind: "setting".into(), limit: MAX_SETTINGS });
                }
                let created = current.is_none();
                self.settings.insert(key.clone(), Setting { value: value.clone(), revision, updated_ms: time_ms });
                Effect::SettingPut { key: key.clone(), revision, created }
            }
            Command::DeleteSetting { key, expected_revision } => {
                let Some(current) = self.settings.get(key) else {
                    return Err(Rejection::NotFound { kind: "setting".into(), key: key.to_string() });
                };
                check_revision("setting", key.as_str(), Some(current.revision), *expected_revision)?;
                self.settings.remove(key);
                Effect::SettingDeleted { key: key.clone(), revision }
            }
            Command::PutRoute { route, expected_revision } => {
                self.check_route(route)?;
                let effect = put(
                    &mut self.routes,
                    "route",
                    &route.id,
                    route,
                    *expected_revision,
                    MAX_ROUTES,
                    revision,
                    time_ms,
                )?;
                self.routing_revision = revision;
                effect
            }
            Command::DeleteRoute { id, expected_revision } => {
                let effect = delete(&mut self.routes, "route", id, *expected_revision, revision)?;
                self.routing_revision = revision;
                effect
            }
            Command::PutUpstream { upstream, expected_revision } => {
                upstream.validate().map_err(|e| Rejection::Invalid { field: e.field, message: e.message })?;
                let effect = put(
                    &mut self.upstreams,
                    "upstream",
                    &upstream.id,
                    upstream,
                    *expected_revision,
                    MAX_UPSTREAMS,
                    revision,
                    time_ms,
                )?;
                self.routing_revision = revision;
                effect
            }
            Command::PutConsumer { consumer, expected_revision } => {
                consumer.validate().map_err(|e| Rejection::Invalid { field: e.field, message: e.message })?;
                for (i, c) in consumer.certificates.iter().enumerate() {
                    if let Some(owner) = self.cert_owners.get(&c.key()).filter(|o| **o != consumer.id) {
                        return Err(Rejection::Conflict {
                            message: format!(
                                "certificates[{i}]: {} already stands for consumer {:?}",
                                c.key(),
                                owner.as_str()
                            ),
                        });
                    }
                }
                let effect = put(
                    &mut self.consumers,
                    "consumer",
                    &consumer.id,
                    consumer,
                    *expected_revision,
                    MAX_CONSUMERS,
                    revision,
                    time_ms,
                )?;
                let owners = Arc::make_mut(&mut self.cert_owners);
                owners.retain(|_, owner| owner != &consumer.id);
                for c in &consumer.certificates {
                    owners.insert(c.key(), consumer.id.clone());
                }
                self.identity_revision = revision;
                effect
            }
            Command::DeleteConsumer { id, expected_revision } => {
                let effect = delete(&mut self.consumers, "consumer", id, *expected_revision, revision)?;
                Arc::make_mut(&mut self.cert_owners).retain(|_, owner| owner != id);
                if let Some(keys) = self.keys_by_consumer.remove(id) {
                    let table = Arc::make_mut(&mut self.api_keys);
                    for k in keys {
                        table.remove(&k);
                    }
                }
                self.identity_revision = revision;
                effect
            }
            Command::PutIssuer { issuer, expected_revision } => {
                issuer.validate().map_err(|e| Rejection::Invalid { field: e.field, message: e.message })?;
                if let Some(other) =
                    self.issuers.values().find(|o| o.spec.id != issuer.id && o.spec.issuer == issuer.issuer)
                {
                    return Err(Rejection::Conflict {
                        message: format!("issuer {:?} already trusts iss {:?}", other.spec.id.as_str(), issuer.issuer),
                    });
                }
                let effect = put(
                    &mut self.issuers,
                    "issuer",
                    &issuer.id,
                    issuer,
                    *expected_revision,
                    MAX_ISSUERS,
                    revision,
                    time_ms,
                )?;
                self.identity_revision = revision;
                effect
            }
            Command::DeleteIssuer { id, expected_revision } => {
                let users: Vec<&str> = self
                    .routes
                    .values()
                    .filter(|r| {
                        r.spec.auth.as_ref().and_then(|a| a.jwt.as_ref()).is_some_and(|j| j.issuers.contains(id))
                    })
                    .map(|r| r.spec.id.as_str())
                    .take(5)
                    .collect();
                if !users.is_empty() && self.issuers.contains_key(id) {
                    return Err(Rejection::Conflict {
                        message: format!("issuer {:?} is used by route(s) {}", id.as_str(), users.join(", ")),
                    });
                }
                let effect = delete(&mut self.issuers, "issuer", id, *expected_revision, revision)?;
                self.identity_revision = revision;
                effect
            }
            Command::CreateApiKey { id, consumer, hash, expires_ms, rotates } => {
                self.create_api_key(id, consumer, hash, *expires_ms, rotates.as_ref(), revision, time_ms)?
            }
            Command::DeleteApiKey { id } => {
                let Some(key) = self.api_keys.get(id) else {
                    return Err(Rejection::NotFound { kind: "api key".into(), key: id.to_string() });
                };
                let consumer = key.spec.consumer.clone();
                Arc::make_mut(&mut self.api_keys).remove(id);
                if let Some(set) = self.keys_by_consumer.get_mut(&consumer) {
                    set.remove(id);
                    if set.is_empty() {
                        self.keys_by_consumer.remove(&consumer);
                    }
                }
                self.identity_revision = revision;
                Effect::ObjectDeleted { kind: "api_key".into(), id: id.clone(), revision }
            }
            Command::Revoke { target, until_ms, reason } => {
                self.revoke(target, *until_ms, reason, revision, time_ms)?
            }
            Command::PutPlan { plan, expected_revision } => {
                plan.validate().map_err(|e| Rejection::Invalid { field: e.field, message: e.message })?;
                let effect =
                    put(&mut self.plans, "plan", &plan.id, plan, *expected_revision, MAX_PLANS, revision, time_ms)?;
                self.plan_revision = revision;
                effect
            }
            Command::DeletePlan { id, expected_revision } => {
                if self.plans.contains_key(id) {
                    if let Some(c) = self.consumers.values().find(|c| c.spec.plan.as_ref() == Some(id)) {
                        return Err(Rejection::Conflict {
                            message: format!("plan {:?} is used by consumer {:?}", id.as_str(), c.spec.id.as_str()),
                        });
                    }
                }
                let effect = delete(&mut self.plans, "plan", id, *expected_revision, revision)?;
                self.plan_revision = revision;
                effect
            }
            Command::QuotaLeases { node, incarnation, asks } => {
                validate_asks(asks).map_err(|e| Rejection::Invalid { field: e.field, message: e.message })?;
                self.lease(&holder(*node, *incarnation), asks, revision, time_ms);
                Effect::Leased { revision }
            }
            Command::PurgeCache { route, path_prefix } => {
                if let Some(p) = path_prefix {
                    if !p.starts_with('/') || p.len() > 1_024 {
                        return Err(Rejection::Invalid {
                            field: "path_prefix".into(),
                            message: "must start with / and be at most 1024 bytes".into(),
                        });
                    }
                }
                if let Some(r) = route {
                    if !self.routes.contains_key(r) {
                        return Err(Rejection::NotFound { kind: "route".into(), key: r.to_string() });
                    }
                }
                Effect::Audited { revision }
            }
            Command::ResetQuota { key } => {
                let ledger_key = key.ledger_key();
                let Some(entry) = self.quotas.remove(&ledger_key) else {
                    return Err(Rejection::NotFound { kind: "quota entry".into(), key: ledger_key });
                };
                self.quota_expiry
                    .remove(&(entry.window_end_ms.saturating_add(QUOTA_EXPIRY_MARGIN_MS), ledger_key.clone()));
                Effect::QuotaReset { key: ledger_key, revision }
            }
            Command::PutOperator { operator, expected_revision } => {
                operator.validate().map_err(|e| Rejection::Invalid { field: e.field, message: e.message })?;
                put(
                    &mut self.operators,
                    "operator",
                    &operator.id,
                    operator,
                    *expected_revision,
                    MAX_OPERATORS,
                    revision,
                    time_ms,
                )?
            }
            Command::DeleteOperator { id, expected_revision } => {
                let effect = delete(&mut self.operators, "operator", id, *expected_revision, revision)?;
                Arc::make_mut(&mut self.admin_tokens).retain(|_, t| &t.spec.operator != id);
                effect
            }
            Command::CreateAdminToken { id, operator, hash, expires_ms } => {
                if !self.operators.contains_key(operator) {
                    return Err(Rejection::Invalid {
                        field: "operator".into(),
                        message: format!("operator {:?} does not exist", operator.as_str()),
                    });
                }
                if self.admin_tokens.values().filter(|t| &t.spec.operator == operator).count()
                    >= MAX_TOKENS_PER_OPERATOR
                {
                    return Err(Rejection::TableFull {
                        kind: "token of this operator".into(),
                        limit: MAX_TOKENS_PER_OPERATOR,
                    });
                }
                if self.admin_tokens.contains_key(id) {
                    return Err(Rejection::Conflict {
                        message: format!("admin token {:?} already exists", id.as_str()),
                    });
                }
                let token = AdminToken {
                    id: id.clone(),
                    operator: operator.clone(),
                    hash: *hash,
                    created_ms: time_ms,
                    expires_ms: *expires_ms,
                };
                put(&mut self.admin_tokens, "admin_token", id, &token, None, MAX_ADMIN_TOKENS, revision, time_ms)?
            }
            Command::DeleteAdminToken { id } => delete(&mut self.admin_tokens, "admin_token", id, None, revision)?,
            Command::Batch { commands } => return self.apply_batch(leader_time_ms, commands, None),
            // The change itself is openraft's membership entry; this is its audit record.
            Command::MembershipChanged { .. } => Effect::Audited { revision },
            Command::PutCertificate { certificate, expected_revision } => {
                certificate.validate().map_err(|e| Rejection::Invalid { field: e.field, message: e.message })?;
                let effect = put(
                    &mut self.certificates,
                    "certificate",
                    &certificate.id,
                    certificate,
                    *expected_revision,
                    crate::route::MAX_CERTIFICATES,
                    revision,
                    time_ms,
                )?;
                self.tls_revision = revision;
                effect
            }
            Command::DeleteCertificate { id, expected_revision } => {
                let effect = delete(&mut self.certificates, "certificate", id, *expected_revision, revision)?;
                self.tls_revision = revision;
                effect
            }
            Command::RecordDenials { denials } => {
                if denials.is_empty() || denials.len() > MAX_DENIALS_PER_COMMAND {
                    return Err(Rejection::Invalid {
                        field: "denials".into(),
                        message: format!("1 to {MAX_DENIALS_PER_COMMAND} per command"),
                    });
                }
                for (i, d) in denials.iter().enumerate() {
                    d.validate().map_err(|e| Rejection::Invalid {
                        field: format!("denials[{i}].{}", e.field),
                        message: e.message,
                    })?;
                }
                for d in denials {
                    self.audit.append(NewRecord {
                        time_ms: d.at_ms,
                        principal: d.principal.clone(),
                        role: d.role,
                        rpc: d.rpc.clone(),
                        action: "denied".into(),
                        object: format!("node/{}", d.node),
                        outcome: match d.count {
                            1 => format!("denied: {}", d.reason),
                            n => format!("denied {n} times: {}", d.reason),
                        },
                        before: None,
                        after: None,
                    });
                }
                Effect::Audited { revision }
            }
            Command::Unrevoke { target } => {
                let key = target.key();
                let Some(old) = Arc::make_mut(&mut self.revocations).remove(&key) else {
                    return Err(Rejection::NotFound { kind: "revocation".into(), key });
                };
                if let Some(until) = old.until_ms {
                    self.revocation_expiry.remove(&(until.saturating_add(REVOCATION_EXPIRY_MARGIN_MS), key.clone()));
                }
                Effect::Unrevoked { key, revision }
            }
            Command::ForgetConsumer { consumer, pseudonym } => {
                self.forget_consumer(consumer, pseudonym, revision, time_ms)?
            }
            Command::PruneAudit { through_seq, through_hash, .. } => {
                self.check_prune(*through_seq, through_hash)?;
                let dropped = self.audit.prune_through(*through_seq);
                Effect::AuditPruned { revision, through_seq: *through_seq, dropped }
            }
            Command::DeleteUpstream { id, expected_revision } => {
                let users: Vec<&str> = self
                    .routes
                    .values()
                    .filter(|r| &r.spec.upstream == id)
                    .map(|r| r.spec.id.as_str())
                    .take(5)
                    .collect();
                if !users.is_empty() && self.upstreams.contains_key(id) {
                    return Err(Rejection::Conflict {
                        message: format!("upstream {:?} is used by route(s) {}", id.as_str(), users.join(", ")),
                    });
                }
                let effect = delete(&mut self.upstreams, "upstream", id, *expected_revision, revision)?;
                self.routing_revision = revision;
                effect
            }
        };
        self.revision = revision;
        self.time_ms = time_ms;
        self.drop_expired_revocations();
        self.drop_expired_quotas();
        Ok(effect)
    }

    /// The quota a ledger key names, if it still exists.
    pub fn quota(&self, scope: &QuotaScope, name: &ObjectId) -> Option<&Quota> {
        let limits = match scope {
            QuotaScope::Route(id) => &self.routes.get(id)?.spec.limits,
            QuotaScope::Consumer(id) => &self.consumers.get(id)?.spec.limits,
            QuotaScope::Plan(id) => &self.plans.get(id)?.spec.limits,
        };
        limits.quotas.iter().find(|q| &q.name == name)
    }

    /// Whether a new ledger entry's consumer (if its quota counts by
    /// consumer) still exists: an ask in flight when a consumer was deleted
    /// or forgotten must not bring its id back into the ledger.
    fn counts_a_known_consumer(&self, quota: &Quota, key: &QuotaKey) -> bool {
        if let QuotaScope::Consumer(id) = &key.scope {
            if !self.consumers.contains_key(id) {
                return false;
            }
        }
        // The value joins the parts with '|'; a header value may hold '|' too,
        // so only a consumer part before any header part can be located.
        let Some(at) = quota.key.iter().position(|p| matches!(p, KeyPart::Consumer)) else { return true };
        if quota.key[..at].iter().any(|p| matches!(p, KeyPart::Header(_))) {
            return true;
        }
        match key.value.split('|').nth(at) {
            Some("-") | None => true,
            Some(c) => ObjectId::parse(c).is_ok_and(|c| self.consumers.contains_key(&c)),
        }
    }

    /// Grants and returns of one holder's batch. Asks for quotas that no
    /// longer exist, for windows that ended or that do not match the quota,
    /// are ignored; grants are sized so that `held <= limit` holds for every
    /// entry by construction. A changed limit applies at once: the entry's
    /// limit becomes the new one, or what is held if that is more (nothing
    /// more is granted then). Give-backs for another epoch are ignored.
    fn lease(&mut self, holder: &str, asks: &[LeaseAsk], revision: u64, time_ms: u64) {
        for ask in asks {
            let key = &ask.key;
            let Some(quota) = self.quota(&key.scope, &key.quota) else { continue };
            let (start, end) = quota.window.bounds(key.window_start_ms);
            if key.window != quota.window
                || start != key.window_start_ms
                || end.saturating_add(QUOTA_EXPIRY_MARGIN_MS) <= time_ms
            {
                continue;
            }
            let limit = quota.limit;
            let ledger_key = key.ledger_key();
            if !self.quotas.contains_key(&ledger_key) {
                if ask.want == 0
                    || time_ms >= end
                    || self.quotas.len() >= MAX_QUOTA_ENTRIES
                    || !self.counts_a_known_consumer(quota, key)
                {
                    continue;
                }
                let entry = QuotaEntry {
                    limit,
                    window_end_ms: end,
                    granted: BTreeMap::new(),
                    returned: BTreeMap::new(),
                    epoch: revision,
                };
                self.quotas.insert(ledger_key.clone(), entry);
                self.quota_expiry.insert((end.saturating_add(QUOTA_EXPIRY_MARGIN_MS), ledger_key.clone()));
            }
            let entry = self.quotas.get_mut(&ledger_key).expect("inserted above");
            entry.limit = limit.max(entry.held());
            let give_back = ask.give_back.min(entry.held_by(holder));
            if give_back > 0 && ask.epoch == entry.epoch {
                let returned = entry.returned.entry(holder.to_string()).or_insert(0);
                *returned = returned.saturating_add(give_back);
            }
            let known = entry.granted.contains_key(holder);
            if ask.want > 0 && time_ms < entry.window_end_ms && (known || entry.granted.len() < MAX_HOLDERS_PER_ENTRY) {
                let active = entry.active_nodes() + usize::from(!known);
                let g = grant_size(ask.want, entry.limit.saturating_sub(entry.held()), active);
                let granted = entry.granted.get(holder).copied().unwrap_or(0);
                // A holder's cumulative grant cannot overflow: past it, it gets nothing more.
                if let (true, Some(total)) = (g > 0, granted.checked_add(g)) {
                    entry.granted.insert(holder.to_string(), total);
                }
            }
            debug_assert!(entry.held() <= entry.limit, "quota ledger over-allocated {ledger_key}");
        }
    }

    fn drop_expired_quotas(&mut self) {
        while let Some((at, _)) = self.quota_expiry.first() {
            if *at >= self.time_ms {
                break;
            }
            let (_, key) = self.quota_expiry.pop_first().expect("first exists");
            self.quotas.remove(&key);
        }
    }

    /// Token revocations whose token has expired (plus the largest leeway)
    /// go: the issuer check refuses those tokens anyway. Runs on accepted
    /// commands only, with the leader's time, so every node drops the same.
    fn drop_expired_revocations(&mut self) {
        while let Some((at, _)) = self.revocation_expiry.first() {
            if *at >= self.time_ms {
                break;
            }
            let (_, key) = self.revocation_expiry.pop_first().expect("first exists");
            Arc::make_mut(&mut self.revocations).remove(&key);
        }
    }

    #[allow(clippy::too_many_arguments)]
    fn create_api_key(
        &mut self,
        id: &ObjectId,
        consumer: &ObjectId,
        hash: &crate::identity::Digest,
        expires_ms: Option<u64>,
        rotates: Option<&crate::KeyRotation>,
        revision: u64,
        time_ms: u64,
    ) -> Result<Effect, Rejection> {
        if !self.consumers.contains_key(consumer) {
            return Err(Rejection::Invalid {
                field: "consumer".into(),
                message: format!("consumer {:?} does not exist", consumer.as_str()),
            });
        }
        if self.api_keys.contains_key(id) {
            return Err(Rejection::Conflict { message: format!("api key {:?} already exists", id.as_str()) });
        }
        if expires_ms.is_some_and(|e| e <= time_ms) {
            return Err(Rejection::Invalid { field: "expires".into(), message: "is in the past".into() });
        }
        if let Some(rot) = rotates {
            match self.api_keys.get(&rot.old) {
                Some(old) if &old.spec.consumer == consumer => {}
                Some(_) => {
                    return Err(Rejection::Invalid {
                        field: "rotates".into(),
                        message: format!("api key {:?} belongs to another consumer", rot.old.as_str()),
                    })
                }
                None => return Err(Rejection::NotFound { kind: "api key".into(), key: rot.old.to_string() }),
            }
        }
        // Expired keys of this consumer make room first.
        let expired: Vec<ObjectId> = self
            .keys_by_consumer
            .get(consumer)
            .into_iter()
            .flatten()
            .filter(|k| self.api_keys.get(*k).and_then(|s| s.spec.expires_ms).is_some_and(|e| e <= time_ms))
            .cloned()
            .collect();
        let held = self.keys_by_consumer.get(consumer).map_or(0, BTreeSet::len) - expired.len();
        if held >= MAX_KEYS_PER_CONSUMER {
            return Err(Rejection::TableFull { kind: "api key of this consumer".into(), limit: MAX_KEYS_PER_CONSUMER });
        }
        if self.api_keys.len() - expired.len() >= MAX_API_KEYS {
            return Err(Rejection::TableFull { kind: "api key".into(), limit: MAX_API_KEYS });
        }
        let table = Arc::make_mut(&mut self.api_keys);
        let index = self.keys_by_consumer.entry(consumer.clone()).or_default();
        for k in &expired {
            table.remove(k);
            index.remove(k);
        }
        if let Some(rot) = rotates {
            if let Some(old) = table.get_mut(&rot.old) {
                let end = time_ms.saturating_add(rot.overlap_ms);
                old.spec.expires_ms = Some(old.spec.expires_ms.map_or(end, |e| e.min(end)));
                old.revision = revision;
                old.updated_ms = time_ms;
            }
        }
        let key = ApiKey { id: id.clone(), consumer: consumer.clone(), hash: *hash, created_ms: time_ms, expires_ms };
        table.insert(id.clone(), Stored { spec: key, revision, updated_ms: time_ms });
        index.insert(id.clone());
        self.identity_revision = revision;
        Ok(Effect::ObjectPut { kind: "api_key".into(), id: id.clone(), revision, created: true })
    }

    fn revoke(
        &mut self,
        target: &RevocationTarget,
        until_ms: Option<u64>,
        reason: &str,
        revision: u64,
        time_ms: u64,
    ) -> Result<Effect, Rejection> {
        target.validate().map_err(|e| Rejection::Invalid { field: e.field, message: e.message })?;
        validate_reason(reason).map_err(|e| Rejection::Invalid { field: e.field, message: e.message })?;
        let missing = |kind: &str, id: &ObjectId| Rejection::NotFound { kind: kind.into(), key: id.to_string() };
        match target {
            RevocationTarget::Token { issuer, .. } | RevocationTarget::IssuerKey { issuer, .. }
                if !self.issuers.contains_key(issuer) =>
            {
                return Err(missing("issuer", issuer))
            }
            RevocationTarget::ApiKey { id } if !self.api_keys.contains_key(id) => return Err(missing("api key", id)),
            RevocationTarget::Consumer { id } if !self.consumers.contains_key(id) => {
                return Err(missing("consumer", id))
            }
            RevocationTarget::IssuerKey { issuer, .. }
                if self.issuers.get(issuer).is_some_and(|i| i.spec.algorithms.iter().any(|a| a.is_hmac())) =>
            {
                return Err(Rejection::Invalid {
                    field: "target".into(),
                    message: "an HMAC issuer has no key ids to revoke; rotate its secret instead".into(),
                })
            }
            _ => {}
        }
        let until_ms = match (target, until_ms) {
            (RevocationTarget::Token { .. }, None) => {
                return Err(Rejection::Invalid {
                    field: "until".into(),
                    message: "a token revocation needs the token's expiry (exp)".into(),
                })
            }
            (RevocationTarget::Token { .. }, Some(u)) if u > time_ms.saturating_add(MAX_TOKEN_REVOCATION_MS) => {
                return Err(Rejection::Invalid {
                    field: "until".into(),
                    message: "is more than 366 days ahead; such tokens are refused anyway".into(),
                })
            }
            (RevocationTarget::Token { .. }, Some(u)) => Some(u),
            (_, Some(_)) => {
                return Err(Rejection::Invalid {
                    field: "until".into(),
                    message: "only token revocations expire".into(),
                })
            }
            (_, None) => None,
        };
        let key = target.key();
        if let Some(old) = self.revocations.get(&key) {
            if let Some(u) = old.until_ms {
                self.revocation_expiry.remove(&(u.saturating_add(REVOCATION_EXPIRY_MARGIN_MS), key.clone()));
            }
        } else if self.revocations.len() >= MAX_REVOCATIONS {
            return Err(Rejection::TableFull { kind: "revocation".into(), limit: MAX_REVOCATIONS });
        }
        if let Some(u) = until_ms {
            self.revocation_expiry.insert((u.saturating_add(REVOCATION_EXPIRY_MARGIN_MS), key.clone()));
        }
        let revocation = Revocation { target: target.clone(), revoked_ms: time_ms, until_ms, reason: reason.into() };
        Arc::make_mut(&mut self.revocations).insert(key.clone(), revocation);
        Ok(Effect::Revoked { key, revision })
    }

    /// Erases a consumer (see [`Command::ForgetConsumer`]). Every check
    /// comes first, so a rejection changes nothing.
    fn forget_consumer(
        &mut self,
        consumer: &ObjectId,
        pseudonym: &ObjectId,
        revision: u64,
        time_ms: u64,
    ) -> Result<Effect, Rejection> {
        if !is_pseudonym(pseudonym) {
            return Err(Rejection::Invalid {
                field: "pseudonym".into(),
                message: format!("must read {PSEUDONYM_PREFIX}<16 hex digits>"),
            });
        }
        if is_pseudonym(consumer) {
            return Err(Rejection::Invalid { field: "consumer".into(), message: "is already a pseudonym".into() });
        }
        if self.consumers.contains_key(pseudonym) {
            return Err(Rejection::Conflict {
                message: format!("a consumer named {:?} exists; it cannot be a pseudonym", pseudonym.as_str()),
            });
        }
        let subject = Subject::of(self, consumer);
        let revocations: Vec<String> =
            subject.revocation_keys().into_iter().filter(|k| self.revocations.contains_key(k)).collect();
        let quotas: BTreeSet<String> = self.quotas.keys().filter(|k| subject.names_ledger_key(k)).cloned().collect();
        let routes: Vec<ObjectId> = self
            .routes
            .values()
            .filter(|r| r.spec.auth.as_ref().is_some_and(|a| a.consumers.contains(consumer)))
            .map(|r| r.spec.id.clone())
            .collect();
        let named_in_audit =
            self.audit.after(0).any(|r| subject.names_object(&r.object) || r.principal == consumer.as_str());
        if !self.consumers.contains_key(consumer)
            && revocations.is_empty()
            && quotas.is_empty()
            && routes.is_empty()
            && !named_in_audit
        {
            return Err(Rejection::NotFound { kind: "consumer".into(), key: consumer.to_string() });
        }

        Arc::make_mut(&mut self.consumers).remove(consumer);
        Arc::make_mut(&mut self.cert_owners).retain(|_, owner| owner != consumer);
        if let Some(keys) = self.keys_by_consumer.remove(consumer) {
            let table = Arc::make_mut(&mut self.api_keys);
            for k in keys {
                table.remove(&k);
            }
        }
        let table = Arc::make_mut(&mut self.revocations);
        for k in &revocations {
            table.remove(k);
        }
        self.revocation_expiry.retain(|(_, k)| !revocations.contains(k));
        self.quotas.retain(|k, _| !quotas.contains(k));
        self.quota_expiry.retain(|(_, k)| !quotas.contains(k));
        let table = Arc::make_mut(&mut self.routes);
        for id in &routes {
            let stored = table.get_mut(id).expect("listed above");
            let auth = stored.spec.auth.as_mut().expect("listed above");
            // Replace, never remove: an empty list would let every consumer in.
            let mut list = Vec::with_capacity(auth.consumers.len());
            for c in auth.consumers.drain(..) {
                let c = if &c == consumer { pseudonym.clone() } else { c };
                if !list.contains(&c) {
                    list.push(c);
                }
            }
            auth.consumers = list;
            stored.revision = revision;
            stored.updated_ms = time_ms;
        }
        if !routes.is_empty() {
            self.routing_revision = revision;
        }
        self.identity_revision = revision;
        let (previous_head_seq, previous_head) = self.audit.head();
        let (rewritten, first_rewritten_seq) = self.audit.rewrite(|r| {
            let mut changed = false;
            if let Some(o) = subject.pseudonymise_object(&r.object, pseudonym) {
                r.object = o;
                changed = true;
            }
            if r.principal == consumer.as_str() {
                r.principal = pseudonym.to_string();
                changed = true;
            }
            changed
        });
        Ok(Effect::Forgotten {
            revision,
            pseudonym: pseudonym.clone(),
            rewritten,
            first_rewritten_seq,
            previous_head_seq,
            previous_head,
        })
    }

    /// A prune must end at a kept record whose hash the exporter saw.
    fn check_prune(&self, through_seq: u64, through_hash: &crate::identity::Digest) -> Result<(), Rejection> {
        let Some(record) = self.audit.get(through_seq) else {
            let (head, _) = self.audit.head();
            return Err(Rejection::Invalid {
                field: "through_seq".into(),
                message: format!(
                    "record {through_seq} is not in the trail (it keeps {} to {head})",
                    self.audit.after(0).next().map_or(head, |r| r.seq)
                ),
            });
        };
        if &record.hash != through_hash {
            return Err(Rejection::Conflict {
                message: format!(
                    "record {through_seq} has changed since the export (a forget re-chained the trail?); export again"
                ),
            });
        }
        Ok(())
    }

    /// The revision of the last accepted command (0 for a new cluster).
    pub fn revision(&self) -> u64 {
        self.revision
    }

    pub fn setting(&self, key: &SettingKey) -> Option<&Setting> {
        self.settings.get(key)
    }

    pub fn settings(&self) -> impl Iterator<Item = (&SettingKey, &Setting)> {
        self.settings.iter()
    }

    pub fn routes(&self) -> &Table<Route> {
        &self.routes
    }

    pub fn upstreams(&self) -> &Table<Upstream> {
        &self.upstreams
    }

    pub fn consumers(&self) -> &Table<Consumer> {
        &self.consumers
    }

    pub fn issuers(&self) -> &Table<JwtIssuer> {
        &self.issuers
    }

    pub fn api_keys(&self) -> &Table<ApiKey> {
        &self.api_keys
    }

    /// The API key ids a consumer holds.
    pub fn keys_of(&self, consumer: &ObjectId) -> impl Iterator<Item = &ObjectId> {
        self.keys_by_consumer.get(consumer).into_iter().flatten()
    }

    /// The consumer a client-certificate identity stands for.
    pub fn cert_owner(&self, identity_key: &str) -> Option<&ObjectId> {
        self.cert_owners.get(identity_key)
    }

    /// Client-certificate identity keys ([`crate::identity::CertIdentity::key`]) and their consumers.
    pub fn cert_owners(&self) -> &Arc<BTreeMap<String, ObjectId>> {
        &self.cert_owners
    }

    /// Revision of the last change to consumers, API keys or issuers.
    pub fn identity_revision(&self) -> u64 {
        self.identity_revision
    }

    /// Revocations by [`RevocationTarget::key`].
    pub fn revocations(&self) -> &Arc<BTreeMap<String, Revocation>> {
        &self.revocations
    }

    pub fn plans(&self) -> &Table<Plan> {
        &self.plans
    }

    /// Revision of the last plan change.
    pub fn plan_revision(&self) -> u64 {
        self.plan_revision
    }

    /// The quota ledger by [`QuotaKey::ledger_key`].
    pub fn quota_entries(&self) -> &BTreeMap<String, QuotaEntry> {
        &self.quotas
    }

    pub fn quota_entry(&self, key: &QuotaKey) -> Option<&QuotaEntry> {
        self.quotas.get(&key.ledger_key())
    }

    /// Revision of the last route or upstream change.
    pub fn certificates(&self) -> &Table<crate::route::CertificateRef> {
        &self.certificates
    }

    /// Revision of the last certificate change (0: none).
    pub fn tls_revision(&self) -> u64 {
        self.tls_revision
    }

    pub fn operators(&self) -> &Table<Operator> {
        &self.operators
    }

    pub fn admin_tokens(&self) -> &Table<AdminToken> {
        &self.admin_tokens
    }

    pub fn audit(&self) -> &AuditTrail {
        &self.audit
    }

    pub fn routing_revision(&self) -> u64 {
        self.routing_revision
    }

    /// A route must be valid, name an existing upstream and not conflict
    /// with another route.
    fn check_route(&self, route: &Route) -> Result<(), Rejection> {
        route.validate().map_err(|e| Rejection::Invalid { field: e.field, message: e.message })?;
        if !self.upstreams.contains_key(&route.upstream) {
            return Err(Rejection::Invalid {
                field: "upstream".into(),
                message: format!("upstream {:?} does not exist", route.upstream.as_str()),
            });
        }
        let issuers = route.auth.as_ref().and_then(|a| a.jwt.as_ref()).map(|j| j.issuers.as_slice()).unwrap_or(&[]);
        for (i, issuer) in issuers.iter().enumerate() {
            if !self.issuers.contains_key(issuer) {
                return Err(Rejection::Invalid {
                    field: format!("auth.jwt.issuers[{i}]"),
                    message: format!("issuer {:?} does not exist", issuer.as_str()),
                });
            }
        }
        if let Some(other) = self.routes.values().find(|o| o.spec.id != route.id && o.spec.conflicts_with(route)) {
            return Err(Rejection::Conflict {
                message: format!(
                    "route {:?} matches the same requests as route {:?} with the same priority; change a priority, host, path, method or predicate",
                    route.id.as_str(),
                    other.spec.id.as_str()
                ),
            });
        }
        Ok(())
    }

    /// Canonical bytes of the state, used for snapshots and to compare nodes.
    pub fn to_bytes(&self) -> Vec<u8> {
        serde_json::to_vec(self).expect("State serializes: it holds only strings, integers and ordered maps")
    }

    pub fn from_bytes(bytes: &[u8]) -> Result<Self, StateDecodeError> {
        Ok(serde_json::from_slice(bytes)?)
    }
}

#[allow(clippy::too_many_arguments)]
fn put<T: Clone>(
    table: &mut Table<T>,
    kind: &str,
    id: &ObjectId,
    spec: &T,
    expected: Option<u64>,
    limit: usize,
    revision: u64,
    time_ms: u64,
) -> Result<Effect, Rejection> {
    let current = table.get(id);
    check_revision(kind, id.as_str(), current.map(|s| s.revision), expected)?;
    let created = current.is_none();
    if created && table.len() >= limit {
        return Err(Rejection::TableFull { kind: kind.into(), limit });
    }
    Arc::make_mut(table).insert(id.clone(), Stored { spec: spec.clone(), revision, updated_ms: time_ms });
    Ok(Effect::ObjectPut { kind: kind.into(), id: id.clone(), revision, created })
}

fn delete<T: Clone>(
    table: &mut Table<T>,
    kind: &str,
    id: &ObjectId,
    expected: Option<u64>,
    revision: u64,
) -> Result<Effect, Rejection> {
    let Some(current) = table.get(id) else {
        return Err(Rejection::NotFound { kind: kind.into(), key: id.to_string() });
    };
    check_revision(kind, id.as_str(), Some(current.revision), expected)?;
    Arc::make_mut(table).remove(id);
    Ok(Effect::ObjectDeleted { kind: kind.into(), id: id.clone(), revision })
}

/// `expected` 0 means "must not exist"; otherwise it must equal the current revision.
fn check_revision(kind: &str, key: &str, actual: Option<u64>, expected: Option<u64>) -> Result<(), Rejection> {
    let Some(expected) = expected else { return Ok(()) };
    let actual = actual.unwrap_or(0);
    if actual == expected {
        Ok(())
    } else {
        Err(Rejection::RevisionMismatch { kind: kind.into(), key: key.into(), expected, actual })
    }
}
