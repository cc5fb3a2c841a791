//! The function's settings, read from `wasi:config/store` (the host's `[functions.windows]` table; Spin
//! variables under `spin up`). Every key is optional; unknown keys and bad values are errors, so a
//! typo never silently falls back to a default.

use function_kit::settings::Setting;
pub use function_kit::settings::SettingError;

/// Window settings. Times are event time unless they say otherwise.
#[derive(Debug, Clone, PartialEq)]
pub struct Settings {
    /// `session_gap_minutes`: a user's events less than this apart are one session. Default 30 (seed §3.2).
    pub gap_ms: i64,
    /// `lateness_seconds`: how far event time must move past a window before it closes (events up to
    /// that late still count). Default 120.
    pub lateness_ms: i64,
    /// `idle_close_seconds`: processing time without events after which a tick closes what is due
    /// (a stream that went quiet). Default 60.
    pub idle_close_ms: i64,
}

impl Default for Settings {
    fn default() -> Self {
        Self { gap_ms: 30 * 60_000, lateness_ms: 120_000, idle_close_ms: 60_000 }
    }
}

impl Settings {
    /// Reads the settings from all configured pairs.
    pub fn from_pairs(pairs: &[(String, String)]) -> Result<Self, SettingError> {
        let mut s = Settings::default();
        for setting in Setting::all(pairs) {
            match setting.key {
                "session_gap_minutes" => s.gap_ms = setting.int(1)? * 60_000,
                "lateness_seconds" => s.lateness_ms = setting.int(0)? * 1000,
                "idle_close_seconds" => s.idle_close_ms = setting.int(1)? * 1000,
                _ => return Err(setting.unknown()),
            }
        }
        Ok(s)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn pairs(p: &[(&str, &str)]) -> Vec<(String, String)> {
        p.iter().map(|(k, v)| ((*k).to_owned(), (*v).to_owned())).collect()
    }

    #[test]
    fn defaults_overrides_and_typos() {
        assert_eq!(Settings::from_pairs(&[]).expect("empty"), Settings::default());
        let s = Settings::from_pairs(&pairs(&[("session_gap_minutes", "5"), ("lateness_seconds", "0")])).expect("ok");
        assert_eq!((s.gap_ms, s.lateness_ms), (300_000, 0));
        assert_eq!(Settings::from_pairs(&pairs(&[("gap", "5")])).expect_err("typo").reason, "unknown setting");
        assert!(Settings::from_pairs(&pairs(&[("session_gap_minutes", "0")])).is_err());
        assert!(Settings::from_pairs(&pairs(&[("idle_close_seconds", "soon")])).is_err());
    }
}
