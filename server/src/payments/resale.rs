//! How long an expired order's units wait before they sell again.
//!
//! Each expiry on this instance queues its units per item with the instant
//! they came back ([`ResaleClock::returned`]); each order this instance
//! commits for the item takes units from the front of that queue
//! ([`ResaleClock::sold`]) and records, per unit, the time since it came
//! back in `oversell_expiry_to_resale_seconds`. While units came back and
//! are unsold, a new order is taken to buy them first (the oldest first):
//! whichever unit of the row it took, one that came back is on sale again.
//!
//! The clock is per instance: units returned by one instance and sold by
//! another are not timed (and stay queued here until the queue's bound
//! drops them). The load generator computes the same figure from the
//! database for a whole run.

use crate::metrics::{self as m, Metrics};
use app::domain::ItemId;
use std::collections::{HashMap, VecDeque};
use std::sync::{Arc, Mutex};
use std::time::Instant;

/// Returns queued at once across all items, at most: beyond it the oldest
/// are dropped (and never timed).
const CAPACITY: usize = 10_000;

/// Units of one expiry still waiting to be sold again.
#[derive(Debug, Clone, Copy)]
struct Returned {
    at: Instant,
    units: i64,
}

pub struct ResaleClock {
    queues: Mutex<Queues>,
    metrics: Arc<Metrics>,
}

#[derive(Default)]
struct Queues {
    by_item: HashMap<ItemId, VecDeque<Returned>>,
    len: usize,
}

impl ResaleClock {
    pub fn new(metrics: Arc<Metrics>) -> Self {
        Self {
            queues: Mutex::default(),
            metrics,
        }
    }

    fn queues(&self) -> std::sync::MutexGuard<'_, Queues> {
        self.queues
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
    }

    /// `units` of `item` came back on sale now.
    pub fn returned(&self, item: ItemId, units: i64) {
        self.returned_at(item, units, Instant::now());
    }

    fn returned_at(&self, item: ItemId, units: i64, at: Instant) {
        if units <= 0 {
            return;
        }
        let mut queues = self.queues();
        if queues.len >= CAPACITY {
            // Drop the oldest entry of the longest queue: bounded memory.
            let longest = queues
                .by_item
                .iter()
                .max_by_key(|(_, q)| q.len())
                .map(|(item, _)| *item);
            if let Some(longest) = longest
                && let Some(queue) = queues.by_item.get_mut(&longest)
                && queue.pop_front().is_some()
            {
                queues.len -= 1;
            }
        }
        queues
            .by_item
            .entry(item)
            .or_default()
            .push_back(Returned { at, units });
        queues.len += 1;
    }

    /// An order for `units` of `item` committed now: times the returned
    /// units it took, oldest first.
    pub fn sold(&self, item: ItemId, units: i64) {
        for waited in self.sold_at(item, units, Instant::now()) {
            self.metrics
                .histogram(m::EXPIRY_TO_RESALE_SECONDS, &[])
                .record(waited);
        }
    }

    /// The seconds each returned unit waited, one entry per unit.
    fn sold_at(&self, item: ItemId, units: i64, now: Instant) -> Vec<f64> {
        let mut queues = self.queues();
        let Some(queue) = queues.by_item.get_mut(&item) else {
            return Vec::new();
        };
        let mut waited = Vec::new();
        let mut wanted = units;
        let mut emptied = 0;
        while wanted > 0 {
            let Some(front) = queue.front_mut() else {
                break;
            };
            let taken = front.units.min(wanted);
            let seconds = now.saturating_duration_since(front.at).as_secs_f64();
            waited.extend(std::iter::repeat_n(seconds, taken as usize));
            front.units -= taken;
            wanted -= taken;
            if front.units == 0 {
                queue.pop_front();
                emptied += 1;
            }
        }
        if queue.is_empty() {
            queues.by_item.remove(&item);
        }
        queues.len -= emptied;
        waited
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;

    fn item(id: i64) -> ItemId {
        ItemId::new(id).expect("item id")
    }

    fn clock() -> ResaleClock {
        ResaleClock::new(Arc::new(Metrics::disabled()))
    }

    #[test]
    fn returned_units_are_timed_oldest_first_one_entry_per_unit() {
        let clock = clock();
        let start = Instant::now();
        clock.returned_at(item(1), 2, start);
        clock.returned_at(item(1), 1, start + Duration::from_secs(1));
        let waited = clock.sold_at(item(1), 3, start + Duration::from_secs(4));
        assert_eq!(waited, vec![4.0, 4.0, 3.0]);
        assert!(
            clock
                .sold_at(item(1), 1, start + Duration::from_secs(9))
                .is_empty(),
            "nothing returned is left"
        );
        assert_eq!(clock.queues().len, 0);
    }

    #[test]
    fn an_order_takes_part_of_an_expiry_and_other_items_are_apart() {
        let clock = clock();
        let start = Instant::now();
        clock.returned_at(item(1), 3, start);
        assert!(clock.sold_at(item(2), 1, start).is_empty());
        assert_eq!(
            clock.sold_at(item(1), 2, start + Duration::from_secs(2)),
            vec![2.0, 2.0]
        );
        assert_eq!(
            clock.sold_at(item(1), 5, start + Duration::from_secs(3)),
            vec![3.0]
        );
    }

    #[test]
    fn the_queues_are_bounded() {
        let clock = clock();
        let start = Instant::now();
        for _ in 0..CAPACITY + 10 {
            clock.returned_at(item(1), 1, start);
        }
        assert_eq!(clock.queues().len, CAPACITY);
    }
}
