//! A seeded store opens as openraft expects after a snapshot install and a
//! purge, and a recovery read applies every entry the log holds.

use std::collections::{BTreeMap, BTreeSet};

use openraft::storage::{RaftLogStorage, RaftLogStorageExt, RaftStateMachine};
use openraft::{CommittedLeaderId, Entry, EntryPayload, LogId, Membership, StoredMembership, Vote};
use raftgate_model::{Command, NodeInfo, Proposal, SettingKey, SettingValue, State};
use raftgate_store::seed::{holds_data, read_for_recovery, seed, Seed};
use raftgate_store::{open, FlushMode};

const CACHE: u64 = 8 << 20;

fn log_id(term: u64, index: u64) -> LogId<u64> {
    LogId::new(CommittedLeaderId::new(term, 1), index)
}

fn put(term: u64, index: u64) -> Entry<raftgate_store::TypeConfig> {
    let command = Command::PutSetting {
        key: SettingKey::parse(format!("k{index}")).unwrap(),
        value: SettingValue::parse("v").unwrap(),
        expected_revision: None,
    };
    Entry {
        log_id: log_id(term, index),
        payload: EntryPayload::Normal(Proposal { leader_time_ms: 1_000, command, actor: None }),
    }
}

fn one_voter(at: LogId<u64>) -> StoredMembership<u64, NodeInfo> {
    let m = Membership::new(vec![BTreeSet::from([7])], BTreeMap::from([(7, NodeInfo::default())]));
    StoredMembership::new(Some(at), m)
}

#[tokio::test]
async fn a_seeded_store_starts_from_its_snapshot_with_the_log_purged_to_it() {
    let dir = tempfile::tempdir().unwrap();
    let mut state = State::default();
    state.apply(1, &put(4, 1).payload_command()).unwrap();
    let at = log_id(4, 41);
    let s = Seed {
        state: state.to_bytes(),
        last_applied: at,
        membership: one_voter(at),
        vote: Vote::new(4, 7),
        snapshot_id: "seeded-4-41".into(),
    };
    assert!(!holds_data(dir.path(), CACHE).unwrap());
    seed(dir.path(), CACHE, FlushMode::Blocking, &s).await.unwrap();
    assert!(seed(dir.path(), CACHE, FlushMode::Blocking, &s).await.is_err(), "never seeds over a store");
    assert!(holds_data(dir.path(), CACHE).unwrap());

    let (mut log, mut sm) = open(dir.path(), CACHE, FlushMode::Blocking).await.unwrap();
    let ls = log.get_log_state().await.unwrap();
    assert_eq!((ls.last_purged_log_id, ls.last_log_id), (Some(at), Some(at)));
    assert_eq!(log.read_vote().await.unwrap(), Some(Vote::new(4, 7)));
    assert_eq!(log.read_committed().await.unwrap(), Some(at));
    let (applied, membership) = sm.applied_state().await.unwrap();
    assert_eq!(applied, Some(at));
    assert_eq!(membership.voter_ids().collect::<Vec<_>>(), vec![7]);
    assert_eq!(sm.read(|a| a.state.to_bytes()), state.to_bytes());
    assert!(sm.get_current_snapshot().await.unwrap().is_some(), "followers can be sent the snapshot");
}

#[tokio::test]
async fn a_recovery_read_applies_entries_past_the_committed_index() {
    let dir = tempfile::tempdir().unwrap();
    {
        let (mut log, mut sm) = open(dir.path(), CACHE, FlushMode::Blocking).await.unwrap();
        log.save_vote(&Vote::new_committed(2, 1)).await.unwrap();
        log.blocking_append((0..=6).map(|i| put(2, i))).await.unwrap();
        sm.apply((0..=3).map(|i| put(2, i))).await.unwrap();
        log.save_committed(Some(log_id(2, 3))).await.unwrap();
        log.seal().await.unwrap();
    }
    let r = read_for_recovery(dir.path(), CACHE, FlushMode::Blocking).await.unwrap();
    // Applied state lives in memory (no snapshot was built): every entry of the log applies.
    assert_eq!(r.entries_applied, 7);
    assert_eq!(r.applied.last_applied, Some(log_id(2, 6)));
    assert_eq!(r.known_committed, Some(3));
    assert_eq!(r.applied.state.settings().count(), 7);
}

trait PayloadCommand {
    fn payload_command(&self) -> Command;
}

impl PayloadCommand for Entry<raftgate_store::TypeConfig> {
    fn payload_command(&self) -> Command {
        match &self.payload {
            EntryPayload::Normal(p) => p.command.clone(),
            _ => unreachable!("test entries are normal"),
        }
    }
}
