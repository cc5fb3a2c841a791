//! The live dashboard end to end: Google's Pub/Sub emulator pushes a web session stream to the host;
//! `/dashboard/data` must show the seed §7.1 figures of the last 30 minutes of event time, as computed
//! independently here; then a real browser (headless Chromium) loads `/dashboard`, runs its script
//! and must render the same numbers. Also: the page says when data is stale, and no other web page
//! can read the dashboard (Origin check).

use std::collections::{BTreeMap, BTreeSet};
use std::process::Command;
use std::time::Duration;

use serde_json::{Value, json};

use crate::support::{Host, PubSub, http_raw, temp_dir, wait_for};

const USERS: usize = 30;
const PAGES: usize = 7;
const SOURCES: [Option<&str>; 4] = [Some("google"), None, Some("newsletter"), Some("google")];

fn rfc3339(t: chrono::DateTime<chrono::Utc>) -> String {
    t.to_rfc3339_opts(chrono::SecondsFormat::Millis, true)
}

struct Expected {
    total: usize,
    users: usize,
    sessions: usize,
    pages: Vec<(String, usize, usize)>,
    sources: Vec<(String, usize)>,
    funnel: [usize; 3],
}

/// Every user: a session_start (with a referrer for most), page views, and for some a cart and a
/// purchase, all in the last 20 minutes; plus one old session (3 hours ago) that must not count.
fn stream(now: chrono::DateTime<chrono::Utc>) -> (Vec<Value>, Expected) {
    let mut events = Vec::new();
    let mut in_window = Vec::new();
    for u in 0..USERS {
        let user = format!("user-{u}");
        let session = format!("{user}-s");
        let at = |i: usize| now - chrono::Duration::seconds((20 * 60 - (u * 37 + i * 11) % (19 * 60)) as i64);
        let mut start =
            json!({"user_id": user, "session_id": session, "event_type": "session_start", "timestamp": rfc3339(at(0))});
        if let Some(r) = SOURCES[u % SOURCES.len()] {
            start["properties"] = json!({"referrer": r});
        }
        events.push(start);
        for i in 0..(1 + u % 4) {
            let page = format!("/p/{}", (u + i * 3) % PAGES);
            events.push(json!({"user_id": user, "session_id": session, "event_type": "page_view", "page_url": page, "timestamp": rfc3339(at(i + 1))}));
        }
        if u % 3 == 0 {
            events.push(json!({"user_id": user, "session_id": session, "event_type": "add_to_cart", "page_url": "/cart", "timestamp": rfc3339(at(8))}));
        }
        if u % 6 == 0 {
            events.push(json!({"user_id": user, "session_id": session, "event_type": "purchase", "page_url": "/checkout", "timestamp": rfc3339(at(9))}));
        }
    }
    in_window.extend(events.iter().cloned());
    let old = now - chrono::Duration::hours(3);
    events.push(json!({"user_id": "old-user", "session_id": "old-s", "event_type": "page_view", "page_url": "/p/0", "timestamp": rfc3339(old)}));

    // The figures, computed here from the events in the window.
    let count_distinct =
        |f: &dyn Fn(&Value) -> Option<String>| in_window.iter().filter_map(f).collect::<BTreeSet<_>>().len();
    let mut pages: BTreeMap<String, (usize, BTreeSet<String>)> = BTreeMap::new();
    let mut sources: BTreeMap<String, BTreeSet<String>> = BTreeMap::new();
    let mut funnel = [BTreeSet::new(), BTreeSet::new(), BTreeSet::new()];
    for e in &in_window {
        let user = e["user_id"].as_str().unwrap_or_default().to_owned();
        match e["event_type"].as_str().unwrap_or_default() {
            "page_view" => {
                let p = pages.entry(e["page_url"].as_str().unwrap_or_default().to_owned()).or_default();
                p.0 += 1;
                p.1.insert(user.clone());
                funnel[0].insert(user);
            }
            "session_start" => {
                let source = e["properties"]["referrer"].as_str().unwrap_or("direct").to_owned();
                sources.entry(source).or_default().insert(user);
            }
            "add_to_cart" => {
                funnel[1].insert(user);
            }
            "purchase" => {
                funnel[2].insert(user);
            }
            _ => {}
        }
    }
    let mut pages: Vec<(String, usize, usize)> = pages.into_iter().map(|(p, (n, u))| (p, n, u.len())).collect();
    pages.sort_by(|a, b| b.1.cmp(&a.1).then(a.0.cmp(&b.0)));
    pages.truncate(10);
    let mut sources: Vec<(String, usize)> = sources.into_iter().map(|(s, u)| (s, u.len())).collect();
    sources.sort_by(|a, b| b.1.cmp(&a.1).then(a.0.cmp(&b.0)));
    sources.truncate(5);
    let expected = Expected {
        total: in_window.len(),
        users: count_distinct(&|e| e["user_id"].as_str().map(str::to_owned)),
        sessions: count_distinct(&|e| e["session_id"].as_str().map(str::to_owned)),
        pages,
        sources,
        funnel: [funnel[0].len(), funnel[1].len(), funnel[2].len()],
    };
    (events, expected)
}

async fn data(host: &Host) -> Value {
    let url = format!("http://{}/dashboard/data", host.admin);
    let (status, body) = http_raw("GET", &url, Vec::new(), &[("cache-control", "no-cache")]).await;
    assert_eq!(status, 200, "{body}");
    serde_json::from_str(&body).expect("dashboard data is JSON")
}

/// Headless Chromium: loads `url`, lets its script run for a few (virtual) seconds, returns the DOM.
fn browser(args: &[&str], url: &str) -> String {
    let profile = temp_dir("chromium-profile");
    let out = Command::new("timeout")
        .args(["90", "chromium", "--headless", "--no-sandbox", "--disable-gpu", "--disable-dev-shm-usage"])
        .arg(format!("--user-data-dir={}", profile.display()))
        .args(["--virtual-time-budget=8000", "--run-all-compositor-stages-before-draw"])
        .args(args)
        .arg(url)
        .output()
        .expect("running chromium (tests/run installs it)");
    assert!(out.status.success(), "chromium failed: {}", String::from_utf8_lossy(&out.stderr));
    String::from_utf8_lossy(&out.stdout).into_owned()
}

/// The text of the element with `id` in the dumped DOM (its first text node).
fn element_text<'a>(dom: &'a str, id: &str) -> &'a str {
    let at = dom.find(&format!("id=\"{id}\"")).unwrap_or_else(|| panic!("no #{id} in the page:\n{dom}"));
    let rest = &dom[at..];
    let start = rest.find('>').expect("tag end") + 1;
    let end = rest[start..].find('<').expect("text end");
    &rest[start..start + end]
}

/// The rows of table `id` in the dumped DOM, each as its cells' text.
fn table_rows(dom: &str, id: &str) -> Vec<Vec<String>> {
    let at = dom.find(&format!("id=\"{id}\"")).unwrap_or_else(|| panic!("no #{id}"));
    let table = &dom[at..at + dom[at..].find("</table>").expect("table end")];
    let body = &table[table.find("<tbody>").expect("tbody")..];
    body.split("<tr>")
        .skip(1)
        .map(|row| {
            row.split("<td")
                .skip(1)
                .map(|cell| {
                    let text = &cell[cell.find('>').expect("td") + 1..];
                    text[..text.find("</td>").expect("td end")].to_owned()
                })
                .collect()
        })
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn dashboard_shows_the_live_figures_in_a_real_browser() {
    let pubsub = PubSub::start().await;
    let host = Host::start(&temp_dir("dashboard"), "").await;

    // Before any event: stale, nothing counted, the page still answers.
    let empty = data(&host).await;
    assert_eq!((empty["total_events"].clone(), empty["status"]["stale"].clone()), (json!(0), json!(true)), "{empty}");
    assert_eq!(empty["status"]["errors"], json!([]), "{empty}");

    // Only the dashboard's own page may read it: another origin is refused, writes are refused.
    let url = format!("http://{}/dashboard/data", host.admin);
    let (status, _) = http_raw("GET", &url, Vec::new(), &[("origin", "http://evil.example")]).await;
    assert_eq!(status, 403);
    let own = format!("http://{}", host.admin);
    let (status, _) = http_raw("GET", &url, Vec::new(), &[("origin", own.as_str())]).await;
    assert_eq!(status, 200);
    let (status, _) =
        http_raw("POST", &format!("{own}/query"), b"SELECT 1".to_vec(), &[("origin", own.as_str())]).await;
    assert_eq!(status, 403, "the same origin still cannot query");
    let (status, _) = http_raw("POST", &url, Vec::new(), &[]).await;
    assert_eq!(status, 405);
    let (status, _) = http_raw("GET", &format!("http://{}/dashboard", host.addr), Vec::new(), &[]).await;
    assert_eq!(status, 404, "the dashboard is not on the public listener");

    pubsub.create_topic("web").await;
    pubsub.create_push_subscription("web-push", "web", &host.push_url(), false).await;
    let now = chrono::Utc::now();
    let (events, want) = stream(now);
    let messages: Vec<(Vec<u8>, Value)> = events.iter().map(|e| (e.to_string().into_bytes(), json!({}))).collect();
    pubsub.publish("web", &messages).await;

    let expected_total = events.len() as i64;
    wait_for("every event in streaming_events", Duration::from_secs(90), || async {
        (host.count("SELECT count(*) AS n FROM streaming_events").await == expected_total).then_some(())
    })
    .await;
    let d = data(&host).await;
    assert_eq!(d["status"]["errors"], json!([]), "{d}");
    assert_eq!(d["total_events"], want.total, "{d}");
    assert_eq!(d["active_users"], want.users);
    assert_eq!(d["active_sessions"], want.sessions);
    let pages: Vec<(String, usize, usize)> = d["top_pages"]
        .as_array()
        .expect("pages")
        .iter()
        .map(|p| {
            (
                p["page_url"].as_str().unwrap_or_default().to_owned(),
                p["views"].as_u64().unwrap_or(0) as usize,
                p["unique_visitors"].as_u64().unwrap_or(0) as usize,
            )
        })
        .collect();
    assert_eq!(pages, want.pages);
    let sources: Vec<(String, usize)> = d["traffic_sources"]
        .as_array()
        .expect("sources")
        .iter()
        .map(|s| {
            (s["traffic_source"].as_str().unwrap_or_default().to_owned(), s["users"].as_u64().unwrap_or(0) as usize)
        })
        .collect();
    assert_eq!(sources, want.sources);
    let funnel: Vec<usize> = d["conversion_funnel"]
        .as_array()
        .expect("funnel")
        .iter()
        .map(|s| s["users"].as_u64().unwrap_or(0) as usize)
        .collect();
    assert_eq!(funnel, want.funnel.to_vec());
    assert_eq!(d["status"]["stale"], false, "the newest event is minutes old at most: {d}");
    let chart = d["events_per_minute"].as_array().expect("chart");
    assert_eq!(chart.len(), 60);
    assert_eq!(
        chart.iter().map(|m| m["events"].as_u64().unwrap_or(0) as usize).sum::<usize>(),
        want.total,
        "the old event is outside the chart"
    );

    // The chart itself: SVG with both series.
    let (status, svg) = http_raw("GET", &format!("http://{}/dashboard/chart.svg", host.admin), Vec::new(), &[]).await;
    assert_eq!(status, 200);
    assert!(svg.starts_with("<svg") && svg.contains("<polyline"), "{svg}");

    // A real browser renders the page from its own script's polling.
    let page = format!("http://{}/dashboard", host.admin);
    let dom = browser(&["--dump-dom"], &page);
    assert_eq!(element_text(&dom, "total_events"), want.total.to_string(), "{dom}");
    assert_eq!(element_text(&dom, "active_users"), want.users.to_string());
    assert_eq!(element_text(&dom, "active_sessions"), want.sessions.to_string());
    let rows = table_rows(&dom, "top_pages");
    let shown: Vec<(String, String, String)> =
        rows.iter().map(|r| (r[0].clone(), r[1].clone(), r[2].clone())).collect();
    let expected: Vec<(String, String, String)> =
        want.pages.iter().map(|(p, n, u)| (p.clone(), n.to_string(), u.to_string())).collect();
    assert_eq!(shown, expected);
    let funnel_rows = table_rows(&dom, "funnel");
    assert_eq!(
        funnel_rows.iter().map(|r| r[1].clone()).collect::<Vec<_>>(),
        want.funnel.iter().map(ToString::to_string).collect::<Vec<_>>()
    );
    assert!(element_text(&dom, "status").starts_with("live"), "{}", element_text(&dom, "status"));
    assert!(dom.contains("class=\"banner ok\""));

    // And a phone-sized screenshot (the layout reflows to one column).
    let shot = temp_dir("dashboard-shot").join("phone.png");
    browser(&[&format!("--screenshot={}", shot.display()), "--window-size=390,1600", "--hide-scrollbars"], &page);
    let png = std::fs::read(&shot).expect("screenshot written");
    assert!(png.starts_with(b"\x89PNG") && png.len() > 10_000, "{} bytes", png.len());
}
