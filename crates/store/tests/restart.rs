//! What a store holds survives a restart, and a store that holds less than
//! its seal recorded refuses to open.

use openraft::storage::{RaftLogStorage, RaftLogStorageExt, RaftSnapshotBuilder, RaftStateMachine};
use openraft::{CommittedLeaderId, Entry, EntryPayload, LogId, RaftLogReader, Vote};
use raftgate_model::{Command, Proposal, SettingKey, SettingValue};
use raftgate_store::{open, FlushMode, Outcome, TypeConfig};

fn log_id(index: u64) -> LogId<u64> {
    LogId::new(CommittedLeaderId::new(3, 1), index)
}

fn put_entry(index: u64) -> Entry<TypeConfig> {
    let command = Command::PutSetting {
        key: SettingKey::parse(format!("k{index}")).unwrap(),
        value: SettingValue::parse(format!("v{index}")).unwrap(),
        expected_revision: None,
    };
    Entry {
        log_id: log_id(index),
        payload: EntryPayload::Normal(Proposal { leader_time_ms: 1_000 + index, command, actor: None }),
    }
}

const CACHE: u64 = 8 << 20;

#[tokio::test]
async fn vote_log_and_snapshot_survive_a_restart() {
    let dir = tempfile::tempdir().unwrap();
    let state_bytes = {
        let (mut log, mut sm) = open(dir.path(), CACHE, FlushMode::Async).await.unwrap();
        log.save_vote(&Vote::new_committed(3, 1)).await.unwrap();
        log.blocking_append((1..=5).map(put_entry)).await.unwrap();
        let outcomes = sm.apply((1..=5).map(put_entry)).await.unwrap();
        assert!(outcomes.iter().all(|o| matches!(o, Outcome::Applied { .. })));
        let snapshot = sm.build_snapshot().await.unwrap();
        assert_eq!(snapshot.meta.last_log_id, Some(log_id(5)));
        log.save_committed(Some(log_id(5))).await.unwrap();
        log.seal().await.unwrap();
        sm.read(|a| a.state.to_bytes())
    };
    let (mut log, mut sm) = open(dir.path(), CACHE, FlushMode::Async).await.unwrap();
    assert_eq!(log.read_vote().await.unwrap(), Some(Vote::new_committed(3, 1)));
    assert_eq!(log.read_committed().await.unwrap(), Some(log_id(5)));
    assert_eq!(log.try_get_log_entries(1..6).await.unwrap().len(), 5);
    let (applied, _) = sm.applied_state().await.unwrap();
    assert_eq!(applied, Some(log_id(5)));
    assert_eq!(*sm.subscribe().borrow(), 5, "the applied watch starts at the snapshot's index");
    assert_eq!(sm.read(|a| a.state.to_bytes()), state_bytes, "state restored from the snapshot byte for byte");
}

#[tokio::test]
async fn a_store_holding_less_than_its_seal_refuses_to_open() {
    let dir = tempfile::tempdir().unwrap();
    {
        let (mut log, _sm) = open(dir.path(), CACHE, FlushMode::Async).await.unwrap();
        log.save_vote(&Vote::new_committed(3, 1)).await.unwrap();
        log.blocking_append((1..=5).map(put_entry)).await.unwrap();
        log.save_committed(Some(log_id(5))).await.unwrap();
        log.seal().await.unwrap();
    }
    // A damaged store that sled would silently reopen as empty.
    std::fs::remove_dir_all(dir.path().join("raft")).unwrap();
    let err = open(dir.path(), CACHE, FlushMode::Async).await.err().expect("must refuse").to_string();
    assert!(err.contains("is damaged") && err.contains("store (raft/) is missing"), "{err}");
    assert!(!dir.path().join("raft").exists(), "a refused open creates nothing");
    // Nothing was written: the seal is intact and the check repeats.
    let err2 = open(dir.path(), CACHE, FlushMode::Async).await.err().expect("must still refuse").to_string();
    assert_eq!(err, err2);
}

#[tokio::test]
async fn an_emptied_store_is_caught_by_the_seal() {
    let dir = tempfile::tempdir().unwrap();
    {
        let (mut log, _sm) = open(dir.path(), CACHE, FlushMode::Async).await.unwrap();
        log.save_vote(&Vote::new_committed(3, 1)).await.unwrap();
        log.seal().await.unwrap();
    }
    // sled reopens a wiped store as empty: only the seal tells.
    std::fs::remove_dir_all(dir.path().join("raft")).unwrap();
    std::fs::create_dir(dir.path().join("raft")).unwrap();
    let err = open(dir.path(), CACHE, FlushMode::Async).await.err().expect("must refuse").to_string();
    assert!(err.contains("voted in term 3"), "{err}");
}

#[tokio::test]
async fn an_undecodable_seal_is_reported() {
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(dir.path().join("seal.json"), b"{not json").unwrap();
    let err = open(dir.path(), CACHE, FlushMode::Async).await.err().expect("must refuse").to_string();
    assert!(err.contains("seal.json does not decode"), "{err}");
}
