//! The recommend-trigger component: per-user product recommendations within seconds of a user's
//! activity (seed §7.3, made streaming). `/push/recommend` takes events, `/push/products` catalog
//! changes, `/push/recommend/tick` recomputes users whose update was debounced (see [`flow`]).
//!
//! `lib.rs` is glue only: the logic lives in [`activity`], [`catalog`], [`recommend`], [`settings`]
//! and [`flow`], which compile and are tested natively.

pub mod activity;
pub mod catalog;
pub mod flow;
pub mod recommend;
pub mod settings;

#[cfg(target_arch = "wasm32")]
mod component {
    use push_envelope::envelope::PushRequest;
    use spin_sdk::http::body::IncomingBodyExt as _;
    use spin_sdk::http::{IntoResponse, Method, Request, StatusCode};
    use tributary_model as model;

    use crate::flow::{self, Env, Route};
    use crate::settings::Settings;

    wit_bindgen::generate!({
        path: "../../wit",
        world: "recommend-trigger",
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

    impl flow::Upserter for Imports {
        fn upsert(&self, rows: Vec<model::Row>) -> model::WriteOutcome {
            sink_upsert(rows)
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
            return (StatusCode::METHOD_NOT_ALLOWED, "these routes take POST".to_owned());
        }
        let Some(route) = Route::from_path(req.uri().path()) else {
            return (StatusCode::NOT_FOUND, format!("no such route: {}", req.uri().path()));
        };
        let settings = match settings() {
            Ok(s) => s,
            Err(e) => return (StatusCode::INTERNAL_SERVER_ERROR, e),
        };
        let headers = req
            .headers()
            .iter()
            .filter_map(|(k, v)| Some((k.as_str().to_ascii_lowercase(), v.to_str().ok()?.to_owned())))
            .collect();
        let body = match req.into_body().bytes().await {
            Ok(b) => b.to_vec(),
            Err(e) => return (StatusCode::SERVICE_UNAVAILABLE, format!("reading the push body failed: {e:?}")),
        };
        let env = Env { transform: &Imports, sink: &Imports, state: &Imports, settings, now: chrono::Utc::now() };
        let answer = flow::handle(route, &PushRequest { headers, body }, &env);
        (StatusCode::from_u16(answer.status).unwrap_or(StatusCode::INTERNAL_SERVER_ERROR), answer.body)
    }
}
