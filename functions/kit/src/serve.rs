//! The prologue every function runs before its logic, whatever carried the request: POST only, the
//! route, the settings (read once per instance), then the body; and the [`Reply`] as an [`Answer`].
//! Two transports share it: `wasi:http` ([`crate::http`], for Spin and `wasmtime serve`) and the
//! `direct-handler` export the Tributary host calls ([`ready`] runs the function's future there).
//! Pure: compiled and tested natively.

use std::cell::Cell;
use std::future::Future;
use std::pin::pin;
use std::task::{Context, Poll, Waker};

use tributary_model::{Message, Rejection, Row};

use crate::contract::{Outcome, Reply};
use crate::envelope::PushRequest;

thread_local! {
    /// Whether the request being served may run the built-in transform in place of the `transform`
    /// import. A component instance serves one request at a time on one thread, so this is per request.
    static BUILTIN_TRANSFORM: Cell<bool> = const { Cell::new(false) };
}

/// Runs `f` (one request) with the built-in transform standing in for the `transform` import when `on`:
/// the direct call's `builtin-transform`, which the caller sets only when its import is exactly that
/// transform with no step in front. The `wasi:http` transport never sets it (there the composition
/// decides what the import is).
pub fn with_builtin_transform<T>(on: bool, f: impl FnOnce() -> T) -> T {
    let before = BUILTIN_TRANSFORM.replace(on);
    let out = f();
    BUILTIN_TRANSFORM.set(before);
    out
}

/// The built-in transform for this request, if it may stand in for the import: `import_glue!`'s
/// `Transformer` runs it instead of calling the import.
pub fn builtin_transform(msg: &Message) -> Option<Result<Vec<Row>, Rejection>> {
    BUILTIN_TRANSFORM.get().then(|| normalize::normalize(msg, chrono::Utc::now()))
}

/// A function's answer, whatever carries it back: status, plain-text body, and the window-skip
/// reason (`x-tributary-window-skip` over HTTP).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Answer {
    pub status: u16,
    pub body: String,
    pub window_skip: Option<&'static str>,
}

impl Answer {
    /// A plain answer with no window skip.
    pub fn text(status: u16, body: impl Into<String>) -> Self {
        Answer { status, body: body.into(), window_skip: None }
    }
}

impl From<Reply> for Answer {
    fn from(reply: Reply) -> Self {
        Answer { status: reply.status(), body: reply.outcome.body(), window_skip: reply.skipped }
    }
}

/// Serves one request: `route` picks the handler from the path (`None`: 404), `settings` yields the
/// function's settings (an error is a 500: the messages wait in Pub/Sub until the settings are fixed),
/// `body` reads the body (an error is a 503: nothing was decided, Pub/Sub redelivers), `run` does the
/// work. `headers` must have lower-case names.
pub async fn serve<R, S: ?Sized + 'static>(
    method: &str,
    path: &str,
    headers: Vec<(String, String)>,
    body: impl AsyncFnOnce() -> Result<Vec<u8>, String>,
    route: impl FnOnce(&str) -> Option<R>,
    settings: impl FnOnce() -> Result<&'static S, String>,
    run: impl AsyncFnOnce(R, PushRequest, &'static S) -> Reply,
) -> Answer {
    if method != "POST" {
        return Answer::text(405, "function routes take POST");
    }
    let Some(route) = route(path) else {
        return Answer::text(404, format!("no such route: {path}"));
    };
    let settings = match settings() {
        Ok(s) => s,
        Err(e) => return Reply::from(Outcome::Misconfigured(e)).into(),
    };
    let body = match body().await {
        Ok(b) => b,
        Err(e) => return Answer::text(503, format!("reading the push body failed: {e}")),
    };
    run(route, PushRequest { headers, body }, settings).await.into()
}

/// Runs a future that must complete without waiting: a function's work under the direct call, where
/// every import is synchronous (the host blocks the instance, not the future). `None` if it would
/// wait: a function that awaits real I/O (outbound HTTP) cannot be served by a direct call.
pub fn ready<T>(fut: impl Future<Output = T>) -> Option<T> {
    match pin!(fut).poll(&mut Context::from_waker(Waker::noop())) {
        Poll::Ready(value) => Some(value),
        Poll::Pending => None,
    }
}

/// [`ready`], or the 500 a function answers when its work would have waited under a direct call.
pub fn ready_answer(fut: impl Future<Output = Answer>) -> Answer {
    ready(fut).unwrap_or_else(|| Answer::text(500, "the function waited for I/O inside a direct call"))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn call(method: &str, path: &str, settings: Result<&'static str, String>, body: Result<Vec<u8>, String>) -> Answer {
        ready_answer(serve(
            method,
            path,
            vec![("x-a".into(), "1".into())],
            async || body,
            |p| (p == "/push/x").then_some(7),
            || settings,
            async |route, push, settings: &'static str| {
                assert_eq!((route, push.header("x-a"), settings), (7, Some("1"), "s"));
                assert_eq!(push.body, b"b");
                Reply { outcome: Outcome::Done, skipped: Some("late") }
            },
        ))
    }

    #[test]
    fn method_route_settings_and_body_are_checked_in_that_order() {
        assert_eq!(call("GET", "/nope", Err("x".into()), Err("y".into())).status, 405);
        assert_eq!(call("POST", "/nope", Err("x".into()), Err("y".into())).status, 404);
        let bad = call("POST", "/push/x", Err("x".into()), Err("y".into()));
        assert_eq!(bad.status, 500);
        assert!(bad.body.contains('x'), "{bad:?}");
        let unread = call("POST", "/push/x", Ok("s"), Err("cut".into()));
        assert_eq!((unread.status, unread.body.as_str()), (503, "reading the push body failed: cut"));
        assert_eq!(
            call("POST", "/push/x", Ok("s"), Ok(b"b".to_vec())),
            Answer { status: 204, body: String::new(), window_skip: Some("late") }
        );
    }

    #[test]
    fn the_builtin_transform_stands_in_only_inside_its_request() {
        let msg = Message {
            id: "1".into(),
            data: br#"{"user_id":"u","event_type":"view","timestamp":"2024-01-01 10:00:00"}"#.to_vec(),
            ..Message::default()
        };
        assert!(builtin_transform(&msg).is_none());
        let rows = with_builtin_transform(true, || builtin_transform(&msg));
        let rows = rows.expect("on inside").expect("valid event");
        let expected = normalize::normalize(&msg, chrono::Utc::now()).expect("same code");
        let key = |rows: &[Row]| rows.iter().map(|r| (r.table.clone(), r.insert_id.clone())).collect::<Vec<_>>();
        assert_eq!(key(&rows), key(&expected));
        assert!(rows[0].json.contains(r#""user_id":"u""#), "{rows:?}");
        assert!(with_builtin_transform(false, || builtin_transform(&msg)).is_none());
        assert!(builtin_transform(&msg).is_none(), "off again after the request");
    }

    #[test]
    fn a_future_that_would_wait_is_a_500_not_a_hang() {
        assert_eq!(ready(async { 5 }), Some(5));
        assert_eq!(ready(std::future::pending::<u8>()), None);
        assert_eq!(ready_answer(std::future::pending()).status, 500);
    }
}
