//! `tributary demo`: the whole system moving with one command. Starts a host (its own data directory,
//! the embedded warehouse unless the config says otherwise), loads a small product catalog, then
//! generates web sessions, shop activity and sensor readings in real time and pushes each one the way
//! Pub/Sub's fan-out would (every web event to every function that reads the event stream), and prints
//! the dashboard's address. `--history-rows N` first backfills N older events (the last 10 days) into
//! `streaming_events`, to see the dashboard at size.

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use anyhow::Context as _;
use serde_json::{Value, json};
use tokio::sync::Semaphore;
use tributary::config::Config;

/// The demo's knobs.
#[derive(Debug, Clone, clap::Args)]
pub struct DemoOptions {
    /// Web events per second (sensor readings come on top: one per sensor every 5 s).
    #[arg(long, default_value_t = 40)]
    pub rate: u32,
    /// Older events to backfill into streaming_events before starting (spread over the last 10 days).
    #[arg(long, default_value_t = 0)]
    pub history_rows: u64,
    /// Stop after this many seconds (default: run until Ctrl-C).
    #[arg(long)]
    pub seconds: Option<u64>,
}

/// The routes reading the web event stream (one Pub/Sub topic, one push subscription each).
const EVENT_ROUTES: [&str; 5] = ["/push/events", "/push/anomaly", "/push/sessions", "/push/metrics", "/push/recommend"];
const CATEGORIES: [&str; 4] = ["books", "garden", "kitchen", "toys"];
const REFERRERS: [Option<&str>; 6] =
    [Some("google"), Some("google"), None, Some("newsletter"), Some("twitter"), Some("partner-blog")];
const SENSORS: [(&str, &str, &str, f64); 6] = [
    ("t-berlin-1", "temperature", "berlin", 21.0),
    ("t-lisbon-1", "temperature", "lisbon", 24.0),
    ("h-berlin-1", "humidity", "berlin", 45.0),
    ("h-lisbon-1", "humidity", "lisbon", 60.0),
    ("p-berlin-1", "pressure", "berlin", 1013.0),
    ("p-lisbon-1", "pressure", "lisbon", 1016.0),
];
/// Simulated users: each has at most one session at a time.
const USERS: usize = 300;

struct User {
    session: Option<(String, u32)>,
}

pub async fn run(cfg: Config, options: DemoOptions) -> anyhow::Result<()> {
    if options.history_rows > 0 && cfg.sink.backend == tributary::warehouse::Backend::Embedded {
        let (dir, rows, memory) = (cfg.data_dir.clone(), options.history_rows, cfg.sink.duckdb_memory_mib);
        tokio::task::spawn_blocking(move || backfill(&dir, rows, memory)).await??;
    }
    cfg.validate()?;
    let host = tributary::start(&cfg, tributary::Mode::Wasm).await?;
    let addr = host.addr;
    tracing::info!(data = %cfg.data_dir.display(), "demo host up");
    println!(
        "\n  dashboard:  http://{}/dashboard\n  pushes go to http://{addr}/push/...  (Ctrl-C stops)\n",
        host.admin_addr
    );

    let stats = Arc::new(Stats::default());
    let slots = Arc::new(Semaphore::new(64));
    let push = |route: &'static str, id: String, body: Value| {
        let (stats, slots) = (Arc::clone(&stats), Arc::clone(&slots));
        async move {
            let Ok(_slot) = slots.acquire_owned().await else { return };
            let publish_time = chrono::Utc::now().to_rfc3339_opts(chrono::SecondsFormat::Micros, true);
            let headers = [
                ("content-type", "application/json"),
                ("x-goog-pubsub-message-id", id.as_str()),
                ("x-goog-pubsub-publish-time", publish_time.as_str()),
            ];
            match tributary::client::post(addr, route, &headers, body.to_string()).await {
                Ok((200..=299, _)) => stats.acked.fetch_add(1, Ordering::Relaxed),
                Ok(_) | Err(_) => stats.failed.fetch_add(1, Ordering::Relaxed),
            };
        }
    };

    // The catalog first, so recommendations have products to score.
    for i in 0..40 {
        let product = json!({"product_id": format!("prod-{i:03}"), "product_name": format!("Product {i}"),
            "category": CATEGORIES[i % CATEGORIES.len()], "popularity_score": 5 + (i * 37) % 95, "status": "active"});
        push("/push/products", format!("demo-product-{i}"), product).await;
    }

    let run_id = chrono::Utc::now().timestamp_millis();
    let mut users: Vec<User> = (0..USERS).map(|_| User { session: None }).collect();
    let mut rng = fastrand::Rng::new();
    let mut seq = 0u64;
    let mut tick = tokio::time::interval(Duration::from_millis(100));
    let mut report = tokio::time::interval(Duration::from_secs(10));
    let stop_at = options.seconds.map(|s| tokio::time::Instant::now() + Duration::from_secs(s));
    let per_tick = f64::from(options.rate) / 10.0;
    let mut owed = 0.0;
    let mut ticks = 0u64;
    loop {
        tokio::select! {
            _ = tick.tick() => {}
            _ = report.tick() => {
                println!("  {} pushes acked, {} failed", stats.acked.load(Ordering::Relaxed), stats.failed.load(Ordering::Relaxed));
                continue;
            }
            _ = tokio::signal::ctrl_c() => break,
        }
        if stop_at.is_some_and(|t| tokio::time::Instant::now() >= t) {
            break;
        }
        ticks += 1;
        owed += per_tick;
        while owed >= 1.0 {
            owed -= 1.0;
            seq += 1;
            let u = rng.usize(..USERS);
            let event = web_event(&mut rng, u, &mut users[u], chrono::Utc::now());
            for route in EVENT_ROUTES {
                tokio::spawn(push(route, format!("demo-{run_id}-{seq}"), event.clone()));
            }
        }
        if ticks.is_multiple_of(50) {
            let now = chrono::Utc::now();
            for (i, (id, kind, location, base)) in SENSORS.iter().enumerate() {
                // Mostly noise around the base; now and then a spike the anomaly check should flag.
                let spike = if rng.u32(..60) == 0 { base * 0.4 } else { 0.0 };
                let value = base + (rng.f64() - 0.5) * base * 0.02 + spike;
                let reading = json!({"sensor_id": id, "sensor_type": kind, "location": location,
                    "value": (value * 100.0).round() / 100.0, "timestamp": now.to_rfc3339_opts(chrono::SecondsFormat::Millis, true)});
                tokio::spawn(push("/push/sensors", format!("demo-{run_id}-sensor-{ticks}-{i}"), reading));
            }
        }
    }
    println!(
        "  stopping: {} pushes acked, {} failed",
        stats.acked.load(Ordering::Relaxed),
        stats.failed.load(Ordering::Relaxed)
    );
    host.shutdown().await;
    Ok(())
}

#[derive(Default)]
struct Stats {
    acked: AtomicU64,
    failed: AtomicU64,
}

/// The next event of user `u`: a session starts (with a referrer, mostly), pages are viewed, some
/// carts and purchases; after enough steps the session ends and the next event starts a new one.
fn web_event(rng: &mut fastrand::Rng, u: usize, user: &mut User, now: chrono::DateTime<chrono::Utc>) -> Value {
    let user_id = format!("user-{u:04}");
    let timestamp = now.to_rfc3339_opts(chrono::SecondsFormat::Millis, true);
    let product = rng.usize(..40);
    let product_props =
        json!({"product_id": format!("prod-{product:03}"), "category": CATEGORIES[product % CATEGORIES.len()]});
    let (session, steps) = match &mut user.session {
        Some((session, steps)) if *steps < 12 && rng.u32(..10) != 0 => {
            *steps += 1;
            (session.clone(), *steps)
        }
        slot => {
            let session = format!("{user_id}-{}", now.timestamp_millis());
            *slot = Some((session.clone(), 0));
            let mut event = json!({"user_id": user_id, "session_id": session, "event_type": "session_start",
                "page_url": "/", "timestamp": timestamp});
            if let Some(r) = REFERRERS[rng.usize(..REFERRERS.len())] {
                event["properties"] = json!({"referrer": r});
            }
            return event;
        }
    };
    let (event_type, page, properties) = match rng.u32(..100) {
        0..=59 => ("page_view", format!("/products/{}", CATEGORIES[product % CATEGORIES.len()]), product_props),
        60..=74 => ("page_view", String::from("/search"), json!({})),
        75..=89 if steps > 1 => ("add_to_cart", String::from("/cart"), product_props),
        90..=95 if steps > 3 => {
            let mut p = product_props;
            p["amount"] = json!(f64::from(rng.u32(500..20_000)) / 100.0);
            ("purchase", String::from("/checkout"), p)
        }
        _ => ("page_view", String::from("/"), json!({})),
    };
    json!({"user_id": user_id, "session_id": session, "event_type": event_type, "page_url": page,
        "timestamp": timestamp, "properties": properties})
}

/// Inserts `rows` older events into `streaming_events` (spread over the 10 days before the last
/// hour), a million per statement, with a progress bar.
pub fn backfill(dir: &std::path::Path, rows: u64, memory_limit_mib: usize) -> anyhow::Result<()> {
    let db =
        tributary::warehouse::duckdb::DuckDb::open(dir, memory_limit_mib).context("opening the embedded warehouse")?;
    let conn = db.reader()?;
    let bar = indicatif::ProgressBar::new(rows).with_style(
        indicatif::ProgressStyle::with_template(
            "  backfill {bar:40} {human_pos}/{human_len} rows, {per_sec}, eta {eta}",
        )
        .unwrap_or_else(|_| indicatif::ProgressStyle::default_bar()),
    );
    let run = chrono::Utc::now().timestamp_millis();
    const CHUNK: u64 = 1_000_000;
    const SPAN_US: u64 = 10 * 24 * 3600 * 1_000_000;
    let mut done = 0;
    while done < rows {
        let n = CHUNK.min(rows - done);
        // Event times are spread evenly (in order, as a stream arrives) over the 10 days that end an
        // hour ago, so the live window only ever sees the demo's live traffic.
        conn.execute_batch(&format!(
            "INSERT INTO streaming_events (event_id, user_id, event_type, timestamp, session_id, page_url, properties, publish_time, message_id, processed_at, _insert_id, _inserted_at)
             SELECT 'history-{run}-' || i, 'user-' || lpad(CAST(i % 5000 AS VARCHAR), 4, '0'),
                    ['page_view', 'page_view', 'page_view', 'add_to_cart', 'purchase', 'session_start'][1 + CAST(i % 6 AS INTEGER)],
                    ts, 'history-session-' || (i // 8), '/products/' || ['books', 'garden', 'kitchen', 'toys'][1 + CAST(i % 4 AS INTEGER)],
                    '{{}}', ts, 'history-{run}-' || i, ts, 'history-{run}-' || i, ts
             FROM (SELECT i, make_timestamp(epoch_us(get_current_timestamp()) - 3600000000 - {SPAN_US} + CAST(i * ({SPAN_US} // {rows}) AS BIGINT)) AS ts
                   FROM range({done}, {end}) AS r(i))",
            end = done + n,
        ))
        .context("backfilling streaming_events")?;
        done += n;
        bar.set_position(done);
    }
    bar.finish();
    conn.execute_batch("CHECKPOINT").context("checkpointing the backfill")?;
    Ok(())
}
