//! A function's settings as `wasi:config/store` hands them over (key, text value): one [`Setting`] per
//! pair, with the parsers and the error every function's settings share. Unknown keys are the
//! function's to refuse, so a typo fails loudly instead of falling back to a default.

/// A setting that could not be used.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("setting '{key}' = '{value}': {reason}")]
pub struct SettingError {
    pub key: String,
    pub value: String,
    pub reason: String,
}

/// One configured pair.
#[derive(Debug, Clone, Copy)]
pub struct Setting<'a> {
    pub key: &'a str,
    pub value: &'a str,
}

impl Setting<'_> {
    /// The pairs, each key once (the last value wins), in key order, without the pipeline adapter's
    /// (`tributary_model::adapter_settings`: under Spin the adapter shares the function's variables).
    pub fn all(pairs: &[(String, String)]) -> Vec<Setting<'_>> {
        let map: std::collections::BTreeMap<&str, &str> = pairs
            .iter()
            .filter(|(k, _)| !tributary_model::adapter_settings::ALL.contains(&k.as_str()))
            .map(|(k, v)| (k.as_str(), v.as_str()))
            .collect();
        map.into_iter().map(|(key, value)| Setting { key, value }).collect()
    }

    pub fn error(&self, reason: &str) -> SettingError {
        SettingError { key: self.key.into(), value: self.value.into(), reason: reason.into() }
    }

    /// A whole number of at least `min`.
    pub fn int(&self, min: i64) -> Result<i64, SettingError> {
        let n: i64 = self.value.trim().parse().map_err(|_| self.error("expected a whole number"))?;
        if n < min { Err(self.error(&format!("must be at least {min}"))) } else { Ok(n) }
    }

    /// A finite number.
    pub fn number(&self) -> Result<f64, SettingError> {
        self.value.trim().parse().ok().filter(|x: &f64| x.is_finite()).ok_or_else(|| self.error("expected a number"))
    }

    /// A finite number above zero.
    pub fn positive(&self) -> Result<f64, SettingError> {
        let x = self.number()?;
        if x > 0.0 { Ok(x) } else { Err(self.error("must be a positive number")) }
    }

    /// "unknown setting".
    pub fn unknown(&self) -> SettingError {
        self.error("unknown setting")
    }
}

/// A function's settings, read and parsed once into `cell` (they are fixed for an instance's life):
/// `read` fetches the pairs (`wasi:config/store` `get-all`), `parse` turns them into the settings.
pub fn once<T>(
    cell: &'static std::sync::OnceLock<Result<T, String>>,
    read: impl FnOnce() -> Result<Vec<(String, String)>, String>,
    parse: impl FnOnce(&[(String, String)]) -> Result<T, SettingError>,
) -> Result<&'static T, String> {
    cell.get_or_init(|| parse(&read()?).map_err(|e| e.to_string())).as_ref().map_err(Clone::clone)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_adapters_settings_are_skipped_and_the_rest_kept_in_order() {
        let pairs: Vec<(String, String)> =
            [("b", "1"), ("sink_origin", "http://h:1"), ("a", "2"), ("state_scope", "f")]
                .iter()
                .map(|(k, v)| ((*k).to_owned(), (*v).to_owned()))
                .collect();
        let keys: Vec<&str> = Setting::all(&pairs).iter().map(|s| s.key).collect();
        assert_eq!(keys, ["a", "b"]);
    }
}
