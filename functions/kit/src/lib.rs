//! The guest kit: what every Tributary function shares, written once.
//!
//! - [`envelope`]: a Pub/Sub push request (wrapped or unwrapped) decoded into a message;
//! - [`contract`]: the acknowledgement contract — the `transform` and `sink` steps as traits, the one
//!   [`Outcome`](contract::Outcome) type every function answers with and the HTTP status it maps to,
//!   and the steps that keep the contract (decode, transform, write, dead-letter);
//! - [`routes`]: the routes a function serves, declared once and read by the host's registry too;
//! - [`serve`]: the prologue of every function — method, route, settings, headers, body — and its
//!   answer, whatever the transport; [`http`] (wasm only) carries it over `wasi:http`;
//! - [`settings`]: `wasi:config/store` pairs parsed once per instance;
//! - [`dead_letter`]: the row of a message that can never become rows;
//! - [`glue`]: the conversions between a function's generated bindings and the model (macros);
//! - [`testing`]: TEST DOUBLES of the imports, shared by every function's unit tests.

pub mod contract;
pub mod dead_letter;
pub mod envelope;
pub mod glue;
#[cfg(target_arch = "wasm32")]
pub mod http;
pub mod routes;
pub mod serve;
pub mod settings;
pub mod testing;
