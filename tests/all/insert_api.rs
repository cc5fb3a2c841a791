//! The host's BigQuery-compatible `insertAll` route, driven by Google's official Python client
//! (`insert_rows_json`): rows land in the embedded warehouse, insert ids dedup retries, refused rows
//! come back as BigQuery-shaped `insertErrors`.

use serde_json::json;

use crate::support::{Host, official_client, temp_dir};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_official_client_streams_into_the_host_with_dedup_and_per_row_errors() {
    let host = Host::start(&temp_dir("insert-api"), "").await;
    let endpoint = format!("http://{}", host.admin);
    let row = |id: &str, ts: &str| json!({"id": id, "row": {"event_id": id, "event_type": "api", "timestamp": ts, "user_id": "u1", "properties": {"via": "insertAll"}}});
    let rows = json!([
        row("a", "2024-01-01T10:00:00Z"),
        row("b", "2024-01-01 10:00:01"),
        row("bad", "not a time"),
        row("c", "2024-01-01T10:00:02Z"),
    ])
    .to_string();
    let errors = official_client(&endpoint, "any-project", &["insert", "tributary.streaming_events", &rows]);
    let errors = errors.as_array().expect("error list");
    assert_eq!(errors.len(), 1, "{errors:?}");
    assert_eq!(errors[0]["index"], 2);
    assert_eq!(errors[0]["errors"][0]["reason"], "invalid");
    assert_eq!(errors[0]["errors"][0]["location"], "timestamp");

    // The client retries (same row ids): nothing doubles.
    let again = official_client(&endpoint, "any-project", &["insert", "tributary.streaming_events", &rows]);
    assert_eq!(again.as_array().map(Vec::len), Some(1));
    assert_eq!(host.count("SELECT count(*) FROM streaming_events").await, 3);
    let props = host.sql("SELECT properties->>'via' AS via FROM streaming_events WHERE event_id = 'b'").await;
    assert_eq!(props, vec![json!({"via": "insertAll"})]);

    let missing = official_client(
        &endpoint,
        "p",
        &["insert", "tributary.nope", &json!([row("x", "2024-01-01T10:00:00Z")]).to_string()],
    );
    assert_eq!(missing["status"], 404, "{missing}");
    assert!(missing["message"].as_str().is_some_and(|m| m.contains("Not found: Table p:tributary.nope")), "{missing}");
}
