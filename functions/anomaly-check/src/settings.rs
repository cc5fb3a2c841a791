//! The function's settings, read from `wasi:config/store` (the host's `[functions.anomaly-check]`
//! table; Spin variables under `spin up`). Every key is optional; unknown keys and bad values are
//! errors, so a typo never silently falls back to a default.

use function_kit::settings::Setting;
pub use function_kit::settings::SettingError;

/// Windowing and detection settings. Times are event time unless they say otherwise.
#[derive(Debug, Clone, PartialEq)]
pub struct Settings {
    /// `lateness_seconds`: how far event time must move past a window's end before it closes
    /// (events up to that late still count). Default 120.
    pub lateness_ms: i64,
    /// `idle_close_seconds`: processing time without any new event after which a timer tick closes
    /// every open window (traffic stopped). Default 60.
    pub idle_close_ms: i64,
    /// `baseline_minutes`: length of the traffic baseline. Default 60 (seed §5.2).
    pub baseline_minutes: i64,
    /// `baseline_gap_minutes`: the most recent minutes left out of the baseline. Default 10 (seed §5.2).
    pub baseline_gap_minutes: i64,
    /// `sigma`: the traffic band is mean ± sigma·σ. Default 2.
    pub sigma: f64,
    /// `sensor_warmup`: normal readings a sensor needs before its z-score is judged. Default 10.
    pub sensor_warmup: u64,
    /// `sensor_z`: a reading with |z| above this is an anomaly. Default 3.
    pub sensor_z: f64,
    /// `sensor_window_minutes`: tumbling aggregate windows per location. Default 5.
    pub sensor_window_minutes: i64,
}

impl Default for Settings {
    fn default() -> Self {
        Self {
            lateness_ms: 120_000,
            idle_close_ms: 60_000,
            baseline_minutes: 60,
            baseline_gap_minutes: 10,
            sigma: 2.0,
            sensor_warmup: 10,
            sensor_z: 3.0,
            sensor_window_minutes: 5,
        }
    }
}

impl Settings {
    /// Reads the settings from all configured pairs.
    pub fn from_pairs(pairs: &[(String, String)]) -> Result<Self, SettingError> {
        let mut s = Settings::default();
        for setting in Setting::all(pairs) {
            match setting.key {
                "lateness_seconds" => s.lateness_ms = setting.int(0)? * 1000,
                "idle_close_seconds" => s.idle_close_ms = setting.int(1)? * 1000,
                "baseline_minutes" => s.baseline_minutes = setting.int(2)?,
                "baseline_gap_minutes" => s.baseline_gap_minutes = setting.int(0)?,
                "sigma" => s.sigma = setting.positive()?,
                "sensor_warmup" => s.sensor_warmup = setting.int(2)?.unsigned_abs(),
                "sensor_z" => s.sensor_z = setting.positive()?,
                "sensor_window_minutes" => s.sensor_window_minutes = setting.int(1)?,
                _ => return Err(setting.unknown()),
            }
        }
        Ok(s)
    }

    /// How much traffic history a closed minute's baseline needs, in minutes.
    pub fn history_minutes(&self) -> i64 {
        self.baseline_minutes + self.baseline_gap_minutes
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn pairs(p: &[(&str, &str)]) -> Vec<(String, String)> {
        p.iter().map(|(k, v)| ((*k).to_owned(), (*v).to_owned())).collect()
    }

    #[test]
    fn defaults_and_overrides() {
        assert_eq!(Settings::from_pairs(&[]).expect("empty"), Settings::default());
        let s = Settings::from_pairs(&pairs(&[("lateness_seconds", "600"), ("sigma", "2.5")])).expect("valid");
        assert_eq!((s.lateness_ms, s.sigma), (600_000, 2.5));
    }

    #[test]
    fn typos_and_bad_values_are_errors() {
        let e = Settings::from_pairs(&pairs(&[("latenes_seconds", "1")])).expect_err("typo");
        assert_eq!(e.reason, "unknown setting");
        assert!(Settings::from_pairs(&pairs(&[("sigma", "-1")])).is_err());
        assert!(Settings::from_pairs(&pairs(&[("baseline_minutes", "1")])).is_err());
        assert!(Settings::from_pairs(&pairs(&[("idle_close_seconds", "soon")])).is_err());
    }
}
