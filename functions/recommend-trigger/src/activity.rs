//! One user's recent activity (seed §7.3): the activities of the last `window` (by event time,
//! relative to the processing time), deduplicated by message id.

use std::collections::BTreeSet;

use serde::{Deserialize, Serialize};

use crate::settings::Settings;

/// Event types that count as shopping activity.
pub const COUNTED: [&str; 3] = ["view", "click", "add_to_cart"];

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Activity {
    /// Digest of the message id.
    pub id: u64,
    pub time_ms: i64,
    pub product_id: String,
    pub category: Option<String>,
}

/// A user's state.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct User {
    /// Oldest first.
    pub activities: Vec<Activity>,
    /// Bumped by every new activity.
    pub seq: u64,
    /// `seq` when recommendations were last written, and when (processing time, ms).
    pub written_seq: u64,
    pub written_ms: Option<i64>,
    /// The `updated_at` (µs) of the last recommendations computed: each computation takes a later
    /// one together with the activity it reads, so the row computed from newer activity always wins
    /// the warehouse's upsert, whatever the two requests' clocks said.
    #[serde(default)]
    pub stamped_us: i64,
}

/// What the user's activity says at `now_ms`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Profile {
    /// Product ids of the 10 most recent activities, most recent first (repeats possible).
    pub recent: Vec<String>,
    pub interests: BTreeSet<String>,
    /// Activities in the window.
    pub activity_score: u64,
}

impl User {
    /// Adds an activity; false when it was already there (a redelivery) or is outside the window.
    pub fn add(&mut self, a: Activity, now_ms: i64, settings: &Settings) -> bool {
        self.prune(now_ms, settings);
        if a.time_ms < now_ms - settings.window_ms || self.activities.iter().any(|x| x.id == a.id) {
            return false;
        }
        let at = self.activities.partition_point(|x| (x.time_ms, x.id) <= (a.time_ms, a.id));
        self.activities.insert(at, a);
        self.seq += 1;
        true
    }

    /// Drops activities that left the window.
    pub fn prune(&mut self, now_ms: i64, settings: &Settings) {
        let cutoff = now_ms - settings.window_ms;
        self.activities.retain(|a| a.time_ms >= cutoff);
    }

    pub fn profile(&self, now_ms: i64, settings: &Settings) -> Profile {
        let cutoff = now_ms - settings.window_ms;
        let live: Vec<&Activity> = self.activities.iter().filter(|a| a.time_ms >= cutoff).collect();
        Profile {
            recent: live.iter().rev().take(10).map(|a| a.product_id.clone()).collect(),
            interests: live.iter().filter_map(|a| a.category.clone()).collect(),
            activity_score: live.len() as u64,
        }
    }

    /// Takes the `updated_at` for recommendations computed now: `now_us`, or just after the last one.
    pub fn stamp(&mut self, now_us: i64) -> i64 {
        self.stamped_us = now_us.max(self.stamped_us + 1);
        self.stamped_us
    }

    /// New activity since the last write.
    pub fn dirty(&self) -> bool {
        self.seq > self.written_seq
    }

    /// Whether recommendations are due now: enough activity, something new, and the debounce
    /// interval since the last write has passed. `Err(at)`: due at processing time `at`.
    pub fn due(&self, now_ms: i64, settings: &Settings) -> Result<bool, i64> {
        if !self.dirty() || (self.profile(now_ms, settings).activity_score as usize) < settings.min_activities {
            return Ok(false);
        }
        match self.written_ms {
            Some(w) if now_ms - w < settings.debounce_ms => Err(w + settings.debounce_ms),
            _ => Ok(true),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn act(id: u64, t: i64, p: &str, c: &str) -> Activity {
        Activity { id, time_ms: t, product_id: p.into(), category: Some(c.into()) }
    }

    #[test]
    fn window_dedup_and_profile() {
        let s = Settings::default();
        let now = 10 * 3_600_000;
        let mut u = User::default();
        assert!(u.add(act(1, now - 1000, "p1", "a"), now, &s));
        assert!(!u.add(act(1, now - 1000, "p1", "a"), now, &s), "redelivery");
        assert!(!u.add(act(2, now - s.window_ms - 1, "p2", "b"), now, &s), "too old");
        assert!(u.add(act(3, now - 500, "p3", "b"), now, &s));
        assert_eq!(u.due(now, &s), Ok(false), "two activities");
        assert!(u.add(act(4, now - 2000, "p4", "c"), now, &s));
        let p = u.profile(now, &s);
        assert_eq!(p.recent, vec!["p3", "p1", "p4"]);
        assert_eq!(p.activity_score, 3);
        assert_eq!(u.due(now, &s), Ok(true));
        u.written_seq = u.seq;
        u.written_ms = Some(now);
        assert_eq!(u.due(now + 1, &s), Ok(false), "nothing new");
        assert!(u.add(act(5, now, "p5", "c"), now, &s));
        assert_eq!((u.stamp(7_000), u.stamp(5_000), u.stamp(9_000)), (7_000, 7_001, 9_000), "stamps only grow");
        assert_eq!(u.due(now + 1, &s), Err(now + s.debounce_ms), "debounced");
        // Two hours later the old activities stop counting.
        assert_eq!(u.profile(now + s.window_ms, &s).activity_score, 1);
    }
}
