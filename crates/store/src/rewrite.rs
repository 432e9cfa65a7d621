//! Rewriting the store into fresh files, so that erased data leaves the disk.
//!
//! sled is log-structured: deleting a key (a purged log entry, the previous
//! snapshot) writes a tombstone, and the old bytes stay in their segment
//! until sled's own segment cleaning happens to reclaim it, which may be
//! never for a small store. After a forget or an audit prune, a node is
//! compacted (snapshot + log purge, see `ClusterNode::compact_log`) and
//! asks for a rewrite; at its next start, before anything opens the store,
//! every live key of every tree is copied into a new directory, which then
//! replaces the old one. Only live data is copied, so the erased bytes are
//! gone with the old files.
//!
//! Crash safety: the copy is built in `raft.rewrite/` and flushed before
//! the swap; the swap is two renames (`raft` → `raft.old`, `raft.rewrite`
//! → `raft`) and each state between them is recognised and finished at the
//! next start. The request marker goes last, so an interrupted rewrite is
//! simply done again.

use std::fs;
use std::io::Write as _;
use std::path::Path;

/// The file in the data dir that asks for a rewrite at the next start.
pub const REWRITE_MARKER: &str = "rewrite-requested";
const STORE: &str = "raft";
const NEW: &str = "raft.rewrite";
const OLD: &str = "raft.old";

/// Asks for the store in `data_dir` to be rewritten at the next start.
pub fn request_rewrite(data_dir: &Path) -> std::io::Result<()> {
    let path = data_dir.join(REWRITE_MARKER);
    let mut f = fs::File::create(&path)?;
    f.write_all(b"rewrite the store into fresh files at the next start (erased data)\n")?;
    f.sync_all()?;
    sync_dir(data_dir)
}

/// Whether a rewrite was asked for and not done yet.
pub fn rewrite_requested(data_dir: &Path) -> bool {
    data_dir.join(REWRITE_MARKER).exists()
}

fn sync_dir(dir: &Path) -> std::io::Result<()> {
    fs::File::open(dir)?.sync_all()
}

/// Finishes a swap a crash interrupted, then rewrites if asked. Returns
/// whether it rewrote.
pub(crate) fn rewrite_if_requested(data_dir: &Path, cache_capacity_bytes: u64) -> Result<bool, String> {
    let (store, new, old) = (data_dir.join(STORE), data_dir.join(NEW), data_dir.join(OLD));
    let io = |what: &str, e: std::io::Error| format!("{what}: {e}");
    if !store.exists() && old.exists() && new.exists() {
        // Crashed between the two renames: the copy is complete (it was flushed before).
        fs::rename(&new, &store).map_err(|e| io("finishing an interrupted rewrite", e))?;
        sync_dir(data_dir).map_err(|e| io("finishing an interrupted rewrite", e))?;
    }
    if store.exists() && old.exists() {
        fs::remove_dir_all(&old).map_err(|e| io("removing the store's old files", e))?;
    }
    if !rewrite_requested(data_dir) || !store.exists() {
        return Ok(false);
    }
    if new.exists() {
        fs::remove_dir_all(&new).map_err(|e| io("removing a partial rewrite", e))?;
    }
    copy_live(&store, &new, cache_capacity_bytes)?;
    fs::rename(&store, &old).map_err(|e| io("swapping in the rewritten store", e))?;
    fs::rename(&new, &store).map_err(|e| io("swapping in the rewritten store", e))?;
    sync_dir(data_dir).map_err(|e| io("swapping in the rewritten store", e))?;
    fs::remove_dir_all(&old).map_err(|e| io("removing the store's old files", e))?;
    fs::remove_file(data_dir.join(REWRITE_MARKER)).map_err(|e| io("removing the rewrite marker", e))?;
    sync_dir(data_dir).map_err(|e| io("removing the rewrite marker", e))?;
    Ok(true)
}

/// Copies every live key of every tree of the sled db at `from` into a new db at `to`.
fn copy_live(from: &Path, to: &Path, cache_capacity_bytes: u64) -> Result<(), String> {
    let e = |e: sled::Error| format!("rewriting the store: {e}");
    let src = sled::Config::new().path(from).cache_capacity(cache_capacity_bytes).open().map_err(e)?;
    let dst = sled::Config::new().path(to).cache_capacity(cache_capacity_bytes).open().map_err(e)?;
    for name in src.tree_names() {
        let (s, d) = (src.open_tree(&name).map_err(e)?, dst.open_tree(&name).map_err(e)?);
        for kv in s.iter() {
            let (k, v) = kv.map_err(e)?;
            d.insert(k, v).map_err(e)?;
        }
    }
    dst.flush().map_err(e)?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn raw_contains(dir: &Path, needle: &[u8]) -> bool {
        let mut stack = vec![dir.to_path_buf()];
        while let Some(d) = stack.pop() {
            for entry in fs::read_dir(&d).unwrap() {
                let p = entry.unwrap().path();
                if p.is_dir() {
                    stack.push(p);
                } else if fs::read(&p).unwrap().windows(needle.len()).any(|w| w == needle) {
                    return true;
                }
            }
        }
        false
    }

    #[test]
    fn a_rewrite_keeps_live_keys_and_drops_deleted_bytes() {
        let dir = tempfile::tempdir().unwrap();
        {
            let db = sled::open(dir.path().join(STORE)).unwrap();
            let t = db.open_tree("snapshot").unwrap();
            t.insert(b"data", b"holds secret-consumer-id".to_vec()).unwrap();
            db.flush().unwrap();
            t.insert(b"data", b"holds nothing personal".to_vec()).unwrap();
            db.open_tree("raft_log").unwrap().insert(b"k", b"v".to_vec()).unwrap();
            db.flush().unwrap();
        }
        assert!(raw_contains(dir.path(), b"secret-consumer-id"), "sled keeps the overwritten bytes");
        assert!(!rewrite_if_requested(dir.path(), 1 << 20).unwrap(), "nothing asked");
        request_rewrite(dir.path()).unwrap();
        assert!(rewrite_if_requested(dir.path(), 1 << 20).unwrap());
        assert!(!rewrite_requested(dir.path()));
        assert!(!raw_contains(dir.path(), b"secret-consumer-id"));
        let db = sled::open(dir.path().join(STORE)).unwrap();
        assert_eq!(&*db.open_tree("snapshot").unwrap().get(b"data").unwrap().unwrap(), b"holds nothing personal");
        assert_eq!(&*db.open_tree("raft_log").unwrap().get(b"k").unwrap().unwrap(), b"v");
    }

    #[test]
    fn an_interrupted_swap_is_finished_at_the_next_start() {
        let dir = tempfile::tempdir().unwrap();
        {
            let db = sled::open(dir.path().join(NEW)).unwrap();
            db.insert(b"k", b"v".to_vec()).unwrap();
            db.flush().unwrap();
        }
        fs::create_dir(dir.path().join(OLD)).unwrap();
        request_rewrite(dir.path()).unwrap();
        // The crash came after `raft` was renamed away: the copy becomes the store.
        rewrite_if_requested(dir.path(), 1 << 20).unwrap();
        assert!(!dir.path().join(OLD).exists() && !dir.path().join(NEW).exists());
        let db = sled::open(dir.path().join(STORE)).unwrap();
        assert_eq!(&*db.get(b"k").unwrap().unwrap(), b"v");
    }
}
