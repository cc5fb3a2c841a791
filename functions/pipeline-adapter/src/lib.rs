//! The pipeline adapter: one component exporting everything a function imports from
//! `tributary:pipeline` (world `pipeline-adapter`), for Spin. Spin composes a function with its
//! `[component.X.dependencies]` and registers one component per WIT package, so two dependencies from
//! this package (say transform and sink) cannot be composed together; one dependency keyed
//! `"tributary:pipeline@0.1.0"` can, and this is it:
//! - `types`, exported so the function's import of them is satisfied too;
//! - `transform`: the default transform (functions/normalize);
//! - `sink`: BigQuery insertAll requests over outbound HTTP (functions/insert-all), to the target the
//!   Spin variables `sink_origin`, `sink_project`, `sink_dataset`, `sink_token_source` (and the secret
//!   `sink_bearer_token`) name, read through `wasi:config/store` (the dependency inherits the
//!   function's configuration);
//! - `state`: [`kv_state`] over `wasi:keyvalue` (Spin's key-value store `state_store`, `default`
//!   unless set), under the scope the variable `state_scope` names (the function's name).
//!
//! Glue only (wasm32): the state mapping is [`kv_state`], tested natively.

pub mod kv_state;

#[cfg(target_arch = "wasm32")]
#[expect(unsafe_code, reason = "wit-bindgen generates the canonical-ABI glue")]
mod component {
    use tributary_model as model;

    use crate::kv_state::{self, KvError, KvState};

    wit_bindgen::generate!({
        path: "../../wit",
        world: "pipeline-adapter",
        generate_all,
    });

    use exports::tributary::pipeline::sink::WriteError;
    use exports::tributary::pipeline::state::{Entry, StateError};
    use exports::tributary::pipeline::types::{Message, Rejection, Row, RowError};
    use wasi::keyvalue::{atomics, store};

    struct Adapter;

    /// A setting of the function (Spin variables), `None` when unset or unreadable.
    fn setting(name: &str) -> Option<String> {
        wasi::config::store::get(name).ok().flatten()
    }

    impl exports::tributary::pipeline::transform::Guest for Adapter {
        fn transform(msg: Message) -> Result<Vec<Row>, Rejection> {
            let msg = model::Message {
                id: msg.id,
                data: msg.data,
                attributes: msg.attributes,
                publish_time: msg.publish_time,
                ordering_key: msg.ordering_key,
                subscription: msg.subscription,
                delivery_attempt: msg.delivery_attempt,
            };
            match normalize::normalize(&msg, chrono::Utc::now()) {
                Ok(rows) => {
                    Ok(rows.into_iter().map(|r| Row { table: r.table, insert_id: r.insert_id, json: r.json }).collect())
                }
                Err(e) => Err(Rejection { reason: e.reason, message: e.message }),
            }
        }
    }

    fn send(rows: Vec<Row>, upsert: bool) -> Result<Vec<RowError>, WriteError> {
        let target = insert_all::Target::from_variables(setting).map_err(WriteError::Unavailable)?;
        let rows: Vec<model::Row> =
            rows.into_iter().map(|r| model::Row { table: r.table, insert_id: r.insert_id, json: r.json }).collect();
        match insert_all::client::send(&target, &rows, upsert) {
            Ok(refused) => Ok(refused
                .into_iter()
                .map(|e| RowError { index: e.index, reason: e.reason, location: e.location, message: e.message })
                .collect()),
            Err(model::WriteError::Overloaded(m)) => Err(WriteError::Overloaded(m)),
            Err(model::WriteError::Unavailable(m)) => Err(WriteError::Unavailable(m)),
        }
    }

    impl exports::tributary::pipeline::sink::Guest for Adapter {
        fn write(rows: Vec<Row>) -> Result<Vec<RowError>, WriteError> {
            send(rows, false)
        }

        fn upsert(rows: Vec<Row>) -> Result<Vec<RowError>, WriteError> {
            send(rows, true)
        }
    }

    /// A `wasi:keyvalue` bucket as [`kv_state::Bucket`].
    struct WasiBucket(store::Bucket);

    fn kv_error(e: store::Error) -> KvError {
        KvError(match e {
            store::Error::NoSuchStore => "no such store (is it in the component's key_value_stores?)".into(),
            store::Error::AccessDenied => "access denied".into(),
            store::Error::Other(m) => m,
        })
    }

    impl kv_state::Bucket for WasiBucket {
        type Cas = atomics::Cas;

        fn get(&self, key: &str) -> Result<Option<Vec<u8>>, KvError> {
            self.0.get(key).map_err(kv_error)
        }

        fn set(&self, key: &str, value: &[u8]) -> Result<(), KvError> {
            self.0.set(key, value).map_err(kv_error)
        }

        fn delete(&self, key: &str) -> Result<(), KvError> {
            self.0.delete(key).map_err(kv_error)
        }

        fn list_keys(&self, cursor: Option<String>) -> Result<(Vec<String>, Option<String>), KvError> {
            let page = self.0.list_keys(cursor.as_deref()).map_err(kv_error)?;
            Ok((page.keys, page.cursor))
        }

        fn increment(&self, key: &str, delta: i64) -> Result<i64, KvError> {
            atomics::increment(&self.0, key, delta).map_err(kv_error)
        }

        fn cas(&self, key: &str) -> Result<(Self::Cas, Option<Vec<u8>>), KvError> {
            let cas = atomics::Cas::new(&self.0, key).map_err(kv_error)?;
            let current = cas.current().map_err(kv_error)?;
            Ok((cas, current))
        }

        fn swap(&self, cas: Self::Cas, value: &[u8]) -> Result<kv_state::Swap, KvError> {
            match atomics::swap(cas, value) {
                Ok(()) => Ok(kv_state::Swap::Done),
                Err(atomics::CasError::CasFailed(_)) => Ok(kv_state::Swap::Lost),
                Err(atomics::CasError::StoreError(e)) => Err(kv_error(e)),
            }
        }
    }

    fn state() -> Result<KvState<WasiBucket>, kv_state::StateError> {
        let scope = setting(model::adapter_settings::STATE_SCOPE).ok_or_else(|| {
            kv_state::StateError::Invalid(
                "the pipeline adapter has no variable state_scope (the function's name)".into(),
            )
        })?;
        let label = setting(model::adapter_settings::STATE_STORE).unwrap_or_else(|| "default".to_owned());
        let bucket = store::open(&label).map_err(|e| kv_state::StateError::from(kv_error(e)))?;
        KvState::new(WasiBucket(bucket), &scope)
    }

    fn now_ms() -> u64 {
        u64::try_from(chrono::Utc::now().timestamp_millis()).unwrap_or(0)
    }

    fn wit_error(e: kv_state::StateError) -> StateError {
        match e {
            kv_state::StateError::Unavailable(m) => StateError::Unavailable(m),
            kv_state::StateError::Invalid(m) => StateError::Invalid(m),
        }
    }

    impl exports::tributary::pipeline::state::Guest for Adapter {
        fn get(key: String) -> Result<Option<Entry>, StateError> {
            let entry = state().and_then(|s| s.get(&key, now_ms())).map_err(wit_error)?;
            Ok(entry.map(|e| Entry { value: e.value, version: e.version }))
        }

        fn compare_and_swap(
            key: String,
            expected: u64,
            value: Vec<u8>,
            ttl_ms: Option<u64>,
        ) -> Result<Option<u64>, StateError> {
            state().and_then(|s| s.compare_and_swap(&key, expected, &value, ttl_ms, now_ms())).map_err(wit_error)
        }

        fn delete(key: String, expected: u64) -> Result<bool, StateError> {
            state().and_then(|s| s.delete(&key, expected, now_ms())).map_err(wit_error)
        }

        fn scan(prefix: String, limit: u32) -> Result<Vec<String>, StateError> {
            state().and_then(|s| s.scan(&prefix, limit, now_ms())).map_err(wit_error)
        }
    }

    export!(Adapter);
}
