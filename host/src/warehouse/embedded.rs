//! The embedded warehouse as the group commit sees it: a flush is checked against the schema,
//! appended to the ingest log ([`super::ingest_log`]) and made durable with one `fdatasync`, and its
//! pushes are acked; a loader thread moves the logged rows into DuckDB in large batches (one
//! transaction every `sink.load_interval_ms`) and records how far it got in the same transaction.
//! Before each load it drops the append-only rows whose insert id was stored before, with the dedup
//! key store ([`super::dedup`]): exact dedup, also across restarts. After a crash, the log's records
//! past that checkpoint are loaded again at start (dedup makes that idempotent).
//!
//! Why: a DuckDB commit costs ~10 ms whatever its size (planning, appenders, index maintenance, WAL),
//! while an `fdatasync` costs ~0.3 ms. Acking from the log makes a flush cost what the disk needs, and
//! the loader pays DuckDB's fixed cost once per thousands of rows instead of once per flush.
//!
//! Limits: the rows logged but not loaded yet are held in memory for the loader, at most
//! `sink.max_unloaded_rows` (beyond it writes fail with 503 until the loader catches up). Queries see a
//! row within one load interval of its ack; `/query` waits for the loads of everything acked before it.

use std::sync::{Arc, Condvar, Mutex, MutexGuard};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use tributary_model::Row;

use super::dedup::{self, DedupKeys};
use super::duckdb::{DuckDb, Staged, stage};
use super::ingest_log::{IngestLog, LogRow};
use super::schema;
use super::{Warehouse, WarehouseError, WriteReport};
use crate::metrics::Metrics;

/// A load starts early once this many rows wait (a batch this large amortizes DuckDB's fixed cost).
const LOAD_EARLY_ROWS: usize = 50_000;

/// The loader's knobs (from `[sink]`).
#[derive(Debug, Clone, Copy)]
pub struct LoadConfig {
    pub interval: Duration,
    pub max_unloaded_rows: usize,
    /// DuckDB's memory limit.
    pub memory_limit_mib: usize,
    /// The dedup key store's page cache.
    pub dedup_cache_mib: usize,
    /// How long the dedup key store keeps a key, in days (0: for ever).
    pub dedup_window_days: u32,
}

/// The embedded warehouse: ingest log in front, DuckDB behind.
pub struct Embedded {
    log: IngestLog,
    shared: Arc<Shared>,
    loader: Option<JoinHandle<()>>,
    max_unloaded_rows: usize,
    /// A connection to clone readers from.
    readers: duckdb::Connection,
    metrics: Arc<Metrics>,
}

struct Shared {
    backlog: Mutex<Backlog>,
    /// The loader waits here for rows (or an early load, or the end).
    work: Condvar,
    /// Readers wait here for a load.
    loaded: Condvar,
}

#[derive(Default)]
struct Backlog {
    /// Logged, not loaded: exactly the records `loaded_seq + 1 ..= logged_seq`, in order.
    rows: Vec<Staged>,
    logged_seq: u64,
    loaded_seq: u64,
    /// A reader wants the rows loaded now.
    urgent: bool,
    closing: bool,
}

impl Shared {
    fn lock(&self) -> MutexGuard<'_, Backlog> {
        self.backlog.lock().unwrap_or_else(std::sync::PoisonError::into_inner)
    }
}

/// Read-your-writes for queries on the embedded warehouse.
#[derive(Clone)]
pub struct LoadWatermark(Arc<Shared>);

impl LoadWatermark {
    /// Waits until every row acked before this call is in the tables (asking the loader to load now),
    /// at most `timeout`; whether it got there.
    pub fn wait_loaded(&self, timeout: Duration) -> bool {
        let shared = &self.0;
        let deadline = Instant::now() + timeout;
        let mut b = shared.lock();
        let target = b.logged_seq;
        if b.loaded_seq < target {
            b.urgent = true;
            shared.work.notify_one();
        }
        while b.loaded_seq < target {
            let Some(left) = deadline.checked_duration_since(Instant::now()) else { return false };
            b = shared.loaded.wait_timeout(b, left).unwrap_or_else(std::sync::PoisonError::into_inner).0;
        }
        true
    }
}

impl Embedded {
    /// Opens DuckDB and the log under `dir`, queues the log's records past the checkpoint for loading
    /// and starts the loader.
    pub fn open(dir: &std::path::Path, config: LoadConfig, metrics: Arc<Metrics>) -> Result<Self, WarehouseError> {
        let db = DuckDb::open(dir, config.memory_limit_mib)?;
        let keys =
            DedupKeys::open(&dir.join("dedup-keys.redb"), config.dedup_cache_mib << 20, config.dedup_window_days)
                .map_err(|e| WarehouseError::Write(e.to_string()))?;
        import_keys(&db, &keys)?;
        let loaded_seq = db.loaded_seq()?;
        let log_dir = dir.join("ingest-log");
        let recovered = IngestLog::open(&log_dir, loaded_seq).map_err(|e| WarehouseError::Write(e.to_string()))?;
        let mut rows = Vec::new();
        let mut refused = 0;
        for record in &recovered.records {
            let logged: Vec<Row> = record
                .rows
                .iter()
                .map(|r| Row { table: r.table.clone(), insert_id: r.insert_id.clone(), json: r.json.clone() })
                .collect();
            let (staged, report) = stage(&logged, record.committed_at_us);
            refused += report.refused.len();
            rows.extend(staged.into_iter().map(|(_, s)| s));
        }
        if refused > 0 {
            // Only a schema that changed between versions can refuse a row it once accepted.
            tracing::error!(refused, "ingest log: rows logged by an earlier version no longer fit their tables");
        }
        if !recovered.records.is_empty() || recovered.cut_bytes > 0 {
            tracing::info!(
                records = recovered.records.len(),
                rows = rows.len(),
                cut_bytes = recovered.cut_bytes,
                "ingest log: loading what was acked but not loaded before the last stop"
            );
        }
        let log = recovered.log;
        let backlog = Backlog { rows, logged_seq: log.last_seq(), loaded_seq, ..Backlog::default() };
        let shared = Arc::new(Shared { backlog: Mutex::new(backlog), work: Condvar::new(), loaded: Condvar::new() });
        let readers = db.reader()?;
        let loader = {
            let (shared, metrics) = (Arc::clone(&shared), Arc::clone(&metrics));
            std::thread::Builder::new()
                .name("warehouse-loader".into())
                .spawn(move || load_loop(&mut Loader { db, keys, loaded_seq }, &shared, config.interval, &metrics))
                .map_err(|e| WarehouseError::Write(format!("starting the loader: {e}")))?
        };
        Ok(Self { log, shared, loader: Some(loader), max_unloaded_rows: config.max_unloaded_rows, readers, metrics })
    }

    /// Another connection to the warehouse, for reads.
    pub fn reader(&self) -> Result<duckdb::Connection, WarehouseError> {
        self.readers.try_clone().map_err(|e| WarehouseError::Write(e.to_string()))
    }

    /// A handle to wait for loads with.
    pub fn watermark(&self) -> LoadWatermark {
        LoadWatermark(Arc::clone(&self.shared))
    }
}

impl Warehouse for Embedded {
    fn write(&mut self, rows: &[Row]) -> Result<WriteReport, WarehouseError> {
        let loaded_seq = {
            let b = self.shared.lock();
            if b.rows.len() >= self.max_unloaded_rows {
                return Err(WarehouseError::Write(format!(
                    "the loader is {} rows behind (sink.max_unloaded_rows); retry later",
                    b.rows.len()
                )));
            }
            b.loaded_seq
        };
        if let Err(e) = self.log.release(loaded_seq) {
            tracing::warn!(error = %e, "ingest log: deleting a loaded segment failed");
        }
        let now = chrono::Utc::now().timestamp_micros();
        let (accepted, mut report) = stage(rows, now);
        if accepted.is_empty() {
            return Ok(report);
        }
        let logged: Vec<LogRow<'_>> = accepted
            .iter()
            .map(|&(i, _)| LogRow { table: &rows[i].table, insert_id: &rows[i].insert_id, json: &rows[i].json })
            .collect();
        let started = Instant::now();
        let seq = self.log.append(now, &logged).map_err(|e| WarehouseError::Write(e.to_string()))?;
        self.metrics.log_append_seconds.observe(started.elapsed().as_secs_f64());
        report.inserted = accepted.len();
        let mut b = self.shared.lock();
        b.rows.extend(accepted.into_iter().map(|(_, s)| s));
        b.logged_seq = seq;
        self.metrics.unloaded_rows.set(i64::try_from(b.rows.len()).unwrap_or(i64::MAX));
        self.shared.work.notify_one();
        Ok(report)
    }
}

impl Drop for Embedded {
    /// Loads what is logged, then stops the loader.
    fn drop(&mut self) {
        self.shared.lock().closing = true;
        self.shared.work.notify_one();
        if let Some(loader) = self.loader.take()
            && loader.join().is_err()
        {
            tracing::error!("warehouse loader panicked; the ingest log is loaded at the next start");
        }
    }
}

/// Fills a key store that has not seen the rows stored before it existed (a data dir from a version
/// that deduped with DuckDB's primary key, or a lost key file) with their insert ids.
fn import_keys(db: &DuckDb, keys: &DedupKeys) -> Result<(), WarehouseError> {
    let failed = |e: super::dedup::DedupError| WarehouseError::Write(e.to_string());
    if keys.imported().map_err(failed)? {
        return Ok(());
    }
    let (started, today) = (Instant::now(), dedup::today());
    let mut imported = 0;
    for table in schema::builtin().iter().filter(|t| t.keyed.is_none()) {
        let mut so_far = 0_u64;
        imported += db.stored_insert_ids(table.name, |ids| {
            keys.import(ids.iter().map(|id| (table.name, id.as_str())), today, false).map_err(failed)?;
            let before = so_far;
            so_far += ids.len() as u64;
            if so_far / 1_000_000 > before / 1_000_000 {
                tracing::info!(
                    table = table.name,
                    keys = so_far,
                    "dedup keys: importing the insert ids already stored (once)"
                );
            }
            Ok(())
        })?;
    }
    keys.import([], today, true).map_err(failed)?;
    if imported > 0 {
        tracing::info!(
            keys = imported,
            seconds = started.elapsed().as_secs(),
            "dedup keys: imported the insert ids already stored"
        );
    }
    Ok(())
}

/// The loader's side of the warehouse.
struct Loader {
    db: DuckDb,
    keys: DedupKeys,
    /// The last ingest-log record whose rows are in the tables (DuckDB's checkpoint).
    loaded_seq: u64,
}

impl Loader {
    /// Drops the append-only rows whose insert id is stored already (claiming the others for this load)
    /// and loads what is left, with `seq` as the checkpoint. Returns the rows inserted and skipped, and
    /// on failure the rows to load again.
    fn load(&mut self, rows: Vec<Staged>, seq: u64) -> Result<(usize, usize), (WarehouseError, Vec<Staged>)> {
        let tables = schema::builtin();
        let append_only = |r: &Staged| tables[r.table].keyed.is_none();
        let claims = rows.iter().filter(|r| append_only(r)).map(|r| (tables[r.table].name, r.insert_id()));
        let fresh = match self.keys.claim(claims, seq, self.loaded_seq, dedup::today()) {
            Ok(fresh) => fresh,
            Err(e) => return Err((WarehouseError::Write(e.to_string()), rows)),
        };
        let mut fresh = fresh.into_iter();
        let total = rows.len();
        let rows: Vec<Staged> = rows.into_iter().filter(|r| !append_only(r) || fresh.next().unwrap_or(true)).collect();
        let dropped = total - rows.len();
        match self.db.load(&rows, Some(seq)) {
            Ok((inserted, duplicates)) => {
                self.loaded_seq = seq;
                Ok((inserted, duplicates + dropped))
            }
            // The duplicates dropped stay dropped; the claims of the rest are taken again next time.
            Err(e) => Err((e, rows)),
        }
    }
}

/// Waits for rows, lets them gather for up to `interval` since the last load began, loads them.
fn load_loop(loader: &mut Loader, shared: &Shared, interval: Duration, metrics: &Metrics) {
    let mut last = Instant::now();
    let mut failures = 0_u32;
    loop {
        let (rows, seq) = {
            let mut b = shared.lock();
            while b.rows.is_empty() && !b.closing {
                b = shared.work.wait(b).unwrap_or_else(std::sync::PoisonError::into_inner);
            }
            if b.rows.is_empty() {
                break;
            }
            let deadline = last + interval;
            while !b.urgent && !b.closing && b.rows.len() < LOAD_EARLY_ROWS {
                let Some(left) = deadline.checked_duration_since(Instant::now()) else { break };
                b = shared.work.wait_timeout(b, left).unwrap_or_else(std::sync::PoisonError::into_inner).0;
            }
            b.urgent = false;
            (std::mem::take(&mut b.rows), b.logged_seq)
        };
        last = Instant::now();
        let count = rows.len();
        match loader.load(rows, seq) {
            Ok((inserted, duplicates)) => {
                failures = 0;
                metrics.load_seconds.observe(last.elapsed().as_secs_f64());
                #[expect(clippy::cast_precision_loss, reason = "a histogram of batch sizes")]
                metrics.load_rows.observe(count as f64);
                metrics.rows_duplicate.inc_by(duplicates as u64);
                tracing::trace!(rows = count, inserted, duplicates, seq, "loaded");
                let mut b = shared.lock();
                b.loaded_seq = seq;
                metrics.unloaded_rows.set(i64::try_from(b.rows.len()).unwrap_or(i64::MAX));
                shared.loaded.notify_all();
            }
            Err((e, rows)) => {
                failures += 1;
                let wait = Duration::from_millis(100 * 2_u64.pow(failures.min(6)));
                tracing::warn!(error = %e, rows = rows.len(), retry_in_ms = wait.as_millis(), "loading logged rows into DuckDB failed; they stay logged");
                metrics.load_failures.inc();
                let mut b = shared.lock();
                let newer = std::mem::replace(&mut b.rows, rows);
                b.rows.extend(newer);
                let closing = b.closing;
                drop(b);
                if closing && failures > 3 {
                    tracing::error!("giving up loading at shutdown; the ingest log is loaded at the next start");
                    break;
                }
                std::thread::sleep(wait);
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn event(id: &str) -> Row {
        Row {
            table: "streaming_events".into(),
            insert_id: id.into(),
            json: format!(r#"{{"event_id":"{id}","event_type":"t","timestamp":"2024-01-01T10:00:00Z"}}"#),
        }
    }

    fn count(conn: &duckdb::Connection) -> i64 {
        conn.query_row("SELECT count(*) FROM streaming_events", [], |r| r.get(0)).expect("count")
    }

    fn temp(name: &str) -> std::path::PathBuf {
        let dir = std::env::temp_dir().join(format!("tributary-embedded-{}-{name}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        dir
    }

    const CONFIG: LoadConfig = LoadConfig {
        interval: Duration::from_millis(20),
        max_unloaded_rows: 1_000,
        memory_limit_mib: 64,
        dedup_cache_mib: 4,
        dedup_window_days: 7,
    };

    #[test]
    fn acked_rows_are_loaded_once_and_readers_can_wait_for_them() {
        let dir = temp("load");
        let mut w = Embedded::open(&dir, CONFIG, Metrics::new()).expect("open");
        let report = w.write(&[event("a"), event("b"), event("a")]).expect("write");
        assert_eq!((report.inserted, report.duplicates), (2, 1));
        w.write(&[event("b"), event("c")]).expect("write");
        assert!(w.watermark().wait_loaded(Duration::from_secs(5)));
        let reader = w.reader().expect("reader");
        assert_eq!(count(&reader), 3, "b's second copy is a duplicate");
    }

    #[test]
    fn a_crash_before_the_load_loses_nothing_and_duplicates_nothing() {
        let dir = temp("crash");
        {
            let mut w = Embedded::open(&dir, CONFIG, Metrics::new()).expect("open");
            w.write(&[event("1"), event("2")]).expect("write");
            assert!(w.watermark().wait_loaded(Duration::from_secs(5)));
            // A record acked but not loaded, as after a kill -9 between the fdatasync and the load:
            // written to the log behind the loader's back.
            w.log
                .append(0, &[LogRow { table: "streaming_events", insert_id: "3", json: &event("3").json }])
                .expect("log");
            w.log
                .append(0, &[LogRow { table: "streaming_events", insert_id: "2", json: &event("2").json }])
                .expect("log");
            w.log
                .append(0, &[LogRow { table: "streaming_events", insert_id: "4", json: &event("4").json }])
                .expect("log");
            // Skip Drop's final load, as a crash would.
            w.shared.lock().closing = true;
            w.shared.work.notify_one();
            if let Some(l) = w.loader.take() {
                l.join().expect("loader");
            }
            // "4" as a load leaves it when it dies between claiming its keys and its DuckDB commit.
            let mut keys = DedupKeys::open(&dir.join("dedup-keys.redb"), 1 << 20, 7).expect("keys");
            assert_eq!(keys.claim([("streaming_events", "4")], 1_000, 1, dedup::today()).expect("claim"), [true]);
            // The reader's database handle goes too; the log's file handle is left open, like a crash.
            drop(std::mem::replace(&mut w.readers, duckdb::Connection::open_in_memory().expect("memory")));
            std::mem::forget(w);
        }
        let w = Embedded::open(&dir, CONFIG, Metrics::new()).expect("reopen");
        assert!(w.watermark().wait_loaded(Duration::from_secs(5)));
        assert_eq!(count(&w.reader().expect("reader")), 4);
        drop(w);
        // Everything loaded: a third start replays nothing.
        let mut w = Embedded::open(&dir, CONFIG, Metrics::new()).expect("reopen");
        assert_eq!(w.shared.lock().rows.len(), 0);
        assert_eq!(count(&w.reader().expect("reader")), 4);
        // And the keys stay known: redeliveries after the restart are duplicates.
        let report = w.write(&[event("1"), event("4"), event("5")]).expect("write");
        assert_eq!(report.inserted, 3, "the log takes them; the loader drops the duplicates");
        assert!(w.watermark().wait_loaded(Duration::from_secs(5)));
        assert_eq!(count(&w.reader().expect("reader")), 5);
    }

    #[test]
    fn rows_stored_before_the_key_store_existed_are_known_to_it() {
        let dir = temp("import");
        {
            // A data dir of a version that deduped with DuckDB's primary key.
            std::fs::create_dir_all(&dir).expect("dir");
            let conn = duckdb::Connection::open(dir.join("warehouse.duckdb")).expect("old db");
            let events = schema::find("streaming_events").expect("table");
            conn.execute_batch(&super::super::duckdb::create_table(events, super::super::duckdb::Dedup::PrimaryKey))
                .expect("old table");
            conn.execute(
                "INSERT INTO streaming_events (event_id, event_type, \"timestamp\", _insert_id, _inserted_at) VALUES ('old', 't', now(), 'old', now())",
                [],
            )
            .expect("old row");
        }
        let mut w = Embedded::open(&dir, CONFIG, Metrics::new()).expect("open");
        w.write(&[event("old"), event("new")]).expect("write");
        assert!(w.watermark().wait_loaded(Duration::from_secs(5)));
        assert_eq!(count(&w.reader().expect("reader")), 2, "the old row's redelivery is a duplicate");
        drop(w);
        // A lost key file is rebuilt from the tables the same way.
        std::fs::remove_file(dir.join("dedup-keys.redb")).expect("remove");
        let mut w = Embedded::open(&dir, CONFIG, Metrics::new()).expect("reopen");
        w.write(&[event("old"), event("new"), event("newer")]).expect("write");
        assert!(w.watermark().wait_loaded(Duration::from_secs(5)));
        assert_eq!(count(&w.reader().expect("reader")), 3);
    }

    #[test]
    fn a_loader_too_far_behind_refuses_writes() {
        let dir = temp("behind");
        let mut w = Embedded::open(
            &dir,
            LoadConfig { interval: Duration::from_secs(3600), max_unloaded_rows: 2, ..CONFIG },
            Metrics::new(),
        )
        .expect("open");
        w.write(&[event("1"), event("2")]).expect("write");
        let err = w.write(&[event("3")]).expect_err("behind");
        assert!(err.to_string().contains("max_unloaded_rows"), "{err}");
    }
}
