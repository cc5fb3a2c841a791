//! Durability across restarts: a graceful stop commits what was acked, and a message redelivered
//! after a restart (or after SIGKILL) is not written twice.

use crate::support::{Host, envelope, http_raw, temp_dir};

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
