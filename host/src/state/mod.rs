//! The `state` capability: small keyed state with compare-and-swap, TTL and prefix scans, for
//! functions that remember something between pushes (`anomaly-check`).
//!
//! Two backends behind one [`Store`]: [`embedded`] (redb under `data_dir`, durable, the default) and
//! [`redis`] (Redis/Valkey, shared by host replicas). Each function sees its own keys only
//! ([`Scoped`] prefixes them with the function's name) and never learns which backend serves it.
//! Versions come from one store-wide sequence, so a deleted and re-created key never reuses a version.

pub mod embedded;
pub mod redis;

use std::path::Path;
use std::sync::Arc;
use std::time::Instant;

use anyhow::Context as _;

use crate::config::{StateBackend, StateConfig};
use crate::metrics::Metrics;

/// Why a state call failed.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum StateError {
    /// The backend failed or timed out; nothing was written.
    #[error("{0}")]
    Unavailable(String),
    /// The call can never succeed (over a limit).
    #[error("{0}")]
    Invalid(String),
}

/// A value and its version.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Entry {
    pub value: Vec<u8>,
    pub version: u64,
}

/// The configured backend.
pub enum Store {
    Embedded(embedded::Embedded),
    Redis(redis::RedisStore),
}

impl Store {
    /// Opens the backend `config` names.
    pub async fn open(config: &StateConfig, data_dir: &Path) -> anyhow::Result<Self> {
        Ok(match config.backend {
            StateBackend::Embedded => {
                let path = data_dir.join("state.redb");
                Store::Embedded(embedded::Embedded::open(&path).with_context(|| format!("opening {}", path.display()))?)
            }
            StateBackend::Redis => Store::Redis(
                redis::RedisStore::connect(config)
                    .await
                    .with_context(|| format!("connecting to Redis at {}", config.redis_url))?,
            ),
        })
    }

    fn backend(&self) -> &'static str {
        match self {
            Store::Embedded(_) => "embedded",
            Store::Redis(_) => "redis",
        }
    }

    pub async fn get(&self, key: &str) -> Result<Option<Entry>, StateError> {
        match self {
            Store::Embedded(s) => s.get(key).await,
            Store::Redis(s) => s.get(key).await,
        }
    }

    pub async fn compare_and_swap(
        &self,
        key: &str,
        expected: u64,
        value: Vec<u8>,
        ttl_ms: Option<u64>,
    ) -> Result<Option<u64>, StateError> {
        match self {
            Store::Embedded(s) => s.compare_and_swap(key, expected, value, ttl_ms).await,
            Store::Redis(s) => s.compare_and_swap(key, expected, value, ttl_ms).await,
        }
    }

    pub async fn delete(&self, key: &str, expected: u64) -> Result<bool, StateError> {
        match self {
            Store::Embedded(s) => s.delete(key, expected).await,
            Store::Redis(s) => s.delete(key, expected).await,
        }
    }

    pub async fn scan(&self, prefix: &str, limit: u32) -> Result<Vec<String>, StateError> {
        match self {
            Store::Embedded(s) => s.scan(prefix, limit).await,
            Store::Redis(s) => s.scan(prefix, limit).await,
        }
    }
}

/// One function's view of the store: its keys only, within the limits, counted in the metrics.
#[derive(Clone)]
pub struct Scoped {
    store: Arc<Store>,
    prefix: String,
    max_key_bytes: usize,
    max_value_bytes: usize,
    metrics: Arc<Metrics>,
}

impl Scoped {
    pub fn new(store: Arc<Store>, function: &str, config: &StateConfig, metrics: Arc<Metrics>) -> Self {
        Self {
            store,
            prefix: format!("{function}/"),
            max_key_bytes: config.max_key_bytes,
            max_value_bytes: config.max_value_bytes,
            metrics,
        }
    }

    fn key(&self, key: &str) -> Result<String, StateError> {
        if key.len() > self.max_key_bytes {
            return Err(StateError::Invalid(format!(
                "key of {} bytes is over the limit of {} (state.max_key_bytes)",
                key.len(),
                self.max_key_bytes
            )));
        }
        Ok(format!("{}{key}", self.prefix))
    }

    fn observe<T>(&self, op: &'static str, started: Instant, result: &Result<T, StateError>) {
        let outcome = match result {
            Ok(_) => "ok",
            Err(StateError::Unavailable(_)) => "unavailable",
            Err(StateError::Invalid(_)) => "invalid",
        };
        self.metrics.state_op(self.store.backend(), op, outcome, started.elapsed().as_secs_f64());
        if let Err(StateError::Unavailable(e)) = result {
            tracing::warn!(op, error = %e, "state store unavailable");
        }
    }

    /// Runs one store call, timed and counted.
    async fn timed<T>(
        &self,
        op: &'static str,
        call: impl Future<Output = Result<T, StateError>>,
    ) -> Result<T, StateError> {
        let started = Instant::now();
        let result = call.await;
        self.observe(op, started, &result);
        result
    }

    pub async fn get(&self, key: &str) -> Result<Option<Entry>, StateError> {
        self.timed("get", async { self.store.get(&self.key(key)?).await }).await
    }

    pub async fn compare_and_swap(
        &self,
        key: &str,
        expected: u64,
        value: Vec<u8>,
        ttl_ms: Option<u64>,
    ) -> Result<Option<u64>, StateError> {
        let result = self
            .timed("cas", async {
                if value.len() > self.max_value_bytes {
                    return Err(StateError::Invalid(format!(
                        "value of {} bytes is over the limit of {} (state.max_value_bytes)",
                        value.len(),
                        self.max_value_bytes
                    )));
                }
                self.store.compare_and_swap(&self.key(key)?, expected, value, ttl_ms.filter(|&t| t > 0)).await
            })
            .await;
        if let Ok(None) = result {
            self.metrics.state_conflict(self.store.backend());
        }
        result
    }

    pub async fn delete(&self, key: &str, expected: u64) -> Result<bool, StateError> {
        self.timed("delete", async { self.store.delete(&self.key(key)?, expected).await }).await
    }

    pub async fn scan(&self, prefix: &str, limit: u32) -> Result<Vec<String>, StateError> {
        self.timed("scan", async {
            let keys = self.store.scan(&self.key(prefix)?, limit).await?;
            Ok(keys.into_iter().filter_map(|k| k.strip_prefix(&self.prefix).map(str::to_owned)).collect())
        })
        .await
    }
}

/// Milliseconds since the epoch, for expiry times.
fn now_ms() -> u64 {
    u64::try_from(chrono::Utc::now().timestamp_millis()).unwrap_or(0)
}

/// Links the `state` import once, at start.
pub fn add_to_linker(linker: &mut wasmtime::component::Linker<crate::push::PushState>) -> wasmtime::Result<()> {
    use wasmtime::component::HasSelf;
    bindings::add_to_linker::<crate::push::PushState, HasSelf<crate::push::PushState>>(linker, |s| s)
}

use crate::bindings::state as bindings;

fn to_wit(e: StateError) -> bindings::StateError {
    match e {
        StateError::Unavailable(m) => bindings::StateError::Unavailable(m),
        StateError::Invalid(m) => bindings::StateError::Invalid(m),
    }
}

impl bindings::Host for crate::push::PushState {
    async fn get(&mut self, key: String) -> Result<Option<bindings::Entry>, bindings::StateError> {
        let entry = self.state.get(&key).await.map_err(to_wit)?;
        Ok(entry.map(|e| bindings::Entry { value: e.value, version: e.version }))
    }

    async fn compare_and_swap(
        &mut self,
        key: String,
        expected: u64,
        value: Vec<u8>,
        ttl_ms: Option<u64>,
    ) -> Result<Option<u64>, bindings::StateError> {
        self.state.compare_and_swap(&key, expected, value, ttl_ms).await.map_err(to_wit)
    }

    async fn delete(&mut self, key: String, expected: u64) -> Result<bool, bindings::StateError> {
        self.state.delete(&key, expected).await.map_err(to_wit)
    }

    async fn scan(&mut self, prefix: String, limit: u32) -> Result<Vec<String>, bindings::StateError> {
        self.state.scan(&prefix, limit).await.map_err(to_wit)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn embedded_versions_survive_a_reopen() {
        let dir = std::env::temp_dir().join(format!("tributary-state-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(&dir).expect("dir");
        let path = dir.join("state.redb");
        let store = Store::Embedded(embedded::Embedded::open(&path).expect("open"));
        let v1 = store.compare_and_swap("a/k", 0, b"one".to_vec(), None).await.expect("cas").expect("created");
        drop(store);
        let store = Store::Embedded(embedded::Embedded::open(&path).expect("reopen"));
        assert_eq!(store.get("a/k").await.expect("get"), Some(Entry { value: b"one".to_vec(), version: v1 }));
        assert!(store.delete("a/k", v1).await.expect("delete"));
        let v2 = store.compare_and_swap("a/k", 0, b"two".to_vec(), None).await.expect("cas").expect("created");
        assert!(v2 > v1, "versions keep growing across a reopen and a re-creation");
        let _ = std::fs::remove_dir_all(&dir);
    }
}
