//! The vertical slice end to end: the emulator pushes ≥ 1,000 messages, wrapped and unwrapped, to the
//! host; every one lands exactly once, malformed ones in `dead_letter` with their payload and reason.

use std::collections::{BTreeMap, HashMap};
use std::time::Duration;

use serde_json::{Value, json};

use crate::support::{Host, PubSub, envelope, http_raw, temp_dir, wait_for};

/// What a published message should become.
#[derive(Debug, Clone)]
enum Expect {
    Event { user_id: String, event_type: String },
    DeadLetter { reason: &'static str },
}

fn corpus() -> Vec<(Vec<u8>, Value, Expect)> {
    let mut out = Vec::new();
    // The seed's two sample shapes, then many generated ones.
    out.push((
        br#"{"user_id":"12345","event_type":"page_view","timestamp":"2024-01-01 10:00:00","page_url":"/home","session_id":"session_123"}"#.to_vec(),
        json!({"source": "web"}),
        Expect::Event { user_id: "12345".into(), event_type: "page_view".into() },
    ));
    out.push((
        br#"{"user_id":"67890","event_type":"purchase","timestamp":"2024-01-01T10:05:00Z","page_url":"/checkout","session_id":"session_456","properties":{"amount":99.99,"product_id":"prod_789"}}"#.to_vec(),
        json!({}),
        Expect::Event { user_id: "67890".into(), event_type: "purchase".into() },
    ));
    let types = ["page_view", "click", "add_to_cart", "purchase", "search"];
    for i in 0..1000 {
        let event_type = types[i % types.len()];
        let user = format!("user_{}", i % 137);
        let ts = match i % 4 {
            0 => json!(format!("2024-01-01 10:{:02}:{:02}", (i / 60) % 60, i % 60)),
            1 => json!(format!("2024-01-01T11:{:02}:{:02}+01:00", (i / 60) % 60, i % 60)),
            2 => json!(1_704_103_200 + i as i64),
            _ => json!(1_704_103_200_000_i64 + i as i64 * 1000),
        };
        let payload = json!({"user_id": user, "event_type": event_type, "timestamp": ts,
            "session_id": format!("s_{}", i % 300), "page_url": format!("/p/{}", i % 50), "n": i});
        out.push((
            payload.to_string().into_bytes(),
            json!({"i": i.to_string()}),
            Expect::Event { user_id: user, event_type: event_type.into() },
        ));
    }
    // Malformed: every kind of refusal.
    for i in 0..20 {
        out.push((format!("not json {i}").into_bytes(), json!({}), Expect::DeadLetter { reason: "not-json" }));
        out.push((
            format!(r#"{{"user_id":"u{i}"}}"#).into_bytes(),
            json!({}),
            Expect::DeadLetter { reason: "missing-field" },
        ));
        out.push((
            format!(r#"{{"user_id":"u{i}","event_type":"x","timestamp":"tomorrow-ish {i}"}}"#).into_bytes(),
            json!({}),
            Expect::DeadLetter { reason: "bad-timestamp" },
        ));
    }
    out
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn emulator_pushes_land_exactly_once_wrapped_and_unwrapped() {
    let pubsub = PubSub::start().await;
    let host = Host::start(&temp_dir("e2e"), "").await;
    pubsub.create_topic("events").await;
    // Two subscriptions deliver every message twice, once per format, with the same message id:
    // dedup on insert id must leave one row per message.
    pubsub.create_push_subscription("events-wrapped", "events", &host.push_url(), false).await;
    pubsub.create_push_subscription("events-raw", "events", &host.push_url(), true).await;

    let corpus = corpus();
    let messages: Vec<(Vec<u8>, Value)> = corpus.iter().map(|(d, a, _)| (d.clone(), a.clone())).collect();
    let ids = pubsub.publish("events", &messages).await;
    assert_eq!(ids.len(), corpus.len());
    let expected: HashMap<&str, &Expect> =
        ids.iter().map(String::as_str).zip(corpus.iter().map(|(_, _, e)| e)).collect();
    let events = expected.values().filter(|e| matches!(e, Expect::Event { .. })).count() as i64;
    let dead = expected.len() as i64 - events;
    assert!(events >= 1000 && dead > 0);

    // Redeliveries of already-published messages, straight to the host: still one row each.
    let (first_id, (first_data, _, _)) = (&ids[0], &corpus[0]);
    for _ in 0..3 {
        let (status, body) = http_raw(
            "POST",
            &host.push_url(),
            envelope(first_id, first_data, "projects/tributary-test/subscriptions/events-wrapped").into_bytes(),
            &[("content-type", "application/json")],
        )
        .await;
        assert_eq!(status, 204, "{body}");
    }

    // Binary payloads are kept byte for byte. (Sent directly: the emulator's no-wrapper delivery
    // turns non-UTF-8 bytes into U+FFFD, so it cannot carry this case.)
    let binary = [0xff_u8, 0xfe, 0x00, b'{'];
    let (status, body) = http_raw(
        "POST",
        &host.push_url(),
        envelope("binary-1", &binary, "projects/tributary-test/subscriptions/direct").into_bytes(),
        &[("content-type", "application/json")],
    )
    .await;
    // Acked (2xx) once its dead letter is durable; 200 with the reason says it was dead-lettered.
    assert_eq!(status, 200, "{body}");
    assert!(body.starts_with("dead-lettered (not-json)"), "{body}");
    let letter = host
        .sql("SELECT payload, payload_text, error_reason, subscription FROM dead_letter WHERE message_id = 'binary-1'")
        .await;
    use base64::Engine as _;
    assert_eq!(
        letter,
        vec![json!({"payload": base64::engine::general_purpose::STANDARD.encode(binary), "payload_text": null,
            "error_reason": "not-json", "subscription": "projects/tributary-test/subscriptions/direct"})]
    );

    wait_for("every message to land", Duration::from_secs(180), || async {
        let n = host.count("SELECT count(*) FROM streaming_events").await;
        let d = host.count("SELECT count(*) FROM dead_letter WHERE message_id <> 'binary-1'").await;
        (n >= events && d >= dead).then_some(())
    })
    .await;
    // Let both subscriptions finish their deliveries, then check nothing more arrived.
    wait_for("both subscriptions to deliver everything", Duration::from_secs(120), || async {
        let pushes = host.metric("tributary_pushes_total", &["outcome=\"acked\""]).await;
        (pushes >= (2 * expected.len() + 4) as f64).then_some(())
    })
    .await;

    assert_eq!(host.count("SELECT count(*) FROM streaming_events").await, events);
    assert_eq!(host.count("SELECT count(DISTINCT message_id) FROM streaming_events").await, events, "no duplicates");
    assert_eq!(host.count("SELECT count(*) FROM dead_letter WHERE message_id <> 'binary-1'").await, dead);

    // Every event row is the message it came from.
    let rows = host.sql("SELECT message_id, user_id, event_type FROM streaming_events").await;
    for row in &rows {
        let id = row["message_id"].as_str().expect("message_id");
        match expected.get(id) {
            Some(Expect::Event { user_id, event_type }) => {
                assert_eq!(row["user_id"], json!(user_id), "message {id}");
                assert_eq!(row["event_type"], json!(event_type), "message {id}");
            }
            other => panic!("row for message {id} that should be {other:?}"),
        }
    }
    // Every dead letter carries its payload and the right reason.
    let letters = host
        .sql("SELECT message_id, error_reason, payload, stage FROM dead_letter WHERE message_id <> 'binary-1'")
        .await;
    let mut reasons: BTreeMap<String, usize> = BTreeMap::new();
    for row in &letters {
        let id = row["message_id"].as_str().expect("message_id");
        let Some(Expect::DeadLetter { reason }) = expected.get(id) else { panic!("unexpected dead letter {row}") };
        assert_eq!(row["error_reason"], json!(reason), "message {id}");
        assert_eq!(row["stage"], "transform");
        let index = ids.iter().position(|i| i == id).expect("published");
        use base64::Engine as _;
        assert_eq!(row["payload"], json!(base64::engine::general_purpose::STANDARD.encode(&corpus[index].0)));
        *reasons.entry(reason.to_string()).or_default() += 1;
    }
    assert_eq!(reasons.get("bad-timestamp"), Some(&20));

    // The seed's sample event, column by column.
    let seed = host
        .sql(&format!(
            "SELECT event_id, user_id, event_type, strftime(\"timestamp\", '%Y-%m-%d %H:%M:%S') AS ts, page_url, session_id, \
             properties::VARCHAR AS properties, message_id FROM streaming_events WHERE message_id = '{first_id}'"
        ))
        .await;
    assert_eq!(
        seed,
        vec![json!({"event_id": first_id, "user_id": "12345", "event_type": "page_view", "ts": "2024-01-01 10:00:00",
            "page_url": "/home", "session_id": "session_123", "properties": "{}", "message_id": first_id})]
    );
    let purchase = host
        .sql(&format!(
            "SELECT json_extract_string(properties, '$.product_id') AS product, CAST(json_extract(properties, '$.amount') AS DOUBLE) AS amount \
             FROM streaming_events WHERE message_id = '{}'",
            ids[1]
        ))
        .await;
    assert_eq!(purchase, vec![json!({"product": "prod_789", "amount": 99.99})]);
    // Epoch millis and offsets normalized to UTC.
    let generated = host.sql("SELECT count(*) AS n FROM streaming_events WHERE \"timestamp\" < TIMESTAMP '2024-01-01 10:00:00' OR \"timestamp\" > TIMESTAMP '2024-01-01 11:00:00'").await;
    assert_eq!(generated, vec![json!({"n": 0})], "all generated timestamps fall in 10:00..11:00 UTC");
}
