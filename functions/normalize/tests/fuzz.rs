//! Generated hostile input against the push decoder (`function_kit::envelope`) and the built-in
//! transform, natively: truncated envelopes, huge numbers, deep nesting, invalid UTF-8 and base64,
//! huge attribute maps, arbitrary unwrapped bodies and headers. 4 × 25,000 cases.
//!
//! The property: nothing panics; every input is either a message (then the transform returns rows,
//! each valid JSON carrying the message id as insert id, or a rejection with a reason) or a decode
//! error with a dead-letter reason. So every poison message gets a verdict and a dead letter.

use base64::Engine as _;
use base64::engine::general_purpose::STANDARD;
use function_kit::envelope::{self, PushRequest};
use proptest::prelude::*;
use serde_json::{Value, json};

const CASES: u32 = 25_000;

fn config() -> ProptestConfig {
    ProptestConfig { cases: CASES, failure_persistence: None, ..ProptestConfig::default() }
}

/// Runs one request through decode and transform and checks the verdict.
fn judge(req: &PushRequest) -> Result<(), TestCaseError> {
    let now = chrono::DateTime::parse_from_rfc3339("2024-06-01T12:00:00Z").expect("time").to_utc();
    match envelope::decode(req) {
        Err(e) => prop_assert!(!e.reason().is_empty() && !e.to_string().is_empty()),
        Ok(msg) => {
            prop_assert!(!msg.id.is_empty(), "a message always has an id (a digest when none is sent)");
            match normalize::normalize::normalize(&msg, now) {
                Ok(rows) => {
                    for row in rows {
                        prop_assert_eq!(&row.insert_id, &msg.id);
                        let parsed: Result<Value, _> = serde_json::from_str(&row.json);
                        prop_assert!(parsed.is_ok_and(|v| v.is_object()), "row JSON: {}", row.json);
                    }
                }
                Err(rejection) => prop_assert!(!rejection.reason.is_empty(), "{rejection:?}"),
            }
        }
    }
    Ok(())
}

fn wrapped(body: String) -> PushRequest {
    PushRequest { headers: vec![("content-type".into(), "application/json".into())], body: body.into_bytes() }
}

fn envelope_of(data: &str, attributes: Value, id: &str) -> String {
    json!({"message": {"data": data, "attributes": attributes, "messageId": id, "publishTime": "2024-06-01T11:59:59Z"},
        "subscription": "projects/p/subscriptions/s", "deliveryAttempt": 1})
    .to_string()
}

/// Event payloads a broken or hostile publisher sends.
fn payload() -> impl Strategy<Value = Vec<u8>> {
    let number = prop_oneof![
        Just("1e400".to_owned()),
        Just("-1e400".to_owned()),
        Just("123456789012345678901234567890".to_owned()),
        any::<f64>().prop_map(|f| format!("{f:e}")),
        any::<i64>().prop_map(|i| i.to_string()),
    ];
    prop_oneof![
        // Event-shaped, with hostile values in every field.
        (
            "[a-z_]{0,12}",
            prop_oneof![Just(json!("2024-06-01T11:59:00Z")), ".{0,30}".prop_map(Value::from), any::<i64>().prop_map(Value::from)],
            prop_oneof![".{0,40}".prop_map(Value::from), any::<u64>().prop_map(Value::from), Just(Value::Null)],
            number.clone(),
        )
            .prop_map(|(kind, ts, user, n)| {
                format!(r#"{{"event_type":{},"timestamp":{ts},"user_id":{user},"properties":{{"n":{n}}}}}"#, json!(kind))
                    .into_bytes()
            }),
        // Sensor-shaped readings with extreme numbers.
        (number.clone(), number).prop_map(|(t, h)| {
            format!(r#"{{"sensor_id":"s1","location":"l","temperature":{t},"humidity":{h},"timestamp":"2024-06-01T11:59:00Z"}}"#)
                .into_bytes()
        }),
        // Deep nesting, past any recursion limit.
        (1usize..4000).prop_map(|depth| format!("{}1{}", "[".repeat(depth), "]".repeat(depth)).into_bytes()),
        (1usize..4000).prop_map(|depth| format!("{}{}", r#"{"a":"#.repeat(depth), "}".repeat(depth)).into_bytes()),
        // Arbitrary bytes: invalid UTF-8, binary, empty.
        prop::collection::vec(any::<u8>(), 0..512),
    ]
}

proptest! {
    #![proptest_config(config())]

    /// Valid envelopes cut at any byte.
    #[test]
    fn truncated_envelopes(data in payload(), cut in any::<prop::sample::Index>()) {
        let full = envelope_of(&STANDARD.encode(&data), json!({"source": "web"}), "m-1");
        let at = cut.index(full.len() + 1);
        let body = String::from_utf8_lossy(&full.as_bytes()[..at]).into_owned();
        judge(&wrapped(body))?;
    }

    /// Well-formed envelopes around hostile payloads, and data that is not base64 at all.
    #[test]
    fn hostile_payloads(data in payload(), raw in prop_oneof![Just(None), ".{0,64}".prop_map(Some)], id in "[0-9a-z-]{0,24}") {
        let encoded = raw.unwrap_or_else(|| STANDARD.encode(&data));
        judge(&wrapped(envelope_of(&encoded, json!({}), &id)))?;
    }

    /// Huge attribute maps, with keys and values of any text, and non-string values.
    #[test]
    fn huge_attribute_maps(
        attrs in prop::collection::btree_map(".{0,24}", prop_oneof![".{0,48}".prop_map(Value::from), any::<i64>().prop_map(Value::from), Just(Value::Null)], 0..400),
        data in payload(),
    ) {
        let attributes = Value::Object(attrs.into_iter().collect());
        judge(&wrapped(envelope_of(&STANDARD.encode(&data), attributes, "m-2")))?;
    }

    /// Unwrapped deliveries: any body, any headers (with or without Pub/Sub's metadata).
    #[test]
    fn unwrapped_bodies(
        body in prop_oneof![payload(), prop::collection::vec(any::<u8>(), 0..2048)],
        headers in prop::collection::vec(("[a-z-]{1,24}", ".{0,64}"), 0..40),
        with_id in any::<bool>(),
    ) {
        let mut headers: Vec<(String, String)> = headers;
        if with_id {
            headers.push(("x-goog-pubsub-message-id".into(), "77".into()));
        }
        judge(&PushRequest { headers, body })?;
    }
}
