//! `raftgatectl key|revoke|unrevoke|revocation …`: credentials and their revocation.
//!
//! `revoke … --wait` returns once every member reports an applied index at
//! or past the revocation (each node's own NodeStatus: the leader's
//! replication metrics say replicated, not applied), or when the wait runs
//! out; it prints who confirmed and when, who did not, and the time by
//! which the revocation is in force everywhere anyway (commit + the
//! staleness bound + the largest one-way delay: a node that has not applied
//! it by then fails closed on authenticated routes).

use std::time::{Duration, Instant};

use clap::{Args, Subcommand};
use raftgate_proto::admin as pb;
use serde_json::{json, Value};

use crate::output::Output;
use crate::{connect, describe, normalize};

/// How often `--wait` asks each member for its applied index.
const WAIT_POLL: Duration = Duration::from_millis(5);

#[derive(Subcommand)]
pub enum KeyCmd {
    #[command(after_help = "Example:\n  raftgatectl key create --consumer acme --expires 90d")]
    /// Make a new API key for a consumer; the key is printed once and only its keyed hash is stored.
    Create {
        #[arg(long)]
        consumer: String,
        /// Lifetime, e.g. `90d`, `12h`, `30m`, `45s`; default: no expiry.
        #[arg(long)]
        expires: Option<String>,
    },
    #[command(after_help = "Example:\n  raftgatectl key rotate <KEY_ID> --overlap 24h")]
    /// Make a new key that replaces KEY_ID; both work during the overlap.
    Rotate {
        key_id: String,
        /// How long the old key keeps working, e.g. `24h` (default `1h`).
        #[arg(long, default_value = "1h")]
        overlap: String,
        #[arg(long)]
        expires: Option<String>,
    },
    #[command(after_help = "Example:\n  raftgatectl key list --consumer acme")]
    /// List key records (id, consumer, created, expires); never the key.
    List {
        #[arg(long)]
        consumer: Option<String>,
        #[arg(long)]
        local: bool,
        #[arg(long, default_value = "")]
        after: String,
        #[arg(long, default_value_t = 100)]
        limit: u32,
    },
    #[command(after_help = "Example:\n  raftgatectl key delete <KEY_ID>")]
    /// Delete a key (it stops working as soon as each node applies the delete; `revoke key` is the instant, audited way).
    Delete { key_id: String },
}

#[derive(Subcommand, Clone)]
pub enum TargetCmd {
    #[command(after_help = "Example:\n  raftgatectl revoke token --issuer corp --jti 7f1c… --until 1767225600 --wait")]
    /// One JWT by its `jti`; `--until` is the token's `exp` (Unix seconds).
    Token {
        #[arg(long)]
        issuer: String,
        #[arg(long)]
        jti: String,
        #[arg(long)]
        until: u64,
    },
    #[command(after_help = "Example:\n  raftgatectl revoke key <KEY_ID> --reason leaked --wait")]
    /// One API key by id.
    Key { key_id: String },
    #[command(after_help = "Example:\n  raftgatectl revoke consumer acme --wait")]
    /// Every credential of a consumer issued until now.
    Consumer { consumer: String },
    #[command(after_help = "Example:\n  raftgatectl revoke cert 9f86d081884c7d65… --wait")]
    /// A client certificate by SHA-256 fingerprint (hex).
    Cert { sha256: String },
    #[command(after_help = "Example:\n  raftgatectl revoke issuer-key --issuer corp --kid 2026-01")]
    /// Every token signed with an issuer's key `kid`.
    IssuerKey {
        #[arg(long)]
        issuer: String,
        #[arg(long)]
        kid: String,
    },
}

impl TargetCmd {
    fn target(&self) -> (Value, Option<u64>) {
        match self {
            TargetCmd::Token { issuer, jti, until } => {
                (json!({"kind": "token", "issuer": issuer, "jti": jti}), Some(until.saturating_mul(1_000)))
            }
            TargetCmd::Key { key_id } => (json!({"kind": "api_key", "id": key_id}), None),
            TargetCmd::Consumer { consumer } => (json!({"kind": "consumer", "id": consumer}), None),
            TargetCmd::Cert { sha256 } => (json!({"kind": "certificate", "sha256": sha256.to_ascii_lowercase()}), None),
            TargetCmd::IssuerKey { issuer, kid } => (json!({"kind": "issuer_key", "issuer": issuer, "kid": kid}), None),
        }
    }
}

#[derive(Args)]
pub struct RevokeArgs {
    #[command(subcommand)]
    pub target: TargetCmd,
    /// Why (kept with the revocation).
    #[arg(long, global = true, default_value = "")]
    pub reason: String,
    /// Wait until every member has applied the revocation, and report who did.
    #[arg(long, global = true)]
    pub wait: bool,
    /// How long --wait waits for the members.
    #[arg(long, global = true, default_value_t = 10_000, value_parser = clap::value_parser!(u64).range(1..=600_000))]
    pub wait_timeout_ms: u64,
}

/// Parses `90d`, `12h`, `30m`, `45s` or `1500ms` into milliseconds.
pub fn parse_duration(s: &str) -> Result<u64, String> {
    let split = s.find(|c: char| !c.is_ascii_digit()).unwrap_or(s.len());
    let (n, unit) = s.split_at(split);
    let n: u64 = n.parse().map_err(|_| format!("{s:?}: expected a number and a unit (d, h, m, s, ms)"))?;
    let factor = match unit {
        "d" => 86_400_000,
        "h" => 3_600_000,
        "m" => 60_000,
        "s" => 1_000,
        "ms" => 1,
        _ => return Err(format!("{s:?}: the unit must be d, h, m, s or ms")),
    };
    n.checked_mul(factor).filter(|v| *v > 0).ok_or_else(|| format!("{s:?}: out of range"))
}

pub async fn key_command(client: &mut crate::Client, out: &Output, cmd: &KeyCmd) -> Result<(), String> {
    let consistency = |local: bool| if local { pb::Consistency::Local } else { pb::Consistency::Linearizable } as i32;
    match cmd {
        KeyCmd::Create { consumer, expires } => {
            let expires_in_ms = expires.as_deref().map(parse_duration).transpose()?;
            let req = pb::CreateApiKeyRequest { consumer: consumer.clone(), expires_in_ms, ..Default::default() };
            let reply = client.create_api_key(req).await.map_err(describe)?.into_inner();
            out.created_key(&reply);
        }
        KeyCmd::Rotate { key_id, overlap, expires } => {
            let req = pb::CreateApiKeyRequest {
                consumer: String::new(),
                expires_in_ms: expires.as_deref().map(parse_duration).transpose()?,
                rotates: key_id.clone(),
                overlap_ms: parse_duration(overlap)?,
            };
            let reply = client.create_api_key(req).await.map_err(describe)?.into_inner();
            out.created_key(&reply);
        }
        KeyCmd::List { consumer, local, after, limit } => {
            let req = pb::ListApiKeysRequest {
                consistency: consistency(*local),
                consumer: consumer.clone().unwrap_or_default(),
                after: after.clone(),
                limit: *limit,
            };
            let reply = client.list_api_keys(req).await.map_err(describe)?.into_inner();
            out.objects(&reply.objects, &reply.next_after);
        }
        KeyCmd::Delete { key_id } => {
            let req = pb::DeleteObjectRequest { id: key_id.clone(), expected_revision: None };
            out.write(&client.delete_api_key(req).await.map_err(describe)?.into_inner());
        }
    }
    Ok(())
}

pub async fn unrevoke(client: &mut crate::Client, out: &Output, target: &TargetCmd) -> Result<(), String> {
    let (target, _) = target.target();
    let req = pb::UnrevokeRequest { target_json: target.to_string() };
    out.write(&client.unrevoke(req).await.map_err(describe)?.into_inner());
    Ok(())
}

pub async fn revoke(
    client: &mut crate::Client,
    out: &Output,
    args: &RevokeArgs,
    timeout: Duration,
) -> Result<(), String> {
    let (target, until_ms) = args.target.target();
    let req = pb::RevokeRequest { target_json: target.to_string(), until_ms, reason: args.reason.clone() };
    if !args.wait {
        out.write(&client.revoke(req).await.map_err(describe)?.into_inner());
        return Ok(());
    }
    // Connect to every member first, so the times below are the revocation's, not connection setup.
    let status = client.cluster_status(pb::ClusterStatusRequest {}).await.map_err(describe)?.into_inner();
    let wait = Duration::from_millis(args.wait_timeout_ms);
    let mut members = Vec::new();
    for m in status.members.iter().filter_map(|m| m.member.clone()) {
        let conn = connect(&normalize(&m.admin_addr), timeout.min(wait)).await;
        members.push((m, conn));
    }
    let started = Instant::now();
    let written = client.revoke(req).await.map_err(describe)?.into_inner();
    let committed = started.elapsed();
    let mut polls = Vec::new();
    for (m, conn) in members {
        let index = written.log_index;
        polls.push(tokio::spawn(async move {
            let result = match conn {
                Ok(c) => confirm_applied(c, index, started, wait).await,
                Err(e) => Err(e),
            };
            (m, result)
        }));
    }
    let mut confirmations = Vec::new();
    for p in polls {
        if let Ok(c) = p.await {
            confirmations.push(c);
        }
    }
    confirmations.sort_by_key(|(m, _)| m.id);
    let bound_ms = confirmations.iter().filter_map(|(_, r)| r.as_ref().ok().and_then(|c| c.bound_ms)).max();
    out.revocation_wait(&written, committed, &confirmations, bound_ms);
    if confirmations.iter().any(|(_, r)| r.is_err()) {
        return Err("the revocation is committed, but not every member confirmed it in time (see above)".into());
    }
    Ok(())
}

/// A member's confirmation: when it reported the revocation applied.
pub struct Confirmed {
    /// From the revoke call.
    pub after: Duration,
    /// The member's staleness bound plus one-way delay, if it reports one.
    pub bound_ms: Option<u64>,
}

async fn confirm_applied(
    mut client: crate::Client,
    index: u64,
    started: Instant,
    wait: Duration,
) -> Result<Confirmed, String> {
    let deadline = started + wait;
    loop {
        match client.node_status(pb::NodeStatusRequest {}).await {
            Ok(r) => {
                let s = r.into_inner();
                if s.applied_index.is_some_and(|a| a >= index) {
                    return Ok(Confirmed { after: started.elapsed(), bound_ms: s.revocation_bound_ms });
                }
            }
            Err(e) if Instant::now() >= deadline => return Err(describe(e)),
            Err(_) => {}
        }
        if Instant::now() >= deadline {
            return Err(format!("not applied within {} ms", wait.as_millis()));
        }
        tokio::time::sleep(WAIT_POLL).await;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn durations_take_a_unit() {
        assert_eq!(parse_duration("90d").unwrap(), 90 * 86_400_000);
        assert_eq!(parse_duration("1500ms").unwrap(), 1_500);
        assert_eq!(parse_duration("2h").unwrap(), 7_200_000);
        for bad in ["", "10", "h", "0s", "5y", "-1s"] {
            assert!(parse_duration(bad).is_err(), "{bad}");
        }
    }
}
