//! Per-minute traffic against a ±σ baseline (seed §5.2, streaming).
//!
//! All traffic state is one value under [`KEY`], so counting an event, closing minutes and queueing
//! their rows happen in one atomic update:
//! - `open`: the minutes still accepting events: the digests of their message ids (a redelivery is
//!   counted once), users and sessions (exact counts);
//! - `history`: `(events, users)` of the closed minutes a future baseline needs;
//! - `pending`: rows of closed minutes not yet confirmed written (an outbox: rewritten until
//!   confirmed; their insert ids make a rewrite harmless).
//!
//! A minute closes when event time has moved `lateness` past its end, or, when events stop arriving
//! for `idle_close` of processing time, at the next timer tick. Minutes without any event between two
//! closed minutes are closed as zero-traffic minutes (an outage is the anomaly one most wants to see).
//! The baseline of minute `m` is every closed minute in `[m − gap − baseline, m − gap)`: its mean and
//! sample standard deviation (BigQuery's `STDDEV`) of events and of unique users; with fewer than two
//! baseline minutes both statuses are `NORMAL`, as the SQL's NULL comparisons make them.

use std::collections::{BTreeMap, BTreeSet};

use chrono::{DateTime, SecondsFormat, Utc};
use serde::{Deserialize, Serialize};
use serde_json::json;
use tributary_model::Row;

use crate::settings::Settings;
use state_update::digest;

/// The state key of the traffic analysis.
pub const KEY: &str = "traffic";
/// The table closed minutes go to.
pub const TABLE: &str = "traffic_anomalies";

const MINUTE_MS: i64 = 60_000;

/// One event, as the analysis needs it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Event {
    /// The message id (dedup key).
    pub id: String,
    /// Event time, ms since the epoch.
    pub time_ms: i64,
    pub user: String,
    pub session: Option<String>,
}

/// What happened to an event.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Observed {
    Counted,
    /// Already counted (a redelivery).
    Duplicate,
    /// Its minute had closed already: not counted, reported in a metric.
    Late,
    /// Event time too far ahead of processing time: not counted, so one bad clock cannot close
    /// every open minute.
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

/// Why a minute closed.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Closer {
    /// Event time moved past it by the allowed lateness.
    Watermark,
    /// A timer tick found the stream idle.
    Timer,
}

#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
struct Minute {
    ids: BTreeSet<u64>,
    users: BTreeSet<u64>,
    sessions: BTreeSet<u64>,
}

/// The whole traffic state (see the module docs).
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct Traffic {
    max_event_ms: Option<i64>,
    last_arrival_ms: i64,
    closed_through: Option<i64>,
    open: BTreeMap<i64, Minute>,
    history: BTreeMap<i64, (u64, u64)>,
    pub pending: Vec<Row>,
}

impl Traffic {
    /// Counts `event` (arrived at processing time `now_ms`).
    pub fn observe(&mut self, event: &Event, now_ms: i64, settings: &Settings) -> Observed {
        self.last_arrival_ms = self.last_arrival_ms.max(now_ms);
        let minute = event.time_ms.div_euclid(MINUTE_MS) * MINUTE_MS;
        if event.time_ms > now_ms + settings.lateness_ms + MINUTE_MS {
            return Observed::Future;
        }
        if self.closed_through.is_some_and(|closed| minute <= closed) {
            return Observed::Late;
        }
        let acc = self.open.entry(minute).or_default();
        if !acc.ids.insert(digest(&event.id)) {
            return Observed::Duplicate;
        }
        acc.users.insert(digest(&event.user));
        if let Some(session) = &event.session {
            acc.sessions.insert(digest(session));
        }
        self.max_event_ms = Some(self.max_event_ms.map_or(event.time_ms, |m| m.max(event.time_ms)));
        Observed::Counted
    }

    /// Closes the minutes that are due at processing time `now_ms` and queues their rows in `pending`.
    /// `timer`: called by a tick, which also closes everything once the stream has been idle.
    /// Returns how many minutes closed.
    pub fn close_due(&mut self, now_ms: i64, timer: bool, settings: &Settings) -> usize {
        let idle = timer && now_ms - self.last_arrival_ms >= settings.idle_close_ms;
        let watermark = self.max_event_ms.map(|m| m - settings.lateness_ms);
        let due: Vec<i64> = self
            .open
            .keys()
            .copied()
            .filter(|&minute| idle || watermark.is_some_and(|w| minute + MINUTE_MS <= w))
            .collect();
        let closer = if idle { Closer::Timer } else { Closer::Watermark };
        let mut closed = 0;
        for minute in due {
            let acc = self.open.remove(&minute).unwrap_or_default();
            if let Some(last) = self.closed_through {
                // Zero-traffic minutes in between, as far back as a baseline can reach.
                let from = (last + MINUTE_MS).max(minute - settings.history_minutes() * MINUTE_MS);
                for gap in (from..minute).step_by(MINUTE_MS as usize) {
                    self.close_minute(gap, (0, 0, 0), closer, now_ms, settings);
                    closed += 1;
                }
            }
            let counts = (acc.ids.len() as u64, acc.users.len() as u64, acc.sessions.len() as u64);
            self.close_minute(minute, counts, closer, now_ms, settings);
            closed += 1;
        }
        closed
    }

    fn close_minute(
        &mut self,
        minute: i64,
        (events, users, sessions): (u64, u64, u64),
        closer: Closer,
        now_ms: i64,
        settings: &Settings,
    ) {
        let from = minute - settings.history_minutes() * MINUTE_MS;
        let to = minute - settings.baseline_gap_minutes * MINUTE_MS;
        let baseline: Vec<(u64, u64)> = self.history.range(from..to).map(|(_, &v)| v).collect();
        let ev = Band::of(baseline.iter().map(|b| b.0 as f64), settings.sigma);
        let us = Band::of(baseline.iter().map(|b| b.1 as f64), settings.sigma);
        let row = json!({
            "minute": rfc3339(minute),
            "events_count": events,
            "unique_users": users,
            "unique_sessions": sessions,
            "baseline_minutes": baseline.len(),
            "mean_events": ev.map(|b| b.mean),
            "stddev_events": ev.map(|b| b.stddev),
            "mean_users": us.map(|b| b.mean),
            "stddev_users": us.map(|b| b.stddev),
            "traffic_status": status(ev, events, "HIGH_TRAFFIC", "LOW_TRAFFIC"),
            "user_status": status(us, users, "USER_SPIKE", "USER_DROP"),
            "closed_by": match closer { Closer::Watermark => "watermark", Closer::Timer => "timer" },
            "closed_at": rfc3339(now_ms),
        });
        self.pending.push(Row { table: TABLE.into(), insert_id: format!("traffic:{minute}"), json: row.to_string() });
        self.history.insert(minute, (events, users));
        self.history = self.history.split_off(&(minute - settings.history_minutes() * MINUTE_MS));
        self.closed_through = Some(minute);
    }

    /// Drops the pending rows that were written.
    pub fn confirm(&mut self, written: &[String]) -> bool {
        let before = self.pending.len();
        self.pending.retain(|r| !written.contains(&r.insert_id));
        self.pending.len() != before
    }
}

/// Mean and sample standard deviation of a baseline, and its band.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Band {
    pub mean: f64,
    pub stddev: f64,
    sigma: f64,
}

impl Band {
    /// `None` with fewer than two values (the sample standard deviation is undefined).
    pub fn of(values: impl Iterator<Item = f64> + Clone, sigma: f64) -> Option<Band> {
        let n = values.clone().count();
        if n < 2 {
            return None;
        }
        let mean = values.clone().sum::<f64>() / n as f64;
        let var = values.map(|v| (v - mean).powi(2)).sum::<f64>() / (n - 1) as f64;
        Some(Band { mean, stddev: var.sqrt(), sigma })
    }
}

fn status(band: Option<Band>, value: u64, high: &'static str, low: &'static str) -> &'static str {
    let Some(b) = band else { return "NORMAL" };
    let v = value as f64;
    if v > b.mean + b.sigma * b.stddev {
        high
    } else if v < b.mean - b.sigma * b.stddev {
        low
    } else {
        "NORMAL"
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

    const T0: i64 = 1_700_000_000_000 / MINUTE_MS * MINUTE_MS;

    fn settings() -> Settings {
        Settings { lateness_ms: 60_000, ..Settings::default() }
    }

    fn ev(id: usize, minute: i64, user: usize) -> Event {
        Event { id: format!("m{id}"), time_ms: T0 + minute * MINUTE_MS + 1000, user: format!("u{user}"), session: None }
    }

    fn rows(t: &Traffic) -> Vec<Value> {
        t.pending.iter().map(|r| serde_json::from_str(&r.json).expect("row json")).collect()
    }

    #[test]
    fn counts_once_and_closes_on_the_watermark() {
        let s = settings();
        let now = T0 + 100 * MINUTE_MS;
        let mut t = Traffic::default();
        assert_eq!(t.observe(&ev(1, 0, 1), now, &s), Observed::Counted);
        assert_eq!(t.observe(&ev(1, 0, 1), now, &s), Observed::Duplicate);
        assert_eq!(t.observe(&ev(2, 0, 1), now, &s), Observed::Counted);
        assert_eq!(t.close_due(now, false, &s), 0);
        // Minute 1 starts: minute 0 is not closed until event time passes its end + lateness.
        t.observe(&ev(3, 1, 2), now, &s);
        assert_eq!(t.close_due(now, false, &s), 0);
        t.observe(&ev(4, 2, 2), now, &s);
        assert_eq!(t.close_due(now, false, &s), 1);
        let r = &rows(&t)[0];
        assert_eq!((r["events_count"].as_u64(), r["unique_users"].as_u64()), (Some(2), Some(1)));
        assert_eq!(r["traffic_status"], "NORMAL");
        assert_eq!(t.observe(&ev(5, 0, 1), now, &s), Observed::Late);
        assert_eq!(t.observe(&ev(6, 500, 1), now, &s), Observed::Future);
    }

    #[test]
    fn flags_spikes_and_drops_against_the_baseline() {
        let s = Settings { lateness_ms: 0, ..Settings::default() };
        let now = T0 + 200 * MINUTE_MS;
        let mut t = Traffic::default();
        let mut id = 0;
        // 75 minutes alternating 4 and 6 events (mean 5, σ ≈ 1.01), a spike at 72, a drop at 73.
        for minute in 0..76 {
            let n = match minute {
                72 => 20,
                73 => 1,
                m if m % 2 == 0 => 4,
                _ => 6,
            };
            for u in 0..n {
                id += 1;
                t.observe(&ev(id, minute, u), now, &s);
            }
        }
        // Nothing in minute 76; minute 78 moves the watermark past 77.
        t.observe(&ev(id + 1, 77, 0), now, &s);
        t.observe(&ev(id + 2, 78, 0), now, &s);
        t.close_due(now, false, &s);
        let rows = rows(&t);
        assert_eq!(rows.len(), 78);
        let status = |m: usize| (rows[m]["traffic_status"].clone(), rows[m]["user_status"].clone());
        assert_eq!(status(72), ("HIGH_TRAFFIC".into(), "USER_SPIKE".into()));
        assert_eq!(status(73), ("LOW_TRAFFIC".into(), "USER_DROP".into()));
        assert_eq!(status(71), ("NORMAL".into(), "NORMAL".into()));
        // Minute 72's baseline is minutes 2..62: 60 minutes, 30 of each.
        assert_eq!(rows[72]["baseline_minutes"], 60);
        assert_eq!(rows[72]["mean_events"], 5.0);
        // The empty minute 76 closes as zero traffic once minute 77 closes.
        assert_eq!(rows[75]["events_count"], 6);
        assert_eq!(rows[76]["events_count"], 0);
        assert_eq!(rows[76]["traffic_status"], "LOW_TRAFFIC");
    }

    #[test]
    fn idle_stream_closes_on_a_timer_tick_and_confirm_empties_the_outbox() {
        let s = settings();
        let mut t = Traffic::default();
        let arrival = T0 + 100 * MINUTE_MS;
        t.observe(&ev(1, 0, 1), arrival, &s);
        assert_eq!(t.close_due(arrival + 1000, true, &s), 0);
        assert_eq!(t.close_due(arrival + s.idle_close_ms, true, &s), 1);
        assert_eq!(rows(&t)[0]["closed_by"], "timer");
        let ids: Vec<String> = t.pending.iter().map(|r| r.insert_id.clone()).collect();
        assert!(t.confirm(&ids));
        assert!(t.pending.is_empty());
        // The state round-trips through JSON (it is stored that way).
        let back: Traffic = serde_json::from_str(&serde_json::to_string(&t).expect("ser")).expect("de");
        assert_eq!(back, t);
    }
}
