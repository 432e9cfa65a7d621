//! Generated gRPC code for the Raft transport and the admin API.

pub mod raft {
    tonic::include_proto!("raftgate.raft.v1");
}

pub mod admin {
    tonic::include_proto!("raftgate.admin.v1");
}
