//! Message-transform steps (`[[message_transforms]]`): components exporting
//! `tributary:pipeline/message-transform`, run in front of the row transform on the routes they name, in
//! the order they are listed. A step is a user's JavaScript UDF file (run by the built-in `js-udf`
//! component, the file handed over as a setting) or any component file.
//!
//! Each step runs in stores of its own, like the transform: its own memory limit and CPU deadline per
//! call, no I/O. A step that throws, returns a wrong shape, runs out of time or memory refuses the
//! message (reasons `udf-*`): the function dead-letters it with stage `udf` and the push is acked. A
//! step that drops the message makes the `transform` import answer no rows (acked, nothing written).
//!
//! Files are watched ([`Steps::watch`]): a changed file is loaded into a new version, prepared on a fresh
//! instance first, and swapped in only if that worked; messages in flight finish on the version they
//! started on, so none is lost or handled twice. A file that no longer compiles keeps the previous
//! version running (logged, `tributary_udf_reloads_total{result="refused"}`).

use std::collections::{BTreeMap, HashMap};
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex, RwLock};
use std::time::{Duration, Instant, SystemTime};

use anyhow::Context as _;
use serde::Deserialize;
use wasmtime::component::{Component, Linker, ResourceTable};
use wasmtime::{Engine, Store, StoreLimits, StoreLimitsBuilder};
use wasmtime_wasi::{WasiCtx, WasiCtxView, WasiView};

use tributary_model::udf_settings;

use crate::bindings::{MessageTransformComponent, MessageTransformComponentPre, types};
use crate::capabilities::settings::{self, SettingsCtx};
use crate::engine::{self, GuestConfig};
use crate::metrics::Metrics;

/// How often step files are checked for changes.
pub const WATCH_EVERY: Duration = Duration::from_secs(1);

/// One `[[message_transforms]]` entry.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct MessageTransformConfig {
    /// The push routes the step runs on, e.g. `["/push/events"]`.
    pub routes: Vec<String>,
    /// A JavaScript UDF file (relative paths are relative to the config file).
    #[serde(default)]
    pub javascript: Option<PathBuf>,
    /// The UDF's function name (with `javascript`).
    #[serde(default)]
    pub function: Option<String>,
    /// `smt` (Pub/Sub single message transform, the default) or `dataflow` (the Dataflow template's
    /// `process(inJson)`), with `javascript`.
    #[serde(default)]
    pub style: Option<String>,
    /// Or: any component exporting `tributary:pipeline/message-transform` (world
    /// `message-transform-component`), in any language.
    #[serde(default)]
    pub component: Option<PathBuf>,
    /// Settings handed to a `component` step through `wasi:config/store`.
    #[serde(default)]
    pub settings: BTreeMap<String, String>,
    /// CPU budget of one call, in ms (default `guest.transform_timeout_ms`).
    #[serde(default)]
    pub timeout_ms: Option<u64>,
    /// Linear memory of one instance, in MiB (default and at most `guest.memory_mib`).
    #[serde(default)]
    pub memory_mib: Option<u32>,
}

impl MessageTransformConfig {
    /// The file the step is made of.
    pub fn file(&self) -> &Path {
        self.javascript.as_deref().or(self.component.as_deref()).unwrap_or(Path::new(""))
    }

    /// Resolves relative file paths against the directory of the config file.
    pub fn resolve(&mut self, base: &Path) {
        for path in [&mut self.javascript, &mut self.component].into_iter().flatten() {
            if path.is_relative() {
                *path = base.join(&*path);
            }
        }
    }

    /// Checks one entry; `push_routes` are the routes it may name.
    pub fn validate(&self, guest: &GuestConfig, push_routes: &[&str]) -> Result<(), String> {
        let file = self.file().display();
        let what = format!("[[message_transforms]] ({file})");
        match (&self.javascript, &self.component) {
            (Some(_), None) => {
                if self.function.as_deref().is_none_or(str::is_empty) {
                    return Err(format!("{what}: `function` names the UDF's function, e.g. function = \"scrub\""));
                }
                if !self.settings.is_empty() {
                    return Err(format!("{what}: `settings` are for component steps; a JavaScript step has none"));
                }
                if let Some(style) = self.style.as_deref().filter(|s| !udf_settings::STYLES.contains(s)) {
                    return Err(format!("{what}: style must be \"smt\" or \"dataflow\", got {style:?}"));
                }
            }
            (None, Some(_)) => {
                if self.function.is_some() || self.style.is_some() {
                    return Err(format!("{what}: `function` and `style` are for `javascript` steps"));
                }
            }
            _ => return Err("[[message_transforms]]: give exactly one of `javascript` or `component`".into()),
        }
        if self.routes.is_empty() {
            return Err(format!("{what}: `routes` is empty; name the push routes it runs on"));
        }
        if let Some(route) = self.routes.iter().find(|r| !push_routes.contains(&r.as_str())) {
            return Err(format!("{what}: {route:?} is not a push route (push routes: {})", push_routes.join(", ")));
        }
        if self.memory_mib.is_some_and(|m| m < 2 || m > guest.memory_mib) {
            return Err(format!("{what}: memory_mib must be between 2 and guest.memory_mib ({})", guest.memory_mib));
        }
        if self.timeout_ms == Some(0) {
            return Err(format!("{what}: timeout_ms must be at least 1"));
        }
        Ok(())
    }
}

/// What a step is made of, read from its file.
enum Kind {
    /// A JavaScript UDF run by the built-in component: the file is a setting.
    JavaScript { function: String, style: String },
    /// A component file with its own settings.
    Component { settings: BTreeMap<String, String> },
}

/// The store data of a step instance: no files, no network, no environment; its settings.
struct StepState {
    wasi: WasiCtx,
    table: ResourceTable,
    limits: StoreLimits,
    settings: SettingsCtx,
}

impl WasiView for StepState {
    fn ctx(&mut self) -> WasiCtxView<'_> {
        WasiCtxView { ctx: &mut self.wasi, table: &mut self.table }
    }
}

struct Warm {
    store: Store<StepState>,
    instance: MessageTransformComponent,
    calls: usize,
}

/// One loaded version of a step's file: the linked component, its settings, warm instances.
struct Version {
    pre: MessageTransformComponentPre<StepState>,
    settings: SettingsCtx,
    warm: Mutex<Vec<Warm>>,
}

/// The file's identity at load: a change to either means "load it again".
#[derive(Debug, Clone, PartialEq, Eq)]
struct Stamp {
    modified: Option<SystemTime>,
    len: u64,
}

fn stamp(path: &Path) -> std::io::Result<Stamp> {
    let meta = std::fs::metadata(path)?;
    Ok(Stamp { modified: meta.modified().ok(), len: meta.len() })
}

/// What a step's versions are built from: everything but the file's contents.
struct Recipe {
    /// The file as logs and metrics name it (as configured).
    label: String,
    kind: Kind,
    engine: Engine,
    /// The built-in JavaScript component, compiled once (JavaScript steps).
    js: Option<Component>,
    memory_bytes: usize,
    timeout: Duration,
}

/// One step: its current version, swapped on reload.
pub struct Step {
    file: PathBuf,
    recipe: Recipe,
    reuse: usize,
    current: RwLock<Arc<Version>>,
    loaded: Mutex<(Stamp, Vec<u8>)>,
}

/// Why a step refused a message: its rejection, or what stopped it.
fn refusal(reason: &str, message: String) -> types::Rejection {
    types::Rejection { reason: reason.to_owned(), message }
}

impl Recipe {
    /// Builds a version from the file's bytes and prepares it on a fresh instance (kept warm).
    async fn version(&self, bytes: &[u8]) -> Result<Version, String> {
        let (component, settings) = match &self.kind {
            Kind::JavaScript { function, style } => {
                let source = String::from_utf8(bytes.to_vec()).map_err(|e| format!("not UTF-8 text: {e}"))?;
                let pairs = vec![
                    (udf_settings::SOURCE.to_owned(), source),
                    (udf_settings::FUNCTION.to_owned(), function.clone()),
                    (udf_settings::STYLE.to_owned(), style.clone()),
                    (udf_settings::FILE.to_owned(), self.label.clone()),
                ];
                (self.js.clone().ok_or("the JavaScript component is missing")?, SettingsCtx::new(pairs))
            }
            Kind::Component { settings } => {
                let (engine, bytes) = (self.engine.clone(), bytes.to_vec());
                let component = tokio::task::spawn_blocking(move || Component::new(&engine, &bytes))
                    .await
                    .map_err(|e| e.to_string())?
                    .map_err(|e| format!("compiling the component: {e:#}"))?;
                let pairs = settings.iter().map(|(k, v)| (k.clone(), v.clone())).collect();
                (component, SettingsCtx::new(pairs))
            }
        };
        let pre = link(&self.engine, &component).map_err(|e| format!("linking the component: {e:#}"))?;
        let version = Version { pre, settings, warm: Mutex::default() };
        let warm = self.instantiate(&version).await.map_err(|e| format!("{e:#}"))?;
        if let Ok(mut pool) = version.warm.lock() {
            pool.push(warm);
        }
        Ok(version)
    }

    /// A fresh instance of `version`, prepared (a step compiles its script here).
    async fn instantiate(&self, version: &Version) -> anyhow::Result<Warm> {
        let state = StepState {
            wasi: WasiCtx::builder().inherit_stderr().build(),
            table: ResourceTable::new(),
            limits: StoreLimitsBuilder::new()
                .memory_size(self.memory_bytes)
                .instances(16)
                .trap_on_grow_failure(true)
                .build(),
            settings: version.settings.clone(),
        };
        let mut store = Store::new(&self.engine, state);
        store.limiter(|s| &mut s.limits);
        // Preparing (compiling a script) gets the call budget ten times over.
        store.set_epoch_deadline(engine::ticks(self.timeout.saturating_mul(10)));
        let instance = version.pre.instantiate_async(&mut store).await.map_err(crate::start::wasm_error)?;
        instance
            .tributary_pipeline_message_transform()
            .call_prepare(&mut store)
            .await
            .map_err(crate::start::wasm_error)?
            .map_err(anyhow::Error::msg)?;
        Ok(Warm { store, instance, calls: 0 })
    }

    fn trapped(&self, trap: &wasmtime::Error) -> types::Rejection {
        let text = format!("{trap:#}");
        if matches!(trap.downcast_ref::<wasmtime::Trap>(), Some(wasmtime::Trap::Interrupt)) {
            refusal("udf-timeout", format!("{}: ran past its deadline of {} ms", self.label, self.timeout.as_millis()))
        } else if text.contains("growing memory") {
            refusal("udf-memory", format!("{}: ran out of memory (limit {} MiB)", self.label, self.memory_bytes >> 20))
        } else {
            refusal("udf-error", format!("{}: the step trapped: {text}", self.label))
        }
    }
}

impl Step {
    /// Loads a step at start; any problem (file, compile error with its line) is an error naming the file.
    async fn load(
        config: &MessageTransformConfig,
        engine: &Engine,
        js: &Component,
        guest: &GuestConfig,
    ) -> anyhow::Result<Self> {
        let kind = match (&config.javascript, &config.function) {
            (Some(_), Some(function)) => Kind::JavaScript {
                function: function.clone(),
                style: config.style.clone().unwrap_or_else(|| "smt".into()),
            },
            _ => Kind::Component { settings: config.settings.clone() },
        };
        let file = config.file().to_path_buf();
        let memory_mib = config.memory_mib.unwrap_or(guest.memory_mib);
        let recipe = Recipe {
            label: file.display().to_string(),
            js: matches!(kind, Kind::JavaScript { .. }).then(|| js.clone()),
            kind,
            engine: engine.clone(),
            memory_bytes: usize::try_from(memory_mib).unwrap_or(usize::MAX).saturating_mul(1 << 20),
            timeout: config.timeout_ms.map_or(guest.transform_timeout(), Duration::from_millis),
        };
        let read = || format!("reading message transform {}", file.display());
        let stamp = stamp(&file).with_context(read)?;
        let bytes = std::fs::read(&file).with_context(read)?;
        let version =
            recipe.version(&bytes).await.map_err(|e| anyhow::anyhow!("message transform {}: {e}", recipe.label))?;
        Ok(Self {
            file,
            recipe,
            reuse: guest.instance_reuse,
            current: RwLock::new(Arc::new(version)),
            loaded: Mutex::new((stamp, bytes)),
        })
    }

    /// Applies the step to one message: `Ok(None)` drops it, `Err` refuses it (`udf-*`).
    pub async fn apply(&self, msg: &types::Message) -> Result<Option<types::Message>, types::Rejection> {
        let version = Arc::clone(&self.current.read().unwrap_or_else(std::sync::PoisonError::into_inner));
        let warm = version.warm.lock().ok().and_then(|mut w| w.pop());
        let mut warm =
            match warm {
                Some(w) => w,
                None => self.recipe.instantiate(&version).await.map_err(|e| {
                    refusal("udf-error", format!("{}: starting the step failed: {e:#}", self.recipe.label))
                })?,
            };
        warm.store.set_epoch_deadline(engine::ticks(self.recipe.timeout));
        let called = warm.instance.tributary_pipeline_message_transform().call_apply(&mut warm.store, msg).await;
        let answer = match called {
            Ok(answer) => answer,
            // A trapped instance is dropped here, never reused.
            Err(trap) => return Err(self.recipe.trapped(&trap)),
        };
        warm.calls += 1;
        if warm.calls < self.reuse
            && let Ok(mut pool) = version.warm.lock()
        {
            pool.push(warm);
        }
        let mut out = answer?;
        if let Some(kept) = out.as_mut() {
            // A step rewrites data and attributes only: the message stays the same message.
            kept.id.clone_from(&msg.id);
            kept.publish_time.clone_from(&msg.publish_time);
            kept.ordering_key.clone_from(&msg.ordering_key);
            kept.subscription.clone_from(&msg.subscription);
            kept.delivery_attempt = msg.delivery_attempt;
        }
        Ok(out)
    }

    /// Loads the file again if it changed; a version that does not prepare is refused and the current
    /// one keeps running. `Some(result)` when the file had changed.
    async fn reload_if_changed(&self) -> Option<Result<(), String>> {
        let now = stamp(&self.file).ok()?;
        let bytes = {
            let loaded = self.loaded.lock().ok()?;
            if loaded.0 == now {
                return None;
            }
            let bytes = std::fs::read(&self.file).ok()?;
            if bytes == loaded.1 {
                drop(loaded);
                if let Ok(mut loaded) = self.loaded.lock() {
                    loaded.0 = now;
                }
                return None;
            }
            bytes
        };
        // Remembered whatever the outcome: a refused version is not retried until the file changes again.
        if let Ok(mut loaded) = self.loaded.lock() {
            *loaded = (now, bytes.clone());
        }
        Some(match self.recipe.version(&bytes).await {
            Ok(version) => {
                *self.current.write().unwrap_or_else(std::sync::PoisonError::into_inner) = Arc::new(version);
                Ok(())
            }
            Err(e) => Err(e),
        })
    }
}

/// Links a message-transform component: WASI (Rust's std and CPython need wasi:cli and wasi:io; the
/// context grants nothing) and `wasi:config/store` for its settings.
fn link(engine: &Engine, component: &Component) -> wasmtime::Result<MessageTransformComponentPre<StepState>> {
    let mut linker = Linker::new(engine);
    wasmtime_wasi::p2::add_to_linker_async(&mut linker)?;
    settings::add_to_linker(&mut linker, |s: &mut StepState| &mut s.settings)?;
    MessageTransformComponentPre::new(linker.instantiate_pre(component)?)
}

/// Every step, by route, in the configured order.
#[derive(Default)]
pub struct Steps {
    all: Vec<Arc<Step>>,
    by_route: HashMap<String, Vec<Arc<Step>>>,
    metrics: Option<Arc<Metrics>>,
}

impl Steps {
    /// Loads every configured step (the built-in JavaScript component is compiled once for all).
    pub async fn load(
        configs: &[MessageTransformConfig],
        engine: &Engine,
        js: Option<&Component>,
        guest: &GuestConfig,
        metrics: Arc<Metrics>,
    ) -> anyhow::Result<Self> {
        let mut steps = Self { metrics: Some(metrics), ..Self::default() };
        for config in configs {
            let js = js.context("the JavaScript message-transform component was not compiled")?;
            let step = Arc::new(Step::load(config, engine, js, guest).await?);
            tracing::info!(file = %step.recipe.label, routes = ?config.routes, "message transform loaded");
            for route in &config.routes {
                steps.by_route.entry(route.clone()).or_default().push(Arc::clone(&step));
            }
            steps.all.push(step);
        }
        Ok(steps)
    }

    pub fn is_empty(&self) -> bool {
        self.all.is_empty()
    }

    /// Whether `route` has any step.
    pub fn has_steps(&self, route: &str) -> bool {
        self.by_route.contains_key(route)
    }

    /// Runs `route`'s steps on `msg`: `Ok(None)` when one dropped it, `Err` when one refused it. A
    /// route without steps gets its message back as it was.
    pub async fn run(&self, route: &str, msg: types::Message) -> Result<Option<types::Message>, types::Rejection> {
        let Some(steps) = self.by_route.get(route) else { return Ok(Some(msg)) };
        let started = Instant::now();
        let mut current = msg;
        let mut stopped = None;
        for step in steps {
            match step.apply(&current).await {
                Ok(Some(next)) => current = next,
                Ok(None) => {
                    stopped = Some(("dropped", Ok(None)));
                    break;
                }
                Err(rejection) => {
                    stopped = Some(("failed", Err(rejection)));
                    break;
                }
            }
        }
        let (label, result) = stopped.unwrap_or(("passed", Ok(Some(current))));
        if let Some(metrics) = &self.metrics {
            metrics.udf(route, label, started.elapsed().as_secs_f64());
        }
        result
    }

    /// Checks every step's file each [`WATCH_EVERY`] until `stopped`, reloading the changed ones.
    pub async fn watch(self: Arc<Self>, mut stopped: tokio::sync::watch::Receiver<bool>) {
        if self.all.is_empty() {
            return;
        }
        loop {
            tokio::select! {
                _ = stopped.changed() => return,
                () = tokio::time::sleep(WATCH_EVERY) => {}
            }
            for step in &self.all {
                let Some(result) = step.reload_if_changed().await else { continue };
                let label = match result {
                    Ok(()) => {
                        tracing::info!(file = %step.recipe.label, "message transform reloaded");
                        "reloaded"
                    }
                    Err(error) => {
                        tracing::error!(file = %step.recipe.label, %error, "message transform changed but does not load: the previous version keeps running");
                        "refused"
                    }
                };
                if let Some(metrics) = &self.metrics {
                    metrics.udf_reload(&step.recipe.label, label);
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse(text: &str) -> MessageTransformConfig {
        toml::from_str(text).expect("a step")
    }

    const ROUTES: [&str; 2] = ["/push/events", "/push/sensors"];

    #[test]
    fn a_javascript_step_needs_a_function_and_a_known_style_and_push_routes() {
        let guest = GuestConfig::default();
        let ok = parse("routes = [\"/push/events\"]\njavascript = \"udfs/a.js\"\nfunction = \"scrub\"\n");
        assert_eq!(ok.validate(&guest, &ROUTES), Ok(()));
        let cases = [
            ("routes = [\"/push/events\"]\njavascript = \"a.js\"\n", "`function` names"),
            (
                "routes = [\"/push/events\"]\njavascript = \"a.js\"\nfunction = \"f\"\nstyle = \"beam\"\n",
                "style must be",
            ),
            ("routes = [\"/push/events/tick\"]\njavascript = \"a.js\"\nfunction = \"f\"\n", "is not a push route"),
            ("routes = []\njavascript = \"a.js\"\nfunction = \"f\"\n", "`routes` is empty"),
            ("routes = [\"/push/events\"]\n", "exactly one of"),
            (
                "routes = [\"/push/events\"]\njavascript = \"a.js\"\ncomponent = \"b.wasm\"\nfunction = \"f\"\n",
                "exactly one of",
            ),
            ("routes = [\"/push/events\"]\ncomponent = \"b.wasm\"\nfunction = \"f\"\n", "are for `javascript` steps"),
            ("routes = [\"/push/events\"]\njavascript = \"a.js\"\nfunction = \"f\"\nmemory_mib = 4096\n", "memory_mib"),
            ("routes = [\"/push/events\"]\njavascript = \"a.js\"\nfunction = \"f\"\ntimeout_ms = 0\n", "timeout_ms"),
        ];
        for (text, expected) in cases {
            let error = parse(text).validate(&guest, &ROUTES).expect_err(text);
            assert!(error.contains(expected), "{text}: {error}");
        }
        assert!(toml::from_str::<MessageTransformConfig>("routes = []\njs = \"a.js\"\n").is_err(), "unknown keys");
    }

    #[test]
    fn files_are_relative_to_the_config_file() {
        let mut step = parse("routes = [\"/push/events\"]\njavascript = \"udfs/a.js\"\nfunction = \"f\"\n");
        step.resolve(Path::new("/etc/tributary"));
        assert_eq!(step.file(), Path::new("/etc/tributary/udfs/a.js"));
        let mut absolute = parse("routes = [\"/push/events\"]\ncomponent = \"/opt/step.wasm\"\n");
        absolute.resolve(Path::new("/etc/tributary"));
        assert_eq!(absolute.file(), Path::new("/opt/step.wasm"));
    }
}
