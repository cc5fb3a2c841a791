//! `tributary.toml`: every knob of the host, with defaults good enough that no file is needed.
//!
//! Each section's struct and checks live with the part it configures (`[guest]` in [`crate::engine`],
//! `[sink]` in [`crate::group_commit`], `[bigquery]` in [`crate::warehouse::bigquery::config`],
//! `[state]` in [`crate::state`], `[timers]` in [`crate::timer`], `[[push_auth]]` in
//! [`crate::push_auth`], `[components]` in [`crate::functions`]). This module loads the file, and
//! [`Config::validate`] runs every section's checks and the checks across sections.

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};

use serde::Deserialize;

use crate::capabilities::message_transform::MessageTransformConfig;
use crate::engine::GuestConfig;
use crate::functions::{self, ComponentsConfig};
use crate::group_commit::SinkConfig;
use crate::listener::HttpConfig;
use crate::push_auth::PushAuthConfig;
use crate::state::StateConfig;
use crate::timer::TimersConfig;
use crate::warehouse::Backend;
use crate::warehouse::bigquery::BigQueryConfig;

/// Why a configuration was refused.
#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    #[error("reading config file {path}: {source}")]
    Read { path: PathBuf, source: std::io::Error },
    #[error("config file {path}: {source}")]
    Parse { path: PathBuf, source: toml::de::Error },
    #[error("invalid config: {0}")]
    Invalid(String),
}

/// The whole host configuration.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct Config {
    /// The public listener: the push routes (`/push/*`), `/healthz`, `/metrics`. Spin's default
    /// address, so `spin up` and `tributary up` are interchangeable.
    pub listen: SocketAddr,
    /// The internal listener: tick routes, insertAll, `/query` (for `tributary sql`), test-only fault
    /// injection. It takes no credentials, so it must be loopback unless `allow_remote_admin`.
    pub admin_listen: SocketAddr,
    /// Lets `admin_listen` be a non-loopback address (a private network only you reach).
    pub allow_remote_admin: bool,
    /// Bounds on connections and request bodies, both listeners.
    pub http: HttpConfig,
    /// The embedded warehouse and any other state live here.
    pub data_dir: PathBuf,
    /// Limits every guest runs under.
    pub guest: GuestConfig,
    /// The group commit in front of the warehouse.
    pub sink: SinkConfig,
    /// BigQuery, when `sink.backend` is one of the `bigquery-*` backends.
    pub bigquery: BigQueryConfig,
    /// Component files that replace the built-in ones.
    pub components: ComponentsConfig,
    /// The `state` import's store.
    pub state: StateConfig,
    /// The timer that closes windows when traffic stops.
    pub timers: TimersConfig,
    /// Push authentication (OIDC), per group of push routes.
    pub push_auth: Vec<PushAuthConfig>,
    /// Pull subscriptions (StreamingPull), each feeding a push route's function.
    pub pull: Vec<crate::pull::PullConfig>,
    /// Message-transform steps (JavaScript UDFs, or any component) in front of the row transform, per
    /// route, applied in the order listed.
    pub message_transforms: Vec<MessageTransformConfig>,
    /// Settings handed to each function through `wasi:config/store`, by function name:
    /// `[functions.anomaly-check]` `lateness_seconds = 120`. Values are strings, numbers or booleans.
    pub functions: BTreeMap<String, BTreeMap<String, toml::Value>>,
    /// Switches for tests only.
    pub testing: TestingConfig,
}

impl Default for Config {
    fn default() -> Self {
        Self {
            listen: SocketAddr::from(([127, 0, 0, 1], 3000)),
            admin_listen: SocketAddr::from(([127, 0, 0, 1], 3001)),
            allow_remote_admin: false,
            http: HttpConfig::default(),
            data_dir: PathBuf::from(".tributary"),
            guest: GuestConfig::default(),
            sink: SinkConfig::default(),
            bigquery: BigQueryConfig::default(),
            components: ComponentsConfig::default(),
            state: StateConfig::default(),
            timers: TimersConfig::default(),
            functions: BTreeMap::new(),
            push_auth: Vec::new(),
            pull: Vec::new(),
            message_transforms: Vec::new(),
            testing: TestingConfig::default(),
        }
    }
}

/// Test-only switches. Never enable them in production.
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct TestingConfig {
    /// Serves `PUT /faults/sink` on the admin listener: a switch that makes warehouse writes fail.
    pub fault_injection: bool,
}

impl Config {
    /// Reads `path`, or returns the defaults when there is none.
    pub fn load(path: Option<&Path>) -> Result<Self, ConfigError> {
        let Some(path) = path else { return Ok(Self::default()) };
        let text =
            std::fs::read_to_string(path).map_err(|source| ConfigError::Read { path: path.to_owned(), source })?;
        let mut config = Self::parse(&text).map_err(|source| ConfigError::Parse { path: path.to_owned(), source })?;
        // Step files are named relative to the config file, wherever the host is started from.
        let base = path.parent().unwrap_or(Path::new("."));
        for step in &mut config.message_transforms {
            step.resolve(base);
        }
        Ok(config)
    }

    pub fn parse(text: &str) -> Result<Self, toml::de::Error> {
        toml::from_str(text)
    }

    /// Runs every section's checks, then the checks across sections.
    pub fn validate(&self) -> Result<(), ConfigError> {
        let sections = [
            self.guest.validate(),
            self.http.validate(),
            self.sink.validate(),
            self.state.validate(),
            PushAuthConfig::validate_all(&self.push_auth),
            if self.sink.backend == Backend::Embedded { Ok(()) } else { self.bigquery.validate(self.sink.backend) },
        ];
        let push_routes: Vec<&str> = functions::routes(functions::Kind::Push).collect();
        let steps = self.message_transforms.iter().map(|m| m.validate(&self.guest, &push_routes));
        for checked in sections.into_iter().chain(self.pull.iter().map(crate::pull::PullConfig::validate)).chain(steps)
        {
            checked.map_err(ConfigError::Invalid)?;
        }
        let invalid = |m: String| Err(ConfigError::Invalid(m));
        if self.sink.write_timeout_ms >= self.guest.request_timeout_ms {
            return invalid(format!(
                "sink.write_timeout_ms ({}) must be below guest.request_timeout_ms ({}) so a slow write is answered 503, not cut off",
                self.sink.write_timeout_ms, self.guest.request_timeout_ms
            ));
        }
        if self.sink.backend != Backend::Embedded && self.bigquery.retry_deadline_ms >= self.sink.write_timeout_ms {
            return invalid(format!(
                "bigquery.retry_deadline_ms ({}) must be below sink.write_timeout_ms ({}) so a failing write is answered 503 before the push times out",
                self.bigquery.retry_deadline_ms, self.sink.write_timeout_ms
            ));
        }
        for (name, settings) in &self.functions {
            if !functions::named(name).is_some_and(|f| f.settings) {
                let known: Vec<&str> = functions::all().iter().filter(|f| f.settings).map(|f| f.name).collect();
                return invalid(format!(
                    "[functions.{name}]: no such function takes settings (known: {})",
                    known.join(", ")
                ));
            }
            for (key, value) in settings {
                if setting_text(value).is_none() {
                    return invalid(format!("functions.{name}.{key}: expected a string, number or boolean"));
                }
            }
        }
        if !self.admin_listen.ip().is_loopback() && !self.allow_remote_admin {
            return invalid(format!(
                "admin_listen {} is not a loopback address: the internal listener takes no credentials (it runs SQL and accepts insertAll); set allow_remote_admin = true only for a private network",
                self.admin_listen
            ));
        }
        if self.listen == self.admin_listen && self.listen.port() != 0 {
            return invalid(format!("listen and admin_listen are both {}", self.listen));
        }
        Ok(())
    }
}

impl Config {
    /// The `wasi:config/store` pairs of function `name`.
    pub fn function_settings(&self, name: &str) -> Vec<(String, String)> {
        self.functions
            .get(name)
            .into_iter()
            .flatten()
            .filter_map(|(k, v)| Some((k.clone(), setting_text(v)?)))
            .collect()
    }
}

/// A setting as the text a function reads.
fn setting_text(v: &toml::Value) -> Option<String> {
    match v {
        toml::Value::String(s) => Some(s.clone()),
        toml::Value::Integer(i) => Some(i.to_string()),
        toml::Value::Float(f) => Some(f.to_string()),
        toml::Value::Boolean(b) => Some(b.to_string()),
        _ => None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn push_auth_entries_are_checked() {
        let ok = "[[push_auth]]\nroutes = [\"/push/events\"]\naudience = \"https://x/push/events\"\nservice_accounts = [\"a@p.iam.gserviceaccount.com\"]\n";
        let c = Config::parse(ok).expect("parses");
        c.validate().expect("valid");
        assert_eq!(c.push_auth[0].jwks_url, "https://www.googleapis.com/oauth2/v3/certs");
        let c = Config::parse(&ok.replace("/push/events\"]", "/push/anomaly/tick\"]")).expect("parses");
        assert!(c.validate().expect_err("tick").to_string().contains("not a push route"));
        let c = Config::parse(&format!("{ok}{ok}")).expect("parses");
        assert!(c.validate().expect_err("twice").to_string().contains("listed twice"));
    }

    #[test]
    fn function_settings_become_text_and_unknown_functions_are_refused() {
        let c = Config::parse(
            "[functions.anomaly-check]\nlateness_seconds = 600\nsigma = 2.5\n[state]\nbackend = \"redis\"\n",
        )
        .expect("parses");
        c.validate().expect("valid");
        assert_eq!(
            c.function_settings("anomaly-check"),
            vec![("lateness_seconds".to_owned(), "600".to_owned()), ("sigma".to_owned(), "2.5".to_owned())]
        );
        let c = Config::parse("[functions.anomaly]\nx = 1\n").expect("parses");
        assert!(c.validate().expect_err("unknown").to_string().contains("[functions.anomaly]"));
        let c = Config::parse("[functions.anomaly-check]\nx = [1]\n").expect("parses");
        assert!(c.validate().is_err());
    }

    #[test]
    fn empty_file_is_the_defaults_and_valid() {
        let c = Config::parse("").expect("parses");
        assert_eq!(c.listen.to_string(), "127.0.0.1:3000");
        c.validate().expect("defaults are valid");
    }

    #[test]
    fn unknown_keys_are_refused_by_name() {
        let err = Config::parse("[sink]\nmax_row = 5\n").expect_err("typo");
        assert!(err.to_string().contains("unknown field `max_row`"), "{err}");
    }

    #[test]
    fn values_are_checked_against_each_other() {
        let c = Config::parse("[sink]\nmax_rows = 10\nmax_queued_rows = 5\n").expect("parses");
        let err = c.validate().expect_err("invalid");
        assert_eq!(err.to_string(), "invalid config: sink.max_queued_rows (5) must be at least sink.max_rows (10)");
        let c = Config::parse("[guest]\nrequest_timeout_ms = 1000\n").expect("parses");
        assert!(c.validate().expect_err("invalid").to_string().contains("sink.write_timeout_ms (8000)"));
        let c = Config::parse("[sink]\nduckdb_memory_mib = 16\n").expect("parses");
        assert!(
            c.validate().expect_err("invalid").to_string().contains("sink.duckdb_memory_mib (16) must be at least 64")
        );
    }

    #[test]
    fn bigquery_backends_need_a_project_and_a_deadline_below_the_write_timeout() {
        let c = Config::parse("[sink]\nbackend = \"bigquery-write\"\n").expect("parses");
        assert!(c.validate().expect_err("no project").to_string().contains("needs bigquery.project"));
        let c = Config::parse(
            "[sink]\nbackend = \"bigquery-insertall\"\n[bigquery]\nproject = \"p\"\nretry_deadline_ms = 9000\n",
        )
        .expect("parses");
        assert!(c.validate().expect_err("deadline").to_string().contains("bigquery.retry_deadline_ms (9000)"));
        let c = Config::parse(
            "[sink]\nbackend = \"bigquery-write\"\n[bigquery]\nproject = \"p\"\nwrite_stream = \"default\"\nnew_fields = \"add-column\"\ncredentials = \"anonymous\"\n",
        )
        .expect("parses");
        c.validate().expect("valid");
        assert_eq!(c.bigquery.new_fields, crate::warehouse::bigquery::NewFields::AddColumn);
        let err = Config::parse("[bigquery]\nwrite_stream = \"pending\"\n").expect_err("unknown variant");
        assert!(err.to_string().contains("unknown variant `pending`"), "{err}");
    }
}
