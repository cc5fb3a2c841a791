//! The seed's analytics SQL shipped with the binary ([`crate::warehouse::sql`]): `tributary bigquery views`
//! creates the views in the configured dataset; `tributary bigquery ddl` prints the tables' DDL, generated from
//! the same schemas the host creates the tables from (seed §6.2 for the events).

use std::fmt::Write as _;

use super::config::Partition;
use super::error::BigQueryError;
use super::rest::{self, Rest};
use crate::warehouse::schema;
use crate::warehouse::sql::{VIEWS, render_bigquery as render};

/// `CREATE TABLE IF NOT EXISTS` for every built-in table, as `tributary up` would create them.
pub fn ddl(project: &str, dataset: &str, partition: Partition) -> String {
    let mut out = String::from(
        "-- The tables `tributary up` creates on first use (sink.backend = bigquery-*), for creating them ahead\n\
         -- of time with `bq query` instead.\n",
    );
    for table in schema::builtin() {
        let _ = writeln!(out, "\nCREATE TABLE IF NOT EXISTS `{project}.{dataset}.{}` (", table.name);
        let fields = rest::ddl_fields(table);
        for (i, f) in fields.iter().enumerate() {
            let not_null = if f.mode == "REQUIRED" { " NOT NULL" } else { "" };
            let comma = if i + 1 < fields.len() { "," } else { "" };
            let _ = writeln!(out, "  {} {}{not_null}{comma}", f.name, f.ty);
        }
        let _ = write!(out, ")\nPARTITION BY DATE({})", rest::partition_field(table, partition));
        if !rest::clustering(table).is_empty() {
            let _ = write!(out, "\nCLUSTER BY {}", rest::clustering(table).join(", "));
        }
        out.push_str(";\n");
    }
    out
}

/// `<table>_latest` for every keyed table: the newest row per key. BigQuery has no upsert without
/// CDC, so keyed tables are appended to and read through this view.
pub fn latest_views(project: &str, dataset: &str) -> Vec<(String, String)> {
    schema::builtin()
        .iter()
        .filter_map(|t| {
            let keyed = t.keyed?;
            let name = format!("{}_latest", t.name);
            let sql = format!(
                "CREATE OR REPLACE VIEW `{project}.{dataset}.{name}` AS\n\
                 SELECT * EXCEPT (_version_rank) FROM (\n  \
                 SELECT *, ROW_NUMBER() OVER (PARTITION BY {key} ORDER BY {version} DESC, _inserted_at DESC) AS _version_rank\n  \
                 FROM `{project}.{dataset}.{table}`\n) WHERE _version_rank = 1",
                key = keyed.key,
                version = keyed.version,
                table = t.name,
            );
            Some((name, sql))
        })
        .collect()
}

/// Creates (or replaces) every view; returns their names.
pub async fn apply(rest: &Rest) -> Result<Vec<String>, BigQueryError> {
    let mut done = Vec::new();
    for (name, sql) in VIEWS {
        rest.query(&render(sql, rest.project(), rest.dataset())).await?;
        done.push((*name).to_owned());
    }
    for (name, sql) in latest_views(rest.project(), rest.dataset()) {
        rest.query(&sql).await?;
        done.push(name);
    }
    Ok(done)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn placeholders_are_all_filled() {
        for (name, sql) in VIEWS {
            let out = render(sql, "p", "d");
            assert!(!out.contains('{') && out.contains("`p.d."), "{name}");
        }
    }

    #[test]
    fn ddl_covers_every_builtin_table() {
        let ddl = ddl("p", "d", Partition::EventTime);
        for table in schema::builtin() {
            assert!(ddl.contains(&format!("`p.d.{}`", table.name)), "{}", table.name);
        }
        assert!(ddl.contains("event_type STRING NOT NULL,"));
        assert!(ddl.contains("PARTITION BY DATE(minute);"));
        assert!(ddl.contains("PARTITION BY DATE(timestamp)\nCLUSTER BY user_id, event_type;"));
    }
}
