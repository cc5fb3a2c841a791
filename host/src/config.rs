//! `tributary.toml`: every knob of the host, with defaults good enough that no file is needed.
//!
//! Parsing (`serde`, unknown keys refused) is separate from [`Config::validate`], which checks values
//! against each other and the limits of the parts they configure.

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::time::Duration;

use serde::Deserialize;

/// Why a configuration was refused.
#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    #[error("reading config file {path}: {source}")]
    Read { path: PathBuf, source: std::io::Error },
    #[error("config file {path}: {source}")]
    Parse { path: PathBuf, source: toml::de::Error },
    #[error("invalid config: {0}")]
    Invalid(String),
}

/// The whole host configuration.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct Config {
    /// Where the function routes (`/push/*`, `/healthz`, `/metrics`) listen. Spin's default address,
    /// so `spin up` and `tributary up` are interchangeable.
    pub listen: SocketAddr,
    /// Where the admin routes (`/query` for `tributary sql`, test-only fault injection) listen.
    /// Never expose it: it runs SQL.
    pub admin_listen: SocketAddr,
    /// The embedded warehouse and any other state live here.
    pub data_dir: PathBuf,
    /// Limits every guest runs under.
    pub guest: GuestConfig,
    /// The group commit in front of the warehouse.
    pub sink: SinkConfig,
    /// Component files that replace the built-in ones.
    pub components: ComponentsConfig,
    /// Switches for tests only.
    pub testing: TestingConfig,
}

impl Default for Config {
    fn default() -> Self {
        Self {
            listen: SocketAddr::from(([127, 0, 0, 1], 3000)),
            admin_listen: SocketAddr::from(([127, 0, 0, 1], 3001)),
            data_dir: PathBuf::from(".tributary"),
            guest: GuestConfig::default(),
            sink: SinkConfig::default(),
            components: ComponentsConfig::default(),
            testing: TestingConfig::default(),
        }
    }
}

/// Sandbox limits. A guest that exceeds one fails its own request and nothing else.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct GuestConfig {
    /// Linear memory one guest instance may grow to, in MiB.
    pub memory_mib: u32,
    /// Wall-clock budget of one push, sink wait included, in ms. Pub/Sub's default ack deadline is
    /// 10 s: an answer later than that is a nack anyway.
    pub request_timeout_ms: u64,
    /// CPU budget of one transform call, in ms (a transform is pure computation).
    pub transform_timeout_ms: u64,
    /// Push handler instances alive at once (each serves one push at a time). Also sizes the
    /// pooling allocator.
    pub max_instances: u32,
    /// Pushes one push-handler instance serves before it is recycled.
    pub instance_reuse: usize,
}

impl Default for GuestConfig {
    fn default() -> Self {
        Self {
            memory_mib: 64,
            request_timeout_ms: 10_000,
            transform_timeout_ms: 1_000,
            max_instances: 128,
            instance_reuse: 128,
        }
    }
}

impl GuestConfig {
    pub fn request_timeout(&self) -> Duration {
        Duration::from_millis(self.request_timeout_ms)
    }

    pub fn transform_timeout(&self) -> Duration {
        Duration::from_millis(self.transform_timeout_ms)
    }

    pub fn memory_bytes(&self) -> usize {
        usize::try_from(self.memory_mib).unwrap_or(usize::MAX).saturating_mul(1 << 20)
    }
}

/// Group commit: rows of concurrent pushes share one warehouse transaction.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct SinkConfig {
    /// Flush once this many rows are waiting.
    pub max_rows: usize,
    /// Flush once the waiting rows' JSON reaches this many bytes.
    pub max_bytes: usize,
    /// After the first row of a flush arrives, wait at most this long for more, in ms. 0 flushes
    /// whatever is queued as soon as the previous flush is done (natural batching).
    pub linger_ms: u64,
    /// Rows waiting for a flush, at most. Beyond it pushes are answered 429 so Pub/Sub slows down.
    pub max_queued_rows: usize,
    /// A write not committed within this many ms is answered 503 (and retried by Pub/Sub).
    pub write_timeout_ms: u64,
}

impl Default for SinkConfig {
    fn default() -> Self {
        Self { max_rows: 1_000, max_bytes: 8 << 20, linger_ms: 2, max_queued_rows: 50_000, write_timeout_ms: 8_000 }
    }
}

impl SinkConfig {
    pub fn linger(&self) -> Duration {
        Duration::from_millis(self.linger_ms)
    }

    pub fn write_timeout(&self) -> Duration {
        Duration::from_millis(self.write_timeout_ms)
    }
}

/// Replacement components; the built-in ones are embedded in the binary.
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct ComponentsConfig {
    /// A transform component (world `transform-component`) to use instead of the built-in one.
    pub transform: Option<PathBuf>,
}

/// Test-only switches. Never enable them in production.
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct TestingConfig {
    /// Serves `PUT /faults/sink` on the admin listener: a switch that makes warehouse writes fail.
    pub fault_injection: bool,
}

impl Config {
    /// Reads `path`, or returns the defaults when there is none.
    pub fn load(path: Option<&Path>) -> Result<Self, ConfigError> {
        let Some(path) = path else { return Ok(Self::default()) };
        let text =
            std::fs::read_to_string(path).map_err(|source| ConfigError::Read { path: path.to_owned(), source })?;
        Self::parse(&text).map_err(|source| ConfigError::Parse { path: path.to_owned(), source })
    }

    pub fn parse(text: &str) -> Result<Self, toml::de::Error> {
        toml::from_str(text)
    }

    /// Checks values against each other.
    pub fn validate(&self) -> Result<(), ConfigError> {
        let invalid = |m: String| Err(ConfigError::Invalid(m));
        if self.guest.memory_mib < 2 {
            return invalid(format!(
                "guest.memory_mib must be at least 2 (a Rust guest needs ~1 MiB), got {}",
                self.guest.memory_mib
            ));
        }
        if self.guest.max_instances == 0 || self.guest.instance_reuse == 0 {
            return invalid("guest.max_instances and guest.instance_reuse must be at least 1".into());
        }
        if self.sink.max_rows == 0 || self.sink.max_bytes == 0 {
            return invalid("sink.max_rows and sink.max_bytes must be at least 1".into());
        }
        if self.sink.max_queued_rows < self.sink.max_rows {
            return invalid(format!(
                "sink.max_queued_rows ({}) must be at least sink.max_rows ({})",
                self.sink.max_queued_rows, self.sink.max_rows
            ));
        }
        if self.sink.write_timeout_ms >= self.guest.request_timeout_ms {
            return invalid(format!(
                "sink.write_timeout_ms ({}) must be below guest.request_timeout_ms ({}) so a slow write is answered 503, not cut off",
                self.sink.write_timeout_ms, self.guest.request_timeout_ms
            ));
        }
        if self.listen == self.admin_listen && self.listen.port() != 0 {
            return invalid(format!("listen and admin_listen are both {}", self.listen));
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn empty_file_is_the_defaults_and_valid() {
        let c = Config::parse("").expect("parses");
        assert_eq!(c.listen.to_string(), "127.0.0.1:3000");
        c.validate().expect("defaults are valid");
    }

    #[test]
    fn unknown_keys_are_refused_by_name() {
        let err = Config::parse("[sink]\nmax_row = 5\n").expect_err("typo");
        assert!(err.to_string().contains("unknown field `max_row`"), "{err}");
    }

    #[test]
    fn values_are_checked_against_each_other() {
        let c = Config::parse("[sink]\nmax_rows = 10\nmax_queued_rows = 5\n").expect("parses");
        let err = c.validate().expect_err("invalid");
        assert_eq!(err.to_string(), "invalid config: sink.max_queued_rows (5) must be at least sink.max_rows (10)");
        let c = Config::parse("[guest]\nrequest_timeout_ms = 1000\n").expect("parses");
        assert!(c.validate().expect_err("invalid").to_string().contains("sink.write_timeout_ms (8000)"));
    }
}
