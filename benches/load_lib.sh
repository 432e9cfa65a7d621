# Shared by the load scripts: one wrk run against a pinned proxy, with the
# proxy's CPU time per request read from /proc/<pid>/stat, and medians.
# Needs LOAD_CORE, CONNECTIONS and DURATION set by the caller.

cpu_ticks() { awk '{print $14 + $15}' "/proc/$1/stat"; }
TICK=$(getconf CLK_TCK)

# Prints "rps p50_ms p99_ms cpu_us_per_request" for one wrk run: port pid [path] [header].
run() {
    local port=$1 pid=$2 path=${3:-/} header=${4:-} before after out rps p50 p99 requests code
    local hdr=()
    [ -n "$header" ] && hdr=(-H "$header")
    code=$(curl -s -o /dev/null -w '%{http_code}' "${hdr[@]}" "http://127.0.0.1:$port$path")
    [ "$code" = 200 ] || { echo "$path on $port answers $code" >&2; exit 1; }
    before=$(cpu_ticks "$pid")
    out=$(taskset -c "$LOAD_CORE" wrk -t1 -c"$CONNECTIONS" -d"${DURATION}s" --latency "${hdr[@]}" "http://127.0.0.1:$port$path")
    after=$(cpu_ticks "$pid")
    rps=$(awk '/Requests\/sec/ {print $2}' <<<"$out")
    requests=$(awk '/requests in/ {print $1}' <<<"$out")
    p50=$(awk '$1 == "50%" {print $2}' <<<"$out")
    p99=$(awk '$1 == "99%" {print $2}' <<<"$out")
    if grep -q "Non-2xx\|Socket errors" <<<"$out"; then echo "errors during the run:" >&2; echo "$out" >&2; fi
    awk -v r="$rps" -v a="$p50" -v b="$p99" -v t0="$before" -v t1="$after" -v n="$requests" -v hz="$TICK" '
        function ms(x) { if (x ~ /us$/) return x / 1000; if (x ~ /ms$/) return x + 0; if (x ~ /s$/) return x * 1000; return x }
        BEGIN { printf "%s %.3f %.3f %.2f\n", r, ms(a), ms(b), (t1 - t0) / hz * 1e6 / n }'
}

median() { sort -g | awk '{a[NR]=$1} END {print (NR % 2) ? a[(NR+1)/2] : (a[NR/2] + a[NR/2+1]) / 2}'; }
