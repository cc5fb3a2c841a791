-- Seed §7.1, adapted: the dashboard's hourly summary of the last 24 hours by event type.
CREATE OR REPLACE VIEW `{project}.{dataset}.dashboard_summary` AS
SELECT
  TIMESTAMP_TRUNC(timestamp, HOUR) AS hour,
  event_type,
  COUNT(*) AS events,
  COUNT(DISTINCT user_id) AS unique_users,
  COUNT(DISTINCT session_id) AS sessions
FROM `{project}.{dataset}.streaming_events`
WHERE timestamp >= TIMESTAMP_SUB(CURRENT_TIMESTAMP(), INTERVAL 24 HOUR)
GROUP BY hour, event_type;
