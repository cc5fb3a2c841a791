//! Serving a function's routes with its component (WASIp3 `wasi:http/handler`): the push handler
//! (`/push/events`) and the anomaly-check function (`/push/anomaly`, `/push/sensors` and their ticks).
//!
//! Instances come from one `instantiate_pre` made at start and are reused for up to
//! `guest.instance_reuse` pushes, one push at a time: the `sink.write` import blocks its instance
//! until the group commit lands, so concurrency comes from more instances (up to
//! `guest.max_instances`), not from interleaving inside one. Every push gets an epoch deadline and a
//! wall-clock expiry; a trap or timeout fails that push with 500 and retires that instance only.

use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::{Duration, Instant};

use wasmtime::component::{Component, Linker, ResourceTable};
use wasmtime::{Engine, Store, StoreContextMut, StoreLimits, StoreLimitsBuilder};
use wasmtime_wasi::{WasiCtx, WasiCtxView, WasiView};
use wasmtime_wasi_http::handler::{
    HandlerState, Instance, ProxyHandler, ProxyPre, ShouldAccept, WorkerExpiration, WorkerState, WorkerStatus,
};
use wasmtime_wasi_http::{WasiHttpCtx, WasiHttpCtxView, WasiHttpHooks, WasiHttpView};

use crate::config::GuestConfig;
use crate::engine;
use crate::settings::Settings;
use crate::sink::GroupCommit;
use crate::state::Scoped;
use crate::transform::TransformRunner;

/// The data of one push-handler store: WASI, wasi:http, limits, and the capabilities.
pub struct PushState {
    wasi: WasiCtx,
    http: WasiHttpCtx,
    hooks: NoOutbound,
    table: ResourceTable,
    limits: StoreLimits,
    pub(crate) sink: GroupCommit,
    pub(crate) transform: Arc<TransformRunner>,
    pub(crate) state: Scoped,
    pub(crate) settings: Arc<Settings>,
}

/// What the host provides to one function's instances.
#[derive(Clone)]
pub struct Capabilities {
    pub transform: Arc<TransformRunner>,
    pub sink: GroupCommit,
    /// The function's own view of the state store.
    pub state: Scoped,
    /// The function's `wasi:config/store` settings.
    pub settings: Arc<Settings>,
}

impl WasiView for PushState {
    fn ctx(&mut self) -> WasiCtxView<'_> {
        WasiCtxView { ctx: &mut self.wasi, table: &mut self.table }
    }
}

impl WasiHttpView for PushState {
    fn http(&mut self) -> WasiHttpCtxView<'_> {
        WasiHttpCtxView { ctx: &mut self.http, table: &mut self.table, hooks: &mut self.hooks }
    }
}

/// Push handlers write only through `sink`: outbound HTTP is refused.
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

/// Everything a push route needs to make instances.
pub struct PushRoute {
    engine: Engine,
    pre: ProxyPre<PushState>,
    caps: Capabilities,
    guest: GuestConfig,
}

impl PushRoute {
    /// Links and pre-instantiates the push handler once, at start.
    pub fn new(
        engine: &Engine,
        component: &Component,
        caps: Capabilities,
        guest: &GuestConfig,
    ) -> wasmtime::Result<ProxyHandler<Self>> {
        let mut linker = Linker::<PushState>::new(engine);
        wasmtime_wasi::p2::add_to_linker_async(&mut linker)?;
        wasmtime_wasi::p3::add_to_linker(&mut linker)?;
        wasmtime_wasi_http::p2::add_only_http_to_linker_async(&mut linker)?;
        wasmtime_wasi_http::p3::add_to_linker(&mut linker)?;
        crate::sink::add_to_linker(&mut linker)?;
        crate::transform::add_to_linker(&mut linker)?;
        crate::state::add_to_linker(&mut linker)?;
        crate::settings::add_to_linker(&mut linker)?;
        let pre = linker.instantiate_pre(component)?;
        let pre = ProxyPre::P3(wasmtime_wasi_http::p3::bindings::ServicePre::new(pre)?);
        Ok(ProxyHandler::new(Self { engine: engine.clone(), pre, caps, guest: guest.clone() }))
    }

    fn new_store(&self) -> Store<PushState> {
        let state = PushState {
            wasi: WasiCtx::builder().inherit_stderr().build(),
            http: WasiHttpCtx::new(),
            hooks: NoOutbound,
            table: ResourceTable::new(),
            limits: StoreLimitsBuilder::new()
                .memory_size(self.guest.memory_bytes())
                .instances(16)
                .trap_on_grow_failure(true)
                .build(),
            sink: self.caps.sink.clone(),
            transform: Arc::clone(&self.caps.transform),
            state: self.caps.state.clone(),
            settings: Arc::clone(&self.caps.settings),
        };
        let mut store = Store::new(&self.engine, state);
        store.limiter(|s| &mut s.limits);
        // Instantiation gets the request budget too; each push then gets a fresh deadline.
        store.set_epoch_deadline(engine::ticks(self.guest.request_timeout()));
        store
    }
}

impl HandlerState for PushRoute {
    type StoreData = PushState;
    type WorkerExpiration = Expiration;
    type WorkerState = Worker;

    async fn instantiate(&self) -> wasmtime::Result<Instance<PushState, Expiration, Worker>> {
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
    type StoreData = PushState;
    type RequestData = ();

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
        mut store: StoreContextMut<'_, PushState>,
        _data: (),
        _task: wasmtime::component::GuestTaskId,
    ) -> Pin<Box<dyn Future<Output = ()> + Send + Sync>> {
        store.set_epoch_deadline(engine::ticks(self.request_timeout));
        Box::pin(tokio::time::sleep(self.request_timeout))
    }

    fn drop(&self, _store: Store<PushState>, result: wasmtime::Result<()>) {
        match result {
            Ok(()) => {}
            // The handler's name for a worker dropped before it finished: the runtime is shutting down.
            Err(error) if error.to_string() == "worker panicked" => {
                tracing::debug!("push-handler instance dropped at shutdown");
            }
            Err(error) => tracing::warn!(error = format!("{error:#}"), "push-handler instance retired after a failure"),
        }
    }
}
