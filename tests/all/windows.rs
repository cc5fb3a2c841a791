//! windows end to end, once per state backend: Google's Pub/Sub emulator pushes one event stream to
//! `/push/sessions` and `/push/metrics`, in an order that makes sessions merge (a user's bridging
//! event arrives after both sessions it joins); the host is killed (SIGKILL) in the middle and restarted
//! on the same state. Every `user_sessions`, `streaming_metrics` and `realtime_dashboard` row is compared
//! with the same windows computed independently here; a late event afterwards changes nothing.

use std::collections::{BTreeMap, BTreeSet};
use std::time::Duration;

use serde_json::{Value, json};

use crate::support::{Host, PubSub, Redis, http_raw, temp_dir, wait_for};

const MINUTE: i64 = 60_000;
const GAP: i64 = 30 * MINUTE;
const USERS: usize = 24;
const TYPES: [&str; 4] = ["page_view", "click", "add_to_cart", "purchase"];

fn rfc3339(ms: i64) -> String {
    chrono::DateTime::from_timestamp_millis(ms).expect("time").to_rfc3339_opts(chrono::SecondsFormat::Millis, true)
}

#[derive(Debug, Clone)]
struct Ev {
    user: String,
    session: String,
    event_type: &'static str,
    page: String,
    time: i64,
}

/// Per user: a morning cluster (minutes 0..12), an afternoon cluster (minutes 50..58, more than the gap
/// later) and, for every other user, one bridging event at minute 31 (less than the gap from both).
/// Returns (first half, second half): the bridges are in the second half, after the restart.
fn stream(base: i64) -> (Vec<Ev>, Vec<Ev>) {
    let (mut first, mut second) = (Vec::new(), Vec::new());
    for u in 0..USERS {
        let user = format!("user-{u}");
        let ev = |minute: i64, i: usize, cluster: &str| Ev {
            user: user.clone(),
            session: format!("{user}-{cluster}"),
            event_type: TYPES[(u + i) % TYPES.len()],
            page: format!("/p{}", (u * 7 + i) % 5),
            time: base + minute * MINUTE + (u as i64) * 1000 + i as i64,
        };
        for i in 0..(3 + u % 4) {
            first.push(ev(i as i64 * 3, i, "am"));
        }
        for i in 0..(2 + u % 3) {
            second.push(ev(50 + i as i64 * 4, i, "pm"));
        }
        if u % 2 == 0 {
            second.push(ev(31, 9, "bridge"));
        }
    }
    // Arrival order is not event order: the second half arrives newest first.
    second.reverse();
    (first, second)
}

/// Sessions computed from scratch: each user's events by time, split where two are a gap or more apart.
fn expected_sessions(events: &[Ev], base: i64) -> Vec<Value> {
    let mut by_user: BTreeMap<&str, Vec<&Ev>> = BTreeMap::new();
    for e in events {
        by_user.entry(&e.user).or_default().push(e);
    }
    let mut out = Vec::new();
    for (user, mut evs) in by_user {
        evs.sort_by_key(|e| e.time);
        let mut sessions: Vec<Vec<&Ev>> = Vec::new();
        for e in evs {
            match sessions.last_mut() {
                Some(s) if e.time - s.last().expect("non-empty").time < GAP => s.push(e),
                _ => sessions.push(vec![e]),
            }
        }
        for s in sessions {
            let (start, end) = (s[0].time, s[s.len() - 1].time);
            let mut pages: Vec<&str> = Vec::new();
            for e in &s {
                if !pages.contains(&e.page.as_str()) {
                    pages.push(&e.page);
                }
            }
            out.push(json!({
                "user_id": user,
                "start": start - base,
                "end": end - base,
                "events_count": s.len(),
                "event_types": s.iter().map(|e| e.event_type).collect::<BTreeSet<_>>().len(),
                "pages": pages,
                "duration_seconds": (end - start) as f64 / 1000.0,
            }));
        }
    }
    out
}

/// Minute windows computed from scratch: (per minute and type, per minute).
fn expected_minutes(events: &[Ev], base: i64) -> (Vec<Value>, Vec<Value>) {
    type Acc<'a> = (usize, BTreeSet<&'a str>, BTreeSet<&'a str>);
    let mut per_type: BTreeMap<(i64, &str), Acc> = BTreeMap::new();
    let mut per_minute: BTreeMap<i64, Acc> = BTreeMap::new();
    for e in events {
        let minute = (e.time - base).div_euclid(MINUTE);
        for acc in [per_type.entry((minute, e.event_type)).or_default(), per_minute.entry(minute).or_default()] {
            acc.0 += 1;
            acc.1.insert(&e.user);
            acc.2.insert(&e.session);
        }
    }
    let row = |(n, users, sessions): &Acc| (*n, users.len(), sessions.len());
    let metrics = per_type
        .iter()
        .map(|((m, t), acc)| {
            let (n, u, s) = row(acc);
            json!({"minute": m, "event_type": t, "events_count": n, "unique_users": u, "unique_sessions": s})
        })
        .collect();
    let dashboard = per_minute
        .iter()
        .map(|(m, acc)| {
            let (n, u, s) = row(acc);
            json!({"minute": m, "events_count": n, "unique_users": u, "unique_sessions": s})
        })
        .collect();
    (metrics, dashboard)
}

async fn publish(pubsub: &PubSub, events: &[Ev]) -> usize {
    let msgs: Vec<(Vec<u8>, Value)> = events
        .iter()
        .map(|e| {
            let payload = json!({"user_id": e.user, "event_type": e.event_type, "timestamp": rfc3339(e.time),
                "session_id": e.session, "page_url": e.page});
            (payload.to_string().into_bytes(), json!({}))
        })
        .collect();
    pubsub.publish("events", &msgs).await.len()
}

async fn wait_acked(host: &Host, route: &str, n: usize) {
    let needle = format!("route=\"{route}\"");
    wait_for(&format!("{n} acked pushes on {route}"), Duration::from_secs(120), || async {
        let acked = host.metric("tributary_pushes_total", &[&needle, "outcome=\"acked\""]).await;
        (acked >= n as f64).then_some(())
    })
    .await;
}

/// The host's timer is slowed to once an hour, so nothing closes before the test says so: it posts
/// the ticks itself (on the internal listener, as the timer does) once the stream is idle.
async fn tick(host: &Host) {
    for route in ["/push/sessions/tick", "/push/metrics/tick"] {
        let (status, text) = http_raw("POST", &format!("http://{}{route}", host.admin), Vec::new(), &[]).await;
        assert_eq!(status, 204, "{route}: {text}");
    }
}

async fn scenario(name: &str, state_config: &str) {
    let pubsub = PubSub::start().await;
    let data = temp_dir(name);
    // Lateness of a day: nothing is late or closed by the watermark while the stream arrives in any
    // order; the idle close (2 s) does it at the end.
    let config = format!(
        "{state_config}[timers]\ntick_ms = 3600000\n[functions.windows]\nlateness_seconds = 86400\nidle_close_seconds = 2\n"
    );
    let mut host = Host::start(&data, &config).await;
    let (addr, admin) = (host.addr, host.admin);
    pubsub.create_topic("events").await;
    pubsub.create_push_subscription("sessions", "events", &format!("http://{addr}/push/sessions"), false).await;
    pubsub.create_push_subscription("metrics", "events", &format!("http://{addr}/push/metrics"), true).await;

    let now = chrono::Utc::now().timestamp_millis();
    let base = (now - 4 * 3600 * 1000) / MINUTE * MINUTE;
    let (first, second) = stream(base);
    let n = publish(&pubsub, &first).await;
    wait_acked(&host, "/push/sessions", n).await;
    wait_acked(&host, "/push/metrics", n).await;
    host.kill();
    let host = Host::start_at(&data, addr, admin, &config).await;
    let m = publish(&pubsub, &second).await;
    wait_acked(&host, "/push/sessions", m).await;
    wait_acked(&host, "/push/metrics", m).await;
    assert_eq!(host.count("SELECT count(*) FROM user_sessions").await, 0, "nothing closes before the stream is idle");

    tokio::time::sleep(Duration::from_millis(2_500)).await;
    tick(&host).await;
    let all: Vec<Ev> = first.iter().chain(&second).cloned().collect();
    let sessions = expected_sessions(&all, base);
    assert_eq!(sessions.len(), USERS / 2 + USERS, "bridged users have one session, the others two");
    let actual = host
        .sql(&format!(
            "SELECT user_id, epoch_ms(session_start) - {base} AS start, epoch_ms(session_end) - {base} AS \"end\", \
             events_count, event_types, pages, duration_seconds, closed_by FROM user_sessions ORDER BY user_id, start"
        ))
        .await;
    assert_eq!(actual.len(), sessions.len(), "{actual:#?}");
    for (a, e) in actual.iter().zip(&sessions) {
        for (k, v) in e.as_object().expect("object") {
            let got = match &a[k] {
                Value::String(text) if k == "pages" => serde_json::from_str(text).unwrap_or(Value::Null),
                other => other.clone(),
            };
            assert_eq!(&got, v, "user_sessions.{k}\nrow: {a}\nexpected: {e}");
        }
        assert_eq!(a["closed_by"], "timer");
    }

    let (metrics, dashboard) = expected_minutes(&all, base);
    let actual = host
        .sql(&format!(
            "SELECT (epoch_ms(window_start) - {base}) // {MINUTE} AS minute, event_type, events_count, unique_users, \
             unique_sessions FROM streaming_metrics ORDER BY minute, event_type"
        ))
        .await;
    assert_eq!(actual, metrics);
    let actual = host
        .sql(&format!(
            "SELECT (epoch_ms(window_start) - {base}) // {MINUTE} AS minute, events_count, unique_users, \
             unique_sessions FROM realtime_dashboard ORDER BY minute"
        ))
        .await;
    assert_eq!(actual, dashboard);

    // A late event for a closed session and minute is counted as late and changes no row.
    let late = Ev { time: base + 5 * MINUTE + 1, ..first[0].clone() };
    publish(&pubsub, &[late]).await;
    wait_for("the late event counted", Duration::from_secs(60), || async {
        (host.metric("tributary_window_skipped_total", &["late"]).await >= 2.0).then_some(())
    })
    .await;
    tick(&host).await;
    assert_eq!(host.count("SELECT count(*) FROM user_sessions").await, sessions.len() as i64);
    assert_eq!(host.count("SELECT sum(events_count) FROM realtime_dashboard").await, all.len() as i64);
    assert_eq!(host.count("SELECT count(*) FROM dead_letter").await, 0);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sessions_and_minute_metrics_with_embedded_state() {
    scenario("windows-embedded", "").await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sessions_and_minute_metrics_with_redis_state() {
    let redis = Redis::start().await;
    scenario("windows-redis", &redis.state_config()).await;
}
