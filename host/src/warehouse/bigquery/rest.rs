//! BigQuery's REST API (v2): datasets, tables (create, get, patch) and `tabledata.insertAll`.
//!
//! Every call carries the host's token (never a guest's) and a per-call timeout; errors keep
//! BigQuery's status and message so the caller can tell a retry from a refusal.

use std::sync::Arc;
use std::time::Duration;

use serde::{Deserialize, Serialize};
use serde_json::{Value, json};

use super::auth::Auth;
use super::config::{BigQueryConfig, Partition};
use super::error::BigQueryError;
use crate::warehouse::schema::{ColumnType, TableSchema};

/// A column as BigQuery's REST API spells it (`TableFieldSchema`).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Field {
    pub name: String,
    #[serde(rename = "type")]
    pub ty: String,
    #[serde(default = "nullable")]
    pub mode: String,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub fields: Vec<Field>,
}

fn nullable() -> String {
    "NULLABLE".into()
}

impl Field {
    pub fn new(name: &str, ty: &str, required: bool) -> Self {
        Self {
            name: name.into(),
            ty: ty.into(),
            mode: if required { "REQUIRED" } else { "NULLABLE" }.into(),
            fields: vec![],
        }
    }

    /// The legacy and standard SQL names of a type collapse to one (`INTEGER` = `INT64`, ...).
    pub fn canonical_type(&self) -> &str {
        match self.ty.as_str() {
            "INTEGER" => "INT64",
            "FLOAT" => "FLOAT64",
            "BOOLEAN" => "BOOL",
            "STRUCT" => "RECORD",
            t => t,
        }
    }
}

/// The BigQuery type of a built-in column.
pub fn bigquery_type(ty: ColumnType) -> &'static str {
    match ty {
        ColumnType::String => "STRING",
        ColumnType::Timestamp => "TIMESTAMP",
        ColumnType::Json => "JSON",
        ColumnType::Int64 => "INT64",
        ColumnType::Float64 => "FLOAT64",
        ColumnType::Bool => "BOOL",
    }
}

/// The columns of a built-in table in BigQuery (seed §6.2 plus `_insert_id` and `_inserted_at`).
pub fn ddl_fields(table: &TableSchema) -> Vec<Field> {
    let mut fields: Vec<Field> =
        table.columns.iter().map(|c| Field::new(c.name, bigquery_type(c.ty), c.required)).collect();
    fields.push(Field::new("_insert_id", "STRING", true));
    fields.push(Field::new("_inserted_at", "TIMESTAMP", true));
    fields
}

/// The column a built-in table is partitioned on by day.
pub fn partition_field(table: &TableSchema, partition: Partition) -> &'static str {
    match (partition, table.name) {
        (Partition::EventTime, "streaming_events" | "sensor_readings" | "sensor_anomalies") => "timestamp",
        (Partition::EventTime, "dead_letter") => "failed_at",
        (Partition::EventTime, "traffic_anomalies") => "minute",
        (Partition::EventTime, "sensor_aggregates" | "streaming_metrics" | "realtime_dashboard") => "window_start",
        (Partition::EventTime, "user_sessions") => "session_start",
        _ => "_inserted_at",
    }
}

/// The columns a built-in table is clustered by, for its usual filters.
pub fn clustering(table: &TableSchema) -> &'static [&'static str] {
    match table.name {
        "streaming_events" => &["user_id", "event_type"],
        "dead_letter" => &["stage", "error_reason"],
        "sensor_readings" => &["location", "sensor_id"],
        "sensor_anomalies" => &["sensor_id"],
        "sensor_aggregates" => &["location", "sensor_type"],
        "user_sessions" => &["user_id"],
        "streaming_metrics" => &["event_type"],
        _ => &[],
    }
}

/// The `Table` resource that creates a built-in table: day partitions, clustering.
pub fn table_resource(project: &str, dataset: &str, table: &TableSchema, partition: Partition) -> Value {
    let mut resource = json!({
        "tableReference": {"projectId": project, "datasetId": dataset, "tableId": table.name},
        "schema": {"fields": ddl_fields(table)},
        "timePartitioning": {"type": "DAY", "field": partition_field(table, partition)},
    });
    if !clustering(table).is_empty() {
        resource["clustering"] = json!({"fields": clustering(table)});
    }
    resource
}

/// A REST client bound to one project and dataset.
pub struct Rest {
    http: reqwest::Client,
    auth: Arc<Auth>,
    /// `{api_endpoint}/bigquery/v2/projects/{project}`.
    base: String,
    project: String,
    dataset: String,
}

#[derive(Deserialize)]
struct ErrorBody {
    error: ErrorDetail,
}

#[derive(Deserialize)]
struct ErrorDetail {
    #[serde(default)]
    message: String,
}

impl Rest {
    pub fn new(config: &BigQueryConfig, auth: Arc<Auth>) -> Result<Self, BigQueryError> {
        let http = reqwest::Client::builder()
            .timeout(config.request_timeout())
            .connect_timeout(Duration::from_secs(2))
            .pool_max_idle_per_host(32)
            .user_agent(concat!("tributary/", env!("CARGO_PKG_VERSION")))
            .build()?;
        let base = format!("{}/bigquery/v2/projects/{}", config.api_endpoint.trim_end_matches('/'), config.project);
        Ok(Self { http, auth, base, project: config.project.clone(), dataset: config.dataset.clone() })
    }

    pub fn project(&self) -> &str {
        &self.project
    }

    pub fn dataset(&self) -> &str {
        &self.dataset
    }

    async fn call(&self, what: &str, request: reqwest::RequestBuilder) -> Result<(u16, Value), BigQueryError> {
        let request = match self.auth.header().await? {
            Some(h) => request.header(reqwest::header::AUTHORIZATION, h),
            None => request,
        };
        let response = request.send().await?;
        let status = response.status().as_u16();
        let bytes = response.bytes().await?;
        let body: Value =
            if bytes.is_empty() { Value::Null } else { serde_json::from_slice(&bytes).unwrap_or(Value::Null) };
        if (200..300).contains(&status) {
            return Ok((status, body));
        }
        let message = serde_json::from_value::<ErrorBody>(body)
            .map(|b| b.error.message)
            .unwrap_or_else(|_| String::from_utf8_lossy(&bytes).chars().take(500).collect());
        Err(BigQueryError::Api { what: what.into(), status, message })
    }

    fn table_url(&self, table: &str) -> String {
        format!("{}/datasets/{}/tables/{table}", self.base, self.dataset)
    }

    /// Creates the dataset unless it exists.
    pub async fn ensure_dataset(&self, location: &str) -> Result<(), BigQueryError> {
        let body =
            json!({"datasetReference": {"projectId": self.project, "datasetId": self.dataset}, "location": location});
        match self.call("datasets.insert", self.http.post(format!("{}/datasets", self.base)).json(&body)).await {
            Ok(_) | Err(BigQueryError::Api { status: 409, .. }) => Ok(()),
            Err(e) => Err(e),
        }
    }

    /// The table's columns, or `None` when it does not exist.
    pub async fn get_table(&self, table: &str) -> Result<Option<Vec<Field>>, BigQueryError> {
        match self.call("tables.get", self.http.get(self.table_url(table))).await {
            Ok((_, body)) => Ok(Some(fields_of(table, &body)?)),
            Err(BigQueryError::Api { status: 404, .. }) => Ok(None),
            Err(e) => Err(e),
        }
    }

    /// Creates a table from its resource; one that already exists is read instead.
    pub async fn create_table(&self, table: &str, resource: &Value) -> Result<Vec<Field>, BigQueryError> {
        let url = format!("{}/datasets/{}/tables", self.base, self.dataset);
        match self.call("tables.insert", self.http.post(url).json(resource)).await {
            Ok((_, body)) => fields_of(table, &body),
            Err(BigQueryError::Api { status: 409, .. }) => self.get_table(table).await?.ok_or_else(|| {
                BigQueryError::Schema { table: table.into(), message: "exists (409) but cannot be read".into() }
            }),
            Err(e) => Err(e),
        }
    }

    /// Adds NULLABLE columns (tables.patch with the whole schema, as ALLOW_FIELD_ADDITION requires);
    /// returns the table's new columns.
    pub async fn add_columns(
        &self,
        table: &str,
        current: &[Field],
        new: &[Field],
    ) -> Result<Vec<Field>, BigQueryError> {
        let fields: Vec<&Field> = current.iter().chain(new).collect();
        let body = json!({"schema": {"fields": fields}});
        let (_, body) = self.call("tables.patch", self.http.patch(self.table_url(table)).json(&body)).await?;
        fields_of(table, &body)
    }

    /// `tabledata.insertAll` with an already serialized body; the response (with any `insertErrors`).
    pub async fn insert_all(&self, table: &str, body: bytes::Bytes) -> Result<Value, BigQueryError> {
        let url = format!("{}/insertAll", self.table_url(table));
        let request = self.http.post(url).header(reqwest::header::CONTENT_TYPE, "application/json").body(body);
        Ok(self.call("tabledata.insertAll", request).await?.1)
    }

    /// Runs a query job synchronously (`jobs.query`, standard SQL) and returns the response.
    pub async fn query(&self, sql: &str) -> Result<Value, BigQueryError> {
        let body = json!({"query": sql, "useLegacySql": false, "defaultDataset": {"projectId": self.project, "datasetId": self.dataset}});
        Ok(self.call("jobs.query", self.http.post(format!("{}/queries", self.base)).json(&body)).await?.1)
    }
}

fn fields_of(table: &str, body: &Value) -> Result<Vec<Field>, BigQueryError> {
    serde_json::from_value(body["schema"]["fields"].clone()).map_err(|e| BigQueryError::Schema {
        table: table.into(),
        message: format!("unreadable schema in the table resource: {e}"),
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::warehouse::schema::find;

    #[test]
    fn events_table_is_partitioned_clustered_and_has_the_dedup_columns() {
        let events = find("streaming_events").expect("builtin");
        let r = table_resource("p", "d", events, Partition::Ingestion);
        assert_eq!(r["timePartitioning"], json!({"type": "DAY", "field": "_inserted_at"}));
        assert_eq!(r["clustering"]["fields"], json!(["user_id", "event_type"]));
        let fields = r["schema"]["fields"].as_array().expect("fields");
        assert_eq!(fields[0], json!({"name": "event_id", "type": "STRING", "mode": "REQUIRED"}));
        assert!(fields.contains(&json!({"name": "properties", "type": "JSON", "mode": "NULLABLE"})));
        assert_eq!(fields.last(), Some(&json!({"name": "_inserted_at", "type": "TIMESTAMP", "mode": "REQUIRED"})));
        let r = table_resource("p", "d", events, Partition::EventTime);
        assert_eq!(r["timePartitioning"]["field"], "timestamp");
    }

    #[test]
    fn fields_read_back_with_default_mode_and_canonical_types() {
        let f: Vec<Field> = serde_json::from_value(json!([{"name": "n", "type": "INTEGER"}])).expect("parses");
        assert_eq!(f[0].mode, "NULLABLE");
        assert_eq!(f[0].canonical_type(), "INT64");
    }
}
