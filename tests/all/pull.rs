//! Pull subscriptions end to end through Google's Pub/Sub emulator (StreamingPull over gRPC, found
//! through `PUBSUB_EMULATOR_HOST` as Google's clients find it): every published event lands exactly
//! once in `streaming_events` across a SIGKILL and restart, and across the stream being cut (a TCP
//! proxy taken down: FAULT INJECTION); flow control holds the outstanding messages at the cap; a sink
//! outage nacks, and the nacked messages land after recovery; on an exactly-once subscription every
//! ack is confirmed by Pub/Sub.

use std::time::Duration;

use serde_json::{Value, json};

use crate::support::faults::Outage;
use crate::support::{Host, PubSub, http_raw, temp_dir, wait_for};

const SUBSCRIPTION: &str = "projects/tributary-test/subscriptions/events-pull";

fn events(prefix: &str, n: usize) -> Vec<(Vec<u8>, Value)> {
    (0..n)
        .map(|i| {
            let body = json!({"user_id": format!("{prefix}-u{}", i % 97), "event_type": "page_view",
                "timestamp": "2026-01-01T10:00:00Z", "session_id": format!("{prefix}-s{}", i % 31), "n": i});
            (body.to_string().into_bytes(), json!({"i": i.to_string()}))
        })
        .collect()
}

fn pull_config(max_outstanding: u32, extra: &str) -> String {
    format!(
        "{extra}\n[[pull]]\nsubscription = \"{SUBSCRIPTION}\"\nroute = \"/push/events\"\nmax_outstanding_messages = {max_outstanding}\nstreams = 2\nack_deadline_seconds = 10\n"
    )
}

async fn wait_rows(host: &Host, want: i64, what: &str) {
    let sql = "SELECT count(DISTINCT message_id) AS n FROM streaming_events";
    wait_for(what, Duration::from_secs(180), || async { (host.count(sql).await >= want).then_some(()) }).await;
}

async fn assert_exactly_once(host: &Host, want: i64) {
    assert_eq!(host.count("SELECT count(*) AS n FROM streaming_events").await, want, "one row per message");
    assert_eq!(host.count("SELECT count(DISTINCT message_id) AS n FROM streaming_events").await, want);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn pulled_messages_land_exactly_once_across_a_sigkill_and_a_cut_stream() {
    let pubsub = PubSub::start().await;
    pubsub.create_topic("events").await;
    pubsub.create_pull_subscription("events-pull", "events").await;
    // The host reaches the emulator through a proxy that can cut its streams.
    let proxy = Outage::start(&pubsub.emulator_host()).await;
    let emulator = proxy.url.trim_start_matches("http://").to_owned();
    let env = [("PUBSUB_EMULATOR_HOST", emulator.as_str())];
    let dir = temp_dir("pull");
    let (addr, admin) = Host::free_addrs();
    let config = pull_config(40, "");
    let mut host = Host::start_env(&dir, &dir.join("data"), addr, admin, &config, &env).await;

    let first = events("a", 1500);
    let mut malformed: Vec<(Vec<u8>, Value)> =
        (0..10).map(|i| (format!("not json {i}").into_bytes(), json!({}))).collect();
    malformed.extend(first);
    pubsub.publish("events", &malformed).await;
    // Flow control: the outstanding gauge never passes the cap while the backlog drains.
    let most = std::sync::Mutex::new(0.0f64);
    wait_for("the first 400 pulled events", Duration::from_secs(120), || async {
        let outstanding = host.metric("tributary_pull_outstanding", &[]).await;
        {
            let mut seen = most.lock().expect("lock");
            *seen = seen.max(outstanding);
        }
        (host.count("SELECT count(*) AS n FROM streaming_events").await >= 400).then_some(())
    })
    .await;
    let most = *most.lock().expect("lock");
    assert!(most <= 40.0, "outstanding messages reached {most}, over the cap of 40");
    host.kill();

    let mut host = Host::start_env(&dir, &dir.join("data"), addr, admin, &config, &env).await;
    wait_rows(&host, 900, "pulling again after the SIGKILL").await;
    // Cut every stream for 2 s mid-run; the host reconnects and goes on.
    proxy.set_down(true);
    tokio::time::sleep(Duration::from_secs(2)).await;
    proxy.set_down(false);
    let second = events("b", 500);
    pubsub.publish("events", &second).await;
    wait_rows(&host, 2000, "every pulled event").await;
    assert_exactly_once(&host, 2000).await;
    let dead = host.count("SELECT count(*) AS n FROM dead_letter WHERE error_reason = 'not-json'").await;
    assert_eq!(dead, 10, "malformed messages are dead-lettered (and acked), once each");
    assert!(host.metric("tributary_pull_stream_restarts_total", &[]).await >= 1.0, "the cut streams were reopened");
    assert!(host.metric("tributary_pull_acked_total", &[]).await >= 500.0);
    // The dashboard shows the subscription.
    let url = format!("http://{admin}/dashboard/data");
    let (_, body) = http_raw("GET", &url, Vec::new(), &[("cache-control", "no-cache")]).await;
    let d: Value = serde_json::from_str(&body).expect("dashboard json");
    assert_eq!(d["status"]["pull"][0]["subscription"], SUBSCRIPTION, "{d}");
    assert!(d["status"]["pull"][0]["acked"].as_u64() >= Some(500), "{d}");
    // Nothing left behind: a while later, no row more.
    tokio::time::sleep(Duration::from_secs(3)).await;
    assert_exactly_once(&host, 2000).await;
    host.stop();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_sink_outage_nacks_and_the_messages_land_after_recovery() {
    let pubsub = PubSub::start().await;
    pubsub.create_topic("events").await;
    pubsub.create_pull_subscription("events-pull", "events").await;
    let emulator = pubsub.emulator_host();
    let dir = temp_dir("pull-outage");
    let (addr, admin) = Host::free_addrs();
    let config = pull_config(1000, "[testing]\nfault_injection = true\n[sink]\nwrite_timeout_ms = 1000\n");
    let host =
        Host::start_env(&dir, &dir.join("data"), addr, admin, &config, &[("PUBSUB_EMULATOR_HOST", &emulator)]).await;
    let faults = format!("http://{admin}/faults/sink");
    assert_eq!(http_raw("PUT", &faults, b"fail".to_vec(), &[]).await.0, 200);
    pubsub.publish("events", &events("c", 100)).await;
    wait_for("nacks while the sink fails", Duration::from_secs(60), || async {
        (host.metric("tributary_pull_nacked_total", &[]).await >= 10.0).then_some(())
    })
    .await;
    assert_eq!(host.count("SELECT count(*) AS n FROM streaming_events").await, 0);
    assert_eq!(http_raw("PUT", &faults, b"ok".to_vec(), &[]).await.0, 200);
    wait_rows(&host, 100, "the nacked messages, redelivered").await;
    assert_exactly_once(&host, 100).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn acks_on_an_exactly_once_subscription_are_confirmed() {
    let pubsub = PubSub::start().await;
    pubsub.create_topic("events").await;
    pubsub.create_pull_subscription_with("events-pull", "events", true).await;
    let emulator = pubsub.emulator_host();
    let dir = temp_dir("pull-exactly-once");
    let (addr, admin) = Host::free_addrs();
    let host = Host::start_env(
        &dir,
        &dir.join("data"),
        addr,
        admin,
        &pull_config(1000, ""),
        &[("PUBSUB_EMULATOR_HOST", &emulator)],
    )
    .await;
    let mut batch = events("e", 300);
    batch.push((b"not json".to_vec(), json!({})));
    pubsub.publish("events", &batch).await;
    wait_rows(&host, 300, "the exactly-once subscription's events").await;
    wait_for("every ack confirmed", Duration::from_secs(60), || async {
        (host.metric("tributary_pull_confirmed_total", &[]).await >= 301.0).then_some(())
    })
    .await;
    assert_eq!(host.metric("tributary_pull_unconfirmed_total", &[]).await, 0.0);
    assert_exactly_once(&host, 300).await;
    // Confirmed acks stay acked: nothing comes back after the 10-s ack deadline.
    tokio::time::sleep(Duration::from_secs(12)).await;
    assert_eq!(host.metric("tributary_pull_received_total", &[]).await, 301.0, "no redelivery");
    assert_exactly_once(&host, 300).await;
}
