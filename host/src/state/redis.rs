//! The Redis/Valkey state store, for several host replicas sharing state. A key is a hash
//! `{key_prefix}{function}/{key}` with fields `v` (value) and `n` (version); versions come from one
//! counter `{key_prefix}__seq`. Compare-and-swap and delete are Lua scripts, so each is atomic on the
//! server; TTLs are Redis expiries. Every call has `state.op_timeout_ms`; a timeout or a lost
//! connection is `Unavailable` (the push fails and Pub/Sub redelivers), and the connection manager
//! reconnects. Durability is Redis's own (run it with `appendonly yes`). The script touches two keys,
//! so a Redis Cluster needs them in one slot: use a hash tag in `key_prefix` (e.g. `{tributary}:`).

use std::time::Duration;

use redis::Script;
use redis::aio::ConnectionManager;

use super::{Entry, StateConfig, StateError, StateStore};

const CAS: &str = r"
local cur = redis.call('HGET', KEYS[1], 'n')
if (cur or '0') ~= ARGV[1] then return 0 end
local n = redis.call('INCR', KEYS[2])
redis.call('HSET', KEYS[1], 'v', ARGV[2], 'n', n)
if ARGV[3] ~= '0' then redis.call('PEXPIRE', KEYS[1], ARGV[3]) else redis.call('PERSIST', KEYS[1]) end
return n
";

const DELETE: &str = r"
if redis.call('HGET', KEYS[1], 'n') == ARGV[1] then return redis.call('DEL', KEYS[1]) end
return 0
";

pub struct RedisStore {
    conn: ConnectionManager,
    prefix: String,
    timeout: Duration,
    cas: Script,
    delete: Script,
}

fn unavailable(e: impl std::fmt::Display) -> StateError {
    StateError::Unavailable(format!("redis: {e}"))
}

impl RedisStore {
    pub async fn connect(config: &StateConfig) -> Result<Self, redis::RedisError> {
        let client = redis::Client::open(config.redis_url.as_str())?;
        let timeout = Duration::from_millis(config.op_timeout_ms);
        let manager = redis::aio::ConnectionManagerConfig::new()
            .set_connection_timeout(Some(timeout))
            .set_response_timeout(Some(timeout));
        let conn = client.get_connection_manager_with_config(manager).await?;
        Ok(Self {
            conn,
            prefix: config.key_prefix.clone(),
            timeout,
            cas: Script::new(CAS),
            delete: Script::new(DELETE),
        })
    }

    async fn bounded<T>(&self, call: impl Future<Output = redis::RedisResult<T>>) -> Result<T, StateError> {
        match tokio::time::timeout(self.timeout, call).await {
            Ok(result) => result.map_err(unavailable),
            Err(_) => Err(unavailable(format!("no answer within {:?}", self.timeout))),
        }
    }

    fn full(&self, key: &str) -> String {
        format!("{}{key}", self.prefix)
    }
}

#[async_trait::async_trait]
impl StateStore for RedisStore {
    fn backend(&self) -> &'static str {
        "redis"
    }

    async fn get(&self, key: &str) -> Result<Option<Entry>, StateError> {
        let mut conn = self.conn.clone();
        let key = self.full(key);
        let (value, version): (Option<Vec<u8>>, Option<u64>) = self
            .bounded(async move { redis::cmd("HMGET").arg(&key).arg("v").arg("n").query_async(&mut conn).await })
            .await?;
        Ok(match (value, version) {
            (Some(value), Some(version)) => Some(Entry { value, version }),
            _ => None,
        })
    }

    async fn compare_and_swap(
        &self,
        key: &str,
        expected: u64,
        value: Vec<u8>,
        ttl_ms: Option<u64>,
    ) -> Result<Option<u64>, StateError> {
        let mut conn = self.conn.clone();
        let mut call = self.cas.prepare_invoke();
        call.key(self.full(key)).key(self.full("__seq")).arg(expected.to_string()).arg(value).arg(ttl_ms.unwrap_or(0));
        let version: u64 = self.bounded(async move { call.invoke_async(&mut conn).await }).await?;
        Ok((version > 0).then_some(version))
    }

    async fn delete(&self, key: &str, expected: u64) -> Result<bool, StateError> {
        let mut conn = self.conn.clone();
        let mut call = self.delete.prepare_invoke();
        call.key(self.full(key)).arg(expected.to_string());
        let deleted: u64 = self.bounded(async move { call.invoke_async(&mut conn).await }).await?;
        Ok(deleted > 0)
    }

    async fn scan(&self, prefix: &str, limit: u32) -> Result<Vec<String>, StateError> {
        let pattern = format!("{}*", glob_escape(&self.full(prefix)));
        let mut conn = self.conn.clone();
        let found: Vec<String> = self
            .bounded(async move {
                let mut keys = Vec::new();
                let mut cursor: u64 = 0;
                loop {
                    let (next, batch): (u64, Vec<String>) = redis::cmd("SCAN")
                        .arg(cursor)
                        .arg("MATCH")
                        .arg(&pattern)
                        .arg("COUNT")
                        .arg(1000)
                        .query_async(&mut conn)
                        .await?;
                    keys.extend(batch);
                    if next == 0 {
                        return Ok(keys);
                    }
                    cursor = next;
                }
            })
            .await?;
        let mut keys: Vec<String> =
            found.into_iter().filter_map(|k| k.strip_prefix(&self.prefix).map(str::to_owned)).collect();
        keys.sort();
        keys.dedup();
        keys.truncate(limit as usize);
        Ok(keys)
    }
}

/// Escapes Redis glob characters, so a prefix matches literally.
fn glob_escape(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    for c in s.chars() {
        if matches!(c, '*' | '?' | '[' | ']' | '\\') {
            out.push('\\');
        }
        out.push(c);
    }
    out
}
