//! A guest that traps, loops or exhausts its memory fails its own push (500) and nothing else: other
//! pushes, served at the same time, are acked and written. A message the guest keeps failing on is
//! dead-lettered by the host after `guest.max_failed_deliveries` (3) and acked.

use std::time::{Duration, Instant};

use crate::support::{Host, envelope, http_raw, temp_dir};

const SUB: &str = "projects/tributary-test/subscriptions/chaos";

async fn push(host: &Host, id: &str, data: &str) -> (u16, String, Duration) {
    let started = Instant::now();
    let (status, body) = http_raw(
        "POST",
        &host.push_url(),
        envelope(id, data.as_bytes(), SUB).into_bytes(),
        &[("content-type", "application/json")],
    )
    .await;
    (status, body, started.elapsed())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn trapping_looping_and_hungry_guests_fail_only_their_own_push() {
    let config = format!(
        "[components]\ntransform = \"{}\"\n[guest]\nmemory_mib = 32\ntransform_timeout_ms = 500\n",
        crate::support::CHAOS_TRANSFORM_PATH
    );
    let host = Host::start(&temp_dir("chaos"), &config).await;

    let (status, body, _) = push(&host, "trap-1", "trap").await;
    assert_eq!(status, 500, "{body}");
    assert!(body.contains("function failed"), "{body}");

    let (status, body, _) = push(&host, "oom-1", "oom").await;
    assert_eq!(status, 500, "{body}");

    // A loop is stopped by the transform's deadline while other pushes go through.
    let looping = push(&host, "loop-1", "loop");
    let others = async {
        let mut statuses = Vec::new();
        for i in 0..20 {
            statuses.push(push(&host, &format!("ok-{i}"), "fine").await.0);
        }
        statuses
    };
    let ((status, body, took), statuses) = tokio::join!(looping, others);
    assert_eq!(status, 500, "{body}");
    assert!(took < Duration::from_secs(5), "the loop ran {took:?}; its deadline is 500 ms");
    assert_eq!(statuses, vec![204; 20]);

    // The host is healthy, nothing of the failures was written, the good pushes were.
    let (status, _) = http_raw("GET", &format!("http://{}/healthz", host.addr), Vec::new(), &[]).await;
    assert_eq!(status, 200);
    assert_eq!(host.count("SELECT count(*) FROM streaming_events WHERE event_type = 'chaos_ok'").await, 20);
    assert_eq!(
        host.count("SELECT count(*) FROM streaming_events WHERE message_id IN ('trap-1','oom-1','loop-1')").await,
        0
    );
    assert_eq!(host.count("SELECT count(*) FROM dead_letter").await, 0, "a crash is not a verdict on the message");
    assert_eq!(host.metric("tributary_pushes_total", &["outcome=\"guest_error\""]).await, 3.0);

    // A poison message ends: the third failed delivery of trap-1 is dead-lettered (stage guest) and acked.
    let (status, body, _) = push(&host, "trap-1", "trap").await;
    assert_eq!(status, 500, "second failed delivery: {body}");
    let (status, body, _) = push(&host, "trap-1", "trap").await;
    assert_eq!(status, 200, "third failed delivery: {body}");
    assert!(body.contains("dead-lettered"), "{body}");
    let rows = host
        .sql("SELECT stage, error_reason, payload_text, error_message FROM dead_letter WHERE message_id = 'trap-1'")
        .await;
    assert_eq!(rows.len(), 1, "{rows:?}");
    assert_eq!((rows[0]["stage"].as_str(), rows[0]["error_reason"].as_str()), (Some("guest"), Some("guest-failed")));
    assert_eq!(rows[0]["payload_text"], "trap");
    assert!(rows[0]["error_message"].as_str().is_some_and(|m| m.contains("3 times")), "{rows:?}");
    assert_eq!(host.metric("tributary_poisoned_total", &["/push/events"]).await, 1.0);
    // Pub/Sub's own count wins when the envelope carries one (a subscription with a dead-letter policy).
    let mut env: serde_json::Value = serde_json::from_str(&envelope("oom-2", b"oom", SUB)).expect("json");
    env["deliveryAttempt"] = 5.into();
    let (status, body) =
        http_raw("POST", &host.push_url(), env.to_string().into_bytes(), &[("content-type", "application/json")]).await;
    assert_eq!(status, 200, "deliveryAttempt 5: {body}");
    assert_eq!(host.count("SELECT count(*) FROM dead_letter WHERE message_id = 'oom-2'").await, 1);
}
