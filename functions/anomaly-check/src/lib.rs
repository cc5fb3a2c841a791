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
#[expect(unsafe_code, reason = "wit-bindgen generates the canonical-ABI glue of the direct-handler export")]
mod component {
    use function_kit::contract::Reply;
    use function_kit::envelope::PushRequest;

    use crate::flow::{self, Env};
    use crate::settings::Settings;

    wit_bindgen::generate!({
        path: "../../wit",
        world: "anomaly-check",
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
