//! Stage 4: confirm or release the hold.
//!
//! After the ledger committed, `confirm` ends the hold and the units stay
//! taken. When the ledger refused or failed, `release` gives the hold back
//! (idempotent: a second release finds nothing). Neither can undo a committed
//! order: a failing confirm is logged and left to the reaper and the
//! reconciliation, never turned into an error for a buyer whose order exists.
//!
//! A confirm that fails (Redis slow or briefly gone) is retried in the
//! background: left alone, the reaper would give the units of a sold order
//! back at the hold's deadline. Confirming is idempotent, and a confirm that
//! arrives after the reaper took the hold back takes its units again, so a
//! late retry still converges.

use super::reserve::HeldBy;
use crate::metrics::{self as m, Metrics};
use crate::reservation::{Confirmed, HoldToken, ReservationStore};
use app::domain::ItemId;
use std::sync::Arc;
use std::time::Duration;

/// Background confirm retries: 50 ms doubling to 5 s, 12 attempts (about a
/// minute in all).
const CONFIRM_RETRIES: u32 = 12;

pub async fn confirm(
    store: &Arc<dyn ReservationStore>,
    metrics: &Arc<Metrics>,
    item: ItemId,
    token: &HoldToken,
) {
    let result = match store.confirm(item, token).await {
        Ok(Confirmed::HoldEnded) => "hold_ended",
        Ok(Confirmed::TakenAfterReap) => {
            tracing::warn!(%item, "order committed after its hold expired; units taken again");
            "taken_after_reap"
        }
        Ok(Confirmed::NoHold) => {
            tracing::warn!(%item, "order committed but no hold was known (reservation store flushed?)");
            "no_hold"
        }
        Err(e) => {
            tracing::warn!(%item, error = %e, "confirm failed; retrying in the background");
            tokio::spawn(retry_confirm(
                store.clone(),
                metrics.clone(),
                item,
                token.clone(),
            ));
            "error"
        }
    };
    metrics
        .counter(m::CONFIRMS, &[("result", result)])
        .increment(1);
}

async fn retry_confirm(
    store: Arc<dyn ReservationStore>,
    metrics: Arc<Metrics>,
    item: ItemId,
    token: HoldToken,
) {
    let mut pause = Duration::from_millis(50);
    for _ in 0..CONFIRM_RETRIES {
        tokio::time::sleep(pause).await;
        match store.confirm(item, &token).await {
            Ok(outcome) => {
                tracing::info!(%item, ?outcome, "confirm succeeded on retry");
                metrics
                    .counter(m::CONFIRMS, &[("result", "retried")])
                    .increment(1);
                return;
            }
            Err(e) => tracing::warn!(%item, error = %e, "confirm retry failed"),
        }
        pause = (pause * 2).min(Duration::from_secs(5));
    }
    tracing::error!(%item, %token, "confirm gave up; the counter stays above the database until reconciled");
}

pub async fn release(
    store: &Arc<dyn ReservationStore>,
    metrics: &Metrics,
    item: ItemId,
    token: &HoldToken,
) {
    let result = match store.release(item, token).await {
        Ok(true) => "given_back",
        Ok(false) => "nothing_held",
        Err(e) => {
            tracing::error!(%item, error = %e, "release failed; the reaper will give the hold back at its deadline");
            "error"
        }
    };
    metrics
        .counter(m::RELEASES, &[("result", result)])
        .increment(1);
}

/// After the ledger found the (buyer, key) already ordered: a hold from an
/// earlier attempt belongs to that order and is confirmed; a hold this
/// request took is surplus and given back.
pub async fn settle_duplicate(
    store: &Arc<dyn ReservationStore>,
    metrics: &Arc<Metrics>,
    item: ItemId,
    token: &HoldToken,
    held_by: HeldBy,
) {
    match held_by {
        HeldBy::EarlierAttempt => confirm(store, metrics, item, token).await,
        HeldBy::ThisRequest => release(store, metrics, item, token).await,
    }
}
