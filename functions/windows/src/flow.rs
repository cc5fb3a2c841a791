//! One request, start to finish, for each route of the function:
//!
//! - `POST /push/sessions`: decode → transform → the event joins (or merges) its user's sessions;
//!   close what is due; write the closed sessions' rows → 204;
//! - `POST /push/metrics`: decode → transform → the event is counted in its minute; close due minutes;
//!   write their rows → 204;
//! - `POST /push/sessions/tick`, `POST /push/metrics/tick`: the timer contract (the host's timer, or
//!   any scheduler). They close what a quiet stream leaves open and rewrite rows still pending.
//!
//! The acknowledgement contract is `function_kit::contract`'s: a bad message is dead-lettered, then
//! acked; a state or sink failure answers 503 (429 when the sink is overloaded) so Pub/Sub redelivers;
//! every state step is idempotent per message id, so a redelivery never counts twice. Rows of closed
//! windows wait in the state (an outbox) until written, with deterministic insert ids.

use chrono::{DateTime, Utc};
use function_kit::contract::{self, Outcome, Reply, Sink, Transformer};
use function_kit::dead_letter::Failure;
use function_kit::envelope::PushRequest;
use function_kit::routes::{self, Route as Path};
use serde_json::Value;
use state_update::{self as store, Change, State};
use tributary_model::{Message, Row, tables};

use crate::minutes::{self, Minutes};
use crate::sessions::{self, Observed, UserSessions};
use crate::settings::Settings;

/// What a request needs: the imports, the settings and the processing time.
pub struct Env<'a, T, S, St> {
    pub transform: &'a T,
    pub sink: &'a S,
    pub state: &'a St,
    pub settings: &'a Settings,
    pub now: DateTime<Utc>,
}

/// Which route a request came in on.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Route {
    Sessions,
    Metrics,
    SessionsTick,
    MetricsTick,
}

/// The function's routes (the host's registry serves exactly these).
pub const ROUTES: &[(Path, Route)] = &[
    (routes::push("/push/sessions"), Route::Sessions),
    (routes::push("/push/metrics"), Route::Metrics),
    (routes::tick("/push/sessions/tick"), Route::SessionsTick),
    (routes::tick("/push/metrics/tick"), Route::MetricsTick),
];

/// A user's sessions expire two days after their last update (longer than any lateness worth
/// waiting for; a redelivery after that would start a new session).
const SESSION_TTL_MS: u64 = 2 * 24 * 3600 * 1000;
/// Users visited per sessions tick, at most.
const SCAN_LIMIT: u32 = 10_000;

/// Handles one request on `route`.
pub async fn handle<T: Transformer, S: Sink, St: State>(
    route: Route,
    req: &PushRequest,
    env: &Env<'_, T, S, St>,
) -> Reply {
    let result = match route {
        Route::SessionsTick => return tick_sessions(env).await.map_or_else(Reply::from, Reply::from),
        Route::MetricsTick => return tick_minutes(env).await.map_or_else(Reply::from, Reply::from),
        Route::Sessions | Route::Metrics => {
            match contract::decode_and_transform(req, env.transform, env.sink, env.now).await {
                Ok((msg, rows)) => count(route, &msg, &rows, env).await,
                Err(outcome) => Err(outcome),
            }
        }
    };
    contract::dead_letter_state_refusal(result.unwrap_or_else(Reply::from), req, env.sink, env.now).await
}

/// The fields of the transform's event row the windows use.
struct Fields {
    time_ms: i64,
    user: Option<String>,
    session: Option<String>,
    event_type: String,
    page: Option<String>,
}

fn fields(row: &Row) -> Result<Fields, String> {
    let Ok(Value::Object(f)) = serde_json::from_str::<Value>(&row.json) else {
        return Err("the transform's event row is not a JSON object".into());
    };
    let text = |name: &str| f.get(name).and_then(Value::as_str).filter(|s| !s.is_empty()).map(str::to_owned);
    let time_ms = text("timestamp")
        .and_then(|t| DateTime::parse_from_rfc3339(&t).ok())
        .map(|t| t.timestamp_millis())
        .ok_or("the transform's event row has no RFC 3339 'timestamp'")?;
    Ok(Fields {
        time_ms,
        user: text("user_id"),
        session: text("session_id"),
        event_type: text("event_type").ok_or("the transform's event row has no 'event_type'")?,
        page: text("page_url"),
    })
}

async fn count<T: Transformer, S: Sink, St: State>(
    route: Route,
    msg: &Message,
    rows: &[Row],
    env: &Env<'_, T, S, St>,
) -> Result<Reply, Outcome> {
    let Some(row) = rows.iter().find(|r| r.table == tables::STREAMING_EVENTS) else {
        // Nothing windowable (a user transform may route some messages elsewhere).
        return Ok(Outcome::Done.into());
    };
    let f = match fields(row) {
        Ok(f) => f,
        Err(why) => {
            let failure = Failure { reason: "bad-row".into(), message: why, stage: "analyze" };
            return Ok(contract::dead_letter(msg, failure, env.sink, env.now).await.into());
        }
    };
    let now_ms = env.now.timestamp_millis();
    let s = env.settings;
    let (key, observed, pending) = match route {
        Route::Sessions => {
            // An anonymous event belongs to no user's session.
            let Some(user) = f.user else { return Ok(Outcome::Done.into()) };
            let event = sessions::Event {
                id: msg.id.clone(),
                time_ms: f.time_ms,
                user,
                event_type: f.event_type,
                page: f.page,
            };
            let key = sessions::key(&event.user);
            let (observed, pending) =
                store::update(env.state, &key, Some(SESSION_TTL_MS), |u: Option<UserSessions>| {
                    let mut u = u.unwrap_or_default();
                    let observed = u.observe(&event, now_ms, s);
                    let closed = u.close_due(now_ms, false, s);
                    let pending = u.pending.clone();
                    let change =
                        if observed == Observed::Counted || closed > 0 { Change::Put(u) } else { Change::Keep };
                    (change, (observed, pending))
                })?;
            (key, observed, pending)
        }
        _ => {
            let event = minutes::Event {
                id: msg.id.clone(),
                time_ms: f.time_ms,
                user: f.user,
                session: f.session,
                event_type: f.event_type,
            };
            let (observed, pending) = store::update(env.state, minutes::KEY, None, |m: Option<Minutes>| {
                let mut m = m.unwrap_or_default();
                let observed = m.observe(&event, now_ms, s);
                let closed = m.close_due(now_ms, false, s);
                let pending = m.pending.clone();
                let change = if observed == Observed::Counted || closed > 0 { Change::Put(m) } else { Change::Keep };
                (change, (observed, pending))
            })?;
            (minutes::KEY.to_owned(), observed, pending)
        }
    };
    flush(&key, pending, env).await?;
    Ok(Reply { outcome: Outcome::Done, skipped: observed.skipped() })
}

async fn tick_sessions<T: Transformer, S: Sink, St: State>(env: &Env<'_, T, S, St>) -> Result<Outcome, Outcome> {
    let now_ms = env.now.timestamp_millis();
    for key in env.state.scan("session/", SCAN_LIMIT)? {
        let pending = store::update(env.state, &key, Some(SESSION_TTL_MS), |u: Option<UserSessions>| match u {
            None => (Change::Keep, Vec::new()),
            Some(mut u) => {
                let closed = u.close_due(now_ms, true, env.settings);
                let pending = u.pending.clone();
                (if closed > 0 { Change::Put(u) } else { Change::Keep }, pending)
            }
        })?;
        flush(&key, pending, env).await?;
    }
    Ok(Outcome::Done)
}

async fn tick_minutes<T: Transformer, S: Sink, St: State>(env: &Env<'_, T, S, St>) -> Result<Outcome, Outcome> {
    let now_ms = env.now.timestamp_millis();
    let pending = store::update(env.state, minutes::KEY, None, |m: Option<Minutes>| match m {
        None => (Change::Keep, Vec::new()),
        Some(mut m) => {
            let closed = m.close_due(now_ms, true, env.settings);
            let pending = m.pending.clone();
            (if closed > 0 { Change::Put(m) } else { Change::Keep }, pending)
        }
    })?;
    flush(minutes::KEY, pending, env).await?;
    Ok(Outcome::Done)
}

/// Writes the outbox rows of `key` and, once durable, drops them from its state. A refusal of one is a
/// bug in this function's rows, not in any message: it is logged and dropped from the outbox, so it
/// cannot block later rows forever.
async fn flush<T, S: Sink, St: State>(key: &str, pending: Vec<Row>, env: &Env<'_, T, S, St>) -> Result<(), Outcome> {
    if pending.is_empty() {
        return Ok(());
    }
    let written: Vec<String> = pending.iter().map(|r| r.insert_id.clone()).collect();
    for e in env.sink.write(pending).await? {
        eprintln!("windows: the warehouse refused computed row {}: {}", written[e.index as usize], e.message);
    }
    if key == minutes::KEY {
        store::update(env.state, key, None, |m: Option<Minutes>| {
            let Some(mut m) = m else { return (Change::Keep, ()) };
            if m.confirm(&written) { (Change::Put(m), ()) } else { (Change::Keep, ()) }
        })?;
    } else {
        store::update(env.state, key, Some(SESSION_TTL_MS), |u: Option<UserSessions>| {
            let Some(mut u) = u else { return (Change::Keep, ()) };
            if u.confirm(&written) { (Change::Put(u), ()) } else { (Change::Keep, ()) }
        })?;
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use function_kit::testing::{Passthrough, Recorder, block_on, unwrapped as push_of};
    use state_update::memory::MemoryState;

    use super::*;

    fn env<'a>(
        sink: &'a Recorder,
        state: &'a MemoryState,
        settings: &'a Settings,
        now: DateTime<Utc>,
    ) -> Env<'a, Passthrough, Recorder, MemoryState> {
        Env { transform: &Passthrough, sink, state, settings, now }
    }

    fn event(id: &str, user: &str, t: &str) -> PushRequest {
        push_of(id, &format!(r#"{{"user_id":"{user}","event_type":"page_view","timestamp":"{t}","page_url":"/"}}"#))
    }

    #[test]
    fn sessions_survive_a_sink_outage_and_redeliveries_count_once() {
        let (sink, state) = (Recorder::default(), MemoryState::default());
        let settings = Settings { lateness_ms: 0, gap_ms: 60_000, ..Settings::default() };
        let now = DateTime::parse_from_rfc3339("2026-01-01T01:00:00Z").expect("t").to_utc();
        let e = env(&sink, &state, &settings, now);
        assert_eq!(block_on(handle(Route::Sessions, &event("1", "u", "2026-01-01T00:00:00Z"), &e)).status(), 204);
        assert_eq!(block_on(handle(Route::Sessions, &event("1", "u", "2026-01-01T00:00:00Z"), &e)).status(), 204);
        sink.down.set(true);
        // Two minutes later the first session closes; its row cannot be written: 503, row stays pending.
        assert_eq!(block_on(handle(Route::Sessions, &event("2", "u", "2026-01-01T00:02:00Z"), &e)).status(), 503);
        sink.down.set(false);
        assert_eq!(block_on(handle(Route::Sessions, &event("2", "u", "2026-01-01T00:02:00Z"), &e)).status(), 204);
        let rows = sink.writes.borrow().clone();
        assert_eq!(rows.len(), 1);
        let row: Value = serde_json::from_str(&rows[0].json).expect("json");
        assert_eq!((row["user_id"].as_str(), row["events_count"].as_u64()), (Some("u"), Some(1)));
        // Late: the closed session's range.
        assert_eq!(
            block_on(handle(Route::Sessions, &event("3", "u", "2026-01-01T00:00:10Z"), &e)).skipped,
            Some("late")
        );
        // The tick closes the idle second session once processing time passed its gap.
        let later = now + chrono::Duration::minutes(5);
        let tick =
            block_on(handle(Route::SessionsTick, &PushRequest::default(), &env(&sink, &state, &settings, later)));
        assert_eq!(tick.status(), 204);
        assert_eq!(sink.writes.borrow().len(), 2);
    }

    #[test]
    fn minutes_and_bad_events() {
        let (sink, state) = (Recorder::default(), MemoryState::default());
        let settings = Settings { lateness_ms: 0, ..Settings::default() };
        let now = DateTime::parse_from_rfc3339("2026-01-01T01:00:00Z").expect("t").to_utc();
        let e = env(&sink, &state, &settings, now);
        assert_eq!(block_on(handle(Route::Metrics, &event("1", "a", "2026-01-01T00:00:01Z"), &e)).status(), 204);
        assert_eq!(block_on(handle(Route::Metrics, &event("2", "b", "2026-01-01T00:00:02Z"), &e)).status(), 204);
        assert_eq!(block_on(handle(Route::Metrics, &event("3", "a", "2026-01-01T00:01:30Z"), &e)).status(), 204);
        let tables: Vec<String> = sink.writes.borrow().iter().map(|r| r.table.clone()).collect();
        assert_eq!(tables, vec![minutes::METRICS_TABLE, minutes::DASHBOARD_TABLE]);
        let dash: Value = serde_json::from_str(&sink.writes.borrow()[1].json).expect("json");
        assert_eq!((dash["events_count"].as_u64(), dash["unique_users"].as_u64()), (Some(2), Some(2)));
        assert_eq!(block_on(handle(Route::Metrics, &push_of("x", "not json"), &e)).status(), 200);
        assert_eq!(block_on(handle(Route::Sessions, &push_of("y", r#"{"user_id":"u"}"#), &e)).status(), 200);
        state.down.set(true);
        assert_eq!(block_on(handle(Route::Metrics, &event("4", "a", "2026-01-01T00:01:40Z"), &e)).status(), 503);
    }
}
