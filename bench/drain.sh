#!/usr/bin/env bash
# Start to ready after kill -9 while a large backlog drains (issue 10's leftover: the
# checkpoint waits for the draining lane, so a crash then replays the journal from there).
# Not part of CI; about a minute.
#
#   bench/drain.sh                      # EVENTS=500000 RATE=2000/1s DRAIN_SECS=10 HELD_SECS=35
#   BIN=/path/to/other/hookrouter bench/drain.sh
#
# One destination, rate-limited to 1/h while EVENTS events are queued (a backlog held in
# the journal), then restarted with RATE: while it drains, after DRAIN_SECS, kill -9, and
# the time from the new start to the ready line (which counts every pending job) is
# printed with the store's replay log line, beside the same run's reference: kill -9 with
# the same backlog held (nothing draining). Exits non-zero if a step fails. Every process
# is stopped by its pid on exit.
set -euo pipefail
ROOT=$(cd "$(dirname "$0")/.." && pwd)
(cd "$ROOT" && cargo build --release --quiet --bin hookrouter --example bare_server --example loadgen)
BIN=${BIN:-$ROOT/target/release/hookrouter}
BARE=$ROOT/target/release/examples/bare_server
LOADGEN=$ROOT/target/release/examples/loadgen
EVENTS=${EVENTS:-500000}
RATE=${RATE:-2000/1s}
WORK=$(mktemp -d /tmp/drain.XXXXXX)
PIDS=()
cleanup() { for p in "${PIDS[@]}"; do kill -TERM "$p" 2>/dev/null || true; done; sleep 0.3; rm -rf "$WORK"; }
trap cleanup EXIT
now() { date +%s.%N; }
since() { awk -v a="$1" -v b="$(now)" 'BEGIN {printf "%.2f", b - a}'; }
wait_line() { local f=$1 re=$2; for _ in $(seq 1 30000); do grep -aqE "$re" "$f" 2>/dev/null && { grep -aoE "$re" "$f" | head -1; return 0; }; sleep 0.01; done; echo "timeout $re" >&2; tail "$f" >&2; exit 1; }
"$BARE" 127.0.0.1:0 >"$WORK/recv.out" 2>&1 & PIDS+=($!)
RECV=$(wait_line "$WORK/recv.out" 'listening [0-9.:]+' | awk '{print $2}')
KEY=drain-key
cfg() {
  cat >"$WORK/routes.yaml" <<EOC
server:
  listen: 127.0.0.1:0
  admin_listen: 127.0.0.1:0
  data_dir: $WORK/data
  max_connections: 4096
  max_queue: 2000000
keys: ["$KEY"]
destinations:
  a: { url: "http://$RECV/a", rate_limit: $1 }
routes:
  - { name: all, event: view, to: [a] }
EOC
}
start() { : >"$WORK/$1.log"; RUST_LOG=warn,hookrouter=info "$BIN" serve --config "$WORK/routes.yaml" 2>>"$WORK/$1.log" >/dev/null & HR=$!; PIDS+=($HR); }
sed 's/"id": *"[^"]*"/"id": "@ID@"/' $ROOT/examples/view.json > "$WORK/body.json"
grep -q @ID@ "$WORK/body.json" || { echo "no id placeholder"; exit 1; }
cfg 1/h
start seed
ADDR=$(wait_line "$WORK/seed.log" 'hookrouter is ready addr=[0-9.:]+' | sed 's/.*addr=//')
echo "seeding $EVENTS events (held)"
seed=$("$LOADGEN" --unique @ID@ "$ADDR" /webhooks/view "$KEY" "$WORK/body.json" 32 0 86400 "$EVENTS")
echo "$seed"
grep -q "\"accepted\":$EVENTS," <<<"$seed" || { echo "drain: not every event was accepted" >&2; exit 1; }
# The reference, same run: kill -9 with the backlog held (nothing draining), once the
# lane's jobs have waited the 30 s after which they go back to the journal's overflow, so
# the checkpoint passes them (bench/run.sh's restart rows are of that kind).
sleep "${HELD_SECS:-35}"
kill -9 $HR; wait $HR 2>/dev/null || true
t0=$(now)
start held
held_line=$(wait_line "$WORK/held.log" 'hookrouter is ready.*pending=[0-9]+')
ref=$(since "$t0")
# At most the one job rate_limit 1/h let through was delivered.
((${held_line##*pending=} >= EVENTS - 1)) || { echo "drain: the held restart counts only ${held_line##*pending=} of $EVENTS pending" >&2; exit 1; }
echo "reference: ready after kill -9 with the backlog held: $ref s"
grep -a "journal replayed\|store opened" "$WORK/held.log" | head -2
kill -TERM $HR; wait $HR || true
cfg "$RATE"
start drain
wait_line "$WORK/drain.log" 'hookrouter is ready.*pending=[0-9]+'
sleep ${DRAIN_SECS:-10}
received=$(curl -sf "http://$RECV/__count")
echo "delivered before the kill: $received"
((received > 0)) || { echo "drain: nothing was delivered: the backlog was not draining" >&2; exit 1; }
kill -9 $HR; wait $HR 2>/dev/null || true
t0=$(now)
start crash
line=$(wait_line "$WORK/crash.log" 'hookrouter is ready.*pending=[0-9]+')
took=$(since "$t0")
pending=${line##*pending=}
# Every event not delivered before the kill is still pending (deliveries in flight at the
# kill may be counted on both sides).
((pending + received >= EVENTS - 1)) || { echo "drain: pending=$pending + delivered $received < $EVENTS" >&2; exit 1; }
echo "ready after kill -9 during the drain: $took s ($line)"
awk -v a="$took" -v b="$ref" 'BEGIN {printf "during the drain / held: %.2fx\n", a / b}'
grep -a "journal replayed\|store opened" "$WORK/crash.log" | head -2
