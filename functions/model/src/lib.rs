//! The WIT contract's records (`wit/pipeline.wit`) as plain Rust, so the functions' logic compiles and is
//! tested natively and the host's native baseline can run the very same code.
//!
//! Guests convert between these and their `wit-bindgen` types in their `lib.rs` glue.

use serde::{Deserialize, Serialize};

/// Tables every deployment has.
pub mod tables {
    /// Normalized events (`functions/transform`).
    pub const STREAMING_EVENTS: &str = "streaming_events";
    /// Messages that can never become rows, with their payload and the reason.
    pub const DEAD_LETTER: &str = "dead_letter";
}

/// One Pub/Sub message (`types.message`).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, Default)]
#[serde(deny_unknown_fields)]
pub struct Message {
    /// Pub/Sub message id; stable across redeliveries.
    pub id: String,
    /// The decoded payload.
    #[serde(default, with = "payload_text")]
    pub data: Vec<u8>,
    /// Attributes in delivery order.
    #[serde(default)]
    pub attributes: Vec<(String, String)>,
    /// RFC 3339.
    #[serde(default)]
    pub publish_time: Option<String>,
    #[serde(default)]
    pub ordering_key: Option<String>,
    #[serde(default)]
    pub subscription: Option<String>,
    #[serde(default)]
    pub delivery_attempt: Option<u32>,
}

/// Golden files spell payloads as text; bytes that are not UTF-8 are written lossily.
mod payload_text {
    use serde::{Deserialize, Deserializer, Serializer};

    pub fn serialize<S: Serializer>(data: &[u8], s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(&String::from_utf8_lossy(data))
    }

    pub fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<Vec<u8>, D::Error> {
        Ok(String::deserialize(d)?.into_bytes())
    }
}

/// One row for one table (`types.row`).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Row {
    pub table: String,
    /// Dedup key.
    pub insert_id: String,
    /// A JSON object, column → value.
    pub json: String,
}

/// A row the warehouse refused permanently (`types.row-error`).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct RowError {
    /// Index into the rows of the write.
    pub index: u32,
    /// `invalid`, `unknown-table`, ...
    pub reason: String,
    /// The column at fault.
    pub location: Option<String>,
    pub message: String,
}

/// A transform's permanent refusal (`transform.rejection`).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, thiserror::Error)]
#[error("{reason}: {message}")]
pub struct Rejection {
    /// Short machine-readable code.
    pub reason: String,
    /// What was expected and what arrived.
    pub message: String,
}

impl Rejection {
    pub fn new(reason: impl Into<String>, message: impl Into<String>) -> Self {
        Self { reason: reason.into(), message: message.into() }
    }

    /// The dead-letter stage of this refusal: `udf` when a message-transform step in front of the
    /// transform refused the message (its reasons start with [`UDF_REASON_PREFIX`]), else `transform`.
    pub fn stage(&self) -> &'static str {
        if self.reason.starts_with(UDF_REASON_PREFIX) { "udf" } else { "transform" }
    }
}

/// Reasons of refusals by a message-transform step (`udf-error`, `udf-timeout`, `udf-memory`,
/// `udf-shape`...): the `transform` import answers them for the step, and they are dead-lettered with
/// stage `udf`.
pub const UDF_REASON_PREFIX: &str = "udf-";

/// A failed write (`sink.write-error`): nothing of it is durable.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum WriteError {
    /// The queue is full; answer 429.
    #[error("sink overloaded: {0}")]
    Overloaded(String),
    /// The warehouse failed or timed out; answer 503.
    #[error("sink unavailable: {0}")]
    Unavailable(String),
}

/// The outcome of a write that happened: rows refused permanently (empty when all landed).
pub type WriteOutcome = Result<Vec<RowError>, WriteError>;

/// The settings the JavaScript message-transform component (`functions/js-udf`) reads through
/// `wasi:config/store`, as the host (or Spin's variables) fills them.
pub mod udf_settings {
    /// The script's text.
    pub const SOURCE: &str = "udf_source";
    /// The function to call.
    pub const FUNCTION: &str = "udf_function";
    /// `smt` (the default) or `dataflow`.
    pub const STYLE: &str = "udf_style";
    /// The script's file name, for messages.
    pub const FILE: &str = "udf_file";
    /// The styles `STYLE` takes.
    pub const STYLES: [&str; 2] = ["smt", "dataflow"];
}

/// The settings the pipeline adapter (`functions/pipeline-adapter`, the one dependency of a function
/// under Spin) reads through `wasi:config/store`. It inherits the function's configuration, so under
/// Spin the function sees them too: functions skip exactly these, and refuse any other unknown key.
pub mod adapter_settings {
    /// The insertAll origin: `http://127.0.0.1:3001`, `https://bigquery.googleapis.com`.
    pub const SINK_ORIGIN: &str = "sink_origin";
    pub const SINK_PROJECT: &str = "sink_project";
    pub const SINK_DATASET: &str = "sink_dataset";
    /// `none` (the default), `metadata` or `bearer`.
    pub const SINK_TOKEN_SOURCE: &str = "sink_token_source";
    /// The token, with `sink_token_source = bearer` (a secret variable).
    pub const SINK_BEARER_TOKEN: &str = "sink_bearer_token";
    /// The function's name: its state keys live under it.
    pub const STATE_SCOPE: &str = "state_scope";
    /// The key-value store's label (`default` unless set).
    pub const STATE_STORE: &str = "state_store";
    /// All of them.
    pub const ALL: [&str; 7] =
        [SINK_ORIGIN, SINK_PROJECT, SINK_DATASET, SINK_TOKEN_SOURCE, SINK_BEARER_TOKEN, STATE_SCOPE, STATE_STORE];
}
