//! The oversell guard's load generator.
//!
//! # Layout
//!
//! - [`cli`]: the command line (clap).
//! - [`setup`]: buyer sessions and items, created through the API.
//! - [`answer`]: one reading of the shop's answers (status, error code,
//!   `retryable` from the body, the replay header, the order id) for both
//!   senders.
//! - [`drive`]: the open model (requests leave on schedule whether or not
//!   earlier ones returned; latency counted from the scheduled time, so
//!   coordinated omission is corrected) and the closed loop for maximum
//!   throughput.
//! - [`check`]: the end-state invariants, through the admin API and the
//!   database.
//! - [`history`]: with `--history`, every request and answer, replays of
//!   earlier keys, and the Jepsen-style checker that judges them.
//! - [`control`]: the loopback HTTP endpoint a fault script steers the
//!   generator and the proxy with.
//! - [`proxy`]: `loadgen proxy`, a PostgreSQL/MySQL proxy for the fault run
//!   that cuts connections right after forwarding a COMMIT.
//! - [`report`]: a run's summary (JSON), and the A/B markdown table and SVG
//!   charts built from several summaries.
//! - [`fault_report`]: the fault runs' markdown report.
//! - [`drop_day`]: `loadgen drop`, a scheduled drop through its waiting
//!   room, with the fair draw checked as a buyer can check it.
//! - [`payments`]: `loadgen payments`, a drop day with a payment deadline:
//!   orders paid through the signed webhook in time, late or never, and
//!   the checks that expired units came back and sold again unoversold.
//!
//! It only ever targets loopback addresses and always stops by itself: at
//! the duration, at the request cap, and at a drain deadline.

mod answer;
mod check;
mod cli;
mod control;
mod drive;
mod drop_day;
mod fault_report;
mod history;
mod payments;
mod proxy;
mod report;
mod setup;

use clap::Parser;
use std::sync::Arc;

/// The generator must cost less than the server it measures; glibc's
/// allocator was a tenth of its CPU per request.
#[global_allocator]
static ALLOCATOR: mimalloc::MiMalloc = mimalloc::MiMalloc;

#[tokio::main]
async fn main() -> std::process::ExitCode {
    let cli = cli::Cli::parse();
    let result = match cli.command {
        cli::Command::Run(args) => run(*args).await,
        cli::Command::Report(args) => report::write_ab_report(&args.input, &args.output),
        cli::Command::Proxy(args) => proxy::run(args).await,
        cli::Command::FaultReport(args) => fault_report::write(&args.input, &args.output),
        cli::Command::Drop(args) => drop(args).await,
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

async fn drop(args: cli::DropArgs) -> anyhow::Result<bool> {
    args.validate()?;
    let out = args.out.clone();
    let summary = drop_day::run(args).await?;
    summary.print();
    if let Some(dir) = &out {
        summary.write(dir)?;
    }
    Ok(summary.passed)
}

async fn run(args: cli::RunArgs) -> anyhow::Result<bool> {
    args.validate()?;
    let client = drive::client()?;
    let recorder = args.history.then(|| {
        Arc::new(history::Recorder::new(
            args.history_limit,
            args.replay_rate,
            args.fault_burst,
        ))
    });
    // Up before the buyers are created, so a script can wait for the load
    // to start (`GET /status`).
    let control = match (&args.control, &recorder) {
        (Some(addr), Some(recorder)) => {
            let listener = control::bind_loopback(addr).await?;
            let recorder = recorder.clone();
            Some(control::spawn(
                listener,
                Arc::new(move |c: control::Command<'_>| recorder.command(c)),
            ))
        }
        _ => None,
    };
    let statements_before = match &args.database_url {
        Some(url) => check::statement_count(url).await.ok(),
        None => None,
    };
    let target = Arc::new(setup::prepare(&client, &args).await?);
    println!(
        "loadgen: {} buyers, {} item(s) with stock {} on {} target(s); {}",
        target.buyers.len(),
        target.items.len(),
        args.stock,
        args.targets.len(),
        args.mode_description()
    );
    let outcome = drive::drive(&client, &args, &target, recorder).await;
    if let Some(control) = control {
        control.abort();
    }
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
    let verdict = match (&outcome.history, &args.database_url) {
        (Some(history), Some(url)) => {
            let evidence =
                history::evidence::gather(&client, &args.targets, &target, history, url).await?;
            let buyer_ids: Vec<String> = target.buyers.iter().map(|b| b.id.clone()).collect();
            Some(history::rules::judge(history, &evidence, &buyer_ids))
        }
        _ => None,
    };
    let summary = report::Summary::new(&args, &outcome, statements, &checks, verdict);
    summary.print();
    if let Some(dir) = &args.out {
        summary.write(dir)?;
    }
    Ok(summary.passed())
}
