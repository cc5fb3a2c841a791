//! `tributary.toml`: every knob of the host, with defaults good enough that no file is needed.
//!
//! Parsing (`serde`, unknown keys refused) is separate from [`Config::validate`], which checks values
//! against each other and the limits of the parts they configure.

use std::collections::BTreeMap;
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
    /// BigQuery, when `sink.backend` is one of the `bigquery-*` backends.
    pub bigquery: BigQueryConfig,
    /// Component files that replace the built-in ones.
    pub components: ComponentsConfig,
    /// The `state` import's store.
    pub state: StateConfig,
    /// The timer that closes windows when traffic stops.
    pub timers: TimersConfig,
    /// Push authentication (OIDC), per group of push routes.
    pub push_auth: Vec<PushAuthConfig>,
    /// Settings handed to each function through `wasi:config/store`, by function name:
    /// `[functions.anomaly-check]` `lateness_seconds = 120`. Values are strings, numbers or booleans.
    pub functions: BTreeMap<String, BTreeMap<String, toml::Value>>,
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
            bigquery: BigQueryConfig::default(),
            components: ComponentsConfig::default(),
            state: StateConfig::default(),
            timers: TimersConfig::default(),
            functions: BTreeMap::new(),
            push_auth: Vec::new(),
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

/// Which warehouse the group commit writes to.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum Backend {
    /// The embedded DuckDB warehouse under `data_dir` (exact dedup on insert id).
    #[default]
    Embedded,
    /// BigQuery legacy streaming, `tabledata.insertAll` (best-effort dedup on `insertId`).
    BigqueryInsertall,
    /// BigQuery Storage Write API over gRPC (`bigquery.write_stream` picks `_default` or exactly-once).
    BigqueryWrite,
}

/// Group commit: rows of concurrent pushes share one warehouse transaction.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct SinkConfig {
    /// `embedded`, `bigquery-insertall` or `bigquery-write`.
    pub backend: Backend,
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
        Self {
            backend: Backend::Embedded,
            max_rows: 1_000,
            max_bytes: 8 << 20,
            linger_ms: 2,
            max_queued_rows: 50_000,
            write_timeout_ms: 8_000,
        }
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

/// How the host reaches BigQuery. Credentials never reach a guest: the host alone holds tokens.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct BigQueryConfig {
    /// The Google Cloud project that owns the dataset (and is billed).
    pub project: String,
    /// The dataset the tables live in; created on first use when `auto_create` is on.
    pub dataset: String,
    /// Where a new dataset is created.
    pub location: String,
    /// REST base for tables, datasets and insertAll; an emulator's address for local runs.
    pub api_endpoint: String,
    /// Storage Write API gRPC endpoint (`http://` for a plaintext emulator).
    pub grpc_endpoint: String,
    /// `application-default` (service-account JSON in `GOOGLE_APPLICATION_CREDENTIALS`, gcloud user
    /// credentials, or the metadata server) or `anonymous` (emulators only).
    pub credentials: Credentials,
    /// Storage Write API stream: `default` (at-least-once) or `committed` (exactly-once: a COMMITTED
    /// stream written at explicit offsets, with a durable ledger under `data_dir`).
    pub write_stream: WriteStream,
    /// Create the dataset and the built-in tables when they are missing.
    pub auto_create: bool,
    /// Column new tables are partitioned on by day: `ingestion` (`_inserted_at`) or `event-time`
    /// (`timestamp` for events, `failed_at` for dead letters).
    pub partition: Partition,
    /// A top-level field a table does not have: `properties` keeps it inside the row's `properties`
    /// JSON column; `add-column` adds it to the table as a NULLABLE column first (ALLOW_FIELD_ADDITION).
    pub new_fields: NewFields,
    /// insertAll: rows per request (Google recommends at most 500).
    pub insertall_max_rows: usize,
    /// insertAll: request body bytes (BigQuery's limit is 10 MB per request).
    pub insertall_max_bytes: usize,
    /// Storage Write API: serialized rows per AppendRows request (the limit is 10 MB per request).
    pub append_max_bytes: usize,
    /// One HTTP or gRPC call, in ms.
    pub request_timeout_ms: u64,
    /// Retries of 429, 5xx, timeouts and `stopped` rows end this many ms after a flush started; then
    /// the flush fails and its pushes are answered 503. Must be below `sink.write_timeout_ms`.
    pub retry_deadline_ms: u64,
    /// How long the exactly-once ledger remembers written insert ids, in hours (Pub/Sub keeps
    /// unacked messages at most 7 days).
    pub ledger_retention_hours: u64,
}

impl Default for BigQueryConfig {
    fn default() -> Self {
        Self {
            project: String::new(),
            dataset: "tributary".into(),
            location: "US".into(),
            api_endpoint: "https://bigquery.googleapis.com".into(),
            grpc_endpoint: "https://bigquerystorage.googleapis.com".into(),
            credentials: Credentials::ApplicationDefault,
            write_stream: WriteStream::Committed,
            auto_create: true,
            partition: Partition::Ingestion,
            new_fields: NewFields::Properties,
            insertall_max_rows: 500,
            insertall_max_bytes: 9 << 20,
            append_max_bytes: 9 << 20,
            request_timeout_ms: 4_000,
            retry_deadline_ms: 6_000,
            ledger_retention_hours: 7 * 24,
        }
    }
}

impl BigQueryConfig {
    pub fn request_timeout(&self) -> Duration {
        Duration::from_millis(self.request_timeout_ms)
    }

    pub fn retry_deadline(&self) -> Duration {
        Duration::from_millis(self.retry_deadline_ms)
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum Credentials {
    ApplicationDefault,
    Anonymous,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum WriteStream {
    Default,
    Committed,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum Partition {
    Ingestion,
    EventTime,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum NewFields {
    Properties,
    AddColumn,
}

/// Replacement components; the built-in ones are embedded in the binary.
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct ComponentsConfig {
    /// A transform component (world `transform-component`) to use instead of the built-in one.
    pub transform: Option<PathBuf>,
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

/// The timer contract: every `tick_ms` the host POSTs each function's tick route
/// (`/push/anomaly/tick`, `/push/sensors/tick`, `/push/recommend/tick`), which closes windows that are
/// due (also when no traffic arrives) and recomputes debounced users. 0 turns the timer off (an outside scheduler can call the routes instead).
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct TimersConfig {
    pub tick_ms: u64,
}

impl Default for TimersConfig {
    fn default() -> Self {
        Self { tick_ms: 5_000 }
    }
}

/// `[[push_auth]]`: the listed push routes accept only pushes with a valid Google-signed OIDC token
/// (a push subscription created with `--push-auth-service-account`).
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct PushAuthConfig {
    /// Push routes this applies to, e.g. `["/push/events"]` (timer routes take no token).
    pub routes: Vec<String>,
    /// The expected `aud` claim: the subscription's `--push-auth-token-audience`, by default its push
    /// endpoint URL.
    pub audience: String,
    /// Accepted `email` claims: the subscriptions' push service accounts.
    pub service_accounts: Vec<String>,
    /// Where the signing keys are (Google's by default).
    #[serde(default = "google_jwks")]
    pub jwks_url: String,
    /// Accepted issuers (Google's by default).
    #[serde(default = "google_issuers")]
    pub issuers: Vec<String>,
    /// Clock skew tolerated, in seconds.
    #[serde(default = "default_leeway")]
    pub leeway_seconds: u64,
}

fn google_jwks() -> String {
    push_auth::GOOGLE_JWKS_URL.to_owned()
}

fn google_issuers() -> Vec<String> {
    push_auth::GOOGLE_ISSUERS.iter().map(|s| (*s).to_owned()).collect()
}

fn default_leeway() -> u64 {
    60
}

/// Routes that take pushes (and so may require a token).
pub fn push_routes() -> Vec<&'static str> {
    let mut routes = vec![crate::server::EVENTS_ROUTE];
    for (_, function_routes) in crate::server::FUNCTIONS {
        routes.extend(function_routes.iter().filter(|r| !crate::server::TICK_ROUTES.contains(r)));
    }
    routes
}

/// Functions that take settings, and so may have a `[functions.<name>]` table.
pub const CONFIGURABLE_FUNCTIONS: [&str; 2] = ["anomaly-check", "recommend-trigger"];

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
        if self.sink.backend != Backend::Embedded {
            let bq = &self.bigquery;
            if bq.project.is_empty() || bq.dataset.is_empty() {
                return invalid(format!(
                    "sink.backend = {:?} needs bigquery.project and bigquery.dataset",
                    self.sink.backend
                ));
            }
            if bq.retry_deadline_ms >= self.sink.write_timeout_ms {
                return invalid(format!(
                    "bigquery.retry_deadline_ms ({}) must be below sink.write_timeout_ms ({}) so a failing write is answered 503 before the push times out",
                    bq.retry_deadline_ms, self.sink.write_timeout_ms
                ));
            }
            if bq.insertall_max_rows == 0 || bq.insertall_max_bytes < 1024 || bq.append_max_bytes < 1024 {
                return invalid(
                    "bigquery.insertall_max_rows must be at least 1 and the byte caps at least 1024".into(),
                );
            }
            if bq.insertall_max_bytes > 10 << 20 || bq.append_max_bytes > 10 << 20 {
                return invalid("bigquery request byte caps must stay within BigQuery's 10 MB per request".into());
            }
        }
        for (name, settings) in &self.functions {
            if !CONFIGURABLE_FUNCTIONS.contains(&name.as_str()) {
                return invalid(format!(
                    "[functions.{name}]: no such function takes settings (known: {})",
                    CONFIGURABLE_FUNCTIONS.join(", ")
                ));
            }
            for (key, value) in settings {
                if setting_text(value).is_none() {
                    return invalid(format!("functions.{name}.{key}: expected a string, number or boolean"));
                }
            }
        }
        let mut guarded: Vec<&str> = Vec::new();
        for (i, auth) in self.push_auth.iter().enumerate() {
            if auth.audience.is_empty() || auth.service_accounts.is_empty() || auth.routes.is_empty() {
                return invalid(format!(
                    "push_auth entry {}: routes, audience and service_accounts must not be empty",
                    i + 1
                ));
            }
            for route in &auth.routes {
                if !push_routes().contains(&route.as_str()) {
                    return invalid(format!(
                        "push_auth: '{route}' is not a push route (known: {})",
                        push_routes().join(", ")
                    ));
                }
                if guarded.contains(&route.as_str()) {
                    return invalid(format!("push_auth: '{route}' is listed twice"));
                }
                guarded.push(route);
            }
        }
        if self.state.op_timeout_ms == 0 || self.state.max_key_bytes == 0 || self.state.max_value_bytes == 0 {
            return invalid(
                "state.op_timeout_ms, state.max_key_bytes and state.max_value_bytes must be at least 1".into(),
            );
        }
        if self.listen == self.admin_listen && self.listen.port() != 0 {
            return invalid(format!("listen and admin_listen are both {}", self.listen));
        }
        Ok(())
    }
}

impl Config {
    /// The `wasi:config/store` pairs of function `name`.
    pub fn function_settings(&self, name: &str) -> Vec<(String, String)> {
        self.functions
            .get(name)
            .into_iter()
            .flatten()
            .filter_map(|(k, v)| Some((k.clone(), setting_text(v)?)))
            .collect()
    }
}

/// A setting as the text a function reads.
fn setting_text(v: &toml::Value) -> Option<String> {
    match v {
        toml::Value::String(s) => Some(s.clone()),
        toml::Value::Integer(i) => Some(i.to_string()),
        toml::Value::Float(f) => Some(f.to_string()),
        toml::Value::Boolean(b) => Some(b.to_string()),
        _ => None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn push_auth_entries_are_checked() {
        let ok = "[[push_auth]]\nroutes = [\"/push/events\"]\naudience = \"https://x/push/events\"\nservice_accounts = [\"a@p.iam.gserviceaccount.com\"]\n";
        let c = Config::parse(ok).expect("parses");
        c.validate().expect("valid");
        assert_eq!(c.push_auth[0].jwks_url, "https://www.googleapis.com/oauth2/v3/certs");
        let c = Config::parse(&ok.replace("/push/events\"]", "/push/anomaly/tick\"]")).expect("parses");
        assert!(c.validate().expect_err("tick").to_string().contains("not a push route"));
        let c = Config::parse(&format!("{ok}{ok}")).expect("parses");
        assert!(c.validate().expect_err("twice").to_string().contains("listed twice"));
    }

    #[test]
    fn function_settings_become_text_and_unknown_functions_are_refused() {
        let c = Config::parse(
            "[functions.anomaly-check]\nlateness_seconds = 600\nsigma = 2.5\n[state]\nbackend = \"redis\"\n",
        )
        .expect("parses");
        c.validate().expect("valid");
        assert_eq!(
            c.function_settings("anomaly-check"),
            vec![("lateness_seconds".to_owned(), "600".to_owned()), ("sigma".to_owned(), "2.5".to_owned())]
        );
        let c = Config::parse("[functions.anomaly]\nx = 1\n").expect("parses");
        assert!(c.validate().expect_err("unknown").to_string().contains("[functions.anomaly]"));
        let c = Config::parse("[functions.anomaly-check]\nx = [1]\n").expect("parses");
        assert!(c.validate().is_err());
    }

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

    #[test]
    fn bigquery_backends_need_a_project_and_a_deadline_below_the_write_timeout() {
        let c = Config::parse("[sink]\nbackend = \"bigquery-write\"\n").expect("parses");
        assert!(c.validate().expect_err("no project").to_string().contains("needs bigquery.project"));
        let c = Config::parse(
            "[sink]\nbackend = \"bigquery-insertall\"\n[bigquery]\nproject = \"p\"\nretry_deadline_ms = 9000\n",
        )
        .expect("parses");
        assert!(c.validate().expect_err("deadline").to_string().contains("bigquery.retry_deadline_ms (9000)"));
        let c = Config::parse(
            "[sink]\nbackend = \"bigquery-write\"\n[bigquery]\nproject = \"p\"\nwrite_stream = \"default\"\nnew_fields = \"add-column\"\ncredentials = \"anonymous\"\n",
        )
        .expect("parses");
        c.validate().expect("valid");
        assert_eq!(c.bigquery.new_fields, NewFields::AddColumn);
        let err = Config::parse("[bigquery]\nwrite_stream = \"pending\"\n").expect_err("unknown variant");
        assert!(err.to_string().contains("unknown variant `pending`"), "{err}");
    }
}
