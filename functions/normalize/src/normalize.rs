//! Pub/Sub event → one `streaming_events` row: the seed's normalization (§3.1, §4.2). A payload with a
//! `sensor_id` is a sensor reading instead, normalized by [`crate::sensor`].
//!
//! Columns: `event_id` (payload `id`/`event_id`, else the message id), `user_id`, `event_type`,
//! `timestamp` (see [`crate::timestamp`]; the publish time when absent), `session_id`, `page_url`,
//! `properties` (every other payload field; a payload `properties` object is merged in, top level wins),
//! `publish_time`, `message_id`, `processed_at`.

use chrono::{DateTime, Utc};
use serde_json::{Map, Value, json};
use tributary_model::{Message, Rejection, Row, tables};

use crate::{sensor, timestamp};

/// Payload fields that become columns; everything else goes to `properties`.
const COLUMN_FIELDS: [&str; 7] = ["id", "event_id", "user_id", "event_type", "timestamp", "session_id", "page_url"];

/// Normalizes one message. `now` is the processing time (injected so tests are deterministic).
pub fn normalize(msg: &Message, now: DateTime<Utc>) -> Result<Vec<Row>, Rejection> {
    let payload: Value = serde_json::from_slice(&msg.data)
        .map_err(|e| Rejection::new("not-json", format!("expected a JSON object payload, got invalid JSON: {e}")))?;
    let Value::Object(mut fields) = payload else {
        return Err(Rejection::new("not-object", format!("expected a JSON object payload, got {}", kind(&payload))));
    };
    if sensor::is_reading(&fields) {
        return sensor::normalize(msg, &fields, now);
    }

    let event_id = match identifier(&fields, "id")?.or(identifier(&fields, "event_id")?) {
        Some(id) => id,
        None => msg.id.clone(),
    };
    let user_id = identifier(&fields, "user_id")?
        .ok_or_else(|| Rejection::new("missing-field", "expected a string field 'user_id', it is absent"))?;
    let event_type = text(&fields, "event_type")?
        .filter(|t| !t.is_empty())
        .ok_or_else(|| Rejection::new("missing-field", "expected a non-empty string field 'event_type'"))?;
    let publish_time = msg
        .publish_time
        .as_deref()
        .map(|t| {
            timestamp::parse(&Value::String(t.to_owned()))
                .map_err(|e| Rejection::new("bad-publish-time", format!("message publish time: {e}")))
        })
        .transpose()?;
    let event_time = match fields.get("timestamp").filter(|v| !v.is_null()) {
        Some(v) => {
            timestamp::parse(v).map_err(|e| Rejection::new("bad-timestamp", format!("field 'timestamp': {e}")))?
        }
        None => publish_time.ok_or_else(|| {
            Rejection::new("missing-field", "expected a 'timestamp' field (or a message publish time), both absent")
        })?,
    };
    let session_id = identifier(&fields, "session_id")?;
    let page_url = text(&fields, "page_url")?;

    for name in COLUMN_FIELDS {
        fields.remove(name);
    }
    let mut properties = match fields.remove("properties") {
        Some(Value::Object(nested)) => nested,
        Some(other) => Map::from_iter([("properties".to_owned(), other)]),
        None => Map::new(),
    };
    properties.extend(fields);

    let row = json!({
        "event_id": event_id,
        "user_id": user_id,
        "event_type": event_type,
        "timestamp": timestamp::format(&event_time),
        "session_id": session_id,
        "page_url": page_url,
        "properties": Value::Object(properties),
        "publish_time": publish_time.as_ref().map(timestamp::format),
        "message_id": msg.id,
        "processed_at": timestamp::format(&now),
    });
    Ok(vec![Row { table: tables::STREAMING_EVENTS.to_owned(), insert_id: msg.id.clone(), json: row.to_string() }])
}

/// A string field, or a number spelled as one (ids are often numeric); `None` when absent or null.
fn identifier(fields: &Map<String, Value>, name: &str) -> Result<Option<String>, Rejection> {
    match fields.get(name) {
        None | Some(Value::Null) => Ok(None),
        Some(Value::String(s)) => Ok(Some(s.clone())),
        Some(Value::Number(n)) => Ok(Some(n.to_string())),
        Some(other) => Err(wrong_type(name, "a string or number", other)),
    }
}

/// A string field; `None` when absent or null.
fn text(fields: &Map<String, Value>, name: &str) -> Result<Option<String>, Rejection> {
    match fields.get(name) {
        None | Some(Value::Null) => Ok(None),
        Some(Value::String(s)) => Ok(Some(s.clone())),
        Some(other) => Err(wrong_type(name, "a string", other)),
    }
}

fn wrong_type(name: &str, expected: &str, got: &Value) -> Rejection {
    Rejection::new("wrong-type", format!("field '{name}': expected {expected}, got {}", kind(got)))
}

fn kind(v: &Value) -> &'static str {
    match v {
        Value::Null => "null",
        Value::Bool(_) => "a boolean",
        Value::Number(_) => "a number",
        Value::String(_) => "a string",
        Value::Array(_) => "an array",
        Value::Object(_) => "an object",
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn message(data: &str) -> Message {
        Message {
            id: "m-1".into(),
            data: data.as_bytes().to_vec(),
            publish_time: Some("2024-01-01T10:00:01.5Z".into()),
            ..Message::default()
        }
    }

    fn now() -> DateTime<Utc> {
        DateTime::parse_from_rfc3339("2024-01-01T10:00:02Z").expect("valid").with_timezone(&Utc)
    }

    fn row(data: &str) -> Value {
        let rows = normalize(&message(data), now()).expect("normalizes");
        assert_eq!(rows.len(), 1);
        assert_eq!(rows[0].insert_id, "m-1");
        serde_json::from_str(&rows[0].json).expect("row is JSON")
    }

    fn rejection(data: &str) -> Rejection {
        normalize(&message(data), now()).expect_err("rejected")
    }

    #[test]
    fn event_id_prefers_id_then_event_id_then_message_id() {
        assert_eq!(row(r#"{"id":"a","event_id":"b","user_id":"u","event_type":"t"}"#)["event_id"], "a");
        assert_eq!(row(r#"{"event_id":7,"user_id":"u","event_type":"t"}"#)["event_id"], "7");
        assert_eq!(row(r#"{"user_id":"u","event_type":"t"}"#)["event_id"], "m-1");
    }

    #[test]
    fn missing_timestamp_falls_back_to_publish_time() {
        assert_eq!(row(r#"{"user_id":"u","event_type":"t"}"#)["timestamp"], "2024-01-01T10:00:01.500000Z");
    }

    #[test]
    fn properties_merge_nested_and_leftover_fields() {
        let r = row(r#"{"user_id":"u","event_type":"t","properties":{"a":1,"b":1},"b":2,"c":[3]}"#);
        assert_eq!(r["properties"], json!({"a":1,"b":2,"c":[3]}));
        let r = row(r#"{"user_id":"u","event_type":"t","properties":"scalar"}"#);
        assert_eq!(r["properties"], json!({"properties":"scalar"}));
    }

    #[test]
    fn refusals_say_what_was_expected() {
        assert_eq!(rejection("not json").reason, "not-json");
        assert_eq!(rejection("[1,2]").message, "expected a JSON object payload, got an array");
        assert_eq!(rejection(r#"{"event_type":"t"}"#).reason, "missing-field");
        assert_eq!(rejection(r#"{"user_id":"u","event_type":""}"#).reason, "missing-field");
        assert_eq!(
            rejection(r#"{"user_id":{"x":1},"event_type":"t"}"#).message,
            "field 'user_id': expected a string or number, got an object"
        );
        assert_eq!(rejection(r#"{"user_id":"u","event_type":"t","timestamp":"soon"}"#).reason, "bad-timestamp");
    }
}
