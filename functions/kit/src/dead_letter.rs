//! The `dead_letter` row: everything needed to understand and replay a message that can never become
//! rows — its payload, attributes, ids, the reason and when it failed.

use base64::Engine as _;
use base64::engine::general_purpose::STANDARD;
use chrono::{DateTime, SecondsFormat, Utc};
use serde_json::{Map, Value, json};
use tributary_model::{Message, Row, RowError, tables};

/// Why a message was dead-lettered.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Failure {
    /// Machine-readable code: `bad-envelope`, `not-json`, `invalid` (refused by the warehouse), ...
    pub reason: String,
    /// What was expected and what arrived.
    pub message: String,
    /// Which stage refused it: `decode`, `transform` or `sink`.
    pub stage: &'static str,
}

impl Failure {
    /// The warehouse refused some of a message's rows: one failure naming every refusal. The rows of
    /// the message that were written stay written.
    pub fn refused(refused: &[RowError]) -> Failure {
        let message = refused
            .iter()
            .map(|e| match &e.location {
                Some(loc) => format!("row {}: {} (at {loc})", e.index, e.message),
                None => format!("row {}: {}", e.index, e.message),
            })
            .collect::<Vec<_>>()
            .join("; ");
        Failure { reason: refused.first().map_or_else(String::new, |e| e.reason.clone()), message, stage: "sink" }
    }
}

/// Builds the dead-letter row for `msg`. The insert id is the message id, so a redelivered poison
/// message is recorded once.
pub fn row(msg: &Message, failure: &Failure, now: DateTime<Utc>) -> Row {
    let attributes: Map<String, Value> =
        msg.attributes.iter().map(|(k, v)| (k.clone(), Value::String(v.clone()))).collect();
    let json = json!({
        "message_id": msg.id,
        "subscription": msg.subscription,
        "publish_time": msg.publish_time,
        "delivery_attempt": msg.delivery_attempt,
        "attributes": Value::Object(attributes),
        "payload": STANDARD.encode(&msg.data),
        "payload_text": std::str::from_utf8(&msg.data).ok(),
        "stage": failure.stage,
        "error_reason": failure.reason,
        "error_message": failure.message,
        "failed_at": now.to_rfc3339_opts(SecondsFormat::Micros, true),
    });
    Row { table: tables::DEAD_LETTER.to_owned(), insert_id: msg.id.clone(), json: json.to_string() }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn keeps_payload_bytes_and_reason() {
        let msg = Message {
            id: "42".into(),
            data: vec![0xff, b'x'],
            attributes: vec![("k".into(), "v".into())],
            subscription: Some("projects/p/subscriptions/s".into()),
            ..Message::default()
        };
        let failure = Failure { reason: "not-json".into(), message: "bad".into(), stage: "transform" };
        let now = DateTime::from_timestamp(1_704_103_200, 0).expect("valid");
        let r = row(&msg, &failure, now);
        assert_eq!((r.table.as_str(), r.insert_id.as_str()), ("dead_letter", "42"));
        let v: Value = serde_json::from_str(&r.json).expect("json");
        assert_eq!(v["payload"], "/3g=");
        assert_eq!(v["payload_text"], Value::Null, "not UTF-8, so no text form");
        assert_eq!(v["attributes"], json!({"k":"v"}));
        assert_eq!(v["error_reason"], "not-json");
        assert_eq!(v["stage"], "transform");
        assert_eq!(v["failed_at"], "2024-01-01T10:00:00.000000Z");
    }
}
