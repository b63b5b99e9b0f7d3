//! Drop day, the start: the waiting room and the fair draw.
//!
//! An item with `admission_per_second` has a waiting room. A buyer joins
//! once (`POST /api/items/{id}/queue`): the database gives them a ticket and
//! records when they joined, by its own clock; the reservation store puts
//! them in the item's line (see [`crate::reservation::queue`]). Everyone who
//! joins before the start is placed by the fair draw: ascending lowercase
//! hex SHA-256 of `seed + ":" + ticket`, with a seed committed (its SHA-256
//! published) from the item's creation and revealed at the start, so anyone
//! can check the order afterwards (`GET /api/items/{id}/fairness`). Later
//! joiners follow in arrival order.
//!
//! A background task ([`WaitingRooms::spawn_admitter`]) lets buyers in on
//! every instance; the store's token bucket keeps the rate and its counter
//! keeps admission within the units really available, whatever the number
//! of instances. Each read of a buyer's place is one step in the store, and
//! says `sold_out` as soon as nothing is left and no hold could give a unit
//! back; with a payment deadline, also no unpaid order (the database counts
//! those, at most once a second per item, and only when the store would
//! say `sold_out`).
//!
//! The draw trusts the server with one thing: it issues the tickets. The
//! commitment proves the seed was not picked after the tickets were known.

use crate::background::BackgroundTask;
use crate::db::{Database, items, orders, queue};
use crate::metrics::{self as m, Metrics};
use crate::reservation::ReservationStore;
use crate::reservation::StoreError;
use crate::reservation::loader::{CounterLoader, LoadFailure};
use crate::reservation::queue::{
    Admitted, Joined, LineEntry, PassState, QueuePass, QueueRead, QueueTicket, QueueView,
};
use app::domain::{BuyerId, ItemId};
use app::model::{Fairness, Item, QueueState, QueueStatus};
use sha2::{Digest, Sha256};
use std::collections::HashMap;
use std::fmt::Write as _;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

/// Passes offered to the store per item per admission round (the store
/// uses as many as its rate and stock allow): enough for 2,500 admissions a
/// second at the default interval.
const CANDIDATES_PER_ROUND: usize = 256;

/// How long a count of an item's unpaid units is trusted.
const UNPAID_UNITS_FRESH_FOR: Duration = Duration::from_secs(1);

#[derive(Debug, thiserror::Error)]
pub enum QueueError {
    /// The item has no waiting room, or does not exist.
    #[error("no waiting room")]
    NoWaitingRoom,
    #[error("not in the queue")]
    NotInQueue,
    #[error("reservation store: {0}")]
    Store(#[from] StoreError),
    #[error("database: {0}")]
    Database(#[from] sqlx::Error),
    #[error("loading the counter: {0}")]
    Load(#[from] LoadFailure),
}

pub struct WaitingRooms {
    db: Database,
    store: Arc<dyn ReservationStore>,
    loader: Arc<CounterLoader>,
    metrics: Arc<Metrics>,
    /// Orders await payment: a sold-out line may get units back.
    payment_deadline: bool,
    /// Per item: when its unpaid units were counted, and how many.
    unpaid_units: Mutex<HashMap<ItemId, (Instant, i64)>>,
}

/// The lowercase hex SHA-256 of a string.
pub fn sha256_hex(text: &str) -> String {
    let mut hex = String::with_capacity(64);
    for byte in Sha256::digest(text.as_bytes()) {
        // Writing to a String cannot fail.
        let _ = write!(hex, "{byte:02x}");
    }
    hex
}

/// The draw's key of a ticket: `sha256(seed + ":" + ticket)`.
fn draw_key(seed: &str, ticket: &str) -> String {
    sha256_hex(&format!("{seed}:{ticket}"))
}

/// A ticket's place in the line: below 1 for those who joined before the
/// start (the first 52 bits of its draw key, so the line orders them as the
/// draw does), the join time afterwards (arrival order, after every drawn
/// ticket).
fn place(item: &Item, seed: &str, ticket: &str, joined_at_ms: i64) -> f64 {
    match item.sale_starts_at_ms {
        Some(starts) if joined_at_ms < starts => {
            let key = draw_key(seed, ticket);
            let bits = u64::from_str_radix(&key[..13], 16).unwrap_or(0);
            bits as f64 / (1u64 << 52) as f64
        }
        _ => joined_at_ms as f64,
    }
}

impl WaitingRooms {
    pub fn new(
        db: Database,
        store: Arc<dyn ReservationStore>,
        loader: Arc<CounterLoader>,
        metrics: Arc<Metrics>,
    ) -> Self {
        Self {
            db,
            store,
            loader,
            metrics,
            payment_deadline: false,
            unpaid_units: Mutex::new(HashMap::new()),
        }
    }

    /// Orders of this shop await payment, and units of unpaid ones come
    /// back: the line is not told `sold_out` while any are unpaid.
    pub fn with_payment_deadline(mut self) -> Self {
        self.payment_deadline = true;
        self
    }

    /// Whether units of the item may still come back from unpaid orders.
    async fn units_may_come_back(&self, item: ItemId) -> Result<bool, QueueError> {
        if !self.payment_deadline {
            return Ok(false);
        }
        let cached = self
            .unpaid_units
            .lock()
            .ok()
            .and_then(|counts| counts.get(&item).copied())
            .filter(|(at, _)| at.elapsed() < UNPAID_UNITS_FRESH_FOR);
        let units = match cached {
            Some((_, units)) => units,
            None => {
                let units = orders::units_awaiting_payment(&self.db, item).await?;
                if let Ok(mut counts) = self.unpaid_units.lock() {
                    counts.insert(item, (Instant::now(), units));
                }
                units
            }
        };
        Ok(units > 0)
    }

    /// Puts the buyer in the item's line (once) and says where they stand.
    ///
    /// # Errors
    /// No waiting room; a failing store or database.
    pub async fn join(&self, item: &Item, buyer: &BuyerId) -> Result<QueueStatus, QueueError> {
        if !item.has_waiting_room() {
            return Err(QueueError::NoWaitingRoom);
        }
        let offered = QueueTicket::new();
        let (ticket, joined_at_ms) =
            queue::join(&self.db, item.id, buyer, offered.as_str()).await?;
        if ticket == offered.as_str() {
            self.metrics
                .item_counter(m::QUEUE_JOINS, item.id)
                .increment(1);
        }
        let seed = items::fairness_seed(&self.db, item.id).await?;
        let ticket = QueueTicket::from_stored(ticket);
        let at = place(item, &seed, ticket.as_str(), joined_at_ms);
        for _ in 0..2 {
            match self.store.join(item.id, buyer, &ticket, at).await? {
                Joined::In { .. } => break,
                Joined::LineNotLoaded => self.load_line(item, &seed).await?,
            }
        }
        self.status(item, buyer).await
    }

    /// Where the buyer stands.
    ///
    /// # Errors
    /// No waiting room; never joined; a failing store or database.
    pub async fn status(&self, item: &Item, buyer: &BuyerId) -> Result<QueueStatus, QueueError> {
        if !item.has_waiting_room() {
            return Err(QueueError::NoWaitingRoom);
        }
        for _ in 0..3 {
            match self.store.queue_view(item.id, buyer).await? {
                QueueRead::Joined(mut view) => {
                    if view.sold_out && self.units_may_come_back(item.id).await? {
                        view.sold_out = false;
                    }
                    return Ok(status_of(&view));
                }
                QueueRead::NotJoined => return Err(QueueError::NotInQueue),
                QueueRead::LineNotLoaded => {
                    let seed = items::fairness_seed(&self.db, item.id).await?;
                    self.load_line(item, &seed).await?;
                }
                QueueRead::CounterNotLoaded => self.loader.load(item.id).await?,
            }
        }
        Err(QueueError::Store(StoreError::Protocol(
            "the waiting room kept disappearing while loading".into(),
        )))
    }

    /// Builds the line from the database's tickets.
    async fn load_line(&self, item: &Item, seed: &str) -> Result<(), QueueError> {
        let entries: Vec<LineEntry> = queue::of_item(&self.db, item.id)
            .await?
            .into_iter()
            .map(|row| LineEntry {
                place: place(item, seed, &row.ticket, row.joined_at_ms),
                in_line: !row.ordered,
                buyer: row.buyer,
                ticket: QueueTicket::from_stored(row.ticket),
            })
            .collect();
        if self.store.load_line(item.id, &entries).await? {
            tracing::info!(item = %item.id, tickets = entries.len(), "waiting room loaded from the database");
        }
        Ok(())
    }

    /// The fair start's record: the commitment always; after the start the
    /// seed and the drawn tickets in their order.
    ///
    /// # Errors
    /// A failing database.
    pub async fn fairness(&self, item: &Item, now_ms: i64) -> Result<Fairness, QueueError> {
        let seed = items::fairness_seed(&self.db, item.id).await?;
        let commitment = sha256_hex(&seed);
        let started = item.sale_starts_at_ms.is_none_or(|starts| now_ms >= starts);
        if !started {
            return Ok(Fairness {
                commitment,
                seed: None,
                tickets: Vec::new(),
            });
        }
        let tickets = match item.sale_starts_at_ms {
            Some(starts) => {
                let mut drawn: Vec<(String, String)> =
                    queue::joined_before(&self.db, item.id, starts)
                        .await?
                        .into_iter()
                        .map(|ticket| (draw_key(&seed, &ticket), ticket))
                        .collect();
                drawn.sort();
                drawn.into_iter().map(|(_, ticket)| ticket).collect()
            }
            None => Vec::new(),
        };
        Ok(Fairness {
            commitment,
            seed: Some(seed),
            tickets,
        })
    }

    /// One admission round over every item with a waiting room; returns how
    /// many buyers were let in.
    ///
    /// # Errors
    /// The store failed to list its waiting rooms.
    pub async fn admit_round(&self) -> Result<u64, QueueError> {
        let mut admitted = 0;
        for item in self.store.items_with_waiting_rooms().await? {
            match self.admit(item).await {
                Ok(n) => admitted += n,
                Err(e) => tracing::warn!(%item, error = %e, "admission round failed for an item"),
            }
        }
        Ok(admitted)
    }

    async fn admit(&self, item: ItemId) -> Result<u64, QueueError> {
        let candidates: Vec<QueuePass> = (0..CANDIDATES_PER_ROUND)
            .map(|_| QueuePass::new())
            .collect();
        for _ in 0..2 {
            match self.store.admit(item, &candidates).await? {
                Admitted::Done { admitted, expired } => {
                    self.metrics
                        .item_counter(m::QUEUE_ADMITTED, item)
                        .increment(admitted);
                    self.metrics
                        .item_counter(m::QUEUE_PASSES_EXPIRED, item)
                        .increment(expired);
                    let stats = self.store.queue_stats(item).await?;
                    self.metrics
                        .item_gauge(m::QUEUE_WAITING, item)
                        .set(stats.waiting as f64);
                    self.metrics
                        .item_gauge(m::QUEUE_PASSES_OPEN, item)
                        .set(stats.open_passes as f64);
                    self.metrics
                        .item_gauge(m::QUEUE_PASSES_USED, item)
                        .set(stats.passes_used as f64);
                    return Ok(admitted);
                }
                Admitted::NoWaitingRoom => return Ok(0),
                Admitted::CounterNotLoaded => self.loader.load(item).await?,
                Admitted::LineNotLoaded => {
                    let Some(row) = items::get(&self.db, item).await? else {
                        return Ok(0);
                    };
                    let seed = items::fairness_seed(&self.db, item).await?;
                    self.load_line(&row, &seed).await?;
                }
            }
        }
        Ok(0)
    }

    /// Runs admission rounds every `interval` until dropped.
    pub fn spawn_admitter(self: Arc<Self>, interval: Duration) -> BackgroundTask {
        BackgroundTask::every(interval, move || {
            let rooms = self.clone();
            async move {
                if let Err(e) = rooms.admit_round().await {
                    tracing::warn!(error = %e, "admission round failed; retrying next interval");
                }
            }
        })
    }
}

/// A buyer's view as the API answers it.
fn status_of(view: &QueueView) -> QueueStatus {
    let mut status = QueueStatus {
        state: QueueState::Waiting,
        ticket: Some(view.ticket.to_string()),
        position: None,
        eta_seconds: None,
        pass: None,
        pass_expires_at_ms: None,
        paused: view.paused.then_some(true),
    };
    if view.ended {
        status.state = QueueState::Closed;
        return status;
    }
    let live_pass = view
        .pass
        .as_ref()
        .filter(|p| p.state != PassState::Open || p.expires_at_ms > view.now_ms);
    match live_pass {
        Some(pass) if pass.state == PassState::Used => {
            status.state = QueueState::Admitted;
            status.pass = Some(pass.pass.to_string());
            return status;
        }
        Some(_) | None if view.sold_out => {
            status.state = QueueState::SoldOut;
            return status;
        }
        Some(pass) => {
            status.state = QueueState::Admitted;
            status.pass = Some(pass.pass.to_string());
            status.pass_expires_at_ms = Some(pass.expires_at_ms);
            return status;
        }
        None => {}
    }
    if let Some(rank) = view.rank.filter(|_| !view.before_start) {
        let position = rank + 1;
        status.position = Some(position);
        if !view.paused && view.per_second > 0 {
            status.eta_seconds = Some(position.div_ceil(u64::from(view.per_second)));
        }
    }
    status
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_commitment_is_the_seeds_sha256() {
        assert_eq!(
            sha256_hex("abc"),
            "ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad"
        );
    }

    #[test]
    fn drawn_places_order_like_their_draw_keys_and_before_every_arrival() {
        let mut item_row = Item {
            id: ItemId::new(1).expect("id"),
            title: "x".into(),
            condition: "x".into(),
            seller: "x".into(),
            price_cents: 1,
            stock: 1,
            version: 0,
            max_per_buyer: None,
            sale_starts_at_ms: Some(1_000),
            sale_ends_at_ms: None,
            admission_per_second: Some(10),
            pass_ttl_seconds: 120,
            paused: false,
        };
        let seed = "seed";
        let tickets: Vec<String> = (0..200).map(|n| format!("ticket-{n}")).collect();
        let mut by_place: Vec<(f64, &String)> = tickets
            .iter()
            .map(|t| (place(&item_row, seed, t, 999), t))
            .collect();
        by_place.sort_by(|a, b| a.0.total_cmp(&b.0));
        let mut by_key: Vec<(String, &String)> =
            tickets.iter().map(|t| (draw_key(seed, t), t)).collect();
        by_key.sort();
        let places: Vec<&String> = by_place.iter().map(|(_, t)| *t).collect();
        let keys: Vec<&String> = by_key.iter().map(|(_, t)| *t).collect();
        assert_eq!(places, keys);
        assert!(by_place.iter().all(|(p, _)| *p < 1.0));
        let late = place(&item_row, seed, "late", 1_000);
        assert_eq!(late, 1_000.0, "after the start: arrival order");
        item_row.sale_starts_at_ms = None;
        assert_eq!(place(&item_row, seed, "any", 5), 5.0, "no start: no draw");
    }
}
