//! Real parts for the end-to-end tests: Google's Pub/Sub emulator and the `tributary` binary, each a
//! child process on free loopback ports, killed when its guard drops. Every wait has a deadline.

use std::net::{SocketAddr, TcpListener};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use base64::Engine as _;
use jsonwebtoken::{Algorithm, EncodingKey, Header, encode};
use serde_json::{Value, json};
use tokio::io::{AsyncReadExt as _, AsyncWriteExt as _};

pub const EMULATOR: &str = "/usr/lib/google-cloud-sdk/platform/pubsub-emulator/bin/cloud-pubsub-emulator";

/// A free loopback port (bound, then released).
pub fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0").and_then(|l| l.local_addr()).map(|a| a.port()).expect("a free port")
}

/// A fresh directory under the system temp dir.
pub fn temp_dir(name: &str) -> PathBuf {
    let dir = std::env::temp_dir().join(format!("tributary-test-{name}-{}-{}", std::process::id(), free_port()));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).expect("temp dir");
    dir
}

/// Polls `f` until it returns `Some`, or panics with `what` after `timeout`.
pub async fn wait_for<T, F, Fut>(what: &str, timeout: Duration, mut f: F) -> T
where
    F: FnMut() -> Fut,
    Fut: Future<Output = Option<T>>,
{
    let deadline = Instant::now() + timeout;
    loop {
        if let Some(v) = f().await {
            return v;
        }
        assert!(Instant::now() < deadline, "timed out after {timeout:?} waiting for {what}");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

/// A child process killed (with its process group) on drop.
pub struct ChildGuard(pub Child);

impl Drop for ChildGuard {
    fn drop(&mut self) {
        // Only a group this guard created (its leader is the child), never anything wider.
        let pid = self.0.id();
        if pid > 1 && matches!(self.0.try_wait(), Ok(None)) {
            let _ = Command::new("kill").args(["-s", "KILL", "--", &format!("-{pid}")]).stderr(Stdio::null()).status();
        }
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

/// Google's Pub/Sub emulator.
pub struct PubSub {
    pub base: String,
    _child: ChildGuard,
}

impl PubSub {
    pub async fn start() -> Self {
        use std::os::unix::process::CommandExt as _;
        let port = free_port();
        let log = std::fs::File::create(temp_dir("pubsub").join("emulator.log")).expect("log file");
        let child = Command::new(EMULATOR)
            .args(["--host=127.0.0.1", &format!("--port={port}")])
            .stdin(Stdio::null())
            .stdout(log.try_clone().expect("log"))
            .stderr(log)
            .process_group(0)
            .spawn()
            .unwrap_or_else(|e| panic!("starting the Pub/Sub emulator at {EMULATOR}: {e} (see README: Development)"));
        let me =
            Self { base: format!("http://127.0.0.1:{port}/v1/projects/tributary-test"), _child: ChildGuard(child) };
        let url = format!("{}/topics", me.base);
        wait_for("the Pub/Sub emulator", Duration::from_secs(60), || async {
            reqwest_get(&url).await.filter(|(s, _)| *s == 200).map(|_| ())
        })
        .await;
        me
    }

    pub async fn create_topic(&self, topic: &str) {
        let (status, body) = http("PUT", &format!("{}/topics/{topic}", self.base), None).await;
        assert_eq!(status, 200, "create topic: {body}");
    }

    /// A push subscription to `endpoint`; `unwrapped` uses `noWrapper` with write-metadata.
    pub async fn create_push_subscription(&self, name: &str, topic: &str, endpoint: &str, unwrapped: bool) {
        let mut push = json!({ "pushEndpoint": endpoint });
        if unwrapped {
            push["noWrapper"] = json!({ "writeMetadata": true });
        }
        let body = json!({ "topic": format!("projects/tributary-test/topics/{topic}"), "pushConfig": push, "ackDeadlineSeconds": 10 });
        let (status, text) = http("PUT", &format!("{}/subscriptions/{name}", self.base), Some(body)).await;
        assert_eq!(status, 200, "create subscription: {text}");
    }

    /// Publishes raw payloads (with attributes); returns the message ids, in order.
    pub async fn publish(&self, topic: &str, messages: &[(Vec<u8>, Value)]) -> Vec<String> {
        let mut ids = Vec::new();
        for chunk in messages.chunks(100) {
            let msgs: Vec<Value> = chunk
                .iter()
                .map(|(data, attrs)| json!({ "data": base64::engine::general_purpose::STANDARD.encode(data), "attributes": attrs }))
                .collect();
            let (status, text) =
                http("POST", &format!("{}/topics/{topic}:publish", self.base), Some(json!({ "messages": msgs }))).await;
            assert_eq!(status, 200, "publish: {text}");
            let v: Value = serde_json::from_str(&text).expect("publish response");
            ids.extend(v["messageIds"].as_array().expect("ids").iter().map(|i| i.as_str().expect("id").to_owned()));
        }
        ids
    }
}

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
        use std::os::unix::process::CommandExt as _;
        std::fs::create_dir_all(data).expect("data dir");
        let config = data.join("tributary.toml");
        std::fs::write(
            &config,
            format!(
                "listen = \"{addr}\"\nadmin_listen = \"{admin}\"\ndata_dir = \"{}\"\n{extra_config}",
                data.display()
            ),
        )
        .expect("config");
        let log = data.join(format!("host-{}.log", free_port()));
        let out = std::fs::File::create(&log).expect("log");
        let child = Command::new(env!("CARGO_BIN_EXE_tributary"))
            .args(["up", "--config"])
            .arg(&config)
            .env("RUST_LOG", "info")
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

/// A wrapped push envelope, as Pub/Sub sends it.
pub fn envelope(message_id: &str, data: &[u8], subscription: &str) -> String {
    json!({
        "subscription": subscription,
        "message": {
            "data": base64::engine::general_purpose::STANDARD.encode(data),
            "attributes": {},
            "messageId": message_id,
            "message_id": message_id,
            "publishTime": "2024-01-01T10:00:00.000Z",
        }
    })
    .to_string()
}

async fn reqwest_get(url: &str) -> Option<(u16, String)> {
    let (s, t) = try_http("GET", url, Vec::new(), &[]).await.ok()?;
    Some((s, t))
}

/// A JSON request; panics on transport errors.
pub async fn http(method: &str, url: &str, body: Option<Value>) -> (u16, String) {
    let body = body.map(|b| b.to_string().into_bytes()).unwrap_or_default();
    http_raw(method, url, body, &[("content-type", "application/json")]).await
}

pub async fn http_raw(method: &str, url: &str, body: Vec<u8>, headers: &[(&str, &str)]) -> (u16, String) {
    try_http(method, url, body, headers).await.unwrap_or_else(|e| panic!("{method} {url}: {e}"))
}

async fn try_http(method: &str, url: &str, body: Vec<u8>, headers: &[(&str, &str)]) -> Result<(u16, String), String> {
    use http_body_util::{BodyExt, Full};
    use hyper_util::client::legacy::Client;
    use hyper_util::rt::TokioExecutor;
    let client: Client<_, Full<bytes::Bytes>> = Client::builder(TokioExecutor::new()).build_http();
    let mut req = http::Request::builder().method(method).uri(url);
    for (k, v) in headers {
        req = req.header(*k, *v);
    }
    let req = req.body(Full::new(bytes::Bytes::from(body))).map_err(|e| e.to_string())?;
    let resp = tokio::time::timeout(Duration::from_secs(30), client.request(req))
        .await
        .map_err(|_| "timed out after 30 s".to_owned())?
        .map_err(|e| e.to_string())?;
    let status = resp.status().as_u16();
    let body = resp.into_body().collect().await.map_err(|e| e.to_string())?.to_bytes();
    Ok((status, String::from_utf8_lossy(&body).into_owned()))
}

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

/// FAULT INJECTION: an HTTP/1 proxy in front of the BigQuery emulator's REST API. Of the insertAll
/// requests, every 7th is forwarded but its answer held back `hold` (longer than the host's request
/// timeout: BigQuery wrote the rows, the host never heard), every 5th is answered 429 and every 3rd 503
/// without reaching BigQuery. Everything else passes through.
pub struct FaultProxy {
    pub url: String,
    pub injected: std::sync::Arc<std::sync::atomic::AtomicUsize>,
    task: tokio::task::JoinHandle<()>,
}

impl Drop for FaultProxy {
    fn drop(&mut self) {
        self.task.abort();
    }
}

impl FaultProxy {
    pub async fn start(upstream: &str, hold: Duration) -> Self {
        use std::sync::Arc;
        use std::sync::atomic::{AtomicUsize, Ordering};

        use http_body_util::{BodyExt, Full};
        use hyper_util::client::legacy::Client;
        use hyper_util::rt::{TokioExecutor, TokioIo};

        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.expect("bind proxy");
        let url = format!("http://{}", listener.local_addr().expect("addr"));
        let injected = Arc::new(AtomicUsize::new(0));
        let seen = Arc::new(AtomicUsize::new(0));
        let client: Client<_, Full<bytes::Bytes>> = Client::builder(TokioExecutor::new()).build_http();
        let upstream = upstream.to_owned();
        let counter = Arc::clone(&injected);
        let task = tokio::spawn(async move {
            loop {
                let Ok((stream, _)) = listener.accept().await else { return };
                let (client, upstream, seen, injected) =
                    (client.clone(), upstream.clone(), Arc::clone(&seen), Arc::clone(&counter));
                tokio::spawn(async move {
                    let service = hyper::service::service_fn(move |req: http::Request<hyper::body::Incoming>| {
                        let (client, upstream, seen, injected) =
                            (client.clone(), upstream.clone(), Arc::clone(&seen), Arc::clone(&injected));
                        async move {
                            let (parts, body) = req.into_parts();
                            let body = body.collect().await.map(|b| b.to_bytes()).unwrap_or_default();
                            let insert_all = parts.uri.path().ends_with("/insertAll");
                            let n = if insert_all { seen.fetch_add(1, Ordering::SeqCst) + 1 } else { 0 };
                            let answer = |status: u16, text: &str| {
                                http::Response::builder()
                                    .status(status)
                                    .header("content-type", "application/json")
                                    .body(Full::new(bytes::Bytes::from(
                                        json!({"error": {"code": status, "message": text}}).to_string(),
                                    )))
                            };
                            if insert_all && n % 7 != 0 && n % 5 == 0 {
                                injected.fetch_add(1, Ordering::SeqCst);
                                return answer(429, "injected: rate limited");
                            }
                            if insert_all && n % 7 != 0 && n % 3 == 0 {
                                injected.fetch_add(1, Ordering::SeqCst);
                                return answer(503, "injected: backend error");
                            }
                            let mut forward = http::Request::builder()
                                .method(parts.method)
                                .uri(format!("{upstream}{}", parts.uri.path_and_query().map_or("", |p| p.as_str())));
                            for (k, v) in &parts.headers {
                                if k != http::header::HOST {
                                    forward = forward.header(k, v);
                                }
                            }
                            let forward = forward.body(Full::new(body)).expect("request");
                            let response = match client.request(forward).await {
                                Ok(r) => r,
                                Err(e) => return answer(502, &format!("proxy: {e}")),
                            };
                            let status = response.status().as_u16();
                            let bytes = response.into_body().collect().await.map(|b| b.to_bytes()).unwrap_or_default();
                            if insert_all && n % 7 == 0 {
                                injected.fetch_add(1, Ordering::SeqCst);
                                tokio::time::sleep(hold).await;
                            }
                            http::Response::builder()
                                .status(status)
                                .header("content-type", "application/json")
                                .body(Full::new(bytes))
                        }
                    });
                    let _ = hyper::server::conn::http1::Builder::new()
                        .serve_connection(TokioIo::new(stream), service)
                        .await;
                });
            }
        });
        Self { url, injected, task }
    }
}

/// FAULT INJECTION: a TCP proxy that can be taken down. Down, it cuts every open connection (calls in
/// flight fail, possibly after the server acted on them) and closes new ones at once; up, it passes
/// bytes through. An outage is longer than the server takes to finish a call, so a retry never races the
/// call it repeats (local-bigquery does not serialize two appends racing for the same offset).
pub struct Outage {
    pub url: String,
    pub cuts: std::sync::Arc<std::sync::atomic::AtomicUsize>,
    down: std::sync::Arc<std::sync::atomic::AtomicBool>,
    open: std::sync::Arc<std::sync::Mutex<Vec<tokio::task::AbortHandle>>>,
    task: tokio::task::JoinHandle<()>,
}

impl Drop for Outage {
    fn drop(&mut self) {
        self.task.abort();
    }
}

impl Outage {
    pub async fn start(upstream: &str) -> Self {
        use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
        use std::sync::{Arc, Mutex};
        let upstream = upstream.trim_start_matches("http://").to_owned();
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.expect("bind outage proxy");
        let url = format!("http://{}", listener.local_addr().expect("addr"));
        let (down, open, cuts) =
            (Arc::new(AtomicBool::new(false)), Arc::new(Mutex::new(Vec::new())), Arc::new(AtomicUsize::new(0)));
        let (is_down, conns) = (Arc::clone(&down), Arc::clone(&open));
        let task = tokio::spawn(async move {
            loop {
                let Ok((mut inbound, _)) = listener.accept().await else { return };
                if is_down.load(Ordering::SeqCst) {
                    drop(inbound);
                    continue;
                }
                let upstream = upstream.clone();
                let conn = tokio::spawn(async move {
                    if let Ok(mut outbound) = tokio::net::TcpStream::connect(&upstream).await {
                        let _ = tokio::io::copy_bidirectional(&mut inbound, &mut outbound).await;
                    }
                });
                conns.lock().expect("lock").push(conn.abort_handle());
            }
        });
        Self { url, cuts, down, open, task }
    }

    /// Takes the proxy down (cutting every open connection) or brings it back up.
    pub fn set_down(&self, down: bool) {
        use std::sync::atomic::Ordering;
        self.down.store(down, Ordering::SeqCst);
        if down {
            for conn in self.open.lock().expect("lock").drain(..) {
                if !conn.is_finished() {
                    self.cuts.fetch_add(1, Ordering::SeqCst);
                }
                conn.abort();
            }
        }
    }
}

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

// Push authentication fixtures: keys made by `openssl` at test time (none committed), a JWKS endpoint.

/// An RSA key pair made with the system's `openssl`: the private key for signing, the JWK to publish.
pub struct TestKey {
    pub kid: String,
    der: Vec<u8>,
    pub jwk: Value,
}

fn openssl(args: &[&str], input: &[u8]) -> Vec<u8> {
    use std::io::Write as _;
    let mut child = std::process::Command::new("openssl")
        .args(args)
        .stdin(std::process::Stdio::piped())
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::null())
        .spawn()
        .expect("openssl");
    child.stdin.take().expect("stdin").write_all(input).expect("write");
    let out = child.wait_with_output().expect("openssl output");
    assert!(out.status.success(), "openssl {args:?}");
    out.stdout
}

impl TestKey {
    pub fn generate(kid: &str) -> Self {
        let pem = openssl(&["genrsa", "-traditional", "2048"], b"");
        let der = openssl(&["rsa", "-traditional", "-outform", "DER"], &pem);
        let modulus = String::from_utf8(openssl(&["rsa", "-noout", "-modulus"], &pem)).expect("utf8");
        let hex = modulus.trim().trim_start_matches("Modulus=");
        let bytes: Vec<u8> =
            (0..hex.len()).step_by(2).map(|i| u8::from_str_radix(&hex[i..i + 2], 16).expect("hex")).collect();
        let n = base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(bytes);
        let jwk = json!({"kty": "RSA", "alg": "RS256", "use": "sig", "kid": kid, "n": n, "e": "AQAB"});
        Self { kid: kid.into(), der, jwk }
    }

    pub fn sign(&self, claims: &Value) -> String {
        self.sign_as(&self.kid, claims)
    }

    /// Signs with this key but names `kid` (a forged or mislabelled token).
    pub fn sign_as(&self, kid: &str, claims: &Value) -> String {
        let mut header = Header::new(Algorithm::RS256);
        header.kid = Some(kid.into());
        encode(&header, claims, &EncodingKey::from_rsa_der(&self.der)).expect("sign")
    }
}

/// A JWKS endpoint on loopback serving whatever key set the test puts in it, counting fetches.
pub struct Jwks {
    pub url: String,
    pub keys: Arc<Mutex<Vec<Value>>>,
    pub fetches: Arc<Mutex<usize>>,
}

impl Jwks {
    pub async fn start(keys: Vec<Value>) -> Self {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.expect("bind");
        let url = format!("http://{}/oauth2/v3/certs", listener.local_addr().expect("addr"));
        let keys = Arc::new(Mutex::new(keys));
        let fetches = Arc::new(Mutex::new(0));
        let (k, f) = (Arc::clone(&keys), Arc::clone(&fetches));
        tokio::spawn(async move {
            while let Ok((mut conn, _)) = listener.accept().await {
                let (k, f) = (Arc::clone(&k), Arc::clone(&f));
                tokio::spawn(async move {
                    let mut buf = vec![0u8; 4096];
                    let _ = conn.read(&mut buf).await;
                    *f.lock().expect("lock") += 1;
                    let body = json!({"keys": *k.lock().expect("lock")}).to_string();
                    let resp = format!(
                        "HTTP/1.1 200 OK\r\ncontent-type: application/json\r\ncache-control: public, max-age=3600\r\ncontent-length: {}\r\nconnection: close\r\n\r\n{body}",
                        body.len()
                    );
                    let _ = conn.write_all(resp.as_bytes()).await;
                });
            }
        });
        Self { url, keys, fetches }
    }
}
