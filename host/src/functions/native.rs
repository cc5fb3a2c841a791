//! The native baseline: the events function's own logic (`pubsub_push::flow`, the kit's contract) and
//! the built-in transform (`normalize::normalize`) compiled into the host, behind the same HTTP server
//! and group commit. The benchmark runs it beside the wasm path to measure what the sandbox costs.

use function_kit::contract::{Sink, Transformer};
use function_kit::envelope::PushRequest;
use http::{Response, StatusCode};
use tributary_model::{Message, Rejection, Row, WriteOutcome};

use crate::group_commit::GroupCommit;
use crate::listener::{Body, text};

/// The native events route.
pub struct NativePush {
    pub sink: GroupCommit,
}

struct BuiltinTransform;

impl Transformer for BuiltinTransform {
    fn transform(&self, msg: &Message) -> Result<Vec<Row>, Rejection> {
        normalize::normalize(msg, chrono::Utc::now())
    }
}

impl Sink for GroupCommit {
    fn write(&self, rows: Vec<Row>) -> impl Future<Output = WriteOutcome> {
        GroupCommit::write(self, rows)
    }
}

impl NativePush {
    /// Serves one push whose body the server has read.
    pub async fn handle(&self, parts: http::request::Parts, body: bytes::Bytes) -> Response<Body> {
        let body = body.to_vec();
        let headers = parts
            .headers
            .iter()
            .filter_map(|(k, v)| Some((k.as_str().to_owned(), v.to_str().ok()?.to_owned())))
            .collect();
        let outcome = pubsub_push::flow::handle(
            &PushRequest { headers, body },
            &BuiltinTransform,
            &self.sink,
            chrono::Utc::now(),
        )
        .await;
        text(StatusCode::from_u16(outcome.status()).unwrap_or(StatusCode::INTERNAL_SERVER_ERROR), outcome.body())
    }
}
