//! Starting a host, one readable step at a time: open the warehouse (and the group commit in front of
//! it), open the state store, compile and link every function of the registry with its capabilities,
//! bind the listeners, start the timer. [`RunningHost::shutdown`] undoes it in order.

use std::net::SocketAddr;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use anyhow::Context as _;
use tokio::sync::{Semaphore, watch};
use tokio::task::JoinHandle;
use wasmtime::component::Component;

use crate::admin::Admin;
use crate::capabilities::message_transform::Steps;
use crate::capabilities::settings::SettingsCtx;
use crate::capabilities::sink::SinkCtx;
use crate::capabilities::state::StateCtx;
use crate::capabilities::transform::{TransformCtx, TransformRunner};
use crate::config::Config;
use crate::engine::{self, EpochTicker};
use crate::functions::instances::{FunctionInstances, Imports};
use crate::functions::native::NativePush;
use crate::functions::{self, Kind};
use crate::group_commit::{FlusherThread, GroupCommit};
use crate::listener::BodyBudget;
use crate::metrics::Metrics;
use crate::server::{App, Handler, INTERNAL_IN_FLIGHT, Internal};
use crate::state::StateStore;
use crate::warehouse::bigquery::BigQuery;
use crate::warehouse::embedded::Embedded;
use crate::warehouse::{Backend, FaultSwitch, Warehouse};
use crate::{components, listener, push_auth, state, timer};

/// Which implementation serves the function routes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Mode {
    /// The wasm components (the product).
    Wasm,
    /// The events function compiled into the host, nothing else (the benchmark's baseline).
    Native,
}

/// A host that is serving.
pub struct RunningHost {
    /// Where the function routes listen.
    pub addr: SocketAddr,
    /// Where the admin routes listen.
    pub admin_addr: SocketAddr,
    /// The host's metrics (also served on `GET /metrics`).
    pub metrics: Arc<Metrics>,
    stop: watch::Sender<bool>,
    servers: Vec<JoinHandle<()>>,
    sink: GroupCommit,
    flusher: FlusherThread,
    _ticker: Option<EpochTicker>,
}

/// wasmtime has its own error type; it converts through `Box<dyn Error>`.
pub(crate) fn wasm_error(e: wasmtime::Error) -> anyhow::Error {
    anyhow::Error::from_boxed(e.into_boxed_dyn_error())
}

/// Starts a host: opens the warehouse and the state store, compiles the functions, binds both listeners.
pub async fn start(config: &Config, mode: Mode) -> anyhow::Result<RunningHost> {
    config.validate()?;
    // Every backend keeps something under the data directory (the warehouse, the state store, the
    // exactly-once ledger): a fresh directory is created, whichever backend is configured.
    std::fs::create_dir_all(&config.data_dir)
        .with_context(|| format!("creating the data directory {}", config.data_dir.display()))?;
    let metrics = Metrics::new();
    let (warehouse, reader, dashboard, fault) = open_warehouse(config, &metrics).await?;
    let subscriptions = config.pull.iter().map(|p| p.subscription.clone()).collect();
    let dashboard = Arc::new(crate::dashboard::Dashboard::new(dashboard, Arc::clone(&metrics), subscriptions));
    let (sink, flusher) = GroupCommit::start(warehouse, config.sink.clone(), Arc::clone(&metrics));
    let store = state::open(&config.state, &config.data_dir).await.context("opening the state store")?;

    let mut watchers = Vec::new();
    let (handlers, ticker) = match mode {
        Mode::Native => {
            let native = |f: &functions::Function| {
                (f.name == "pubsub-push").then(|| Handler::Native(NativePush { sink: sink.clone() }))
            };
            (functions::all().iter().map(native).collect(), None)
        }
        Mode::Wasm => {
            let functions = u32::try_from(functions::all().len()).unwrap_or(u32::MAX);
            let engine = engine::build_cached(&config.guest, functions, Some(&config.data_dir.join("compiled")))
                .map_err(wasm_error)?;
            let (handlers, steps) = link_functions(config, &engine, &sink, &store, &metrics).await?;
            watchers.push(steps);
            (handlers.into_iter().map(|h| Some(Handler::Wasm(Box::new(h)))).collect(), Some(EpochTicker::start(engine)))
        }
    };

    let listener =
        tokio::net::TcpListener::bind(config.listen).await.with_context(|| format!("binding {}", config.listen))?;
    let admin_listener = tokio::net::TcpListener::bind(config.admin_listen)
        .await
        .with_context(|| format!("binding admin {}", config.admin_listen))?;
    let addr = listener.local_addr()?;
    let admin_addr = admin_listener.local_addr()?;
    let (stop, stopped) = watch::channel(false);
    let drain = config.guest.request_timeout() + Duration::from_secs(1);
    let app = Arc::new(App {
        push_auth: push_auth::PushAuth::new(&config.push_auth, Arc::clone(&metrics))?,
        handlers,
        metrics: Arc::clone(&metrics),
        push_slots: Semaphore::new(usize::try_from(config.guest.max_instances).unwrap_or(usize::MAX)),
        internal_slots: Semaphore::new(INTERNAL_IN_FLIGHT),
        bodies: BodyBudget::new(config.http.max_buffered_mib),
        http: config.http.clone(),
        sink: sink.clone(),
        embedded: config.sink.backend == Backend::Embedded,
        poison: crate::poison::Poison {
            store: Arc::clone(&store),
            sink: sink.clone(),
            max_failed_deliveries: config.guest.max_failed_deliveries,
        },
    });
    let internal = Arc::new(Internal { app: Arc::clone(&app), admin: Arc::new(Admin { reader, fault }), dashboard });
    let mut servers = vec![
        tokio::spawn(listener::serve(listener, Arc::clone(&app), stopped.clone(), drain, config.http.clone())),
        tokio::spawn(listener::serve(admin_listener, internal, stopped.clone(), drain, config.http.clone())),
    ];
    // Pull subscriptions feed the same functions; on shutdown they answer their in-flight messages
    // before the group commit drains.
    servers.extend(crate::pull::start(&config.pull, Arc::clone(&app), Arc::clone(&metrics), stopped.clone()).await?);
    // Message-transform files are reloaded when they change.
    servers.extend(watchers.into_iter().map(|steps| tokio::spawn(steps.watch(stopped.clone()))));
    if mode == Mode::Wasm && config.timers.tick_ms > 0 && functions::routes(Kind::Tick).next().is_some() {
        let every = Duration::from_millis(config.timers.tick_ms);
        servers.push(tokio::spawn(timer::run(reachable(admin_addr), every, stopped)));
    }
    if !config.listen.ip().is_loopback() && config.push_auth.is_empty() {
        tracing::warn!(
            listen = %config.listen,
            "ANYONE WHO CAN REACH {} CAN PUSH MESSAGES: no [[push_auth]] is configured. Configure push authentication (OIDC) or listen on loopback behind a proxy that authenticates.",
            config.listen
        );
    }
    Ok(RunningHost { addr, admin_addr, metrics, stop, servers, sink, flusher, _ticker: ticker })
}

/// Where this host's own requests reach a listener bound to `addr` (an unspecified address is
/// reached through loopback).
fn reachable(addr: SocketAddr) -> SocketAddr {
    if addr.ip().is_unspecified() {
        let ip =
            if addr.is_ipv4() { std::net::Ipv4Addr::LOCALHOST.into() } else { std::net::Ipv6Addr::LOCALHOST.into() };
        SocketAddr::new(ip, addr.port())
    } else {
        addr
    }
}

/// The embedded reader for `/query`, when the warehouse is the embedded one.
type Reader = Option<crate::admin::Reader>;
/// Where the dashboard reads its figures.
type DashboardSource = crate::dashboard::Source;
/// The fault-injection switch, when `testing.fault_injection` is on.
type Fault = Option<Arc<std::sync::atomic::AtomicU8>>;

/// Opens the configured warehouse (behind the fault switch when testing asks for one).
async fn open_warehouse(
    config: &Config,
    metrics: &Arc<Metrics>,
) -> anyhow::Result<(Box<dyn Warehouse>, Reader, DashboardSource, Fault)> {
    let (warehouse, reader, dashboard): (Box<dyn Warehouse>, _, _) = match config.sink.backend {
        Backend::Embedded => {
            let (dir, load, m) = (config.data_dir.clone(), config.sink.load(), Arc::clone(metrics));
            let db = tokio::task::spawn_blocking(move || Embedded::open(&dir, load, m))
                .await?
                .context("opening the embedded warehouse")?;
            let reader = db.reader()?;
            crate::admin::lock_down(&reader).context("turning off the warehouse's external access")?;
            let dashboard = db.reader()?;
            let reader = crate::admin::Reader { conn: Mutex::new(reader), loaded: db.watermark() };
            (Box::new(db), Some(reader), DashboardSource::Embedded(Mutex::new(dashboard)))
        }
        backend => {
            let (bq, dir, m) = (config.bigquery.clone(), config.data_dir.clone(), Arc::clone(metrics));
            let warehouse = tokio::task::spawn_blocking(move || BigQuery::connect(&bq, backend, &dir, m))
                .await?
                .with_context(|| format!("connecting to BigQuery ({backend:?})"))?;
            tracing::info!(backend = ?backend, project = %config.bigquery.project, dataset = %config.bigquery.dataset, "sink writes to BigQuery");
            let auth = crate::warehouse::bigquery::auth::Auth::new(config.bigquery.credentials)
                .await
                .context("BigQuery credentials for the dashboard")?;
            let rest = crate::warehouse::bigquery::rest::Rest::new(&config.bigquery, Arc::new(auth))?;
            (Box::new(warehouse), None, DashboardSource::BigQuery(rest))
        }
    };
    if !config.testing.fault_injection {
        return Ok((warehouse, reader, dashboard, None));
    }
    let (switch, flag) = FaultSwitch::new(warehouse);
    tracing::warn!("testing.fault_injection is on: PUT /faults/sink on the admin listener fails warehouse writes");
    Ok((Box::new(switch), reader, dashboard, Some(flag)))
}

/// Compiles every function of the registry, the transform they call and the message-transform steps in
/// front of it (in parallel, off the async threads), and links each function with the capabilities the
/// registry grants it.
async fn link_functions(
    config: &Config,
    engine: &wasmtime::Engine,
    sink: &GroupCommit,
    store: &Arc<dyn StateStore>,
    metrics: &Arc<Metrics>,
) -> anyhow::Result<(Vec<crate::functions::instances::Handler>, Arc<Steps>)> {
    let transform_bytes = match &config.components.transform {
        Some(path) => std::fs::read(path).with_context(|| format!("reading transform component {}", path.display()))?,
        None => components::TRANSFORM.to_vec(),
    };
    let javascript = config.message_transforms.iter().any(|m| m.javascript.is_some());
    let compiled = {
        let engine = engine.clone();
        tokio::task::spawn_blocking(move || {
            let transform = Component::new(&engine, &transform_bytes);
            let js = javascript.then(|| Component::new(&engine, components::JS_UDF));
            let functions: Vec<_> = functions::all().iter().map(|f| Component::new(&engine, f.component)).collect();
            (transform, js, functions)
        })
        .await?
    };
    let transform = compiled.0.map_err(wasm_error).context("compiling the transform component")?;
    let runner = Arc::new(
        TransformRunner::new(engine, &transform, &config.guest)
            .map_err(wasm_error)
            .context("linking the transform component")?,
    );
    let js = compiled.1.transpose().map_err(wasm_error).context("compiling the JavaScript UDF component")?;
    let steps = Arc::new(
        Steps::load(&config.message_transforms, engine, js.as_ref(), &config.guest, Arc::clone(metrics)).await?,
    );
    let mut handlers = Vec::new();
    for (function, component) in functions::all().iter().zip(compiled.2) {
        let component = component.map_err(wasm_error).with_context(|| format!("compiling {}", function.name))?;
        let imports = Imports {
            transform: TransformCtx::new(
                Arc::clone(&runner),
                Arc::clone(&steps),
                config.components.transform.is_none(),
            ),
            sink: SinkCtx::new(sink.clone()),
            state: StateCtx::new(Arc::clone(store), function.name, &config.state, Arc::clone(metrics)),
            settings: SettingsCtx::new(config.function_settings(function.name)),
        };
        let handler = FunctionInstances::new(engine, function, &component, imports, &config.guest)
            .map_err(wasm_error)
            .with_context(|| format!("linking {}", function.name))?;
        handlers.push(handler);
    }
    Ok((handlers, steps))
}

impl RunningHost {
    /// Graceful shutdown: stop accepting, let open requests finish, flush and commit what is queued.
    pub async fn shutdown(self) {
        let _ = self.stop.send(true);
        for server in self.servers {
            let _ = server.await;
        }
        self.sink.close();
        let flusher = self.flusher;
        let _ = tokio::task::spawn_blocking(move || flusher.join()).await;
    }
}
