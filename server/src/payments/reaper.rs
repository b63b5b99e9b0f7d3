//! The expiry reaper: every `PAYMENT_REAPER_INTERVAL_MS`, expires the orders
//! still awaiting payment whose deadline passed by the database's clock,
//! and sends their units back on sale.
//!
//! It runs on every instance; the conditional UPDATE of each expiry (see
//! [`super::transitions`]) lets one of them expire each order, so running
//! several changes nothing but who does the work. A unit comes back within
//! one interval of its deadline (plus the pass's own time).

use super::PaymentDesk;
use crate::background::BackgroundTask;
use std::sync::Arc;
use std::time::Duration;

/// Starts expiring every `interval` until dropped.
pub fn spawn(desk: Arc<PaymentDesk>, interval: Duration) -> BackgroundTask {
    BackgroundTask::every(interval, move || {
        let desk = desk.clone();
        async move {
            match desk.expire_due().await {
                Ok(0) => {}
                Ok(n) => tracing::info!(
                    expired = n,
                    "expired unpaid orders; their units are on sale again"
                ),
                Err(e) => tracing::warn!(error = %e, "expiry pass failed; retrying next interval"),
            }
        }
    })
}
