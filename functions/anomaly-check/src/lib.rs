//! The anomaly-check component: traffic anomalies per minute (`/push/anomaly`) and sensor anomalies
//! with tumbling aggregates (`/push/sensors`), with state kept between pushes through the host's
//! `state` import and the timer routes `…/tick` (see [`flow`]).
//!
//! `lib.rs` is glue only: the logic lives in [`flow`], [`traffic`], [`sensors`] and [`settings`] (and the
//! shared `push-envelope` and `state-update` crates), which compile and are tested natively.

pub mod flow;
pub mod sensors;
pub mod settings;
pub mod traffic;

#[cfg(target_arch = "wasm32")]
mod component {
    use push_envelope::envelope::PushRequest;
    use spin_sdk::http::body::IncomingBodyExt as _;
    use spin_sdk::http::{IntoResponse, Method, Request, Response, StatusCode};
    use tributary_model as model;

    use crate::flow::{self, Env, Route};
    use crate::settings::Settings;

    wit_bindgen::generate!({
        path: "../../wit",
        world: "anomaly-check",
        generate_all,
    });

    push_envelope::import_glue!(tributary::pipeline);

    struct Imports;

    impl flow::Transformer for Imports {
        fn transform(&self, msg: &model::Message) -> Result<Vec<model::Row>, model::Rejection> {
            transform_import(msg)
        }
    }

    impl flow::Sink for Imports {
        fn write(&self, rows: Vec<model::Row>) -> model::WriteOutcome {
            sink_write(rows)
        }
    }

    state_update::impl_state_import!(Imports, tributary::pipeline);

    /// The settings, read once per instance: they are fixed for a deployment's lifetime.
    fn settings() -> Result<&'static Settings, String> {
        static SETTINGS: std::sync::OnceLock<Result<Settings, String>> = std::sync::OnceLock::new();
        let read = || wasi::config::store::get_all().map_err(|e| format!("reading the settings: {e:?}"));
        push_envelope::settings::once(&SETTINGS, read, Settings::from_pairs)
    }

    #[spin_sdk::http_service]
    async fn handle(req: Request) -> impl IntoResponse {
        if req.method() != Method::POST {
            return text(StatusCode::METHOD_NOT_ALLOWED, "these routes take POST".to_owned());
        }
        let Some(route) = Route::from_path(req.uri().path()) else {
            return text(StatusCode::NOT_FOUND, format!("no such route: {}", req.uri().path()));
        };
        let settings = match settings() {
            Ok(s) => s,
            // A configuration mistake: fail loudly, Pub/Sub keeps the messages until it is fixed.
            Err(e) => return text(StatusCode::INTERNAL_SERVER_ERROR, e),
        };
        let headers = req
            .headers()
            .iter()
            .filter_map(|(k, v)| Some((k.as_str().to_ascii_lowercase(), v.to_str().ok()?.to_owned())))
            .collect();
        let body = match req.into_body().bytes().await {
            Ok(b) => b.to_vec(),
            Err(e) => return text(StatusCode::SERVICE_UNAVAILABLE, format!("reading the push body failed: {e:?}")),
        };
        let env = Env { transform: &Imports, sink: &Imports, state: &Imports, settings, now: chrono::Utc::now() };
        let outcome = flow::handle(route, &PushRequest { headers, body }, &env);
        let status = StatusCode::from_u16(outcome.status).unwrap_or(StatusCode::INTERNAL_SERVER_ERROR);
        let mut resp = text(status, outcome.body);
        if let Some(skip) = outcome.skipped {
            resp.headers_mut().insert("x-tributary-window-skip", spin_sdk::http::HeaderValue::from_static(skip));
        }
        resp
    }

    fn text(status: StatusCode, body: String) -> Response<String> {
        let mut resp = Response::new(body);
        *resp.status_mut() = status;
        resp
    }
}
