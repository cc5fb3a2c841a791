//! The acknowledgement contract, once, for every function (and the host's native baseline):
//!
//! | what happened | [`Outcome`] | status | Pub/Sub does |
//! |---|---|---|---|
//! | everything the request had to write is durable (possibly nothing) | `Done` | 204 | acks |
//! | the message can never become rows; its dead letter is durable | `DeadLettered` | 200, reason in the body | acks |
//! | the sink is full | `Retry(Overloaded)` | 429 | redelivers later |
//! | the sink or the state store failed; nothing was decided | `Retry(Unavailable)`, `Unavailable` | 503 | redelivers |
//! | the state store refused the message's update for good (a key or value over its limits) | `StateRefused` → dead letter | 200 | acks |
//! | the dead letter itself was refused | `DeadLetterRefused` | 500 | keeps the message (its dead-letter topic catches loops) |
//! | the function's settings are wrong | `Misconfigured` | 500 | keeps the messages until someone fixes them |
//! | push authentication refused the request | `Refused` | 401/403 (503: no signing keys) | redelivers |
//!
//! The imports are traits here: [`Transformer`] (the `transform` import), [`Sink`] and [`Upserter`]
//! (`sink.write`, `sink.upsert`). The sink's calls are futures: the wasm imports are synchronous and
//! ready at once, the native baseline awaits the host's group commit.

use std::future::Future;

use chrono::{DateTime, Utc};
use state_update::StateError;
use tributary_model::{Message, Rejection, Row, WriteError, WriteOutcome};

use crate::dead_letter::{self, Failure};
use crate::envelope::{self, PushRequest};

/// The `transform` import: one message in, rows or a rejection out. Pure.
pub trait Transformer {
    fn transform(&self, msg: &Message) -> Result<Vec<Row>, Rejection>;
}

/// The `sink.write` import: returns once the rows are durable, with the rows refused one by one.
pub trait Sink {
    fn write(&self, rows: Vec<Row>) -> impl Future<Output = WriteOutcome>;
}

/// The `sink.upsert` import: each row replaces the row with the same key (its insert id) unless that
/// one is newer.
pub trait Upserter {
    fn upsert(&self, rows: Vec<Row>) -> impl Future<Output = WriteOutcome>;
}

/// How a request ended.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Outcome {
    /// Everything the request had to write is durable (possibly nothing).
    Done,
    /// The message can never become rows; its dead letter is durable.
    DeadLettered(Failure),
    /// The sink failed transiently; nothing of this message is decided.
    Retry(WriteError),
    /// Another dependency (the state store) failed; nothing of this message is decided.
    Unavailable(String),
    /// The state store refused an update for good (over its key or value limits): retrying cannot
    /// help. A push route turns it into the message's dead letter ([`dead_letter_state_refusal`]);
    /// anywhere else it is a 500.
    StateRefused(String),
    /// The dead letter itself was refused.
    DeadLetterRefused(String),
    /// The function cannot work with its settings.
    Misconfigured(String),
    /// The request was refused before anything was decided (push authentication: 401, 403, or 503
    /// when the signing keys cannot be fetched).
    Refused { status: u16, reason: String },
}

impl Outcome {
    /// The HTTP status Pub/Sub sees: 2xx acks, anything else redelivers.
    pub fn status(&self) -> u16 {
        match self {
            Outcome::Done => 204,
            Outcome::DeadLettered(_) => 200,
            Outcome::Retry(WriteError::Overloaded(_)) => 429,
            Outcome::Retry(WriteError::Unavailable(_)) | Outcome::Unavailable(_) => 503,
            Outcome::DeadLetterRefused(_) | Outcome::Misconfigured(_) | Outcome::StateRefused(_) => 500,
            Outcome::Refused { status, .. } => *status,
        }
    }

    /// Whether Pub/Sub takes this answer as an acknowledgement.
    pub fn acked(&self) -> bool {
        (200..300).contains(&self.status())
    }

    /// The response body: empty when done, the reason otherwise (Pub/Sub ignores it; people read it).
    pub fn body(&self) -> String {
        match self {
            Outcome::Done => String::new(),
            Outcome::DeadLettered(f) => format!("dead-lettered ({}): {}", f.reason, f.message),
            Outcome::Retry(e) => e.to_string(),
            Outcome::Unavailable(e) => e.clone(),
            Outcome::StateRefused(e) => format!("state store refused the update: {e}"),
            Outcome::DeadLetterRefused(e) => format!("dead letter refused: {e}"),
            Outcome::Misconfigured(e) => format!("misconfigured: {e}"),
            Outcome::Refused { reason, .. } => format!("{reason}\n"),
        }
    }
}

impl From<WriteError> for Outcome {
    fn from(e: WriteError) -> Self {
        Outcome::Retry(e)
    }
}

impl From<StateError> for Outcome {
    fn from(e: StateError) -> Self {
        match e {
            StateError::Invalid(m) => Outcome::StateRefused(m),
            // Even a corrupt value fails the push rather than dropping it: the value needs a person.
            e => Outcome::Unavailable(e.to_string()),
        }
    }
}

/// An [`Outcome`] and what the host should count beside it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Reply {
    pub outcome: Outcome,
    /// An event left out of its window: `late` or `future` (sent as the `x-tributary-window-skip`
    /// header, which the host counts in `tributary_window_skipped_total`).
    pub skipped: Option<&'static str>,
}

impl From<Outcome> for Reply {
    fn from(outcome: Outcome) -> Self {
        Reply { outcome, skipped: None }
    }
}

impl Reply {
    pub fn status(&self) -> u16 {
        self.outcome.status()
    }
}

/// A whole push for a function whose rows are the transform's rows: decode → transform → write.
pub async fn push(req: &PushRequest, transform: &impl Transformer, sink: &impl Sink, now: DateTime<Utc>) -> Outcome {
    match decode_and_transform(req, transform, sink, now).await {
        Ok((msg, rows)) => write_message_rows(&msg, rows, sink, now).await,
        Err(outcome) => outcome,
    }
}

/// Decodes and transforms a push; a message that can never become rows is dead-lettered here, and the
/// outcome to answer is the `Err`.
pub async fn decode_and_transform(
    req: &PushRequest,
    transform: &impl Transformer,
    sink: &impl Sink,
    now: DateTime<Utc>,
) -> Result<(Message, Vec<Row>), Outcome> {
    let msg = decode(req, sink, now).await?;
    match transform.transform(&msg) {
        Ok(rows) => Ok((msg, rows)),
        Err(r) => {
            let failure = Failure { stage: r.stage(), reason: r.reason, message: r.message };
            Err(dead_letter(&msg, failure, sink, now).await)
        }
    }
}

/// Decodes a push; a bad envelope is dead-lettered with the raw body as its payload.
pub async fn decode(req: &PushRequest, sink: &impl Sink, now: DateTime<Utc>) -> Result<Message, Outcome> {
    match envelope::decode(req) {
        Ok(msg) => Ok(msg),
        Err(e) => {
            // Keep whatever can be kept: the raw body is the payload.
            let msg = Message { id: envelope::fallback_id(req), data: req.body.clone(), ..Message::default() };
            let failure = Failure { reason: e.reason().to_owned(), message: e.to_string(), stage: "decode" };
            Err(dead_letter(&msg, failure, sink, now).await)
        }
    }
}

/// Writes a message's own rows; refused rows dead-letter the message (its other rows stay written).
pub async fn write_message_rows(msg: &Message, rows: Vec<Row>, sink: &impl Sink, now: DateTime<Utc>) -> Outcome {
    settle(msg, sink.write(rows).await, sink, now).await
}

/// Upserts a message's own rows; refused rows dead-letter the message.
pub async fn upsert_message_rows(
    msg: &Message,
    rows: Vec<Row>,
    sink: &(impl Sink + Upserter),
    now: DateTime<Utc>,
) -> Outcome {
    settle(msg, sink.upsert(rows).await, sink, now).await
}

async fn settle(msg: &Message, written: WriteOutcome, sink: &impl Sink, now: DateTime<Utc>) -> Outcome {
    match written {
        Ok(refused) if refused.is_empty() => Outcome::Done,
        Ok(refused) => dead_letter(msg, Failure::refused(&refused), sink, now).await,
        Err(e) => Outcome::Retry(e),
    }
}

/// A push whose state update was refused for good is dead-lettered (stage `state`, reason
/// `state-limit`), so it is acked instead of failing on every redelivery; any other reply is returned
/// as it is.
pub async fn dead_letter_state_refusal(reply: Reply, req: &PushRequest, sink: &impl Sink, now: DateTime<Utc>) -> Reply {
    let Outcome::StateRefused(why) = reply.outcome else { return reply };
    let msg = envelope::decode(req).unwrap_or_else(|_| Message {
        id: envelope::fallback_id(req),
        data: req.body.clone(),
        ..Message::default()
    });
    let failure = Failure { reason: "state-limit".into(), message: why, stage: "state" };
    Reply { outcome: dead_letter(&msg, failure, sink, now).await, skipped: reply.skipped }
}

/// Writes `msg`'s dead letter: acked once durable, 500 if refused, 429/503 if the sink failed.
pub async fn dead_letter(msg: &Message, failure: Failure, sink: &impl Sink, now: DateTime<Utc>) -> Outcome {
    match sink.write(vec![dead_letter::row(msg, &failure, now)]).await {
        Ok(refused) if refused.is_empty() => Outcome::DeadLettered(failure),
        Ok(refused) => Outcome::DeadLetterRefused(Failure::refused(&refused).message),
        Err(e) => Outcome::Retry(e),
    }
}

#[cfg(test)]
mod tests {
    use tributary_model::RowError;

    use super::*;
    use crate::testing::{Passthrough, Recorder, block_on, wrapped};

    fn run(req: &PushRequest, sink: &Recorder) -> Outcome {
        block_on(push(req, &Passthrough, sink, Utc::now()))
    }

    #[test]
    fn rows_written_then_acked() {
        let sink = Recorder::default();
        let out = run(&wrapped("1", br#"{"a":1}"#), &sink);
        assert_eq!((out.clone(), out.status()), (Outcome::Done, 204));
        assert_eq!(sink.tables(), vec!["streaming_events"]);
        assert_eq!(sink.writes.borrow()[0].json, r#"{"a":1}"#);
    }

    #[test]
    fn a_message_transform_refusal_is_dead_lettered_with_stage_udf() {
        struct Refusing;
        impl Transformer for Refusing {
            fn transform(&self, _msg: &Message) -> Result<Vec<Row>, Rejection> {
                Err(Rejection::new("udf-error", "scrub.js:3: TypeError: x is undefined"))
            }
        }
        let sink = Recorder::default();
        let out = block_on(push(&wrapped("1", br#"{"a":1}"#), &Refusing, &sink, Utc::now()));
        assert!(matches!(&out, Outcome::DeadLettered(f) if f.stage == "udf" && f.message.contains("scrub.js:3")));
        assert_eq!(sink.tables(), vec!["dead_letter"]);
    }

    #[test]
    fn rejection_is_dead_lettered_and_acked() {
        let sink = Recorder::default();
        let out = run(&wrapped("1", b"not json"), &sink);
        assert_eq!(out.status(), 200);
        assert!(matches!(&out, Outcome::DeadLettered(f) if f.reason == "not-json" && f.stage == "transform"));
        assert_eq!(sink.tables(), vec!["dead_letter"]);
    }

    #[test]
    fn bad_envelope_is_dead_lettered_with_raw_body() {
        let sink = Recorder::default();
        let req = PushRequest { headers: vec![], body: br#"{"message":{"data":"%%","messageId":"5"}}"#.to_vec() };
        let out = run(&req, &sink);
        assert!(matches!(&out, Outcome::DeadLettered(f) if f.reason == "bad-base64" && f.stage == "decode"));
        assert_eq!(sink.writes.borrow()[0].insert_id, "5");
    }

    #[test]
    fn transient_failures_nack() {
        let sink = Recorder::scripted(vec![Err(WriteError::Overloaded("full".into()))]);
        assert_eq!(run(&wrapped("1", b"{}"), &sink).status(), 429);
        let sink = Recorder::scripted(vec![Err(WriteError::Unavailable("db".into()))]);
        assert_eq!(run(&wrapped("1", b"{}"), &sink).status(), 503);
        // The dead-letter write failing transiently must nack too, never ack a lost message.
        let sink = Recorder::scripted(vec![Err(WriteError::Unavailable("db".into()))]);
        assert_eq!(run(&wrapped("1", b"not json"), &sink).status(), 503);
        assert_eq!(Outcome::from(StateError::Unavailable("down".into())).status(), 503);
    }

    #[test]
    fn a_state_refusal_dead_letters_the_push_and_nothing_else() {
        let sink = Recorder::default();
        let refused = Reply::from(Outcome::from(StateError::Invalid("value of 9 bytes is over the limit".into())));
        assert_eq!(refused.status(), 500, "not a retry: it can never succeed");
        let req = wrapped("7", b"{}");
        let reply = block_on(dead_letter_state_refusal(refused, &req, &sink, Utc::now()));
        assert!(
            matches!(&reply.outcome, Outcome::DeadLettered(f) if f.stage == "state" && f.reason == "state-limit" && f.message.contains("over the limit")),
            "{reply:?}"
        );
        assert_eq!(
            (sink.tables(), sink.writes.borrow()[0].insert_id.clone()),
            (vec!["dead_letter".to_owned()], "7".into())
        );
        let done = block_on(dead_letter_state_refusal(Outcome::Done.into(), &req, &sink, Utc::now()));
        assert_eq!(done.outcome, Outcome::Done);
        assert_eq!(sink.writes.borrow().len(), 1);
    }

    #[test]
    fn refused_row_is_dead_lettered_refused_dead_letter_fails() {
        let refusal =
            RowError { index: 0, reason: "invalid".into(), location: Some("x".into()), message: "bad".into() };
        let sink = Recorder::scripted(vec![Ok(vec![refusal.clone()])]);
        let out = run(&wrapped("1", b"{}"), &sink);
        assert!(matches!(&out, Outcome::DeadLettered(f) if f.message == "row 0: bad (at x)" && f.stage == "sink"));
        assert_eq!(sink.tables(), vec!["streaming_events", "dead_letter"]);
        let sink = Recorder::scripted(vec![Ok(vec![refusal.clone()]), Ok(vec![refusal])]);
        assert_eq!(run(&wrapped("1", b"{}"), &sink).status(), 500);
    }
}
