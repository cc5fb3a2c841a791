-- The dashboard's latest traffic anomalies: the 10 newest minutes whose events or users left the
-- ±2σ band of anomaly-check's baseline.
CREATE OR REPLACE VIEW `{project}.{dataset}.dashboard_traffic_anomalies` AS
SELECT minute, events_count, unique_users, mean_events, stddev_events, traffic_status, user_status
FROM `{project}.{dataset}.traffic_anomalies`
WHERE traffic_status != 'NORMAL' OR user_status != 'NORMAL'
ORDER BY minute DESC
LIMIT 10;
