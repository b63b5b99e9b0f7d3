//! The in-process reservation store: the embedded default, with the same
//! contract as the Redis scripts (and the same contract tests).
//!
//! One mutex guards all items; every operation is a few map updates, far
//! shorter than the database write that follows, so the lock is not the
//! bottleneck. State is lost on restart, which the contract allows: counters
//! are reloaded from the database on the next order.

use super::queue::{
    Admitted, Joined, LineEntry, PassState, PassView, QueuePass, QueueRead, QueueStats,
    QueueTicket, QueueView, SaleTerms, WaitingRoom,
};
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
    pass: Option<QueuePass>,
}

#[derive(Debug, Clone)]
struct Pass {
    buyer: BuyerId,
    expires_at_ms: i64,
    state: PassState,
}

/// A place in the line, ordered as the Redis sorted set orders it: by
/// place, then by ticket. Places are never negative, so their bits order
/// like the numbers.
type LineKey = (u64, QueueTicket);

#[derive(Debug, Default)]
struct WaitingRoomState {
    loaded: bool,
    line: BTreeSet<LineKey>,
    place_of: HashMap<QueueTicket, u64>,
    tickets: HashMap<BuyerId, QueueTicket>,
    ticket_buyers: HashMap<QueueTicket, BuyerId>,
    passes: HashMap<QueuePass, Pass>,
    open: BTreeSet<(i64, QueuePass)>,
    pass_of: HashMap<BuyerId, QueuePass>,
    tokens: f64,
    last_ms: Option<i64>,
    passes_used: u64,
    passes_expired: u64,
}

impl WaitingRoomState {
    fn enqueue(&mut self, ticket: QueueTicket, place: f64) {
        let bits = place.max(0.0).to_bits();
        if let Some(old) = self.place_of.insert(ticket.clone(), bits) {
            self.line.remove(&(old, ticket.clone()));
        }
        self.line.insert((bits, ticket));
    }

    fn rank(&self, ticket: &QueueTicket) -> Option<u64> {
        let bits = *self.place_of.get(ticket)?;
        Some(self.line.range(..(bits, ticket.clone())).count() as u64)
    }

    /// A pass held by an order goes back to open (until it expires).
    fn reopen(&mut self, pass: &QueuePass) {
        if let Some(p) = self.passes.get_mut(pass)
            && p.state == PassState::Held
        {
            p.state = PassState::Open;
            self.open.insert((p.expires_at_ms, pass.clone()));
        }
    }

    fn use_up(&mut self, pass: &QueuePass) {
        if let Some(p) = self.passes.get_mut(pass)
            && p.state != PassState::Used
        {
            p.state = PassState::Used;
            self.open.remove(&(p.expires_at_ms, pass.clone()));
            self.passes_used += 1;
        }
    }
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
    terms: SaleTerms,
    /// The row version the terms were read at; `None` before any.
    terms_version: Option<i64>,
    room: WaitingRoomState,
}

impl ItemState {
    fn give_back(&mut self, units: &HeldUnits) {
        if let Some(stock) = self.stock.as_mut() {
            *stock += units.qty;
        }
        self.drop_units_of(&units.buyer, units.qty);
        if let Some(pass) = &units.pass {
            self.room.reopen(pass);
        }
    }

    /// The buyer's count toward the per-buyer limit drops by `qty`.
    fn drop_units_of(&mut self, buyer: &BuyerId, qty: i64) {
        if let Some(count) = self.buyers.get_mut(buyer) {
            *count -= qty;
            if *count <= 0 {
                self.buyers.remove(buyer);
            }
        }
    }

    /// Adds a stock change the database committed at `version_after`,
    /// unless no counter is loaded or it was loaded from that row version
    /// or a newer one (then it counts the change already).
    fn apply_committed(&mut self, delta: i64, version_after: i64) -> bool {
        match self.stock.as_mut() {
            Some(stock) if self.loaded_version < version_after => {
                *stock += delta;
                true
            }
            _ => false,
        }
    }

    fn set_terms(&mut self, terms: &SaleTerms, version: i64) -> bool {
        if self.terms_version.is_some_and(|current| current > version) {
            return false;
        }
        self.terms = *terms;
        self.terms_version = Some(version);
        true
    }
}

/// This process's clock, which the embedded store judges windows and passes
/// by (Redis uses its own).
fn now_ms() -> i64 {
    crate::db::now_ms()
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
        let now = now_ms();
        if let Some(starts) = state.terms.starts_at_ms
            && now < starts
        {
            return Ok(Reserved::NotStarted {
                starts_in_ms: starts - now,
            });
        }
        if state.terms.ends_at_ms.is_some_and(|ends| now >= ends) {
            return Ok(Reserved::Ended);
        }
        if state.holds.contains_key(&hold.token) {
            return Ok(Reserved::AlreadyHeld);
        }
        let qty = i64::from(hold.qty.get());
        let pass = match (&state.terms.waiting_room, &hold.pass) {
            (None, _) => None,
            (Some(_), None) => return Ok(Reserved::PassRequired),
            (Some(_), Some(pass)) => {
                let valid = state.room.passes.get(pass).is_some_and(|p| {
                    p.buyer == hold.buyer && p.state == PassState::Open && p.expires_at_ms > now
                });
                if !valid {
                    return Ok(Reserved::PassInvalid);
                }
                if state.max_per_buyer == 0 && qty > 1 {
                    // A pass admits one unit unless the item sets a limit.
                    return Ok(Reserved::LimitExceeded { already: 0 });
                }
                Some(pass.clone())
            }
        };
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
        if let Some(pass) = &pass
            && let Some(p) = state.room.passes.get_mut(pass)
        {
            p.state = PassState::Held;
            state.room.open.remove(&(p.expires_at_ms, pass.clone()));
        }
        state.holds.insert(
            hold.token.clone(),
            HeldUnits {
                qty,
                buyer: hold.buyer.clone(),
                deadline: hold.deadline.as_ms(),
                pass,
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
        // The stock already counts the orders committed before it was
        // read: a late confirm must not take their units again (load.lua).
        state.reaped.clear();
        for token in committed {
            if let Some(units) = state.holds.remove(token) {
                state.deadlines.remove(&(units.deadline, token.clone()));
            }
        }
        let held: i64 = state.holds.values().map(|h| h.qty).sum();
        let counter = seed.stock - held;
        state.set_terms(&seed.terms, seed.version);
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
            if let Some(pass) = &units.pass {
                state.room.use_up(pass);
            }
            return Ok(Confirmed::HoldEnded);
        }
        let Some((units, _)) = state.reaped.remove(token) else {
            return Ok(Confirmed::NoHold);
        };
        if let Some(stock) = state.stock.as_mut() {
            *stock -= units.qty;
        }
        if state.max_per_buyer > 0 {
            *state.buyers.entry(units.buyer.clone()).or_default() += units.qty;
        }
        if let Some(pass) = &units.pass {
            state.room.use_up(pass);
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
        Ok(items
            .get_mut(&item)
            .is_some_and(|state| state.apply_committed(delta, version_after)))
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
        state.drop_units_of(buyer, qty);
        Ok(state.apply_committed(qty, version_after))
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
        state.reaped.clear();
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

#[async_trait::async_trait]
impl WaitingRoom for InProcessStore {
    async fn set_terms(
        &self,
        item: ItemId,
        terms: &SaleTerms,
        version: i64,
    ) -> Result<bool, StoreError> {
        Ok(self
            .lock()
            .entry(item)
            .or_default()
            .set_terms(terms, version))
    }

    async fn join(
        &self,
        item: ItemId,
        buyer: &BuyerId,
        ticket: &QueueTicket,
        place: f64,
    ) -> Result<Joined, StoreError> {
        let mut items = self.lock();
        let room = &mut items.entry(item).or_default().room;
        if !room.loaded {
            return Ok(Joined::LineNotLoaded);
        }
        if let Some(existing) = room.tickets.get(buyer) {
            return Ok(Joined::In {
                ticket: existing.clone(),
                new: false,
            });
        }
        room.tickets.insert(buyer.clone(), ticket.clone());
        room.ticket_buyers.insert(ticket.clone(), buyer.clone());
        room.enqueue(ticket.clone(), place);
        Ok(Joined::In {
            ticket: ticket.clone(),
            new: true,
        })
    }

    async fn load_line(&self, item: ItemId, entries: &[LineEntry]) -> Result<bool, StoreError> {
        let mut items = self.lock();
        let room = &mut items.entry(item).or_default().room;
        if room.loaded {
            return Ok(false);
        }
        for entry in entries {
            room.tickets
                .insert(entry.buyer.clone(), entry.ticket.clone());
            room.ticket_buyers
                .insert(entry.ticket.clone(), entry.buyer.clone());
            if entry.in_line {
                room.enqueue(entry.ticket.clone(), entry.place);
            }
        }
        room.loaded = true;
        Ok(true)
    }

    async fn admit(&self, item: ItemId, candidates: &[QueuePass]) -> Result<Admitted, StoreError> {
        let mut items = self.lock();
        let state = items.entry(item).or_default();
        let Some(rate) = state.terms.waiting_room else {
            return Ok(Admitted::NoWaitingRoom);
        };
        if !state.room.loaded {
            return Ok(Admitted::LineNotLoaded);
        }
        let Some(stock) = state.stock else {
            return Ok(Admitted::CounterNotLoaded);
        };
        let now = now_ms();
        let room = &mut state.room;
        let expired: Vec<(i64, QueuePass)> = room
            .open
            .iter()
            .take_while(|(expires, _)| *expires <= now)
            .cloned()
            .collect();
        for entry in &expired {
            room.open.remove(entry);
            if let Some(pass) = room.passes.remove(&entry.1) {
                room.pass_of.remove(&pass.buyer);
                if let Some(ticket) = room.tickets.get(&pass.buyer).cloned() {
                    room.enqueue(ticket, now as f64);
                }
            }
        }
        room.passes_expired += expired.len() as u64;
        let terms = state.terms;
        let closed = terms.paused
            || terms.starts_at_ms.is_some_and(|s| now < s)
            || terms.ends_at_ms.is_some_and(|e| now >= e);
        if closed {
            room.tokens = 0.0;
            room.last_ms = Some(now);
            return Ok(Admitted::Done {
                admitted: 0,
                expired: expired.len() as u64,
            });
        }
        let per_second = f64::from(rate.per_second);
        let last = room.last_ms.unwrap_or(now);
        // Half a second of admissions saved, as in queue_admit.lua.
        let capacity = (per_second / 2.0).max(1.0);
        let tokens = (room.tokens + (now - last) as f64 * per_second / 1000.0).min(capacity);
        let units = state.max_per_buyer.max(1);
        let possible = (stock / units - room.open.len() as i64).max(0) as usize;
        let n = (tokens.floor() as usize)
            .min(possible)
            .min(room.line.len())
            .min(candidates.len());
        let expires = now + i64::from(rate.pass_ttl_secs) * 1000;
        for pass in candidates.iter().take(n) {
            let Some(first) = room.line.pop_first() else {
                break;
            };
            room.place_of.remove(&first.1);
            if let Some(buyer) = room.ticket_buyers.get(&first.1).cloned() {
                room.passes.insert(
                    pass.clone(),
                    Pass {
                        buyer: buyer.clone(),
                        expires_at_ms: expires,
                        state: PassState::Open,
                    },
                );
                room.open.insert((expires, pass.clone()));
                room.pass_of.insert(buyer, pass.clone());
            }
        }
        room.tokens = tokens - n as f64;
        room.last_ms = Some(now);
        Ok(Admitted::Done {
            admitted: n as u64,
            expired: expired.len() as u64,
        })
    }

    async fn queue_view(&self, item: ItemId, buyer: &BuyerId) -> Result<QueueRead, StoreError> {
        let items = self.lock();
        let Some(state) = items.get(&item) else {
            return Ok(QueueRead::LineNotLoaded);
        };
        if !state.room.loaded {
            return Ok(QueueRead::LineNotLoaded);
        }
        let Some(stock) = state.stock else {
            return Ok(QueueRead::CounterNotLoaded);
        };
        let Some(ticket) = state.room.tickets.get(buyer) else {
            return Ok(QueueRead::NotJoined);
        };
        let now = now_ms();
        let pass = state.room.pass_of.get(buyer).and_then(|pass| {
            state.room.passes.get(pass).map(|p| PassView {
                pass: pass.clone(),
                state: p.state,
                expires_at_ms: p.expires_at_ms,
            })
        });
        Ok(QueueRead::Joined(QueueView {
            ticket: ticket.clone(),
            rank: state.room.rank(ticket),
            pass,
            sold_out: stock <= 0 && state.holds.is_empty(),
            ended: state.terms.ends_at_ms.is_some_and(|e| now >= e),
            before_start: state.terms.starts_at_ms.is_some_and(|s| now < s),
            paused: state.terms.paused,
            per_second: state.terms.waiting_room.map_or(0, |w| w.per_second),
            now_ms: now,
        }))
    }

    async fn queue_stats(&self, item: ItemId) -> Result<QueueStats, StoreError> {
        Ok(self
            .lock()
            .get(&item)
            .map(|state| QueueStats {
                waiting: state.room.line.len() as u64,
                open_passes: state.room.open.len() as u64,
                passes_used: state.room.passes_used,
                passes_expired: state.room.passes_expired,
            })
            .unwrap_or_default())
    }

    async fn items_with_waiting_rooms(&self) -> Result<Vec<ItemId>, StoreError> {
        Ok(self
            .lock()
            .iter()
            .filter(|(_, state)| state.terms.waiting_room.is_some())
            .map(|(id, _)| *id)
            .collect())
    }
}
