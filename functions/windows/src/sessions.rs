//! Session windows per user (seed §3.2 `Sessions(gap=30 min)` → `user_sessions`), with Beam's merging
//! semantics: an event opens the window `[t, t + gap)`; windows that overlap are one session, so an
//! event that falls between two open sessions of a user merges them. Arrival order does not matter.
//!
//! One state value per user (key [`key`]) holds, so that counting, merging and closing happen in one
//! atomic update:
//! - `open`: the user's open sessions (disjoint, by start), each with the digests of its message ids
//!   (a redelivery counts once), its distinct event types and its [`MAX_PAGES`] first-viewed pages;
//! - `closed`: the ranges of recently closed sessions, so an event for one of them is recognized as late
//!   (counted in a metric, never a second row);
//! - `pending`: rows of closed sessions not yet confirmed written (an outbox: rewritten until confirmed;
//!   their insert ids make a rewrite harmless).
//!
//! The user's event time is the user's clock: a session closes when the latest event time seen for
//! the user has moved `lateness` past `session_end + gap` (`closed_by = watermark`). A user's stream
//! that stops is closed by a timer tick once the user had no event for `idle_close` of processing time
//! and processing time is past `session_end + gap` (`closed_by = timer`): a live session is never cut
//! while its gap is still open. A global watermark would need one state key every push writes.
//!
//! Bounds: at most [`MAX_OPEN`] open sessions per user (beyond, the oldest is closed with
//! `closed_by = limit`), at most [`MAX_EVENTS`] events per session (then it is closed with
//! `closed_by = limit`, and the user's next event starts a new session), [`MAX_CLOSED`] remembered
//! closed ranges. An event is late when its own window would already have closed, or when it falls
//! into a closed session.

use std::collections::{BTreeMap, BTreeSet};

use chrono::{DateTime, SecondsFormat, Utc};
use serde::{Deserialize, Serialize};
use serde_json::json;
use state_update::digest;
use tributary_model::Row;

use crate::settings::Settings;

/// The table closed sessions go to.
pub const TABLE: &str = "user_sessions";
/// Open sessions per user, at most.
pub const MAX_OPEN: usize = 16;
/// Events per session, at most.
pub const MAX_EVENTS: usize = 5_000;
/// Distinct pages listed per session, at most (the count of events is not capped by it).
pub const MAX_PAGES: usize = 50;
/// Closed session ranges remembered per user, at most.
pub const MAX_CLOSED: usize = 16;
/// How far event time may run ahead of processing time.
const FUTURE_MS: i64 = 60_000;

/// The state key of a user's sessions (a digest, so any user id fits the store's key limit).
pub fn key(user: &str) -> String {
    format!("session/{:016x}", digest(user))
}

/// One event, as sessions need it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Event {
    /// The message id (dedup key).
    pub id: String,
    /// Event time, ms since the epoch.
    pub time_ms: i64,
    pub user: String,
    pub event_type: String,
    pub page: Option<String>,
}

/// What happened to an event.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Observed {
    Counted,
    /// Already counted (a redelivery).
    Duplicate,
    /// Its session had closed already: not counted, reported in a metric.
    Late,
    /// Event time too far ahead of processing time: not counted, so one bad clock cannot close a
    /// user's open sessions.
    Future,
}

impl Observed {
    /// The metric label for events that were not counted.
    pub fn skipped(self) -> Option<&'static str> {
        match self {
            Observed::Late => Some("late"),
            Observed::Future => Some("future"),
            Observed::Counted | Observed::Duplicate => None,
        }
    }
}

/// Why a session closed (`closed_by`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Closer {
    Watermark,
    Timer,
    /// A bound of the state ([`MAX_OPEN`], [`MAX_EVENTS`]).
    Limit,
}

impl Closer {
    pub fn label(self) -> &'static str {
        match self {
            Closer::Watermark => "watermark",
            Closer::Timer => "timer",
            Closer::Limit => "limit",
        }
    }
}

#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
struct Open {
    start_ms: i64,
    end_ms: i64,
    ids: BTreeSet<u64>,
    types: BTreeSet<String>,
    /// Page → the event time it was first viewed: the [`MAX_PAGES`] earliest first views.
    pages: BTreeMap<String, i64>,
}

impl Open {
    fn touches(&self, t: i64, gap: i64) -> bool {
        self.start_ms - gap < t && t < self.end_ms + gap
    }

    fn absorb(&mut self, other: Open) {
        self.start_ms = self.start_ms.min(other.start_ms);
        self.end_ms = self.end_ms.max(other.end_ms);
        self.ids.extend(other.ids);
        self.types.extend(other.types);
        for (page, t) in other.pages {
            self.add_page(page, t);
        }
    }

    /// Keeps the earliest first view of each page, and only the [`MAX_PAGES`] earliest pages: a page
    /// dropped for an earlier one can only come back with a still earlier view, so the list is exact.
    fn add_page(&mut self, page: String, t: i64) {
        if let Some(first) = self.pages.get_mut(&page) {
            *first = (*first).min(t);
            return;
        }
        if self.pages.len() >= MAX_PAGES {
            let Some((latest, latest_t)) = self.pages.iter().max_by_key(|(p, t)| (**t, (*p).clone())) else { return };
            if (t, &page) >= (*latest_t, latest) {
                return;
            }
            let latest = latest.clone();
            self.pages.remove(&latest);
        }
        self.pages.insert(page, t);
    }

    /// The pages in order of first view.
    fn page_list(&self) -> Vec<&str> {
        let mut pages: Vec<(&i64, &String)> = self.pages.iter().map(|(p, t)| (t, p)).collect();
        pages.sort();
        pages.into_iter().map(|(_, p)| p.as_str()).collect()
    }
}

/// A user's sessions (see the module docs).
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct UserSessions {
    user: String,
    open: Vec<Open>,
    closed: Vec<(i64, i64)>,
    max_event_ms: Option<i64>,
    last_arrival_ms: i64,
    pub pending: Vec<Row>,
}

impl UserSessions {
    /// Counts `event` (arrived at processing time `now_ms`).
    pub fn observe(&mut self, event: &Event, now_ms: i64, settings: &Settings) -> Observed {
        let (t, gap) = (event.time_ms, settings.gap_ms);
        self.last_arrival_ms = self.last_arrival_ms.max(now_ms);
        if self.user.is_empty() {
            self.user.clone_from(&event.user);
        }
        if t > now_ms + settings.lateness_ms + FUTURE_MS {
            return Observed::Future;
        }
        let id = digest(&event.id);
        if self.open.iter().any(|o| o.ids.contains(&id)) {
            return Observed::Duplicate;
        }
        let own_window_closed = self.max_event_ms.is_some_and(|w| t + gap + settings.lateness_ms <= w);
        if own_window_closed || self.closed.iter().any(|&(start, end)| start - gap < t && t < end + gap) {
            return Observed::Late;
        }
        let mut merged = Open { start_ms: t, end_ms: t, ..Open::default() };
        merged.ids.insert(id);
        merged.types.insert(event.event_type.clone());
        if let Some(page) = &event.page {
            merged.add_page(page.clone(), t);
        }
        let (touching, mut rest): (Vec<Open>, Vec<Open>) =
            std::mem::take(&mut self.open).into_iter().partition(|o| o.touches(t, gap));
        for o in touching {
            merged.absorb(o);
        }
        rest.push(merged);
        rest.sort_by_key(|o| o.start_ms);
        self.open = rest;
        self.max_event_ms = Some(self.max_event_ms.map_or(t, |m| m.max(t)));
        Observed::Counted
    }

    /// Closes the sessions that are due at processing time `now_ms` and queues their rows in
    /// `pending`. `timer`: called by a tick. Returns how many sessions closed.
    pub fn close_due(&mut self, now_ms: i64, timer: bool, settings: &Settings) -> usize {
        let gap = settings.gap_ms;
        let watermark = self.max_event_ms.map(|m| m - settings.lateness_ms);
        let idle = timer && now_ms - self.last_arrival_ms >= settings.idle_close_ms;
        let mut keep = Vec::with_capacity(self.open.len());
        let mut closed = 0;
        for o in std::mem::take(&mut self.open) {
            let closer = if watermark.is_some_and(|w| o.end_ms + gap <= w) {
                Some(Closer::Watermark)
            } else if idle && now_ms >= o.end_ms + gap {
                Some(Closer::Timer)
            } else if o.ids.len() >= MAX_EVENTS {
                Some(Closer::Limit)
            } else {
                None
            };
            match closer {
                Some(closer) => {
                    self.close(o, closer, now_ms);
                    closed += 1;
                }
                None => keep.push(o),
            }
        }
        while keep.len() > MAX_OPEN {
            let oldest = keep.remove(0);
            self.close(oldest, Closer::Limit, now_ms);
            closed += 1;
        }
        self.open = keep;
        // A counted event is later than `max_event − gap − lateness`: ranges that no such event can
        // touch are forgotten.
        if let Some(max) = self.max_event_ms {
            self.closed.retain(|&(_, end)| end + gap > max - gap - settings.lateness_ms);
        }
        if self.closed.len() > MAX_CLOSED {
            self.closed.sort_by_key(|&(_, end)| end);
            let excess = self.closed.len() - MAX_CLOSED;
            self.closed.drain(..excess);
        }
        closed
    }

    fn close(&mut self, o: Open, closer: Closer, now_ms: i64) {
        let duration_seconds = (o.end_ms - o.start_ms) as f64 / 1000.0;
        let row = json!({
            "user_id": self.user,
            "session_start": rfc3339(o.start_ms),
            "session_end": rfc3339(o.end_ms),
            "events_count": o.ids.len(),
            "event_types": o.types.len(),
            "pages": o.page_list(),
            "duration_seconds": duration_seconds,
            "closed_by": closer.label(),
            "closed_at": rfc3339(now_ms),
        });
        self.pending.push(Row {
            table: TABLE.into(),
            insert_id: format!("session:{:016x}:{}:{}", digest(&self.user), o.start_ms, o.end_ms),
            json: row.to_string(),
        });
        // A session split by a limit is not "closed" for later events: they start the next session.
        if closer != Closer::Limit {
            self.closed.push((o.start_ms, o.end_ms));
        }
    }

    /// Drops the pending rows that were written.
    pub fn confirm(&mut self, written: &[String]) -> bool {
        let before = self.pending.len();
        self.pending.retain(|r| !written.contains(&r.insert_id));
        self.pending.len() != before
    }

    /// Open sessions (for tests and the dashboard).
    pub fn open_count(&self) -> usize {
        self.open.len()
    }
}

/// RFC 3339 in UTC with microseconds, as every row spells timestamps.
pub fn rfc3339(ms: i64) -> String {
    DateTime::<Utc>::from_timestamp_millis(ms).unwrap_or_default().to_rfc3339_opts(SecondsFormat::Micros, true)
}

#[cfg(test)]
mod tests {
    use serde_json::Value;

    use super::*;

    const MIN: i64 = 60_000;
    const T0: i64 = 1_700_000_000_000 / MIN * MIN;

    fn settings() -> Settings {
        Settings { gap_ms: 30 * MIN, lateness_ms: 2 * MIN, idle_close_ms: MIN }
    }

    fn ev(id: &str, minute: i64, kind: &str, page: &str) -> Event {
        Event {
            id: id.into(),
            time_ms: T0 + minute * MIN,
            user: "u1".into(),
            event_type: kind.into(),
            page: Some(page.into()),
        }
    }

    fn rows(s: &UserSessions) -> Vec<Value> {
        s.pending.iter().map(|r| serde_json::from_str(&r.json).expect("row json")).collect()
    }

    #[test]
    fn out_of_order_events_merge_two_sessions_into_one() {
        let (st, now) = (settings(), T0 + 1000 * MIN);
        let mut s = UserSessions::default();
        // Two sessions 50 minutes apart (more than the gap)...
        assert_eq!(s.observe(&ev("a", 0, "page_view", "/"), now, &st), Observed::Counted);
        assert_eq!(s.observe(&ev("b", 50, "click", "/x"), now, &st), Observed::Counted);
        assert_eq!(s.open_count(), 2);
        // ...until an event 25 minutes in arrives late and bridges them.
        assert_eq!(s.observe(&ev("c", 25, "page_view", "/x"), now, &st), Observed::Counted);
        assert_eq!(s.open_count(), 1);
        assert_eq!(s.observe(&ev("c", 25, "page_view", "/x"), now, &st), Observed::Duplicate);
        // Event time moves past 50 + gap + lateness: the session closes on the watermark.
        assert_eq!(s.observe(&ev("d", 50 + 30 + 2 + 1, "purchase", "/buy"), now, &st), Observed::Counted);
        assert_eq!(s.close_due(now, false, &st), 1);
        let r = &rows(&s)[0];
        assert_eq!(r["session_start"], rfc3339(T0));
        assert_eq!(r["session_end"], rfc3339(T0 + 50 * MIN));
        assert_eq!((r["events_count"].as_u64(), r["event_types"].as_u64()), (Some(3), Some(2)));
        assert_eq!(r["pages"], json!(["/", "/x"]));
        assert_eq!(r["duration_seconds"], 3000.0);
        assert_eq!(r["closed_by"], "watermark");
        // An event for the closed session is late, also a redelivery of one of its events.
        assert_eq!(s.observe(&ev("e", 10, "click", "/"), now, &st), Observed::Late);
        assert_eq!(s.observe(&ev("a", 0, "page_view", "/"), now, &st), Observed::Late);
        assert_eq!(s.observe(&ev("f", 5000, "click", "/"), now, &st), Observed::Future);
    }

    #[test]
    fn an_idle_user_is_closed_by_a_tick_but_never_inside_the_gap() {
        let st = settings();
        let mut s = UserSessions::default();
        let arrival = T0 + 10 * MIN;
        s.observe(&ev("a", 10, "page_view", "/"), arrival, &st);
        // Idle for longer than idle_close, but the gap (in processing time) is still open: kept.
        assert_eq!(s.close_due(arrival + 5 * MIN, true, &st), 0);
        assert_eq!(s.close_due(arrival + 30 * MIN, true, &st), 1);
        assert_eq!(rows(&s)[0]["closed_by"], "timer");
        let ids: Vec<String> = s.pending.iter().map(|r| r.insert_id.clone()).collect();
        assert!(s.confirm(&ids));
        assert!(s.pending.is_empty());
        let back: UserSessions = serde_json::from_str(&serde_json::to_string(&s).expect("ser")).expect("de");
        assert_eq!(back, s);
    }

    #[test]
    fn state_stays_bounded() {
        let st = settings();
        let now = T0 + 10_000 * MIN;
        let mut s = UserSessions::default();
        // 20 sessions an hour apart: the oldest beyond MAX_OPEN are closed by the limit.
        for i in 0..20 {
            s.observe(
                &ev(&format!("s{i}"), i * 31, "page_view", "/"),
                now,
                &Settings { lateness_ms: 1_000_000 * MIN, ..st.clone() },
            );
        }
        let lenient = Settings { lateness_ms: 1_000_000 * MIN, ..st.clone() };
        assert_eq!(s.close_due(now, false, &lenient), 20 - MAX_OPEN);
        assert!(rows(&s).iter().all(|r| r["closed_by"] == "limit"));
        assert_eq!(s.open_count(), MAX_OPEN);
        // A session reaching MAX_EVENTS closes; the next event starts a new one (not late).
        let mut busy = UserSessions::default();
        for i in 0..MAX_EVENTS {
            busy.observe(&Event { id: format!("b{i}"), time_ms: T0 + i as i64, ..ev("", 0, "click", "/") }, now, &st);
        }
        assert_eq!(busy.close_due(now, false, &st), 1);
        let next = Event { id: "next".into(), time_ms: T0 + 10, ..ev("", 0, "click", "/") };
        assert_eq!(busy.observe(&next, now, &st), Observed::Counted);
        // Pages are capped, events are not.
        let mut pages = UserSessions::default();
        for i in 0..(MAX_PAGES + 10) {
            pages.observe(&ev(&format!("p{i}"), 0, "page_view", &format!("/{i}")), now, &st);
        }
        pages.observe(&ev("late-mover", 100, "page_view", "/"), now, &st);
        pages.close_due(now, false, &st);
        let r = &rows(&pages)[0];
        assert_eq!((r["pages"].as_array().map(Vec::len), r["events_count"].as_u64()), (Some(MAX_PAGES), Some(60)));
    }

    #[test]
    fn the_page_list_is_the_first_viewed_pages_whatever_the_arrival_order() {
        let mut open = Open::default();
        // Pages 0..80 viewed at times 80..0 (newest first), page 70 again at time 1000.
        for i in 0..80_i64 {
            open.add_page(format!("/{i}"), 80 - i);
        }
        open.add_page("/70".into(), 1000);
        let want: Vec<String> = (31..80).rev().map(|i| format!("/{i}")).chain(std::iter::once("/30".into())).collect();
        assert_eq!(open.page_list(), want.iter().map(String::as_str).collect::<Vec<_>>());
    }
}
