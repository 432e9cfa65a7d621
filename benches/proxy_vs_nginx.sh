#!/usr/bin/env bash
# Plain reverse proxying: Raftgate against nginx, in the same run, in front of
# the same fast upstream, each proxy pinned to the same single core.
#
#   benches/proxy_vs_nginx.sh            # 10 s per run, 3 rounds
#   DURATION=20 ROUNDS=5 benches/proxy_vs_nginx.sh
#
# Layout on a 2-core machine: the proxy under test on core 1 (taskset), the
# upstream (an nginx `return 200` server) and the load generator (wrk, one
# thread, keep-alive) on core 0. Throughput alone saturates near the proxy's
# limit on 2 cores, so the script also prints CPU time per request of each
# proxy, read from /proc/<pid>/stat (utime + stime) before and after a run.
# Rounds alternate nginx and raftgate so drift hits both; the figures are
# medians. A third contender, a bare hyper proxy (benches/bare_proxy.rs: the
# same HTTP stack with no routing or header work), shows how much of
# Raftgate's cost is the stack's. Needs nginx and wrk (Debian packages `nginx-light`/`nginx` and
# `wrk`); run it alone: a build beside it moves the figures by 20-50%.
set -euo pipefail
HERE=$(cd "$(dirname "$0")" && pwd)
cd "$HERE/.."

DURATION=${DURATION:-10}
ROUNDS=${ROUNDS:-3}
CONNECTIONS=${CONNECTIONS:-32}
PROXY_CORE=${PROXY_CORE:-1}
LOAD_CORE=${LOAD_CORE:-0}
UPSTREAM_PORT=${UPSTREAM_PORT:-18080}
NGINX_PORT=${NGINX_PORT:-18081}
RAFTGATE_PORT=${RAFTGATE_PORT:-18082}
BARE_PORT=${BARE_PORT:-18083}

for tool in nginx wrk taskset; do
    if ! command -v "$tool" >/dev/null && [ ! -x "/usr/sbin/$tool" ]; then
        echo "missing $tool: apt-get install nginx-light wrk util-linux" >&2
        exit 2
    fi
done
NGINX=$(command -v nginx || echo /usr/sbin/nginx)

cargo build --release --bin raftgate --bin raftgatectl
cargo build --release -p raftgate-benches --example bare_proxy
WORK=$(mktemp -d)
PIDS=()
cleanup() {
    for p in "${PIDS[@]}"; do kill "$p" 2>/dev/null || true; done
    sleep 0.5
    rm -rf "$WORK"
}
trap cleanup EXIT

# The upstream: nginx answering 200 with a small body, on the load core.
cat >"$WORK/upstream.conf" <<EOF
daemon off; worker_processes 1; pid $WORK/upstream.pid; error_log $WORK/upstream.err warn;
events { worker_connections 4096; }
http { access_log off;
  server { listen 127.0.0.1:$UPSTREAM_PORT; keepalive_requests 1000000;
    location / { return 200 "hello from the upstream\n"; } } }
EOF
taskset -c "$LOAD_CORE" "$NGINX" -c "$WORK/upstream.conf" -p "$WORK" &
PIDS+=($!)

# nginx as the reverse proxy, one worker, pooled keep-alive to the upstream.
cat >"$WORK/proxy.conf" <<EOF
daemon off; worker_processes 1; pid $WORK/proxy.pid; error_log $WORK/proxy.err warn;
events { worker_connections 4096; }
http { access_log off;
  upstream backend { server 127.0.0.1:$UPSTREAM_PORT; keepalive 64; }
  server { listen 127.0.0.1:$NGINX_PORT; keepalive_requests 1000000;
    location / { proxy_pass http://backend; proxy_http_version 1.1; proxy_set_header Connection "";
      proxy_set_header Host \$host; proxy_set_header X-Forwarded-For \$proxy_add_x_forwarded_for; } } }
EOF
taskset -c "$PROXY_CORE" "$NGINX" -c "$WORK/proxy.conf" -p "$WORK" &
PIDS+=($!)

# Raftgate: one node, one worker thread on the proxy core.
cat >"$WORK/raftgate.toml" <<EOF
[node]
id = 1
data_dir = "$WORK/data"
[listen]
raft = "127.0.0.1:18101"
admin = "127.0.0.1:18201"
http = "127.0.0.1:$RAFTGATE_PORT"
[bootstrap]
members = [{ id = 1, region = "local", raft_addr = "127.0.0.1:18101", admin_addr = "127.0.0.1:18201", http_addr = "127.0.0.1:$RAFTGATE_PORT" }]
[log]
level = "warn"
[admin]
auth = "none"
# nginx logs nothing either: compare proxying, not logging.
[access_log]
enabled = false
EOF
TOKIO_WORKER_THREADS=1 taskset -c "$PROXY_CORE" ./target/release/raftgate serve -c "$WORK/raftgate.toml" >"$WORK/raftgate.log" 2>&1 &
RAFTGATE_PID=$!
PIDS+=($RAFTGATE_PID)
CTL=(./target/release/raftgatectl --endpoint 127.0.0.1:18201)
for _ in $(seq 1 100); do
    "${CTL[@]}" upstream apply --id bench --target "127.0.0.1:$UPSTREAM_PORT" >/dev/null 2>&1 && break
    sleep 0.2
done
"${CTL[@]}" route apply --id bench --upstream bench --prefix / >/dev/null
TOKIO_WORKER_THREADS=1 taskset -c "$PROXY_CORE" ./target/release/examples/bare_proxy "127.0.0.1:$BARE_PORT" "127.0.0.1:$UPSTREAM_PORT" &
BARE_PID=$!
PIDS+=($BARE_PID)
sleep 1

nginx_worker() { pgrep -P "$(cat "$WORK/proxy.pid")" | head -1; }
# shellcheck source=benches/load_lib.sh
source "$HERE/load_lib.sh"

NGINX_RESULTS=()
RAFTGATE_RESULTS=()
BARE_RESULTS=()
NGINX_PID=$(nginx_worker)
for round in $(seq 1 "$ROUNDS"); do
    NGINX_RESULTS+=("$(run "$NGINX_PORT" "$NGINX_PID")")
    RAFTGATE_RESULTS+=("$(run "$RAFTGATE_PORT" "$RAFTGATE_PID")")
    BARE_RESULTS+=("$(run "$BARE_PORT" "$BARE_PID")")
    echo "round $round: nginx ${NGINX_RESULTS[-1]} | raftgate ${RAFTGATE_RESULTS[-1]} | bare hyper ${BARE_RESULTS[-1]}  (rps p50_ms p99_ms cpu_us/req)"
done

col() { local i=$1; shift; printf '%s\n' "$@" | awk -v i="$i" '{print $i}' | median; }
echo
echo "plain proxying, ${DURATION}s x ${ROUNDS} rounds, wrk -t1 -c${CONNECTIONS}, proxy on core ${PROXY_CORE} (medians)"
printf '%-22s %10s %10s %12s %16s %18s\n' metric nginx raftgate "bare hyper" "raftgate/nginx" "bare hyper/nginx"
for i in 1 2 3 4; do
    name=$(sed -n "${i}p" <<<$'requests/s\np50 latency (ms)\np99 latency (ms)\nCPU us per request')
    n=$(col "$i" "${NGINX_RESULTS[@]}")
    r=$(col "$i" "${RAFTGATE_RESULTS[@]}")
    b=$(col "$i" "${BARE_RESULTS[@]}")
    ratio() { awk -v a="$1" -v b="$2" 'BEGIN {print (b > 0) ? a / b : 0}'; }
    printf '%-22s %10s %10s %12s %16.2f %18.2f\n' "$name" "$n" "$r" "$b" "$(ratio "$r" "$n")" "$(ratio "$b" "$n")"
done
