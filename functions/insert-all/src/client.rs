//! Sends [`crate::request`]s with `wasi:http/outgoing-handler` (wasm32 only).

use tributary_model::{Row, RowError, WriteError};
use wasip2::http::outgoing_handler;
use wasip2::http::types::{Fields, Method, OutgoingBody, OutgoingRequest, RequestOptions, Scheme};

use crate::{Auth, Target, request};

/// Writes (or upserts) `rows` at `target`: the refused rows, by index into `rows`, or why nothing of
/// the call is known to be written (then the caller fails the push so Pub/Sub redelivers it).
pub fn send(target: &Target, rows: &[Row], upsert: bool) -> Result<Vec<RowError>, WriteError> {
    let auth = authorization(&target.auth).map_err(WriteError::Unavailable)?;
    let mut refused = Vec::new();
    for request in request::requests(rows, upsert) {
        let url = format!("{}/tables/{}/insertAll", target.dataset_url.trim_end_matches('/'), request.table);
        let mut headers = vec![("content-type", "application/json".to_owned())];
        if let Some(a) = &auth {
            headers.push(("authorization", a.clone()));
        }
        let body = serde_json::to_vec(&request.body).map_err(|e| WriteError::Unavailable(e.to_string()))?;
        let (status, answer) = exchange(Method::Post, &url, &headers, Some(&body))
            .map_err(|e| WriteError::Unavailable(format!("{url}: {e}")))?;
        refused.extend(request::verdict(&request, status, &answer)?);
    }
    refused.sort_by_key(|e| e.index);
    Ok(refused)
}

/// The `Authorization` header value, if any.
fn authorization(auth: &Auth) -> Result<Option<String>, String> {
    match auth {
        Auth::None => Ok(None),
        Auth::Bearer(token) => Ok(Some(format!("Bearer {token}"))),
        Auth::Metadata => {
            let url = "http://metadata.google.internal/computeMetadata/v1/instance/service-accounts/default/token";
            let (status, body) = exchange(Method::Get, url, &[("metadata-flavor", "Google".to_owned())], None)?;
            if status != 200 {
                return Err(format!("the metadata server answered {status}"));
            }
            let v: serde_json::Value = serde_json::from_slice(&body).map_err(|e| format!("metadata token: {e}"))?;
            let token = v["access_token"].as_str().ok_or("metadata token: no access_token")?;
            Ok(Some(format!("Bearer {token}")))
        }
    }
}

/// One HTTP exchange: (status, body), or why there is none.
fn exchange(
    method: Method,
    url: &str,
    headers: &[(&str, String)],
    body: Option<&[u8]>,
) -> Result<(u16, Vec<u8>), String> {
    let (scheme, rest) = url.split_once("://").ok_or_else(|| format!("not a URL: {url}"))?;
    let (authority, path) = rest.find('/').map_or((rest, "/"), |i| (&rest[..i], &rest[i..]));
    let fields = Fields::new();
    for (k, v) in headers {
        fields.append(k, v.as_bytes()).map_err(|e| format!("header {k}: {e:?}"))?;
    }
    let request = OutgoingRequest::new(fields);
    request.set_method(&method).map_err(|()| "method".to_owned())?;
    let scheme = if scheme.eq_ignore_ascii_case("https") { Scheme::Https } else { Scheme::Http };
    request.set_scheme(Some(&scheme)).map_err(|()| "scheme".to_owned())?;
    request.set_authority(Some(authority)).map_err(|()| "authority".to_owned())?;
    request.set_path_with_query(Some(path)).map_err(|()| "path".to_owned())?;
    let options = RequestOptions::new();
    // Timeouts in ns: a stuck backend fails the write (503) well inside the push deadline.
    let _ = options.set_connect_timeout(Some(2_000_000_000));
    let _ = options.set_first_byte_timeout(Some(6_000_000_000));
    let outgoing = request.body().map_err(|()| "request body".to_owned())?;
    let future = outgoing_handler::handle(request, Some(options)).map_err(|e| format!("{e:?}"))?;
    if let Some(bytes) = body {
        let stream = outgoing.write().map_err(|()| "body stream".to_owned())?;
        for chunk in bytes.chunks(4096) {
            stream.blocking_write_and_flush(chunk).map_err(|e| format!("writing the body: {e:?}"))?;
        }
        drop(stream);
    }
    OutgoingBody::finish(outgoing, None).map_err(|e| format!("{e:?}"))?;
    future.subscribe().block();
    let response = future
        .get()
        .ok_or("no response")?
        .map_err(|()| "response taken twice".to_owned())?
        .map_err(|e| format!("{e:?}"))?;
    let status = response.status();
    let incoming = response.consume().map_err(|()| "response body".to_owned())?;
    let stream = incoming.stream().map_err(|()| "response stream".to_owned())?;
    let mut out = Vec::new();
    loop {
        match stream.blocking_read(64 * 1024) {
            Ok(chunk) => out.extend_from_slice(&chunk),
            Err(wasip2::io::streams::StreamError::Closed) => break,
            Err(e) => return Err(format!("reading the answer: {e:?}")),
        }
    }
    Ok((status, out))
}
