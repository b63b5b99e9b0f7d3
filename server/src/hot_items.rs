//! Hot-item detection: which items get the most order attempts right now.
//!
//! A bounded Space-Saving table (at most [`CAPACITY`] items) whose counts
//! decay exponentially with a half-life of [`HALF_LIFE`]: memory stays fixed
//! however many items a burst touches, old bursts fade, and an item that
//! enters a full table takes over the coldest entry's count (the
//! Space-Saving rule, which keeps every truly hot item listed). A decayed
//! count `c` estimates a request rate of `c × ln 2 / half-life` per second.

use app::domain::ItemId;
use std::sync::Mutex;
use std::time::{Duration, Instant};

pub const CAPACITY: usize = 32;
pub const HALF_LIFE: Duration = Duration::from_secs(10);

#[derive(Debug, Clone, Copy)]
struct Entry {
    item: ItemId,
    /// Decayed count as of `at`.
    count: f64,
    at: Instant,
}

/// One hot item as the dashboard shows it.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Hot {
    pub item: ItemId,
    pub requests_per_second: f64,
}

#[derive(Debug)]
pub struct HotItems {
    entries: Mutex<Vec<Entry>>,
    decay_per_second: f64,
}

impl Default for HotItems {
    fn default() -> Self {
        Self::new()
    }
}

impl HotItems {
    pub fn new() -> Self {
        Self {
            entries: Mutex::new(Vec::with_capacity(CAPACITY)),
            decay_per_second: std::f64::consts::LN_2 / HALF_LIFE.as_secs_f64(),
        }
    }

    fn decayed(&self, entry: &Entry, now: Instant) -> f64 {
        let age = now.saturating_duration_since(entry.at).as_secs_f64();
        entry.count * (-self.decay_per_second * age).exp()
    }

    /// Counts one order attempt on `item`.
    pub fn record(&self, item: ItemId) {
        self.record_at(item, Instant::now());
    }

    pub fn record_at(&self, item: ItemId, now: Instant) {
        let mut entries = self
            .entries
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        if let Some(i) = entries.iter().position(|e| e.item == item) {
            let count = self.decayed(&entries[i], now) + 1.0;
            entries[i] = Entry {
                item,
                count,
                at: now,
            };
            return;
        }
        if entries.len() < CAPACITY {
            entries.push(Entry {
                item,
                count: 1.0,
                at: now,
            });
            return;
        }
        let coldest = entries
            .iter()
            .enumerate()
            .map(|(i, e)| (i, self.decayed(e, now)))
            .min_by(|a, b| a.1.total_cmp(&b.1));
        if let Some((i, count)) = coldest {
            entries[i] = Entry {
                item,
                count: count + 1.0,
                at: now,
            };
        }
    }

    /// The `n` hottest items, hottest first.
    pub fn top(&self, n: usize) -> Vec<Hot> {
        self.top_at(n, Instant::now())
    }

    pub fn top_at(&self, n: usize, now: Instant) -> Vec<Hot> {
        let entries = self
            .entries
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        let mut hot: Vec<Hot> = entries
            .iter()
            .map(|e| Hot {
                item: e.item,
                requests_per_second: self.decayed(e, now) * self.decay_per_second,
            })
            .collect();
        hot.sort_by(|a, b| b.requests_per_second.total_cmp(&a.requests_per_second));
        hot.truncate(n);
        hot
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn item(id: i64) -> ItemId {
        ItemId::new(id).expect("id")
    }

    #[test]
    fn the_busiest_item_ranks_first_and_the_table_stays_bounded() {
        let hot = HotItems::new();
        let now = Instant::now();
        for _ in 0..500 {
            hot.record_at(item(7), now);
        }
        for id in 100..1_100 {
            hot.record_at(item(id), now);
        }
        let top = hot.top_at(5, now);
        assert_eq!(top[0].item, item(7));
        assert_eq!(
            hot.entries.lock().map(|e| e.len()).unwrap_or_default(),
            CAPACITY
        );
    }

    #[test]
    fn a_steady_rate_is_estimated_and_old_bursts_fade() {
        let hot = HotItems::new();
        let start = Instant::now();
        // 100 requests per second on item 1 for 60 s (six half-lives).
        for tick in 0..6_000u64 {
            hot.record_at(item(1), start + Duration::from_millis(tick * 10));
        }
        let end = start + Duration::from_secs(60);
        let rate = hot.top_at(1, end)[0].requests_per_second;
        assert!((90.0..=110.0).contains(&rate), "estimated {rate} req/s");
        let later = hot.top_at(1, end + HALF_LIFE * 3)[0].requests_per_second;
        assert!(
            (rate / 8.0 - later).abs() < 1.0,
            "three half-lives later: {later}"
        );
    }

    #[test]
    fn a_new_hot_item_displaces_the_coldest() {
        let hot = HotItems::new();
        let now = Instant::now();
        for id in 1..=CAPACITY as i64 {
            hot.record_at(item(id), now);
        }
        let later = now + Duration::from_secs(30);
        for _ in 0..50 {
            hot.record_at(item(999), later);
        }
        assert_eq!(hot.top_at(1, later)[0].item, item(999));
    }
}
