//! The admin routes, on their own loopback listener: `POST /query` runs SQL on the embedded warehouse
//! (DuckDB allows one process per database file, so `tributary sql` asks the running host), and, only
//! with `testing.fault_injection`, `PUT /faults/sink` turns the warehouse fault switch on (`fail`) or
//! off (`ok`).

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};

use http::{Method, Request, Response, StatusCode};
use http_body_util::BodyExt;
use hyper::body::Incoming;
use serde_json::Value;

use crate::listener::{Body, Routes, text};

/// Why a query failed.
#[derive(Debug, thiserror::Error)]
pub enum QueryError {
    #[error("{0}")]
    Sql(#[from] duckdb::Error),
    #[error("the warehouse connection is poisoned by an earlier panic")]
    Poisoned,
}

/// Runs `sql` and returns each result row as a JSON object (columns in order). A statement that returns
/// no rows (DDL, INSERT) returns an empty list.
pub fn query_json(conn: &duckdb::Connection, sql: &str) -> Result<Vec<Value>, QueryError> {
    let sql = sql.trim().trim_end_matches(';').trim();
    // DuckDB turns each row into JSON itself (timestamps, lists, structs, JSON columns), so no type is
    // mapped by hand here.
    let wrapped = format!("SELECT to_json(_row)::VARCHAR FROM ({sql}) AS _row");
    match conn.prepare(&wrapped) {
        Ok(mut stmt) => {
            let rows = stmt.query_map([], |r| r.get::<_, String>(0))?;
            let mut out = Vec::new();
            for row in rows {
                let row = row?;
                out.push(serde_json::from_str(&row).unwrap_or(Value::String(row)));
            }
            Ok(out)
        }
        // Not a query (or a broken one): run it as written, so its own error is the one reported.
        Err(_) => {
            conn.execute_batch(sql)?;
            Ok(Vec::new())
        }
    }
}

/// The admin routes.
pub struct Admin {
    /// The embedded warehouse; `None` when the sink writes to BigQuery.
    pub reader: Option<Mutex<duckdb::Connection>>,
    /// FAULT INJECTION (tests only): present when `testing.fault_injection` is on.
    pub fault: Option<Arc<AtomicBool>>,
}

impl Admin {
    async fn route(self: Arc<Self>, req: Request<Incoming>) -> Response<Body> {
        let (parts, body) = req.into_parts();
        let body = match body.collect().await {
            Ok(b) => b.to_bytes(),
            Err(e) => return text(StatusCode::BAD_REQUEST, format!("reading the body: {e}\n")),
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
                    let conn = reader.lock().map_err(|_| QueryError::Poisoned)?;
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
                    flag.store(true, Ordering::SeqCst);
                    tracing::warn!("FAULT INJECTION: warehouse writes now fail");
                    text(StatusCode::OK, "failing\n")
                }
                (Some(flag), b"ok") => {
                    flag.store(false, Ordering::SeqCst);
                    tracing::warn!("FAULT INJECTION: warehouse writes work again");
                    text(StatusCode::OK, "ok\n")
                }
                (Some(_), _) => text(StatusCode::BAD_REQUEST, "expected 'fail' or 'ok'\n"),
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
    fn rows_come_back_as_ordered_json_and_statements_run() {
        let conn = duckdb::Connection::open_in_memory().expect("open");
        assert!(query_json(&conn, "CREATE TABLE t (b INT, a VARCHAR, ts TIMESTAMP);").expect("ddl").is_empty());
        query_json(&conn, "INSERT INTO t VALUES (2, 'x', TIMESTAMP '2024-01-01 10:00:00')").expect("insert");
        let rows = query_json(&conn, "SELECT * FROM t;").expect("select");
        assert_eq!(serde_json::to_string(&rows).expect("json"), r#"[{"b":2,"a":"x","ts":"2024-01-01 10:00:00"}]"#);
        let err = query_json(&conn, "SELECT nope FROM t").expect_err("bad column");
        assert!(err.to_string().contains("nope"), "{err}");
    }
}
