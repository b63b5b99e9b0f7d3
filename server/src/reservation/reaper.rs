//! The reaper: gives back holds whose deadline passed.
//!
//! It walks only the store's worklist of items with holds (never the whole
//! keyspace: no KEYS, no SCAN) on a fixed interval. Each item is reaped by
//! one atomic script, so several server instances can reap at once and every
//! hold is still given back exactly once.

use super::ReservationStore;
use crate::background::BackgroundTask;
use crate::metrics::{self as m, Metrics};
use std::sync::Arc;
use std::time::Duration;

/// Reaps every listed item once; returns the holds given back.
///
/// # Errors
/// The store failed; items reaped before the failure stay reaped.
pub async fn reap_all(
    store: &dyn ReservationStore,
    metrics: &Metrics,
    now_ms: i64,
) -> Result<u64, super::StoreError> {
    let mut given_back = 0;
    let mut live = 0;
    for item in store.items_with_holds().await? {
        let reaped = store.reap(item, now_ms).await?;
        given_back += reaped.given_back;
        live += reaped.holds_left;
    }
    metrics.counter(m::HOLDS_REAPED, &[]).increment(given_back);
    metrics.gauge(m::HOLDS_LIVE, &[]).set(live as f64);
    Ok(given_back)
}

/// Starts reaping every `interval`, with the wall clock, until dropped.
pub fn spawn(
    store: Arc<dyn ReservationStore>,
    metrics: Arc<Metrics>,
    interval: Duration,
) -> BackgroundTask {
    BackgroundTask::every(interval, move || {
        let (store, metrics) = (store.clone(), metrics.clone());
        async move {
            match reap_all(store.as_ref(), &metrics, crate::db::now_ms()).await {
                Ok(0) => {}
                Ok(n) => tracing::info!(given_back = n, "reaped expired holds"),
                Err(e) => tracing::warn!(error = %e, "reaper pass failed; retrying next interval"),
            }
        }
    })
}
