//! The `tributary` binary as a child process: started with a config, queried through its admin route.

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use serde_json::Value;

use super::{ChildGuard, free_port, http, http_raw, reqwest_get, wait_for};

/// A `tributary up` process.
pub struct Host {
    pub addr: SocketAddr,
    pub admin: SocketAddr,
    pub log: PathBuf,
    child: Option<ChildGuard>,
}

impl Host {
    /// Starts the binary with `extra_config` (TOML) appended to the listener settings.
    pub async fn start(data: &Path, extra_config: &str) -> Self {
        let addr: SocketAddr = format!("127.0.0.1:{}", free_port()).parse().expect("addr");
        let admin: SocketAddr = format!("127.0.0.1:{}", free_port()).parse().expect("addr");
        Self::start_at(data, addr, admin, extra_config).await
    }

    pub async fn start_at(data: &Path, addr: SocketAddr, admin: SocketAddr, extra_config: &str) -> Self {
        Self::start_in(data, data, addr, admin, extra_config).await
    }

    /// Starts the binary with its config file and log in `dir` and its data directory at `data`
    /// (which the host creates when it does not exist).
    pub async fn start_in(dir: &Path, data: &Path, addr: SocketAddr, admin: SocketAddr, extra_config: &str) -> Self {
        Self::start_env(dir, data, addr, admin, extra_config, &[]).await
    }

    /// [`Host::start_in`] with extra environment variables for the process.
    pub async fn start_env(
        dir: &Path,
        data: &Path,
        addr: SocketAddr,
        admin: SocketAddr,
        extra_config: &str,
        env: &[(&str, &str)],
    ) -> Self {
        use std::os::unix::process::CommandExt as _;
        std::fs::create_dir_all(dir).expect("config dir");
        let config = dir.join("tributary.toml");
        std::fs::write(
            &config,
            format!(
                "listen = \"{addr}\"\nadmin_listen = \"{admin}\"\ndata_dir = \"{}\"\n{extra_config}",
                data.display()
            ),
        )
        .expect("config");
        let log = dir.join(format!("host-{}.log", free_port()));
        let out = std::fs::File::create(&log).expect("log");
        let child = Command::new(env!("CARGO_BIN_EXE_tributary"))
            .args(["up", "--config"])
            .arg(&config)
            .env("RUST_LOG", "info")
            .envs(env.iter().copied())
            .stdin(Stdio::null())
            .stdout(out.try_clone().expect("log"))
            .stderr(out)
            .process_group(0)
            .spawn()
            .expect("starting tributary");
        let host = Self { addr, admin, log, child: Some(ChildGuard(child)) };
        let url = format!("http://{addr}/healthz");
        let log = host.log.clone();
        wait_for(&format!("the host on {addr} (log: {})", log.display()), Duration::from_secs(120), || async {
            reqwest_get(&url).await.filter(|(s, _)| *s == 200).map(|_| ())
        })
        .await;
        host
    }

    /// A free pair of loopback addresses for a host's two listeners.
    pub fn free_addrs() -> (SocketAddr, SocketAddr) {
        let addr = |_| format!("127.0.0.1:{}", free_port()).parse().expect("addr");
        (addr(0), addr(1))
    }

    pub fn push_url(&self) -> String {
        format!("http://{}/push/events", self.addr)
    }

    /// Runs SQL through the admin route; returns the rows.
    pub async fn sql(&self, sql: &str) -> Vec<Value> {
        let (status, text) =
            http_raw("POST", &format!("http://{}/query", self.admin), sql.as_bytes().to_vec(), &[]).await;
        assert_eq!(status, 200, "query {sql:?}: {text}");
        let v: Value = serde_json::from_str(&text).expect("query JSON");
        v["rows"].as_array().cloned().unwrap_or_default()
    }

    /// One number from a single-row, single-column query.
    pub async fn count(&self, sql: &str) -> i64 {
        let rows = self.sql(sql).await;
        let row = rows.first().and_then(Value::as_object).expect("one row");
        row.values().next().and_then(Value::as_i64).expect("a number")
    }

    /// A metric's value (sum over label sets matching every `needle`).
    pub async fn metric(&self, name: &str, needles: &[&str]) -> f64 {
        let (_, text) = http("GET", &format!("http://{}/metrics", self.addr), None).await;
        text.lines()
            .filter(|l| l.starts_with(name) && needles.iter().all(|n| l.contains(n)))
            .filter_map(|l| l.rsplit(' ').next()?.parse::<f64>().ok())
            .sum()
    }

    /// Sends SIGTERM and waits for a clean exit.
    pub fn stop(&mut self) {
        let mut child = self.child.take().expect("running");
        let pid = child.0.id().to_string();
        let _ = Command::new("kill").args(["-TERM", &pid]).status();
        let deadline = Instant::now() + Duration::from_secs(30);
        loop {
            if let Ok(Some(status)) = child.0.try_wait() {
                assert!(status.success(), "host exited with {status}; log: {}", self.log_text());
                std::mem::forget(child);
                return;
            }
            assert!(Instant::now() < deadline, "host did not stop within 30 s after SIGTERM");
            std::thread::sleep(Duration::from_millis(50));
        }
    }

    /// SIGKILL: no shutdown at all.
    pub fn kill(&mut self) {
        drop(self.child.take());
    }

    pub fn log_text(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }
}

impl Drop for Host {
    /// A failing test shows what the host said: the last lines of its log.
    fn drop(&mut self) {
        if std::thread::panicking() {
            let text = self.log_text();
            let lines: Vec<&str> = text.lines().collect();
            let tail = &lines[lines.len().saturating_sub(80)..];
            eprintln!("--- last {} lines of the host log {} ---\n{}", tail.len(), self.log.display(), tail.join("\n"));
        }
    }
}
