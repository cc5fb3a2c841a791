//! The embedded state store: redb (a pure-Rust, crash-safe, copy-on-write B-tree file) at
//! `data_dir/state.redb`. Every write is its own transaction, durable when `compare_and_swap` returns.
//! Expired keys read as absent and are overwritten or removed lazily.

use std::path::Path;
use std::sync::Arc;

use redb::{Database, ReadableDatabase, ReadableTable, TableDefinition};

use super::{Entry, StateError, StateStore, now_ms};

/// key → (version, expires at in ms since the epoch or 0 for never, value).
const ENTRIES: TableDefinition<&str, (u64, u64, &[u8])> = TableDefinition::new("entries");
/// `seq` → the last version handed out.
const META: TableDefinition<&str, u64> = TableDefinition::new("meta");

pub struct Embedded {
    db: Arc<Database>,
}

fn unavailable(e: impl std::fmt::Display) -> StateError {
    StateError::Unavailable(format!("embedded state store: {e}"))
}

fn live(expires_at: u64, now: u64) -> bool {
    expires_at == 0 || expires_at > now
}

impl Embedded {
    pub fn open(path: &Path) -> Result<Self, redb::Error> {
        let db = Database::create(path)?;
        let txn = db.begin_write()?;
        txn.open_table(ENTRIES)?;
        txn.open_table(META)?;
        txn.commit()?;
        Ok(Self { db: Arc::new(db) })
    }

    /// Runs blocking redb work off the async threads.
    async fn blocking<T: Send + 'static>(
        &self,
        f: impl FnOnce(&Database) -> Result<T, redb::Error> + Send + 'static,
    ) -> Result<T, StateError> {
        let db = Arc::clone(&self.db);
        tokio::task::spawn_blocking(move || f(&db)).await.map_err(unavailable)?.map_err(unavailable)
    }
}

#[async_trait::async_trait]
impl StateStore for Embedded {
    fn backend(&self) -> &'static str {
        "embedded"
    }

    async fn get(&self, key: &str) -> Result<Option<Entry>, StateError> {
        let key = key.to_owned();
        self.blocking(move |db| {
            let txn = db.begin_read()?;
            let table = txn.open_table(ENTRIES)?;
            let now = now_ms();
            Ok(table.get(key.as_str())?.and_then(|g| {
                let (version, expires_at, value) = g.value();
                live(expires_at, now).then(|| Entry { value: value.to_vec(), version })
            }))
        })
        .await
    }

    async fn compare_and_swap(
        &self,
        key: &str,
        expected: u64,
        value: Vec<u8>,
        ttl_ms: Option<u64>,
    ) -> Result<Option<u64>, StateError> {
        let key = key.to_owned();
        self.blocking(move |db| {
            let txn = db.begin_write()?;
            let now = now_ms();
            let version = {
                let mut entries = txn.open_table(ENTRIES)?;
                let current =
                    entries.get(key.as_str())?.map(|g| (g.value().0, g.value().1)).filter(|(_, exp)| live(*exp, now));
                if current.map_or(0, |(v, _)| v) != expected {
                    return Ok(None);
                }
                let mut meta = txn.open_table(META)?;
                let version = meta.get("seq")?.map_or(0, |g| g.value()) + 1;
                meta.insert("seq", version)?;
                let expires_at = ttl_ms.map_or(0, |t| now.saturating_add(t));
                entries.insert(key.as_str(), (version, expires_at, value.as_slice()))?;
                version
            };
            txn.commit()?;
            Ok(Some(version))
        })
        .await
    }

    async fn delete(&self, key: &str, expected: u64) -> Result<bool, StateError> {
        let key = key.to_owned();
        self.blocking(move |db| {
            let txn = db.begin_write()?;
            let now = now_ms();
            {
                let mut entries = txn.open_table(ENTRIES)?;
                let current =
                    entries.get(key.as_str())?.map(|g| (g.value().0, g.value().1)).filter(|(_, exp)| live(*exp, now));
                if current.map(|(v, _)| v) != Some(expected) {
                    return Ok(false);
                }
                entries.remove(key.as_str())?;
            }
            txn.commit()?;
            Ok(true)
        })
        .await
    }

    async fn scan(&self, prefix: &str, limit: u32) -> Result<Vec<String>, StateError> {
        let prefix = prefix.to_owned();
        self.blocking(move |db| {
            let txn = db.begin_read()?;
            let table = txn.open_table(ENTRIES)?;
            let now = now_ms();
            let mut keys = Vec::new();
            for item in table.range(prefix.as_str()..)? {
                let (k, v) = item?;
                let key = k.value();
                if !key.starts_with(prefix.as_str()) || keys.len() >= limit as usize {
                    break;
                }
                if live(v.value().1, now) {
                    keys.push(key.to_owned());
                }
            }
            Ok(keys)
        })
        .await
    }
}
