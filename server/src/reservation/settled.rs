//! Whether a sell-out is settled: the database has no unit of the item left.
//!
//! A sell-out the store reports (nothing left, no hold that could give a
//! unit back) is answered from Redis alone when it is *settled*: a new
//! decision would say the same, so losing the refusal with Redis's data
//! changes nothing. The store's word is not enough for that. Its counter is
//! a filter, and a fault can leave it below the database's stock (an update
//! lost in an outage, a late confirm after a reload); a refusal on its word
//! alone would then be contradicted by the next decision, once Redis is
//! reloaded from the database. So a sell-out is settled only when the
//! database's stock is zero too.
//!
//! The database's stock of an item never rises except by a restock or an
//! unpaid order's units coming back, and both pass through
//! [`crate::stock::StockPath`], which forgets the item here. So a zero read
//! once stands, and is read again at most once per [`EMPTY_TRUSTED`] per
//! item and instance: a sold-out flood still costs the database nearly
//! nothing. A stock above zero is trusted for [`STOCKED_TRUSTED`], so drift
//! does not turn every refusal into a read; such refusals are kept in the
//! database (see [`crate::orders::refusal`]) until the counter is repaired.

use super::memo::ItemDeadlines;
use crate::db::{Database, items};
use app::domain::ItemId;
use std::time::{Duration, Instant};

/// How long a read of zero stock is trusted (units only come back through
/// [`SettledSellOuts::forget`] on this instance; other instances' restocks
/// reach this one by then).
const EMPTY_TRUSTED: Duration = Duration::from_secs(1);
/// How long a read of some stock left is trusted.
const STOCKED_TRUSTED: Duration = Duration::from_millis(100);
/// A read that takes longer settles nothing: the flood waiting behind it
/// goes on with unsettled refusals instead of stalling on a slow database.
const READ_TIMEOUT: Duration = Duration::from_secs(1);

pub struct SettledSellOuts {
    db: Database,
    /// Per item: whether its stock was read as zero, until when trusted.
    readings: ItemDeadlines<bool>,
    /// One read at a time: a flood that finds no fresh reading waits for
    /// the one read under way instead of sending its own.
    reading: tokio::sync::Mutex<()>,
}

impl SettledSellOuts {
    pub fn new(db: Database) -> Self {
        Self {
            db,
            readings: ItemDeadlines::default(),
            reading: tokio::sync::Mutex::new(()),
        }
    }

    /// Whether the database has no unit of `item` left, for a sell-out the
    /// store reported. A database that cannot be read settles nothing.
    pub async fn confirms(&self, item: ItemId) -> bool {
        if let Some(empty) = self.readings.get(item, Instant::now()) {
            return empty;
        }
        let _one = self.reading.lock().await;
        let asked = Instant::now();
        if let Some(empty) = self.readings.get(item, asked) {
            return empty;
        }
        let empty = match tokio::time::timeout(READ_TIMEOUT, items::stock(&self.db, item)).await {
            Ok(Ok(Some(stock))) => stock <= 0,
            // A vanished item: its refusals are decided elsewhere.
            Ok(Ok(None)) => false,
            Ok(Err(e)) => {
                tracing::warn!(%item, error = %e, "reading the stock of a sold-out item failed; its refusals are kept in the database");
                return false;
            }
            Err(_) => {
                tracing::warn!(%item, "reading the stock of a sold-out item timed out; its refusals are kept in the database");
                return false;
            }
        };
        let trusted = if empty {
            EMPTY_TRUSTED
        } else {
            tracing::warn!(%item, "the store shows a sell-out the database does not have: its counter is below the stock until reconciled");
            STOCKED_TRUSTED
        };
        // Trusted from when it was asked, not answered.
        self.readings.insert(item, empty, asked + trusted, asked);
        empty
    }

    /// Units of `item` came back (a restock, an expired order): read again.
    pub fn forget(&self, item: ItemId) {
        self.readings.remove(item);
    }
}
