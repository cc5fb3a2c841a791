//! `tributary replay FILE.jsonl`: replays a JSON-lines file, one message per line, either as push
//! deliveries to a function URL (`--url`, the wrapped envelope Pub/Sub sends) or as publishes to a
//! topic (`--topic`, through the Pub/Sub gRPC API; `PUBSUB_EMULATOR_HOST` honoured). A line is either
//! `{"data": ..., "attributes": {...}}` (`data` a string is sent as is, anything else as its JSON) or
//! the message's data itself. With `--message-ids-from-content` a pushed line's message id is a digest
//! of the line, so a rerun changes nothing (the host dedups on it); otherwise every run is new.
//! `tributary load products` is a replay to `/push/products` with ids from content.

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::Context as _;
use base64::Engine as _;
use futures::StreamExt as _;
use serde_json::{Map, Value, json};
use sha2::{Digest as _, Sha256};

/// Where a replay goes and how fast.
#[derive(Debug, Clone, clap::Args)]
pub struct ReplayOptions {
    /// The JSON-lines file.
    pub file: PathBuf,
    /// Push each line to this function URL, e.g. http://127.0.0.1:3000/push/events.
    #[arg(long, conflicts_with = "topic", required_unless_present = "topic")]
    pub url: Option<String>,
    /// Publish each line to this topic instead: projects/P/topics/T.
    #[arg(long)]
    pub topic: Option<String>,
    /// Requests in flight at once.
    #[arg(long, default_value_t = 16)]
    pub concurrency: usize,
    /// At most this many lines per second (0: as fast as the target takes them).
    #[arg(long, default_value_t = 0)]
    pub rate: u32,
    /// Message ids from each line's content (pushes only), so reruns are idempotent.
    #[arg(long)]
    pub message_ids_from_content: bool,
    /// A push answered 429/503 or not at all is retried this many times (with backoff) before it counts as an error.
    #[arg(long, default_value_t = 5)]
    pub retries: usize,
}

/// What a replay did.
#[derive(Debug, Default, PartialEq)]
pub struct ReplayReport {
    pub delivered: usize,
    /// Lines the function refused (dead-lettered, with their reason, in `dead_letter`).
    pub dead_lettered: usize,
    /// Lines that could not be delivered (the first error is kept).
    pub errors: usize,
    pub first_error: Option<String>,
    pub seconds: f64,
}

impl std::fmt::Display for ReplayReport {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let rate = if self.seconds > 0.0 { self.delivered as f64 / self.seconds } else { 0.0 };
        write!(f, "{} delivered in {:.1} s ({rate:.0}/s)", self.delivered, self.seconds)?;
        if self.dead_lettered > 0 {
            write!(f, ", {} dead-lettered by the function (see the dead_letter table)", self.dead_lettered)?;
        }
        if self.errors > 0 {
            write!(f, ", {} failed (first: {})", self.errors, self.first_error.as_deref().unwrap_or("?"))?;
        }
        Ok(())
    }
}

/// One line as a message: its data and attributes.
#[derive(Debug, PartialEq)]
pub struct Line {
    pub number: usize,
    pub data: Vec<u8>,
    pub attributes: Map<String, Value>,
    /// A digest of the line, for `--message-ids-from-content`.
    pub digest: String,
}

/// Parses a JSON-lines text: blank lines are skipped.
pub fn parse(text: &str) -> Vec<Line> {
    text.lines()
        .enumerate()
        .filter(|(_, l)| !l.trim().is_empty())
        .map(|(i, l)| {
            let l = l.trim();
            let digest = hex::encode(&Sha256::digest(l.as_bytes())[..12]);
            let (data, attributes) = match serde_json::from_str::<Value>(l) {
                Ok(Value::Object(mut o))
                    if o.contains_key("data") && o.keys().all(|k| k == "data" || k == "attributes") =>
                {
                    let data = match o.remove("data") {
                        Some(Value::String(s)) => s.into_bytes(),
                        Some(other) => other.to_string().into_bytes(),
                        None => Vec::new(),
                    };
                    let attributes = match o.remove("attributes") {
                        Some(Value::Object(a)) => a,
                        _ => Map::new(),
                    };
                    (data, attributes)
                }
                _ => (l.as_bytes().to_vec(), Map::new()),
            };
            Line { number: i + 1, data, attributes, digest }
        })
        .collect()
}

/// Replays `options.file`, with a progress bar on stderr.
pub async fn run(options: &ReplayOptions) -> anyhow::Result<ReplayReport> {
    let lines = read(&options.file)?;
    let bar = progress(lines.len() as u64);
    let started = Instant::now();
    let mut report = match (&options.url, &options.topic) {
        (Some(url), _) => push_all(url, lines, options, &bar).await,
        (None, Some(topic)) => publish_all(topic, lines, options, &bar).await?,
        (None, None) => anyhow::bail!("--url or --topic is needed"),
    };
    bar.finish_and_clear();
    report.seconds = started.elapsed().as_secs_f64();
    Ok(report)
}

fn read(file: &Path) -> anyhow::Result<Vec<Line>> {
    let text = std::fs::read_to_string(file).with_context(|| format!("reading {}", file.display()))?;
    Ok(parse(&text))
}

fn progress(len: u64) -> indicatif::ProgressBar {
    let bar = indicatif::ProgressBar::new(len);
    bar.set_style(
        indicatif::ProgressStyle::with_template("{bar:40} {human_pos}/{human_len} lines  {per_sec}  eta {eta}  {msg}")
            .unwrap_or_else(|_| indicatif::ProgressStyle::default_bar()),
    );
    bar
}

/// Paces lines at `rate` per second (no pacing at 0).
fn pacer(rate: u32) -> Option<Arc<tokio::sync::Mutex<tokio::time::Interval>>> {
    (rate > 0).then(|| {
        let mut every = tokio::time::interval(Duration::from_secs_f64(1.0 / f64::from(rate)));
        every.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        Arc::new(tokio::sync::Mutex::new(every))
    })
}

enum Outcome {
    Delivered,
    DeadLettered,
    Failed(String),
}

fn tally(report: &mut ReplayReport, bar: &indicatif::ProgressBar, number: usize, outcome: Outcome) {
    match outcome {
        Outcome::Delivered => report.delivered += 1,
        Outcome::DeadLettered => report.dead_lettered += 1,
        Outcome::Failed(e) => {
            report.errors += 1;
            report.first_error.get_or_insert_with(|| format!("line {number}: {e}"));
            bar.set_message(format!("{} errors", report.errors));
        }
    }
    bar.inc(1);
}

async fn push_all(url: &str, lines: Vec<Line>, options: &ReplayOptions, bar: &indicatif::ProgressBar) -> ReplayReport {
    let client = reqwest::Client::builder().timeout(Duration::from_secs(60)).build().unwrap_or_default();
    let run = chrono::Utc::now().timestamp_millis();
    let pace = pacer(options.rate);
    let publish_time = chrono::Utc::now().to_rfc3339_opts(chrono::SecondsFormat::Micros, true);
    let mut results = futures::stream::iter(lines.into_iter().map(|line| {
        let (client, pace, publish_time) = (client.clone(), pace.clone(), publish_time.clone());
        let id = if options.message_ids_from_content {
            format!("replay-{}", line.digest)
        } else {
            format!("replay-{run}-{}", line.number)
        };
        async move {
            if let Some(pace) = pace {
                pace.lock().await.tick().await;
            }
            let envelope = json!({
                "subscription": "projects/-/subscriptions/tributary-replay",
                "message": {
                    "data": base64::engine::general_purpose::STANDARD.encode(&line.data),
                    "attributes": line.attributes,
                    "messageId": id,
                    "publishTime": publish_time,
                },
            });
            (line.number, push_one(&client, url, envelope.to_string(), options.retries).await)
        }
    }))
    .buffer_unordered(options.concurrency.max(1));
    let mut report = ReplayReport::default();
    while let Some((number, outcome)) = results.next().await {
        tally(&mut report, bar, number, outcome);
    }
    report
}

/// One push, retried with backoff while the host answers 429/503 or cannot be reached.
async fn push_one(client: &reqwest::Client, url: &str, body: String, retries: usize) -> Outcome {
    use backon::Retryable as _;
    let attempt = || async {
        let resp = client
            .post(url)
            .header(reqwest::header::CONTENT_TYPE, "application/json")
            .body(body.clone())
            .send()
            .await
            .map_err(|e| (true, e.to_string()))?;
        let status = resp.status().as_u16();
        let text = resp.text().await.unwrap_or_default();
        match status {
            200..=299 if text.starts_with("dead-lettered") => Ok(Outcome::DeadLettered),
            200..=299 => Ok(Outcome::Delivered),
            429 | 500 | 503 => Err((true, format!("{status} {}", text.trim()))),
            _ => Err((false, format!("{status} {}", text.trim()))),
        }
    };
    let backoff = backon::ExponentialBuilder::default()
        .with_min_delay(Duration::from_millis(100))
        .with_max_delay(Duration::from_secs(5))
        .with_max_times(retries);
    attempt.retry(backoff).when(|(retry, _)| *retry).await.unwrap_or_else(|(_, e)| Outcome::Failed(e))
}

async fn publish_all(
    topic: &str,
    lines: Vec<Line>,
    options: &ReplayOptions,
    bar: &indicatif::ProgressBar,
) -> anyhow::Result<ReplayReport> {
    use googleapis_tonic_google_pubsub_v1::google::pubsub::v1 as api;
    let target = tributary::pull::Target::from_env().await?;
    let client = api::publisher_client::PublisherClient::new(target.channel()?);
    let pace = pacer(options.rate);
    // Publishes go in batches of up to 100 messages (one request each).
    let batches: Vec<Vec<Line>> = lines.into_iter().fold(Vec::new(), |mut batches: Vec<Vec<Line>>, line| {
        match batches.last_mut() {
            Some(b) if b.len() < 100 => b.push(line),
            _ => batches.push(vec![line]),
        }
        batches
    });
    let mut results = futures::stream::iter(batches.into_iter().map(|batch| {
        let (mut client, pace, target) = (client.clone(), pace.clone(), &target);
        async move {
            if let Some(pace) = &pace {
                for _ in 0..batch.len() {
                    pace.lock().await.tick().await;
                }
            }
            let messages = batch
                .iter()
                .map(|l| api::PubsubMessage {
                    data: l.data.clone(),
                    attributes: l
                        .attributes
                        .iter()
                        .map(|(k, v)| (k.clone(), v.as_str().map_or_else(|| v.to_string(), str::to_owned)))
                        .collect(),
                    ..Default::default()
                })
                .collect();
            let mut request = tonic::Request::new(api::PublishRequest { topic: topic.to_owned(), messages });
            let outcome = match target.authorize(&mut request).await {
                Err(e) => Err(format!("{e:#}")),
                Ok(()) => {
                    client.publish(request).await.map(|_| ()).map_err(|s| format!("{} {}", s.code(), s.message()))
                }
            };
            (batch.iter().map(|l| l.number).collect::<Vec<_>>(), outcome)
        }
    }))
    .buffer_unordered(options.concurrency.max(1));
    let mut report = ReplayReport::default();
    while let Some((numbers, outcome)) = results.next().await {
        for number in numbers {
            let o = match &outcome {
                Ok(()) => Outcome::Delivered,
                Err(e) => Outcome::Failed(e.clone()),
            };
            tally(&mut report, bar, number, o);
        }
    }
    Ok(report)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn lines_are_messages_or_data_and_attributes() {
        let lines = parse(
            "{\"user_id\":\"u\",\"event_type\":\"x\"}\n\n{\"data\":\"raw text\",\"attributes\":{\"a\":\"1\"}}\n{\"data\":{\"k\":1}}\nnot json\n",
        );
        assert_eq!(lines.len(), 4);
        assert_eq!((lines[0].number, lines[0].data.as_slice()), (1, br#"{"user_id":"u","event_type":"x"}"#.as_slice()));
        assert_eq!((lines[1].number, lines[1].data.as_slice()), (3, b"raw text".as_slice()));
        assert_eq!(lines[1].attributes["a"], "1");
        assert_eq!(lines[2].data, br#"{"k":1}"#.to_vec());
        assert_eq!(lines[3].data, b"not json".to_vec(), "a line that is not JSON is data too");
        assert_eq!(
            parse("{\"a\":1}")[0].digest,
            parse("  {\"a\":1}  ")[0].digest,
            "the digest ignores surrounding space"
        );
        assert_ne!(lines[0].digest, lines[2].digest);
    }
}
