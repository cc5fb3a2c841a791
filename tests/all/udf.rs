//! Message-transform steps: users' JavaScript UDFs (Pub/Sub SMT and Dataflow styles), unmodified, in
//! front of the row transform, with Google's Pub/Sub emulator pushing: drops, rewrites of data and
//! attributes, throws / wrong shapes / timeouts / memory bombs dead-lettered with stage `udf`, and a file
//! reloaded mid-stream (a bad reload keeps the previous version).

use std::collections::BTreeMap;
use std::path::Path;
use std::time::Duration;

use serde_json::{Value, json};

use crate::support::{Host, PubSub, temp_dir, wait_eq, wait_for};

/// A Pub/Sub SMT UDF as users write it: drops heartbeats, scrubs a field and an attribute, and misbehaves
/// on request.
const SCRUB: &str = r#"
/**
 * Drops heartbeats, removes the email and the `pii` attribute.
 */
function scrub(message, metadata) {
  const event = JSON.parse(message.data);
  if (event.event_type === 'heartbeat') {
    return null;
  }
  if (event.event_type === 'loop') {
    while (true) {}
  }
  if (event.event_type === 'bomb') {
    const keep = [];
    let s = 'x';
    while (true) { s = s + s; keep.push(s); }
  }
  if (event.event_type === 'shape') {
    return { data: 42 };
  }
  delete event.email;
  const attributes = message.attributes;
  delete attributes.pii;
  attributes.scrubbed = 'yes';
  return { data: JSON.stringify(event), attributes };
}
"#;

/// A second step: folds the attributes the first step left into the payload (so the rows show them),
/// then clears them.
const FOLD: &str = r#"
function fold(message, metadata) {
  const event = JSON.parse(message.data);
  event.attrs = message.attributes;
  event.seen_id = metadata.message_id;
  return { data: JSON.stringify(event), attributes: {} };
}
"#;

fn write(dir: &Path, name: &str, text: &str) {
    std::fs::create_dir_all(dir.join("udfs")).expect("udfs dir");
    // Written to a temporary name and renamed: the watcher never reads half a file.
    let tmp = dir.join(format!("udfs/.{name}.tmp"));
    std::fs::write(&tmp, text).expect("udf file");
    std::fs::rename(&tmp, dir.join("udfs").join(name)).expect("udf file");
}

fn event(i: usize, event_type: &str) -> Vec<u8> {
    json!({"user_id": format!("u{i}"), "event_type": event_type, "timestamp": "2026-12-03T10:00:00Z",
        "email": format!("u{i}@example.com"), "n": i})
    .to_string()
    .into_bytes()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn smt_udfs_drop_rewrite_and_dead_letter_what_fails_them() {
    let dir = temp_dir("udf-smt");
    write(&dir, "scrub.js", SCRUB);
    write(&dir, "fold.js", FOLD);
    let pubsub = PubSub::start().await;
    let (addr, admin) = Host::free_addrs();
    let config = r#"
[[message_transforms]]
routes = ["/push/events"]
javascript = "udfs/scrub.js"
function = "scrub"
timeout_ms = 300
memory_mib = 24

[[message_transforms]]
routes = ["/push/events"]
javascript = "udfs/fold.js"
function = "fold"
"#;
    let host = Host::start_in(&dir, &dir.join("data"), addr, admin, config).await;
    pubsub.create_topic("events").await;
    pubsub.create_push_subscription("events-push", "events", &host.push_url(), false).await;

    let mut messages = Vec::new();
    let attrs = json!({"source": "web", "pii": "1"});
    for i in 0..200 {
        messages.push((event(i, "page_view"), attrs.clone()));
    }
    for i in 0..20 {
        messages.push((event(1000 + i, "heartbeat"), attrs.clone()));
    }
    let failing = [
        (b"not json at all".to_vec(), "udf-error"),
        (b"{\"truncated\": ".to_vec(), "udf-error"),
        (event(2000, "loop"), "udf-timeout"),
        (event(2001, "bomb"), "udf-memory"),
        (event(2002, "shape"), "udf-shape"),
    ];
    messages.extend(failing.iter().map(|(data, _)| (data.clone(), attrs.clone())));
    let ids = pubsub.publish("events", &messages).await;

    wait_for("every message to be answered", Duration::from_secs(180), || async {
        let acked = host.metric("tributary_pushes_total", &["outcome=\"acked\""]).await;
        (acked >= messages.len() as f64).then_some(())
    })
    .await;
    assert_eq!(host.count("SELECT count(*) FROM streaming_events").await, 200);
    assert_eq!(host.count("SELECT count(DISTINCT message_id) FROM streaming_events").await, 200);
    // The rewritten data and attributes are what the transform saw.
    let rows = host.sql("SELECT message_id, user_id, properties FROM streaming_events").await;
    for row in &rows {
        let properties: Value = match &row["properties"] {
            Value::String(s) => serde_json::from_str(s).expect("properties JSON"),
            other => other.clone(),
        };
        assert!(properties.get("email").is_none(), "scrubbed: {row}");
        assert_eq!(properties["attrs"], json!({"source": "web", "scrubbed": "yes"}), "{row}");
        assert_eq!(properties["seen_id"], row["message_id"], "{row}");
    }
    // Heartbeats are acked with no row, and counted.
    let heartbeats: Vec<&String> = ids[200..220].iter().collect();
    for id in &heartbeats {
        assert_eq!(host.count(&format!("SELECT count(*) FROM dead_letter WHERE message_id = '{id}'")).await, 0);
    }
    assert_eq!(host.metric("tributary_udf_total", &["outcome=\"dropped\""]).await, 20.0);
    assert_eq!(host.metric("tributary_udf_total", &["outcome=\"passed\""]).await, 200.0);
    assert_eq!(host.metric("tributary_udf_total", &["outcome=\"failed\""]).await, failing.len() as f64);
    // Every failure is one dead letter, stage `udf`, with the original payload and the reason.
    let letters =
        host.sql("SELECT message_id, stage, error_reason, error_message, payload_text FROM dead_letter").await;
    assert_eq!(letters.len(), failing.len(), "{letters:?}");
    let by_id: BTreeMap<&str, &Value> = letters.iter().map(|l| (l["message_id"].as_str().expect("id"), l)).collect();
    for (id, (data, reason)) in ids[220..].iter().zip(&failing) {
        let letter = by_id.get(id.as_str()).unwrap_or_else(|| panic!("no dead letter for {id}: {letters:?}"));
        assert_eq!(letter["stage"], "udf", "{letter}");
        assert_eq!(letter["error_reason"], *reason, "{letter}");
        assert_eq!(letter["payload_text"], String::from_utf8_lossy(data).as_ref(), "the original payload: {letter}");
        assert!(letter["error_message"].as_str().unwrap_or_default().contains("scrub.js"), "{letter}");
    }
    // The host is fine, and nothing is redelivered: no push was answered with an error.
    assert_eq!(host.metric("tributary_pushes_total", &["outcome=\"failed\""]).await, 0.0);
    assert_eq!(host.metric("tributary_pushes_total", &["outcome=\"guest_error\""]).await, 0.0);
}

/// A Dataflow-template UDF, version `v`: tags each event; `null` for heartbeats.
fn dataflow(v: u32) -> String {
    format!(
        r#"
function process(inJson) {{
  var obj = JSON.parse(inJson);
  if (obj.event_type === 'heartbeat') return null;
  obj.udf_version = {v};
  return JSON.stringify(obj);
}}
"#
    )
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_dataflow_udf_reloads_mid_stream_and_a_bad_reload_keeps_the_running_version() {
    let dir = temp_dir("udf-reload");
    write(&dir, "process.js", &dataflow(1));
    let pubsub = PubSub::start().await;
    let (addr, admin) = Host::free_addrs();
    let config = r#"
[[message_transforms]]
routes = ["/push/events"]
javascript = "udfs/process.js"
function = "process"
style = "dataflow"
"#;
    let host = Host::start_in(&dir, &dir.join("data"), addr, admin, config).await;
    pubsub.create_topic("events").await;
    pubsub.create_push_subscription("events-push", "events", &host.push_url(), false).await;

    let total = 600;
    let version = |versions: Vec<Value>| -> BTreeMap<i64, i64> {
        versions.iter().map(|r| (r["v"].as_i64().unwrap_or(-1), r["n"].as_i64().unwrap_or(0))).collect()
    };
    let count_versions = || async {
        version(
            host.sql("SELECT CAST(json_extract(properties, '$.udf_version') AS BIGINT) AS v, count(*) AS n FROM streaming_events GROUP BY 1")
                .await,
        )
    };
    // Three phases of 200 messages: v1, then v2 (reloaded), then a file that no longer compiles (v2 keeps
    // running). Each phase is published in small batches while the previous ones are still arriving.
    let mut published = 0;
    for phase in 0..3 {
        match phase {
            1 => {
                write(&dir, "process.js", &dataflow(2));
                wait_for("the reload", Duration::from_secs(30), || async {
                    (host.metric("tributary_udf_reloads_total", &["result=\"reloaded\""]).await >= 1.0).then_some(())
                })
                .await;
            }
            2 => {
                write(
                    &dir,
                    "process.js",
                    "function process(inJson) {\n  var obj = JSON.parse(inJson)\n  return JSON.stringify(obj;\n}\n",
                );
                wait_for("the refused reload", Duration::from_secs(30), || async {
                    (host.metric("tributary_udf_reloads_total", &["result=\"refused\""]).await >= 1.0).then_some(())
                })
                .await;
            }
            _ => {}
        }
        for batch in 0..10 {
            let messages: Vec<(Vec<u8>, Value)> =
                (0..20).map(|i| (event(published + batch * 20 + i, "page_view"), json!({}))).collect();
            pubsub.publish("events", &messages).await;
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        published += 200;
    }
    let want: BTreeMap<i64, i64> = [(1, 200), (2, 400)].into();
    // Messages in flight during a reload finish on the version they started on, so phase boundaries are
    // not exact: what is exact is the sum (none lost, none twice) and v1 being before every v2.
    wait_eq("every message once", Duration::from_secs(180), &total, || async {
        count_versions().await.values().sum::<i64>()
    })
    .await;
    let got = count_versions().await;
    assert_eq!(got.keys().copied().collect::<Vec<_>>(), vec![1, 2], "{got:?} (want about {want:?})");
    assert!(got[&2] >= 400, "after the refused reload, v2 kept running: {got:?}");
    assert_eq!(host.count("SELECT count(DISTINCT message_id) FROM streaming_events").await, total);
    assert_eq!(host.count("SELECT count(*) FROM dead_letter").await, 0);
    // The refused reload names the file and the line.
    let log = host.log_text();
    let refused =
        log.lines().find(|l| l.contains("does not load")).unwrap_or_else(|| panic!("no refusal logged:\n{log}"));
    assert!(refused.contains("process.js") && refused.contains("line 3"), "{refused}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_udf_that_does_not_compile_stops_the_host_at_start_naming_file_and_line() {
    let dir = temp_dir("udf-start");
    write(&dir, "broken.js", "function scrub(message) {\n  return message\n}}\n");
    let (addr, admin) = Host::free_addrs();
    std::fs::write(
        dir.join("tributary.toml"),
        format!(
            "listen = \"{addr}\"\nadmin_listen = \"{admin}\"\ndata_dir = \"{}\"\n[[message_transforms]]\nroutes = [\"/push/events\"]\njavascript = \"udfs/broken.js\"\nfunction = \"scrub\"\n",
            dir.join("data").display()
        ),
    )
    .expect("config");
    let out = tokio::task::spawn_blocking(move || {
        // Bounded: a host that started anyway would serve forever.
        std::process::Command::new("timeout")
            .args(["120", env!("CARGO_BIN_EXE_tributary"), "up", "--config"])
            .arg(dir.join("tributary.toml"))
            .output()
            .expect("running tributary")
    })
    .await
    .expect("join");
    assert!(!out.status.success());
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(stderr.contains("udfs/broken.js") && stderr.contains("line 3"), "{stderr}");
}
