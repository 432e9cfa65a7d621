//! `raftgatectl snapshot save|inspect`: backups of the cluster's state.
//!
//! `save` streams a consistent snapshot from the leader (any node's
//! endpoint works: a follower relays the leader's stream) into
//! `FILE.partial`, fsyncs it, checks it (header, length, SHA-256), and only
//! then renames it to FILE. `inspect` reads a file offline and prints its
//! header and what the state holds. The format is in docs/backup.md.

use std::io::Write as _;
use std::path::{Path, PathBuf};

use clap::Subcommand;
use raftgate_model::backup::{self, SnapshotHeader, StateCounts, MAX_BODY_BYTES, MAX_HEADER_BYTES};
use raftgate_proto::admin as pb;
use serde_json::json;

use crate::{describe, Client};

/// Most bytes a snapshot stream may deliver (header, body and slack).
const MAX_STREAM_BYTES: u64 = MAX_BODY_BYTES + MAX_HEADER_BYTES as u64 + 4_096;

#[derive(Subcommand)]
pub enum SnapshotCmd {
    #[command(
        after_help = "Examples:\n  raftgatectl snapshot save backup-$(date +%F).rgsnap\n  raftgatectl snapshot save latest.rgsnap --force"
    )]
    /// Save a consistent snapshot of the cluster's state (taken on the leader) to FILE (admin only).
    Save {
        file: PathBuf,
        /// Replace FILE if it exists.
        #[arg(long)]
        force: bool,
    },
    #[command(after_help = "Example:\n  raftgatectl snapshot inspect backup.rgsnap -o json")]
    /// Check a snapshot file (offline) and print its header and what it holds.
    Inspect { file: PathBuf },
}

/// What `save` refuses before connecting.
pub fn check_save(cmd: &SnapshotCmd) -> Result<(), String> {
    if let SnapshotCmd::Save { file, force: false } = cmd {
        if file.exists() {
            return Err(format!("{} exists; pass --force to replace it", file.display()));
        }
    }
    Ok(())
}

fn partial_path(file: &Path) -> PathBuf {
    let mut p = file.as_os_str().to_os_string();
    p.push(".partial");
    PathBuf::from(p)
}

fn header_json(h: &SnapshotHeader, counts: Option<&StateCounts>) -> serde_json::Value {
    json!({
        "format_version": backup::FORMAT_VERSION,
        "cluster_name": h.cluster_name,
        "last_applied": {"term": h.last_applied.term, "index": h.last_applied.index},
        "membership": h.membership,
        "created_ms": h.created_ms,
        "created_by": h.created_by,
        "body_bytes": h.body_bytes,
        "body_sha256": h.body_sha256,
        "counts": counts,
    })
}

fn print_header(h: &SnapshotHeader) {
    println!("cluster        {}", h.cluster_name);
    println!("format         v{}", backup::FORMAT_VERSION);
    println!("last applied   index {} (term {})", h.last_applied.index, h.last_applied.term);
    println!(
        "membership     voters {:?} learners {:?} (entry {})",
        h.membership.voters,
        h.membership.learners,
        h.membership.log_index.map_or("-".into(), |i| i.to_string())
    );
    println!("created        {} ms since the epoch, by node {}", h.created_ms, h.created_by);
    println!("body           {} bytes, sha256 {}", h.body_bytes, h.body_sha256);
}

/// Streams the snapshot into FILE.partial, checks it and renames it to FILE.
pub async fn save(client: &mut Client, file: &Path, json_out: bool) -> Result<(), String> {
    let partial = partial_path(file);
    let result = receive(client, &partial).await;
    let checked = result.and_then(|()| {
        let bytes = std::fs::read(&partial).map_err(|e| format!("reading back {}: {e}", partial.display()))?;
        let (header, _) = backup::verify(&bytes).map_err(|e| format!("the received snapshot is bad: {e}"))?;
        Ok((header, bytes.len()))
    });
    let (header, size) = match checked {
        Ok(v) => v,
        Err(e) => {
            let _ = std::fs::remove_file(&partial);
            return Err(e);
        }
    };
    std::fs::rename(&partial, file)
        .map_err(|e| format!("renaming {} to {}: {e}", partial.display(), file.display()))?;
    let dir = file.parent().filter(|p| !p.as_os_str().is_empty()).unwrap_or(Path::new("."));
    if let Ok(d) = std::fs::File::open(dir) {
        let _ = d.sync_all();
    }
    if json_out {
        let mut v = header_json(&header, None);
        v["file"] = json!(file.display().to_string());
        v["file_bytes"] = json!(size);
        println!("{}", serde_json::to_string_pretty(&v).expect("JSON values serialize"));
    } else {
        println!("saved {} ({size} bytes)", file.display());
        print_header(&header);
    }
    Ok(())
}

async fn receive(client: &mut Client, partial: &Path) -> Result<(), String> {
    let mut stream = client.save_snapshot(pb::SaveSnapshotRequest {}).await.map_err(describe)?.into_inner();
    let mut out = std::fs::File::create(partial).map_err(|e| format!("creating {}: {e}", partial.display()))?;
    let mut total: u64 = 0;
    while let Some(chunk) = stream.message().await.map_err(describe)? {
        total += chunk.data.len() as u64;
        if total > MAX_STREAM_BYTES {
            return Err(format!("the snapshot stream exceeds {MAX_STREAM_BYTES} bytes; refusing it"));
        }
        out.write_all(&chunk.data).map_err(|e| format!("writing {}: {e}", partial.display()))?;
    }
    out.sync_all().map_err(|e| format!("syncing {}: {e}", partial.display()))
}

/// Checks FILE offline and prints its header and counts.
pub fn inspect(file: &Path, json_out: bool) -> Result<(), String> {
    let bytes = std::fs::read(file).map_err(|e| format!("cannot read {}: {e}", file.display()))?;
    let (header, state) = backup::decode(&bytes).map_err(|e| format!("{}: {e}", file.display()))?;
    let counts = StateCounts::of(&state);
    let v = state.audit().verify();
    let audit = match &v.first_broken {
        None => format!("ok ({} records checked)", v.checked),
        Some((seq, problem)) => format!("BROKEN at record {seq}: {problem}"),
    };
    if json_out {
        let mut v = header_json(&header, Some(&counts));
        v["checksum"] = json!("ok");
        v["audit_chain"] = json!(audit);
        println!("{}", serde_json::to_string_pretty(&v).expect("JSON values serialize"));
    } else {
        println!("{}: checksum ok", file.display());
        print_header(&header);
        println!("state          {}", counts.summary());
        println!("audit chain    {audit}");
    }
    Ok(())
}
