//! Serving HTTP/1 on a listener, shared by the public and internal listeners: the [`Routes`] a listener
//! answers with, [`serve`] with graceful shutdown and the `[http]` bounds (connections, header-read
//! timeout), [`read_body`] (size, time and a shared memory budget, chunked bodies included), one boxed
//! body type and a plain-text answer.

use std::convert::Infallible;
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use http::{Request, Response, StatusCode};
use http_body_util::combinators::UnsyncBoxBody;
use http_body_util::{BodyExt, Full};
use hyper::body::Incoming;
use hyper::server::conn::http1;
use hyper_util::rt::TokioIo;
use hyper_util::server::graceful::GracefulShutdown;
use serde::Deserialize;
use tokio::net::TcpListener;
use tokio::sync::{OwnedSemaphorePermit, Semaphore, watch};

pub type BoxError = Box<dyn std::error::Error + Send + Sync>;
pub type Body = UnsyncBoxBody<Bytes, BoxError>;

/// `[http]`: what bounds every connection and request on both listeners.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct HttpConfig {
    /// Open connections per listener; beyond, new connections wait in the kernel's accept queue.
    pub max_connections: usize,
    /// A request's headers must arrive within this (slow or half-sent headers close the connection),
    /// in ms.
    pub header_read_timeout_ms: u64,
    /// A request's body must arrive within this, in ms; a slower one is answered 408.
    pub body_read_timeout_ms: u64,
    /// Request bodies held in memory at once, over all requests, in MiB: beyond, 429.
    pub max_buffered_mib: usize,
}

impl Default for HttpConfig {
    fn default() -> Self {
        Self {
            max_connections: 1024,
            header_read_timeout_ms: 5_000,
            body_read_timeout_ms: 10_000,
            max_buffered_mib: 512,
        }
    }
}

impl HttpConfig {
    pub fn validate(&self) -> Result<(), String> {
        if self.max_connections == 0 || self.header_read_timeout_ms == 0 || self.body_read_timeout_ms == 0 {
            return Err(
                "http.max_connections, http.header_read_timeout_ms and http.body_read_timeout_ms must be at least 1"
                    .into(),
            );
        }
        if self.max_buffered_mib == 0 {
            return Err("http.max_buffered_mib must be at least 1".into());
        }
        Ok(())
    }

    pub fn body_read_timeout(&self) -> Duration {
        Duration::from_millis(self.body_read_timeout_ms)
    }
}

/// The memory request bodies may hold at once (in KiB permits), shared by both listeners.
#[derive(Clone)]
pub struct BodyBudget(Arc<Semaphore>);

impl BodyBudget {
    pub fn new(mib: usize) -> Self {
        Self(Arc::new(Semaphore::new(mib.saturating_mul(1024).min(Semaphore::MAX_PERMITS))))
    }
}

/// Why a body was not read.
#[derive(Debug, thiserror::Error)]
pub enum BodyError {
    #[error("request bodies on this route are at most {0} bytes")]
    TooLarge(usize),
    #[error("the request body did not arrive within {0:?}")]
    Slow(Duration),
    #[error("too many request bodies in memory; retry later")]
    Overloaded,
    #[error("reading the request body: {0}")]
    Read(String),
}

impl BodyError {
    pub fn status(&self) -> StatusCode {
        match self {
            Self::TooLarge(_) => StatusCode::PAYLOAD_TOO_LARGE,
            Self::Slow(_) => StatusCode::REQUEST_TIMEOUT,
            Self::Overloaded => StatusCode::TOO_MANY_REQUESTS,
            Self::Read(_) => StatusCode::BAD_REQUEST,
        }
    }

    /// The plain-text answer.
    pub fn answer(&self) -> Response<Body> {
        text(self.status(), format!("{self}\n"))
    }
}

/// A body read whole, and its share of the memory budget (held while the request is served).
pub struct ReadBody {
    pub bytes: Bytes,
    _budget: OwnedSemaphorePermit,
}

/// Reads a request body of at most `limit` bytes within `timeout`, chunked or not: a declared length
/// over the limit is refused before a byte is read; a stream that goes over it is cut off there. The
/// memory is reserved from `budget` first (the declared length, or `limit` when none is declared).
pub async fn read_body(
    req: Request<Incoming>,
    limit: usize,
    timeout: Duration,
    budget: &BodyBudget,
) -> Result<(http::request::Parts, ReadBody), BodyError> {
    let (parts, body) = req.into_parts();
    let declared = parts.headers.get(http::header::CONTENT_LENGTH).and_then(|v| v.to_str().ok()?.parse::<u64>().ok());
    if declared.is_some_and(|n| n > limit as u64) {
        return Err(BodyError::TooLarge(limit));
    }
    let reserve = declared.map_or(limit, |n| n as usize).div_ceil(1024).max(1);
    let permits = u32::try_from(reserve).map_err(|_| BodyError::Overloaded)?;
    let permit = Arc::clone(&budget.0).try_acquire_many_owned(permits).map_err(|_| BodyError::Overloaded)?;
    let collected = tokio::time::timeout(timeout, http_body_util::Limited::new(body, limit).collect())
        .await
        .map_err(|_| BodyError::Slow(timeout))?;
    match collected {
        Ok(c) => Ok((parts, ReadBody { bytes: c.to_bytes(), _budget: permit })),
        Err(e) if e.downcast_ref::<http_body_util::LengthLimitError>().is_some() => Err(BodyError::TooLarge(limit)),
        Err(e) => Err(BodyError::Read(e.to_string())),
    }
}

/// A plain-text answer.
pub fn text(status: StatusCode, body: impl Into<Bytes>) -> Response<Body> {
    let mut resp = Response::new(Full::new(body.into()).map_err(|e: Infallible| match e {}).boxed_unsync());
    *resp.status_mut() = status;
    resp
}

/// A routing function for [`serve`].
pub trait Routes: Send + Sync + 'static {
    fn call(self: Arc<Self>, req: Request<Incoming>) -> impl Future<Output = Response<Body>> + Send;
}

/// Serves `routes` on `listener` until `stop` turns true, then waits up to `drain` for open
/// requests to finish. At most `http.max_connections` connections are open at once; headers must
/// arrive within `http.header_read_timeout_ms`.
pub async fn serve<R: Routes>(
    listener: TcpListener,
    routes: Arc<R>,
    mut stop: watch::Receiver<bool>,
    drain: Duration,
    http: HttpConfig,
) {
    let graceful = GracefulShutdown::new();
    let connections = Arc::new(Semaphore::new(http.max_connections));
    let header_timeout = Duration::from_millis(http.header_read_timeout_ms);
    loop {
        let slot = tokio::select! {
            s = Arc::clone(&connections).acquire_owned() => s,
            _ = stop.wait_for(|s| *s) => break,
        };
        let Ok(slot) = slot else { break };
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
        let conn = http1::Builder::new()
            .keep_alive(true)
            .timer(hyper_util::rt::TokioTimer::new())
            .header_read_timeout(header_timeout)
            .serve_connection(TokioIo::new(stream), service);
        let conn = graceful.watch(conn);
        tokio::spawn(async move {
            if let Err(e) = conn.await {
                tracing::debug!(error = %e, "connection ended with an error");
            }
            drop(slot);
        });
    }
    drop(listener);
    if tokio::time::timeout(drain, graceful.shutdown()).await.is_err() {
        tracing::warn!(?drain, "some requests were still open at shutdown");
    }
}
