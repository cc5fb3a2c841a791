//! `tributary`: run the host, query its warehouse, benchmark it.

use std::net::SocketAddr;
use std::path::PathBuf;

use anyhow::{Context as _, bail};
use clap::{Parser, Subcommand, ValueEnum};
use serde_json::Value;
use tracing_subscriber::EnvFilter;
use tributary::config::Config;

#[derive(Parser)]
#[command(name = "tributary", version, about = "Pub/Sub push → wasm functions → warehouse rows")]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Serve the push routes (default 127.0.0.1:3000) with the embedded warehouse under ./.tributary.
    Up {
        /// Address of the function routes (overrides `listen`).
        #[arg(long)]
        listen: Option<SocketAddr>,
        /// Address of the admin routes (overrides `admin_listen`).
        #[arg(long)]
        admin_listen: Option<SocketAddr>,
        /// Data directory (overrides `data_dir`).
        #[arg(long)]
        data: Option<PathBuf>,
        /// Configuration file (TOML); every key has a default.
        #[arg(long)]
        config: Option<PathBuf>,
    },
    /// Run SQL on the warehouse: through the running host, or on the file when no host runs.
    Sql {
        query: String,
        #[arg(long, value_enum, default_value = "table")]
        format: Format,
        /// The running host's admin address.
        #[arg(long, default_value = "127.0.0.1:3001")]
        admin: SocketAddr,
        /// Data directory, used when no host answers.
        #[arg(long, default_value = ".tributary")]
        data: PathBuf,
    },
    /// Benchmark the wasm push path against the native baseline in one run.
    Bench(tributary::bench::BenchOptions),
    /// Bulk-load data through a running host's functions.
    Load {
        #[command(subcommand)]
        what: LoadKind,
        /// The running host's function address.
        #[arg(long, default_value = "127.0.0.1:3000", global = true)]
        host: SocketAddr,
    },
    /// BigQuery helpers, using the `[bigquery]` section of the config.
    Bigquery {
        #[command(subcommand)]
        action: BigqueryAction,
        /// Configuration file (TOML) with the `[bigquery]` section.
        #[arg(long, global = true)]
        config: Option<PathBuf>,
    },
}

#[derive(Subcommand)]
enum BigqueryAction {
    /// Create (or replace) the seed's analytics views (sql/*.sql) in the dataset.
    Views,
    /// Print the built-in tables' DDL for the configured project, dataset and partitioning.
    Ddl,
}

#[derive(Subcommand)]
enum LoadKind {
    /// A product catalog, one JSON product per line (`product_id`, `product_name`, `category`,
    /// `popularity_score`, `status`), pushed to `/push/products` as catalog changes.
    Products {
        file: PathBuf,
        /// Pushes in flight at once.
        #[arg(long, default_value_t = 8)]
        concurrency: usize,
    },
}

#[derive(Clone, Copy, ValueEnum)]
enum Format {
    /// Aligned columns.
    Table,
    /// One JSON object per row.
    Json,
}

fn main() -> anyhow::Result<()> {
    tracing_subscriber::fmt()
        .with_env_filter(EnvFilter::try_from_default_env().unwrap_or_else(|_| EnvFilter::new("info,wasmtime=warn")))
        .with_writer(std::io::stderr)
        .init();
    let cli = Cli::parse();
    let runtime = tokio::runtime::Builder::new_multi_thread().enable_all().build()?;
    match cli.command {
        Command::Up { listen, admin_listen, data, config } => runtime.block_on(up(listen, admin_listen, data, config)),
        Command::Sql { query, format, admin, data } => runtime.block_on(sql(&query, format, admin, data)),
        Command::Bigquery { action, config } => runtime.block_on(bigquery(action, config)),
        Command::Load { what: LoadKind::Products { file, concurrency }, host } => runtime.block_on(async {
            let report = tributary::load::products(host, &file, concurrency).await?;
            println!("{report}");
            Ok(())
        }),
        Command::Bench(options) => runtime.block_on(async {
            let report = tributary::bench::run(&options).await?;
            println!("{report}");
            Ok(())
        }),
    }
}

async fn bigquery(action: BigqueryAction, config: Option<PathBuf>) -> anyhow::Result<()> {
    use tributary::warehouse::bigquery::{auth::Auth, rest::Rest, views};
    let cfg = Config::load(config.as_deref())?;
    let bq = &cfg.bigquery;
    if bq.project.is_empty() {
        bail!("bigquery.project is not set (pass --config with a [bigquery] section)");
    }
    match action {
        BigqueryAction::Ddl => print!("{}", views::ddl(&bq.project, &bq.dataset, bq.partition)),
        BigqueryAction::Views => {
            let rest = Rest::new(bq, std::sync::Arc::new(Auth::new(bq.credentials).await?))?;
            for name in views::apply(&rest).await? {
                println!("view {}.{}.{name} created", bq.project, bq.dataset);
            }
        }
    }
    Ok(())
}

async fn up(
    listen: Option<SocketAddr>,
    admin_listen: Option<SocketAddr>,
    data: Option<PathBuf>,
    config: Option<PathBuf>,
) -> anyhow::Result<()> {
    let mut cfg = Config::load(config.as_deref())?;
    cfg.listen = listen.unwrap_or(cfg.listen);
    cfg.admin_listen = admin_listen.unwrap_or(cfg.admin_listen);
    cfg.data_dir = data.unwrap_or(cfg.data_dir);
    let host = tributary::start(&cfg, tributary::Mode::Wasm).await?;
    tracing::info!(
        listen = %host.addr,
        admin = %host.admin_addr,
        data = %cfg.data_dir.display(),
        "serving: POST http://{}/push/events",
        host.addr
    );
    let mut term = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate())?;
    tokio::select! {
        _ = tokio::signal::ctrl_c() => {},
        _ = term.recv() => {},
    }
    tracing::info!("shutting down: draining open pushes and the write queue");
    host.shutdown().await;
    tracing::info!("stopped");
    Ok(())
}

async fn sql(query: &str, format: Format, admin: SocketAddr, data: PathBuf) -> anyhow::Result<()> {
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
