//! The analytics SQL shipped with the binary (`sql/*.sql`), one text for both warehouses. The files are
//! BigQuery SQL (paste them into the console with the project and dataset filled in);
//! [`render_bigquery`] fills the placeholders, [`render_duckdb`] also rewrites the few constructs DuckDB
//! spells differently, so the embedded warehouse creates the same views and the dashboard reads the
//! same figures whichever warehouse is behind it.

/// Views, in creation order (a view may read the ones before it): (name, SQL with placeholders).
pub const VIEWS: &[(&str, &str)] = &[
    ("realtime_activity", include_str!("../../../sql/realtime_activity.sql")),
    ("traffic_last_hour", include_str!("../../../sql/traffic_last_hour.sql")),
    ("dashboard_summary", include_str!("../../../sql/dashboard.sql")),
    ("dashboard_window", include_str!("../../../sql/dashboard_window.sql")),
    ("dashboard_totals", include_str!("../../../sql/dashboard_totals.sql")),
    ("dashboard_top_pages", include_str!("../../../sql/dashboard_top_pages.sql")),
    ("dashboard_traffic_sources", include_str!("../../../sql/dashboard_traffic_sources.sql")),
    ("dashboard_funnel", include_str!("../../../sql/dashboard_funnel.sql")),
    ("dashboard_minutes", include_str!("../../../sql/dashboard_minutes.sql")),
    ("dashboard_traffic_anomalies", include_str!("../../../sql/dashboard_traffic_anomalies.sql")),
    ("dashboard_sensor_anomalies", include_str!("../../../sql/dashboard_sensor_anomalies.sql")),
];

/// BigQuery: fills `{project}` and `{dataset}`.
pub fn render_bigquery(sql: &str, project: &str, dataset: &str) -> String {
    sql.replace("{project}", project).replace("{dataset}", dataset)
}

/// DuckDB: `` `{project}.{dataset}.t` `` becomes `"t"`, `TIMESTAMP_TRUNC(x, UNIT)` becomes
/// `date_trunc('unit', x)`, `TIMESTAMP_SUB(x, INTERVAL …)` becomes `(x - INTERVAL …)`, and
/// `CURRENT_TIMESTAMP` becomes the current UTC time as a `TIMESTAMP` (the tables' type; DuckDB's own
/// `CURRENT_TIMESTAMP` has a time zone), and `JSON_VALUE(j, path)` (a string in BigQuery) becomes
/// `json_extract_string(j, path)` (DuckDB's `json_value` returns JSON, quotes included).
/// `INTERVAL n UNIT` is spelled alike.
pub fn render_duckdb(sql: &str) -> String {
    let sql = sql.replace("`{project}.{dataset}.", "\"").replace('`', "\"");
    let sql = rewrite_calls(&sql, "TIMESTAMP_TRUNC(", |args| match args.rsplit_once(',') {
        Some((expr, unit)) => format!("date_trunc('{}', {})", unit.trim().to_lowercase(), expr.trim()),
        None => format!("TIMESTAMP_TRUNC({args})"),
    });
    let sql = rewrite_calls(&sql, "TIMESTAMP_SUB(", |args| match args.split_once(',') {
        Some((expr, interval)) => format!("({} - {})", expr.trim(), interval.trim()),
        None => format!("TIMESTAMP_SUB({args})"),
    });
    sql.replace("JSON_VALUE(", "json_extract_string(")
        .replace("CURRENT_TIMESTAMP()", "CURRENT_TIMESTAMP")
        .replace("CURRENT_TIMESTAMP", "make_timestamp(epoch_us(get_current_timestamp()))")
}

/// Replaces every `name(args)` (parentheses balanced) by `f(args)`.
fn rewrite_calls(sql: &str, name: &str, f: impl Fn(&str) -> String) -> String {
    let mut out = String::with_capacity(sql.len());
    let mut rest = sql;
    while let Some(start) = rest.find(name) {
        out.push_str(&rest[..start]);
        let after = &rest[start + name.len()..];
        let mut depth = 1usize;
        let end = after.char_indices().find_map(|(i, c)| {
            match c {
                '(' => depth += 1,
                ')' => depth -= 1,
                _ => {}
            }
            (depth == 0).then_some(i)
        });
        match end {
            Some(end) => {
                out.push_str(&f(&after[..end]));
                rest = &after[end + 1..];
            }
            None => {
                out.push_str(&rest[start..]);
                rest = "";
            }
        }
    }
    out.push_str(rest);
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn duckdb_rendering_rewrites_what_duckdb_spells_differently() {
        let sql = "SELECT TIMESTAMP_TRUNC(e.timestamp, MINUTE) AS m FROM `{project}.{dataset}.streaming_events` AS e \
                   WHERE e.timestamp >= TIMESTAMP_SUB(CURRENT_TIMESTAMP(), INTERVAL 1 HOUR) AND f(TIMESTAMP_TRUNC(g(x, y), HOUR)) > 0";
        assert_eq!(
            render_duckdb(sql),
            "SELECT date_trunc('minute', e.timestamp) AS m FROM \"streaming_events\" AS e \
             WHERE e.timestamp >= (make_timestamp(epoch_us(get_current_timestamp())) - INTERVAL 1 HOUR) \
             AND f(date_trunc('hour', g(x, y))) > 0"
        );
        assert_eq!(render_bigquery("`{project}.{dataset}.t`", "p", "d"), "`p.d.t`");
        // JSON_VALUE is a string in both, not JSON (no quotes).
        let conn = duckdb::Connection::open_in_memory().expect("open");
        let sql = render_duckdb(
            r#"SELECT COALESCE(JSON_VALUE(CAST('{"r": "google"}' AS JSON), '$.r'), 'direct') || '/' || COALESCE(JSON_VALUE(CAST('{}' AS JSON), '$.r'), 'direct')"#,
        );
        let got: String = conn.query_row(&sql, [], |r| r.get(0)).expect("query");
        assert_eq!(got, "google/direct");
    }

    #[test]
    fn every_shipped_view_is_created_by_duckdb_and_answers() {
        let conn = duckdb::Connection::open_in_memory().expect("open");
        for t in crate::warehouse::schema::builtin() {
            conn.execute_batch(&crate::warehouse::duckdb::create_table(t, crate::warehouse::duckdb::Dedup::PrimaryKey))
                .expect("table");
        }
        for (name, sql) in VIEWS {
            let rendered = render_duckdb(sql);
            conn.execute_batch(&rendered).unwrap_or_else(|e| panic!("view {name}: {e}\n{rendered}"));
            let mut stmt = conn.prepare(&format!("SELECT * FROM \"{name}\"")).expect("prepare");
            let mut rows = stmt.query([]).expect("query");
            while rows.next().expect("row").is_some() {}
        }
    }
}
