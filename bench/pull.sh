#!/usr/bin/env bash
# Pull against push in one run, through Google's Pub/Sub emulator: N events are published with
# `tributary replay --topic` to a topic with a pull subscription ([[pull]], StreamingPull), then N more
# to a topic with a push subscription to the same host; each phase is timed from the first publish to
# the last row in streaming_events. Usage: bench/pull.sh BIN [N]
set -euo pipefail
bin=$1 n=${2:-20000}
emulator=/usr/lib/google-cloud-sdk/platform/pubsub-emulator/bin/cloud-pubsub-emulator
dir=$(mktemp -d) port=$((20000 + RANDOM % 20000))
ps_port=$((port + 2)) api="http://127.0.0.1:$((port + 2))/v1/projects/bench"
"$emulator" --host=127.0.0.1 --port=$ps_port >"$dir/emulator.log" 2>&1 &
epid=$!
trap 'kill $hpid $epid 2>/dev/null; rm -rf "$dir"' EXIT
for _ in $(seq 120); do curl -fs "$api/topics" >/dev/null 2>&1 && break; sleep 0.5; done
curl -fs -X PUT "$api/topics/pulled" >/dev/null
curl -fs -X PUT "$api/topics/pushed" >/dev/null
curl -fs -X PUT "$api/subscriptions/pulled" -H 'content-type: application/json' \
  -d '{"topic":"projects/bench/topics/pulled","ackDeadlineSeconds":60}' >/dev/null
printf 'listen = "127.0.0.1:%s"\nadmin_listen = "127.0.0.1:%s"\ndata_dir = "%s/data"\n[[pull]]\nsubscription = "projects/bench/subscriptions/pulled"\nroute = "/push/events"\n' \
  "$port" $((port + 1)) "$dir" > "$dir/t.toml"
PUBSUB_EMULATOR_HOST=127.0.0.1:$ps_port "$bin" up --config "$dir/t.toml" >"$dir/host.log" 2>&1 &
hpid=$!
for _ in $(seq 600); do curl -fs "http://127.0.0.1:$port/healthz" >/dev/null 2>&1 && break; sleep 0.1; done
curl -fs -X PUT "$api/subscriptions/pushed" -H 'content-type: application/json' \
  -d "{\"topic\":\"projects/bench/topics/pushed\",\"pushConfig\":{\"pushEndpoint\":\"http://127.0.0.1:$port/push/events\"}}" >/dev/null
python3 - "$dir/events.jsonl" "$n" <<'EOF'
import json, sys
with open(sys.argv[1], "w") as f:
    for i in range(int(sys.argv[2])):
        f.write(json.dumps({"user_id": f"u{i % 997}", "event_type": "page_view", "timestamp": "2026-01-01T10:00:00Z", "n": i}) + "\n")
EOF
rows() { curl -fs "http://127.0.0.1:$((port + 1))/query" -d "SELECT count(*) AS n FROM streaming_events" | python3 -c 'import json,sys; print(json.load(sys.stdin)["rows"][0]["n"])'; }
cpu() { awk '{printf "%.1f", ($14 + $15) / 100}' "/proc/$1/stat"; } # user+system seconds (USER_HZ 100)
phase() { # TOPIC WANT
  local t0 tp t1 h0 e0
  h0=$(cpu $hpid) e0=$(cpu $epid)
  t0=$(date +%s.%N)
  PUBSUB_EMULATOR_HOST=127.0.0.1:$ps_port "$bin" replay "$dir/events.jsonl" --topic "projects/bench/topics/$1" --concurrency 8 >/dev/null
  tp=$(date +%s.%N)
  until [[ $(rows) -ge $2 ]]; do sleep 0.2; done
  t1=$(date +%s.%N)
  awk -v n="$n" -v s="$(echo "$t1 - $t0" | bc)" -v p="$(echo "$tp - $t0" | bc)" -v what="$1" \
    'BEGIN {printf "%s: %d events in %.1f s = %.0f events/s (publishing took %.1f s, draining after it %.1f s)\n", what, n, s, n / s, p, s - p}'
  echo "  CPU seconds meanwhile: host $(echo "$(cpu $hpid) - $h0" | bc), emulator $(echo "$(cpu $epid) - $e0" | bc)"
}
phase pulled "$n"
phase pushed $((2 * n))
