//! The seed's analytics SQL shipped with the binary (`sql/*.sql`): `tributary bigquery views` creates
//! the views in the configured dataset; `tributary bigquery ddl` prints the tables' DDL.

use super::error::BigQueryError;
use super::rest::Rest;

/// The table DDL (seed §6.2), with `{project}`/`{dataset}` placeholders.
pub const DDL: &str = include_str!("../../../../sql/ddl.sql");

/// Views, in creation order: (name, SQL with placeholders).
pub const VIEWS: &[(&str, &str)] = &[
    ("realtime_activity", include_str!("../../../../sql/realtime_activity.sql")),
    ("traffic_anomalies", include_str!("../../../../sql/traffic_anomalies.sql")),
    ("dashboard_summary", include_str!("../../../../sql/dashboard.sql")),
];

/// Fills the placeholders.
pub fn render(sql: &str, project: &str, dataset: &str) -> String {
    sql.replace("{project}", project).replace("{dataset}", dataset)
}

/// Creates (or replaces) every view; returns their names.
pub async fn apply(rest: &Rest) -> Result<Vec<&'static str>, BigQueryError> {
    let mut done = Vec::new();
    for (name, sql) in VIEWS {
        rest.query(&render(sql, rest.project(), rest.dataset())).await?;
        done.push(*name);
    }
    Ok(done)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn placeholders_are_all_filled() {
        for (name, sql) in VIEWS.iter().chain([&("ddl", DDL)]) {
            let out = render(sql, "p", "d");
            assert!(!out.contains('{') && out.contains("`p.d."), "{name}");
        }
    }
}
