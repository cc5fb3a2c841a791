#!/usr/bin/env bash
# Memory and throughput against rows the host itself inserted (not prefilled): `tributary up` (embedded
# warehouse) under wrk at 64 connections (bench/push.lua: a new message id per push, so every push is a
# row and a new dedup key), for STEPS passes of SECONDS each; per pass, acked pushes/s and p99, then the
# rows in streaming_events and the host's RSS. Prints a table and the RSS slope per million rows.
#
# Usage: bench/rss_growth.sh BIN [CONFIG_TOML_LINES]   env: STEPS=6 SECONDS_PER_STEP=30 IDS=random
#   (IDS=random: random message ids instead of ones that grow with time, as Pub/Sub's do)
set -euo pipefail
bin=$1 steps=${STEPS:-6} seconds=${SECONDS_PER_STEP:-30}
here=$(cd "$(dirname "$0")" && pwd)
command -v wrk >/dev/null || { echo "wrk is needed: apt-get install -y wrk" >&2; exit 1; }
dir=$(mktemp -d) port=$((20000 + RANDOM % 20000))
trap 'kill $(jobs -p) 2>/dev/null || true; rm -rf "$dir"' EXIT
printf 'listen = "127.0.0.1:%s"\nadmin_listen = "127.0.0.1:%s"\ndata_dir = "%s"\n%b\n' "$port" $((port + 1)) "$dir/data" "${2:-}" > "$dir/t.toml"
"$bin" up --config "$dir/t.toml" >"$dir/log" 2>&1 &
pid=$!
for _ in $(seq 600); do curl -fs "http://127.0.0.1:$port/healthz" >/dev/null 2>&1 && break; sleep 0.2; done
rows() {
  "$bin" sql "SELECT count(*) AS n FROM streaming_events" --format json --admin "127.0.0.1:$((port + 1))" |
    sed -E 's/.*"n":([0-9]+).*/\1/'
}
rss() { echo $(( $(ps -o rss= -p "$pid") / 1024 )); }
echo "| rows inserted by the host | RSS MiB | acked/s in the pass before | p99 ms |"
echo "|---|---|---|---|"
first_rows=$(rows) first_rss=$(rss)
echo "| $first_rows | $first_rss | | |"
for _ in $(seq "$steps"); do
  result=$(timeout $((seconds + 60)) wrk -t2 -c64 -d"${seconds}s" --timeout 10s -s "$here/push.lua" \
    "http://127.0.0.1:$port/push/events" | grep '^RESULT')
  acked=$(sed -E 's/.*acked_per_s=([0-9]+).*/\1/' <<<"$result") p99=$(sed -E 's/.*p99_ms=([0-9.]+).*/\1/' <<<"$result")
  sleep 2 # the loader's last batch
  last_rows=$(rows) last_rss=$(rss)
  echo "| $last_rows | $last_rss | $acked | $p99 |"
done
awk -v r0="$first_rows" -v m0="$first_rss" -v r1="$last_rows" -v m1="$last_rss" \
  'BEGIN { if (r1 > r0) printf "RSS slope: %.1f MiB per million rows inserted\n", (m1 - m0) / ((r1 - r0) / 1e6) }'
