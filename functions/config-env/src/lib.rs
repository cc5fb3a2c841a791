//! The config adapter: a component exporting `wasi:config/store@0.2.0-draft-2024-09-27` (the version Spin
//! provides and the functions and the JavaScript step import) over environment variables, for hosts that
//! pass a component environment variables but not that interface: `wasmtime serve` serves another
//! version of wasi:config, whose `-S config-var` cannot carry a value with a comma (a script). Compose it
//! with `wac plug js-udf.wasm --plug config-env.wasm` and run `wasmtime serve --env
//! TRIBUTARY_CONFIG_UDF_SOURCE="$(cat scrub.js)" --env TRIBUTARY_CONFIG_UDF_FUNCTION=scrub …`.
//!
//! Setting `key` is the variable `TRIBUTARY_CONFIG_<KEY>` ([`variable`]); `get-all` lists exactly the
//! variables with that prefix ([`settings`]), so the other variables of the process (the sink adapter's
//! `TRIBUTARY_INSERTALL_URL`, push authentication's) are never taken for settings.
//!
//! The mapping is pure and tested natively; the component glue is wasm only.

/// The prefix of every setting's variable.
pub const PREFIX: &str = "TRIBUTARY_CONFIG_";

/// The variable holding setting `key`: `udf_source` → `TRIBUTARY_CONFIG_UDF_SOURCE` (`-` becomes `_`).
pub fn variable(key: &str) -> String {
    let mut name = String::with_capacity(PREFIX.len() + key.len());
    name.push_str(PREFIX);
    name.extend(key.chars().map(|c| if c == '-' { '_' } else { c.to_ascii_uppercase() }));
    name
}

/// The settings among `vars` (a process environment): each `TRIBUTARY_CONFIG_<KEY>` as `<key>` in lower
/// case, in the environment's order.
pub fn settings(vars: impl IntoIterator<Item = (String, String)>) -> Vec<(String, String)> {
    vars.into_iter()
        .filter_map(|(name, value)| {
            let key = name.strip_prefix(PREFIX).filter(|k| !k.is_empty())?;
            Some((key.to_ascii_lowercase(), value))
        })
        .collect()
}

#[cfg(target_arch = "wasm32")]
#[expect(unsafe_code, reason = "wit-bindgen generates the canonical-ABI glue")]
mod component {
    wit_bindgen::generate!({
        path: "../../wit",
        world: "config-env",
        generate_all,
    });

    use exports::wasi::config::store::{Error, Guest};

    struct Adapter;

    impl Guest for Adapter {
        fn get(key: String) -> Result<Option<String>, Error> {
            Ok(std::env::var(super::variable(&key)).ok())
        }

        fn get_all() -> Result<Vec<(String, String)>, Error> {
            Ok(super::settings(std::env::vars()))
        }
    }

    export!(Adapter);
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_setting_is_its_prefixed_upper_case_variable() {
        assert_eq!(variable("udf_source"), "TRIBUTARY_CONFIG_UDF_SOURCE");
        assert_eq!(variable("session-gap_minutes"), "TRIBUTARY_CONFIG_SESSION_GAP_MINUTES");
    }

    #[test]
    fn get_all_lists_only_the_prefixed_variables() {
        let env = [
            ("TRIBUTARY_INSERTALL_URL", "http://h"),
            ("TRIBUTARY_CONFIG_UDF_FUNCTION", "scrub"),
            ("TRIBUTARY_CONFIG_", "no key"),
            ("PATH", "/bin"),
            ("TRIBUTARY_CONFIG_UDF_SOURCE", "function scrub(m) { return m, 1; }"),
        ]
        .map(|(k, v)| (k.to_owned(), v.to_owned()));
        assert_eq!(
            settings(env),
            vec![
                ("udf_function".to_owned(), "scrub".to_owned()),
                ("udf_source".to_owned(), "function scrub(m) { return m, 1; }".to_owned()),
            ]
        );
    }
}
