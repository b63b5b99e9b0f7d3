//! Stage 2: the reservation, strategy A only.
//!
//! Takes units from the item's counter as a hold with a deadline. A counter
//! that is not loaded (first sale, FLUSHALL, restart) is loaded from the
//! database, one loader per item at a time, and never guessed. Sold out and
//! over-limit requests stop here and never reach the database.
//!
//! Once the store says an item's counter is at zero, the stage remembers it
//! for a moment ([`SoldOutMemo`]): under a frenzy on a sold-out item, most
//! requests are then refused without a round trip to the store. The memo
//! only ever refuses, so it cannot oversell; a unit given back meanwhile
//! is offered again when the memo expires (or at once, when this instance
//! gave it back or restocked).

use crate::db::{Database, items};
use crate::metrics::{self as m, Metrics};
use crate::reservation::{CounterSeed, Hold, ReservationStore, Reserved, StoreError};
use app::domain::ItemId;
use app::model::{ErrorCode, OrderError};
use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

/// What the ledger stage needs to know about the hold it runs under.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum HeldBy {
    /// Taken by this request.
    ThisRequest,
    /// Taken by an earlier attempt of the same intent that never finished;
    /// if that attempt's order did commit, the hold must be confirmed, not
    /// given back.
    EarlierAttempt,
}

#[derive(Debug)]
pub enum ReserveFailure {
    /// A definite answer for the buyer.
    Refused(OrderError),
    /// The store failed; the hold (if the script ran) has been released.
    Store(StoreError),
    /// Loading the counter needed the database, which failed.
    Database(sqlx::Error),
}

/// How many times a request loads a missing counter before giving up (a
/// counter flushed again between load and reserve, over and over).
const LOAD_ROUNDS: usize = 3;

pub struct ReserveStage {
    store: Arc<dyn ReservationStore>,
    db: Database,
    metrics: Arc<Metrics>,
    /// One lock per item being loaded, so a burst on a cold item reads the
    /// database once instead of once per request.
    loading: Mutex<HashMap<ItemId, Arc<tokio::sync::Mutex<()>>>>,
    sold_out: SoldOutMemo,
}

impl ReserveStage {
    /// `sold_out_memo`: how long a counter seen at zero is trusted without
    /// asking the store again (zero: always ask).
    pub fn new(
        store: Arc<dyn ReservationStore>,
        db: Database,
        metrics: Arc<Metrics>,
        sold_out_memo: Duration,
    ) -> Self {
        Self {
            store,
            db,
            metrics,
            loading: Mutex::default(),
            sold_out: SoldOutMemo::new(sold_out_memo),
        }
    }

    /// Whether the store recently said this item has no unit left.
    pub fn known_sold_out(&self, item: ItemId) -> bool {
        self.sold_out.holds(item, Instant::now())
    }

    /// Forgets a remembered sell-out: units came back (a release or a
    /// restock by this instance).
    pub fn forget_sold_out(&self, item: ItemId) {
        self.sold_out.forget(item);
    }

    pub fn store(&self) -> &Arc<dyn ReservationStore> {
        &self.store
    }

    /// Takes the hold.
    ///
    /// # Errors
    /// Sold out, over the limit, unknown item, or a failing store/database.
    pub async fn reserve(
        &self,
        item: ItemId,
        hold: &Hold,
        strategy: &'static str,
    ) -> Result<HeldBy, ReserveFailure> {
        let count = |result: &'static str| {
            self.metrics
                .counter(
                    m::RESERVATIONS,
                    &[("result", result), ("strategy", strategy)],
                )
                .increment(1);
        };
        for _ in 0..LOAD_ROUNDS {
            let answer = match self.store.reserve(item, hold).await {
                Ok(answer) => answer,
                Err(e) => {
                    count("error");
                    // The script may have run before the reply was lost.
                    if let Err(release) = self.store.release(item, &hold.token).await {
                        tracing::warn!(%item, error = %release, "release after a failed reserve failed; the reaper will return the hold");
                    }
                    return Err(ReserveFailure::Store(e));
                }
            };
            match answer {
                Reserved::Held { remaining } => {
                    if remaining <= 0 {
                        self.sold_out.remember(item, Instant::now());
                    }
                    count("ok");
                    return Ok(HeldBy::ThisRequest);
                }
                Reserved::AlreadyHeld => {
                    count("already_held");
                    return Ok(HeldBy::EarlierAttempt);
                }
                Reserved::SoldOut { available } => {
                    if available <= 0 {
                        self.sold_out.remember(item, Instant::now());
                    }
                    count("sold_out");
                    return Err(ReserveFailure::Refused(sold_out(available)));
                }
                Reserved::LimitExceeded { already } => {
                    count("limit");
                    return Err(ReserveFailure::Refused(OrderError::new(
                        ErrorCode::LimitExceeded,
                        format!(
                            "this item allows a limited quantity per buyer; you already have {already}"
                        ),
                    )));
                }
                Reserved::NotLoaded => {
                    count("not_loaded");
                    self.load_counter(item).await?;
                }
            }
        }
        Err(ReserveFailure::Store(StoreError::Protocol(
            "the counter kept disappearing while loading".into(),
        )))
    }

    /// Drops the item's counter and loads it again from the database (minus
    /// surviving holds): for counters known to have missed orders.
    ///
    /// # Errors
    /// The store or the database failed; an unknown item is refused.
    pub async fn reload_counter(&self, item: ItemId) -> Result<(), ReserveFailure> {
        self.sold_out.forget(item);
        self.store
            .forget_counter(item)
            .await
            .map_err(ReserveFailure::Store)?;
        self.load_counter(item).await
    }

    /// Loads the item's counter from the database unless another request
    /// already did.
    async fn load_counter(&self, item: ItemId) -> Result<(), ReserveFailure> {
        let lock = {
            let mut loading = self
                .loading
                .lock()
                .unwrap_or_else(std::sync::PoisonError::into_inner);
            loading.entry(item).or_default().clone()
        };
        let guard = lock.lock().await;
        let result = self.load_locked(item).await;
        drop(guard);
        let mut loading = self
            .loading
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        if loading
            .get(&item)
            .is_some_and(|l| Arc::strong_count(l) <= 2)
        {
            loading.remove(&item);
        }
        result
    }

    async fn load_locked(&self, item: ItemId) -> Result<(), ReserveFailure> {
        if self
            .store
            .counter(item)
            .await
            .map_err(ReserveFailure::Store)?
            .is_some()
        {
            return Ok(());
        }
        let Some(row) = items::get(&self.db, item)
            .await
            .map_err(ReserveFailure::Database)?
        else {
            return Err(ReserveFailure::Refused(unknown_item()));
        };
        let counter = self
            .store
            .load(
                item,
                CounterSeed {
                    stock: row.stock,
                    version: row.version,
                    max_per_buyer: row.max_per_buyer,
                },
            )
            .await
            .map_err(ReserveFailure::Store)?;
        tracing::info!(%item, counter, db_stock = row.stock, "loaded reservation counter from the database");
        Ok(())
    }
}

pub fn sold_out(available: i64) -> OrderError {
    let message = if available > 0 {
        format!("only {available} left")
    } else {
        "sold out".to_owned()
    };
    OrderError::new(ErrorCode::SoldOut, message)
}

pub fn unknown_item() -> OrderError {
    OrderError::new(ErrorCode::UnknownItem, "no such item")
}

/// Items whose counter was last seen at zero, each until a deadline. Bounded:
/// when full, expired entries are dropped, and if none has expired nothing
/// new is remembered (a refusal then simply asks the store).
struct SoldOutMemo {
    ttl: Duration,
    until: Mutex<HashMap<ItemId, Instant>>,
}

/// Sold-out items remembered at once, at most.
const SOLD_OUT_MEMO_CAPACITY: usize = 4096;

impl SoldOutMemo {
    fn new(ttl: Duration) -> Self {
        Self {
            ttl,
            until: Mutex::default(),
        }
    }

    fn entries(&self) -> std::sync::MutexGuard<'_, HashMap<ItemId, Instant>> {
        self.until
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
    }

    fn remember(&self, item: ItemId, now: Instant) {
        if self.ttl.is_zero() {
            return;
        }
        let mut entries = self.entries();
        if entries.len() >= SOLD_OUT_MEMO_CAPACITY && !entries.contains_key(&item) {
            entries.retain(|_, until| *until > now);
            if entries.len() >= SOLD_OUT_MEMO_CAPACITY {
                return;
            }
        }
        entries.insert(item, now + self.ttl);
    }

    fn holds(&self, item: ItemId, now: Instant) -> bool {
        if self.ttl.is_zero() {
            return false;
        }
        self.entries().get(&item).is_some_and(|until| *until > now)
    }

    fn forget(&self, item: ItemId) {
        if !self.ttl.is_zero() {
            self.entries().remove(&item);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn item(id: i64) -> ItemId {
        ItemId::new(id).expect("valid id")
    }

    #[test]
    fn a_sell_out_is_remembered_until_its_deadline() {
        let memo = SoldOutMemo::new(Duration::from_millis(100));
        let now = Instant::now();
        memo.remember(item(1), now);
        assert!(memo.holds(item(1), now + Duration::from_millis(99)));
        assert!(!memo.holds(item(1), now + Duration::from_millis(100)));
        assert!(!memo.holds(item(2), now));
    }

    #[test]
    fn forgetting_offers_the_item_again_at_once() {
        let memo = SoldOutMemo::new(Duration::from_secs(10));
        let now = Instant::now();
        memo.remember(item(1), now);
        memo.forget(item(1));
        assert!(!memo.holds(item(1), now));
    }

    #[test]
    fn a_zero_ttl_remembers_nothing() {
        let memo = SoldOutMemo::new(Duration::ZERO);
        let now = Instant::now();
        memo.remember(item(1), now);
        assert!(!memo.holds(item(1), now));
    }

    #[test]
    fn a_full_memo_makes_room_only_from_expired_entries() {
        let memo = SoldOutMemo::new(Duration::from_millis(10));
        let start = Instant::now();
        for id in 1..=SOLD_OUT_MEMO_CAPACITY as i64 {
            memo.remember(item(id), start);
        }
        let extra = item(SOLD_OUT_MEMO_CAPACITY as i64 + 1);
        memo.remember(extra, start);
        assert!(
            !memo.holds(extra, start),
            "no room while every entry is live"
        );
        let later = start + Duration::from_millis(20);
        memo.remember(extra, later);
        assert!(memo.holds(extra, later));
        assert_eq!(memo.entries().len(), 1, "expired entries were dropped");
    }
}
