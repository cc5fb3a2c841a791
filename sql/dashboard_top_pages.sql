-- Seed §7.1: the 10 most viewed pages in the dashboard's 30-minute window.
CREATE OR REPLACE VIEW `{project}.{dataset}.dashboard_top_pages` AS
SELECT
  e.page_url,
  COUNT(*) AS views,
  COUNT(DISTINCT e.user_id) AS unique_visitors
FROM `{project}.{dataset}.streaming_events` AS e
CROSS JOIN `{project}.{dataset}.dashboard_window` AS w
WHERE e.timestamp >= CURRENT_TIMESTAMP - INTERVAL 25 HOUR
  AND e.timestamp > w.window_start
  AND e.timestamp <= w.window_end
  AND e.event_type = 'page_view'
  AND e.page_url IS NOT NULL
GROUP BY e.page_url
ORDER BY views DESC, e.page_url
LIMIT 10;
