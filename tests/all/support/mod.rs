//! Real parts for the end-to-end tests, one module per role: [`pubsub`] (Google's Pub/Sub emulator),
//! [`host`] (the `tributary` binary), [`bigquery`] (`local-bigquery` and Google's official client),
//! [`redis`] (a real `redis-server`), [`auth`] (push-token fixtures), [`faults`] (FAULT INJECTION
//! proxies). Each real part is a child process on free loopback ports, killed when its guard drops;
//! every wait has a deadline. This module keeps what they share: ports, directories, waits, HTTP.

pub mod auth;
pub mod bigquery;
pub mod faults;
pub mod host;
pub mod pubsub;
pub mod redis;

use std::net::TcpListener;
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use base64::Engine as _;
use serde_json::{Value, json};

pub use self::auth::{Jwks, TestKey};
pub use self::bigquery::{BigQueryEmulator, official_client};
pub use self::faults::{FaultProxy, Outage};
pub use self::host::Host;
pub use self::pubsub::PubSub;
pub use self::redis::Redis;

/// TEST FIXTURE `tests/components/chaos-transform` (built by `host/build.rs`): a transform component
/// that traps, loops or exhausts its memory on request.
pub const CHAOS_TRANSFORM_PATH: &str = env!("TRIBUTARY_CHAOS_TRANSFORM_WASM");

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

/// Polls `f` until it returns `want`, or panics after `timeout` showing the last value seen.
pub async fn wait_eq<T, F, Fut>(what: &str, timeout: Duration, want: &T, mut f: F)
where
    T: PartialEq + std::fmt::Debug,
    F: FnMut() -> Fut,
    Fut: Future<Output = T>,
{
    let deadline = Instant::now() + timeout;
    loop {
        let got = f().await;
        if &got == want {
            return;
        }
        assert!(
            Instant::now() < deadline,
            "timed out after {timeout:?} waiting for {what}:\n got {got:?}\nwant {want:?}"
        );
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

pub(crate) async fn reqwest_get(url: &str) -> Option<(u16, String)> {
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
