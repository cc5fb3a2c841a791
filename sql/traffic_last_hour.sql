-- Seed §5.2 as a query (the streaming anomaly-check function writes the table `traffic_anomalies`): per-minute
-- from 70 to 10 minutes ago; outside mean ± 2σ is HIGH_TRAFFIC/LOW_TRAFFIC (events) and
-- USER_SPIKE/USER_DROP (unique users), else NORMAL.
CREATE OR REPLACE VIEW `{project}.{dataset}.traffic_last_hour` AS
WITH minutes AS (
  SELECT
    TIMESTAMP_TRUNC(timestamp, MINUTE) AS minute,
    COUNT(*) AS events_count,
    COUNT(DISTINCT user_id) AS unique_users,
    COUNT(DISTINCT session_id) AS unique_sessions
  FROM `{project}.{dataset}.streaming_events`
  WHERE timestamp >= TIMESTAMP_SUB(CURRENT_TIMESTAMP(), INTERVAL 70 MINUTE)
  GROUP BY minute
),
baseline AS (
  SELECT
    AVG(events_count) AS mean_events,
    STDDEV(events_count) AS stddev_events,
    AVG(unique_users) AS mean_users,
    STDDEV(unique_users) AS stddev_users
  FROM minutes
  WHERE minute < TIMESTAMP_SUB(CURRENT_TIMESTAMP(), INTERVAL 10 MINUTE)
)
SELECT
  m.minute,
  m.events_count,
  m.unique_users,
  m.unique_sessions,
  b.mean_events,
  b.stddev_events,
  b.mean_users,
  b.stddev_users,
  CASE
    WHEN m.events_count > b.mean_events + 2 * b.stddev_events THEN 'HIGH_TRAFFIC'
    WHEN m.events_count < b.mean_events - 2 * b.stddev_events THEN 'LOW_TRAFFIC'
    ELSE 'NORMAL'
  END AS traffic_status,
  CASE
    WHEN m.unique_users > b.mean_users + 2 * b.stddev_users THEN 'USER_SPIKE'
    WHEN m.unique_users < b.mean_users - 2 * b.stddev_users THEN 'USER_DROP'
    ELSE 'NORMAL'
  END AS user_status
FROM minutes AS m
CROSS JOIN baseline AS b
WHERE m.minute >= TIMESTAMP_SUB(CURRENT_TIMESTAMP(), INTERVAL 10 MINUTE);
