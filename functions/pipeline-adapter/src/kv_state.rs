//! `tributary:pipeline/state` on a `wasi:keyvalue` bucket (draft2: `store` and `atomics`, what Spin 4
//! provides), pure over the [`Bucket`] trait so it is tested natively against models of Spin's stores.
//!
//! The contract to keep (wit/pipeline.wit `state`): versions unique across the store and growing with
//! every write; `compare-and-swap` against a version, 0 meaning absent; TTL honoured on read; deletes
//! conditional on a version; `scan` by prefix skipping expired keys; each function its own keys.
//!
//! `wasi:keyvalue` has plain `get`/`set`/`delete`, `increment` on 8-byte integers, and `cas` (read a
//! value, then swap it if unchanged). Two facts of Spin's stores shape the layout:
//! - Spin's default (SQLite) store swaps a key that was absent when the `cas` started with a plain
//!   upsert: two writers creating the same key would both "win". So a key is created only through
//!   `increment(key, 0)`, which both stores run atomically, and every write is then a real swap.
//! - There is no conditional delete, so nothing a writer may still be swapping is ever deleted.
//!
//! Layout, under `<scope>/` (the function's name, so functions sharing a store never see each other's
//! keys):
//! - `k/<key>`: the pointer, the entry's version as 8 bytes little-endian; 0 when absent or deleted.
//! - `d/<version>`: the entry, `[expires-at ms, 8 bytes LE, 0 = never][value]`, written once before the
//!   pointer swaps to it and deleted after the pointer has moved on. Versions never repeat, so a reader
//!   holding a pointer either finds that entry or sees the pointer has moved (and reads again).
//! - `version`: the counter every write draws its version from (`increment`).
//!
//! Costs: `get` is 2 reads; a write is 1 increment, 1 set, the cas (2 calls) and 1 delete, plus 1 read
//! when the entry may have expired; a key's first write adds 1 increment. `scan` lists every key of the
//! store (`list-keys`: Spin has no prefix listing) and reads 2 per match: fine for the functions'
//! tick routes (keys per live sensor, location, user or session), not for millions of keys. A deleted or
//! expired key leaves its 8-byte pointer (and, when expired, its entry) until it is written again;
//! orphaned entries (a writer that died between `set` and `swap`) stay. Both are bounded by the number
//! of keys a function uses.

use std::fmt;

/// A failed store call, in the store's words.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct KvError(pub String);

impl fmt::Display for KvError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

/// The outcome of a swap the store answered.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Swap {
    Done,
    /// The value changed since the cas read it.
    Lost,
}

/// The `wasi:keyvalue` calls the mapping uses (one bucket).
pub trait Bucket {
    /// A cas in progress: what `cas` read, to hand back to `swap`.
    type Cas;
    fn get(&self, key: &str) -> Result<Option<Vec<u8>>, KvError>;
    fn set(&self, key: &str, value: &[u8]) -> Result<(), KvError>;
    fn delete(&self, key: &str) -> Result<(), KvError>;
    /// One page of keys, and the cursor of the next page.
    fn list_keys(&self, cursor: Option<String>) -> Result<(Vec<String>, Option<String>), KvError>;
    fn increment(&self, key: &str, delta: i64) -> Result<i64, KvError>;
    /// Starts a cas on `key`: the handle and the value it read.
    fn cas(&self, key: &str) -> Result<(Self::Cas, Option<Vec<u8>>), KvError>;
    fn swap(&self, cas: Self::Cas, value: &[u8]) -> Result<Swap, KvError>;
}

/// A value and its version (`state.entry`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Entry {
    pub value: Vec<u8>,
    pub version: u64,
}

/// `state.state-error`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum StateError {
    Unavailable(String),
    Invalid(String),
}

impl From<KvError> for StateError {
    fn from(e: KvError) -> Self {
        Self::Unavailable(format!("key-value store: {e}"))
    }
}

/// The longest key a function may use: with the scope in front, keys stay within the 256 bytes Spin
/// documents for its key-value stores (the functions' keys are far shorter).
pub const MAX_KEY_BYTES: usize = 200;
/// The largest value: with its header, an entry stays within the 1 MiB Spin documents.
pub const MAX_VALUE_BYTES: usize = (1 << 20) - HEADER;
/// Pointer reads before `get` gives up on a key rewritten under it every time (then `unavailable`: the
/// push fails and Pub/Sub redelivers it).
const READ_ATTEMPTS: usize = 64;
/// Size of an entry's header (its expiry).
const HEADER: usize = 8;

/// One function's state in one bucket.
pub struct KvState<B> {
    bucket: B,
    scope: String,
}

impl<B: Bucket> KvState<B> {
    /// `scope` names the function (`anomaly-check`): its keys live under `<scope>/`.
    pub fn new(bucket: B, scope: &str) -> Result<Self, StateError> {
        if scope.is_empty() || scope.contains('/') {
            return Err(StateError::Invalid(format!("the state scope must be a name without '/', not {scope:?}")));
        }
        Ok(Self { bucket, scope: scope.to_owned() })
    }

    fn pointer_key(&self, key: &str) -> Result<String, StateError> {
        if key.len() > MAX_KEY_BYTES {
            return Err(StateError::Invalid(format!(
                "key of {} bytes is over the limit of {MAX_KEY_BYTES}",
                key.len()
            )));
        }
        Ok(format!("{}/k/{key}", self.scope))
    }

    fn entry_key(&self, version: u64) -> String {
        format!("{}/d/{version:020}", self.scope)
    }

    /// The entry the pointer names, if it is there and alive at `now_ms`; `Err(())` when the entry is
    /// gone (the pointer has moved on since it was read).
    fn live(&self, version: u64, now_ms: u64) -> Result<Result<Option<Vec<u8>>, ()>, StateError> {
        let Some(bytes) = self.bucket.get(&self.entry_key(version))? else { return Ok(Err(())) };
        let (expires_at, value) = decode_entry(&bytes)?;
        Ok(Ok((expires_at == 0 || expires_at > now_ms).then(|| value.to_vec())))
    }

    /// `state.get`.
    pub fn get(&self, key: &str, now_ms: u64) -> Result<Option<Entry>, StateError> {
        let pointer = self.pointer_key(key)?;
        for _ in 0..READ_ATTEMPTS {
            let version = decode_pointer(self.bucket.get(&pointer)?.as_deref())?;
            if version == 0 {
                return Ok(None);
            }
            match self.live(version, now_ms)? {
                Ok(value) => return Ok(value.map(|value| Entry { value, version })),
                Err(()) => continue,
            }
        }
        Err(StateError::Unavailable(format!("state key {key:?} kept changing while being read")))
    }

    /// Starts a cas on the pointer, creating it (at 0) first when it does not exist yet.
    fn cas_pointer(&self, pointer: &str) -> Result<(B::Cas, u64), StateError> {
        let (cas, current) = self.bucket.cas(pointer)?;
        if let Some(bytes) = current {
            return Ok((cas, decode_pointer(Some(&bytes))?));
        }
        drop(cas);
        // Atomic in both stores, and a no-op on a pointer another writer has created meanwhile (SQLite);
        // Redis refuses to increment our binary value instead, which says the same.
        let created = self.bucket.increment(pointer, 0);
        let (cas, current) = self.bucket.cas(pointer)?;
        match current {
            Some(bytes) => Ok((cas, decode_pointer(Some(&bytes))?)),
            None => Err(match created {
                Err(e) => e.into(),
                Ok(_) => StateError::Unavailable(format!("{pointer} vanished right after its creation")),
            }),
        }
    }

    /// `state.compare-and-swap`.
    pub fn compare_and_swap(
        &self,
        key: &str,
        expected: u64,
        value: &[u8],
        ttl_ms: Option<u64>,
        now_ms: u64,
    ) -> Result<Option<u64>, StateError> {
        if value.len() > MAX_VALUE_BYTES {
            return Err(StateError::Invalid(format!(
                "value of {} bytes is over the limit of {MAX_VALUE_BYTES}",
                value.len()
            )));
        }
        let pointer = self.pointer_key(key)?;
        let (cas, current) = self.cas_pointer(&pointer)?;
        if current != expected && expected != 0 {
            return Ok(None);
        }
        if current != 0 {
            // An expired entry is absent: it matches 0 and no longer matches its own version.
            let alive = match self.live(current, now_ms)? {
                Ok(value) => value.is_some(),
                Err(()) => return Ok(None), // moved on since the cas read it
            };
            if alive != (expected == current) {
                return Ok(None);
            }
        }
        let version = self.next_version()?;
        let entry_key = self.entry_key(version);
        let expires_at = ttl_ms.map_or(0, |ttl| now_ms.saturating_add(ttl).max(1));
        let mut entry = Vec::with_capacity(HEADER + value.len());
        entry.extend_from_slice(&expires_at.to_le_bytes());
        entry.extend_from_slice(value);
        self.bucket.set(&entry_key, &entry)?;
        let swapped = self.bucket.swap(cas, &version.to_le_bytes());
        // A swap the store calls lost (or failed) may have happened anyway: Spin 4's Redis store reports
        // every swap as failed after applying it. Versions never repeat, so the pointer says which.
        let done = match &swapped {
            Ok(Swap::Done) => Ok(true),
            Ok(Swap::Lost) | Err(_) => self.bucket.get(&pointer).map(|p| decode_pointer(p.as_deref()) == Ok(version)),
        };
        match (done, swapped) {
            (Ok(true), _) => {
                if current != 0 {
                    // Best effort: a leftover entry is garbage, never read (nothing points to it).
                    let _ = self.bucket.delete(&self.entry_key(current));
                }
                Ok(Some(version))
            }
            (Ok(false), Ok(_)) => {
                let _ = self.bucket.delete(&entry_key);
                Ok(None)
            }
            (Ok(false), Err(e)) => {
                let _ = self.bucket.delete(&entry_key);
                Err(e.into())
            }
            // Unknown whether it swapped: keep the entry (an orphan at worst).
            (Err(_), Err(e)) | (Err(e), Ok(_)) => Err(e.into()),
        }
    }

    fn next_version(&self) -> Result<u64, StateError> {
        let n = self.bucket.increment(&format!("{}/version", self.scope), 1)?;
        u64::try_from(n)
            .ok()
            .filter(|v| *v > 0)
            .ok_or_else(|| StateError::Unavailable(format!("version counter at {n}")))
    }

    /// `state.delete`.
    pub fn delete(&self, key: &str, expected: u64, now_ms: u64) -> Result<bool, StateError> {
        let pointer = self.pointer_key(key)?;
        if expected == 0 {
            return Ok(false);
        }
        let (cas, current) = match self.bucket.cas(&pointer)? {
            (_, None) => return Ok(false),
            (cas, Some(bytes)) => (cas, decode_pointer(Some(&bytes))?),
        };
        if current != expected || !matches!(self.live(current, now_ms)?, Ok(Some(_))) {
            return Ok(false);
        }
        let done = match self.bucket.swap(cas, &0u64.to_le_bytes())? {
            Swap::Done => true,
            // See compare_and_swap: the swap may have happened. Had another writer got in first, the
            // pointer would hold its (new) version; 0 means the key is deleted, which is what was asked
            // (two deleters of one version may then both be told true).
            Swap::Lost => decode_pointer(self.bucket.get(&pointer)?.as_deref())? == 0,
        };
        if done {
            let _ = self.bucket.delete(&self.entry_key(current));
        }
        Ok(done)
    }

    /// `state.scan`.
    pub fn scan(&self, prefix: &str, limit: u32, now_ms: u64) -> Result<Vec<String>, StateError> {
        let under = format!("{}/k/", self.scope);
        let wanted = format!("{under}{prefix}");
        let mut keys = Vec::new();
        let mut cursor = None;
        loop {
            let (page, next) = self.bucket.list_keys(cursor)?;
            keys.extend(page.into_iter().filter(|k| k.starts_with(&wanted)));
            match next {
                Some(c) => cursor = Some(c),
                None => break,
            }
        }
        keys.sort_unstable();
        let mut out = Vec::new();
        for pointer in keys {
            if out.len() >= limit as usize {
                break;
            }
            let key = &pointer[under.len()..];
            if self.get(key, now_ms)?.is_some() {
                out.push(key.to_owned());
            }
        }
        Ok(out)
    }
}

/// A pointer's version: 8 bytes little-endian as written, or `0` as Redis's `INCRBY` creates it.
fn decode_pointer(bytes: Option<&[u8]>) -> Result<u64, StateError> {
    match bytes {
        None | Some(b"0") => Ok(0),
        Some(b) => <[u8; 8]>::try_from(b)
            .map(u64::from_le_bytes)
            .map_err(|_| StateError::Unavailable(format!("a state pointer of {} bytes is not a version", b.len()))),
    }
}

fn decode_entry(bytes: &[u8]) -> Result<(u64, &[u8]), StateError> {
    let (header, value) = bytes
        .split_first_chunk::<HEADER>()
        .ok_or_else(|| StateError::Unavailable(format!("a state entry of {} bytes has no header", bytes.len())))?;
    Ok((u64::from_le_bytes(*header), value))
}

/// TEST DOUBLES: models of Spin 4's two key-value stores, for the adapter's tests and for running the
/// stateful functions' logic on the adapter natively (`tests/functions_on_keyvalue.rs`).
pub mod testing {
    use std::collections::BTreeMap;
    use std::sync::{Arc, Mutex};

    use super::{Bucket, KvError, Swap};

    /// Models of Spin's two key-value stores, as far as this mapping relies on them (read from Spin 4's
    /// `key-value-spin` and `key-value-redis`): `Sqlite` swaps a key that was absent at `cas` with an
    /// unconditional upsert and panics when incrementing a value that is not 8 bytes; `Redis` makes a swap
    /// conditional in both cases (WATCH) and refuses to increment a non-integer.
    #[derive(Debug, Clone, Copy, PartialEq, Eq)]
    pub enum Kind {
        Sqlite,
        Redis,
    }

    #[derive(Clone)]
    pub struct Model {
        kind: Kind,
        data: Arc<Mutex<BTreeMap<String, Vec<u8>>>>,
        /// Keys per `list-keys` page (to exercise the cursor).
        page: usize,
        /// Spin 4's Redis store: every swap is applied, then reported failed (its `UNWATCH` takes an
        /// argument, which Redis refuses).
        pub swap_reports_failure: bool,
    }

    impl Model {
        pub fn new(kind: Kind) -> Self {
            Self { kind, data: Arc::default(), page: 3, swap_reports_failure: false }
        }

        pub fn map(&self) -> std::sync::MutexGuard<'_, BTreeMap<String, Vec<u8>>> {
            // A context switch between calls, so concurrent tests interleave.
            std::thread::yield_now();
            self.data.lock().expect("model lock")
        }
    }

    impl Bucket for Model {
        type Cas = (String, Option<Vec<u8>>);

        fn get(&self, key: &str) -> Result<Option<Vec<u8>>, KvError> {
            Ok(self.map().get(key).cloned())
        }

        fn set(&self, key: &str, value: &[u8]) -> Result<(), KvError> {
            self.map().insert(key.to_owned(), value.to_vec());
            Ok(())
        }

        fn delete(&self, key: &str) -> Result<(), KvError> {
            self.map().remove(key);
            Ok(())
        }

        fn list_keys(&self, cursor: Option<String>) -> Result<(Vec<String>, Option<String>), KvError> {
            let map = self.map();
            let after = cursor.unwrap_or_default();
            let keys: Vec<String> = map.keys().filter(|k| **k > after).take(self.page).cloned().collect();
            let next = (keys.len() == self.page).then(|| keys[keys.len() - 1].clone());
            Ok((keys, next))
        }

        fn increment(&self, key: &str, delta: i64) -> Result<i64, KvError> {
            let mut map = self.map();
            let n = match (map.get(key), self.kind) {
                (None, Kind::Sqlite) => 0,
                (None, Kind::Redis) => 0,
                (Some(v), Kind::Sqlite) => i64::from_le_bytes(v.as_slice().try_into().expect("incorrect length")),
                (Some(v), Kind::Redis) => std::str::from_utf8(v)
                    .ok()
                    .and_then(|s| s.parse().ok())
                    .ok_or_else(|| KvError("value is not an integer".into()))?,
            } + delta;
            let stored = match self.kind {
                Kind::Sqlite => n.to_le_bytes().to_vec(),
                Kind::Redis => n.to_string().into_bytes(),
            };
            map.insert(key.to_owned(), stored);
            Ok(n)
        }

        fn cas(&self, key: &str) -> Result<(Self::Cas, Option<Vec<u8>>), KvError> {
            let current = self.map().get(key).cloned();
            Ok(((key.to_owned(), current.clone()), current))
        }

        fn swap(&self, (key, read): Self::Cas, value: &[u8]) -> Result<Swap, KvError> {
            let mut map = self.map();
            let unchanged = map.get(&key) == read.as_ref();
            if unchanged || (read.is_none() && self.kind == Kind::Sqlite) {
                map.insert(key, value.to_vec());
                Ok(if self.swap_reports_failure { Swap::Lost } else { Swap::Done })
            } else {
                Ok(Swap::Lost)
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::testing::{Kind, Model};
    use super::*;

    fn state(kind: Kind) -> KvState<Model> {
        KvState::new(Model::new(kind), "fn").expect("scope")
    }

    #[test]
    fn versions_grow_and_a_stale_version_loses() {
        for kind in [Kind::Sqlite, Kind::Redis] {
            let s = state(kind);
            assert_eq!(s.get("a", 0).expect("get"), None);
            let v1 = s.compare_and_swap("a", 0, b"one", None, 0).expect("cas").expect("created");
            assert_eq!(s.compare_and_swap("a", 0, b"again", None, 0).expect("cas"), None, "must be absent");
            let v2 = s.compare_and_swap("a", v1, b"two", None, 0).expect("cas").expect("swapped");
            assert!(v2 > v1);
            assert_eq!(s.compare_and_swap("a", v1, b"stale", None, 0).expect("cas"), None);
            assert_eq!(s.get("a", 0).expect("get"), Some(Entry { value: b"two".to_vec(), version: v2 }));
            // Versions are unique across keys, too.
            let b = s.compare_and_swap("b", 0, b"x", None, 0).expect("cas").expect("created");
            assert!(b > v2);
        }
    }

    #[test]
    fn ttl_is_honoured_on_read_and_an_expired_key_is_absent() {
        let s = state(Kind::Sqlite);
        let v = s.compare_and_swap("t", 0, b"soon", Some(1_000), 10_000).expect("cas").expect("created");
        assert_eq!(s.get("t", 10_999).expect("get").map(|e| e.version), Some(v));
        assert_eq!(s.get("t", 11_000).expect("get"), None);
        assert_eq!(s.scan("", 10, 11_000).expect("scan"), Vec::<String>::new());
        assert_eq!(s.compare_and_swap("t", v, b"late", None, 11_000).expect("cas"), None, "expired: not at v");
        assert!(!s.delete("t", v, 11_000).expect("delete"), "expired: gone");
        let again = s.compare_and_swap("t", 0, b"new", None, 11_000).expect("cas").expect("recreated");
        assert_eq!(s.get("t", 99_999).expect("get").map(|e| e.value), Some(b"new".to_vec()));
        assert!(again > v);
    }

    #[test]
    fn delete_is_conditional_and_leaves_no_entry() {
        let s = state(Kind::Redis);
        let v = s.compare_and_swap("d", 0, b"x", None, 0).expect("cas").expect("created");
        assert!(!s.delete("d", v + 1, 0).expect("delete"));
        assert!(s.delete("d", v, 0).expect("delete"));
        assert!(!s.delete("d", v, 0).expect("delete"), "already gone");
        assert_eq!(s.get("d", 0).expect("get"), None);
        let entries = s.bucket.map().keys().filter(|k| k.starts_with("fn/d/")).count();
        assert_eq!(entries, 0, "the entry goes with the delete");
        assert!(s.compare_and_swap("d", 0, b"y", None, 0).expect("cas").is_some(), "absent again");
    }

    #[test]
    fn scan_lists_live_keys_by_prefix_in_order_across_pages_and_scopes() {
        let s = state(Kind::Sqlite);
        let other = KvState::new(s.bucket.clone(), "other").expect("scope");
        other.compare_and_swap("window/zz", 0, b"x", None, 0).expect("cas");
        for k in ["window/b", "window/a", "sensor/1", "window/c", "window/d"] {
            s.compare_and_swap(k, 0, b"x", None, 0).expect("cas");
        }
        let v = s.get("window/c", 0).expect("get").expect("there").version;
        s.delete("window/c", v, 0).expect("delete");
        assert_eq!(s.scan("window/", 10, 0).expect("scan"), ["window/a", "window/b", "window/d"]);
        assert_eq!(s.scan("window/", 2, 0).expect("scan"), ["window/a", "window/b"]);
        assert_eq!(other.scan("", 10, 0).expect("scan"), ["window/zz"]);
    }

    #[test]
    fn limits_and_bad_scopes_are_invalid_not_unavailable() {
        let s = state(Kind::Sqlite);
        let long = "k".repeat(MAX_KEY_BYTES + 1);
        assert!(matches!(s.get(&long, 0), Err(StateError::Invalid(_))));
        let big = vec![0; MAX_VALUE_BYTES + 1];
        assert!(matches!(s.compare_and_swap("k", 0, &big, None, 0), Err(StateError::Invalid(_))));
        assert!(KvState::new(Model::new(Kind::Sqlite), "a/b").is_err());
        s.bucket.set("fn/k/bad", b"xyz").expect("set");
        assert!(matches!(s.get("bad", 0), Err(StateError::Unavailable(_))), "corrupt, said so");
    }

    /// The race Spin's SQLite store loses on its own: writers creating one key at once. Every
    /// increment must land exactly once, on both stores.
    #[test]
    fn concurrent_read_modify_write_loses_nothing() {
        for kind in [Kind::Sqlite, Kind::Redis] {
            let bucket = Model::new(kind);
            let threads = 6;
            let per_thread = 60;
            let handles: Vec<_> = (0..threads)
                .map(|_| {
                    let s = KvState::new(bucket.clone(), "fn").expect("scope");
                    std::thread::spawn(move || {
                        for _ in 0..per_thread {
                            loop {
                                // A read that kept losing to writers is `unavailable`: a function fails
                                // the push and Pub/Sub redelivers it; here, try again.
                                let current = match s.get("counter", 0) {
                                    Ok(current) => current,
                                    Err(StateError::Unavailable(_)) => continue,
                                    Err(e) => panic!("get: {e:?}"),
                                };
                                let (version, n) = current
                                    .map(|e| (e.version, u64::from_le_bytes(e.value.try_into().expect("8 bytes"))))
                                    .unwrap_or((0, 0));
                                let next = (n + 1).to_le_bytes();
                                if s.compare_and_swap("counter", version, &next, None, 0).expect("cas").is_some() {
                                    break;
                                }
                            }
                        }
                    })
                })
                .collect();
            for h in handles {
                h.join().expect("no panic (no increment on a non-integer)");
            }
            let s = KvState::new(bucket.clone(), "fn").expect("scope");
            let value = s.get("counter", 0).expect("get").expect("there").value;
            assert_eq!(u64::from_le_bytes(value.try_into().expect("8 bytes")), threads * per_thread);
            let entries = bucket.map().keys().filter(|k| k.starts_with("fn/d/")).count();
            assert_eq!(entries, 1, "superseded entries are deleted");
        }
    }

    /// Spin 4's Redis store says every swap failed, after applying it: the adapter reads the pointer back
    /// and carries on, keeping the entry (a single writer, as concurrent writers could still be told
    /// "lost" for a swap that won and was superseded at once; see the README).
    #[test]
    fn a_swap_reported_failed_but_applied_counts_as_done() {
        let mut bucket = Model::new(Kind::Redis);
        bucket.swap_reports_failure = true;
        let s = KvState::new(bucket, "fn").expect("scope");
        let v1 = s.compare_and_swap("k", 0, b"one", None, 0).expect("cas").expect("done");
        let v2 = s.compare_and_swap("k", v1, b"two", None, 0).expect("cas").expect("done");
        assert_eq!(s.compare_and_swap("k", v1, b"stale", None, 0).expect("cas"), None, "a real loss stays one");
        assert_eq!(s.get("k", 0).expect("get"), Some(Entry { value: b"two".to_vec(), version: v2 }));
        assert!(s.delete("k", v2, 0).expect("delete"));
        assert_eq!(s.get("k", 0).expect("get"), None);
        assert_eq!(s.bucket.map().keys().filter(|k| k.starts_with("fn/d/")).count(), 0);
    }
}
