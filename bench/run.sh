#!/usr/bin/env bash
# hookrouter benchmark: one command, reproducible, not part of CI.
#
#   apt-get install -y wrk nginx webhook     # once (Debian; webhook is adnanh/webhook 2.8)
#   bench/run.sh                             # full run (7-10 minutes on 2 cores), writes bench/RESULTS.md
#   BENCH_PENDING=100000 BENCH_SECONDS=5 bench/run.sh      # quick mode (about 2 minutes)
#   BENCH_NO_WRITE=1 ...                     # print the tables, leave bench/RESULTS.md alone
#
# Settings (environment): BENCH_SECONDS (10: length of each wrk run; the open-loop run is
# twice that), BENCH_PENDING (1000000: jobs queued for a down destination, as PENDING/2
# events x 2 destinations), BENCH_RETENTION_EVENTS (PENDING/10: events delivered for the
# retention check), BENCH_RATE (1000: the open-loop rate), BENCH_DRAIN_TIMEOUT (120: seconds
# after the load stops within which every delivery must have arrived), BENCH_PURGE_WAIT (60:
# seconds given to the purge after retention has passed), BENCH_WRK_THREADS (2),
# BENCH_RUST_LOG (warn,hookrouter=info: one log line per webhook, as in production),
# BENCH_OUT (bench/RESULTS.md).
#
# Everything runs on 127.0.0.1 in a temporary directory; every process started here is
# stopped on exit, by pid. The run FAILS (exit 1, "bench: FAILED: ..." on stderr, nothing
# written) when work did not happen as claimed: an answer other than "accepted" where a new
# event was sent (a duplicate, a non-2xx), deliveries that do not all arrive within
# BENCH_DRAIN_TIMEOUT (it says how many did), a backlog that was not fully queued, a restart
# that reports fewer pending jobs than were acknowledged, a peer that did not trigger.
# A rate is only printed for a run that completed.
#
# Every request is a new event: the payload's "id" is replaced per request by
# RUNNONCE-THREAD-COUNTER (wrk's Lua request(), loadgen --unique), so ids differ between
# requests and between runs; only the row labelled "resends" sends one body again and again.
#
# In one run, so that ratios hold on a noisy shared machine:
#   references: a bare hyper server (examples/bare_server.rs) for ingest, the forward floor
#     (examples/forward_floor.rs: hyper in, two reqwest POSTs out, nothing else), nginx proxy_pass to
#     the receiver for end to end, and the peer webhook 2.8 (a rule on video_token + X-KEY
#     that runs /bin/true);
#   durable ingest at 32 connections, fan-out 2, with delivery held back (rate_limit 1/h)
#     and while forwarding to two live receivers; the resend (duplicate) path;
#   end to end: from the first POST until both receivers hold every delivery;
#   the daemon's CPU per event (utime+stime from /proc/PID/stat) and RSS;
#   p99 at a fixed 1,000 req/s while delivering (open loop, examples/loadgen.rs);
#   a long outage: BENCH_PENDING jobs for a down destination, disk bytes per job, RSS, start
#     to ready after SIGTERM and after kill -9;
#   disk space at its peak and after `retention` (5s) has passed for every event.
# It relies only on the log line "hookrouter is ready addr=... pending=N", /healthz, the
# admin API's GET /queue and GET /events/ID, and `du -sb` of the data dir (any layout).
set -euo pipefail

SECONDS_PER_RUN=${BENCH_SECONDS:-10}
PENDING=${BENCH_PENDING:-1000000}
RETENTION_EVENTS=${BENCH_RETENTION_EVENTS:-$((PENDING / 10))}
RATE=${BENCH_RATE:-1000}
DRAIN_TIMEOUT=${BENCH_DRAIN_TIMEOUT:-120}
PURGE_WAIT=${BENCH_PURGE_WAIT:-60}
CONNS=32
THREADS=${BENCH_WRK_THREADS:-2}
KEY=bench-key
ROOT=$(cd "$(dirname "$0")/.." && pwd)
OUT=${BENCH_OUT:-$ROOT/bench/RESULTS.md}
WORK=$(mktemp -d /tmp/hookrouter-bench.XXXXXX)
CLK_TCK=$(getconf CLK_TCK)
PIDS=()
NGINX_PID=

log() { echo "[bench $(date +%T)] $*" >&2; }

cleanup() {
    local pid
    for pid in "${PIDS[@]}"; do kill -TERM "$pid" 2>/dev/null || true; done
    if [[ -n $NGINX_PID ]]; then kill -TERM "$NGINX_PID" 2>/dev/null || true; fi
    sleep 0.5
    for pid in "${PIDS[@]}"; do kill -9 "$pid" 2>/dev/null || true; done
    rm -rf "$WORK"
}
trap cleanup EXIT

ROWS=()
# row MEASUREMENT RESULT DETAIL: one line of the table; the detail ends with the 1-minute load
# average when the row was taken (the machine is shared).
row() {
    local load
    load=$(cut -d' ' -f1 /proc/loadavg)
    ROWS+=("| $1 | $2 | $3; load $load |")
    log "$1: $2 ($3; load $load)"
}

# fail MESSAGE: the run is not valid. Prints what was measured so far and exits 1.
fail() {
    echo "bench: FAILED: $*" >&2
    if ((${#ROWS[@]})); then
        echo "bench: rows measured before the failure (not written anywhere):" >&2
        printf '%s\n' "${ROWS[@]}" >&2
    fi
    exit 1
}

for tool in wrk nginx webhook curl python3 cargo; do
    command -v "$tool" >/dev/null || fail "$tool is missing (apt-get install -y wrk nginx webhook)"
done

LOAD_START=$(cut -d' ' -f1-3 /proc/loadavg)
log "building release binaries"
(cd "$ROOT" && cargo build --release --quiet --bin hookrouter --example bare_server --example loadgen --example forward_floor)
BIN=$ROOT/target/release/hookrouter
BARE=$ROOT/target/release/examples/bare_server
FLOOR=$ROOT/target/release/examples/forward_floor
LOADGEN=$ROOT/target/release/examples/loadgen
SAMPLE=$ROOT/examples/view.json
# The sample view with its id replaced by a placeholder, which every request fills in.
BODY=$WORK/view-template.json
sed -E '0,/"id": *"[^"]*"/s//"id": "@ID@"/' "$SAMPLE" >"$BODY"
grep -q '"id": "@ID@"' "$BODY" || fail "could not put an id placeholder into $SAMPLE"

# ---------------------------------------------------------------- helpers
num() { awk -v x="$1" 'BEGIN {printf "%.0f", x}'; }
f1() { awk -v x="$1" 'BEGIN {printf "%.1f", x}'; }
f2() { awk -v x="$1" 'BEGIN {printf "%.2f", x}'; }
pct() { awk -v a="$1" -v b="$2" 'BEGIN {if (b == 0) print "n/a"; else printf "%.0f%%", 100 * a / b}'; }
times_of() { awk -v a="$1" -v b="$2" 'BEGIN {if (b == 0) print "n/a"; else printf "%.2fx", a / b}'; }
now() { date +%s.%N; }
since() { awk -v a="$1" -v b="$(now)" 'BEGIN {printf "%.2f", b - a}'; }
free_port() { python3 -c 'import socket; s = socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])'; }
rss_kib() { awk '/VmRSS/ {print $2}' "/proc/$1/status" 2>/dev/null || echo 0; }
mib() { awk -v k="$1" 'BEGIN {printf "%.1f", k / 1024}'; }
# CPU clock ticks used so far by PID and its waited-for children (utime stime cutime cstime).
cpu_ticks() { sed 's/^.*) //' "/proc/$1/stat" | awk '{print $12 + $13 + $14 + $15}'; }
# us_per_event TICKS EVENTS
us_per_event() { awk -v t="$1" -v n="$2" -v hz="$CLK_TCK" 'BEGIN {if (n == 0) print "n/a"; else printf "%.0f", t / hz * 1e6 / n}'; }
du_b() { du -sb "$1" 2>/dev/null | awk '{print $1}'; }
jget() { sed -n "s/.*\"$1\":\([0-9.]*\).*/\1/p" <<<"$2"; }
# pending_jobs ADMIN_ADDR: pending + retrying from the admin API's GET /queue.
pending_jobs() {
    curl -sf "http://$1/queue" | python3 -c 'import json, sys; t = json.load(sys.stdin)["total"]; print(t["pending"] + t["retrying"])'
}

# wait_for FILE REGEX TIMEOUT_S [PID]: waits for REGEX in FILE, prints the first match; fails
# when the time is up or PID exits.
wait_for() {
    local file=$1 re=$2 limit=$3 pid=${4:-} t0
    t0=$(now)
    while :; do
        if grep -aqE "$re" "$file" 2>/dev/null; then
            grep -aoE "$re" "$file" | head -1
            return 0
        fi
        if [[ -n $pid ]] && ! kill -0 "$pid" 2>/dev/null; then
            cat "$file" >&2 || true
            fail "process $pid exited before /$re/ appeared in $file"
        fi
        if awk -v a="$t0" -v b="$(now)" -v l="$limit" 'BEGIN {exit !(b - a > l)}'; then
            tail -20 "$file" >&2 || true
            fail "timed out after $limit s waiting for /$re/ in $file"
        fi
        sleep 0.01
    done
}

# start_bare NAME: starts a bare server on a free port; sets BARE_PID and BARE_ADDR.
start_bare() {
    "$BARE" 127.0.0.1:0 >"$WORK/$1.out" 2>&1 &
    BARE_PID=$!
    PIDS+=("$BARE_PID")
    BARE_ADDR=$(wait_for "$WORK/$1.out" 'listening [0-9.:]+' 30 "$BARE_PID" | awk '{print $2}')
}

count_at() { curl -sf "http://$1/__count"; }

# write_config NAME MODE [LISTEN_PORT] [EXTRA SERVER LINE...]: a config with one route that
# matches the sample view and fans out to destinations a and b. MODE is live (the two
# receivers), held (the same, rate_limit 1/h: delivery held back) or down (a refused port;
# one attempt, then a 10 min wait). Prints the file name; sets ADMIN_ADDR in the caller
# through $WORK/NAME.admin.
write_config() {
    local name=$1 mode=$2 port=${3:-0}
    shift 3 || shift $#
    local f=$WORK/$name.yaml admin
    admin=127.0.0.1:$(free_port)
    echo "$admin" >"$WORK/$name.admin"
    {
        echo "server:"
        echo "  listen: 127.0.0.1:$port"
        echo "  admin_listen: $admin"
        echo "  data_dir: $WORK/$name-data"
        echo "  max_connections: 4096"
        echo "  max_queue: $((PENDING * 2 + 100000))"
        local extra
        for extra in "$@"; do echo "  $extra"; done
        echo "keys: [\"$KEY\"]"
        case $mode in
            live)
                echo "destinations:"
                echo "  a: { url: \"http://$RECV_A/a\" }"
                echo "  b: { url: \"http://$RECV_B/b\" }"
                ;;
            held)
                echo "destinations:"
                echo "  a: { url: \"http://$RECV_A/a\", rate_limit: 1/h }"
                echo "  b: { url: \"http://$RECV_B/b\", rate_limit: 1/h }"
                ;;
            down)
                echo "retry: { initial_interval: 10m, multiplier: 2.0, max_interval: 10m, max_elapsed: 24h }"
                echo "destinations:"
                echo "  a: { url: \"http://127.0.0.1:1/down-a\" }"
                echo "  b: { url: \"http://127.0.0.1:1/down-b\" }"
                ;;
        esac
        echo "routes:"
        echo "  - { name: hit, event: view, match: { video_token: aVOfEGmGrZlG, percentage: { gte: 90 } }, to: [a, b] }"
    } >"$f"
    echo "$f"
}

# start_daemon CONFIG LOGNAME [TIMEOUT_S]: sets HR_PID and HR_ADDR (from the ready line).
start_daemon() {
    : >"$WORK/$2.log"
    RUST_LOG=${BENCH_RUST_LOG:-warn,hookrouter=info} "$BIN" serve --config "$1" 2>>"$WORK/$2.log" >/dev/null &
    HR_PID=$!
    PIDS+=("$HR_PID")
    HR_ADDR=$(wait_for "$WORK/$2.log" 'hookrouter is ready addr=[0-9.:]+' "${3:-60}" "$HR_PID" | sed 's/.*addr=//')
}

stop_daemon() {
    kill -TERM "$HR_PID" 2>/dev/null || true
    wait "$HR_PID" 2>/dev/null || true
}

# make_lua FILE unique|resend: the wrk script. unique: every request gets its own id
# (NONCE-THREAD-COUNTER); resend: the same body (with one fresh id for this run) every time.
# Either way it counts 2xx answers and those saying accepted / duplicate / triggered.
make_lua() {
    local file=$1 mode=$2 nonce
    nonce=bench$(date +%s%N)
    cat >"$file" <<EOF
wrk.method = "POST"
wrk.headers["X-KEY"] = "$KEY"
wrk.headers["Content-Type"] = "application/json"
local f = io.open("$BODY", "rb")
local template = f:read("*a")
f:close()
local s, e = template:find("@ID@", 1, true)
local prefix, suffix = template:sub(1, s - 1), template:sub(e + 1)
local nonce = "$nonce"
wrk.body = prefix .. nonce .. suffix
local threads = {}
function setup(thread)
    thread:set("tid", #threads + 1)
    table.insert(threads, thread)
end
function init(args)
    n, ok, accepted, duplicate, triggered = 0, 0, 0, 0, 0
end
EOF
    if [[ $mode == unique ]]; then
        cat >>"$file" <<'EOF'
function request()
    n = n + 1
    return wrk.format(nil, nil, nil, prefix .. nonce .. "-" .. tid .. "-" .. n .. suffix)
end
EOF
    fi
    cat >>"$file" <<'EOF'
function response(status, headers, body)
    if status >= 200 and status < 300 then
        ok = ok + 1
        if body:find('"status":"accepted"', 1, true) then
            accepted = accepted + 1
        elseif body:find('"status":"duplicate"', 1, true) then
            duplicate = duplicate + 1
        elseif body:find("triggered", 1, true) then
            triggered = triggered + 1
        end
    end
end
function done(summary, latency, requests)
    local t = { ok = 0, accepted = 0, duplicate = 0, triggered = 0 }
    for _, th in ipairs(threads) do
        for k in pairs(t) do t[k] = t[k] + th:get(k) end
    end
    io.write(string.format("COUNTS ok=%d accepted=%d duplicate=%d triggered=%d\n",
        t.ok, t.accepted, t.duplicate, t.triggered))
end
EOF
}
make_lua "$WORK/unique.lua" unique

# run_wrk URL LUA [PID]: runs wrk at $CONNS connections for SECONDS_PER_RUN, samples PID's
# RSS into MAX_RSS, and sets W_SECS W_TOTAL W_NON W_TIMEOUTS W_P50 W_P99 W_OK W_ACC W_DUP
# W_TRIG.
run_wrk() {
    local url=$1 lua=$2 watch=${3:-} out=$WORK/wrk.out r
    wrk -t"$THREADS" -c"$CONNS" -d"${SECONDS_PER_RUN}s" --latency -s "$lua" "$url" >"$out" 2>&1 &
    local wrk_pid=$!
    MAX_RSS=0
    while kill -0 "$wrk_pid" 2>/dev/null; do
        if [[ -n $watch ]]; then
            r=$(rss_kib "$watch")
            if ((r > MAX_RSS)); then MAX_RSS=$r; fi
        fi
        sleep 0.2
    done
    wait "$wrk_pid" || { cat "$out" >&2; fail "wrk failed against $url"; }
    grep -q '^COUNTS' "$out" || { cat "$out" >&2; fail "wrk printed no counts for $url"; }
    eval "$(awk '
        function ms(v) { if (v ~ /us$/) return v / 1000; if (v ~ /ms$/) return v + 0; if (v ~ /s$/) return v * 1000; return v }
        /requests in/ { total = $1; secs = $4; sub(/s,?$/, "", secs) }
        /^ +50%/ { p50 = ms($2) }
        /^ +99%/ { p99 = ms($2) }
        /Non-2xx/ { non = $5 }
        /Socket errors/ { to = $NF }
        /^COUNTS/ { for (i = 2; i <= NF; i++) { split($i, kv, "="); c[kv[1]] = kv[2] } }
        END {
            printf "W_TOTAL=%d W_SECS=%s W_NON=%d W_TIMEOUTS=%d W_P50=%.2f W_P99=%.2f ", total, secs, non + 0, to + 0, p50, p99
            printf "W_OK=%d W_ACC=%d W_DUP=%d W_TRIG=%d\n", c["ok"], c["accepted"], c["duplicate"], c["triggered"]
        }
    ' "$out")"
    log "wrk $url: $W_TOTAL responses in $W_SECS s, 2xx $W_OK (accepted $W_ACC, duplicate $W_DUP, triggered $W_TRIG), non-2xx $W_NON, timeouts $W_TIMEOUTS"
}

# expect_all_accepted WHAT: every answer of the last wrk run was 2xx "accepted".
expect_all_accepted() {
    if ((W_ACC == 0 || W_ACC != W_TOTAL || W_DUP > 0 || W_NON > 0)); then
        fail "$1: of $W_TOTAL answers only $W_ACC said accepted ($W_DUP duplicate, $W_NON non-2xx): every request was a new event"
    fi
}

# wait_deliveries WANT BEFORE_A BEFORE_B WHAT: waits until each receiver has WANT more POSTs
# than before, for at most DRAIN_TIMEOUT s; fails saying how many arrived.
wait_deliveries() {
    local want=$1 ba=$2 bb=$3 what=$4 t0 a b
    t0=$(now)
    while :; do
        a=$(($(count_at "$RECV_A") - ba))
        b=$(($(count_at "$RECV_B") - bb))
        if ((a >= want && b >= want)); then
            GOT_A=$a GOT_B=$b
            return 0
        fi
        if awk -v a="$t0" -v b="$(now)" -v l="$DRAIN_TIMEOUT" 'BEGIN {exit !(b - a > l)}'; then
            fail "$what: only $((a + b)) of $((2 * want)) deliveries arrived ($a at receiver a, $b at b) within $DRAIN_TIMEOUT s after the load stopped; no rate reported"
        fi
        sleep 0.05
    done
}

# What one durable acknowledgement costs on this disk, at least.
fsync_probe() {
    python3 - "$WORK" <<'PY'
import os, sys, time
fd = os.open(os.path.join(sys.argv[1], "fsync-probe"), os.O_WRONLY | os.O_CREAT, 0o644)
ts = []
for _ in range(100):
    os.write(fd, b"x" * 65536)
    t = time.perf_counter(); os.fdatasync(fd); ts.append((time.perf_counter() - t) * 1000)
ts.sort()
os.close(fd)
os.unlink(os.path.join(sys.argv[1], "fsync-probe"))
print("p50 %.1f ms, p99 %.1f ms" % (ts[50], ts[98]))
PY
}
FSYNC_LAT=$(fsync_probe)
log "fdatasync: $FSYNC_LAT; load average $LOAD_START"

# ---------------------------------------------------------------- receivers, references
start_bare receiver-a
RECV_A=$BARE_ADDR
start_bare receiver-b
RECV_B=$BARE_ADDR
start_bare reference
REF_ADDR=$BARE_ADDR
REF_PID=$BARE_PID
log "receivers on $RECV_A and $RECV_B, reference bare server on $REF_ADDR"

run_wrk "http://$REF_ADDR/webhooks/view" "$WORK/unique.lua"
((W_OK > 0 && W_NON == 0)) || fail "the bare server answered $W_OK 2xx, $W_NON non-2xx"
BARE_RATE=$(num "$(awk -v n="$W_OK" -v s="$W_SECS" 'BEGIN {print n / s}')")
row "bare hyper server (ingest reference)" "$BARE_RATE req/s" "p50 $W_P50 ms, p99 $W_P99 ms"
kill -TERM "$REF_PID"

# The peer: webhook 2.8, one hook that checks X-KEY and video_token and runs /bin/true.
WH_PORT=$(free_port)
cat >"$WORK/hooks.json" <<EOF
[{
  "id": "view",
  "execute-command": "/bin/true",
  "response-message": "triggered",
  "trigger-rule-mismatch-http-response-code": 400,
  "trigger-rule": { "and": [
    { "match": { "type": "value", "value": "aVOfEGmGrZlG", "parameter": { "source": "payload", "name": "video_token" } } },
    { "match": { "type": "value", "value": "$KEY", "parameter": { "source": "header", "name": "X-KEY" } } }
  ] }
}]
EOF
webhook -hooks "$WORK/hooks.json" -ip 127.0.0.1 -port "$WH_PORT" >"$WORK/webhook.log" 2>&1 &
WH_PID=$!
PIDS+=("$WH_PID")
for _ in $(seq 1 200); do curl -s -o /dev/null "http://127.0.0.1:$WH_PORT/" && break; sleep 0.05; done
cpu0=$(cpu_ticks "$WH_PID")
run_wrk "http://127.0.0.1:$WH_PORT/hooks/view" "$WORK/unique.lua" "$WH_PID"
if ((W_TRIG == 0 || W_TRIG != W_TOTAL)); then
    fail "webhook: of $W_TOTAL answers only $W_TRIG said the hook was triggered ($W_NON non-2xx)"
fi
PEER_RATE=$(num "$(awk -v n="$W_TRIG" -v s="$W_SECS" 'BEGIN {print n / s}')")
PEER_CPU=$(us_per_event $(($(cpu_ticks "$WH_PID") - cpu0)) "$W_TRIG")
row "peer: webhook 2.8, rule on video_token, runs /bin/true" "$PEER_RATE req/s" "p50 $W_P50 ms, p99 $W_P99 ms; $PEER_CPU us CPU per event (with its /bin/true children); RSS $(mib "$MAX_RSS") MiB"
kill -TERM "$WH_PID"
wait "$WH_PID" 2>/dev/null || true

# ---------------------------------------------------------------- durable ingest, delivery held back
cfg=$(write_config held held)
start_daemon "$cfg" held
sleep 1
RSS_IDLE=$(rss_kib "$HR_PID")
cpu0=$(cpu_ticks "$HR_PID")
run_wrk "http://$HR_ADDR/webhooks/view" "$WORK/unique.lua" "$HR_PID"
expect_all_accepted "ingest with delivery held back"
HELD_CPU=$(us_per_event $(($(cpu_ticks "$HR_PID") - cpu0)) "$W_ACC")
queued=$(pending_jobs "$(cat "$WORK/held.admin")")
# rate_limit 1/h still lets one job per destination through at once.
((queued >= 2 * W_ACC - 2)) || fail "ingest with delivery held back: $W_ACC events accepted, but GET /queue shows $queued jobs (want $((2 * W_ACC - 2)) or more)"
HELD_RATE=$(num "$(awk -v n="$W_ACC" -v s="$W_SECS" 'BEGIN {print n / s}')")
row "durable ingest, delivery held back (fan-out 2, rate_limit 1/h), $CONNS conns" "$HELD_RATE events/s: $(pct "$HELD_RATE" "$BARE_RATE") of bare, $(times_of "$HELD_RATE" "$PEER_RATE") webhook" "p50 $W_P50 ms, p99 $W_P99 ms; all $W_ACC accepted, $queued jobs queued; $HELD_CPU us CPU per event"

# The resend path on the same daemon: one body again and again, every answer but the first
# must be "duplicate".
make_lua "$WORK/resend.lua" resend
run_wrk "http://$HR_ADDR/webhooks/view" "$WORK/resend.lua" "$HR_PID"
if ((W_ACC > 1 || W_DUP == 0 || W_ACC + W_DUP != W_TOTAL || W_NON > 0)); then
    fail "resends: of $W_TOTAL answers $W_ACC accepted and $W_DUP duplicate ($W_NON non-2xx): want 1 accepted, the rest duplicate"
fi
DUP_RATE=$(num "$(awk -v n="$W_OK" -v s="$W_SECS" 'BEGIN {print n / s}')")
row "resends: the same body every time (duplicate path), $CONNS conns" "$DUP_RATE req/s: $(pct "$DUP_RATE" "$BARE_RATE") of bare" "p50 $W_P50 ms, p99 $W_P99 ms; $W_ACC accepted, $W_DUP duplicate"
stop_daemon

# ---------------------------------------------------------------- ingest while forwarding, end to end
cfg=$(write_config forward live)
start_daemon "$cfg" forward
sleep 1
ba=$(count_at "$RECV_A")
bb=$(count_at "$RECV_B")
cpu0=$(cpu_ticks "$HR_PID")
t0=$(now)
run_wrk "http://$HR_ADDR/webhooks/view" "$WORK/unique.lua" "$HR_PID"
expect_all_accepted "ingest while forwarding"
t_load=$(since "$t0")
at_stop=$(($(count_at "$RECV_A") - ba + $(count_at "$RECV_B") - bb))
FWD_P50=$W_P50 FWD_P99=$W_P99 FWD_ACC=$W_ACC RSS_LOAD=$MAX_RSS
FWD_RATE=$(num "$(awk -v n="$W_ACC" -v s="$W_SECS" 'BEGIN {print n / s}')")
wait_deliveries "$W_ACC" "$ba" "$bb" "end to end"
E2E_SECS=$(since "$t0")
FWD_CPU=$(us_per_event $(($(cpu_ticks "$HR_PID") - cpu0)) "$FWD_ACC")
E2E=$(num "$(awk -v n="$FWD_ACC" -v s="$E2E_SECS" 'BEGIN {print n / s}')")
stop_daemon
row "durable ingest while forwarding (fan-out 2, two live receivers), $CONNS conns" "$FWD_RATE events/s: $(pct "$FWD_RATE" "$BARE_RATE") of bare, $(times_of "$FWD_RATE" "$PEER_RATE") webhook" "p50 $FWD_P50 ms, p99 $FWD_P99 ms; all $FWD_ACC accepted; $at_stop of $((2 * FWD_ACC)) deliveries done when the load stopped after $t_load s"

# ---------------------------------------------------------------- nginx proxy_pass
mkdir -p "$WORK/nginx"
NGINX_PORT=$(free_port)
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
    upstream receiver { server $RECV_A; keepalive 64; }
    server {
        listen 127.0.0.1:$NGINX_PORT;
        location / {
            proxy_pass http://receiver;
            proxy_http_version 1.1;
            proxy_set_header Connection "";
        }
    }
}
EOF
nginx -e "$WORK/nginx/error.log" -c "$WORK/nginx.conf" -p "$WORK/nginx" -g 'daemon off;' 2>>"$WORK/nginx/error.log" &
NGINX_PID=$!
for _ in $(seq 1 200); do curl -s -o /dev/null "http://127.0.0.1:$NGINX_PORT/" && break; sleep 0.05; done
before=$(count_at "$RECV_A")
run_wrk "http://127.0.0.1:$NGINX_PORT/webhooks/view" "$WORK/unique.lua"
ngx_fwd=$(($(count_at "$RECV_A") - before))
((W_OK > 0 && W_NON == 0 && ngx_fwd >= W_OK)) || fail "nginx: $W_OK 2xx, $W_NON non-2xx, $ngx_fwd reached the receiver"
NGX=$(num "$(awk -v n="$W_OK" -v s="$W_SECS" 'BEGIN {print n / s}')")
kill -TERM "$NGINX_PID"
wait "$NGINX_PID" 2>/dev/null || true
NGINX_PID=
row "nginx proxy_pass to the receiver (end-to-end reference, stores nothing)" "$NGX forwarded/s" "p50 $W_P50 ms, p99 $W_P99 ms; $ngx_fwd reached the receiver"
row "end to end, fan-out 2: first POST until both receivers hold every delivery" "$E2E events/s ($((2 * E2E)) deliveries/s): $(pct "$E2E" "$NGX") of nginx" "$FWD_ACC events counted by wrk, $((GOT_A + GOT_B)) deliveries (want $((2 * FWD_ACC)); more: requests in flight when wrk stopped counting) in $E2E_SECS s; deliveries/s are $(pct $((2 * E2E)) "$NGX") of nginx's forwards"

# The floor of forwarding with the chosen crates: a bare hyper server that sends each body
# on to both receivers with reqwest and does nothing else (examples/forward_floor.rs).
FLOOR_PORT=$(free_port)
"$FLOOR" "127.0.0.1:$FLOOR_PORT" "http://$RECV_A/a" "http://$RECV_B/b" >/dev/null 2>>"$WORK/floor.log" &
FLOOR_PID=$!
PIDS+=("$FLOOR_PID")
for _ in $(seq 1 200); do curl -s -o /dev/null "http://127.0.0.1:$FLOOR_PORT/" && break; sleep 0.05; done
ba=$(count_at "$RECV_A")
bb=$(count_at "$RECV_B")
cpu0=$(cpu_ticks "$FLOOR_PID")
t0=$(now)
run_wrk "http://127.0.0.1:$FLOOR_PORT/webhooks/view" "$WORK/unique.lua"
((W_OK > 0 && W_NON == 0)) || fail "forward floor: $W_OK 2xx, $W_NON non-2xx"
FLOOR_RATE=$(num "$(awk -v n="$W_OK" -v s="$W_SECS" 'BEGIN {print n / s}')")
wait_deliveries "$W_OK" "$ba" "$bb" "forward floor"
FLOOR_E2E=$(num "$(awk -v n="$W_OK" -v s="$(since "$t0")" 'BEGIN {print n / s}')")
FLOOR_CPU=$(us_per_event $(($(cpu_ticks "$FLOOR_PID") - cpu0)) "$W_OK")
kill -TERM "$FLOOR_PID"
wait "$FLOOR_PID" 2>/dev/null || true
row "forward floor: bare hyper + two reqwest POSTs per request, nothing stored (reference)" "$FLOOR_RATE req/s: $(pct "$FLOOR_RATE" "$BARE_RATE") of bare" "end to end $FLOOR_E2E events/s ($(pct "$FLOOR_E2E" "$NGX") of nginx); $FLOOR_CPU us CPU per request in and out; p50 $W_P50 ms, p99 $W_P99 ms"
row "daemon CPU per event (utime+stime, /proc/PID/stat)" "$FWD_CPU us in and out (fan-out 2)" "$HELD_CPU us with delivery held back; webhook: $PEER_CPU us; the forward floor: $FLOOR_CPU us (hookrouter spends $(times_of "$FWD_CPU" "$FLOOR_CPU") that)"

# ---------------------------------------------------------------- p99 at a fixed rate, while delivering
OL_SECS=$((SECONDS_PER_RUN * 2))
cfg=$(write_config openloop live)
start_daemon "$cfg" openloop
sleep 1
ba=$(count_at "$RECV_A")
bb=$(count_at "$RECV_B")
ol=$("$LOADGEN" --unique @ID@ "$HR_ADDR" /webhooks/view "$KEY" "$BODY" "$CONNS" "$RATE" "$OL_SECS")
log "open loop: $ol"
OL_ACC=$(jget accepted "$ol")
OL_SENT=$(jget sent "$ol")
OL_ERR=$(jget errors "$ol")
OL_DUP=$(jget duplicate "$ol")
((OL_ACC > 0 && OL_ACC == OL_SENT && OL_ERR == 0 && OL_DUP == 0)) ||
    fail "open loop: $OL_SENT sent, $OL_ACC accepted, $OL_DUP duplicate, $OL_ERR errors: every request was a new event"
wait_deliveries "$OL_ACC" "$ba" "$bb" "open loop"
OL_P99=$(jget p99_ms "$ol")
row "p99 at a fixed $RATE req/s while delivering (open loop, fan-out 2, $OL_SECS s)" "p99 $OL_P99 ms" "p50 $(jget p50_ms "$ol") ms, p90 $(jget p90_ms "$ol") ms, max $(jget max_ms "$ol") ms; $OL_ACC accepted at $(jget rps "$ol") req/s, all $((2 * OL_ACC)) delivered"
stop_daemon

# ---------------------------------------------------------------- long outage: a backlog for a down destination
EVENTS=$((PENDING / 2))
PORT=$(free_port)
cfg=$(write_config pending down "$PORT")
PADMIN=$(cat "$WORK/pending.admin")
start_daemon "$cfg" pending
log "queueing $PENDING jobs ($EVENTS events x 2 destinations) for a down destination"
t0=$(now)
seed=$("$LOADGEN" --unique @ID@ "$HR_ADDR" /webhooks/view "$KEY" "$BODY" "$CONNS" 0 86400 "$EVENTS")
SEED_SECS=$(since "$t0")
log "seeded in $SEED_SECS s: $seed"
SEED_ACC=$(jget accepted "$seed")
((SEED_ACC == EVENTS)) || fail "backlog: $SEED_ACC of $EVENTS events accepted ($seed)"
JOBS=$((2 * SEED_ACC))
sleep 5
RSS_PENDING=$(rss_kib "$HR_PID")
queued=$(pending_jobs "$PADMIN")
((queued >= JOBS)) || fail "backlog: $JOBS jobs acknowledged but GET /queue shows $queued"
stop_daemon
DISK=$(du_b "$WORK/pending-data")
SEED_RATE=$(num "$(awk -v n="$JOBS" -v s="$SEED_SECS" 'BEGIN {print n / s}')")
row "queue $JOBS jobs for a down destination ($SEED_ACC events x 2)" "$SEED_SECS s ($SEED_RATE jobs/s)" "$(num "$(awk -v d="$DISK" -v n="$JOBS" 'BEGIN {print d / n}')") disk bytes per pending job ($((DISK / 1048576)) MiB, du -sb after a clean stop); RSS $(mib "$RSS_PENDING") MiB with them pending"

# Start to ready with that backlog, after a clean stop and then after kill -9: until /healthz
# answers, and until the ready line (which carries the count of pending jobs).
for how in SIGTERM kill-9; do
    t0=$(now)
    : >"$WORK/restart-$how.log"
    RUST_LOG=${BENCH_RUST_LOG:-warn,hookrouter=info} "$BIN" serve --config "$cfg" 2>>"$WORK/restart-$how.log" >/dev/null &
    HR_PID=$!
    PIDS+=("$HR_PID")
    t_health=
    while :; do
        curl -sf -o /dev/null "http://127.0.0.1:$PORT/healthz" && { t_health=$(since "$t0"); break; }
        kill -0 "$HR_PID" 2>/dev/null || fail "restart after $how: the daemon exited ($(tail -3 "$WORK/restart-$how.log"))"
        if awk -v a="$t0" -v b="$(now)" 'BEGIN {exit !(b - a > 300)}'; then fail "restart after $how: /healthz did not answer within 300 s"; fi
        sleep 0.01
    done
    wait_for "$WORK/restart-$how.log" 'hookrouter is ready.*pending=[0-9]+' 300 "$HR_PID" >/dev/null
    t_ready=$(since "$t0")
    seen=$(grep -aoE 'hookrouter is ready.*pending=[0-9]+' "$WORK/restart-$how.log" | head -1 | sed 's/.*pending=//')
    ((seen >= JOBS)) || fail "restart after $how: the ready line says pending=$seen, but $JOBS jobs were acknowledged"
    sleep 5
    rss=$(rss_kib "$HR_PID")
    if [[ $how == SIGTERM ]]; then
        READY_CLEAN=$t_ready RSS_RESTART_CLEAN=$rss
        kill -9 "$HR_PID"
        wait "$HR_PID" 2>/dev/null || true
    else
        READY_CRASH=$t_ready RSS_RESTART_CRASH=$rss
        stop_daemon
    fi
    row "start to ready after $how, $JOBS pending" "$t_ready s to the ready line" "/healthz answered after $t_health s; ready line pending=$seen; RSS 5 s later $(mib "$rss") MiB"
done
rm -rf "$WORK/pending-data"

row "RSS: idle / under forwarding load / $JOBS pending / after a restart with them" "$(mib "$RSS_IDLE") / $(mib "$RSS_LOAD") / $(mib "$RSS_PENDING") / $(mib "$RSS_RESTART_CLEAN") (SIGTERM), $(mib "$RSS_RESTART_CRASH") (kill -9) MiB" "server.store_cache_bytes at its default; peak under load sampled every 0.2 s"

# ---------------------------------------------------------------- disk after retention
# retention and dedupe_window 5s: once every delivery has arrived and 5 s have passed,
# everything is purgeable. du -sb is sampled every second for the peak.
cfg=$(write_config retention live 0 "retention: 5s" "dedupe_window: 5s")
RADMIN=$(cat "$WORK/retention.admin")
start_daemon "$cfg" retention
ba=$(count_at "$RECV_A")
bb=$(count_at "$RECV_B")
first=$(sed "s/@ID@/bench-first-$(date +%s%N)/" "$BODY" | curl -sf -H "X-KEY: $KEY" -H 'Content-Type: application/json' --data-binary @- "http://$HR_ADDR/webhooks/view")
FIRST_ID=$(sed -n 's/.*"event_id":"\([^"]*\)".*/\1/p' <<<"$first")
grep -q '"status":"accepted"' <<<"$first" || fail "retention: the first event was not accepted: $first"
log "retention: sending $RETENTION_EVENTS events (retention 5s)"
"$LOADGEN" --unique @ID@ "$HR_ADDR" /webhooks/view "$KEY" "$BODY" "$CONNS" 0 86400 "$RETENTION_EVENTS" >"$WORK/retention.out" &
lg=$!
PIDS+=("$lg")
PEAK=0
while kill -0 "$lg" 2>/dev/null; do
    d=$(du_b "$WORK/retention-data")
    if ((d > PEAK)); then PEAK=$d; fi
    sleep 1
done
wait "$lg" || fail "retention: loadgen failed"
ret=$(cat "$WORK/retention.out")
R_ACC=$(jget accepted "$ret")
((R_ACC == RETENTION_EVENTS)) || fail "retention: $R_ACC of $RETENTION_EVENTS events accepted ($ret)"
wait_deliveries $((R_ACC + 1)) "$ba" "$bb" "retention"
d=$(du_b "$WORK/retention-data")
if ((d > PEAK)); then PEAK=$d; fi
t_done=$(now)
# Give the purge retention + BENCH_PURGE_WAIT s; stop early once the first event is gone and
# the size has not changed for 10 s.
purged=no stable=0 last=$d
while awk -v a="$t_done" -v b="$(now)" -v l="$((PURGE_WAIT + 5))" 'BEGIN {exit !(b - a < l)}'; do
    sleep 2
    d=$(du_b "$WORK/retention-data")
    if ((d > PEAK)); then PEAK=$d; fi
    code=$(curl -s -o /dev/null -w '%{http_code}' "http://$RADMIN/events/$FIRST_ID")
    [[ $code == 404 ]] && purged=yes
    if ((d == last)); then stable=$((stable + 2)); else stable=0; fi
    last=$d
    if [[ $purged == yes ]] && ((stable >= 10)); then break; fi
done
AFTER=$d
AFTER_WAIT=$(since "$t_done")
stop_daemon
AFTER_STOP=$(du_b "$WORK/retention-data")
RET_PCT=$(pct "$AFTER" "$PEAK")
if [[ $purged == yes ]]; then purge_note="the first event answers 404 in GET /events (purged)"; else purge_note="the first event was still readable in GET /events: not purged"; fi
row "disk after retention (5s) passed for $((R_ACC + 1)) delivered events" "$RET_PCT of the peak" "du -sb: peak $((PEAK / 1048576)) MiB, $AFTER_WAIT s after the last delivery $((AFTER / 1048576)) MiB, after a clean stop $((AFTER_STOP / 1048576)) MiB; $purge_note"
rm -rf "$WORK/retention-data"

LOAD_END=$(cut -d' ' -f1-3 /proc/loadavg)
FSYNC_LAT_END=$(fsync_probe)

# ---------------------------------------------------------------- targets (issue 10)
TARGETS=()
target() { TARGETS+=("| $1 | $2 | $3 | $4 |"); }
verdict() { if awk "BEGIN {exit !($1)}"; then echo "hit"; else echo "**miss**"; fi; }
# at_1m CONDITION: a verdict only for a run with 1,000,000 jobs pending.
at_1m() { if ((JOBS >= 1000000)); then verdict "$1"; else echo "not judged: only $JOBS pending (BENCH_PENDING=1000000 for the target)"; fi; }
r=$(awk -v a="$FWD_RATE" -v b="$BARE_RATE" 'BEGIN {print a / b}')
p=$(awk -v a="$FWD_RATE" -v b="$PEER_RATE" 'BEGIN {print a / b}')
target "durable ingest while forwarding, fan-out 2, $CONNS conns" "$(pct "$FWD_RATE" "$BARE_RATE") of bare hyper ($FWD_RATE vs $BARE_RATE); $(times_of "$FWD_RATE" "$PEER_RATE") webhook ($PEER_RATE)" ">= 35% of bare hyper; >= 3x webhook" "$(verdict "$r >= 0.35 && $p >= 3")"
r=$(awk -v a="$E2E" -v b="$NGX" 'BEGIN {print a / b}')
target "end to end (first POST to every delivery), fan-out 2" "$(pct "$E2E" "$NGX") of nginx ($E2E events/s vs $NGX forwarded/s)" ">= 50% of nginx" "$(verdict "$r >= 0.5")"
target "daemon CPU per event, in and out (fan-out 2)" "$FWD_CPU us" "<= 60 us" "$(verdict "$FWD_CPU <= 60")"
if ((JOBS >= 1000000)); then
    if awk -v s="$SEED_SECS" 'BEGIN {exit !(s <= 240)}'; then in240="all within 240 s"; else in240="about $(num "$(awk -v r="$SEED_RATE" 'BEGIN {print r * 240}')") by 240 s"; fi
    target "jobs queued for a down destination within 240 s" "$JOBS in $SEED_SECS s ($in240)" "1,000,000" "$(verdict "$SEED_SECS <= 240")"
else
    target "jobs queued for a down destination within 240 s" "$SEED_RATE jobs/s over $JOBS jobs (1,000,000 would take $(num "$(awk -v r="$SEED_RATE" 'BEGIN {print 1e6 / r}')") s; measured with BENCH_PENDING=$PENDING)" "1,000,000 (4,167 jobs/s)" "$(verdict "$SEED_RATE >= 4167")"
fi
bpj=$(num "$(awk -v d="$DISK" -v n="$JOBS" 'BEGIN {print d / n}')")
target "disk per pending job ($(wc -c <"$SAMPLE") B body, fan-out 2)" "$bpj B" "<= 1,000 B" "$(verdict "$bpj <= 1000")"
worst=$RSS_RESTART_CLEAN
((RSS_RESTART_CRASH > worst)) && worst=$RSS_RESTART_CRASH
target "RSS with $JOBS pending / after a restart" "$(mib "$RSS_PENDING") / $(mib "$worst") MiB" "< 100 MiB with 1,000,000, also right after a restart" "$(at_1m "$RSS_PENDING < 102400 && $worst < 102400")"
target "start until every pending job is counted (ready line), $JOBS pending: after SIGTERM / after kill -9" "$READY_CLEAN s / $READY_CRASH s" "< 2 s with 1,000,000" "$(at_1m "$READY_CLEAN < 2 && $READY_CRASH < 2")"
target "disk after retention has passed for everything" "$RET_PCT of its peak" "<= 20% of its peak" "$(verdict "$AFTER <= 0.2 * $PEAK")"
target "p99 ingest at $RATE req/s while delivering" "$OL_P99 ms" "< 10 ms" "$(verdict "$OL_P99 < 10")"

# ---------------------------------------------------------------- report
{
    echo "# hookrouter benchmark results"
    echo
    echo "Produced by \`bench/run.sh\` on $(date -u '+%Y-%m-%d %H:%M UTC') (commit $(cd "$ROOT" && git rev-parse --short HEAD)), BENCH_SECONDS=$SECONDS_PER_RUN, BENCH_PENDING=$PENDING, BENCH_RETENTION_EVENTS=$RETENTION_EVENTS."
    echo
    echo "Machine: $(nproc) cores, $(grep -m1 'model name' /proc/cpuinfo | cut -d: -f2 | xargs), $(awk '/MemTotal/ {printf "%.0f GiB", $2 / 1048576}' /proc/meminfo), Linux $(uname -r), $(df -T "$WORK" | awk 'NR == 2 {print $2}') file system."
    echo "Load average at the start: $LOAD_START; at the end: $LOAD_END (the machine is shared; absolute figures are noisy, ratios within one run less so)."
    echo "fdatasync latency of this disk (64 KiB writes): $FSYNC_LAT before the run, $FSYNC_LAT_END after it."
    echo "Load: wrk -t$THREADS -c$CONNS -d${SECONDS_PER_RUN}s with the sample view ($(wc -c <"$SAMPLE") bytes), a distinct \`id\` in every request (but in the resends row); every \"accepted\" from hookrouter is flushed and fdatasync'd; every answer, delivery and queued job is counted and checked."
    echo
    echo "| measurement | result | detail |"
    echo "|---|---|---|"
    printf '%s\n' "${ROWS[@]}"
    echo
    echo "### Targets (issue 10), from the rows above"
    echo
    echo "| what | today | target | met? |"
    echo "|---|---|---|---|"
    printf '%s\n' "${TARGETS[@]}"
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
