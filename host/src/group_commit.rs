//! Group commit: rows of concurrent pushes are coalesced into one warehouse transaction per flush,
//! and each waiting push is released when the flush that holds its rows commits.
//!
//! A flush closes at `max_rows`, at `max_bytes`, or `linger` after its first row (everything already
//! queued joins at once: while one flush commits, the next one fills). The queue is bounded in rows
//! (`max_queued_rows`) and in bytes (`max_queued_mib`): a write that does not fit is refused with `Overloaded` at once — answered 429,
//! redelivered by Pub/Sub — so memory stays bounded and nothing is dropped. The warehouse lives on one
//! dedicated thread: its calls block, and a single writer keeps commits in order.

use std::sync::{Arc, Mutex};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use serde::Deserialize;
use tokio::runtime::Handle;
use tokio::sync::{OwnedSemaphorePermit, Semaphore, mpsc, oneshot};
use tributary_model::{self as model, Row, RowError, WriteError, WriteOutcome};

use crate::metrics::{Metrics, ResultLabels, TableLabels};
use crate::warehouse::{Warehouse, schema};

/// Group commit: rows of concurrent pushes share one warehouse transaction.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct SinkConfig {
    /// `embedded`, `bigquery-insertall` or `bigquery-write`.
    pub backend: crate::warehouse::Backend,
    /// Flush once this many rows are waiting.
    pub max_rows: usize,
    /// Flush once the waiting rows' JSON reaches this many bytes.
    pub max_bytes: usize,
    /// After the first row of a flush arrives, wait at most this long for more, in ms. 0 flushes
    /// whatever is queued as soon as the previous flush is done (natural batching). Default: 0 for the
    /// embedded warehouse (a flush costs one fdatasync, so rows gather while it runs), 2 for BigQuery
    /// (fuller requests).
    pub linger_ms: Option<u64>,
    /// Rows waiting for a flush, at most. Beyond it pushes are answered 429 so Pub/Sub slows down.
    pub max_queued_rows: usize,
    /// Rows' bytes waiting for a flush, at most, in MiB (rows can be up to a Pub/Sub message each, so
    /// rows alone do not bound memory). Beyond it pushes are answered 429 too.
    pub max_queued_mib: usize,
    /// A write not committed within this many ms is answered 503 (and retried by Pub/Sub).
    pub write_timeout_ms: u64,
    /// Embedded warehouse: how often the loader moves acked rows from the ingest log into DuckDB, in
    /// ms (queries see a row at most about this long after its ack).
    pub load_interval_ms: u64,
    /// Embedded warehouse: rows acked but not yet loaded into DuckDB, at most (held in memory for the
    /// loader). Beyond it writes are answered 503 until the loader catches up.
    pub max_unloaded_rows: usize,
    /// Embedded warehouse: DuckDB's memory limit in MiB (its buffer pool: the table blocks it caches,
    /// the parts of the dedup key index a load touches, query operators, which spill to disk beyond
    /// it). Without it DuckDB caches every block it writes, up to 80% of the machine's RAM.
    pub duckdb_memory_mib: usize,
    /// Embedded warehouse: the page cache of the dedup key store (every insert id stored, on disk), in
    /// MiB.
    pub dedup_cache_mib: usize,
    /// Embedded warehouse: a redelivery is dropped if its first copy came at most this many days
    /// before (keys older than that are swept from the key store). Pub/Sub redelivers for as long as a
    /// subscription retains a message, 7 days at most; raise it if you seek further back. 0 keeps
    /// every key for ever.
    pub dedup_window_days: u32,
}

impl Default for SinkConfig {
    fn default() -> Self {
        Self {
            backend: crate::warehouse::Backend::Embedded,
            max_rows: 1_000,
            max_bytes: 8 << 20,
            linger_ms: None,
            max_queued_rows: 50_000,
            max_queued_mib: 256,
            write_timeout_ms: 8_000,
            load_interval_ms: 100,
            max_unloaded_rows: 200_000,
            duckdb_memory_mib: 256,
            dedup_cache_mib: 64,
            dedup_window_days: 7,
        }
    }
}

/// The smallest DuckDB memory limit the embedded warehouse accepts.
const MIN_DUCKDB_MEMORY_MIB: usize = 64;

impl SinkConfig {
    /// Checks the caps against each other.
    pub fn validate(&self) -> Result<(), String> {
        if self.max_rows == 0 || self.max_bytes == 0 {
            return Err("sink.max_rows and sink.max_bytes must be at least 1".into());
        }
        if self.max_queued_rows < self.max_rows {
            return Err(format!(
                "sink.max_queued_rows ({}) must be at least sink.max_rows ({})",
                self.max_queued_rows, self.max_rows
            ));
        }
        if self.load_interval_ms > 1_000 {
            return Err(format!(
                "sink.load_interval_ms ({}) must be at most 1000: queries must see a row within a second of its ack",
                self.load_interval_ms
            ));
        }
        if self.max_unloaded_rows < self.max_rows {
            return Err(format!(
                "sink.max_unloaded_rows ({}) must be at least sink.max_rows ({})",
                self.max_unloaded_rows, self.max_rows
            ));
        }
        if self.duckdb_memory_mib < MIN_DUCKDB_MEMORY_MIB {
            return Err(format!(
                "sink.duckdb_memory_mib ({}) must be at least {MIN_DUCKDB_MEMORY_MIB}: a load and the dashboard's queries need room",
                self.duckdb_memory_mib
            ));
        }
        if self.max_queued_mib.saturating_mul(1 << 20) < self.max_bytes {
            return Err(format!(
                "sink.max_queued_mib ({}) must hold at least sink.max_bytes ({} bytes)",
                self.max_queued_mib, self.max_bytes
            ));
        }
        Ok(())
    }

    pub fn linger(&self) -> Duration {
        let default = if self.backend == crate::warehouse::Backend::Embedded { 0 } else { 2 };
        Duration::from_millis(self.linger_ms.unwrap_or(default))
    }

    /// The embedded warehouse's loader settings.
    pub fn load(&self) -> crate::warehouse::embedded::LoadConfig {
        crate::warehouse::embedded::LoadConfig {
            interval: Duration::from_millis(self.load_interval_ms),
            max_unloaded_rows: self.max_unloaded_rows,
            memory_limit_mib: self.duckdb_memory_mib,
            dedup_cache_mib: self.dedup_cache_mib,
            dedup_window_days: self.dedup_window_days,
        }
    }

    pub fn write_timeout(&self) -> Duration {
        Duration::from_millis(self.write_timeout_ms)
    }
}

/// One write waiting for its flush.
struct Pending {
    rows: Vec<Row>,
    bytes: usize,
    reply: oneshot::Sender<WriteOutcome>,
    _permits: (OwnedSemaphorePermit, OwnedSemaphorePermit),
}

/// A handle to the group commit; cheap to clone.
#[derive(Clone)]
pub struct GroupCommit {
    inner: Arc<Inner>,
}

struct Inner {
    tx: Mutex<Option<mpsc::UnboundedSender<Pending>>>,
    queue: Arc<Semaphore>,
    capacity: usize,
    /// The queue's bytes, in KiB permits.
    queue_kib: Arc<Semaphore>,
    capacity_kib: usize,
    config: SinkConfig,
    metrics: Arc<Metrics>,
}

/// The flusher thread; [`FlusherThread::join`] waits for the last flush after [`GroupCommit::close`].
pub struct FlusherThread(JoinHandle<()>);

impl FlusherThread {
    pub fn join(self) {
        if self.0.join().is_err() {
            tracing::error!("group-commit flusher panicked");
        }
    }
}

impl GroupCommit {
    /// Starts the flusher thread in front of `warehouse`. Call from inside a tokio runtime.
    pub fn start(
        mut warehouse: Box<dyn Warehouse>,
        config: SinkConfig,
        metrics: Arc<Metrics>,
    ) -> (Self, FlusherThread) {
        let (tx, mut rx) = mpsc::unbounded_channel();
        let capacity = config.max_queued_rows;
        let queue = Arc::new(Semaphore::new(capacity));
        let capacity_kib = config.max_queued_mib.saturating_mul(1024).min(Semaphore::MAX_PERMITS);
        let inner = Arc::new(Inner {
            tx: Mutex::new(Some(tx)),
            queue,
            capacity,
            queue_kib: Arc::new(Semaphore::new(capacity_kib)),
            capacity_kib,
            config: config.clone(),
            metrics: Arc::clone(&metrics),
        });
        let runtime = Handle::current();
        let queue = Arc::clone(&inner.queue);
        let thread = std::thread::Builder::new()
            .name("group-commit".into())
            .spawn(move || {
                while let Some(batch) = runtime.block_on(collect(&mut rx, &config)) {
                    flush(warehouse.as_mut(), batch, &metrics);
                    // The batch's permits are back: the queue gauge follows.
                    metrics.queue_rows.set(queued(&queue, capacity));
                }
                tracing::debug!("group-commit flusher done");
            })
            .expect("spawning the group-commit thread");
        (Self { inner }, FlusherThread(thread))
    }

    /// Writes `rows`; returns once they are committed (or refused), or with the reason nothing was.
    pub async fn write(&self, rows: Vec<Row>) -> WriteOutcome {
        if rows.is_empty() {
            return Ok(Vec::new());
        }
        let inner = &self.inner;
        // A single write larger than the whole queue still goes through, alone.
        let wanted = u32::try_from(rows.len().min(inner.capacity)).unwrap_or(u32::MAX);
        let permit = Arc::clone(&inner.queue).try_acquire_many_owned(wanted).map_err(|_| {
            WriteError::Overloaded(format!(
                "write queue full: {} of {} rows waiting; retry later",
                queued(&inner.queue, inner.capacity),
                inner.capacity
            ))
        })?;
        let bytes: usize = rows.iter().map(|r| r.json.len() + r.insert_id.len()).sum();
        // Likewise a single write larger than the whole byte budget goes through alone.
        let kib = u32::try_from(bytes.div_ceil(1024).clamp(1, inner.capacity_kib)).unwrap_or(u32::MAX);
        let bytes_permit = Arc::clone(&inner.queue_kib).try_acquire_many_owned(kib).map_err(|_| {
            WriteError::Overloaded(format!(
                "write queue full: {} of {} MiB waiting; retry later",
                queued(&inner.queue_kib, inner.capacity_kib) / 1024,
                inner.config.max_queued_mib
            ))
        })?;
        inner.metrics.queue_rows.set(queued(&inner.queue, inner.capacity));
        let (reply, answer) = oneshot::channel();
        let pending = Pending { rows, bytes, reply, _permits: (permit, bytes_permit) };
        let sent = matches!(inner.tx.lock().map(|tx| tx.as_ref().map(|tx| tx.send(pending))), Ok(Some(Ok(()))));
        if !sent {
            return Err(WriteError::Unavailable("the host is shutting down".into()));
        }
        match tokio::time::timeout(inner.config.write_timeout(), answer).await {
            Ok(Ok(outcome)) => outcome,
            Ok(Err(_)) => Err(WriteError::Unavailable("the group-commit flusher stopped".into())),
            // The flush may still commit: the redelivery is then deduped on insert id.
            Err(_) => {
                Err(WriteError::Unavailable(format!("write not committed within {} ms", inner.config.write_timeout_ms)))
            }
        }
    }

    /// Refuses new writes; queued ones are still flushed. The flusher thread exits after the last.
    /// Whether the flusher thread is still there to commit writes (it drops its end when it dies).
    pub fn writer_alive(&self) -> bool {
        self.inner.tx.lock().ok().is_some_and(|tx| tx.as_ref().is_some_and(|tx| !tx.is_closed()))
    }

    pub fn close(&self) {
        if let Ok(mut tx) = self.inner.tx.lock() {
            tx.take();
        }
    }
}

/// Rows waiting for a flush: the queue's permits that are taken.
fn queued(queue: &Semaphore, capacity: usize) -> i64 {
    i64::try_from(capacity - queue.available_permits()).unwrap_or(i64::MAX)
}

/// Waits for the first write, then gathers more until a cap or the linger deadline.
async fn collect(rx: &mut mpsc::UnboundedReceiver<Pending>, config: &SinkConfig) -> Option<Vec<Pending>> {
    let first = rx.recv().await?;
    let deadline = tokio::time::Instant::now() + config.linger();
    let (mut rows, mut bytes) = (first.rows.len(), first.bytes);
    let mut batch = vec![first];
    while rows < config.max_rows && bytes < config.max_bytes {
        let next = match rx.try_recv() {
            Ok(p) => Some(p),
            Err(mpsc::error::TryRecvError::Disconnected) => None,
            Err(mpsc::error::TryRecvError::Empty) => tokio::time::timeout_at(deadline, rx.recv()).await.ok().flatten(),
        };
        let Some(p) = next else { break };
        rows += p.rows.len();
        bytes += p.bytes;
        batch.push(p);
    }
    Some(batch)
}

/// One warehouse transaction for the whole batch, then every waiting write gets its answer.
fn flush(warehouse: &mut dyn Warehouse, mut batch: Vec<Pending>, metrics: &Metrics) {
    let mut rows = Vec::with_capacity(batch.iter().map(|p| p.rows.len()).sum());
    let mut starts = Vec::with_capacity(batch.len());
    for p in &mut batch {
        starts.push(rows.len());
        rows.append(&mut p.rows);
    }
    let started = Instant::now();
    let result = warehouse.write(&rows);
    metrics.flush_seconds.observe(started.elapsed().as_secs_f64());
    #[expect(clippy::cast_precision_loss, reason = "a histogram of batch sizes")]
    metrics.flush_rows.observe(rows.len() as f64);
    match result {
        Ok(report) => {
            let result = if report.failed.is_empty() { "committed" } else { "partial" };
            metrics.flushes.get_or_create(&ResultLabels { result: result.into() }).inc();
            metrics.rows_duplicate.inc_by(report.duplicates as u64);
            // The write whose rows start at or before an index owns it.
            let owner_of = |index: usize| starts.partition_point(|&s| s <= index).saturating_sub(1);
            let mut refused_by_write: Vec<Vec<RowError>> = vec![Vec::new(); batch.len()];
            let mut failed_by_write: Vec<Option<String>> = vec![None; batch.len()];
            // Rows refused, or in a part of the write that failed: not written.
            let mut refused = vec![false; rows.len()];
            for failure in &report.failed {
                tracing::warn!(error = %failure.error, rows = failure.rows.len(), "part of a flush failed; its pushes will be redelivered");
                for &index in &failure.rows {
                    if let Some(flag) = refused.get_mut(index) {
                        *flag = true;
                        failed_by_write[owner_of(index)].get_or_insert_with(|| failure.error.clone());
                    }
                }
            }
            for mut e in report.refused {
                let index = e.index as usize;
                if let Some(flag) = refused.get_mut(index) {
                    *flag = true;
                }
                let owner = owner_of(index);
                e.index = u32::try_from(index - starts[owner]).unwrap_or(u32::MAX);
                metrics.rows_refused.get_or_create(&TableLabels { table: rows[index].table.clone() }).inc();
                refused_by_write[owner].push(e);
            }
            // Count per table first: one label lookup per table and flush, not per row.
            let mut written: Vec<(&str, u64)> = Vec::new();
            for (row, _) in rows.iter().zip(&refused).filter(|(_, r)| !**r) {
                match written.iter_mut().find(|(t, _)| *t == row.table) {
                    Some((_, n)) => *n += 1,
                    None => written.push((&row.table, 1)),
                }
            }
            for (table, n) in written {
                metrics.rows_written.get_or_create(&TableLabels { table: table.to_owned() }).inc_by(n);
            }
            for ((p, errors), failed) in batch.into_iter().zip(refused_by_write).zip(failed_by_write) {
                // The queue space is free before the writer hears back. The push may have timed out
                // already; its rows are durable regardless.
                let Pending { reply, _permits: permit, .. } = p;
                drop(permit);
                let _ = reply.send(match failed {
                    // Part of this write is undecided: all of it is retried (its written rows dedup).
                    Some(error) => Err(WriteError::Unavailable(error)),
                    None => Ok(errors),
                });
            }
        }
        Err(e) => {
            metrics.flushes.get_or_create(&ResultLabels { result: "failed".into() }).inc();
            tracing::warn!(error = %e, rows = rows.len(), "flush failed; the pushes will be redelivered");
            for Pending { reply, _permits: permit, .. } in batch {
                drop(permit);
                let _ = reply.send(Err(WriteError::Unavailable(e.to_string())));
            }
        }
    }
}

/// Whether a row is a write or an upsert.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Mode {
    Append,
    Upsert,
}

/// Why `row` cannot be written with `mode`, if it cannot. Unknown tables pass: the warehouse names them.
pub fn mode_refusal(row: &model::Row, mode: Mode) -> Option<String> {
    let table = schema::find(&row.table)?;
    match (mode, table.keyed) {
        (Mode::Append, Some(_)) => Some(format!("table {} is keyed: write it with upsert", row.table)),
        (Mode::Upsert, None) => Some(format!("table {} is append-only: write it with write, not upsert", row.table)),
        (Mode::Upsert, Some(keyed)) => {
            let key =
                serde_json::from_str::<serde_json::Value>(&row.json).ok().and_then(|v| match v.get(keyed.key)? {
                    serde_json::Value::String(s) => Some(s.clone()),
                    other => Some(other.to_string()),
                });
            (key.as_deref() != Some(row.insert_id.as_str())).then(|| {
                format!(
                    "an upsert's insert id must be its key: {} is '{}', the insert id '{}'",
                    keyed.key,
                    key.unwrap_or_default(),
                    row.insert_id
                )
            })
        }
        (Mode::Append, None) => None,
    }
}

impl GroupCommit {
    /// Writes `rows` with `mode`: refuses the misdirected ones, group-commits the others, and reports
    /// every refusal by its index in `rows`.
    pub async fn write_mode(&self, rows: Vec<model::Row>, mode: Mode) -> model::WriteOutcome {
        let mut refused = Vec::new();
        let mut kept = Vec::with_capacity(rows.len());
        let mut positions = Vec::with_capacity(rows.len());
        for (i, row) in rows.into_iter().enumerate() {
            let index = u32::try_from(i).unwrap_or(u32::MAX);
            match mode_refusal(&row, mode) {
                Some(message) => {
                    refused.push(model::RowError { index, reason: "invalid".into(), location: None, message })
                }
                None => {
                    positions.push(index);
                    kept.push(row);
                }
            }
        }
        for mut e in self.write(kept).await? {
            e.index = positions.get(e.index as usize).copied().unwrap_or(e.index);
            refused.push(e);
        }
        refused.sort_by_key(|e| e.index);
        Ok(refused)
    }
}

#[cfg(test)]
mod tests {
    use std::sync::atomic::{AtomicUsize, Ordering};

    use super::*;
    use crate::warehouse::{WarehouseError, WriteReport};

    /// FAULT INJECTION double: records flush sizes, refuses rows whose JSON is `"bad"`, reports rows whose
    /// JSON is `"down"` as failed (a table whose requests fail), fails whole flushes
    /// while `fail` is set, and blocks while the test holds `gate`.
    #[derive(Clone, Default)]
    struct Recorder {
        flushes: Arc<Mutex<Vec<usize>>>,
        fail: Arc<AtomicUsize>,
        gate: Arc<Mutex<()>>,
    }

    impl Warehouse for Recorder {
        fn write(&mut self, rows: &[Row]) -> Result<WriteReport, WarehouseError> {
            std::thread::sleep(std::time::Duration::from_millis(5));
            let _open = self.gate.lock().expect("gate");
            if self.fail.load(Ordering::SeqCst) > 0 {
                return Err(WarehouseError::Write("boom".into()));
            }
            self.flushes.lock().expect("lock").push(rows.len());
            let refused = rows
                .iter()
                .enumerate()
                .filter(|(_, r)| r.json == "bad")
                .map(|(i, _)| RowError {
                    index: i as u32,
                    reason: "invalid".into(),
                    location: None,
                    message: "bad".into(),
                })
                .collect();
            let down: Vec<usize> = rows.iter().enumerate().filter(|(_, r)| r.json == "down").map(|(i, _)| i).collect();
            let failed = if down.is_empty() {
                vec![]
            } else {
                vec![crate::warehouse::Failed { rows: down, error: "table t2: backend down".into() }]
            };
            Ok(WriteReport { refused, inserted: rows.len(), duplicates: 0, failed })
        }
    }

    fn row(json: &str) -> Row {
        Row { table: "t".into(), insert_id: json.into(), json: json.into() }
    }

    fn config() -> SinkConfig {
        SinkConfig {
            max_rows: 100,
            max_bytes: 1 << 20,
            linger_ms: Some(20),
            max_queued_rows: 1_000,
            write_timeout_ms: 5_000,
            ..SinkConfig::default()
        }
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn concurrent_writes_share_flushes_and_get_their_own_refusals() {
        let recorder = Recorder::default();
        let (sink, thread) = GroupCommit::start(Box::new(recorder.clone()), config(), Metrics::new());
        let writes: Vec<_> = (0..50)
            .map(|i| {
                let sink = sink.clone();
                tokio::spawn(async move {
                    let rows = if i == 7 { vec![row("ok"), row("bad")] } else { vec![row("ok")] };
                    sink.write(rows).await
                })
            })
            .collect();
        let mut outcomes: Vec<WriteOutcome> = Vec::new();
        for w in writes {
            outcomes.push(w.await.expect("task"));
        }
        for (i, outcome) in outcomes.iter().enumerate() {
            let refused = outcome.as_ref().expect("committed");
            if i == 7 {
                assert_eq!(refused.len(), 1);
                assert_eq!(refused[0].index, 1, "index is local to the write");
            } else {
                assert!(refused.is_empty(), "write {i}: {refused:?}");
            }
        }
        sink.close();
        thread.join();
        let flushes = recorder.flushes.lock().expect("lock").clone();
        assert_eq!(flushes.iter().sum::<usize>(), 51);
        assert!(flushes.len() < 10, "50 concurrent writes should share a few flushes, got {flushes:?}");
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    #[expect(clippy::await_holding_lock, reason = "the held lock is the point: it blocks the flusher thread")]
    async fn a_full_queue_refuses_at_once_and_a_failed_flush_fails_every_write() {
        let recorder = Recorder::default();
        let config = SinkConfig { max_rows: 2, max_queued_rows: 2, ..config() };
        let (sink, thread) = GroupCommit::start(Box::new(recorder.clone()), config, Metrics::new());
        // Hold the warehouse so the first write stays queued.
        let gate = Arc::clone(&recorder.gate);
        let held = gate.lock().expect("lock");
        let first = tokio::spawn({
            let sink = sink.clone();
            async move { sink.write(vec![row("a"), row("b")]).await }
        });
        while sink.inner.queue.available_permits() > 0 {
            tokio::task::yield_now().await;
        }
        let refused = sink.write(vec![row("c")]).await;
        assert!(
            matches!(&refused, Err(WriteError::Overloaded(m)) if m == "write queue full: 2 of 2 rows waiting; retry later"),
            "{refused:?}"
        );
        drop(held);
        assert_eq!(first.await.expect("task"), Ok(vec![]));

        recorder.fail.store(1, Ordering::SeqCst);
        assert!(matches!(sink.write(vec![row("d")]).await, Err(WriteError::Unavailable(m)) if m.contains("boom")));
        sink.close();
        assert!(matches!(sink.write(vec![row("e")]).await, Err(WriteError::Unavailable(_))));
        thread.join();
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    #[expect(clippy::await_holding_lock, reason = "the held lock is the point: it blocks the flusher thread")]
    async fn the_queue_is_bounded_in_bytes_too() {
        let recorder = Recorder::default();
        let config = SinkConfig { max_queued_mib: 1, ..config() };
        let (sink, thread) = GroupCommit::start(Box::new(recorder.clone()), config, Metrics::new());
        let gate = Arc::clone(&recorder.gate);
        let held = gate.lock().expect("lock");
        // 700 KiB waits (the warehouse is held); another 700 KiB does not fit in 1 MiB, a small row does.
        let big = || Row { table: "t".into(), insert_id: "big".into(), json: "x".repeat(700 << 10) };
        let first = tokio::spawn({
            let sink = sink.clone();
            async move { sink.write(vec![big()]).await }
        });
        while sink.inner.queue_kib.available_permits() == sink.inner.capacity_kib {
            tokio::task::yield_now().await;
        }
        let refused = sink.write(vec![big()]).await;
        assert!(matches!(&refused, Err(WriteError::Overloaded(m)) if m.contains("MiB waiting")), "{refused:?}");
        let small = tokio::spawn({
            let sink = sink.clone();
            async move { sink.write(vec![row("small")]).await }
        });
        drop(held);
        assert_eq!(first.await.expect("task"), Ok(vec![]));
        assert_eq!(small.await.expect("task"), Ok(vec![]));
        assert_eq!(sink.inner.queue_kib.available_permits(), sink.inner.capacity_kib, "every byte permit is back");
        sink.close();
        thread.join();
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn a_failed_part_of_a_flush_fails_only_the_writes_with_rows_in_it() {
        let recorder = Recorder::default();
        let (sink, thread) = GroupCommit::start(Box::new(recorder.clone()), config(), Metrics::new());
        let writes: Vec<_> = (0..40)
            .map(|i| {
                let sink = sink.clone();
                tokio::spawn(async move {
                    let rows = if i % 10 == 3 { vec![row("ok"), row("down")] } else { vec![row("ok"), row("bad")] };
                    sink.write(rows).await
                })
            })
            .collect();
        for (i, w) in writes.into_iter().enumerate() {
            let outcome = w.await.expect("task");
            if i % 10 == 3 {
                assert!(
                    matches!(&outcome, Err(WriteError::Unavailable(m)) if m.contains("backend down")),
                    "{i}: {outcome:?}"
                );
            } else {
                let refused = outcome.expect("settled");
                assert_eq!(refused.iter().map(|e| e.index).collect::<Vec<_>>(), vec![1], "{i}: its own refusal only");
            }
        }
        sink.close();
        thread.join();
        assert!(recorder.flushes.lock().expect("lock").len() < 20, "the writes shared flushes");
    }

    fn keyed_row(table: &str, insert_id: &str, json: &str) -> model::Row {
        model::Row { table: table.into(), insert_id: insert_id.into(), json: json.into() }
    }

    #[test]
    fn each_call_takes_its_own_kind_of_table() {
        let recs = keyed_row("realtime_user_recs", "u1", r#"{"user_id":"u1"}"#);
        assert_eq!(mode_refusal(&recs, Mode::Upsert), None);
        assert!(mode_refusal(&recs, Mode::Append).expect("refused").contains("keyed"));
        let event = keyed_row("streaming_events", "m1", "{}");
        assert!(mode_refusal(&event, Mode::Upsert).expect("refused").contains("append-only"));
        assert_eq!(mode_refusal(&event, Mode::Append), None);
        let wrong_key = keyed_row("realtime_user_recs", "u2", r#"{"user_id":"u1"}"#);
        assert!(mode_refusal(&wrong_key, Mode::Upsert).expect("refused").contains("must be its key"));
    }
}
