//! Retries with backoff (`backon`) until a deadline shared by a whole flush: past it, the flush fails
//! and its pushes are answered 503 so Pub/Sub redelivers them.

use std::future::Future;
use std::time::Duration;

use backon::{ExponentialBuilder, Retryable as _};
use tokio::time::Instant;

use super::error::BigQueryError;

fn backoff() -> ExponentialBuilder {
    ExponentialBuilder::default()
        .with_min_delay(Duration::from_millis(100))
        .with_max_delay(Duration::from_secs(2))
        .with_jitter()
        .without_max_times()
}

/// When a flush's retries must end, and the budget it was given (for the error message).
#[derive(Debug, Clone, Copy)]
pub struct Deadline {
    at: Instant,
    budget_ms: u64,
}

impl Deadline {
    /// `budget` from now.
    pub fn after(budget: Duration) -> Self {
        Self { at: Instant::now() + budget, budget_ms: u64::try_from(budget.as_millis()).unwrap_or(u64::MAX) }
    }

    pub fn passed(&self) -> bool {
        Instant::now() >= self.at
    }

    /// The error of a flush that ran out of time; `last` is what failed last.
    pub fn expired(&self, last: impl Into<String>) -> BigQueryError {
        BigQueryError::Deadline { deadline_ms: self.budget_ms, last: last.into() }
    }
}

/// Runs `call` until it succeeds, fails permanently, or `deadline` passes; `on_retry` sees every
/// transient failure (metrics).
pub async fn until<T, F, Fut>(
    deadline: Deadline,
    call: F,
    mut on_retry: impl FnMut(&BigQueryError),
) -> Result<T, BigQueryError>
where
    F: FnMut() -> Fut,
    Fut: Future<Output = Result<T, BigQueryError>>,
{
    let last = std::sync::Mutex::new(String::from("none"));
    let attempt = call.retry(backoff()).sleep(tokio::time::sleep).when(|e: &BigQueryError| e.is_transient()).notify(
        |e: &BigQueryError, after: Duration| {
            tracing::warn!(error = %e, retry_in_ms = after.as_millis() as u64, "BigQuery call failed; retrying");
            if let Ok(mut l) = last.lock() {
                *l = e.to_string();
            }
            on_retry(e);
        },
    );
    match tokio::time::timeout_at(deadline.at, attempt).await {
        Ok(result) => result,
        Err(_) => Err(deadline.expired(last.lock().map(|l| l.clone()).unwrap_or_default())),
    }
}

#[cfg(test)]
mod tests {
    use std::sync::atomic::{AtomicU32, Ordering};

    use super::*;

    fn unavailable() -> BigQueryError {
        BigQueryError::Api { what: "insertAll".into(), status: 503, message: "backend error".into() }
    }

    #[tokio::test]
    async fn transient_errors_are_retried_and_permanent_ones_are_not() {
        let calls = AtomicU32::new(0);
        let deadline = Deadline::after(Duration::from_secs(5));
        let mut retries = 0;
        let ok = until(
            deadline,
            || async { if calls.fetch_add(1, Ordering::SeqCst) < 2 { Err(unavailable()) } else { Ok(7) } },
            |_| retries += 1,
        )
        .await;
        assert_eq!(ok.expect("third call succeeds"), 7);
        assert_eq!(retries, 2);

        let calls = AtomicU32::new(0);
        let err = until(
            deadline,
            || async {
                calls.fetch_add(1, Ordering::SeqCst);
                Err::<(), _>(BigQueryError::Api { what: "x".into(), status: 400, message: "bad".into() })
            },
            |_| {},
        )
        .await;
        assert!(matches!(err, Err(BigQueryError::Api { status: 400, .. })));
        assert_eq!(calls.load(Ordering::SeqCst), 1);
    }

    #[tokio::test]
    async fn the_deadline_ends_retries_with_the_last_error() {
        let deadline = Deadline::after(Duration::from_millis(300));
        let err = until(deadline, || async { Err::<(), _>(unavailable()) }, |_| {}).await;
        let err = err.expect_err("never succeeds");
        assert!(
            err.to_string().contains("within the retry deadline (300 ms)") && err.to_string().contains("backend error"),
            "{err}"
        );
    }
}
