#!/usr/bin/env bash
# The Spin check, by hand (CI has no Spin CLI): `SPIN=/path/to/spin tests/spin/check.sh [redis]`.
# Builds the manifest with `spin build`, starts a Tributary host as the warehouse (internal listener on
# 127.0.0.1:3001, where the pipeline adapter sends insertAll), the Pub/Sub emulator, and `spin up` on
# 127.0.0.1:3000 (state in Spin's SQLite store, or with `redis` in a local redis-server through
# runtime-config.redis.toml); pushes to every route, checks the rows, restarts `spin up`, sends a burst of
# concurrent pushes counted through state, and checks that ticks close what was opened before the
# restart; then runs examples/spin-udf (a JavaScript UDF step) against the same host. Everything runs under
# a temporary directory; about 4 minutes once built.
set -euo pipefail
cd "$(dirname "$0")/../.."
: "${SPIN:?set SPIN to a Spin CLI (4.x)}"
mode="${1:-sqlite}"
work="$(mktemp -d)"
pids=()
cleanup() { for p in "${pids[@]}"; do kill "$p" 2>/dev/null || true; done; wait 2>/dev/null || true; }
trap cleanup EXIT
step() { printf '\n== %s (%s)\n' "$1" "$(date +%H:%M:%S)"; }
wait_http() { for _ in $(seq 1 "${2:-120}"); do curl -s -o /dev/null "$1" && return 0; sleep 0.5; done; echo "no answer from $1" >&2; exit 1; }

step "spin build ($("$SPIN" --version))"
(unset CARGO_TARGET_DIR; "$SPIN" build)
step "the Tributary host (the warehouse)"
cargo build -q --bin tributary
export TRIBUTARY="${CARGO_TARGET_DIR:-target}/debug/tributary"
"$TRIBUTARY" up --listen 127.0.0.1:3100 --admin-listen 127.0.0.1:3001 --data "$work/host" >"$work/host.log" 2>&1 &
pids+=($!)
wait_http http://127.0.0.1:3100/healthz
step "the Pub/Sub emulator"
/usr/lib/google-cloud-sdk/platform/pubsub-emulator/bin/cloud-pubsub-emulator --host=127.0.0.1 --port=8086 \
  >"$work/emulator.log" 2>&1 &
pids+=($!)
export PUBSUB_EMULATOR_HOST=127.0.0.1:8086
wait_http http://127.0.0.1:8086/
spin_args=(--listen 127.0.0.1:3000 --state-dir "$work/spin-state"
  --variable session_gap_minutes=1 --variable lateness_seconds=5 --variable idle_close_seconds=5)
if [[ $mode == redis ]]; then
  step "redis-server for Spin's key-value store"
  redis-server --port 6379 --save "" >"$work/redis.log" 2>&1 &
  pids+=($!)
  spin_args+=(--runtime-config-file runtime-config.redis.toml)
fi
start_spin() {
  "$SPIN" up "${spin_args[@]}" >>"$work/spin.log" 2>&1 &
  spin_pid=$!
  wait_http http://127.0.0.1:3000/push/events
}
step "spin up (state: $mode)"
start_spin
run="r$(date +%s)"
step "pushes to every route, and the rows they make"
timeout 5m python3 tests/spin/check.py publish "$run"
step "spin up, restarted"
kill "$spin_pid"; wait "$spin_pid" 2>/dev/null || true
sleep 65 # past the 1-minute session gap and the burst's minute
start_spin
pids+=("$spin_pid")
step "after the restart: a burst counted through state, ticks closing what state kept"
timeout 3m python3 tests/spin/check.py verify "$run"
step "examples/spin-udf: a JavaScript UDF step under spin up (its spin build needs wac)"
(cd examples/spin-udf && unset CARGO_TARGET_DIR && PATH="${TRIBUTARY_TOOLS:-$HOME/.cache/tributary/tools/bin}:$PATH" "$SPIN" build)
(cd examples/spin-udf && SPIN_VARIABLE_UDF_SOURCE="$(cat scrub.js)" exec "$SPIN" up --listen 127.0.0.1:3006 \
  --state-dir "$work/spin-udf-state" >>"$work/spin-udf.log" 2>&1) &
pids+=($!)
wait_http http://127.0.0.1:3006/push/events 360
timeout 3m python3 tests/spin/check.py udf "$run" http://127.0.0.1:3006
echo "Spin check passed ($mode); logs in $work"
