//! The live dashboard (seed §7.1), on the internal listener: `GET /dashboard` (the page, embedded in
//! the binary), `GET /dashboard/data` (its figures as JSON) and `GET /dashboard/chart.svg` (events
//! and users per minute, drawn by plotters).
//!
//! The figures come from the shipped `dashboard_*` views ([`crate::warehouse::sql`]), so the page
//! shows exactly what `tributary sql` or `bq query` would: from the embedded warehouse through a
//! read-only connection of its own, or from BigQuery through `jobs.query`. One computation serves
//! every viewer for a second (single flight: a page per viewer never multiplies the queries);
//! `Cache-Control: no-cache` asks for a fresh one. Beside the figures, the host's own view of itself:
//! whether the data is stale (no event in the last two minutes of event time), whether pushes were
//! refused as overloaded (429) or unavailable (503) in the last 30 seconds, the rows waiting in the
//! group commit.

mod chart;
mod figures;

use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use http::{HeaderValue, Method, Response, StatusCode, header};
use serde_json::Value;

use crate::functions::{self, Kind};
use crate::listener::{Body, text};
use crate::metrics::{Metrics, PushLabels};
use crate::warehouse::bigquery::rest::Rest;

pub use figures::{Raw, figures};

/// The page, with its styles and script inline (no CDN: it works with no internet).
const PAGE: &str = include_str!("page.html");
/// How long one computation of the figures serves every viewer.
const FRESH_FOR: Duration = Duration::from_secs(1);
/// A refusal (429/503) within this long shows on the page.
const RECENT: Duration = Duration::from_secs(30);

/// Where the figures are read.
pub enum Source {
    /// The embedded warehouse, through a read-only connection of the dashboard's own.
    Embedded(Mutex<duckdb::Connection>),
    /// A BigQuery dataset where `tributary bigquery views` created the views.
    BigQuery(Rest),
}

impl Source {
    fn name(&self) -> &'static str {
        match self {
            Self::Embedded(_) => "embedded",
            Self::BigQuery(_) => "bigquery",
        }
    }

    /// Every row of each view, as JSON objects, in the order its `ORDER BY` list gives. The embedded
    /// warehouse answers them all in one statement (one plan, and DuckDB's per-query overhead once:
    /// measured 45 ms for all seven at 1M rows against 96 ms one by one); BigQuery runs one
    /// `jobs.query` per view, at once.
    async fn views(
        self: &Arc<Self>,
        views: &'static [(&'static str, &'static str)],
    ) -> Vec<Result<Vec<Value>, String>> {
        match &**self {
            Self::Embedded(_) => {
                let me = Arc::clone(self);
                let all = tokio::task::spawn_blocking(move || {
                    let Self::Embedded(conn) = &*me else { unreachable!("matched above") };
                    let conn = conn.lock().map_err(|_| String::from("the dashboard's connection is poisoned"))?;
                    embedded_views(&conn, views)
                })
                .await
                .map_err(|e| format!("the dashboard query task failed: {e}"))
                .and_then(|r| r);
                match all {
                    Ok(rows) => rows.into_iter().map(Ok).collect(),
                    Err(e) => views.iter().map(|_| Err(e.clone())).collect(),
                }
            }
            Self::BigQuery(rest) => {
                futures::future::join_all(views.iter().map(|(view, order_by)| async move {
                    let sql =
                        format!("SELECT * FROM `{}.{}.{view}` ORDER BY {order_by}", rest.project(), rest.dataset());
                    let response = rest.query(&sql).await.map_err(|e| {
                        format!("{view}: {e} (create the views with `tributary bigquery views` if they are missing)")
                    })?;
                    figures::bigquery_rows(&response).map_err(|e| format!("{view}: {e}"))
                }))
                .await
            }
        }
    }
}

/// Every view's rows in one DuckDB statement: one JSON array per view.
fn embedded_views(conn: &duckdb::Connection, views: &[(&str, &str)]) -> Result<Vec<Vec<Value>>, String> {
    let columns: Vec<String> = views
        .iter()
        .map(|(view, order_by)| format!("(SELECT to_json(list(t ORDER BY {order_by}))::VARCHAR FROM \"{view}\" AS t)"))
        .collect();
    let sql = format!("SELECT {}", columns.join(",\n       "));
    conn.query_row(&sql, [], |row| {
        (0..views.len())
            .map(|i| {
                let json: Option<String> = row.get(i)?;
                Ok(json.and_then(|j| serde_json::from_str(&j).ok()).unwrap_or_default())
            })
            .collect::<Result<Vec<Vec<Value>>, duckdb::Error>>()
    })
    .map_err(|e| format!("reading the dashboard views: {e}"))
}

/// When pushes were last refused.
struct Refusals {
    overloaded: (u64, Option<Instant>),
    unavailable: (u64, Option<Instant>),
}

/// The dashboard's routes and its cache.
pub struct Dashboard {
    source: Arc<Source>,
    metrics: Arc<Metrics>,
    cache: tokio::sync::Mutex<Option<(Instant, Arc<Value>)>>,
    refusals: Mutex<Refusals>,
    /// The `[[pull]]` subscriptions, shown with their counters.
    subscriptions: Vec<String>,
}

impl Dashboard {
    pub fn new(source: Source, metrics: Arc<Metrics>, subscriptions: Vec<String>) -> Self {
        Self {
            subscriptions,
            source: Arc::new(source),
            metrics,
            cache: tokio::sync::Mutex::new(None),
            refusals: Mutex::new(Refusals { overloaded: (0, None), unavailable: (0, None) }),
        }
    }

    /// Answers the dashboard's routes; `None` for any other path.
    pub async fn route(&self, method: &Method, path: &str, headers: &http::HeaderMap) -> Option<Response<Body>> {
        if !path.starts_with("/dashboard") {
            return None;
        }
        if method != Method::GET && method != Method::HEAD {
            return Some(text(StatusCode::METHOD_NOT_ALLOWED, "the dashboard only answers GET\n"));
        }
        let fresh = headers
            .get(header::CACHE_CONTROL)
            .and_then(|v| v.to_str().ok())
            .is_some_and(|v| v.contains("no-cache") || v.contains("max-age=0"));
        Some(match path {
            "/dashboard" | "/dashboard/" => typed(text(StatusCode::OK, PAGE), "text/html; charset=utf-8"),
            "/dashboard/data" => {
                let data = self.data(fresh).await;
                let body = serde_json::to_string(&*data).unwrap_or_default();
                typed(text(StatusCode::OK, body), "application/json")
            }
            "/dashboard/chart.svg" => {
                let data = self.data(fresh).await;
                typed(text(StatusCode::OK, chart::svg(&data)), "image/svg+xml")
            }
            _ => text(StatusCode::NOT_FOUND, "no such dashboard route\n"),
        })
    }

    /// The figures, computed at most once a second (or now, when `fresh`).
    pub async fn data(&self, fresh: bool) -> Arc<Value> {
        let mut cache = self.cache.lock().await;
        if let Some((at, data)) = &*cache
            && !fresh
            && at.elapsed() < FRESH_FOR
        {
            return Arc::clone(data);
        }
        let started = Instant::now();
        let data = Arc::new(self.compute().await);
        tracing::debug!(ms = started.elapsed().as_millis(), "dashboard figures computed");
        *cache = Some((Instant::now(), Arc::clone(&data)));
        data
    }

    async fn compute(&self) -> Value {
        let started = Instant::now();
        const VIEWS: &[(&str, &str)] = &[
            ("dashboard_totals", "window_end"),
            ("dashboard_top_pages", "views DESC, page_url"),
            ("dashboard_traffic_sources", "users DESC, traffic_source"),
            ("dashboard_funnel", "position"),
            ("dashboard_minutes", "minute"),
            ("dashboard_traffic_anomalies", "minute DESC"),
            ("dashboard_sensor_anomalies", "timestamp DESC"),
        ];
        let mut rows = self.source.views(VIEWS).await.into_iter();
        let mut next = || rows.next().unwrap_or_else(|| Err(String::from("missing view result")));
        let (totals, top_pages, traffic_sources, funnel) = (next(), next(), next(), next());
        let (minutes, traffic_anomalies, sensor_anomalies) = (next(), next(), next());
        let raw = Raw { totals, top_pages, traffic_sources, funnel, minutes, traffic_anomalies, sensor_anomalies };
        let (overloaded, unavailable) = self.recent_refusals();
        let host = figures::HostStatus {
            overloaded,
            unavailable,
            queue_rows: self.metrics.queue_rows.get(),
            query_ms: u64::try_from(started.elapsed().as_millis()).unwrap_or(u64::MAX),
            warehouse: self.source.name(),
            pull: self.pull_status(),
        };
        figures(raw, chrono::Utc::now(), &host)
    }

    /// Each pull subscription's counters.
    fn pull_status(&self) -> Vec<Value> {
        let m = &self.metrics;
        self.subscriptions
            .iter()
            .map(|subscription| {
                let l = crate::metrics::SubscriptionLabels { subscription: subscription.clone() };
                serde_json::json!({
                    "subscription": subscription,
                    "received": m.pull_received.get_or_create(&l).get(),
                    "acked": m.pull_acked.get_or_create(&l).get(),
                    "nacked": m.pull_nacked.get_or_create(&l).get(),
                    "outstanding": m.pull_outstanding.get_or_create(&l).get(),
                    "stream_restarts": m.pull_stream_restarts.get_or_create(&l).get(),
                })
            })
            .collect()
    }

    /// Whether pushes were refused as overloaded (429) or unavailable (503) in the last [`RECENT`].
    fn recent_refusals(&self) -> (bool, bool) {
        let count = |outcome: &str| -> u64 {
            functions::routes(Kind::Push)
                .map(|route| {
                    let labels = PushLabels { route: route.to_owned(), outcome: outcome.to_owned() };
                    self.metrics.pushes.get_or_create(&labels).get()
                })
                .sum()
        };
        let (overloaded, unavailable) = (count("overloaded"), count("unavailable"));
        let Ok(mut seen) = self.refusals.lock() else { return (false, false) };
        let now = Instant::now();
        let recent = |(last, at): &mut (u64, Option<Instant>), current: u64| {
            if current > *last {
                *last = current;
                *at = Some(now);
            }
            at.is_some_and(|t| now.duration_since(t) < RECENT)
        };
        (recent(&mut seen.overloaded, overloaded), recent(&mut seen.unavailable, unavailable))
    }
}

fn typed(mut resp: Response<Body>, content_type: &'static str) -> Response<Body> {
    resp.headers_mut().insert(header::CONTENT_TYPE, HeaderValue::from_static(content_type));
    resp.headers_mut().insert(header::CACHE_CONTROL, HeaderValue::from_static("no-store"));
    resp
}
