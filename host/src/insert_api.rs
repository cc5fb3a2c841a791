//! BigQuery's `tabledata.insertAll`, served by the host:
//! `POST /bigquery/v2/projects/{project}/datasets/{dataset}/tables/{table}/insertAll` feeds the same
//! group commit as the push routes (same dedup on `insertId`, same refusals), and answers in BigQuery's
//! response shape with per-row `insertErrors`. So BigQuery clients (the official Python client, a Spin
//! sink adapter) can stream into whichever warehouse the host writes to.
//!
//! Differences from BigQuery, on purpose: rows commit independently, as with `skipInvalidRows = true`
//! (no row is ever reported `stopped`, so a client retrying without insert ids cannot duplicate rows);
//! `templateSuffix` is refused. Project and dataset are not checked: the host has one warehouse.

use serde::Deserialize;
use serde_json::{Map, Value, json};
use tributary_model::{Row, WriteError};

use crate::group_commit::{GroupCommit, Mode};
use crate::warehouse::schema;

/// The prefix of every insert id given through insertAll.
pub const INSERT_ALL_IDS: &str = "insertAll:";

/// The request body (`TableDataInsertAllRequest`).
#[derive(Debug, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct InsertAllRequest {
    #[serde(default)]
    pub rows: Vec<InsertRow>,
    #[serde(default)]
    pub skip_invalid_rows: bool,
    #[serde(default)]
    pub ignore_unknown_values: bool,
    #[serde(default)]
    pub template_suffix: Option<String>,
}

#[derive(Debug, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct InsertRow {
    #[serde(default)]
    pub insert_id: Option<String>,
    pub json: Map<String, Value>,
}

/// `(project, dataset, table)` of an insertAll path.
pub fn parse_path(path: &str) -> Option<(&str, &str, &str)> {
    let rest = path.strip_prefix("/bigquery/v2/projects/")?.strip_suffix("/insertAll")?;
    let parts: Vec<&str> = rest.split('/').collect();
    match parts.as_slice() {
        [project, "datasets", dataset, "tables", table]
            if !project.is_empty() && !dataset.is_empty() && !table.is_empty() =>
        {
            Some((project, dataset, table))
        }
        _ => None,
    }
}

/// BigQuery's error body.
pub fn error(code: u16, status: &str, message: &str) -> (u16, String) {
    (code, json!({"error": {"code": code, "message": message, "status": status, "errors": [{"reason": status.to_lowercase(), "message": message}]}}).to_string())
}

/// Handles one insertAll call; returns the HTTP status and body.
pub async fn handle(
    sink: &GroupCommit,
    embedded: bool,
    project: &str,
    dataset: &str,
    table: &str,
    body: &[u8],
) -> (u16, String) {
    let request: InsertAllRequest = match serde_json::from_slice(body) {
        Ok(r) => r,
        Err(e) => return error(400, "INVALID_ARGUMENT", &format!("Invalid insertAll request body: {e}")),
    };
    if request.template_suffix.is_some() {
        return error(400, "INVALID_ARGUMENT", "templateSuffix is not supported by the Tributary host");
    }
    let builtin = schema::find(table);
    if embedded && builtin.is_none() {
        return error(404, "NOT_FOUND", &format!("Not found: Table {project}:{dataset}.{table}"));
    }
    let stamp = chrono::Utc::now().timestamp_nanos_opt().unwrap_or_default();
    let keyed = builtin.and_then(|t| t.keyed);
    let rows: Vec<Row> = request
        .rows
        .into_iter()
        .enumerate()
        .map(|(i, mut row)| {
            if request.ignore_unknown_values
                && let Some(t) = builtin
            {
                row.json.retain(|k, _| t.columns.iter().any(|c| c.name == k));
            }
            // A keyed table is upserted: the row's key is its insert id (the latest version wins).
            let key = keyed.and_then(|k| match row.json.get(k.key)? {
                Value::String(s) => Some(s.clone()),
                other => Some(other.to_string()),
            });
            Row {
                table: table.to_owned(),
                // Without an insert id BigQuery does not dedup either: a fresh one per row.
                insert_id: key
                    // insertAll's ids live apart from the ids the functions derive from message ids,
                    // so no caller can make a real message look like a duplicate.
                    .or(row.insert_id.filter(|id| !id.is_empty()).map(|id| format!("{INSERT_ALL_IDS}{id}")))
                    .unwrap_or_else(|| format!("insertall-{stamp}-{i}")),
                json: Value::Object(row.json).to_string(),
            }
        })
        .collect();
    let mode = if keyed.is_some() { Mode::Upsert } else { Mode::Append };
    match sink.write_mode(rows, mode).await {
        Ok(refused) => (200, response(&refused)),
        Err(WriteError::Overloaded(m)) => error(429, "RESOURCE_EXHAUSTED", &m),
        Err(WriteError::Unavailable(m)) => error(503, "UNAVAILABLE", &m),
    }
}

/// `TableDataInsertAllResponse`: one entry per refused row.
fn response(refused: &[tributary_model::RowError]) -> String {
    let mut body = json!({"kind": "bigquery#tableDataInsertAllResponse"});
    if !refused.is_empty() {
        body["insertErrors"] = refused
            .iter()
            .map(|e| {
                json!({"index": e.index, "errors": [{"reason": e.reason, "location": e.location.clone().unwrap_or_default(), "debugInfo": "", "message": e.message}]})
            })
            .collect();
    }
    body.to_string()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn paths_name_project_dataset_and_table() {
        assert_eq!(
            parse_path("/bigquery/v2/projects/p/datasets/d/tables/streaming_events/insertAll"),
            Some(("p", "d", "streaming_events"))
        );
        assert_eq!(parse_path("/bigquery/v2/projects/p/datasets/d/tables//insertAll"), None);
        assert_eq!(parse_path("/bigquery/v2/projects/p/datasets/d/tables/t"), None);
        assert_eq!(parse_path("/bigquery/v2/projects/p/tables/t/insertAll"), None);
    }

    #[test]
    fn refusals_read_like_bigquerys_response() {
        let body = response(&[tributary_model::RowError {
            index: 2,
            reason: "invalid".into(),
            location: Some("timestamp".into()),
            message: "bad".into(),
        }]);
        let v: Value = serde_json::from_str(&body).expect("json");
        assert_eq!(v["insertErrors"][0]["index"], 2);
        assert_eq!(v["insertErrors"][0]["errors"][0]["location"], "timestamp");
        assert_eq!(serde_json::from_str::<Value>(&response(&[])).expect("json").get("insertErrors"), None);
    }
}
