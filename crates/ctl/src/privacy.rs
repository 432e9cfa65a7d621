//! `raftgatectl consumer export|forget`, `audit prune|retention` and
//! `node compact`: data subjects and audit retention.
//!
//! `audit prune` exports before it deletes: it writes the records to a new
//! file (JSON lines), syncs it, reads it back and checks every hash and
//! link, and only then asks the cluster to drop them, naming the file's
//! SHA-256 and the last record's hash, so the prune is refused if the trail
//! changed in between.

use std::io::Write as _;
use std::path::{Path, PathBuf};

use clap::Subcommand;
use raftgate_model::governance::AuditRecord;
use raftgate_proto::admin as pb;
use serde_json::Value;
use sha2::{Digest as _, Sha256};

use crate::objects::{ConsumerFlags, ObjectCmd};
use crate::output::Output;
use crate::{describe, Client};

/// The setting that holds the audit retention in days.
pub const RETENTION_SETTING: &str = "audit.retention_days";
const MAX_RETENTION_DAYS: u64 = 36_600;
const PAGE: u32 = 1_000;

#[derive(Subcommand)]
pub enum ConsumerCmd {
    #[command(flatten)]
    Object(ObjectCmd<ConsumerFlags>),
    /// Everything the cluster holds about a consumer, as JSON (needs role auditor or admin).
    ///
    /// The consumer, its API keys' metadata (never the key or its hash), its
    /// certificate identities, revocations, quota ledger entries, routes whose
    /// auth names it and every kept audit record that names it or its keys.
    /// Example: raftgatectl consumer export acme --out acme.json
    Export {
        consumer: String,
        /// Write here instead of stdout.
        #[arg(long)]
        out: Option<PathBuf>,
        /// This node's applied state instead of a linearizable read through the leader.
        #[arg(long)]
        local: bool,
    },
    /// Erase a consumer (GDPR/CCPA; admin only): one replicated command deletes it,
    /// its API keys, certificate identities, revocations and quota entries, and
    /// puts a keyed pseudonym in its place in route lists and kept audit records.
    ///
    /// Example: raftgatectl consumer forget acme --yes
    Forget {
        consumer: String,
        /// Required: there is no undo.
        #[arg(long)]
        yes: bool,
    },
}

#[derive(Subcommand)]
pub enum RetentionCmd {
    /// How long audit records are kept, in days (the `audit.retention_days` setting).
    ///
    /// Example: raftgatectl audit retention set --days 90
    Set {
        #[arg(long, value_parser = clap::value_parser!(u64).range(1..=MAX_RETENTION_DAYS))]
        days: u64,
    },
    /// The configured retention.
    #[command(after_help = "Example:\n  raftgatectl audit retention show")]
    Show,
}

pub async fn consumer_command(client: &mut Client, out: &Output, cmd: &ConsumerCmd) -> Result<(), String> {
    match cmd {
        ConsumerCmd::Object(_) => unreachable!("object commands are handled by the caller"),
        ConsumerCmd::Export { consumer, out: file, local } => export(client, consumer, file.as_deref(), *local).await,
        ConsumerCmd::Forget { consumer, yes } => {
            if !yes {
                return Err(format!(
                    "refusing to forget consumer {consumer:?} without --yes: it deletes the consumer, its keys, revocations and quota entries and rewrites the audit trail, with no undo (export it first: consumer export {consumer})"
                ));
            }
            let req = pb::ForgetConsumerRequest { consumer: consumer.clone() };
            let r = client.forget_consumer(req).await.map_err(describe)?.into_inner();
            out.value(&serde_json::json!({
                "forgotten": consumer,
                "pseudonym": r.pseudonym,
                "rewritten_audit_records": r.rewritten_audit_records,
                "revision": r.revision,
                "log_index": r.log_index,
            }));
            Ok(())
        }
    }
}

async fn export(client: &mut Client, consumer: &str, file: Option<&Path>, local: bool) -> Result<(), String> {
    let consistency = if local { pb::Consistency::Local } else { pb::Consistency::Linearizable } as i32;
    let mut doc: Option<Value> = None;
    let mut after = 0;
    loop {
        let req = pb::ExportConsumerRequest { consumer: consumer.into(), consistency, audit_after_seq: after };
        let r = client.export_consumer(req).await.map_err(describe)?.into_inner();
        let page: Value =
            serde_json::from_str(&r.document_json).map_err(|e| format!("the node sent a bad document: {e}"))?;
        match &mut doc {
            None => doc = Some(page),
            Some(d) => {
                let more = page["audit_records"].as_array().cloned().unwrap_or_default();
                if let Some(records) = d["audit_records"].as_array_mut() {
                    records.extend(more);
                }
            }
        }
        if r.next_audit_after_seq == 0 {
            break;
        }
        after = r.next_audit_after_seq;
    }
    let text = serde_json::to_string_pretty(&doc.unwrap_or_default()).expect("JSON serializes") + "\n";
    match file {
        Some(p) => write_synced(p, text.as_bytes(), false),
        None => std::io::stdout().write_all(text.as_bytes()).map_err(|e| format!("writing the export: {e}")),
    }
}

/// Writes `bytes` to `path` and syncs the file and its directory. With
/// `new`, an existing file is an error (an earlier export is never overwritten).
fn write_synced(path: &Path, bytes: &[u8], new: bool) -> Result<(), String> {
    let what = |e: std::io::Error| format!("{}: {e}", path.display());
    let mut f = if new {
        std::fs::OpenOptions::new().write(true).create_new(true).open(path).map_err(what)?
    } else {
        std::fs::File::create(path).map_err(what)?
    };
    f.write_all(bytes).map_err(what)?;
    f.sync_all().map_err(what)?;
    let dir = path.parent().filter(|d| !d.as_os_str().is_empty()).unwrap_or(Path::new("."));
    std::fs::File::open(dir).and_then(|d| d.sync_all()).map_err(what)
}

/// Kept records with `seq <= through`, oldest first, in the node's JSON.
pub async fn records_through(client: &mut Client, through: u64) -> Result<Vec<String>, String> {
    let mut out = Vec::new();
    let mut after = 0;
    loop {
        let req = pb::ListAuditRequest { consistency: 1, after_seq: after, limit: PAGE, tail: 0 };
        let reply = client.list_audit(req).await.map_err(describe)?.into_inner();
        for r in reply.records_json {
            let seq = serde_json::from_str::<Value>(&r).ok().and_then(|v| v["seq"].as_u64()).unwrap_or(u64::MAX);
            if seq > through {
                return Ok(out);
            }
            out.push(r);
        }
        if reply.next_after_seq == 0 {
            return Ok(out);
        }
        after = reply.next_after_seq;
    }
}

/// Checks an export file: every line a record, seqs without gaps from
/// the anchor, each hash right and each link to the one before. Returns
/// the last record.
pub fn verify_export(bytes: &[u8], anchor: (u64, &str)) -> Result<AuditRecord, String> {
    let text = std::str::from_utf8(bytes).map_err(|_| "the export is not UTF-8".to_string())?;
    let mut last: Option<AuditRecord> = None;
    for (i, line) in text.lines().enumerate() {
        let r: AuditRecord = serde_json::from_str(line).map_err(|e| format!("line {}: {e}", i + 1))?;
        let (want_seq, want_prev) = match &last {
            Some(l) => (l.seq + 1, l.hash.to_string()),
            None => (anchor.0 + 1, anchor.1.to_string()),
        };
        if r.seq != want_seq {
            return Err(format!("line {}: record {} where {want_seq} was expected", i + 1, r.seq));
        }
        if r.prev.to_string() != want_prev {
            return Err(format!("line {}: record {} does not link to the one before", i + 1, r.seq));
        }
        if r.hash != r.expected_hash() {
            return Err(format!("line {}: record {} does not match its hash", i + 1, r.seq));
        }
        last = Some(r);
    }
    last.ok_or_else(|| "the export holds no record".to_string())
}

/// The seq of the newest record older than the retention (`None`: none is).
async fn retention_cutoff(client: &mut Client) -> Result<Option<u64>, String> {
    let req = pb::GetSettingRequest { key: RETENTION_SETTING.into(), consistency: 1 };
    let s = client.get_setting(req).await.map_err(|s| match s.code() {
        tonic::Code::NotFound => "no audit retention is set (raftgatectl audit retention set --days N)".to_string(),
        _ => describe(s),
    })?;
    let days: u64 =
        s.into_inner().value.trim().parse().map_err(|_| format!("{RETENTION_SETTING} is not a number of days"))?;
    let now = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map_or(0, |d| d.as_millis() as u64);
    let cutoff = now.saturating_sub(days.saturating_mul(86_400_000));
    let mut found = None;
    for r in records_through(client, u64::MAX).await? {
        let v: Value = serde_json::from_str(&r).map_err(|e| format!("the node sent a bad record: {e}"))?;
        match (v["seq"].as_u64(), v["time_ms"].as_u64()) {
            (Some(seq), Some(t)) if t < cutoff => found = Some(seq),
            _ => break,
        }
    }
    Ok(found)
}

/// Exports records through `through_seq` (or those past the retention) to
/// `file`, verifies the file, then prunes them.
pub async fn prune(
    client: &mut Client,
    out: &Output,
    through_seq: Option<u64>,
    retention: bool,
    file: &Path,
) -> Result<(), String> {
    let through = match (through_seq, retention) {
        (Some(n), false) => n,
        (None, true) => match retention_cutoff(client).await? {
            Some(n) => n,
            None => {
                eprintln!("no audit record is older than the retention; nothing to prune");
                return Ok(());
            }
        },
        _ => return Err("give --through-seq N or --retention".into()),
    };
    let v = client.verify_audit(pb::VerifyAuditRequest {}).await.map_err(describe)?.into_inner();
    if !v.intact {
        return Err(format!("the node's audit chain is broken at record {}; not pruning", v.broken_seq));
    }
    if through <= v.anchor_seq || through > v.head_seq {
        return Err(format!("--through-seq must be from {} to {} (the records kept)", v.anchor_seq + 1, v.head_seq));
    }
    let records = records_through(client, through).await?;
    let mut bytes = Vec::new();
    for r in &records {
        bytes.extend_from_slice(r.as_bytes());
        bytes.push(b'\n');
    }
    write_synced(file, &bytes, true)?;
    // Check what reached the disk, not what is in memory.
    let written = std::fs::read(file).map_err(|e| format!("{}: {e}", file.display()))?;
    let last = verify_export(&written, (v.anchor_seq, &v.anchor_hash))
        .map_err(|e| format!("{}: the export does not verify, not pruning: {e}", file.display()))?;
    if last.seq != through {
        return Err(format!("{}: the export ends at record {}, not {through}; not pruning", file.display(), last.seq));
    }
    let digest: String = Sha256::digest(&written).iter().map(|b| format!("{b:02x}")).collect();
    let req = pb::PruneAuditRequest {
        through_seq: through,
        through_hash: last.hash.to_string(),
        export_sha256: digest.clone(),
    };
    let w = client
        .prune_audit(req)
        .await
        .map_err(|s| format!("{} written and verified, but the prune failed: {}", file.display(), describe(s)))?;
    let w = w.into_inner();
    out.value(&serde_json::json!({
        "pruned_through_seq": through,
        "records": records.len(),
        "export": file.display().to_string(),
        "export_sha256": digest,
        "revision": w.revision,
        "log_index": w.log_index,
    }));
    Ok(())
}

pub async fn retention(client: &mut Client, out: &Output, cmd: &RetentionCmd) -> Result<(), String> {
    match cmd {
        RetentionCmd::Set { days } => {
            let req = pb::PutSettingRequest {
                key: RETENTION_SETTING.into(),
                value: days.to_string(),
                expected_revision: None,
            };
            out.write(&client.put_setting(req).await.map_err(describe)?.into_inner());
        }
        RetentionCmd::Show => {
            let req = pb::GetSettingRequest { key: RETENTION_SETTING.into(), consistency: 1 };
            let s = client.get_setting(req).await.map_err(describe)?.into_inner();
            out.settings(&[s], "");
        }
    }
    Ok(())
}

pub async fn compact(client: &mut Client, out: &Output) -> Result<(), String> {
    let r = client.compact_log(pb::CompactLogRequest {}).await.map_err(describe)?.into_inner();
    out.value(&serde_json::json!({
        "node_id": r.node_id,
        "snapshot_index": r.snapshot_index,
        "purged_index": r.purged_index,
        "rewrite_at_restart": r.rewrite_at_restart,
    }));
    Ok(())
}
