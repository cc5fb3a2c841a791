//! A function's instances: its component linked once with WASI and the capabilities the registry grants
//! it, pre-instantiated once, and called through its `direct-handler` export: the server has already
//! read the body within its limits, so a push is one typed call (method, route, headers, body in;
//! status, text, window skip out). No `wasi:http` request or body resources, streams or per-request
//! tasks stand between the server and the function (docs/ARCHITECTURE.md, "Choices and why"). The
//! component's `wasi:http` export, the same code, is what Spin and `wasmtime serve` call. The request
//! also says whether the `transform` import is exactly the built-in transform on this route, so the
//! function may run that code in its own instance.
//!
//! Instances are kept warm and reused for up to `guest.instance_reuse` pushes, one push at a time: the
//! `sink.write` import blocks its instance until the group commit lands, so concurrency comes from more
//! instances (bounded by the server's push slots, `guest.max_instances`), not from interleaving inside
//! one. Every push gets an epoch deadline and a wall-clock budget; a trap or timeout fails that push
//! and drops that instance only. Instances idle for [`IDLE_RETIREMENT`] are dropped.

use std::sync::Mutex;
use std::time::{Duration, Instant};

use http::{HeaderValue, Response, StatusCode};
use wasmtime::component::{Component, Linker, ResourceTable};
use wasmtime::{Engine, Store, StoreLimits, StoreLimitsBuilder};
use wasmtime_wasi::{WasiCtx, WasiCtxView, WasiView};
use wasmtime_wasi_http::{WasiHttpCtx, WasiHttpCtxView, WasiHttpHooks, WasiHttpView};

use super::Function;
use crate::bindings::{DirectFunction, DirectFunctionPre, direct_handler};
use crate::capabilities::settings::{self, SettingsCtx};
use crate::capabilities::sink::{self, SinkCtx};
use crate::capabilities::state::{self, StateCtx};
use crate::capabilities::transform::{self, TransformCtx};
use crate::engine::{self, GuestConfig};
use crate::listener::{Body, text};

/// A warm instance unused this long is dropped (its memory returns to the pool).
pub const IDLE_RETIREMENT: Duration = Duration::from_secs(30);

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

/// A warm instance, with the pushes it has served and when it last finished one.
struct Warm {
    store: Store<InstanceState>,
    function: DirectFunction,
    calls: usize,
    idle_since: Instant,
}

/// One function's instances: made from one `instantiate_pre`, kept warm between pushes.
pub struct FunctionInstances {
    engine: Engine,
    pre: DirectFunctionPre<InstanceState>,
    imports: Imports,
    guest: GuestConfig,
    /// Idle instances, the most recently used last.
    warm: Mutex<Vec<Warm>>,
}

/// The handler serving one function's requests.
pub type Handler = FunctionInstances;

impl FunctionInstances {
    /// Links `function`'s compiled component with WASI and its capabilities, and pre-instantiates it
    /// once, at start. A function that imports a capability the registry does not grant it, or that
    /// does not export `direct-handler`, fails here.
    pub fn new(
        engine: &Engine,
        function: &Function,
        component: &Component,
        imports: Imports,
        guest: &GuestConfig,
    ) -> wasmtime::Result<Handler> {
        let mut linker = Linker::<InstanceState>::new(engine);
        // The component's `wasi:http` export (for Spin and `wasmtime serve`) pulls in these imports; the
        // direct call never uses them, and outbound HTTP is refused.
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
        let pre = DirectFunctionPre::new(linker.instantiate_pre(component)?)?;
        Ok(Self { engine: engine.clone(), pre, imports, guest: guest.clone(), warm: Mutex::new(Vec::new()) })
    }

    /// Serves one request whose body the server has read. `Err` is the function's failure (a trap, its
    /// deadline, its memory limit, an instantiation failure): that request fails, the instance is dropped.
    pub async fn handle(
        &self,
        route: &'static str,
        parts: &http::request::Parts,
        body: &[u8],
    ) -> wasmtime::Result<Response<Body>> {
        let req = direct_handler::Request {
            method: parts.method.as_str().to_owned(),
            path: parts.uri.path().to_owned(),
            headers: parts
                .headers
                .iter()
                .filter_map(|(k, v)| Some((k.as_str().to_owned(), v.to_str().ok()?.to_owned())))
                .collect(),
            body: body.to_vec(),
            builtin_transform: self.imports.transform.builtin_on(route),
        };
        let mut warm = match self.take_warm() {
            Some(warm) => warm,
            None => self.instantiate().await?,
        };
        let budget = self.guest.request_timeout();
        warm.store.data_mut().imports.transform.set_route(route);
        warm.store.set_epoch_deadline(engine::ticks(budget));
        // The epoch deadline interrupts guest code; the wall-clock budget also covers a push waiting in
        // a host call (dropping the call unwinds the guest). On either, `warm` is dropped here.
        let call = warm.function.tributary_pipeline_direct_handler().call_handle(&mut warm.store, &req);
        let reply = match tokio::time::timeout(budget, call).await {
            Ok(reply) => reply?,
            Err(_) => wasmtime::bail!("the push outlived its budget of {} ms", budget.as_millis()),
        };
        warm.calls += 1;
        if warm.calls < self.guest.instance_reuse {
            self.put_back(warm);
        }
        let mut resp =
            text(StatusCode::from_u16(reply.status).unwrap_or(StatusCode::INTERNAL_SERVER_ERROR), reply.body);
        if let Some(skip) = reply.window_skip.and_then(|s| HeaderValue::from_str(&s).ok()) {
            resp.headers_mut().insert("x-tributary-window-skip", skip);
        }
        Ok(resp)
    }

    fn take_warm(&self) -> Option<Warm> {
        self.warm.lock().ok()?.pop()
    }

    /// Returns an instance to the pool, dropping the ones idle past [`IDLE_RETIREMENT`] (the oldest are
    /// first in the list).
    fn put_back(&self, mut warm: Warm) {
        let Ok(mut pool) = self.warm.lock() else { return };
        let now = Instant::now();
        warm.idle_since = now;
        let stale = pool.iter().take_while(|w| now.duration_since(w.idle_since) > IDLE_RETIREMENT).count();
        let retired: Vec<Warm> = pool.drain(..stale).collect();
        pool.push(warm);
        drop(pool);
        drop(retired);
    }

    async fn instantiate(&self) -> wasmtime::Result<Warm> {
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
        let function = self.pre.instantiate_async(&mut store).await?;
        Ok(Warm { store, function, calls: 0, idle_since: Instant::now() })
    }
}
