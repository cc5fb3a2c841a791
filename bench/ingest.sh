#!/usr/bin/env bash
# Ingest benchmark: two `tributary` binaries (BASE and NEW) under an external load generator (wrk,
# unique message ids, embedded warehouse) in one run, at each table size (rows already in
# streaming_events). Per binary and size: the HTTP front's ceiling (GET /healthz), acked pushes/s with
# p50/p99 at each concurrency in LEVELS (the latency-vs-load curve), the host's RSS, and a check that
# the table holds the prefill plus every acked push, each once. Results go to OUT/results.csv, a table is
# printed, and bench/chart.py draws OUT/ingest.svg.
#
# Usage: bench/ingest.sh BASE_BIN NEW_BIN [OUT_DIR]
#   env: SIZES="0 1000000 10000000"  LEVELS="1 4 16 64"  SECONDS=8
set -euo pipefail
base=$1 new=$2 out=${3:-bench-out}
sizes=${SIZES:-0 1000000 10000000} levels=${LEVELS:-1 4 16 64} seconds=${SECONDS_PER_LEVEL:-8}
here=$(cd "$(dirname "$0")" && pwd)
command -v wrk >/dev/null || { echo "wrk is needed: apt-get install -y wrk" >&2; exit 1; }
mkdir -p "$out"
csv="$out/results.csv"
echo "size,binary,concurrency,acked_per_s,p50_ms,p99_ms,not_204,healthz_per_s,rss_mib,rows_check" > "$csv"
scratch=$(mktemp -d)
trap 'kill $(jobs -p) 2>/dev/null || true; rm -rf "$scratch"' EXIT

wrk_push() { # URL CONNS SECONDS → "acked p50 p99 not204"
  local threads=$(( $2 < 2 ? 1 : 2 ))
  timeout $(( $3 + 60 )) wrk -t"$threads" -c"$2" -d"$3s" --timeout 10s -s "$here/push.lua" "$1" | grep '^RESULT' |
    sed -E 's/.*acked_per_s=([0-9]+) p50_ms=([0-9.]+) p99_ms=([0-9.]+) not_204=([0-9]+).*/\1 \2 \3 \4/'
}

run() { # NAME BIN SIZE TEMPLATE_DIR
  local name=$1 bin=$2 size=$3 template=$4 dir port pid
  dir="$scratch/run-$name-$size" port=$((20000 + RANDOM % 20000))
  rm -rf "$dir"; mkdir -p "$dir"
  [[ -d $template ]] && cp -r "$template" "$dir/data"
  printf 'listen = "127.0.0.1:%s"\nadmin_listen = "127.0.0.1:%s"\ndata_dir = "%s"\n' "$port" $((port + 1)) "$dir/data" > "$dir/t.toml"
  "$bin" up --config "$dir/t.toml" >"$dir/log" 2>&1 &
  pid=$!
  for _ in $(seq 600); do curl -fs "http://127.0.0.1:$port/healthz" >/dev/null 2>&1 && break; sleep 0.2; done
  local url="http://127.0.0.1:$port/push/events"
  wrk_push "$url" 64 2 >/dev/null # warm-up (its rows count too)
  local healthz
  healthz=$(timeout 60 wrk -t2 -c64 -d5s "http://127.0.0.1:$port/healthz" | awk '/Requests\/sec/ {printf "%.0f", $2}')
  local acked_total=0 lines=()
  for c in $levels; do
    read -r acked p50 p99 not204 < <(wrk_push "$url" "$c" "$seconds")
    lines+=("$size,$name,$c,$acked,$p50,$p99,$not204")
    printf '  %-4s size=%-9s c=%-3s %7s acked/s  p50 %6s ms  p99 %6s ms  (not 204: %s)\n' "$name" "$size" "$c" "$acked" "$p50" "$p99" "$not204"
  done
  local rss
  rss=$(( $(ps -o rss= -p "$pid") / 1024 ))
  # Every acked push is one row: the table holds the prefill plus at least the host's acked pushes,
  # each once; at most the pushes still in flight when each wrk pass stopped come on top (written, but
  # their connection was closed before the answer).
  local rows distinct acked_metric in_flight=64
  for c in $levels; do in_flight=$((in_flight + c)); done
  acked_metric=$(curl -fs "http://127.0.0.1:$port/metrics" | awk '/^tributary_pushes_total\{.*outcome="acked"/ {s += $2} END {printf "%.0f", s}')
  read -r rows distinct < <("$new" sql "SELECT count(*) AS n, count(DISTINCT _insert_id) AS d FROM streaming_events" --format json --admin "127.0.0.1:$((port + 1))" |
    sed -E 's/.*"n":([0-9]+).*"d":([0-9]+).*/\1 \2/')
  local ok=no extra=$((rows - size - acked_metric))
  [[ $rows -eq $distinct && $extra -ge 0 && $extra -le $in_flight ]] && ok=yes
  printf '  %-4s size=%-9s /healthz %s req/s, RSS %s MiB, rows %s (distinct %s) = %s prefill + %s acked + %s in flight at a wrk stop: %s\n' \
    "$name" "$size" "$healthz" "$rss" "$rows" "$distinct" "$size" "$acked_metric" "$extra" "$ok"
  kill "$pid"; wait "$pid" 2>/dev/null || true
  for l in "${lines[@]}"; do echo "$l,$healthz,$rss,$ok" >> "$csv"; done
  rm -rf "$dir"
}

for size in $sizes; do
  echo "== table size $size ($(date +%H:%M:%S))"
  for name in base new; do
    # Each binary prefills its own data dir: their table layouts may differ.
    bin=$base; [[ $name == new ]] && bin=$new
    template="$scratch/template-$name-$size"
    if [[ $size -gt 0 ]]; then
      echo "   $name: prefilling $size rows ($(date +%H:%M:%S))"
      "$bin" load history "$size" --data "$template" 2>&1 | tail -1
    fi
    run "$name" "$bin" "$size" "$template"
    rm -rf "$template"
  done
done

echo
echo "| rows before | binary | concurrency | acked/s | p50 ms | p99 ms | /healthz req/s | RSS MiB | every ack once |"
echo "|---|---|---|---|---|---|---|---|---|"
tail -n +2 "$csv" | awk -F, '{printf "| %s | %s | %s | %s | %s | %s | %s | %s | %s |\n", $1, $2, $3, $4, $5, $6, $8, $9, $10}'
if [[ -x ${BENCH_PYTHON:-} ]]; then
  "$BENCH_PYTHON" "$here/chart.py" "$csv" "$out/ingest.svg" && echo "chart: $out/ingest.svg"
fi
