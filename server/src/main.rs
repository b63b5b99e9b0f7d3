//! The server binary: read the configuration, build the application, serve
//! until ctrl-c or SIGTERM. `server reconcile` instead compares the
//! reservation counters with the database once, repairs drift and prints a
//! JSON report.

use clap::{Parser, Subcommand};
use server::config::Config;
use server::startup::{Application, shutdown_signal};

/// jemalloc instead of glibc's malloc: a sold-out answer allocates dozens of
/// small, short-lived buffers on both worker threads, and glibc spent a
/// fifth of the server's time on them (`_int_malloc`, `_int_free`,
/// `malloc_consolidate`). jemalloc's thread caches and size classes take
/// that path without consolidation passes, and keep the largest RSS of the
/// bench's P2 runs at or below glibc's (mimalloc 2.3's went past P5's
/// 100 MB).
#[global_allocator]
static ALLOCATOR: tikv_jemallocator::Jemalloc = tikv_jemallocator::Jemalloc;

#[derive(Debug, Parser)]
#[command(
    name = "server",
    about = "Oversell Guard: sell scarce stock without overselling"
)]
struct Cli {
    #[command(subcommand)]
    command: Option<Command>,
}

#[derive(Debug, Subcommand)]
enum Command {
    /// Serve the shop and the API (the default).
    Serve,
    /// Compare every item's reservation counter with the database once,
    /// repair drift (items without live holds), print the report as JSON.
    Reconcile,
}

/// The site name in `[workspace.metadata.leptos]`; used when the binary was
/// built without cargo-leptos (which sets it at compile time).
const SITE_NAME: &str = "oversell-guard";

#[tokio::main]
async fn main() -> std::process::ExitCode {
    let cli = Cli::parse();
    let config = match Config::from_env() {
        Ok(config) => config,
        Err(e) => {
            eprintln!("configuration error: {e:#}");
            return std::process::ExitCode::from(2);
        }
    };
    let telemetry = match server::telemetry::init(config.telemetry.log_format) {
        Ok(telemetry) => telemetry,
        Err(e) => {
            eprintln!("telemetry error: {e:#}");
            return std::process::ExitCode::from(2);
        }
    };
    let result = match cli.command.unwrap_or(Command::Serve) {
        Command::Serve => run(config).await,
        Command::Reconcile => reconcile(config).await,
    };
    let code = match result {
        Ok(()) => std::process::ExitCode::SUCCESS,
        Err(e) => {
            tracing::error!("{e:#}");
            eprintln!("error: {e:#}");
            std::process::ExitCode::FAILURE
        }
    };
    // Flushes buffered spans; blocking, so off the async workers.
    let _ = tokio::task::spawn_blocking(move || telemetry.shutdown()).await;
    code
}

async fn reconcile(config: Config) -> anyhow::Result<()> {
    let db = server::db::Database::connect(&config.database.url, 2).await?;
    let redis =
        server::redis_conn::RedisConn::connect(&config.redis.target, config.redis.timeout).await?;
    if redis.is_none() {
        anyhow::bail!(
            "set REDIS_URL or REDIS_CLUSTER_NODES: the in-process store of a running server cannot be reached from here"
        );
    }
    let store = server::startup::reservation_store(&config, redis.as_ref())
        .ok_or_else(|| anyhow::anyhow!("ORDER_STRATEGY=db uses no reservation store"))?;
    let metrics = server::metrics::Metrics::disabled();
    let report =
        server::reservation::reconcile::reconcile_all(store.as_ref(), &db, &metrics).await?;
    println!("{}", serde_json::to_string_pretty(&report)?);
    Ok(())
}

async fn run(config: Config) -> anyhow::Result<()> {
    let mut leptos = leptos::config::get_configuration(None)?.leptos_options;
    if leptos.output_name.is_empty() {
        leptos.output_name = SITE_NAME.into();
    }
    leptos.site_addr = config.http.site_addr;
    // A release build (`scripts/build-release`) names the assets after their
    // content and says so while compiling this binary; the environment at
    // run time (cargo-leptos sets it under `watch`) has the last word.
    if std::env::var_os("LEPTOS_HASH_FILES").is_none() {
        leptos.hash_files = option_env!("LEPTOS_HASH_FILES") == Some("true");
    }
    let app = Application::build(config, leptos).await?;
    tracing::info!("listening on http://{}", app.local_addr());
    println!("Oversell Guard is running at http://{}", app.local_addr());
    app.run_until_stopped(shutdown_signal()).await
}
