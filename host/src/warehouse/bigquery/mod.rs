//! BigQuery as the warehouse. Tables are created and evolved over REST ([`rest`]); rows stream with
//! `tabledata.insertAll` ([`insert_all`]) or the Storage Write API ([`storage_write`]), chosen by
//! `sink.backend`. The contract is the embedded warehouse's: `write` returns only when BigQuery has
//! accepted every row it does not report as refused, or fails as a whole (the pushes get 503).
//!
//! Role files: [`auth`] (tokens, host only), [`rest`] (REST calls, DDL), [`rows`] (schema evolution,
//! dedup columns), [`encoder`] (proto rows), [`ledger`] (exactly-once state), [`retry`] (backoff to a
//! deadline), [`error`].

pub mod auth;
pub mod config;
pub mod encoder;
pub mod error;
pub mod insert_all;
pub mod ledger;
pub mod rest;
pub mod retry;
pub mod rows;
pub mod storage_write;
pub mod views;

use std::collections::HashMap;
use std::path::Path;
use std::sync::Arc;

use self::retry::Deadline;
use serde_json::Value;
use tributary_model::{Row, RowError};

pub use self::config::{BigQueryConfig, Credentials, NewFields, Partition, WriteStream};
use self::error::BigQueryError;
use self::rest::{Field, Rest};
use self::rows::Prepared;
use self::storage_write::StorageWrite;
use super::schema;
use super::{Failed, Warehouse, WarehouseError, WriteReport};
use crate::metrics::{ApiLabels, Metrics};
use crate::warehouse::Backend;

/// How long creating the dataset's tables and views at start may take.
const STARTUP_DEADLINE: std::time::Duration = std::time::Duration::from_secs(60);

/// Request caps, named after the API limits they respect.
#[derive(Debug, Clone, Copy)]
pub struct Caps {
    pub max_rows: usize,
    pub max_bytes: usize,
}

/// What one table's write did; indices are the flush's.
#[derive(Debug, Default)]
pub struct TableReport {
    pub refused: Vec<RowError>,
    pub inserted: usize,
    pub duplicates: usize,
    /// Requests that did not settle by the deadline (their rows' pushes are answered 503).
    pub failed: Vec<Failed>,
}

/// Request metrics, shared by both APIs.
pub struct Telemetry {
    metrics: Arc<Metrics>,
}

/// One table of a flush that passed its checks: its name, the rows' indices in the flush, its
/// schema and the prepared rows.
type ReadyTable = (String, Vec<usize>, Vec<Field>, Vec<Prepared>);

impl Telemetry {
    #[expect(clippy::cast_precision_loss, reason = "histograms of sizes")]
    pub fn request(&self, api: &str, rows: usize, bytes: usize, full: bool) {
        let labels = ApiLabels { api: api.into() };
        self.metrics.bigquery_requests.get_or_create(&labels).inc();
        if full {
            self.metrics.bigquery_full_requests.get_or_create(&labels).inc();
        }
        self.metrics.bigquery_request_rows.get_or_create(&labels).observe(rows as f64);
        self.metrics.bigquery_request_bytes.get_or_create(&labels).observe(bytes as f64);
    }

    pub fn retry(&self, api: &str) {
        self.metrics.bigquery_retries.get_or_create(&ApiLabels { api: api.into() }).inc();
    }
}

enum Writer {
    InsertAll,
    StorageWrite(Box<StorageWrite>),
}

/// The BigQuery warehouse. Its calls are async; it runs them on a runtime of its own, since the
/// group commit calls `write` from its dedicated thread.
pub struct BigQuery {
    runtime: tokio::runtime::Runtime,
    inner: Inner,
}

struct Inner {
    config: BigQueryConfig,
    rest: Arc<Rest>,
    writer: Writer,
    /// Live schemas of the tables written so far.
    tables: HashMap<String, Vec<Field>>,
    /// Tables whose last write failed: until the instant, their rows fail at once (so a table that is
    /// down costs the other tables' pushes one retry deadline now and then, not every flush).
    cooling: HashMap<String, (tokio::time::Instant, String)>,
    telemetry: Telemetry,
}

impl BigQuery {
    /// Connects and, with `auto_create`, creates the dataset. Blocking: call it off the async runtime.
    pub fn connect(
        config: &BigQueryConfig,
        backend: Backend,
        data_dir: &Path,
        metrics: Arc<Metrics>,
    ) -> Result<Self, BigQueryError> {
        let runtime = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(1)
            .thread_name("bigquery")
            .enable_all()
            .build()
            .map_err(|e| BigQueryError::Local(format!("starting the BigQuery runtime: {e}")))?;
        let mut inner = runtime.block_on(async {
            let auth = Arc::new(auth::Auth::new(config.credentials).await?);
            let rest = Arc::new(Rest::new(config, Arc::clone(&auth))?);
            if config.auto_create {
                rest.ensure_dataset(&config.location).await?;
            }
            let writer = match backend {
                Backend::BigqueryWrite => {
                    let w = StorageWrite::connect(config, auth, data_dir)?;
                    w.prune()?;
                    Writer::StorageWrite(Box::new(w))
                }
                _ => Writer::InsertAll,
            };
            Ok::<_, BigQueryError>(Inner {
                config: config.clone(),
                rest,
                writer,
                tables: HashMap::new(),
                cooling: HashMap::new(),
                telemetry: Telemetry { metrics },
            })
        })?;
        if config.auto_create {
            // The built-in tables exist from the start, so views and queries can rely on them. Start-up
            // is not a flush: it gets its own deadline, not the pushes' `retry_deadline_ms`.
            let deadline = Deadline::after(config.retry_deadline().max(STARTUP_DEADLINE));
            for table in schema::builtin() {
                runtime.block_on(inner.fields(table.name, deadline))?;
            }
            // Keyed tables are read through their `_latest` views (upserts are appends here).
            for (_, sql) in views::latest_views(inner.rest.project(), inner.rest.dataset()) {
                runtime.block_on(retry::until(deadline, || inner.rest.query(&sql), |_| {}))?;
            }
        }
        Ok(Self { runtime, inner })
    }
}

impl Warehouse for BigQuery {
    fn write(&mut self, rows: &[Row]) -> Result<WriteReport, WarehouseError> {
        let Self { runtime, inner } = self;
        runtime.block_on(inner.write(rows)).map_err(|e| WarehouseError::Write(e.to_string()))
    }
}

impl Inner {
    async fn write(&mut self, rows: &[Row]) -> Result<WriteReport, BigQueryError> {
        let deadline = Deadline::after(self.config.retry_deadline());
        let inserted_at = chrono::Utc::now().to_rfc3339_opts(chrono::SecondsFormat::Micros, true);
        let mut report = WriteReport::default();
        // Group by table, keeping flush indices.
        let mut by_table: Vec<(String, Vec<Prepared>)> = Vec::new();
        for (index, row) in rows.iter().enumerate() {
            let json = match serde_json::from_str::<Value>(&row.json) {
                Ok(Value::Object(m)) => m,
                Ok(_) => {
                    report.refused.push(invalid(index, None, "row must be a JSON object".into()));
                    continue;
                }
                Err(e) => {
                    report.refused.push(invalid(index, None, format!("row is not valid JSON: {e}")));
                    continue;
                }
            };
            // Upserts are appended (BigQuery's fallback; `<table>_latest` reads the newest row per
            // key): the dedup id is key + version, so a newer version is never taken for a duplicate.
            let insert_id = match crate::warehouse::schema::find(&row.table).and_then(|t| t.keyed) {
                Some(k) => {
                    format!("{}@{}", row.insert_id, json.get(k.version).and_then(Value::as_str).unwrap_or_default())
                }
                None => row.insert_id.clone(),
            };
            let prepared = Prepared { index, insert_id, json };
            match by_table.iter_mut().find(|(t, _)| *t == row.table) {
                Some((_, list)) => list.push(prepared),
                None => by_table.push((row.table.clone(), vec![prepared])),
            }
        }
        // Each table settles on its own: a table that fails (or is cooling off after failing) fails
        // only the pushes with rows in it. Schemas and row checks go table by table (they mutate the
        // caches); the requests of insertAll then run for all tables at once, each request retried on
        // its own until the flush deadline, so a table that keeps failing does not use up the others'
        // time. The Storage Write API writes the tables one after another (its streams and ledger are
        // per table state): there a failing table can run the flush out of time for the tables after it
        // once, and then cools off.
        let mut ready: Vec<ReadyTable> = Vec::new();
        for (table, rows) in by_table {
            let indices: Vec<usize> = rows.iter().map(|r| r.index).collect();
            if let Some((until, why)) = self.cooling.get(&table)
                && tokio::time::Instant::now() < *until
            {
                report.failed.push(Failed { rows: indices, error: format!("{why} (cooling off)") });
                continue;
            }
            match self.prepare_table(&table, rows, deadline, &inserted_at, &mut report).await {
                Ok(Some((fields, rows))) => ready.push((table, indices, fields, rows)),
                Ok(None) => {}
                Err(e) => self.settle(&table, indices, Err(e), &mut report),
            }
        }
        match &mut self.writer {
            Writer::InsertAll => {
                let caps =
                    Caps { max_rows: self.config.insertall_max_rows, max_bytes: self.config.insertall_max_bytes };
                let (rest, telemetry) = (&self.rest, &self.telemetry);
                let written = futures::future::join_all(ready.iter_mut().map(|(table, _, _, rows)| {
                    insert_all::write(rest, table, std::mem::take(rows), caps, deadline, telemetry)
                }))
                .await;
                for ((table, indices, _, _), outcome) in ready.into_iter().zip(written) {
                    self.settle(&table, indices, outcome, &mut report);
                }
            }
            Writer::StorageWrite(_) => {
                for (table, indices, fields, rows) in ready {
                    let Writer::StorageWrite(w) = &mut self.writer else { unreachable!("matched above") };
                    let outcome = w.write(&table, &fields, rows, deadline, &self.telemetry).await;
                    self.settle(&table, indices, outcome, &mut report);
                }
            }
        }
        report.refused.sort_by_key(|e| e.index);
        Ok(report)
    }

    /// Adds one table's outcome to the flush's report and keeps its cool-off up to date.
    fn settle(
        &mut self,
        table: &str,
        indices: Vec<usize>,
        outcome: Result<TableReport, BigQueryError>,
        report: &mut WriteReport,
    ) {
        let error = match outcome {
            Ok(t) => {
                let error = t.failed.first().map(|f| f.error.clone());
                report.refused.extend(t.refused);
                report.inserted += t.inserted;
                report.duplicates += t.duplicates;
                report.failed.extend(t.failed);
                error
            }
            Err(e) => {
                if matches!(e, BigQueryError::Api { status: 404, .. }) {
                    // The table went away under us: read (or create) it again next time.
                    self.tables.remove(table);
                }
                let error = format!("table {table}: {e}");
                report.failed.push(Failed { rows: indices, error: error.clone() });
                Some(error)
            }
        };
        match error {
            Some(error) => {
                tracing::warn!(table, error, "writing the table failed; its pushes will be redelivered");
                let until = tokio::time::Instant::now() + self.config.retry_deadline() * 2;
                self.cooling.insert(table.to_owned(), (until, error));
            }
            None => {
                self.cooling.remove(table);
            }
        }
    }

    /// Gets one table's rows ready: its schema (read, created or evolved) and per-row checks. Rows
    /// refused here go to `flush` (the whole flush's report); `None`: nothing left to write.
    async fn prepare_table(
        &mut self,
        table: &str,
        mut rows: Vec<Prepared>,
        deadline: Deadline,
        inserted_at: &str,
        flush: &mut WriteReport,
    ) -> Result<Option<(Vec<Field>, Vec<Prepared>)>, BigQueryError> {
        let Some(mut fields) = self.fields(table, deadline).await? else {
            for r in rows {
                flush.refused.push(RowError {
                    index: u32::try_from(r.index).unwrap_or(u32::MAX),
                    reason: "notFound".into(),
                    location: None,
                    message: format!("Not found: Table {}:{}.{table}", self.rest.project(), self.rest.dataset()),
                });
            }
            return Ok(None);
        };
        match self.config.new_fields {
            NewFields::Properties => rows.iter_mut().for_each(|r| rows::fold_into_properties(&fields, &mut r.json)),
            NewFields::AddColumn => {
                let new = rows::new_columns(&fields, &rows);
                if !new.is_empty() {
                    let names: Vec<&str> = new.iter().map(|f| f.name.as_str()).collect();
                    tracing::info!(table, columns = ?names, "adding NULLABLE columns (new_fields = add-column)");
                    fields = retry::until(deadline, || self.rest.add_columns(table, &fields, &new), |_| {}).await?;
                    self.tables.insert(table.to_owned(), fields.clone());
                }
            }
        }
        let max_row = match self.writer {
            Writer::InsertAll => self.config.insertall_max_bytes,
            Writer::StorageWrite(_) => self.config.append_max_bytes,
        }
        .saturating_sub(ROW_ENVELOPE_BYTES);
        let mut fitting = Vec::with_capacity(rows.len());
        for mut r in rows {
            if let Some((column, message)) = rows::type_conflict(&fields, &r.json) {
                flush.refused.push(invalid(r.index, Some(column), message));
                continue;
            }
            rows::finish(&fields, &mut r, inserted_at);
            // A row that cannot fit in a request even alone would fail its whole request: refuse it alone.
            let size = serde_json::to_string(&r.json).map_or(0, |j| j.len()) + r.insert_id.len();
            if size > max_row {
                let message = format!("row of {size} bytes is over the {max_row} bytes a BigQuery request can carry");
                flush.refused.push(RowError {
                    index: u32::try_from(r.index).unwrap_or(u32::MAX),
                    reason: "rowTooLarge".into(),
                    location: None,
                    message,
                });
                continue;
            }
            fitting.push(r);
        }
        Ok((!fitting.is_empty()).then_some((fields, fitting)))
    }

    /// The table's live columns: cached, else read, else created (built-in tables, `auto_create`).
    async fn fields(&mut self, table: &str, deadline: Deadline) -> Result<Option<Vec<Field>>, BigQueryError> {
        if let Some(f) = self.tables.get(table) {
            return Ok(Some(f.clone()));
        }
        let mut fields = retry::until(deadline, || self.rest.get_table(table), |_| {}).await?;
        if fields.is_none()
            && self.config.auto_create
            && let Some(schema) = schema::find(table)
        {
            let resource =
                rest::table_resource(self.rest.project(), self.rest.dataset(), schema, self.config.partition);
            tracing::info!(table, "creating table");
            fields = Some(retry::until(deadline, || self.rest.create_table(table, &resource), |_| {}).await?);
        }
        if let Some(f) = &fields {
            self.tables.insert(table.to_owned(), f.clone());
        }
        Ok(fields)
    }
}

/// What a request spends around a row's JSON (insertAll's `{"insertId":..,"json":..}` and the
/// request envelope; AppendRows' framing): a row must fit in the request cap with this to spare.
const ROW_ENVELOPE_BYTES: usize = 1024;

/// A row refused as `invalid` (BigQuery's reason for a row that can never be written).
fn invalid(index: usize, location: Option<String>, message: String) -> RowError {
    RowError { index: u32::try_from(index).unwrap_or(u32::MAX), reason: "invalid".into(), location, message }
}

/// Splits rows, in order, into requests under both caps (`envelope` bytes per request plus `size` per
/// row). `true` marks a request closed by a cap (full); a row larger than the byte cap travels alone.
fn split<T>(rows: Vec<T>, caps: Caps, envelope: usize, size: impl Fn(&T) -> usize) -> Vec<(Vec<T>, bool)> {
    let mut out = Vec::new();
    let mut current: Vec<T> = Vec::new();
    let mut bytes = envelope;
    for row in rows {
        let n = size(&row);
        if !current.is_empty() && (current.len() >= caps.max_rows || bytes + n > caps.max_bytes) {
            out.push((std::mem::take(&mut current), true));
            bytes = envelope;
        }
        bytes += n;
        current.push(row);
    }
    if !current.is_empty() {
        let full = current.len() >= caps.max_rows;
        out.push((current, full));
    }
    out
}
