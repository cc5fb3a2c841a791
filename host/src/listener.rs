//! Serving HTTP/1 on a listener, shared by the function and admin listeners: the [`Routes`] a listener
//! answers with, [`serve`] with graceful shutdown, one boxed body type and a plain-text answer.

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
use tokio::net::TcpListener;
use tokio::sync::watch;

pub type BoxError = Box<dyn std::error::Error + Send + Sync>;
pub type Body = UnsyncBoxBody<Bytes, BoxError>;

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
