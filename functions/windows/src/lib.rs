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
#[expect(unsafe_code, reason = "wit-bindgen generates the canonical-ABI glue of the direct-handler export")]
mod component {
    use function_kit::contract::Reply;
    use function_kit::envelope::PushRequest;

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

    fn route(path: &str) -> Option<flow::Route> {
        function_kit::routes::find(flow::ROUTES, path)
    }

    async fn run(route: flow::Route, push: PushRequest, settings: &'static Settings) -> Reply {
        let env = Env { transform: &Imports, sink: &Imports, state: &Imports, settings, now: chrono::Utc::now() };
        flow::handle(route, &push, &env).await
    }

    function_kit::serve_glue!(route, settings, run);
}
