//! The embedded warehouse's durable ingest log: each group commit is one record appended to a segment
//! file and made durable with one `fdatasync` (a push is acked from here), before the loader moves
//! its rows into DuckDB in large batches.
//!
//! A record is `[u32 length][u32 crc32][payload]`, little-endian; the payload is the batch's sequence
//! number, its commit time and its rows (table, insert id, JSON). Segments are named after their first
//! sequence number and roll at [`SEGMENT_BYTES`]. On open, every record after the loader's checkpoint
//! is read back; a torn or corrupt tail (a write that never finished its `fdatasync`, so was never
//! acked) is cut off. A new segment's directory entry is synced too, so a power loss cannot lose a
//! whole segment.

use std::fs::{File, OpenOptions};
use std::io::{BufReader, Read, Write};
use std::path::{Path, PathBuf};

/// A segment is sealed and a new one started past this size.
pub const SEGMENT_BYTES: u64 = 64 << 20;
/// A record larger than this is corruption, not data (a flush is at most `sink.max_bytes` plus framing).
const MAX_RECORD_BYTES: u32 = 1 << 30;

#[derive(Debug, thiserror::Error)]
pub enum LogError {
    #[error("ingest log {path}: {source}")]
    Io { path: PathBuf, source: std::io::Error },
    #[error("ingest log record too large: {0} bytes")]
    TooLarge(usize),
}

/// One row to log, borrowed from the write.
#[derive(Debug, Clone, Copy)]
pub struct LogRow<'a> {
    pub table: &'a str,
    pub insert_id: &'a str,
    pub json: &'a str,
}

/// One row as read back.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LoggedRow {
    pub table: String,
    pub insert_id: String,
    pub json: String,
}

/// One group commit as logged.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Record {
    pub seq: u64,
    /// When it was committed (µs since the epoch): the rows' `_inserted_at`.
    pub committed_at_us: i64,
    pub rows: Vec<LoggedRow>,
}

/// A sealed segment: every record in it has `seq <= last_seq`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Sealed {
    pub path: PathBuf,
    pub last_seq: u64,
}

/// The writing end of the log.
#[derive(Debug)]
pub struct IngestLog {
    dir: PathBuf,
    active: File,
    active_path: PathBuf,
    active_bytes: u64,
    /// The last sequence number written (0 before the first).
    last_seq: u64,
    /// Segments before the active one, oldest first.
    sealed: Vec<Sealed>,
    /// The record being encoded (kept to reuse its allocation).
    buf: Vec<u8>,
}

/// What [`IngestLog::open`] found.
#[derive(Debug)]
pub struct Recovered {
    pub log: IngestLog,
    /// Records after the checkpoint, in order: written (and acked) but maybe not loaded.
    pub records: Vec<Record>,
    /// Bytes cut off torn or corrupt tails.
    pub cut_bytes: u64,
}

impl IngestLog {
    /// Opens the log in `dir`, reads back every record with `seq > loaded_seq` and starts a new active
    /// segment after the last record found. Segments wholly at or before `loaded_seq` are deleted.
    pub fn open(dir: &Path, loaded_seq: u64) -> Result<Recovered, LogError> {
        std::fs::create_dir_all(dir).map_err(io(dir))?;
        let mut segments: Vec<(u64, PathBuf)> = Vec::new();
        for entry in std::fs::read_dir(dir).map_err(io(dir))? {
            let path = entry.map_err(io(dir))?.path();
            let first = path
                .file_name()
                .and_then(|n| n.to_str())
                .and_then(|n| n.strip_suffix(".seg"))
                .and_then(|n| n.parse::<u64>().ok());
            if let Some(first) = first {
                segments.push((first, path));
            }
        }
        segments.sort();
        let (mut records, mut sealed, mut cut_bytes, mut last_seq) = (Vec::new(), Vec::new(), 0, loaded_seq);
        for (_, path) in segments {
            let (found, good_bytes, total) = read_segment(&path)?;
            if good_bytes < total {
                // Only a write that never returned from fdatasync can be torn: cut it off.
                tracing::warn!(path = %path.display(), cut = total - good_bytes, "ingest log: cutting off a torn tail");
                let f = OpenOptions::new().write(true).open(&path).map_err(io(&path))?;
                f.set_len(good_bytes).map_err(io(&path))?;
                f.sync_all().map_err(io(&path))?;
                cut_bytes += total - good_bytes;
            }
            let segment_last = found.last().map_or(0, |r: &Record| r.seq);
            last_seq = last_seq.max(segment_last);
            if segment_last <= loaded_seq {
                std::fs::remove_file(&path).map_err(io(&path))?;
                continue;
            }
            records.extend(found.into_iter().filter(|r| r.seq > loaded_seq));
            sealed.push(Sealed { path, last_seq: segment_last });
        }
        let (active, active_path) = create_segment(dir, last_seq + 1)?;
        let log =
            IngestLog { dir: dir.to_owned(), active, active_path, active_bytes: 0, last_seq, sealed, buf: Vec::new() };
        Ok(Recovered { log, records, cut_bytes })
    }

    /// The last sequence number written.
    pub fn last_seq(&self) -> u64 {
        self.last_seq
    }

    /// Appends one record and makes it durable (`fdatasync`); returns its sequence number.
    pub fn append(&mut self, committed_at_us: i64, rows: &[LogRow<'_>]) -> Result<u64, LogError> {
        if self.active_bytes >= SEGMENT_BYTES {
            self.roll()?;
        }
        let seq = self.last_seq + 1;
        self.buf.clear();
        self.buf.extend_from_slice(&[0; 8]);
        encode(&mut self.buf, seq, committed_at_us, rows)?;
        let payload_len = self.buf.len() - 8;
        let len = u32::try_from(payload_len)
            .ok()
            .filter(|&l| l <= MAX_RECORD_BYTES)
            .ok_or(LogError::TooLarge(payload_len))?;
        let crc = crc32fast::hash(&self.buf[8..]);
        self.buf[0..4].copy_from_slice(&len.to_le_bytes());
        self.buf[4..8].copy_from_slice(&crc.to_le_bytes());
        let path = &self.active_path;
        self.active.write_all(&self.buf).map_err(io(path))?;
        self.active.sync_data().map_err(io(path))?;
        self.active_bytes += self.buf.len() as u64;
        self.last_seq = seq;
        // A large flush should not keep a large buffer alive.
        if self.buf.capacity() > 16 << 20 {
            self.buf = Vec::new();
        }
        Ok(seq)
    }

    /// Deletes the sealed segments whose records are all loaded (`last_seq <= loaded_seq`).
    pub fn release(&mut self, loaded_seq: u64) -> Result<usize, LogError> {
        let mut released = 0;
        while self.sealed.first().is_some_and(|s| s.last_seq <= loaded_seq) {
            let s = self.sealed.remove(0);
            std::fs::remove_file(&s.path).map_err(io(&s.path))?;
            released += 1;
        }
        Ok(released)
    }

    /// The sealed segments, oldest first.
    pub fn sealed(&self) -> &[Sealed] {
        &self.sealed
    }

    fn roll(&mut self) -> Result<(), LogError> {
        let (file, path) = create_segment(&self.dir, self.last_seq + 1)?;
        let old = std::mem::replace(&mut self.active_path, path);
        self.sealed.push(Sealed { path: old, last_seq: self.last_seq });
        self.active = file;
        self.active_bytes = 0;
        Ok(())
    }
}

fn io(path: &Path) -> impl FnOnce(std::io::Error) -> LogError + '_ {
    move |source| LogError::Io { path: path.to_owned(), source }
}

/// Creates `dir/{first:020}.seg` and syncs the directory so the new entry survives a power loss.
fn create_segment(dir: &Path, first: u64) -> Result<(File, PathBuf), LogError> {
    let path = dir.join(format!("{first:020}.seg"));
    let file = OpenOptions::new().create(true).append(true).open(&path).map_err(io(&path))?;
    File::open(dir).and_then(|d| d.sync_all()).map_err(io(dir))?;
    Ok((file, path))
}

fn put_str(buf: &mut Vec<u8>, s: &str) -> Result<(), LogError> {
    let len = u32::try_from(s.len()).map_err(|_| LogError::TooLarge(s.len()))?;
    buf.extend_from_slice(&len.to_le_bytes());
    buf.extend_from_slice(s.as_bytes());
    Ok(())
}

fn encode(buf: &mut Vec<u8>, seq: u64, committed_at_us: i64, rows: &[LogRow<'_>]) -> Result<(), LogError> {
    buf.extend_from_slice(&seq.to_le_bytes());
    buf.extend_from_slice(&committed_at_us.to_le_bytes());
    let n = u32::try_from(rows.len()).map_err(|_| LogError::TooLarge(rows.len()))?;
    buf.extend_from_slice(&n.to_le_bytes());
    for row in rows {
        put_str(buf, row.table)?;
        put_str(buf, row.insert_id)?;
        put_str(buf, row.json)?;
    }
    Ok(())
}

/// A cursor over a record's payload; `None` when it is short or not UTF-8 (corruption).
struct Cursor<'a>(&'a [u8]);

impl<'a> Cursor<'a> {
    fn take(&mut self, n: usize) -> Option<&'a [u8]> {
        if self.0.len() < n {
            return None;
        }
        let (head, rest) = self.0.split_at(n);
        self.0 = rest;
        Some(head)
    }
    fn u32(&mut self) -> Option<u32> {
        self.take(4).and_then(|b| b.try_into().ok()).map(u32::from_le_bytes)
    }
    fn u64(&mut self) -> Option<u64> {
        self.take(8).and_then(|b| b.try_into().ok()).map(u64::from_le_bytes)
    }
    fn string(&mut self) -> Option<String> {
        let len = self.u32()? as usize;
        self.take(len).and_then(|b| std::str::from_utf8(b).ok()).map(str::to_owned)
    }
}

fn decode(payload: &[u8]) -> Option<Record> {
    let mut c = Cursor(payload);
    let seq = c.u64()?;
    let committed_at_us = i64::from_le_bytes(c.u64()?.to_le_bytes());
    let n = c.u32()? as usize;
    let mut rows = Vec::with_capacity(n.min(1 << 16));
    for _ in 0..n {
        rows.push(LoggedRow { table: c.string()?, insert_id: c.string()?, json: c.string()? });
    }
    c.0.is_empty().then_some(Record { seq, committed_at_us, rows })
}

/// Every whole, intact record of a segment, the byte length they span and the file's length.
fn read_segment(path: &Path) -> Result<(Vec<Record>, u64, u64), LogError> {
    let file = File::open(path).map_err(io(path))?;
    let total = file.metadata().map_err(io(path))?.len();
    let mut reader = BufReader::with_capacity(1 << 20, file);
    let (mut records, mut good) = (Vec::new(), 0_u64);
    let mut header = [0_u8; 8];
    let mut payload = Vec::new();
    loop {
        if reader.read_exact(&mut header).is_err() {
            break;
        }
        let len = u32::from_le_bytes([header[0], header[1], header[2], header[3]]);
        let crc = u32::from_le_bytes([header[4], header[5], header[6], header[7]]);
        if len > MAX_RECORD_BYTES || u64::from(len) > total - good - 8 {
            break;
        }
        payload.resize(len as usize, 0);
        if reader.read_exact(&mut payload).is_err() || crc32fast::hash(&payload) != crc {
            break;
        }
        let Some(record) = decode(&payload) else { break };
        // Sequence numbers only grow; a record that goes back is not part of this log.
        if records.last().is_some_and(|r: &Record| r.seq >= record.seq) {
            break;
        }
        records.push(record);
        good += 8 + u64::from(len);
    }
    Ok((records, good, total))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn rows(n: usize, tag: &str) -> Vec<LoggedRow> {
        (0..n)
            .map(|i| LoggedRow {
                table: "streaming_events".into(),
                insert_id: format!("{tag}-{i}"),
                json: format!(r#"{{"event_id":"{tag}-{i}","é":"ü"}}"#),
            })
            .collect()
    }

    fn refs(rows: &[LoggedRow]) -> Vec<LogRow<'_>> {
        rows.iter().map(|r| LogRow { table: &r.table, insert_id: &r.insert_id, json: &r.json }).collect()
    }

    fn temp(name: &str) -> PathBuf {
        let dir = std::env::temp_dir().join(format!("tributary-log-{}-{name}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        dir
    }

    #[test]
    fn records_come_back_after_the_checkpoint_only() {
        let dir = temp("checkpoint");
        let mut log = IngestLog::open(&dir, 0).expect("open").log;
        assert_eq!(log.append(10, &refs(&rows(3, "a"))).expect("append"), 1);
        assert_eq!(log.append(20, &refs(&rows(2, "b"))).expect("append"), 2);
        assert_eq!(log.append(30, &[]).expect("append"), 3);
        drop(log);
        let all = IngestLog::open(&dir, 0).expect("reopen");
        assert_eq!(all.records.len(), 3);
        assert_eq!(all.records[0], Record { seq: 1, committed_at_us: 10, rows: rows(3, "a") });
        assert_eq!(all.log.last_seq(), 3);
        drop(all);
        let after = IngestLog::open(&dir, 2).expect("reopen");
        assert_eq!(after.records.iter().map(|r| r.seq).collect::<Vec<_>>(), vec![3]);
        // The next record continues the sequence.
        let mut log = after.log;
        assert_eq!(log.append(40, &refs(&rows(1, "c"))).expect("append"), 4);
    }

    #[test]
    fn a_torn_tail_is_cut_off_and_the_log_goes_on() {
        let dir = temp("torn");
        let mut log = IngestLog::open(&dir, 0).expect("open").log;
        log.append(1, &refs(&rows(2, "a"))).expect("append");
        log.append(2, &refs(&rows(2, "b"))).expect("append");
        let path = log.active_path.clone();
        drop(log);
        // A third record whose write stopped half way (a crash before its fdatasync returned).
        let mut partial = Vec::from([0_u8; 8]);
        encode(&mut partial, 3, 3, &refs(&rows(5, "c"))).expect("encode");
        let len = u32::try_from(partial.len() - 8).expect("small");
        partial[0..4].copy_from_slice(&len.to_le_bytes());
        partial.truncate(partial.len() / 2);
        let full = std::fs::metadata(&path).expect("meta").len();
        OpenOptions::new().append(true).open(&path).expect("open").write_all(&partial).expect("write");
        let r = IngestLog::open(&dir, 0).expect("reopen");
        assert_eq!(r.records.len(), 2);
        assert_eq!(r.cut_bytes, partial.len() as u64);
        assert_eq!(std::fs::metadata(&path).expect("meta").len(), full);
        let mut log = r.log;
        assert_eq!(log.append(4, &refs(&rows(1, "d"))).expect("append"), 3);
        drop(log);
        assert_eq!(IngestLog::open(&dir, 0).expect("reopen").records.len(), 3);
    }

    #[test]
    fn a_flipped_bit_ends_the_segment_at_the_last_good_record() {
        let dir = temp("crc");
        let mut log = IngestLog::open(&dir, 0).expect("open").log;
        log.append(1, &refs(&rows(1, "a"))).expect("append");
        log.append(2, &refs(&rows(1, "b"))).expect("append");
        let path = log.active_path.clone();
        drop(log);
        let mut bytes = std::fs::read(&path).expect("read");
        let last = bytes.len() - 3;
        bytes[last] ^= 0x40;
        std::fs::write(&path, &bytes).expect("write");
        let r = IngestLog::open(&dir, 0).expect("reopen");
        assert_eq!(r.records.iter().map(|r| r.seq).collect::<Vec<_>>(), vec![1]);
    }

    #[test]
    fn loaded_segments_are_released() {
        let dir = temp("release");
        let mut log = IngestLog::open(&dir, 0).expect("open").log;
        log.append(1, &refs(&rows(1, "a"))).expect("append");
        log.roll().expect("roll");
        log.append(2, &refs(&rows(1, "b"))).expect("append");
        log.roll().expect("roll");
        assert_eq!(log.sealed().iter().map(|s| s.last_seq).collect::<Vec<_>>(), vec![1, 2]);
        assert_eq!(log.release(1).expect("release"), 1);
        assert_eq!(log.sealed().len(), 1);
        drop(log);
        // Reopened with everything loaded: nothing comes back, old segments are gone.
        let r = IngestLog::open(&dir, 2).expect("reopen");
        assert!(r.records.is_empty());
        assert_eq!(r.log.last_seq(), 2);
        let segments = std::fs::read_dir(&dir).expect("dir").count();
        assert_eq!(segments, 1, "only the new active segment");
    }
}
