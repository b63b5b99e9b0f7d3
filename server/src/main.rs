//! The server binary: read the configuration, build the application, serve
//! until ctrl-c or SIGTERM.

use server::config::Config;
use server::startup::{Application, shutdown_signal};

/// The site name in `[workspace.metadata.leptos]`; used when the binary was
/// built without cargo-leptos (which sets it at compile time).
const SITE_NAME: &str = "oversell-guard";

#[tokio::main]
async fn main() -> std::process::ExitCode {
    let config = match Config::from_env() {
        Ok(config) => config,
        Err(e) => {
            eprintln!("configuration error: {e:#}");
            return std::process::ExitCode::from(2);
        }
    };
    let telemetry = match server::telemetry::init(config.log_format) {
        Ok(telemetry) => telemetry,
        Err(e) => {
            eprintln!("telemetry error: {e:#}");
            return std::process::ExitCode::from(2);
        }
    };
    let code = match run(config).await {
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

async fn run(config: Config) -> anyhow::Result<()> {
    let mut leptos = leptos::config::get_configuration(None)?.leptos_options;
    if leptos.output_name.is_empty() {
        leptos.output_name = SITE_NAME.into();
    }
    leptos.site_addr = config.site_addr;
    let app = Application::build(config, leptos).await?;
    tracing::info!("listening on http://{}", app.local_addr());
    println!("Oversell Guard is running at http://{}", app.local_addr());
    app.run_until_stopped(shutdown_signal()).await
}
