//! The dashboard's figures from the rows of its views: pure, so the shape the page relies on is
//! tested here without a warehouse.

use chrono::{DateTime, Duration, DurationRound, NaiveDateTime, SecondsFormat, Utc};
use serde_json::{Map, Value, json};

/// Data older than this (event time of the newest event, against the clock) shows as stale.
pub const STALE_AFTER_SECONDS: i64 = 120;
/// Minutes in the chart.
pub const CHART_MINUTES: i64 = 60;

/// Each view's rows, or why it could not be read.
pub struct Raw {
    pub totals: Result<Vec<Value>, String>,
    pub top_pages: Result<Vec<Value>, String>,
    pub traffic_sources: Result<Vec<Value>, String>,
    pub funnel: Result<Vec<Value>, String>,
    pub minutes: Result<Vec<Value>, String>,
    pub traffic_anomalies: Result<Vec<Value>, String>,
    pub sensor_anomalies: Result<Vec<Value>, String>,
}

/// The host's own state, shown beside the figures.
pub struct HostStatus {
    pub overloaded: bool,
    pub unavailable: bool,
    pub queue_rows: i64,
    pub query_ms: u64,
    pub warehouse: &'static str,
    /// Each `[[pull]]` subscription's counters.
    pub pull: Vec<Value>,
}

/// A timestamp as either warehouse writes it in JSON: RFC 3339, or DuckDB's `YYYY-MM-DD HH:MM:SS[.f]` (UTC).
pub fn parse_time(v: &Value) -> Option<DateTime<Utc>> {
    let s = v.as_str()?;
    DateTime::parse_from_rfc3339(s)
        .map(|t| t.with_timezone(&Utc))
        .ok()
        .or_else(|| NaiveDateTime::parse_from_str(s, "%Y-%m-%d %H:%M:%S%.f").ok().map(|t| t.and_utc()))
}

fn rfc3339(t: DateTime<Utc>) -> Value {
    Value::String(t.to_rfc3339_opts(SecondsFormat::Secs, true))
}

fn int(v: &Value) -> i64 {
    v.as_i64().or_else(|| v.as_f64().map(|f| f as i64)).or_else(|| v.as_str().and_then(|s| s.parse().ok())).unwrap_or(0)
}

/// Rows with their timestamp columns rewritten to RFC 3339 (so the page reads one format).
fn with_times(rows: Vec<Value>, columns: &[&str]) -> Vec<Value> {
    rows.into_iter()
        .map(|mut row| {
            for c in columns {
                if let Some(t) = parse_time(&row[*c]) {
                    row[*c] = rfc3339(t);
                }
            }
            row
        })
        .collect()
}

/// The JSON the page renders.
pub fn figures(raw: Raw, now: DateTime<Utc>, host: &HostStatus) -> Value {
    let mut errors = Vec::new();
    let mut ok = |r: Result<Vec<Value>, String>| {
        r.unwrap_or_else(|e| {
            errors.push(e);
            Vec::new()
        })
    };
    let totals = ok(raw.totals).into_iter().next().unwrap_or(Value::Null);
    let top_pages = ok(raw.top_pages);
    let traffic_sources = ok(raw.traffic_sources);
    let funnel = ok(raw.funnel);
    let minutes = ok(raw.minutes);
    let traffic_anomalies = with_times(ok(raw.traffic_anomalies), &["minute"]);
    let sensor_anomalies = with_times(ok(raw.sensor_anomalies), &["timestamp"]);

    let window_end = parse_time(&totals["window_end"]);
    let window_start = parse_time(&totals["window_start"]);
    let lag_seconds = window_end.map(|end| (now - end).num_seconds().max(0));

    // The funnel: each step's users and its share of the first step's.
    let first = funnel.first().map_or(0, |s| int(&s["users"]));
    let conversion_funnel: Vec<Value> = funnel
        .iter()
        .map(|s| {
            let users = int(&s["users"]);
            let rate = if first > 0 { users as f64 / first as f64 } else { 0.0 };
            json!({"step": s["step"], "users": users, "rate": rate})
        })
        .collect();

    // The chart: one point per minute, minutes with no events included as zeros.
    let mut events_per_minute = Vec::new();
    if let Some(end) = window_end {
        let last = end.duration_trunc(Duration::minutes(1)).unwrap_or(end);
        let mut counts = std::collections::HashMap::new();
        for m in &minutes {
            if let Some(t) = parse_time(&m["minute"]) {
                counts.insert(t, (int(&m["events"]), int(&m["users"])));
            }
        }
        for i in (0..CHART_MINUTES).rev() {
            let minute = last - Duration::minutes(i);
            let (events, users) = counts.get(&minute).copied().unwrap_or((0, 0));
            events_per_minute.push(json!({"minute": rfc3339(minute), "events": events, "users": users}));
        }
    }

    let mut status = Map::new();
    status.insert("stale".into(), json!(lag_seconds.is_none_or(|lag| lag > STALE_AFTER_SECONDS)));
    status.insert("lag_seconds".into(), json!(lag_seconds));
    status.insert("overloaded".into(), json!(host.overloaded));
    status.insert("unavailable".into(), json!(host.unavailable));
    status.insert("queue_rows".into(), json!(host.queue_rows));
    status.insert("query_ms".into(), json!(host.query_ms));
    status.insert("warehouse".into(), json!(host.warehouse));
    status.insert("errors".into(), json!(errors));
    status.insert("pull".into(), json!(host.pull));

    json!({
        "dashboard_timestamp": rfc3339(now),
        "window_start": window_start.map(rfc3339),
        "window_end": window_end.map(rfc3339),
        "total_events": int(&totals["total_events"]),
        "active_users": int(&totals["active_users"]),
        "active_sessions": int(&totals["active_sessions"]),
        "top_pages": top_pages,
        "traffic_sources": traffic_sources,
        "conversion_funnel": conversion_funnel,
        "events_per_minute": events_per_minute,
        "traffic_anomalies": traffic_anomalies,
        "sensor_anomalies": sensor_anomalies,
        "status": status,
    })
}

/// The rows of a `jobs.query` response as JSON objects: numbers as numbers, timestamps (seconds
/// since the epoch in the response) as RFC 3339, NULLs as null.
pub fn bigquery_rows(response: &Value) -> Result<Vec<Value>, String> {
    if response["jobComplete"] == Value::Bool(false) {
        return Err(String::from("the query did not finish within jobs.query's timeout"));
    }
    let fields = response["schema"]["fields"].as_array().ok_or("the response has no schema")?;
    let rows = response["rows"].as_array().map(Vec::as_slice).unwrap_or_default();
    Ok(rows
        .iter()
        .map(|row| {
            let cells = row["f"].as_array().map(Vec::as_slice).unwrap_or_default();
            let mut out = Map::new();
            for (field, cell) in fields.iter().zip(cells) {
                let name = field["name"].as_str().unwrap_or_default().to_owned();
                let v = &cell["v"];
                let value = match (field["type"].as_str().unwrap_or_default(), v.as_str()) {
                    (_, None) => v.clone(),
                    ("INTEGER" | "INT64", Some(s)) => s.parse::<i64>().map_or_else(|_| v.clone(), Value::from),
                    ("FLOAT" | "FLOAT64" | "NUMERIC" | "BIGNUMERIC", Some(s)) => {
                        s.parse::<f64>().map_or_else(|_| v.clone(), Value::from)
                    }
                    ("TIMESTAMP", Some(s)) => s
                        .parse::<f64>()
                        .ok()
                        .and_then(|secs| DateTime::from_timestamp_micros((secs * 1e6).round() as i64))
                        .map_or_else(|| v.clone(), rfc3339),
                    _ => v.clone(),
                };
                out.insert(name, value);
            }
            Value::Object(out)
        })
        .collect())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn host() -> HostStatus {
        HostStatus {
            overloaded: false,
            unavailable: false,
            queue_rows: 3,
            query_ms: 7,
            warehouse: "embedded",
            pull: vec![],
        }
    }

    fn raw(totals: Vec<Value>, minutes: Vec<Value>) -> Raw {
        Raw {
            totals: Ok(totals),
            top_pages: Ok(vec![json!({"page_url": "/a", "views": 5, "unique_visitors": 2})]),
            traffic_sources: Ok(vec![json!({"traffic_source": "google", "users": 4})]),
            funnel: Ok(vec![
                json!({"position": 1, "step": "page_view", "users": 10}),
                json!({"position": 2, "step": "add_to_cart", "users": 4}),
                json!({"position": 3, "step": "purchase", "users": 1}),
            ]),
            minutes: Ok(minutes),
            traffic_anomalies: Ok(vec![json!({"minute": "2026-12-03 10:01:00", "traffic_status": "HIGH"})]),
            sensor_anomalies: Err(String::from("dashboard_sensor_anomalies: no such view")),
        }
    }

    #[test]
    fn figures_fill_the_chart_rate_the_funnel_and_say_when_data_is_stale() {
        let now = "2026-12-03T10:30:30Z".parse::<DateTime<Utc>>().expect("now");
        let totals = vec![json!({
            "total_events": 42, "active_users": 7, "active_sessions": 9,
            "window_start": "2026-12-03 09:59:50.5", "window_end": "2026-12-03 10:29:50.5",
        })];
        let minutes = vec![
            json!({"minute": "2026-12-03 10:29:00", "events": 3, "users": 2}),
            json!({"minute": "2026-12-03 09:31:00", "events": 1, "users": 1}),
            json!({"minute": "2026-12-03 09:29:00", "events": 8, "users": 8}),
        ];
        let f = figures(raw(totals, minutes), now, &host());
        assert_eq!(
            (f["total_events"].as_i64(), f["active_users"].as_i64(), f["active_sessions"].as_i64()),
            (Some(42), Some(7), Some(9))
        );
        assert_eq!(f["window_end"], "2026-12-03T10:29:50Z");
        let chart = f["events_per_minute"].as_array().expect("chart");
        assert_eq!(chart.len(), 60);
        assert_eq!(chart[59], json!({"minute": "2026-12-03T10:29:00Z", "events": 3, "users": 2}));
        assert_eq!(chart[1], json!({"minute": "2026-12-03T09:31:00Z", "events": 1, "users": 1}));
        assert_eq!(chart[0]["events"], 0, "09:30 had none; 09:29 is outside the 60 minutes");
        assert_eq!(f["conversion_funnel"][1], json!({"step": "add_to_cart", "users": 4, "rate": 0.4}));
        assert_eq!(f["traffic_anomalies"][0]["minute"], "2026-12-03T10:01:00Z");
        assert_eq!(f["status"]["stale"], false);
        assert_eq!(f["status"]["lag_seconds"], 39);
        assert_eq!(f["status"]["errors"], json!(["dashboard_sensor_anomalies: no such view"]));
        assert_eq!(f["sensor_anomalies"], json!([]));

        let later = now + Duration::seconds(STALE_AFTER_SECONDS);
        assert_eq!(
            figures(raw(vec![json!({"window_end": "2026-12-03 10:29:50"})], vec![]), later, &host())["status"]["stale"],
            true
        );
        let empty = figures(raw(vec![json!({"total_events": 0, "window_end": null})], vec![]), now, &host());
        assert_eq!((empty["status"]["stale"].clone(), empty["events_per_minute"].clone()), (json!(true), json!([])));
    }

    #[test]
    fn bigquery_rows_are_typed_by_the_schema() {
        let response = json!({
            "jobComplete": true,
            "schema": {"fields": [
                {"name": "n", "type": "INTEGER"}, {"name": "t", "type": "TIMESTAMP"},
                {"name": "s", "type": "STRING"}, {"name": "x", "type": "FLOAT"}, {"name": "z", "type": "STRING"},
            ]},
            "rows": [{"f": [{"v": "12"}, {"v": "1.7647524E9"}, {"v": "hi"}, {"v": "0.5"}, {"v": null}]}],
        });
        let rows = bigquery_rows(&response).expect("rows");
        assert_eq!(rows, vec![json!({"n": 12, "t": "2025-12-03T09:00:00Z", "s": "hi", "x": 0.5, "z": null})]);
        assert!(bigquery_rows(&json!({"jobComplete": false})).is_err());
        assert_eq!(bigquery_rows(&json!({"schema": {"fields": []}})).expect("no rows"), Vec::<Value>::new());
    }
}
