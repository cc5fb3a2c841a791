//! anomaly-check end to end, once per state backend: Google's Pub/Sub emulator pushes a deterministic
//! traffic stream (72 minutes of steady events with one spike minute and one drop minute) to
//! `/push/anomaly` and a sensor stream with injected outliers to `/push/sensors`; the host is killed
//! (SIGKILL) halfway and restarted on the same state. Every `traffic_anomalies`, `sensor_readings`,
//! `sensor_anomalies` and `sensor_aggregates` row is compared with the same computation done
//! independently here.

use std::collections::{BTreeMap, BTreeSet};
use std::time::Duration;

use serde_json::{Value, json};

use crate::support::{Host, PubSub, Redis, temp_dir, wait_for};

const MINUTE: i64 = 60_000;
const TRAFFIC_MINUTES: i64 = 72;
const SPIKE: i64 = 60;
const DROP: i64 = 61;
const SENSOR_MINUTES: i64 = 30;

fn rfc3339(ms: i64) -> String {
    chrono::DateTime::from_timestamp_millis(ms).expect("time").to_rfc3339_opts(chrono::SecondsFormat::Millis, true)
}

/// One synthetic event: (minute, user, session, time).
struct Ev {
    minute: i64,
    user: String,
    session: String,
    time: i64,
}

fn traffic(base: i64) -> Vec<Ev> {
    let mut out = Vec::new();
    for m in 0..TRAFFIC_MINUTES {
        let n = match m {
            SPIKE => 40,
            DROP => 2,
            m if m % 2 == 0 => 9,
            _ => 11,
        };
        for i in 0..n {
            let user = if m == SPIKE { format!("u{}", i % 30) } else { format!("u{m}-{i}") };
            out.push(Ev { minute: m, user, session: format!("s{m}-{}", i / 2), time: base + m * MINUTE + i * 1000 });
        }
    }
    out
}

fn mean_sd(xs: &[f64]) -> Option<(f64, f64)> {
    if xs.len() < 2 {
        return None;
    }
    let mean = xs.iter().sum::<f64>() / xs.len() as f64;
    let var = xs.iter().map(|x| (x - mean).powi(2)).sum::<f64>() / (xs.len() - 1) as f64;
    Some((mean, var.sqrt()))
}

fn status(band: Option<(f64, f64)>, v: f64, high: &str, low: &str) -> String {
    match band {
        Some((mean, sd)) if v > mean + 2.0 * sd => high.into(),
        Some((mean, sd)) if v < mean - 2.0 * sd => low.into(),
        _ => "NORMAL".into(),
    }
}

/// Seed §5.2 per minute: baseline = the minutes in [m − 70, m − 10), mean ± 2σ (sample σ).
fn expected_traffic(events: &[Ev]) -> Vec<Value> {
    let mut minutes: BTreeMap<i64, (u64, BTreeSet<&str>, BTreeSet<&str>)> = BTreeMap::new();
    for e in events {
        let m = minutes.entry(e.minute).or_default();
        m.0 += 1;
        m.1.insert(&e.user);
        m.2.insert(&e.session);
    }
    minutes
        .iter()
        .map(|(&m, (events, users, sessions))| {
            let base: Vec<(f64, f64)> =
                minutes.range(m - 70..m - 10).map(|(_, (e, u, _))| (*e as f64, u.len() as f64)).collect();
            let ev = mean_sd(&base.iter().map(|b| b.0).collect::<Vec<_>>());
            let us = mean_sd(&base.iter().map(|b| b.1).collect::<Vec<_>>());
            json!({
                "minute": m,
                "events_count": events,
                "unique_users": users.len(),
                "unique_sessions": sessions.len(),
                "baseline_minutes": base.len(),
                "mean_events": ev.map(|b| b.0),
                "stddev_events": ev.map(|b| b.1),
                "mean_users": us.map(|b| b.0),
                "stddev_users": us.map(|b| b.1),
                "traffic_status": status(ev, *events as f64, "HIGH_TRAFFIC", "LOW_TRAFFIC"),
                "user_status": status(us, users.len() as f64, "USER_SPIKE", "USER_DROP"),
            })
        })
        .collect()
}

/// (sensor id, type, location, unit) and its value in minute `m` (the unit's number, and in °C/%RH).
const SENSORS: [(&str, &str, &str, Option<&str>); 3] =
    [("s1", "temperature", "hall", None), ("s2", "temperature", "hall", Some("F")), ("s3", "humidity", "lab", None)];

fn reading_value(sensor: usize, m: i64) -> (f64, f64) {
    match (sensor, m) {
        (0, 20) => (35.0, 35.0),
        (1, 25) => (212.0, 100.0),
        (2, 15) => (130.0, 130.0),
        (0, m) => {
            let v = 20.0 + 0.1 * ((m * 7) % 5) as f64;
            (v, v)
        }
        (1, m) => {
            let f = 68.0 + 0.18 * ((m * 3) % 5) as f64;
            (f, (f - 32.0) * 5.0 / 9.0)
        }
        (_, m) => {
            let v = 45.0 + 0.5 * ((m * 11) % 5) as f64;
            (v, v)
        }
    }
}

fn close(a: &Value, b: &Value) -> bool {
    match (a.as_f64(), b.as_f64()) {
        (Some(x), Some(y)) => (x - y).abs() <= 1e-9 * x.abs().max(1.0),
        _ => a == b,
    }
}

fn assert_rows_match(what: &str, actual: &[Value], expected: &[Value]) {
    assert_eq!(actual.len(), expected.len(), "{what}: row count\nactual: {actual:#?}");
    for (a, e) in actual.iter().zip(expected) {
        for (k, ev) in e.as_object().expect("object") {
            assert!(close(&a[k], ev), "{what}: column {k}: got {}, expected {ev}\nrow: {a}\nexpected: {e}", a[k]);
        }
    }
}

async fn publish_traffic(pubsub: &PubSub, events: &[Ev]) -> usize {
    let msgs: Vec<(Vec<u8>, Value)> = events
        .iter()
        .map(|e| {
            let payload = json!({"user_id": e.user, "event_type": "page_view", "timestamp": rfc3339(e.time), "session_id": e.session});
            (payload.to_string().into_bytes(), json!({}))
        })
        .collect();
    pubsub.publish("events", &msgs).await.len()
}

async fn publish_sensors(pubsub: &PubSub, base: i64, minutes: std::ops::Range<i64>) -> usize {
    let mut msgs = Vec::new();
    for m in minutes {
        for (i, (id, ty, loc, unit)) in SENSORS.iter().enumerate() {
            let mut payload = json!({"sensor_id": id, "sensor_type": ty, "location": loc,
                "timestamp": rfc3339(base + m * MINUTE + i as i64 * 1000), "value": reading_value(i, m).0});
            if let Some(u) = unit {
                payload["unit"] = json!(u);
            }
            msgs.push((payload.to_string().into_bytes(), json!({})));
        }
    }
    pubsub.publish("sensors", &msgs).await.len()
}

async fn wait_acked(host: &Host, route: &str, n: usize) {
    let needle = format!("route=\"{route}\"");
    wait_for(&format!("{n} acked pushes on {route}"), Duration::from_secs(120), || async {
        let acked = host.metric("tributary_pushes_total", &[&needle, "outcome=\"acked\""]).await;
        (acked >= n as f64).then_some(())
    })
    .await;
}

async fn scenario(name: &str, state_config: &str) {
    let pubsub = PubSub::start().await;
    let data = temp_dir(name);
    let config = format!(
        "{state_config}[timers]\ntick_ms = 500\n[functions.anomaly-check]\nlateness_seconds = 600\nidle_close_seconds = 3\n"
    );
    let mut host = Host::start(&data, &config).await;
    let (addr, admin) = (host.addr, host.admin);
    pubsub.create_topic("events").await;
    pubsub.create_topic("sensors").await;
    pubsub.create_push_subscription("anomaly", "events", &format!("http://{addr}/push/anomaly"), false).await;
    pubsub.create_push_subscription("sensors", "sensors", &format!("http://{addr}/push/sensors"), true).await;

    let now = chrono::Utc::now().timestamp_millis();
    let traffic_base = (now - 3 * 3600 * 1000) / MINUTE * MINUTE;
    let sensor_base = (now - 2 * 3600 * 1000) / (5 * MINUTE) * (5 * MINUTE);
    let events = traffic(traffic_base);
    let split = events.iter().position(|e| e.minute == 36).expect("minute 36");

    // First half, then SIGKILL: every acked push's state must survive.
    let n = publish_traffic(&pubsub, &events[..split]).await;
    // Split at a 5-minute window boundary: a window the idle timer closes while the host is down is complete.
    let s = publish_sensors(&pubsub, sensor_base, 0..15).await;
    wait_acked(&host, "/push/anomaly", n).await;
    wait_acked(&host, "/push/sensors", s).await;
    host.kill();
    let host = Host::start_at(&data, addr, admin, &config).await;

    publish_traffic(&pubsub, &events[split..]).await;
    publish_sensors(&pubsub, sensor_base, 15..SENSOR_MINUTES).await;
    let bad = [
        json!({"sensor_id": "s9", "sensor_type": "noise", "value": 1, "timestamp": rfc3339(sensor_base)}),
        json!({"sensor_id": "s1", "sensor_type": "temperature", "value": "hot", "timestamp": rfc3339(sensor_base)}),
    ];
    pubsub.publish("sensors", &bad.iter().map(|b| (b.to_string().into_bytes(), json!({}))).collect::<Vec<_>>()).await;

    // Traffic: every minute closes (the last ones by the idle timer), each exactly as computed here.
    let expected = expected_traffic(&events);
    let flagged: Vec<i64> = expected
        .iter()
        .filter(|r| r["traffic_status"] != "NORMAL" || r["user_status"] != "NORMAL")
        .map(|r| r["minute"].as_i64().expect("minute"))
        .collect();
    assert_eq!(flagged, vec![SPIKE, DROP], "the synthetic stream flags exactly the spike and the drop");
    wait_for("every minute closed", Duration::from_secs(120), || async {
        (host.count("SELECT count(*) FROM traffic_anomalies").await == TRAFFIC_MINUTES).then_some(())
    })
    .await;
    let actual = host
        .sql(&format!(
            "SELECT (epoch_ms(minute) - {traffic_base}) // {MINUTE} AS minute, events_count, unique_users, unique_sessions, \
             baseline_minutes, mean_events, stddev_events, mean_users, stddev_users, traffic_status, user_status \
             FROM traffic_anomalies ORDER BY minute"
        ))
        .await;
    assert_rows_match("traffic_anomalies", &actual, &expected);
    let statuses: Vec<(String, String)> = actual
        .iter()
        .filter(|r| r["minute"] == SPIKE || r["minute"] == DROP)
        .map(|r| (r["traffic_status"].as_str().unwrap_or("").into(), r["user_status"].as_str().unwrap_or("").into()))
        .collect();
    assert_eq!(
        statuses,
        vec![("HIGH_TRAFFIC".to_owned(), "USER_SPIKE".to_owned()), ("LOW_TRAFFIC".to_owned(), "USER_DROP".to_owned())]
    );

    // Sensors: every reading once, exactly the injected outliers flagged, aggregates of the normal ones.
    let readings = SENSOR_MINUTES * SENSORS.len() as i64;
    wait_for("every reading and both dead letters", Duration::from_secs(120), || async {
        let done = host.count("SELECT count(*) FROM sensor_readings").await == readings
            && host.count("SELECT count(*) FROM dead_letter WHERE stage = 'transform'").await == 2;
        done.then_some(())
    })
    .await;
    assert_eq!(host.count("SELECT count(DISTINCT reading_id) FROM sensor_readings").await, readings);
    let anomalies = host
        .sql(&format!(
            "SELECT sensor_id, (epoch_ms(timestamp) - {sensor_base}) // {MINUTE} AS minute, reason \
             FROM sensor_anomalies ORDER BY sensor_id"
        ))
        .await;
    assert_eq!(
        anomalies,
        vec![
            json!({"sensor_id": "s1", "minute": 20, "reason": "z-score"}),
            json!({"sensor_id": "s2", "minute": 25, "reason": "z-score"}),
            json!({"sensor_id": "s3", "minute": 15, "reason": "out-of-range"}),
        ]
    );
    assert_eq!(host.count("SELECT count(*) FROM sensor_readings WHERE is_anomaly").await, 3);
    assert_eq!(host.count("SELECT count(*) FROM sensor_readings WHERE NOT is_anomaly").await, readings - 3);
    let reasons: Vec<Value> = host.sql("SELECT error_reason FROM dead_letter ORDER BY error_reason").await;
    assert_eq!(reasons, vec![json!({"error_reason": "bad-value"}), json!({"error_reason": "unknown-sensor-type"})]);

    let mut windows: BTreeMap<(String, String, i64), Vec<f64>> = BTreeMap::new();
    for m in 0..SENSOR_MINUTES {
        for (i, (id, ty, loc, _)) in SENSORS.iter().enumerate() {
            let anomalous = matches!((*id, m), ("s1", 20) | ("s2", 25) | ("s3", 15));
            if !anomalous {
                windows.entry(((*loc).into(), (*ty).into(), m / 5)).or_default().push(reading_value(i, m).1);
            }
        }
    }
    let expected: Vec<Value> = windows
        .iter()
        .map(|((loc, ty, w), xs)| {
            let (mean, sd) = mean_sd(xs).expect("several readings");
            json!({"location": loc, "sensor_type": ty, "win": w, "readings_count": xs.len(), "avg_value": mean,
                "min_value": xs.iter().copied().fold(f64::INFINITY, f64::min),
                "max_value": xs.iter().copied().fold(f64::NEG_INFINITY, f64::max), "stddev_value": sd})
        })
        .collect();
    wait_for("every window closed", Duration::from_secs(60), || async {
        (host.count("SELECT count(*) FROM sensor_aggregates").await == expected.len() as i64).then_some(())
    })
    .await;
    let actual = host
        .sql(&format!(
            "SELECT location, sensor_type, (epoch_ms(window_start) - {sensor_base}) // {} AS win, readings_count, \
             avg_value, min_value, max_value, stddev_value FROM sensor_aggregates ORDER BY location, sensor_type, win",
            5 * MINUTE
        ))
        .await;
    assert_rows_match("sensor_aggregates", &actual, &expected);
    assert_eq!(host.metric("tributary_window_skipped_total", &[]).await, 0.0, "nothing arrived late");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn anomalies_and_sensor_windows_with_embedded_state() {
    scenario("anomaly-embedded", "").await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn anomalies_and_sensor_windows_with_redis_state() {
    let redis = Redis::start().await;
    scenario("anomaly-redis", &redis.state_config()).await;
}

/// FAULT INJECTION with real parts: Redis (the state store) is killed while Pub/Sub pushes events;
/// every push answers 503 and Pub/Sub redelivers; once Redis is back, every event is counted exactly once.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_state_outage_fails_pushes_and_redelivery_counts_every_event_once() {
    let mut redis = Redis::start().await;
    let pubsub = PubSub::start().await;
    let config = format!(
        "{}[timers]\ntick_ms = 500\n[functions.anomaly-check]\nlateness_seconds = 600\nidle_close_seconds = 3\n",
        redis.state_config()
    );
    let host = Host::start(&temp_dir("anomaly-outage"), &config).await;
    pubsub.create_topic("events").await;
    pubsub.create_push_subscription("anomaly", "events", &format!("http://{}/push/anomaly", host.addr), false).await;

    let base = (chrono::Utc::now().timestamp_millis() - 3_600_000) / MINUTE * MINUTE;
    let event = |m: i64, i: i64| Ev {
        minute: m,
        user: format!("u{m}-{}", i % 7),
        session: format!("s{i}"),
        time: base + m * MINUTE + i * 1000,
    };
    let first: Vec<Ev> = (0..20).map(|i| event(0, i)).collect();
    publish_traffic(&pubsub, &first).await;
    wait_acked(&host, "/push/anomaly", 20).await;

    redis.kill();
    let during: Vec<Ev> = (20..50).map(|i| event(1, i - 20)).chain((50..60).map(|i| event(2, i - 50))).collect();
    publish_traffic(&pubsub, &during).await;
    wait_for("pushes refused while the state store is down", Duration::from_secs(60), || async {
        (host.metric("tributary_pushes_total", &["route=\"/push/anomaly\"", "outcome=\"unavailable\""]).await >= 5.0)
            .then_some(())
    })
    .await;
    redis.restart().await;

    wait_for("every minute closed after the outage", Duration::from_secs(180), || async {
        (host.count("SELECT count(*) FROM traffic_anomalies").await == 3).then_some(())
    })
    .await;
    let counts = host
        .sql(&format!("SELECT (epoch_ms(minute) - {base}) // {MINUTE} AS m, events_count, unique_users FROM traffic_anomalies ORDER BY m"))
        .await;
    assert_eq!(
        counts,
        vec![
            json!({"m": 0, "events_count": 20, "unique_users": 7}),
            json!({"m": 1, "events_count": 30, "unique_users": 7}),
            json!({"m": 2, "events_count": 10, "unique_users": 7}),
        ]
    );
    assert!(host.log_text().contains("state store unavailable"), "the outage is logged");
}
