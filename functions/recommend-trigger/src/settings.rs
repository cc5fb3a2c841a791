//! The function's settings (`[functions.recommend-trigger]`; Spin variables under `spin up`).

use function_kit::settings::Setting;
pub use function_kit::settings::SettingError;

#[derive(Debug, Clone, PartialEq)]
pub struct Settings {
    /// `window_minutes`: activity that counts. Default 120 (seed §7.3).
    pub window_ms: i64,
    /// `min_activities`: activities in the window before a user gets recommendations. Default 3.
    pub min_activities: usize,
    /// `debounce_seconds`: a user's recommendations are rewritten at most this often; activity in
    /// between is picked up by the timer route. Default 30.
    pub debounce_ms: i64,
    /// `max_recommendations`. Default 20.
    pub max_recommendations: usize,
    /// `popular_above`: products above this popularity are recommended to anyone. Default 80.
    pub popular_above: f64,
}

impl Default for Settings {
    fn default() -> Self {
        Self {
            window_ms: 120 * 60_000,
            min_activities: 3,
            debounce_ms: 30_000,
            max_recommendations: 20,
            popular_above: 80.0,
        }
    }
}

impl Settings {
    pub fn from_pairs(pairs: &[(String, String)]) -> Result<Self, SettingError> {
        let mut s = Settings::default();
        for setting in Setting::all(pairs) {
            match setting.key {
                "window_minutes" => s.window_ms = setting.int(1)? * 60_000,
                "min_activities" => s.min_activities = setting.int(1)?.unsigned_abs() as usize,
                "debounce_seconds" => s.debounce_ms = setting.int(0)? * 1000,
                "max_recommendations" => s.max_recommendations = setting.int(1)?.unsigned_abs() as usize,
                "popular_above" => s.popular_above = setting.number()?,
                _ => return Err(setting.unknown()),
            }
        }
        Ok(s)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn overrides_and_typos() {
        let s = Settings::from_pairs(&[("debounce_seconds".into(), "0".into())]).expect("valid");
        assert_eq!(s.debounce_ms, 0);
        assert!(Settings::from_pairs(&[("debounce".into(), "1".into())]).is_err());
    }
}
