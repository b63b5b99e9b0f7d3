//! The fault run's markdown report, built from what `scripts/fault-run`
//! leaves in its output directory for each database:
//!
//! - `faults-<db>.json`: the run's summary, with the end-state checks and
//!   the history checker's verdict;
//! - `faults-<db>.proxy.json`: the database proxy's stats (what the servers
//!   sent, how many COMMITs were cut);
//! - `faults-<db>.payments.json`: the payments phase's summary;
//! - `faults-<db>.timeline.txt`: when each fault happened.
//!
//! One table compares the runs; then each run gets its faults, its
//! violations with examples, its answers and what the proxy saw.

use crate::history::rules::Verdict;
use crate::payments::PaymentsSummary;
use crate::report::Summary;
use anyhow::Context;
use std::fmt::Write as _;
use std::path::Path;

/// Examples shown per kind of violation.
const EXAMPLES_SHOWN: usize = 3;

/// One database's run, as found on disk.
struct Run {
    summary: Summary,
    payments: Option<PaymentsSummary>,
    proxy: Option<serde_json::Value>,
    timeline: Option<String>,
}

impl Run {
    /// The orders phase and, when it ran, the payments phase passed.
    fn passed(&self) -> bool {
        self.summary.passed() && self.payments.as_ref().is_none_or(PaymentsSummary::passed)
    }
}

fn read_runs(input: &Path) -> anyhow::Result<Vec<Run>> {
    let mut runs = Vec::new();
    for entry in std::fs::read_dir(input).with_context(|| format!("reading {}", input.display()))? {
        let path = entry?.path();
        let Some(name) = path.file_name().and_then(|n| n.to_str()) else {
            continue;
        };
        // faults-postgres.json, not faults-postgres.proxy.json.
        let Some(label) = name.strip_suffix(".json").filter(|l| !l.contains('.')) else {
            continue;
        };
        let text = std::fs::read_to_string(&path)?;
        let summary: Summary =
            serde_json::from_str(&text).with_context(|| format!("parsing {}", path.display()))?;
        let proxy = std::fs::read_to_string(input.join(format!("{label}.proxy.json")))
            .ok()
            .and_then(|t| serde_json::from_str(&t).ok());
        let timeline = std::fs::read_to_string(input.join(format!("{label}.timeline.txt"))).ok();
        let payments_path = input.join(format!("{label}.payments.json"));
        let payments = match std::fs::read_to_string(&payments_path) {
            Ok(text) => Some(
                serde_json::from_str(&text)
                    .with_context(|| format!("parsing {}", payments_path.display()))?,
            ),
            Err(_) => None,
        };
        runs.push(Run {
            summary,
            payments,
            proxy,
            timeline,
        });
    }
    runs.sort_by(|a, b| a.summary.label.cmp(&b.summary.label));
    Ok(runs)
}

/// Writes the report of every fault run in `input` to `output`. Returns
/// whether every run passed.
///
/// # Errors
/// Unreadable summaries, or an unwritable output.
pub fn write(input: &Path, output: &Path) -> anyhow::Result<bool> {
    let runs = read_runs(input)?;
    anyhow::ensure!(
        !runs.is_empty(),
        "no fault run summaries in {}",
        input.display()
    );
    let markdown = render(&runs);
    std::fs::write(output, markdown).with_context(|| format!("writing {}", output.display()))?;
    println!("loadgen: fault report written to {}", output.display());
    Ok(runs.iter().all(Run::passed))
}

fn render(runs: &[Run]) -> String {
    let mut md = String::from("# Fault runs\n\n");
    md.push_str(
        "Written by `scripts/fault-run postgres|mariadb`: two server instances on one \
         database and one private Redis, the database behind `loadgen proxy`, an open-model \
         load with retries, replays of earlier keys throughout and in a burst after each \
         fault, then the end-state invariants and the history checker \
         (`loadgen/src/history/mod.rs` states the rules). Then a payments phase on the \
         same servers with a payment deadline: orders paid in time, late or never \
         through the signed webhook while faults land, then its checks \
         (`loadgen/src/payments.rs`).\n\n",
    );
    md.push_str("| run | load | requests | keys (201 / refused / unsettled) | replays same / other payload | replays after faults | DB orders | end-state checks | history violations | payments phase | result |\n");
    md.push_str("|---|---|---|---|---|---|---|---|---|---|---|\n");
    for run in runs {
        let s = &run.summary;
        let failed_checks = s.checks.iter().filter(|c| !c.passed).count();
        let (history, violations) = match &s.history {
            Some(v) => (Some(&v.counts), v.violation_count().to_string()),
            None => (None, "–".to_owned()),
        };
        let payments = run.payments.as_ref().map_or("–".to_owned(), |p| {
            let failed = p.checks.iter().filter(|c| !c.passed).count();
            if failed == 0 {
                format!("{} orders, {} checks ok", p.created, p.checks.len())
            } else {
                format!("{} orders, **{failed} checks failed**", p.created)
            }
        });
        let _ = writeln!(
            md,
            "| {} | {} | {} | {} | {} | {} | {} | {} | {} | {} | {} |",
            s.label,
            s.mode,
            history.map_or("–".to_owned(), |c| c.requests.to_string()),
            history.map_or("–".to_owned(), |c| format!(
                "{} ({} / {} / {})",
                c.keys, c.keys_created, c.keys_refused, c.keys_unsettled
            )),
            history.map_or("–".to_owned(), |c| format!(
                "{} / {}",
                c.replays_same_payload, c.replays_changed_payload
            )),
            history.map_or("–".to_owned(), |c| c.replays_after_faults.to_string()),
            history.map_or("–".to_owned(), |c| c.database_orders.to_string()),
            if failed_checks == 0 {
                format!("{} ok", s.checks.len())
            } else {
                format!("**{failed_checks} failed**")
            },
            violations,
            payments,
            if run.passed() { "pass" } else { "**FAIL**" },
        );
    }
    for run in runs {
        render_run(&mut md, run);
    }
    md
}

fn render_run(md: &mut String, run: &Run) {
    let s = &run.summary;
    let _ = writeln!(md, "\n## {}\n", s.label);
    let _ = writeln!(
        md,
        "{}; {} sent, {} answered; final answers of new intents: 201 {}, 409 {}, other 4xx {}, 5xx {}, no answer {}.\n",
        s.mode, s.sent, s.answered, s.created, s.conflict_409, s.other_4xx, s.server_5xx, s.failed
    );
    if let Some(timeline) = &run.timeline {
        md.push_str("Timeline (seconds since the load started):\n\n```\n");
        for line in timeline.lines() {
            md.push_str(&strip_ansi(line));
            md.push('\n');
        }
        md.push_str("```\n\n");
    }
    render_checks(md, "End-state checks", &s.checks);
    if let Some(v) = &s.history {
        render_verdict(md, v);
    }
    if let Some(p) = &run.payments {
        render_payments(md, p);
    }
    if let Some(proxy) = &run.proxy {
        let _ = writeln!(
            md,
            "\nThe database proxy: {} connections, {} COMMITs cut, {} acknowledgements swallowed; transaction statements by form `{}`; messages `{}`.",
            proxy["connections"],
            proxy["commits_cut"],
            proxy["acks_swallowed"],
            proxy["statements"],
            proxy["messages"]
        );
    }
}

fn render_verdict(md: &mut String, v: &Verdict) {
    let c = &v.counts;
    let _ = writeln!(
        md,
        "\nHistory: {} requests ({} first attempts, {} retries, {} replays with the same payload, {} with another, {} of them right after faults; {} replays of keys answered 201, {} of refused keys); {} keys; {} orders in the database; by-key at the end {}.\n",
        c.requests,
        c.first_attempts,
        c.retries,
        c.replays_same_payload,
        c.replays_changed_payload,
        c.replays_after_faults,
        c.replays_of_created_keys,
        c.replays_of_refused_keys,
        c.keys,
        c.database_orders,
        inline(&c.by_key)
    );
    let _ = writeln!(md, "Answers: {}.\n", inline(&c.answers));
    md.push_str(
        "| fault | at s | burst replays | violations in the window after it |\n|---|---|---|---|\n",
    );
    let _ = writeln!(
        md,
        "| (before any) | 0 | – | {} |",
        inline(&v.before_faults)
    );
    for f in &v.faults {
        let _ = writeln!(
            md,
            "| {} | {:.1} | {} | {} |",
            f.name,
            f.at_us as f64 / 1e6,
            f.burst_replays,
            inline(&f.violations)
        );
    }
    if v.violations.is_empty() {
        md.push_str("\nNo violation.\n");
        return;
    }
    md.push_str("\n| violation | count | examples |\n|---|---|---|\n");
    for (kind, tally) in &v.violations {
        let examples: Vec<String> = tally
            .examples
            .iter()
            .take(EXAMPLES_SHOWN)
            .map(|e| format!("`{}`", e.replace('|', "\\|").replace('`', "'")))
            .collect();
        let _ = writeln!(
            md,
            "| {kind} | {} | {} |",
            tally.count,
            examples.join("<br>")
        );
    }
}

fn render_payments(md: &mut String, p: &PaymentsSummary) {
    let _ = writeln!(
        md,
        "\nPayments phase: {} orders sent, {} created; payments in time {}, late {}, never {}; {} paid in time but carried past the deadline by retries or a stall (refund_due); {} retries; {} units returned by expiry, {} sold again (p50 {} s after the expiry); final stock {}, oversold {}; {} events delivered again after the faults. Answers: {}.\n",
        p.sent,
        p.created,
        p.paid_on_time,
        p.paid_late,
        p.never_paid,
        p.delayed_past_deadline,
        p.retries,
        p.units_returned,
        p.units_resold.map_or("–".to_owned(), |n| n.to_string()),
        p.resale_p50_s.map_or("–".to_owned(), |s| format!("{s:.1}")),
        p.final_stock,
        p.oversold_units,
        p.redelivered,
        inline(&p.answers)
    );
    render_checks(md, "Payments checks", &p.checks);
}

/// A titled list of checks, each with its verdict and detail.
fn render_checks(md: &mut String, title: &str, checks: &[crate::check::Check]) {
    let _ = writeln!(md, "{title}:\n");
    for c in checks {
        let _ = writeln!(
            md,
            "- {}: {} — {}",
            c.name,
            if c.passed { "ok" } else { "**FAIL**" },
            c.detail
        );
    }
}

/// `a 3, b 1` (or `none`).
fn inline(map: &std::collections::BTreeMap<String, u64>) -> String {
    if map.is_empty() {
        return "none".to_owned();
    }
    map.iter()
        .map(|(k, n)| format!("{k} {n}"))
        .collect::<Vec<_>>()
        .join(", ")
}

/// Drops terminal colour codes (`ESC [ ... m`).
fn strip_ansi(line: &str) -> String {
    let mut out = String::with_capacity(line.len());
    let mut chars = line.chars();
    while let Some(c) = chars.next() {
        if c == '\u{1b}' {
            for c in chars.by_ref() {
                if c == 'm' {
                    break;
                }
            }
        } else {
            out.push(c);
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    fn run_with(history: serde_json::Value) -> Run {
        let summary = serde_json::json!({
            "label": "faults-postgres", "strategy": "server default", "endpoint": "orders",
            "mode": "open model at 800 req/s for 40 s", "targets": 2, "duration_s": 40.0,
            "sent": 10, "answered": 10, "achieved_rate": 0.25, "created": 6, "conflict_409": 4,
            "other_4xx": 0, "server_5xx": 0, "failed": 0, "dropped": 0, "codes": {},
            "latency": {"p50_ms": 1.0, "p90_ms": 1.0, "p99_ms": 1.0, "p999_ms": 1.0, "max_ms": 1.0, "mean_ms": 1.0},
            "service": {"p50_ms": 1.0, "p90_ms": 1.0, "p99_ms": 1.0, "p999_ms": 1.0, "max_ms": 1.0, "mean_ms": 1.0},
            "curve": [], "timeline": [], "db_statements": null,
            "checks": [{"name": "item 1: no oversell", "passed": true, "detail": "ok"}],
            "history": history,
        });
        Run {
            summary: serde_json::from_value(summary).expect("a summary"),
            payments: None,
            proxy: Some(
                serde_json::json!({"connections": 64, "commits_cut": 20, "acks_swallowed": 20,
                "statements": {"commit/simple_query": 900}, "messages": {"Q": 1800}}),
            ),
            timeline: Some("\u{1b}[1;33m[fault   3.0s] COMMIT drop\u{1b}[0m".to_owned()),
        }
    }

    #[test]
    fn a_run_with_a_violation_is_reported_failed_with_its_examples() {
        let verdict = serde_json::json!({
            "counts": {"requests": 12, "first_attempts": 10, "retries": 0, "replays_same_payload": 1,
                "replays_changed_payload": 1, "replays_after_faults": 2, "replays_of_created_keys": 1,
                "replays_of_refused_keys": 1, "answers": {"201": 6}, "keys": 10, "keys_created": 6,
                "keys_refused": 4, "keys_unsettled": 0, "database_orders": 6, "by_key": {"order": 6}},
            "violations": {"r2_created_and_refused": {"count": 1,
                "examples": ["buyer #3 key k: [first → 201] then [replay → 409 sold_out]"]}},
            "before_faults": {},
            "faults": [{"name": "flushall", "at_us": 7_000_000, "burst_replays": 2,
                "violations": {"r2_created_and_refused": 1}}],
        });
        let md = render(&[run_with(verdict)]);
        assert!(md.contains("| faults-postgres |"), "{md}");
        assert!(md.contains("| 1 | – | **FAIL** |"), "{md}");
        assert!(
            md.contains("| r2_created_and_refused | 1 | `buyer #3"),
            "{md}"
        );
        assert!(
            md.contains("| flushall | 7.0 | 2 | r2_created_and_refused 1 |"),
            "{md}"
        );
        assert!(md.contains("[fault   3.0s] COMMIT drop\n"), "{md}");
        assert!(md.contains("20 COMMITs cut"), "{md}");
    }

    #[test]
    fn a_failed_payments_phase_fails_the_run() {
        let clean = serde_json::json!({
            "counts": {"requests": 1, "first_attempts": 1, "retries": 0, "replays_same_payload": 0,
                "replays_changed_payload": 0, "replays_after_faults": 0, "replays_of_created_keys": 0,
                "replays_of_refused_keys": 0, "answers": {"201": 1}, "keys": 1, "keys_created": 1,
                "keys_refused": 0, "keys_unsettled": 0, "database_orders": 1, "by_key": {"order": 1}},
            "violations": {}, "before_faults": {}, "faults": [],
        });
        let mut run = run_with(clean);
        assert!(run.passed());
        let payments = |passed: bool| -> PaymentsSummary {
            serde_json::from_value(serde_json::json!({
                "label": "faults-postgres-payments", "sent": 1200, "created": 700,
                "paid_on_time": 400, "paid_late": 150, "never_paid": 150,
                "delayed_past_deadline": 12, "retries": 90, "redelivered": 550,
                "answers": {"created": 700, "sold_out": 500}, "units_returned": 300,
                "units_resold": 290, "resale_p50_s": 0.4, "resale_p99_s": 2.0,
                "final_stock": 10, "oversold_units": 0,
                "checks": [{"name": "no oversell", "passed": passed, "detail": "held 290 + stock 10"}],
            }))
            .expect("a payments summary")
        };
        run.payments = Some(payments(true));
        let md = render(std::slice::from_ref(&run));
        assert!(run.passed());
        assert!(md.contains("| 700 orders, 1 checks ok | pass |"), "{md}");
        assert!(
            md.contains("12 paid in time but carried past the deadline"),
            "{md}"
        );
        assert!(
            md.contains("- no oversell: ok — held 290 + stock 10"),
            "{md}"
        );
        run.payments = Some(payments(false));
        let md = render(std::slice::from_ref(&run));
        assert!(!run.passed());
        assert!(md.contains("**1 checks failed** | **FAIL** |"), "{md}");
    }

    #[test]
    fn colour_codes_are_stripped_from_the_timeline() {
        assert_eq!(
            strip_ansi("\u{1b}[1;33m[fault   3.4s] FLUSHALL on Redis\u{1b}[0m"),
            "[fault   3.4s] FLUSHALL on Redis"
        );
    }

    #[test]
    fn counts_read_inline() {
        let mut map = std::collections::BTreeMap::new();
        assert_eq!(inline(&map), "none");
        map.insert("r2_created_and_refused".to_owned(), 3);
        map.insert("r4_replay_differs".to_owned(), 1);
        assert_eq!(
            inline(&map),
            "r2_created_and_refused 3, r4_replay_differs 1"
        );
    }
}
