-- Seed §7.1: total events, active users and active sessions in the dashboard's 30-minute window.
CREATE OR REPLACE VIEW `{project}.{dataset}.dashboard_totals` AS
SELECT
  COUNT(*) AS total_events,
  COUNT(DISTINCT e.user_id) AS active_users,
  COUNT(DISTINCT e.session_id) AS active_sessions,
  MAX(w.window_start) AS window_start,
  MAX(w.window_end) AS window_end
FROM `{project}.{dataset}.streaming_events` AS e
CROSS JOIN `{project}.{dataset}.dashboard_window` AS w
WHERE e.timestamp >= CURRENT_TIMESTAMP - INTERVAL 25 HOUR
  AND e.timestamp > w.window_start
  AND e.timestamp <= w.window_end;
