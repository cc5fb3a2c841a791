//! The HTTP front: every function route of the registry (as a wasm component or, for the benchmark's
//! baseline, natively), BigQuery's insertAll, `GET /healthz`, `GET /metrics`. Push authentication runs
//! before anything else. Graceful shutdown stops accepting, lets in-flight requests finish, and only
//! then lets the group commit drain.

use std::sync::Arc;
use std::time::Instant;

use http::{Method, Request, Response, StatusCode, header};
use http_body_util::BodyExt;
use hyper::body::Incoming;

use crate::functions::native::NativePush;
use crate::functions::{self, Kind, instances};
use crate::group_commit::GroupCommit;
use crate::listener::{Body, BoxError, Routes, text};
use crate::metrics::Metrics;

/// Pub/Sub messages are at most 10 MB; base64 and the envelope add a third.
pub const MAX_PUSH_BYTES: u64 = 16 << 20;

/// What serves one function's routes.
pub enum Handler {
    /// The function's component (the product).
    Wasm(instances::Handler),
    /// The same logic compiled natively (the benchmark's baseline; the events function only).
    Native(NativePush),
}

/// The function routes.
pub struct App {
    /// `[[push_auth]]`: OIDC tokens required on some push routes.
    pub push_auth: crate::push_auth::PushAuth,
    /// One entry per function of the registry, in its order; `None` when this mode does not serve it.
    pub handlers: Vec<Option<Handler>>,
    pub metrics: Arc<Metrics>,
    /// Requests in a function at once, at most `guest.max_instances`: beyond, 429 at once (Pub/Sub
    /// slows down) rather than a queue that only adds latency.
    pub in_flight: tokio::sync::Semaphore,
    /// The group commit, for the BigQuery-compatible insertAll route.
    pub sink: GroupCommit,
    /// The warehouse is the embedded one (insertAll then knows its tables).
    pub embedded: bool,
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
            (_, path) if let Some((index, _, route)) = functions::find(path) => {
                let Some(handler) = self.handlers.get(index).and_then(Option::as_ref) else {
                    return text(StatusCode::NOT_FOUND, "this route is not served in this mode\n");
                };
                let started = Instant::now();
                let resp = self.call(handler, req).await;
                if let Some(reason) = resp.headers().get("x-tributary-window-skip").and_then(|v| v.to_str().ok()) {
                    self.metrics.window_skip(route.path, reason);
                }
                match route.kind {
                    Kind::Tick => self.metrics.tick(route.path, outcome(&resp)),
                    Kind::Push => self.metrics.push(route.path, outcome(&resp), started.elapsed().as_secs_f64()),
                }
                resp
            }
            (&Method::POST, path) if crate::insert_api::parse_path(path).is_some() => self.insert_all(req).await,
            _ => text(StatusCode::NOT_FOUND, "no such route\n"),
        }
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

    /// Runs one request through a function, within the size and in-flight limits.
    async fn call(&self, handler: &Handler, req: Request<Incoming>) -> Response<Body> {
        let declared = req.headers().get(header::CONTENT_LENGTH).and_then(|v| v.to_str().ok()?.parse::<u64>().ok());
        if declared.is_some_and(|n| n > MAX_PUSH_BYTES) {
            return text(StatusCode::PAYLOAD_TOO_LARGE, format!("push bodies are at most {MAX_PUSH_BYTES} bytes\n"));
        }
        let Ok(_permit) = self.in_flight.try_acquire() else {
            return text(StatusCode::TOO_MANY_REQUESTS, "too many pushes in flight; retry later\n");
        };
        let handler = match handler {
            Handler::Native(native) => return native.handle(req).await,
            Handler::Wasm(handler) => handler,
        };
        let req = req.map(|body| body.map_err(wasmtime_wasi_http::Error::from).boxed_unsync());
        match handler.handle((), req).await {
            Ok(resp) => resp.map(|body| body.map_err(|e| Box::new(e) as BoxError).boxed_unsync()),
            Err(error) => {
                // A trap, a deadline or an instantiation failure: this request fails, Pub/Sub
                // redelivers it, and every other request goes on.
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

impl Routes for App {
    async fn call(self: Arc<Self>, req: Request<Incoming>) -> Response<Body> {
        self.route(req).await
    }
}
