#!/usr/bin/env bash
# How long a restore takes: generate a snapshot file of ROUTES routes and
# REVOCATIONS revocations (and CONSUMERS consumers with a key each), built in
# process through the model's own apply by `raftgate gen-snapshot`; time
# `raftgate restore` into an empty data dir, then `raftgate serve` from
# process start until /readyz answers 200. Prints both durations and the
# file size.
#
#   benches/restore_time.sh                       # 10,000 routes, 1,000,000 revocations
#   ROUTES=1000 REVOCATIONS=10000 benches/restore_time.sh
#   BIN_DIR=target/debug benches/restore_time.sh  # use built binaries, build nothing
set -euo pipefail
HERE=$(cd "$(dirname "$0")" && pwd)
cd "$HERE/.."

ROUTES=${ROUTES:-10000}
REVOCATIONS=${REVOCATIONS:-1000000}
CONSUMERS=${CONSUMERS:-10}
WORK=$(mktemp -d)
cleanup() {
    stop_node
    rm -rf "$WORK"
}
trap cleanup EXIT
. "$HERE/restore_lib.sh"

"$RAFTGATE" gen-snapshot --out "$WORK/bench.rgsnap" --routes "$ROUTES" --revocations "$REVOCATIONS" --consumers "$CONSUMERS"
bytes=$(stat -c %s "$WORK/bench.rgsnap")
write_config node

# Baseline in the same run: reading and checksumming the file once (the
# floor for any restore that verifies it), from a warm page cache like the restore.
cat "$WORK/bench.rgsnap" >/dev/null
start=$(now_ns)
sha256sum "$WORK/bench.rgsnap" >/dev/null
base_ms=$(ms_since "$start")

start=$(now_ns)
"$RAFTGATE" restore -c "$WORK/node.toml" --snapshot "$WORK/bench.rgsnap" >/dev/null
restore_ms=$(ms_since "$start")
serve_ms=$(ready_ms node)
stop_node

awk -v b="$bytes" -v r="$restore_ms" -v s="$serve_ms" -v base="$base_ms" -v routes="$ROUTES" -v revs="$REVOCATIONS" 'BEGIN {
    printf "snapshot: %d routes, %d revocations, %.1f MiB\n", routes, revs, b / 1048576
    printf "raftgate restore: %d ms (%.1f MiB/s)\n", r, (r > 0) ? b / 1048576 / (r / 1000) : 0
    printf "raftgate serve until /readyz 200: %d ms\n", s
    printf "restore to serving, total: %d ms\n", r + s
    printf "baseline, sha256sum of the file: %d ms; restore is %.1fx it, restore to serving %.1fx\n", base, (base > 0) ? r / base : 0, (base > 0) ? (r + s) / base : 0
}'
