//! The Tributary host: serves the function routes, runs the wasm components, provides their imports
//! (`sink`, `transform`, `state`, `wasi:config/store`) and group-commits their rows into the warehouse.
//!
//! Layers, each importing only those below it (the binary's `main.rs` and `cli/` sit on top):
//!
//! - [`start`]: one host, step by step (warehouse, state, functions, listeners, timer);
//! - [`config`]: loads `tributary.toml` (each section's struct and checks live with its owner below);
//! - [`server`] (function routes, insertAll), [`admin`] (loopback admin routes), [`dashboard`], [`timer`],
//!   [`push_auth`], [`insert_api`], [`pull`] (StreamingPull subscriptions into the push functions);
//! - [`functions`]: the registry of every function, its [`instances`](functions::instances) and the
//!   benchmark's [`native`](functions::native) baseline;
//! - [`capabilities`]: `sink`, `state`, `transform`, `settings`, each standing alone;
//! - [`group_commit`], [`state`] backends, [`warehouse`] backends;
//! - shared at the bottom: [`engine`] (and `[guest]`), [`listener`] (HTTP/1 serving, the body type),
//!   [`metrics`], [`bindings`], [`components`], [`client`].

pub mod admin;
pub mod bindings;
pub mod capabilities;
pub mod client;
pub mod components;
pub mod config;
pub mod dashboard;
pub mod engine;
pub mod functions;
pub mod group_commit;
pub mod insert_api;
pub mod listener;
pub mod metrics;
pub mod poison;
pub mod pull;
pub mod push_auth;
pub mod server;
pub mod start;
pub mod state;
pub mod timer;
pub mod warehouse;

pub use start::{Mode, RunningHost, start};
