//! Durability across restarts: a graceful stop commits what was acked, and a message redelivered
//! after a restart (or after SIGKILL) is not written twice; a SIGKILL loop during a replay through the
//! real Pub/Sub emulator loses and duplicates nothing.

use std::time::{Duration, Instant};

use serde_json::json;

use crate::support::{Host, PubSub, envelope, http_raw, temp_dir, wait_for};

const SUB: &str = "projects/tributary-test/subscriptions/restart";

fn event(i: usize) -> Vec<u8> {
    format!(r#"{{"user_id":"u{i}","event_type":"view","timestamp":"2024-01-01 10:00:00"}}"#).into_bytes()
}

async fn push_all(host: &Host, range: std::ops::Range<usize>) {
    for i in range {
        let (status, body) = http_raw(
            "POST",
            &host.push_url(),
            envelope(&format!("m{i}"), &event(i), SUB).into_bytes(),
            &[("content-type", "application/json")],
        )
        .await;
        assert_eq!(status, 204, "push m{i}: {body}");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn redeliveries_after_restart_and_sigkill_are_deduplicated() {
    let data = temp_dir("restart");
    let mut host = Host::start(&data, "").await;
    push_all(&host, 0..50).await;
    host.stop();
    assert!(host.log_text().contains("stopped"), "graceful shutdown: {}", host.log_text());

    // Same data dir, new process: the same 50 again plus 50 new.
    let mut host = Host::start(&data, "").await;
    push_all(&host, 0..100).await;
    assert_eq!(host.count("SELECT count(*) FROM streaming_events").await, 100);
    host.kill();

    // After SIGKILL every acked push is still there, and redelivery adds nothing.
    let host = Host::start(&data, "").await;
    assert_eq!(host.count("SELECT count(*) FROM streaming_events").await, 100);
    push_all(&host, 50..120).await;
    assert_eq!(host.count("SELECT count(*) FROM streaming_events").await, 120);
    assert_eq!(host.count("SELECT count(DISTINCT _insert_id) FROM streaming_events").await, 120);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_sigkill_loop_during_an_emulator_replay_loses_and_duplicates_nothing() {
    const WAVES: usize = 6;
    const PER_WAVE: usize = 4_000;
    let total = WAVES * PER_WAVE;
    let pubsub = PubSub::start().await;
    let data = temp_dir("kill-loop");
    let (addr, admin) = Host::free_addrs();
    let mut host = Host::start_at(&data, addr, admin, "").await;
    pubsub.create_topic("replay").await;
    pubsub.create_push_subscription("replay", "replay", &format!("http://{addr}/push/events"), false).await;

    // Each wave is published, and the host is killed (SIGKILL) while the emulator is pushing it.
    let started = Instant::now();
    let mut landed_at_kill = Vec::new();
    for wave in 0..WAVES {
        let msgs: Vec<_> = (wave * PER_WAVE..(wave + 1) * PER_WAVE).map(|i| (event(i), json!({}))).collect();
        pubsub.publish("replay", &msgs).await;
        if wave + 1 < WAVES {
            tokio::time::sleep(Duration::from_millis(700)).await;
            landed_at_kill.push(host.count("SELECT count(*) FROM streaming_events").await);
            host.kill();
            host = Host::start_at(&data, addr, admin, "").await;
        }
    }
    let distinct = "SELECT count(DISTINCT user_id) FROM streaming_events";
    // After 5 kills the emulator has shrunk its push window to a few requests at a time (Pub/Sub's
    // slow start after failed pushes) and widens it again only slowly: on a loaded 2-core machine the
    // backlog can take several minutes to drain. Nothing is lost meanwhile, only late.
    wait_for("every published message to land", Duration::from_secs(900), || async {
        (host.count(distinct).await == total as i64).then_some(())
    })
    .await;
    // Redeliveries of messages acked just before a kill may still arrive: give them time, then count.
    tokio::time::sleep(Duration::from_secs(5)).await;
    let rows = host.count("SELECT count(*) FROM streaming_events").await;
    let lost = total as i64 - host.count(distinct).await;
    eprintln!(
        "kill loop: {} SIGKILLs (rows landed at each: {landed_at_kill:?}), {total} messages, {lost} lost, {} duplicates, {:?}",
        landed_at_kill.len(),
        rows - total as i64,
        started.elapsed()
    );
    assert_eq!(landed_at_kill.len(), WAVES - 1);
    assert_eq!(lost, 0);
    assert_eq!(rows, total as i64, "no duplicates");
}
