//! `tributary bench`: the wasm push path against the native baseline, in one run, on this machine.
//!
//! Both hosts are started in this process with their own warehouse in a temporary directory and driven
//! over loopback HTTP by the same client: a latency pass at concurrency 1 (per-request overhead) and a
//! throughput pass at concurrency C. Rounds alternate native and wasm; the report gives medians and
//! ratios, since a 2-core machine is noisy. Every push must be acked, and the warehouse must hold one
//! row per push afterwards.

use std::fmt;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use anyhow::{Context as _, bail, ensure};
use base64::Engine as _;
use tributary_model::Row;

use tributary::capabilities::message_transform::{MessageTransformConfig, Steps};
use tributary::config::Config;
use tributary::group_commit::SinkConfig;
use tributary::state::{StateBackend, StateConfig};
use tributary::timer::TimersConfig;
use tributary::warehouse::Backend;
use tributary::warehouse::bigquery::{BigQueryConfig, Credentials, WriteStream};
use tributary::{Mode, RunningHost, client};

/// Options of `tributary bench`.
#[derive(Debug, Clone, clap::Args)]
pub struct BenchOptions {
    /// Pushes per throughput pass.
    #[arg(long, default_value_t = 4000)]
    pub pushes: usize,
    /// Concurrent pushes in the throughput pass.
    #[arg(long, default_value_t = 32)]
    pub concurrency: usize,
    /// Pushes in the concurrency-1 latency pass.
    #[arg(long, default_value_t = 400)]
    pub latency_pushes: usize,
    /// Rounds per mode (alternating native, wasm).
    #[arg(long, default_value_t = 3)]
    pub rounds: usize,
    /// Also saturate the sink into each BigQuery backend at this REST endpoint (an emulator, with
    /// anonymous credentials), e.g. `http://127.0.0.1:9050`.
    #[arg(long)]
    pub bigquery_api_endpoint: Option<String>,
    /// The Storage Write API endpoint of the same server, e.g. `http://127.0.0.1:9060`.
    #[arg(long)]
    pub bigquery_grpc_endpoint: Option<String>,
    /// Project for the BigQuery passes.
    #[arg(long, default_value = "local")]
    pub bigquery_project: String,
    /// Rows per BigQuery backend pass (written 10 per write by 200 concurrent writers).
    #[arg(long, default_value_t = 20_000)]
    pub bigquery_rows: usize,
    /// Pushes to the stateful `/push/anomaly` route per state backend (0: skip those passes).
    #[arg(long, default_value_t = 2000)]
    pub state_pushes: usize,
    /// Also run the stateful pass with Redis state at this URL, e.g. `redis://127.0.0.1:6379`.
    #[arg(long)]
    pub redis_url: Option<String>,
    /// Calls in the JavaScript UDF step's per-message pass (0: skip the UDF passes, including the
    /// wasm + UDF rounds).
    #[arg(long, default_value_t = 3000)]
    pub udf_calls: usize,
}

/// A typical Pub/Sub SMT UDF: parse the payload, delete a field, stringify.
const BENCH_UDF: &str = r"function scrub(message, metadata) {
  const event = JSON.parse(message.data);
  delete event.referrer;
  return { data: JSON.stringify(event), attributes: message.attributes };
}
";

/// The step's per-message cost, timed around each call in this process (no HTTP, no warehouse).
#[derive(Debug, Clone, Copy, Default)]
pub struct UdfPass {
    p50: Duration,
    p99: Duration,
    cpu_per_call: Duration,
}

fn udf_config(dir: &std::path::Path) -> anyhow::Result<MessageTransformConfig> {
    std::fs::create_dir_all(dir)?;
    let file = dir.join("scrub.js");
    std::fs::write(&file, BENCH_UDF)?;
    Ok(MessageTransformConfig {
        routes: vec!["/push/events".into()],
        javascript: Some(file),
        function: Some("scrub".into()),
        style: None,
        component: None,
        settings: std::collections::BTreeMap::new(),
        timeout_ms: None,
        memory_mib: None,
    })
}

/// Calls the UDF step `calls` times on the benchmark's event, one at a time.
async fn udf_pass(calls: usize) -> anyhow::Result<UdfPass> {
    use tributary::bindings::types;
    let dir = std::env::temp_dir().join(format!("tributary-bench-udf-{}", std::process::id()));
    let config = udf_config(&dir)?;
    let guest = tributary::engine::GuestConfig::default();
    let wasm = |e: wasmtime::Error| anyhow::Error::from_boxed(e.into_boxed_dyn_error());
    let engine = tributary::engine::build(&guest, 1).map_err(wasm)?;
    let _ticker = tributary::engine::EpochTicker::start(engine.clone());
    let js = {
        let engine = engine.clone();
        tokio::task::spawn_blocking(move || wasmtime::component::Component::new(&engine, tributary::components::JS_UDF))
            .await?
            .map_err(wasm)?
    };
    let steps = Steps::load(&[config], &engine, Some(&js), &guest, tributary::metrics::Metrics::new()).await?;
    let event = br#"{"user_id":"user_1","event_type":"page_view","timestamp":"2024-01-01 10:00:00","page_url":"/products/7","session_id":"session_1","referrer":"bench"}"#;
    let msg = |i: usize| types::Message {
        id: i.to_string(),
        data: event.to_vec(),
        attributes: vec![("source".into(), "bench".into())],
        publish_time: Some("2024-01-01T10:00:00.000Z".into()),
        ordering_key: None,
        subscription: None,
        delivery_attempt: None,
    };
    for i in 0..200 {
        steps.run("/push/events", msg(i)).await.map_err(|r| anyhow::anyhow!("{}: {}", r.reason, r.message))?;
    }
    let cpu_before = process_cpu();
    let mut latencies = Vec::with_capacity(calls);
    for i in 0..calls {
        let t = Instant::now();
        let out = steps.run("/push/events", msg(i)).await;
        latencies.push(t.elapsed());
        let kept = out.map_err(|r| anyhow::anyhow!("{}: {}", r.reason, r.message))?.context("the UDF dropped")?;
        ensure!(!String::from_utf8_lossy(&kept.data).contains("referrer"), "the UDF did not scrub");
    }
    let cpu_per_call = (process_cpu() - cpu_before) / u32::try_from(calls.max(1)).unwrap_or(u32::MAX);
    let _ = std::fs::remove_dir_all(&dir);
    latencies.sort();
    let at = |q: f64| {
        #[expect(
            clippy::cast_possible_truncation,
            clippy::cast_sign_loss,
            clippy::cast_precision_loss,
            reason = "an index into a sorted list"
        )]
        let i = ((latencies.len() as f64 - 1.0) * q).round() as usize;
        latencies.get(i).copied().unwrap_or_default()
    };
    Ok(UdfPass { p50: at(0.5), p99: at(0.99), cpu_per_call })
}

/// The stateful anomaly route with one state backend: every push is a compare-and-swap on one key.
#[derive(Debug, Clone)]
pub struct StatePass {
    backend: &'static str,
    throughput: Pass,
    latency_c1: Pass,
    /// State calls per push, and compare-and-swaps lost to a concurrent writer per push.
    ops_per_push: f64,
    conflicts_per_push: f64,
}

fn anomaly_envelope(id: u64, base_ms: i64) -> String {
    // Event time follows the push order (20 ms apart, within five minutes), so minutes close along the
    // way (watermark) and at the end (timer), and pushes in flight together stay well within the lateness.
    let at = base_ms + i64::try_from(id % 15_000).unwrap_or(0) * 20;
    let ts = chrono::DateTime::<chrono::Utc>::from_timestamp_millis(at).unwrap_or_default().to_rfc3339();
    let event = format!(
        r#"{{"user_id":"user_{}","event_type":"page_view","timestamp":"{ts}","session_id":"session_{}"}}"#,
        id % 500,
        id % 1500
    );
    let data = base64::engine::general_purpose::STANDARD.encode(event);
    format!(
        r#"{{"subscription":"projects/bench/subscriptions/anomaly","message":{{"data":"{data}","messageId":"a{id}"}}}}"#
    )
}

/// Drives `/push/anomaly` on a wasm host with the given state backend; checks that every counted
/// event is in the closed minutes afterwards.
async fn state_pass(options: &BenchOptions, backend: &'static str, state: StateConfig) -> anyhow::Result<StatePass> {
    let dir = std::env::temp_dir().join(format!("tributary-bench-state-{}-{backend}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    let mut functions = std::collections::BTreeMap::new();
    functions.insert(
        "anomaly-check".to_owned(),
        std::collections::BTreeMap::from([("idle_close_seconds".to_owned(), toml::Value::Integer(1))]),
    );
    let config = Config {
        listen: "127.0.0.1:0".parse()?,
        admin_listen: "127.0.0.1:0".parse()?,
        data_dir: dir.clone(),
        state,
        functions,
        timers: TimersConfig { tick_ms: 0 },
        ..Config::default()
    };
    let host = tributary::start(&config, Mode::Wasm).await?;
    let base_ms = chrono::Utc::now().timestamp_millis() - 10 * 60_000;
    let run = |pushes, concurrency| {
        drive_route(&host, "/push/anomaly", pushes, concurrency, move |id| anomaly_envelope(id, base_ms))
    };
    run(100, 4).await.context("warm-up")?;
    let latency_c1 = run(options.latency_pushes.min(200), 1).await?;
    let text = host.metrics.render();
    let (ops0, conflicts0) =
        (metric(&text, "tributary_state_ops_total", ""), metric(&text, "tributary_state_conflicts_total", ""));
    let throughput = run(options.state_pushes, options.concurrency).await?;
    let text = host.metrics.render();
    let (ops1, conflicts1) =
        (metric(&text, "tributary_state_ops_total", ""), metric(&text, "tributary_state_conflicts_total", ""));
    // Close everything (the stream is idle now) and check nothing was lost or counted twice.
    tokio::time::sleep(Duration::from_millis(1100)).await;
    let (status, body) = client::post(host.admin_addr, "/push/anomaly/tick", &[], "").await?;
    ensure!(status == 204, "tick answered {status}: {}", String::from_utf8_lossy(&body));
    let (status, body) =
        client::post(host.admin_addr, "/query", &[], "SELECT sum(events_count) AS n FROM traffic_anomalies").await?;
    ensure!(status == 200, "query answered {status}");
    let v: serde_json::Value = serde_json::from_slice(&body)?;
    let counted = v["rows"][0]["n"].as_f64().unwrap_or(0.0);
    let skipped = metric(&host.metrics.render(), "tributary_window_skipped_total", "");
    let expected = 100 + options.latency_pushes.min(200) + options.state_pushes;
    host.shutdown().await;
    let _ = std::fs::remove_dir_all(&dir);
    #[expect(clippy::cast_precision_loss, reason = "counts")]
    {
        ensure!(
            counted + skipped == expected as f64,
            "{backend}: the closed minutes count {counted} events and {skipped} were late, after {expected} acked pushes"
        );
        let pushes = options.state_pushes as f64;
        Ok(StatePass {
            backend,
            throughput,
            latency_c1,
            ops_per_push: (ops1 - ops0) / pushes,
            conflicts_per_push: (conflicts1 - conflicts0) / pushes,
        })
    }
}

/// One BigQuery backend at saturation: the group commit fed faster than the backend drains it.
#[derive(Debug, Clone)]
pub struct SinkPass {
    backend: &'static str,
    rows_per_second: f64,
    rows_per_flush: f64,
    requests_per_flush: f64,
    rows_per_request: f64,
    full_fraction: f64,
}

/// Saturates the group commit into one BigQuery backend and reads its request metrics.
async fn sink_pass(
    options: &BenchOptions,
    backend: Backend,
    stream: WriteStream,
    name: &'static str,
) -> anyhow::Result<SinkPass> {
    use tributary::group_commit::GroupCommit;
    use tributary::warehouse::bigquery::{BigQuery, auth::Auth, rest::Rest};
    let api = options.bigquery_api_endpoint.clone().context("no endpoint")?;
    let dir = std::env::temp_dir().join(format!("tributary-bench-bq-{}-{name}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    let bq = BigQueryConfig {
        project: options.bigquery_project.clone(),
        // A dataset per run, so the row count checks this run only.
        dataset: format!("bench_{}_{}", name.replace('-', "_"), std::process::id()),
        api_endpoint: api,
        grpc_endpoint: options.bigquery_grpc_endpoint.clone().unwrap_or_default(),
        credentials: Credentials::Anonymous,
        write_stream: stream,
        request_timeout_ms: 30_000,
        retry_deadline_ms: 55_000,
        ..BigQueryConfig::default()
    };
    let sink_config =
        SinkConfig { backend, max_queued_rows: 100_000, write_timeout_ms: 60_000, ..SinkConfig::default() };
    let metrics = tributary::metrics::Metrics::new();
    let warehouse = {
        let (bq, dir, m) = (bq.clone(), dir.clone(), std::sync::Arc::clone(&metrics));
        tokio::task::spawn_blocking(move || BigQuery::connect(&bq, backend, &dir, m)).await??
    };
    let (sink, flusher) = GroupCommit::start(Box::new(warehouse), sink_config, std::sync::Arc::clone(&metrics));
    let api_label = if backend == Backend::BigqueryInsertall { "insertall" } else { "write" };
    let writers = 200;
    let writes = options.bigquery_rows.div_ceil(10);
    let started = Instant::now();
    let mut tasks = Vec::new();
    for w in 0..writers {
        let sink = sink.clone();
        tasks.push(tokio::spawn(async move {
            let mut i = w;
            while i < writes {
                let rows = (0..10)
                    .map(|j| {
                        let id = format!("{name}-{i}-{j}");
                        Row {
                            table: "streaming_events".into(),
                            insert_id: id.clone(),
                            json: format!(
                                r#"{{"event_id":"{id}","user_id":"user_{}","event_type":"page_view","timestamp":"2024-01-01T10:00:00Z","session_id":"s{}","page_url":"/p/{}","properties":{{"referrer":"bench"}},"message_id":"{id}"}}"#,
                                i % 500, i % 1500, j
                            ),
                        }
                    })
                    .collect();
                match sink.write(rows).await {
                    Ok(refused) => ensure!(refused.is_empty(), "rows refused: {refused:?}"),
                    Err(e) => bail!("write failed: {e}"),
                }
                i += writers;
            }
            anyhow::Ok(())
        }));
    }
    for t in tasks {
        t.await??;
    }
    let elapsed = started.elapsed();
    sink.close();
    tokio::task::spawn_blocking(move || flusher.join()).await?;
    let text = metrics.render();
    let api = format!("api=\"{api_label}\"");
    let value = |name: &str| metric(&text, name, &api);
    let (flush_rows, flushes) = (value("tributary_flush_rows_sum"), value("tributary_flush_rows_count"));
    let requests = value("tributary_bigquery_requests_total");
    let full = value("tributary_bigquery_full_requests_total");
    let request_rows = value("tributary_bigquery_request_rows_sum");
    let rest = Rest::new(&bq, std::sync::Arc::new(Auth::new(Credentials::Anonymous).await?))?;
    let counted =
        rest.query(&format!("SELECT COUNT(*) AS n FROM `{}.{}.streaming_events`", bq.project, bq.dataset)).await?;
    let n = counted["rows"][0]["f"][0]["v"].as_str().and_then(|v| v.parse::<usize>().ok()).unwrap_or(0);
    let expected = writes * 10;
    let _ = std::fs::remove_dir_all(&dir);
    ensure!(n == expected, "{name}: BigQuery holds {n} rows after {expected} committed");
    #[expect(clippy::cast_precision_loss, reason = "rates")]
    Ok(SinkPass {
        backend: name,
        rows_per_second: expected as f64 / elapsed.as_secs_f64(),
        rows_per_flush: flush_rows / flushes.max(1.0),
        requests_per_flush: requests / flushes.max(1.0),
        rows_per_request: request_rows / requests.max(1.0),
        full_fraction: full / requests.max(1.0),
    })
}

/// One pass's numbers.
#[derive(Debug, Clone, Copy, Default)]
struct Pass {
    per_second: f64,
    p50: Duration,
    p99: Duration,
    /// CPU time of this whole process (host and load generator) per push.
    cpu_per_push: Duration,
}

/// CPU time this process has used (user + system), from `/proc/self/stat` (clock ticks of 10 ms).
fn process_cpu() -> Duration {
    let stat = std::fs::read_to_string("/proc/self/stat").unwrap_or_default();
    // Fields after the parenthesized command name; utime and stime are the 14th and 15th overall.
    let after = stat.rsplit_once(')').map_or("", |(_, rest)| rest);
    let fields: Vec<&str> = after.split_whitespace().collect();
    let field = |i: usize| fields.get(i).and_then(|f| f.parse::<u64>().ok()).unwrap_or(0);
    // `after` starts at field 3 (state): utime is field 14, stime field 15.
    let ticks = field(11) + field(12);
    Duration::from_millis(ticks * 10)
}

/// Medians per mode.
#[derive(Debug, Clone, Default)]
pub struct ModeReport {
    throughput: Pass,
    latency_c1: Pass,
    rows_per_flush: f64,
}

/// The whole report.
#[derive(Debug, Clone)]
pub struct Report {
    options: BenchOptions,
    native: ModeReport,
    wasm: ModeReport,
    /// The wasm path with the JavaScript UDF step, and the step alone.
    udf: Option<(ModeReport, UdfPass)>,
    bigquery: Vec<SinkPass>,
    state: Vec<StatePass>,
}

static NEXT_ID: AtomicU64 = AtomicU64::new(1);

fn envelope(id: u64) -> String {
    let event = format!(
        r#"{{"user_id":"user_{}","event_type":"page_view","timestamp":"2024-01-01 10:00:00","page_url":"/products/{}","session_id":"session_{}","referrer":"bench"}}"#,
        id % 500,
        id % 97,
        id % 1500
    );
    let data = base64::engine::general_purpose::STANDARD.encode(event);
    format!(
        r#"{{"subscription":"projects/bench/subscriptions/events","message":{{"data":"{data}","attributes":{{"source":"bench"}},"messageId":"{id}","publishTime":"2024-01-01T10:00:00.000Z"}}}}"#
    )
}

async fn drive(host: &RunningHost, pushes: usize, concurrency: usize) -> anyhow::Result<Pass> {
    drive_route(host, "/push/events", pushes, concurrency, envelope).await
}

/// `pushes` POSTs of `body(id)` to `route`, `concurrency` at a time; every one must be acked.
async fn drive_route(
    host: &RunningHost,
    route: &'static str,
    pushes: usize,
    concurrency: usize,
    body: impl Fn(u64) -> String + Copy + Send + 'static,
) -> anyhow::Result<Pass> {
    let addr = host.addr;
    let cpu_before = process_cpu();
    let started = Instant::now();
    let per_worker = pushes.div_ceil(concurrency);
    let mut workers = Vec::new();
    for w in 0..concurrency {
        let count = per_worker.min(pushes.saturating_sub(w * per_worker));
        workers.push(tokio::spawn(async move {
            let mut latencies = Vec::with_capacity(count);
            for _ in 0..count {
                let body = body(NEXT_ID.fetch_add(1, Ordering::Relaxed));
                let t = Instant::now();
                let (status, resp) = client::post(addr, route, &[("content-type", "application/json")], body).await?;
                latencies.push(t.elapsed());
                ensure!(status == 204, "push answered {status}: {}", String::from_utf8_lossy(&resp));
            }
            anyhow::Ok(latencies)
        }));
    }
    let mut latencies = Vec::with_capacity(pushes);
    for w in workers {
        latencies.extend(w.await??);
    }
    let elapsed = started.elapsed();
    let cpu_per_push = (process_cpu() - cpu_before) / u32::try_from(pushes.max(1)).unwrap_or(u32::MAX);
    latencies.sort();
    let at = |q: f64| {
        #[expect(
            clippy::cast_possible_truncation,
            clippy::cast_sign_loss,
            clippy::cast_precision_loss,
            reason = "an index into a sorted list"
        )]
        let i = ((latencies.len() as f64 - 1.0) * q).round() as usize;
        latencies.get(i).copied().unwrap_or_default()
    };
    #[expect(clippy::cast_precision_loss, reason = "a rate")]
    let per_second = latencies.len() as f64 / elapsed.as_secs_f64();
    Ok(Pass { per_second, p50: at(0.5), p99: at(0.99), cpu_per_push })
}

async fn count_rows(host: &RunningHost) -> anyhow::Result<u64> {
    let (status, body) =
        client::post(host.admin_addr, "/query", &[], "SELECT count(*) AS n FROM streaming_events").await?;
    ensure!(status == 200, "query answered {status}");
    let v: serde_json::Value = serde_json::from_slice(&body)?;
    v["rows"][0]["n"].as_u64().context("count missing")
}

/// (sum, count) of the flush-size histogram.
fn flushes(host: &RunningHost) -> (f64, f64) {
    let text = host.metrics.render();
    (metric(&text, "tributary_flush_rows_sum", ""), metric(&text, "tributary_flush_rows_count", ""))
}

/// The sum of a metric's samples in a Prometheus text exposition, over the lines that contain `labels`
/// (or have no labels at all).
fn metric(text: &str, name: &str, labels: &str) -> f64 {
    text.lines()
        .filter(|l| l.starts_with(name) && (!l.contains('{') || l.contains(labels)))
        .filter_map(|l| l.rsplit(' ').next()?.parse::<f64>().ok())
        .sum::<f64>()
        .max(0.0)
}

/// One round of one mode; `udf`: with the benchmark's JavaScript UDF in front of the transform.
async fn round(mode: Mode, options: &BenchOptions, udf: bool) -> anyhow::Result<ModeReport> {
    let dir = std::env::temp_dir().join(format!("tributary-bench-{}-{:?}-{udf}", std::process::id(), mode));
    let _ = std::fs::remove_dir_all(&dir);
    let message_transforms = if udf { vec![udf_config(&dir.join("udfs"))?] } else { Vec::new() };
    let config = Config {
        listen: "127.0.0.1:0".parse()?,
        admin_listen: "127.0.0.1:0".parse()?,
        data_dir: dir.clone(),
        message_transforms,
        ..Config::default()
    };
    let host = tributary::start(&config, mode).await?;
    drive(&host, 200, 8).await.context("warm-up")?;
    let latency_c1 = drive(&host, options.latency_pushes, 1).await?;
    let before = flushes(&host);
    let throughput = drive(&host, options.pushes, options.concurrency).await?;
    let after = flushes(&host);
    let rows = count_rows(&host).await?;
    let expected = (200 + options.latency_pushes + options.pushes) as u64;
    host.shutdown().await;
    let _ = std::fs::remove_dir_all(&dir);
    if rows != expected {
        bail!("{mode:?}: the warehouse holds {rows} rows after {expected} acked pushes");
    }
    let flushes = after.1 - before.1;
    Ok(ModeReport {
        throughput,
        latency_c1,
        rows_per_flush: if flushes > 0.0 { (after.0 - before.0) / flushes } else { 0.0 },
    })
}

fn median(mut v: Vec<f64>) -> f64 {
    v.sort_by(f64::total_cmp);
    v.get(v.len() / 2).copied().unwrap_or_default()
}

fn median_report(rounds: &[ModeReport]) -> ModeReport {
    let pass = |f: &dyn Fn(&ModeReport) -> Pass| Pass {
        per_second: median(rounds.iter().map(|r| f(r).per_second).collect()),
        p50: Duration::from_secs_f64(median(rounds.iter().map(|r| f(r).p50.as_secs_f64()).collect())),
        p99: Duration::from_secs_f64(median(rounds.iter().map(|r| f(r).p99.as_secs_f64()).collect())),
        cpu_per_push: Duration::from_secs_f64(median(rounds.iter().map(|r| f(r).cpu_per_push.as_secs_f64()).collect())),
    };
    ModeReport {
        throughput: pass(&|r| r.throughput),
        latency_c1: pass(&|r| r.latency_c1),
        rows_per_flush: median(rounds.iter().map(|r| r.rows_per_flush).collect()),
    }
}

/// Runs the benchmark.
pub async fn run(options: &BenchOptions) -> anyhow::Result<Report> {
    let (mut native, mut wasm, mut udf) = (Vec::new(), Vec::new(), Vec::new());
    for r in 0..options.rounds.max(1) {
        tracing::info!(round = r + 1, "native baseline");
        native.push(round(Mode::Native, options, false).await?);
        tracing::info!(round = r + 1, "wasm");
        wasm.push(round(Mode::Wasm, options, false).await?);
        if options.udf_calls > 0 {
            tracing::info!(round = r + 1, "wasm with a JavaScript UDF step");
            udf.push(round(Mode::Wasm, options, true).await?);
        }
    }
    let udf = if options.udf_calls > 0 {
        tracing::info!(calls = options.udf_calls, "the JavaScript UDF step alone");
        Some((median_report(&udf), udf_pass(options.udf_calls).await?))
    } else {
        None
    };
    let mut bigquery = Vec::new();
    if options.bigquery_api_endpoint.is_some() {
        let mut passes = vec![(Backend::BigqueryInsertall, WriteStream::Default, "insertall")];
        if options.bigquery_grpc_endpoint.is_some() {
            passes.push((Backend::BigqueryWrite, WriteStream::Default, "write-default"));
            passes.push((Backend::BigqueryWrite, WriteStream::Committed, "write-committed"));
        }
        for (backend, stream, name) in passes {
            tracing::info!(backend = name, "BigQuery sink saturation pass");
            bigquery.push(sink_pass(options, backend, stream, name).await?);
        }
    }
    let mut state = Vec::new();
    if options.state_pushes > 0 {
        tracing::info!("stateful route, embedded state");
        state.push(state_pass(options, "embedded (redb)", StateConfig::default()).await?);
        if let Some(url) = &options.redis_url {
            tracing::info!("stateful route, Redis state");
            let redis = StateConfig {
                backend: StateBackend::Redis,
                redis_url: url.clone(),
                key_prefix: format!("tributary-bench-{}:", std::process::id()),
                ..StateConfig::default()
            };
            state.push(state_pass(options, "redis", redis).await?);
        }
    }
    Ok(Report {
        options: options.clone(),
        native: median_report(&native),
        wasm: median_report(&wasm),
        udf,
        bigquery,
        state,
    })
}

impl fmt::Display for Report {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let o = &self.options;
        let ms = |d: Duration| d.as_secs_f64() * 1e3;
        writeln!(
            f,
            "push benchmark: {} pushes at concurrency {} and {} at concurrency 1, {} rounds per mode, medians ({} cores)",
            o.pushes,
            o.concurrency,
            o.latency_pushes,
            o.rounds,
            std::thread::available_parallelism().map(|n| n.get()).unwrap_or(1)
        )?;
        writeln!(
            f,
            "{:<22} {:>10} {:>9} {:>9} {:>12} {:>11} {:>13}",
            "path", "pushes/s", "p50 ms", "p99 ms", "c=1 p50 ms", "rows/flush", "CPU µs/push"
        )?;
        let mut paths = vec![("native baseline", &self.native), ("wasm (pubsub-push)", &self.wasm)];
        if let Some((with_udf, _)) = &self.udf {
            paths.push(("wasm + JavaScript UDF", with_udf));
        }
        for (name, r) in paths {
            writeln!(
                f,
                "{:<22} {:>10.0} {:>9.2} {:>9.2} {:>12.3} {:>11.1} {:>13.0}",
                name,
                r.throughput.per_second,
                ms(r.throughput.p50),
                ms(r.throughput.p99),
                ms(r.latency_c1.p50),
                r.rows_per_flush,
                r.throughput.cpu_per_push.as_secs_f64() * 1e6
            )?;
        }
        let ratio = self.wasm.throughput.per_second / self.native.throughput.per_second.max(f64::MIN_POSITIVE);
        let latency = self.wasm.latency_c1.p50.as_secs_f64() - self.native.latency_c1.p50.as_secs_f64();
        let cpu = self.wasm.throughput.cpu_per_push.as_secs_f64() - self.native.throughput.cpu_per_push.as_secs_f64();
        writeln!(f, "throughput ratio wasm/native: {ratio:.2}")?;
        writeln!(
            f,
            "per-request overhead of the wasm path: {:.0} µs CPU per push; {:.0} µs c=1 p50 latency",
            cpu * 1e6,
            latency * 1e6
        )?;
        write!(f, "(c=1 latency is dominated by the warehouse commit, which both paths share)")?;
        if let Some((with_udf, step)) = &self.udf {
            let ratio = with_udf.throughput.per_second / self.wasm.throughput.per_second.max(f64::MIN_POSITIVE);
            writeln!(f)?;
            writeln!(
                f,
                "JavaScript UDF step (Boa in wasm; JSON.parse, delete a field, JSON.stringify), {} calls one at a time:",
                o.udf_calls
            )?;
            writeln!(
                f,
                "  p50 {:.0} µs, p99 {:.0} µs per message, {:.0} µs CPU per message",
                step.p50.as_secs_f64() * 1e6,
                step.p99.as_secs_f64() * 1e6,
                step.cpu_per_call.as_secs_f64() * 1e6
            )?;
            write!(f, "throughput ratio with/without the step: {ratio:.2}")?;
        }
        if !self.bigquery.is_empty() {
            writeln!(f)?;
            writeln!(
                f,
                "BigQuery sink at saturation ({} rows, 200 writers x 10 rows, sink.max_rows 1000):",
                o.bigquery_rows
            )?;
            writeln!(
                f,
                "{:<16} {:>9} {:>11} {:>13} {:>12} {:>14}",
                "backend", "rows/s", "rows/flush", "requests/flush", "rows/request", "full requests"
            )?;
            for p in &self.bigquery {
                writeln!(
                    f,
                    "{:<16} {:>9.0} {:>11.1} {:>13.2} {:>12.1} {:>13.1}%",
                    p.backend,
                    p.rows_per_second,
                    p.rows_per_flush,
                    p.requests_per_flush,
                    p.rows_per_request,
                    p.full_fraction * 100.0
                )?;
            }
            write!(f, "(full = closed by the row or byte cap; the last request of a run is partial by design)")?;
        }
        if !self.state.is_empty() {
            writeln!(f)?;
            writeln!(
                f,
                "stateful route /push/anomaly (anomaly-check, one traffic key): {} pushes at concurrency {}",
                o.state_pushes, o.concurrency
            )?;
            writeln!(
                f,
                "{:<18} {:>10} {:>9} {:>9} {:>12} {:>13} {:>15}",
                "state backend", "pushes/s", "p50 ms", "p99 ms", "c=1 p50 ms", "state ops/push", "CAS lost/push"
            )?;
            for p in &self.state {
                writeln!(
                    f,
                    "{:<18} {:>10.0} {:>9.2} {:>9.2} {:>12.3} {:>13.2} {:>15.2}",
                    p.backend,
                    p.throughput.per_second,
                    ms(p.throughput.p50),
                    ms(p.throughput.p99),
                    ms(p.latency_c1.p50),
                    p.ops_per_push,
                    p.conflicts_per_push
                )?;
            }
            write!(f, "(every counted event is checked in the closed minutes afterwards)")?;
        }
        Ok(())
    }
}
