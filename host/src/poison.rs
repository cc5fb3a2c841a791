//! Poison messages end: when a function itself fails on a push (a trap, a deadline, memory exhaustion)
//! the push is answered 500 so Pub/Sub redelivers it, since the failure may be the host's (a crash, an
//! overloaded machine). After `guest.max_failed_deliveries` failed deliveries of one message, the host
//! stores it in `dead_letter` (stage `guest`, the reason, the payload) and acks it, so it never loops.
//!
//! Deliveries are counted with Pub/Sub's `deliveryAttempt` when the envelope carries it (subscriptions
//! with a dead-letter policy), otherwise per route and message id in the state store (so counts survive
//! restarts; each count expires after Pub/Sub's longest retention, 7 days).

use std::sync::Arc;

use bytes::Bytes;
use function_kit::dead_letter::{self, Failure};
use function_kit::envelope::{self, PushRequest};
use tributary_model::Message;

use crate::group_commit::GroupCommit;
use crate::state::StateStore;

/// Pub/Sub keeps a message at most 7 days: a count older than that is of no use.
const COUNT_TTL_MS: u64 = 7 * 24 * 3_600_000;
/// The reason text kept in the dead letter.
const MAX_REASON_CHARS: usize = 2_000;

/// What to answer a push the function failed on.
#[derive(Debug, PartialEq, Eq)]
pub enum Verdict {
    /// Fail it (500): Pub/Sub redelivers. `attempt` is the deliveries that failed so far.
    Redeliver { attempt: u32 },
    /// Stored in `dead_letter` after `attempt` failed deliveries: ack it.
    DeadLettered { attempt: u32 },
    /// The count or the dead letter could not be written: fail it, Pub/Sub redelivers.
    Unavailable(String),
}

/// Counts failed deliveries and dead-letters the messages that keep failing.
pub struct Poison {
    pub store: Arc<dyn StateStore>,
    pub sink: GroupCommit,
    pub max_failed_deliveries: u32,
}

impl Poison {
    /// Judges a push `route` the function failed on with `error`.
    pub async fn failed(&self, route: &str, headers: &http::HeaderMap, body: &Bytes, error: &str) -> Verdict {
        let req = PushRequest {
            headers: headers
                .iter()
                .filter_map(|(k, v)| Some((k.as_str().to_owned(), v.to_str().ok()?.to_owned())))
                .collect(),
            body: body.to_vec(),
        };
        let msg = envelope::decode(&req).unwrap_or_else(|_| Message {
            id: envelope::fallback_id(&req),
            data: req.body.clone(),
            ..Message::default()
        });
        let attempt = match msg.delivery_attempt {
            Some(n) => n,
            None => match self.count(route, &envelope::attempt_key(&req)).await {
                Ok(n) => n,
                Err(e) => return Verdict::Unavailable(e),
            },
        };
        if attempt < self.max_failed_deliveries {
            return Verdict::Redeliver { attempt };
        }
        let reason: String = error.chars().take(MAX_REASON_CHARS).collect();
        let failure = Failure {
            reason: "guest-failed".into(),
            message: format!("the function failed on this message {attempt} times; last: {reason}"),
            stage: "guest",
        };
        let row = dead_letter::row(&msg, &failure, chrono::Utc::now());
        match self.sink.write(vec![row]).await {
            Ok(refused) if refused.is_empty() => Verdict::DeadLettered { attempt },
            Ok(refused) => Verdict::Unavailable(format!("the dead letter was refused: {}", refused[0].message)),
            Err(e) => Verdict::Unavailable(e.to_string()),
        }
    }

    /// Adds one to the failed deliveries of `id` on `route`; returns the new count.
    async fn count(&self, route: &str, id: &str) -> Result<u32, String> {
        let key = format!("host/failed-deliveries{route}/{}", envelope::body_digest(id.as_bytes()));
        for _ in 0..16 {
            let entry = self.store.get(&key).await.map_err(|e| e.to_string())?;
            let (version, n) = match &entry {
                Some(e) => {
                    (e.version, std::str::from_utf8(&e.value).ok().and_then(|s| s.parse::<u32>().ok()).unwrap_or(0))
                }
                None => (0, 0),
            };
            let next = n.saturating_add(1);
            let written = self
                .store
                .compare_and_swap(&key, version, next.to_string().into_bytes(), Some(COUNT_TTL_MS))
                .await
                .map_err(|e| e.to_string())?;
            if written.is_some() {
                return Ok(next);
            }
        }
        Err(format!("counting the failed deliveries of {id}: too much contention"))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::metrics::Metrics;
    use crate::state::StateConfig;
    use crate::warehouse::duckdb::DuckDb;

    fn wrapped(id: &str, attempt: Option<u32>) -> Bytes {
        let mut env = serde_json::json!({"message": {"data": "dHJhcA==", "messageId": id}, "subscription": "s"});
        if let Some(n) = attempt {
            env["deliveryAttempt"] = n.into();
        }
        Bytes::from(env.to_string())
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn failed_deliveries_are_counted_per_message_then_dead_lettered() {
        let dir = std::env::temp_dir().join(format!("tributary-poison-{}", std::process::id()));
        std::fs::create_dir_all(&dir).expect("dir");
        let store = crate::state::open(&StateConfig::default(), &dir).await.expect("state");
        let warehouse = DuckDb::in_memory().expect("warehouse");
        let (sink, flusher) = GroupCommit::start(Box::new(warehouse), Default::default(), Metrics::new());
        let poison = Poison { store, sink: sink.clone(), max_failed_deliveries: 3 };
        let headers = http::HeaderMap::new();
        let judge = |body: Bytes, route: &'static str| {
            let (poison, headers) = (&poison, &headers);
            async move { poison.failed(route, headers, &body, "wasm trap: unreachable").await }
        };
        assert_eq!(judge(wrapped("m1", None), "/push/events").await, Verdict::Redeliver { attempt: 1 });
        assert_eq!(judge(wrapped("m1", None), "/push/events").await, Verdict::Redeliver { attempt: 2 });
        assert_eq!(judge(wrapped("m2", None), "/push/events").await, Verdict::Redeliver { attempt: 1 }, "per message");
        assert_eq!(judge(wrapped("m1", None), "/push/anomaly").await, Verdict::Redeliver { attempt: 1 }, "per route");
        assert_eq!(judge(wrapped("m1", None), "/push/events").await, Verdict::DeadLettered { attempt: 3 });
        // Pub/Sub's own count wins; an undecodable body is counted by its digest.
        assert_eq!(judge(wrapped("m3", Some(4)), "/push/events").await, Verdict::DeadLettered { attempt: 4 });
        assert_eq!(judge(wrapped("m4", Some(1)), "/push/events").await, Verdict::Redeliver { attempt: 1 });
        let garbage = Bytes::from_static(b"{not json");
        assert_eq!(judge(garbage.clone(), "/push/events").await, Verdict::Redeliver { attempt: 1 });
        assert_eq!(judge(garbage, "/push/events").await, Verdict::Redeliver { attempt: 2 });
        sink.close();
        let _ = tokio::task::spawn_blocking(move || flusher.join()).await;
        let _ = std::fs::remove_dir_all(&dir);
    }
}
