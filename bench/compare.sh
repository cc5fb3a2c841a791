#!/usr/bin/env bash
# Same-run throughput of two `tributary` binaries under an external load generator (wrk, unique
# message ids, embedded warehouse): BASE and NEW alternate ROUNDS times on fresh data dirs, and the
# medians and their ratio are printed. Usage: bench/compare.sh BASE_BIN NEW_BIN [ROUNDS] [SECONDS] [CONNS]
set -euo pipefail
base=$1 new=$2 rounds=${3:-3} seconds=${4:-15} conns=${5:-64}
here=$(cd "$(dirname "$0")" && pwd)
command -v wrk >/dev/null || { echo "wrk is needed: apt-get install -y wrk" >&2; exit 1; }
run() { # BIN → "acked_per_s p50 p99"
  local bin=$1 dir port
  dir=$(mktemp -d) port=$((20000 + RANDOM % 20000))
  printf 'listen = "127.0.0.1:%s"\nadmin_listen = "127.0.0.1:%s"\ndata_dir = "%s"\n' "$port" $((port + 1)) "$dir" > "$dir/t.toml"
  "$bin" up --config "$dir/t.toml" >"$dir/log" 2>&1 &
  local pid=$!
  for _ in $(seq 200); do curl -fs "http://127.0.0.1:$port/healthz" >/dev/null 2>&1 && break; sleep 0.1; done
  wrk -t2 -c"$conns" -d2s -s "$here/push.lua" "http://127.0.0.1:$port/push/events" >/dev/null # warm-up
  local out
  out=$(timeout $((seconds + 30)) wrk -t2 -c"$conns" -d"${seconds}s" -s "$here/push.lua" "http://127.0.0.1:$port/push/events" | grep '^RESULT')
  kill "$pid"; wait "$pid" 2>/dev/null || true
  rm -rf "$dir"
  echo "$out" | sed -E 's/.*acked_per_s=([0-9]+) p50_ms=([0-9.]+) p99_ms=([0-9.]+) not_204=([0-9]+).*/\1 \2 \3 \4/'
}
median() { sort -n | awk '{a[NR]=$1} END {print (NR % 2) ? a[(NR+1)/2] : (a[NR/2] + a[NR/2+1]) / 2}'; }
: > /tmp/compare.base; : > /tmp/compare.new
for r in $(seq "$rounds"); do
  b=$(run "$base"); n=$(run "$new")
  echo "round $r: base $b | new $n  (acked/s p50_ms p99_ms not_204)"
  echo "$b" >> /tmp/compare.base; echo "$n" >> /tmp/compare.new
done
mb=$(cut -d' ' -f1 /tmp/compare.base | median); mn=$(cut -d' ' -f1 /tmp/compare.new | median)
pb=$(cut -d' ' -f2 /tmp/compare.base | median); pn=$(cut -d' ' -f2 /tmp/compare.new | median)
echo "median acked/s: base $mb, new $mn, ratio $(awk "BEGIN {printf \"%.3f\", $mn / $mb}")"
echo "median p50 ms: base $pb, new $pn"
