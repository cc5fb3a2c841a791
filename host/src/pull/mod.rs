//! Pull subscriptions (seed §4.2): StreamingPull streams from Pub/Sub, each message run through a push
//! function exactly as a push would be ([`App::deliver`]), acked only once the function answered 2xx
//! (its rows or its dead letter are durable), nacked (ack deadline 0, so Pub/Sub redelivers at once)
//! on any other answer. While a message waits, its ack deadline is extended.
//!
//! The client is the generated googleapis Pub/Sub v1 gRPC client (`googleapis-tonic-google-pubsub-v1`,
//! the same generator and tonic as the Storage Write client, so no second gRPC stack). Endpoints follow
//! Google's clients: `PUBSUB_EMULATOR_HOST` (plaintext, no credentials) when set, else
//! `pubsub.googleapis.com` over TLS with Application Default Credentials.
//!
//! Flow control: `max_outstanding_messages`/`bytes` go to the server in the stream's first request
//! (Pub/Sub stops sending beyond them) and are enforced here too: a message beyond them waits before
//! it is handed to a function, so memory stays bounded whatever the server does.
//!
//! Exactly-once subscriptions (the stream's `subscription_properties` say so) get their acks and
//! nacks confirmed ([`confirm`]); elsewhere they go out on the stream, unconfirmed, as Pub/Sub's
//! at-least-once contract allows (a lost ack is a redelivery, which dedup absorbs).

mod confirm;

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use anyhow::Context as _;
use base64::Engine as _;
use googleapis_tonic_google_pubsub_v1::google::pubsub::v1 as api;
use serde::Deserialize;
use serde_json::json;
use tokio::sync::{Semaphore, mpsc, watch};
use tonic::transport::{Channel, ClientTlsConfig, Endpoint};

use crate::metrics::{Metrics, SubscriptionLabels};
use crate::server::App;

/// One `[[pull]]` entry.
#[derive(Debug, Clone, Deserialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct PullConfig {
    /// `projects/P/subscriptions/S`.
    pub subscription: String,
    /// The push route whose function receives the messages, e.g. `/push/events`.
    pub route: String,
    /// Messages handed out and not yet acked, at most (the seed's `FlowControl(max_messages=1000)`).
    #[serde(default = "default_max_messages")]
    pub max_outstanding_messages: u32,
    /// Their bytes, at most.
    #[serde(default = "default_max_bytes")]
    pub max_outstanding_bytes: u64,
    /// Parallel StreamingPull streams.
    #[serde(default = "default_streams")]
    pub streams: u32,
    /// The ack deadline the stream asks for, in seconds; extended while a message waits.
    #[serde(default = "default_ack_deadline")]
    pub ack_deadline_seconds: u32,
}

fn default_max_messages() -> u32 {
    1000
}
fn default_max_bytes() -> u64 {
    100 << 20
}
fn default_streams() -> u32 {
    1
}
fn default_ack_deadline() -> u32 {
    60
}

impl PullConfig {
    /// `SUBSCRIPTION=ROUTE`, as `tributary up --pull` takes it; the rest defaults.
    pub fn parse_flag(flag: &str) -> Result<Self, String> {
        let (subscription, route) =
            flag.split_once('=').ok_or_else(|| format!("--pull {flag}: expected projects/P/subscriptions/S=ROUTE"))?;
        Ok(Self {
            subscription: subscription.to_owned(),
            route: route.to_owned(),
            max_outstanding_messages: default_max_messages(),
            max_outstanding_bytes: default_max_bytes(),
            streams: default_streams(),
            ack_deadline_seconds: default_ack_deadline(),
        })
    }

    pub fn validate(&self) -> Result<(), String> {
        let parts: Vec<&str> = self.subscription.split('/').collect();
        if parts.len() != 4
            || parts[0] != "projects"
            || parts[2] != "subscriptions"
            || parts[1].is_empty()
            || parts[3].is_empty()
        {
            return Err(format!("pull.subscription {:?}: expected projects/P/subscriptions/S", self.subscription));
        }
        match crate::functions::find(&self.route) {
            Some((_, _, r)) if r.kind == crate::functions::Kind::Push => {}
            _ => {
                let routes: Vec<&str> = crate::functions::routes(crate::functions::Kind::Push).collect();
                return Err(format!("pull.route {:?} is not a push route (one of {})", self.route, routes.join(", ")));
            }
        }
        if self.max_outstanding_messages == 0 || self.max_outstanding_bytes == 0 || self.streams == 0 {
            return Err(format!(
                "pull {}: max_outstanding_messages, max_outstanding_bytes and streams must be at least 1",
                self.subscription
            ));
        }
        if !(10..=600).contains(&self.ack_deadline_seconds) {
            return Err(format!("pull {}: ack_deadline_seconds must be 10..=600 (Pub/Sub's range)", self.subscription));
        }
        Ok(())
    }
}

/// Where the Pub/Sub API is, and whether it wants a token (also `tributary replay --topic`'s).
pub struct Target {
    endpoint: String,
    auth: Option<Arc<dyn gcp_auth::TokenProvider>>,
}

const SCOPES: &[&str] = &["https://www.googleapis.com/auth/pubsub"];

impl Target {
    /// `PUBSUB_EMULATOR_HOST` when set (as Google's clients), else Pub/Sub itself with ADC.
    pub async fn from_env() -> anyhow::Result<Self> {
        match std::env::var("PUBSUB_EMULATOR_HOST") {
            Ok(host) if !host.is_empty() => Ok(Self { endpoint: format!("http://{host}"), auth: None }),
            _ => Ok(Self {
                endpoint: String::from("https://pubsub.googleapis.com"),
                auth: Some(
                    gcp_auth::provider().await.context("Pub/Sub credentials (Application Default Credentials)")?,
                ),
            }),
        }
    }

    /// Adds the token, when one is needed.
    pub async fn authorize<T>(&self, request: &mut tonic::Request<T>) -> anyhow::Result<()> {
        if let Some(auth) = &self.auth {
            let token = auth.token(SCOPES).await.context("a Pub/Sub token")?;
            request.metadata_mut().insert("authorization", format!("Bearer {}", token.as_str()).parse()?);
        }
        Ok(())
    }

    pub fn channel(&self) -> anyhow::Result<Channel> {
        let mut endpoint = Endpoint::from_shared(self.endpoint.clone())?
            .connect_timeout(Duration::from_secs(5))
            .tcp_nodelay(true)
            .http2_keep_alive_interval(Duration::from_secs(30));
        if self.endpoint.starts_with("https://") {
            endpoint = endpoint.tls_config(ClientTlsConfig::new().with_webpki_roots())?;
        }
        Ok(endpoint.connect_lazy())
    }
}

/// Starts every stream of every `[[pull]]` entry; they stop when `stop` turns true, after their
/// in-flight messages are answered (acked or nacked).
pub async fn start(
    pulls: &[PullConfig],
    app: Arc<App>,
    metrics: Arc<Metrics>,
    stop: watch::Receiver<bool>,
) -> anyhow::Result<Vec<tokio::task::JoinHandle<()>>> {
    if pulls.is_empty() {
        return Ok(Vec::new());
    }
    let target = Arc::new(Target::from_env().await?);
    let channel = target.channel()?;
    let mut tasks = Vec::new();
    for pull in pulls {
        let pull = Arc::new(pull.clone());
        // Flow control is per subscription, shared by its streams.
        let messages = Arc::new(Semaphore::new(pull.max_outstanding_messages as usize));
        let bytes_kib = usize::try_from(pull.max_outstanding_bytes.div_ceil(1024))
            .unwrap_or(usize::MAX)
            .min(Semaphore::MAX_PERMITS);
        let bytes = Arc::new(Semaphore::new(bytes_kib));
        tracing::info!(subscription = %pull.subscription, route = %pull.route, streams = pull.streams, endpoint = %target.endpoint, "pulling");
        for stream in 0..pull.streams {
            let subscriber = Subscriber {
                pull: Arc::clone(&pull),
                stream,
                client: api::subscriber_client::SubscriberClient::new(channel.clone())
                    .max_decoding_message_size(64 << 20)
                    .max_encoding_message_size(16 << 20),
                target: Arc::clone(&target),
                app: Arc::clone(&app),
                metrics: Arc::clone(&metrics),
                messages: Arc::clone(&messages),
                bytes: Arc::clone(&bytes),
                bytes_kib,
                exactly_once: Arc::new(AtomicBool::new(false)),
            };
            tasks.push(tokio::spawn(subscriber.run(stop.clone())));
        }
    }
    Ok(tasks)
}

struct Subscriber {
    pull: Arc<PullConfig>,
    stream: u32,
    client: api::subscriber_client::SubscriberClient<Channel>,
    target: Arc<Target>,
    app: Arc<App>,
    metrics: Arc<Metrics>,
    messages: Arc<Semaphore>,
    bytes: Arc<Semaphore>,
    bytes_kib: usize,
    /// What the server last said of the subscription (`subscription_properties`).
    exactly_once: Arc<AtomicBool>,
}

impl Subscriber {
    fn labels(&self) -> SubscriptionLabels {
        SubscriptionLabels { subscription: self.pull.subscription.clone() }
    }

    /// Opens streams until stopped; a broken stream is reopened with exponential backoff (0.1 s to
    /// 10 s, reset once a stream delivered something).
    async fn run(mut self, mut stop: watch::Receiver<bool>) {
        let mut backoff = Duration::from_millis(100);
        while !*stop.borrow() {
            let delivered = match self.one_stream(&mut stop).await {
                Ok(delivered) => delivered,
                Err(e) => {
                    tracing::warn!(subscription = %self.pull.subscription, stream = self.stream, error = %format!("{e:#}"), "streaming pull failed; reconnecting");
                    false
                }
            };
            if *stop.borrow() {
                break;
            }
            self.metrics.pull_stream_restarts.get_or_create(&self.labels()).inc();
            if delivered {
                backoff = Duration::from_millis(100);
            }
            tokio::select! {
                _ = tokio::time::sleep(backoff) => {}
                _ = stop.changed() => {}
            }
            backoff = (backoff * 2).min(Duration::from_secs(10));
        }
        tracing::info!(subscription = %self.pull.subscription, stream = self.stream, "pull stopped");
    }

    /// One StreamingPull stream, until it breaks or `stop`; returns whether it delivered anything.
    async fn one_stream(&mut self, stop: &mut watch::Receiver<bool>) -> anyhow::Result<bool> {
        let (requests, outbound) = mpsc::channel::<api::StreamingPullRequest>(1024);
        let deadline = i32::try_from(self.pull.ack_deadline_seconds).unwrap_or(60);
        requests
            .send(api::StreamingPullRequest {
                subscription: self.pull.subscription.clone(),
                stream_ack_deadline_seconds: deadline,
                client_id: format!("tributary-{}-{}", std::process::id(), self.stream),
                max_outstanding_messages: i64::from(self.pull.max_outstanding_messages),
                max_outstanding_bytes: i64::try_from(self.pull.max_outstanding_bytes).unwrap_or(i64::MAX),
                ..Default::default()
            })
            .await
            .context("queueing the first request")?;
        let mut request = tonic::Request::new(tokio_stream::wrappers::ReceiverStream::new(outbound));
        self.target.authorize(&mut request).await?;
        request
            .metadata_mut()
            .insert("x-goog-request-params", format!("subscription={}", self.pull.subscription).parse()?);
        let mut inbound = self.client.streaming_pull(request).await.context("opening the stream")?.into_inner();
        let mut handlers = tokio::task::JoinSet::new();
        let mut delivered = false;
        let nack = |ack_id: String| api::StreamingPullRequest {
            modify_deadline_ack_ids: vec![ack_id],
            modify_deadline_seconds: vec![0],
            ..Default::default()
        };
        let outcome = loop {
            if *stop.borrow() {
                break Ok(());
            }
            tokio::select! {
                _ = stop.changed() => break Ok(()),
                Some(_) = handlers.join_next(), if !handlers.is_empty() => {}
                next = inbound.message() => match next {
                    Ok(Some(response)) => {
                        if let Some(properties) = &response.subscription_properties {
                            let was = self.exactly_once.swap(properties.exactly_once_delivery_enabled, Ordering::Relaxed);
                            if was != properties.exactly_once_delivery_enabled {
                                tracing::info!(subscription = %self.pull.subscription, exactly_once = properties.exactly_once_delivery_enabled, "acks are confirmed only on exactly-once subscriptions");
                            }
                        }
                        for received in response.received_messages {
                            delivered = true;
                            let labels = self.labels();
                            self.metrics.pull_received.get_or_create(&labels).inc();
                            let size = received.message.as_ref().map_or(0, |m| m.data.len());
                            let kib = u32::try_from(size.div_ceil(1024).clamp(1, self.bytes_kib)).unwrap_or(u32::MAX);
                            // Flow control: wait here, before the function, for room; stopping
                            // meanwhile hands the message straight back.
                            let permits = async {
                                let message = Arc::clone(&self.messages).acquire_owned().await.ok()?;
                                let bytes = Arc::clone(&self.bytes).acquire_many_owned(kib).await.ok()?;
                                Some((message, bytes))
                            };
                            let permits = if *stop.borrow() {
                                None
                            } else {
                                tokio::select! {
                                    p = permits => p,
                                    _ = stop.changed() => None,
                                }
                            };
                            let Some(permits) = permits else {
                                self.metrics.pull_nacked.get_or_create(&labels).inc();
                                let _ = requests.send(nack(received.ack_id)).await;
                                continue;
                            };
                            self.metrics.pull_outstanding.get_or_create(&labels).inc();
                            let delivery = Delivery {
                                pull: Arc::clone(&self.pull),
                                app: Arc::clone(&self.app),
                                metrics: Arc::clone(&self.metrics),
                                requests: requests.clone(),
                                client: self.client.clone(),
                                target: Arc::clone(&self.target),
                                exactly_once: self.exactly_once.load(Ordering::Relaxed),
                            };
                            handlers.spawn(async move {
                                delivery.handle(received).await;
                                drop(permits);
                            });
                        }
                    }
                    Ok(None) => break Err(anyhow::anyhow!("the server closed the stream")),
                    Err(status) => break Err(anyhow::anyhow!("stream broke: {} {}", status.code(), status.message())),
                },
            }
        };
        // Messages in flight finish (their acks or nacks go out on this stream while it lasts; an
        // ack lost with a broken stream means a redelivery, which dedup absorbs).
        while handlers.join_next().await.is_some() {}
        drop(requests);
        outcome.map(|()| delivered)
    }
}

/// What one message needs to be run and answered.
struct Delivery {
    pull: Arc<PullConfig>,
    app: Arc<App>,
    metrics: Arc<Metrics>,
    requests: mpsc::Sender<api::StreamingPullRequest>,
    client: api::subscriber_client::SubscriberClient<Channel>,
    target: Arc<Target>,
    exactly_once: bool,
}

impl Delivery {
    async fn handle(self, received: api::ReceivedMessage) {
        let labels = SubscriptionLabels { subscription: self.pull.subscription.clone() };
        let ack_id = received.ack_id.clone();
        let (parts, body) = envelope(&self.pull, &received);
        // The ack deadline is extended at half its length while the function (and the group commit) work.
        let every = Duration::from_secs(u64::from(self.pull.ack_deadline_seconds) / 2);
        let deliver = self.app.deliver(&self.pull.route, parts, body);
        tokio::pin!(deliver);
        let mut lease = tokio::time::interval_at(tokio::time::Instant::now() + every, every);
        let status = loop {
            tokio::select! {
                resp = &mut deliver => break resp.status(),
                _ = lease.tick() => {
                    let extend = api::StreamingPullRequest {
                        modify_deadline_ack_ids: vec![ack_id.clone()],
                        modify_deadline_seconds: vec![i32::try_from(self.pull.ack_deadline_seconds).unwrap_or(60)],
                        ..Default::default()
                    };
                    let _ = self.requests.send(extend).await;
                }
            }
        };
        let ack = status.is_success();
        if !ack {
            tracing::debug!(subscription = %self.pull.subscription, %status, "nacking: Pub/Sub redelivers");
        }
        if self.exactly_once {
            let sent = confirm::send(&self.client, &self.target, &self.pull.subscription, &ack_id, !ack).await;
            match sent {
                Ok(()) => {
                    self.metrics.pull_confirmed.get_or_create(&labels).inc();
                }
                Err(e) => {
                    // Pub/Sub redelivers the message; its rows are already durable and dedup keeps them once.
                    tracing::warn!(subscription = %self.pull.subscription, ack, error = %e, "Pub/Sub did not confirm the answer; the message comes back");
                    self.metrics.pull_unconfirmed.get_or_create(&labels).inc();
                }
            }
        } else {
            let answer = if ack {
                api::StreamingPullRequest { ack_ids: vec![ack_id], ..Default::default() }
            } else {
                api::StreamingPullRequest {
                    modify_deadline_ack_ids: vec![ack_id],
                    modify_deadline_seconds: vec![0],
                    ..Default::default()
                }
            };
            // The stream may be gone already: then Pub/Sub redelivers after the deadline, and dedup
            // keeps the rows once.
            let _ = self.requests.send(answer).await;
        }
        if ack {
            self.metrics.pull_acked.get_or_create(&labels).inc();
        } else {
            self.metrics.pull_nacked.get_or_create(&labels).inc();
        }
        self.metrics.pull_outstanding.get_or_create(&labels).dec();
    }
}

/// The push request Pub/Sub would have sent for `received` (the wrapped format, with
/// `deliveryAttempt` when the subscription has a dead-letter policy).
fn envelope(pull: &PullConfig, received: &api::ReceivedMessage) -> (http::request::Parts, bytes::Bytes) {
    let message = received.message.clone().unwrap_or_default();
    let publish_time = message
        .publish_time
        .and_then(|t| chrono::DateTime::from_timestamp(t.seconds, u32::try_from(t.nanos).unwrap_or(0)))
        .map(|t| t.to_rfc3339_opts(chrono::SecondsFormat::Micros, true));
    let mut body = json!({
        "subscription": pull.subscription,
        "message": {
            "data": base64::engine::general_purpose::STANDARD.encode(&message.data),
            "attributes": message.attributes,
            "messageId": message.message_id,
            "publishTime": publish_time,
        },
    });
    if !message.ordering_key.is_empty() {
        body["message"]["orderingKey"] = json!(message.ordering_key);
    }
    if received.delivery_attempt > 0 {
        body["deliveryAttempt"] = json!(received.delivery_attempt);
    }
    let (parts, ()) = http::Request::builder()
        .method(http::Method::POST)
        .uri(pull.route.as_str())
        .header(http::header::CONTENT_TYPE, "application/json")
        .body(())
        .unwrap_or_default()
        .into_parts();
    (parts, bytes::Bytes::from(body.to_string()))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_pulled_message_becomes_the_push_envelope_pubsub_would_send() {
        let pull = PullConfig::parse_flag("projects/p/subscriptions/s=/push/events").expect("flag");
        pull.validate().expect("valid");
        let received = api::ReceivedMessage {
            ack_id: "a1".into(),
            delivery_attempt: 3,
            message: Some(api::PubsubMessage {
                data: b"{\"x\":1}".to_vec(),
                attributes: [("k".to_owned(), "v".to_owned())].into_iter().collect(),
                message_id: "42".into(),
                publish_time: Some(prost_types::Timestamp { seconds: 1_704_103_200, nanos: 5_000 }),
                ordering_key: String::new(),
            }),
        };
        let (parts, body) = envelope(&pull, &received);
        assert_eq!((parts.method, parts.uri.path()), (http::Method::POST, "/push/events"));
        let v: serde_json::Value = serde_json::from_slice(&body).expect("json");
        assert_eq!(
            v,
            json!({"subscription": "projects/p/subscriptions/s", "deliveryAttempt": 3, "message": {
                "data": "eyJ4IjoxfQ==", "attributes": {"k": "v"}, "messageId": "42",
                "publishTime": "2024-01-01T10:00:00.000005Z"}})
        );
    }

    #[test]
    fn bad_pull_settings_are_refused_with_the_reason() {
        assert!(PullConfig::parse_flag("no-equals").is_err());
        let bad = |flag: &str| PullConfig::parse_flag(flag).expect("parses").validate().expect_err(flag);
        assert!(bad("subs/s=/push/events").contains("projects/P/subscriptions/S"));
        assert!(bad("projects/p/subscriptions/s=/push/anomaly/tick").contains("not a push route"));
        let mut c = PullConfig::parse_flag("projects/p/subscriptions/s=/push/events").expect("flag");
        c.ack_deadline_seconds = 5;
        assert!(c.validate().is_err());
    }
}
