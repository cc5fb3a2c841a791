//! The prologue every function runs before its logic, whatever carried the request: POST only, the
//! route, the settings (read once per instance), then the body; and the [`Reply`] as an [`Answer`].
//! Two transports share it: `wasi:http` ([`crate::http`], for Spin and `wasmtime serve`) and the
//! `direct-handler` export the Tributary host calls ([`ready`] runs the function's future there).
//! Pure: compiled and tested natively.

use std::future::Future;
use std::pin::pin;
use std::task::{Context, Poll, Waker};

use crate::contract::{Outcome, Reply};
use crate::envelope::PushRequest;

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
    fn a_future_that_would_wait_is_a_500_not_a_hang() {
        assert_eq!(ready(async { 5 }), Some(5));
        assert_eq!(ready(std::future::pending::<u8>()), None);
        assert_eq!(ready_answer(std::future::pending()).status, 500);
    }
}
