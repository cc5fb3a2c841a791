//! The HTTP prologue every function runs before its logic (wasm only): POST only, the route, the
//! settings (read once per instance), lower-case headers and the whole body; and the [`Reply`] as the
//! HTTP answer.

use spin_sdk::http::body::IncomingBodyExt as _;
use spin_sdk::http::{HeaderValue, Method, Request, Response, StatusCode};

use crate::contract::{Outcome, Reply};
use crate::envelope::PushRequest;

/// Serves one request: `route` picks the handler from the path (`None`: 404), `settings` yields the
/// function's settings (an error is a 500: the messages wait in Pub/Sub until the settings are fixed),
/// `run` does the work.
pub async fn serve<R, S: ?Sized + 'static>(
    req: Request,
    route: impl FnOnce(&str) -> Option<R>,
    settings: impl FnOnce() -> Result<&'static S, String>,
    run: impl AsyncFnOnce(R, PushRequest, &'static S) -> Reply,
) -> Response<String> {
    if req.method() != Method::POST {
        return text(StatusCode::METHOD_NOT_ALLOWED, "function routes take POST".to_owned());
    }
    let Some(route) = route(req.uri().path()) else {
        return text(StatusCode::NOT_FOUND, format!("no such route: {}", req.uri().path()));
    };
    let settings = match settings() {
        Ok(s) => s,
        Err(e) => return answer(Outcome::Misconfigured(e).into()),
    };
    let headers = req
        .headers()
        .iter()
        .filter_map(|(k, v)| Some((k.as_str().to_ascii_lowercase(), v.to_str().ok()?.to_owned())))
        .collect();
    let body = match req.into_body().bytes().await {
        Ok(b) => b.to_vec(),
        // The body did not arrive whole: nothing was decided, let Pub/Sub redeliver.
        Err(e) => return text(StatusCode::SERVICE_UNAVAILABLE, format!("reading the push body failed: {e:?}")),
    };
    answer(run(route, PushRequest { headers, body }, settings).await)
}

/// The HTTP answer of a [`Reply`].
pub fn answer(reply: Reply) -> Response<String> {
    let status = StatusCode::from_u16(reply.status()).unwrap_or(StatusCode::INTERNAL_SERVER_ERROR);
    let mut resp = text(status, reply.outcome.body());
    if let Some(skip) = reply.skipped {
        resp.headers_mut().insert("x-tributary-window-skip", HeaderValue::from_static(skip));
    }
    resp
}

/// A plain-text answer.
pub fn text(status: StatusCode, body: String) -> Response<String> {
    let mut resp = Response::new(body);
    *resp.status_mut() = status;
    resp
}
