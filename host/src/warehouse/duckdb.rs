//! The embedded warehouse: one DuckDB file under the data dir. DuckDB runs the seed's analytics SQL
//! (window functions, JSON extraction, STDDEV, COUNT DISTINCT, timestamp truncation) in-process.
//!
//! Exact dedup on `_insert_id`, two ways:
//! - the file-backed warehouse ([`DuckDb::open`]) stores append-only rows as they come (no primary
//!   key): its caller, [`super::embedded`], has already dropped the duplicates with the dedup key store
//!   ([`super::dedup`]). DuckDB plans `ON CONFLICT` as a hash join against the whole table, so a load
//!   would cost more with every row stored.
//! - the in-memory warehouse of unit tests and tools makes `_insert_id` each table's primary key and
//!   inserts `ON CONFLICT DO NOTHING`.
//!
//! Keyed tables (upserts: one row per key, as many rows as keys, not as events) always have the primary
//! key and insert `ON CONFLICT DO UPDATE ... WHERE` the incoming version is not older. DuckDB allows one writing
//! process per file, so other readers go through the host's admin `/query` route.

use std::collections::HashSet;
use std::path::Path;

use duckdb::Connection;
use duckdb::types::{TimeUnit, Value};
use tributary_model::{Row, RowError};

use super::schema::{self, Cell, TableSchema};
use super::{Warehouse, WarehouseError, WriteReport};

/// The bulk-write path of one table.
struct Staging {
    table: String,
    move_rows: String,
    clear: String,
}

/// The DuckDB warehouse.
pub struct DuckDb {
    conn: Connection,
    tables: &'static [TableSchema],
    /// Per table, in `tables` order: the staging table rows are appended to, the statement that
    /// moves them into the table (skipping insert ids it already has, where the table dedups), and
    /// the one that empties it.
    staging: Vec<Staging>,
}

/// Who drops an append-only row whose insert id a table already has.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Dedup {
    /// DuckDB: `_insert_id` is the primary key, inserts are `ON CONFLICT DO NOTHING`.
    PrimaryKey,
    /// The caller, before [`DuckDb::load`]: rows are inserted as they come.
    Caller,
}

impl DuckDb {
    /// Opens (or creates) `dir/warehouse.duckdb` with DuckDB's memory limited to `memory_limit_mib`
    /// (its buffer pool; operators beyond it spill to `warehouse.duckdb.tmp`) and creates the
    /// built-in tables.
    pub fn open(dir: &Path, memory_limit_mib: usize) -> Result<Self, WarehouseError> {
        std::fs::create_dir_all(dir).map_err(|e| WarehouseError::Write(format!("creating {}: {e}", dir.display())))?;
        let path = dir.join("warehouse.duckdb");
        let config = duckdb::Config::default()
            .max_memory(&format!("{memory_limit_mib}MiB"))
            .map_err(|e| WarehouseError::Write(format!("DuckDB memory limit: {e}")))?;
        let conn = Connection::open_with_flags(&path, config)
            .map_err(|e| WarehouseError::Write(format!("opening {}: {e}", path.display())))?;
        Self::with_connection(conn, Dedup::Caller)
    }

    /// An in-memory warehouse (tests).
    pub fn in_memory() -> Result<Self, WarehouseError> {
        Self::with_connection(Connection::open_in_memory().map_err(db_error)?, Dedup::PrimaryKey)
    }

    fn with_connection(conn: Connection, dedup: Dedup) -> Result<Self, WarehouseError> {
        let tables = schema::builtin();
        let mut staging = Vec::with_capacity(tables.len());
        for t in tables {
            // A table created by an earlier version keeps its primary key (inserts check it, which
            // costs a key lookup, not a scan).
            conn.execute_batch(&create_table(t, dedup)).map_err(db_error)?;
            // A data dir from an earlier version gets the NULLABLE columns added since (at the end of
            // the table: every statement below names its columns).
            for c in t.columns.iter().filter(|c| !c.required) {
                conn.execute_batch(&format!(
                    "ALTER TABLE \"{}\" ADD COLUMN IF NOT EXISTS \"{}\" {}",
                    t.name,
                    c.name,
                    c.ty.duckdb()
                ))
                .map_err(db_error)?;
            }
            let columns: Vec<String> = t.columns.iter().map(|c| format!("\"{}\"", c.name)).collect();
            let columns = columns.join(", ");
            // Rows are appended (DuckDB's bulk path) to a temporary copy without constraints, in the
            // schema's column order, then moved with one INSERT ... SELECT per table and flush: ~100x
            // faster than one INSERT per row.
            let stage = format!("_staging_{}", t.name);
            conn.execute_batch(&format!(
                "CREATE TEMP TABLE IF NOT EXISTS \"{stage}\" AS SELECT {columns}, _insert_id, _inserted_at FROM \"{}\" LIMIT 0",
                t.name
            ))
            .map_err(db_error)?;
            let mv = match t.keyed {
                None if dedup == Dedup::Caller => format!(
                    "INSERT INTO \"{}\" ({columns}, _insert_id, _inserted_at) SELECT {columns}, _insert_id, _inserted_at FROM \"{stage}\"",
                    t.name
                ),
                None => format!(
                    "INSERT INTO \"{}\" ({columns}, _insert_id, _inserted_at) SELECT {columns}, _insert_id, _inserted_at FROM \"{stage}\" \
                     ON CONFLICT (_insert_id) DO NOTHING",
                    t.name
                ),
                // Upserts: the latest version per key in the flush replaces the stored row unless that
                // one is newer.
                Some(keyed) => {
                    let set: Vec<String> =
                        t.columns.iter().map(|c| format!("\"{0}\" = excluded.\"{0}\"", c.name)).collect();
                    format!(
                        "INSERT INTO \"{table}\" ({columns}, _insert_id, _inserted_at) SELECT {columns}, _insert_id, _inserted_at FROM \"{stage}\" \
                         QUALIFY row_number() OVER (PARTITION BY _insert_id ORDER BY \"{v}\" DESC) = 1 \
                         ON CONFLICT (_insert_id) DO UPDATE SET {set}, _inserted_at = excluded._inserted_at \
                         WHERE excluded.\"{v}\" >= \"{table}\".\"{v}\"",
                        table = t.name,
                        v = keyed.version,
                        set = set.join(", "),
                    )
                }
            };
            let clear = format!("DELETE FROM \"{stage}\"");
            staging.push(Staging { table: stage, move_rows: mv, clear });
        }
        conn.execute_batch(&format!(
            "CREATE TABLE IF NOT EXISTS {CHECKPOINT_TABLE} (id INTEGER PRIMARY KEY, loaded_seq UBIGINT NOT NULL)"
        ))
        .map_err(db_error)?;
        // The shipped views (`sql/`), as `tributary bigquery views` creates them in BigQuery: the
        // dashboard reads them, and so can `tributary sql`.
        for (name, sql) in crate::warehouse::sql::VIEWS {
            conn.execute_batch(&crate::warehouse::sql::render_duckdb(sql))
                .map_err(|e| WarehouseError::Write(format!("creating view {name}: {e}")))?;
        }
        Ok(Self { conn, tables, staging })
    }

    /// A second connection to the same database, for read queries from another thread.
    pub fn reader(&self) -> Result<Connection, WarehouseError> {
        self.conn.try_clone().map_err(db_error)
    }
}

/// A row checked against its table's schema, in the staging table's column order (the cells, then
/// `_insert_id` and `_inserted_at`), ready to load.
#[derive(Debug, Clone)]
pub struct Staged {
    /// Index into [`schema::builtin`].
    pub table: usize,
    pub values: Vec<Value>,
}

impl Staged {
    /// The row's insert id (the next-to-last value, as [`stage`] puts it).
    pub fn insert_id(&self) -> &str {
        match self.values.len().checked_sub(2).and_then(|i| self.values.get(i)) {
            Some(Value::Text(id)) => id,
            _ => "",
        }
    }
}

/// Checks `rows` against their tables: the refused ones go in the report; of the others, an
/// append-only row whose insert id comes twice in `rows` is kept once (keyed rows are all kept: the
/// load keeps the latest version). Returns the accepted rows with their index into `rows`.
pub fn stage(rows: &[Row], inserted_at_us: i64) -> (Vec<(usize, Staged)>, WriteReport) {
    let tables = schema::builtin();
    let mut report = WriteReport::default();
    let mut accepted = Vec::with_capacity(rows.len());
    let mut seen = HashSet::with_capacity(rows.len());
    for (index, row) in rows.iter().enumerate() {
        let Some(table) = tables.iter().position(|t| t.name == row.table) else {
            report.refused.push(row_error(index, "unknown-table", None, format!("no such table: {}", row.table)));
            continue;
        };
        match tables[table].cells(&row.json) {
            Ok(cells) => {
                if tables[table].keyed.is_some() || seen.insert((table, row.insert_id.as_str())) {
                    let mut values: Vec<Value> = Vec::with_capacity(cells.len() + 2);
                    values.extend(cells.into_iter().map(to_value));
                    values.push(Value::Text(row.insert_id.clone()));
                    values.push(Value::Timestamp(TimeUnit::Microsecond, inserted_at_us));
                    accepted.push((index, Staged { table, values }));
                } else {
                    report.duplicates += 1;
                }
            }
            Err(r) => report.refused.push(row_error(index, r.reason, r.location, r.message)),
        }
    }
    (accepted, report)
}

/// The loader's checkpoint: the last ingest-log record whose rows are in the tables.
const CHECKPOINT_TABLE: &str = "_tributary_ingest_log";

impl DuckDb {
    /// Moves `rows` into their tables in one transaction (skipping insert ids a table already has;
    /// keyed tables upsert), and records `checkpoint` as loaded in the same transaction. Returns the
    /// rows inserted and the duplicates skipped.
    pub fn load(&mut self, rows: &[Staged], checkpoint: Option<u64>) -> Result<(usize, usize), WarehouseError> {
        let mut per_table = vec![0_usize; self.tables.len()];
        for row in rows {
            per_table[row.table] += 1;
        }
        let tx = self.conn.transaction().map_err(db_error)?;
        {
            // Appenders only for the tables this load touches: each one allocates a full chunk.
            let mut appenders: Vec<Option<duckdb::Appender<'_>>> = Vec::with_capacity(self.tables.len());
            for (stage, &count) in self.staging.iter().zip(&per_table) {
                appenders.push(if count == 0 { None } else { Some(tx.appender(&stage.table).map_err(db_error)?) });
            }
            for row in rows {
                if let Some(appender) = appenders[row.table].as_mut() {
                    appender.append_row(duckdb::appender_params_from_iter(&row.values)).map_err(db_error)?;
                }
            }
            for appender in appenders.iter_mut().flatten() {
                appender.flush().map_err(db_error)?;
            }
        }
        let (mut inserted, mut duplicates) = (0, 0);
        for (stage, count) in self.staging.iter().zip(per_table) {
            if count == 0 {
                continue;
            }
            let n = tx.prepare_cached(&stage.move_rows).and_then(|mut s| s.execute([])).map_err(db_error)?;
            tx.prepare_cached(&stage.clear).and_then(|mut s| s.execute([])).map_err(db_error)?;
            inserted += n;
            duplicates += count - n.min(count);
        }
        if let Some(seq) = checkpoint {
            tx.prepare_cached(&format!(
                "INSERT INTO {CHECKPOINT_TABLE} VALUES (1, ?) ON CONFLICT (id) DO UPDATE SET loaded_seq = excluded.loaded_seq"
            ))
            .and_then(|mut s| s.execute([seq]))
            .map_err(db_error)?;
        }
        tx.commit().map_err(db_error)?;
        Ok((inserted, duplicates))
    }

    /// Calls `each` with every insert id stored in the append-only table `table`, a chunk at a time.
    pub fn stored_insert_ids(
        &self,
        table: &str,
        mut each: impl FnMut(&[String]) -> Result<(), WarehouseError>,
    ) -> Result<u64, WarehouseError> {
        const CHUNK: usize = 100_000;
        let mut stmt = self.conn.prepare(&format!("SELECT _insert_id FROM \"{table}\"")).map_err(db_error)?;
        let mut rows = stmt.query([]).map_err(db_error)?;
        let (mut chunk, mut total) = (Vec::with_capacity(CHUNK), 0_u64);
        while let Some(row) = rows.next().map_err(db_error)? {
            chunk.push(row.get::<_, String>(0).map_err(db_error)?);
            if chunk.len() == CHUNK {
                each(&chunk)?;
                total += CHUNK as u64;
                chunk.clear();
            }
        }
        each(&chunk)?;
        Ok(total + chunk.len() as u64)
    }

    /// The loader's checkpoint (0 when nothing was ever loaded from the log).
    pub fn loaded_seq(&self) -> Result<u64, WarehouseError> {
        let seq: Option<u64> = self
            .conn
            .query_row(&format!("SELECT max(loaded_seq) FROM {CHECKPOINT_TABLE}"), [], |r| r.get(0))
            .map_err(db_error)?;
        Ok(seq.unwrap_or(0))
    }
}

/// Direct writes (no ingest log): the in-memory warehouse of unit tests and tools.
impl Warehouse for DuckDb {
    fn write(&mut self, rows: &[Row]) -> Result<WriteReport, WarehouseError> {
        let (accepted, mut report) = stage(rows, chrono::Utc::now().timestamp_micros());
        let staged: Vec<Staged> = accepted.into_iter().map(|(_, s)| s).collect();
        if staged.is_empty() {
            return Ok(report);
        }
        let (inserted, duplicates) = self.load(&staged, None)?;
        report.inserted = inserted;
        report.duplicates += duplicates;
        Ok(report)
    }
}

/// The `CREATE TABLE` of `t`: `_insert_id` is the primary key of keyed tables, and of append-only ones
/// where DuckDB dedups.
pub(crate) fn create_table(t: &TableSchema, dedup: Dedup) -> String {
    let columns: Vec<String> = t
        .columns
        .iter()
        .map(|c| format!("\"{}\" {}{}", c.name, c.ty.duckdb(), if c.required { " NOT NULL" } else { "" }))
        .collect();
    format!(
        "CREATE TABLE IF NOT EXISTS \"{}\" ({}, _insert_id VARCHAR{} NOT NULL, _inserted_at TIMESTAMP NOT NULL)",
        t.name,
        columns.join(", "),
        if t.keyed.is_some() || dedup == Dedup::PrimaryKey { " PRIMARY KEY" } else { "" }
    )
}

fn to_value(cell: Cell) -> Value {
    match cell {
        Cell::Null => Value::Null,
        Cell::String(s) | Cell::Json(s) => Value::Text(s),
        Cell::Timestamp(micros) => Value::Timestamp(TimeUnit::Microsecond, micros),
        Cell::Int64(i) => Value::BigInt(i),
        Cell::Float64(f) => Value::Double(f),
        Cell::Bool(b) => Value::Boolean(b),
    }
}

fn row_error(index: usize, reason: &str, location: Option<String>, message: String) -> RowError {
    RowError { index: u32::try_from(index).unwrap_or(u32::MAX), reason: reason.to_owned(), location, message }
}

fn db_error(e: duckdb::Error) -> WarehouseError {
    WarehouseError::Write(e.to_string())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn event(insert_id: &str, event_type: &str) -> Row {
        Row {
            table: "streaming_events".into(),
            insert_id: insert_id.into(),
            json: format!(
                r#"{{"event_id":"{insert_id}","event_type":"{event_type}","timestamp":"2024-01-01T10:00:00Z"}}"#
            ),
        }
    }

    fn count(db: &DuckDb, sql: &str) -> i64 {
        db.conn.query_row(sql, [], |r| r.get(0)).expect("query")
    }

    #[test]
    fn the_file_backed_warehouse_keeps_to_its_memory_limit() {
        let dir = std::env::temp_dir().join(format!("tributary-duckdb-limit-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        let db = DuckDb::open(&dir, 96).expect("open");
        let limit: String =
            db.conn.query_row("SELECT current_setting('memory_limit')", [], |r| r.get(0)).expect("setting");
        assert_eq!(limit, "96.0 MiB");
        drop(db);
        let _ = std::fs::remove_dir_all(&dir);
    }

    #[test]
    fn dedups_within_and_across_batches() {
        let mut db = DuckDb::in_memory().expect("open");
        let report = db.write(&[event("1", "a"), event("1", "a"), event("2", "b")]).expect("write");
        assert_eq!(report, WriteReport { refused: vec![], inserted: 2, duplicates: 1, failed: vec![] });
        let report = db.write(&[event("2", "b"), event("3", "c")]).expect("write");
        assert_eq!(report, WriteReport { refused: vec![], inserted: 1, duplicates: 1, failed: vec![] });
        assert_eq!(count(&db, "SELECT count(*) FROM streaming_events"), 3);
    }

    #[test]
    fn keyed_tables_upsert_and_never_go_back_in_time() {
        let mut db = DuckDb::in_memory().expect("open");
        let recs = |user: &str, score: i64, at: &str| Row {
            table: "realtime_user_recs".into(),
            insert_id: user.into(),
            json: format!(
                r#"{{"user_id":"{user}","recommendations":[],"activity_score":{score},"updated_at":"{at}"}}"#
            ),
        };
        db.write(&[
            recs("u", 1, "2026-01-01T10:00:00Z"),
            recs("u", 3, "2026-01-01T10:02:00Z"),
            recs("u", 2, "2026-01-01T10:01:00Z"),
        ])
        .expect("write");
        assert_eq!(count(&db, "SELECT activity_score FROM realtime_user_recs"), 3, "the latest in the flush");
        db.write(&[recs("u", 9, "2026-01-01T09:00:00Z")]).expect("write");
        assert_eq!(count(&db, "SELECT activity_score FROM realtime_user_recs"), 3, "an older version loses");
        db.write(&[recs("u", 4, "2026-01-01T11:00:00Z"), recs("v", 1, "2026-01-01T11:00:00Z")]).expect("write");
        assert_eq!(count(&db, "SELECT activity_score FROM realtime_user_recs WHERE user_id = 'u'"), 4);
        assert_eq!(count(&db, "SELECT count(*) FROM realtime_user_recs"), 2);
    }

    #[test]
    fn bad_rows_are_refused_alone() {
        let mut db = DuckDb::in_memory().expect("open");
        let bad = Row { table: "streaming_events".into(), insert_id: "x".into(), json: r#"{"event_id":"x"}"#.into() };
        let nowhere = Row { table: "nope".into(), insert_id: "y".into(), json: "{}".into() };
        let WriteReport { refused, inserted, .. } = db.write(&[event("1", "a"), bad, nowhere]).expect("write");
        assert_eq!(inserted, 1);
        assert_eq!(refused.len(), 2);
        assert_eq!((refused[0].index, refused[0].reason.as_str()), (1, "invalid"));
        assert_eq!(refused[0].message, "Missing required field: event_type.");
        assert_eq!((refused[1].index, refused[1].reason.as_str()), (2, "unknown-table"));
    }

    #[test]
    fn json_and_timestamps_are_queryable() {
        let mut db = DuckDb::in_memory().expect("open");
        let row = Row {
            table: "streaming_events".into(),
            insert_id: "1".into(),
            json: r#"{"event_id":"1","event_type":"t","timestamp":"2024-01-01T10:00:59Z","properties":{"price":9.5}}"#
                .into(),
        };
        db.write(&[row]).expect("write");
        let (minute, price): (String, f64) = db
            .conn
            .query_row(
                "SELECT strftime(date_trunc('minute', \"timestamp\"), '%H:%M'), CAST(json_extract(properties, '$.price') AS DOUBLE) FROM streaming_events",
                [],
                |r| Ok((r.get(0)?, r.get(1)?)),
            )
            .expect("query");
        assert_eq!((minute.as_str(), price), ("10:00", 9.5));
    }

    #[test]
    fn a_data_dir_from_before_new_nullable_columns_is_migrated() {
        let conn = Connection::open_in_memory().expect("open");
        // `dead_letter` as an earlier version created it: no payload size, digest or truncation flag.
        conn.execute_batch(
            "CREATE TABLE dead_letter (message_id VARCHAR NOT NULL, subscription VARCHAR, publish_time VARCHAR, \
             delivery_attempt BIGINT, attributes JSON, payload VARCHAR, payload_text VARCHAR, stage VARCHAR NOT NULL, \
             error_reason VARCHAR NOT NULL, error_message VARCHAR, failed_at TIMESTAMP NOT NULL, \
             _insert_id VARCHAR PRIMARY KEY, _inserted_at TIMESTAMP NOT NULL); \
             INSERT INTO dead_letter VALUES ('old', NULL, NULL, NULL, '{}', '', NULL, 'decode', 'x', NULL, now(), 'old', now())",
        )
        .expect("old table");
        let mut db = DuckDb::with_connection(conn, Dedup::PrimaryKey).expect("migrates");
        let row = Row {
            table: "dead_letter".into(),
            insert_id: "new".into(),
            json: r#"{"message_id":"new","stage":"decode","error_reason":"r","failed_at":"2024-01-01T00:00:00Z","payload_bytes":12,"payload_sha256":"ab","payload_truncated":false}"#.into(),
        };
        assert_eq!(db.write(&[row]).expect("write").inserted, 1);
        assert_eq!(count(&db, "SELECT payload_bytes FROM dead_letter WHERE message_id = 'new'"), 12);
        assert_eq!(
            count(&db, "SELECT count(*) FROM dead_letter WHERE payload_bytes IS NULL AND message_id = 'old'"),
            1
        );
    }
}
