#!/usr/bin/env bash
# Real webhooks under a slowloris + idle flood (issue 18). Not part of CI; short.
#
#   bench/flood.sh                          # about a minute
#   FLOOD_BIN=/path/to/other/hookrouter bench/flood.sh   # the same against another build
#
# Settings (environment): FLOOD_SLOWLORIS (1100), FLOOD_IDLE (2000), FLOOD_SECONDS (10: each
# phase), FLOOD_RATE (50 real webhooks per second), FLOOD_SOURCES (4: loopback addresses the
# attackers connect from, 127.0.0.2...), FLOOD_BIN (the release build of this checkout).
#
# One run, on 127.0.0.1, with the daemon at its defaults (max_connections 1024,
# header_read_timeout 10s) and one destination held back (rate_limit 1/h: ingest only):
# FLOOD_SECONDS of real webhooks without any attack (the reference), then the attackers
# connect (each one the daemon closes connects again at once) and FLOOD_SECONDS more. Every
# real webhook is a new event on a new connection; latency runs from when it should have
# been sent to its whole answer (examples/flood.rs). Prints one JSON line per phase and
# the ratio of the p99s; exits 1 if a real webhook was not answered 200 accepted. The
# daemon is stopped by its pid on exit.
set -euo pipefail

ROOT=$(cd "$(dirname "$0")/.." && pwd)
WORK=$(mktemp -d /tmp/hookrouter-flood.XXXXXX)
PIDS=()
cleanup() {
    local pid
    for pid in "${PIDS[@]}"; do kill -TERM "$pid" 2>/dev/null || true; done
    sleep 0.3
    for pid in "${PIDS[@]}"; do kill -9 "$pid" 2>/dev/null || true; done
    rm -rf "$WORK"
}
trap cleanup EXIT

(cd "$ROOT" && cargo build --release --quiet --bin hookrouter --example flood)
BIN=${FLOOD_BIN:-$ROOT/target/release/hookrouter}
FLOOD=$ROOT/target/release/examples/flood

cat >"$WORK/routes.yaml" <<EOF
server:
  listen: 127.0.0.1:0
  admin_listen: 127.0.0.1:0
  data_dir: $WORK/data
keys: ["flood-key"]
destinations:
  held: { url: "http://127.0.0.1:1/held", rate_limit: 1/h }
routes:
  - { name: all, event: view, to: [held] }
EOF

# Each attacking connection is a descriptor on both sides.
ulimit -n 65536 2>/dev/null || ulimit -n "$(ulimit -Hn)"
# One log line per webhook, as in production.
RUST_LOG=warn,hookrouter=info "$BIN" serve --config "$WORK/routes.yaml" 2>"$WORK/log" >/dev/null &
PIDS+=($!)
ADDR=
for _ in $(seq 1 600); do
    ADDR=$(grep -aoE 'hookrouter is ready addr=[0-9.:]+' "$WORK/log" 2>/dev/null | sed 's/.*addr=//' || true)
    [[ -n $ADDR ]] && break
    kill -0 "${PIDS[0]}" 2>/dev/null || break
    sleep 0.1
done
[[ -n $ADDR ]] || { cat "$WORK/log" >&2; echo "flood: the daemon did not start" >&2; exit 1; }
echo "flood: daemon $BIN on $ADDR (load $(cut -d' ' -f1-3 /proc/loadavg))" >&2
"$FLOOD" "$ADDR" flood-key "$ROOT/examples/view.json" "${FLOOD_SLOWLORIS:-1100}" \
    "${FLOOD_IDLE:-2000}" "${FLOOD_SECONDS:-10}" "${FLOOD_RATE:-50}" "${FLOOD_SOURCES:-4}" |
    tee "$WORK/out"
status=${PIPESTATUS[0]}
python3 - "$WORK/out" <<'EOF'
import json, sys
rows = {r["phase"]: r for r in map(json.loads, open(sys.argv[1]))}
q, f = rows.get("quiet"), rows.get("flood")
if q and f and q["p99_ms"] > 0:
    print(f"p99 quiet {q['p99_ms']:.1f} ms, under the flood {f['p99_ms']:.1f} ms "
          f"({f['p99_ms'] / q['p99_ms']:.2f}x); max {f['max_ms']:.1f} ms; "
          f"{f['ok']}/{f['sent']} accepted")
EOF
echo "flood: load at the end $(cut -d' ' -f1-3 /proc/loadavg)" >&2
exit "$status"
