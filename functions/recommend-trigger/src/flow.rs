//! One request, start to finish:
//!
//! - `POST /push/recommend` (events): decode → transform → a `view`/`click`/`add_to_cart` with a
//!   `properties.product_id` becomes an activity of its user; when the user has enough activity and
//!   was not updated within the debounce interval, their recommendations are computed and upserted
//!   into `realtime_user_recs` at once, otherwise the user is marked for the timer;
//! - `POST /push/products` (catalog changes): the product replaces its previous version on the
//!   shelves (its category, `popular`) and is upserted into `products`;
//! - `POST /push/recommend/tick`: recomputes the marked users whose debounce interval has passed.
//!
//! The acknowledgement contract is `function_kit::contract`'s; every state step is idempotent per
//! message id.

use chrono::{DateTime, SecondsFormat, Utc};
use function_kit::contract::{self, Outcome, Sink, Transformer, Upserter};
use function_kit::dead_letter::Failure;
use function_kit::envelope::PushRequest;
use function_kit::routes::{self, Route as Path};
use serde_json::{Value, json};
use state_update::{self as store, Change, State, digest};
use tributary_model::{Row, tables};

use crate::activity::{Activity, COUNTED, User};
use crate::catalog::{self, Product, Shelf};
use crate::recommend;
use crate::settings::Settings;

/// The table recommendations are upserted into, keyed by `user_id`.
pub const RECS_TABLE: &str = "realtime_user_recs";
/// Users marked for the timer.
const DIRTY: &str = "dirty/";
/// Locations recomputed per tick.
const SCAN_LIMIT: u32 = 10_000;

pub struct Env<'a, T, S, St> {
    pub transform: &'a T,
    pub sink: &'a S,
    pub state: &'a St,
    pub settings: &'a Settings,
    pub now: DateTime<Utc>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Route {
    Activity,
    Products,
    Tick,
}

/// The function's routes (the host's registry serves exactly these).
pub const ROUTES: &[(Path, Route)] = &[
    (routes::push("/push/recommend"), Route::Activity),
    (routes::push("/push/products"), Route::Products),
    (routes::tick("/push/recommend/tick"), Route::Tick),
];

impl<T, S, St> Env<'_, T, S, St> {
    fn now_ms(&self) -> i64 {
        self.now.timestamp_millis()
    }
}

pub async fn handle<T: Transformer, S: Sink + Upserter, St: State>(
    route: Route,
    req: &PushRequest,
    env: &Env<'_, T, S, St>,
) -> Outcome {
    let result = match route {
        Route::Activity => activity(req, env).await,
        Route::Products => product(req, env).await,
        Route::Tick => return tick(env).await.unwrap_or_else(|a| a),
    };
    let reply = contract::dead_letter_state_refusal(result.unwrap_or_else(|a| a).into(), req, env.sink, env.now).await;
    reply.outcome
}

async fn activity<T: Transformer, S: Sink + Upserter, St: State>(
    req: &PushRequest,
    env: &Env<'_, T, S, St>,
) -> Result<Outcome, Outcome> {
    let (msg, rows) = contract::decode_and_transform(req, env.transform, env.sink, env.now).await?;
    let Some(row) = rows.iter().find(|r| r.table == tables::STREAMING_EVENTS) else { return Ok(Outcome::Done) };
    let Ok(Value::Object(fields)) = serde_json::from_str::<Value>(&row.json) else {
        let failure = Failure {
            reason: "bad-row".into(),
            message: "the transform's event row is not a JSON object".into(),
            stage: "analyze",
        };
        return Ok(contract::dead_letter(&msg, failure, env.sink, env.now).await);
    };
    let text = |v: Option<&Value>| {
        v.and_then(|v| v.as_str().map(str::to_owned).or_else(|| v.as_number().map(|n| n.to_string())))
    };
    let event_type = text(fields.get("event_type")).unwrap_or_default();
    let product_id = text(fields.get("properties").and_then(|p| p.get("product_id")));
    let (Some(user_id), Some(product_id)) = (text(fields.get("user_id")), product_id) else { return Ok(Outcome::Done) };
    if !COUNTED.contains(&event_type.as_str()) {
        return Ok(Outcome::Done);
    }
    let Some(time_ms) =
        text(fields.get("timestamp")).and_then(|t| DateTime::parse_from_rfc3339(&t).ok()).map(|t| t.timestamp_millis())
    else {
        let failure = Failure {
            reason: "bad-row".into(),
            message: "the transform's event row has no RFC 3339 timestamp".into(),
            stage: "analyze",
        };
        return Ok(contract::dead_letter(&msg, failure, env.sink, env.now).await);
    };
    let mut category = text(fields.get("properties").and_then(|p| p.get("category")));
    if category.is_none() {
        category = store::read::<Product>(env.state, &format!("product/{product_id}"))?.map(|p| p.category);
    }
    let act = Activity { id: digest(&msg.id), time_ms, product_id, category };
    let now = env.now_ms();
    let due = store::update(env.state, &user_key(&user_id), ttl(env.settings), |u: Option<User>| {
        let mut u = u.unwrap_or_default();
        let added = u.add(act.clone(), now, env.settings);
        let due = u.due(now, env.settings);
        (if added { Change::Put(u) } else { Change::Keep }, due)
    })?;
    match due {
        Ok(true) => recompute(&user_id, env).await,
        Ok(false) => Ok(Outcome::Done),
        Err(_) => {
            // Debounced: the timer picks the user up once the interval has passed.
            // The mark holds the activity it is for; a newer mark is a new version, which a tick
            // that started earlier cannot delete.
            let marker = format!("{DIRTY}{user_id}");
            let id = act.id;
            store::update(env.state, &marker, ttl(env.settings), |m: Option<u64>| {
                (if m == Some(id) { Change::Keep } else { Change::Put(id) }, ())
            })?;
            Ok(Outcome::Done)
        }
    }
}

fn user_key(user_id: &str) -> String {
    format!("user/{user_id}")
}

/// State outlives the activity window by a day.
fn ttl(settings: &Settings) -> Option<u64> {
    u64::try_from(settings.window_ms + 24 * 3_600_000).ok()
}

/// Computes and upserts one user's recommendations, then records that they are written.
async fn recompute<T, S: Upserter, St: State>(user_id: &str, env: &Env<'_, T, S, St>) -> Result<Outcome, Outcome> {
    let now = env.now_ms();
    // The activity read and the row's `updated_at` are taken in one state update, so a computation
    // that read newer activity also carries a later `updated_at` (two requests' clocks do not order them).
    let taken = store::update(env.state, &user_key(user_id), ttl(env.settings), |u: Option<User>| match u {
        Some(mut u) if (u.profile(now, env.settings).activity_score as usize) >= env.settings.min_activities => {
            let stamp = u.stamp(env.now.timestamp_micros());
            (Change::Put(u.clone()), Some((u, stamp)))
        }
        _ => (Change::Keep, None),
    })?;
    let Some((user, stamp)) = taken else { return Ok(Outcome::Done) };
    let profile = user.profile(now, env.settings);
    let updated_at = DateTime::<Utc>::from_timestamp_micros(stamp).unwrap_or(env.now);
    let mut shelves: Vec<Shelf> = Vec::new();
    for category in &profile.interests {
        shelves.extend(store::read::<Shelf>(env.state, &format!("category/{category}"))?);
    }
    shelves.extend(store::read::<Shelf>(env.state, "popular")?);
    let recs = recommend::recommend(shelves.iter().flat_map(|s| s.values()), &profile, env.settings);
    let json = json!({
        "user_id": user_id,
        "recommendations": recs,
        "activity_score": profile.activity_score,
        "updated_at": updated_at.to_rfc3339_opts(SecondsFormat::Micros, true),
    });
    let row = Row { table: RECS_TABLE.into(), insert_id: user_id.to_owned(), json: json.to_string() };
    match env.sink.upsert(vec![row]).await {
        Ok(refused) if refused.is_empty() => {}
        // A refused row of the function's own making is a bug here, not in a message: no dead letter.
        Ok(refused) => {
            let reason = format!("recommendations refused: {}", Failure::refused(&refused).message);
            return Err(Outcome::DeadLetterRefused(reason));
        }
        Err(e) => return Err(e.into()),
    }
    let seq = user.seq;
    store::update(env.state, &user_key(user_id), ttl(env.settings), |u: Option<User>| match u {
        Some(mut u) if u.written_seq < seq => {
            u.written_seq = seq;
            u.written_ms = Some(now);
            (Change::Put(u), ())
        }
        _ => (Change::Keep, ()),
    })?;
    Ok(Outcome::Done)
}

async fn tick<T, S: Upserter, St: State>(env: &Env<'_, T, S, St>) -> Result<Outcome, Outcome> {
    let now = env.now_ms();
    for marker in env.state.scan(DIRTY, SCAN_LIMIT)? {
        let user_id = &marker[DIRTY.len()..];
        let Some(mark) = env.state.get(&marker)? else { continue };
        let user = store::read::<User>(env.state, &user_key(user_id))?;
        match user.as_ref().map_or(Ok(false), |u| u.due(now, env.settings)) {
            Err(_) => continue, // still inside the debounce interval
            Ok(true) => {
                recompute(user_id, env).await?;
            }
            Ok(false) => {}
        }
        // Dropped only if nobody marked the user again meanwhile (a new mark is a new version).
        env.state.delete(&marker, mark.version)?;
    }
    Ok(Outcome::Done)
}

async fn product<T, S: Sink + Upserter, St: State>(
    req: &PushRequest,
    env: &Env<'_, T, S, St>,
) -> Result<Outcome, Outcome> {
    let msg = contract::decode(req, env.sink, env.now).await?;
    let changed_ms = msg
        .publish_time
        .as_deref()
        .and_then(|t| DateTime::parse_from_rfc3339(t).ok())
        .map_or(env.now_ms(), |t| t.timestamp_millis());
    let product = match Product::parse(&msg.data, changed_ms) {
        Ok(p) => p,
        Err(r) => {
            let failure = Failure { reason: r.reason, message: r.message, stage: "catalog" };
            return Ok(contract::dead_letter(&msg, failure, env.sink, env.now).await);
        }
    };
    let key = format!("product/{}", product.product_id);
    let previous = store::read::<Product>(env.state, &key)?;
    if previous.as_ref().is_some_and(|p| p.changed_ms > product.changed_ms) {
        return Ok(Outcome::Done); // an older change arriving late: the newer one stays
    }
    // Shelves first, the product last: a crash in between is repaired by the redelivery, which still
    // sees the previous version and so still knows the shelf it must leave.
    if let Some(old) = previous.as_ref().filter(|p| p.category != product.category) {
        shelve(env, &format!("category/{}", old.category), old, false)?;
    }
    shelve(env, &format!("category/{}", product.category), &product, product.active())?;
    let popular = product.active() && product.popularity_score > env.settings.popular_above;
    shelve(env, "popular", &product, popular)?;
    store::update(env.state, &key, None, |p: Option<Product>| {
        (if p.as_ref() == Some(&product) { Change::Keep } else { Change::Put(product.clone()) }, ())
    })?;
    let updated_at = DateTime::<Utc>::from_timestamp_millis(changed_ms).unwrap_or(env.now);
    let row = product.row(&updated_at.to_rfc3339_opts(SecondsFormat::Micros, true));
    Ok(contract::upsert_message_rows(&msg, vec![row], env.sink, env.now).await)
}

fn shelve<T, S, St: State>(
    env: &Env<'_, T, S, St>,
    key: &str,
    product: &Product,
    belongs: bool,
) -> Result<(), Outcome> {
    store::update(env.state, key, None, |s: Option<Shelf>| {
        let mut shelf = s.unwrap_or_default();
        let changed = catalog::place(&mut shelf, product, belongs);
        (if changed { Change::Put(shelf) } else { Change::Keep }, ())
    })
    .map_err(Outcome::from)
}

#[cfg(test)]
mod tests {
    use function_kit::testing::{Passthrough, Recorder, block_on};
    use state_update::memory::MemoryState;

    use super::*;

    fn push(id: &str, payload: Value) -> PushRequest {
        PushRequest {
            headers: vec![
                ("x-goog-pubsub-message-id".into(), id.into()),
                ("x-goog-pubsub-publish-time".into(), "2026-01-01T09:00:00Z".into()),
            ],
            body: payload.to_string().into_bytes(),
        }
    }

    fn run<S: Sink + Upserter>(route: Route, req: &PushRequest, env: &Env<'_, Passthrough, S, MemoryState>) -> Outcome {
        block_on(handle(route, req, env))
    }

    fn product(id: &str, category: &str, pop: f64, status: &str) -> Value {
        json!({"product_id": id, "product_name": format!("P{id}"), "category": category, "popularity_score": pop, "status": status})
    }

    fn view(user: &str, product: &str, category: &str) -> Value {
        json!({"user_id": user, "event_type": "view", "timestamp": "2026-01-01T09:59:00Z",
               "properties": {"product_id": product, "category": category}})
    }

    fn recs(sink: &Recorder) -> Vec<String> {
        let rows = sink.upserts.borrow();
        let last = rows.iter().rev().find(|r| r.table == RECS_TABLE).expect("a recs row");
        let v: Value = serde_json::from_str(&last.json).expect("json");
        v["recommendations"]
            .as_array()
            .expect("list")
            .iter()
            .map(|r| r["product_id"].as_str().expect("id").to_owned())
            .collect()
    }

    #[test]
    fn three_activities_then_catalog_changes_show_in_the_next_recommendation() {
        let (sink, state) = (Recorder::default(), MemoryState::default());
        let settings = Settings { debounce_ms: 0, ..Settings::default() };
        let now = DateTime::parse_from_rfc3339("2026-01-01T10:00:00Z").expect("t").to_utc();
        let env = Env { transform: &Passthrough, sink: &sink, state: &state, settings: &settings, now };
        for (i, p) in [
            product("b1", "books", 50.0, "active"),
            product("b2", "books", 60.0, "active"),
            product("t1", "toys", 90.0, "active"),
            product("t2", "toys", 10.0, "active"),
        ]
        .into_iter()
        .enumerate()
        {
            assert_eq!(run(Route::Products, &push(&format!("p{i}"), p), &env).status(), 204);
        }
        assert_eq!(run(Route::Activity, &push("e1", view("u", "b1", "books")), &env).status(), 204);
        assert_eq!(run(Route::Activity, &push("e2", view("u", "b1", "books")), &env).status(), 204);
        assert!(sink.upserts.borrow().iter().all(|r| r.table != RECS_TABLE), "two activities: none yet");
        assert_eq!(run(Route::Activity, &push("e2", view("u", "b1", "books")), &env).status(), 204);
        assert!(sink.upserts.borrow().iter().all(|r| r.table != RECS_TABLE), "a redelivery is not an activity");
        assert_eq!(run(Route::Activity, &push("e3", view("u", "x", "books")), &env).status(), 204);
        // b1 and x were seen; b2 is in an interesting category; t1 is popular; t2 neither.
        assert_eq!(recs(&sink), vec!["b2", "t1"]);
        assert_eq!(run(Route::Products, &push("p9", product("b2", "books", 60.0, "inactive")), &env).status(), 204);
        assert_eq!(run(Route::Products, &push("p10", product("t2", "toys", 99.0, "active")), &env).status(), 204);
        assert_eq!(run(Route::Activity, &push("e4", view("u", "x", "books")), &env).status(), 204);
        assert_eq!(recs(&sink), vec!["t2", "t1"]);
    }

    #[test]
    fn recommendations_from_newer_activity_carry_a_later_updated_at_whatever_the_clocks_say() {
        let (sink, state) = (Recorder::default(), MemoryState::default());
        let settings = Settings { debounce_ms: 0, ..Settings::default() };
        let t0 = DateTime::parse_from_rfc3339("2026-01-01T10:00:00Z").expect("t").to_utc();
        // The request that reads the newer activity has the earlier clock (another host, or a slow one).
        let late = Env { transform: &Passthrough, sink: &sink, state: &state, settings: &settings, now: t0 };
        let early = Env { now: t0 - chrono::Duration::seconds(5), ..late };
        for i in 0..3 {
            run(Route::Activity, &push(&format!("e{i}"), view("u", "b1", "books")), &late);
        }
        // A fourth activity, then a computation on the earlier clock (as when it raced the first).
        let act = Activity { id: digest("e3"), time_ms: early.now_ms(), product_id: "b1".into(), category: None };
        store::update(&state, "user/u", None, |u: Option<User>| {
            let mut u = u.expect("user");
            u.add(act.clone(), early.now_ms(), &settings);
            (Change::Put(u), ())
        })
        .expect("state");
        assert_eq!(block_on(recompute("u", &early)), Ok(Outcome::Done));
        let stamps: Vec<(String, u64)> = sink
            .upserts
            .borrow()
            .iter()
            .filter(|r| r.table == RECS_TABLE)
            .map(|r| {
                let v: Value = serde_json::from_str(&r.json).expect("json");
                (v["updated_at"].as_str().expect("time").to_owned(), v["activity_score"].as_u64().expect("score"))
            })
            .collect();
        assert_eq!(
            stamps,
            vec![("2026-01-01T10:00:00.000000Z".into(), 3), ("2026-01-01T10:00:00.000001Z".into(), 4)],
            "the row with the fourth activity wins the upsert"
        );
    }

    #[test]
    fn debounced_users_are_picked_up_by_the_tick_and_a_failed_upsert_fails_the_push() {
        let (sink, state) = (Recorder::default(), MemoryState::default());
        let settings = Settings::default();
        let t0 = DateTime::parse_from_rfc3339("2026-01-01T10:00:00Z").expect("t").to_utc();
        let env = Env { transform: &Passthrough, sink: &sink, state: &state, settings: &settings, now: t0 };
        run(Route::Products, &push("p1", product("b2", "books", 60.0, "active")), &env);
        for i in 0..3 {
            run(Route::Activity, &push(&format!("e{i}"), view("u", "b1", "books")), &env);
        }
        let first = sink.upserts.borrow().iter().filter(|r| r.table == RECS_TABLE).count();
        assert_eq!(first, 1);
        sink.down.set(true);
        run(Route::Activity, &push("e9", view("u", "b2", "books")), &env);
        assert_eq!(state.scan(DIRTY, 10).expect("scan"), vec!["dirty/u"], "debounced: marked");
        let later = Env { now: t0 + chrono::Duration::seconds(31), ..env };
        assert_eq!(run(Route::Tick, &PushRequest::default(), &later).status(), 503, "sink down: the tick fails");
        sink.down.set(false);
        assert_eq!(run(Route::Tick, &PushRequest::default(), &later).status(), 204);
        assert!(state.scan(DIRTY, 10).expect("scan").is_empty());
        assert_eq!(recs(&sink), Vec::<String>::new(), "b2 was seen now; nothing else to recommend");
    }
}
