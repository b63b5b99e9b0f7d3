//! Prometheus metrics: one name per fact, base units, `_total` counters.
//!
//! Each application owns its recorder ([`Metrics`]), rather than the
//! process-global one: two servers in one process (the integration tests)
//! keep separate counts, and `GET /metrics` shows exactly this server's.
//! [`Metrics::disabled`] hands out no-op handles, for measuring what
//! recording costs.
//!
//! | name | labels |
//! |---|---|
//! | `oversell_orders_total` | `outcome` (`created`, `replayed`, or an error code), `strategy` |
//! | `oversell_reservation_outcomes_total` | `result` (`ok`, `already_held`, `sold_out`, `limit`, `not_loaded`, `error`, `skipped` under B, `bypassed` while the breaker is open, `sold_out_memo` when the sold-out memo refused without asking the store), `strategy` |
//! | `oversell_db_update_attempts_total` | `result` (`ok`, `conflict`), `strategy` |
//! | `oversell_db_retries_total` | `strategy` |
//! | `oversell_idempotency_total` | `result` (`new`, `replay`, `in_progress`, `mismatch`, `error`), `strategy` |
//! | `oversell_confirms_total`, `oversell_releases_total` | `result` |
//! | `oversell_browser_intercepts_total` | `reason` (`swallowed_tap`, `restore_lookup`, `hidden_block`) |
//! | `oversell_stage_duration_seconds` | `stage` (`idempotency`, `reserve`, `ledger`, `settle`, `answer`: the pipeline's stages 1 to 5), `strategy` |
//! | `oversell_order_duration_seconds` | `strategy` |
//! | `oversell_holds_live` (gauge), `oversell_holds_reaped_total` | |
//! | `oversell_redis_breaker_state` (gauge: 0 closed, 1 half-open, 2 open) | |
//! | `oversell_reconcile_repairs_total`, `oversell_reconcile_drift_units_total`, `oversell_reconcile_drifting_items` (gauge, last pass) | |
//! | `oversell_hot_item_id`, `oversell_hot_item_requests_per_second` (gauges) | `rank` (`1` to `5`) |
//! | `oversell_queue_joins_total`, `oversell_queue_admitted_total`, `oversell_queue_passes_expired_total` | `item` (drops with a waiting room) |
//! | `oversell_queue_waiting`, `oversell_queue_passes_open`, `oversell_queue_passes_used` (gauges, the store's counts) | `item` |
//! | `oversell_order_transitions_total` (orders entering a status) | `to` (`confirmed`, `awaiting_payment`, `paid`, `expired`, `refund_due`) |
//! | `oversell_payment_webhooks_total` | `result` (`paid`: on time, `refund_due`: late, `duplicate`, `ignored`, `replayed`, `invalid_signature`, `invalid_event`, `unknown_order`, `amount_mismatch`, `event_reused`, `error`) |
//! | `oversell_units_returned_total` (units back on sale by expiry) | |
//! | `oversell_expiry_to_resale_seconds` (per unit: from its expiry to the next order this instance commits for it) | |

use app::domain::ItemId;
use metrics::{
    Counter, Gauge, Histogram, Key, KeyName, Label, Metadata, Recorder, SharedString, Unit,
};
use metrics_exporter_prometheus::{
    Matcher, PrometheusBuilder, PrometheusHandle, PrometheusRecorder,
};
use std::time::Duration;

pub const ORDERS: &str = "oversell_orders_total";
pub const RESERVATIONS: &str = "oversell_reservation_outcomes_total";
pub const DB_UPDATE_ATTEMPTS: &str = "oversell_db_update_attempts_total";
pub const DB_RETRIES: &str = "oversell_db_retries_total";
pub const IDEMPOTENCY: &str = "oversell_idempotency_total";
pub const CONFIRMS: &str = "oversell_confirms_total";
pub const RELEASES: &str = "oversell_releases_total";
pub const BROWSER_INTERCEPTS: &str = "oversell_browser_intercepts_total";
pub const STAGE_SECONDS: &str = "oversell_stage_duration_seconds";
pub const ORDER_SECONDS: &str = "oversell_order_duration_seconds";
pub const HOLDS_LIVE: &str = "oversell_holds_live";
pub const HOLDS_REAPED: &str = "oversell_holds_reaped_total";
pub const BREAKER_STATE: &str = "oversell_redis_breaker_state";
pub const RECONCILE_PASSES: &str = "oversell_reconcile_passes_total";
pub const RECONCILE_REPAIRS: &str = "oversell_reconcile_repairs_total";
pub const RECONCILE_UNITS: &str = "oversell_reconcile_drift_units_total";
pub const RECONCILE_DRIFTING: &str = "oversell_reconcile_drifting_items";
/// The hottest items by rank (1 = hottest): their id and request rate. Ranks
/// keep the series count fixed however many items get hot over time.
pub const HOT_ITEM_ID: &str = "oversell_hot_item_id";
pub const HOT_ITEM_RATE: &str = "oversell_hot_item_requests_per_second";
pub const HOT_RANKS: [&str; 5] = ["1", "2", "3", "4", "5"];
/// Waiting rooms, per drop.
pub const QUEUE_JOINS: &str = "oversell_queue_joins_total";
pub const QUEUE_ADMITTED: &str = "oversell_queue_admitted_total";
pub const QUEUE_PASSES_EXPIRED: &str = "oversell_queue_passes_expired_total";
pub const QUEUE_WAITING: &str = "oversell_queue_waiting";
pub const QUEUE_PASSES_OPEN: &str = "oversell_queue_passes_open";
pub const QUEUE_PASSES_USED: &str = "oversell_queue_passes_used";
pub const ORDER_TRANSITIONS: &str = "oversell_order_transitions_total";
pub const PAYMENT_WEBHOOKS: &str = "oversell_payment_webhooks_total";
pub const UNITS_RETURNED: &str = "oversell_units_returned_total";
pub const EXPIRY_TO_RESALE_SECONDS: &str = "oversell_expiry_to_resale_seconds";

/// Every metric name this server exports, for checks on dashboards and rules.
pub const ALL: &[&str] = &[
    ORDERS,
    RESERVATIONS,
    DB_UPDATE_ATTEMPTS,
    DB_RETRIES,
    IDEMPOTENCY,
    CONFIRMS,
    RELEASES,
    BROWSER_INTERCEPTS,
    STAGE_SECONDS,
    ORDER_SECONDS,
    HOLDS_LIVE,
    HOLDS_REAPED,
    BREAKER_STATE,
    RECONCILE_PASSES,
    RECONCILE_REPAIRS,
    RECONCILE_UNITS,
    RECONCILE_DRIFTING,
    HOT_ITEM_ID,
    HOT_ITEM_RATE,
    QUEUE_JOINS,
    QUEUE_ADMITTED,
    QUEUE_PASSES_EXPIRED,
    QUEUE_WAITING,
    QUEUE_PASSES_OPEN,
    QUEUE_PASSES_USED,
    ORDER_TRANSITIONS,
    PAYMENT_WEBHOOKS,
    UNITS_RETURNED,
    EXPIRY_TO_RESALE_SECONDS,
];

/// Latency buckets from 100 µs to 10 s: the reservation layer answers in
/// well under a millisecond, the database layer in milliseconds.
const LATENCY_BUCKETS: &[f64] = &[
    0.0001, 0.00025, 0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5,
    5.0, 10.0,
];

/// From an expiry to the resale of its unit: well under a second in a
/// frenzy, minutes when nobody wants the item any more.
const RESALE_BUCKETS: &[f64] = &[
    0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0, 300.0, 900.0, 3600.0,
];

static METADATA: Metadata<'static> = Metadata::new(module_path!(), metrics::Level::INFO, None);

/// This server's metrics.
pub struct Metrics {
    /// `None` when disabled: every handle is a no-op.
    recorder: Option<PrometheusRecorder>,
}

impl std::fmt::Debug for Metrics {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Metrics")
            .field("enabled", &self.recorder.is_some())
            .finish()
    }
}

impl Metrics {
    /// A fresh recorder with the latency buckets and descriptions set.
    ///
    /// # Errors
    /// The bucket configuration is refused (it is a constant, so never in
    /// practice).
    pub fn new() -> anyhow::Result<Self> {
        let recorder = PrometheusBuilder::new()
            .set_buckets_for_metric(
                Matcher::Full(EXPIRY_TO_RESALE_SECONDS.into()),
                RESALE_BUCKETS,
            )?
            .set_buckets_for_metric(Matcher::Suffix("_seconds".into()), LATENCY_BUCKETS)?
            .build_recorder();
        let metrics = Self {
            recorder: Some(recorder),
        };
        metrics.describe();
        metrics.preregister();
        Ok(metrics)
    }

    /// Registers every fixed series at zero, so a rate over a fact that has
    /// not happened yet reads 0 instead of "no data" on dashboards and in
    /// alert rules.
    fn preregister(&self) {
        for strategy in ["redis+db", "db"] {
            for outcome in [
                "created",
                "replayed",
                "sold_out",
                "stock_conflict",
                "limit_exceeded",
                "unavailable",
            ] {
                self.counter(ORDERS, &[("outcome", outcome), ("strategy", strategy)])
                    .increment(0);
            }
            for result in [
                "ok",
                "already_held",
                "sold_out",
                "limit",
                "not_loaded",
                "error",
                "skipped",
                "bypassed",
            ] {
                self.counter(RESERVATIONS, &[("result", result), ("strategy", strategy)])
                    .increment(0);
            }
            for result in ["ok", "conflict"] {
                self.counter(
                    DB_UPDATE_ATTEMPTS,
                    &[("result", result), ("strategy", strategy)],
                )
                .increment(0);
            }
            self.counter(DB_RETRIES, &[("strategy", strategy)])
                .increment(0);
            for result in ["new", "replay", "in_progress", "mismatch", "error"] {
                self.counter(IDEMPOTENCY, &[("result", result), ("strategy", strategy)])
                    .increment(0);
            }
            let _registered = self.histogram(ORDER_SECONDS, &[("strategy", strategy)]);
        }
        for result in [
            "hold_ended",
            "taken_after_reap",
            "no_hold",
            "error",
            "retried",
        ] {
            self.counter(CONFIRMS, &[("result", result)]).increment(0);
        }
        for result in ["given_back", "nothing_held", "error"] {
            self.counter(RELEASES, &[("result", result)]).increment(0);
        }
        for reason in ["swallowed_tap", "restore_lookup", "hidden_block"] {
            self.counter(BROWSER_INTERCEPTS, &[("reason", reason)])
                .increment(0);
        }
        for to in [
            "confirmed",
            "awaiting_payment",
            "paid",
            "expired",
            "refund_due",
        ] {
            self.counter(ORDER_TRANSITIONS, &[("to", to)]).increment(0);
        }
        for result in [
            "paid",
            "refund_due",
            "duplicate",
            "replayed",
            "invalid_signature",
        ] {
            self.counter(PAYMENT_WEBHOOKS, &[("result", result)])
                .increment(0);
        }
        self.counter(UNITS_RETURNED, &[]).increment(0);
        let _registered = self.histogram(EXPIRY_TO_RESALE_SECONDS, &[]);
        self.counter(HOLDS_REAPED, &[]).increment(0);
        self.gauge(HOLDS_LIVE, &[]).set(0.0);
        self.gauge(BREAKER_STATE, &[]).set(0.0);
        self.counter(RECONCILE_PASSES, &[]).increment(0);
        self.counter(RECONCILE_REPAIRS, &[]).increment(0);
        self.counter(RECONCILE_UNITS, &[]).increment(0);
        self.gauge(RECONCILE_DRIFTING, &[]).set(0.0);
        for rank in HOT_RANKS {
            self.gauge(HOT_ITEM_ID, &[("rank", rank)]).set(0.0);
            self.gauge(HOT_ITEM_RATE, &[("rank", rank)]).set(0.0);
        }
    }

    /// Records nothing.
    pub fn disabled() -> Self {
        Self { recorder: None }
    }

    /// The Prometheus text of everything recorded so far.
    pub fn render(&self) -> String {
        self.recorder
            .as_ref()
            .map(|r| r.handle().render())
            .unwrap_or_default()
    }

    /// Keeps histograms bounded; the server calls it on a timer.
    pub fn run_upkeep(&self) {
        if let Some(recorder) = &self.recorder {
            recorder.handle().run_upkeep();
        }
    }

    pub fn handle(&self) -> Option<PrometheusHandle> {
        self.recorder.as_ref().map(PrometheusRecorder::handle)
    }

    pub fn counter(&self, name: &'static str, labels: &[(&'static str, &'static str)]) -> Counter {
        match &self.recorder {
            Some(r) => r.register_counter(&key(name, labels), &METADATA),
            None => Counter::noop(),
        }
    }

    pub fn gauge(&self, name: &'static str, labels: &[(&'static str, &'static str)]) -> Gauge {
        match &self.recorder {
            Some(r) => r.register_gauge(&key(name, labels), &METADATA),
            None => Gauge::noop(),
        }
    }

    /// A counter of one item (a drop): its id is the `item` label.
    pub fn item_counter(&self, name: &'static str, item: ItemId) -> Counter {
        match &self.recorder {
            Some(r) => r.register_counter(&item_key(name, item), &METADATA),
            None => Counter::noop(),
        }
    }

    /// A gauge of one item (a drop): its id is the `item` label.
    pub fn item_gauge(&self, name: &'static str, item: ItemId) -> Gauge {
        match &self.recorder {
            Some(r) => r.register_gauge(&item_key(name, item), &METADATA),
            None => Gauge::noop(),
        }
    }

    /// Records how long one stage of the order pipeline took.
    pub fn stage_took(&self, stage: &'static str, strategy: &'static str, took: Duration) {
        self.histogram(STAGE_SECONDS, &[("stage", stage), ("strategy", strategy)])
            .record(took);
    }

    pub fn histogram(
        &self,
        name: &'static str,
        labels: &[(&'static str, &'static str)],
    ) -> Histogram {
        match &self.recorder {
            Some(r) => r.register_histogram(&key(name, labels), &METADATA),
            None => Histogram::noop(),
        }
    }

    fn describe(&self) {
        let Some(r) = &self.recorder else {
            return;
        };
        let counter = |name: &'static str, help: &'static str| {
            r.describe_counter(
                KeyName::from_const_str(name),
                None,
                SharedString::const_str(help),
            );
        };
        counter(ORDERS, "Order attempts by final outcome.");
        counter(RESERVATIONS, "Reservation store answers.");
        counter(DB_UPDATE_ATTEMPTS, "Versioned UPDATE attempts by result.");
        counter(DB_RETRIES, "Versioned UPDATE retries after a conflict.");
        counter(IDEMPOTENCY, "Idempotency-key checks by result.");
        counter(CONFIRMS, "Hold confirmations by result.");
        counter(RELEASES, "Hold releases by result.");
        counter(
            BROWSER_INTERCEPTS,
            "Browser-layer intercepts reported by pages.",
        );
        counter(HOLDS_REAPED, "Expired holds given back by the reaper.");
        counter(ORDER_TRANSITIONS, "Orders entering a status.");
        counter(
            PAYMENT_WEBHOOKS,
            "Payment webhook deliveries by result (paid: on time; refund_due: late).",
        );
        counter(
            UNITS_RETURNED,
            "Units back on sale after their order expired unpaid.",
        );
        counter(
            RECONCILE_PASSES,
            "Reconciliation passes completed over every item (a flat line: the reconciler is not running).",
        );
        counter(
            RECONCILE_REPAIRS,
            "Reservation counters found off the database and repaired.",
        );
        counter(
            RECONCILE_UNITS,
            "Units of drift repaired by reconciliation.",
        );
        counter(QUEUE_JOINS, "Buyers who joined a drop's waiting room.");
        counter(
            QUEUE_ADMITTED,
            "Buyers let in from a drop's waiting room by this instance, each with a pass.",
        );
        counter(
            QUEUE_PASSES_EXPIRED,
            "Waiting-room passes that expired unused (their buyers went back in line).",
        );
        let gauge = |name: &'static str, help: &'static str| {
            r.describe_gauge(
                KeyName::from_const_str(name),
                None,
                SharedString::const_str(help),
            );
        };
        gauge(
            HOT_ITEM_ID,
            "Id of the item at this rank of the hottest items (0: none).",
        );
        gauge(
            HOT_ITEM_RATE,
            "Decayed order-attempt rate of the item at this rank.",
        );
        gauge(
            RECONCILE_DRIFTING,
            "Items whose counter drifted in the last reconciliation pass.",
        );
        gauge(
            BREAKER_STATE,
            "Redis circuit breaker: 0 closed, 1 half-open, 2 open.",
        );
        gauge(
            HOLDS_LIVE,
            "Reservation holds alive after the last reaper pass.",
        );
        gauge(QUEUE_WAITING, "Buyers waiting in a drop's line.");
        gauge(
            QUEUE_PASSES_OPEN,
            "Waiting-room passes issued and not yet used or expired.",
        );
        gauge(
            QUEUE_PASSES_USED,
            "Waiting-room passes used by an order that committed.",
        );
        for (name, help) in [
            (STAGE_SECONDS, "Time per order pipeline stage."),
            (ORDER_SECONDS, "Order pipeline time end to end."),
            (
                EXPIRY_TO_RESALE_SECONDS,
                "Per unit, from its order's expiry to the next order this instance committed for it.",
            ),
        ] {
            r.describe_histogram(
                KeyName::from_const_str(name),
                Some(Unit::Seconds),
                SharedString::const_str(help),
            );
        }
    }
}

fn item_key(name: &'static str, item: ItemId) -> Key {
    Key::from_parts(name, vec![Label::new("item", item.to_string())])
}

fn key(name: &'static str, labels: &[(&'static str, &'static str)]) -> Key {
    let labels: Vec<Label> = labels
        .iter()
        .map(|(k, v)| Label::from_static_parts(k, v))
        .collect();
    Key::from_parts(name, labels)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn each_metrics_object_counts_on_its_own() {
        let a = Metrics::new().expect("metrics");
        let b = Metrics::new().expect("metrics");
        a.counter(ORDERS, &[("outcome", "created"), ("strategy", "db")])
            .increment(2);
        a.counter(ORDERS, &[("outcome", "created"), ("strategy", "db")])
            .increment(1);
        b.counter(ORDERS, &[("outcome", "created"), ("strategy", "db")])
            .increment(5);
        assert!(
            a.render()
                .contains(r#"oversell_orders_total{outcome="created",strategy="db"} 3"#),
            "{}",
            a.render()
        );
        assert!(
            b.render()
                .contains(r#"oversell_orders_total{outcome="created",strategy="db"} 5"#)
        );
    }

    #[test]
    fn the_resale_histogram_has_buckets_of_its_own() {
        let m = Metrics::new().expect("metrics");
        m.histogram(EXPIRY_TO_RESALE_SECONDS, &[]).record(42.0);
        let text = m.render();
        assert!(
            text.contains(r#"oversell_expiry_to_resale_seconds_bucket{le="60"} 1"#),
            "{text}"
        );
        assert!(
            !text.contains(r#"oversell_expiry_to_resale_seconds_bucket{le="0.0001"}"#),
            "{text}"
        );
    }

    #[test]
    fn disabled_metrics_record_nothing() {
        let off = Metrics::disabled();
        off.counter(ORDERS, &[("outcome", "created")]).increment(1);
        assert_eq!(off.render(), "");
    }

    #[test]
    fn latency_histograms_use_seconds_buckets() {
        let m = Metrics::new().expect("metrics");
        m.histogram(ORDER_SECONDS, &[("strategy", "db")])
            .record(0.003);
        let text = m.render();
        assert!(
            text.contains(r#"oversell_order_duration_seconds_bucket{strategy="db",le="0.005"} 1"#),
            "{text}"
        );
        assert!(
            text.contains("# HELP oversell_order_duration_seconds"),
            "{text}"
        );
    }
}
