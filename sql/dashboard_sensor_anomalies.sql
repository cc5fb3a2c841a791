-- The dashboard's latest sensor anomalies: the 10 newest readings anomaly-check flagged.
CREATE OR REPLACE VIEW `{project}.{dataset}.dashboard_sensor_anomalies` AS
SELECT sensor_id, sensor_type, location, timestamp, normalized_value, reason, z_score
FROM `{project}.{dataset}.sensor_anomalies`
ORDER BY timestamp DESC
LIMIT 10;
