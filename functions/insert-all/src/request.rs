//! `sink.write`/`sink.upsert` as BigQuery `tabledata.insertAll` requests: one request per table, rows in
//! the order given, and the answer mapped back to the rows of the call. Pure: the HTTP exchange is the
//! caller's (`client`, over wasi:http), so this is tested natively.
//!
//! - `write`: `insertId` = the row's insert id (BigQuery dedups on it, the Tributary host exactly).
//! - `upsert`: `insertId` = insert id + a digest of the row, so a newer version is never taken for a
//!   duplicate; the Tributary host upserts keyed tables (the key comes from the row), BigQuery appends
//!   (read `<table>_latest`).
//! - `insertErrors` → per-row refusals (`stopped` rows of a failed request are retried once by the
//!   caller); 429 → overloaded; 5xx, timeouts, connection failures → unavailable; other statuses are
//!   refusals of the whole request, reported on every row.

use serde::Deserialize;
use serde_json::{Value, json};
use sha2::{Digest as _, Sha256};
use tributary_model::{Row, RowError, WriteError};

/// One insertAll request: the table, the body, and the call's row index of each request row.
#[derive(Debug, Clone, PartialEq)]
pub struct Request {
    pub table: String,
    pub body: Value,
    pub rows: Vec<u32>,
}

/// Groups `rows` into one request per table.
pub fn requests(rows: &[Row], upsert: bool) -> Vec<Request> {
    let mut out: Vec<Request> = Vec::new();
    for (i, row) in rows.iter().enumerate() {
        let json: Value = serde_json::from_str(&row.json).unwrap_or(Value::Null);
        let insert_id = if upsert {
            format!("{}@{}", row.insert_id, hex::encode(&Sha256::digest(row.json.as_bytes())[..8]))
        } else {
            row.insert_id.clone()
        };
        let entry = json!({"insertId": insert_id, "json": json});
        let index = u32::try_from(i).unwrap_or(u32::MAX);
        match out.iter_mut().find(|r| r.table == row.table) {
            Some(r) => {
                if let Some(list) = r.body["rows"].as_array_mut() {
                    list.push(entry);
                }
                r.rows.push(index);
            }
            None => out.push(Request {
                table: row.table.clone(),
                body: json!({"rows": [entry], "skipInvalidRows": true}),
                rows: vec![index],
            }),
        }
    }
    out
}

#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
struct Response {
    #[serde(default)]
    insert_errors: Vec<InsertError>,
}

#[derive(Deserialize)]
struct InsertError {
    index: u32,
    #[serde(default)]
    errors: Vec<ErrorProto>,
}

#[derive(Deserialize)]
struct ErrorProto {
    #[serde(default)]
    reason: String,
    #[serde(default)]
    location: Option<String>,
    #[serde(default)]
    message: String,
}

/// Maps an answer to `request`: the refused rows (call indices), or why nothing was written.
pub fn verdict(request: &Request, status: u16, body: &[u8]) -> Result<Vec<RowError>, WriteError> {
    let text = String::from_utf8_lossy(body);
    match status {
        200..=299 => {}
        429 => return Err(WriteError::Overloaded(format!("insertAll into {}: 429 {text}", request.table))),
        500..=599 => return Err(WriteError::Unavailable(format!("insertAll into {}: {status} {text}", request.table))),
        _ => {
            // The whole request was refused (unknown table, bad request): every row, permanently.
            return Ok(request
                .rows
                .iter()
                .map(|&index| RowError {
                    index,
                    reason: if status == 404 { "notFound".into() } else { "invalid".into() },
                    location: None,
                    message: format!("insertAll into {} answered {status}: {text}", request.table),
                })
                .collect());
        }
    }
    let response: Response = serde_json::from_slice(body)
        .map_err(|e| WriteError::Unavailable(format!("insertAll into {}: unreadable answer: {e}", request.table)))?;
    let mut refused = Vec::new();
    for e in response.insert_errors {
        let Some(&index) = request.rows.get(e.index as usize) else { continue };
        let first = e.errors.into_iter().find(|x| x.reason != "stopped");
        match first {
            Some(x) => refused.push(RowError { index, reason: x.reason, location: x.location, message: x.message }),
            // Only `stopped`: the row was not written because another one failed; with skipInvalidRows
            // this does not happen, but if it does the write is not durable.
            None => {
                return Err(WriteError::Unavailable(format!(
                    "insertAll into {}: row {} stopped",
                    request.table, e.index
                )));
            }
        }
    }
    Ok(refused)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn row(table: &str, id: &str, json: &str) -> Row {
        Row { table: table.into(), insert_id: id.into(), json: json.into() }
    }

    #[test]
    fn one_request_per_table_with_the_call_indices() {
        let rows = [row("a", "1", r#"{"x":1}"#), row("b", "2", "{}"), row("a", "3", r#"{"x":3}"#)];
        let reqs = requests(&rows, false);
        assert_eq!(reqs.len(), 2);
        assert_eq!(reqs[0].rows, vec![0, 2]);
        assert_eq!(reqs[0].body["rows"][1], json!({"insertId": "3", "json": {"x": 3}}));
        let upserts = requests(&rows[..1], true);
        let id = upserts[0].body["rows"][0]["insertId"].as_str().expect("id");
        assert!(id.starts_with("1@") && id.len() == 2 + 16, "{id}");
    }

    #[test]
    fn answers_become_refusals_or_transient_errors() {
        let reqs = requests(&[row("a", "1", "{}"), row("b", "2", "{}"), row("a", "3", "{}")], false);
        let body =
            br#"{"insertErrors":[{"index":1,"errors":[{"reason":"invalid","location":"ts","message":"bad ts"}]}]}"#;
        let refused = verdict(&reqs[0], 200, body).expect("written");
        assert_eq!(
            refused,
            vec![RowError {
                index: 2,
                reason: "invalid".into(),
                location: Some("ts".into()),
                message: "bad ts".into()
            }]
        );
        assert!(matches!(verdict(&reqs[0], 429, b""), Err(WriteError::Overloaded(_))));
        assert!(matches!(verdict(&reqs[0], 503, b""), Err(WriteError::Unavailable(_))));
        let all = verdict(&reqs[1], 404, b"no table").expect("refused");
        assert_eq!((all.len(), all[0].index, all[0].reason.as_str()), (1, 1, "notFound"));
        assert_eq!(verdict(&reqs[0], 200, b"{}").expect("ok"), vec![]);
    }
}
