//! Generated bindings for `wit/pipeline.wit`, fenced here; the rest of the host uses only the
//! re-exports below.

mod generated {
    wasmtime::component::bindgen!({
        path: "../wit",
        world: "host-capabilities",
        imports: {
            // Runs another component: may trap, and awaits it.
            "tributary:pipeline/transform.transform": async | trappable,
            // Waits for the group commit.
            "tributary:pipeline/sink.write": async,
            "tributary:pipeline/sink.upsert": async,
            // Waits for the state store (a blocking redb transaction or a Redis round trip).
            "tributary:pipeline/state": async,
        },
    });

    pub mod message_transform_component {
        wasmtime::component::bindgen!({
            path: "../wit",
            world: "message-transform-component",
            exports: { default: async },
            with: {
                "tributary:pipeline/types": super::tributary::pipeline::types,
                "wasi:config/store": super::wasi::config::store,
            },
        });
    }

    pub mod direct_function {
        wasmtime::component::bindgen!({
            path: "../wit",
            world: "direct-function",
            exports: { default: async },
        });
    }

    pub mod transform_component {
        wasmtime::component::bindgen!({
            path: "../wit",
            world: "transform-component",
            exports: { default: async },
            with: { "tributary:pipeline/types": super::tributary::pipeline::types },
        });
    }
}

pub use generated::direct_function::exports::tributary::pipeline::direct_handler;
pub use generated::direct_function::{DirectFunction, DirectFunctionPre};
pub use generated::message_transform_component::{MessageTransformComponent, MessageTransformComponentPre};
pub use generated::transform_component::{TransformComponent, TransformComponentPre};
pub use generated::tributary::pipeline::{sink, state, transform, types};
pub use generated::wasi::config::store as config_store;
