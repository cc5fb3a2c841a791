//! `tributary`: run the host, query its warehouse, load data, benchmark it. The commands other than
//! `up` live in [`cli`], outside the product library.

mod cli;

use std::io::IsTerminal as _;
use std::net::SocketAddr;
use std::path::PathBuf;

use anyhow::bail;
use clap::{Parser, Subcommand};
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
        /// Also pull a subscription into a push route's function: projects/P/subscriptions/S=/push/events
        /// (repeatable; adds to the config's [[pull]]; the emulator when PUBSUB_EMULATOR_HOST is set).
        #[arg(long, value_parser = tributary::pull::PullConfig::parse_flag)]
        pull: Vec<tributary::pull::PullConfig>,
    },
    /// Run SQL on the warehouse: through the running host, or on the file when no host runs.
    Sql {
        query: String,
        #[arg(long, value_enum, default_value = "table")]
        format: cli::sql::Format,
        /// The running host's admin address.
        #[arg(long, default_value = "127.0.0.1:3001")]
        admin: SocketAddr,
        /// Data directory, used when no host answers.
        #[arg(long, default_value = ".tributary")]
        data: PathBuf,
    },
    /// See the whole system move: a host with generated web, shop and sensor traffic, and its live dashboard.
    Demo {
        #[command(flatten)]
        options: cli::demo::DemoOptions,
        /// Data directory (overrides `data_dir`; the demo's default is ./.tributary-demo, apart from `up`'s).
        #[arg(long)]
        data: Option<PathBuf>,
        /// Configuration file (TOML); every key has a default.
        #[arg(long)]
        config: Option<PathBuf>,
    },
    /// Replay a JSON-lines file as pushes to a function URL or as publishes to a topic.
    Replay(cli::replay::ReplayOptions),
    /// Benchmark the wasm push path against the native baseline in one run.
    Bench(cli::bench::BenchOptions),
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
    /// ROWS synthetic older page events (the 10 days before the last hour) written straight into the
    /// embedded warehouse under --data, with no host running: for table-size benchmarks and dashboard
    /// trials (`tributary demo --history-rows` does the same before its traffic).
    History {
        rows: u64,
        /// Data directory of the embedded warehouse.
        #[arg(long, default_value = ".tributary")]
        data: PathBuf,
    },
}

fn main() -> anyhow::Result<()> {
    tracing_subscriber::fmt()
        .with_env_filter(EnvFilter::try_from_default_env().unwrap_or_else(|_| EnvFilter::new("info,wasmtime=warn")))
        .with_writer(std::io::stderr)
        // Colour only on a terminal: a log file or a pipe gets plain text.
        .with_ansi(std::io::stderr().is_terminal())
        .init();
    let cli = Cli::parse();
    let runtime = tokio::runtime::Builder::new_multi_thread().enable_all().build()?;
    match cli.command {
        Command::Up { listen, admin_listen, data, config, pull } => {
            runtime.block_on(up(listen, admin_listen, data, config, pull))
        }
        Command::Sql { query, format, admin, data } => runtime.block_on(cli::sql::run(&query, format, admin, data)),
        Command::Bigquery { action, config } => runtime.block_on(bigquery(action, config)),
        Command::Load { what: LoadKind::History { rows, data }, .. } => {
            cli::demo::backfill(&data, rows, tributary::group_commit::SinkConfig::default().duckdb_memory_mib)
        }
        Command::Load { what: LoadKind::Products { file, concurrency }, host } => runtime.block_on(async {
            let report = cli::load::products(host, &file, concurrency).await?;
            println!("{report}");
            Ok(())
        }),
        Command::Demo { options, data, config } => runtime.block_on(async {
            let mut cfg = Config::load(config.as_deref())?;
            cfg.data_dir = data.unwrap_or_else(|| PathBuf::from(".tributary-demo"));
            cli::demo::run(cfg, options).await
        }),
        Command::Replay(options) => runtime.block_on(async {
            let report = cli::replay::run(&options).await?;
            println!("{report}");
            anyhow::ensure!(report.errors == 0, "{} lines were not delivered", report.errors);
            Ok(())
        }),
        Command::Bench(options) => runtime.block_on(async {
            let report = cli::bench::run(&options).await?;
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
    pull: Vec<tributary::pull::PullConfig>,
) -> anyhow::Result<()> {
    let mut cfg = Config::load(config.as_deref())?;
    cfg.pull.extend(pull);
    cfg.listen = listen.unwrap_or(cfg.listen);
    cfg.admin_listen = admin_listen.unwrap_or(cfg.admin_listen);
    cfg.data_dir = data.unwrap_or(cfg.data_dir);
    let host = tributary::start(&cfg, tributary::Mode::Wasm).await?;
    let routes = |kind| tributary::functions::routes(kind).collect::<Vec<_>>().join(" ");
    tracing::info!(
        listen = %host.addr,
        admin = %host.admin_addr,
        data = %cfg.data_dir.display(),
        push = %routes(tributary::functions::Kind::Push),
        tick = %routes(tributary::functions::Kind::Tick),
        "serving: POST http://{}/push/... (every route below), GET /healthz, GET /metrics",
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
