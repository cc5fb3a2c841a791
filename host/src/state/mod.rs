//! State backends for the `state` capability: small keyed state with compare-and-swap, TTL and prefix
//! scans. Two backends behind one [`StateStore`] trait: [`embedded`] (redb under `data_dir`, durable,
//! the default) and [`redis`] (Redis/Valkey, shared by host replicas). Versions come from one
//! store-wide sequence, so a deleted and re-created key never reuses a version. What a function may see
//! of them (its own keys, within limits) is `capabilities::state`'s job.

pub mod embedded;
pub mod redis;

use std::path::Path;
use std::sync::Arc;

use anyhow::Context as _;
use serde::Deserialize;

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

/// A state backend. Keys are full keys (the capability adds each function's prefix).
#[async_trait::async_trait]
pub trait StateStore: Send + Sync {
    /// `embedded` or `redis`, for the metrics.
    fn backend(&self) -> &'static str;
    /// The live value of `key`.
    async fn get(&self, key: &str) -> Result<Option<Entry>, StateError>;
    /// Writes `value` if `key` is at version `expected` (0: absent); the new version, or `None` when
    /// another writer won.
    async fn compare_and_swap(
        &self,
        key: &str,
        expected: u64,
        value: Vec<u8>,
        ttl_ms: Option<u64>,
    ) -> Result<Option<u64>, StateError>;
    /// Deletes `key` if it is at version `expected`.
    async fn delete(&self, key: &str, expected: u64) -> Result<bool, StateError>;
    /// Up to `limit` live keys starting with `prefix`, in order.
    async fn scan(&self, prefix: &str, limit: u32) -> Result<Vec<String>, StateError>;
}

/// Opens the backend `config` names (the embedded one under `data_dir`, which must exist).
pub async fn open(config: &StateConfig, data_dir: &Path) -> anyhow::Result<Arc<dyn StateStore>> {
    Ok(match config.backend {
        StateBackend::Embedded => {
            let path = data_dir.join("state.redb");
            Arc::new(embedded::Embedded::open(&path).with_context(|| format!("opening {}", path.display()))?)
        }
        StateBackend::Redis => Arc::new(
            redis::RedisStore::connect(config)
                .await
                .with_context(|| format!("connecting to Redis at {}", redacted(&config.redis_url)))?,
        ),
    })
}

/// Where the `state` import keeps its keys.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum StateBackend {
    /// redb at `data_dir/state.redb`: durable, one host.
    #[default]
    Embedded,
    /// Redis or Valkey at `state.redis_url`: shared by host replicas.
    Redis,
}

/// The `state` import.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct StateConfig {
    /// `embedded` or `redis`.
    pub backend: StateBackend,
    /// `redis://host:port/db` (or `rediss://` for TLS), when `backend = "redis"`.
    pub redis_url: String,
    /// Prefix of every Redis key this host writes (so several deployments can share one Redis).
    pub key_prefix: String,
    /// One state call, in ms; slower is `unavailable` (the push fails, Pub/Sub redelivers).
    pub op_timeout_ms: u64,
    /// Longest key a function may use, in bytes.
    pub max_key_bytes: usize,
    /// Largest value a function may store, in bytes.
    pub max_value_bytes: usize,
}

impl StateConfig {
    /// Checks the limits.
    pub fn validate(&self) -> Result<(), String> {
        if self.op_timeout_ms == 0 || self.max_key_bytes == 0 || self.max_value_bytes == 0 {
            return Err("state.op_timeout_ms, state.max_key_bytes and state.max_value_bytes must be at least 1".into());
        }
        Ok(())
    }
}

impl Default for StateConfig {
    fn default() -> Self {
        Self {
            backend: StateBackend::Embedded,
            redis_url: "redis://127.0.0.1:6379".into(),
            key_prefix: "tributary:".into(),
            op_timeout_ms: 1_000,
            max_key_bytes: 1024,
            max_value_bytes: 4 << 20,
        }
    }
}

/// Milliseconds since the epoch, for expiry times.
/// A URL as logs may show it: any password replaced by `***`.
pub fn redacted(url: &str) -> String {
    match url::Url::parse(url) {
        Ok(mut u) if u.password().is_some() => {
            let _ = u.set_password(Some("***"));
            u.to_string()
        }
        Ok(u) => u.to_string(),
        Err(_) => "(an unparsable URL)".into(),
    }
}

fn now_ms() -> u64 {
    u64::try_from(chrono::Utc::now().timestamp_millis()).unwrap_or(0)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn redis_urls_in_logs_hide_the_password() {
        assert_eq!(redacted("redis://:s3cret@10.0.0.1:6379/0"), "redis://:***@10.0.0.1:6379/0");
        assert_eq!(redacted("rediss://user:s3cret@cache:6380"), "rediss://user:***@cache:6380");
        assert_eq!(redacted("redis://127.0.0.1:6379"), "redis://127.0.0.1:6379");
        assert!(!redacted("redis://:s3cret@[bad").contains("s3cret"));
    }

    #[tokio::test]
    async fn embedded_versions_survive_a_reopen() {
        let dir = std::env::temp_dir().join(format!("tributary-state-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(&dir).expect("dir");
        let path = dir.join("state.redb");
        let store = embedded::Embedded::open(&path).expect("open");
        let v1 = store.compare_and_swap("a/k", 0, b"one".to_vec(), None).await.expect("cas").expect("created");
        drop(store);
        let store = embedded::Embedded::open(&path).expect("reopen");
        assert_eq!(store.get("a/k").await.expect("get"), Some(Entry { value: b"one".to_vec(), version: v1 }));
        assert!(store.delete("a/k", v1).await.expect("delete"));
        let v2 = store.compare_and_swap("a/k", 0, b"two".to_vec(), None).await.expect("cas").expect("created");
        assert!(v2 > v1, "versions keep growing across a reopen and a re-creation");
        let _ = std::fs::remove_dir_all(&dir);
    }
}
