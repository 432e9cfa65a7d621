//! The offline subcommands around backups: `raftgate restore` (seed an empty
//! data dir from a snapshot file), `raftgate recover` (re-form a one-voter
//! cluster from a surviving member's own data dir) and the hidden
//! `raftgate gen-snapshot` (a synthetic snapshot for the restore benches).
//! The node must be stopped; each prints what it did and what comes next.
//! docs/backup.md is the procedure.

use std::path::Path;
use std::time::{SystemTime, UNIX_EPOCH};

use raftgate_cluster::backup::{self, BackupError, SeedTarget};
use raftgate_model::backup::{AppliedLogId, SnapshotHeader, SnapshotMembership, StateCounts};
use raftgate_model::{Command, NodeInfo, State};

use crate::config::NodeConfig;

/// The flag that makes `recover` act.
pub const CONFIRM_FLAG: &str = "--i-accept-losing-writes-not-on-this-node";

/// A refusal (bad input; exit 2, nothing written) or a failure (exit 1).
pub struct Failed {
    pub message: String,
    pub code: u8,
}

impl From<BackupError> for Failed {
    fn from(e: BackupError) -> Self {
        let code = match e {
            BackupError::Io { .. } | BackupError::Store(_) => 1,
            _ => 2,
        };
        Self { message: e.to_string(), code }
    }
}

fn now_ms() -> u64 {
    SystemTime::now().duration_since(UNIX_EPOCH).map_or(0, |d| d.as_millis() as u64)
}

fn target(config: &NodeConfig) -> SeedTarget<'_> {
    SeedTarget {
        data_dir: &config.node.data_dir,
        node_id: config.node.id,
        info: config.node_info(),
        cluster_name: &config.node.cluster_name,
    }
}

fn next_steps(config: &NodeConfig) -> String {
    format!(
        "next:\n  1. start it: raftgate serve --config <this config> (it elects itself leader of a one-voter cluster)\n  \
         2. add members with EMPTY data dirs: raftgatectl --endpoint {} cluster add-learner --id … , then cluster promote <id>\n  \
         never start a member of the old cluster against this one: wipe its data dir first",
        config.node_info().admin_addr
    )
}

/// `raftgate restore`: seeds this node's empty data dir from `snapshot`.
pub async fn restore(config: &NodeConfig, snapshot: &Path) -> Result<(), Failed> {
    let seeded = backup::restore(&target(config), snapshot).await?;
    println!(
        "restored {} into {}: cluster {:?}, last applied index {} (term {})\n  state: {}\n  membership: node {} is the only voter\n{}",
        snapshot.display(),
        config.node.data_dir.display(),
        config.node.cluster_name,
        seeded.last_applied.index,
        seeded.last_applied.term,
        seeded.counts.summary(),
        config.node.id,
        next_steps(config)
    );
    Ok(())
}

/// `raftgate recover --force-new-cluster`: without `confirmed`, explains and refuses.
pub async fn recover(config: &NodeConfig, confirmed: bool) -> Result<(), Failed> {
    let dir = config.node.data_dir.display().to_string();
    backup::check_recoverable(&config.node.data_dir, false)?;
    if !confirmed {
        return Err(Failed {
            message: format!(
                "refusing without {CONFIRM_FLAG}.\n\
                 recover would, with this node ({}) stopped:\n  \
                 - read its data dir {dir}: its last snapshot and every entry its log holds, applied in order;\n  \
                 - make node {} the only voter of a new one-voter cluster {:?} holding that state;\n  \
                 - move the old data dir aside to {dir}.before-recover-<ms> (kept, not deleted).\n\
                 Writes the lost majority committed that never reached this node are lost for good.\n\
                 Use it only when a quorum of voters is gone for good; stop every other member first.",
                config.node.id, config.node.id, config.node.cluster_name
            ),
            code: 2,
        });
    }
    let r = backup::recover(&target(config), now_ms()).await?;
    let last = r.seeded.last_applied.index;
    let known = r.known_committed.map_or("none".to_string(), |c| c.to_string());
    let beyond = r.known_committed.map_or(last + 1, |c| last.saturating_sub(c));
    println!(
        "recovered node {} as a one-voter cluster {:?}\n  kept: last applied index {last} (term {}): snapshot up to {}, then {} log entries applied\n  \
         state: {}\n  this node knew entries up to index {known} as committed; {beyond} entries after that were in its log and are kept \
         (a new leader with this log commits them too; some may never have been acknowledged)\n  \
         may be lost: any write the old cluster committed after index {last} that never reached this node\n  \
         old data dir kept at {}\n{}",
        config.node.id,
        config.node.cluster_name,
        r.seeded.last_applied.term,
        r.snapshot_index.map_or("(none)".to_string(), |i| i.to_string()),
        r.entries_applied,
        r.seeded.counts.summary(),
        r.kept_at.display(),
        next_steps(config)
    );
    Ok(())
}

/// What `gen-snapshot` builds.
pub struct Synthetic {
    pub routes: usize,
    pub revocations: usize,
    pub consumers: usize,
    pub cluster_name: String,
}

fn command(v: serde_json::Value) -> Command {
    serde_json::from_value(v).expect("generator commands are well-formed")
}

/// Builds a state through the model's own `apply`: one upstream, `routes`
/// routes, `consumers` consumers with an API key each, one JWT issuer and
/// `revocations` token revocations that live 300 days (the longest the model keeps is 366).
pub fn synthetic_state(spec: &Synthetic) -> Result<(State, u64), String> {
    let t = now_ms();
    let mut state = State::default();
    let mut applied = 0u64;
    let mut apply = |state: &mut State, c: Command| -> Result<(), String> {
        applied += 1;
        state.apply(t, &c).map(|_| ()).map_err(|r| format!("command {applied} refused: {r}"))
    };
    apply(
        &mut state,
        command(
            serde_json::json!({"type": "put_upstream", "upstream": {"id": "u", "targets": [{"addr": "127.0.0.1:9"}]}}),
        ),
    )?;
    apply(
        &mut state,
        command(
            serde_json::json!({"type": "put_issuer", "issuer": {"id": "idp", "issuer": "https://idp.example/", "algorithms": ["HS256"], "secret": "env:RAFTGATE_GEN_SECRET"}}),
        ),
    )?;
    for i in 0..spec.routes {
        let route =
            serde_json::json!({"id": format!("r-{i}"), "upstream": "u", "paths": [{"exact": format!("/r/{i}")}]});
        apply(&mut state, command(serde_json::json!({"type": "put_route", "route": route})))?;
    }
    for i in 0..spec.consumers {
        apply(&mut state, command(serde_json::json!({"type": "put_consumer", "consumer": {"id": format!("c-{i}")}})))?;
        let hash = raftgate_model::backup::sha256_hex(format!("key-{i}").as_bytes());
        apply(
            &mut state,
            command(
                serde_json::json!({"type": "create_api_key", "id": format!("k-{i}"), "consumer": format!("c-{i}"), "hash": hash}),
            ),
        )?;
    }
    let until = t + 300 * 86_400_000;
    for i in 0..spec.revocations {
        let jti = format!("{i:08x}-gen-{:012x}", (i as u64).wrapping_mul(2_654_435_761));
        apply(
            &mut state,
            command(
                serde_json::json!({"type": "revoke", "target": {"kind": "token", "issuer": "idp", "jti": jti}, "until_ms": until}),
            ),
        )?;
    }
    Ok((state, applied))
}

/// `raftgate gen-snapshot`: writes a synthetic snapshot file to `out`.
pub fn generate(spec: &Synthetic, out: &Path) -> Result<StateCounts, String> {
    let (state, applied) = synthetic_state(spec)?;
    let header = SnapshotHeader {
        cluster_name: spec.cluster_name.clone(),
        // Index 0 would be the membership entry of a real cluster; the
        // commands follow it, all in term 1.
        last_applied: AppliedLogId { term: 1, index: applied },
        membership: SnapshotMembership {
            log_index: Some(0),
            voters: vec![1],
            learners: vec![],
            nodes: [(1, NodeInfo::default())].into_iter().collect(),
        },
        created_ms: now_ms(),
        created_by: 0,
        body_bytes: 0,
        body_sha256: String::new(),
    };
    let file = raftgate_model::backup::encode(header, &state.to_bytes());
    write_atomically(out, &file).map_err(|e| format!("writing {}: {e}", out.display()))?;
    Ok(StateCounts::of(&state))
}

/// Writes `out.partial`, fsyncs it, renames it to `out`.
fn write_atomically(out: &Path, bytes: &[u8]) -> std::io::Result<()> {
    use std::io::Write as _;
    let mut partial = out.as_os_str().to_os_string();
    partial.push(".partial");
    let mut f = std::fs::File::create(&partial)?;
    f.write_all(bytes)?;
    f.sync_all()?;
    std::fs::rename(&partial, out)
}
