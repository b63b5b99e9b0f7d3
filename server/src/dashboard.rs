//! The dashboard's data: a sampler that reads this server's own Prometheus
//! text once a second (the same numbers Prometheus scrapes), turns the
//! counter and histogram deltas into per-strategy rates and percentiles, and
//! keeps the last [`KEEP`] samples in a ring. With a payment deadline it
//! adds the orders by status (read from the database when the dashboard
//! asks) and the payment counters and resale times of this server; and a
//! row per drop from its waiting room's gauges and admission counter.

use crate::background::BackgroundTask;
use crate::db::{Database, items};
use crate::hot_items::HotItems;
use crate::metrics::{self as m, Metrics};
use app::dashboard::{DashboardData, DropRow, HotItem, PaymentsPanel, Point, StrategySeries};
use std::collections::{HashMap, VecDeque};
use std::sync::{Arc, Mutex};
use std::time::Duration;

/// Samples kept per strategy: five minutes at one a second.
pub const KEEP: usize = 300;
const EVERY: Duration = Duration::from_secs(1);
/// Percentiles are computed over this many recent samples.
const LATENCY_WINDOW: usize = 5;
const STRATEGIES: [&str; 2] = ["redis+db", "db"];

/// One parsed `name{labels} value` line.
#[derive(Debug, Clone, PartialEq)]
struct Series {
    name: String,
    labels: Vec<(String, String)>,
    value: f64,
}

impl Series {
    fn label(&self, key: &str) -> Option<&str> {
        self.labels
            .iter()
            .find(|(k, _)| k == key)
            .map(|(_, v)| v.as_str())
    }
}

/// Parses the Prometheus text format as this server writes it.
fn parse(text: &str) -> Vec<Series> {
    text.lines()
        .filter(|l| !l.starts_with('#') && !l.trim().is_empty())
        .filter_map(|line| {
            let (series, value) = line.rsplit_once(' ')?;
            let value: f64 = value.parse().ok()?;
            let (name, labels) = match series.split_once('{') {
                Some((name, rest)) => (name, rest.trim_end_matches('}')),
                None => (series, ""),
            };
            let labels = labels
                .split("\",")
                .filter(|p| !p.is_empty())
                .filter_map(|pair| {
                    let (k, v) = pair.split_once('=')?;
                    Some((k.to_owned(), v.trim_matches('"').to_owned()))
                })
                .collect();
            Some(Series {
                name: name.to_owned(),
                labels,
                value,
            })
        })
        .collect()
}

/// Cumulative readings of one strategy at one instant.
#[derive(Debug, Clone, Default, PartialEq)]
struct Reading {
    orders: f64,
    created: f64,
    reservations_asked: f64,
    reservations_held: f64,
    db_ok: f64,
    db_conflict: f64,
    /// `le` bound (seconds) → cumulative count of the order histogram.
    latency_buckets: Vec<(f64, f64)>,
}

fn read(series: &[Series], strategy: &str) -> Reading {
    let mut r = Reading::default();
    for s in series
        .iter()
        .filter(|s| s.label("strategy") == Some(strategy))
    {
        match s.name.as_str() {
            m::ORDERS => {
                r.orders += s.value;
                if s.label("outcome") == Some("created") {
                    r.created += s.value;
                }
            }
            m::RESERVATIONS => match s.label("result") {
                Some("skipped" | "bypassed") | None => {}
                Some(result) => {
                    r.reservations_asked += s.value;
                    if matches!(result, "ok" | "already_held") {
                        r.reservations_held += s.value;
                    }
                }
            },
            m::DB_UPDATE_ATTEMPTS => match s.label("result") {
                Some("ok") => r.db_ok += s.value,
                Some("conflict") => r.db_conflict += s.value,
                _ => {}
            },
            name if name == format!("{}_bucket", m::ORDER_SECONDS) => {
                let le = s.label("le").and_then(|le| {
                    if le == "+Inf" {
                        Some(f64::INFINITY)
                    } else {
                        le.parse().ok()
                    }
                });
                if let Some(le) = le {
                    r.latency_buckets.push((le, s.value));
                }
            }
            _ => {}
        }
    }
    r.latency_buckets.sort_by(|a, b| a.0.total_cmp(&b.0));
    r
}

fn intercepts(series: &[Series]) -> f64 {
    series
        .iter()
        .filter(|s| s.name == m::BROWSER_INTERCEPTS)
        .map(|s| s.value)
        .sum()
}

/// What one sample keeps: the rates of its interval and the histogram
/// deltas (for percentiles over a window of samples).
#[derive(Debug, Clone)]
struct Sample {
    at_ms: i64,
    seconds: f64,
    orders: f64,
    reservations_asked: f64,
    reservations_held: f64,
    db_ok: f64,
    db_conflict: f64,
    intercepts: f64,
    latency_deltas: Vec<(f64, f64)>,
}

fn percent(part: f64, whole: f64) -> Option<f64> {
    (whole > 0.0).then(|| 100.0 * part / whole)
}

/// `histogram_quantile` over bucket deltas: linear within the bucket.
fn quantile(q: f64, buckets: &[(f64, f64)]) -> Option<f64> {
    let total = buckets.last().map(|(_, c)| *c)?;
    if total <= 0.0 {
        return None;
    }
    let rank = q * total;
    let mut lower = (0.0, 0.0);
    for &(le, count) in buckets {
        if count >= rank {
            if le.is_infinite() {
                return Some(lower.0);
            }
            let in_bucket = count - lower.1;
            let fraction = if in_bucket > 0.0 {
                (rank - lower.1) / in_bucket
            } else {
                1.0
            };
            return Some(lower.0 + (le - lower.0) * fraction);
        }
        lower = (le, count);
    }
    Some(lower.0)
}

#[derive(Default)]
struct Rings {
    previous: HashMap<&'static str, (i64, Reading)>,
    previous_intercepts: f64,
    samples: HashMap<&'static str, VecDeque<Sample>>,
    /// Per drop (its `item` label): when its admissions were last read, how
    /// many there were, and the rate since the read before.
    admissions: HashMap<String, (i64, f64, f64)>,
}

pub struct Sampler {
    metrics: Arc<Metrics>,
    hot_items: Arc<HotItems>,
    db: Database,
    default_strategy: &'static str,
    /// Whether orders have a payment deadline (the payments panel).
    payments: bool,
    rings: Mutex<Rings>,
}

impl Sampler {
    pub fn new(
        metrics: Arc<Metrics>,
        hot_items: Arc<HotItems>,
        db: Database,
        default_strategy: &'static str,
    ) -> Self {
        Self {
            metrics,
            hot_items,
            db,
            default_strategy,
            payments: false,
            rings: Mutex::default(),
        }
    }

    /// Shows the payments panel.
    #[must_use]
    pub fn with_payments(mut self, payments: bool) -> Self {
        self.payments = payments;
        self
    }

    /// The payments panel: statuses from the database, the rest from this
    /// server's metrics.
    async fn payments_panel(&self) -> PaymentsPanel {
        let orders_by_status = crate::payments::transitions::count_by_status(&self.db)
            .await
            .unwrap_or_else(|e| {
                tracing::warn!(error = %e, "counting orders by status failed");
                Vec::new()
            });
        let series = parse(&self.metrics.render());
        let total = |name: &str, label: Option<(&str, &str)>| -> f64 {
            series
                .iter()
                .filter(|s| s.name == name)
                .filter(|s| label.is_none_or(|(k, v)| s.label(k) == Some(v)))
                .map(|s| s.value)
                .sum()
        };
        let resale = format!("{}_bucket", m::EXPIRY_TO_RESALE_SECONDS);
        let mut buckets: Vec<(f64, f64)> = series
            .iter()
            .filter(|s| s.name == resale)
            .filter_map(|s| {
                let le = match s.label("le")? {
                    "+Inf" => f64::INFINITY,
                    le => le.parse().ok()?,
                };
                Some((le, s.value))
            })
            .collect();
        buckets.sort_by(|a, b| a.0.total_cmp(&b.0));
        PaymentsPanel {
            orders_by_status,
            paid_on_time: total(m::PAYMENT_WEBHOOKS, Some(("result", "paid"))) as u64,
            paid_late: total(m::PAYMENT_WEBHOOKS, Some(("result", "refund_due"))) as u64,
            units_returned: total(m::UNITS_RETURNED, None) as u64,
            resale_p50_seconds: quantile(0.5, &buckets),
            resale_p90_seconds: quantile(0.9, &buckets),
        }
    }

    /// Takes one sample now, and publishes the hottest items as gauges.
    pub fn sample(&self, at_ms: i64) {
        let hot = self.hot_items.top(m::HOT_RANKS.len());
        for (i, rank) in m::HOT_RANKS.iter().enumerate() {
            let (id, rate) = hot
                .get(i)
                .map_or((0.0, 0.0), |h| (h.item.get() as f64, h.requests_per_second));
            self.metrics
                .gauge(m::HOT_ITEM_ID, &[("rank", rank)])
                .set(id);
            self.metrics
                .gauge(m::HOT_ITEM_RATE, &[("rank", rank)])
                .set(rate);
        }
        let series = parse(&self.metrics.render());
        let intercepts_now = intercepts(&series);
        let mut rings = self
            .rings
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        for s in series.iter().filter(|s| s.name == m::QUEUE_ADMITTED) {
            let Some(item) = s.label("item") else {
                continue;
            };
            let rate = match rings.admissions.get(item) {
                Some((then, before, _)) if at_ms > *then => {
                    (s.value - before) / ((at_ms - then) as f64 / 1000.0)
                }
                _ => 0.0,
            };
            rings
                .admissions
                .insert(item.to_owned(), (at_ms, s.value, rate));
        }
        let intercepts_delta = intercepts_now - rings.previous_intercepts;
        rings.previous_intercepts = intercepts_now;
        for strategy in STRATEGIES {
            let reading = read(&series, strategy);
            let previous = rings.previous.insert(strategy, (at_ms, reading.clone()));
            let Some((then, before)) = previous else {
                continue;
            };
            let deltas = reading
                .latency_buckets
                .iter()
                .map(|(le, count)| {
                    let earlier = before
                        .latency_buckets
                        .iter()
                        .find(|(l, _)| l == le)
                        .map_or(0.0, |(_, c)| *c);
                    (*le, count - earlier)
                })
                .collect();
            let orders = reading.orders - before.orders;
            let sample = Sample {
                at_ms,
                seconds: ((at_ms - then) as f64 / 1000.0).max(0.001),
                orders,
                reservations_asked: reading.reservations_asked - before.reservations_asked,
                reservations_held: reading.reservations_held - before.reservations_held,
                db_ok: reading.db_ok - before.db_ok,
                db_conflict: reading.db_conflict - before.db_conflict,
                // Pages report intercepts without a strategy; they belong to
                // the server's default.
                intercepts: if strategy == self.default_strategy {
                    intercepts_delta
                } else {
                    0.0
                },
                latency_deltas: deltas,
            };
            let ring = rings.samples.entry(strategy).or_default();
            ring.push_back(sample);
            while ring.len() > KEEP {
                ring.pop_front();
            }
        }
    }

    /// The charts' data as of the last sample.
    pub async fn data(&self) -> DashboardData {
        let (series, created) = {
            let rings = self
                .rings
                .lock()
                .unwrap_or_else(std::sync::PoisonError::into_inner);
            let series = STRATEGIES
                .iter()
                .map(|strategy| StrategySeries {
                    strategy: (*strategy).to_owned(),
                    points: rings.samples.get(strategy).map(points).unwrap_or_default(),
                })
                .collect();
            let created: f64 = rings.previous.values().map(|(_, r)| r.created).sum();
            (series, created)
        };
        let mut hot_items = Vec::new();
        for hot in self.hot_items.top(5) {
            let title = match items::get(&self.db, hot.item).await {
                Ok(Some(item)) => item.title,
                _ => format!("#{}", hot.item),
            };
            hot_items.push(HotItem {
                item_id: hot.item.get(),
                title,
                requests_per_second: hot.requests_per_second,
            });
        }
        let intercepts = {
            let rings = self
                .rings
                .lock()
                .unwrap_or_else(std::sync::PoisonError::into_inner);
            rings.previous_intercepts
        };
        let payments = match self.payments {
            true => Some(self.payments_panel().await),
            false => None,
        };
        let drops = self.drop_rows().await;
        DashboardData {
            strategy: self.default_strategy.to_owned(),
            series,
            hot_items,
            orders_created: created as u64,
            intercepts: intercepts as u64,
            payments,
            drops,
        }
    }

    /// A row per drop whose waiting room this instance has run, newest item
    /// first: the line and passes from the admitter's gauges, admissions
    /// from its counter.
    async fn drop_rows(&self) -> Vec<DropRow> {
        let series = parse(&self.metrics.render());
        let mut by_item: HashMap<i64, DropRow> = HashMap::new();
        for s in &series {
            let Some(item_id) = s.label("item").and_then(|i| i.parse::<i64>().ok()) else {
                continue;
            };
            let row = || DropRow {
                item_id,
                title: format!("#{item_id}"),
                waiting: 0,
                admitted_per_second: 0.0,
                admitted: 0,
                passes_open: 0,
                passes_used: 0,
                passes_expired: 0,
            };
            let value = s.value.max(0.0) as u64;
            match s.name.as_str() {
                m::QUEUE_WAITING => by_item.entry(item_id).or_insert_with(row).waiting = value,
                m::QUEUE_PASSES_OPEN => {
                    by_item.entry(item_id).or_insert_with(row).passes_open = value;
                }
                m::QUEUE_PASSES_USED => {
                    by_item.entry(item_id).or_insert_with(row).passes_used = value;
                }
                m::QUEUE_PASSES_EXPIRED => {
                    by_item.entry(item_id).or_insert_with(row).passes_expired = value;
                }
                m::QUEUE_ADMITTED => by_item.entry(item_id).or_insert_with(row).admitted = value,
                _ => {}
            }
        }
        {
            let rings = self
                .rings
                .lock()
                .unwrap_or_else(std::sync::PoisonError::into_inner);
            for row in by_item.values_mut() {
                if let Some((_, _, rate)) = rings.admissions.get(&row.item_id.to_string()) {
                    row.admitted_per_second = *rate;
                }
            }
        }
        let mut rows: Vec<DropRow> = by_item.into_values().collect();
        rows.sort_by_key(|row| std::cmp::Reverse(row.item_id));
        rows.truncate(DROPS_SHOWN);
        for row in &mut rows {
            if let Ok(id) = app::domain::ItemId::new(row.item_id)
                && let Ok(Some(item)) = items::get(&self.db, id).await
            {
                row.title = item.title;
            }
        }
        rows
    }
}

/// The newest drops the dashboard lists.
const DROPS_SHOWN: usize = 10;

fn points(ring: &VecDeque<Sample>) -> Vec<Point> {
    let samples: Vec<&Sample> = ring.iter().collect();
    samples
        .iter()
        .enumerate()
        .map(|(i, s)| {
            let window = &samples[i.saturating_sub(LATENCY_WINDOW - 1)..=i];
            let mut buckets: Vec<(f64, f64)> =
                s.latency_deltas.iter().map(|(le, _)| (*le, 0.0)).collect();
            for w in window {
                for (slot, (_, delta)) in buckets.iter_mut().zip(&w.latency_deltas) {
                    slot.1 += delta;
                }
            }
            let ms = |q: f64| quantile(q, &buckets).map(|seconds| seconds * 1000.0);
            Point {
                at_ms: s.at_ms,
                orders_per_second: s.orders / s.seconds,
                lua_success_pct: percent(s.reservations_held, s.reservations_asked),
                db_conflict_pct: percent(s.db_conflict, s.db_ok + s.db_conflict),
                intercept_pct: percent(s.intercepts, s.intercepts + s.orders),
                p50_ms: ms(0.50),
                p90_ms: ms(0.90),
                p99_ms: ms(0.99),
            }
        })
        .collect()
}

#[async_trait::async_trait]
impl app::ports::DashboardSource for Sampler {
    async fn dashboard(&self) -> DashboardData {
        self.data().await
    }
}

/// Samples every second until dropped.
pub fn spawn(sampler: Arc<Sampler>) -> BackgroundTask {
    BackgroundTask::every(EVERY, move || {
        sampler.sample(crate::db::now_ms());
        std::future::ready(())
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_exposition_format_parses_with_labels() {
        let text =
            "# HELP x y\noversell_orders_total{outcome=\"created\",strategy=\"db\"} 3\nplain 1.5\n";
        let series = parse(text);
        assert_eq!(series.len(), 2);
        assert_eq!(series[0].label("strategy"), Some("db"));
        assert_eq!(series[0].value, 3.0);
        assert_eq!(series[1].name, "plain");
    }

    #[test]
    fn quantiles_interpolate_within_buckets() {
        let buckets = [
            (0.001, 50.0),
            (0.01, 90.0),
            (0.1, 100.0),
            (f64::INFINITY, 100.0),
        ];
        let p50 = quantile(0.5, &buckets).expect("p50");
        assert!((p50 - 0.001).abs() < 1e-9, "{p50}");
        let p90 = quantile(0.9, &buckets).expect("p90");
        assert!((p90 - 0.01).abs() < 1e-9, "{p90}");
        let p95 = quantile(0.95, &buckets).expect("p95");
        assert!((p95 - 0.055).abs() < 1e-9, "{p95}");
        assert_eq!(quantile(0.5, &[(0.1, 0.0)]), None);
    }

    #[tokio::test]
    async fn samples_turn_counters_into_rates() {
        let metrics = Arc::new(Metrics::new().expect("metrics"));
        let db = Database::connect("sqlite::memory:", 1).await.expect("db");
        let sampler = Sampler::new(metrics.clone(), Arc::new(HotItems::new()), db, "redis+db");
        sampler.sample(1_000);
        let label = |result: &'static str| [("result", result), ("strategy", "redis+db")];
        metrics.counter(m::RESERVATIONS, &label("ok")).increment(3);
        metrics
            .counter(m::RESERVATIONS, &label("sold_out"))
            .increment(1);
        metrics
            .counter(m::DB_UPDATE_ATTEMPTS, &label("ok"))
            .increment(3);
        metrics
            .counter(m::DB_UPDATE_ATTEMPTS, &label("conflict"))
            .increment(1);
        metrics
            .counter(
                m::ORDERS,
                &[("outcome", "created"), ("strategy", "redis+db")],
            )
            .increment(4);
        metrics
            .counter(m::BROWSER_INTERCEPTS, &[("reason", "swallowed_tap")])
            .increment(4);
        sampler.sample(3_000);
        let data = sampler.data().await;
        let a = &data.series[0];
        assert_eq!(a.strategy, "redis+db");
        let p = &a.points[0];
        assert_eq!(p.orders_per_second, 2.0);
        assert_eq!(p.lua_success_pct, Some(75.0));
        assert_eq!(p.db_conflict_pct, Some(25.0));
        assert_eq!(p.intercept_pct, Some(50.0));
        assert_eq!(
            data.series[1].points[0].lua_success_pct, None,
            "B asked no store"
        );
        assert_eq!(data.payments, None, "no payment deadline, no panel");
    }

    #[tokio::test]
    async fn the_payments_panel_reads_webhooks_returns_and_resale_times() {
        let metrics = Arc::new(Metrics::new().expect("metrics"));
        let db = Database::connect("sqlite::memory:", 1).await.expect("db");
        let sampler = Sampler::new(metrics.clone(), Arc::new(HotItems::new()), db, "redis+db")
            .with_payments(true);
        metrics
            .counter(m::PAYMENT_WEBHOOKS, &[("result", "paid")])
            .increment(4);
        metrics
            .counter(m::PAYMENT_WEBHOOKS, &[("result", "refund_due")])
            .increment(1);
        metrics.counter(m::UNITS_RETURNED, &[]).increment(2);
        for seconds in [0.2, 0.2, 20.0] {
            metrics
                .histogram(m::EXPIRY_TO_RESALE_SECONDS, &[])
                .record(seconds);
        }
        let panel = sampler.data().await.payments.expect("a panel");
        assert_eq!((panel.paid_on_time, panel.paid_late), (4, 1));
        assert_eq!(panel.units_returned, 2);
        let p50 = panel.resale_p50_seconds.expect("p50");
        assert!((0.1..=0.25).contains(&p50), "{p50}");
        let p90 = panel.resale_p90_seconds.expect("p90");
        assert!((10.0..=30.0).contains(&p90), "{p90}");
        assert!(panel.orders_by_status.is_empty(), "no order yet");
    }

    #[tokio::test]
    async fn each_drop_gets_a_row_with_its_line_passes_and_admission_rate() {
        let metrics = Arc::new(Metrics::new().expect("metrics"));
        let db = Database::connect("sqlite::memory:", 1).await.expect("db");
        let sampler = Sampler::new(metrics.clone(), Arc::new(HotItems::new()), db, "redis+db");
        let item = app::domain::ItemId::new(7).expect("an id");
        metrics.item_gauge(m::QUEUE_WAITING, item).set(40.0);
        metrics.item_gauge(m::QUEUE_PASSES_OPEN, item).set(3.0);
        metrics.item_gauge(m::QUEUE_PASSES_USED, item).set(5.0);
        metrics
            .item_counter(m::QUEUE_PASSES_EXPIRED, item)
            .increment(1);
        metrics.item_counter(m::QUEUE_ADMITTED, item).increment(8);
        sampler.sample(1_000);
        metrics.item_counter(m::QUEUE_ADMITTED, item).increment(10);
        sampler.sample(3_000);
        let data = sampler.data().await;
        assert_eq!(
            data.drops,
            vec![DropRow {
                item_id: 7,
                title: "#7".into(),
                waiting: 40,
                admitted_per_second: 5.0,
                admitted: 18,
                passes_open: 3,
                passes_used: 5,
                passes_expired: 1,
            }]
        );
    }
}
