//! The sold-out memo: items whose counter was last seen with nothing left
//! and no hold that could give units back (a settled sell-out: the
//! database had none left either), each until a deadline.
//!
//! Under a frenzy on a sold-out item, most requests are then refused
//! without a round trip to the store. The memo only ever refuses, so it
//! cannot oversell; a unit that comes back meanwhile is offered again when
//! the memo expires (or at once, when this instance gave it back or
//! restocked). Bounded: when full, expired entries are dropped, and if none
//! has expired nothing new is remembered (a refusal then asks the store).

use app::domain::ItemId;
use std::collections::HashMap;
use std::sync::Mutex;
use std::time::{Duration, Instant};

/// Items remembered at once, at most.
const CAPACITY: usize = 4096;

/// Per-item values, each kept until its deadline. Bounded: when full,
/// expired entries are dropped, and if none has expired nothing new is
/// kept (the caller then asks again next time). The memo and the readings
/// of sold-out database stock ([`super::settled`]) keep their items here.
pub struct ItemDeadlines<V> {
    entries: Mutex<HashMap<ItemId, (V, Instant)>>,
}

impl<V: Copy> Default for ItemDeadlines<V> {
    fn default() -> Self {
        Self {
            entries: Mutex::default(),
        }
    }
}

impl<V: Copy> ItemDeadlines<V> {
    fn entries(&self) -> std::sync::MutexGuard<'_, HashMap<ItemId, (V, Instant)>> {
        self.entries
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
    }

    /// Keeps `value` for `item` until `until`, unless the map is full of
    /// entries still live at `now`.
    pub fn insert(&self, item: ItemId, value: V, until: Instant, now: Instant) {
        let mut entries = self.entries();
        if entries.len() >= CAPACITY && !entries.contains_key(&item) {
            entries.retain(|_, (_, until)| *until > now);
            if entries.len() >= CAPACITY {
                return;
            }
        }
        entries.insert(item, (value, until));
    }

    /// The item's value, if its deadline is after `now`.
    pub fn get(&self, item: ItemId, now: Instant) -> Option<V> {
        self.entries()
            .get(&item)
            .filter(|(_, until)| *until > now)
            .map(|(value, _)| *value)
    }

    pub fn remove(&self, item: ItemId) {
        self.entries().remove(&item);
    }
}

pub struct SoldOutMemo {
    ttl: Duration,
    until: ItemDeadlines<()>,
}

impl SoldOutMemo {
    /// `ttl`: how long a sell-out is trusted without asking the store again
    /// (zero: always ask).
    pub fn new(ttl: Duration) -> Self {
        Self {
            ttl,
            until: ItemDeadlines::default(),
        }
    }

    pub fn remember(&self, item: ItemId, now: Instant) {
        if !self.ttl.is_zero() {
            self.until.insert(item, (), now + self.ttl, now);
        }
    }

    /// Whether the item was seen sold out within the memo's time.
    pub fn knows(&self, item: ItemId, now: Instant) -> bool {
        !self.ttl.is_zero() && self.until.get(item, now).is_some()
    }

    /// Units came back (a release, a restock, a reload): ask the store again.
    pub fn forget(&self, item: ItemId) {
        if !self.ttl.is_zero() {
            self.until.remove(item);
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
        assert!(memo.knows(item(1), now + Duration::from_millis(99)));
        assert!(!memo.knows(item(1), now + Duration::from_millis(100)));
        assert!(!memo.knows(item(2), now));
    }

    #[test]
    fn forgetting_offers_the_item_again_at_once() {
        let memo = SoldOutMemo::new(Duration::from_secs(10));
        let now = Instant::now();
        memo.remember(item(1), now);
        memo.forget(item(1));
        assert!(!memo.knows(item(1), now));
    }

    #[test]
    fn a_zero_ttl_remembers_nothing() {
        let memo = SoldOutMemo::new(Duration::ZERO);
        let now = Instant::now();
        memo.remember(item(1), now);
        assert!(!memo.knows(item(1), now));
    }

    #[test]
    fn a_full_memo_makes_room_only_from_expired_entries() {
        let memo = SoldOutMemo::new(Duration::from_millis(10));
        let start = Instant::now();
        for id in 1..=CAPACITY as i64 {
            memo.remember(item(id), start);
        }
        let extra = item(CAPACITY as i64 + 1);
        memo.remember(extra, start);
        assert!(
            !memo.knows(extra, start),
            "no room while every entry is live"
        );
        let later = start + Duration::from_millis(20);
        memo.remember(extra, later);
        assert!(memo.knows(extra, later));
        assert_eq!(
            memo.until.entries().len(),
            1,
            "expired entries were dropped"
        );
    }
}
