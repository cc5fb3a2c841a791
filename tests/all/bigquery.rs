//! Both BigQuery backends against a real BigQuery-protocol server (`local-bigquery`), with Google's
//! Pub/Sub emulator pushing to the host and the official `google-cloud-bigquery` client
//! (`tests/bigquery_verify.py`) as the outside check.

use std::time::Duration;

use serde_json::{Value, json};

use crate::support::{BigQueryEmulator, FaultProxy, Host, Outage, PubSub, envelope, http_raw, temp_dir, wait_for};

const PROJECT: &str = "tributary-test";

fn events(n: usize) -> Vec<(Vec<u8>, Value)> {
    let types = ["page_view", "click", "add_to_cart", "purchase"];
    let mut out = vec![(
        br#"{"user_id":"12345","event_type":"page_view","timestamp":"2024-01-01 10:00:00","page_url":"/home","session_id":"session_123"}"#.to_vec(),
        json!({"source": "web"}),
    )];
    for i in 1..n {
        let body = json!({
            "user_id": format!("user_{}", i % 17),
            "event_type": types[i % types.len()],
            "timestamp": format!("2024-01-01T10:{:02}:{:02}Z", (i / 60) % 60, i % 60),
            "session_id": format!("s{}", i % 23),
            "amount": i,
        });
        out.push((body.to_string().into_bytes(), json!({})));
    }
    out
}

async fn wait_rows(bq: &BigQueryEmulator, sql: &str, want: i64, what: &str) {
    wait_for(what, Duration::from_secs(240), || {
        let n = bq.count(sql);
        async move { (n >= want).then_some(()) }
    })
    .await;
}

/// Every message lands once although each is delivered twice (a wrapped and a no-wrapper
/// subscription share the topic), malformed ones land in `dead_letter`, and direct redeliveries add nothing.
async fn lands_once(backend: &str, extra: &str) {
    let bq = BigQueryEmulator::start(PROJECT).await;
    let pubsub = PubSub::start().await;
    let host = Host::start(&temp_dir(backend), &bq.host_config(backend, extra)).await;
    pubsub.create_topic("events").await;
    pubsub.create_push_subscription("events-wrapped", "events", &host.push_url(), false).await;
    pubsub.create_push_subscription("events-raw", "events", &host.push_url(), true).await;
    let mut corpus = events(240);
    corpus.extend((0..10).map(|i| (format!("not json {i}").into_bytes(), json!({}))));
    let ids = pubsub.publish("events", &corpus).await;

    wait_rows(&bq, "SELECT COUNT(DISTINCT message_id) FROM tributary.streaming_events", 240, "240 events in BigQuery")
        .await;
    wait_rows(&bq, "SELECT COUNT(DISTINCT message_id) FROM tributary.dead_letter", 10, "10 dead letters").await;
    // Let the second subscription's deliveries finish, then push a few again by hand.
    tokio::time::sleep(Duration::from_secs(3)).await;
    for (id, (data, _)) in ids.iter().zip(&corpus).take(5) {
        let body = envelope(id, data, "projects/tributary-test/subscriptions/by-hand");
        let (status, text) = http_raw("POST", &host.push_url(), body.into_bytes(), &[]).await;
        assert_eq!(status, 204, "redelivery acked: {text}");
    }
    assert_eq!(bq.count("SELECT COUNT(*) FROM tributary.streaming_events"), 240, "no duplicates");
    assert_eq!(bq.count("SELECT COUNT(*) FROM tributary.dead_letter"), 10, "no duplicate dead letters");

    let seed = bq.query(&format!(
        "SELECT event_id, user_id, event_type, FORMAT_TIMESTAMP('%Y-%m-%dT%H:%M:%S', timestamp) AS ts, session_id, page_url, \
         _insert_id FROM tributary.streaming_events WHERE message_id = '{}'",
        ids[0]
    ));
    assert_eq!(
        seed,
        vec![json!({"event_id": ids[0], "user_id": "12345", "event_type": "page_view", "ts": "2024-01-01T10:00:00",
            "session_id": "session_123", "page_url": "/home", "_insert_id": ids[0]})]
    );
    // A payload field without a column stays in `properties`.
    let amount = bq.count(&format!(
        "SELECT CAST(JSON_VALUE(properties, '$.amount') AS INT64) FROM tributary.streaming_events WHERE message_id = '{}'",
        ids[7]
    ));
    assert_eq!(amount, 7);
    let reasons = bq.query("SELECT error_reason, stage, COUNT(*) AS n FROM tributary.dead_letter GROUP BY 1, 2");
    assert_eq!(reasons, vec![json!({"error_reason": "not-json", "stage": "transform", "n": 10})]);
    let schema = bq.verify("schema", "tributary.streaming_events");
    assert!(
        schema.as_array().expect("fields").contains(&json!({"name": "properties", "type": "JSON", "mode": "NULLABLE"}))
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn insertall_lands_every_message_once() {
    lands_once("bigquery-insertall", "").await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn storage_write_committed_lands_every_message_once() {
    lands_once("bigquery-write", "write_stream = \"committed\"").await;
}

/// A user transform (the chaos fixture's `row:` mode) emits rows BigQuery refuses and fields the table
/// lacks: refused rows are dead-lettered with BigQuery's reason and location, a new field becomes a
/// NULLABLE column, and a later value of the wrong type for it is a dead letter, not a retry loop.
async fn refusals_and_new_columns(backend: &str, extra: &str) {
    let bq = BigQueryEmulator::start(PROJECT).await;
    let pubsub = PubSub::start().await;
    let config = format!(
        "{}[components]\ntransform = \"{}\"\n",
        bq.host_config(backend, &format!("new_fields = \"add-column\"\n{extra}")),
        crate::support::CHAOS_TRANSFORM_PATH
    );
    let host = Host::start(&temp_dir(backend), &config).await;
    pubsub.create_topic("events").await;
    pubsub.create_push_subscription("events-user", "events", &host.push_url(), false).await;
    let ok = |id: &str, extra: &str| {
        format!(r#"row:{{"event_id":"{id}","event_type":"t","timestamp":"2024-01-01T00:00:00Z"{extra}}}"#).into_bytes()
    };
    pubsub.publish("events", &[(ok("plain", ""), json!({}))]).await;
    wait_rows(&bq, "SELECT COUNT(*) FROM tributary.streaming_events", 1, "the first row").await;
    pubsub
        .publish(
            "events",
            &[
                (ok("with-device", r#","device_model":"pixel-9""#), json!({})),
                (br#"row:{"event_id":"bad-ts","event_type":"t","timestamp":"not a time"}"#.to_vec(), json!({})),
            ],
        )
        .await;
    wait_rows(&bq, "SELECT COUNT(*) FROM tributary.streaming_events", 2, "the row with a new field").await;
    wait_rows(&bq, "SELECT COUNT(*) FROM tributary.dead_letter", 1, "the refused row").await;
    pubsub.publish("events", &[(ok("conflict", r#","device_model":{"v":1}"#), json!({}))]).await;
    wait_rows(&bq, "SELECT COUNT(*) FROM tributary.dead_letter", 2, "the type conflict").await;

    let schema = bq.verify("schema", "tributary.streaming_events");
    assert!(
        schema
            .as_array()
            .expect("fields")
            .contains(&json!({"name": "device_model", "type": "STRING", "mode": "NULLABLE"})),
        "{schema}"
    );
    assert_eq!(
        bq.query("SELECT event_id, device_model FROM tributary.streaming_events ORDER BY event_id"),
        vec![
            json!({"event_id": "plain", "device_model": null}),
            json!({"event_id": "with-device", "device_model": "pixel-9"})
        ]
    );
    let dead = bq
        .query("SELECT stage, error_reason, error_message, payload_text FROM tributary.dead_letter ORDER BY failed_at");
    assert_eq!(dead.len(), 2, "{dead:?}");
    assert_eq!((dead[0]["stage"].as_str(), dead[0]["error_reason"].as_str()), (Some("sink"), Some("invalid")));
    let message = dead[0]["error_message"].as_str().expect("message");
    assert!(
        message.contains("timestamp") && message.contains("not a time"),
        "BigQuery's reason and location: {message}"
    );
    assert!(dead[0]["payload_text"].as_str().expect("payload").contains("bad-ts"));
    let message = dead[1]["error_message"].as_str().expect("message");
    assert!(message.contains("device_model"), "the conflicting column is named: {message}");
    assert_eq!(host.metric("tributary_pushes_total", &["outcome=\"acked\""]).await, 4.0);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn insertall_dead_letters_refusals_and_adds_columns() {
    refusals_and_new_columns("bigquery-insertall", "").await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn storage_write_default_stream_dead_letters_refusals_and_adds_columns() {
    refusals_and_new_columns("bigquery-write", "write_stream = \"default\"").await;
}

/// SIGKILL in the middle of a run, restart on the same data dir, let Pub/Sub redeliver: with the
/// COMMITTED stream and its ledger, exactly one row per message.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn committed_stream_survives_sigkill_with_exactly_one_row_per_message() {
    let bq = BigQueryEmulator::start(PROJECT).await;
    let pubsub = PubSub::start().await;
    let data = temp_dir("sigkill-bq");
    let config = bq.host_config("bigquery-write", "write_stream = \"committed\"");
    let mut host = Host::start(&data, &config).await;
    let (addr, admin) = (host.addr, host.admin);
    pubsub.create_topic("events").await;
    pubsub.create_push_subscription("events-kill", "events", &host.push_url(), false).await;
    let corpus = events(400);
    pubsub.publish("events", &corpus).await;
    wait_rows(&bq, "SELECT COUNT(*) FROM tributary.streaming_events", 60, "some rows before the kill").await;
    host.kill();
    let before = bq.count("SELECT COUNT(*) FROM tributary.streaming_events");
    assert!(before < 400, "the kill should land mid-run, {before} rows were in already");
    let host = Host::start_at(&data, addr, admin, &config).await;
    wait_rows(&bq, "SELECT COUNT(*) FROM tributary.streaming_events", 400, "all 400 after the restart").await;
    tokio::time::sleep(Duration::from_secs(3)).await;
    assert_eq!(bq.count("SELECT COUNT(*) FROM tributary.streaming_events"), 400);
    assert_eq!(bq.count("SELECT COUNT(DISTINCT message_id) FROM tributary.streaming_events"), 400);
    drop(host);
}

/// FAULT INJECTION: a proxy answers 429/503 to some insertAll requests and holds others' answers past
/// the host's request timeout. The host retries with backoff; every message lands once, none is
/// dead-lettered.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn insertall_retries_through_injected_faults_without_loss() {
    let bq = BigQueryEmulator::start(PROJECT).await;
    let proxy = FaultProxy::start(&bq.rest, Duration::from_millis(1_500)).await;
    let pubsub = PubSub::start().await;
    let config = bq.host_config_via("bigquery-insertall", &proxy.url, &bq.grpc, "request_timeout_ms = 1000");
    let host = Host::start(&temp_dir("bq-faults"), &config).await;
    pubsub.create_topic("events").await;
    pubsub.create_push_subscription("events-faulty", "events", &host.push_url(), false).await;
    pubsub.publish("events", &events(150)).await;
    wait_rows(
        &bq,
        "SELECT COUNT(DISTINCT message_id) FROM tributary.streaming_events",
        150,
        "150 events through the faults",
    )
    .await;
    tokio::time::sleep(Duration::from_secs(3)).await;
    assert_eq!(bq.count("SELECT COUNT(*) FROM tributary.streaming_events"), 150, "insertId dedup absorbed the retries");
    assert_eq!(bq.count("SELECT COUNT(*) FROM tributary.dead_letter"), 0);
    let injected = proxy.injected.load(std::sync::atomic::Ordering::SeqCst);
    assert!(injected >= 5, "the proxy injected {injected} faults");
    assert!(host.metric("tributary_bigquery_retries_total", &[]).await >= 1.0, "the host retried");
}

/// FAULT INJECTION: one table's insertAll answers 503 (its backend is down) while another table's
/// requests come back with a transient per-row `backendError`. Pushes for the healthy table are all
/// acked within the flush deadline (their failed row resubmitted, landing once); only the pushes with
/// rows in the failing table get 503, and they land once the table is back.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn insertall_isolates_a_failing_table_and_resubmits_transient_row_errors() {
    let bq = BigQueryEmulator::start(PROJECT).await;
    let proxy = FaultProxy::targeted(&bq.rest).await;
    let config = bq.host_config_via(
        "bigquery-insertall",
        &proxy.url,
        &bq.grpc,
        "retry_deadline_ms = 4000\nrequest_timeout_ms = 3000",
    );
    let host = Host::start(&temp_dir("bq-isolation"), &config).await;
    // The emulator's first insertAll is slow (over a second): warm it up before the faults.
    let warm = envelope("warm-up", &events(1)[0].0, "projects/p/subscriptions/events").into_bytes();
    assert_eq!(http_raw("POST", &host.push_url(), warm, &[("content-type", "application/json")]).await.0, 204);
    *proxy.down_table.lock().expect("lock") = Some("sensor_readings".into());
    proxy.row_errors.store(3, std::sync::atomic::Ordering::SeqCst);
    let json = [("content-type", "application/json")];
    let reading = |i: usize| {
        let data = json!({"sensor_id": format!("t{i}"), "sensor_type": "temperature", "location": "hall",
            "timestamp": "2024-01-01T10:00:00Z", "value": 20 + i});
        envelope(&format!("r{i}"), data.to_string().as_bytes(), "projects/p/subscriptions/sensors").into_bytes()
    };
    let (sensors, events_url) = (format!("http://{}/push/sensors", host.addr), host.push_url());
    let (sensors, events_url) = (sensors.as_str(), events_url.as_str());
    let started = std::time::Instant::now();
    let pushes = events(60).into_iter().enumerate().map(|(i, (data, _))| {
        let body = envelope(&format!("e{i}"), &data, "projects/p/subscriptions/events").into_bytes();
        http_raw("POST", events_url, body, &json)
    });
    let readings = (0..10).map(|i| http_raw("POST", sensors, reading(i), &json));
    let (events_answers, readings_answers) =
        tokio::join!(futures::future::join_all(pushes), futures::future::join_all(readings));
    for (i, (status, text)) in events_answers.iter().enumerate() {
        assert_eq!(*status, 204, "event {i} shares flushes with the failing table but is acked: {text}");
    }
    for (status, text) in &readings_answers {
        assert_eq!(*status, 503, "{text}");
        assert!(text.contains("sensor_readings"), "the answer names the failing table: {text}");
    }
    assert!(started.elapsed() < Duration::from_secs(20), "took {:?}", started.elapsed());
    // Requests of two rows or more lose a row (how many there are depends on how pushes batch).
    let injected = 3 - proxy.row_errors.load(std::sync::atomic::Ordering::SeqCst);
    assert!(injected >= 1, "at least one backendError row was injected");

    *proxy.down_table.lock().expect("lock") = None;
    for i in 0..10 {
        wait_for("a redelivered reading to land once the table is back", Duration::from_secs(30), || async move {
            let status = http_raw("POST", sensors, reading(i), &json).await.0;
            (status == 204).then_some(())
        })
        .await;
    }
    assert_eq!(
        bq.count("SELECT COUNT(*) FROM tributary.streaming_events"),
        61,
        "each event (and the warm-up) once, resubmitted rows too"
    );
    assert_eq!(bq.count("SELECT COUNT(DISTINCT reading_id) FROM tributary.sensor_readings"), 10);
    assert_eq!(bq.count("SELECT COUNT(*) FROM tributary.dead_letter"), 0, "nothing transient was dead-lettered");
    assert!(host.metric("tributary_bigquery_retries_total", &[]).await >= injected as f64);
    assert!(host.metric("tributary_flushes_total", &["partial"]).await >= 1.0);
}

/// The shipped `.sql` views, created by `tributary bigquery views`, return the expected numbers for a
/// known input (timestamps relative to now): a steady baseline, one spike minute and one normal minute.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn shipped_views_compute_the_seed_metrics() {
    use chrono::{DurationRound as _, TimeDelta, Utc};
    let bq = BigQueryEmulator::start(PROJECT).await;
    let pubsub = PubSub::start().await;
    let data = temp_dir("bq-views");
    let config = bq.host_config("bigquery-insertall", "");
    let host = Host::start(&data, &config).await;
    pubsub.create_topic("events").await;
    pubsub.create_push_subscription("events-views", "events", &host.push_url(), false).await;
    let minute0 = Utc::now().duration_trunc(TimeDelta::minutes(1)).expect("truncate");
    // Minutes ago → events (each from its own user): baseline 11..=55 alternates 4 and 6, minute 2 spikes.
    let plan: Vec<(i64, usize)> =
        (11..=55).map(|k| (k, if k % 2 == 0 { 4 } else { 6 })).chain([(2, 20), (3, 5)]).collect();
    let mut corpus = Vec::new();
    for &(k, n) in &plan {
        let at = minute0 - TimeDelta::minutes(k) + TimeDelta::seconds(30);
        for j in 0..n {
            let body = json!({"user_id": format!("u{k}-{j}"), "event_type": "page_view", "session_id": format!("s{k}-{j}"),
                "timestamp": at.to_rfc3339()});
            corpus.push((body.to_string().into_bytes(), json!({})));
        }
    }
    pubsub.publish("events", &corpus).await;
    let total = i64::try_from(corpus.len()).expect("count");
    wait_rows(&bq, "SELECT COUNT(*) FROM tributary.streaming_events", total, "the view test's events").await;

    let out = std::process::Command::new(env!("CARGO_BIN_EXE_tributary"))
        .args(["bigquery", "views", "--config"])
        .arg(data.join("tributary.toml"))
        .output()
        .expect("tributary bigquery views");
    assert!(out.status.success(), "views: {}", String::from_utf8_lossy(&out.stderr));
    let created = String::from_utf8_lossy(&out.stdout);
    assert_eq!(created.lines().count(), 13, "{created}");
    assert!(created.contains("realtime_user_recs_latest") && created.contains("products_latest"), "{created}");

    // The same computation, independently.
    let baseline: Vec<f64> = plan.iter().filter(|(k, _)| *k > 10).map(|&(_, n)| n as f64).collect();
    let mean = baseline.iter().sum::<f64>() / baseline.len() as f64;
    let sd = (baseline.iter().map(|x| (x - mean).powi(2)).sum::<f64>() / (baseline.len() as f64 - 1.0)).sqrt();
    let rows = bq.query(
        "SELECT FORMAT_TIMESTAMP('%H:%M', minute) AS minute, events_count, unique_users, mean_events, stddev_events, \
         traffic_status, user_status FROM tributary.traffic_last_hour ORDER BY minute",
    );
    assert_eq!(rows.len(), 2, "{rows:?}");
    let number = |v: &Value| v.as_f64().or_else(|| v.as_str().and_then(|s| s.parse().ok())).expect("number");
    for row in &rows {
        assert!((number(&row["mean_events"]) - mean).abs() < 1e-6, "{row}");
        assert!((number(&row["stddev_events"]) - sd).abs() < 1e-6, "{row}");
    }
    let spike = (minute0 - TimeDelta::minutes(2)).format("%H:%M").to_string();
    let normal = (minute0 - TimeDelta::minutes(3)).format("%H:%M").to_string();
    let by_minute =
        |m: &str| rows.iter().find(|r| r["minute"] == m).cloned().unwrap_or_else(|| panic!("minute {m} in {rows:?}"));
    let s = by_minute(&spike);
    assert_eq!(
        (number(&s["events_count"]), s["traffic_status"].as_str(), s["user_status"].as_str()),
        (20.0, Some("HIGH_TRAFFIC"), Some("USER_SPIKE"))
    );
    let n = by_minute(&normal);
    assert_eq!(
        (number(&n["events_count"]), n["traffic_status"].as_str(), n["user_status"].as_str()),
        (5.0, Some("NORMAL"), Some("NORMAL"))
    );

    let activity = bq.query("SELECT event_type, event_count, unique_users FROM tributary.realtime_activity");
    assert_eq!(activity.len(), 1);
    assert_eq!(
        (number(&activity[0]["event_count"]), number(&activity[0]["unique_users"])),
        (total as f64, total as f64)
    );
    assert_eq!(bq.count("SELECT SUM(events) FROM tributary.dashboard_summary"), total);

    // The live dashboard of a BigQuery host reads the same views through jobs.query: its window is the
    // 30 minutes before the newest event (minute 2), so minutes 2..=31 count; the chart has them all.
    let in_window: usize = plan.iter().filter(|(k, _)| *k < 32).map(|&(_, n)| n).sum();
    let url = format!("http://{}/dashboard/data", host.admin);
    let (status, body) = crate::support::http_raw("GET", &url, Vec::new(), &[("cache-control", "no-cache")]).await;
    assert_eq!(status, 200, "{body}");
    let d: Value = serde_json::from_str(&body).expect("json");
    assert_eq!(d["status"]["errors"], json!([]), "{d}");
    assert_eq!(d["status"]["warehouse"], "bigquery");
    assert_eq!(
        (d["total_events"].as_u64(), d["active_users"].as_u64()),
        (Some(in_window as u64), Some(in_window as u64)),
        "{d}"
    );
    let charted: u64 =
        d["events_per_minute"].as_array().expect("chart").iter().filter_map(|m| m["events"].as_u64()).sum();
    assert_eq!(charted, total as u64, "{d}");
    assert_eq!(d["conversion_funnel"][0], json!({"step": "page_view", "users": in_window, "rate": 1.0}), "{d}");
    assert_eq!(d["top_pages"], json!([]), "no page_url in these events");
}

/// FAULT INJECTION: the Storage Write endpoint goes down three times for 1.5 s while pushes arrive,
/// cutting calls in flight. The host retries with backoff (an append that landed before the cut is
/// answered ALREADY_EXISTS and counted as written); every message lands exactly once.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn committed_stream_rides_out_grpc_outages_exactly_once() {
    let bq = BigQueryEmulator::start(PROJECT).await;
    let outage = Outage::start(&bq.grpc).await;
    let pubsub = PubSub::start().await;
    let config = bq.host_config_via("bigquery-write", &bq.rest, &outage.url, "write_stream = \"committed\"");
    let host = Host::start(&temp_dir("bq-outage"), &config).await;
    pubsub.create_topic("events").await;
    pubsub.create_push_subscription("events-outage", "events", &host.push_url(), false).await;
    let corpus = events(240);
    for (i, burst) in corpus.chunks(40).enumerate() {
        pubsub.publish("events", burst).await;
        if i % 2 == 1 {
            tokio::time::sleep(Duration::from_millis(300)).await;
            outage.set_down(true);
            tokio::time::sleep(Duration::from_millis(1_500)).await;
            outage.set_down(false);
        }
    }
    wait_rows(
        &bq,
        "SELECT COUNT(DISTINCT message_id) FROM tributary.streaming_events",
        240,
        "240 events through outages",
    )
    .await;
    tokio::time::sleep(Duration::from_secs(3)).await;
    assert_eq!(bq.count("SELECT COUNT(*) FROM tributary.streaming_events"), 240, "exactly once");
    assert_eq!(bq.count("SELECT COUNT(*) FROM tributary.dead_letter"), 0);
    assert!(host.metric("tributary_bigquery_retries_total", &["api=\"write\""]).await >= 1.0, "the host retried");
}

/// Keyed tables on BigQuery (no CDC in this mode): upserts are appended with key + version as the
/// dedup id, and `<table>_latest` reads the newest row per key. Both APIs, through the catalog route.
async fn upserts_append_and_latest_view(backend: &str, extra: &str) {
    let bq = BigQueryEmulator::start(PROJECT).await;
    let host = Host::start(&temp_dir(backend), &bq.host_config(backend, extra)).await;
    let push = |id: &str, at: &str, product: Value| {
        let headers = [("x-goog-pubsub-message-id", id.to_owned()), ("x-goog-pubsub-publish-time", at.to_owned())];
        let url = format!("http://{}/push/products", host.addr);
        async move {
            let h: Vec<(&str, &str)> = headers.iter().map(|(k, v)| (*k, v.as_str())).collect();
            let (status, text) = http_raw("POST", &url, product.to_string().into_bytes(), &h).await;
            assert_eq!(status, 204, "{text}");
        }
    };
    let lamp = |pop: f64, status: &str| json!({"product_id": "lamp", "product_name": "Lamp", "category": "home", "popularity_score": pop, "status": status});
    push("c1", "2026-01-01T10:00:00Z", lamp(10.0, "active")).await;
    push("c2", "2026-01-01T11:00:00Z", lamp(90.0, "active")).await;
    push("c2", "2026-01-01T11:00:00Z", lamp(90.0, "active")).await; // a redelivery
    push("c0", "2026-01-01T09:00:00Z", lamp(1.0, "inactive")).await; // an older change, late: ignored
    push(
        "d1",
        "2026-01-01T10:00:00Z",
        json!({"product_id": "desk", "product_name": "Desk", "category": "home", "popularity_score": 50}),
    )
    .await;
    assert_eq!(
        bq.count("SELECT COUNT(*) FROM tributary.products WHERE product_id = 'lamp'"),
        2,
        "appended versions, redelivery deduplicated"
    );
    let latest =
        bq.query("SELECT product_id, popularity_score, status FROM tributary.products_latest ORDER BY product_id");
    let number = |v: &Value| v.as_f64().or_else(|| v.as_str().and_then(|s| s.parse().ok())).expect("number");
    let got: Vec<(String, f64, String)> = latest
        .iter()
        .map(|r| {
            (
                r["product_id"].as_str().unwrap_or("").into(),
                number(&r["popularity_score"]),
                r["status"].as_str().unwrap_or("").into(),
            )
        })
        .collect();
    assert_eq!(got, vec![("desk".into(), 50.0, "active".into()), ("lamp".into(), 90.0, "active".into())]);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn insertall_upserts_read_through_the_latest_view() {
    upserts_append_and_latest_view("bigquery-insertall", "").await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn storage_write_upserts_read_through_the_latest_view() {
    upserts_append_and_latest_view("bigquery-write", "write_stream = \"committed\"\n").await;
}
