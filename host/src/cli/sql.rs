//! `tributary sql`: SQL on the embedded warehouse, through the running host's admin route (DuckDB
//! allows one writing process per file), or on the file itself, read-only, when no host runs.

use std::net::SocketAddr;
use std::path::PathBuf;

use anyhow::{Context as _, bail};
use clap::ValueEnum;
use serde_json::Value;

#[derive(Clone, Copy, ValueEnum)]
pub enum Format {
    /// Aligned columns.
    Table,
    /// One JSON object per row.
    Json,
}

pub async fn run(query: &str, format: Format, admin: SocketAddr, data: PathBuf) -> anyhow::Result<()> {
    let rows = match tributary::client::post(admin, "/query", &[], query.as_bytes().to_vec()).await {
        Ok((200, body)) => {
            let v: Value = serde_json::from_slice(&body).context("the host answered with invalid JSON")?;
            v.get("rows").and_then(Value::as_array).cloned().unwrap_or_default()
        }
        Ok((_, body)) => bail!("{}", String::from_utf8_lossy(&body).trim()),
        Err(_) => {
            // No host: DuckDB lets this process open the file read-only.
            let path = data.join("warehouse.duckdb");
            if !path.exists() {
                bail!("no host answers on {admin} and there is no warehouse at {}", path.display());
            }
            let conn = duckdb::Connection::open_with_flags(
                &path,
                duckdb::Config::default().access_mode(duckdb::AccessMode::ReadOnly)?,
            )?;
            tributary::admin::query_json(&conn, query)?
        }
    };
    match format {
        Format::Json => {
            for row in &rows {
                println!("{row}");
            }
        }
        Format::Table => print!("{}", table(&rows)),
    }
    Ok(())
}

/// Renders rows as aligned columns; strings bare, everything else as JSON.
fn table(rows: &[Value]) -> String {
    let Some(first) = rows.first().and_then(Value::as_object) else { return "(0 rows)\n".to_owned() };
    let columns: Vec<&String> = first.keys().collect();
    let cell = |row: &Value, c: &str| match row.get(c) {
        Some(Value::String(s)) => s.clone(),
        Some(Value::Null) | None => "NULL".to_owned(),
        Some(v) => v.to_string(),
    };
    let mut widths: Vec<usize> = columns.iter().map(|c| c.chars().count()).collect();
    for row in rows {
        for (w, c) in widths.iter_mut().zip(&columns) {
            *w = (*w).max(cell(row, c).chars().count());
        }
    }
    let line = |cells: Vec<String>| {
        cells.iter().zip(&widths).map(|(c, w)| format!("{c:<w$}")).collect::<Vec<_>>().join(" | ").trim_end().to_owned()
    };
    let mut out = line(columns.iter().map(|c| (*c).clone()).collect()) + "\n";
    out += &widths.iter().map(|w| "-".repeat(*w)).collect::<Vec<_>>().join("-+-");
    out += "\n";
    for row in rows {
        out += &line(columns.iter().map(|c| cell(row, c)).collect());
        out += "\n";
    }
    out += &format!("({} row{})\n", rows.len(), if rows.len() == 1 { "" } else { "s" });
    out
}
