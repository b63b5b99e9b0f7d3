//! The waiting room's part of the reservation contract: an item's line,
//! its passes and the terms of its sale, kept beside the item's counter (in
//! Redis under the item's hash tag; in the in-process store in the item's
//! state) so that admission can see the stock.
//!
//! - [`SaleTerms`]: the sale window and the waiting room's settings, written
//!   with the counter and by every admin change; the reservation checks the
//!   window with the store's own clock, and an item with a waiting room
//!   takes orders only with a valid pass.
//! - A buyer joins once with the ticket the database gave them, at a
//!   *place*: below 1 for those who joined before the start (their order
//!   is the fair draw, see `crate::waiting_room`), the join time in ms
//!   afterwards (arrival order). The line is rebuilt from the database's
//!   tickets when the store lost it.
//! - [`WaitingRoom::admit`] lets the next buyers in, each with a pass valid
//!   for the item's pass lifetime, at most at the admission rate (a token
//!   bucket in the store) and never beyond the units available: the counter
//!   must cover every open pass. Passes that expired unused send their
//!   buyers to the back of the line.
//! - A pass is taken by the hold of the order placed with it, used up when
//!   that order is confirmed, and open again when the hold is given back.

use app::domain::{BuyerId, ItemId};
use std::fmt;

/// An item's sale window and waiting-room settings.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct SaleTerms {
    pub starts_at_ms: Option<i64>,
    pub ends_at_ms: Option<i64>,
    pub waiting_room: Option<AdmissionRate>,
    /// A paused drop admits nobody.
    pub paused: bool,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct AdmissionRate {
    pub per_second: u32,
    pub pass_ttl_secs: u32,
}

/// A waiting-room ticket: random, given by the server when a buyer joins.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct QueueTicket(String);

impl QueueTicket {
    pub fn new() -> Self {
        Self(uuid::Uuid::new_v4().to_string())
    }

    pub fn from_stored(raw: String) -> Self {
        Self(raw)
    }

    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl Default for QueueTicket {
    fn default() -> Self {
        Self::new()
    }
}

impl fmt::Display for QueueTicket {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

/// A pass: what an admitted buyer orders with. Random, so it cannot be
/// guessed; bound to one buyer and one item by the store.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct QueuePass(String);

impl QueuePass {
    pub fn new() -> Self {
        Self(uuid::Uuid::new_v4().simple().to_string())
    }

    /// A pass as a client presented it (`Queue-Pass`), or as a store kept it.
    pub fn from_raw(raw: impl Into<String>) -> Self {
        Self(raw.into())
    }

    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl Default for QueuePass {
    fn default() -> Self {
        Self::new()
    }
}

impl fmt::Display for QueuePass {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

/// One ticket of a line being rebuilt.
#[derive(Debug, Clone, PartialEq)]
pub struct LineEntry {
    pub buyer: BuyerId,
    pub ticket: QueueTicket,
    pub place: f64,
    /// False for a buyer who already ordered the item: they keep their
    /// ticket but are not let in again.
    pub in_line: bool,
}

/// The answer of [`WaitingRoom::join`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Joined {
    /// In the line (now, or already: `new` says which) with this ticket.
    In { ticket: QueueTicket, new: bool },
    /// The line is not loaded: build it from the database first.
    LineNotLoaded,
}

/// The answer of [`WaitingRoom::admit`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Admitted {
    Done {
        admitted: u64,
        expired: u64,
    },
    /// The item has no waiting room.
    NoWaitingRoom,
    LineNotLoaded,
    CounterNotLoaded,
}

/// Where a pass stands.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum PassState {
    /// Not used yet; valid until its expiry.
    Open,
    /// An order is being placed with it.
    Held,
    /// Its order committed.
    Used,
}

/// A buyer's pass.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PassView {
    pub pass: QueuePass,
    pub state: PassState,
    pub expires_at_ms: i64,
}

/// One buyer's view of the waiting room, read in one step.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct QueueView {
    pub ticket: QueueTicket,
    /// 0-based place in the line; `None` when not in it (admitted).
    pub rank: Option<u64>,
    pub pass: Option<PassView>,
    /// No unit left and no hold that could give one back.
    pub sold_out: bool,
    pub ended: bool,
    pub before_start: bool,
    pub paused: bool,
    pub per_second: u32,
    /// The store's clock.
    pub now_ms: i64,
}

/// The answer of [`WaitingRoom::queue_view`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum QueueRead {
    Joined(QueueView),
    NotJoined,
    LineNotLoaded,
    CounterNotLoaded,
}

/// Counts for metrics and the dashboard.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct QueueStats {
    pub waiting: u64,
    pub open_passes: u64,
    pub passes_used: u64,
    pub passes_expired: u64,
}

/// The waiting room's contract. Every method is atomic per item.
#[async_trait::async_trait]
pub trait WaitingRoom: Send + Sync + 'static {
    /// Writes the item's terms as read at row `version`, unless newer terms
    /// are there. True when written.
    ///
    /// # Errors
    /// The store cannot be reached or answered nonsense.
    async fn set_terms(
        &self,
        item: ItemId,
        terms: &SaleTerms,
        version: i64,
    ) -> Result<bool, super::StoreError>;

    /// Puts the buyer in the line with `ticket` at `place`, unless they are
    /// in already (then their ticket is kept).
    ///
    /// # Errors
    /// As for `set_terms`.
    async fn join(
        &self,
        item: ItemId,
        buyer: &BuyerId,
        ticket: &QueueTicket,
        place: f64,
    ) -> Result<Joined, super::StoreError>;

    /// Builds the line from the database's tickets, unless it is there.
    ///
    /// # Errors
    /// As for `set_terms`.
    async fn load_line(
        &self,
        item: ItemId,
        entries: &[LineEntry],
    ) -> Result<bool, super::StoreError>;

    /// Lets the next buyers in, with passes taken from `candidates` in order.
    ///
    /// # Errors
    /// As for `set_terms`.
    async fn admit(
        &self,
        item: ItemId,
        candidates: &[QueuePass],
    ) -> Result<Admitted, super::StoreError>;

    /// One buyer's view.
    ///
    /// # Errors
    /// As for `set_terms`.
    async fn queue_view(
        &self,
        item: ItemId,
        buyer: &BuyerId,
    ) -> Result<QueueRead, super::StoreError>;

    /// Counts of the item's waiting room.
    ///
    /// # Errors
    /// As for `set_terms`.
    async fn queue_stats(&self, item: ItemId) -> Result<QueueStats, super::StoreError>;

    /// Items whose terms have a waiting room: the admitter's worklist.
    ///
    /// # Errors
    /// As for `set_terms`.
    async fn items_with_waiting_rooms(&self) -> Result<Vec<ItemId>, super::StoreError>;
}
