//! What follows a stock change the database committed: the one path every
//! change of an item's stock outside an order takes.
//!
//! The database changes first, in its own transaction, and bumps the row's
//! `version` (an admin restock, an unpaid order expiring with its units).
//! [`StockPath::committed`] then brings the rest of the shop in step, in
//! this order:
//!
//! 1. the reservation counter, the way a restock does it: applied only when
//!    the counter was loaded from a row older than the change (a counter
//!    loaded after it already counts the units); for returned units, the
//!    buyer's count toward the per-buyer limit drops too;
//! 2. [`StockPath::units_came_back`] when units were added: this instance's
//!    sold-out memo forgets the item, so they are offered at once (other
//!    instances offer them when their memo runs out); so does its reading
//!    of a sold-out database stock ([`SettledSellOuts`]); and the time
//!    until an expired unit sells again starts ([`ResaleClock`]).
//!
//! A failing reservation store leaves the counter too low or the per-buyer
//! count too high: both only refuse, never oversell, and reconciliation
//! brings the counter back to the database's stock.

use crate::payments::resale::ResaleClock;
use crate::reservation::ReservationStore;
use crate::reservation::memo::SoldOutMemo;
use crate::reservation::settled::SettledSellOuts;
use app::domain::{BuyerId, ItemId};
use std::sync::Arc;

/// A stock change the database has committed.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum StockChange {
    /// An admin added (or, negative, removed) units.
    Restocked { delta: i64 },
    /// An order of `buyer` went unpaid past its deadline: its `units` are
    /// on sale again.
    Expired { units: i64, buyer: BuyerId },
}

pub struct StockPath {
    /// The reservation store, when strategy A can run.
    store: Option<Arc<dyn ReservationStore>>,
    memo: Option<Arc<SoldOutMemo>>,
    settled: Option<Arc<SettledSellOuts>>,
    /// Present when orders have a payment deadline.
    resale: Option<Arc<ResaleClock>>,
}

impl StockPath {
    pub fn new(
        store: Option<Arc<dyn ReservationStore>>,
        memo: Option<Arc<SoldOutMemo>>,
        settled: Option<Arc<SettledSellOuts>>,
        resale: Option<Arc<ResaleClock>>,
    ) -> Self {
        Self {
            store,
            memo,
            settled,
            resale,
        }
    }

    /// Brings the reservation layer in step with a change the database
    /// committed at row version `version_after`.
    pub async fn committed(&self, item: ItemId, version_after: i64, change: StockChange) {
        let counted = match (&self.store, &change) {
            (None, _) => Ok(false),
            (Some(store), StockChange::Restocked { delta }) => {
                store.restock(item, *delta, version_after).await
            }
            (Some(store), StockChange::Expired { units, buyer }) => {
                store.return_units(item, *units, version_after, buyer).await
            }
        };
        if let Err(e) = counted {
            // The database holds the change; the counter is a filter and is
            // corrected by the next load or reconciliation.
            tracing::error!(%item, error = %e, ?change, "stock change not applied to the reservation counter");
        }
        match change {
            StockChange::Restocked { delta } if delta > 0 => {
                self.units_came_back(item, delta, false)
            }
            StockChange::Restocked { .. } => {}
            StockChange::Expired { units, .. } => self.units_came_back(item, units, true),
        }
    }

    /// A drop's terms changed (its window, waiting room or pause): answers
    /// this instance's memo kept for the item may no longer hold.
    pub fn terms_changed(&self, item: ItemId) {
        if let Some(memo) = &self.memo {
            memo.forget(item);
        }
    }

    /// Units of `item` are on sale again: everything that believes the item
    /// sold out hears it here. A waiting room needs nothing more: it admits
    /// against the counter, which [`StockPath::committed`] raised first.
    fn units_came_back(&self, item: ItemId, units: i64, by_expiry: bool) {
        if let Some(memo) = &self.memo {
            memo.forget(item);
        }
        if let Some(settled) = &self.settled {
            settled.forget(item);
        }
        if by_expiry && let Some(resale) = &self.resale {
            resale.returned(item, units);
        }
    }
}
