//! The exactly-once ledger of the COMMITTED-stream backend: a DuckDB file under `data_dir` that
//! survives restarts and records, per table, the write stream and its next offset, the batch being
//! appended (journaled before the append, cleared after it is confirmed), and the insert ids written.
//!
//! Why each part: offsets make a retried append idempotent (`ALREADY_EXISTS` = already written), the
//! journal lets a restarted host finish an append whose outcome it never heard (same rows, same offset),
//! and the insert-id set catches Pub/Sub redeliveries, which arrive as new appends at new offsets.
//!
//! The insert ids written live in a key store of their own ([`crate::warehouse::dedup`], a redb file
//! `bigquery-written.redb` beside the ledger), kept for the retention: one lookup per id, memory bounded
//! by its page cache. (In DuckDB, checking a batch was a join that scanned every id kept.) Ids are
//! recorded (fsync'd) before the confirming transaction: a crash between the two leaves the journal,
//! whose replay lands at the same offset and records the same ids again.

use std::collections::HashSet;
use std::path::Path;
use std::time::Duration;

use base64::Engine as _;
use base64::engine::general_purpose::STANDARD;
use duckdb::{Connection, OptionalExt as _, params};
use prost::Message as _;
use prost_types::DescriptorProto;

use super::error::BigQueryError;
use crate::warehouse::dedup::DedupKeys;

/// A batch journaled before its append.
#[derive(Debug, Clone, PartialEq)]
pub struct Journal {
    pub stream: String,
    pub offset: i64,
    pub descriptor: DescriptorProto,
    /// (insert id, serialized row).
    pub rows: Vec<(String, Vec<u8>)>,
}

pub struct Ledger {
    conn: Connection,
    written: DedupKeys,
}

/// The written ids' page cache.
const WRITTEN_CACHE_BYTES: usize = 32 << 20;

fn local(e: impl std::fmt::Display) -> BigQueryError {
    BigQueryError::Local(e.to_string())
}

/// Whole days covering `retention` (at least one).
fn window_days(retention: Duration) -> u32 {
    u32::try_from(retention.as_secs().div_ceil(86_400).max(1)).unwrap_or(u32::MAX)
}

impl Ledger {
    /// Opens the ledger under `dir`, keeping written ids for `retention`.
    pub fn open(dir: &Path, retention: Duration) -> Result<Self, BigQueryError> {
        std::fs::create_dir_all(dir).map_err(|e| BigQueryError::Local(format!("creating {}: {e}", dir.display())))?;
        let written = DedupKeys::open(&dir.join("bigquery-written.redb"), WRITTEN_CACHE_BYTES, window_days(retention))
            .map_err(local)?;
        Self::with(Connection::open(dir.join("bigquery-ledger.duckdb"))?, written)
    }

    pub fn in_memory() -> Result<Self, BigQueryError> {
        Self::with(Connection::open_in_memory()?, DedupKeys::in_memory(7).map_err(local)?)
    }

    fn with(conn: Connection, written: DedupKeys) -> Result<Self, BigQueryError> {
        conn.execute_batch(
            "CREATE TABLE IF NOT EXISTS streams (table_name VARCHAR PRIMARY KEY, stream VARCHAR NOT NULL, next_offset BIGINT NOT NULL);
             CREATE TABLE IF NOT EXISTS journal (table_name VARCHAR PRIMARY KEY, stream VARCHAR NOT NULL, start_offset BIGINT NOT NULL, descriptor VARCHAR NOT NULL, rows VARCHAR NOT NULL);
             CREATE TABLE IF NOT EXISTS written (table_name VARCHAR NOT NULL, insert_id VARCHAR NOT NULL, written_at TIMESTAMP NOT NULL, PRIMARY KEY (table_name, insert_id));
             CREATE TEMP TABLE IF NOT EXISTS probe (insert_id VARCHAR);",
        )?;
        let ledger = Self { conn, written };
        ledger.import_written()?;
        Ok(ledger)
    }

    /// Moves the ids an earlier version kept in DuckDB's `written` table into the key store (once).
    fn import_written(&self) -> Result<(), BigQueryError> {
        if self.written.imported().map_err(local)? {
            return Ok(());
        }
        let today = crate::warehouse::dedup::today();
        let mut stmt = self.conn.prepare("SELECT table_name, insert_id FROM written")?;
        let ids = stmt.query_map([], |r| Ok((r.get::<_, String>(0)?, r.get::<_, String>(1)?)))?;
        let ids = ids.collect::<Result<Vec<_>, _>>()?;
        self.written.import(ids.iter().map(|(t, id)| (t.as_str(), id.as_str())), today, true).map_err(local)?;
        self.conn.execute("DELETE FROM written", [])?;
        if !ids.is_empty() {
            tracing::info!(ids = ids.len(), "exactly-once ledger: written ids moved to bigquery-written.redb");
        }
        Ok(())
    }

    /// The table's write stream and its next offset.
    pub fn stream(&self, table: &str) -> Result<Option<(String, i64)>, BigQueryError> {
        Ok(self
            .conn
            .query_row("SELECT stream, next_offset FROM streams WHERE table_name = ?", [table], |r| {
                Ok((r.get(0)?, r.get(1)?))
            })
            .optional()?)
    }

    /// Starts over on a new stream at offset 0 (a journaled batch moves with it).
    pub fn set_stream(&mut self, table: &str, stream: &str) -> Result<(), BigQueryError> {
        let tx = self.conn.transaction()?;
        tx.execute("INSERT OR REPLACE INTO streams VALUES (?, ?, 0)", params![table, stream])?;
        tx.execute("UPDATE journal SET stream = ?, start_offset = 0 WHERE table_name = ?", params![stream, table])?;
        tx.commit()?;
        Ok(())
    }

    /// The batch whose append was never confirmed, if any.
    pub fn journal(&self, table: &str) -> Result<Option<Journal>, BigQueryError> {
        let row: Option<(String, i64, String, String)> = self
            .conn
            .query_row(
                "SELECT stream, start_offset, descriptor, rows FROM journal WHERE table_name = ?",
                [table],
                |r| Ok((r.get(0)?, r.get(1)?, r.get(2)?, r.get(3)?)),
            )
            .optional()?;
        let Some((stream, offset, descriptor, rows)) = row else { return Ok(None) };
        let corrupt = |m: String| BigQueryError::Schema {
            table: table.into(),
            message: format!("ledger journal unreadable: {m}"),
        };
        let descriptor =
            DescriptorProto::decode(STANDARD.decode(descriptor).map_err(|e| corrupt(e.to_string()))?.as_slice())
                .map_err(|e| corrupt(e.to_string()))?;
        let rows: Vec<(String, String)> = serde_json::from_str(&rows).map_err(|e| corrupt(e.to_string()))?;
        let rows = rows
            .into_iter()
            .map(|(id, b)| Ok((id, STANDARD.decode(b).map_err(|e| corrupt(e.to_string()))?)))
            .collect::<Result<_, BigQueryError>>()?;
        Ok(Some(Journal { stream, offset, descriptor, rows }))
    }

    /// Durably records the batch about to be appended (replaces any earlier one).
    pub fn write_journal(&mut self, table: &str, j: &Journal) -> Result<(), BigQueryError> {
        let rows: Vec<(&str, String)> = j.rows.iter().map(|(id, b)| (id.as_str(), STANDARD.encode(b))).collect();
        let rows = serde_json::to_string(&rows)
            .map_err(|e| BigQueryError::Schema { table: table.into(), message: e.to_string() })?;
        self.conn.execute(
            "INSERT OR REPLACE INTO journal VALUES (?, ?, ?, ?, ?)",
            params![table, j.stream, j.offset, STANDARD.encode(j.descriptor.encode_to_vec()), rows],
        )?;
        Ok(())
    }

    /// The journaled batch is in the table: remember its ids, move the offset past it, clear the journal.
    pub fn confirm(&mut self, table: &str, j: &Journal) -> Result<(), BigQueryError> {
        self.written
            .record(j.rows.iter().map(|(id, _)| (table, id.as_str())), crate::warehouse::dedup::today())
            .map_err(local)?;
        let tx = self.conn.transaction()?;
        let next = j.offset + i64::try_from(j.rows.len()).unwrap_or(i64::MAX);
        tx.execute("UPDATE streams SET next_offset = ? WHERE table_name = ?", params![next, table])?;
        tx.execute("DELETE FROM journal WHERE table_name = ?", [table])?;
        tx.commit()?;
        Ok(())
    }

    /// Drops the journal without confirming (its rows were all refused).
    pub fn clear_journal(&mut self, table: &str) -> Result<(), BigQueryError> {
        self.conn.execute("DELETE FROM journal WHERE table_name = ?", [table])?;
        Ok(())
    }

    /// Which of `ids` were already written to `table`.
    pub fn already_written<'a>(
        &mut self,
        table: &str,
        ids: impl Iterator<Item = &'a str>,
    ) -> Result<HashSet<String>, BigQueryError> {
        let ids: Vec<&str> = ids.collect();
        let stored = self.written.stored(ids.iter().map(|id| (table, *id))).map_err(local)?;
        Ok(ids.into_iter().zip(stored).filter(|(_, s)| *s).map(|(id, _)| id.to_owned()).collect())
    }

    /// How many insert ids are kept (older ones are swept as batches are confirmed).
    pub fn written_ids(&self) -> Result<u64, BigQueryError> {
        self.written.count().map_err(local)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn journal(offset: i64, ids: &[&str]) -> Journal {
        Journal {
            stream: "s1".into(),
            offset,
            descriptor: DescriptorProto { name: Some("Row".into()), ..Default::default() },
            rows: ids.iter().map(|id| ((*id).to_owned(), id.as_bytes().to_vec())).collect(),
        }
    }

    #[test]
    fn a_confirmed_batch_moves_the_offset_and_remembers_its_ids() {
        let mut l = Ledger::in_memory().expect("ledger");
        assert_eq!(l.stream("t").expect("read"), None);
        l.set_stream("t", "s1").expect("stream");
        let j = journal(0, &["a", "b"]);
        l.write_journal("t", &j).expect("journal");
        assert_eq!(l.journal("t").expect("read"), Some(j.clone()));
        l.confirm("t", &j).expect("confirm");
        assert_eq!(l.journal("t").expect("read"), None);
        assert_eq!(l.stream("t").expect("read"), Some(("s1".into(), 2)));
        let seen = l.already_written("t", ["b", "c"].into_iter()).expect("probe");
        assert_eq!(seen, HashSet::from(["b".to_owned()]));
        assert!(l.already_written("other", ["b"].into_iter()).expect("probe").is_empty());
        assert_eq!(l.written_ids().expect("count"), 2);
    }

    #[test]
    fn written_ids_of_an_earlier_version_are_moved_once() {
        let dir = std::env::temp_dir().join(format!("tributary-ledger-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(&dir).expect("dir");
        {
            let conn = Connection::open(dir.join("bigquery-ledger.duckdb")).expect("old ledger");
            conn.execute_batch(
                "CREATE TABLE written (table_name VARCHAR NOT NULL, insert_id VARCHAR NOT NULL, written_at TIMESTAMP NOT NULL, PRIMARY KEY (table_name, insert_id)); \
                 INSERT INTO written VALUES ('t', 'old', now())",
            )
            .expect("old ids");
        }
        let mut l = Ledger::open(&dir, Duration::from_secs(7 * 86_400)).expect("open");
        assert_eq!(
            l.already_written("t", ["old", "new"].into_iter()).expect("probe"),
            HashSet::from(["old".to_owned()])
        );
        drop(l);
        let mut l = Ledger::open(&dir, Duration::from_secs(7 * 86_400)).expect("reopen");
        assert_eq!(l.written_ids().expect("count"), 1);
        assert_eq!(l.already_written("t", ["old"].into_iter()).expect("probe").len(), 1);
        assert_eq!(window_days(Duration::from_secs(3600)), 1);
        assert_eq!(window_days(Duration::from_secs(168 * 3600)), 7);
        let _ = std::fs::remove_dir_all(&dir);
    }

    #[test]
    fn a_new_stream_takes_the_journal_along_at_offset_zero() {
        let mut l = Ledger::in_memory().expect("ledger");
        l.set_stream("t", "s1").expect("stream");
        l.write_journal("t", &journal(5, &["a"])).expect("journal");
        l.set_stream("t", "s2").expect("stream");
        let j = l.journal("t").expect("read").expect("kept");
        assert_eq!((j.stream.as_str(), j.offset), ("s2", 0));
    }
}
