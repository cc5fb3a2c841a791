//! Sensor readings: per-sensor anomalies and tumbling aggregates per location (seed §7.2, streaming).
//!
//! Two kinds of state, each updated atomically on its own:
//! - `sensor/<sensor_id>`: the sensor's running mean and variance (Welford) over its *normal*
//!   readings, and the verdicts of its most recent readings by message id, so a redelivered reading
//!   gets the same verdict and is not counted twice;
//! - `window/<location>`: open windows per (start, sensor type) with their running count, mean,
//!   variance, min and max over normal readings and the digests of the readings they hold; the event
//!   time seen; and an outbox of closed windows' rows (`pending`), as in [`crate::traffic`].
//!
//! A reading is an anomaly when the transform flagged it out of its type's physical range, or when the
//! sensor has at least `sensor_warmup` normal readings and |value − mean| / σ > `sensor_z` (σ: sample
//! standard deviation; with σ = 0 there is no z-score to judge). Anomalies do not update the sensor's
//! statistics, so a burst of outliers cannot drag its baseline along. Windows are per location *and*
//! sensor type (averaging a temperature with a humidity means nothing).

use std::collections::{BTreeMap, BTreeSet, VecDeque};

use serde::{Deserialize, Serialize};
use serde_json::json;
use tributary_model::Row;

use crate::settings::Settings;
use crate::traffic::rfc3339;
use state_update::digest;

/// Readings' table (written by the transform, completed here).
pub const READINGS: &str = "sensor_readings";
pub const ANOMALIES: &str = "sensor_anomalies";
pub const AGGREGATES: &str = "sensor_aggregates";

/// Verdicts remembered per sensor for redeliveries.
const RECENT: usize = 512;

/// One reading, as the analysis needs it.
#[derive(Debug, Clone, PartialEq)]
pub struct Reading {
    pub id: String,
    pub sensor_id: String,
    pub sensor_type: String,
    pub location: String,
    pub time_ms: i64,
    /// In the type's canonical unit.
    pub value: f64,
    /// The transform found it outside the type's physical range.
    pub out_of_range: bool,
}

/// Why a reading is an anomaly, with the statistics it was judged against.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Anomaly {
    /// `out-of-range` or `z-score`.
    pub reason: String,
    pub z: Option<f64>,
    pub mean: Option<f64>,
    pub stddev: Option<f64>,
}

/// Running mean and variance (Welford).
#[derive(Debug, Clone, Copy, Default, PartialEq, Serialize, Deserialize)]
pub struct Welford {
    pub n: u64,
    pub mean: f64,
    m2: f64,
}

impl Welford {
    pub fn add(&mut self, x: f64) {
        self.n += 1;
        let delta = x - self.mean;
        self.mean += delta / self.n as f64;
        self.m2 += delta * (x - self.mean);
    }

    /// Sample standard deviation; `None` below two values.
    pub fn stddev(&self) -> Option<f64> {
        (self.n >= 2).then(|| (self.m2 / (self.n - 1) as f64).sqrt())
    }
}

/// One sensor's state.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct Sensor {
    stats: Welford,
    recent: VecDeque<(u64, Option<Anomaly>)>,
}

impl Sensor {
    /// Judges `r`; a reading seen before gets its first verdict again (`false`: nothing changed).
    pub fn assess(&mut self, r: &Reading, settings: &Settings) -> (Option<Anomaly>, bool) {
        let id = digest(&r.id);
        if let Some((_, verdict)) = self.recent.iter().find(|(seen, _)| *seen == id) {
            return (verdict.clone(), false);
        }
        let (mean, stddev) = (Some(self.stats.mean).filter(|_| self.stats.n > 0), self.stats.stddev());
        let verdict = if r.out_of_range {
            Some(Anomaly { reason: "out-of-range".into(), z: None, mean, stddev })
        } else {
            match stddev {
                Some(sd) if self.stats.n >= settings.sensor_warmup && sd > 0.0 => {
                    let z = (r.value - self.stats.mean) / sd;
                    (z.abs() > settings.sensor_z).then(|| Anomaly {
                        reason: "z-score".into(),
                        z: Some(z),
                        mean,
                        stddev,
                    })
                }
                _ => None,
            }
        };
        if verdict.is_none() {
            self.stats.add(r.value);
        }
        self.recent.push_back((id, verdict.clone()));
        if self.recent.len() > RECENT {
            self.recent.pop_front();
        }
        (verdict, true)
    }
}

/// The row of an anomalous reading.
pub fn anomaly_row(r: &Reading, a: &Anomaly, now_ms: i64) -> Row {
    let json = json!({
        "reading_id": r.id,
        "sensor_id": r.sensor_id,
        "sensor_type": r.sensor_type,
        "location": r.location,
        "timestamp": rfc3339(r.time_ms),
        "normalized_value": r.value,
        "reason": a.reason,
        "z_score": a.z,
        "baseline_mean": a.mean,
        "baseline_stddev": a.stddev,
        "detected_at": rfc3339(now_ms),
    });
    Row { table: ANOMALIES.into(), insert_id: r.id.clone(), json: json.to_string() }
}

#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
struct Window {
    stats: Welford,
    min: f64,
    max: f64,
    ids: BTreeSet<u64>,
}

/// What happened to a normal reading in its location's windows.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Windowed {
    Added,
    Duplicate,
    /// Its window had closed: the reading is in `sensor_readings`, but not in the aggregate.
    Late,
}

/// One location's windows.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct Location {
    max_event_ms: Option<i64>,
    last_arrival_ms: i64,
    /// Windows starting before this have closed.
    closed_before: Option<i64>,
    /// start → sensor type → window.
    open: BTreeMap<i64, BTreeMap<String, Window>>,
    pub pending: Vec<Row>,
}

impl Location {
    pub fn add(&mut self, r: &Reading, now_ms: i64, settings: &Settings) -> Windowed {
        self.last_arrival_ms = self.last_arrival_ms.max(now_ms);
        let len = settings.sensor_window_minutes * 60_000;
        let start = r.time_ms.div_euclid(len) * len;
        if self.closed_before.is_some_and(|c| start < c) {
            return Windowed::Late;
        }
        let w = self.open.entry(start).or_default().entry(r.sensor_type.clone()).or_default();
        if !w.ids.insert(digest(&r.id)) {
            return Windowed::Duplicate;
        }
        if w.stats.n == 0 {
            (w.min, w.max) = (r.value, r.value);
        }
        w.stats.add(r.value);
        w.min = w.min.min(r.value);
        w.max = w.max.max(r.value);
        self.max_event_ms = Some(self.max_event_ms.map_or(r.time_ms, |m| m.max(r.time_ms)));
        Windowed::Added
    }

    /// Closes the due windows of `location` into `pending` (see [`crate::traffic::Traffic::close_due`]).
    pub fn close_due(&mut self, location: &str, now_ms: i64, timer: bool, settings: &Settings) -> usize {
        let len = settings.sensor_window_minutes * 60_000;
        let idle = timer && now_ms - self.last_arrival_ms >= settings.idle_close_ms;
        let watermark = self.max_event_ms.map(|m| m - settings.lateness_ms);
        let due: Vec<i64> =
            self.open.keys().copied().filter(|&s| idle || watermark.is_some_and(|w| s + len <= w)).collect();
        let mut closed = 0;
        for start in due {
            for (sensor_type, w) in self.open.remove(&start).unwrap_or_default() {
                let json = json!({
                    "window_start": rfc3339(start),
                    "window_end": rfc3339(start + len),
                    "location": location,
                    "sensor_type": sensor_type,
                    "readings_count": w.stats.n,
                    "avg_value": w.stats.mean,
                    "min_value": w.min,
                    "max_value": w.max,
                    "stddev_value": w.stats.stddev(),
                    "closed_by": if idle { "timer" } else { "watermark" },
                    "closed_at": rfc3339(now_ms),
                });
                let insert_id = format!("agg:{location}:{sensor_type}:{start}");
                self.pending.push(Row { table: AGGREGATES.into(), insert_id, json: json.to_string() });
                closed += 1;
            }
            self.closed_before = Some(self.closed_before.map_or(start + len, |c| c.max(start + len)));
        }
        closed
    }

    /// Drops the pending rows that were written.
    pub fn confirm(&mut self, written: &[String]) -> bool {
        let before = self.pending.len();
        self.pending.retain(|r| !written.contains(&r.insert_id));
        self.pending.len() != before
    }
}

#[cfg(test)]
mod tests {
    use serde_json::Value;

    use super::*;

    const T0: i64 = 1_700_000_100_000;

    fn reading(id: usize, value: f64, minute: i64) -> Reading {
        Reading {
            id: format!("r{id}"),
            sensor_id: "s1".into(),
            sensor_type: "temperature".into(),
            location: "hall".into(),
            time_ms: T0 / 300_000 * 300_000 + minute * 60_000,
            value,
            out_of_range: false,
        }
    }

    #[test]
    fn welford_matches_the_two_pass_formula() {
        let xs = [20.1, 19.8, 20.4, 21.0, 19.5];
        let mut w = Welford::default();
        xs.iter().for_each(|&x| w.add(x));
        let mean = xs.iter().sum::<f64>() / 5.0;
        let sd = (xs.iter().map(|x| (x - mean).powi(2)).sum::<f64>() / 4.0).sqrt();
        assert!((w.mean - mean).abs() < 1e-12 && (w.stddev().expect("n>=2") - sd).abs() < 1e-12);
    }

    #[test]
    fn outliers_after_warmup_and_out_of_range_are_anomalies_and_do_not_move_the_baseline() {
        let s = Settings::default();
        let mut sensor = Sensor::default();
        // During warm-up nothing is judged.
        for i in 0..10 {
            assert_eq!(sensor.assess(&reading(i, 20.0 + (i % 3) as f64 * 0.5, 0), &s).0, None);
        }
        let (verdict, new) = sensor.assess(&reading(100, 35.0, 0), &s);
        let a = verdict.expect("z-score anomaly");
        assert!(new && a.reason == "z-score" && a.z.expect("z") > 3.0);
        let before = sensor.stats;
        assert_eq!(sensor.assess(&reading(100, 35.0, 0), &s), (Some(a), false), "redelivery: same verdict");
        let mut hot = reading(101, 20.0, 0);
        hot.out_of_range = true;
        assert_eq!(sensor.assess(&hot, &s).0.expect("range").reason, "out-of-range");
        assert_eq!(sensor.stats, before);
        assert_eq!(sensor.assess(&reading(102, 20.4, 0), &s).0, None);
    }

    #[test]
    fn windows_aggregate_close_and_count_late_readings() {
        let s = Settings { lateness_ms: 60_000, ..Settings::default() };
        let now = T0 + 3_600_000;
        let mut loc = Location::default();
        for (i, v) in [10.0, 12.0, 14.0].into_iter().enumerate() {
            assert_eq!(loc.add(&reading(i, v, i as i64), now, &s), Windowed::Added);
        }
        assert_eq!(loc.add(&reading(0, 10.0, 0), now, &s), Windowed::Duplicate);
        loc.add(&reading(9, 30.0, 5), now, &s);
        assert_eq!(loc.close_due("hall", now, false, &s), 0, "lateness not yet passed");
        loc.add(&reading(10, 30.0, 6), now, &s);
        assert_eq!(loc.close_due("hall", now, false, &s), 1);
        let row: Value = serde_json::from_str(&loc.pending[0].json).expect("json");
        assert_eq!(row["readings_count"], 3);
        assert_eq!(
            (row["avg_value"].as_f64(), row["min_value"].as_f64(), row["max_value"].as_f64()),
            (Some(12.0), Some(10.0), Some(14.0))
        );
        assert_eq!(row["stddev_value"], 2.0);
        assert_eq!(loc.add(&reading(11, 11.0, 1), now, &s), Windowed::Late);
        assert_eq!(loc.close_due("hall", now + s.idle_close_ms, true, &s), 1);
        assert_eq!(loc.pending.len(), 2);
        let back: Location = serde_json::from_str(&serde_json::to_string(&loc).expect("ser")).expect("de");
        assert_eq!(back, loc);
    }
}
