//! The in-process reservation store: the embedded default, with the same
//! contract as the Redis scripts (and the same contract tests).
//!
//! One mutex guards all items; every operation is a few map updates, far
//! shorter than the database write that follows, so the lock is not the
//! bottleneck. State is lost on restart, which the contract allows: counters
//! are reloaded from the database on the next order.

use super::{
    Confirmed, CounterSeed, Hold, HoldToken, REAP_BATCH, REAPED_MEMORY_SECS, Reaped, Reconciled,
    ReservationStore, Reserved, StoreError,
};
use app::domain::{BuyerId, ItemId};
use std::collections::{BTreeSet, HashMap};
use std::sync::{Mutex, MutexGuard};

#[derive(Debug, Clone)]
struct HeldUnits {
    qty: i64,
    buyer: BuyerId,
    deadline: i64,
}

#[derive(Debug, Default)]
struct ItemState {
    /// `None` until loaded from the database.
    stock: Option<i64>,
    loaded_version: i64,
    max_per_buyer: i64,
    holds: HashMap<HoldToken, HeldUnits>,
    deadlines: BTreeSet<(i64, HoldToken)>,
    buyers: HashMap<BuyerId, i64>,
    /// Reaped holds with the time they were reaped, for a late confirm.
    reaped: HashMap<HoldToken, (HeldUnits, i64)>,
}

impl ItemState {
    fn give_back(&mut self, units: &HeldUnits) {
        if let Some(stock) = self.stock.as_mut() {
            *stock += units.qty;
        }
        if let Some(count) = self.buyers.get_mut(&units.buyer) {
            *count -= units.qty;
            if *count <= 0 {
                self.buyers.remove(&units.buyer);
            }
        }
    }
}

#[derive(Debug, Default)]
pub struct InProcessStore {
    items: Mutex<HashMap<ItemId, ItemState>>,
}

impl InProcessStore {
    pub fn new() -> Self {
        Self::default()
    }

    fn lock(&self) -> MutexGuard<'_, HashMap<ItemId, ItemState>> {
        // A panic while holding the lock cannot leave a half-applied
        // operation: each one validates before it mutates.
        self.items
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
    }
}

#[async_trait::async_trait]
impl ReservationStore for InProcessStore {
    fn kind(&self) -> &'static str {
        "in-process"
    }

    async fn reserve(&self, item: ItemId, hold: &Hold) -> Result<Reserved, StoreError> {
        let mut items = self.lock();
        let Some(state) = items.get_mut(&item) else {
            return Ok(Reserved::NotLoaded);
        };
        let Some(stock) = state.stock else {
            return Ok(Reserved::NotLoaded);
        };
        if state.holds.contains_key(&hold.token) {
            return Ok(Reserved::AlreadyHeld);
        }
        let qty = i64::from(hold.qty.get());
        if stock < qty {
            return Ok(Reserved::SoldOut {
                available: stock.max(0),
                holds: state.holds.len() as u64,
            });
        }
        if state.max_per_buyer > 0 {
            let already = state.buyers.get(&hold.buyer).copied().unwrap_or(0);
            if already + qty > state.max_per_buyer {
                return Ok(Reserved::LimitExceeded { already });
            }
            *state.buyers.entry(hold.buyer.clone()).or_default() += qty;
        }
        let remaining = stock - qty;
        state.stock = Some(remaining);
        state.holds.insert(
            hold.token.clone(),
            HeldUnits {
                qty,
                buyer: hold.buyer.clone(),
                deadline: hold.deadline.as_ms(),
            },
        );
        state
            .deadlines
            .insert((hold.deadline.as_ms(), hold.token.clone()));
        Ok(Reserved::Held { remaining })
    }

    async fn load(
        &self,
        item: ItemId,
        seed: CounterSeed,
        committed: &[HoldToken],
    ) -> Result<i64, StoreError> {
        let mut items = self.lock();
        let state = items.entry(item).or_default();
        if let Some(stock) = state.stock {
            return Ok(stock);
        }
        for token in committed {
            if let Some(units) = state.holds.remove(token) {
                state.deadlines.remove(&(units.deadline, token.clone()));
            }
        }
        let held: i64 = state.holds.values().map(|h| h.qty).sum();
        let counter = seed.stock - held;
        state.stock = Some(counter);
        state.loaded_version = seed.version;
        state.max_per_buyer = seed.max_per_buyer.unwrap_or(0);
        Ok(counter)
    }

    async fn confirm(&self, item: ItemId, token: &HoldToken) -> Result<Confirmed, StoreError> {
        let mut items = self.lock();
        let Some(state) = items.get_mut(&item) else {
            return Ok(Confirmed::NoHold);
        };
        if let Some(units) = state.holds.remove(token) {
            state.deadlines.remove(&(units.deadline, token.clone()));
            return Ok(Confirmed::HoldEnded);
        }
        let Some((units, _)) = state.reaped.remove(token) else {
            return Ok(Confirmed::NoHold);
        };
        if let Some(stock) = state.stock.as_mut() {
            *stock -= units.qty;
        }
        if state.max_per_buyer > 0 {
            *state.buyers.entry(units.buyer).or_default() += units.qty;
        }
        Ok(Confirmed::TakenAfterReap)
    }

    async fn release(&self, item: ItemId, token: &HoldToken) -> Result<bool, StoreError> {
        let mut items = self.lock();
        let Some(state) = items.get_mut(&item) else {
            return Ok(false);
        };
        state.reaped.remove(token);
        let Some(units) = state.holds.remove(token) else {
            return Ok(false);
        };
        state.deadlines.remove(&(units.deadline, token.clone()));
        state.give_back(&units);
        Ok(true)
    }

    async fn reap(&self, item: ItemId, now_ms: i64) -> Result<Reaped, StoreError> {
        let mut items = self.lock();
        let Some(state) = items.get_mut(&item) else {
            return Ok(Reaped::default());
        };
        let forget_before = now_ms - (REAPED_MEMORY_SECS as i64) * 1_000;
        state
            .reaped
            .retain(|_, (_, reaped_at)| *reaped_at >= forget_before);
        let expired: Vec<(i64, HoldToken)> = state
            .deadlines
            .iter()
            .take_while(|(deadline, _)| *deadline <= now_ms)
            .take(REAP_BATCH as usize)
            .cloned()
            .collect();
        let mut given_back = 0;
        for entry in expired {
            state.deadlines.remove(&entry);
            let token = entry.1;
            if let Some(units) = state.holds.remove(&token) {
                state.give_back(&units);
                state.reaped.insert(token, (units, now_ms));
                given_back += 1;
            }
        }
        Ok(Reaped {
            given_back,
            holds_left: state.holds.len() as u64,
        })
    }

    async fn hold_tokens(&self, item: ItemId) -> Result<Vec<HoldToken>, StoreError> {
        Ok(self
            .lock()
            .get(&item)
            .map(|state| state.holds.keys().cloned().collect())
            .unwrap_or_default())
    }

    async fn items_with_holds(&self) -> Result<Vec<ItemId>, StoreError> {
        let items = self.lock();
        Ok(items
            .iter()
            .filter(|(_, state)| !state.holds.is_empty())
            .map(|(id, _)| *id)
            .collect())
    }

    async fn restock(
        &self,
        item: ItemId,
        delta: i64,
        version_after: i64,
    ) -> Result<bool, StoreError> {
        let mut items = self.lock();
        let Some(state) = items.get_mut(&item) else {
            return Ok(false);
        };
        match state.stock.as_mut() {
            Some(stock) if state.loaded_version < version_after => {
                *stock += delta;
                Ok(true)
            }
            _ => Ok(false),
        }
    }

    async fn return_units(
        &self,
        item: ItemId,
        qty: i64,
        version_after: i64,
        buyer: &BuyerId,
    ) -> Result<bool, StoreError> {
        let mut items = self.lock();
        let Some(state) = items.get_mut(&item) else {
            return Ok(false);
        };
        if let Some(count) = state.buyers.get_mut(buyer) {
            *count -= qty;
            if *count <= 0 {
                state.buyers.remove(buyer);
            }
        }
        match state.stock.as_mut() {
            Some(stock) if state.loaded_version < version_after => {
                *stock += qty;
                Ok(true)
            }
            _ => Ok(false),
        }
    }

    async fn reconcile(&self, item: ItemId, seed: CounterSeed) -> Result<Reconciled, StoreError> {
        let mut items = self.lock();
        let Some(state) = items.get_mut(&item) else {
            return Ok(Reconciled::NotLoaded);
        };
        let Some(counter) = state.stock else {
            return Ok(Reconciled::NotLoaded);
        };
        if !state.holds.is_empty() {
            return Ok(Reconciled::Busy {
                holds: state.holds.len() as u64,
            });
        }
        if counter == seed.stock {
            return Ok(Reconciled::InStep);
        }
        state.stock = Some(seed.stock);
        state.loaded_version = seed.version;
        Ok(Reconciled::Repaired {
            drift: counter - seed.stock,
        })
    }

    async fn forget_counter(&self, item: ItemId) -> Result<(), StoreError> {
        if let Some(state) = self.lock().get_mut(&item) {
            state.stock = None;
        }
        Ok(())
    }

    async fn counter(&self, item: ItemId) -> Result<Option<i64>, StoreError> {
        Ok(self.lock().get(&item).and_then(|s| s.stock))
    }

    async fn live_holds(&self, item: ItemId) -> Result<u64, StoreError> {
        Ok(self.lock().get(&item).map_or(0, |s| s.holds.len() as u64))
    }

    async fn ping(&self) -> Result<(), StoreError> {
        Ok(())
    }
}
