//! Where rows end up. One trait, so the group commit does not care which warehouse is behind it:
//! the embedded DuckDB one ([`duckdb`]) or BigQuery ([`bigquery`]: insertAll or the Storage Write API).

pub mod bigquery;
pub mod dedup;
pub mod duckdb;
pub mod embedded;
pub mod ingest_log;
pub mod schema;
pub mod sql;

use serde::Deserialize;
use tributary_model::{Row, RowError};

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

/// A write that did not happen at all. Transient from the caller's point of view: nothing of the batch
/// is durable, every waiting push is answered 503 and Pub/Sub redelivers.
#[derive(Debug, thiserror::Error)]
pub enum WarehouseError {
    #[error("warehouse write failed: {0}")]
    Write(String),
    #[error("warehouse write refused by the fault-injection switch (testing.fault_injection)")]
    InjectedFault,
}

/// What a committed write did.
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub struct WriteReport {
    /// Rows refused permanently (indices into the written rows).
    pub refused: Vec<RowError>,
    /// Rows newly written.
    pub inserted: usize,
    /// Rows skipped because their table already had their insert id.
    pub duplicates: usize,
    /// Rows whose part of the write failed transiently (one table, one request): nothing about them
    /// is decided, and only the pushes they belong to are answered 503. The other rows are settled.
    pub failed: Vec<Failed>,
}

/// Rows of a write that failed transiently, and why.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Failed {
    /// Indices into the written rows.
    pub rows: Vec<usize>,
    pub error: String,
}

/// A warehouse that commits batches of rows atomically, dedups on insert id and refuses invalid rows
/// one by one.
pub trait Warehouse: Send {
    /// Writes `rows` in one transaction. Every row not in `refused` is durable when this returns, or
    /// was already there (same table and insert id).
    fn write(&mut self, rows: &[Row]) -> Result<WriteReport, WarehouseError>;
}

/// FAULT INJECTION for tests (`testing.fault_injection`): a switch in front of a warehouse that
/// makes every write fail while it is on, as a warehouse outage would.
pub struct FaultSwitch<W> {
    inner: W,
    fault: std::sync::Arc<std::sync::atomic::AtomicU8>,
}

/// FAULT INJECTION: what a [`FaultSwitch`] does to writes.
pub mod fault {
    /// Writes go through.
    pub const NONE: u8 = 0;
    /// Writes fail (a transient warehouse error).
    pub const FAIL: u8 = 1;
    /// The next write panics: the writer thread dies.
    pub const CRASH: u8 = 2;
}

impl Warehouse for Box<dyn Warehouse> {
    fn write(&mut self, rows: &[Row]) -> Result<WriteReport, WarehouseError> {
        self.as_mut().write(rows)
    }
}

impl<W: Warehouse> FaultSwitch<W> {
    /// Wraps `inner`; the returned flag (one of [`fault`]) sets the fault.
    pub fn new(inner: W) -> (Self, std::sync::Arc<std::sync::atomic::AtomicU8>) {
        let fault = std::sync::Arc::default();
        (Self { inner, fault: std::sync::Arc::clone(&fault) }, fault)
    }
}

impl<W: Warehouse> Warehouse for FaultSwitch<W> {
    fn write(&mut self, rows: &[Row]) -> Result<WriteReport, WarehouseError> {
        match self.fault.load(std::sync::atomic::Ordering::SeqCst) {
            fault::FAIL => return Err(WarehouseError::InjectedFault),
            fault::CRASH => panic!("FAULT INJECTION: the warehouse writer crashes"),
            _ => {}
        }
        self.inner.write(rows)
    }
}
