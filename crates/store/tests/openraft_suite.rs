//! openraft's own storage test suite, run against the sled-backed store.

use openraft::testing::{StoreBuilder, Suite};
use openraft::StorageError;
use raftgate_store::{LogStore, SledKv, StateMachineStore, TypeConfig};
use tempfile::TempDir;

struct SledBuilder;

impl StoreBuilder<TypeConfig, LogStore<SledKv>, StateMachineStore<SledKv>, TempDir> for SledBuilder {
    async fn build(&self) -> Result<(TempDir, LogStore<SledKv>, StateMachineStore<SledKv>), StorageError<u64>> {
        let dir = TempDir::new().expect("temp dir");
        let (log, sm) =
            raftgate_store::open(dir.path(), 8 << 20, raftgate_store::FlushMode::Async).await.expect("open store");
        Ok((dir, log, sm))
    }
}

#[test]
fn sled_store_passes_the_openraft_storage_suite() {
    if let Err(e) = Suite::test_all(SledBuilder) {
        panic!("openraft storage suite failed: {e}");
    }
}
