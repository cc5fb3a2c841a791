//! The `state` capability: one function's view of the state store — its own keys only (prefixed with
//! the function's name), within `state.max_key_bytes` / `state.max_value_bytes`, every call timed and
//! counted (`tributary_state_*`). The function never learns which backend serves it.

use std::sync::Arc;
use std::time::Instant;

use wasmtime::component::{HasSelf, Linker};

use crate::bindings::state as wit;
use crate::metrics::Metrics;
use crate::state::{Entry, StateConfig, StateError, StateStore};

/// One function's view of the store.
#[derive(Clone)]
pub struct StateCtx {
    store: Arc<dyn StateStore>,
    prefix: String,
    max_key_bytes: usize,
    max_value_bytes: usize,
    metrics: Arc<Metrics>,
}

impl StateCtx {
    pub fn new(store: Arc<dyn StateStore>, function: &str, config: &StateConfig, metrics: Arc<Metrics>) -> Self {
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

    /// Runs one store call, timed and counted.
    async fn timed<T>(
        &self,
        op: &'static str,
        call: impl Future<Output = Result<T, StateError>>,
    ) -> Result<T, StateError> {
        let started = Instant::now();
        let result = call.await;
        let outcome = match &result {
            Ok(_) => "ok",
            Err(StateError::Unavailable(_)) => "unavailable",
            Err(StateError::Invalid(_)) => "invalid",
        };
        self.metrics.state_op(self.store.backend(), op, outcome, started.elapsed().as_secs_f64());
        if let Err(StateError::Unavailable(e)) = &result {
            tracing::warn!(op, error = %e, "state store unavailable");
        }
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

/// Links the `state` import into any store whose data holds a [`StateCtx`] (`get` finds it).
pub fn add_to_linker<T: Send + 'static>(
    linker: &mut Linker<T>,
    get: fn(&mut T) -> &mut StateCtx,
) -> wasmtime::Result<()> {
    wit::add_to_linker::<T, HasSelf<StateCtx>>(linker, get)
}

fn to_wit(e: StateError) -> wit::StateError {
    match e {
        StateError::Unavailable(m) => wit::StateError::Unavailable(m),
        StateError::Invalid(m) => wit::StateError::Invalid(m),
    }
}

impl wit::Host for StateCtx {
    async fn get(&mut self, key: String) -> Result<Option<wit::Entry>, wit::StateError> {
        let entry = StateCtx::get(self, &key).await.map_err(to_wit)?;
        Ok(entry.map(|e| wit::Entry { value: e.value, version: e.version }))
    }

    async fn compare_and_swap(
        &mut self,
        key: String,
        expected: u64,
        value: Vec<u8>,
        ttl_ms: Option<u64>,
    ) -> Result<Option<u64>, wit::StateError> {
        StateCtx::compare_and_swap(self, &key, expected, value, ttl_ms).await.map_err(to_wit)
    }

    async fn delete(&mut self, key: String, expected: u64) -> Result<bool, wit::StateError> {
        StateCtx::delete(self, &key, expected).await.map_err(to_wit)
    }

    async fn scan(&mut self, prefix: String, limit: u32) -> Result<Vec<String>, wit::StateError> {
        StateCtx::scan(self, &prefix, limit).await.map_err(to_wit)
    }
}
