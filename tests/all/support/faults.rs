//! FAULT INJECTION proxies in front of the BigQuery emulator: an HTTP one that answers 429/503 or
//! holds answers back, and a TCP one that can be taken down.

use std::time::Duration;

use serde_json::json;

/// FAULT INJECTION: an HTTP/1 proxy in front of the BigQuery emulator's REST API. Of the insertAll
/// requests, every 7th is forwarded but its answer held back `hold` (longer than the host's request
/// timeout: BigQuery wrote the rows, the host never heard), every 5th is answered 429 and every 3rd 503
/// without reaching BigQuery (unless started `targeted`, with those periodic faults off). Targeted
/// faults, on either kind: while `down_table` names a table, its insertAll requests are answered 503;
/// while `row_errors` is above zero, a request of two rows or more loses its last row on the way and
/// BigQuery's answer reports that row `backendError` (a transient per-row failure). Everything else
/// passes through.
pub struct FaultProxy {
    pub url: String,
    pub injected: std::sync::Arc<std::sync::atomic::AtomicUsize>,
    pub down_table: std::sync::Arc<std::sync::Mutex<Option<String>>>,
    pub row_errors: std::sync::Arc<std::sync::atomic::AtomicUsize>,
    task: tokio::task::JoinHandle<()>,
}

impl Drop for FaultProxy {
    fn drop(&mut self) {
        self.task.abort();
    }
}

impl FaultProxy {
    pub async fn start(upstream: &str, hold: Duration) -> Self {
        Self::with(upstream, Some(hold)).await
    }

    /// Only the targeted faults (`down_table`, `row_errors`).
    pub async fn targeted(upstream: &str) -> Self {
        Self::with(upstream, None).await
    }

    async fn with(upstream: &str, periodic: Option<Duration>) -> Self {
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
        let down_table: Arc<std::sync::Mutex<Option<String>>> = Arc::default();
        let row_errors = Arc::new(AtomicUsize::new(0));
        let (down, errors) = (Arc::clone(&down_table), Arc::clone(&row_errors));
        let task = tokio::spawn(async move {
            loop {
                let Ok((stream, _)) = listener.accept().await else { return };
                let (client, upstream, seen, injected) =
                    (client.clone(), upstream.clone(), Arc::clone(&seen), Arc::clone(&counter));
                let (down, errors) = (Arc::clone(&down), Arc::clone(&errors));
                tokio::spawn(async move {
                    let service = hyper::service::service_fn(move |req: http::Request<hyper::body::Incoming>| {
                        let (client, upstream, seen, injected) =
                            (client.clone(), upstream.clone(), Arc::clone(&seen), Arc::clone(&injected));
                        let (down, errors) = (Arc::clone(&down), Arc::clone(&errors));
                        async move {
                            let (parts, body) = req.into_parts();
                            let mut body = body.collect().await.map(|b| b.to_bytes()).unwrap_or_default();
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
                            let down_now = down.lock().expect("lock").clone();
                            if insert_all
                                && down_now
                                    .is_some_and(|t| parts.uri.path().ends_with(&format!("/tables/{t}/insertAll")))
                            {
                                injected.fetch_add(1, Ordering::SeqCst);
                                return answer(503, "injected: this table's backend is down");
                            }
                            // Drop the last row on the way and report it `backendError` below.
                            let mut lost_row = None;
                            if insert_all && errors.load(Ordering::SeqCst) > 0 {
                                let mut request: serde_json::Value = serde_json::from_slice(&body).unwrap_or_default();
                                if let Some(rows) = request["rows"].as_array_mut().filter(|r| r.len() >= 2)
                                    && errors
                                        .fetch_update(Ordering::SeqCst, Ordering::SeqCst, |n| n.checked_sub(1))
                                        .is_ok()
                                {
                                    rows.pop();
                                    lost_row = Some(rows.len());
                                    injected.fetch_add(1, Ordering::SeqCst);
                                    body = bytes::Bytes::from(request.to_string());
                                }
                            }
                            let periodic_on = periodic.is_some();
                            if periodic_on && insert_all && n % 7 != 0 && n % 5 == 0 {
                                injected.fetch_add(1, Ordering::SeqCst);
                                return answer(429, "injected: rate limited");
                            }
                            if periodic_on && insert_all && n % 7 != 0 && n % 3 == 0 {
                                injected.fetch_add(1, Ordering::SeqCst);
                                return answer(503, "injected: backend error");
                            }
                            let mut forward = http::Request::builder()
                                .method(parts.method)
                                .uri(format!("{upstream}{}", parts.uri.path_and_query().map_or("", |p| p.as_str())));
                            for (k, v) in &parts.headers {
                                if k != http::header::HOST && k != http::header::CONTENT_LENGTH {
                                    forward = forward.header(k, v);
                                }
                            }
                            let forward = forward.body(Full::new(body)).expect("request");
                            let response = match client.request(forward).await {
                                Ok(r) => r,
                                Err(e) => return answer(502, &format!("proxy: {e}")),
                            };
                            let status = response.status().as_u16();
                            let mut bytes =
                                response.into_body().collect().await.map(|b| b.to_bytes()).unwrap_or_default();
                            if let Some(index) = lost_row.filter(|_| status == 200) {
                                let mut answer: serde_json::Value = serde_json::from_slice(&bytes).unwrap_or_default();
                                let entry = json!({"index": index, "errors": [{"reason": "backendError",
                                    "location": "", "message": "injected: row not written, retry"}]});
                                match answer["insertErrors"].as_array_mut() {
                                    Some(list) => list.push(entry),
                                    None => answer["insertErrors"] = json!([entry]),
                                }
                                bytes = bytes::Bytes::from(answer.to_string());
                            }
                            if let Some(hold) = periodic.filter(|_| insert_all && n % 7 == 0) {
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
        Self { url, injected, down_table, row_errors, task }
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
