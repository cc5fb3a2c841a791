//! The tables the warehouse knows, and the check of a row's JSON against them.
//!
//! Types and refusals follow BigQuery's (`STRING`, `TIMESTAMP`, `JSON`, `INT64`, `FLOAT64`, `BOOL`;
//! `no such field: X.`, `Missing required field: X.`), so a row the embedded warehouse accepts is a row
//! BigQuery accepts. Every table also has `_insert_id` (the dedup key) and `_inserted_at`.

use chrono::{DateTime, NaiveDateTime, Utc};
use serde_json::{Map, Value};
use tributary_model::tables;

/// A column's type, in BigQuery's vocabulary.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ColumnType {
    String,
    Timestamp,
    Json,
    Int64,
    Float64,
    Bool,
}

impl ColumnType {
    /// The DuckDB type that holds it.
    pub fn duckdb(self) -> &'static str {
        match self {
            ColumnType::String => "VARCHAR",
            ColumnType::Timestamp => "TIMESTAMP",
            ColumnType::Json => "JSON",
            ColumnType::Int64 => "BIGINT",
            ColumnType::Float64 => "DOUBLE",
            ColumnType::Bool => "BOOLEAN",
        }
    }
}

#[derive(Debug, Clone, Copy)]
pub struct Column {
    pub name: &'static str,
    pub ty: ColumnType,
    pub required: bool,
}

#[derive(Debug, Clone)]
pub struct TableSchema {
    pub name: &'static str,
    pub columns: Vec<Column>,
    /// Keyed tables take upserts instead of appends (see [`Keyed`]).
    pub keyed: Option<Keyed>,
}

/// A table whose rows are upserted: the row's insert id is its key (the value of `key`), and a row
/// replaces the stored one with the same key unless that one has a later `version`.
#[derive(Debug, Clone, Copy)]
pub struct Keyed {
    /// The column the key comes from (the insert id must equal it).
    pub key: &'static str,
    /// A TIMESTAMP column: the later one wins.
    pub version: &'static str,
}

const fn col(name: &'static str, ty: ColumnType, required: bool) -> Column {
    Column { name, ty, required }
}

/// The built-in tables (seed §6.2 for `streaming_events`), built once.
pub fn builtin() -> &'static [TableSchema] {
    static TABLES: std::sync::LazyLock<Vec<TableSchema>> = std::sync::LazyLock::new(tables);
    &TABLES
}

/// The built-in table called `name`.
pub fn find(name: &str) -> Option<&'static TableSchema> {
    builtin().iter().find(|t| t.name == name)
}

fn tables() -> Vec<TableSchema> {
    use ColumnType::*;
    vec![
        TableSchema {
            name: tables::STREAMING_EVENTS,
            columns: vec![
                col("event_id", String, true),
                col("user_id", String, false),
                col("event_type", String, true),
                col("timestamp", Timestamp, true),
                col("session_id", String, false),
                col("page_url", String, false),
                col("properties", Json, false),
                col("publish_time", Timestamp, false),
                col("message_id", String, false),
                col("processed_at", Timestamp, false),
            ],
            keyed: None,
        },
        TableSchema {
            name: tables::DEAD_LETTER,
            columns: vec![
                col("message_id", String, true),
                col("subscription", String, false),
                // As received: a malformed publish time must still be recorded.
                col("publish_time", String, false),
                col("delivery_attempt", Int64, false),
                col("attributes", Json, false),
                // Base64 of the payload bytes (BigQuery BYTES travel as base64 too).
                col("payload", String, false),
                col("payload_text", String, false),
                // The whole payload's size and SHA-256 (hex): `payload` keeps at most its first MiB.
                col("payload_bytes", Int64, false),
                col("payload_sha256", String, false),
                col("payload_truncated", Bool, false),
                col("stage", String, true),
                col("error_reason", String, true),
                col("error_message", String, false),
                col("failed_at", Timestamp, true),
            ],
            keyed: None,
        },
        // anomaly-check: one row per closed minute (seed §5.2, streaming).
        TableSchema {
            name: "traffic_anomalies",
            columns: vec![
                col("minute", Timestamp, true),
                col("events_count", Int64, true),
                col("unique_users", Int64, true),
                col("unique_sessions", Int64, true),
                col("baseline_minutes", Int64, true),
                col("mean_events", Float64, false),
                col("stddev_events", Float64, false),
                col("mean_users", Float64, false),
                col("stddev_users", Float64, false),
                col("traffic_status", String, true),
                col("user_status", String, true),
                col("closed_by", String, true),
                col("closed_at", Timestamp, true),
            ],
            keyed: None,
        },
        // transform (sensor mode) + anomaly-check: every reading, normalized and judged (seed §7.2).
        TableSchema {
            name: "sensor_readings",
            columns: vec![
                col("reading_id", String, true),
                col("sensor_id", String, true),
                col("sensor_type", String, true),
                col("location", String, false),
                col("timestamp", Timestamp, true),
                col("value", Float64, true),
                col("unit", String, false),
                col("normalized_value", Float64, true),
                col("normalized_unit", String, true),
                col("is_anomaly", Bool, false),
                col("anomaly_reason", String, false),
                col("processed_at", Timestamp, false),
            ],
            keyed: None,
        },
        TableSchema {
            name: "sensor_anomalies",
            columns: vec![
                col("reading_id", String, true),
                col("sensor_id", String, true),
                col("sensor_type", String, true),
                col("location", String, false),
                col("timestamp", Timestamp, true),
                col("normalized_value", Float64, true),
                col("reason", String, true),
                col("z_score", Float64, false),
                col("baseline_mean", Float64, false),
                col("baseline_stddev", Float64, false),
                col("detected_at", Timestamp, true),
            ],
            keyed: None,
        },
        // 5-minute tumbling windows per location and sensor type, over normal readings.
        TableSchema {
            name: "sensor_aggregates",
            columns: vec![
                col("window_start", Timestamp, true),
                col("window_end", Timestamp, true),
                col("location", String, true),
                col("sensor_type", String, true),
                col("readings_count", Int64, true),
                col("avg_value", Float64, true),
                col("min_value", Float64, true),
                col("max_value", Float64, true),
                col("stddev_value", Float64, false),
                col("closed_by", String, true),
                col("closed_at", Timestamp, true),
            ],
            keyed: None,
        },
        // windows: one row per closed session (seed §3.2, `Sessions(gap=30 min)`).
        TableSchema {
            name: "user_sessions",
            columns: vec![
                col("user_id", String, true),
                col("session_start", Timestamp, true),
                col("session_end", Timestamp, true),
                col("events_count", Int64, true),
                col("event_types", Int64, true),
                // Distinct page_url values in order of first view, at most 50.
                col("pages", Json, true),
                col("duration_seconds", Float64, true),
                col("closed_by", String, true),
                col("closed_at", Timestamp, true),
            ],
            keyed: None,
        },
        // windows: per minute and event type (seed §3.1, `FixedWindows(60)`).
        TableSchema {
            name: "streaming_metrics",
            columns: vec![
                col("window_start", Timestamp, true),
                col("window_end", Timestamp, true),
                col("event_type", String, true),
                col("events_count", Int64, true),
                col("unique_users", Int64, true),
                col("unique_sessions", Int64, true),
                col("closed_by", String, true),
                col("closed_at", Timestamp, true),
            ],
            keyed: None,
        },
        // windows: per minute, all events (seed §3.2, `Count.Globally`).
        TableSchema {
            name: "realtime_dashboard",
            columns: vec![
                col("window_start", Timestamp, true),
                col("window_end", Timestamp, true),
                col("events_count", Int64, true),
                col("unique_users", Int64, true),
                col("unique_sessions", Int64, true),
                col("closed_by", String, true),
                col("closed_at", Timestamp, true),
            ],
            keyed: None,
        },
        // recommend-trigger: one row per user, upserted (seed §7.3).
        TableSchema {
            name: "realtime_user_recs",
            columns: vec![
                col("user_id", String, true),
                // [{product_id, product_name, category, recommendation_score}], best first.
                col("recommendations", Json, true),
                col("activity_score", Int64, true),
                col("updated_at", Timestamp, true),
            ],
            keyed: Some(Keyed { key: "user_id", version: "updated_at" }),
        },
        // recommend-trigger: the product catalog as last seen, upserted.
        TableSchema {
            name: "products",
            columns: vec![
                col("product_id", String, true),
                col("product_name", String, true),
                col("category", String, true),
                col("popularity_score", Float64, true),
                col("status", String, true),
                col("updated_at", Timestamp, true),
            ],
            keyed: Some(Keyed { key: "product_id", version: "updated_at" }),
        },
    ]
}

/// A checked, typed cell.
#[derive(Debug, Clone, PartialEq)]
pub enum Cell {
    Null,
    String(String),
    /// Microseconds since the epoch, UTC.
    Timestamp(i64),
    Json(String),
    Int64(i64),
    Float64(f64),
    Bool(bool),
}

/// Why a row was refused: BigQuery's `reason`, `location` and `message`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Refusal {
    pub reason: &'static str,
    pub location: Option<String>,
    pub message: String,
}

fn invalid(location: &str, message: String) -> Refusal {
    Refusal { reason: "invalid", location: Some(location.to_owned()), message }
}

impl TableSchema {
    /// Checks a row's JSON and returns one cell per column, in column order.
    pub fn cells(&self, json: &str) -> Result<Vec<Cell>, Refusal> {
        let value: Value = serde_json::from_str(json).map_err(|e| Refusal {
            reason: "invalid",
            location: None,
            message: format!("row is not valid JSON: {e}"),
        })?;
        let Value::Object(mut fields) = value else {
            return Err(Refusal { reason: "invalid", location: None, message: "row must be a JSON object".into() });
        };
        let cells = self
            .columns
            .iter()
            .map(|c| cell(c, fields.remove(c.name).unwrap_or(Value::Null)))
            .collect::<Result<Vec<_>, _>>()?;
        if let Some(unknown) = first_key(&fields) {
            return Err(invalid(unknown, format!("no such field: {unknown}.")));
        }
        Ok(cells)
    }
}

fn first_key(fields: &Map<String, Value>) -> Option<&str> {
    fields.keys().next().map(String::as_str)
}

fn cell(column: &Column, value: Value) -> Result<Cell, Refusal> {
    let wrong =
        |v: &Value| invalid(column.name, format!("Cannot convert value to {:?}: {v}", column.ty).to_lowercase());
    Ok(match (column.ty, value) {
        (_, Value::Null) if column.required => {
            return Err(invalid(column.name, format!("Missing required field: {}.", column.name)));
        }
        (_, Value::Null) => Cell::Null,
        (ColumnType::String, Value::String(s)) => Cell::String(s),
        (ColumnType::Json, v) => Cell::Json(v.to_string()),
        (ColumnType::Timestamp, Value::String(s)) => Cell::Timestamp(parse_timestamp(&s).ok_or_else(|| {
            invalid(column.name, format!("Could not parse '{s}' as a timestamp. Required format is YYYY-MM-DD HH:MM[:SS[.SSSSSS]] or RFC 3339"))
        })?),
        (ColumnType::Int64, Value::Number(n)) if n.is_i64() => Cell::Int64(n.as_i64().unwrap_or_default()),
        (ColumnType::Int64, Value::String(s)) if s.parse::<i64>().is_ok() => Cell::Int64(s.parse().unwrap_or_default()),
        (ColumnType::Float64, Value::Number(n)) => Cell::Float64(n.as_f64().unwrap_or(f64::NAN)),
        (ColumnType::Float64, Value::String(s)) if s.parse::<f64>().is_ok() => Cell::Float64(s.parse().unwrap_or(f64::NAN)),
        (ColumnType::Bool, Value::Bool(b)) => Cell::Bool(b),
        (_, v) => return Err(wrong(&v)),
    })
}

/// RFC 3339 or BigQuery's canonical `YYYY-MM-DD HH:MM:SS[.ffffff][ UTC]`, to epoch microseconds.
pub(crate) fn parse_timestamp(s: &str) -> Option<i64> {
    if let Ok(t) = DateTime::parse_from_rfc3339(s) {
        return Some(t.with_timezone(&Utc).timestamp_micros());
    }
    let s = s.strip_suffix(" UTC").unwrap_or(s);
    ["%Y-%m-%d %H:%M:%S%.f", "%Y-%m-%dT%H:%M:%S%.f", "%Y-%m-%d %H:%M"]
        .iter()
        .find_map(|f| NaiveDateTime::parse_from_str(s, f).ok())
        .map(|t| t.and_utc().timestamp_micros())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn events() -> TableSchema {
        find("streaming_events").expect("builtin").clone()
    }

    #[test]
    fn a_transform_row_converts() {
        let cells = events()
            .cells(
                r#"{"event_id":"e","event_type":"t","timestamp":"2024-01-01T10:00:00.000000Z","properties":{"a":1}}"#,
            )
            .expect("valid");
        assert_eq!(cells[0], Cell::String("e".into()));
        assert_eq!(cells[3], Cell::Timestamp(1_704_103_200_000_000));
        assert_eq!(cells[6], Cell::Json(r#"{"a":1}"#.into()));
        assert_eq!(cells[1], Cell::Null);
    }

    #[test]
    fn refusals_read_like_bigquerys() {
        let t = events();
        let r = t
            .cells(r#"{"event_id":"e","event_type":"t","timestamp":"2024-01-01 10:00:00","nope":1}"#)
            .expect_err("unknown");
        assert_eq!(
            (r.reason, r.location.as_deref(), r.message.as_str()),
            ("invalid", Some("nope"), "no such field: nope.")
        );
        let r = t.cells(r#"{"event_type":"t","timestamp":"2024-01-01 10:00:00"}"#).expect_err("missing");
        assert_eq!(r.message, "Missing required field: event_id.");
        let r = t.cells(r#"{"event_id":1,"event_type":"t","timestamp":"2024-01-01 10:00:00"}"#).expect_err("type");
        assert_eq!(r.location.as_deref(), Some("event_id"));
        let r = t.cells(r#"{"event_id":"e","event_type":"t","timestamp":"later"}"#).expect_err("ts");
        assert!(r.message.starts_with("Could not parse 'later' as a timestamp"), "{}", r.message);
        assert!(t.cells("[]").is_err());
    }
}
