//! `local-bigquery` (PyPI), a BigQuery REST + Storage Write emulator, and Google's official
//! `google-cloud-bigquery` client as the outside check.

use std::path::PathBuf;
use std::process::{Command, Stdio};
use std::time::Duration;

use serde_json::Value;

use super::{ChildGuard, free_port, reqwest_get, temp_dir, wait_for};

/// The `local-bigquery` emulator (PyPI), installed by `tests/emulators/bigquery-setup.sh` into
/// `TRIBUTARY_BQ_VENV` (default `~/.cache/tributary/bq-venv`). It speaks BigQuery's REST API and the
/// Storage Write API over gRPC, and persists to its data dir.
pub struct BigQueryEmulator {
    pub rest: String,
    pub grpc: String,
    pub project: String,
    _child: ChildGuard,
}

/// Runs `tests/bigquery_verify.py` (Google's official google-cloud-bigquery client) against any
/// BigQuery REST endpoint and parses its JSON output.
pub fn official_client(endpoint: &str, project: &str, args: &[&str]) -> Value {
    let script = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../tests/bigquery_verify.py");
    let out = Command::new(bq_venv().join("bin/python"))
        .arg(script)
        .args([endpoint, project])
        .args(args)
        .output()
        .expect("running bigquery_verify.py (README: Development)");
    assert!(out.status.success(), "bigquery_verify.py {args:?}: {}", String::from_utf8_lossy(&out.stderr));
    serde_json::from_slice(&out.stdout).expect("verifier JSON")
}

fn bq_venv() -> PathBuf {
    std::env::var_os("TRIBUTARY_BQ_VENV")
        .map(PathBuf::from)
        .unwrap_or_else(|| PathBuf::from(std::env::var_os("HOME").expect("HOME")).join(".cache/tributary/bq-venv"))
}

impl BigQueryEmulator {
    pub async fn start(project: &str) -> Self {
        use std::os::unix::process::CommandExt as _;
        let venv = bq_venv();
        let python = venv.join("bin/python");
        assert!(
            python.exists(),
            "no local-bigquery venv at {}: run tests/emulators/bigquery-setup.sh {} (README: Development)",
            venv.display(),
            venv.display()
        );
        let (rest_port, grpc_port) = (free_port(), free_port());
        let data = temp_dir("bigquery");
        let log = std::fs::File::create(data.join("emulator.log")).expect("log file");
        let launcher = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../tests/emulators/bigquery_launch.py");
        let child = Command::new(&python)
            .arg(launcher)
            .args([
                "serve",
                "--host",
                "127.0.0.1",
                "--port",
                &rest_port.to_string(),
                "--grpc-port",
                &grpc_port.to_string(),
            ])
            .args(["--project", project, "--data-dir"])
            .arg(&data)
            .env("LBQ_EXT_DIR", venv.join("duckdb_ext"))
            .stdin(Stdio::null())
            .stdout(log.try_clone().expect("log"))
            .stderr(log)
            .process_group(0)
            .spawn()
            .expect("starting local-bigquery");
        let me = Self {
            rest: format!("http://127.0.0.1:{rest_port}"),
            grpc: format!("http://127.0.0.1:{grpc_port}"),
            project: project.to_owned(),
            _child: ChildGuard(child),
        };
        let url = format!("{}/bigquery/v2/projects/{project}/datasets", me.rest);
        wait_for(
            &format!("local-bigquery (log: {})", data.join("emulator.log").display()),
            Duration::from_secs(60),
            || async { reqwest_get(&url).await.filter(|(s, _)| *s == 200).map(|_| ()) },
        )
        .await;
        me
    }

    /// The `[sink]`/`[bigquery]` config of a host writing here through `backend`.
    pub fn host_config(&self, backend: &str, extra_bigquery: &str) -> String {
        self.host_config_via(backend, &self.rest, &self.grpc, extra_bigquery)
    }

    /// The same, reaching the emulator through other addresses (fault-injection proxies).
    pub fn host_config_via(&self, backend: &str, rest: &str, grpc: &str, extra_bigquery: &str) -> String {
        format!(
            "[sink]\nbackend = \"{backend}\"\n[bigquery]\nproject = \"{}\"\ndataset = \"tributary\"\napi_endpoint = \"{rest}\"\ngrpc_endpoint = \"{grpc}\"\ncredentials = \"anonymous\"\n{extra_bigquery}\n",
            self.project
        )
    }

    /// Runs `tests/bigquery_verify.py` (the official google-cloud-bigquery client) and parses its JSON.
    pub fn verify(&self, command: &str, arg: &str) -> Value {
        official_client(&self.rest, &self.project, &[command, arg])
    }

    /// Rows of a query through the official client.
    pub fn query(&self, sql: &str) -> Vec<Value> {
        self.verify("query", sql).as_array().cloned().unwrap_or_default()
    }

    /// One integer from a single-row, single-column query.
    pub fn count(&self, sql: &str) -> i64 {
        let rows = self.query(sql);
        let row = rows.first().and_then(Value::as_object).unwrap_or_else(|| panic!("one row from {sql}"));
        let v = row.values().next().expect("a column");
        v.as_i64()
            .or_else(|| v.as_str().and_then(|s| s.parse().ok()))
            .unwrap_or_else(|| panic!("a number from {sql}: {v}"))
    }
}
