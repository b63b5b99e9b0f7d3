//! The command line.

use clap::{Args, Parser, Subcommand, ValueEnum};
use std::path::PathBuf;
use std::time::Duration;

#[derive(Debug, Parser)]
#[command(
    name = "loadgen",
    about = "Load the oversell guard on loopback and check it oversold nothing"
)]
pub struct Cli {
    #[command(subcommand)]
    pub command: Command,
}

#[derive(Debug, Subcommand)]
pub enum Command {
    /// Run one load and check the invariants afterwards.
    Run(Box<RunArgs>),
    /// Build the A/B report (markdown + SVG charts) from run summaries.
    Report(ReportArgs),
    /// Forward a database's TCP and, when armed, cut a client's connection
    /// right after forwarding its COMMIT (for the fault run).
    Proxy(ProxyArgs),
    /// Build the fault runs' markdown report from their summaries.
    FaultReport(FaultReportArgs),
    /// Run one drop: buyers join a waiting room before a scheduled start,
    /// wait their turn, order with their pass; then report the admission
    /// rate, how fast the line learns it sold out, and check the stock.
    Drop(DropArgs),
    /// A drop day with a payment deadline: order, pay (or not) through the
    /// signed webhook, and check that expired units came back and resold.
    Payments(crate::payments::PaymentsArgs),
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum Endpoint {
    /// POST /api/orders.
    Orders,
    /// GET /healthz (for comparing throughputs with the same tool).
    Healthz,
}

#[derive(Debug, Clone, Args)]
pub struct RunArgs {
    /// Server base URL(s); requests are spread over them. Loopback only.
    #[arg(long = "target", default_value = "http://127.0.0.1:3000")]
    pub targets: Vec<String>,
    /// Requests per second, leaving on schedule (open model).
    #[arg(long, conflicts_with = "concurrency")]
    pub rate: Option<u32>,
    /// Closed loop instead: this many requests in flight, each sent when
    /// the previous returned (for maximum throughput).
    #[arg(long)]
    pub concurrency: Option<u32>,
    /// How long to send, in seconds.
    #[arg(long, default_value_t = 10.0)]
    pub duration: f64,
    /// Hard cap on requests sent.
    #[arg(long, default_value_t = 1_000_000)]
    pub max_requests: u64,
    /// Distinct buyers (sessions) the requests come from.
    #[arg(long, default_value_t = 1_000)]
    pub buyers: u32,
    /// Items to create; requests are spread over them.
    #[arg(long, default_value_t = 1)]
    pub items: u32,
    /// Stock of each created item (0: every order is sold out).
    #[arg(long, default_value_t = 100)]
    pub stock: i64,
    /// Units per order.
    #[arg(long, default_value_t = 1)]
    pub qty: i64,
    /// Send X-Order-Strategy (the server needs ALLOW_STRATEGY_OVERRIDE).
    #[arg(long)]
    pub strategy: Option<String>,
    #[arg(long, value_enum, default_value_t = Endpoint::Orders)]
    pub endpoint: Endpoint,
    /// Admin token for creating items and reading their stats.
    #[arg(long, env = "ADMIN_TOKEN")]
    pub admin_token: Option<String>,
    /// The database the server uses: invariants are also checked there, and
    /// on PostgreSQL with pg_stat_statements the statements it ran are counted.
    #[arg(long, env = "LOADGEN_DATABASE_URL")]
    pub database_url: Option<String>,
    /// How long to wait for live holds to drain (reaper interval + hold TTL).
    #[arg(long, default_value_t = 40.0)]
    pub drain_seconds: f64,
    /// Give up on in-flight requests this long after the last was sent.
    #[arg(long, default_value_t = 30.0)]
    pub request_timeout: f64,
    /// Retry a request this many times with the same Idempotency-Key when
    /// no answer came or the answer's body says `"retryable": true` (a 5xx
    /// without a readable body counts as retryable), as a careful client
    /// does; latency runs to the final answer.
    #[arg(long, default_value_t = 0)]
    pub retries: u32,
    /// Skip the invariant checks.
    #[arg(long)]
    pub no_check: bool,
    /// Keep every order request and its answer, replay earlier keys during
    /// the run, and check the history afterwards against the database and
    /// `GET /api/orders/by-key` (open model only; needs --database-url).
    #[arg(long)]
    pub history: bool,
    /// Most requests the history keeps (about half a kilobyte each); a run
    /// that sends more fails its history check as incomplete.
    #[arg(long, default_value_t = 200_000)]
    pub history_limit: usize,
    /// With --history: earlier keys replayed per second all run long.
    #[arg(long, default_value_t = 20.0)]
    pub replay_rate: f64,
    /// With --history: keys replayed within half a second after each fault
    /// announced on the control endpoint.
    #[arg(long, default_value_t = 200)]
    pub fault_burst: u32,
    /// With --history: serve the control endpoint on this loopback
    /// `ip:port` (`GET /status`, `POST /fault?name=NAME`).
    #[arg(long)]
    pub control: Option<String>,
    /// Name of this run in the report.
    #[arg(long, default_value = "run")]
    pub label: String,
    /// Directory for the run's summary (`<label>.json`).
    #[arg(long)]
    pub out: Option<PathBuf>,
}

#[derive(Debug, Clone, Args)]
pub struct ReportArgs {
    /// Directory holding run summaries (`*.json`).
    #[arg(long = "in")]
    pub input: PathBuf,
    /// Directory for README.md and the SVG charts.
    #[arg(long = "out")]
    pub output: PathBuf,
}

#[derive(Debug, Clone, Args)]
pub struct FaultReportArgs {
    /// Directory holding `faults-<db>.json` (and its `.proxy.json` and
    /// `.timeline.txt`).
    #[arg(long = "in")]
    pub input: PathBuf,
    /// The markdown file to write.
    #[arg(long = "out")]
    pub output: PathBuf,
}

#[derive(Debug, Clone, Args)]
pub struct ProxyArgs {
    /// Loopback `ip:port` the servers connect to.
    #[arg(long)]
    pub listen: String,
    /// Loopback `ip:port` of the database.
    #[arg(long)]
    pub upstream: String,
    #[arg(long, value_enum)]
    pub protocol: crate::proxy::Protocol,
    /// Loopback `ip:port` of the control endpoint (`POST /cut?commits=N`,
    /// `GET /stats`).
    #[arg(long)]
    pub control: Option<String>,
}

#[derive(Debug, Clone, Args)]
pub struct DropArgs {
    /// Server base URL. Loopback only.
    #[arg(long, default_value = "http://127.0.0.1:3000")]
    pub target: String,
    /// Buyers who join the waiting room.
    #[arg(long, default_value_t = 5_000)]
    pub buyers: u32,
    /// Units on sale (one per order).
    #[arg(long, default_value_t = 500)]
    pub stock: i64,
    /// Buyers let in per second.
    #[arg(long, default_value_t = 200)]
    pub admission: u32,
    /// How long a pass stays valid, in seconds.
    #[arg(long, default_value_t = 60)]
    pub pass_ttl: u32,
    /// The sale starts this many seconds after the item is created; every
    /// buyer joins before it.
    #[arg(long, default_value_t = 10.0)]
    pub start_in: f64,
    /// Give up on buyers still waiting this long after the start.
    #[arg(long, default_value_t = 120.0)]
    pub max_seconds: f64,
    /// Admin token for creating the item.
    #[arg(long, env = "ADMIN_TOKEN")]
    pub admin_token: Option<String>,
    /// The server's database: orders, units and duplicate keys are
    /// counted there.
    #[arg(long, env = "LOADGEN_DATABASE_URL")]
    pub database_url: Option<String>,
    /// Name of this run in the report.
    #[arg(long, default_value = "drop")]
    pub label: String,
    /// Directory for the run's summary (`<label>.json`).
    #[arg(long)]
    pub out: Option<PathBuf>,
}

impl DropArgs {
    /// # Errors
    /// A target that is not on loopback, or numbers out of range.
    pub fn validate(&self) -> anyhow::Result<()> {
        loopback_only(std::slice::from_ref(&self.target))?;
        if self.buyers == 0 || self.stock < 1 || self.admission == 0 {
            anyhow::bail!("--buyers, --stock and --admission must be at least 1");
        }
        if !(5..=86_400).contains(&self.pass_ttl) {
            anyhow::bail!("--pass-ttl must be between 5 and 86400 seconds");
        }
        if !(1.0..=600.0).contains(&self.start_in) || !(1.0..=3_600.0).contains(&self.max_seconds) {
            anyhow::bail!("--start-in must be 1..600 s and --max-seconds 1..3600 s");
        }
        if self.admin_token.is_none() {
            anyhow::bail!("--admin-token (or ADMIN_TOKEN) is needed to create the drop");
        }
        Ok(())
    }
}

impl RunArgs {
    /// # Errors
    /// A target that is not on loopback, or numbers out of range.
    pub fn validate(&self) -> anyhow::Result<()> {
        loopback_only(&self.targets)?;
        if self.rate.is_none() && self.concurrency.is_none() {
            anyhow::bail!("give --rate (open model) or --concurrency (closed loop)");
        }
        if !(0.1..=3_600.0).contains(&self.duration) {
            anyhow::bail!("--duration must be between 0.1 and 3600 seconds");
        }
        if self.buyers == 0 || self.items == 0 || self.qty < 1 {
            anyhow::bail!("--buyers, --items and --qty must be at least 1");
        }
        if self.endpoint == Endpoint::Orders && self.admin_token.is_none() {
            anyhow::bail!("--admin-token (or ADMIN_TOKEN) is needed to create items");
        }
        if self.history {
            if self.rate.is_none() || self.endpoint != Endpoint::Orders || self.no_check {
                anyhow::bail!("--history needs the open model (--rate) on orders, with checks");
            }
            if self.database_url.is_none() {
                anyhow::bail!("--history needs --database-url: orders are judged against it");
            }
            if !(0.0..=10_000.0).contains(&self.replay_rate) {
                anyhow::bail!("--replay-rate must be between 0 and 10000 per second");
            }
        } else if self.control.is_some() {
            anyhow::bail!("--control announces faults to the history: give --history");
        }
        Ok(())
    }

    pub fn duration(&self) -> Duration {
        Duration::from_secs_f64(self.duration)
    }

    pub fn mode_description(&self) -> String {
        match (self.rate, self.concurrency) {
            (Some(rate), _) => format!("open model at {rate} req/s for {} s", self.duration),
            (None, Some(c)) => format!("closed loop with {c} in flight for {} s", self.duration),
            (None, None) => String::new(),
        }
    }
}

/// Refuses any target that is not plain HTTP on a loopback address.
///
/// # Errors
/// The first target that is not.
pub fn loopback_only(targets: &[String]) -> anyhow::Result<()> {
    for target in targets {
        let host = target
            .strip_prefix("http://")
            .ok_or_else(|| anyhow::anyhow!("only http:// targets: {target}"))?
            .split(['/', ':'])
            .next()
            .unwrap_or_default();
        let loopback = host == "localhost" || host == "[" || host.starts_with("127.");
        if !loopback {
            anyhow::bail!("refusing to load a non-loopback target: {target}");
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn args(extra: &[&str]) -> RunArgs {
        let mut argv = vec!["loadgen", "run", "--rate", "10", "--admin-token", "t"];
        argv.extend_from_slice(extra);
        match Cli::try_parse_from(argv).expect("parses").command {
            Command::Run(args) => *args,
            _ => unreachable!("a run"),
        }
    }

    #[test]
    fn only_loopback_targets_are_loaded() {
        assert!(
            args(&["--target", "http://127.0.0.1:3000"])
                .validate()
                .is_ok()
        );
        assert!(
            args(&["--target", "http://localhost:3000"])
                .validate()
                .is_ok()
        );
        assert!(
            args(&["--target", "http://10.0.0.5:3000"])
                .validate()
                .is_err()
        );
        assert!(
            args(&["--target", "http://example.com"])
                .validate()
                .is_err()
        );
        assert!(args(&["--target", "https://127.0.0.1"]).validate().is_err());
    }

    #[test]
    fn a_run_is_bounded() {
        assert!(args(&["--duration", "0"]).validate().is_err());
        assert!(args(&["--duration", "100000"]).validate().is_err());
        let a = args(&[]);
        assert!(
            a.max_requests > 0 && a.request_timeout > 0.0,
            "a cap and a drain deadline always apply"
        );
    }

    #[test]
    fn a_history_needs_the_open_model_and_the_database() {
        assert!(args(&["--history"]).validate().is_err(), "no database");
        let url = ["--history", "--database-url", "postgres://x"];
        assert!(args(&url).validate().is_ok());
        let mut closed = vec!["loadgen", "run", "--concurrency", "4", "--admin-token", "t"];
        closed.extend_from_slice(&url);
        let Command::Run(a) = Cli::try_parse_from(closed).expect("parses").command else {
            unreachable!("a run");
        };
        assert!(a.validate().is_err(), "the closed loop keeps no history");
        assert!(
            args(&["--control", "127.0.0.1:9"]).validate().is_err(),
            "faults are announced to a history"
        );
    }

    #[test]
    fn orders_need_the_admin_token() {
        let argv = ["loadgen", "run", "--rate", "10"];
        let Command::Run(a) = Cli::try_parse_from(argv).expect("parses").command else {
            unreachable!("a run");
        };
        if std::env::var_os("ADMIN_TOKEN").is_none() {
            assert!(a.validate().is_err());
        }
    }

    #[test]
    fn a_drop_is_bounded_and_stays_on_loopback() {
        let drop = |extra: &[&str]| {
            let mut argv = vec!["loadgen", "drop", "--admin-token", "t"];
            argv.extend_from_slice(extra);
            match Cli::try_parse_from(argv).expect("parses").command {
                Command::Drop(args) => args,
                _ => unreachable!("a drop"),
            }
        };
        assert!(drop(&[]).validate().is_ok());
        assert!(
            drop(&["--target", "http://10.0.0.5:3000"])
                .validate()
                .is_err()
        );
        assert!(drop(&["--stock", "0"]).validate().is_err());
        assert!(drop(&["--pass-ttl", "1"]).validate().is_err());
        assert!(drop(&["--max-seconds", "0"]).validate().is_err());
    }
}
