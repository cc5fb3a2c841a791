//! The HTTP front, in two surfaces:
//!
//! - **public** (`listen`, reachable by Pub/Sub): the push routes of the registry (as wasm components
//!   or, for the benchmark's baseline, natively), `GET /healthz`, `GET /metrics`. Push authentication
//!   runs before anything else.
//! - **internal** (`admin_listen`, loopback unless `allow_remote_admin`): the tick routes (the timer and
//!   outside schedulers), BigQuery's insertAll (sink adapters, tools), and the admin routes
//!   ([`crate::admin`]), and the live dashboard ([`crate::dashboard`]). Requests must be addressed to
//!   an IP or `localhost` and carry no `Origin` (the dashboard's own page reading its data aside), so
//!   a web page cannot reach it (DNS rebinding, cross-site posts).
//!
//! Every body is read whole, within its route's size limit and the body timeout, before the request
//! takes a slot, so slow clients hold no slot; pushes and internal calls have separate slot budgets.
//! Graceful shutdown stops accepting, lets in-flight requests finish, and only then lets the group
//! commit drain.

use std::sync::Arc;
use std::time::Instant;

use http::{Method, Request, Response, StatusCode, header};
use hyper::body::Incoming;
use tokio::sync::Semaphore;

use crate::admin::Admin;
use crate::functions::native::NativePush;
use crate::functions::{self, Kind, instances};
use crate::group_commit::GroupCommit;
use crate::listener::{Body, BodyBudget, HttpConfig, Routes, read_body, text};
use crate::metrics::Metrics;

/// Pub/Sub messages are at most 10 MB; base64 and the envelope add a third.
pub const MAX_PUSH_BYTES: usize = 16 << 20;
/// insertAll requests: BigQuery's own limit is 10 MB per request.
pub const MAX_INSERT_ALL_BYTES: usize = 10 << 20;
/// Tick routes take no body.
pub const MAX_TICK_BYTES: usize = 64 << 10;
/// Internal calls (ticks, insertAll) in flight at once, apart from the pushes' budget.
pub const INTERNAL_IN_FLIGHT: usize = 16;

/// What serves one function's routes.
pub enum Handler {
    /// The function's component (the product).
    Wasm(Box<instances::Handler>),
    /// The same logic compiled natively (the benchmark's baseline; the events function only).
    Native(NativePush),
}

/// The function routes, and insertAll.
pub struct App {
    /// `[[push_auth]]`: OIDC tokens required on some push routes.
    pub push_auth: crate::push_auth::PushAuth,
    /// One entry per function of the registry, in its order; `None` when this mode does not serve it.
    pub handlers: Vec<Option<Handler>>,
    pub metrics: Arc<Metrics>,
    /// Pushes in a function at once, at most `guest.max_instances`: beyond, 429 at once (Pub/Sub
    /// slows down) rather than a queue that only adds latency.
    pub push_slots: Semaphore,
    /// Ticks and insertAll calls at once ([`INTERNAL_IN_FLIGHT`]), so they never take a push's slot.
    pub internal_slots: Semaphore,
    /// Memory for request bodies, shared by both surfaces.
    pub bodies: BodyBudget,
    pub http: HttpConfig,
    /// The group commit, for the BigQuery-compatible insertAll route.
    pub sink: GroupCommit,
    /// The warehouse is the embedded one (insertAll then knows its tables).
    pub embedded: bool,
    /// Dead-letters pushes the function keeps failing on.
    pub poison: crate::poison::Poison,
}

impl App {
    /// The public surface.
    async fn route_public(&self, req: Request<Incoming>) -> Response<Body> {
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
            (&Method::GET, "/healthz") => self.health(),
            (&Method::GET, "/metrics") => {
                let mut resp = text(StatusCode::OK, self.metrics.render());
                resp.headers_mut().insert(
                    header::CONTENT_TYPE,
                    http::HeaderValue::from_static("application/openmetrics-text; version=1.0.0; charset=utf-8"),
                );
                resp
            }
            (_, path) if let Some((index, _, route)) = functions::find(path) => match route.kind {
                Kind::Push => self.function(index, route, req).await,
                Kind::Tick => {
                    text(StatusCode::NOT_FOUND, "tick routes are served on the internal listener (admin_listen)\n")
                }
            },
            (&Method::POST, path) if crate::insert_api::parse_path(path).is_some() => {
                text(StatusCode::NOT_FOUND, "insertAll is served on the internal listener (admin_listen)\n")
            }
            _ => text(StatusCode::NOT_FOUND, "no such route\n"),
        }
    }

    /// The internal surface's own routes; `None` for the admin routes.
    async fn route_internal(&self, req: Request<Incoming>) -> Result<Response<Body>, Request<Incoming>> {
        match (req.method(), req.uri().path()) {
            (_, path)
                if let Some((index, _, route)) = functions::find(path)
                    && route.kind == Kind::Tick =>
            {
                Ok(self.function(index, route, req).await)
            }
            (&Method::POST, path) if crate::insert_api::parse_path(path).is_some() => Ok(self.insert_all(req).await),
            (&Method::GET, "/healthz") => Ok(self.health()),
            _ => Err(req),
        }
    }

    /// `/healthz`: 200 while the group commit's writer is alive, 503 once it is gone.
    fn health(&self) -> Response<Body> {
        if self.sink.writer_alive() {
            text(StatusCode::OK, "ok\n")
        } else {
            text(StatusCode::SERVICE_UNAVAILABLE, "the warehouse writer has stopped\n")
        }
    }

    async fn function(&self, index: usize, route: functions::Route, req: Request<Incoming>) -> Response<Body> {
        self.measured(index, route, Input::Http(req)).await
    }

    /// Runs a message pulled from a subscription ([`crate::pull`]) through the push function at
    /// `path`, exactly as if Pub/Sub had pushed it: same sandbox, limits, poison handling and answer.
    /// It waits for a function slot instead of being refused (flow control bounds the wait).
    pub async fn deliver(&self, path: &str, parts: http::request::Parts, body: bytes::Bytes) -> Response<Body> {
        match functions::find(path) {
            Some((index, _, route)) if route.kind == Kind::Push => {
                self.measured(index, route, Input::Pulled(parts, body)).await
            }
            _ => text(StatusCode::NOT_FOUND, "no such push route\n"),
        }
    }

    async fn measured(&self, index: usize, route: functions::Route, input: Input) -> Response<Body> {
        let Some(handler) = self.handlers.get(index).and_then(Option::as_ref) else {
            return text(StatusCode::NOT_FOUND, "this route is not served in this mode\n");
        };
        let started = Instant::now();
        let resp = self.call(handler, route, input).await;
        if let Some(reason) = resp.headers().get("x-tributary-window-skip").and_then(|v| v.to_str().ok()) {
            self.metrics.window_skip(route.path, reason);
        }
        match route.kind {
            Kind::Tick => self.metrics.tick(route.path, outcome(&resp)),
            Kind::Push => self.metrics.push(route.path, outcome(&resp), started.elapsed().as_secs_f64()),
        }
        resp
    }

    async fn insert_all(&self, req: Request<Incoming>) -> Response<Body> {
        let json = |status: u16, body: String| {
            let mut resp = text(StatusCode::from_u16(status).unwrap_or(StatusCode::INTERNAL_SERVER_ERROR), body);
            resp.headers_mut().insert(http::header::CONTENT_TYPE, http::HeaderValue::from_static("application/json"));
            resp
        };
        if !is_json(req.headers()) {
            let (status, body) =
                crate::insert_api::error(415, "INVALID_ARGUMENT", "insertAll takes Content-Type: application/json");
            return json(status, body);
        }
        let (parts, body) = match read_body(req, MAX_INSERT_ALL_BYTES, self.http.body_read_timeout(), &self.bodies)
            .await
        {
            Ok(read) => read,
            Err(e) => {
                let (status, body) = crate::insert_api::error(e.status().as_u16(), "INVALID_ARGUMENT", &e.to_string());
                return json(status, body);
            }
        };
        let Some((project, dataset, table)) = crate::insert_api::parse_path(parts.uri.path()) else {
            return text(StatusCode::NOT_FOUND, "no such route\n");
        };
        let Ok(_slot) = self.internal_slots.try_acquire() else {
            let (status, body) =
                crate::insert_api::error(429, "RESOURCE_EXHAUSTED", "too many internal calls in flight");
            return json(status, body);
        };
        let (status, body) =
            crate::insert_api::handle(&self.sink, self.embedded, project, dataset, table, &body.bytes).await;
        json(status, body)
    }

    /// Runs one request through a function: the body is read first (size and time limits), then the
    /// request takes a slot of its class.
    async fn call(&self, handler: &Handler, route: functions::Route, input: Input) -> Response<Body> {
        let kind = route.kind;
        let (limit, slots) = match kind {
            Kind::Push => (MAX_PUSH_BYTES, &self.push_slots),
            Kind::Tick => (MAX_TICK_BYTES, &self.internal_slots),
        };
        // `_read` keeps the body's share of the memory budget until the function is done with it.
        let (parts, body, _slot, _read) = match input {
            Input::Http(req) => {
                let (parts, body) = match read_body(req, limit, self.http.body_read_timeout(), &self.bodies).await {
                    Ok(read) => read,
                    Err(e) => return e.answer(),
                };
                let Ok(slot) = slots.try_acquire() else {
                    return text(StatusCode::TOO_MANY_REQUESTS, "too many requests in flight; retry later\n");
                };
                (parts, body.bytes.clone(), slot, Some(body))
            }
            Input::Pulled(parts, body) => {
                let Ok(slot) = slots.acquire().await else {
                    return text(StatusCode::SERVICE_UNAVAILABLE, "the host is shutting down\n");
                };
                (parts, body, slot, None)
            }
        };
        let handler = match handler {
            Handler::Native(native) => return native.handle(parts, body).await,
            Handler::Wasm(handler) => handler,
        };
        let error = match handler.handle(route.path, &parts, &body).await {
            Ok(resp) => return resp,
            Err(error) => format!("{error:#}"),
        };
        let (headers, path, bytes) = (parts.headers, parts.uri.path().to_owned(), body);
        // A trap, a deadline or an instantiation failure: this request fails and every other request
        // goes on. The details stay in the log (and in the dead letter), never in the answer.
        tracing::warn!(route = %path, error, "function failed");
        let verdict = match kind {
            Kind::Push => Some(self.poison.failed(&path, &headers, &bytes, &error).await),
            Kind::Tick => None,
        };
        let mut resp = match verdict {
            Some(crate::poison::Verdict::DeadLettered { attempt }) => {
                tracing::warn!(route = %path, attempt, "function failed on this message again: dead-lettered (stage guest)");
                self.metrics.poison(&path);
                return text(StatusCode::OK, format!("dead-lettered after {attempt} failed deliveries\n"));
            }
            Some(crate::poison::Verdict::Unavailable(e)) => {
                tracing::warn!(route = %path, error = %e, "counting the failed delivery failed");
                text(StatusCode::INTERNAL_SERVER_ERROR, "the function failed on this message\n")
            }
            Some(crate::poison::Verdict::Redeliver { attempt }) => text(
                StatusCode::INTERNAL_SERVER_ERROR,
                format!("the function failed on this message (failed delivery {attempt})\n"),
            ),
            None => text(StatusCode::INTERNAL_SERVER_ERROR, "the function failed\n"),
        };
        resp.headers_mut().insert("x-tributary-guest-error", http::HeaderValue::from_static("1"));
        resp
    }
}

/// A request for a function: from the HTTP front (its body still to be read within the limits), or
/// already in memory (a pulled message).
enum Input {
    Http(Request<Incoming>),
    Pulled(http::request::Parts, bytes::Bytes),
}

fn is_json(headers: &http::HeaderMap) -> bool {
    headers
        .get(header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.split(';').next())
        .is_some_and(|v| v.trim().eq_ignore_ascii_case("application/json"))
}

/// Whether a request to the internal listener may be served: addressed to an IP address or
/// `localhost` (a name an attacker's DNS rebinds is refused) and sent by no web page (no `Origin`).
pub fn internal_request_allowed(host: Option<&str>, origin: Option<&str>) -> Result<(), &'static str> {
    if origin.is_some() {
        return Err("the internal listener does not answer web pages (Origin header)");
    }
    let Some(host) = host else { return Ok(()) };
    let name = match host.strip_prefix('[') {
        Some(v6) => v6.split(']').next().unwrap_or_default(),
        None => host.rsplit_once(':').map_or(host, |(name, _port)| name),
    };
    if name.eq_ignore_ascii_case("localhost") || name.parse::<std::net::IpAddr>().is_ok() {
        Ok(())
    } else {
        Err("the internal listener answers only requests addressed to an IP address or localhost (Host header)")
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
        self.route_public(req).await
    }
}

/// The internal listener: ticks and insertAll through the [`App`], the live dashboard, the rest
/// through the [`Admin`].
pub struct Internal {
    pub app: Arc<App>,
    pub admin: Arc<Admin>,
    pub dashboard: Arc<crate::dashboard::Dashboard>,
}

impl Routes for Internal {
    async fn call(self: Arc<Self>, req: Request<Incoming>) -> Response<Body> {
        let header = |name| req.headers().get(name).and_then(|v: &http::HeaderValue| v.to_str().ok());
        let (host, mut origin) = (header(header::HOST), header(header::ORIGIN));
        // The dashboard's own page may read the dashboard's data (a same-origin read; nothing else).
        let reads_dashboard =
            matches!(*req.method(), Method::GET | Method::HEAD) && req.uri().path().starts_with("/dashboard");
        if reads_dashboard
            && origin.is_some()
            && host.is_some()
            && origin == host.map(|h| format!("http://{h}")).as_deref()
        {
            origin = None;
        }
        if let Err(reason) = internal_request_allowed(host, origin) {
            return text(StatusCode::FORBIDDEN, format!("{reason}\n"));
        }
        if let Some(resp) = self.dashboard.route(req.method(), req.uri().path(), req.headers()).await {
            return resp;
        }
        match self.app.route_internal(req).await {
            Ok(resp) => resp,
            Err(req) => Arc::clone(&self.admin).call(req).await,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_internal_listener_answers_ip_and_localhost_hosts_and_no_web_page() {
        for ok in [
            None,
            Some("127.0.0.1:3001"),
            Some("localhost:3001"),
            Some("LOCALHOST"),
            Some("[::1]:3001"),
            Some("10.0.0.5"),
        ] {
            assert_eq!(internal_request_allowed(ok, None), Ok(()), "{ok:?}");
        }
        for bad in [Some("evil.example:3001"), Some("evil.example"), Some("localhost.evil.example")] {
            assert!(internal_request_allowed(bad, None).is_err(), "{bad:?}");
        }
        assert!(internal_request_allowed(Some("127.0.0.1:3001"), Some("http://127.0.0.1:3001")).is_err());
        assert!(internal_request_allowed(Some("127.0.0.1:3001"), Some("null")).is_err());
    }

    #[test]
    fn insert_all_takes_json_only() {
        let mut h = http::HeaderMap::new();
        assert!(!is_json(&h));
        h.insert(header::CONTENT_TYPE, "application/x-www-form-urlencoded".parse().expect("value"));
        assert!(!is_json(&h), "a browser form post");
        h.insert(header::CONTENT_TYPE, "Application/JSON; charset=utf-8".parse().expect("value"));
        assert!(is_json(&h));
    }
}
