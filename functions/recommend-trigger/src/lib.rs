//! The recommend-trigger component: per-user product recommendations within seconds of a user's
//! activity (seed §7.3, made streaming). `/push/recommend` takes events, `/push/products` catalog
//! changes, `/push/recommend/tick` recomputes users whose update was debounced (see [`flow`]).
//!
//! `lib.rs` is glue only: the logic lives in [`activity`], [`catalog`], [`recommend`], [`settings`]
//! and [`flow`], which compile and are tested natively.

pub mod activity;
pub mod catalog;
pub mod recommend;
pub mod settings;
