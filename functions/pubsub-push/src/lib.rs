//! The push handler component: a Pub/Sub push request in, 204/429/503 out (see [`flow`] for the
//! acknowledgement contract). `lib.rs` is glue only: the logic lives in [`flow`] (and the shared
//! `push-envelope` crate), which compile and are tested natively (the host's native baseline links them too).

pub mod flow;

pub use push_envelope::{dead_letter, envelope};

#[cfg(target_arch = "wasm32")]
mod component {
    use spin_sdk::http::body::IncomingBodyExt as _;
    use spin_sdk::http::{IntoResponse, Method, Request, StatusCode};
    use tributary_model as model;

    use crate::envelope::PushRequest;
    use crate::flow;

    wit_bindgen::generate!({
        path: "../../wit",
        world: "pubsub-push",
    });

    use tributary::pipeline::{sink, transform, types};

    /// The `transform` import.
    struct ImportedTransform;

    impl flow::Transformer for ImportedTransform {
        fn transform(&self, msg: &model::Message) -> Result<Vec<model::Row>, model::Rejection> {
            let wit_msg = types::Message {
                id: msg.id.clone(),
                data: msg.data.clone(),
                attributes: msg.attributes.clone(),
                publish_time: msg.publish_time.clone(),
                ordering_key: msg.ordering_key.clone(),
                subscription: msg.subscription.clone(),
                delivery_attempt: msg.delivery_attempt,
            };
            match transform::transform(&wit_msg) {
                Ok(rows) => Ok(rows
                    .into_iter()
                    .map(|r| model::Row { table: r.table, insert_id: r.insert_id, json: r.json })
                    .collect()),
                Err(r) => Err(model::Rejection { reason: r.reason, message: r.message }),
            }
        }
    }

    /// The `sink` import. It blocks until the host's group commit lands.
    struct ImportedSink;

    impl flow::Sink for ImportedSink {
        fn write(&self, rows: Vec<model::Row>) -> impl Future<Output = model::WriteOutcome> + Send {
            let rows: Vec<types::Row> =
                rows.into_iter().map(|r| types::Row { table: r.table, insert_id: r.insert_id, json: r.json }).collect();
            let outcome = match sink::write(&rows) {
                Ok(refused) => Ok(refused
                    .into_iter()
                    .map(|e| model::RowError {
                        index: e.index,
                        reason: e.reason,
                        location: e.location,
                        message: e.message,
                    })
                    .collect()),
                Err(sink::WriteError::Overloaded(m)) => Err(model::WriteError::Overloaded(m)),
                Err(sink::WriteError::Unavailable(m)) => Err(model::WriteError::Unavailable(m)),
            };
            std::future::ready(outcome)
        }
    }

    #[spin_sdk::http_service]
    async fn handle(req: Request) -> impl IntoResponse {
        if req.method() != Method::POST {
            return (StatusCode::METHOD_NOT_ALLOWED, "push endpoints take POST".to_owned());
        }
        let headers = req
            .headers()
            .iter()
            .filter_map(|(k, v)| Some((k.as_str().to_ascii_lowercase(), v.to_str().ok()?.to_owned())))
            .collect();
        let body = match req.into_body().bytes().await {
            Ok(b) => b.to_vec(),
            // The body did not arrive whole: nothing was decided, let Pub/Sub redeliver.
            Err(e) => return (StatusCode::SERVICE_UNAVAILABLE, format!("reading the push body failed: {e:?}")),
        };
        let req = PushRequest { headers, body };
        let outcome = flow::handle(&req, &ImportedTransform, &ImportedSink, chrono::Utc::now).await;
        let status = StatusCode::from_u16(outcome.status()).unwrap_or(StatusCode::INTERNAL_SERVER_ERROR);
        (status, outcome.body())
    }
}
