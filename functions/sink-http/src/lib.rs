//! The sink adapter: a component that exports `tributary:pipeline/sink` and implements it with BigQuery
//! `tabledata.insertAll` requests over outbound HTTP (`wasi:http/outgoing-handler`). Hosts that do not
//! provide `sink` themselves (`wasmtime serve`, any wasi:http host) run a function composed with it
//! (`wac plug`). Under Spin, functions/pipeline-adapter is the one dependency instead (it reads Spin
//! variables).
//!
//! Where it writes (environment variables: `wasmtime serve --env`):
//! - `TRIBUTARY_INSERTALL_URL` (required): the dataset's base URL, to which `/tables/<t>/insertAll` is
//!   appended: `http://tributary-host:3000/bigquery/v2/projects/P/datasets/D` (the Tributary host, which
//!   group-commits and holds the credentials) or `https://bigquery.googleapis.com/bigquery/v2/projects/P/datasets/D`;
//! - `TRIBUTARY_TOKEN_SOURCE` (optional): `metadata` fetches an access token from the Google metadata
//!   server (Cloud Run, GKE, GCE) for each call; `TRIBUTARY_BEARER_TOKEN` is a fixed token instead.
//!
//! Glue only: the requests and the wasi:http client are the `insert-all` crate (functions/insert-all).

#[cfg(target_arch = "wasm32")]
#[expect(unsafe_code, reason = "wit-bindgen generates the canonical-ABI glue")]
mod component {
    use tributary_model as model;

    wit_bindgen::generate!({
        path: "../../wit",
        world: "sink-http",
        generate_all,
    });

    use exports::tributary::pipeline::sink::{Guest, WriteError};
    use tributary::pipeline::types::{Row, RowError};

    struct Adapter;

    fn send(rows: Vec<Row>, upsert: bool) -> Result<Vec<RowError>, WriteError> {
        let target = insert_all::Target::from_env(|name| std::env::var(name).ok()).map_err(WriteError::Unavailable)?;
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

    impl Guest for Adapter {
        fn write(rows: Vec<Row>) -> Result<Vec<RowError>, WriteError> {
            send(rows, false)
        }

        fn upsert(rows: Vec<Row>) -> Result<Vec<RowError>, WriteError> {
            send(rows, true)
        }
    }

    export!(Adapter);
}
