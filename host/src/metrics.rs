//! Prometheus metrics (`GET /metrics`), all named `tributary_*`.

use std::sync::Arc;

use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::metrics::histogram::{Histogram, exponential_buckets};
use prometheus_client::registry::Registry;

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct PushLabels {
    pub route: String,
    /// `acked`, `overloaded`, `unavailable`, `failed`, `guest_error`, ...
    pub outcome: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct TableLabels {
    pub table: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct RouteLabels {
    pub route: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct ResultLabels {
    /// `committed` or `failed`.
    pub result: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct ApiLabels {
    /// `insertall` or `write` (Storage Write API).
    pub api: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct StateLabels {
    /// `embedded` or `redis`.
    pub backend: String,
    /// `get`, `cas`, `delete`, `scan`.
    pub op: String,
    /// `ok`, `unavailable`, `invalid`.
    pub result: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct SubscriptionLabels {
    pub subscription: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct BackendLabels {
    pub backend: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct SkipLabels {
    pub route: String,
    /// `late` (its window had closed) or `future` (event time far ahead of processing time).
    pub reason: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct ReloadLabels {
    /// The step's file.
    pub file: String,
    /// `reloaded` or `refused` (the previous version kept running).
    pub result: String,
}

/// Every metric of the host.
#[derive(Debug)]
pub struct Metrics {
    registry: Registry,
    pub pushes: Family<PushLabels, Counter>,
    pub ack_latency: Family<RouteLabels, Histogram>,
    pub rows_written: Family<TableLabels, Counter>,
    pub rows_refused: Family<TableLabels, Counter>,
    pub rows_duplicate: Counter,
    pub flushes: Family<ResultLabels, Counter>,
    pub flush_rows: Histogram,
    pub flush_seconds: Histogram,
    pub queue_rows: Gauge,
    pub bigquery_requests: Family<ApiLabels, Counter>,
    pub bigquery_full_requests: Family<ApiLabels, Counter>,
    pub bigquery_request_rows: Family<ApiLabels, Histogram>,
    pub bigquery_request_bytes: Family<ApiLabels, Histogram>,
    pub bigquery_retries: Family<ApiLabels, Counter>,
    pub state_ops: Family<StateLabels, Counter>,
    pub state_seconds: Family<BackendLabels, Histogram>,
    pub state_conflicts: Family<BackendLabels, Counter>,
    pub window_skipped: Family<SkipLabels, Counter>,
    pub poisoned: Family<RouteLabels, Counter>,
    pub ticks: Family<PushLabels, Counter>,
    pub push_auth: Family<PushLabels, Counter>,
    pub pull_received: Family<SubscriptionLabels, Counter>,
    pub pull_acked: Family<SubscriptionLabels, Counter>,
    pub pull_nacked: Family<SubscriptionLabels, Counter>,
    pub pull_outstanding: Family<SubscriptionLabels, Gauge>,
    pub pull_stream_restarts: Family<SubscriptionLabels, Counter>,
    pub pull_confirmed: Family<SubscriptionLabels, Counter>,
    pub pull_unconfirmed: Family<SubscriptionLabels, Counter>,
    pub udf: Family<PushLabels, Counter>,
    pub udf_seconds: Family<RouteLabels, Histogram>,
    pub udf_reloads: Family<ReloadLabels, Counter>,
    pub log_append_seconds: Histogram,
    pub unloaded_rows: Gauge,
    pub load_seconds: Histogram,
    pub load_rows: Histogram,
    pub load_failures: Counter,
}

impl Metrics {
    pub fn new() -> Arc<Self> {
        let mut registry = Registry::with_prefix("tributary");
        let pushes = Family::<PushLabels, Counter>::default();
        registry.register("pushes", "Push requests answered, by route and outcome", pushes.clone());
        let ack_latency = Family::<RouteLabels, Histogram>::new_with_constructor(|| {
            Histogram::new(exponential_buckets(0.000_25, 2.0, 16))
        });
        registry.register("ack_latency_seconds", "Time from push received to answer sent", ack_latency.clone());
        let rows_written = Family::<TableLabels, Counter>::default();
        registry.register("rows_written", "Rows committed to the warehouse, by table", rows_written.clone());
        let rows_refused = Family::<TableLabels, Counter>::default();
        registry.register("rows_refused", "Rows the warehouse refused permanently, by table", rows_refused.clone());
        let rows_duplicate = Counter::default();
        registry.register(
            "rows_duplicate",
            "Rows skipped because their insert id was already written",
            rows_duplicate.clone(),
        );
        let flushes = Family::<ResultLabels, Counter>::default();
        registry.register("flushes", "Group-commit flushes, by result", flushes.clone());
        let flush_rows = Histogram::new(exponential_buckets(1.0, 2.0, 14));
        registry.register("flush_rows", "Rows per group-commit flush", flush_rows.clone());
        let flush_seconds = Histogram::new(exponential_buckets(0.000_1, 2.0, 16));
        registry.register(
            "flush_seconds",
            "Duration of one group-commit flush (warehouse transaction)",
            flush_seconds.clone(),
        );
        let queue_rows = Gauge::default();
        registry.register("queue_rows", "Rows waiting for a flush", queue_rows.clone());
        let bigquery_requests = Family::<ApiLabels, Counter>::default();
        registry.register(
            "bigquery_requests",
            "Requests sent to BigQuery (insertAll or AppendRows), by API",
            bigquery_requests.clone(),
        );
        let bigquery_full_requests = Family::<ApiLabels, Counter>::default();
        registry.register(
            "bigquery_full_requests",
            "BigQuery requests closed by their row or byte cap (full), by API",
            bigquery_full_requests.clone(),
        );
        let bigquery_request_rows =
            Family::<ApiLabels, Histogram>::new_with_constructor(|| Histogram::new(exponential_buckets(1.0, 2.0, 14)));
        registry.register("bigquery_request_rows", "Rows per BigQuery request", bigquery_request_rows.clone());
        let bigquery_request_bytes = Family::<ApiLabels, Histogram>::new_with_constructor(|| {
            Histogram::new(exponential_buckets(256.0, 2.0, 17))
        });
        registry.register("bigquery_request_bytes", "Body bytes per BigQuery request", bigquery_request_bytes.clone());
        let bigquery_retries = Family::<ApiLabels, Counter>::default();
        registry.register(
            "bigquery_retries",
            "BigQuery calls retried after a transient failure",
            bigquery_retries.clone(),
        );
        let state_ops = Family::<StateLabels, Counter>::default();
        registry.register("state_ops", "State calls by functions, by backend, operation and result", state_ops.clone());
        let state_seconds = Family::<BackendLabels, Histogram>::new_with_constructor(|| {
            Histogram::new(exponential_buckets(0.000_05, 2.0, 16))
        });
        registry.register("state_seconds", "Duration of one state call", state_seconds.clone());
        let state_conflicts = Family::<BackendLabels, Counter>::default();
        registry.register(
            "state_conflicts",
            "Compare-and-swaps that lost to another writer (the function retries)",
            state_conflicts.clone(),
        );
        let window_skipped = Family::<SkipLabels, Counter>::default();
        registry.register(
            "window_skipped",
            "Events and readings left out of their window: late (window closed) or future (clock far ahead)",
            window_skipped.clone(),
        );
        let poisoned = Family::<RouteLabels, Counter>::default();
        registry.register(
            "poisoned",
            "Messages the function kept failing on (trap, deadline, memory), dead-lettered by the host",
            poisoned.clone(),
        );
        let ticks = Family::<PushLabels, Counter>::default();
        registry.register("ticks", "Timer ticks sent to functions, by route and outcome", ticks.clone());
        let push_auth = Family::<PushLabels, Counter>::default();
        registry.register(
            "push_auth",
            "Push authentication checks, by route and result (ok, or why the push was refused)",
            push_auth.clone(),
        );
        let pull_received = Family::<SubscriptionLabels, Counter>::default();
        registry.register("pull_received", "Messages received from pull subscriptions", pull_received.clone());
        let pull_acked = Family::<SubscriptionLabels, Counter>::default();
        registry.register("pull_acked", "Pulled messages acked (rows or dead letter durable)", pull_acked.clone());
        let pull_nacked = Family::<SubscriptionLabels, Counter>::default();
        registry.register(
            "pull_nacked",
            "Pulled messages handed back for redelivery (deadline 0)",
            pull_nacked.clone(),
        );
        let pull_outstanding = Family::<SubscriptionLabels, Gauge>::default();
        registry.register(
            "pull_outstanding",
            "Pulled messages being processed, not yet answered",
            pull_outstanding.clone(),
        );
        let pull_stream_restarts = Family::<SubscriptionLabels, Counter>::default();
        registry.register(
            "pull_stream_restarts",
            "StreamingPull streams reopened after they ended or broke",
            pull_stream_restarts.clone(),
        );
        let pull_confirmed = Family::<SubscriptionLabels, Counter>::default();
        registry.register(
            "pull_confirmed",
            "Acks and nacks Pub/Sub confirmed (exactly-once subscriptions)",
            pull_confirmed.clone(),
        );
        let pull_unconfirmed = Family::<SubscriptionLabels, Counter>::default();
        registry.register(
            "pull_unconfirmed",
            "Acks and nacks Pub/Sub refused or never confirmed (exactly-once subscriptions; the message is redelivered)",
            pull_unconfirmed.clone(),
        );
        let udf = Family::<PushLabels, Counter>::default();
        registry.register(
            "udf",
            "Messages through message-transform steps, by route and outcome (passed, dropped, failed)",
            udf.clone(),
        );
        let udf_seconds = Family::<RouteLabels, Histogram>::new_with_constructor(|| {
            Histogram::new(exponential_buckets(0.000_01, 2.0, 18))
        });
        registry.register(
            "udf_seconds",
            "Time one message spends in a route's message-transform steps",
            udf_seconds.clone(),
        );
        let udf_reloads = Family::<ReloadLabels, Counter>::default();
        registry.register(
            "udf_reloads",
            "Message-transform files reloaded after a change, by result",
            udf_reloads.clone(),
        );
        let log_append_seconds = Histogram::new(exponential_buckets(0.000_025, 2.0, 16));
        registry.register(
            "log_append_seconds",
            "Embedded warehouse: time to append one flush to the ingest log and fdatasync it",
            log_append_seconds.clone(),
        );
        let unloaded_rows = Gauge::default();
        registry.register(
            "unloaded_rows",
            "Embedded warehouse: rows acked from the ingest log, not yet loaded into DuckDB",
            unloaded_rows.clone(),
        );
        let load_seconds = Histogram::new(exponential_buckets(0.000_5, 2.0, 16));
        registry.register("load_seconds", "Embedded warehouse: duration of one load into DuckDB", load_seconds.clone());
        let load_rows = Histogram::new(exponential_buckets(1.0, 2.0, 18));
        registry.register("load_rows", "Embedded warehouse: rows per load into DuckDB", load_rows.clone());
        let load_failures = Counter::default();
        registry.register(
            "load_failures",
            "Embedded warehouse: loads into DuckDB that failed (the rows stay logged and are retried)",
            load_failures.clone(),
        );
        Arc::new(Self {
            registry,
            log_append_seconds,
            unloaded_rows,
            load_seconds,
            load_rows,
            load_failures,
            pushes,
            ack_latency,
            rows_written,
            rows_refused,
            rows_duplicate,
            flushes,
            flush_rows,
            flush_seconds,
            queue_rows,
            bigquery_requests,
            bigquery_full_requests,
            bigquery_request_rows,
            bigquery_request_bytes,
            bigquery_retries,
            state_ops,
            state_seconds,
            state_conflicts,
            window_skipped,
            poisoned,
            ticks,
            push_auth,
            pull_received,
            pull_acked,
            pull_nacked,
            pull_outstanding,
            pull_stream_restarts,
            pull_confirmed,
            pull_unconfirmed,
            udf,
            udf_seconds,
            udf_reloads,
        })
    }

    /// The Prometheus text exposition.
    pub fn render(&self) -> String {
        let mut out = String::new();
        if let Err(e) = prometheus_client::encoding::text::encode(&mut out, &self.registry) {
            tracing::error!(error = %e, "encoding metrics");
        }
        out
    }

    pub fn push(&self, route: &str, outcome: &str, seconds: f64) {
        self.pushes.get_or_create(&PushLabels { route: route.to_owned(), outcome: outcome.to_owned() }).inc();
        self.ack_latency.get_or_create(&RouteLabels { route: route.to_owned() }).observe(seconds);
    }

    pub fn state_op(&self, backend: &str, op: &str, result: &str, seconds: f64) {
        let labels = StateLabels { backend: backend.to_owned(), op: op.to_owned(), result: result.to_owned() };
        self.state_ops.get_or_create(&labels).inc();
        self.state_seconds.get_or_create(&BackendLabels { backend: backend.to_owned() }).observe(seconds);
    }

    pub fn push_auth(&self, route: &str, result: &str) {
        self.push_auth.get_or_create(&PushLabels { route: route.to_owned(), outcome: result.to_owned() }).inc();
    }

    pub fn tick(&self, route: &str, outcome: &str) {
        self.ticks.get_or_create(&PushLabels { route: route.to_owned(), outcome: outcome.to_owned() }).inc();
    }

    pub fn state_conflict(&self, backend: &str) {
        self.state_conflicts.get_or_create(&BackendLabels { backend: backend.to_owned() }).inc();
    }

    pub fn poison(&self, route: &str) {
        self.poisoned.get_or_create(&RouteLabels { route: route.to_owned() }).inc();
    }

    pub fn window_skip(&self, route: &str, reason: &str) {
        self.window_skipped.get_or_create(&SkipLabels { route: route.to_owned(), reason: reason.to_owned() }).inc();
    }

    pub fn udf(&self, route: &str, outcome: &str, seconds: f64) {
        self.udf.get_or_create(&PushLabels { route: route.to_owned(), outcome: outcome.to_owned() }).inc();
        self.udf_seconds.get_or_create(&RouteLabels { route: route.to_owned() }).observe(seconds);
    }

    pub fn udf_reload(&self, file: &str, result: &str) {
        self.udf_reloads.get_or_create(&ReloadLabels { file: file.to_owned(), result: result.to_owned() }).inc();
    }
}
