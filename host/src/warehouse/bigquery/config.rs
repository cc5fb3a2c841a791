//! `[bigquery]`: how the host reaches BigQuery. Credentials never reach a guest: the host alone holds
//! tokens.

use std::time::Duration;

use serde::Deserialize;

use crate::warehouse::Backend;

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
    /// Checks the values a BigQuery backend needs (`backend` names the one configured).
    pub fn validate(&self, backend: Backend) -> Result<(), String> {
        if self.project.is_empty() || self.dataset.is_empty() {
            return Err(format!("sink.backend = {backend:?} needs bigquery.project and bigquery.dataset"));
        }
        if self.insertall_max_rows == 0 || self.insertall_max_bytes < 1024 || self.append_max_bytes < 1024 {
            return Err("bigquery.insertall_max_rows must be at least 1 and the byte caps at least 1024".into());
        }
        if self.insertall_max_bytes > 10 << 20 || self.append_max_bytes > 10 << 20 {
            return Err("bigquery request byte caps must stay within BigQuery's 10 MB per request".into());
        }
        Ok(())
    }

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
