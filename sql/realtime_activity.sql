-- Seed §5.1, adapted: activity of the last hour by event type (event time).
CREATE OR REPLACE VIEW `{project}.{dataset}.realtime_activity` AS
SELECT
  event_type,
  COUNT(*) AS event_count,
  COUNT(DISTINCT user_id) AS unique_users,
  COUNT(DISTINCT session_id) AS unique_sessions,
  MAX(timestamp) AS last_event_at
FROM `{project}.{dataset}.streaming_events`
WHERE timestamp >= TIMESTAMP_SUB(CURRENT_TIMESTAMP(), INTERVAL 1 HOUR)
GROUP BY event_type;
