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
    use state_update as store;
    use tributary_model as model;

    use crate::flow::{self, Env, Route};
    use crate::settings::Settings;

    wit_bindgen::generate!({
        path: "../../wit",
        world: "recommend-trigger",
        generate_all,
    });

    use tributary::pipeline::{sink, state, transform, types};

    struct Imports;

    fn to_wit(rows: Vec<model::Row>) -> Vec<types::Row> {
        rows.into_iter().map(|r| types::Row { table: r.table, insert_id: r.insert_id, json: r.json }).collect()
    }

    fn from_wit(result: Result<Vec<types::RowError>, sink::WriteError>) -> model::WriteOutcome {
        match result {
            Ok(refused) => Ok(refused
                .into_iter()
                .map(|e| model::RowError { index: e.index, reason: e.reason, location: e.location, message: e.message })
                .collect()),
            Err(sink::WriteError::Overloaded(m)) => Err(model::WriteError::Overloaded(m)),
            Err(sink::WriteError::Unavailable(m)) => Err(model::WriteError::Unavailable(m)),
        }
    }

    impl flow::Transformer for Imports {
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

    impl flow::Sink for Imports {
        fn write(&self, rows: Vec<model::Row>) -> model::WriteOutcome {
            from_wit(sink::write(&to_wit(rows)))
        }
    }

    impl flow::Upserter for Imports {
        fn upsert(&self, rows: Vec<model::Row>) -> model::WriteOutcome {
            from_wit(sink::upsert(&to_wit(rows)))
        }
    }

    fn state_error(e: state::StateError) -> store::StateError {
        match e {
            state::StateError::Unavailable(m) => store::StateError::Unavailable(m),
            state::StateError::Invalid(m) => store::StateError::Invalid(m),
        }
    }

    impl store::State for Imports {
        fn get(&self, key: &str) -> Result<Option<store::Entry>, store::StateError> {
            state::get(key).map(|e| e.map(|e| store::Entry { value: e.value, version: e.version })).map_err(state_error)
        }
        fn compare_and_swap(
            &self,
            key: &str,
            expected: u64,
            value: &[u8],
            ttl_ms: Option<u64>,
        ) -> Result<Option<u64>, store::StateError> {
            state::compare_and_swap(key, expected, value, ttl_ms).map_err(state_error)
        }
        fn delete(&self, key: &str, expected: u64) -> Result<bool, store::StateError> {
            state::delete(key, expected).map_err(state_error)
        }
        fn scan(&self, prefix: &str, limit: u32) -> Result<Vec<String>, store::StateError> {
            state::scan(prefix, limit).map_err(state_error)
        }
    }

    #[spin_sdk::http_service]
    async fn handle(req: Request) -> impl IntoResponse {
        if req.method() != Method::POST {
            return (StatusCode::METHOD_NOT_ALLOWED, "these routes take POST".to_owned());
        }
        let Some(route) = Route::from_path(req.uri().path()) else {
            return (StatusCode::NOT_FOUND, format!("no such route: {}", req.uri().path()));
        };
        let settings = match wasi::config::store::get_all()
            .map_err(|e| format!("reading the settings: {e:?}"))
            .and_then(|pairs| Settings::from_pairs(&pairs).map_err(|e| e.to_string()))
        {
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
        let env =
            Env { transform: &Imports, sink: &Imports, state: &Imports, settings: &settings, now: chrono::Utc::now() };
        let answer = flow::handle(route, &PushRequest { headers, body }, &env);
        (StatusCode::from_u16(answer.status).unwrap_or(StatusCode::INTERNAL_SERVER_ERROR), answer.body)
    }
}
