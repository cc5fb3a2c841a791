//! Google's Pub/Sub emulator (it ships with the Google Cloud SDK on this project's machines).

use std::process::{Command, Stdio};
use std::time::Duration;

use base64::Engine as _;
use serde_json::{Value, json};

use super::{ChildGuard, free_port, http, reqwest_get, temp_dir, wait_for};

pub const EMULATOR: &str = "/usr/lib/google-cloud-sdk/platform/pubsub-emulator/bin/cloud-pubsub-emulator";

/// Google's Pub/Sub emulator.
pub struct PubSub {
    pub base: String,
    _child: ChildGuard,
}

impl PubSub {
    pub async fn start() -> Self {
        use std::os::unix::process::CommandExt as _;
        let port = free_port();
        let log = std::fs::File::create(temp_dir("pubsub").join("emulator.log")).expect("log file");
        let child = Command::new(EMULATOR)
            .args(["--host=127.0.0.1", &format!("--port={port}")])
            .stdin(Stdio::null())
            .stdout(log.try_clone().expect("log"))
            .stderr(log)
            .process_group(0)
            .spawn()
            .unwrap_or_else(|e| panic!("starting the Pub/Sub emulator at {EMULATOR}: {e} (see README: Development)"));
        let me =
            Self { base: format!("http://127.0.0.1:{port}/v1/projects/tributary-test"), _child: ChildGuard(child) };
        let url = format!("{}/topics", me.base);
        wait_for("the Pub/Sub emulator", Duration::from_secs(60), || async {
            reqwest_get(&url).await.filter(|(s, _)| *s == 200).map(|_| ())
        })
        .await;
        me
    }

    pub async fn create_topic(&self, topic: &str) {
        let (status, body) = http("PUT", &format!("{}/topics/{topic}", self.base), None).await;
        assert_eq!(status, 200, "create topic: {body}");
    }

    /// A push subscription to `endpoint`; `unwrapped` uses `noWrapper` with write-metadata.
    pub async fn create_push_subscription(&self, name: &str, topic: &str, endpoint: &str, unwrapped: bool) {
        let mut push = json!({ "pushEndpoint": endpoint });
        if unwrapped {
            push["noWrapper"] = json!({ "writeMetadata": true });
        }
        let body = json!({ "topic": format!("projects/tributary-test/topics/{topic}"), "pushConfig": push, "ackDeadlineSeconds": 10 });
        let (status, text) = http("PUT", &format!("{}/subscriptions/{name}", self.base), Some(body)).await;
        assert_eq!(status, 200, "create subscription: {text}");
    }

    /// A pull subscription (no push endpoint).
    pub async fn create_pull_subscription(&self, name: &str, topic: &str) {
        self.create_pull_subscription_with(name, topic, false).await;
    }

    /// A pull subscription, with exactly-once delivery when asked.
    pub async fn create_pull_subscription_with(&self, name: &str, topic: &str, exactly_once: bool) {
        let body = json!({ "topic": format!("projects/tributary-test/topics/{topic}"), "ackDeadlineSeconds": 10,
            "enableExactlyOnceDelivery": exactly_once });
        let (status, text) = http("PUT", &format!("{}/subscriptions/{name}", self.base), Some(body)).await;
        assert_eq!(status, 200, "create subscription: {text}");
    }

    /// `host:port` of the emulator, for `PUBSUB_EMULATOR_HOST`.
    pub fn emulator_host(&self) -> String {
        self.base.trim_start_matches("http://").split('/').next().unwrap_or_default().to_owned()
    }

    /// Publishes raw payloads (with attributes); returns the message ids, in order.
    pub async fn publish(&self, topic: &str, messages: &[(Vec<u8>, Value)]) -> Vec<String> {
        let mut ids = Vec::new();
        for chunk in messages.chunks(100) {
            let msgs: Vec<Value> = chunk
                .iter()
                .map(|(data, attrs)| json!({ "data": base64::engine::general_purpose::STANDARD.encode(data), "attributes": attrs }))
                .collect();
            let (status, text) =
                http("POST", &format!("{}/topics/{topic}:publish", self.base), Some(json!({ "messages": msgs }))).await;
            assert_eq!(status, 200, "publish: {text}");
            let v: Value = serde_json::from_str(&text).expect("publish response");
            ids.extend(v["messageIds"].as_array().expect("ids").iter().map(|i| i.as_str().expect("id").to_owned()));
        }
        ids
    }
}
