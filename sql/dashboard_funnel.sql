-- Seed §7.1: the conversion funnel page_view → add_to_cart → purchase (users who did each step) in
-- the dashboard's 30-minute window; always three rows, in funnel order.
CREATE OR REPLACE VIEW `{project}.{dataset}.dashboard_funnel` AS
WITH recent AS (
  SELECT e.event_type, e.user_id
  FROM `{project}.{dataset}.streaming_events` AS e
  CROSS JOIN `{project}.{dataset}.dashboard_window` AS w
  WHERE e.timestamp >= CURRENT_TIMESTAMP - INTERVAL 25 HOUR
    AND e.timestamp > w.window_start
    AND e.timestamp <= w.window_end
    AND e.event_type IN ('page_view', 'add_to_cart', 'purchase')
)
SELECT 1 AS position, 'page_view' AS step, COUNT(DISTINCT CASE WHEN event_type = 'page_view' THEN user_id END) AS users FROM recent
UNION ALL
SELECT 2 AS position, 'add_to_cart' AS step, COUNT(DISTINCT CASE WHEN event_type = 'add_to_cart' THEN user_id END) AS users FROM recent
UNION ALL
SELECT 3 AS position, 'purchase' AS step, COUNT(DISTINCT CASE WHEN event_type = 'purchase' THEN user_id END) AS users FROM recent;
