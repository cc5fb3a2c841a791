//! Legacy streaming, `tabledata.insertAll`: ≤ `insertall_max_rows` rows (Google recommends 500) and
//! ≤ `insertall_max_bytes` (the API's limit is 10 MB) per request, `insertId` = the row's insert id so
//! BigQuery dedups redeliveries (best effort, for about a minute).
//!
//! Per-row results: `invalid` rows are refused (dead-lettered by the push handler, with BigQuery's reason
//! and location); rows reported `stopped` were fine but held back by an invalid neighbour and are
//! resubmitted alone; rows reported with a transient reason (`backendError`, `internalError`,
//! `timeout`, `rateLimitExceeded`) are resubmitted after a pause; 429/5xx/timeouts retry the request
//! with backoff until the flush deadline. Each request settles on its own: one that still fails at the
//! deadline (or fails for good) reports its unsettled rows as failed, and only their pushes get 503.

use std::sync::Arc;

use serde_json::{Value, json};
use tributary_model::RowError;

use super::error::BigQueryError;
use super::rest::Rest;
use super::retry::{self, Deadline};
use super::rows::Prepared;
use super::{Caps, TableReport, Telemetry};
use crate::warehouse::Failed;

/// What BigQuery said about one row of a request.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Verdict {
    Inserted,
    /// Held back because another row of the request was invalid: resubmit.
    Stopped,
    /// A transient failure of this row alone (BigQuery's `backendError`, `timeout`, ...): resubmit.
    Transient(String),
    Invalid {
        reason: String,
        location: Option<String>,
        message: String,
    },
}

/// Splits rows into requests under both caps; `true` marks a request closed by a cap (full).
pub fn chunks(rows: Vec<Prepared>, caps: Caps) -> Vec<(Vec<Prepared>, bool)> {
    // The request envelope, then per row `{"insertId":"…","json":…},`.
    super::split(rows, caps, 64, |row| {
        serde_json::to_string(&row.json).map_or(0, |s| s.len()) + row.insert_id.len() + 24
    })
}

/// The insertAll request body, serialized once and reused by every attempt.
pub fn body(rows: &[Prepared]) -> bytes::Bytes {
    let rows: Vec<Value> = rows.iter().map(|r| json!({"insertId": r.insert_id, "json": r.json})).collect();
    serde_json::to_vec(&json!({"rows": rows, "skipInvalidRows": false, "ignoreUnknownValues": false}))
        .unwrap_or_default()
        .into()
}

/// Per-row reasons worth resubmitting the row for (BigQuery's troubleshooting table: retry them).
const TRANSIENT_ROW_REASONS: &[&str] = &["backendError", "internalError", "timeout", "rateLimitExceeded"];

/// Reads `insertErrors` into one verdict per row of the request.
pub fn verdicts(response: &Value, rows: usize) -> Vec<Verdict> {
    let mut out = vec![Verdict::Inserted; rows];
    for entry in response["insertErrors"].as_array().into_iter().flatten() {
        let Some(index) = entry["index"].as_u64().and_then(|i| usize::try_from(i).ok()).filter(|&i| i < rows) else {
            continue;
        };
        let errors = entry["errors"].as_array().cloned().unwrap_or_default();
        // A row is invalid if any of its errors is neither `stopped` nor transient.
        let transient = |e: &&Value| TRANSIENT_ROW_REASONS.contains(&e["reason"].as_str().unwrap_or_default());
        let invalid = errors.iter().find(|e| e["reason"] != "stopped" && !transient(e));
        out[index] = match (invalid, errors.iter().find(transient)) {
            (None, Some(e)) => Verdict::Transient(format!(
                "{}: {}",
                e["reason"].as_str().unwrap_or_default(),
                e["message"].as_str().unwrap_or_default()
            )),
            (Some(e), _) => Verdict::Invalid {
                reason: e["reason"].as_str().unwrap_or("invalid").to_owned(),
                location: e["location"].as_str().filter(|l| !l.is_empty()).map(str::to_owned),
                message: e["message"].as_str().unwrap_or_default().to_owned(),
            },
            (None, None) => Verdict::Stopped,
        };
    }
    out
}

/// Writes one table's rows: requests in parallel, each retried on its own until the deadline.
pub async fn write(
    rest: &Arc<Rest>,
    table: &str,
    rows: Vec<Prepared>,
    caps: Caps,
    deadline: Deadline,
    telemetry: &Telemetry,
) -> Result<TableReport, BigQueryError> {
    let requests = chunks(rows, caps);
    let results = futures::future::join_all(
        requests.into_iter().map(|(rows, full)| request(rest, table, rows, full, deadline, telemetry)),
    )
    .await;
    let mut report = TableReport::default();
    for r in results {
        let r = r?;
        report.refused.extend(r.refused);
        report.inserted += r.inserted;
        report.failed.extend(r.failed);
    }
    Ok(report)
}

async fn request(
    rest: &Rest,
    table: &str,
    mut rows: Vec<Prepared>,
    full: bool,
    deadline: Deadline,
    telemetry: &Telemetry,
) -> Result<TableReport, BigQueryError> {
    let mut report = TableReport::default();
    let mut first = true;
    let mut last_transient = String::new();
    while !rows.is_empty() {
        let body = body(&rows);
        telemetry.request("insertall", rows.len(), body.len(), first && full);
        first = false;
        let response =
            match retry::until(deadline, || rest.insert_all(table, body.clone()), |_| telemetry.retry("insertall"))
                .await
            {
                Ok(r) => r,
                // The table is gone: the whole table fails (and its cached schema is dropped).
                Err(e @ BigQueryError::Api { status: 404, .. }) => return Err(e),
                Err(e) => {
                    // This request's rows stay undecided; the other requests of the flush are not affected.
                    report.failed.push(Failed {
                        rows: rows.iter().map(|r| r.index).collect(),
                        error: format!("table {table}: {e}"),
                    });
                    return Ok(report);
                }
            };
        let verdicts = verdicts(&response, rows.len());
        let mut stopped = Vec::new();
        let (mut invalid_now, mut transient_now) = (false, false);
        for (row, verdict) in rows.into_iter().zip(verdicts) {
            match verdict {
                Verdict::Inserted => report.inserted += 1,
                Verdict::Stopped => stopped.push(row),
                Verdict::Transient(why) => {
                    telemetry.retry("insertall");
                    (last_transient, transient_now) = (why, true);
                    // Not explained by an invalid neighbour: the pause below applies.
                    stopped.push(row);
                }
                Verdict::Invalid { reason, location, message } => {
                    invalid_now = true;
                    report.refused.push(RowError {
                        index: u32::try_from(row.index).unwrap_or(u32::MAX),
                        reason,
                        location,
                        message,
                    });
                }
            }
        }
        // Only `stopped` rows go again, at once when an invalid row explains them; otherwise after a
        // pause, and never past the deadline.
        if !stopped.is_empty() && (!invalid_now || transient_now) {
            if deadline.passed() {
                let last =
                    if last_transient.is_empty() { "rows kept coming back `stopped`".into() } else { last_transient };
                report.failed.push(Failed {
                    rows: stopped.iter().map(|r| r.index).collect(),
                    error: format!("table {table}: {}", deadline.expired(last)),
                });
                return Ok(report);
            }
            tokio::time::sleep(std::time::Duration::from_millis(100)).await;
        }
        rows = stopped;
    }
    Ok(report)
}

#[cfg(test)]
mod tests {
    use serde_json::Map;

    use super::*;

    fn rows(n: usize, pad: usize) -> Vec<Prepared> {
        (0..n)
            .map(|i| {
                let mut json = Map::new();
                json.insert("p".into(), Value::String("x".repeat(pad)));
                Prepared { index: i, insert_id: format!("id{i}"), json }
            })
            .collect()
    }

    #[test]
    fn requests_are_cut_at_the_row_cap_and_marked_full() {
        let got = chunks(rows(1_201, 10), Caps { max_rows: 500, max_bytes: 10 << 20 });
        let shape: Vec<(usize, bool)> = got.iter().map(|(r, f)| (r.len(), *f)).collect();
        assert_eq!(shape, vec![(500, true), (500, true), (201, false)]);
        assert_eq!(got[2].0[0].index, 1_000, "order is kept");
    }

    #[test]
    fn requests_are_cut_at_the_byte_cap_and_a_huge_row_travels_alone() {
        let got = chunks(rows(10, 1_000), Caps { max_rows: 500, max_bytes: 3_500 });
        assert!(
            got.iter().all(|(r, _)| r.len() == 3 || r.len() == 1),
            "{:?}",
            got.iter().map(|c| c.0.len()).collect::<Vec<_>>()
        );
        assert!(got[0].1);
        let got = chunks(rows(2, 5_000), Caps { max_rows: 500, max_bytes: 3_500 });
        assert_eq!(got.len(), 2);
    }

    #[test]
    fn insert_errors_map_to_invalid_and_stopped() {
        let response = serde_json::json!({"insertErrors": [
            {"index": 1, "errors": [{"reason": "invalid", "location": "timestamp", "message": "Could not parse 'x' as a timestamp."}]},
            {"index": 0, "errors": [{"reason": "stopped", "location": "", "message": ""}]},
            {"index": 9, "errors": [{"reason": "invalid"}]},
            {"index": 3, "errors": [{"reason": "backendError", "message": "try again"}]},
            {"index": 4, "errors": [{"reason": "timeout"}, {"reason": "invalid", "message": "bad"}]},
        ]});
        let v = verdicts(&response, 5);
        assert_eq!(v[3], Verdict::Transient("backendError: try again".into()));
        assert!(matches!(&v[4], Verdict::Invalid { message, .. } if message == "bad"), "an invalid reason wins");
        assert_eq!(v[0], Verdict::Stopped);
        assert_eq!(
            v[1],
            Verdict::Invalid {
                reason: "invalid".into(),
                location: Some("timestamp".into()),
                message: "Could not parse 'x' as a timestamp.".into()
            }
        );
        assert_eq!(v[2], Verdict::Inserted);
        assert_eq!(
            verdicts(&serde_json::json!({"kind": "bigquery#tableDataInsertAllResponse"}), 2),
            vec![Verdict::Inserted; 2]
        );
    }
}
