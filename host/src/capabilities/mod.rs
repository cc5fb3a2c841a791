//! What the host provides to guests beyond WASI, one module per capability, each with the same small
//! lifecycle (as `wasmtime-wasi-http`'s `WasiHttpView` and Spin's factors): shared state built once at
//! start, a per-instance context (`SinkCtx`, `StateCtx`, `TransformCtx`, `SettingsCtx`) cloned into
//! each store, and an `add_to_linker` that takes a projection from the store data to that context. No
//! capability names the store type: `functions::instances` composes them.

pub mod message_transform;
pub mod settings;
pub mod sink;
pub mod state;
pub mod transform;
