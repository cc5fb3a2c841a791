//! Transient failure: while the warehouse fails (the test-only fault switch, FAULT INJECTION), pushes
//! are answered 503 and Pub/Sub keeps redelivering; after recovery every message lands exactly once.

use std::time::Duration;

use serde_json::json;

use crate::support::{Host, PubSub, http_raw, temp_dir, wait_for};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_failing_warehouse_nacks_and_pubsub_redelivers_everything_once() {
    let pubsub = PubSub::start().await;
    let host = Host::start(&temp_dir("faults"), "[testing]\nfault_injection = true\n").await;
    let fault = |state: &'static str| {
        let url = format!("http://{}/faults/sink", host.admin);
        async move {
            let (status, body) = http_raw("PUT", &url, state.as_bytes().to_vec(), &[]).await;
            assert_eq!(status, 200, "{body}");
        }
    };
    fault("fail").await;
    pubsub.create_topic("faulty").await;
    pubsub.create_push_subscription("faulty-push", "faulty", &host.push_url(), false).await;
    let messages: Vec<_> = (0..60)
        .map(|i| {
            (
                format!(r#"{{"user_id":"u{i}","event_type":"click","timestamp":"2024-01-01 10:00:00"}}"#).into_bytes(),
                json!({}),
            )
        })
        .collect();
    let ids = pubsub.publish("faulty", &messages).await;

    // Pushes arrive and are refused with 503 while the fault is on; nothing is written.
    wait_for("503 answers during the outage", Duration::from_secs(60), || async {
        (host.metric("tributary_pushes_total", &["outcome=\"unavailable\""]).await >= 60.0).then_some(())
    })
    .await;
    assert_eq!(host.count("SELECT count(*) FROM streaming_events").await, 0);
    assert_eq!(host.metric("tributary_pushes_total", &["outcome=\"acked\""]).await, 0.0);

    fault("ok").await;
    wait_for("every message after recovery", Duration::from_secs(120), || async {
        (host.count("SELECT count(*) FROM streaming_events").await >= 60).then_some(())
    })
    .await;
    // Redeliveries still in flight must not add rows.
    tokio::time::sleep(Duration::from_secs(3)).await;
    assert_eq!(host.count("SELECT count(*) FROM streaming_events").await, 60);
    let landed = host.sql("SELECT message_id FROM streaming_events ORDER BY message_id").await;
    let mut landed: Vec<String> = landed.iter().map(|r| r["message_id"].as_str().expect("id").to_owned()).collect();
    let mut published = ids.clone();
    landed.sort();
    published.sort();
    assert_eq!(landed, published, "every published message, once");
    assert_eq!(host.count("SELECT count(*) FROM dead_letter").await, 0, "an outage is not a poison message");
}
