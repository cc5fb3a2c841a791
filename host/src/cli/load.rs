//! `tributary load products FILE.jsonl`: a bulk catalog load that goes through the same function as
//! the catalog stream (`POST /push/products`), so the function's state and the `products` table stay
//! one. Each line is pushed the way an unwrapped Pub/Sub push arrives, with a message id derived from
//! the line's content: loading the same file twice changes nothing.

use std::fmt;
use std::net::SocketAddr;
use std::path::Path;

use anyhow::Context as _;
use futures::StreamExt as _;
use sha2::{Digest as _, Sha256};

/// What a load did.
#[derive(Debug, Default)]
pub struct LoadReport {
    pub pushed: usize,
    /// Lines the function refused (dead-lettered, with their reason, in `dead_letter`).
    pub refused: usize,
}

impl fmt::Display for LoadReport {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{} products pushed", self.pushed)?;
        if self.refused > 0 {
            write!(f, ", {} refused (see the dead_letter table)", self.refused)?;
        }
        Ok(())
    }
}

/// Pushes every non-empty line of `file` to `host`'s `/push/products`, `concurrency` at a time.
/// Fails on the first push the host does not acknowledge (the lines before it are in).
pub async fn products(host: SocketAddr, file: &Path, concurrency: usize) -> anyhow::Result<LoadReport> {
    let text = std::fs::read_to_string(file).with_context(|| format!("reading {}", file.display()))?;
    let lines: Vec<(usize, &str)> =
        text.lines().enumerate().map(|(i, l)| (i + 1, l.trim())).filter(|(_, l)| !l.is_empty()).collect();
    let publish_time = chrono::Utc::now().to_rfc3339_opts(chrono::SecondsFormat::Micros, true);
    let mut report = LoadReport::default();
    let mut results = futures::stream::iter(lines.into_iter().map(|(number, line)| {
        let id = format!("load-{}", hex::encode(&Sha256::digest(line.as_bytes())[..12]));
        let publish_time = publish_time.clone();
        async move {
            let headers = [
                ("content-type", "application/json"),
                ("x-goog-pubsub-message-id", id.as_str()),
                ("x-goog-pubsub-publish-time", publish_time.as_str()),
            ];
            let result = tributary::client::post(host, "/push/products", &headers, line.to_owned()).await;
            (number, result)
        }
    }))
    .buffer_unordered(concurrency.max(1));
    while let Some((number, result)) = results.next().await {
        let (status, body) = result.with_context(|| format!("line {number}: pushing to {host}"))?;
        match status {
            200 if body.starts_with(b"dead-lettered") => report.refused += 1,
            200..=299 => report.pushed += 1,
            _ => anyhow::bail!("line {number}: the host answered {status}: {}", String::from_utf8_lossy(&body)),
        }
    }
    Ok(report)
}
