//! The one wasmtime `Engine`: every knob in one place, each with its reason. Pool limits derive from
//! `guest.max_instances`.

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use wasmtime::{Engine, InstanceAllocationStrategy, PoolingAllocationConfig};

use crate::config::GuestConfig;

/// How often the epoch advances: the granularity of guest deadlines.
pub const EPOCH_TICK: Duration = Duration::from_millis(10);

/// Ticks in `d`, at least one.
pub fn ticks(d: Duration) -> u64 {
    u64::try_from(d.as_millis() / EPOCH_TICK.as_millis()).unwrap_or(u64::MAX).max(1)
}

/// Builds the engine for `guest` limits.
pub fn build(guest: &GuestConfig) -> wasmtime::Result<Engine> {
    let mut config = wasmtime::Config::new();
    // Components only; the push handler is a WASIp3 (`wasi:http/handler@0.3.0`) component.
    config.wasm_component_model(true);
    config.wasm_component_model_async(true);
    // Deadlines: a looping guest is interrupted at the next epoch check past its deadline.
    config.epoch_interruption(true);
    // Stack for guest code; deep recursion traps instead of growing without bound.
    config.max_wasm_stack(1 << 20);

    // Two functions keep up to `max_instances` instances each (one push each at a time), and each
    // busy instance calls at most one transform instance: four components per slot, with room to spare.
    let slots = guest.max_instances.saturating_mul(4);
    let mut pool = PoolingAllocationConfig::default();
    pool.total_component_instances(slots)
        // A Rust wasip2 component has a handful of core instances (main module, shims, fixups).
        .total_core_instances(slots.saturating_mul(8))
        .total_memories(slots.saturating_mul(2))
        .total_tables(slots.saturating_mul(4))
        // Every instance runs on a fiber stack while it is called asynchronously; p3 tasks may take
        // a second one.
        .total_stacks(slots.saturating_mul(2))
        // The per-guest memory limit, enforced by the pool as well as by each store's limiter.
        .max_memory_size(guest.memory_bytes());
    config.allocation_strategy(InstanceAllocationStrategy::Pooling(pool));
    Engine::new(&config)
}

/// Advances the engine's epoch every [`EPOCH_TICK`] until dropped.
pub struct EpochTicker {
    stop: Arc<AtomicBool>,
    thread: Option<std::thread::JoinHandle<()>>,
}

impl EpochTicker {
    pub fn start(engine: Engine) -> Self {
        let stop = Arc::new(AtomicBool::new(false));
        let thread = std::thread::Builder::new()
            .name("epoch-ticker".into())
            .spawn({
                let stop = Arc::clone(&stop);
                move || {
                    while !stop.load(Ordering::Relaxed) {
                        std::thread::sleep(EPOCH_TICK);
                        engine.increment_epoch();
                    }
                }
            })
            .expect("spawning the epoch ticker");
        Self { stop, thread: Some(thread) }
    }
}

impl Drop for EpochTicker {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Relaxed);
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}
