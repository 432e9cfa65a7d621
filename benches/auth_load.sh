#!/usr/bin/env bash
# What authentication adds per request, measured in one run against the same
# Raftgate node and upstream: an open route (the baseline), an API key, an
# RS256 JWT and an ES256 JWT, each with the verified-token cache on (the
# default) and the JWTs once more with it off (every request pays the
# signature check). Same layout as proxy_vs_nginx.sh: the node pinned to
# core 1, the upstream (nginx `return 200`) and wrk on core 0; rounds
# alternate the cases; the figures are medians.
#
#   benches/auth_load.sh                     # 10 s per case, 3 rounds
#   DURATION=20 ROUNDS=5 benches/auth_load.sh
#
# Needs nginx, wrk and openssl (Debian packages nginx-light, wrk, openssl).
# Run it alone: a build beside it moves the figures by 20-50%.
set -euo pipefail
HERE=$(cd "$(dirname "$0")" && pwd)
cd "$HERE/.."

DURATION=${DURATION:-10}
ROUNDS=${ROUNDS:-3}
CONNECTIONS=${CONNECTIONS:-32}
PROXY_CORE=${PROXY_CORE:-1}
LOAD_CORE=${LOAD_CORE:-0}
UPSTREAM_PORT=${UPSTREAM_PORT:-18090}

for tool in nginx wrk taskset openssl; do
    if ! command -v "$tool" >/dev/null && [ ! -x "/usr/sbin/$tool" ]; then
        echo "missing $tool: apt-get install nginx-light wrk util-linux openssl" >&2
        exit 2
    fi
done
NGINX=$(command -v nginx || echo /usr/sbin/nginx)

cargo build --release --bin raftgate --bin raftgatectl
cargo build --release -p raftgate-benches --example auth_fixture
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

openssl genrsa -out "$WORK/rsa.pem" 2048 2>/dev/null
./target/release/examples/auth_fixture "$WORK/rsa.pem" "$WORK"

# Two single-node gateways: cache on (default) and cache off.
start_node() { # name http_port raft_port admin_port cache_entries
    cat >"$WORK/$1.toml" <<EOF
[node]
id = 1
data_dir = "$WORK/$1-data"
[listen]
raft = "127.0.0.1:$3"
admin = "127.0.0.1:$4"
http = "127.0.0.1:$2"
[bootstrap]
members = [{ id = 1, region = "local", raft_addr = "127.0.0.1:$3", admin_addr = "127.0.0.1:$4", http_addr = "127.0.0.1:$2" }]
[identity]
token_cache_entries = $5
[log]
level = "warn"
[admin]
auth = "none"
# nginx logs nothing either: compare proxying, not logging.
[access_log]
enabled = false
EOF
    TOKIO_WORKER_THREADS=1 taskset -c "$PROXY_CORE" ./target/release/raftgate serve -c "$WORK/$1.toml" >"$WORK/$1.log" 2>&1 &
    PIDS+=($!)
    echo $!
}
CACHED_PID=$(start_node cached 18091 18191 18291 10000)
UNCACHED_PID=$(start_node uncached 18092 18192 18292 0)

seed() { # admin_port -> prints the API key
    local ctl=(./target/release/raftgatectl --endpoint "127.0.0.1:$1")
    for _ in $(seq 1 100); do
        "${ctl[@]}" upstream apply --id bench --target "127.0.0.1:$UPSTREAM_PORT" >/dev/null 2>&1 && break
        sleep 0.2
    done
    "${ctl[@]}" consumer apply --id bench >/dev/null
    "${ctl[@]}" issuer apply -f "$WORK/issuers.yaml" >/dev/null
    cat >"$WORK/routes.yaml" <<EOF
- { id: open, upstream: bench, paths: [{prefix: /open}] }
- { id: key, upstream: bench, paths: [{prefix: /key}], auth: { api_key: {} } }
- { id: rs, upstream: bench, paths: [{prefix: /rs}], auth: { jwt: { issuers: [rs] } } }
- { id: es, upstream: bench, paths: [{prefix: /es}], auth: { jwt: { issuers: [es] } } }
EOF
    "${ctl[@]}" route apply -f "$WORK/routes.yaml" >/dev/null
    "${ctl[@]}" --output json key create --consumer bench | sed -n 's/.*"key": "\(rgk_[^"]*\)".*/\1/p'
}
KEY=$(seed 18291)
seed 18292 >/dev/null
RS=$(cat "$WORK/rs256.token")
ES=$(cat "$WORK/es256.token")
sleep 1

# shellcheck source=benches/load_lib.sh
source "$HERE/load_lib.sh"

CASES=("open route|18091|$CACHED_PID|/open|"
    "api key|18091|$CACHED_PID|/key|x-api-key: $KEY"
    "RS256, cached|18091|$CACHED_PID|/rs|authorization: Bearer $RS"
    "ES256, cached|18091|$CACHED_PID|/es|authorization: Bearer $ES"
    "RS256, no cache|18092|$UNCACHED_PID|/rs|authorization: Bearer $RS"
    "ES256, no cache|18092|$UNCACHED_PID|/es|authorization: Bearer $ES")
declare -A RESULTS
for round in $(seq 1 "$ROUNDS"); do
    for c in "${CASES[@]}"; do
        IFS='|' read -r name port pid path header <<<"$c"
        r=$(run "$port" "$pid" "$path" "$header")
        RESULTS[$name]+="$r"$'\n'
        echo "round $round: $name: $r  (rps p50_ms p99_ms cpu_us/req)"
    done
done

col() { awk -v i="$1" 'NF {print $i}' <<<"$2" | median; }
echo
echo "authentication cost, ${DURATION}s x ${ROUNDS} rounds, wrk -t1 -c${CONNECTIONS}, node on core ${PROXY_CORE} (medians)"
printf '%-18s %10s %9s %9s %11s %14s %16s\n' case "requests/s" "p50 ms" "p99 ms" "CPU us/req" "CPU vs open" "added us/req"
base_cpu=$(col 4 "${RESULTS[open route]}")
for c in "${CASES[@]}"; do
    IFS='|' read -r name _ <<<"$c"
    rps=$(col 1 "${RESULTS[$name]}")
    p50=$(col 2 "${RESULTS[$name]}")
    p99=$(col 3 "${RESULTS[$name]}")
    cpu=$(col 4 "${RESULTS[$name]}")
    awk -v n="$name" -v r="$rps" -v a="$p50" -v b="$p99" -v c="$cpu" -v base="$base_cpu" \
        'BEGIN { printf "%-18s %10s %9s %9s %11s %14.2f %16.1f\n", n, r, a, b, c, c / base, c - base }'
done
