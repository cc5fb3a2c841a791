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
#[expect(unsafe_code, reason = "wit-bindgen generates the canonical-ABI glue of the direct-handler export")]
mod component {
    use function_kit::contract::Reply;
    use function_kit::envelope::PushRequest;

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

    fn route(path: &str) -> Option<flow::Route> {
        function_kit::routes::find(flow::ROUTES, path)
    }

    async fn run(route: flow::Route, push: PushRequest, settings: &'static Settings) -> Reply {
        let env = Env { transform: &Imports, sink: &Imports, state: &Imports, settings, now: chrono::Utc::now() };
        flow::handle(route, &push, &env).await.into()
    }

    function_kit::serve_glue!(route, settings, run);
}
