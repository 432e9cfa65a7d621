//! A seal: a small file beside the store recording a lower bound of what the
//! store holds (the vote's term and the committed log index).
//!
//! sled recovers a damaged or truncated file silently, as an empty or shorter
//! store; a Raft node that forgets its vote or acknowledged entries breaks
//! the cluster's guarantees, and with a bootstrap list it would even found a
//! second cluster. So the node writes the seal after each flush at a steady
//! interval and at shutdown, and refuses to open a store that holds less than
//! its seal says it did.

use std::path::{Path, PathBuf};

use openraft::{LogId, Vote};
use serde::{Deserialize, Serialize};

const SEAL_FILE: &str = "seal.json";

#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Seal {
    pub vote_term: u64,
    /// Index of the last committed entry (None: nothing committed).
    pub committed_index: Option<u64>,
}

pub fn path(dir: &Path) -> PathBuf {
    dir.join(SEAL_FILE)
}

pub fn read(dir: &Path) -> Result<Option<Seal>, String> {
    match std::fs::read(path(dir)) {
        Ok(bytes) => serde_json::from_slice(&bytes).map(Some).map_err(|e| format!("{SEAL_FILE} does not decode: {e}")),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(None),
        Err(e) => Err(format!("cannot read {SEAL_FILE}: {e}")),
    }
}

/// Writes the seal atomically (temporary file, fsync, rename, fsync dir).
pub fn write(dir: &Path, seal: &Seal) -> std::io::Result<()> {
    use std::io::Write as _;
    let tmp = dir.join(format!("{SEAL_FILE}.tmp"));
    let mut f = std::fs::File::create(&tmp)?;
    f.write_all(&serde_json::to_vec(seal).expect("seal serializes"))?;
    f.sync_all()?;
    std::fs::rename(&tmp, path(dir))?;
    std::fs::File::open(dir)?.sync_all()
}

/// Checks that the store holds at least what the seal recorded.
pub fn check(seal: &Seal, vote: Option<&Vote<u64>>, last_log: Option<LogId<u64>>) -> Result<(), String> {
    let term = vote.map_or(0, |v| v.leader_id().term);
    if term < seal.vote_term {
        return Err(format!("its vote is for term {term}, but it had voted in term {} before", seal.vote_term));
    }
    let last = last_log.map(|l| l.index);
    if last < seal.committed_index {
        return Err(format!(
            "its log ends at index {}, but it had committed index {} before",
            last.map_or("(empty)".to_string(), |i| i.to_string()),
            seal.committed_index.unwrap_or(0)
        ));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use openraft::CommittedLeaderId;

    use super::*;

    #[test]
    fn a_log_shorter_than_the_committed_index_fails_the_check() {
        let seal = Seal { vote_term: 2, committed_index: Some(10) };
        let vote = Vote::new_committed(2, 1);
        let at = |i| Some(LogId::new(CommittedLeaderId::new(2, 1), i));
        assert!(check(&seal, Some(&vote), at(10)).is_ok());
        assert!(check(&seal, Some(&Vote::new(3, 2)), at(12)).is_ok());
        let err = check(&seal, Some(&vote), at(7)).unwrap_err();
        assert!(err.contains("ends at index 7") && err.contains("committed index 10"), "{err}");
        assert!(check(&seal, None, at(10)).unwrap_err().contains("term 0"));
    }
}
