//! The exactly-once ledger of the COMMITTED-stream backend: a DuckDB file under `data_dir` that
//! survives restarts and records, per table, the write stream and its next offset, the batch being
//! appended (journaled before the append, cleared after it is confirmed), and the insert ids written.
//!
//! Why each part: offsets make a retried append idempotent (`ALREADY_EXISTS` = already written), the
//! journal lets a restarted host finish an append whose outcome it never heard (same rows, same offset),
//! and the insert-id set catches Pub/Sub redeliveries, which arrive as new appends at new offsets.

use std::collections::HashSet;
use std::path::Path;
use std::time::Duration;

use base64::Engine as _;
use base64::engine::general_purpose::STANDARD;
use duckdb::{Connection, OptionalExt as _, params};
use prost::Message as _;
use prost_types::DescriptorProto;

use super::error::BigQueryError;

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
}

impl Ledger {
    pub fn open(dir: &Path) -> Result<Self, BigQueryError> {
        std::fs::create_dir_all(dir).map_err(|e| BigQueryError::Local(format!("creating {}: {e}", dir.display())))?;
        Self::with(Connection::open(dir.join("bigquery-ledger.duckdb"))?)
    }

    pub fn in_memory() -> Result<Self, BigQueryError> {
        Self::with(Connection::open_in_memory()?)
    }

    fn with(conn: Connection) -> Result<Self, BigQueryError> {
        conn.execute_batch(
            "CREATE TABLE IF NOT EXISTS streams (table_name VARCHAR PRIMARY KEY, stream VARCHAR NOT NULL, next_offset BIGINT NOT NULL);
             CREATE TABLE IF NOT EXISTS journal (table_name VARCHAR PRIMARY KEY, stream VARCHAR NOT NULL, start_offset BIGINT NOT NULL, descriptor VARCHAR NOT NULL, rows VARCHAR NOT NULL);
             CREATE TABLE IF NOT EXISTS written (table_name VARCHAR NOT NULL, insert_id VARCHAR NOT NULL, written_at TIMESTAMP NOT NULL, PRIMARY KEY (table_name, insert_id));
             CREATE TEMP TABLE IF NOT EXISTS probe (insert_id VARCHAR);",
        )?;
        Ok(Self { conn })
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
        let tx = self.conn.transaction()?;
        {
            let mut append = tx.appender("probe")?;
            for (id, _) in &j.rows {
                append.append_row([id.as_str()])?;
            }
        }
        tx.execute(
            "INSERT INTO written SELECT DISTINCT ?, insert_id, now() FROM probe ON CONFLICT DO NOTHING",
            [table],
        )?;
        tx.execute("DELETE FROM probe", [])?;
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
        let tx = self.conn.transaction()?;
        {
            let mut append = tx.appender("probe")?;
            for id in ids {
                append.append_row([id])?;
            }
        }
        let found = {
            let mut stmt = tx.prepare_cached(
                "SELECT DISTINCT p.insert_id FROM probe p JOIN written w ON w.table_name = ? AND w.insert_id = p.insert_id",
            )?;
            stmt.query_map([table], |r| r.get::<_, String>(0))?.collect::<Result<HashSet<_>, _>>()?
        };
        tx.execute("DELETE FROM probe", [])?;
        tx.commit()?;
        Ok(found)
    }

    /// Forgets insert ids older than `retention`.
    pub fn prune(&self, retention: Duration) -> Result<usize, BigQueryError> {
        let cutoff = chrono::Utc::now() - chrono::Duration::from_std(retention).unwrap_or(chrono::Duration::days(7));
        Ok(self.conn.execute("DELETE FROM written WHERE written_at < ?", [cutoff.naive_utc()])?)
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
        assert_eq!(l.prune(Duration::from_secs(3600)).expect("prune"), 0);
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
