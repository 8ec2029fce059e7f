#!/usr/bin/env bash
# hookrouter benchmark: one command, reproducible, not part of CI.
#
#   bench/run.sh                    # full run, writes bench/RESULTS.md
#   BENCH_SECONDS=5 BENCH_PENDING=100000 bench/run.sh    # a quicker run
#
# Needs: cargo, wrk and nginx (Debian: apt-get install -y wrk nginx). Everything runs on
# 127.0.0.1 in a temporary directory; every process started here is stopped on exit.
#
# What it measures, in one run so that ratios hold on a noisy machine:
#   1. durable ingest (every 200 is flushed + fdatasync'd) at 32 connections, 1 and 100 routes;
#   2. the same load against the bare hyper server (examples/bare_server.rs): the ratio;
#   3. end to end, fan-out 2: events/s from the first POST until the receiver has every job;
#   4. nginx proxy_pass to the same receiver (no durability): forwarded/s, for the ratio;
#   5. p99 at a fixed 1,000 req/s (open loop, examples/loadgen.rs);
#   6. RSS idle, under load, and with BENCH_PENDING jobs pending for a down receiver;
#      disk bytes per pending job; restart time with those jobs pending.
set -euo pipefail

SECONDS_PER_RUN=${BENCH_SECONDS:-10}
PENDING=${BENCH_PENDING:-1000000}
CONNS=32
THREADS=${BENCH_WRK_THREADS:-2}
KEY=bench-key
ROOT=$(cd "$(dirname "$0")/.." && pwd)
OUT=${BENCH_OUT:-$ROOT/bench/RESULTS.md}
WORK=$(mktemp -d /tmp/hookrouter-bench.XXXXXX)
PIDS=()

cleanup() {
    for pid in "${PIDS[@]}"; do kill -9 "$pid" 2>/dev/null || true; done
    if [[ -f $WORK/nginx.pid ]]; then kill "$(cat "$WORK/nginx.pid")" 2>/dev/null || true; fi
    rm -rf "$WORK"
}
trap cleanup EXIT

log() { echo "[bench $(date +%T)] $*" >&2; }

for tool in wrk nginx; do
    command -v "$tool" >/dev/null || { echo "bench: $tool is missing (apt-get install -y wrk nginx)" >&2; exit 1; }
done

log "building release binaries"
(cd "$ROOT" && cargo build --release --quiet --bin hookrouter --example bare_server --example loadgen)
BIN=$ROOT/target/release/hookrouter
BARE=$ROOT/target/release/examples/bare_server
LOADGEN=$ROOT/target/release/examples/loadgen
BODY=$ROOT/tests/fixtures/view.json

cat >"$WORK/post.lua" <<EOF
wrk.method = "POST"
wrk.headers["X-KEY"] = "$KEY"
wrk.headers["Content-Type"] = "application/json"
local f = io.open("$BODY", "rb")
wrk.body = f:read("*a")
f:close()
EOF

# wait_for FILE REGEX: waits up to 30 s for REGEX in FILE, prints the first match.
wait_for() {
    local i
    for i in $(seq 1 3000); do
        if grep -aoE "$2" "$1" 2>/dev/null | head -1 | grep -q .; then
            grep -aoE "$2" "$1" | head -1
            return 0
        fi
        sleep 0.01
    done
    echo "bench: timed out waiting for /$2/ in $1" >&2
    cat "$1" >&2 || true
    return 1
}

rss_kib() { awk '/VmRSS/ {print $2}' "/proc/$1/status" 2>/dev/null || echo 0; }
mib() { awk -v k="$1" 'BEGIN {printf "%.1f", k / 1024}'; }

# start_bare NAME: starts a bare server on a free port; sets BARE_PID and BARE_ADDR.
start_bare() {
    "$BARE" 127.0.0.1:0 >"$WORK/$1.out" 2>&1 &
    BARE_PID=$!
    PIDS+=("$BARE_PID")
    BARE_ADDR=$(wait_for "$WORK/$1.out" 'listening [0-9.:]+' | awk '{print $2}')
}

received() { curl -s "http://$RECV_ADDR/__count"; }

# write_config NAME ROUTES DEST_URL [DEST2_URL] [RETRY_INITIAL]
write_config() {
    local name=$1 routes=$2 url=$3 url2=${4:-} initial=${5:-1s}
    local f=$WORK/$name.yaml
    {
        echo "server:"
        echo "  listen: 127.0.0.1:0"
        echo "  data_dir: $WORK/$name-data"
        echo "  store_cache_bytes: 16777216"
        echo "  max_connections: 4096"
        echo "keys: [\"$KEY\"]"
        echo "retry: { initial_interval: $initial, multiplier: 2.0, max_interval: 10m, max_elapsed: 24h }"
        echo "destinations:"
        echo "  a: { url: \"$url\" }"
        if [[ -n $url2 ]]; then echo "  b: { url: \"$url2\" }"; fi
        echo "routes:"
        # routes-1 routes that do not match the sample view, then the one that does.
        local i
        for ((i = 1; i < routes; i++)); do
            echo "  - { name: r$i, event: view, match: { video_token: \"tok$i\", percentage: { gte: $((i % 100)) } }, to: [a] }"
        done
        if [[ -n $url2 ]]; then
            echo "  - { name: hit, event: view, match: { video_token: aVOfEGmGrZlG, percentage: { gte: 90 } }, to: [a, b] }"
        else
            echo "  - { name: hit, event: view, match: { video_token: aVOfEGmGrZlG, percentage: { gte: 90 } }, to: [a] }"
        fi
    } >"$f"
    echo "$f"
}

# start_daemon CONFIG LOGNAME: sets HR_PID and HR_ADDR.
start_daemon() {
    : >"$WORK/$2.log"
    RUST_LOG=${BENCH_RUST_LOG:-warn,hookrouter=info} "$BIN" serve --config "$1" 2>>"$WORK/$2.log" >/dev/null &
    HR_PID=$!
    PIDS+=("$HR_PID")
    HR_ADDR=$(wait_for "$WORK/$2.log" 'hookrouter is ready addr=[0-9.:]+' | sed 's/.*addr=//')
}

stop_daemon() {
    kill -TERM "$HR_PID" 2>/dev/null || true
    wait "$HR_PID" 2>/dev/null || true
}

# run_wrk URL [PID]: writes "rps p50_ms p99_ms non2xx requests" to $WORK/wrk.res and
# samples the RSS of PID into MAX_RSS.
run_wrk() {
    local url=$1 watch=${2:-} out=$WORK/wrk.out
    wrk -t"$THREADS" -c"$CONNS" -d"${SECONDS_PER_RUN}s" --latency -s "$WORK/post.lua" "$url" >"$out" 2>&1 &
    local wrk_pid=$!
    MAX_RSS=0
    while kill -0 "$wrk_pid" 2>/dev/null; do
        if [[ -n $watch ]]; then
            local r
            r=$(rss_kib "$watch")
            ((r > MAX_RSS)) && MAX_RSS=$r
        fi
        sleep 0.2
    done
    wait "$wrk_pid" || true
    awk '
        function ms(v) { if (v ~ /us$/) return v / 1000; if (v ~ /ms$/) return v + 0; if (v ~ /s$/) return v * 1000; return v }
        /Requests\/sec/ { rps = $2 }
        /^ +50%/ { p50 = ms($2) }
        /^ +99%/ { p99 = ms($2) }
        /Non-2xx/ { non = $5 }
        /requests in/ { total = $1 }
        END { printf "%.0f %.2f %.2f %d %d\n", rps, p50, p99, non + 0, total }
    ' "$out" >"$WORK/wrk.res"
}

ROWS=()
row() { ROWS+=("| $1 | $2 | $3 |"); log "$1: $2"; }

# What one durable acknowledgement costs on this disk, at least.
FSYNC_LAT=$(python3 - "$WORK" <<'PY'
import os, sys, time
fd = os.open(os.path.join(sys.argv[1], "fsync-probe"), os.O_WRONLY | os.O_CREAT, 0o644)
ts = []
for _ in range(100):
    os.write(fd, b"x" * 65536)
    t = time.perf_counter(); os.fdatasync(fd); ts.append((time.perf_counter() - t) * 1000)
ts.sort()
print("p50 %.1f ms, p99 %.1f ms" % (ts[50], ts[98]))
PY
)
log "fdatasync: $FSYNC_LAT"

# BENCH_ONLY=backlog skips straight to the memory/restart part; BENCH_ONLY=throughput stops
# before it (for a quick look at either).
if [[ ${BENCH_ONLY:-} != backlog ]]; then
# ---------------------------------------------------------------- receiver and reference
start_bare receiver
RECV_ADDR=$BARE_ADDR
RECV_PID=$BARE_PID
start_bare reference
REF_ADDR=$BARE_ADDR
log "receiver on $RECV_ADDR, reference bare server on $REF_ADDR"

run_wrk "http://$REF_ADDR/webhooks/view"
read -r bare_rps bare_p50 bare_p99 _ _ <"$WORK/wrk.res"
row "bare hyper server, $CONNS conns" "$bare_rps req/s" "p50 $bare_p50 ms, p99 $bare_p99 ms"
kill -9 "$BARE_PID"

# ---------------------------------------------------------------- durable ingest
# The third run shows group commit at work: more concurrent requests share each fdatasync.
for spec in "1 $CONNS" "100 $CONNS" "1 256"; do
    read -r routes conns <<<"$spec"
    cfg=$(write_config "ingest$routes-$conns" "$routes" "http://$RECV_ADDR/a")
    start_daemon "$cfg" "ingest$routes-$conns"
    sleep 1
    IDLE_RSS=$(rss_kib "$HR_PID")
    CONNS=$conns run_wrk "http://$HR_ADDR/webhooks/view" "$HR_PID"
    read -r rps p50 p99 non total <"$WORK/wrk.res"
    LOAD_RSS=$MAX_RSS
    row "durable ingest, $routes route(s), $conns conns" "$rps req/s ($(awk -v a="$rps" -v b="$bare_rps" 'BEGIN {printf "%.0f", 100 * a / b}')% of bare)" "p50 $p50 ms, p99 $p99 ms, non-2xx $non of $total"
    if [[ $spec == "1 $CONNS" ]]; then INGEST_RPS=$rps; RSS_IDLE=$IDLE_RSS; RSS_LOAD=$LOAD_RSS; fi
    stop_daemon
done

# ---------------------------------------------------------------- p99 at a fixed rate
cfg=$(write_config openloop 1 "http://$RECV_ADDR/a")
start_daemon "$cfg" openloop
sleep 1
ol=$("$LOADGEN" "$HR_ADDR" /webhooks/view "$KEY" "$BODY" 32 1000 $((SECONDS_PER_RUN * 2)))
OL_P99=$(sed 's/.*"p99_ms":\([0-9.]*\).*/\1/' <<<"$ol")
OL_P50=$(sed 's/.*"p50_ms":\([0-9.]*\).*/\1/' <<<"$ol")
OL_OK=$(sed 's/.*"ok":\([0-9]*\).*/\1/' <<<"$ol")
OL_ERR=$(sed 's/.*"errors":\([0-9]*\).*/\1/' <<<"$ol")
row "open loop, 1,000 req/s for $((SECONDS_PER_RUN * 2)) s" "p99 $OL_P99 ms" "p50 $OL_P50 ms; $OL_OK ok, $OL_ERR errors"
stop_daemon

# ---------------------------------------------------------------- end to end, fan-out 2
cfg=$(write_config e2e 1 "http://$RECV_ADDR/a" "http://$RECV_ADDR/b")
start_daemon "$cfg" e2e
sleep 1
before=$(received)
t0=$(date +%s.%N)
run_wrk "http://$HR_ADDR/webhooks/view" "$HR_PID"
read -r rps _ p99 non total <"$WORK/wrk.res"
accepted=$((total - non))
want=$((before + 2 * accepted))
for _ in $(seq 1 6000); do
    (($(received) >= want)) && break
    sleep 0.05
done
t1=$(date +%s.%N)
got=$(($(received) - before))
E2E=$(awk -v n="$accepted" -v a="$t0" -v b="$t1" 'BEGIN {printf "%.0f", n / (b - a)}')
row "end to end, fan-out 2" "$E2E events/s ($((2 * E2E)) deliveries/s)" "$accepted accepted, $got of $((2 * accepted)) deliveries in $(awk -v a="$t0" -v b="$t1" 'BEGIN {printf "%.1f", b - a}') s"
stop_daemon

# ---------------------------------------------------------------- nginx proxy_pass
mkdir -p "$WORK/nginx"
cat >"$WORK/nginx.conf" <<EOF
worker_processes auto;
pid $WORK/nginx.pid;
error_log $WORK/nginx/error.log warn;
events { worker_connections 4096; }
http {
    access_log off;
    client_body_temp_path $WORK/nginx/body;
    proxy_temp_path $WORK/nginx/proxy;
    fastcgi_temp_path $WORK/nginx/fastcgi;
    uwsgi_temp_path $WORK/nginx/uwsgi;
    scgi_temp_path $WORK/nginx/scgi;
    upstream receiver { server $RECV_ADDR; keepalive 64; }
    server {
        listen 127.0.0.1:0;
        location / {
            proxy_pass http://receiver;
            proxy_http_version 1.1;
            proxy_set_header Connection "";
        }
    }
}
EOF
# nginx cannot report a port it chose, so pick a free one first.
NGINX_PORT=$(python3 -c 'import socket; s = socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])')
sed -i "s/listen 127.0.0.1:0;/listen 127.0.0.1:$NGINX_PORT;/" "$WORK/nginx.conf"
nginx -c "$WORK/nginx.conf" -p "$WORK/nginx" -g 'daemon off;' 2>>"$WORK/nginx/error.log" &
PIDS+=($!)
for _ in $(seq 1 200); do curl -s -o /dev/null "http://127.0.0.1:$NGINX_PORT/" && break; sleep 0.05; done
before=$(received)
run_wrk "http://127.0.0.1:$NGINX_PORT/webhooks/view"
read -r ngx_rps _ ngx_p99 _ _ <"$WORK/wrk.res"
ngx_fwd=$(($(received) - before))
NGX=$(awk -v n="$ngx_fwd" -v s="$SECONDS_PER_RUN" 'BEGIN {printf "%.0f", n / s}')
row "nginx proxy_pass to the same receiver" "$NGX forwarded/s" "p99 $ngx_p99 ms; hookrouter end to end is $(awk -v a="$E2E" -v b="$NGX" 'BEGIN {printf "%.0f", 100 * a / b}')% of it"
kill "$(cat "$WORK/nginx.pid")" 2>/dev/null || true

fi  # BENCH_ONLY
RSS_IDLE=${RSS_IDLE:-0}
RSS_LOAD=${RSS_LOAD:-0}
if [[ ${BENCH_ONLY:-} != throughput ]]; then

# ---------------------------------------------------------------- memory and restart with a backlog
# The receiver is down (port 1 refuses connections); one attempt per job, then a long wait.
cfg=$(write_config pending 1 "http://127.0.0.1:1/down" "" 10m)
start_daemon "$cfg" pending
log "queueing $PENDING jobs for a down receiver"
t0=$(date +%s.%N)
seed=$("$LOADGEN" "$HR_ADDR" /webhooks/view "$KEY" "$BODY" 32 0 3600 "$PENDING")
t1=$(date +%s.%N)
SEED_OK=$(sed 's/.*"ok":\([0-9]*\).*/\1/' <<<"$seed")
log "seeded: $seed"
sleep 5
RSS_PENDING=$(rss_kib "$HR_PID")
stop_daemon
DISK=$(du -sb "$WORK/pending-data" | awk '{print $1}')
row "queue $SEED_OK jobs (down receiver)" "$(awk -v n="$SEED_OK" -v a="$t0" -v b="$t1" 'BEGIN {printf "%.0f", n / (b - a)}') req/s" "$(awk -v d="$DISK" -v n="$SEED_OK" 'BEGIN {printf "%.0f", d / n}') disk bytes per pending job ($((DISK / 1048576)) MiB)"

# Restart after a clean stop, then after kill -9 (crash recovery). Two times: until /healthz
# answers (the listener is up and serving) and until the "ready" log line, which is written
# after counting the pending jobs (a full scan of the due tree).
HEALTH_PORT=$(python3 -c 'import socket; s = socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])')
sed -i "s/listen: 127.0.0.1:0/listen: 127.0.0.1:$HEALTH_PORT/" "$cfg"
for how in clean crash; do
    t0=$(date +%s.%N)
    : >"$WORK/restart-$how.log"
    RUST_LOG=${BENCH_RUST_LOG:-warn,hookrouter=info} "$BIN" serve --config "$cfg" 2>>"$WORK/restart-$how.log" >/dev/null &
    HR_PID=$!
    PIDS+=("$HR_PID")
    for _ in $(seq 1 6000); do
        curl -sf -o /dev/null "http://127.0.0.1:$HEALTH_PORT/healthz" && break
        sleep 0.01
    done
    t1=$(date +%s.%N)
    wait_for "$WORK/restart-$how.log" 'hookrouter is ready' >/dev/null
    t2=$(date +%s.%N)
    pending_seen=$(grep -aoE 'pending=[0-9]+' "$WORK/restart-$how.log" | head -1 | cut -d= -f2)
    row "restart after a $how stop, ~$SEED_OK pending" "$(awk -v a="$t0" -v b="$t1" 'BEGIN {printf "%.2f", b - a}') s to serving" "$(awk -v a="$t0" -v b="$t2" 'BEGIN {printf "%.2f", b - a}') s to the ready log line (pending=$pending_seen, counted while workers run); RSS $(mib "$(rss_kib "$HR_PID")") MiB"
    if [[ $how == clean ]]; then
        sleep 5
        RSS_PENDING_RESTARTED=$(rss_kib "$HR_PID")
        kill -9 "$HR_PID"
        wait "$HR_PID" 2>/dev/null || true
    else
        stop_daemon
    fi
done

row "RSS idle / under load (1 route) / $SEED_OK pending" "$(mib "$RSS_IDLE") / $(mib "$RSS_LOAD") / $(mib "$RSS_PENDING") MiB" "after a restart with the backlog: $(mib "$RSS_PENDING_RESTARTED") MiB; store_cache_bytes 16 MiB"

fi  # BENCH_ONLY

# ---------------------------------------------------------------- report
{
    echo "# hookrouter benchmark results"
    echo
    echo "Produced by \`bench/run.sh\` on $(date -u '+%Y-%m-%d %H:%M UTC') (commit $(cd "$ROOT" && git rev-parse --short HEAD))."
    echo
    echo "Machine: $(nproc) cores, $(grep -m1 'model name' /proc/cpuinfo | cut -d: -f2 | xargs), $(awk '/MemTotal/ {printf "%.0f GiB", $2 / 1048576}' /proc/meminfo), Linux $(uname -r), $(df -T "$WORK" | awk 'NR == 2 {print $2}') file system."
    echo "Load average when the run ended: $(cut -d' ' -f1-3 /proc/loadavg) (the machine is shared; absolute figures are noisy, ratios within one run less so)."
    echo "fdatasync latency of this disk (64 KiB writes): $FSYNC_LAT."
    echo "Load: wrk -t$THREADS -c$CONNS -d${SECONDS_PER_RUN}s, the sample view payload ($(wc -c <"$BODY") bytes); every 200 from hookrouter is flushed and fdatasync'd."
    echo
    echo "| measurement | result | detail |"
    echo "|---|---|---|"
    printf '%s\n' "${ROWS[@]}"
} >"$WORK/table.md"
cat "$WORK/table.md"
if [[ -z ${BENCH_NO_WRITE:-} ]]; then
    cp "$WORK/table.md" "$OUT.new"
    if [[ -f $OUT ]] && grep -q '^## Notes' "$OUT"; then
        sed -n '/^## Notes/,$p' "$OUT" | { echo; cat; } >>"$OUT.new"
    fi
    mv "$OUT.new" "$OUT"
    log "wrote $OUT"
fi
