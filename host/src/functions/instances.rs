//! A function's instances: its component (WASIp3 `wasi:http/handler`) linked once with WASI and the
//! capabilities the registry grants it, pre-instantiated once, and served through `wasmtime-wasi-http`'s
//! `ProxyHandler` (the machinery of `wasmtime serve`).
//!
//! Instances come from one `instantiate_pre` made at start and are reused for up to
//! `guest.instance_reuse` pushes, one push at a time: the `sink.write` import blocks its instance
//! until the group commit lands, so concurrency comes from more instances (up to
//! `guest.max_instances`), not from interleaving inside one. Every push gets an epoch deadline and a
//! wall-clock expiry; a trap or timeout fails that push with 500 and retires that instance only.

use std::pin::Pin;
use std::task::{Context, Poll};
use std::time::{Duration, Instant};

use wasmtime::component::{Component, Linker, ResourceTable};
use wasmtime::{Engine, Store, StoreContextMut, StoreLimits, StoreLimitsBuilder};
use wasmtime_wasi::{WasiCtx, WasiCtxView, WasiView};
use wasmtime_wasi_http::handler::{
    HandlerState, Instance, ProxyHandler, ProxyPre, ShouldAccept, WorkerExpiration, WorkerState, WorkerStatus,
};
use wasmtime_wasi_http::{WasiHttpCtx, WasiHttpCtxView, WasiHttpHooks, WasiHttpView};

use super::Function;
use crate::capabilities::settings::{self, SettingsCtx};
use crate::capabilities::sink::{self, SinkCtx};
use crate::capabilities::state::{self, StateCtx};
use crate::capabilities::transform::{self, TransformCtx};
use crate::engine::{self, GuestConfig};

/// The data of one function instance's store: WASI, wasi:http, limits, and its capabilities.
pub struct InstanceState {
    wasi: WasiCtx,
    http: WasiHttpCtx,
    hooks: NoOutbound,
    table: ResourceTable,
    limits: StoreLimits,
    imports: Imports,
}

/// The capability contexts one function's instances get. `state` and `settings` are linked only for
/// functions the registry declares stateful or configurable: the others cannot import them at all.
#[derive(Clone)]
pub struct Imports {
    pub transform: TransformCtx,
    pub sink: SinkCtx,
    pub state: StateCtx,
    pub settings: SettingsCtx,
}

impl WasiView for InstanceState {
    fn ctx(&mut self) -> WasiCtxView<'_> {
        WasiCtxView { ctx: &mut self.wasi, table: &mut self.table }
    }
}

impl WasiHttpView for InstanceState {
    fn http(&mut self) -> WasiHttpCtxView<'_> {
        WasiHttpCtxView { ctx: &mut self.http, table: &mut self.table, hooks: &mut self.hooks }
    }
}

/// Functions write only through `sink`: outbound HTTP is refused.
struct NoOutbound;

impl WasiHttpHooks for NoOutbound {
    fn send_request(
        &mut self,
        _request: http::Request<wasmtime_wasi_http::WasiBody>,
        _options: Option<wasmtime_wasi_http::RequestOptions>,
        _fut: Box<dyn Future<Output = Result<(), wasmtime_wasi_http::Error>> + Send>,
    ) -> Box<
        dyn Future<
                Output = Result<
                    (
                        http::Response<wasmtime_wasi_http::WasiBody>,
                        Box<dyn Future<Output = Result<(), wasmtime_wasi_http::Error>> + Send>,
                    ),
                    wasmtime_wasi_http::Error,
                >,
            > + Send,
    > {
        Box::new(async { Err(wasmtime_wasi_http::Error::HttpRequestDenied) })
    }
}

/// Everything needed to make one function's instances.
pub struct FunctionInstances {
    engine: Engine,
    pre: ProxyPre<InstanceState>,
    imports: Imports,
    guest: GuestConfig,
}

/// The handler serving one function's requests.
pub type Handler = ProxyHandler<FunctionInstances>;

impl FunctionInstances {
    /// Links `function`'s compiled component with WASI and its capabilities, and pre-instantiates it
    /// once, at start. A function that imports a capability the registry does not grant it fails here.
    pub fn new(
        engine: &Engine,
        function: &Function,
        component: &Component,
        imports: Imports,
        guest: &GuestConfig,
    ) -> wasmtime::Result<Handler> {
        let mut linker = Linker::<InstanceState>::new(engine);
        wasmtime_wasi::p2::add_to_linker_async(&mut linker)?;
        wasmtime_wasi::p3::add_to_linker(&mut linker)?;
        wasmtime_wasi_http::p2::add_only_http_to_linker_async(&mut linker)?;
        wasmtime_wasi_http::p3::add_to_linker(&mut linker)?;
        sink::add_to_linker(&mut linker, |s| &mut s.imports.sink)?;
        transform::add_to_linker(&mut linker, |s| &mut s.imports.transform)?;
        if function.settings {
            settings::add_to_linker(&mut linker, |s| &mut s.imports.settings)?;
        }
        if function.stateful {
            state::add_to_linker(&mut linker, |s| &mut s.imports.state)?;
        }
        let pre = linker.instantiate_pre(component)?;
        let pre = ProxyPre::P3(wasmtime_wasi_http::p3::bindings::ServicePre::new(pre)?);
        Ok(ProxyHandler::new(Self { engine: engine.clone(), pre, imports, guest: guest.clone() }))
    }

    fn new_store(&self) -> Store<InstanceState> {
        let state = InstanceState {
            wasi: WasiCtx::builder().inherit_stderr().build(),
            http: WasiHttpCtx::new(),
            hooks: NoOutbound,
            table: ResourceTable::new(),
            limits: StoreLimitsBuilder::new()
                .memory_size(self.guest.memory_bytes())
                .instances(16)
                .trap_on_grow_failure(true)
                .build(),
            imports: self.imports.clone(),
        };
        let mut store = Store::new(&self.engine, state);
        store.limiter(|s| &mut s.limits);
        // Instantiation gets the request budget too; each push then gets a fresh deadline.
        store.set_epoch_deadline(engine::ticks(self.guest.request_timeout()));
        store
    }
}

impl HandlerState for FunctionInstances {
    type StoreData = InstanceState;
    type WorkerExpiration = Expiration;
    type WorkerState = Worker;

    async fn instantiate(&self) -> wasmtime::Result<Instance<InstanceState, Expiration, Worker>> {
        let mut store = self.new_store();
        let proxy = self.pre.instantiate_async(&mut store).await?;
        Ok(Instance {
            store,
            proxy,
            view: WasiHttpView::http,
            expiration: Expiration {
                idle: Duration::from_secs(30),
                request: self.guest.request_timeout(),
                sleep: Box::pin(tokio::time::sleep(Duration::MAX)),
            },
            state: Worker { reuse: self.guest.instance_reuse, request_timeout: self.guest.request_timeout() },
        })
    }
}

/// When an instance is retired: idle too long, or a push outlived its budget (a second line of
/// defence behind the epoch deadline, for guests stuck in a host call).
pub struct Expiration {
    idle: Duration,
    request: Duration,
    sleep: Pin<Box<tokio::time::Sleep>>,
}

impl WorkerExpiration for Expiration {
    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>, status: WorkerStatus, start: Instant) -> Poll<()> {
        let me = self.get_mut();
        let limit = match status {
            WorkerStatus::Idle => me.idle,
            WorkerStatus::Requests | WorkerStatus::PostReturn => me.request,
        };
        let Some(deadline) = start.checked_add(limit) else { return Poll::Pending };
        let deadline = tokio::time::Instant::from_std(deadline);
        if me.sleep.deadline() != deadline {
            me.sleep.as_mut().reset(deadline);
        }
        me.sleep.as_mut().poll(cx)
    }
}

/// Per-instance policy: one push at a time, `reuse` pushes in all.
pub struct Worker {
    reuse: usize,
    request_timeout: Duration,
}

impl WorkerState for Worker {
    type StoreData = InstanceState;
    /// The route being served: the `transform` import runs that route's message-transform steps.
    type RequestData = &'static str;

    fn should_accept_request(&self, concurrent: usize, total: usize) -> ShouldAccept {
        if total >= self.reuse {
            ShouldAccept::Never
        } else if concurrent >= 1 {
            ShouldAccept::No
        } else {
            ShouldAccept::Yes
        }
    }

    fn on_request_start(
        &self,
        mut store: StoreContextMut<'_, InstanceState>,
        route: &'static str,
        _task: wasmtime::component::GuestTaskId,
    ) -> Pin<Box<dyn Future<Output = ()> + Send + Sync>> {
        store.data_mut().imports.transform.set_route(route);
        store.set_epoch_deadline(engine::ticks(self.request_timeout));
        Box::pin(tokio::time::sleep(self.request_timeout))
    }

    fn drop(&self, _store: Store<InstanceState>, result: wasmtime::Result<()>) {
        match result {
            Ok(()) => {}
            // The handler's name for a worker dropped before it finished: the runtime is shutting down.
            Err(error) if error.to_string() == "worker panicked" => {
                tracing::debug!("function instance dropped at shutdown");
            }
            Err(error) => tracing::warn!(error = format!("{error:#}"), "function instance retired after a failure"),
        }
    }
}
