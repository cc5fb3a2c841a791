//! The HTTP front: `POST /push/events` (the push handler, as a wasm component or, for the benchmark,
//! natively), `GET /healthz`, `GET /metrics`. Graceful shutdown stops accepting, lets in-flight pushes
//! finish, and only then lets the group commit drain.

use std::convert::Infallible;
use std::sync::Arc;
use std::time::{Duration, Instant};

use bytes::Bytes;
use http::{Method, Request, Response, StatusCode, header};
use http_body_util::combinators::UnsyncBoxBody;
use http_body_util::{BodyExt, Full};
use hyper::body::Incoming;
use hyper::server::conn::http1;
use hyper_util::rt::TokioIo;
use hyper_util::server::graceful::GracefulShutdown;
use tokio::net::TcpListener;
use tokio::sync::watch;
use wasmtime_wasi_http::handler::ProxyHandler;

use crate::metrics::Metrics;
use crate::native::NativePush;
use crate::push::PushRoute;

pub type BoxError = Box<dyn std::error::Error + Send + Sync>;
pub type Body = UnsyncBoxBody<Bytes, BoxError>;

/// Pub/Sub messages are at most 10 MB; base64 and the envelope add a third.
pub const MAX_PUSH_BYTES: u64 = 16 << 20;

/// The route the events topic is pushed to.
pub const EVENTS_ROUTE: &str = "/push/events";

/// The stateful functions and their routes (pushes and timer routes).
pub const FUNCTIONS: [(&str, &[&str]); 2] = [
    ("anomaly-check", &["/push/anomaly", "/push/sensors", "/push/anomaly/tick", "/push/sensors/tick"]),
    ("recommend-trigger", &["/push/recommend", "/push/products", "/push/recommend/tick"]),
];

/// The timer routes, POSTed every `timers.tick_ms`.
pub const TICK_ROUTES: [&str; 3] = ["/push/anomaly/tick", "/push/sensors/tick", "/push/recommend/tick"];

/// A stateful function's component, serving its routes.
pub struct Function {
    pub routes: &'static [&'static str],
    pub handler: ProxyHandler<PushRoute>,
}

/// Who handles pushes.
pub enum Pusher {
    /// The push-handler component (the product).
    Wasm(ProxyHandler<PushRoute>),
    /// The same logic compiled natively (the benchmark's baseline).
    Native(NativePush),
}

/// The function routes.
pub struct App {
    /// `[[push_auth]]`: OIDC tokens required on some push routes.
    pub push_auth: crate::push_auth::PushAuth,
    /// `/push/events`.
    pub pusher: Pusher,
    /// The stateful functions ([`FUNCTIONS`]; not in the native benchmark mode).
    pub functions: Vec<Function>,
    pub metrics: Arc<Metrics>,
    /// Pushes in flight, at most `guest.max_instances`: beyond, 429 at once (Pub/Sub slows down)
    /// rather than a queue that only adds latency.
    pub in_flight: tokio::sync::Semaphore,
    /// The group commit, for the BigQuery-compatible insertAll route.
    pub sink: crate::sink::GroupCommit,
    /// The warehouse is the embedded one (insertAll then knows its tables).
    pub embedded: bool,
}

pub fn text(status: StatusCode, body: impl Into<Bytes>) -> Response<Body> {
    let mut resp = Response::new(Full::new(body.into()).map_err(|e: Infallible| match e {}).boxed_unsync());
    *resp.status_mut() = status;
    resp
}

impl App {
    async fn route(&self, req: Request<Incoming>) -> Response<Body> {
        let authorization = req.headers().get(header::AUTHORIZATION).and_then(|v| v.to_str().ok());
        if let Err(refused) = self.push_auth.check(req.uri().path().trim_end_matches('/'), authorization).await {
            let status = StatusCode::from_u16(refused.status).unwrap_or(StatusCode::UNAUTHORIZED);
            let mut resp = text(status, format!("{}\n", refused.reason));
            if status == StatusCode::UNAUTHORIZED {
                resp.headers_mut().insert(header::WWW_AUTHENTICATE, http::HeaderValue::from_static("Bearer"));
            }
            return resp;
        }
        match (req.method(), req.uri().path()) {
            (&Method::GET, "/healthz") => text(StatusCode::OK, "ok\n"),
            (&Method::GET, "/metrics") => {
                let mut resp = text(StatusCode::OK, self.metrics.render());
                resp.headers_mut().insert(
                    header::CONTENT_TYPE,
                    http::HeaderValue::from_static("application/openmetrics-text; version=1.0.0; charset=utf-8"),
                );
                resp
            }
            (_, EVENTS_ROUTE) => {
                let started = Instant::now();
                let resp = self.push(&self.pusher, req).await;
                self.metrics.push(EVENTS_ROUTE, outcome(&resp), started.elapsed().as_secs_f64());
                resp
            }
            (_, path) if let Some((route, handler)) = self.function(path) => {
                let started = Instant::now();
                let resp = self.guest(handler, req).await;
                if let Some(reason) = resp.headers().get("x-tributary-window-skip").and_then(|v| v.to_str().ok()) {
                    self.metrics.window_skip(route, reason);
                }
                if TICK_ROUTES.contains(&route) {
                    self.metrics.tick(route, outcome(&resp));
                } else {
                    self.metrics.push(route, outcome(&resp), started.elapsed().as_secs_f64());
                }
                resp
            }
            (&Method::POST, path) if crate::insert_api::parse_path(path).is_some() => self.insert_all(req).await,
            _ => text(StatusCode::NOT_FOUND, "no such route\n"),
        }
    }

    /// The function serving `path`, and the route as declared.
    fn function(&self, path: &str) -> Option<(&'static str, &ProxyHandler<PushRoute>)> {
        let path = path.trim_end_matches('/');
        self.functions.iter().find_map(|f| Some((*f.routes.iter().find(|r| **r == path)?, &f.handler)))
    }

    async fn insert_all(&self, req: Request<Incoming>) -> Response<Body> {
        let (parts, body) = req.into_parts();
        let Some((project, dataset, table)) = crate::insert_api::parse_path(parts.uri.path()) else {
            return text(StatusCode::NOT_FOUND, "no such route\n");
        };
        let (status, body) = match body.collect().await {
            Ok(b) => crate::insert_api::handle(&self.sink, self.embedded, project, dataset, table, &b.to_bytes()).await,
            Err(e) => crate::insert_api::error(400, "INVALID_ARGUMENT", &format!("reading the body: {e}")),
        };
        let mut resp = text(StatusCode::from_u16(status).unwrap_or(StatusCode::INTERNAL_SERVER_ERROR), body);
        resp.headers_mut().insert(http::header::CONTENT_TYPE, http::HeaderValue::from_static("application/json"));
        resp
    }

    async fn push(&self, pusher: &Pusher, req: Request<Incoming>) -> Response<Body> {
        let declared = req.headers().get(header::CONTENT_LENGTH).and_then(|v| v.to_str().ok()?.parse::<u64>().ok());
        if declared.is_some_and(|n| n > MAX_PUSH_BYTES) {
            return text(StatusCode::PAYLOAD_TOO_LARGE, format!("push bodies are at most {MAX_PUSH_BYTES} bytes\n"));
        }
        match pusher {
            Pusher::Native(native) => {
                let Ok(_permit) = self.in_flight.try_acquire() else {
                    return text(StatusCode::TOO_MANY_REQUESTS, "too many pushes in flight; retry later\n");
                };
                native.handle(req).await
            }
            Pusher::Wasm(handler) => self.guest(handler, req).await,
        }
    }

    /// Runs one request through a function's component, within the in-flight limit.
    async fn guest(&self, handler: &ProxyHandler<PushRoute>, req: Request<Incoming>) -> Response<Body> {
        let declared = req.headers().get(header::CONTENT_LENGTH).and_then(|v| v.to_str().ok()?.parse::<u64>().ok());
        if declared.is_some_and(|n| n > MAX_PUSH_BYTES) {
            return text(StatusCode::PAYLOAD_TOO_LARGE, format!("push bodies are at most {MAX_PUSH_BYTES} bytes\n"));
        }
        let Ok(_permit) = self.in_flight.try_acquire() else {
            return text(StatusCode::TOO_MANY_REQUESTS, "too many pushes in flight; retry later\n");
        };
        let req = req.map(|body| body.map_err(wasmtime_wasi_http::Error::from).boxed_unsync());
        match handler.handle((), req).await {
            Ok(resp) => resp.map(|body| body.map_err(|e| Box::new(e) as BoxError).boxed_unsync()),
            Err(error) => {
                // A trap, a deadline or an instantiation failure: this push fails, Pub/Sub
                // redelivers it, and every other push goes on.
                tracing::warn!(error = format!("{error:#}"), "function failed");
                let mut resp = text(StatusCode::INTERNAL_SERVER_ERROR, format!("function failed: {error}\n"));
                resp.headers_mut().insert("x-tributary-guest-error", http::HeaderValue::from_static("1"));
                resp
            }
        }
    }
}

/// The metric label of a function's answer.
fn outcome(resp: &Response<Body>) -> &'static str {
    match resp.status().as_u16() {
        200..=299 => "acked",
        429 => "overloaded",
        503 => "unavailable",
        413 => "too_large",
        _ if resp.headers().contains_key("x-tributary-guest-error") => "guest_error",
        _ => "failed",
    }
}

/// A routing function for [`serve`].
pub trait Routes: Send + Sync + 'static {
    fn call(self: Arc<Self>, req: Request<Incoming>) -> impl Future<Output = Response<Body>> + Send;
}

impl Routes for App {
    async fn call(self: Arc<Self>, req: Request<Incoming>) -> Response<Body> {
        self.route(req).await
    }
}

/// Serves `routes` on `listener` until `stop` turns true, then waits up to `drain` for open
/// requests to finish.
pub async fn serve<R: Routes>(listener: TcpListener, routes: Arc<R>, mut stop: watch::Receiver<bool>, drain: Duration) {
    let graceful = GracefulShutdown::new();
    loop {
        let accepted = tokio::select! {
            a = listener.accept() => a,
            _ = stop.wait_for(|s| *s) => break,
        };
        let (stream, _) = match accepted {
            Ok(a) => a,
            Err(e) => {
                tracing::warn!(error = %e, "accept failed");
                tokio::time::sleep(Duration::from_millis(10)).await;
                continue;
            }
        };
        let _ = stream.set_nodelay(true);
        let routes = Arc::clone(&routes);
        let service = hyper::service::service_fn(move |req| {
            let routes = Arc::clone(&routes);
            async move { Ok::<_, Infallible>(routes.call(req).await) }
        });
        let conn = http1::Builder::new().keep_alive(true).serve_connection(TokioIo::new(stream), service);
        let conn = graceful.watch(conn);
        tokio::spawn(async move {
            if let Err(e) = conn.await {
                tracing::debug!(error = %e, "connection ended with an error");
            }
        });
    }
    drop(listener);
    if tokio::time::timeout(drain, graceful.shutdown()).await.is_err() {
        tracing::warn!(?drain, "some requests were still open at shutdown");
    }
}
