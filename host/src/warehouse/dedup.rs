//! The embedded warehouse's dedup keys: every insert id an append-only table ever received, in a redb
//! B-tree file (`data_dir/dedup-keys.redb`) beside DuckDB, so the loader can tell a redelivered message
//! from a new one in O(log n) per row, with memory bounded by redb's page cache.
//!
//! Why not DuckDB's primary key: DuckDB plans `INSERT … ON CONFLICT` as a hash join against the whole
//! table, so every load scanned every stored insert id (measured: 90 ms per load at 3.6M rows, growing
//! with the table), and its key index stays in memory, where it cannot be evicted.
//!
//! Crash safety without a shared transaction: each key records the ingest-log sequence number of the
//! load that claimed it, and the claims are committed (fsync'd) before that load's DuckDB transaction.
//! A key whose claim is newer than the warehouse's load checkpoint belongs to a load that never
//! committed (a crash, a failed DuckDB commit), so the next load of the same rows claims it again; a key
//! claimed at or before the checkpoint is in the table, and its row is a duplicate.
//!
//! Window: a key is kept for at least `window_days` days after the day it was claimed (0: for ever).
//! Each load also sweeps a slice of the keys (twice as many as it claimed), removing the expired ones,
//! so the file holds about the keys of the window. A redelivery within the window is always dropped;
//! Pub/Sub stops redelivering a message when its subscription's retention ends (7 days at most).

use std::collections::HashSet;
use std::path::Path;

use redb::{Database, ReadableDatabase, ReadableTable, ReadableTableMetadata, TableDefinition};

/// (table, insert id) → (the ingest-log sequence number of the load that claimed it, 0 when imported
/// from the table itself; the day it was claimed, in days since the Unix epoch).
const KEYS: TableDefinition<(&str, &str), (u64, u32)> = TableDefinition::new("keys");
/// `imported` → 1 once the keys of rows stored before this file existed were imported.
const META: TableDefinition<&str, u64> = TableDefinition::new("meta");

/// A dedup key store failure.
#[derive(Debug, thiserror::Error)]
#[error("dedup keys: {0}")]
pub struct DedupError(String);

impl<E: Into<redb::Error>> From<E> for DedupError {
    fn from(e: E) -> Self {
        Self(e.into().to_string())
    }
}

/// The fewest keys a load sweeps.
const MIN_SWEEP: usize = 1_000;

/// The insert ids the append-only tables received in the window.
pub struct DedupKeys {
    db: Database,
    window_days: u32,
    /// Where the next sweep starts (`None`: at the first key).
    sweep_from: Option<(String, String)>,
}

/// Today, in days since the Unix epoch (UTC).
pub fn today() -> u32 {
    u32::try_from(chrono::Utc::now().timestamp().div_euclid(86_400)).unwrap_or(0)
}

impl DedupKeys {
    /// Opens (or creates) the key file at `path` with a page cache of at most `cache_bytes`, keeping
    /// keys for `window_days` (0: for ever).
    pub fn open(path: &Path, cache_bytes: usize, window_days: u32) -> Result<Self, DedupError> {
        let db = Database::builder().set_cache_size(cache_bytes).create(path)?;
        let txn = db.begin_write()?;
        txn.open_table(KEYS)?;
        txn.open_table(META)?;
        txn.commit()?;
        Ok(Self { db, window_days, sweep_from: None })
    }

    /// A key store in memory (tests).
    pub fn in_memory(window_days: u32) -> Result<Self, DedupError> {
        let db = Database::builder().create_with_backend(redb::backends::InMemoryBackend::new())?;
        let txn = db.begin_write()?;
        txn.open_table(KEYS)?;
        txn.open_table(META)?;
        txn.commit()?;
        Ok(Self { db, window_days, sweep_from: None })
    }

    /// Records `keys` as stored on `today` (for a writer with no claims to take back: each key is
    /// recorded once its row is stored), then sweeps a slice. Durable when it returns.
    pub fn record<'a>(
        &mut self,
        keys: impl IntoIterator<Item = (&'a str, &'a str)>,
        today: u32,
    ) -> Result<(), DedupError> {
        // Every claim counts as committed: a stored key stays as it is, a new one is dated today.
        self.claim(keys, 0, u64::MAX, today).map(drop)
    }

    /// For each of `keys`, whether it is stored.
    pub fn stored<'a>(&self, keys: impl IntoIterator<Item = (&'a str, &'a str)>) -> Result<Vec<bool>, DedupError> {
        let txn = self.db.begin_read()?;
        let table = txn.open_table(KEYS)?;
        keys.into_iter().map(|key| Ok(table.get(key)?.is_some())).collect()
    }

    /// Whether the keys of the rows stored before this file existed were imported.
    pub fn imported(&self) -> Result<bool, DedupError> {
        let txn = self.db.begin_read()?;
        Ok(txn.open_table(META)?.get("imported")?.is_some())
    }

    /// Records `keys` as stored on `today` (claimed by no load: they are in their tables already), and,
    /// with `done`, that the import is complete.
    pub fn import<'a>(
        &self,
        keys: impl IntoIterator<Item = (&'a str, &'a str)>,
        today: u32,
        done: bool,
    ) -> Result<(), DedupError> {
        let txn = self.db.begin_write()?;
        {
            let mut table = txn.open_table(KEYS)?;
            for key in keys {
                table.insert(key, (0, today))?;
            }
            if done {
                txn.open_table(META)?.insert("imported", 1)?;
            }
        }
        txn.commit()?;
        Ok(())
    }

    /// Claims `keys` for the load `seq` and returns, for each, whether its row is new: never claimed,
    /// or claimed by a load after `loaded_seq` (the warehouse's checkpoint), which did not commit. The
    /// second and later copies of a key within `keys` are not new. Claims are dated `today`; then a
    /// slice of the keys is swept. Durable when it returns.
    pub fn claim<'a>(
        &mut self,
        keys: impl IntoIterator<Item = (&'a str, &'a str)>,
        seq: u64,
        loaded_seq: u64,
        today: u32,
    ) -> Result<Vec<bool>, DedupError> {
        let mut fresh = Vec::new();
        let mut this_load = HashSet::new();
        let txn = self.db.begin_write()?;
        {
            let mut table = txn.open_table(KEYS)?;
            for key in keys {
                let new = match table.get(key)?.map(|g| g.value()) {
                    None => true,
                    Some((claimed, _)) => claimed > loaded_seq && !this_load.contains(&key),
                };
                if new {
                    table.insert(key, (seq, today))?;
                    this_load.insert(key);
                }
                fresh.push(new);
            }
            if self.window_days > 0 {
                self.sweep(&mut table, today, (2 * fresh.len()).max(MIN_SWEEP))?;
            }
        }
        txn.commit()?;
        Ok(fresh)
    }

    /// Removes the keys claimed before the window among the next `budget` keys from where the last
    /// sweep stopped (starting over at the first key after the last one).
    fn sweep(
        &mut self,
        table: &mut redb::Table<'_, (&'static str, &'static str), (u64, u32)>,
        today: u32,
        budget: usize,
    ) -> Result<(), DedupError> {
        let oldest_kept = today.saturating_sub(self.window_days);
        let (mut expired, mut last, mut seen) = (Vec::new(), None, 0);
        {
            let range = match &self.sweep_from {
                Some((t, id)) => table.range::<(&str, &str)>((t.as_str(), id.as_str())..)?,
                None => table.range::<(&str, &str)>(..)?,
            };
            for entry in range.take(budget) {
                let (key, value) = entry?;
                let (t, id) = key.value();
                if value.value().1 < oldest_kept {
                    expired.push((t.to_owned(), id.to_owned()));
                }
                last = Some((t.to_owned(), id.to_owned()));
                seen += 1;
            }
        }
        for (t, id) in &expired {
            table.remove((t.as_str(), id.as_str()))?;
        }
        self.sweep_from = if seen < budget { None } else { last };
        Ok(())
    }

    /// How many keys are stored.
    pub fn count(&self) -> Result<u64, DedupError> {
        let txn = self.db.begin_read()?;
        Ok(txn.open_table(KEYS)?.len()?)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn temp(name: &str) -> std::path::PathBuf {
        let dir = std::env::temp_dir().join(format!("tributary-dedup-{}-{name}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(&dir).expect("dir");
        dir.join("keys.redb")
    }

    const E: &str = "streaming_events";
    /// A day.
    const D: u32 = 20_000;

    #[test]
    fn a_key_is_new_once_per_table() {
        let mut keys = DedupKeys::open(&temp("once"), 1 << 20, 7).expect("open");
        assert_eq!(
            keys.claim([(E, "a"), (E, "b"), (E, "a"), ("sensor_readings", "a")], 1, 0, D).expect("claim"),
            [true, true, false, true]
        );
        // Load 1 committed.
        assert_eq!(keys.claim([(E, "a"), (E, "c")], 2, 1, D).expect("claim"), [false, true]);
        assert_eq!(keys.count().expect("count"), 4);
    }

    #[test]
    fn a_claim_whose_load_did_not_commit_is_claimed_again_once() {
        let path = temp("crash");
        {
            let mut keys = DedupKeys::open(&path, 1 << 20, 7).expect("open");
            assert_eq!(keys.claim([(E, "a")], 1, 0, D).expect("claim"), [true]);
            // Load 1 committed; load 2 claims and then the process dies before its DuckDB commit.
            assert_eq!(keys.claim([(E, "b"), (E, "c")], 2, 1, D).expect("claim"), [true, true]);
        }
        let mut keys = DedupKeys::open(&path, 1 << 20, 7).expect("reopen");
        // The replay of load 2's records (checkpoint still 1), with a redelivered copy of b among them.
        assert_eq!(
            keys.claim([(E, "b"), (E, "c"), (E, "b"), (E, "a")], 3, 1, D).expect("claim"),
            [true, true, false, false]
        );
        // Load 3 committed: b and c are stored.
        assert_eq!(keys.claim([(E, "b"), (E, "c")], 4, 3, D).expect("claim"), [false, false]);
    }

    #[test]
    fn imported_keys_are_stored_rows() {
        let mut keys = DedupKeys::open(&temp("import"), 1 << 20, 7).expect("open");
        assert!(!keys.imported().expect("flag"));
        keys.import([(E, "old")], D, false).expect("import");
        keys.import([(E, "older")], D, true).expect("import");
        assert!(keys.imported().expect("flag"));
        assert_eq!(keys.claim([(E, "old"), (E, "older"), (E, "new")], 1, 0, D).expect("claim"), [false, false, true]);
    }

    #[test]
    fn keys_are_kept_for_the_window_then_swept() {
        let mut keys = DedupKeys::open(&temp("window"), 1 << 20, 7).expect("open");
        let old: Vec<String> = (0..1_500).map(|i| format!("old-{i:04}")).collect();
        keys.claim(old.iter().map(|id| (E, id.as_str())), 1, 0, D).expect("claim");
        keys.claim([(E, "recent")], 2, 1, D + 3).expect("claim");
        // Seven days on, everything is kept (and still a duplicate).
        assert_eq!(keys.claim([(E, "old-0000"), (E, "recent")], 3, 2, D + 7).expect("claim"), [false, false]);
        assert_eq!(keys.count().expect("count"), 1_501);
        // On day 8 the first day's keys expire, a sweep of at least 1,000 keys per load at a time.
        keys.claim([(E, "x")], 4, 3, D + 8).expect("claim");
        assert_eq!(keys.count().expect("count"), 502, "the first 1,000 keys swept");
        keys.claim([(E, "y")], 5, 4, D + 8).expect("claim");
        assert_eq!(keys.count().expect("count"), 3, "the rest swept, the recent keys kept");
        assert_eq!(
            keys.claim([(E, "old-0001"), (E, "recent"), (E, "x")], 6, 5, D + 8).expect("claim"),
            [true, false, false]
        );
    }

    #[test]
    fn recorded_keys_are_stored_and_swept_like_claims() {
        let mut keys = DedupKeys::in_memory(1).expect("open");
        keys.record([(E, "a"), (E, "b")], D).expect("record");
        assert_eq!(keys.stored([(E, "a"), (E, "c"), ("other", "a")]).expect("stored"), [true, false, false]);
        keys.record([(E, "a"), (E, "c")], D + 2).expect("record");
        assert_eq!(keys.stored([(E, "a"), (E, "b"), (E, "c")]).expect("stored"), [false, false, true]);
    }

    #[test]
    fn a_window_of_zero_keeps_every_key() {
        let mut keys = DedupKeys::open(&temp("forever"), 1 << 20, 0).expect("open");
        keys.claim([(E, "a")], 1, 0, D).expect("claim");
        keys.claim([(E, "b")], 2, 1, D + 10_000).expect("claim");
        assert_eq!(keys.claim([(E, "a")], 3, 2, D + 10_000).expect("claim"), [false]);
    }
}
