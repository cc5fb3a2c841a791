//! A real `redis-server` for the `state` backend.

use std::path::PathBuf;
use std::process::{Command, Stdio};
use std::time::Duration;

use super::{ChildGuard, free_port, temp_dir, wait_for};

/// A real `redis-server` (Debian's package; `.ci/run` installs it) on a free port, with an
/// append-only file fsynced on every write, as the state backend's docs ask for.
pub struct Redis {
    pub url: String,
    pub port: u16,
    dir: PathBuf,
    child: Option<ChildGuard>,
}

impl Redis {
    pub async fn start() -> Self {
        let port = free_port();
        let dir = temp_dir("redis");
        let mut me = Self { url: format!("redis://127.0.0.1:{port}"), port, dir, child: None };
        me.spawn().await;
        me
    }

    async fn spawn(&mut self) {
        use std::os::unix::process::CommandExt as _;
        let log = std::fs::File::create(self.dir.join("redis.log")).expect("log file");
        let child = Command::new("redis-server")
            .args(["--bind", "127.0.0.1", "--port", &self.port.to_string(), "--save", ""])
            .args(["--appendonly", "yes", "--appendfsync", "always", "--dir"])
            .arg(&self.dir)
            .stdin(Stdio::null())
            .stdout(log.try_clone().expect("log"))
            .stderr(log)
            .process_group(0)
            .spawn()
            .expect("starting redis-server (apt-get install redis-server; see README: Development)");
        self.child = Some(ChildGuard(child));
        let addr = format!("127.0.0.1:{}", self.port);
        wait_for("redis-server", Duration::from_secs(30), || async {
            tokio::net::TcpStream::connect(&addr).await.ok().map(|_| ())
        })
        .await;
    }

    /// FAULT INJECTION: the server is gone (SIGKILL) until [`Redis::restart`].
    pub fn kill(&mut self) {
        drop(self.child.take());
    }

    /// Starts the server again on the same port and data (its append-only file).
    pub async fn restart(&mut self) {
        self.spawn().await;
    }

    /// The host's `[state]` section for this server.
    pub fn state_config(&self) -> String {
        format!("[state]\nbackend = \"redis\"\nredis_url = \"{}\"\nop_timeout_ms = 500\n", self.url)
    }
}
