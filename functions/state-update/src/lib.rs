//! Typed, optimistic read-modify-write over the `state` import: read a key, let pure logic decide the
//! new value, `compare-and-swap` it against the version read, and start over when another instance
//! got there first. Every update in this crate goes through [`update`].

use serde::Serialize;
use serde::de::DeserializeOwned;
use sha2::{Digest, Sha256};

/// A stored value and its version (`state.entry`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Entry {
    pub value: Vec<u8>,
    pub version: u64,
}

/// The state store failed (`state.state-error`, plus the cases this crate adds).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum StateError {
    /// Transient: nothing was written; the push must fail so Pub/Sub redelivers.
    #[error("state store unavailable: {0}")]
    Unavailable(String),
    /// Permanent for this request (a value over the host's limits).
    #[error("state store refused the request: {0}")]
    Invalid(String),
    /// A stored value no longer decodes: a bug or a foreign writer. Nothing is overwritten.
    #[error("state key '{key}' holds a value this function cannot read: {reason}")]
    Corrupt { key: String, reason: String },
    /// Too many writers raced on one key; the push fails and Pub/Sub redelivers it later.
    #[error("state key '{0}' is contended: gave up after {MAX_ATTEMPTS} attempts")]
    Contended(String),
}

/// The `state` import (the host's store in wasm; an in-memory double in tests).
pub trait State {
    fn get(&self, key: &str) -> Result<Option<Entry>, StateError>;
    /// `Ok(None)`: the key moved past `expected`; read again.
    fn compare_and_swap(
        &self,
        key: &str,
        expected: u64,
        value: &[u8],
        ttl_ms: Option<u64>,
    ) -> Result<Option<u64>, StateError>;
    fn delete(&self, key: &str, expected: u64) -> Result<bool, StateError>;
    fn scan(&self, prefix: &str, limit: u32) -> Result<Vec<String>, StateError>;
}

/// Attempts before [`StateError::Contended`]. Each attempt is one read and one conditional write.
pub const MAX_ATTEMPTS: usize = 200;

/// What an update decided.
#[derive(Debug)]
pub enum Change<T> {
    /// Store this value.
    Put(T),
    /// Leave the key as it is.
    Keep,
}

/// Reads `key` (decoded as `T`, `None` when absent), lets `decide` compute the change and its result,
/// and applies it atomically. `decide` may run several times, so it must be pure.
pub fn update<T, R>(
    state: &impl State,
    key: &str,
    ttl_ms: Option<u64>,
    mut decide: impl FnMut(Option<T>) -> (Change<T>, R),
) -> Result<R, StateError>
where
    T: Serialize + DeserializeOwned,
{
    for attempt in 0..MAX_ATTEMPTS {
        let current = state.get(key)?;
        let (version, value) = match current {
            None => (0, None),
            Some(entry) => {
                let value = serde_json::from_slice(&entry.value)
                    .map_err(|e| StateError::Corrupt { key: key.to_owned(), reason: e.to_string() })?;
                (entry.version, Some(value))
            }
        };
        let (change, result) = decide(value);
        let Change::Put(next) = change else { return Ok(result) };
        let bytes = serde_json::to_vec(&next).map_err(|e| StateError::Invalid(e.to_string()))?;
        if state.compare_and_swap(key, version, &bytes, ttl_ms)?.is_some() {
            return Ok(result);
        }
        std::thread::sleep(backoff(key, attempt));
    }
    Err(StateError::Contended(key.to_owned()))
}

/// The pause after losing a race: exponential from 50 µs up to 5 ms, with jitter, so writers contending
/// for one key spread out instead of retrying in lockstep (each lost attempt costs two state calls).
pub fn backoff(key: &str, attempt: usize) -> std::time::Duration {
    let ceiling = 50u64.saturating_mul(1 << attempt.min(7)).min(5_000);
    let nanos = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map_or(0, |d| d.subsec_nanos());
    let jitter = digest(&format!("{key}/{attempt}/{nanos}")) % (ceiling / 2 + 1);
    std::time::Duration::from_micros(ceiling / 2 + jitter)
}

/// Implements [`State`] for `$ty` with the `state` import of the bindings generated at `$pipeline`
/// (e.g. `tributary::pipeline`): the same few lines every stateful function's `lib.rs` needs.
#[macro_export]
macro_rules! impl_state_import {
    ($ty:ty, $($pipeline:ident)::+) => {
        impl $crate::State for $ty {
            fn get(&self, key: &str) -> Result<Option<$crate::Entry>, $crate::StateError> {
                $($pipeline)::+::state::get(key)
                    .map(|e| e.map(|e| $crate::Entry { value: e.value, version: e.version }))
                    .map_err($crate::from_wit_error!($($pipeline)::+))
            }
            fn compare_and_swap(
                &self,
                key: &str,
                expected: u64,
                value: &[u8],
                ttl_ms: Option<u64>,
            ) -> Result<Option<u64>, $crate::StateError> {
                $($pipeline)::+::state::compare_and_swap(key, expected, value, ttl_ms)
                    .map_err($crate::from_wit_error!($($pipeline)::+))
            }
            fn delete(&self, key: &str, expected: u64) -> Result<bool, $crate::StateError> {
                $($pipeline)::+::state::delete(key, expected).map_err($crate::from_wit_error!($($pipeline)::+))
            }
            fn scan(&self, prefix: &str, limit: u32) -> Result<Vec<String>, $crate::StateError> {
                $($pipeline)::+::state::scan(prefix, limit).map_err($crate::from_wit_error!($($pipeline)::+))
            }
        }
    };
}

/// A closure turning the generated `state-error` into [`StateError`] (for [`impl_state_import!`]).
#[doc(hidden)]
#[macro_export]
macro_rules! from_wit_error {
    ($($pipeline:ident)::+) => {
        |e| match e {
            $($pipeline)::+::state::StateError::Unavailable(m) => $crate::StateError::Unavailable(m),
            $($pipeline)::+::state::StateError::Invalid(m) => $crate::StateError::Invalid(m),
        }
    };
}

/// Reads `key` decoded as `T`.
pub fn read<T: DeserializeOwned>(state: &impl State, key: &str) -> Result<Option<T>, StateError> {
    state
        .get(key)?
        .map(|entry| {
            serde_json::from_slice(&entry.value)
                .map_err(|e| StateError::Corrupt { key: key.to_owned(), reason: e.to_string() })
        })
        .transpose()
}

/// A 64-bit digest of an id, for the sets kept in state (exact up to a 2⁻⁶⁴-per-pair collision).
pub fn digest(id: &str) -> u64 {
    let hash = Sha256::digest(id.as_bytes());
    let mut first = [0u8; 8];
    first.copy_from_slice(&hash[..8]);
    u64::from_le_bytes(first)
}

// Always compiled (no feature): a feature only tests turn on would make `cargo test` and `cargo run`
// build different copies of every crate above this one.

pub mod memory {
    //! TEST DOUBLE: an in-memory [`State`] with the host's semantics (store-wide versions), and a
    //! fault switch.

    use std::cell::{Cell, RefCell};
    use std::collections::BTreeMap;

    use super::*;

    #[derive(Default, Debug)]
    pub struct MemoryState {
        pub map: RefCell<BTreeMap<String, Entry>>,
        seq: Cell<u64>,
        /// Every call fails with `Unavailable` while set.
        pub down: Cell<bool>,
        /// The next N compare-and-swaps lose as if another writer won.
        pub lose_next: Cell<usize>,
    }

    impl MemoryState {
        fn check(&self) -> Result<(), StateError> {
            if self.down.get() { Err(StateError::Unavailable("FAULT INJECTION: store down".into())) } else { Ok(()) }
        }
    }

    impl State for MemoryState {
        fn get(&self, key: &str) -> Result<Option<Entry>, StateError> {
            self.check()?;
            Ok(self.map.borrow().get(key).cloned())
        }
        fn compare_and_swap(
            &self,
            key: &str,
            expected: u64,
            value: &[u8],
            _ttl_ms: Option<u64>,
        ) -> Result<Option<u64>, StateError> {
            self.check()?;
            if self.lose_next.get() > 0 {
                self.lose_next.set(self.lose_next.get() - 1);
                return Ok(None);
            }
            let mut map = self.map.borrow_mut();
            let current = map.get(key).map_or(0, |e| e.version);
            if current != expected {
                return Ok(None);
            }
            self.seq.set(self.seq.get() + 1);
            map.insert(key.to_owned(), Entry { value: value.to_vec(), version: self.seq.get() });
            Ok(Some(self.seq.get()))
        }
        fn delete(&self, key: &str, expected: u64) -> Result<bool, StateError> {
            self.check()?;
            let mut map = self.map.borrow_mut();
            if map.get(key).map(|e| e.version) == Some(expected) {
                map.remove(key);
                return Ok(true);
            }
            Ok(false)
        }
        fn scan(&self, prefix: &str, limit: u32) -> Result<Vec<String>, StateError> {
            self.check()?;
            Ok(self.map.borrow().keys().filter(|k| k.starts_with(prefix)).take(limit as usize).cloned().collect())
        }
    }
}

#[cfg(test)]
mod tests {
    use super::memory::MemoryState;
    use super::*;

    #[test]
    fn update_retries_after_losing_a_race() {
        let state = MemoryState::default();
        state.lose_next.set(3);
        let mut calls = 0;
        let out = update(&state, "k", None, |v: Option<u32>| {
            calls += 1;
            (Change::Put(v.unwrap_or(0) + 1), "done")
        })
        .expect("update");
        assert_eq!((out, calls), ("done", 4));
        assert_eq!(read::<u32>(&state, "k").expect("read"), Some(1));
    }

    #[test]
    fn contention_and_outage_are_errors_not_silent() {
        let state = MemoryState::default();
        state.lose_next.set(MAX_ATTEMPTS);
        let err = update(&state, "k", None, |_: Option<u32>| (Change::Put(1), ())).expect_err("contended");
        assert_eq!(err, StateError::Contended("k".into()));
        state.down.set(true);
        assert!(matches!(read::<u32>(&state, "k"), Err(StateError::Unavailable(_))));
    }

    #[test]
    fn backoff_grows_with_jitter_and_is_capped() {
        assert!(backoff("k", 0) <= std::time::Duration::from_micros(50));
        assert!(backoff("k", 3) >= std::time::Duration::from_micros(200));
        assert!(backoff("k", 40) <= std::time::Duration::from_millis(5));
    }

    #[test]
    fn corrupt_values_are_not_overwritten() {
        let state = MemoryState::default();
        state.compare_and_swap("k", 0, b"not json", None).expect("seed");
        let err = update(&state, "k", None, |_: Option<u32>| (Change::Put(1), ())).expect_err("corrupt");
        assert!(matches!(err, StateError::Corrupt { .. }));
        assert_eq!(state.get("k").expect("get").expect("kept").value, b"not json");
    }
}
