//! The examples under `examples/` are built and exercised: a transform component written in Python
//! (componentize-py, world `transform-component`) producing rows from messages the Pub/Sub emulator
//! pushes.

use std::path::PathBuf;
use std::time::Duration;

use serde_json::{Value, json};

use crate::support::{Host, PubSub, temp_dir, wait_for};

/// componentize-py, as `tests/run` installs it (`TRIBUTARY_COMPONENTIZE_PY`, default
/// `~/.cache/tributary/py-venv/bin/componentize-py`).
fn componentize_py() -> PathBuf {
    let path = std::env::var_os("TRIBUTARY_COMPONENTIZE_PY").map(PathBuf::from).unwrap_or_else(|| {
        PathBuf::from(std::env::var_os("HOME").unwrap_or_default()).join(".cache/tributary/py-venv/bin/componentize-py")
    });
    assert!(path.exists(), "componentize-py is not at {} (tests/run installs it)", path.display());
    path
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_python_transform_component_produces_rows() {
    let dir = temp_dir("python");
    // The tests belong to the host package (host/); the examples sit beside it.
    let root = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("..");
    let wasm = dir.join("python-transform.wasm");
    let (tool, out) = (componentize_py(), wasm.clone());
    let built = tokio::task::spawn_blocking(move || {
        std::process::Command::new("timeout")
            .arg("600")
            .arg(tool)
            .args(["-d", "../../wit", "-w", "transform-component", "componentize", "app", "-o"])
            .arg(out)
            .current_dir(root.join("examples/python-transform"))
            .output()
            .expect("running componentize-py")
    })
    .await
    .expect("join");
    assert!(built.status.success(), "componentize-py failed: {}", String::from_utf8_lossy(&built.stderr));

    let pubsub = PubSub::start().await;
    let (addr, admin) = Host::free_addrs();
    let config = format!("[components]\ntransform = \"{}\"\n", wasm.display());
    let host = Host::start_in(&dir, &dir.join("data"), addr, admin, &config).await;
    pubsub.create_topic("shop").await;
    pubsub.create_push_subscription("shop-push", "shop", &host.push_url(), false).await;
    let mut messages: Vec<(Vec<u8>, Value)> = (0..50)
        .map(|i| {
            let event = json!({"user": 100 + i, "action": "add_to_cart", "at": 1_764_700_000 + i, "page": "/cart", "sku": format!("sku-{i}")});
            (event.to_string().into_bytes(), json!({"shop": "eu"}))
        })
        .collect();
    messages.push((br#"{"user": 1}"#.to_vec(), json!({})));
    let ids = pubsub.publish("shop", &messages).await;

    wait_for("the rows and the dead letter", Duration::from_secs(180), || async {
        let rows = host.count("SELECT count(*) FROM streaming_events").await;
        let letters = host.count("SELECT count(*) FROM dead_letter").await;
        (rows >= 50 && letters >= 1).then_some(())
    })
    .await;
    let rows = host
        .sql("SELECT user_id, event_type, CAST(timestamp AS VARCHAR) AS ts, page_url, properties FROM streaming_events WHERE user_id = '107'")
        .await;
    assert_eq!(rows.len(), 1, "{rows:?}");
    let properties: Value = match &rows[0]["properties"] {
        Value::String(s) => serde_json::from_str(s).expect("properties JSON"),
        other => other.clone(),
    };
    assert_eq!(properties, json!({"sku": "sku-7", "transformed_by": "python", "attributes": {"shop": "eu"}}));
    assert_eq!((&rows[0]["event_type"], &rows[0]["page_url"]), (&json!("add_to_cart"), &json!("/cart")));
    assert!(rows[0]["ts"].as_str().unwrap_or_default().starts_with("2025-12-02 18:26:47"), "{rows:?}");
    let letter =
        host.sql(&format!("SELECT stage, error_reason FROM dead_letter WHERE message_id = '{}'", ids[50])).await;
    assert_eq!(letter, vec![json!({"stage": "transform", "error_reason": "missing-field"})]);
    assert_eq!(host.count("SELECT count(*) FROM streaming_events").await, 50);
}
