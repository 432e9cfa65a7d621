//! Routes, upstreams and consumers over the admin API.
//!
//! Objects arrive as JSON (`spec_json`), are decoded with unknown fields
//! refused, validated whole (the error names the first bad field) and become
//! one command; `apply` in the state machine then checks references and
//! conflicts. Reads return the canonical JSON of the stored object.

use raftgate_cluster::{Applied, ClusterError};
use raftgate_model::identity::JwtIssuer;
use raftgate_model::{Command, Consumer, ObjectId, Route, Stored, Table, Upstream};
use raftgate_proto::admin as pb;
use serde::de::DeserializeOwned;
use serde::Serialize;
use tonic::Status;

use crate::invalid;

/// Largest object document accepted.
pub const MAX_SPEC_BYTES: usize = 1 << 20;

/// What the admin API needs to know about one kind of object.
pub(crate) trait Kind: Serialize + DeserializeOwned + Clone + Send + Sync + 'static {
    const NAME: &'static str;
    fn id(&self) -> &ObjectId;
    fn validate(&self) -> Result<(), raftgate_model::FieldError>;
    fn put(self, expected_revision: Option<u64>) -> Command;
    fn delete(id: ObjectId, expected_revision: Option<u64>) -> Command;
    fn table(applied: &Applied) -> &Table<Self>;
    /// Checks the model cannot make (it has no schema compiler).
    fn check(&self) -> Result<(), String> {
        Ok(())
    }
}

impl Kind for Route {
    const NAME: &'static str = "route";
    fn id(&self) -> &ObjectId {
        &self.id
    }
    fn validate(&self) -> Result<(), raftgate_model::FieldError> {
        Route::validate(self)
    }
    fn put(self, expected_revision: Option<u64>) -> Command {
        Command::PutRoute { route: self, expected_revision }
    }
    fn delete(id: ObjectId, expected_revision: Option<u64>) -> Command {
        Command::DeleteRoute { id, expected_revision }
    }
    fn table(applied: &Applied) -> &Table<Self> {
        applied.state.routes()
    }
    fn check(&self) -> Result<(), String> {
        match &self.request_schema {
            Some(s) => jsonschema::validator_for(s).map(|_| ()).map_err(|e| format!("request_schema: {e}")),
            None => Ok(()),
        }
    }
}

impl Kind for Upstream {
    const NAME: &'static str = "upstream";
    fn id(&self) -> &ObjectId {
        &self.id
    }
    fn validate(&self) -> Result<(), raftgate_model::FieldError> {
        Upstream::validate(self)
    }
    fn put(self, expected_revision: Option<u64>) -> Command {
        Command::PutUpstream { upstream: self, expected_revision }
    }
    fn delete(id: ObjectId, expected_revision: Option<u64>) -> Command {
        Command::DeleteUpstream { id, expected_revision }
    }
    fn table(applied: &Applied) -> &Table<Self> {
        applied.state.upstreams()
    }
}

impl Kind for Consumer {
    const NAME: &'static str = "consumer";
    fn id(&self) -> &ObjectId {
        &self.id
    }
    fn validate(&self) -> Result<(), raftgate_model::FieldError> {
        Consumer::validate(self)
    }
    fn put(self, expected_revision: Option<u64>) -> Command {
        Command::PutConsumer { consumer: self, expected_revision }
    }
    fn delete(id: ObjectId, expected_revision: Option<u64>) -> Command {
        Command::DeleteConsumer { id, expected_revision }
    }
    fn table(applied: &Applied) -> &Table<Self> {
        applied.state.consumers()
    }
}

impl Kind for JwtIssuer {
    const NAME: &'static str = "issuer";
    fn id(&self) -> &ObjectId {
        &self.id
    }
    fn validate(&self) -> Result<(), raftgate_model::FieldError> {
        JwtIssuer::validate(self)
    }
    fn put(self, expected_revision: Option<u64>) -> Command {
        Command::PutIssuer { issuer: self, expected_revision }
    }
    fn delete(id: ObjectId, expected_revision: Option<u64>) -> Command {
        Command::DeleteIssuer { id, expected_revision }
    }
    fn table(applied: &Applied) -> &Table<Self> {
        applied.state.issuers()
    }
}

impl Kind for raftgate_model::traffic::Plan {
    const NAME: &'static str = "plan";
    fn id(&self) -> &ObjectId {
        &self.id
    }
    fn validate(&self) -> Result<(), raftgate_model::FieldError> {
        raftgate_model::traffic::Plan::validate(self)
    }
    fn put(self, expected_revision: Option<u64>) -> Command {
        Command::PutPlan { plan: self, expected_revision }
    }
    fn delete(id: ObjectId, expected_revision: Option<u64>) -> Command {
        Command::DeletePlan { id, expected_revision }
    }
    fn table(applied: &Applied) -> &Table<Self> {
        applied.state.plans()
    }
}

impl Kind for raftgate_model::route::CertificateRef {
    const NAME: &'static str = "certificate";
    fn id(&self) -> &ObjectId {
        &self.id
    }
    fn validate(&self) -> Result<(), raftgate_model::FieldError> {
        raftgate_model::route::CertificateRef::validate(self)
    }
    fn put(self, expected_revision: Option<u64>) -> Command {
        Command::PutCertificate { certificate: self, expected_revision }
    }
    fn delete(id: ObjectId, expected_revision: Option<u64>) -> Command {
        Command::DeleteCertificate { id, expected_revision }
    }
    fn table(applied: &Applied) -> &Table<Self> {
        applied.state.certificates()
    }
}

/// Decodes and validates an object document into a put command.
pub(crate) fn put_command<K: Kind>(msg: &pb::ApplyObjectRequest) -> Result<Command, Status> {
    if msg.spec_json.len() > MAX_SPEC_BYTES {
        return Err(invalid("spec_json", format!("must be at most {MAX_SPEC_BYTES} bytes")));
    }
    let spec: K = serde_json::from_str(&msg.spec_json).map_err(|e| invalid("spec_json", e))?;
    spec.validate().map_err(|e| Status::invalid_argument(format!("{} {:?}: {e}", K::NAME, spec.id().as_str())))?;
    spec.check().map_err(|e| Status::invalid_argument(format!("{} {:?}: {e}", K::NAME, spec.id().as_str())))?;
    Ok(spec.put(msg.expected_revision))
}

pub(crate) fn delete_command<K: Kind>(msg: &pb::DeleteObjectRequest) -> Result<Command, Status> {
    let id = ObjectId::parse(msg.id.clone()).map_err(|e| invalid("id", e.message))?;
    Ok(K::delete(id, msg.expected_revision))
}

fn object<K: Kind>(id: &ObjectId, stored: &Stored<K>) -> pb::Object {
    pb::Object {
        id: id.to_string(),
        spec_json: serde_json::to_string(&stored.spec).expect("model objects serialize"),
        revision: stored.revision,
        updated_ms: stored.updated_ms,
    }
}

pub(crate) fn get<K: Kind>(id: &ObjectId) -> impl FnOnce(&Applied) -> Result<pb::Object, ClusterError> + '_ {
    move |a| {
        K::table(a)
            .get(id)
            .map(|s| object(id, s))
            .ok_or_else(|| ClusterError::NotFound(format!("{} {:?} not found", K::NAME, id.as_str())))
    }
}

pub(crate) fn list<K: Kind>(after: String, limit: usize) -> impl FnOnce(&Applied) -> pb::ListObjectsReply {
    move |a| {
        let objects = K::table(a)
            .iter()
            .filter(|(id, _)| id.as_str() > after.as_str())
            .take(limit + 1)
            .map(|(id, s)| object(id, s));
        crate::page(objects, limit)
    }
}
