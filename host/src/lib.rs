//! The Tributary host: serves the function routes, runs the wasm components, provides their imports
//! (`sink`, `transform`, `state`, `wasi:config/store`) and group-commits their rows into the warehouse.
//!
//! Map: [`config`] → [`engine`] (one wasmtime engine) → [`push`] (function instances) with the
//! capabilities [`transform`], [`sink`], [`state`] and [`settings`] → [`warehouse`]. [`server`] is the
//! HTTP front (and `tick` here the timer), [`admin`] the loopback admin routes, [`native`] the
//! benchmark's native baseline, [`load`] the bulk catalog load.

pub mod admin;
pub mod bench;
pub mod bindings;
pub mod client;
pub mod config;
pub mod engine;
pub mod insert_api;
pub mod load;
pub mod metrics;
pub mod native;
pub mod push;
pub mod push_auth;
pub mod server;
pub mod settings;
pub mod sink;
pub mod state;
pub mod transform;
pub mod warehouse;

use std::net::SocketAddr;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use anyhow::Context as _;
use tokio::sync::watch;
use tokio::task::JoinHandle;
use wasmtime::component::Component;

use crate::admin::Admin;
use crate::config::{Backend, Config};
use crate::engine::EpochTicker;
use crate::metrics::Metrics;
use crate::server::{App, Pusher};
use crate::sink::{FlusherThread, GroupCommit};
use crate::warehouse::{FaultSwitch, Warehouse, bigquery::BigQuery, duckdb::DuckDb};

/// The components built from this checkout (see `build.rs`), embedded in the binary.
pub mod components {
    /// `functions/pubsub-push`.
    pub const PUBSUB_PUSH: &[u8] = include_bytes!(env!("TRIBUTARY_PUBSUB_PUSH_WASM"));
    /// `functions/transform`.
    pub const TRANSFORM: &[u8] = include_bytes!(env!("TRIBUTARY_TRANSFORM_WASM"));
    /// `functions/anomaly-check`.
    pub const ANOMALY_CHECK: &[u8] = include_bytes!(env!("TRIBUTARY_ANOMALY_CHECK_WASM"));
    /// `functions/recommend-trigger`.
    pub const RECOMMEND_TRIGGER: &[u8] = include_bytes!(env!("TRIBUTARY_RECOMMEND_TRIGGER_WASM"));

    /// The stateful functions' components, by name (see `server::FUNCTIONS`).
    pub fn stateful(name: &str) -> Option<&'static [u8]> {
        match name {
            "anomaly-check" => Some(ANOMALY_CHECK),
            "recommend-trigger" => Some(RECOMMEND_TRIGGER),
            _ => None,
        }
    }
    /// `functions/sink-http`, the sink adapter for hosts other than this one: a file path (the host does
    /// not run it; portability tests and `wasmtime serve` compositions do).
    pub const SINK_HTTP_PATH: &str = env!("TRIBUTARY_SINK_HTTP_WASM");
    /// `functions/transform` as a file (for compositions).
    pub const TRANSFORM_PATH: &str = env!("TRIBUTARY_TRANSFORM_WASM");
    /// `functions/pubsub-push` as a file (for compositions).
    pub const PUBSUB_PUSH_PATH: &str = env!("TRIBUTARY_PUBSUB_PUSH_WASM");
    /// TEST FIXTURE `tests/components/chaos-transform`: a file path, for `components.transform`.
    pub const CHAOS_TRANSFORM_PATH: &str = env!("TRIBUTARY_CHAOS_TRANSFORM_WASM");
}

/// wasmtime has its own error type; it converts through `Box<dyn Error>`.
fn wasm_error(e: wasmtime::Error) -> anyhow::Error {
    anyhow::Error::from_boxed(e.into_boxed_dyn_error())
}

/// Which implementation serves the push routes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Mode {
    /// The wasm components (the product).
    Wasm,
    /// The same logic compiled into the host (benchmark baseline).
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

/// Starts a host: opens the warehouse, compiles the components, binds both listeners.
pub async fn start(config: &Config, mode: Mode) -> anyhow::Result<RunningHost> {
    config.validate()?;
    let metrics = Metrics::new();
    let (warehouse, reader): (Box<dyn Warehouse>, _) = match config.sink.backend {
        Backend::Embedded => {
            let db = DuckDb::open(&config.data_dir).context("opening the embedded warehouse")?;
            let reader = db.reader()?;
            (Box::new(db), Some(Mutex::new(reader)))
        }
        backend => {
            let (bq, dir, m) = (config.bigquery.clone(), config.data_dir.clone(), Arc::clone(&metrics));
            let warehouse = tokio::task::spawn_blocking(move || BigQuery::connect(&bq, backend, &dir, m))
                .await?
                .with_context(|| format!("connecting to BigQuery ({:?})", config.sink.backend))?;
            tracing::info!(backend = ?backend, project = %config.bigquery.project, dataset = %config.bigquery.dataset, "sink writes to BigQuery");
            (Box::new(warehouse), None)
        }
    };
    let (warehouse, fault): (Box<dyn Warehouse>, _) = if config.testing.fault_injection {
        let (switch, flag) = FaultSwitch::new(warehouse);
        tracing::warn!("testing.fault_injection is on: PUT /faults/sink on the admin listener fails warehouse writes");
        (Box::new(switch), Some(flag))
    } else {
        (warehouse, None)
    };
    let (sink, flusher) = GroupCommit::start(warehouse, config.sink.clone(), Arc::clone(&metrics));

    let store = Arc::new(state::Store::open(&config.state, &config.data_dir).await.context("opening the state store")?);
    let caps = |function: &str, transform: Arc<transform::TransformRunner>| push::Capabilities {
        transform,
        sink: sink.clone(),
        state: state::Scoped::new(Arc::clone(&store), function, &config.state, Arc::clone(&metrics)),
        settings: Arc::new(settings::Settings(config.function_settings(function))),
    };

    let (pusher, functions, ticker) = match mode {
        Mode::Native => (Pusher::Native(native::NativePush { sink: sink.clone() }), Vec::new(), None),
        Mode::Wasm => {
            let engine = engine::build(&config.guest).map_err(wasm_error)?;
            let transform_bytes = match &config.components.transform {
                Some(path) => {
                    std::fs::read(path).with_context(|| format!("reading transform component {}", path.display()))?
                }
                None => components::TRANSFORM.to_vec(),
            };
            let compiled = {
                let engine = engine.clone();
                tokio::task::spawn_blocking(move || {
                    let push = Component::new(&engine, components::PUBSUB_PUSH);
                    let transform = Component::new(&engine, &transform_bytes);
                    let functions: Vec<_> = server::FUNCTIONS
                        .iter()
                        .map(|(name, _)| {
                            (*name, components::stateful(name).map(|bytes| Component::new(&engine, bytes)))
                        })
                        .collect();
                    (push, transform, functions)
                })
                .await?
            };
            let push_component = compiled.0.map_err(wasm_error).context("compiling pubsub-push")?;
            let transform_component = compiled.1.map_err(wasm_error).context("compiling the transform component")?;
            let runner = Arc::new(
                transform::TransformRunner::new(&engine, &transform_component, &config.guest)
                    .map_err(wasm_error)
                    .context("linking the transform component")?,
            );
            let handler =
                push::PushRoute::new(&engine, &push_component, caps("pubsub-push", Arc::clone(&runner)), &config.guest)
                    .map_err(wasm_error)
                    .context("linking pubsub-push")?;
            let mut functions = Vec::new();
            for ((name, compiled), (_, routes)) in compiled.2.into_iter().zip(server::FUNCTIONS) {
                let component = compiled
                    .with_context(|| format!("no component built for {name}"))?
                    .map_err(wasm_error)
                    .with_context(|| format!("compiling {name}"))?;
                let handler = push::PushRoute::new(&engine, &component, caps(name, Arc::clone(&runner)), &config.guest)
                    .map_err(wasm_error)
                    .with_context(|| format!("linking {name}"))?;
                functions.push(server::Function { routes, handler });
            }
            (Pusher::Wasm(handler), functions, Some(EpochTicker::start(engine)))
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
    let in_flight = tokio::sync::Semaphore::new(usize::try_from(config.guest.max_instances).unwrap_or(usize::MAX));
    let timer = !functions.is_empty() && config.timers.tick_ms > 0;
    let push_auth = push_auth::PushAuth::new(&config.push_auth, Arc::clone(&metrics))?;
    let app = Arc::new(App {
        push_auth,
        pusher,
        functions,
        metrics: Arc::clone(&metrics),
        in_flight,
        sink: sink.clone(),
        embedded: config.sink.backend == Backend::Embedded,
    });
    let admin = Arc::new(Admin { reader, fault });
    let mut servers = vec![
        tokio::spawn(server::serve(listener, app, stopped.clone(), drain)),
        tokio::spawn(server::serve(admin_listener, admin, stopped.clone(), Duration::from_secs(5))),
    ];
    if timer {
        servers.push(tokio::spawn(tick(addr, Duration::from_millis(config.timers.tick_ms), stopped)));
    }
    Ok(RunningHost { addr, admin_addr, metrics, stop, servers, sink, flusher, _ticker: ticker })
}

/// The timer contract: POSTs every tick route of the host's own listener each `every`, the way an
/// outside scheduler would, until `stop`. A tick that fails is logged; the next one tries again.
async fn tick(addr: SocketAddr, every: Duration, mut stop: watch::Receiver<bool>) {
    let mut interval = tokio::time::interval(every);
    interval.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    interval.tick().await;
    loop {
        tokio::select! {
            _ = interval.tick() => {}
            _ = stop.wait_for(|s| *s) => return,
        }
        for route in server::TICK_ROUTES {
            match tokio::time::timeout(every.max(Duration::from_secs(10)), client::post(addr, route, &[], "")).await {
                Ok(Ok((status, _))) if (200..300).contains(&status) => {}
                Ok(Ok((status, body))) => {
                    tracing::warn!(route, status, body = %String::from_utf8_lossy(&body), "timer tick failed")
                }
                Ok(Err(e)) => tracing::warn!(route, error = %e, "timer tick failed"),
                Err(_) => tracing::warn!(route, "timer tick timed out"),
            }
        }
    }
}

impl RunningHost {
    /// Graceful shutdown: stop accepting, let open pushes finish, flush and commit what is queued.
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
