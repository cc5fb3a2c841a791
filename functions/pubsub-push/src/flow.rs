//! One push, start to finish: decode → transform → write → answer. The acknowledgement contract lives
//! here, once, for the wasm component and the host's native baseline alike:
//!
//! - 204 only after the rows, or the message's dead letter, are durable;
//! - a permanent problem (bad envelope, transform rejection, a row the warehouse refuses) is
//!   dead-lettered and then acked, so a poison message never loops;
//! - a transient problem answers 429 (overloaded) or 503 (unavailable) and Pub/Sub redelivers;
//! - if even the dead letter is refused, 500: the message stays in Pub/Sub (and its dead-letter topic).

use std::future::Future;

use chrono::{DateTime, Utc};
use tributary_model::{Message, Row, WriteError, WriteOutcome};

use crate::dead_letter::{self, Failure};
use crate::envelope::{self, PushRequest};

/// The transform step (the `transform` import in wasm; the linked crate natively).
pub use push_envelope::steps::Transformer;

/// The sink step (the `sink` import in wasm; the group commit natively).
pub trait Sink {
    fn write(&self, rows: Vec<Row>) -> impl Future<Output = WriteOutcome> + Send;
}

/// How a push ended, for the HTTP answer and the metrics.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Outcome {
    /// All rows durable.
    Written { rows: usize },
    /// The message is durable in `dead_letter`.
    DeadLettered(Failure),
    /// Nothing durable; Pub/Sub must redeliver.
    Retry(WriteError),
    /// The dead letter itself was refused; Pub/Sub must keep the message.
    DeadLetterRefused(String),
}

impl Outcome {
    /// The HTTP status Pub/Sub sees: 2xx acks, anything else nacks.
    pub fn status(&self) -> u16 {
        match self {
            Outcome::Written { .. } | Outcome::DeadLettered(_) => 204,
            Outcome::Retry(WriteError::Overloaded(_)) => 429,
            Outcome::Retry(WriteError::Unavailable(_)) => 503,
            Outcome::DeadLetterRefused(_) => 500,
        }
    }

    /// The response body: empty on success, the reason otherwise (Pub/Sub ignores it; people read it).
    pub fn body(&self) -> String {
        match self {
            Outcome::Written { .. } => String::new(),
            Outcome::DeadLettered(f) => format!("dead-lettered ({}): {}", f.reason, f.message),
            Outcome::Retry(e) => e.to_string(),
            Outcome::DeadLetterRefused(e) => format!("dead letter refused: {e}"),
        }
    }
}

/// Handles one push request.
pub async fn handle(
    req: &PushRequest,
    transformer: &impl Transformer,
    sink: &impl Sink,
    now: impl Fn() -> DateTime<Utc>,
) -> Outcome {
    let msg = match envelope::decode(req) {
        Ok(msg) => msg,
        Err(e) => {
            // Keep whatever can be kept: the raw body is the payload.
            let msg = Message { id: envelope::fallback_id(req), data: req.body.clone(), ..Message::default() };
            let failure = Failure { reason: e.reason().to_owned(), message: e.to_string(), stage: "decode" };
            return dead_letter(&msg, failure, sink, now()).await;
        }
    };
    let rows = match transformer.transform(&msg) {
        Ok(rows) => rows,
        Err(r) => {
            let failure = Failure { reason: r.reason, message: r.message, stage: "transform" };
            return dead_letter(&msg, failure, sink, now()).await;
        }
    };
    let count = rows.len();
    match sink.write(rows).await {
        Ok(refused) if refused.is_empty() => Outcome::Written { rows: count },
        Ok(refused) => dead_letter(&msg, Failure::refused(&refused), sink, now()).await,
        Err(e) => Outcome::Retry(e),
    }
}

async fn dead_letter(msg: &Message, failure: Failure, sink: &impl Sink, now: DateTime<Utc>) -> Outcome {
    match sink.write(vec![dead_letter::row(msg, &failure, now)]).await {
        Ok(refused) if refused.is_empty() => Outcome::DeadLettered(failure),
        Ok(refused) => Outcome::DeadLetterRefused(Failure::refused(&refused).message),
        Err(e) => Outcome::Retry(e),
    }
}

#[cfg(test)]
mod tests {
    use std::sync::Mutex;

    use tributary_model::{Rejection, RowError};

    use super::*;

    struct Upper;
    impl Transformer for Upper {
        fn transform(&self, msg: &Message) -> Result<Vec<Row>, Rejection> {
            match msg.data.as_slice() {
                b"reject" => Err(Rejection::new("not-json", "expected JSON")),
                data => Ok(vec![Row {
                    table: "t".into(),
                    insert_id: msg.id.clone(),
                    json: String::from_utf8_lossy(data).to_uppercase(),
                }]),
            }
        }
    }

    /// Fault-injection double: answers each write from a script and records what it was given.
    struct ScriptedSink {
        answers: Mutex<Vec<WriteOutcome>>,
        seen: Mutex<Vec<Vec<Row>>>,
    }
    impl ScriptedSink {
        fn new(mut answers: Vec<WriteOutcome>) -> Self {
            answers.reverse();
            Self { answers: Mutex::new(answers), seen: Mutex::default() }
        }
        fn tables(&self) -> Vec<String> {
            self.seen.lock().expect("lock").iter().flatten().map(|r| r.table.clone()).collect()
        }
    }
    impl Sink for ScriptedSink {
        async fn write(&self, rows: Vec<Row>) -> WriteOutcome {
            self.seen.lock().expect("lock").push(rows);
            self.answers.lock().expect("lock").pop().unwrap_or(Ok(vec![]))
        }
    }

    fn push(data: &str) -> PushRequest {
        use base64::Engine as _;
        let b64 = base64::engine::general_purpose::STANDARD.encode(data);
        PushRequest { headers: vec![], body: format!(r#"{{"message":{{"data":"{b64}","messageId":"1"}}}}"#).into() }
    }

    fn run(req: &PushRequest, sink: &ScriptedSink) -> Outcome {
        let fut = handle(req, &Upper, sink, Utc::now);
        // The flow never awaits anything but the sink, which is ready at once here.
        block_on(fut)
    }

    fn block_on<F: Future>(fut: F) -> F::Output {
        use std::pin::pin;
        use std::task::{Context, Poll, Waker};
        let mut fut = pin!(fut);
        let mut cx = Context::from_waker(Waker::noop());
        loop {
            if let Poll::Ready(v) = fut.as_mut().poll(&mut cx) {
                return v;
            }
        }
    }

    #[test]
    fn rows_written_then_acked() {
        let sink = ScriptedSink::new(vec![]);
        let out = run(&push("ab"), &sink);
        assert_eq!(out, Outcome::Written { rows: 1 });
        assert_eq!(out.status(), 204);
        assert_eq!(sink.seen.lock().expect("lock")[0][0].json, "AB");
    }

    #[test]
    fn rejection_is_dead_lettered_and_acked() {
        let sink = ScriptedSink::new(vec![]);
        let out = run(&push("reject"), &sink);
        assert_eq!(out.status(), 204);
        assert!(matches!(&out, Outcome::DeadLettered(f) if f.reason == "not-json" && f.stage == "transform"));
        assert_eq!(sink.tables(), vec!["dead_letter"]);
    }

    #[test]
    fn bad_envelope_is_dead_lettered_with_raw_body() {
        let sink = ScriptedSink::new(vec![]);
        let req = PushRequest { headers: vec![], body: br#"{"message":{"data":"%%","messageId":"5"}}"#.to_vec() };
        let out = run(&req, &sink);
        assert!(matches!(&out, Outcome::DeadLettered(f) if f.reason == "bad-base64" && f.stage == "decode"));
        let row = &sink.seen.lock().expect("lock")[0][0];
        assert_eq!(row.insert_id, "5");
    }

    #[test]
    fn transient_failures_nack() {
        let sink = ScriptedSink::new(vec![Err(WriteError::Overloaded("full".into()))]);
        assert_eq!(run(&push("x"), &sink).status(), 429);
        let sink = ScriptedSink::new(vec![Err(WriteError::Unavailable("db".into()))]);
        assert_eq!(run(&push("x"), &sink).status(), 503);
        // The dead-letter write failing transiently must nack too, never ack a lost message.
        let sink = ScriptedSink::new(vec![Err(WriteError::Unavailable("db".into()))]);
        assert_eq!(run(&push("reject"), &sink).status(), 503);
    }

    #[test]
    fn refused_row_is_dead_lettered_refused_dead_letter_fails() {
        let refusal =
            RowError { index: 0, reason: "invalid".into(), location: Some("x".into()), message: "bad".into() };
        let sink = ScriptedSink::new(vec![Ok(vec![refusal.clone()])]);
        let out = run(&push("x"), &sink);
        assert!(matches!(&out, Outcome::DeadLettered(f) if f.message == "row 0: bad (at x)" && f.stage == "sink"));
        assert_eq!(sink.tables(), vec!["t", "dead_letter"]);
        let sink = ScriptedSink::new(vec![Ok(vec![refusal.clone()]), Ok(vec![refusal])]);
        assert_eq!(run(&push("x"), &sink).status(), 500);
    }
}
