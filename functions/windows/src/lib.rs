//! The windows component: session windows per user (`/push/sessions` → `user_sessions`) and fixed
//! 1-minute metrics (`/push/metrics` → `streaming_metrics`, `realtime_dashboard`), with state kept
//! between pushes through the host's `state` import and the timer routes `…/tick` (see [`flow`]).
//!
//! `lib.rs` is glue only: the logic lives in [`flow`], [`sessions`], [`minutes`] and [`settings`],
//! which compile and are tested natively.

pub mod flow;
pub mod minutes;
pub mod sessions;
pub mod settings;

#[cfg(target_arch = "wasm32")]
mod component {
    use spin_sdk::http::{IntoResponse, Request};

    use crate::flow::{self, Env};
    use crate::settings::Settings;

    wit_bindgen::generate!({
        path: "../../wit",
        world: "windows",
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
            flow::handle(route, &push, &env).await
        })
        .await
    }
}
