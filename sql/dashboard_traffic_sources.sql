-- Seed §7.1: the 5 biggest traffic sources (the referrer of `session_start` events; none is
-- 'direct') by users, in the dashboard's 30-minute window.
CREATE OR REPLACE VIEW `{project}.{dataset}.dashboard_traffic_sources` AS
SELECT
  COALESCE(JSON_VALUE(e.properties, '$.referrer'), 'direct') AS traffic_source,
  COUNT(DISTINCT e.user_id) AS users
FROM `{project}.{dataset}.streaming_events` AS e
CROSS JOIN `{project}.{dataset}.dashboard_window` AS w
WHERE e.timestamp >= CURRENT_TIMESTAMP - INTERVAL 25 HOUR
  AND e.timestamp > w.window_start
  AND e.timestamp <= w.window_end
  AND e.event_type = 'session_start'
GROUP BY traffic_source
ORDER BY users DESC, traffic_source
LIMIT 5;
