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
echo "cold start with $ROUTES routes, median of $ROUNDS: $(median <"$WORK/times") ms"
