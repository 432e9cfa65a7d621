//! Declarative configuration: the desired state of routes, upstreams,
//! consumers, issuers and plans as one document, turned into one atomic
//! batch of writes against the current state (`raftgatectl apply -f`), or
//! dumped from it (`raftgatectl dump`).
//!
//! A kind absent from the document is left alone; with `prune`, objects of
//! a kind the document lists but that it does not name are deleted. Every
//! write carries the revision the plan was made against, so a concurrent
//! change refuses the whole batch instead of being overwritten.

use std::collections::BTreeSet;

use raftgate_cluster::Applied;
use raftgate_model::identity::JwtIssuer;
use raftgate_model::route::CertificateRef;
use raftgate_model::traffic::Plan;
use raftgate_model::{Command, Consumer, ObjectId, Route, Table, Upstream, MAX_BATCH_COMMANDS};
use raftgate_proto::admin as pb;
use serde::{Deserialize, Serialize};
use tonic::Status;

use crate::objects::Kind;

/// Largest document accepted (the admin API's message limit bounds it too).
pub const MAX_DOCUMENT_BYTES: usize = 4 << 20;

/// The desired state. Keys in this order are also the order of a dump.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Document {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub certificates: Option<Vec<CertificateRef>>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub upstreams: Option<Vec<Upstream>>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub issuers: Option<Vec<JwtIssuer>>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub plans: Option<Vec<Plan>>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub consumers: Option<Vec<Consumer>>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub routes: Option<Vec<Route>>,
}

impl Document {
    /// The kinds this document holds, with the RPCs that apply and delete
    /// one object of that kind (a caller needs them to apply the document).
    pub(crate) fn kinds(&self) -> Vec<(&'static str, &'static str, &'static str)> {
        [
            ("certificate", "ApplyCertificate", "DeleteCertificate", self.certificates.is_some()),
            ("upstream", "ApplyUpstream", "DeleteUpstream", self.upstreams.is_some()),
            ("issuer", "ApplyIssuer", "DeleteIssuer", self.issuers.is_some()),
            ("plan", "ApplyPlan", "DeletePlan", self.plans.is_some()),
            ("consumer", "ApplyConsumer", "DeleteConsumer", self.consumers.is_some()),
            ("route", "ApplyRoute", "DeleteRoute", self.routes.is_some()),
        ]
        .into_iter()
        .filter(|k| k.3)
        .map(|(kind, apply, delete, _)| (kind, apply, delete))
        .collect()
    }
}

/// One change of a plan: what it does, and the command that does it.
pub(crate) struct Change {
    pub action: &'static str,
    pub kind: &'static str,
    pub id: String,
    pub command: Command,
}

impl Change {
    pub(crate) fn reply(&self) -> pb::ConfigChange {
        pb::ConfigChange { action: self.action.into(), kind: self.kind.into(), id: self.id.clone() }
    }
}

pub(crate) fn parse(json: &str) -> Result<Document, Status> {
    if json.len() > MAX_DOCUMENT_BYTES {
        return Err(crate::invalid("document_json", format!("must be at most {MAX_DOCUMENT_BYTES} bytes")));
    }
    let doc: Document = serde_json::from_str(json).map_err(|e| crate::invalid("document_json", e))?;
    validate_kind(&doc.certificates)?;
    validate_kind(&doc.upstreams)?;
    validate_kind(&doc.issuers)?;
    validate_kind(&doc.plans)?;
    validate_kind(&doc.consumers)?;
    validate_kind(&doc.routes)?;
    Ok(doc)
}

fn validate_kind<K: Kind>(objects: &Option<Vec<K>>) -> Result<(), Status> {
    let mut seen = BTreeSet::new();
    for (i, o) in objects.iter().flatten().enumerate() {
        let at = format!("{}s[{i}]", K::NAME);
        o.validate().map_err(|e| Status::invalid_argument(format!("{at} ({:?}): {e}", o.id().as_str())))?;
        o.check().map_err(|e| Status::invalid_argument(format!("{at} ({:?}): {e}", o.id().as_str())))?;
        if !seen.insert(o.id().clone()) {
            return Err(Status::invalid_argument(format!("{at}: {} {:?} is listed twice", K::NAME, o.id().as_str())));
        }
    }
    Ok(())
}

/// The puts of one kind: creates and updates of objects that differ.
fn puts<K: Kind>(table: &Table<K>, wanted: &Option<Vec<K>>, out: &mut Vec<Change>) {
    for o in wanted.iter().flatten() {
        let current = table.get(o.id());
        let action = match current {
            None => "create",
            Some(s) if serde_json::to_value(&s.spec).ok() != serde_json::to_value(o).ok() => "update",
            Some(_) => continue,
        };
        let revision = current.map_or(0, |s| s.revision);
        out.push(Change { action, kind: K::NAME, id: o.id().to_string(), command: o.clone().put(Some(revision)) });
    }
}

/// The deletes of one kind under `prune`: objects the document does not name.
fn deletes<K: Kind>(table: &Table<K>, wanted: &Option<Vec<K>>, out: &mut Vec<Change>) {
    let Some(wanted) = wanted else { return };
    let keep: BTreeSet<&ObjectId> = wanted.iter().map(|o| o.id()).collect();
    for (id, s) in table.iter().filter(|(id, _)| !keep.contains(id)) {
        out.push(Change {
            action: "delete",
            kind: K::NAME,
            id: id.to_string(),
            command: K::delete(id.clone(), Some(s.revision)),
        });
    }
}

/// The changes that make the state match `doc`, in an order apply accepts:
/// pruned routes first (nothing refers to them), then puts from the
/// referenced kinds up, then the other deletes from the referring kinds down.
pub(crate) fn plan(a: &Applied, doc: &Document, prune: bool) -> Result<Vec<Change>, Status> {
    let s = &a.state;
    let mut out = Vec::new();
    if prune {
        deletes(s.routes(), &doc.routes, &mut out);
    }
    puts(s.certificates(), &doc.certificates, &mut out);
    puts(s.upstreams(), &doc.upstreams, &mut out);
    puts(s.issuers(), &doc.issuers, &mut out);
    puts(s.plans(), &doc.plans, &mut out);
    puts(s.consumers(), &doc.consumers, &mut out);
    puts(s.routes(), &doc.routes, &mut out);
    if prune {
        deletes(s.consumers(), &doc.consumers, &mut out);
        deletes(s.plans(), &doc.plans, &mut out);
        deletes(s.issuers(), &doc.issuers, &mut out);
        deletes(s.upstreams(), &doc.upstreams, &mut out);
        deletes(s.certificates(), &doc.certificates, &mut out);
    }
    if out.len() > MAX_BATCH_COMMANDS {
        return Err(Status::invalid_argument(format!(
            "the document makes {} changes; one apply makes at most {MAX_BATCH_COMMANDS}",
            out.len()
        )));
    }
    Ok(out)
}

/// Every object of every kind, sorted by id: the document `apply` takes back.
pub(crate) fn dump(a: &Applied) -> Document {
    fn all<K: Kind>(t: &Table<K>) -> Option<Vec<K>> {
        Some(t.values().map(|s| s.spec.clone()).collect())
    }
    let s = &a.state;
    Document {
        certificates: all(s.certificates()),
        upstreams: all(s.upstreams()),
        issuers: all(s.issuers()),
        plans: all(s.plans()),
        consumers: all(s.consumers()),
        routes: all(s.routes()),
    }
}
