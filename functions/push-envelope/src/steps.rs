//! The steps of a push function that calls its imports synchronously (the stateful functions): the
//! `transform` and `sink` imports as traits, and the two writes every such function makes — a
//! message's own rows, or its dead letter — with pubsub-push's acknowledgement contract.

use chrono::{DateTime, Utc};
use tributary_model::{Message, Rejection, Row, WriteError, WriteOutcome};

use crate::dead_letter::{self, Failure};
use crate::envelope::{self, PushRequest};

/// The `transform` import.
pub trait Transformer {
    fn transform(&self, msg: &Message) -> Result<Vec<Row>, Rejection>;
}

/// The `sink` import: returns once the rows are durable.
pub trait Sink {
    fn write(&self, rows: Vec<Row>) -> WriteOutcome;
}

/// How a request ended: the HTTP status Pub/Sub sees and a reason for people.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Answer {
    /// 204 acks, 200 acks a dead-lettered message; 429/503 redeliver; 500: the dead letter itself was refused.
    pub status: u16,
    pub body: String,
}

impl Answer {
    pub fn ok() -> Self {
        Answer { status: 204, body: String::new() }
    }

    pub fn failed(status: u16, body: impl Into<String>) -> Self {
        Answer { status, body: body.into() }
    }
}

impl From<WriteError> for Answer {
    fn from(e: WriteError) -> Self {
        let status = if matches!(e, WriteError::Overloaded(_)) { 429 } else { 503 };
        Answer::failed(status, e.to_string())
    }
}

/// Decodes and transforms a push; a message that can never become rows is dead-lettered here, and the
/// answer to give is the `Err`.
pub fn decode_and_transform(
    req: &PushRequest,
    transform: &impl Transformer,
    sink: &impl Sink,
    now: DateTime<Utc>,
) -> Result<(Message, Vec<Row>), Answer> {
    let msg = match envelope::decode(req) {
        Ok(msg) => msg,
        Err(e) => {
            let msg = Message { id: envelope::fallback_id(req), data: req.body.clone(), ..Message::default() };
            let failure = Failure { reason: e.reason().to_owned(), message: e.to_string(), stage: "decode" };
            return Err(dead_letter(&msg, failure, sink, now));
        }
    };
    match transform.transform(&msg) {
        Ok(rows) => Ok((msg, rows)),
        Err(r) => {
            let failure = Failure { reason: r.reason, message: r.message, stage: "transform" };
            Err(dead_letter(&msg, failure, sink, now))
        }
    }
}

/// Writes a message's own rows; refused rows dead-letter the message.
pub fn write_message_rows(msg: &Message, rows: Vec<Row>, sink: &impl Sink, now: DateTime<Utc>) -> Answer {
    match sink.write(rows) {
        Ok(refused) if refused.is_empty() => Answer::ok(),
        Ok(refused) => dead_letter(msg, Failure::refused(&refused), sink, now),
        Err(e) => e.into(),
    }
}

/// Writes `msg`'s dead letter: 200 (an ack, with the reason in the body) once durable, 500 if refused,
/// 429/503 if the sink failed.
pub fn dead_letter(msg: &Message, failure: Failure, sink: &impl Sink, now: DateTime<Utc>) -> Answer {
    match sink.write(vec![dead_letter::row(msg, &failure, now)]) {
        Ok(refused) if refused.is_empty() => {
            Answer { status: 200, body: format!("dead-lettered ({}): {}", failure.reason, failure.message) }
        }
        Ok(refused) => Answer::failed(500, format!("dead letter refused: {}", Failure::refused(&refused).message)),
        Err(e) => e.into(),
    }
}
