#!/usr/bin/env bash
# Latency of GET /dashboard/data (a fresh computation each time: Cache-Control: no-cache) against
# `tributary demo` with ROWS older events backfilled into streaming_events and live traffic on top.
# Usage: bench/dashboard.sh BIN ROWS [REQUESTS]   e.g. bench/dashboard.sh target/debug/tributary 1000000
set -euo pipefail
bin=$1 rows=$2 requests=${3:-50}
dir=$(mktemp -d) port=$((20000 + RANDOM % 20000))
printf 'listen = "127.0.0.1:%s"\nadmin_listen = "127.0.0.1:%s"\n' "$port" $((port + 1)) > "$dir/t.toml"
"$bin" demo --config "$dir/t.toml" --data "$dir/data" --history-rows "$rows" --rate "${RATE:-40}" >"$dir/log" 2>&1 &
pid=$!
trap 'kill $pid 2>/dev/null; wait $pid 2>/dev/null; rm -rf "$dir"' EXIT
url="http://127.0.0.1:$((port + 1))/dashboard/data"
for _ in $(seq 3600); do curl -fs "$url" >/dev/null 2>&1 && break; sleep 0.5; done
sleep 10 # live traffic in the window
: > "$dir/times"
for _ in $(seq "$requests"); do
  curl -fs -o /dev/null -H 'cache-control: no-cache' -w '%{time_total}\n' "$url" >> "$dir/times"
done
rss=$(ps -o rss= -p "$pid")
total=$(curl -fs "$url" | python3 -c 'import json,sys; d=json.load(sys.stdin); print(d["total_events"], d["status"]["query_ms"])')
sort -n "$dir/times" | awk -v rows="$rows" -v rss="$rss" -v total="$total" '{a[NR]=$1*1000}
  END {printf "rows=%s requests=%d p50_ms=%.1f p90_ms=%.1f max_ms=%.1f rss_mib=%.0f (window events, query_ms: %s)\n",
       rows, NR, a[int((NR+1)/2)], a[int(NR*0.9)], a[NR], rss/1024, total}'
