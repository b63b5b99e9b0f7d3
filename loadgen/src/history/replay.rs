//! Which earlier keys to send again, and when.
//!
//! [`ReplayPool`] keeps two bounded samples of settled keys: those answered
//! 201 and those refused for good (reservoir sampling, so a long run keeps
//! a fair sample in fixed memory). [`ReplayPool::pick`] takes from either
//! half the time and changes the payload (`qty` one up, or one down at the
//! top of the range) one time in four.
//!
//! [`ReplaySchedule`] says how many replays are due: a steady
//! `--replay-rate` per second, plus the bursts announced faults ask for,
//! each spread over [`BURST_SPREAD`] so the burst lands right after the
//! fault without arriving as one wall of connections.

use super::Payload;
use std::collections::VecDeque;
use std::time::Duration;

/// Most keys kept per kind (201 or refused).
const POOL_CAPACITY: usize = 20_000;
/// One replay in this many gets another payload.
const CHANGED_PAYLOAD_EVERY: u64 = 4;
/// How long a post-fault burst of replays takes to leave.
pub const BURST_SPREAD: Duration = Duration::from_millis(500);
/// The largest `qty` the shop accepts.
const MAX_QTY: i64 = 10;

/// An intent as the generator sent it: who, which key, what.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct KeyRef {
    pub buyer: u32,
    pub key: uuid::Uuid,
    pub payload: Payload,
}

/// SplitMix64: small, fast and good enough to sample replays.
#[derive(Debug)]
struct Random(u64);

impl Random {
    fn next(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9E37_79B9_7F4A_7C15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        z ^ (z >> 31)
    }

    fn below(&mut self, n: usize) -> usize {
        (self.next() % n.max(1) as u64) as usize
    }
}

/// A bounded, uniform sample of a stream (reservoir sampling).
#[derive(Debug, Default)]
struct Reservoir {
    kept: Vec<KeyRef>,
    seen: u64,
}

impl Reservoir {
    fn offer(&mut self, key: KeyRef, random: &mut Random) {
        self.seen += 1;
        if self.kept.len() < POOL_CAPACITY {
            self.kept.push(key);
        } else {
            let slot = (random.next() % self.seen) as usize;
            if slot < POOL_CAPACITY {
                self.kept[slot] = key;
            }
        }
    }
}

/// Settled keys to replay.
#[derive(Debug)]
pub struct ReplayPool {
    created: Reservoir,
    refused: Reservoir,
    random: Random,
    picks: u64,
}

impl ReplayPool {
    pub fn new() -> Self {
        Self::seeded(uuid::Uuid::new_v4().as_u64_pair().0)
    }

    fn seeded(seed: u64) -> Self {
        Self {
            created: Reservoir::default(),
            refused: Reservoir::default(),
            random: Random(seed),
            picks: 0,
        }
    }

    /// A key whose intent ended definitely: `created` when it was a 201.
    pub fn offer(&mut self, key: KeyRef, created: bool) {
        let pool = if created {
            &mut self.created
        } else {
            &mut self.refused
        };
        pool.offer(key, &mut self.random);
    }

    /// A key to replay, with the payload to send: keys answered 201 and
    /// keys refused alternate while both exist; every
    /// [`CHANGED_PAYLOAD_EVERY`]th pick changes the payload.
    pub fn pick(&mut self) -> Option<KeyRef> {
        self.picks += 1;
        let prefer_created = self.picks.is_multiple_of(2);
        let pool = match (
            self.created.kept.is_empty(),
            self.refused.kept.is_empty(),
            prefer_created,
        ) {
            (true, true, _) => return None,
            (false, true, _) | (false, false, true) => &self.created,
            (true, false, _) | (false, false, false) => &self.refused,
        };
        let mut key = pool.kept[self.random.below(pool.kept.len())];
        if self.picks % CHANGED_PAYLOAD_EVERY == 1 {
            key.payload = changed(key.payload);
        }
        Some(key)
    }
}

/// The same item with another valid quantity.
pub fn changed(payload: Payload) -> Payload {
    let qty = if payload.qty < MAX_QTY {
        payload.qty + 1
    } else {
        payload.qty - 1
    };
    Payload { qty, ..payload }
}

/// How many replays are due, and for which fault.
#[derive(Debug)]
pub struct ReplaySchedule {
    /// Replays per second, all run long.
    rate: f64,
    /// Steady replays handed out so far.
    steady: u64,
    /// Bursts still leaving.
    bursts: VecDeque<Burst>,
    burst_size: u32,
}

/// One fault's burst: when it started and how much of it left.
#[derive(Debug)]
struct Burst {
    fault: usize,
    start: Duration,
    handed_out: u32,
}

impl ReplaySchedule {
    pub fn new(rate: f64, burst_size: u32) -> Self {
        Self {
            rate,
            steady: 0,
            bursts: VecDeque::new(),
            burst_size,
        }
    }

    /// A fault was announced at `at` (since the start).
    pub fn fault(&mut self, fault: usize, at: Duration) {
        if self.burst_size > 0 {
            self.bursts.push_back(Burst {
                fault,
                start: at,
                handed_out: 0,
            });
        }
    }

    /// The replays due at `now` (since the start): `None` for a steady one,
    /// `Some(fault)` for one of a fault's burst.
    pub fn due(&mut self, now: Duration) -> Vec<Option<usize>> {
        let mut due = Vec::new();
        let steady_due = (now.as_secs_f64() * self.rate) as u64;
        while self.steady < steady_due {
            self.steady += 1;
            due.push(None);
        }
        for burst in &mut self.bursts {
            let elapsed = now.saturating_sub(burst.start);
            let share = (elapsed.as_secs_f64() / BURST_SPREAD.as_secs_f64()).min(1.0);
            let owed = (f64::from(self.burst_size) * share).ceil() as u32;
            while burst.handed_out < owed.min(self.burst_size) {
                burst.handed_out += 1;
                due.push(Some(burst.fault));
            }
        }
        let size = self.burst_size;
        self.bursts.retain(|b| b.handed_out < size);
        due
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn key(n: u128, qty: i64) -> KeyRef {
        KeyRef {
            buyer: n as u32,
            key: uuid::Uuid::from_u128(n),
            payload: Payload { item: 1, qty },
        }
    }

    #[test]
    fn picks_alternate_between_created_and_refused_keys() {
        let mut pool = ReplayPool::seeded(7);
        assert!(pool.pick().is_none(), "nothing settled yet");
        pool.offer(key(1, 1), true);
        pool.offer(key(2, 1), false);
        let picked: Vec<u128> = (0..8)
            .filter_map(|_| pool.pick())
            .map(|k| k.key.as_u128())
            .collect();
        assert_eq!(picked.iter().filter(|&&k| k == 1).count(), 4);
        assert_eq!(picked.iter().filter(|&&k| k == 2).count(), 4);
    }

    #[test]
    fn one_pick_in_four_changes_the_payload() {
        let mut pool = ReplayPool::seeded(7);
        pool.offer(key(1, 1), true);
        let changed_picks = (0..400)
            .filter_map(|_| pool.pick())
            .filter(|k| k.payload.qty != 1)
            .count();
        assert_eq!(changed_picks, 100);
    }

    #[test]
    fn a_changed_payload_stays_valid() {
        assert_eq!(changed(Payload { item: 3, qty: 1 }).qty, 2);
        assert_eq!(changed(Payload { item: 3, qty: 10 }).qty, 9);
        assert_eq!(changed(Payload { item: 3, qty: 1 }).item, 3);
    }

    #[test]
    fn the_pool_stays_bounded() {
        let mut pool = ReplayPool::seeded(1);
        for n in 0..(POOL_CAPACITY as u128 + 500) {
            pool.offer(key(n, 1), true);
        }
        assert_eq!(pool.created.kept.len(), POOL_CAPACITY);
        assert_eq!(pool.created.seen, POOL_CAPACITY as u64 + 500);
    }

    #[test]
    fn steady_replays_follow_the_rate() {
        let mut s = ReplaySchedule::new(10.0, 0);
        assert!(s.due(Duration::from_millis(50)).is_empty());
        assert_eq!(s.due(Duration::from_millis(1000)).len(), 10);
        assert_eq!(s.due(Duration::from_millis(1500)).len(), 5);
    }

    #[test]
    fn a_fault_burst_leaves_within_its_spread_and_is_labelled() {
        let mut s = ReplaySchedule::new(0.0, 100);
        let at = Duration::from_secs(3);
        s.fault(2, at);
        let first = s.due(at + Duration::from_millis(50));
        assert!(!first.is_empty() && first.len() < 100);
        assert!(first.iter().all(|f| *f == Some(2)));
        let rest = s.due(at + BURST_SPREAD);
        assert_eq!(first.len() + rest.len(), 100);
        assert!(
            s.due(at + BURST_SPREAD * 2).is_empty(),
            "a burst is sent once"
        );
    }
}
