# Shared by restore_time.sh and cold_start.sh: binaries, a one-node config
# with a metrics listener, and timing a node from process start to /readyz 200.
# Needs WORK set by the caller.

# Release binaries unless BIN_DIR names a directory that holds raftgate (then nothing is built).
if [ -z "${BIN_DIR:-}" ]; then
    cargo build --release --bin raftgate --bin raftgatectl
    BIN_DIR=${CARGO_TARGET_DIR:-target}/release
fi
RAFTGATE=$BIN_DIR/raftgate
BASE_PORT=${BASE_PORT:-19100}
READY_TIMEOUT_S=${READY_TIMEOUT_S:-900}

now_ns() { date +%s%N; }
ms_since() { echo $(( ($(now_ns) - $1) / 1000000 )); }

# write_config NAME: a one-voter node config at $WORK/NAME.toml, data dir $WORK/NAME-data.
write_config() {
    cat >"$WORK/$1.toml" <<CONF
[node]
id = 1
region = "bench"
data_dir = "$WORK/$1-data"
[listen]
raft = "127.0.0.1:$((BASE_PORT + 1))"
admin = "127.0.0.1:$((BASE_PORT + 2))"
http = "127.0.0.1:$((BASE_PORT + 3))"
metrics = "127.0.0.1:$((BASE_PORT + 4))"
[admin]
auth = "none"
[log]
level = "warn"
[access_log]
enabled = false
CONF
}

# ready_ms NAME: starts the node, prints the ms from process start to /readyz 200,
# leaves it running with its pid in $WORK/node.pid (callers run it in $(…), a subshell).
ready_ms() {
    local start code
    start=$(now_ns)
    "$RAFTGATE" serve -c "$WORK/$1.toml" >>"$WORK/$1.log" 2>&1 &
    NODE_PID=$!
    echo "$NODE_PID" >"$WORK/node.pid"
    while :; do
        code=$(curl -s -o /dev/null -w '%{http_code}' "http://127.0.0.1:$((BASE_PORT + 4))/readyz" || true)
        [ "$code" = 200 ] && break
        if ! kill -0 "$NODE_PID" 2>/dev/null; then echo "node exited; log:" >&2; cat "$WORK/$1.log" >&2; exit 1; fi
        if [ $(( ($(now_ns) - start) / 1000000000 )) -ge "$READY_TIMEOUT_S" ]; then
            echo "not ready within $READY_TIMEOUT_S s" >&2; exit 1
        fi
        sleep 0.02
    done
    ms_since "$start"
}

# stop_node: SIGTERM the node started by ready_ms and wait until it has exited.
stop_node() {
    local pid
    pid=$(cat "$WORK/node.pid" 2>/dev/null || true)
    [ -n "$pid" ] || return 0
    kill -TERM "$pid" 2>/dev/null || true
    while kill -0 "$pid" 2>/dev/null; do sleep 0.05; done
    rm -f "$WORK/node.pid"
}

median() { sort -g | awk '{a[NR]=$1} END {print (NR % 2) ? a[(NR+1)/2] : (a[NR/2] + a[NR/2+1]) / 2}'; }
