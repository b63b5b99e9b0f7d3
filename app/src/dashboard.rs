//! The admin dashboard: what the server samples from its own metrics every
//! second, and the SVG charts that draw it (no chart library: plain Leptos
//! SVG, so it renders on the server and refreshes in the browser).
//!
//! Per strategy (A: `redis+db`, B: `db`) over the last minutes: the Lua
//! success rate, the database conflict rate, the browser intercept rate,
//! throughput and latency percentiles; the article's three-layer A/B
//! heatmap; the hottest items; and, with a payment deadline, the orders by
//! status, payments on time and late, units returned by expiry and how soon
//! they sold again; and, per drop with a waiting room, its line, admissions
//! per second and passes.

use crate::i18n::Lang;
use crate::model::OrderStatus;
use leptos::prelude::*;
use serde::{Deserialize, Serialize};

/// One second (or so) of one strategy.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Point {
    /// Milliseconds since the Unix epoch at the end of the interval.
    pub at_ms: i64,
    pub orders_per_second: f64,
    /// Reservations that held, of those that asked the store (percent).
    pub lua_success_pct: Option<f64>,
    /// Versioned updates that found another write first (percent).
    pub db_conflict_pct: Option<f64>,
    /// Taps the browser swallowed, of taps plus orders (percent).
    pub intercept_pct: Option<f64>,
    /// Order latency inside the server over the last few seconds (ms).
    pub p50_ms: Option<f64>,
    pub p90_ms: Option<f64>,
    pub p99_ms: Option<f64>,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct StrategySeries {
    /// `redis+db` or `db`.
    pub strategy: String,
    pub points: Vec<Point>,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct HotItem {
    pub item_id: i64,
    pub title: String,
    pub requests_per_second: f64,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct DashboardData {
    /// The server's default strategy.
    pub strategy: String,
    pub series: Vec<StrategySeries>,
    pub hot_items: Vec<HotItem>,
    /// Totals since start: orders created, browser intercepts.
    pub orders_created: u64,
    pub intercepts: u64,
    /// With a payment deadline.
    pub payments: Option<PaymentsPanel>,
    /// Every drop whose waiting room this instance has run, newest first.
    pub drops: Vec<DropRow>,
}

/// One drop's waiting room, as this instance's admitter last saw it (the
/// line and passes are shared by every instance; admissions are counted by
/// the instance that made them).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct DropRow {
    pub item_id: i64,
    pub title: String,
    /// Buyers waiting in the line.
    pub waiting: u64,
    /// Admissions per second over the last sample, and since start.
    pub admitted_per_second: f64,
    pub admitted: u64,
    /// Passes given and not yet used nor expired; used; expired unused.
    pub passes_open: u64,
    pub passes_used: u64,
    pub passes_expired: u64,
}

/// The payment deadline at a glance.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct PaymentsPanel {
    /// Orders in each status, as the database counts them (every instance's).
    pub orders_by_status: Vec<(OrderStatus, i64)>,
    /// Since this instance started: payments before the deadline, and after
    /// it (refunds due).
    pub paid_on_time: u64,
    pub paid_late: u64,
    /// Since this instance started: units its expiries put back on sale.
    pub units_returned: u64,
    /// From an expiry to the resale of its unit, on this instance (seconds).
    pub resale_p50_seconds: Option<f64>,
    pub resale_p90_seconds: Option<f64>,
}

const COLORS: [&str; 2] = ["#d9480f", "#1c7ed6"];

fn strategy_name(strategy: &str, lang: Lang) -> &'static str {
    match (strategy, lang) {
        ("redis+db", Lang::En) => "A · Redis + DB",
        ("redis+db", Lang::ZhCn) => "A · Redis + 数据库",
        (_, Lang::En) => "B · DB only",
        (_, Lang::ZhCn) => "B · 仅数据库",
    }
}

/// A line chart of one measure for both strategies, 0 to `max` on the y axis.
#[component]
pub fn LineChart(
    title: &'static str,
    unit: &'static str,
    series: Vec<StrategySeries>,
    measure: fn(&Point) -> Option<f64>,
    /// A fixed top of the y axis (percentages); `None` scales to the data.
    fixed_max: Option<f64>,
) -> impl IntoView {
    let lang = use_context::<Lang>().unwrap_or_default();
    let (width, height, left, bottom) = (320.0, 150.0, 34.0, 18.0);
    let all_points: Vec<(i64, f64)> = series
        .iter()
        .flat_map(|s| {
            s.points
                .iter()
                .filter_map(|p| measure(p).map(|v| (p.at_ms, v)))
        })
        .collect();
    let t_min = series
        .iter()
        .flat_map(|s| s.points.first())
        .map(|p| p.at_ms)
        .min()
        .unwrap_or(0);
    let t_max = series
        .iter()
        .flat_map(|s| s.points.last())
        .map(|p| p.at_ms)
        .max()
        .unwrap_or(1);
    let data_max = all_points.iter().map(|(_, v)| *v).fold(0.0_f64, f64::max);
    let y_max = fixed_max.unwrap_or_else(|| nice_ceiling(data_max));
    let x = move |t: i64| {
        left + (t - t_min) as f64 / ((t_max - t_min).max(1) as f64) * (width - left - 4.0)
    };
    let y = move |v: f64| 4.0 + (1.0 - (v / y_max).clamp(0.0, 1.0)) * (height - bottom - 4.0);
    let lines = series
        .iter()
        .enumerate()
        .map(|(i, s)| {
            let path: Vec<String> = s
                .points
                .iter()
                .filter_map(|p| measure(p).map(|v| format!("{:.1},{:.1}", x(p.at_ms), y(v))))
                .collect();
            let color = COLORS[i % COLORS.len()];
            view! {
                <polyline points=path.join(" ") fill="none" stroke=color stroke-width="2" />
            }
        })
        .collect_view();
    let legend = series
        .iter()
        .enumerate()
        .map(|(i, s)| {
            let latest = s.points.iter().rev().find_map(measure);
            let text = format!(
                "{} {}",
                strategy_name(&s.strategy, lang),
                latest.map_or("–".to_owned(), |v| format!("{v:.1}{unit}"))
            );
            view! {
                <span class="legend-entry">
                    <i style=format!("background:{}", COLORS[i % COLORS.len()])></i>
                    {text}
                </span>
            }
        })
        .collect_view();
    view! {
        <figure class="chart">
            <figcaption>{title}</figcaption>
            <svg viewBox=format!("0 0 {width} {height}") role="img" aria-label=title>
                <line x1=left y1=y(0.0) x2=width - 4.0 y2=y(0.0) class="axis" />
                <line x1=left y1=y(y_max / 2.0) x2=width - 4.0 y2=y(y_max / 2.0) class="grid" />
                <line x1=left y1=y(y_max) x2=width - 4.0 y2=y(y_max) class="grid" />
                <text x=left - 4.0 y=y(0.0) + 4.0 class="tick">"0"</text>
                <text x=left - 4.0 y=y(y_max) + 4.0 class="tick">{format_tick(y_max)}</text>
                {lines}
            </svg>
            <div class="legend">{legend}</div>
        </figure>
    }
}

fn nice_ceiling(v: f64) -> f64 {
    if v <= 0.0 {
        return 1.0;
    }
    let magnitude = 10f64.powf(v.log10().floor());
    [1.0, 2.0, 5.0, 10.0]
        .iter()
        .map(|m| m * magnitude)
        .find(|c| *c >= v)
        .unwrap_or(10.0 * magnitude)
}

fn format_tick(v: f64) -> String {
    if v >= 10.0 {
        format!("{v:.0}")
    } else {
        format!("{v:.1}")
    }
}

/// One heatmap layer: its English and Chinese column labels, and the
/// percentage it reads from a point.
type Layer = (&'static str, &'static str, fn(&Point) -> Option<f64>);

/// The three-layer A/B heatmap: one column per strategy and layer, one row
/// per time slice (newest on top), colour by percentage.
#[component]
pub fn Heatmap(series: Vec<StrategySeries>, rows: usize) -> impl IntoView {
    let lang = use_context::<Lang>().unwrap_or_default();
    let layers: [Layer; 3] = [
        ("Lua", "Lua", |p| p.lua_success_pct),
        ("DB", "库", |p| p.db_conflict_pct),
        ("FE", "前端", |p| p.intercept_pct),
    ];
    let slice = 5usize;
    let (cell_w, cell_h, top, left) = (46.0, 14.0, 30.0, 44.0);
    let mut cells = Vec::new();
    let mut headers = Vec::new();
    let mut column = 0usize;
    for s in &series {
        for (en, zh, measure) in layers {
            let label = format!(
                "{}·{}",
                if s.strategy == "redis+db" { "A" } else { "B" },
                if lang == Lang::ZhCn { zh } else { en }
            );
            headers.push(view! {
                <text x=left + column as f64 * cell_w + cell_w / 2.0 y=top - 8.0 class="heat-head">
                    {label.clone()}
                </text>
            });
            for row in 0..rows {
                let end = s.points.len().saturating_sub(row * slice);
                let start = end.saturating_sub(slice);
                let values: Vec<f64> = s.points[start..end].iter().filter_map(measure).collect();
                let value =
                    (!values.is_empty()).then(|| values.iter().sum::<f64>() / values.len() as f64);
                let fill = value.map_or("#eef0f3".to_owned(), heat_color);
                let tip = value.map_or("–".to_owned(), |v| format!("{v:.1}%"));
                cells.push(view! {
                    <rect
                        x=left + column as f64 * cell_w + 1.0
                        y=top + row as f64 * cell_h + 1.0
                        width=cell_w - 2.0
                        height=cell_h - 2.0
                        fill=fill
                        rx="2"
                    >
                        <title>{format!("{label} {tip}")}</title>
                    </rect>
                });
            }
            column += 1;
        }
    }
    let row_labels = (0..rows)
        .step_by(4)
        .map(|row| {
            view! {
                <text x=left - 6.0 y=top + row as f64 * cell_h + cell_h - 3.0 class="tick">
                    {format!("-{}s", row * slice)}
                </text>
            }
        })
        .collect_view();
    let width = left + column.max(1) as f64 * cell_w + 4.0;
    let height = top + rows as f64 * cell_h + 4.0;
    view! {
        <figure class="chart heatmap">
            <figcaption>
                {if lang == Lang::ZhCn {
                    "三层 A/B 热力图(Lua 成功率 · 数据库冲突率 · 前端拦截率)"
                } else {
                    "Three-layer A/B heatmap (Lua success · DB conflict · browser intercept, %)"
                }}
            </figcaption>
            <svg viewBox=format!("0 0 {width} {height}") role="img" aria-label="heatmap">
                {headers}
                {row_labels}
                {cells}
            </svg>
            <div class="heat-scale">
                <span>"0%"</span>
                <i style="background:linear-gradient(90deg,#fff5eb,#fd8d3c,#7f2704)"></i>
                <span>"100%"</span>
            </div>
        </figure>
    }
}

/// 0..100 → a sequential orange scale.
pub fn heat_color(pct: f64) -> String {
    let t = (pct / 100.0).clamp(0.0, 1.0);
    let stops = [
        (255.0, 245.0, 235.0),
        (253.0, 141.0, 60.0),
        (127.0, 39.0, 4.0),
    ];
    let (a, b, u) = if t < 0.5 {
        (stops[0], stops[1], t * 2.0)
    } else {
        (stops[1], stops[2], (t - 0.5) * 2.0)
    };
    let mix = |x: f64, y: f64| (x + (y - x) * u).round() as u8;
    format!(
        "#{:02x}{:02x}{:02x}",
        mix(a.0, b.0),
        mix(a.1, b.1),
        mix(a.2, b.2)
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_heat_scale_runs_from_pale_to_dark() {
        assert_eq!(heat_color(0.0), "#fff5eb");
        assert_eq!(heat_color(50.0), "#fd8d3c");
        assert_eq!(heat_color(100.0), "#7f2704");
        assert_eq!(heat_color(250.0), "#7f2704");
    }

    #[test]
    fn axis_tops_are_round_numbers() {
        assert_eq!(nice_ceiling(0.0), 1.0);
        assert_eq!(nice_ceiling(3.2), 5.0);
        assert_eq!(nice_ceiling(47.0), 50.0);
        assert_eq!(nice_ceiling(120.0), 200.0);
    }
}
