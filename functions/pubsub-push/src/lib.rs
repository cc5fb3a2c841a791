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

    push_envelope::import_glue!(tributary::pipeline);

    /// The `transform` import.
    struct ImportedTransform;

    impl flow::Transformer for ImportedTransform {
        fn transform(&self, msg: &model::Message) -> Result<Vec<model::Row>, model::Rejection> {
            transform_import(msg)
        }
    }

    /// The `sink` import. It blocks until the host's group commit lands.
    struct ImportedSink;

    impl flow::Sink for ImportedSink {
        fn write(&self, rows: Vec<model::Row>) -> impl Future<Output = model::WriteOutcome> + Send {
            std::future::ready(sink_write(rows))
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
