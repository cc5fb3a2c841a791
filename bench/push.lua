-- wrk script: POSTs wrapped Pub/Sub push envelopes, each with a message id no other request has (so
-- every request is a new row, never a dedup hit). Usage: wrk -s bench/push.lua -c64 -d15s URL
-- The ids grow with time, as Pub/Sub's do; with IDS=random in the environment they are random instead
-- (no order at all: the worst case for the dedup key index).
local threads = {}

function setup(thread)
  thread:set("tid", #threads)
  table.insert(threads, thread)
end

function init(args)
  prefix = "wrk-" .. os.time() .. "-" .. tid .. "-"
  random_ids = os.getenv("IDS") == "random"
  math.randomseed(os.time() * 100 + tid)
  counter = 0
  failed = 0
end

wrk.method = "POST"
wrk.headers["Content-Type"] = "application/json"
-- {"event_type":"page_view","user_id":"u1","timestamp":"2024-01-01T10:00:00Z","page_url":"/home"}
local data = "eyJldmVudF90eXBlIjoicGFnZV92aWV3IiwidXNlcl9pZCI6InUxIiwidGltZXN0YW1wIjoiMjAyNC0wMS0wMVQxMDowMDowMFoiLCJwYWdlX3VybCI6Ii9ob21lIn0="

function request()
  counter = counter + 1
  local id = prefix .. counter
  if random_ids then
    id = string.format("%08x%08x-%d", math.random(0, 0x7fffffff), math.random(0, 0x7fffffff), counter)
  end
  local body = '{"subscription":"projects/bench/subscriptions/wrk","message":{"data":"' .. data ..
    '","messageId":"' .. id .. '","publishTime":"2024-01-01T10:00:00Z"}}'
  return wrk.format(nil, nil, nil, body)
end

function response(status, headers, body)
  if status ~= 204 then
    failed = failed + 1
  end
end

function done(summary, latency, requests)
  local failed_total = 0
  for _, t in ipairs(threads) do
    failed_total = failed_total + t:get("failed")
  end
  io.write(string.format("RESULT acked_per_s=%.0f p50_ms=%.2f p99_ms=%.2f not_204=%d\n",
    (summary.requests - failed_total) / (summary.duration / 1e6), latency:percentile(50) / 1000,
    latency:percentile(99) / 1000, failed_total))
end
