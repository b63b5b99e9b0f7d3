//! Stage 4: confirm or release the hold.
//!
//! After the ledger committed, `confirm` ends the hold and the units stay
//! taken. When the ledger refused or failed, `release` gives the hold back
//! (idempotent: a second release finds nothing). Neither can undo a committed
//! order: a failing confirm is logged and left to the reaper and the
//! reconciliation, never turned into an error for a buyer whose order exists.

use super::reserve::HeldBy;
use crate::metrics as m;
use crate::reservation::{Confirmed, HoldToken, ReservationStore};
use app::domain::ItemId;

pub async fn confirm(store: &dyn ReservationStore, item: ItemId, token: &HoldToken) {
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
            tracing::error!(%item, error = %e, "confirm failed; the reaper will give the hold back and reconciliation corrects the counter");
            "error"
        }
    };
    metrics::counter!(m::CONFIRMS, "result" => result).increment(1);
}

pub async fn release(store: &dyn ReservationStore, item: ItemId, token: &HoldToken) {
    let result = match store.release(item, token).await {
        Ok(true) => "given_back",
        Ok(false) => "nothing_held",
        Err(e) => {
            tracing::error!(%item, error = %e, "release failed; the reaper will give the hold back at its deadline");
            "error"
        }
    };
    metrics::counter!(m::RELEASES, "result" => result).increment(1);
}

/// After the ledger found the (buyer, key) already ordered: a hold from an
/// earlier attempt belongs to that order and is confirmed; a hold this
/// request took is surplus and given back.
pub async fn settle_duplicate(
    store: &dyn ReservationStore,
    item: ItemId,
    token: &HoldToken,
    held_by: HeldBy,
) {
    match held_by {
        HeldBy::EarlierAttempt => confirm(store, item, token).await,
        HeldBy::ThisRequest => release(store, item, token).await,
    }
}
