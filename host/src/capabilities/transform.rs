//! The `transform` capability: the push handler's `transform` import is served by running a transform
//! component (built-in or the user's) in a store of its own, with its own memory limit and CPU
//! deadline. A trap there fails the calling push, nothing else.

use std::sync::{Arc, Mutex};

use wasmtime::component::{Component, Linker, ResourceTable};
use wasmtime::{Engine, Store, StoreLimits, StoreLimitsBuilder};
use wasmtime_wasi::{WasiCtx, WasiCtxView, WasiView};

use crate::bindings::{TransformComponent, TransformComponentPre, transform, types};
use crate::capabilities::message_transform::Steps;
use crate::engine::{self, GuestConfig};

/// Per-call state of a transform store: no files, no network, no environment.
struct TransformState {
    wasi: WasiCtx,
    table: ResourceTable,
    limits: StoreLimits,
}

impl WasiView for TransformState {
    fn ctx(&mut self) -> WasiCtxView<'_> {
        WasiCtxView { ctx: &mut self.wasi, table: &mut self.table }
    }
}

/// A transform instance kept for reuse, with the calls it has served.
struct Warm {
    store: Store<TransformState>,
    instance: TransformComponent,
    calls: usize,
}

/// Runs the transform component; shared by every push store.
///
/// Instances are reused for up to `guest.instance_reuse` calls (a transform is pure, so nothing leaks
/// between messages that a fresh instance would have hidden, and a reused one saves the instantiation);
/// an instance that trapped is never reused.
pub struct TransformRunner {
    engine: Engine,
    pre: TransformComponentPre<TransformState>,
    memory_bytes: usize,
    deadline_ticks: u64,
    reuse: usize,
    warm: Mutex<Vec<Warm>>,
}

impl TransformRunner {
    /// Links a compiled transform component once, at start.
    pub fn new(engine: &Engine, component: &Component, guest: &GuestConfig) -> wasmtime::Result<Self> {
        let mut linker = Linker::new(engine);
        // Rust's std imports wasi:cli and wasi:io; the context grants nothing beyond them.
        wasmtime_wasi::p2::add_to_linker_async(&mut linker)?;
        let pre = TransformComponentPre::new(linker.instantiate_pre(component)?)?;
        Ok(Self {
            engine: engine.clone(),
            pre,
            memory_bytes: guest.memory_bytes(),
            deadline_ticks: engine::ticks(guest.transform_timeout()),
            reuse: guest.instance_reuse,
            warm: Mutex::new(Vec::new()),
        })
    }

    /// Transforms one message. `Err` is a trap (panic, deadline, memory limit).
    pub async fn call(&self, msg: &types::Message) -> wasmtime::Result<Result<Vec<types::Row>, transform::Rejection>> {
        let warm = self.warm.lock().ok().and_then(|mut w| w.pop());
        let mut warm = match warm {
            Some(w) => w,
            None => self.instantiate().await?,
        };
        warm.store.set_epoch_deadline(self.deadline_ticks);
        // On a trap, `warm` is dropped here: that instance is never used again.
        let result = warm.instance.tributary_pipeline_transform().call_transform(&mut warm.store, msg).await?;
        warm.calls += 1;
        if warm.calls < self.reuse
            && let Ok(mut pool) = self.warm.lock()
        {
            pool.push(warm);
        }
        Ok(result)
    }

    async fn instantiate(&self) -> wasmtime::Result<Warm> {
        let state = TransformState {
            wasi: WasiCtx::builder().inherit_stderr().build(),
            table: ResourceTable::new(),
            limits: StoreLimitsBuilder::new()
                .memory_size(self.memory_bytes)
                .instances(16)
                .trap_on_grow_failure(true)
                .build(),
        };
        let mut store = Store::new(&self.engine, state);
        store.limiter(|s| &mut s.limits);
        store.set_epoch_deadline(self.deadline_ticks);
        let instance = self.pre.instantiate_async(&mut store).await?;
        Ok(Warm { store, instance, calls: 0 })
    }
}

/// One instance's `transform`: the route's message-transform steps, then the shared runner.
#[derive(Clone)]
pub struct TransformCtx {
    runner: Arc<TransformRunner>,
    steps: Arc<Steps>,
    /// The route of the request the instance is serving (set when each request starts).
    route: &'static str,
    /// The runner's component is the built-in transform (no `components.transform`).
    builtin: bool,
}

impl TransformCtx {
    /// `builtin`: `runner` runs the built-in transform component, not a user's.
    pub fn new(runner: Arc<TransformRunner>, steps: Arc<Steps>, builtin: bool) -> Self {
        Self { runner, steps, route: "", builtin }
    }

    /// Whether this import is, on `route`, exactly the built-in transform with no step in front: then a
    /// function may run that code in its own instance instead (direct-handler's `builtin-transform`).
    pub fn builtin_on(&self, route: &str) -> bool {
        self.builtin && !self.steps.has_steps(route)
    }

    /// The route whose steps apply to the next calls.
    pub fn set_route(&mut self, route: &'static str) {
        self.route = route;
    }
}

/// Links the `transform` import into any store whose data holds a [`TransformCtx`] (`get` finds it).
pub fn add_to_linker<T: Send + 'static>(
    linker: &mut Linker<T>,
    get: fn(&mut T) -> &mut TransformCtx,
) -> wasmtime::Result<()> {
    use wasmtime::component::HasSelf;
    transform::add_to_linker::<T, HasSelf<TransformCtx>>(linker, get)
}

impl transform::Host for TransformCtx {
    async fn transform(
        &mut self,
        msg: types::Message,
    ) -> wasmtime::Result<Result<Vec<types::Row>, transform::Rejection>> {
        if self.steps.is_empty() {
            return self.runner.call(&msg).await;
        }
        match self.steps.run(self.route, msg).await {
            Ok(Some(msg)) => self.runner.call(&msg).await,
            // Dropped by a step: no rows, and the push is acked.
            Ok(None) => Ok(Ok(Vec::new())),
            Err(rejection) => Ok(Err(rejection)),
        }
    }
}
