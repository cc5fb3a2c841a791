//! The push handler outside this host: `pubsub-push` composed with the transform and the sink adapter
//! (`wac plug`) runs under `wasmtime serve` (Bytecode Alliance's reference wasi:http host, with none of
//! this project's imports), Google's Pub/Sub emulator pushes to it, and the rows land in a Tributary
//! host's warehouse through its insertAll route. `.ci/run` installs `wasmtime` (wasmtime-cli 48.0.8) and
//! `wac` into `TRIBUTARY_TOOLS` (default `~/.cache/tributary/tools/bin`).

use std::path::PathBuf;
use std::process::{Command, Stdio};
use std::time::Duration;

use serde_json::json;

use crate::support::{ChildGuard, Host, PubSub, free_port, temp_dir, wait_for};

fn tool(name: &str) -> PathBuf {
    let dir = std::env::var_os("TRIBUTARY_TOOLS")
        .map(PathBuf::from)
        .unwrap_or_else(|| PathBuf::from(std::env::var_os("HOME").expect("HOME")).join(".cache/tributary/tools/bin"));
    let path = dir.join(name);
    assert!(path.exists(), "{} is missing: `.ci/run` installs it (see README: Development)", path.display());
    path
}

/// `pubsub-push` + `transform` + `sink-http` composed with `wac plug`, served by `wasmtime serve` with
/// the sink adapter pointed at `host` and `envs` besides; returns the guard and the address.
async fn serve_composed(data: &std::path::Path, host: &Host, envs: &[String]) -> (ChildGuard, String) {
    serve_composed_with(data, host, envs, std::path::Path::new(tributary::components::TRANSFORM_PATH)).await
}

/// `wac plug`, checked.
fn plug(socket: &std::path::Path, plugs: &[&std::path::Path], out: &std::path::Path) {
    let mut cmd = Command::new(tool("wac"));
    cmd.arg("plug").arg(socket);
    for p in plugs {
        cmd.arg("--plug").arg(p);
    }
    let done = cmd.arg("-o").arg(out).output().expect("running wac");
    assert!(done.status.success(), "wac plug: {}", String::from_utf8_lossy(&done.stderr));
}

/// [`serve_composed`] with `transform` (a component exporting `transform`) as the push handler's transform.
async fn serve_composed_with(
    data: &std::path::Path,
    host: &Host,
    envs: &[String],
    transform: &std::path::Path,
) -> (ChildGuard, String) {
    let composed = data.join("pubsub_push_composed.wasm");
    let out = Command::new(tool("wac"))
        .arg("plug")
        .arg(tributary::components::PUBSUB_PUSH_PATH)
        .arg("--plug")
        .arg(transform)
        .args(["--plug", tributary::components::SINK_HTTP_PATH])
        .arg("-o")
        .arg(&composed)
        .output()
        .expect("running wac");
    assert!(out.status.success(), "wac plug: {}", String::from_utf8_lossy(&out.stderr));

    let port = free_port();
    let log = std::fs::File::create(data.join("wasmtime-serve.log")).expect("log");
    let insert_all =
        format!("TRIBUTARY_INSERTALL_URL=http://{}/bigquery/v2/projects/local/datasets/tributary", host.admin);
    let child = {
        use std::os::unix::process::CommandExt as _;
        let mut cmd = Command::new(tool("wasmtime"));
        cmd.args(["serve", "-Scli", "-Wcomponent-model-async", "-Sp3", "--addr", &format!("127.0.0.1:{port}")]);
        for env in std::iter::once(&insert_all).chain(envs) {
            cmd.args(["--env", env]);
        }
        cmd.arg(&composed)
            .stdin(Stdio::null())
            .stdout(log.try_clone().expect("log"))
            .stderr(log)
            .process_group(0)
            .spawn()
            .expect("starting wasmtime serve")
    };
    let guard = ChildGuard(child);
    let addr = format!("127.0.0.1:{port}");
    // `wasmtime serve` compiles the component before it listens: with the test tools' unoptimized
    // Cranelift, the JavaScript step (Boa, ~8 MB of wasm) takes ~40 s alone, several times that on a busy
    // machine.
    wait_for("wasmtime serve", Duration::from_secs(300), || async {
        tokio::net::TcpStream::connect(&addr).await.ok().map(|_| ())
    })
    .await;
    (guard, addr)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn composed_push_handler_under_wasmtime_serve_lands_rows_in_the_host() {
    let data = temp_dir("wasmtime-serve");
    let host = Host::start(&data, "").await;

    let (_serve, addr) = serve_composed(&data, &host, &[]).await;

    let pubsub = PubSub::start().await;
    pubsub.create_topic("events").await;
    pubsub.create_push_subscription("serve", "events", &format!("http://{addr}/push/events"), false).await;
    let mut msgs: Vec<(Vec<u8>, serde_json::Value)> = (0..50)
        .map(|i| {
            let e = json!({"user_id": format!("u{i}"), "event_type": "view", "timestamp": "2024-01-01 10:00:00"});
            (e.to_string().into_bytes(), json!({}))
        })
        .collect();
    msgs.push((b"not json".to_vec(), json!({})));
    pubsub.publish("events", &msgs).await;
    wait_for("50 events and 1 dead letter through wasmtime serve", Duration::from_secs(90), || async {
        let done = host.count("SELECT count(*) FROM streaming_events").await == 50
            && host.count("SELECT count(*) FROM dead_letter").await == 1;
        done.then_some(())
    })
    .await;
    let log = std::fs::read_to_string(data.join("wasmtime-serve.log")).unwrap_or_default();
    assert_eq!(host.count("SELECT count(DISTINCT user_id) FROM streaming_events").await, 50, "{log}");
}

/// A message-transform step under a host that does not run steps: `transform-steps` composed with a step
/// component (a Rust test step here) and the transform, plugged into the push handler.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_message_transform_step_composed_in_front_of_the_transform_runs_under_wasmtime_serve() {
    use std::path::Path;
    let data = temp_dir("wasmtime-serve-steps");
    let host = Host::start(&data, "").await;
    let chain = data.join("transform_with_steps.wasm");
    plug(
        Path::new(tributary::components::TRANSFORM_STEPS_PATH),
        &[Path::new(env!("TRIBUTARY_TAG_STEP_WASM")), Path::new(tributary::components::TRANSFORM_PATH)],
        &chain,
    );
    let (_serve, addr) = serve_composed_with(&data, &host, &[], &chain).await;

    let pubsub = PubSub::start().await;
    pubsub.create_topic("events").await;
    pubsub.create_push_subscription("serve-steps", "events", &format!("http://{addr}/push/events"), false).await;
    let mut msgs: Vec<(Vec<u8>, serde_json::Value)> = (0..30)
        .map(|i| {
            let e = json!({"user_id": format!("u{i}"), "event_type": "view", "timestamp": "2024-01-01 10:00:00"});
            (e.to_string().into_bytes(), json!({}))
        })
        .collect();
    msgs.extend(
        (0..5).map(|i| {
            (json!({"user_id": format!("h{i}"), "event_type": "heartbeat"}).to_string().into_bytes(), json!({}))
        }),
    );
    msgs.push((b"not json".to_vec(), json!({})));
    pubsub.publish("events", &msgs).await;
    wait_for("30 tagged events and 1 dead letter through wasmtime serve", Duration::from_secs(90), || async {
        let done = host.count("SELECT count(*) FROM streaming_events").await == 30
            && host.count("SELECT count(*) FROM dead_letter").await == 1;
        done.then_some(())
    })
    .await;
    let tagged = host
        .count("SELECT count(*) FROM streaming_events WHERE CAST(json_extract(properties, '$.tagged') AS BOOLEAN)")
        .await;
    assert_eq!(tagged, 30);
    let letter = host.sql("SELECT stage, error_reason FROM dead_letter").await;
    assert_eq!(letter, vec![json!({"stage": "udf", "error_reason": "udf-error"})]);
}

/// Under a host that does not check push tokens, the push handler checks them itself (configured by
/// environment variables), fetching the signing keys over outbound HTTP.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn composed_push_handler_checks_push_tokens_itself_under_wasmtime_serve() {
    use crate::push_auth::{AUDIENCE, PUSHER, claims};
    use crate::support::{Jwks, TestKey, envelope, http_raw};

    let data = temp_dir("wasmtime-serve-auth");
    let host = Host::start(&data, "").await;
    let key = TestKey::generate("k1");
    let jwks = Jwks::start(vec![key.jwk.clone()]).await;
    let envs = [
        format!("TRIBUTARY_PUSH_AUDIENCE={AUDIENCE}"),
        format!("TRIBUTARY_PUSH_SERVICE_ACCOUNTS={PUSHER}"),
        format!("TRIBUTARY_JWKS_URL={}", jwks.url),
    ];
    let (_serve, addr) = serve_composed(&data, &host, &envs).await;

    let url = format!("http://{addr}/push/events");
    let body = |id: &str| {
        envelope(
            id,
            br#"{"user_id":"u","event_type":"view","timestamp":"2024-01-01 10:00:00"}"#,
            "projects/p/subscriptions/s",
        )
        .into_bytes()
    };
    let bearer = |t: String| format!("Bearer {t}");
    let (status, text) = http_raw("POST", &url, body("a"), &[]).await;
    assert_eq!(status, 401, "no token: {text}");
    let wrong = bearer(key.sign(&claims(json!({"aud": "https://elsewhere"}))));
    let (status, text) = http_raw("POST", &url, body("b"), &[("authorization", wrong.as_str())]).await;
    assert_eq!(status, 403, "wrong audience: {text}");
    let good = bearer(key.sign(&claims(json!({}))));
    let (status, text) = http_raw("POST", &url, body("c"), &[("authorization", good.as_str())]).await;
    assert_eq!(status, 204, "good token: {text}");
    assert_eq!(host.count("SELECT count(*) FROM streaming_events").await, 1, "only the authenticated push landed");
    assert!(*jwks.fetches.lock().expect("lock") >= 1, "the function fetched the keys itself");
}

/// A user's JavaScript UDF (the Pub/Sub SMT style, commas and newlines as users write them) composed in
/// front of the transform under `wasmtime serve`: `js-udf` gets its script and settings from environment
/// variables through the config adapter (`config-env`), since `wasmtime serve` does not serve the
/// wasi:config version the step imports and its `-S config-var` splits values on commas.
const SCRUB_JS: &str = r#"
/**
 * Drops heartbeats, removes the email, tags the attributes; throws on request.
 */
function scrub(message, metadata) {
  const event = JSON.parse(message.data);
  if (event.event_type === 'heartbeat') {
    return null;
  }
  if (event.event_type === 'boom') {
    throw new Error('boom, said the UDF');
  }
  delete event.email;
  event.attrs = Object.assign({}, message.attributes, { scrubbed: 'yes' });
  event.seen_id = metadata.message_id;
  return { data: JSON.stringify(event), attributes: {} };
}
"#;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_javascript_udf_composed_in_front_of_the_transform_runs_under_wasmtime_serve() {
    use std::path::Path;
    let data = temp_dir("wasmtime-serve-js");
    let host = Host::start(&data, "").await;
    let step = data.join("js_udf_on_env.wasm");
    plug(Path::new(tributary::components::JS_UDF_PATH), &[Path::new(tributary::components::CONFIG_ENV_PATH)], &step);
    let chain = data.join("transform_with_js.wasm");
    plug(
        Path::new(tributary::components::TRANSFORM_STEPS_PATH),
        &[&step, Path::new(tributary::components::TRANSFORM_PATH)],
        &chain,
    );
    let envs = [
        format!("TRIBUTARY_CONFIG_UDF_SOURCE={SCRUB_JS}"),
        "TRIBUTARY_CONFIG_UDF_FUNCTION=scrub".to_owned(),
        "TRIBUTARY_CONFIG_UDF_FILE=scrub.js".to_owned(),
    ];
    let (_serve, addr) = serve_composed_with(&data, &host, &envs, &chain).await;

    let pubsub = PubSub::start().await;
    pubsub.create_topic("events").await;
    pubsub.create_push_subscription("serve-js", "events", &format!("http://{addr}/push/events"), false).await;
    let event = |i: usize, kind: &str| {
        json!({"user_id": format!("u{i}"), "event_type": kind, "timestamp": "2024-01-01 10:00:00",
            "email": format!("u{i}@example.com")})
        .to_string()
        .into_bytes()
    };
    let mut msgs: Vec<(Vec<u8>, serde_json::Value)> =
        (0..20).map(|i| (event(i, "view"), json!({"source": "web"}))).collect();
    msgs.extend((0..5).map(|i| (event(100 + i, "heartbeat"), json!({}))));
    msgs.push((event(200, "boom"), json!({})));
    let ids = pubsub.publish("events", &msgs).await;
    wait_for("20 scrubbed events and 1 dead letter through wasmtime serve", Duration::from_secs(180), || async {
        let done = host.count("SELECT count(*) FROM streaming_events").await == 20
            && host.count("SELECT count(*) FROM dead_letter").await == 1;
        done.then_some(())
    })
    .await;
    let log = std::fs::read_to_string(data.join("wasmtime-serve.log")).unwrap_or_default();
    for row in host.sql("SELECT message_id, properties FROM streaming_events").await {
        let properties: serde_json::Value = match &row["properties"] {
            serde_json::Value::String(s) => serde_json::from_str(s).expect("properties JSON"),
            other => other.clone(),
        };
        assert!(properties.get("email").is_none(), "scrubbed: {row}\n{log}");
        assert_eq!(properties["attrs"], json!({"source": "web", "scrubbed": "yes"}), "{row}");
        assert_eq!(properties["seen_id"], row["message_id"], "{row}");
    }
    let letter = host.sql("SELECT message_id, stage, error_reason, error_message, payload_text FROM dead_letter").await;
    assert_eq!(letter[0]["message_id"], json!(ids[25]), "{letter:?}");
    assert_eq!((letter[0]["stage"].as_str(), letter[0]["error_reason"].as_str()), (Some("udf"), Some("udf-error")));
    let message = letter[0]["error_message"].as_str().unwrap_or_default();
    assert!(message.contains("boom, said the UDF") && message.contains("scrub.js"), "{message}");
    assert_eq!(letter[0]["payload_text"].as_str().map(str::as_bytes), Some(&event(200, "boom")[..]));
    // The heartbeats were dropped: acked, no row, no dead letter.
    for id in &ids[20..25] {
        assert_eq!(host.count(&format!("SELECT count(*) FROM streaming_events WHERE message_id = '{id}'")).await, 0);
    }
}
