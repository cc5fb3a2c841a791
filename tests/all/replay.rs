//! `tributary replay`: a JSON-lines file pushed to a running host (twice, with message ids from the
//! content: the rerun adds nothing) and published to a topic of Google's Pub/Sub emulator whose push
//! subscription delivers it to the host.

use std::time::Duration;

use serde_json::json;

use crate::support::{Host, PubSub, temp_dir, wait_for};

fn replay(args: &[&str], env: &[(&str, &str)]) -> String {
    let out = std::process::Command::new(env!("CARGO_BIN_EXE_tributary"))
        .arg("replay")
        .args(args)
        .envs(env.iter().copied())
        .output()
        .expect("tributary replay");
    assert!(out.status.success(), "replay: {}", String::from_utf8_lossy(&out.stderr));
    String::from_utf8_lossy(&out.stdout).trim().to_owned()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_file_replays_as_pushes_idempotently_and_as_publishes() {
    let pubsub = PubSub::start().await;
    let dir = temp_dir("replay");
    let host = Host::start(&dir, "").await;
    let file = dir.join("events.jsonl");
    let mut lines = Vec::new();
    for i in 0..300 {
        let event = json!({"user_id": format!("u{}", i % 17), "event_type": "page_view",
            "timestamp": "2026-01-01T10:00:00Z", "page_url": format!("/p/{i}")});
        // Every third line in the {data, attributes} form.
        lines.push(
            if i % 3 == 0 { json!({"data": event.to_string(), "attributes": {"line": i.to_string()}}) } else { event }
                .to_string(),
        );
    }
    lines.push(String::from("not an event"));
    std::fs::write(&file, lines.join("\n") + "\n").expect("file");
    let url = format!("http://{}/push/events", host.addr);
    let path = file.to_string_lossy().into_owned();
    for _ in 0..2 {
        let out = replay(&[&path, "--url", &url, "--message-ids-from-content", "--concurrency", "8"], &[]);
        assert!(out.starts_with("300 delivered in") && out.contains("1 dead-lettered"), "{out}");
    }
    assert_eq!(host.count("SELECT count(*) FROM streaming_events").await, 300, "the rerun added nothing");
    assert_eq!(host.count("SELECT count(*) FROM dead_letter").await, 1);

    // As publishes: the emulator assigns ids; its push subscription brings them to the host.
    pubsub.create_topic("replayed").await;
    pubsub.create_push_subscription("replayed-push", "replayed", &url, false).await;
    let emulator = pubsub.emulator_host();
    let out = replay(
        &[&path, "--topic", "projects/tributary-test/topics/replayed", "--rate", "500"],
        &[("PUBSUB_EMULATOR_HOST", emulator.as_str())],
    );
    assert!(out.starts_with("301 delivered in"), "{out}");
    wait_for("the published replay", Duration::from_secs(90), || async {
        (host.count("SELECT count(*) FROM streaming_events").await == 600).then_some(())
    })
    .await;
    assert_eq!(host.count("SELECT count(*) FROM dead_letter").await, 2);
}
