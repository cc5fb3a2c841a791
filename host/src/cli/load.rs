//! `tributary load products FILE.jsonl`: a bulk catalog load that goes through the same function as
//! the catalog stream (`POST /push/products`), so the function's state and the `products` table stay
//! one. It is a replay ([`super::replay`]) with message ids from each line's content: loading the same
//! file twice changes nothing.

use std::fmt;
use std::net::SocketAddr;
use std::path::Path;

use super::replay::{ReplayOptions, run};

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
/// Fails when a line could not be delivered (the others are in).
pub async fn products(host: SocketAddr, file: &Path, concurrency: usize) -> anyhow::Result<LoadReport> {
    let options = ReplayOptions {
        file: file.to_owned(),
        url: Some(format!("http://{host}/push/products")),
        topic: None,
        concurrency,
        rate: 0,
        message_ids_from_content: true,
        retries: 5,
    };
    let report = run(&options).await?;
    if report.errors > 0 {
        anyhow::bail!("{} lines were not loaded: {}", report.errors, report.first_error.unwrap_or_default());
    }
    Ok(LoadReport { pushed: report.delivered, refused: report.dead_lettered })
}
