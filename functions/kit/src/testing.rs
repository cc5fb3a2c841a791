//! TEST DOUBLES of a function's imports, for every function's unit tests (and nothing else): a
//! transform that passes JSON through, a sink that records what it is given and fails on demand
//! (FAULT INJECTION), and a tiny executor for the contract's futures.

use std::cell::{Cell, RefCell};
use std::collections::VecDeque;
use std::future::Future;

use base64::Engine as _;
use serde_json::Value;
use tributary_model::{Message, Rejection, Row, WriteError, WriteOutcome, tables};

use crate::contract::{Sink, Transformer, Upserter};
use crate::envelope::PushRequest;

/// Stands in for the transform component: a JSON payload becomes one row as it is, in
/// `sensor_readings` when it has a `sensor_id`, else in `streaming_events`; anything else is rejected
/// as `not-json`.
#[derive(Debug, Clone, Copy, Default)]
pub struct Passthrough;

impl Transformer for Passthrough {
    fn transform(&self, msg: &Message) -> Result<Vec<Row>, Rejection> {
        let v: Value = serde_json::from_slice(&msg.data).map_err(|e| Rejection::new("not-json", e.to_string()))?;
        let table = if v.get("sensor_id").is_some() { "sensor_readings" } else { tables::STREAMING_EVENTS };
        Ok(vec![Row { table: table.into(), insert_id: msg.id.clone(), json: v.to_string() }])
    }
}

/// FAULT INJECTION sink double: records writes and upserts; while `down`, every call fails with
/// `Unavailable` and records nothing; otherwise each write takes the next scripted answer, if any.
#[derive(Debug, Default)]
pub struct Recorder {
    pub writes: RefCell<Vec<Row>>,
    pub upserts: RefCell<Vec<Row>>,
    pub down: Cell<bool>,
    script: RefCell<VecDeque<WriteOutcome>>,
}

impl Recorder {
    /// A recorder whose writes answer `answers` in order, then succeed.
    pub fn scripted(answers: Vec<WriteOutcome>) -> Self {
        Recorder { script: RefCell::new(answers.into()), ..Recorder::default() }
    }

    /// The tables of every written row, in order.
    pub fn tables(&self) -> Vec<String> {
        self.writes.borrow().iter().map(|r| r.table.clone()).collect()
    }

    fn fault(&self) -> Result<(), WriteError> {
        if self.down.get() { Err(WriteError::Unavailable("FAULT INJECTION: sink down".into())) } else { Ok(()) }
    }
}

impl Sink for Recorder {
    async fn write(&self, rows: Vec<Row>) -> WriteOutcome {
        self.fault()?;
        self.writes.borrow_mut().extend(rows);
        self.script.borrow_mut().pop_front().unwrap_or(Ok(vec![]))
    }
}

impl Upserter for Recorder {
    async fn upsert(&self, rows: Vec<Row>) -> WriteOutcome {
        self.fault()?;
        self.upserts.borrow_mut().extend(rows);
        Ok(vec![])
    }
}

/// A wrapped push envelope carrying `data`.
pub fn wrapped(id: &str, data: &[u8]) -> PushRequest {
    let b64 = base64::engine::general_purpose::STANDARD.encode(data);
    PushRequest { headers: vec![], body: format!(r#"{{"message":{{"data":"{b64}","messageId":"{id}"}}}}"#).into() }
}

/// An unwrapped push (write-metadata headers) carrying `payload`.
pub fn unwrapped(id: &str, payload: &str) -> PushRequest {
    PushRequest {
        headers: vec![
            ("x-goog-pubsub-message-id".into(), id.into()),
            ("x-goog-pubsub-publish-time".into(), "2026-01-01T00:00:00Z".into()),
        ],
        body: payload.as_bytes().to_vec(),
    }
}

/// Runs a future whose every step is ready at once (the doubles above never wait).
pub fn block_on<F: Future>(fut: F) -> F::Output {
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
