//! The admin routes, on their own loopback listener: `POST /query` runs SQL on the embedded warehouse
//! (DuckDB allows one process per database file, so `tributary sql` asks the running host), and, only
//! with `testing.fault_injection`, `PUT /faults/sink` sets the warehouse fault switch: `fail`, `crash` (the writer thread panics) or
//! off (`ok`).

use std::sync::atomic::{AtomicU8, Ordering};
use std::sync::{Arc, Mutex};

use http::{Method, Request, Response, StatusCode};
use http_body_util::BodyExt;
use hyper::body::Incoming;
use serde_json::Value;

use crate::listener::{Body, Routes, text};
use crate::warehouse::fault;

/// Why a query failed.
#[derive(Debug, thiserror::Error)]
pub enum QueryError {
    #[error("{0}")]
    Sql(#[from] duckdb::Error),
    #[error("the warehouse connection is poisoned by an earlier panic")]
    Poisoned,
    #[error("only queries run here (the admin connection is read-only): {0}")]
    NotAQuery(String),
}

/// Runs the query `sql` and returns each result row as a JSON object (columns in order). Only queries
/// run (`SELECT`, `WITH`, `FROM`, `DESCRIBE`, …: whatever can be a subquery): DDL, DML, `COPY`,
/// `ATTACH` and `SET` are refused, so the admin connection cannot change the warehouse.
pub fn query_json(conn: &duckdb::Connection, sql: &str) -> Result<Vec<Value>, QueryError> {
    let sql = sql.trim().trim_end_matches(';').trim();
    // DuckDB turns each row into JSON itself (timestamps, lists, structs, JSON columns), so no type is
    // mapped by hand here; and a statement that cannot be wrapped is not a query.
    let wrapped = format!("SELECT to_json(_row)::VARCHAR FROM ({sql}\n) AS _row");
    let mut stmt = conn.prepare(&wrapped).map_err(|e| QueryError::NotAQuery(e.to_string()))?;
    let rows = stmt.query_map([], |r| r.get::<_, String>(0))?;
    let mut out = Vec::new();
    for row in rows {
        let row = row?;
        out.push(serde_json::from_str(&row).unwrap_or(Value::String(row)));
    }
    Ok(out)
}

/// Turns off DuckDB's access to anything outside the database (files, `COPY`, extensions, `ATTACH`)
/// for the whole database; it cannot be turned back on. The writer needs none of it.
pub fn lock_down(conn: &duckdb::Connection) -> Result<(), duckdb::Error> {
    conn.execute_batch("SET enable_external_access = false; SET lock_configuration = true;")
}

/// The largest `/query` body.
const MAX_QUERY_BYTES: usize = 1 << 20;

/// How long `/query` waits for the rows acked before it to be loaded (read-your-writes).
const QUERY_LOAD_WAIT: std::time::Duration = std::time::Duration::from_secs(2);

/// The embedded warehouse's read side.
pub struct Reader {
    pub conn: Mutex<duckdb::Connection>,
    /// Rows acked from the ingest log reach the tables a moment later: a query waits for them.
    pub loaded: crate::warehouse::embedded::LoadWatermark,
}

/// The admin routes.
pub struct Admin {
    /// The embedded warehouse; `None` when the sink writes to BigQuery.
    pub reader: Option<Reader>,
    /// FAULT INJECTION (tests only): present when `testing.fault_injection` is on.
    pub fault: Option<Arc<AtomicU8>>,
}

impl Admin {
    async fn route(self: Arc<Self>, req: Request<Incoming>) -> Response<Body> {
        let (parts, body) = req.into_parts();
        let body = match http_body_util::Limited::new(body, MAX_QUERY_BYTES).collect().await {
            Ok(b) => b.to_bytes(),
            Err(e) => {
                return text(
                    StatusCode::BAD_REQUEST,
                    format!("reading the body (at most {MAX_QUERY_BYTES} bytes): {e}\n"),
                );
            }
        };
        match (&parts.method, parts.uri.path()) {
            (&Method::POST, "/query") if self.reader.is_none() => text(
                StatusCode::CONFLICT,
                String::from("this host writes to BigQuery (sink.backend); query the dataset with bq or the console\n"),
            ),
            (&Method::POST, "/query") => {
                let sql = String::from_utf8_lossy(&body).into_owned();
                let me = Arc::clone(&self);
                let result = tokio::task::spawn_blocking(move || {
                    let reader = me.reader.as_ref().ok_or(QueryError::Poisoned)?;
                    if !reader.loaded.wait_loaded(QUERY_LOAD_WAIT) {
                        tracing::warn!("query: the loader is behind; answering from what is loaded");
                    }
                    let conn = reader.conn.lock().map_err(|_| QueryError::Poisoned)?;
                    query_json(&conn, &sql)
                })
                .await;
                match result {
                    Ok(Ok(rows)) => {
                        let body = serde_json::to_string(&serde_json::json!({ "rows": rows })).unwrap_or_default();
                        text(StatusCode::OK, body)
                    }
                    Ok(Err(e)) => text(StatusCode::BAD_REQUEST, format!("{e}\n")),
                    Err(e) => text(StatusCode::INTERNAL_SERVER_ERROR, format!("query task failed: {e}\n")),
                }
            }
            (&Method::PUT, "/faults/sink") => match (&self.fault, body.as_ref()) {
                (None, _) => text(StatusCode::NOT_FOUND, "fault injection is off (testing.fault_injection)\n"),
                (Some(flag), b"fail") => {
                    flag.store(fault::FAIL, Ordering::SeqCst);
                    tracing::warn!("FAULT INJECTION: warehouse writes now fail");
                    text(StatusCode::OK, "failing\n")
                }
                (Some(flag), b"crash") => {
                    flag.store(fault::CRASH, Ordering::SeqCst);
                    tracing::warn!("FAULT INJECTION: the next warehouse write crashes the writer");
                    text(StatusCode::OK, "crashing\n")
                }
                (Some(flag), b"ok") => {
                    flag.store(fault::NONE, Ordering::SeqCst);
                    tracing::warn!("FAULT INJECTION: warehouse writes work again");
                    text(StatusCode::OK, "ok\n")
                }
                (Some(_), _) => text(StatusCode::BAD_REQUEST, "expected 'fail', 'crash' or 'ok'\n"),
            },
            _ => text(StatusCode::NOT_FOUND, "no such admin route\n"),
        }
    }
}

impl Routes for Admin {
    async fn call(self: Arc<Self>, req: Request<Incoming>) -> Response<Body> {
        self.route(req).await
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rows_come_back_as_ordered_json_and_only_queries_run() {
        let conn = duckdb::Connection::open_in_memory().expect("open");
        conn.execute_batch("CREATE TABLE t (b INT, a VARCHAR, ts TIMESTAMP); INSERT INTO t VALUES (2, 'x', TIMESTAMP '2024-01-01 10:00:00')").expect("setup");
        lock_down(&conn).expect("lock down");
        let rows = query_json(&conn, "SELECT * FROM t;").expect("select");
        assert_eq!(serde_json::to_string(&rows).expect("json"), r#"[{"b":2,"a":"x","ts":"2024-01-01 10:00:00"}]"#);
        assert_eq!(query_json(&conn, "WITH n AS (SELECT count(*) AS n FROM t) FROM n").expect("with").len(), 1);
        let err = query_json(&conn, "SELECT nope FROM t").expect_err("bad column");
        assert!(err.to_string().contains("nope"), "{err}");
        for write in [
            "DROP TABLE t",
            "DELETE FROM t",
            "INSERT INTO t VALUES (3, 'y', NULL)",
            "UPDATE t SET b = 0",
            "COPY t TO '/tmp/tributary-admin-test.csv'",
            "SELECT 1); DROP TABLE t; SELECT (1",
            "SET enable_external_access = true",
            "ATTACH '/tmp/tributary-admin-test.db'",
        ] {
            assert!(query_json(&conn, write).is_err(), "{write} must be refused");
        }
        assert!(query_json(&conn, "SELECT * FROM read_text('/etc/hostname')").is_err(), "no file access");
        assert!(conn.execute_batch("SET enable_external_access = true").is_err(), "locked");
        assert_eq!(query_json(&conn, "SELECT count(*) AS n FROM t").expect("still there")[0]["n"], 1);
    }
}
