-- Seed §6.2, adapted: the tables `tributary up` creates on first use (sink.backend = bigquery-*),
-- for creating them ahead of time with `bq query` instead. `{project}` and `{dataset}` are replaced by
-- `tributary bigquery ddl`. Partitioned by ingestion day, clustered for the per-user/per-type queries.
CREATE TABLE IF NOT EXISTS `{project}.{dataset}.streaming_events` (
  event_id STRING NOT NULL,
  user_id STRING,
  event_type STRING NOT NULL,
  timestamp TIMESTAMP NOT NULL,
  session_id STRING,
  page_url STRING,
  properties JSON,
  publish_time TIMESTAMP,
  message_id STRING,
  processed_at TIMESTAMP,
  _insert_id STRING NOT NULL,
  _inserted_at TIMESTAMP NOT NULL
)
PARTITION BY DATE(_inserted_at)
CLUSTER BY user_id, event_type;

CREATE TABLE IF NOT EXISTS `{project}.{dataset}.dead_letter` (
  message_id STRING NOT NULL,
  subscription STRING,
  publish_time STRING,
  delivery_attempt INT64,
  attributes JSON,
  payload STRING,
  payload_text STRING,
  stage STRING NOT NULL,
  error_reason STRING NOT NULL,
  error_message STRING,
  failed_at TIMESTAMP NOT NULL,
  _insert_id STRING NOT NULL,
  _inserted_at TIMESTAMP NOT NULL
)
PARTITION BY DATE(_inserted_at)
CLUSTER BY stage, error_reason;
