//! Pub/Sub push request → [`Message`], for both delivery formats.
//!
//! - Wrapped (the default): a JSON body `{"message":{"data":<base64>,"attributes",..,"messageId",
//!   "publishTime","orderingKey"},"subscription","deliveryAttempt"}`; both camelCase and snake_case ids.
//! - Unwrapped (`no_wrapper`): the body is the payload itself; with write-metadata, Pub/Sub adds
//!   `x-goog-pubsub-*` headers and sends attributes as plain headers.
//!
//! A request with `x-goog-pubsub-message-id` is unwrapped whatever its body; otherwise a body that is a
//! JSON object with a `message` member is taken as wrapped, and then it must be a valid envelope; any
//! other body is taken as unwrapped. Limits: Pub/Sub messages are at most 10 MB.
//!
//! Dedup per format: a wrapped or a metadata-carrying unwrapped delivery has Pub/Sub's message id, so
//! redeliveries are absorbed exactly. An unwrapped delivery *without* metadata has no id at all: it
//! gets a fresh one per delivery ([`DELIVERY_ID_PREFIX`]), so two publishes of the same payload both
//! land (at-least-once: a redelivery after a lost ack lands again). Enable write-metadata for exactly-once.

use base64::Engine as _;
use base64::engine::general_purpose::{STANDARD, URL_SAFE};
use serde::Deserialize;
use sha2::{Digest, Sha256};
use tributary_model::Message;

/// What the transport hands over: lower-case header names and the raw body.
#[derive(Debug, Clone, Default)]
pub struct PushRequest {
    pub headers: Vec<(String, String)>,
    pub body: Vec<u8>,
}

impl PushRequest {
    /// The first header `name` (lower case).
    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers.iter().find(|(k, _)| k == name).map(|(_, v)| v.as_str())
    }
}

/// The body claims to be a push envelope but is not a valid one. Permanent: dead-letter it.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum EnvelopeError {
    #[error("push envelope is not valid JSON of the expected shape: {0}")]
    Malformed(String),
    #[error("push envelope has no message id ('messageId' or 'message_id')")]
    MissingMessageId,
    #[error("message data is not valid base64: {0}")]
    BadBase64(String),
}

impl EnvelopeError {
    /// The dead-letter reason code.
    pub fn reason(&self) -> &'static str {
        match self {
            EnvelopeError::Malformed(_) => "bad-envelope",
            EnvelopeError::MissingMessageId => "bad-envelope",
            EnvelopeError::BadBase64(_) => "bad-base64",
        }
    }
}

#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
struct Envelope {
    message: WireMessage,
    #[serde(default)]
    subscription: Option<String>,
    #[serde(default)]
    delivery_attempt: Option<u32>,
}

#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
struct WireMessage {
    #[serde(default)]
    data: Option<String>,
    #[serde(default)]
    attributes: Option<serde_json::Map<String, serde_json::Value>>,
    #[serde(default)]
    message_id: Option<String>,
    #[serde(default, rename = "message_id")]
    message_id_snake: Option<String>,
    #[serde(default)]
    publish_time: Option<String>,
    #[serde(default, rename = "publish_time")]
    publish_time_snake: Option<String>,
    #[serde(default)]
    ordering_key: Option<String>,
}

/// Headers that are transport or credentials, not message attributes, in unwrapped deliveries (never
/// stored, not even in a dead letter).
const TRANSPORT_HEADERS: &[&str] = &[
    "accept",
    "accept-encoding",
    "authorization",
    "connection",
    "content-length",
    "content-type",
    "cookie",
    "proxy-authorization",
    "x-api-key",
    "x-auth-token",
    "from",
    "host",
    "te",
    "transfer-encoding",
    "user-agent",
    "via",
    "forwarded",
];
const TRANSPORT_PREFIXES: &[&str] = &["x-goog-pubsub-", "x-forwarded-", "x-cloud-trace", "traceparent", "spin-"];

/// Decodes a push request into a message.
pub fn decode(req: &PushRequest) -> Result<Message, EnvelopeError> {
    if req.header("x-goog-pubsub-message-id").is_none() && looks_wrapped(&req.body) {
        decode_wrapped(&req.body)
    } else {
        Ok(decode_unwrapped(req))
    }
}

/// The id prefix of a message that arrived without one (unwrapped, no metadata): unique per delivery.
pub const DELIVERY_ID_PREFIX: &str = "delivery:";

/// What identifies a message across its redeliveries, for counting failed attempts: the message id
/// when the request carries one, else the digest of the body.
pub fn attempt_key(req: &PushRequest) -> String {
    match decode(req) {
        Ok(m) if !m.id.starts_with(DELIVERY_ID_PREFIX) => m.id,
        Ok(_) => body_digest(&req.body),
        Err(_) => fallback_id(req),
    }
}

/// A best-effort message id for a request that could not be decoded: the envelope's id when it can
/// be read, else a digest of the body (so a redelivered poison body is dead-lettered once).
pub fn fallback_id(req: &PushRequest) -> String {
    serde_json::from_slice::<serde_json::Value>(&req.body)
        .ok()
        .and_then(|v| {
            let m = v.get("message")?;
            m.get("messageId").or_else(|| m.get("message_id"))?.as_str().map(str::to_owned)
        })
        .unwrap_or_else(|| body_digest(&req.body))
}

fn looks_wrapped(body: &[u8]) -> bool {
    // Cheap check first: only a JSON object can be an envelope.
    let first = body.iter().find(|b| !b.is_ascii_whitespace());
    first == Some(&b'{')
        && serde_json::from_slice::<serde_json::Map<String, serde_json::Value>>(body)
            .is_ok_and(|m| m.contains_key("message"))
}

fn decode_wrapped(body: &[u8]) -> Result<Message, EnvelopeError> {
    let env: Envelope = serde_json::from_slice(body).map_err(|e| EnvelopeError::Malformed(e.to_string()))?;
    let m = env.message;
    let id = m.message_id.or(m.message_id_snake).filter(|id| !id.is_empty()).ok_or(EnvelopeError::MissingMessageId)?;
    let data = match m.data.as_deref() {
        None | Some("") => Vec::new(),
        Some(b64) => STANDARD
            .decode(b64)
            .or_else(|_| URL_SAFE.decode(b64))
            .map_err(|e| EnvelopeError::BadBase64(e.to_string()))?,
    };
    let attributes = m
        .attributes
        .unwrap_or_default()
        .into_iter()
        .map(|(k, v)| match v {
            serde_json::Value::String(s) => (k, s),
            other => (k, other.to_string()),
        })
        .collect();
    Ok(Message {
        id,
        data,
        attributes,
        publish_time: m.publish_time.or(m.publish_time_snake),
        ordering_key: m.ordering_key.filter(|k| !k.is_empty()),
        subscription: env.subscription,
        delivery_attempt: env.delivery_attempt,
    })
}

fn decode_unwrapped(req: &PushRequest) -> Message {
    let attributes = req
        .headers
        .iter()
        .filter(|(k, _)| !TRANSPORT_HEADERS.contains(&k.as_str()))
        .filter(|(k, _)| !TRANSPORT_PREFIXES.iter().any(|p| k.starts_with(p)))
        .cloned()
        .collect();
    Message {
        id: req.header("x-goog-pubsub-message-id").map_or_else(delivery_id, str::to_owned),
        data: req.body.clone(),
        attributes,
        publish_time: req.header("x-goog-pubsub-publish-time").map(str::to_owned),
        ordering_key: req.header("x-goog-pubsub-ordering-key").map(str::to_owned),
        subscription: req.header("x-goog-pubsub-subscription-name").map(str::to_owned),
        delivery_attempt: None,
    }
}

/// A fresh id for a message that arrived without one: 128 random bits (a content digest would make two
/// real publishes of the same payload one row).
fn delivery_id() -> String {
    let mut bytes = [0u8; 16];
    // The system's randomness cannot fail on any target this runs on; if it ever did, the clock still
    // separates deliveries.
    if getrandom::fill(&mut bytes).is_err() {
        let nanos = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).unwrap_or_default().as_nanos();
        bytes = nanos.to_le_bytes();
    }
    format!("{DELIVERY_ID_PREFIX}{}", hex::encode(bytes))
}

/// `sha256:<hex>` of a body: how a request that cannot be decoded is recognized when redelivered.
pub fn body_digest(body: &[u8]) -> String {
    format!("sha256:{}", hex::encode(Sha256::digest(body)))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn wrapped(body: &str) -> PushRequest {
        PushRequest { headers: vec![("content-type".into(), "application/json".into())], body: body.into() }
    }

    #[test]
    fn wrapped_envelope_as_the_emulator_sends_it() {
        let body = r#"{"subscription":"projects/p/subscriptions/s","message":{"data":"eyJhIjoxfQ==",
            "attributes":{"k":"v"},"messageId":"2","message_id":"2","publishTime":"2024-01-01T10:00:00Z",
            "publish_time":"2024-01-01T10:00:00Z"},"deliveryAttempt":3}"#;
        let m = decode(&wrapped(body)).expect("decodes");
        assert_eq!(m.id, "2");
        assert_eq!(m.data, br#"{"a":1}"#);
        assert_eq!(m.attributes, vec![("k".to_owned(), "v".to_owned())]);
        assert_eq!(m.publish_time.as_deref(), Some("2024-01-01T10:00:00Z"));
        assert_eq!(m.subscription.as_deref(), Some("projects/p/subscriptions/s"));
        assert_eq!(m.delivery_attempt, Some(3));
    }

    #[test]
    fn snake_case_only_and_ordering_key() {
        let body = r#"{"message":{"data":"","message_id":"9","publish_time":"t","orderingKey":"k1"}}"#;
        let m = decode(&wrapped(body)).expect("decodes");
        assert_eq!((m.id.as_str(), m.publish_time.as_deref(), m.ordering_key.as_deref()), ("9", Some("t"), Some("k1")));
        assert!(m.data.is_empty());
    }

    #[test]
    fn broken_envelopes_are_refused_with_a_reason() {
        let no_id = decode(&wrapped(r#"{"message":{"data":"e30="}}"#)).expect_err("no id");
        assert_eq!(no_id, EnvelopeError::MissingMessageId);
        let bad = decode(&wrapped(r#"{"message":{"data":"***","messageId":"1"}}"#)).expect_err("bad b64");
        assert_eq!(bad.reason(), "bad-base64");
        let shape = decode(&wrapped(r#"{"message":"nope"}"#)).expect_err("bad shape");
        assert_eq!(shape.reason(), "bad-envelope");
        assert_eq!(fallback_id(&wrapped(r#"{"message":{"data":"***","messageId":"1"}}"#)), "1");
    }

    #[test]
    fn unwrapped_with_metadata_headers() {
        let req = PushRequest {
            headers: vec![
                ("content-type".into(), "application/json".into()),
                ("x-goog-pubsub-message-id".into(), "77".into()),
                ("x-goog-pubsub-publish-time".into(), "2024-01-01T10:00:00Z".into()),
                ("x-goog-pubsub-subscription-name".into(), "projects/p/subscriptions/s".into()),
                ("source".into(), "web".into()),
                ("cookie".into(), "session=secret".into()),
                ("proxy-authorization".into(), "Basic c2VjcmV0".into()),
                ("x-api-key".into(), "secret".into()),
            ],
            body: br#"{"user_id":"1"}"#.to_vec(),
        };
        let m = decode(&req).expect("decodes");
        assert_eq!(m.id, "77");
        assert_eq!(m.data, br#"{"user_id":"1"}"#);
        assert_eq!(m.attributes, vec![("source".to_owned(), "web".to_owned())]);
        assert_eq!(m.subscription.as_deref(), Some("projects/p/subscriptions/s"));
    }

    #[test]
    fn unwrapped_metadata_wins_over_an_envelope_shaped_payload() {
        let req = PushRequest {
            headers: vec![("x-goog-pubsub-message-id".into(), "5".into())],
            body: br#"{"message":"hello","user_id":"1"}"#.to_vec(),
        };
        let m = decode(&req).expect("decodes");
        assert_eq!((m.id.as_str(), m.data.as_slice()), ("5", req.body.as_slice()));
    }

    #[test]
    fn unwrapped_without_metadata_gets_a_fresh_id_per_delivery_and_a_stable_attempt_key() {
        let req = PushRequest { headers: vec![], body: b"plain text".to_vec() };
        let (a, b) = (decode(&req).expect("decodes"), decode(&req).expect("decodes"));
        assert!(a.id.starts_with(DELIVERY_ID_PREFIX) && a.id.len() == DELIVERY_ID_PREFIX.len() + 32, "{}", a.id);
        assert_ne!(a.id, b.id, "two publishes of one payload are two messages");
        assert_eq!(attempt_key(&req), body_digest(b"plain text"));
        let with_id =
            PushRequest { headers: vec![("x-goog-pubsub-message-id".into(), "7".into())], body: b"x".to_vec() };
        assert_eq!(attempt_key(&with_id), "7");
        assert_eq!(attempt_key(&wrapped(r#"{"message":{"data":"***","messageId":"1"}}"#)), "1");
    }
}
