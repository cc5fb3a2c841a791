//! The `wasi:http` transport of [`crate::serve`] (wasm only), for Spin and `wasmtime serve`: lower-case
//! headers and the streamed body in, the [`Answer`] as the HTTP response.

use spin_sdk::http::body::IncomingBodyExt as _;
use spin_sdk::http::{HeaderValue, Request, Response, StatusCode};

use crate::contract::Reply;
use crate::serve::Answer;

/// Serves one request through [`crate::serve::serve`].
pub async fn serve<R, S: ?Sized + 'static>(
    req: Request,
    route: impl FnOnce(&str) -> Option<R>,
    settings: impl FnOnce() -> Result<&'static S, String>,
    run: impl AsyncFnOnce(R, crate::envelope::PushRequest, &'static S) -> Reply,
) -> Response<String> {
    let method = req.method().as_str().to_owned();
    let path = req.uri().path().to_owned();
    let headers = req
        .headers()
        .iter()
        .filter_map(|(k, v)| Some((k.as_str().to_ascii_lowercase(), v.to_str().ok()?.to_owned())))
        .collect();
    let body = async || req.into_body().bytes().await.map(|b| b.to_vec()).map_err(|e| format!("{e:?}"));
    respond(crate::serve::serve(&method, &path, headers, body, route, settings, run).await)
}

/// The HTTP response of an [`Answer`].
pub fn respond(answer: Answer) -> Response<String> {
    let mut resp = Response::new(answer.body);
    *resp.status_mut() = StatusCode::from_u16(answer.status).unwrap_or(StatusCode::INTERNAL_SERVER_ERROR);
    if let Some(skip) = answer.window_skip {
        resp.headers_mut().insert("x-tributary-window-skip", HeaderValue::from_static(skip));
    }
    resp
}
