//! Fixed 1-minute windows of all events (seed §3.1 `FixedWindows(60)` → `streaming_metrics`, per minute
//! and `event_type`; seed §3.2 `Count.Globally` → `realtime_dashboard`, per minute).
//!
//! All minute state is one value under [`KEY`], so counting an event, closing minutes and queueing
//! their rows happen in one atomic update:
//! - `open`: the minutes still accepting events: the digests of their message ids (a redelivery counts
//!   once), users and sessions, overall and per event type (exact distinct counts);
//! - `pending`: rows of closed minutes not yet confirmed written (an outbox).
//!
//! A minute closes when event time (the latest seen) has moved `lateness` past its end
//! (`closed_by = watermark`), or, when no event arrived for `idle_close` of processing time, at the
//! next tick (`closed_by = timer`). An event for a closed minute is late (metric), never counted twice.
//! Minutes without events have no rows.
//!
//! Bounds: at most [`MAX_OPEN_MINUTES`] open minutes (beyond, the oldest closes with
//! `closed_by = limit`); event time at most a minute plus `lateness` ahead of processing time. The value
//! grows with the distinct ids of the open minutes (about 20 bytes per event as JSON), so the state
//! store's `max_value_bytes` caps events per `lateness` window; over it, events are dead-lettered
//! with reason `state-limit`.

use std::collections::{BTreeMap, BTreeSet};

use serde::{Deserialize, Serialize};
use serde_json::json;
use state_update::digest;
use tributary_model::Row;

use crate::sessions::{Closer, Observed, rfc3339};
use crate::settings::Settings;

/// The state key of the minute windows.
pub const KEY: &str = "minutes";
/// Per minute and event type.
pub const METRICS_TABLE: &str = "streaming_metrics";
/// Per minute.
pub const DASHBOARD_TABLE: &str = "realtime_dashboard";
/// Open minutes, at most.
pub const MAX_OPEN_MINUTES: usize = 240;

const MINUTE_MS: i64 = 60_000;

/// One event, as the minute windows need it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Event {
    pub id: String,
    pub time_ms: i64,
    pub user: Option<String>,
    pub session: Option<String>,
    pub event_type: String,
}

#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
struct Counts {
    events: u64,
    users: BTreeSet<u64>,
    sessions: BTreeSet<u64>,
}

impl Counts {
    fn add(&mut self, user: Option<u64>, session: Option<u64>) {
        self.events += 1;
        self.users.extend(user);
        self.sessions.extend(session);
    }
}

#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
struct Minute {
    ids: BTreeSet<u64>,
    all: Counts,
    by_type: BTreeMap<String, Counts>,
}

/// The minute windows (see the module docs).
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct Minutes {
    max_event_ms: Option<i64>,
    last_arrival_ms: i64,
    /// Minutes at or before this one are closed.
    closed_through: Option<i64>,
    open: BTreeMap<i64, Minute>,
    pub pending: Vec<Row>,
}

impl Minutes {
    /// Counts `event` (arrived at processing time `now_ms`).
    pub fn observe(&mut self, event: &Event, now_ms: i64, settings: &Settings) -> Observed {
        self.last_arrival_ms = self.last_arrival_ms.max(now_ms);
        if event.time_ms > now_ms + settings.lateness_ms + MINUTE_MS {
            return Observed::Future;
        }
        let minute = event.time_ms.div_euclid(MINUTE_MS) * MINUTE_MS;
        if self.closed_through.is_some_and(|closed| minute <= closed) {
            return Observed::Late;
        }
        let acc = self.open.entry(minute).or_default();
        if !acc.ids.insert(digest(&event.id)) {
            return Observed::Duplicate;
        }
        let (user, session) = (event.user.as_deref().map(digest), event.session.as_deref().map(digest));
        acc.all.add(user, session);
        acc.by_type.entry(event.event_type.clone()).or_default().add(user, session);
        self.max_event_ms = Some(self.max_event_ms.map_or(event.time_ms, |m| m.max(event.time_ms)));
        Observed::Counted
    }

    /// Closes the minutes due at processing time `now_ms`, queueing their rows. `timer`: called by a
    /// tick, which also closes everything once no event arrived for `idle_close`. Returns how many closed.
    pub fn close_due(&mut self, now_ms: i64, timer: bool, settings: &Settings) -> usize {
        let idle = timer && now_ms - self.last_arrival_ms >= settings.idle_close_ms;
        let watermark = self.max_event_ms.map(|m| m - settings.lateness_ms);
        let mut due: Vec<(i64, Closer)> = self
            .open
            .keys()
            .filter_map(|&m| {
                if watermark.is_some_and(|w| m + MINUTE_MS <= w) {
                    Some((m, Closer::Watermark))
                } else {
                    idle.then_some((m, Closer::Timer))
                }
            })
            .collect();
        let beyond = self.open.len().saturating_sub(due.len()).saturating_sub(MAX_OPEN_MINUTES);
        let oldest: Vec<i64> =
            self.open.keys().copied().filter(|m| !due.iter().any(|(d, _)| d == m)).take(beyond).collect();
        due.extend(oldest.into_iter().map(|m| (m, Closer::Limit)));
        due.sort_by_key(|(m, _)| *m);
        for &(minute, closer) in &due {
            let acc = self.open.remove(&minute).unwrap_or_default();
            self.close_minute(minute, acc, closer, now_ms);
        }
        due.len()
    }

    fn close_minute(&mut self, minute: i64, acc: Minute, closer: Closer, now_ms: i64) {
        let (start, end, closed_at) = (rfc3339(minute), rfc3339(minute + MINUTE_MS), rfc3339(now_ms));
        for (event_type, c) in &acc.by_type {
            let row = json!({
                "window_start": start,
                "window_end": end,
                "event_type": event_type,
                "events_count": c.events,
                "unique_users": c.users.len(),
                "unique_sessions": c.sessions.len(),
                "closed_by": closer.label(),
                "closed_at": closed_at,
            });
            self.pending.push(Row {
                table: METRICS_TABLE.into(),
                insert_id: format!("metrics:{minute}:{event_type}"),
                json: row.to_string(),
            });
        }
        let row = json!({
            "window_start": start,
            "window_end": end,
            "events_count": acc.all.events,
            "unique_users": acc.all.users.len(),
            "unique_sessions": acc.all.sessions.len(),
            "closed_by": closer.label(),
            "closed_at": closed_at,
        });
        self.pending.push(Row {
            table: DASHBOARD_TABLE.into(),
            insert_id: format!("dashboard:{minute}"),
            json: row.to_string(),
        });
        self.closed_through = Some(self.closed_through.map_or(minute, |c| c.max(minute)));
    }

    /// Drops the pending rows that were written.
    pub fn confirm(&mut self, written: &[String]) -> bool {
        let before = self.pending.len();
        self.pending.retain(|r| !written.contains(&r.insert_id));
        self.pending.len() != before
    }
}

#[cfg(test)]
mod tests {
    use serde_json::Value;

    use super::*;

    const T0: i64 = 1_700_000_000_000 / MINUTE_MS * MINUTE_MS;

    fn ev(id: usize, minute: i64, kind: &str, user: usize, session: usize) -> Event {
        Event {
            id: format!("m{id}"),
            time_ms: T0 + minute * MINUTE_MS + 5_000,
            user: Some(format!("u{user}")),
            session: Some(format!("s{session}")),
            event_type: kind.into(),
        }
    }

    fn rows(m: &Minutes, table: &str) -> Vec<Value> {
        m.pending.iter().filter(|r| r.table == table).map(|r| serde_json::from_str(&r.json).expect("json")).collect()
    }

    #[test]
    fn per_minute_and_per_type_counts_close_on_the_watermark() {
        let s = Settings { lateness_ms: MINUTE_MS, ..Settings::default() };
        let now = T0 + 100 * MINUTE_MS;
        let mut m = Minutes::default();
        assert_eq!(m.observe(&ev(1, 0, "page_view", 1, 1), now, &s), Observed::Counted);
        assert_eq!(m.observe(&ev(1, 0, "page_view", 1, 1), now, &s), Observed::Duplicate);
        m.observe(&ev(2, 0, "page_view", 2, 2), now, &s);
        m.observe(&ev(3, 0, "click", 1, 1), now, &s);
        m.observe(&ev(4, 1, "click", 3, 3), now, &s);
        assert_eq!(m.close_due(now, false, &s), 0, "minute 0 waits for the lateness");
        m.observe(&ev(5, 2, "click", 3, 3), now, &s);
        assert_eq!(m.close_due(now, false, &s), 1);
        let metrics = rows(&m, METRICS_TABLE);
        assert_eq!(metrics.len(), 2);
        assert_eq!((metrics[0]["event_type"].as_str(), metrics[0]["events_count"].as_u64()), (Some("click"), Some(1)));
        assert_eq!(
            (
                metrics[1]["events_count"].as_u64(),
                metrics[1]["unique_users"].as_u64(),
                metrics[1]["unique_sessions"].as_u64()
            ),
            (Some(2), Some(2), Some(2))
        );
        let dash = rows(&m, DASHBOARD_TABLE);
        assert_eq!((dash[0]["events_count"].as_u64(), dash[0]["unique_users"].as_u64()), (Some(3), Some(2)));
        assert_eq!(dash[0]["window_start"], rfc3339(T0));
        assert_eq!(dash[0]["closed_by"], "watermark");
        assert_eq!(m.observe(&ev(6, 0, "click", 9, 9), now, &s), Observed::Late);
        assert_eq!(m.observe(&ev(7, 500, "click", 9, 9), now, &s), Observed::Future);
    }

    #[test]
    fn an_idle_stream_closes_on_a_tick_and_open_minutes_are_bounded() {
        let s = Settings::default();
        let mut m = Minutes::default();
        let arrival = T0 + 10 * MINUTE_MS;
        m.observe(&ev(1, 9, "page_view", 1, 1), arrival, &s);
        assert_eq!(m.close_due(arrival + 1_000, true, &s), 0);
        assert_eq!(m.close_due(arrival + s.idle_close_ms, true, &s), 1);
        assert_eq!(rows(&m, DASHBOARD_TABLE)[0]["closed_by"], "timer");
        let ids: Vec<String> = m.pending.iter().map(|r| r.insert_id.clone()).collect();
        assert!(m.confirm(&ids) && m.pending.is_empty());

        // A replay in reverse order never moves the watermark past anything: the limit closes the oldest.
        let lenient = Settings { lateness_ms: 10_000 * MINUTE_MS, ..Settings::default() };
        let mut m = Minutes::default();
        let now = T0 + 1_000 * MINUTE_MS;
        for i in 0..(MAX_OPEN_MINUTES + 5) {
            m.observe(&ev(i, 999 - i as i64, "click", 1, 1), now, &lenient);
        }
        assert_eq!(m.close_due(now, false, &lenient), 5);
        assert!(rows(&m, DASHBOARD_TABLE).iter().all(|r| r["closed_by"] == "limit"));
        let back: Minutes = serde_json::from_str(&serde_json::to_string(&m).expect("ser")).expect("de");
        assert_eq!(back, m);
    }
}
