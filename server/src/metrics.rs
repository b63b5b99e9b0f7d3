//! Prometheus metrics: one name per fact, base units, `_total` counters.
//!
//! The recorder is process-global (the `metrics` facade); [`install`] sets it
//! once and returns the handle `GET /metrics` renders.

use metrics_exporter_prometheus::{Matcher, PrometheusBuilder, PrometheusHandle};
use std::sync::OnceLock;

/// Orders by final outcome (`created`, `replayed`, or an error code) and strategy.
pub const ORDERS: &str = "oversell_orders_total";
/// Reservation-store answers: `ok`, `already_held`, `sold_out`, `limit`,
/// `not_loaded`, `error`, `skipped` (strategy B).
pub const RESERVATIONS: &str = "oversell_reservation_outcomes_total";
/// Versioned-update attempts by `result`: `ok`, `conflict`.
pub const DB_UPDATE_ATTEMPTS: &str = "oversell_db_update_attempts_total";
/// Retries after a version conflict.
pub const DB_RETRIES: &str = "oversell_db_retries_total";
/// Idempotency checks by `result`: `new`, `replay`, `in_progress`, `mismatch`.
pub const IDEMPOTENCY: &str = "oversell_idempotency_total";
/// Confirms by `result`: `hold_ended`, `taken_after_reap`, `no_hold`,
/// `error` (then retried in the background), `retried`.
pub const CONFIRMS: &str = "oversell_confirms_total";
/// Releases by `result`: `given_back`, `nothing_held`, `error`.
pub const RELEASES: &str = "oversell_releases_total";
/// Browser-layer intercepts by `reason`.
pub const BROWSER_INTERCEPTS: &str = "oversell_browser_intercepts_total";
/// Time spent in each pipeline stage (`idempotency`, `reserve`, `ledger`, `settle`).
pub const STAGE_SECONDS: &str = "oversell_stage_duration_seconds";
/// End-to-end order latency inside the server, by strategy.
pub const ORDER_SECONDS: &str = "oversell_order_duration_seconds";
/// Holds alive after the last reaper pass.
pub const HOLDS_LIVE: &str = "oversell_holds_live";
/// Holds the reaper gave back.
pub const HOLDS_REAPED: &str = "oversell_holds_reaped_total";

/// Latency buckets from 100 µs to 10 s: the reservation layer answers in
/// well under a millisecond, the database layer in milliseconds.
const LATENCY_BUCKETS: &[f64] = &[
    0.0001, 0.00025, 0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5,
    5.0, 10.0,
];

static HANDLE: OnceLock<PrometheusHandle> = OnceLock::new();

/// Installs the global recorder on first call and returns its handle.
///
/// # Errors
/// Another recorder was installed by someone else first.
pub fn install() -> anyhow::Result<PrometheusHandle> {
    if let Some(handle) = HANDLE.get() {
        return Ok(handle.clone());
    }
    let recorder = PrometheusBuilder::new()
        .set_buckets_for_metric(Matcher::Suffix("_seconds".into()), LATENCY_BUCKETS)?
        .build_recorder();
    let handle = recorder.handle();
    if HANDLE.set(handle.clone()).is_ok() {
        metrics::set_global_recorder(recorder)?;
        describe();
    }
    HANDLE
        .get()
        .cloned()
        .ok_or_else(|| anyhow::anyhow!("metrics recorder not installed"))
}

fn describe() {
    use metrics::{Unit, describe_counter, describe_gauge, describe_histogram};
    describe_counter!(ORDERS, "Order attempts by final outcome.");
    describe_counter!(RESERVATIONS, "Reservation store answers.");
    describe_counter!(DB_UPDATE_ATTEMPTS, "Versioned UPDATE attempts by result.");
    describe_counter!(DB_RETRIES, "Versioned UPDATE retries after a conflict.");
    describe_counter!(IDEMPOTENCY, "Idempotency-key checks by result.");
    describe_counter!(CONFIRMS, "Hold confirmations by result.");
    describe_counter!(RELEASES, "Hold releases by result.");
    describe_counter!(
        BROWSER_INTERCEPTS,
        "Browser-layer intercepts reported by pages."
    );
    describe_histogram!(
        STAGE_SECONDS,
        Unit::Seconds,
        "Time per order pipeline stage."
    );
    describe_histogram!(
        ORDER_SECONDS,
        Unit::Seconds,
        "Order pipeline time end to end."
    );
    describe_gauge!(
        HOLDS_LIVE,
        "Reservation holds alive after the last reaper pass."
    );
    describe_counter!(HOLDS_REAPED, "Expired holds given back by the reaper.");
}
