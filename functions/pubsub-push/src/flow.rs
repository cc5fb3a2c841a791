//! One push to the events route, start to finish: decode → transform → write → answer, under the
//! acknowledgement contract of `function_kit::contract` (the same for every function; the host's
//! native baseline runs exactly this code).

use chrono::{DateTime, Utc};
use function_kit::contract::{self, Outcome, Sink, Transformer};
use function_kit::envelope::PushRequest;
use function_kit::routes::{self, Route};

/// The events route. Under other hosts the function serves whatever path it is mounted at.
pub const ROUTES: &[(Route, ())] = &[(routes::push("/push/events"), ())];

/// Handles one push.
pub async fn handle(req: &PushRequest, transform: &impl Transformer, sink: &impl Sink, now: DateTime<Utc>) -> Outcome {
    contract::push(req, transform, sink, now).await
}

#[cfg(test)]
mod tests {
    use function_kit::testing::{Passthrough, Recorder, block_on, unwrapped, wrapped};

    use super::*;

    #[test]
    fn both_push_formats_become_rows_with_the_message_id_as_insert_id() {
        let sink = Recorder::default();
        let now = Utc::now();
        assert_eq!(block_on(handle(&wrapped("w1", br#"{"a":1}"#), &Passthrough, &sink, now)), Outcome::Done);
        assert_eq!(block_on(handle(&unwrapped("u1", r#"{"a":2}"#), &Passthrough, &sink, now)), Outcome::Done);
        let ids: Vec<String> = sink.writes.borrow().iter().map(|r| r.insert_id.clone()).collect();
        assert_eq!(ids, vec!["w1", "u1"]);
    }
}
