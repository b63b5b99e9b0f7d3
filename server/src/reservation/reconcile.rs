//! Reconciliation: Redis is a filter and the database the truth, so any
//! difference between an item's counter and its database stock is drift
//! (a confirm lost in a Redis outage, a counter loaded from a snapshot that
//! an order then changed, a restock applied twice by hand).
//!
//! A pass first reaps every item's expired holds (the reaper's worklist can
//! miss a hold whose listing was lost in a crash), then reads every item's
//! `(stock, version)` from the database and asks
//! the store to compare and repair atomically, only while the item has no
//! live hold. If the row's version changed during the check (an order
//! committed in between), the item is checked again, so a repair never
//! rests on a stale read for long. Safe while orders flow and from several
//! instances at once: each repair sets the counter to what the database said
//! an instant earlier, and a repair made stale by a racing order is found
//! and redone by the next check.

use super::{CounterSeed, Reconciled, ReservationStore};
use crate::background::BackgroundTask;
use crate::db::{Database, items};
use crate::metrics::{self as m, Metrics};
use serde::Serialize;
use std::sync::Arc;
use std::time::Duration;

/// Checks per item per pass when orders keep changing the row.
const ATTEMPTS: usize = 3;

#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize)]
pub struct Report {
    pub items: u64,
    pub in_step: u64,
    pub repaired: u64,
    /// Sum over repaired items of |counter - stock| before the repair.
    pub units_repaired: u64,
    pub busy: u64,
    pub not_loaded: u64,
}

/// One pass over every item.
///
/// # Errors
/// The database or the store failed; items before the failure are done.
pub async fn reconcile_all(
    store: &dyn ReservationStore,
    db: &Database,
    metrics: &Metrics,
) -> anyhow::Result<Report> {
    let mut report = Report::default();
    let now = crate::db::now_ms();
    for item in items::list(db).await? {
        report.items += 1;
        let reaped = store.reap(item.id, now).await?;
        metrics
            .counter(m::HOLDS_REAPED, &[])
            .increment(reaped.given_back);
        let mut outcome = Reconciled::NotLoaded;
        let mut version = item.version;
        let mut seed = CounterSeed::of(&item);
        for _ in 0..ATTEMPTS {
            outcome = store.reconcile(item.id, seed).await?;
            let Some(now) = items::get(db, item.id).await? else {
                break;
            };
            if now.version == version {
                break;
            }
            version = now.version;
            seed = CounterSeed::of(&now);
        }
        match outcome {
            Reconciled::NotLoaded => report.not_loaded += 1,
            Reconciled::Busy { .. } => report.busy += 1,
            Reconciled::InStep => report.in_step += 1,
            Reconciled::Repaired { drift } => {
                tracing::warn!(item = %item.id, drift, "reservation counter drifted from the database; repaired");
                report.repaired += 1;
                report.units_repaired += drift.unsigned_abs();
            }
        }
    }
    metrics.counter(m::RECONCILE_PASSES, &[]).increment(1);
    metrics
        .counter(m::RECONCILE_REPAIRS, &[])
        .increment(report.repaired);
    metrics
        .counter(m::RECONCILE_UNITS, &[])
        .increment(report.units_repaired);
    metrics
        .gauge(m::RECONCILE_DRIFTING, &[])
        .set(report.repaired as f64);
    Ok(report)
}

/// Reconciles every `interval` until dropped.
pub fn spawn(
    store: Arc<dyn ReservationStore>,
    db: Database,
    metrics: Arc<Metrics>,
    interval: Duration,
) -> BackgroundTask {
    BackgroundTask::every(interval, move || {
        let (store, db, metrics) = (store.clone(), db.clone(), metrics.clone());
        async move {
            match reconcile_all(store.as_ref(), &db, &metrics).await {
                Ok(report) if report.repaired > 0 => {
                    tracing::info!(?report, "reconciliation repaired drift")
                }
                Ok(_) => {}
                Err(e) => {
                    tracing::warn!(error = %e, "reconciliation pass failed; retrying next interval")
                }
            }
        }
    })
}
