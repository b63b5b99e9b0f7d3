//! The oversell guard's load generator.
//!
//! # Layout
//!
//! - [`cli`]: the command line (clap).
//! - [`setup`]: buyer sessions and items, created through the API.
//! - [`drive`]: the open model (requests leave on schedule whether or not
//!   earlier ones returned; latency counted from the scheduled time, so
//!   coordinated omission is corrected) and the closed loop for maximum
//!   throughput.
//! - [`check`]: the invariants, through the admin API and the database.
//! - [`report`]: a run's summary (JSON), and the A/B markdown table and SVG
//!   charts built from several summaries.
//! - [`payments`]: `loadgen payments`, a drop day with a payment deadline:
//!   orders paid through the signed webhook in time, late or never, and
//!   the checks that expired units came back and sold again unoversold.
//!
//! It only ever targets loopback addresses and always stops by itself: at
//! the duration, at the request cap, and at a drain deadline.

mod check;
mod cli;
mod drive;
mod payments;
mod report;
mod setup;

use clap::Parser;

/// The generator must cost less than the server it measures; glibc's
/// allocator was a tenth of its CPU per request.
#[global_allocator]
static ALLOCATOR: mimalloc::MiMalloc = mimalloc::MiMalloc;

#[tokio::main]
async fn main() -> std::process::ExitCode {
    let cli = cli::Cli::parse();
    let result = match cli.command {
        cli::Command::Run(args) => run(args).await,
        cli::Command::Report(args) => report::write_ab_report(&args.input, &args.output),
        cli::Command::Payments(args) => payments::run(args).await,
    };
    match result {
        Ok(true) => std::process::ExitCode::SUCCESS,
        Ok(false) => {
            eprintln!("loadgen: an invariant failed (see above)");
            std::process::ExitCode::from(1)
        }
        Err(e) => {
            eprintln!("loadgen: {e:#}");
            std::process::ExitCode::from(2)
        }
    }
}

async fn run(args: cli::RunArgs) -> anyhow::Result<bool> {
    args.validate()?;
    let client = drive::client()?;
    let statements_before = match &args.database_url {
        Some(url) => check::statement_count(url).await.ok(),
        None => None,
    };
    let target = std::sync::Arc::new(setup::prepare(&client, &args).await?);
    println!(
        "loadgen: {} buyers, {} item(s) with stock {} on {} target(s); {}",
        target.buyers.len(),
        target.items.len(),
        args.stock,
        args.targets.len(),
        args.mode_description()
    );
    let outcome = drive::drive(&client, &args, &target).await;
    let statements = match (&args.database_url, statements_before) {
        (Some(url), Some(before)) => check::statement_count(url)
            .await
            .ok()
            .map(|after| after - before),
        _ => None,
    };
    let checks = if args.no_check || args.endpoint != cli::Endpoint::Orders {
        Vec::new()
    } else {
        check::invariants(&client, &args, &target, &outcome).await?
    };
    let summary = report::Summary::new(&args, &outcome, statements, &checks);
    summary.print();
    if let Some(dir) = &args.out {
        summary.write(dir)?;
    }
    Ok(checks.iter().all(|c| c.passed))
}
