//! Generated gRPC code for the Raft transport and the admin API, and a
//! small echo service the data plane's tests proxy.

pub mod raft {
    tonic::include_proto!("raftgate.raft.v1");
}

pub mod admin {
    tonic::include_proto!("raftgate.admin.v1");
}

/// Test-only: an echo service for proving gRPC pass-through.
pub mod testing {
    tonic::include_proto!("raftgate.testing.v1");
}
