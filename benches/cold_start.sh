#!/usr/bin/env bash
# Cold start with a large state: a node whose data dir holds ROUTES routes
# (restored from a generated snapshot with no revocations, started once and
# stopped, so its store is its own), restarted ROUNDS times; prints the
# time from process start to /readyz 200 for each and the median.
#
#   benches/cold_start.sh                          # 10,000 routes, 3 rounds
#   ROUTES=50000 ROUNDS=5 benches/cold_start.sh
#   BIN_DIR=target/debug benches/cold_start.sh     # use built binaries, build nothing
set -euo pipefail
HERE=$(cd "$(dirname "$0")" && pwd)
cd "$HERE/.."

ROUTES=${ROUTES:-10000}
ROUNDS=${ROUNDS:-3}
WORK=$(mktemp -d)
cleanup() {
    stop_node
    rm -rf "$WORK"
}
trap cleanup EXIT
. "$HERE/restore_lib.sh"

"$RAFTGATE" gen-snapshot --out "$WORK/bench.rgsnap" --routes "$ROUTES" --revocations 0 >/dev/null
write_config node
"$RAFTGATE" restore -c "$WORK/node.toml" --snapshot "$WORK/bench.rgsnap" >/dev/null
first=$(ready_ms node)
stop_node
echo "first start after restore: $first ms"

: >"$WORK/times"
for i in $(seq 1 "$ROUNDS"); do
    t=$(ready_ms node)
    stop_node
    echo "cold start $i: $t ms"
    echo "$t" >>"$WORK/times"
done
# Baseline in the same run: the same node restored from an empty snapshot.
"$RAFTGATE" gen-snapshot --out "$WORK/empty.rgsnap" --routes 0 --revocations 0 >/dev/null
EMPTY_WORK="$WORK/empty"
mkdir -p "$EMPTY_WORK"
: >"$WORK/base"
WORK_SAVED=$WORK
WORK=$EMPTY_WORK
write_config node
"$RAFTGATE" restore -c "$WORK/node.toml" --snapshot "$WORK_SAVED/empty.rgsnap" >/dev/null
ready_ms node >/dev/null
stop_node
for i in $(seq 1 "$ROUNDS"); do
    t=$(ready_ms node)
    stop_node
    echo "baseline (no routes) $i: $t ms"
    echo "$t" >>"$WORK_SAVED/base"
done
WORK=$WORK_SAVED
with=$(median <"$WORK/times")
base=$(median <"$WORK/base")
echo "cold start with $ROUTES routes, median of $ROUNDS: $with ms"
echo "baseline, the same node with no routes: $base ms"
awk -v a="$with" -v b="$base" 'BEGIN { if (b > 0) printf "ratio: %.2fx the baseline\n", a / b }'
