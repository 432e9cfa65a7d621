#!/usr/bin/env bash
# What seeing costs: one Raftgate node with per-request metrics and JSON
# access lines on (metrics listener up, every request logged to a file)
# against the same node with both off, in the same run, in front of the
# same fast upstream, each pinned to the same single core.
#
#   benches/observability_cost.sh            # 10 s per run, 3 rounds
#   DURATION=20 ROUNDS=5 benches/observability_cost.sh
#
# Layout as in proxy_vs_nginx.sh: the proxies on core 1, the upstream (an
# nginx `return 200` server) and wrk on core 0; CPU time per request is
# read from /proc/<pid>/stat. Rounds alternate the two; figures are
# medians. Needs nginx and wrk; run it alone.
set -euo pipefail
HERE=$(cd "$(dirname "$0")" && pwd)
cd "$HERE/.."

DURATION=${DURATION:-10}
ROUNDS=${ROUNDS:-3}
CONNECTIONS=${CONNECTIONS:-32}
PROXY_CORE=${PROXY_CORE:-1}
LOAD_CORE=${LOAD_CORE:-0}
UPSTREAM_PORT=${UPSTREAM_PORT:-18080}

for tool in nginx wrk taskset; do
    if ! command -v "$tool" >/dev/null && [ ! -x "/usr/sbin/$tool" ]; then
        echo "missing $tool: apt-get install nginx-light wrk util-linux" >&2
        exit 2
    fi
done
NGINX=$(command -v nginx || echo /usr/sbin/nginx)

cargo build --release --bin raftgate --bin raftgatectl
WORK=$(mktemp -d)
PIDS=()
cleanup() {
    for p in "${PIDS[@]}"; do kill "$p" 2>/dev/null || true; done
    sleep 0.5
    rm -rf "$WORK"
}
trap cleanup EXIT

cat >"$WORK/upstream.conf" <<EOF
daemon off; worker_processes 1; pid $WORK/upstream.pid; error_log $WORK/upstream.err warn;
events { worker_connections 4096; }
http { access_log off;
  server { listen 127.0.0.1:$UPSTREAM_PORT; keepalive_requests 1000000;
    location / { return 200 "hello from the upstream\n"; } } }
EOF
taskset -c "$LOAD_CORE" "$NGINX" -c "$WORK/upstream.conf" -p "$WORK" &
PIDS+=($!)

# start_node NAME HTTP_PORT RAFT_PORT ADMIN_PORT LISTEN_EXTRA ACCESS_LOG_TOML; sets NAME_PID.
start_node() {
    local name=$1 http=$2 raft=$3 admin=$4 listen_extra=$5 access=$6
    cat >"$WORK/$name.toml" <<EOF
[node]
id = 1
data_dir = "$WORK/$name-data"
[listen]
raft = "127.0.0.1:$raft"
admin = "127.0.0.1:$admin"
http = "127.0.0.1:$http"
$listen_extra
[bootstrap]
members = [{ id = 1, region = "local", raft_addr = "127.0.0.1:$raft", admin_addr = "127.0.0.1:$admin", http_addr = "127.0.0.1:$http" }]
[log]
level = "warn"
[admin]
auth = "none"
[access_log]
$access
EOF
    TOKIO_WORKER_THREADS=1 taskset -c "$PROXY_CORE" ./target/release/raftgate serve -c "$WORK/$name.toml" >"$WORK/$name.log" 2>&1 &
    PIDS+=($!)
    printf -v "${name}_PID" '%s' "$!"
    local ctl=(./target/release/raftgatectl --endpoint "127.0.0.1:$admin")
    for _ in $(seq 1 100); do
        "${ctl[@]}" upstream apply --id bench --target "127.0.0.1:$UPSTREAM_PORT" >/dev/null 2>&1 && break
        sleep 0.2
    done
    "${ctl[@]}" route apply --id bench --upstream bench --prefix / >/dev/null
}
start_node plain 18082 18101 18201 "" "enabled = false"
# ACCESS_LOG=off measures the metrics alone.
if [ "${ACCESS_LOG:-on}" = off ]; then OBSERVED_ACCESS="enabled = false"; else OBSERVED_ACCESS="output = \"$WORK/access.log\""; fi
start_node observed 18084 18102 18202 'metrics = "127.0.0.1:18401"' "$OBSERVED_ACCESS"
sleep 1

# shellcheck source=benches/load_lib.sh
source "$HERE/load_lib.sh"


PLAIN=()
OBSERVED=()
for round in $(seq 1 "$ROUNDS"); do
    PLAIN+=("$(run 18082 "$plain_PID")")
    OBSERVED+=("$(run 18084 "$observed_PID")")
    echo "round $round: off ${PLAIN[-1]} | on ${OBSERVED[-1]}  (rps p50_ms p99_ms cpu_us/req)"
done
lines=$(cat "$WORK/access.log" 2>/dev/null | wc -l)
curl -sf http://127.0.0.1:18401/metrics >"$WORK/metrics.txt"
grep -q 'raftgate_http_requests_total{route="bench"' "$WORK/metrics.txt" || {
    echo "no request metrics on the observed node" >&2
    exit 1
}

col() { local i=$1; shift; printf '%s\n' "$@" | awk -v i="$i" '{print $i}' | median; }
echo
echo "metrics + access log on vs off, ${DURATION}s x ${ROUNDS} rounds, wrk -t1 -c${CONNECTIONS}, proxy on core ${PROXY_CORE} (medians; ${lines} access lines written)"
printf '%-22s %10s %10s %10s\n' metric off on "on/off"
for i in 1 2 3 4; do
    name=$(sed -n "${i}p" <<<$'requests/s\np50 latency (ms)\np99 latency (ms)\nCPU us per request')
    a=$(col "$i" "${PLAIN[@]}")
    b=$(col "$i" "${OBSERVED[@]}")
    printf '%-22s %10s %10s %10.2f\n' "$name" "$a" "$b" "$(awk -v a="$b" -v b="$a" 'BEGIN {print (b > 0) ? a / b : 0}')"
done
