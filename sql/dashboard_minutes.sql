-- The dashboard's chart: events and users per minute of event time, the 60 minutes before the
-- window's end.
CREATE OR REPLACE VIEW `{project}.{dataset}.dashboard_minutes` AS
SELECT
  TIMESTAMP_TRUNC(e.timestamp, MINUTE) AS minute,
  COUNT(*) AS events,
  COUNT(DISTINCT e.user_id) AS users
FROM `{project}.{dataset}.streaming_events` AS e
CROSS JOIN `{project}.{dataset}.dashboard_window` AS w
WHERE e.timestamp >= CURRENT_TIMESTAMP - INTERVAL 25 HOUR
  AND e.timestamp > w.chart_start
  AND e.timestamp <= w.window_end
GROUP BY minute;
