-- Seed §7.1, live: the 30 minutes of event time the dashboard shows end at the newest event of the
-- last 24 hours (never in the future); the chart covers the 60 minutes before the same end. Both
-- dialects run this file: the embedded warehouse renders it for DuckDB (host/src/dashboard/sql.rs).
CREATE OR REPLACE VIEW `{project}.{dataset}.dashboard_window` AS
SELECT
  MAX(timestamp) AS window_end,
  MAX(timestamp) - INTERVAL 30 MINUTE AS window_start,
  MAX(timestamp) - INTERVAL 60 MINUTE AS chart_start
FROM `{project}.{dataset}.streaming_events`
WHERE timestamp >= CURRENT_TIMESTAMP - INTERVAL 24 HOUR
  AND timestamp <= CURRENT_TIMESTAMP;
