//! recommend-trigger end to end: a catalog bulk-loaded with `tributary load products`, a scripted mix
//! of user sessions published through the Pub/Sub emulator to `/push/recommend`, then catalog changes
//! through `/push/products`. Every `realtime_user_recs` row is compared, product by product and score
//! by score, with the seed's procedure (§7.3) computed independently here.

use std::collections::{BTreeMap, BTreeSet};
use std::time::Duration;

use serde_json::{Value, json};

use crate::support::{Host, PubSub, temp_dir, wait_eq, wait_for};

const MINUTE: i64 = 60_000;

#[derive(Clone)]
struct Product {
    id: String,
    category: String,
    popularity: f64,
    active: bool,
}

fn catalog() -> Vec<Product> {
    let categories = ["books", "electronics", "garden", "toys"];
    (0..40)
        .map(|i| Product {
            id: format!("p{i:02}"),
            category: categories[i % 4].into(),
            // 5 … 99, a few above 80, none tied by accident within a category.
            popularity: 5.0 + ((i * 37) % 95) as f64,
            active: i % 9 != 8,
        })
        .collect()
}

fn product_json(p: &Product) -> Value {
    json!({"product_id": p.id, "product_name": format!("Product {}", p.id), "category": p.category,
        "popularity_score": p.popularity, "status": if p.active { "active" } else { "inactive" }})
}

/// One activity: (user, product, minutes before now).
type Act = (String, String, i64);

fn sessions(catalog: &[Product]) -> Vec<Act> {
    let mut acts = Vec::new();
    // u00..u11: 1 to 8 activities each, products picked by a fixed stride.
    for u in 0..12usize {
        let n = 1 + (u * 5) % 8;
        for k in 0..n {
            let p = &catalog[(u * 7 + k * 3) % catalog.len()];
            acts.push((format!("u{u:02}"), p.id.clone(), 100 - (u * 3 + k) as i64));
        }
    }
    // Three activities, but one is older than the 2-hour window: no recommendations.
    acts.push(("old".into(), "p01".into(), 180));
    acts.push(("old".into(), "p02".into(), 30));
    acts.push(("old".into(), "p03".into(), 20));
    acts
}

/// The seed's procedure for one user, over the activities inside the window.
fn expected(user: &str, acts: &[(Act, i64)], catalog: &[Product], now: i64) -> Option<Value> {
    let by_id: BTreeMap<&str, &Product> = catalog.iter().map(|p| (p.id.as_str(), p)).collect();
    let mut mine: Vec<&(Act, i64)> =
        acts.iter().filter(|((u, _, _), t)| u == user && *t >= now - 120 * MINUTE).collect();
    if mine.len() < 3 {
        return None;
    }
    mine.sort_by_key(|(_, t)| std::cmp::Reverse(*t));
    let recent: Vec<&str> = mine.iter().take(10).map(|((_, p, _), _)| p.as_str()).collect();
    let interests: BTreeSet<&str> = mine.iter().map(|((_, p, _), _)| by_id[p.as_str()].category.as_str()).collect();
    let activity = mine.len() as f64;
    let mut recs: Vec<(f64, &Product)> = catalog
        .iter()
        .filter(|p| p.active && !recent.contains(&p.id.as_str()))
        .filter(|p| interests.contains(p.category.as_str()) || p.popularity > 80.0)
        .map(|p| {
            let interest = if interests.contains(p.category.as_str()) { 100.0 } else { 0.0 };
            (0.5 * p.popularity + 0.3 * interest + 0.2 * activity, p)
        })
        .collect();
    recs.sort_by(|a, b| b.0.total_cmp(&a.0).then(a.1.id.cmp(&b.1.id)));
    recs.truncate(20);
    Some(json!({
        "activity_score": mine.len(),
        "recommendations": recs.iter().map(|(s, p)| json!({"product_id": p.id, "category": p.category,
            "product_name": format!("Product {}", p.id), "recommendation_score": s})).collect::<Vec<_>>(),
    }))
}

fn rfc3339(ms: i64) -> String {
    chrono::DateTime::from_timestamp_millis(ms).expect("time").to_rfc3339_opts(chrono::SecondsFormat::Millis, true)
}

async fn publish(pubsub: &PubSub, acts: &[Act], catalog: &[Product], now: i64) -> Vec<(Act, i64)> {
    let by_id: BTreeMap<&str, &Product> = catalog.iter().map(|p| (p.id.as_str(), p)).collect();
    let mut out = Vec::new();
    let mut msgs = Vec::new();
    for (i, act @ (user, product, minutes_ago)) in acts.iter().enumerate() {
        // Distinct times, so "the 10 most recent" is well defined.
        let t = now - minutes_ago * MINUTE + i as i64;
        let kind = ["view", "click", "add_to_cart"][i % 3];
        let payload = json!({"user_id": user, "event_type": kind, "timestamp": rfc3339(t),
            "properties": {"product_id": product, "category": by_id[product.as_str()].category}});
        msgs.push((payload.to_string().into_bytes(), json!({})));
        out.push((act.clone(), t));
    }
    // Events that are not shopping activity change nothing.
    msgs.push((
        json!({"user_id": "u00", "event_type": "page_view", "timestamp": rfc3339(now)}).to_string().into_bytes(),
        json!({}),
    ));
    pubsub.publish("events", &msgs).await;
    out
}

async fn assert_recs(host: &Host, users: &[String], acts: &[(Act, i64)], catalog: &[Product], now: i64) {
    let expected: BTreeMap<&str, Value> =
        users.iter().filter_map(|u| Some((u.as_str(), expected(u, acts, catalog, now)?))).collect();
    assert!(expected.len() >= 6 && expected.len() < users.len(), "the script has users on both sides of 3 activities");
    // Wait until every user's row reflects all of their activity (the debounce may hold one back).
    let want: Vec<Value> =
        expected.iter().map(|(u, e)| json!({"user_id": u, "activity_score": e["activity_score"]})).collect();
    wait_eq("every user's recommendations", Duration::from_secs(60), &want, || {
        host.sql("SELECT user_id, activity_score FROM realtime_user_recs ORDER BY user_id")
    })
    .await;
    for (user, e) in &expected {
        let rows = host.sql(&format!("SELECT recommendations FROM realtime_user_recs WHERE user_id = '{user}'")).await;
        let got: Value = match &rows[0]["recommendations"] {
            Value::String(s) => serde_json::from_str(s).expect("JSON column"),
            v => v.clone(),
        };
        let want = e["recommendations"].as_array().expect("list");
        let got = got.as_array().expect("list");
        assert_eq!(got.len(), want.len(), "{user}: {got:#?}");
        for (g, w) in got.iter().zip(want) {
            assert_eq!(
                (&g["product_id"], &g["category"], &g["product_name"]),
                (&w["product_id"], &w["category"], &w["product_name"]),
                "{user}"
            );
            let (gs, ws) = (
                g["recommendation_score"].as_f64().expect("score"),
                w["recommendation_score"].as_f64().expect("score"),
            );
            assert!((gs - ws).abs() < 1e-9, "{user} {}: score {gs}, expected {ws}", w["product_id"]);
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn recommendations_follow_activity_and_catalog_changes() {
    let pubsub = PubSub::start().await;
    let data = temp_dir("recommend");
    let host =
        Host::start(&data, "[timers]\ntick_ms = 300\n[functions.recommend-trigger]\ndebounce_seconds = 1\n").await;
    let mut catalog = catalog();

    // The bulk load goes through the function, twice: the second load changes nothing.
    let file = data.join("products.jsonl");
    let lines: Vec<String> = catalog.iter().map(|p| product_json(p).to_string()).collect();
    std::fs::write(&file, lines.join("\n") + "\n\n{\"product_id\":\"broken\"}\n").expect("catalog file");
    for _ in 0..2 {
        let out = std::process::Command::new(env!("CARGO_BIN_EXE_tributary"))
            .args(["load", "products", "--host", &host.addr.to_string()])
            .arg(&file)
            .output()
            .expect("tributary load");
        assert!(out.status.success(), "load: {}", String::from_utf8_lossy(&out.stderr));
        assert_eq!(
            String::from_utf8_lossy(&out.stdout).trim(),
            "40 products pushed, 1 refused (see the dead_letter table)"
        );
    }
    assert_eq!(host.count("SELECT count(*) FROM products").await, 40);
    assert_eq!(host.count("SELECT count(*) FROM dead_letter WHERE stage = 'catalog'").await, 1);

    pubsub.create_topic("events").await;
    pubsub.create_topic("products").await;
    pubsub
        .create_push_subscription("recommend", "events", &format!("http://{}/push/recommend", host.addr), false)
        .await;
    pubsub.create_push_subscription("catalog", "products", &format!("http://{}/push/products", host.addr), true).await;

    let now = chrono::Utc::now().timestamp_millis();
    let script = sessions(&catalog);
    let users: Vec<String> = script.iter().map(|(u, _, _)| u.clone()).collect::<BTreeSet<_>>().into_iter().collect();
    let mut acts = publish(&pubsub, &script, &catalog, now).await;
    assert_recs(&host, &users, &acts, &catalog, now).await;
    assert_eq!(
        host.count("SELECT count(*) FROM realtime_user_recs WHERE user_id = 'old'").await,
        0,
        "activity older than 2 hours does not count"
    );

    // Catalog changes: the best recommendation of a user goes inactive, a dull product becomes popular.
    let first = expected("u07", &acts, &catalog, now).expect("u07 has recommendations");
    let top = first["recommendations"][0]["product_id"].as_str().expect("id").to_owned();
    let dull =
        catalog.iter().position(|p| p.active && p.popularity < 30.0 && p.category == "garden").expect("a dull product");
    for p in catalog.iter_mut() {
        if p.id == top {
            p.active = false;
        }
    }
    catalog[dull].popularity = 97.0;
    let changes = [catalog.iter().find(|p| p.id == top).expect("top"), &catalog[dull]];
    pubsub
        .publish(
            "products",
            &changes.iter().map(|p| (product_json(p).to_string().into_bytes(), json!({}))).collect::<Vec<_>>(),
        )
        .await;
    wait_for("the catalog changes", Duration::from_secs(60), || async {
        let q = format!("SELECT count(*) FROM products WHERE (product_id = '{top}' AND status = 'inactive') OR popularity_score = 97");
        (host.count(&q).await == 2).then_some(())
    })
    .await;
    // The next activity of every user with recommendations sees the new catalog.
    let next: Vec<Act> = users.iter().filter(|u| u.starts_with('u')).map(|u| (u.clone(), "p05".into(), 1)).collect();
    acts.extend(publish(&pubsub, &next, &catalog, now).await);
    assert_recs(&host, &users, &acts, &catalog, now).await;
    let after = host.sql("SELECT recommendations FROM realtime_user_recs WHERE user_id = 'u07'").await;
    let text = after[0]["recommendations"].to_string();
    assert!(
        !text.contains(&format!("\\\"{top}\\\"")) && !text.contains(&format!("\"{top}\"")),
        "the inactive product is gone"
    );
}
