//! The reservation layer: a fast filter in front of the database.
//!
//! A [`ReservationStore`] keeps one counter per item and a *hold* per intent
//! to buy. `reserve` checks and takes units atomically and records a hold
//! with a [`HoldDeadline`]; `confirm` ends the hold once the order committed;
//! `release` gives it back when the order failed, at most once; `reap` gives
//! back holds whose deadline passed; `restock` and `return_units` follow
//! stock changes the database committed (an admin restock, an unpaid order's
//! units coming back; see [`crate::stock`]). A counter that is not loaded is reported
//! as such ([`Reserved::NotLoaded`]), never read as zero or as plenty: the
//! caller loads it from the database, which stays the source of truth.
//!
//! Two implementations pass the same contract suite (`tests/reservation_contract.rs`):
//! [`redis::RedisStore`] (Lua scripts, single node or cluster) and
//! [`memory::InProcessStore`] (the embedded default).
//!
//! Around the store: [`loader::CounterLoader`] loads a counter from the
//! database (never counting a hold whose order already committed),
//! [`memo::SoldOutMemo`] remembers for a moment that an item has nothing
//! left, [`guard::RedisGuard`] keeps the circuit breaker's books when the
//! store is Redis, and the [`reaper`] and [`reconcile`] tasks keep the
//! counters honest. Each store also keeps the item's sale terms and its
//! waiting room ([`queue`]), beside the counter the admission must see.

pub mod breaker;
pub mod guard;
pub mod loader;
pub mod memo;
pub mod memory;
pub mod queue;
pub mod reaper;
pub mod reconcile;
pub mod redis;
pub mod settled;

use app::domain::{BuyerId, IdempotencyKey, ItemId, Quantity};
use queue::{QueuePass, SaleTerms, WaitingRoom};
use std::fmt;

/// Identifies one hold: the buyer and their idempotency key, so a retry of
/// the same intent finds its own hold instead of taking stock twice.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct HoldToken(String);

impl HoldToken {
    pub fn new(buyer: &BuyerId, key: &IdempotencyKey) -> Self {
        Self(format!("{buyer}:{key}"))
    }

    pub fn as_str(&self) -> &str {
        &self.0
    }

    /// The buyer and key the token was made of (a buyer id never holds a
    /// colon, so the first one separates them).
    pub fn parts(&self) -> Option<(BuyerId, IdempotencyKey)> {
        let (buyer, key) = self.0.split_once(':')?;
        Some((
            BuyerId::parse(buyer).ok()?,
            IdempotencyKey::parse(key).ok()?,
        ))
    }

    /// A token as a store kept it.
    pub fn from_stored(raw: String) -> Self {
        Self(raw)
    }
}

impl fmt::Display for HoldToken {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

/// When a hold expires, in milliseconds since the Unix epoch. After it the
/// reaper gives the units back.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub struct HoldDeadline(i64);

impl HoldDeadline {
    pub fn at_ms(ms: i64) -> Self {
        Self(ms)
    }

    pub fn as_ms(self) -> i64 {
        self.0
    }
}

/// One request for units.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Hold {
    pub token: HoldToken,
    pub buyer: BuyerId,
    pub qty: Quantity,
    pub deadline: HoldDeadline,
    /// The waiting-room pass the buyer presented (items with a waiting room
    /// take orders only with one).
    pub pass: Option<QueuePass>,
}

/// The answer of [`ReservationStore::reserve`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Reserved {
    /// Units taken; `remaining` is the counter afterwards.
    Held { remaining: i64 },
    /// This token already holds units (a retry of the same intent).
    AlreadyHeld,
    /// Fewer than the asked units are left; `holds` is how many holds the
    /// item has (their units may still come back).
    SoldOut { available: i64, holds: u64 },
    /// The buyer would exceed the item's `max_per_buyer`.
    LimitExceeded { already: i64 },
    /// No counter for the item: load it from the database and try again.
    NotLoaded,
    /// The item has a waiting room and no pass was presented.
    PassRequired,
    /// The pass is another buyer's or item's, expired, used, or unknown.
    PassInvalid,
    /// The sale starts later (by the store's clock).
    NotStarted { starts_in_ms: i64 },
    /// The sale has ended.
    Ended,
}

/// The answer of [`ReservationStore::confirm`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Confirmed {
    /// The hold ended; its units stay taken.
    HoldEnded,
    /// The reaper had given the hold back; its units were taken again.
    TakenAfterReap,
    /// No hold was known for the token (the store was flushed).
    NoHold,
}

/// What the database says about an item when its counter is loaded.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct CounterSeed {
    pub stock: i64,
    pub version: i64,
    pub max_per_buyer: Option<i64>,
    /// Written with the counter: no order is taken under missing terms.
    pub terms: SaleTerms,
}

impl CounterSeed {
    /// The seed of an item as the database has it.
    pub fn of(item: &app::model::Item) -> Self {
        let secs = |v: i64| u32::try_from(v.max(0)).unwrap_or(u32::MAX);
        Self {
            stock: item.stock,
            version: item.version,
            max_per_buyer: item.max_per_buyer,
            terms: SaleTerms {
                starts_at_ms: item.sale_starts_at_ms,
                ends_at_ms: item.sale_ends_at_ms,
                waiting_room: item.admission_per_second.map(|rate| queue::AdmissionRate {
                    per_second: secs(rate),
                    pass_ttl_secs: secs(item.pass_ttl_seconds),
                }),
                paused: item.paused,
            },
        }
    }
}

/// The answer of [`ReservationStore::reconcile`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Reconciled {
    /// No counter: nothing to compare.
    NotLoaded,
    /// Live holds: not compared this time.
    Busy {
        holds: u64,
    },
    /// The counter was `drift` units off (counter minus database stock) and
    /// now equals the database stock.
    Repaired {
        drift: i64,
    },
    InStep,
}

/// The result of one [`ReservationStore::reap`] call on one item.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct Reaped {
    pub given_back: u64,
    pub holds_left: u64,
}

#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    #[error("reservation store unreachable: {0}")]
    Unreachable(String),
    #[error("reservation store answered unexpectedly: {0}")]
    Protocol(String),
    #[error("reservation store timed out")]
    Timeout,
}

/// Holds per item are reaped in batches of this size.
pub const REAP_BATCH: u32 = 500;

/// A reaped hold is remembered this long, so a confirm that arrives after its
/// deadline can take its units again instead of leaving phantom stock.
pub const REAPED_MEMORY_SECS: u64 = 3_600;

/// The reservation contract (with the waiting room's, [`WaitingRoom`]).
/// Every method is atomic per item.
#[async_trait::async_trait]
pub trait ReservationStore: WaitingRoom {
    /// `redis`, `redis-cluster` or `in-process`, for readiness and metrics.
    fn kind(&self) -> &'static str;

    /// Checks the sale window, the pass (items with a waiting room), stock
    /// and the per-buyer limit and takes `hold.qty` units.
    ///
    /// # Errors
    /// The store cannot be reached or answered nonsense.
    async fn reserve(&self, item: ItemId, hold: &Hold) -> Result<Reserved, StoreError>;

    /// Sets the counter from the database if it is absent; returns the
    /// counter. `committed` names holds whose orders the database already
    /// has: they end here instead of being subtracted again. Reaped holds
    /// are forgotten: a late confirm no longer takes their units again,
    /// since the stock already counts the orders committed before it.
    ///
    /// # Errors
    /// As for `reserve`.
    async fn load(
        &self,
        item: ItemId,
        seed: CounterSeed,
        committed: &[HoldToken],
    ) -> Result<i64, StoreError>;

    /// The tokens of the item's live holds.
    ///
    /// # Errors
    /// As for `reserve`.
    async fn hold_tokens(&self, item: ItemId) -> Result<Vec<HoldToken>, StoreError>;

    /// The order committed: end the hold, keep the units taken.
    ///
    /// # Errors
    /// As for `reserve`.
    async fn confirm(&self, item: ItemId, token: &HoldToken) -> Result<Confirmed, StoreError>;

    /// The order failed: give the hold back. True when units were given back
    /// by this call; a second call returns false and changes nothing.
    ///
    /// # Errors
    /// As for `reserve`.
    async fn release(&self, item: ItemId, token: &HoldToken) -> Result<bool, StoreError>;

    /// Gives back the item's holds whose deadline is at or before `now_ms`.
    ///
    /// # Errors
    /// As for `reserve`.
    async fn reap(&self, item: ItemId, now_ms: i64) -> Result<Reaped, StoreError>;

    /// Items that may have live holds: the reaper's worklist, kept without
    /// scanning the keyspace.
    ///
    /// # Errors
    /// As for `reserve`.
    async fn items_with_holds(&self) -> Result<Vec<ItemId>, StoreError>;

    /// Applies an admin stock change committed at row version `version_after`.
    /// True when the counter changed.
    ///
    /// # Errors
    /// As for `reserve`.
    async fn restock(
        &self,
        item: ItemId,
        delta: i64,
        version_after: i64,
    ) -> Result<bool, StoreError>;

    /// Gives back `qty` units of an order of `buyer` that the database
    /// already returned to stock at row version `version_after` (an unpaid
    /// order expired): the counter as [`ReservationStore::restock`] changes
    /// it (only when loaded before that version), and the buyer's count
    /// toward the per-buyer limit, always. True when the counter changed.
    ///
    /// # Errors
    /// As for `reserve`.
    async fn return_units(
        &self,
        item: ItemId,
        qty: i64,
        version_after: i64,
        buyer: &BuyerId,
    ) -> Result<bool, StoreError>;

    /// Compares the counter with the database's stock and repairs it, only
    /// while the item has no live hold; a repair forgets reaped holds, as
    /// `load` does.
    ///
    /// # Errors
    /// As for `reserve`.
    async fn reconcile(&self, item: ItemId, seed: CounterSeed) -> Result<Reconciled, StoreError>;

    /// Drops the counter (not the holds), so the next order reloads it from
    /// the database. Used when the counter is known to have drifted.
    ///
    /// # Errors
    /// As for `reserve`.
    async fn forget_counter(&self, item: ItemId) -> Result<(), StoreError>;

    /// The counter, if loaded.
    ///
    /// # Errors
    /// As for `reserve`.
    async fn counter(&self, item: ItemId) -> Result<Option<i64>, StoreError>;

    /// How many holds the item has right now.
    ///
    /// # Errors
    /// As for `reserve`.
    async fn live_holds(&self, item: ItemId) -> Result<u64, StoreError>;

    /// A cheap round trip, for readiness.
    ///
    /// # Errors
    /// The store is unreachable.
    async fn ping(&self) -> Result<(), StoreError>;
}
