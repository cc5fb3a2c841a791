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
    use spin_sdk::http::{IntoResponse, Request};

    use crate::flow::{self, Env};
    use crate::settings::Settings;

    wit_bindgen::generate!({
        path: "../../wit",
        world: "recommend-trigger",
        generate_all,
    });

    function_kit::import_glue!(tributary::pipeline);
    state_update::impl_state_import!(Imports, tributary::pipeline);
    function_kit::settings_glue!(Settings);

    #[spin_sdk::http_service]
    async fn handle(req: Request) -> impl IntoResponse {
        let route = |path: &str| function_kit::routes::find(flow::ROUTES, path);
        function_kit::http::serve(req, route, settings, async |route, push, settings| {
            let env = Env { transform: &Imports, sink: &Imports, state: &Imports, settings, now: chrono::Utc::now() };
            flow::handle(route, &push, &env).await.into()
        })
        .await
    }
}
