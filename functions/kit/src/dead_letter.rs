//! The `dead_letter` row: everything needed to understand and replay a message that can never become
//! rows — its payload, attributes, ids, the reason and when it failed.
//!
//! A dead letter must fit where it goes: a Pub/Sub message of 10 MB is 13.3 MB as base64 alone, over
//! BigQuery's 10 MB per row. So the stored payload is its first [`MAX_PAYLOAD_BYTES`] (and the text
//! form the same prefix), and every dead letter records the full size and the SHA-256 of the whole
//! payload, so a truncated one can still be matched with the original message.

use base64::Engine as _;
use base64::engine::general_purpose::STANDARD;
use chrono::{DateTime, SecondsFormat, Utc};
use serde_json::{Map, Value, json};
use sha2::{Digest, Sha256};
use tributary_model::{Message, Row, RowError, tables};

/// Why a message was dead-lettered.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Failure {
    /// Machine-readable code: `bad-envelope`, `not-json`, `invalid` (refused by the warehouse), ...
    pub reason: String,
    /// What was expected and what arrived.
    pub message: String,
    /// Which stage refused it: `decode`, `udf` (a message-transform step), `transform`, `sink`, `state`.
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

/// Payload bytes kept in a dead letter (1 MiB; the rest is summarized by size and digest).
pub const MAX_PAYLOAD_BYTES: usize = 1 << 20;
/// Characters kept of the error message (a refusal of many rows can be long).
pub const MAX_ERROR_CHARS: usize = 16 << 10;

/// Builds the dead-letter row for `msg`. The insert id is the message id, so a redelivered poison
/// message is recorded once.
pub fn row(msg: &Message, failure: &Failure, now: DateTime<Utc>) -> Row {
    let attributes: Map<String, Value> =
        msg.attributes.iter().map(|(k, v)| (k.clone(), Value::String(v.clone()))).collect();
    let kept = &msg.data[..msg.data.len().min(MAX_PAYLOAD_BYTES)];
    // The text form only of a payload that is text, cut at a character boundary.
    let text = std::str::from_utf8(&msg.data).ok().map(|t| &t[..t.floor_char_boundary(MAX_PAYLOAD_BYTES)]);
    let error_message: String = failure.message.chars().take(MAX_ERROR_CHARS).collect();
    let json = json!({
        "message_id": msg.id,
        "subscription": msg.subscription,
        "publish_time": msg.publish_time,
        "delivery_attempt": msg.delivery_attempt,
        "attributes": Value::Object(attributes),
        "payload": STANDARD.encode(kept),
        "payload_text": text,
        "payload_bytes": msg.data.len(),
        "payload_sha256": hex::encode(Sha256::digest(&msg.data)),
        "payload_truncated": kept.len() < msg.data.len(),
        "stage": failure.stage,
        "error_reason": failure.reason,
        "error_message": error_message,
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
        assert_eq!((v["payload_bytes"].as_u64(), v["payload_truncated"].as_bool()), (Some(2), Some(false)));
        assert_eq!(v["payload_sha256"], hex::encode(Sha256::digest([0xff, b'x'])));
    }

    #[test]
    fn a_payload_too_big_for_a_row_is_kept_truncated_with_its_size_and_digest() {
        // 10 MB of text with a multi-byte character across the cut.
        let mut data = "é".repeat(MAX_PAYLOAD_BYTES / 2 + 1).into_bytes();
        data.extend(std::iter::repeat_n(b'a', 10_000_000 - data.len()));
        let msg = Message { id: "big".into(), data: data.clone(), ..Message::default() };
        let failure = Failure { reason: "not-json".into(), message: "x".repeat(100_000), stage: "transform" };
        let r = row(&msg, &failure, Utc::now());
        assert!(r.json.len() < 3 << 20, "the row is {} bytes", r.json.len());
        let v: Value = serde_json::from_str(&r.json).expect("json");
        assert_eq!(STANDARD.decode(v["payload"].as_str().expect("b64")).expect("base64"), data[..MAX_PAYLOAD_BYTES]);
        let text = v["payload_text"].as_str().expect("text");
        assert!(text.len() <= MAX_PAYLOAD_BYTES && text.len() > MAX_PAYLOAD_BYTES - 2 && text.ends_with('é'));
        assert_eq!((v["payload_bytes"].as_u64(), v["payload_truncated"].as_bool()), (Some(10_000_000), Some(true)));
        assert_eq!(v["payload_sha256"], hex::encode(Sha256::digest(&data)));
        assert_eq!(v["error_message"].as_str().map(str::len), Some(MAX_ERROR_CHARS));
    }
}
