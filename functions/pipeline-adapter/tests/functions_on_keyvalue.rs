//! The stateful functions' logic on the pipeline adapter's `state` (what they get under Spin), natively:
//! the windows and recommend-trigger flows run against [`KvState`] over models of Spin's SQLite and
//! Redis stores (TEST DOUBLES, `kv_state::testing`), including the Redis store that reports applied
//! swaps as failed. The same scenarios the functions' own tests run on the host's contract.

use std::cell::Cell;

use chrono::{DateTime, Duration, Utc};
use function_kit::testing::{Passthrough, Recorder, block_on, unwrapped};
use pipeline_adapter::kv_state::testing::{Kind, Model};
use pipeline_adapter::kv_state::{self, KvState};
use serde_json::{Value, json};
use state_update::{Entry, State, StateError};

/// `state_update::State` on the adapter, at a clock the test moves.
struct OnKeyValue {
    state: KvState<Model>,
    now_ms: Cell<u64>,
}

impl OnKeyValue {
    fn new(kind: Kind, redis_swap_bug: bool, scope: &str) -> Self {
        let mut model = Model::new(kind);
        model.swap_reports_failure = redis_swap_bug;
        Self { state: KvState::new(model, scope).expect("scope"), now_ms: Cell::new(0) }
    }

    fn at(&self, now: DateTime<Utc>) {
        self.now_ms.set(u64::try_from(now.timestamp_millis()).expect("after 1970"));
    }
}

fn error(e: kv_state::StateError) -> StateError {
    match e {
        kv_state::StateError::Unavailable(m) => StateError::Unavailable(m),
        kv_state::StateError::Invalid(m) => StateError::Invalid(m),
    }
}

impl State for OnKeyValue {
    fn get(&self, key: &str) -> Result<Option<Entry>, StateError> {
        let entry = self.state.get(key, self.now_ms.get()).map_err(error)?;
        Ok(entry.map(|e| Entry { value: e.value, version: e.version }))
    }

    fn compare_and_swap(
        &self,
        key: &str,
        expected: u64,
        value: &[u8],
        ttl_ms: Option<u64>,
    ) -> Result<Option<u64>, StateError> {
        self.state.compare_and_swap(key, expected, value, ttl_ms, self.now_ms.get()).map_err(error)
    }

    fn delete(&self, key: &str, expected: u64) -> Result<bool, StateError> {
        self.state.delete(key, expected, self.now_ms.get()).map_err(error)
    }

    fn scan(&self, prefix: &str, limit: u32) -> Result<Vec<String>, StateError> {
        self.state.scan(prefix, limit, self.now_ms.get()).map_err(error)
    }
}

const STORES: [(Kind, bool); 3] = [(Kind::Sqlite, false), (Kind::Redis, false), (Kind::Redis, true)];

fn time(s: &str) -> DateTime<Utc> {
    DateTime::parse_from_rfc3339(s).expect("time").to_utc()
}

#[test]
fn sessions_count_a_redelivery_once_and_a_tick_closes_the_idle_one() {
    use event_windows::flow::{Env, Route, handle};
    use event_windows::settings::Settings;
    for (kind, bug) in STORES {
        let (sink, state) = (Recorder::default(), OnKeyValue::new(kind, bug, "windows"));
        let settings = Settings { lateness_ms: 0, gap_ms: 60_000, ..Settings::default() };
        let now = time("2026-01-01T01:00:00Z");
        state.at(now);
        let env = Env { transform: &Passthrough, sink: &sink, state: &state, settings: &settings, now };
        let event = |id: &str, t: &str| {
            unwrapped(id, &format!(r#"{{"user_id":"u","event_type":"page_view","timestamp":"{t}","page_url":"/"}}"#))
        };
        for (id, t) in [("1", "2026-01-01T00:00:00Z"), ("1", "2026-01-01T00:00:00Z"), ("2", "2026-01-01T00:00:30Z")] {
            assert_eq!(block_on(handle(Route::Sessions, &event(id, t), &env)).status(), 204, "{kind:?}");
        }
        // A third event past the gap closes the first session: two events, the redelivery counted once.
        assert_eq!(block_on(handle(Route::Sessions, &event("3", "2026-01-01T00:05:00Z"), &env)).status(), 204);
        let first: Value = serde_json::from_str(&sink.writes.borrow()[0].json).expect("json");
        assert_eq!(first["events_count"].as_u64(), Some(2), "{kind:?} (swap bug: {bug})");
        // The tick closes the idle second session once processing time passed its gap.
        let later = now + Duration::minutes(10);
        state.at(later);
        let tick = Env { now: later, ..env };
        assert_eq!(block_on(handle(Route::SessionsTick, &Default::default(), &tick)).status(), 204);
        assert_eq!(sink.writes.borrow().len(), 2, "{kind:?}: both sessions written");
    }
}

#[test]
fn recommendations_come_from_activity_and_catalog_kept_in_state() {
    use recommend_trigger::flow::{Env, Route, handle};
    use recommend_trigger::settings::Settings;
    for (kind, bug) in STORES {
        let (sink, state) = (Recorder::default(), OnKeyValue::new(kind, bug, "recommend-trigger"));
        let settings = Settings { debounce_ms: 0, ..Settings::default() };
        let now = time("2026-01-01T10:00:00Z");
        state.at(now);
        let env = Env { transform: &Passthrough, sink: &sink, state: &state, settings: &settings, now };
        let push = |id: &str, v: Value| unwrapped(id, &v.to_string());
        for (i, (id, category, pop)) in
            [("b1", "books", 50.0), ("b2", "books", 60.0), ("t1", "toys", 90.0)].iter().enumerate()
        {
            let product = json!({"product_id": id, "product_name": id, "category": category, "popularity_score": pop, "status": "active"});
            assert_eq!(block_on(handle(Route::Products, &push(&format!("p{i}"), product), &env)).status(), 204);
        }
        let view = |p: &str| {
            json!({"user_id": "u", "event_type": "view", "timestamp": "2026-01-01T09:59:00Z",
                   "properties": {"product_id": p, "category": "books"}})
        };
        for (i, p) in ["b1", "b1", "x"].iter().enumerate() {
            assert_eq!(block_on(handle(Route::Activity, &push(&format!("e{i}"), view(p)), &env)).status(), 204);
        }
        let upserts = sink.upserts.borrow();
        let recs = upserts.iter().rev().find(|r| r.table == "realtime_user_recs").expect("a recommendation row");
        let v: Value = serde_json::from_str(&recs.json).expect("json");
        let ids: Vec<&str> =
            v["recommendations"].as_array().expect("list").iter().filter_map(|r| r["product_id"].as_str()).collect();
        assert!(ids.contains(&"b2") && !ids.contains(&"b1"), "{kind:?} (swap bug: {bug}): {ids:?}");
    }
}
