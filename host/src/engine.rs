//! The one wasmtime `Engine`: every knob in one place, each with its reason, and the `[guest]` limits
//! every guest runs under. Pool limits derive from `guest.max_instances` and the number of functions.

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use serde::Deserialize;
use wasmtime::{Engine, InstanceAllocationStrategy, PoolingAllocationConfig};

/// How often the epoch advances: the granularity of guest deadlines.
pub const EPOCH_TICK: Duration = Duration::from_millis(10);

/// Ticks in `d`, at least one.
pub fn ticks(d: Duration) -> u64 {
    u64::try_from(d.as_millis() / EPOCH_TICK.as_millis()).unwrap_or(u64::MAX).max(1)
}

/// Sandbox limits. A guest that exceeds one fails its own request and nothing else.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct GuestConfig {
    /// Linear memory one guest instance may grow to, in MiB.
    pub memory_mib: u32,
    /// Wall-clock budget of one push, sink wait included, in ms. Pub/Sub's default ack deadline is
    /// 10 s: an answer later than that is a nack anyway.
    pub request_timeout_ms: u64,
    /// CPU budget of one transform call, in ms (a transform is pure computation).
    pub transform_timeout_ms: u64,
    /// Push handler instances alive at once (each serves one push at a time). Also sizes the
    /// pooling allocator.
    pub max_instances: u32,
    /// Pushes one push-handler instance serves before it is recycled (an instance that failed is
    /// never reused). 1000 by default: instantiating costs ~5% of throughput at 128 (measured with
    /// wrk at 64 connections: 8,062–8,292 pushes/s at 128 against 8,624–8,680 at 5,000).
    pub instance_reuse: usize,
    /// Deliveries of one message the function may fail on (trap, deadline, memory) before the host
    /// dead-letters it (stage `guest`) and acks it.
    pub max_failed_deliveries: u32,
}

impl Default for GuestConfig {
    fn default() -> Self {
        Self {
            memory_mib: 64,
            request_timeout_ms: 10_000,
            transform_timeout_ms: 1_000,
            max_instances: 128,
            instance_reuse: 1_000,
            max_failed_deliveries: 3,
        }
    }
}

impl GuestConfig {
    /// Checks the limits.
    pub fn validate(&self) -> Result<(), String> {
        if self.memory_mib < 2 {
            return Err(format!(
                "guest.memory_mib must be at least 2 (a Rust guest needs ~1 MiB), got {}",
                self.memory_mib
            ));
        }
        if self.max_instances == 0 || self.instance_reuse == 0 || self.max_failed_deliveries == 0 {
            return Err(
                "guest.max_instances, guest.instance_reuse and guest.max_failed_deliveries must be at least 1".into()
            );
        }
        Ok(())
    }

    pub fn request_timeout(&self) -> Duration {
        Duration::from_millis(self.request_timeout_ms)
    }

    pub fn transform_timeout(&self) -> Duration {
        Duration::from_millis(self.transform_timeout_ms)
    }

    pub fn memory_bytes(&self) -> usize {
        usize::try_from(self.memory_mib).unwrap_or(usize::MAX).saturating_mul(1 << 20)
    }
}

/// Builds the engine for `guest` limits, with pool room for `functions` functions.
pub fn build(guest: &GuestConfig, functions: u32) -> wasmtime::Result<Engine> {
    build_cached(guest, functions, None)
}

/// [`build`], with compiled code cached in `cache_dir` (wasmtime's own cache, keyed by the component
/// bytes and the engine's settings): a restart loads the functions in well under a second instead
/// of compiling them again (~10 s on 2 cores), so a restarted host is back before Pub/Sub's push
/// retries back off.
pub fn build_cached(
    guest: &GuestConfig,
    functions: u32,
    cache_dir: Option<&std::path::Path>,
) -> wasmtime::Result<Engine> {
    let mut config = wasmtime::Config::new();
    if let Some(dir) = cache_dir {
        let mut cache = wasmtime::CacheConfig::new();
        cache.with_directory(dir);
        config.cache(Some(wasmtime::Cache::new(cache)?));
    }
    // Components only; the push handler is a WASIp3 (`wasi:http/handler@0.3.0`) component.
    config.wasm_component_model(true);
    config.wasm_component_model_async(true);
    // Deadlines: a looping guest is interrupted at the next epoch check past its deadline.
    config.epoch_interruption(true);
    // Stack for guest code; deep recursion traps instead of growing without bound.
    config.max_wasm_stack(1 << 20);
    // Profiling: with TRIBUTARY_PERFMAP set, compiled guest code is named in /tmp/perf-<pid>.map, so
    // `perf report` shows guest functions instead of bare addresses.
    if std::env::var_os("TRIBUTARY_PERFMAP").is_some() {
        config.profiler(wasmtime::ProfilingStrategy::PerfMap);
    }

    // Each function keeps up to `max_instances` instances (one request each at a time), and each busy
    // instance calls at most one transform instance and one message-transform step instance at a time:
    // three component instances per function and slot.
    let slots = guest.max_instances.saturating_mul(functions.max(1)).saturating_mul(3);
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
