#!/usr/bin/env bash
# Builds the release binaries, then runs the cluster load harnesses on them:
# failover and replication (cluster), revocation propagation, and the
# apply of a 10,000-route file.
# Run alone: another build or benchmark beside it moves the figures by 20-50%.
set -euo pipefail
cd "$(dirname "$0")/.."
cargo build --release --bins
cargo bench -p raftgate-benches --bench cluster
cargo bench -p raftgate-benches --bench revocation_propagation
cargo bench -p raftgate-benches --bench apply_config
