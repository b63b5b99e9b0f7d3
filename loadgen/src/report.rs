//! A run's summary, and the A/B report built from several: a markdown table
//! and two SVG charts (latency percentile distribution, latency over time).

use crate::check::Check;
use crate::cli::RunArgs;
use crate::drive::{Counts, Outcome};
use crate::history::rules::Verdict;
use anyhow::Context;
use hdrhistogram::Histogram;
use plotters::coord::types::RangedCoordf64;
use plotters::prelude::*;
use serde::{Deserialize, Serialize};
use std::collections::BTreeMap;
use std::path::Path;

#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Percentiles {
    pub p50_ms: f64,
    pub p90_ms: f64,
    pub p99_ms: f64,
    pub p999_ms: f64,
    pub max_ms: f64,
    pub mean_ms: f64,
}

fn percentiles(h: &Histogram<u64>) -> Percentiles {
    let ms = |us: u64| us as f64 / 1000.0;
    Percentiles {
        p50_ms: ms(h.value_at_quantile(0.50)),
        p90_ms: ms(h.value_at_quantile(0.90)),
        p99_ms: ms(h.value_at_quantile(0.99)),
        p999_ms: ms(h.value_at_quantile(0.999)),
        max_ms: ms(h.max()),
        mean_ms: h.mean() / 1000.0,
    }
}

#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Summary {
    pub label: String,
    pub strategy: String,
    pub endpoint: String,
    pub mode: String,
    pub targets: usize,
    pub duration_s: f64,
    pub sent: u64,
    pub answered: u64,
    /// Answers per second over the whole run.
    pub achieved_rate: f64,
    pub created: u64,
    pub conflict_409: u64,
    pub other_4xx: u64,
    pub server_5xx: u64,
    pub failed: u64,
    pub dropped: u64,
    pub codes: BTreeMap<String, u64>,
    /// Latency from the scheduled send (coordinated omission corrected).
    pub latency: Percentiles,
    /// Latency from the actual send.
    pub service: Percentiles,
    /// (percentile, ms) points of the corrected distribution.
    pub curve: Vec<(f64, f64)>,
    /// (second, p50 ms, p99 ms, answers) per second.
    pub timeline: Vec<(u64, f64, f64, u64)>,
    /// Statements the database ran during the run (pg_stat_statements).
    pub db_statements: Option<i64>,
    pub checks: Vec<Check>,
    /// The history checker's verdict, with `--history`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub history: Option<Verdict>,
}

impl Summary {
    pub fn new(
        args: &RunArgs,
        outcome: &Outcome,
        db_statements: Option<i64>,
        checks: &[Check],
        history: Option<Verdict>,
    ) -> Self {
        let r = &outcome.recorded;
        let Counts {
            created,
            conflict_409,
            other_4xx,
            server_5xx,
            failed,
            dropped,
            ..
        } = r.counts.clone();
        let answered = r.counts.answered();
        let curve = [
            0.0, 10.0, 25.0, 50.0, 75.0, 90.0, 95.0, 99.0, 99.5, 99.9, 99.95, 99.99, 99.999, 100.0,
        ]
        .iter()
        .map(|p| (*p, r.corrected.value_at_percentile(*p) as f64 / 1000.0))
        .collect();
        let timeline = r
            .timeline
            .iter()
            .enumerate()
            .filter(|(_, h)| !h.is_empty())
            .map(|(s, h)| {
                (
                    s as u64,
                    h.value_at_quantile(0.5) as f64 / 1000.0,
                    h.value_at_quantile(0.99) as f64 / 1000.0,
                    h.len(),
                )
            })
            .collect();
        Self {
            label: args.label.clone(),
            strategy: args
                .strategy
                .clone()
                .unwrap_or_else(|| "server default".into()),
            endpoint: format!("{:?}", args.endpoint).to_lowercase(),
            mode: args.mode_description(),
            targets: args.targets.len(),
            duration_s: outcome.elapsed.as_secs_f64(),
            sent: outcome.sent,
            answered,
            achieved_rate: answered as f64 / args.duration().as_secs_f64().max(0.001),
            created,
            conflict_409,
            other_4xx,
            server_5xx,
            failed,
            dropped,
            codes: r.counts.codes.clone(),
            latency: percentiles(&r.corrected),
            service: percentiles(&r.service),
            curve,
            timeline,
            db_statements,
            checks: checks.to_vec(),
            history,
        }
    }

    /// Every invariant held and the history checker found no violation.
    pub fn passed(&self) -> bool {
        self.checks.iter().all(|c| c.passed)
            && self
                .history
                .as_ref()
                .is_none_or(|v| v.violation_count() == 0)
    }

    pub fn print(&self) {
        let l = &self.latency;
        println!(
            "{}: sent {} answered {} ({:.0}/s) | 201 {} 409 {} 4xx {} 5xx {} failed {} dropped {}",
            self.label,
            self.sent,
            self.answered,
            self.achieved_rate,
            self.created,
            self.conflict_409,
            self.other_4xx,
            self.server_5xx,
            self.failed,
            self.dropped
        );
        println!(
            "  latency (corrected) p50 {:.2} p90 {:.2} p99 {:.2} p99.9 {:.2} max {:.2} ms; service p99 {:.2} ms",
            l.p50_ms, l.p90_ms, l.p99_ms, l.p999_ms, l.max_ms, self.service.p99_ms
        );
        if !self.codes.is_empty() {
            println!("  codes: {:?}", self.codes);
        }
        if let Some(n) = self.db_statements {
            println!("  database statements: {n}");
        }
        for c in &self.checks {
            println!(
                "  [{}] {} — {}",
                if c.passed { "ok" } else { "FAIL" },
                c.name,
                c.detail
            );
        }
        if let Some(v) = &self.history {
            print_verdict(v);
        }
    }

    /// # Errors
    /// The directory or file cannot be written.
    pub fn write(&self, dir: &Path) -> anyhow::Result<()> {
        std::fs::create_dir_all(dir)?;
        let path = dir.join(format!("{}.json", self.label));
        std::fs::write(&path, serde_json::to_string_pretty(self)?)
            .with_context(|| format!("writing {}", path.display()))
    }
}

/// The history checker's counts and violations, for the terminal.
fn print_verdict(v: &Verdict) {
    let c = &v.counts;
    println!(
        "  history: {} requests ({} first, {} retries, {} replays same payload, {} other payload, {} right after faults); {} keys ({} created, {} refused, {} unsettled); {} orders in the database",
        c.requests,
        c.first_attempts,
        c.retries,
        c.replays_same_payload,
        c.replays_changed_payload,
        c.replays_after_faults,
        c.keys,
        c.keys_created,
        c.keys_refused,
        c.keys_unsettled,
        c.database_orders
    );
    println!("  answers: {:?}", c.answers);
    println!(
        "  sold-out keys decided anew after Redis lost them (allowed, rules 4 and 5 judge each decision): {}",
        c.keys_decided_again
    );
    println!("  by-key at the end: {:?}", c.by_key);
    for f in &v.faults {
        println!(
            "  fault {:.1}s {}: {} burst replays, violations after it {:?}",
            f.at_us as f64 / 1e6,
            f.name,
            f.burst_replays,
            f.violations
        );
    }
    if v.violations.is_empty() {
        println!("  [ok] history: no violation");
    }
    for (kind, tally) in &v.violations {
        println!("  [FAIL] history {kind}: {}", tally.count);
        for example in &tally.examples {
            println!("      {example}");
        }
    }
}

const COLORS: [RGBColor; 6] = [
    RGBColor(217, 72, 15),
    RGBColor(28, 126, 214),
    RGBColor(47, 158, 68),
    RGBColor(174, 62, 201),
    RGBColor(240, 140, 0),
    RGBColor(73, 80, 87),
];

/// x position of a percentile on a "nines" axis: 0 → 0, 90 → 1, 99 → 2, ...
fn nines(p: f64) -> f64 {
    -(1.0 - (p / 100.0).min(0.99999)).log10()
}

/// plotters' errors carry the backend's error type; the report only needs
/// their text.
fn plotted<T, E: std::fmt::Display>(result: Result<T, E>) -> anyhow::Result<T> {
    result.map_err(|e| anyhow::anyhow!("{e}"))
}

/// A chart of latencies in ms (log scale) against an `f64` axis.
type LatencyChart<'a, 'b> =
    ChartContext<'a, SVGBackend<'b>, Cartesian2d<RangedCoordf64, LogCoord<f64>>>;

/// How a latency chart's x axis is drawn.
struct XAxis<'f> {
    range: std::ops::Range<f64>,
    desc: &'static str,
    labels: Option<&'f dyn Fn(&f64) -> String>,
}

/// Writes one latency chart to `path`: the frame, the mesh, the series
/// `draw` adds, and their legend.
fn latency_chart(
    path: &Path,
    caption: &str,
    x: XAxis<'_>,
    y_max: f64,
    draw: impl FnOnce(&mut LatencyChart<'_, '_>) -> anyhow::Result<()>,
) -> anyhow::Result<()> {
    let root = SVGBackend::new(path, (900, 520)).into_drawing_area();
    plotted(root.fill(&WHITE))?;
    let mut chart = plotted(
        ChartBuilder::on(&root)
            .caption(caption, ("sans-serif", 20))
            .margin(12)
            .x_label_area_size(40)
            .y_label_area_size(60)
            .build_cartesian_2d(x.range, (0.05..y_max).log_scale()),
    )?;
    let mut mesh = chart.configure_mesh();
    mesh.x_desc(x.desc).y_desc("ms");
    if let Some(labels) = x.labels {
        mesh.x_label_formatter(labels);
    }
    plotted(mesh.draw())?;
    draw(&mut chart)?;
    plotted(
        chart
            .configure_series_labels()
            .border_style(BLACK)
            .background_style(WHITE.mix(0.8))
            .draw(),
    )?;
    plotted(root.present())
}

fn percentile_chart(summaries: &[Summary], path: &Path) -> anyhow::Result<()> {
    let y_max = summaries
        .iter()
        .flat_map(|s| {
            s.curve
                .iter()
                .filter(|(p, _)| *p <= 99.99)
                .map(|(_, ms)| *ms)
        })
        .fold(1.0_f64, f64::max)
        * 1.1;
    let percentile = |x: &f64| {
        format!("{:.3}", 100.0 * (1.0 - 10f64.powf(-x)))
            .trim_end_matches('0')
            .trim_end_matches('.')
            .to_owned()
    };
    let x = XAxis {
        range: 0.0..nines(99.99),
        desc: "percentile",
        labels: Some(&percentile),
    };
    let caption = "Latency by percentile (corrected for coordinated omission)";
    latency_chart(path, caption, x, y_max, |chart| {
        for (i, s) in summaries.iter().enumerate() {
            let color = COLORS[i % COLORS.len()];
            plotted(
                chart.draw_series(LineSeries::new(
                    s.curve
                        .iter()
                        .filter(|(p, _)| *p <= 99.99)
                        .map(|(p, ms)| (nines(*p), *ms)),
                    color.stroke_width(2),
                )),
            )?
            .label(s.label.clone())
            .legend(move |(x, y)| {
                PathElement::new(vec![(x, y), (x + 20, y)], color.stroke_width(2))
            });
        }
        Ok(())
    })
}

fn timeline_chart(summaries: &[Summary], path: &Path) -> anyhow::Result<()> {
    let x_max = summaries
        .iter()
        .flat_map(|s| s.timeline.iter().map(|t| t.0))
        .max()
        .unwrap_or(1) as f64
        + 1.0;
    let y_max = summaries
        .iter()
        .flat_map(|s| s.timeline.iter().map(|t| t.2))
        .fold(1.0_f64, f64::max)
        * 1.1;
    let x = XAxis {
        range: 0.0..x_max,
        desc: "second",
        labels: None,
    };
    let caption = "Latency over time: p99 (solid) and p50 (thin), per second";
    latency_chart(path, caption, x, y_max, |chart| {
        for (i, s) in summaries.iter().enumerate() {
            let color = COLORS[i % COLORS.len()];
            plotted(chart.draw_series(LineSeries::new(
                s.timeline.iter().map(|t| (t.0 as f64, t.2)),
                color.stroke_width(2),
            )))?
            .label(format!("{} p99", s.label))
            .legend(move |(x, y)| {
                PathElement::new(vec![(x, y), (x + 20, y)], color.stroke_width(2))
            });
            plotted(chart.draw_series(LineSeries::new(
                s.timeline.iter().map(|t| (t.0 as f64, t.1)),
                color.stroke_width(1),
            )))?;
        }
        Ok(())
    })
}

/// Reads every summary in `input` and writes `README.md` and the charts to
/// `output`. Returns whether every run's checks passed.
///
/// # Errors
/// Unreadable summaries or unwritable files.
pub fn write_ab_report(input: &Path, output: &Path) -> anyhow::Result<bool> {
    let mut summaries: Vec<Summary> = Vec::new();
    for entry in std::fs::read_dir(input).with_context(|| format!("reading {}", input.display()))? {
        let path = entry?.path();
        if path.extension().is_some_and(|e| e == "json") {
            let text = std::fs::read_to_string(&path)?;
            summaries.push(
                serde_json::from_str(&text)
                    .with_context(|| format!("parsing {}", path.display()))?,
            );
        }
    }
    anyhow::ensure!(
        !summaries.is_empty(),
        "no run summaries in {}",
        input.display()
    );
    summaries.sort_by(|a, b| a.label.cmp(&b.label));
    std::fs::create_dir_all(output)?;
    percentile_chart(&summaries, &output.join("latency-percentiles.svg"))?;
    timeline_chart(&summaries, &output.join("latency-over-time.svg"))?;

    let mut md = String::from("# Load report\n\n");
    md.push_str("| run | load | achieved/s | p50 ms | p90 ms | p99 ms | p99.9 ms | max ms | 201 | 409 | other 4xx | 5xx | failed | DB statements | oversell | duplicates | checks |\n");
    md.push_str("|---|---|---|---|---|---|---|---|---|---|---|---|---|---|---|---|---|\n");
    let mut all_passed = true;
    for s in &summaries {
        let l = &s.latency;
        let oversold = s
            .checks
            .iter()
            .filter(|c| c.name.ends_with("no oversell"))
            .any(|c| !c.passed);
        let duplicated = s
            .checks
            .iter()
            .filter(|c| c.name.contains("duplicate") || c.name.contains("answered twice"))
            .any(|c| !c.passed);
        let passed = s.checks.iter().all(|c| c.passed);
        all_passed &= passed;
        md.push_str(&format!(
            "| {} | {} | {:.0} | {:.2} | {:.2} | {:.2} | {:.2} | {:.2} | {} | {} | {} | {} | {} | {} | {} | {} | {} |\n",
            s.label,
            s.mode,
            s.achieved_rate,
            l.p50_ms,
            l.p90_ms,
            l.p99_ms,
            l.p999_ms,
            l.max_ms,
            s.created,
            s.conflict_409,
            s.other_4xx,
            s.server_5xx,
            s.failed + s.dropped,
            s.db_statements.map_or("–".to_owned(), |n| n.to_string()),
            if s.checks.is_empty() { "–" } else if oversold { "**yes**" } else { "0" },
            if s.checks.is_empty() { "–" } else if duplicated { "**yes**" } else { "0" },
            if s.checks.is_empty() { "–".to_owned() } else if passed { format!("{} ok", s.checks.len()) } else { "**FAIL**".to_owned() },
        ));
    }
    md.push_str("\nLatency is measured from each request's scheduled send time (open model), so a stalled server is charged for the whole stall.\n\n");
    md.push_str("![latency percentiles](latency-percentiles.svg)\n\n![latency over time](latency-over-time.svg)\n\n## Checks\n\n");
    for s in &summaries {
        for c in &s.checks {
            md.push_str(&format!(
                "- {} / {}: {} — {}\n",
                s.label,
                c.name,
                if c.passed { "ok" } else { "**FAIL**" },
                c.detail
            ));
        }
    }
    std::fs::write(output.join("README.md"), md)?;
    println!(
        "loadgen: report written to {}",
        output.join("README.md").display()
    );
    Ok(all_passed)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_nines_axis_spaces_percentiles_by_their_nines() {
        assert!((nines(0.0) - 0.0).abs() < 1e-9);
        assert!((nines(90.0) - 1.0).abs() < 1e-9);
        assert!((nines(99.0) - 2.0).abs() < 1e-9);
        assert!((nines(99.9) - 3.0).abs() < 1e-9);
    }

    #[test]
    fn percentiles_come_from_the_histogram() {
        let mut h = Histogram::<u64>::new_with_bounds(1, 600_000_000, 3).expect("histogram");
        for us in 1..=1000u64 {
            h.record(us * 1000).expect("record");
        }
        let p = percentiles(&h);
        assert!((p.p50_ms - 500.0).abs() < 1.0, "{}", p.p50_ms);
        assert!((p.p99_ms - 990.0).abs() < 1.0, "{}", p.p99_ms);
        assert!(p.max_ms >= 999.0);
    }
}
