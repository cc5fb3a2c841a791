//! One request, start to finish, for each route of the function:
//!
//! - `POST /push/anomaly`: decode → transform → count the event in its minute; close due minutes;
//!   write their rows → 204;
//! - `POST /push/sensors`: decode → transform (a `sensor_readings` row) → the sensor's verdict → the
//!   location's windows; write the reading (with `is_anomaly`), its anomaly row and closed windows → 204;
//! - `POST /push/anomaly/tick`, `POST /push/sensors/tick`: the timer contract. The host (or any
//!   scheduler: Spin's cron trigger, Cloud Scheduler) calls them periodically; they close what is due,
//!   also windows of a stream that went quiet, and rewrite rows still pending.
//!
//! The acknowledgement contract is `function_kit::contract`'s: a bad message is dead-lettered, then
//! acked; a state or sink failure answers 503 (429 when the sink is overloaded) so Pub/Sub redelivers,
//! and every state step is idempotent per message id, so a redelivery never counts twice.

use chrono::{DateTime, Utc};
use function_kit::contract::{self, Outcome, Reply, Sink, Transformer};
use function_kit::dead_letter::Failure;
use function_kit::envelope::PushRequest;
use function_kit::routes::{self, Route as Path};
use serde_json::Value;
use state_update::{self as store, Change, State};
use tributary_model::{Message, Row, tables};

use crate::sensors::{self, Location, Reading, Sensor, Windowed};
use crate::settings::Settings;
use crate::traffic::{self, Event, Observed, Traffic};

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
    Anomaly,
    Sensors,
    AnomalyTick,
    SensorsTick,
}

/// The function's routes (the host's registry serves exactly these).
pub const ROUTES: &[(Path, Route)] = &[
    (routes::push("/push/anomaly"), Route::Anomaly),
    (routes::push("/push/sensors"), Route::Sensors),
    (routes::tick("/push/anomaly/tick"), Route::AnomalyTick),
    (routes::tick("/push/sensors/tick"), Route::SensorsTick),
];

/// Handles one request on `route`.
pub async fn handle<T: Transformer, S: Sink, St: State>(
    route: Route,
    req: &PushRequest,
    env: &Env<'_, T, S, St>,
) -> Reply {
    let result = match route {
        Route::Anomaly => match contract::decode_and_transform(req, env.transform, env.sink, env.now).await {
            Ok((msg, rows)) => count_event(&msg, rows, env).await,
            Err(outcome) => Err(outcome),
        },
        Route::Sensors => match contract::decode_and_transform(req, env.transform, env.sink, env.now).await {
            Ok((msg, rows)) => analyze_reading(&msg, rows, env).await,
            Err(outcome) => Err(outcome),
        },
        Route::AnomalyTick => return tick_traffic(env).await.map_or_else(Reply::from, Reply::from),
        Route::SensorsTick => return tick_sensors(env).await.map_or_else(Reply::from, Reply::from),
    };
    contract::dead_letter_state_refusal(result.unwrap_or_else(Reply::from), req, env.sink, env.now).await
}

/// `/push/anomaly`: only the event's time, user and session matter; its row is the events route's job.
async fn count_event<T: Transformer, S: Sink, St: State>(
    msg: &Message,
    rows: Vec<Row>,
    env: &Env<'_, T, S, St>,
) -> Result<Reply, Outcome> {
    let Some(row) = rows.iter().find(|r| r.table == tables::STREAMING_EVENTS) else {
        // Nothing countable (a user transform may route some messages elsewhere): nothing to do.
        return Ok(Outcome::Done.into());
    };
    let event = match parse_event(msg, row) {
        Ok(e) => e,
        Err(why) => {
            let failure = Failure { reason: "bad-row".into(), message: why, stage: "analyze" };
            return Ok(contract::dead_letter(msg, failure, env.sink, env.now).await.into());
        }
    };
    let now_ms = env.now.timestamp_millis();
    let (observed, pending) = store::update(env.state, traffic::KEY, None, |t: Option<Traffic>| {
        let mut t = t.unwrap_or_default();
        let observed = t.observe(&event, now_ms, env.settings);
        let closed = t.close_due(now_ms, false, env.settings);
        let pending = t.pending.clone();
        let change = if observed == Observed::Counted || closed > 0 { Change::Put(t) } else { Change::Keep };
        (change, (observed, pending))
    })?;
    flush_traffic(pending, env).await?;
    Ok(Reply { outcome: Outcome::Done, skipped: observed.skipped() })
}

async fn tick_traffic<T: Transformer, S: Sink, St: State>(env: &Env<'_, T, S, St>) -> Result<Outcome, Outcome> {
    let now_ms = env.now.timestamp_millis();
    let pending = store::update(env.state, traffic::KEY, None, |t: Option<Traffic>| match t {
        None => (Change::Keep, Vec::new()),
        Some(mut t) => {
            let closed = t.close_due(now_ms, true, env.settings);
            let pending = t.pending.clone();
            (if closed > 0 { Change::Put(t) } else { Change::Keep }, pending)
        }
    })?;
    flush_traffic(pending, env).await?;
    Ok(Outcome::Done)
}

/// Writes the outbox rows and, once durable, drops them from the state.
async fn flush_traffic<T, S: Sink, St: State>(pending: Vec<Row>, env: &Env<'_, T, S, St>) -> Result<(), Outcome> {
    let written = write_outbox(pending, env).await?;
    if !written.is_empty() {
        store::update(env.state, traffic::KEY, None, |t: Option<Traffic>| {
            let mut t = t.unwrap_or_default();
            if t.confirm(&written) { (Change::Put(t), ()) } else { (Change::Keep, ()) }
        })?;
    }
    Ok(())
}

/// Writes rows the function computed itself. A refusal of one is a bug in this function's rows, not
/// in any message: it is logged and dropped from the outbox, so it cannot block later rows forever.
async fn write_outbox<T, S: Sink, St>(pending: Vec<Row>, env: &Env<'_, T, S, St>) -> Result<Vec<String>, Outcome> {
    if pending.is_empty() {
        return Ok(Vec::new());
    }
    let ids: Vec<String> = pending.iter().map(|r| r.insert_id.clone()).collect();
    let refused = env.sink.write(pending).await?;
    for e in &refused {
        eprintln!("anomaly-check: the warehouse refused computed row {}: {}", ids[e.index as usize], e.message);
    }
    Ok(ids)
}

/// `/push/sensors`.
async fn analyze_reading<T: Transformer, S: Sink, St: State>(
    msg: &Message,
    mut rows: Vec<Row>,
    env: &Env<'_, T, S, St>,
) -> Result<Reply, Outcome> {
    let Some(at) = rows.iter().position(|r| r.table == sensors::READINGS) else {
        return Ok(contract::write_message_rows(msg, rows, env.sink, env.now).await.into());
    };
    let (reading, mut fields) = match parse_reading(msg, &rows[at]) {
        Ok(r) => r,
        Err(why) => {
            let failure = Failure { reason: "bad-row".into(), message: why, stage: "analyze" };
            return Ok(contract::dead_letter(msg, failure, env.sink, env.now).await.into());
        }
    };
    let now_ms = env.now.timestamp_millis();
    let ttl = Some(STATE_TTL_MS);
    let (verdict, _) = store::update(env.state, &format!("sensor/{}", reading.sensor_id), ttl, |s: Option<Sensor>| {
        let mut s = s.unwrap_or_default();
        let (verdict, changed) = s.assess(&reading, env.settings);
        (if changed { Change::Put(s) } else { Change::Keep }, (verdict, changed))
    })?;
    let mut skipped = None;
    let window_key = format!("window/{}", reading.location);
    let mut pending = Vec::new();
    if verdict.is_none() {
        let (windowed, due) = store::update(env.state, &window_key, ttl, |l: Option<Location>| {
            let mut l = l.unwrap_or_default();
            let windowed = l.add(&reading, now_ms, env.settings);
            let closed = l.close_due(&reading.location, now_ms, false, env.settings);
            let pending = l.pending.clone();
            let change = if windowed == Windowed::Added || closed > 0 { Change::Put(l) } else { Change::Keep };
            (change, (windowed, pending))
        })?;
        skipped = (windowed == Windowed::Late).then_some("late");
        pending = due;
    }
    fields.insert("is_anomaly".into(), Value::Bool(verdict.is_some()));
    fields.insert("anomaly_reason".into(), verdict.as_ref().map_or(Value::Null, |a| Value::String(a.reason.clone())));
    rows[at].json = Value::Object(fields).to_string();
    if let Some(a) = &verdict {
        rows.push(sensors::anomaly_row(&reading, a, now_ms));
    }
    let outcome = contract::write_message_rows(msg, rows, env.sink, env.now).await;
    if outcome.acked() {
        // The reading (or its dead letter) is durable; the closed windows are written now or by the next call or tick.
        flush_location(&window_key, pending, env).await?;
    }
    Ok(Reply { outcome, skipped })
}

async fn tick_sensors<T: Transformer, S: Sink, St: State>(env: &Env<'_, T, S, St>) -> Result<Outcome, Outcome> {
    let now_ms = env.now.timestamp_millis();
    for key in env.state.scan("window/", SCAN_LIMIT)? {
        let location = key.trim_start_matches("window/").to_owned();
        let pending = store::update(env.state, &key, Some(STATE_TTL_MS), |l: Option<Location>| match l {
            None => (Change::Keep, Vec::new()),
            Some(mut l) => {
                let closed = l.close_due(&location, now_ms, true, env.settings);
                let pending = l.pending.clone();
                (if closed > 0 { Change::Put(l) } else { Change::Keep }, pending)
            }
        })?;
        flush_location(&key, pending, env).await?;
    }
    Ok(Outcome::Done)
}

async fn flush_location<T, S: Sink, St: State>(
    key: &str,
    pending: Vec<Row>,
    env: &Env<'_, T, S, St>,
) -> Result<(), Outcome> {
    let written = write_outbox(pending, env).await?;
    if !written.is_empty() {
        store::update(env.state, key, Some(STATE_TTL_MS), |l: Option<Location>| {
            let Some(mut l) = l else { return (Change::Keep, ()) };
            if l.confirm(&written) { (Change::Put(l), ()) } else { (Change::Keep, ()) }
        })?;
    }
    Ok(())
}

/// Sensor and location state expires a week after its last update (sensors and sites come and go).
const STATE_TTL_MS: u64 = 7 * 24 * 3600 * 1000;
/// Locations closed per tick.
const SCAN_LIMIT: u32 = 10_000;

fn object(row: &Row) -> Result<serde_json::Map<String, Value>, String> {
    match serde_json::from_str(&row.json) {
        Ok(Value::Object(fields)) => Ok(fields),
        _ => Err(format!("the transform's {} row is not a JSON object", row.table)),
    }
}

fn time_ms(fields: &serde_json::Map<String, Value>, table: &str) -> Result<i64, String> {
    fields
        .get("timestamp")
        .and_then(Value::as_str)
        .and_then(|t| DateTime::parse_from_rfc3339(t).ok())
        .map(|t| t.timestamp_millis())
        .ok_or_else(|| format!("the transform's {table} row has no RFC 3339 'timestamp'"))
}

fn text(fields: &serde_json::Map<String, Value>, name: &str) -> Option<String> {
    fields.get(name).and_then(Value::as_str).map(str::to_owned)
}

fn parse_event(msg: &Message, row: &Row) -> Result<Event, String> {
    let fields = object(row)?;
    Ok(Event {
        id: msg.id.clone(),
        time_ms: time_ms(&fields, &row.table)?,
        user: text(&fields, "user_id").unwrap_or_default(),
        session: text(&fields, "session_id"),
    })
}

fn parse_reading(msg: &Message, row: &Row) -> Result<(Reading, serde_json::Map<String, Value>), String> {
    let fields = object(row)?;
    let need = |name: &str| text(&fields, name).ok_or_else(|| format!("the sensor_readings row has no '{name}'"));
    let reading = Reading {
        id: msg.id.clone(),
        sensor_id: need("sensor_id")?,
        sensor_type: need("sensor_type")?,
        location: text(&fields, "location").unwrap_or_else(|| "unknown".into()),
        time_ms: time_ms(&fields, &row.table)?,
        value: fields
            .get("normalized_value")
            .and_then(Value::as_f64)
            .ok_or("the sensor_readings row has no numeric 'normalized_value'")?,
        out_of_range: fields.get("anomaly_reason").and_then(Value::as_str) == Some("out-of-range"),
    };
    Ok((reading, fields))
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

    #[test]
    fn traffic_rows_survive_a_sink_outage_and_redelivery_counts_once() {
        let (sink, state) = (Recorder::default(), MemoryState::default());
        let settings = Settings { lateness_ms: 0, ..Settings::default() };
        let now = DateTime::parse_from_rfc3339("2026-01-01T01:00:00Z").expect("t").to_utc();
        let e = env(&sink, &state, &settings, now);
        let ev = |id: &str, t: &str| push_of(id, &format!(r#"{{"user_id":"u","timestamp":"{t}"}}"#));
        assert_eq!(block_on(handle(Route::Anomaly, &ev("1", "2026-01-01T00:00:10Z"), &e)).status(), 204);
        assert_eq!(block_on(handle(Route::Anomaly, &ev("1", "2026-01-01T00:00:10Z"), &e)).status(), 204);
        sink.down.set(true);
        // Minute 0 closes, its row cannot be written: the push fails, the row stays pending.
        assert_eq!(block_on(handle(Route::Anomaly, &ev("2", "2026-01-01T00:01:10Z"), &e)).status(), 503);
        sink.down.set(false);
        // The redelivery is a duplicate for the counts, and flushes the pending row.
        assert_eq!(block_on(handle(Route::Anomaly, &ev("2", "2026-01-01T00:01:10Z"), &e)).status(), 204);
        let rows = sink.writes.borrow();
        assert_eq!(rows.len(), 1);
        let row: Value = serde_json::from_str(&rows[0].json).expect("json");
        assert_eq!(row["events_count"], 1);
        let t: Traffic = store::read(&state, traffic::KEY).expect("read").expect("state");
        assert!(t.pending.is_empty());
        // A late event is reported for the metric.
        assert_eq!(block_on(handle(Route::Anomaly, &ev("3", "2026-01-01T00:00:20Z"), &e)).skipped, Some("late"));
    }

    #[test]
    fn sensor_reading_gets_its_verdict_and_state_outage_fails_the_push() {
        let (sink, state) = (Recorder::default(), MemoryState::default());
        let settings = Settings { sensor_warmup: 3, ..Settings::default() };
        let now = DateTime::parse_from_rfc3339("2026-01-01T01:00:00Z").expect("t").to_utc();
        let e = env(&sink, &state, &settings, now);
        let reading = |id: &str, v: f64| {
            push_of(
                id,
                &format!(
                    r#"{{"sensor_id":"s","sensor_type":"temperature","location":"hall","timestamp":"2026-01-01T00:00:00Z","normalized_value":{v}}}"#
                ),
            )
        };
        for (i, v) in [20.0, 21.0, 20.5, 20.2].into_iter().enumerate() {
            assert_eq!(block_on(handle(Route::Sensors, &reading(&i.to_string(), v), &e)).status(), 204);
        }
        assert_eq!(block_on(handle(Route::Sensors, &reading("hot", 40.0), &e)).status(), 204);
        let rows = sink.writes.borrow().clone();
        assert_eq!(rows.iter().filter(|r| r.table == sensors::ANOMALIES).count(), 1);
        let hot: Value = serde_json::from_str(&rows[rows.len() - 2].json).expect("json");
        assert_eq!((hot["is_anomaly"].as_bool(), hot["anomaly_reason"].as_str()), (Some(true), Some("z-score")));
        state.down.set(true);
        assert_eq!(block_on(handle(Route::Sensors, &reading("9", 20.0), &e)).status(), 503);
        state.down.set(false);
        assert_eq!(block_on(handle(Route::Sensors, &reading("9", 20.0), &e)).status(), 204);
        // The tick closes the idle window.
        let later = now + chrono::Duration::milliseconds(settings.idle_close_ms);
        assert_eq!(
            block_on(handle(Route::SensorsTick, &PushRequest::default(), &env(&sink, &state, &settings, later)))
                .status(),
            204
        );
        let aggs: Vec<Value> = sink
            .writes
            .borrow()
            .iter()
            .filter(|r| r.table == sensors::AGGREGATES)
            .map(|r| serde_json::from_str(&r.json).expect("json"))
            .collect();
        assert_eq!(aggs.len(), 1);
        assert_eq!(aggs[0]["readings_count"], 5, "four warm-up readings and the retried one");
    }

    #[test]
    fn bad_messages_are_dead_lettered() {
        let (sink, state) = (Recorder::default(), MemoryState::default());
        let settings = Settings::default();
        let e = env(&sink, &state, &settings, Utc::now());
        assert_eq!(block_on(handle(Route::Sensors, &push_of("x", "not json"), &e)).status(), 200);
        assert_eq!(block_on(handle(Route::Anomaly, &push_of("y", r#"{"user_id":"u"}"#), &e)).status(), 200);
        let tables: Vec<String> = sink.writes.borrow().iter().map(|r| r.table.clone()).collect();
        assert_eq!(tables, vec!["dead_letter", "dead_letter"]);
    }
}
