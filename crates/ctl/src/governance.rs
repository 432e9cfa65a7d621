//! `raftgatectl operator|token|audit|whoami`: who administers the cluster
//! and what they did.

use std::io::Write as _;
use std::path::PathBuf;

use clap::{Args, Subcommand};
use raftgate_proto::admin as pb;
use serde_json::{json, Value};

use crate::objects::FromFlags;
use crate::output::Output;
use crate::{describe, Client};

/// Audit records fetched per page by `export` and `list`.
const PAGE: u32 = 1_000;

#[derive(Args)]
pub struct OperatorFlags {
    #[arg(long)]
    pub id: Option<String>,
    /// admin, operator or auditor.
    #[arg(long)]
    pub role: Option<String>,
    /// SHA-256 (hex) of a client certificate's DER that stands for this operator (repeatable).
    #[arg(long = "certificate-sha256")]
    pub certificates: Vec<String>,
    /// Refuse this operator's tokens and certificates.
    #[arg(long)]
    pub disabled: bool,
    #[arg(long)]
    pub description: Option<String>,
}

impl FromFlags for OperatorFlags {
    fn to_spec(&self) -> Result<Value, String> {
        let (Some(id), Some(role)) = (&self.id, &self.role) else {
            return Err("give -f FILE, or --id and --role".into());
        };
        let mut spec = json!({ "id": id, "role": role });
        if !self.certificates.is_empty() {
            spec["certificates"] = json!(self.certificates);
        }
        if self.disabled {
            spec["disabled"] = json!(true);
        }
        if let Some(d) = &self.description {
            spec["description"] = json!(d);
        }
        Ok(spec)
    }
}

#[derive(Subcommand)]
pub enum TokenCmd {
    /// Make a bearer token for an operator; it is printed once, only its hash is stored.
    ///
    /// Example: raftgatectl token create alice --expires-in-hours 720
    Create {
        operator: String,
        #[arg(long, value_parser = clap::value_parser!(u64).range(1..=17_568))]
        expires_in_hours: Option<u64>,
    },
    #[command(after_help = "Example:\n  raftgatectl token list")]
    /// Token records (id, operator, created, expires); never the token.
    List {
        #[arg(long, default_value = "")]
        after: String,
        #[arg(long, default_value_t = 100)]
        limit: u32,
    },
    #[command(after_help = "Example:\n  raftgatectl token delete <TOKEN_ID>")]
    /// Delete a token: every node refuses it once the delete is applied there.
    Delete { id: String },
}

#[derive(Subcommand)]
pub enum AuditCmd {
    /// Records after a sequence number, oldest first.
    ///
    /// Example: raftgatectl audit list --after 1200 --limit 50
    List {
        #[arg(long, default_value_t = 0)]
        after: u64,
        #[arg(long, default_value_t = 100)]
        limit: u32,
        #[arg(long)]
        local: bool,
    },
    #[command(after_help = "Example:\n  raftgatectl audit tail -n 50 -o json")]
    /// The newest records.
    Tail {
        #[arg(short = 'n', long, default_value_t = 20, value_parser = clap::value_parser!(u32).range(1..=1_000))]
        lines: u32,
    },
    #[command(after_help = "Example:\n  raftgatectl audit verify --all-nodes")]
    /// Recompute the hash chain and report the first broken link (exit 1 if broken).
    ///
    /// Checks the node at --endpoint; with --all-nodes, every member, and
    /// that their chains end the same where their applied indexes agree.
    Verify {
        #[arg(long)]
        all_nodes: bool,
    },
    /// Every kept record as JSON lines, for a SIEM.
    ///
    /// Example: raftgatectl audit export --file audit.jsonl
    Export {
        /// Write here instead of stdout.
        #[arg(long, visible_alias = "out")]
        file: Option<PathBuf>,
        /// Only records after this sequence number (to export incrementally).
        #[arg(long, default_value_t = 0)]
        after: u64,
        /// Only records before this sequence number.
        #[arg(long)]
        before_seq: Option<u64>,
    },
    /// Export records through a seq to a new file, verify the file, then drop
    /// them from the trail (admin only). The prune's own record holds the
    /// file's SHA-256.
    ///
    /// Example: raftgatectl audit prune --through-seq 5000 --export audit-1-5000.jsonl
    ///          raftgatectl audit prune --retention --export audit-old.jsonl
    Prune {
        #[arg(long, conflicts_with = "retention")]
        through_seq: Option<u64>,
        /// Every record older than `audit retention` days.
        #[arg(long)]
        retention: bool,
        /// The file to write first (must not exist).
        #[arg(long)]
        export: PathBuf,
    },
    /// The audit retention setting (days), which `prune --retention` applies.
    #[command(subcommand)]
    Retention(crate::privacy::RetentionCmd),
}

pub async fn token_command(client: &mut Client, out: &Output, cmd: &TokenCmd) -> Result<(), String> {
    match cmd {
        TokenCmd::Create { operator, expires_in_hours } => {
            let req = pb::CreateAdminTokenRequest {
                operator: operator.clone(),
                expires_in_ms: expires_in_hours.map(|h| h * 3_600_000),
            };
            let t = client.create_admin_token(req).await.map_err(describe)?.into_inner();
            out.created_token(&t);
        }
        TokenCmd::List { after, limit } => {
            let req = pb::ListObjectsRequest { consistency: 0, after: after.clone(), limit: *limit };
            let reply = client.list_admin_tokens(req).await.map_err(describe)?.into_inner();
            out.objects(&reply.objects, &reply.next_after);
        }
        TokenCmd::Delete { id } => {
            let req = pb::DeleteObjectRequest { id: id.clone(), expected_revision: None };
            out.write(&client.delete_admin_token(req).await.map_err(describe)?.into_inner());
        }
    }
    Ok(())
}

pub async fn audit_command(client: &mut Client, out: &Output, cmd: &AuditCmd) -> Result<(), String> {
    match cmd {
        AuditCmd::List { after, limit, local } => {
            let consistency = if *local { pb::Consistency::Local } else { pb::Consistency::Linearizable } as i32;
            let req = pb::ListAuditRequest { consistency, after_seq: *after, limit: *limit, tail: 0 };
            let reply = client.list_audit(req).await.map_err(describe)?.into_inner();
            out.audit(&reply.records_json, reply.next_after_seq);
        }
        AuditCmd::Tail { lines } => {
            let req = pb::ListAuditRequest { consistency: 0, after_seq: 0, limit: *lines, tail: *lines };
            let reply = client.list_audit(req).await.map_err(describe)?.into_inner();
            out.audit(&reply.records_json, 0);
        }
        AuditCmd::Verify { all_nodes } => return verify(client, out, *all_nodes).await,
        AuditCmd::Prune { through_seq, retention, export } => {
            return crate::privacy::prune(client, out, *through_seq, *retention, export).await
        }
        AuditCmd::Retention(cmd) => return crate::privacy::retention(client, out, cmd).await,
        AuditCmd::Export { file, after, before_seq } => {
            let mut sink: Box<dyn std::io::Write> = match file {
                Some(p) => Box::new(std::io::BufWriter::new(
                    std::fs::File::create(p).map_err(|e| format!("cannot create {}: {e}", p.display()))?,
                )),
                None => Box::new(std::io::BufWriter::new(std::io::stdout().lock())),
            };
            let mut after = *after;
            let mut written = 0u64;
            loop {
                let req = pb::ListAuditRequest { consistency: 0, after_seq: after, limit: PAGE, tail: 0 };
                let reply = client.list_audit(req).await.map_err(describe)?.into_inner();
                let before = before_seq.unwrap_or(u64::MAX);
                let mut done = false;
                for r in &reply.records_json {
                    let seq = serde_json::from_str::<Value>(r).ok().and_then(|v| v["seq"].as_u64()).unwrap_or(0);
                    if seq >= before {
                        done = true;
                        break;
                    }
                    writeln!(sink, "{r}").map_err(|e| format!("writing the export: {e}"))?;
                    written += 1;
                }
                if done || reply.next_after_seq == 0 {
                    break;
                }
                after = reply.next_after_seq;
            }
            sink.flush().map_err(|e| format!("writing the export: {e}"))?;
            drop(sink);
            if let Some(p) = file {
                std::fs::File::open(p).and_then(|f| f.sync_all()).map_err(|e| format!("{}: {e}", p.display()))?;
            }
            if file.is_some() {
                eprintln!("exported {written} records");
            }
        }
    }
    Ok(())
}

async fn verify(client: &mut Client, out: &Output, all_nodes: bool) -> Result<(), String> {
    let mut reports = vec![client.verify_audit(pb::VerifyAuditRequest {}).await.map_err(describe)?.into_inner()];
    if all_nodes {
        let status = client.cluster_status(pb::ClusterStatusRequest {}).await.map_err(describe)?.into_inner();
        let asked = reports[0].node_id;
        for m in status.members.iter().filter_map(|m| m.member.clone()).filter(|m| m.id != asked) {
            let endpoint = crate::normalize(&m.admin_addr);
            let mut c = crate::connect(&endpoint, std::time::Duration::from_secs(5))
                .await
                .map_err(|e| format!("node {} at {}: {e}", m.id, m.admin_addr))?;
            let r = c
                .verify_audit(pb::VerifyAuditRequest {})
                .await
                .map_err(|s| format!("node {} at {}: {}", m.id, m.admin_addr, describe(s)))?;
            reports.push(r.into_inner());
        }
    }
    reports.sort_by_key(|r| r.node_id);
    out.audit_verify(&reports);
    if let Some(r) = reports.iter().find(|r| !r.intact) {
        return Err(format!("node {}: audit chain broken at record {}: {}", r.node_id, r.broken_seq, r.problem));
    }
    // Copies at the same applied index hold the same log, so the same chain.
    for a in &reports {
        for b in &reports {
            if a.applied_index == b.applied_index && a.head_hash != b.head_hash {
                return Err(format!(
                    "nodes {} and {} applied the same log (index {}) but their audit chains end differently: one copy was rewritten",
                    a.node_id, b.node_id, a.applied_index
                ));
            }
        }
    }
    Ok(())
}

pub async fn who_am_i(client: &mut Client, out: &Output) -> Result<(), String> {
    let r = client.who_am_i(pb::WhoAmIRequest {}).await.map_err(describe)?.into_inner();
    out.who_am_i(&r);
    Ok(())
}
