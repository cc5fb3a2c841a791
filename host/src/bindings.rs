//! Generated bindings for `wit/pipeline.wit`, fenced here; the rest of the host uses only the
//! re-exports below.

mod generated {
    wasmtime::component::bindgen!({
        path: "../wit",
        world: "pubsub-push",
        imports: {
            // Runs another component: may trap, and awaits it.
            "tributary:pipeline/transform.transform": async | trappable,
            // Waits for the group commit.
            "tributary:pipeline/sink.write": async,
        },
    });

    pub mod transform_component {
        wasmtime::component::bindgen!({
            path: "../wit",
            world: "transform-component",
            exports: { default: async },
            with: { "tributary:pipeline/types": super::tributary::pipeline::types },
        });
    }
}

pub use generated::transform_component::{TransformComponent, TransformComponentPre};
pub use generated::tributary::pipeline::{sink, transform, types};
