"""The Spin check's traffic and verdicts (tests/spin/check.sh starts the processes).

Pub/Sub emulator push subscriptions to every route of `spin up`, then the rows in the Tributary host's
warehouse: events, sensor readings and their anomaly and aggregate, recommendations built from state,
after a restart of `spin up`, a burst of concurrent pushes counted exactly once through state, and ticks
that close the sessions opened before the restart (state kept in Spin's key-value store).

And examples/spin-udf (a JavaScript UDF step in front of the transform): a rewrite reaching the row, a
dropped message, a throwing UDF's message dead-lettered with stage `udf`.

usage: check.py publish RUN | check.py verify RUN | check.py udf RUN URL
"""
import base64, json, os, subprocess, sys, time, urllib.request

EMULATOR = os.environ["PUBSUB_EMULATOR_HOST"]
PROJECT = "spin-check"
SPIN = os.environ.get("SPIN_URL", "http://127.0.0.1:3000")
TRIBUTARY = os.environ["TRIBUTARY"]
BURST = 400

def call(method, url, body=None):
    data = None if body is None else json.dumps(body).encode()
    req = urllib.request.Request(url, method=method, data=data, headers={"content-type": "application/json"})
    with urllib.request.urlopen(req, timeout=30) as r:
        return r.read()

def topic(name):
    base = f"http://{EMULATOR}/v1/projects/{PROJECT}"
    call("PUT", f"{base}/topics/{name}")
    return base

def subscribe(name, route):
    base = f"http://{EMULATOR}/v1/projects/{PROJECT}"
    sub = f"{name}-{route.strip('/').replace('/', '-')}"
    call("PUT", f"{base}/subscriptions/{sub}", {"topic": f"projects/{PROJECT}/topics/{name}",
         "pushConfig": {"pushEndpoint": SPIN + route}, "ackDeadlineSeconds": 10})

def publish(name, payloads):
    base = f"http://{EMULATOR}/v1/projects/{PROJECT}"
    for i in range(0, len(payloads), 100):
        msgs = [{"data": base64.b64encode(json.dumps(p).encode()).decode()} for p in payloads[i:i + 100]]
        call("POST", f"{base}/topics/{name}:publish", {"messages": msgs})
    print(f"  published {len(payloads)} to {name}", flush=True)

def iso(t):
    return time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(t))

def sql(query):
    out = subprocess.run([TRIBUTARY, "sql", "--format", "json", query], check=True, capture_output=True, text=True)
    return [json.loads(line) for line in out.stdout.splitlines() if line.startswith("{")]

def count(table, where="true"):
    return sql(f"select count(*) as n from {table} where {where}")[0]["n"]

def publish_all(run):
    for name, routes in {f"events-{run}": ["/push/events", "/push/anomaly", "/push/recommend", "/push/sessions"],
                         f"sensors-{run}": ["/push/sensors"], f"products-{run}": ["/push/products"],
                         f"burst-{run}": ["/push/metrics", "/push/events"]}.items():
        topic(name)
        for route in routes:
            subscribe(name, route)
    now = time.time()
    publish(f"products-{run}", [{"product_id": f"{run}-p{i}", "product_name": f"P{i}", "category": f"{run}-books",
                                 "popularity_score": 10 - i, "status": "active"} for i in range(5)])
    time.sleep(2)
    publish(f"events-{run}", [{"event_type": "page_view" if i % 2 else "add_to_cart", "user_id": f"{run}-u{u}",
                               "session_id": f"{run}-s{u}", "timestamp": iso(now - 60 + i), "page_url": f"/p/{i}",
                               "properties": {"product_id": f"{run}-p{i % 5}"}} for u in range(3) for i in range(6)])
    readings = [{"sensor_id": f"{run}-t1", "sensor_type": "temperature", "location": f"{run}-hall",
                 "timestamp": iso(now - 300 + i * 10), "value": 21.0 + (i % 3) * 0.1, "unit": "C"} for i in range(30)]
    readings.append(dict(readings[0], timestamp=iso(now - 300 + 310), value=45.0))
    publish(f"sensors-{run}", readings)

def burst(run):
    """BURST events of one minute, pushed concurrently to /push/metrics (and /push/events, to see them
    all delivered), then a wait until that minute is over and its pushes are done."""
    now = time.time()
    publish(f"burst-{run}", [{"event_type": f"burst_{run}", "user_id": f"{run}-b{i % 7}", "session_id": f"{run}-b{i % 7}",
                              "timestamp": iso(now), "page_url": "/b"} for i in range(BURST)])
    wait_for(f"the {BURST} burst events delivered",
             lambda: count("streaming_events", f"event_type = 'burst_{run}'") == BURST or
             count("streaming_events", f"event_type = 'burst_{run}'"))
    time.sleep(max(0.0, 60 - now % 60) + 10)

def wait_for(what, check, seconds=60):
    deadline = time.time() + seconds
    while True:
        got = check()
        if got is True:
            print(f"  ok: {what}", flush=True)
            return
        if time.time() > deadline:
            sys.exit(f"FAILED: {what}: {got}")
        time.sleep(1)

def landed(run):
    wait_for("18 events in streaming_events", lambda: count("streaming_events", f"user_id like '{run}-u%'") == 18 or
             count("streaming_events", f"user_id like '{run}-u%'"))
    wait_for("31 readings in sensor_readings", lambda: count("sensor_readings", f"sensor_id = '{run}-t1'") == 31 or
             count("sensor_readings", f"sensor_id = '{run}-t1'"))
    wait_for("the 45 °C reading is an anomaly", lambda: count("sensor_anomalies", f"sensor_id = '{run}-t1'") == 1 or
             count("sensor_anomalies", f"sensor_id = '{run}-t1'"))
    wait_for("recommendations for the 3 users", lambda: count("realtime_user_recs", f"user_id like '{run}-u%'") == 3 or
             count("realtime_user_recs", f"user_id like '{run}-u%'"))
    wait_for("no dead letters", lambda: count("dead_letter") == 0 or count("dead_letter"))

def ticked(run):
    burst(run)
    for route in ["/push/sessions/tick", "/push/metrics/tick", "/push/sensors/tick"]:
        call("POST", SPIN + route)
    wait_for("the 3 sessions opened before the restart are closed",
             lambda: count("user_sessions", f"user_id like '{run}-u%'") == 3 or count("user_sessions", f"user_id like '{run}-u%'"))
    wait_for(f"the burst of {BURST} concurrent pushes counted once each",
             lambda: (sql(f"select sum(events_count) as n from streaming_metrics where event_type = 'burst_{run}'")[0]["n"] == BURST)
             or sql(f"select sum(events_count) as n from streaming_metrics where event_type = 'burst_{run}'"))
    wait_for("a 5-minute aggregate for the sensor's location",
             lambda: count("sensor_aggregates", f"location = '{run}-hall'") >= 1 or count("sensor_aggregates", f"location = '{run}-hall'"))

def udf(run, url):
    name = f"udf-{run}"
    topic(name)
    base = f"http://{EMULATOR}/v1/projects/{PROJECT}"
    call("PUT", f"{base}/subscriptions/{name}", {"topic": f"projects/{PROJECT}/topics/{name}",
         "pushConfig": {"pushEndpoint": url + "/push/events"}, "ackDeadlineSeconds": 10})
    user = f"{run}-udf"
    publish(name, [{"event_type": "page_view", "user_id": user, "email": "a@example.com",
                    "page_url": "/a?token=secret", "timestamp": iso(time.time())},
                   {"event_type": "heartbeat", "user_id": user, "timestamp": iso(time.time())}])
    msgs = [{"data": base64.b64encode(b"not json").decode(), "attributes": {"run": run}}]
    call("POST", f"{base}/topics/{name}:publish", {"messages": msgs})
    wait_for("the rewritten event (query string cut, email deleted), the heartbeat dropped",
             lambda: sql(f"select page_url, properties from streaming_events where user_id = '{user}'") ==
             [{"page_url": "/a", "properties": {}}] or sql(f"select page_url, properties from streaming_events where user_id = '{user}'"))
    wait_for("the message the UDF threw on, dead-lettered with stage udf",
             lambda: count("dead_letter", f"stage = 'udf' and payload_text = 'not json' and error_message like 'scrub.js: scrub threw%'") == 1
             or sql("select stage, error_message from dead_letter"))

if __name__ == "__main__":
    {"publish": lambda r: (publish_all(r), landed(r)), "verify": ticked, "udf": lambda r: udf(r, sys.argv[3])}[
        sys.argv[1]](sys.argv[2])
