//! Integration tests: one binary, a module per topic. They drive the real thing — Google's Pub/Sub
//! emulator pushing to a running `tributary` process with the real wasm components and the embedded
//! warehouse — and read results back through the host's own query route.

mod support;

mod anomaly;
mod bigquery;
mod cli;
mod dashboard;
mod examples;
mod faults;
mod first_run;
mod guest_isolation;
mod hardening;
mod insert_api;
mod portability;
mod pull;
mod push_auth;
mod push_e2e;
mod recommend;
mod replay;
mod restart;
mod state;
mod udf;
mod wasmtime_serve;
mod windows;
