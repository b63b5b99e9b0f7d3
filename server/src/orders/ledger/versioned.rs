//! The versioned update: the article's optimistic lock, exact on its own.
//!
//! Each attempt reads `stock, version`, then in one transaction runs
//!
//! ```sql
//! UPDATE inventory SET stock = stock - ?, version = version + 1
//!  WHERE id = ? AND version = ? AND stock >= ?
//! ```
//!
//! checks the per-buyer limit against committed orders, and inserts the
//! order. Zero rows updated means another write got there first: back off
//! (exponential, full jitter) and try again, a bounded number of times.
//! `stock >= ?` alone already forbids overselling; the version makes every
//! decision rest on the row it read. The unique index on
//! `orders (buyer, idempotency_key)` turns a duplicate into
//! [`Written::AlreadyOrdered`], never into a second order.
//!
//! The read happens before the transaction so that the transaction's first
//! statement is the write: SQLite then queues writers on its busy timeout
//! instead of failing a read-to-write lock upgrade.
//!
//! With a payment window ([`Ledger::with_payment_window`]) every order is
//! inserted `awaiting_payment` with its deadline (`pay_by_ms`); the
//! per-buyer limit then counts only orders that still hold their units
//! (an expired order gave them back, see [`crate::payments`]).

use super::{LedgerOrder, LedgerRefusal, LedgerWrite, Written};
use crate::db::{Database, Dialect, is_unique_violation, now_ms, orders};
use crate::metrics::{self as m, Metrics};
use app::domain::{BuyerId, IdempotencyKey, ItemId};
use app::model::{OrderStatus, Receipt};
use rand::Rng;
use sqlx::Row;
use std::sync::Arc;
use std::time::{Duration, Instant};

/// Retry policy for version conflicts.
#[derive(Debug, Clone, Copy)]
pub struct Backoff {
    pub max_attempts: u32,
    pub base: Duration,
    pub cap: Duration,
}

impl Backoff {
    /// The longest sleep before attempt `attempt + 1` (attempts count from 1):
    /// `min(cap, base * 2^(attempt-1))`; the actual sleep is uniform below it.
    pub fn ceiling(&self, attempt: u32) -> Duration {
        let factor = 1u32 << attempt.saturating_sub(1).min(16);
        self.base.saturating_mul(factor).min(self.cap)
    }

    fn delay(&self, attempt: u32) -> Duration {
        let ceiling = self.ceiling(attempt);
        if ceiling.is_zero() {
            return ceiling;
        }
        let micros = rand::rng().random_range(0..=ceiling.as_micros() as u64);
        Duration::from_micros(micros)
    }
}

pub struct Ledger {
    db: Database,
    backoff: Backoff,
    metrics: Arc<Metrics>,
    /// How long a buyer has to pay; `None`: orders are final at once.
    payment_window: Option<Duration>,
}

struct InventoryRow {
    stock: i64,
    version: i64,
    max_per_buyer: Option<i64>,
    price_cents: i64,
    /// Whether the key asked about with the read already has an order.
    ordered: bool,
    sale_starts_at_ms: Option<i64>,
    sale_ends_at_ms: Option<i64>,
    waiting_room: bool,
    /// The database's clock when the row was read.
    now_ms: i64,
}

impl InventoryRow {
    /// Why the row cannot be sold to `order` now, if it cannot: the sale
    /// window by the database's clock, and a waiting room the order did not
    /// come through.
    fn closed_to(&self, order: &LedgerOrder) -> Option<LedgerRefusal> {
        if let Some(starts) = self.sale_starts_at_ms
            && self.now_ms < starts
        {
            return Some(LedgerRefusal::NotStarted {
                starts_in_ms: starts - self.now_ms,
            });
        }
        if self.sale_ends_at_ms.is_some_and(|ends| self.now_ms >= ends) {
            return Some(LedgerRefusal::Ended);
        }
        if self.waiting_room && !order.reserved {
            return Some(LedgerRefusal::WaitingRoomUnavailable);
        }
        None
    }
}

enum Attempt {
    Written(Written),
    Conflict,
}

enum BatchFailure {
    /// A key of the batch already has an order.
    Duplicate,
    /// An order of the batch is past its commit deadline: nothing written.
    LeaseRanOut,
    /// Nothing was written.
    Database(sqlx::Error),
    /// The COMMIT's acknowledgement was lost.
    CommitLost(sqlx::Error),
}

impl From<sqlx::Error> for BatchFailure {
    fn from(e: sqlx::Error) -> Self {
        Self::Database(e)
    }
}

/// The versioned update; the sale window is checked again, by the
/// database's clock, in the statement that takes the units (`{now}`).
const UPDATE: &str = "UPDATE inventory SET stock = stock - ?, version = version + 1, updated_at = ? \
     WHERE id = ? AND version = ? AND stock >= ? \
     AND (sale_starts_at_ms IS NULL OR sale_starts_at_ms <= {now}) \
     AND (sale_ends_at_ms IS NULL OR sale_ends_at_ms > {now})";

const INSERT: &str = "INSERT INTO orders \
     (id, buyer, idempotency_key, item_id, qty, unit_price_cents, status, pay_by_ms, created_at, queue_pass)";

impl Ledger {
    fn update_sql(&self) -> String {
        self.db
            .sql(&UPDATE.replace("{now}", self.db.dialect().now_ms_sql()))
            .into_owned()
    }

    pub fn new(db: Database, backoff: Backoff, metrics: Arc<Metrics>) -> Self {
        Self {
            db,
            backoff,
            metrics,
            payment_window: None,
        }
    }

    /// Orders are created `awaiting_payment`, due within `window`.
    #[must_use]
    pub fn with_payment_window(mut self, window: Option<Duration>) -> Self {
        self.payment_window = window;
        self
    }

    /// The receipt of a new order committed `now`.
    fn receipt(&self, order: &LedgerOrder, price_cents: i64, now: i64) -> Receipt {
        let pay_by_ms = self
            .payment_window
            .map(|window| now + i64::try_from(window.as_millis()).unwrap_or(i64::MAX / 2));
        Receipt {
            order_id: uuid::Uuid::now_v7().to_string(),
            item_id: order.request.item_id,
            qty: order.request.qty,
            unit_price_cents: price_cents,
            total_cents: price_cents * i64::from(order.request.qty.get()),
            idempotency_key: order.key.clone(),
            status: if pay_by_ms.is_some() {
                OrderStatus::AwaitingPayment
            } else {
                OrderStatus::Confirmed
            },
            pay_by_ms,
            created_at_ms: now,
        }
    }

    fn count_attempts(&self, result: &'static str, order: &LedgerOrder, n: u64) {
        self.metrics
            .counter(
                m::DB_UPDATE_ATTEMPTS,
                &[("result", result), ("strategy", order.strategy.label())],
            )
            .increment(n);
    }

    /// Writes several orders of one item at once: one versioned UPDATE that
    /// takes the units of every admitted order, and one multi-row INSERT, in
    /// one transaction. Orders are admitted in arrival order while the stock
    /// lasts; the rest are sold out, exactly as if they had come one by one.
    /// A version conflict retries the whole batch with backoff. Items with a
    /// per-buyer limit, and a batch whose insert hits the unique index (a key
    /// already ordered), go through [`LedgerWrite::write`] one by one
    /// instead, so every answer is the one a lone request would have got.
    ///
    /// Returns one result per order, in order.
    #[tracing::instrument(name = "ledger_batch", skip_all, fields(orders = batch.len()))]
    pub async fn write_batch(&self, batch: &[LedgerOrder]) -> Vec<Result<Written, LedgerRefusal>> {
        // Orders already past their deadline are refused before they take
        // the row: under a stall they would otherwise hold up the others.
        let now = Instant::now();
        if batch.iter().all(|o| now < o.commit_by) {
            return self.write_on_time(batch).await;
        }
        let on_time: Vec<LedgerOrder> = batch
            .iter()
            .filter(|o| now < o.commit_by)
            .cloned()
            .collect();
        let mut written = self.write_on_time(&on_time).await.into_iter();
        batch
            .iter()
            .map(|o| {
                if now < o.commit_by {
                    written.next().unwrap_or(Err(LedgerRefusal::LeaseRanOut))
                } else {
                    Err(LedgerRefusal::LeaseRanOut)
                }
            })
            .collect()
    }

    async fn write_on_time(&self, batch: &[LedgerOrder]) -> Vec<Result<Written, LedgerRefusal>> {
        let Some(first) = batch.first() else {
            return Vec::new();
        };
        let item = first.request.item_id;
        for attempt in 1..=self.backoff.max_attempts {
            let row = match self.read_inventory(item, None).await {
                Ok(Some(row)) => row,
                Ok(None) => {
                    return batch
                        .iter()
                        .map(|_| Err(LedgerRefusal::UnknownItem))
                        .collect();
                }
                Err(_) => return self.write_each(batch).await,
            };
            // Limits, and orders the row is closed to (a closed window, a
            // waiting room the order did not come through), are decided
            // order by order, each with its own answer.
            if row.max_per_buyer.is_some() || batch.iter().any(|o| row.closed_to(o).is_some()) {
                return self.write_each(batch).await;
            }
            // Arrival order; each order sees the stock its predecessors left.
            let mut taken = 0i64;
            let mut left_then = Vec::with_capacity(batch.len());
            let admitted: Vec<bool> = batch
                .iter()
                .map(|order| {
                    let qty = i64::from(order.request.qty.get());
                    left_then.push(row.stock - taken);
                    let fits = taken + qty <= row.stock;
                    if fits {
                        taken += qty;
                    }
                    fits
                })
                .collect();
            // A refusal is never given to a key that already has an order
            // (the retry of an order whose outcome was in doubt): such a
            // batch is written one by one, where each write sees its key's
            // order.
            let refused: Vec<(BuyerId, IdempotencyKey)> = batch
                .iter()
                .zip(&admitted)
                .filter(|(_, a)| !**a)
                .map(|(o, _)| (o.buyer.clone(), o.key.clone()))
                .collect();
            if !refused.is_empty() {
                match orders::which_exist(&self.db, &refused).await {
                    Ok(found) if found.is_empty() => {}
                    Ok(_) | Err(_) => return self.write_each(batch).await,
                }
            }
            if taken == 0 {
                return batch
                    .iter()
                    .map(|_| {
                        Err(LedgerRefusal::SoldOut {
                            available: row.stock,
                        })
                    })
                    .collect();
            }
            match self.commit_batch(batch, &admitted, &row, taken).await {
                Ok(Some(receipts)) => {
                    let mut receipts = receipts.into_iter();
                    return admitted
                        .iter()
                        .zip(&left_then)
                        .zip(batch)
                        .map(|((admitted, left), order)| {
                            match admitted.then(|| receipts.next()).flatten() {
                                Some(receipt) => {
                                    self.count_attempts("ok", order, 1);
                                    Ok(Written::Created(receipt))
                                }
                                None => Err(LedgerRefusal::SoldOut { available: *left }),
                            }
                        })
                        .collect();
                }
                Ok(None) => {
                    for order in batch {
                        self.count_attempts("conflict", order, 1);
                    }
                    if attempt < self.backoff.max_attempts {
                        for order in batch {
                            self.metrics
                                .counter(m::DB_RETRIES, &[("strategy", order.strategy.label())])
                                .increment(1);
                        }
                        tokio::time::sleep(self.backoff.delay(attempt)).await;
                    }
                }
                // Each order alone: the late ones are refused, the others
                // still commit.
                Err(BatchFailure::Duplicate | BatchFailure::LeaseRanOut) => {
                    return self.write_each(batch).await;
                }
                Err(BatchFailure::Database(e)) => {
                    tracing::warn!(error = %e, "batch write failed; writing its orders one by one");
                    return self.write_each(batch).await;
                }
                Err(BatchFailure::CommitLost(e)) => {
                    return self.after_lost_batch_commit(batch, &admitted, e).await;
                }
            }
        }
        batch
            .iter()
            .map(|_| {
                Err(LedgerRefusal::Conflict {
                    attempts: self.backoff.max_attempts,
                })
            })
            .collect()
    }

    /// A batch whose COMMIT went unacknowledged: the orders table says
    /// whether it committed. Committed: its orders are answered. Not: the
    /// batch is written again, one by one. Unknown: every order of it is in
    /// doubt.
    async fn after_lost_batch_commit(
        &self,
        batch: &[LedgerOrder],
        admitted: &[bool],
        lost: sqlx::Error,
    ) -> Vec<Result<Written, LedgerRefusal>> {
        tracing::warn!(error = %lost, "a batch's COMMIT went unacknowledged; asking the orders table");
        let item = batch[0].request.item_id;
        let keys: Vec<(BuyerId, IdempotencyKey)> = batch
            .iter()
            .zip(admitted)
            .filter(|(_, a)| **a)
            .map(|(o, _)| (o.buyer.clone(), o.key.clone()))
            .collect();
        match self.resolve_in_doubt(item, &keys).await {
            Ok(found) if found.iter().all(Option::is_none) => self.write_each(batch).await,
            Ok(found) => {
                let mut found = found.into_iter();
                batch
                    .iter()
                    .zip(admitted)
                    .map(|(order, admitted)| {
                        if !*admitted {
                            // Refused against the stock of a transaction
                            // whose fate was unknown then: decide it again.
                            return Err(LedgerRefusal::Database(sqlx::Error::Protocol(
                                "left out of a batch whose commit went unacknowledged".into(),
                            )));
                        }
                        match found.next().flatten() {
                            Some(receipt) => {
                                self.count_attempts("ok", order, 1);
                                Ok(Written::Created(receipt))
                            }
                            None => Err(LedgerRefusal::Database(sqlx::Error::Protocol(
                                "a committed batch misses an order".into(),
                            ))),
                        }
                    })
                    .collect()
            }
            Err(e) => {
                tracing::error!(error = %e, "the orders table cannot say whether a batch committed");
                batch
                    .iter()
                    .map(|_| Err(LedgerRefusal::InDoubt(sqlx::Error::Protocol(e.to_string()))))
                    .collect()
            }
        }
    }

    /// The batch's transaction; `Ok(None)` is a version conflict.
    async fn commit_batch(
        &self,
        batch: &[LedgerOrder],
        admitted: &[bool],
        row: &InventoryRow,
        taken: i64,
    ) -> Result<Option<Vec<Receipt>>, BatchFailure> {
        let item = batch[0].request.item_id;
        let mut tx = self.db.pool().begin().await?;
        let updated = sqlx::query(&self.update_sql())
            .bind(taken)
            .bind(now_ms())
            .bind(item.get())
            .bind(row.version)
            .bind(taken)
            .execute(&mut *tx)
            .await?
            .rows_affected();
        if updated == 0 {
            tx.rollback().await?;
            return Ok(None);
        }
        let now = now_ms();
        let receipts: Vec<(Receipt, &LedgerOrder)> = batch
            .iter()
            .zip(admitted)
            .filter(|(_, a)| **a)
            .map(|(order, _)| (self.receipt(order, row.price_cents, now), order))
            .collect();
        let values = vec!["(?, ?, ?, ?, ?, ?, ?, ?, ?, ?)"; receipts.len()].join(", ");
        let insert = format!("{INSERT} VALUES {values}");
        let insert = self.db.sql(&insert);
        let mut query = sqlx::query(&insert);
        for (receipt, order) in &receipts {
            query = query
                .bind(receipt.order_id.as_str())
                .bind(order.buyer.as_str())
                .bind(order.key.as_str())
                .bind(item.get())
                .bind(i64::from(order.request.qty.get()))
                .bind(row.price_cents)
                .bind(receipt.status.as_str())
                .bind(receipt.pay_by_ms)
                .bind(now)
                .bind(order.pass.clone());
        }
        match query.execute(&mut *tx).await {
            Ok(_) => {}
            Err(e) if is_unique_violation(&e) => {
                tx.rollback().await?;
                return Err(BatchFailure::Duplicate);
            }
            Err(e) => return Err(e.into()),
        }
        if receipts
            .iter()
            .any(|(_, order)| Instant::now() >= order.commit_by)
        {
            tx.rollback().await?;
            return Err(BatchFailure::LeaseRanOut);
        }
        tx.commit().await.map_err(BatchFailure::CommitLost)?;
        Ok(Some(receipts.into_iter().map(|(r, _)| r).collect()))
    }

    /// The batch one order at a time (limits, duplicates, failures), in
    /// arrival order: every order of it updates the same row, so writing
    /// them side by side would only make them conflict with each other
    /// (a drop's admitted buyers ran out of retries that way).
    async fn write_each(&self, batch: &[LedgerOrder]) -> Vec<Result<Written, LedgerRefusal>> {
        let mut results = Vec::with_capacity(batch.len());
        for order in batch {
            results.push(self.write_alone(order).await);
        }
        results
    }

    /// One order on its own, retrying version conflicts.
    #[tracing::instrument(name = "versioned_update", skip_all, fields(item = %order.request.item_id))]
    async fn write_alone(&self, order: &LedgerOrder) -> Result<Written, LedgerRefusal> {
        for attempt in 1..=self.backoff.max_attempts {
            match self.attempt(order).await? {
                Attempt::Written(written) => {
                    self.count_attempts("ok", order, 1);
                    return Ok(written);
                }
                Attempt::Conflict => {
                    self.count_attempts("conflict", order, 1);
                    if attempt < self.backoff.max_attempts {
                        self.metrics
                            .counter(m::DB_RETRIES, &[("strategy", order.strategy.label())])
                            .increment(1);
                        tokio::time::sleep(self.backoff.delay(attempt)).await;
                    }
                }
            }
        }
        Err(LedgerRefusal::Conflict {
            attempts: self.backoff.max_attempts,
        })
    }

    async fn attempt(&self, order: &LedgerOrder) -> Result<Attempt, LedgerRefusal> {
        if Instant::now() >= order.commit_by {
            return Err(LedgerRefusal::LeaseRanOut);
        }
        let LedgerOrder {
            buyer,
            key,
            request,
            ..
        } = order;
        let qty = i64::from(request.qty.get());
        let row = self
            .read_inventory(request.item_id, Some((buyer, key)))
            .await?
            .ok_or(LedgerRefusal::UnknownItem)?;
        if row.ordered
            && let Some(existing) = orders::by_key(&self.db, buyer, key).await?
        {
            let existing = existing.receipt;
            // An earlier attempt of this intent committed (its answer was
            // lost): never refuse it, never write it twice.
            return Ok(Attempt::Written(Written::AlreadyOrdered(existing)));
        }
        if let Some(refusal) = row.closed_to(order) {
            return Err(refusal);
        }
        if row.stock < qty {
            return Err(LedgerRefusal::SoldOut {
                available: row.stock,
            });
        }

        let mut tx = self.db.pool().begin().await?;
        let updated = sqlx::query(&self.update_sql())
            .bind(qty)
            .bind(now_ms())
            .bind(request.item_id.get())
            .bind(row.version)
            .bind(qty)
            .execute(&mut *tx)
            .await?
            .rows_affected();
        if updated == 0 {
            tx.rollback().await?;
            return Ok(Attempt::Conflict);
        }

        if let Some(limit) = row.max_per_buyer {
            // Runs after our UPDATE won the row, so every order of this item
            // committed before ours is visible here. Expired orders gave
            // their units back and no longer count.
            let sum = format!(
                "SELECT CAST(COALESCE(SUM(qty), 0) AS {}) AS bought FROM orders \
                 WHERE item_id = ? AND buyer = ? AND status NOT IN ('expired', 'refund_due')",
                self.db.dialect().bigint()
            );
            let already: i64 = sqlx::query(&self.db.sql(&sum))
                .bind(request.item_id.get())
                .bind(buyer.as_str())
                .fetch_one(&mut *tx)
                .await?
                .try_get("bought")?;
            if already + qty > limit {
                tx.rollback().await?;
                if let Some(existing) = orders::by_key(&self.db, buyer, key).await? {
                    return Ok(Attempt::Written(Written::AlreadyOrdered(existing.receipt)));
                }
                return Err(LedgerRefusal::LimitExceeded { limit, already });
            }
        }

        let receipt = self.receipt(order, row.price_cents, now_ms());
        let insert = self
            .db
            .sql(&format!("{INSERT} VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?)"))
            .into_owned();
        let inserted = sqlx::query(&insert)
            .bind(receipt.order_id.as_str())
            .bind(buyer.as_str())
            .bind(key.as_str())
            .bind(request.item_id.get())
            .bind(qty)
            .bind(row.price_cents)
            .bind(receipt.status.as_str())
            .bind(receipt.pay_by_ms)
            .bind(receipt.created_at_ms)
            .bind(order.pass.clone())
            .execute(&mut *tx)
            .await;
        match inserted {
            Ok(_) => {}
            Err(e) if is_unique_violation(&e) => {
                tx.rollback().await?;
                let existing = orders::by_key(&self.db, buyer, key).await?.ok_or(e)?;
                return Ok(Attempt::Written(Written::AlreadyOrdered(existing.receipt)));
            }
            Err(e) => return Err(e.into()),
        }
        if Instant::now() >= order.commit_by {
            tx.rollback().await?;
            return Err(LedgerRefusal::LeaseRanOut);
        }
        if let Err(lost) = tx.commit().await {
            return self.after_lost_commit(order, lost).await;
        }
        Ok(Attempt::Written(Written::Created(receipt)))
    }

    /// An order whose COMMIT went unacknowledged: the orders table says
    /// whether it committed. Running the order again instead could answer
    /// "sold out" for the unit it just bought.
    async fn after_lost_commit(
        &self,
        order: &LedgerOrder,
        lost: sqlx::Error,
    ) -> Result<Attempt, LedgerRefusal> {
        tracing::warn!(error = %lost, "a COMMIT went unacknowledged; asking the orders table");
        let key = (order.buyer.clone(), order.key.clone());
        match self
            .resolve_in_doubt(order.request.item_id, std::slice::from_ref(&key))
            .await
        {
            Ok(found) => match found.into_iter().next().flatten() {
                Some(receipt) => Ok(Attempt::Written(Written::Created(receipt))),
                None => Err(LedgerRefusal::Database(lost)),
            },
            Err(e) => {
                tracing::error!(error = %e, "the orders table cannot say whether an order committed");
                Err(LedgerRefusal::InDoubt(lost))
            }
        }
    }

    /// Whether orders of a transaction whose COMMIT went unacknowledged
    /// exist: first waits for the item's row lock (the transaction held it
    /// and keeps it until it ends, committed or not), then reads the orders
    /// table. One answer per key, in order.
    ///
    /// # Errors
    /// The database cannot be read, or the lock was not granted in time.
    pub async fn resolve_in_doubt(
        &self,
        item: ItemId,
        keys: &[(BuyerId, IdempotencyKey)],
    ) -> Result<Vec<Option<Receipt>>, sqlx::Error> {
        let mut tx = self.db.pool().begin().await?;
        match self.db.dialect() {
            Dialect::Postgres => {
                sqlx::query("SET LOCAL lock_timeout = '5s'")
                    .execute(&mut *tx)
                    .await?;
            }
            Dialect::MySql => {
                sqlx::query("SET SESSION innodb_lock_wait_timeout = 5")
                    .execute(&mut *tx)
                    .await?;
            }
            // One writer at a time, in this process: nothing can be in flight.
            Dialect::Sqlite => {}
        }
        if self.db.dialect() != Dialect::Sqlite {
            sqlx::query(
                &self
                    .db
                    .sql("SELECT id FROM inventory WHERE id = ? FOR UPDATE"),
            )
            .bind(item.get())
            .fetch_optional(&mut *tx)
            .await?;
        }
        let mut found = Vec::with_capacity(keys.len());
        for (buyer, key) in keys {
            found.push(
                orders::by_key_with(&self.db, &mut *tx, buyer, key)
                    .await?
                    .map(|order| order.receipt),
            );
        }
        // Read only: the answer stands whatever ending the transaction does.
        if let Err(e) = tx.rollback().await {
            tracing::debug!(error = %e, "ending the in-doubt read failed");
        }
        Ok(found)
    }

    /// The item's row; with `key`, also whether that key has an order, in
    /// the same statement.
    async fn read_inventory(
        &self,
        item: ItemId,
        key: Option<(&BuyerId, &IdempotencyKey)>,
    ) -> Result<Option<InventoryRow>, sqlx::Error> {
        let columns = format!(
            "stock, version, max_per_buyer, price_cents, sale_starts_at_ms, sale_ends_at_ms, \
             admission_per_second, {} AS now_ms",
            self.db.dialect().now_ms_sql()
        );
        let row = match key {
            None => {
                let sql = format!(
                    "SELECT {columns}, CAST(0 AS {}) AS ordered FROM inventory WHERE id = ?",
                    self.db.dialect().bigint()
                );
                sqlx::query(&self.db.sql(&sql))
                    .bind(item.get())
                    .fetch_optional(self.db.pool())
                    .await?
            }
            Some((buyer, key)) => {
                let sql = format!(
                    "SELECT {columns}, CAST((SELECT COUNT(*) FROM orders WHERE buyer = ? AND idempotency_key = ?) AS {}) AS ordered \
                     FROM inventory WHERE id = ?",
                    self.db.dialect().bigint()
                );
                sqlx::query(&self.db.sql(&sql))
                    .bind(buyer.as_str())
                    .bind(key.as_str())
                    .bind(item.get())
                    .fetch_optional(self.db.pool())
                    .await?
            }
        };
        row.map(|row| {
            let ordered: i64 = row.try_get("ordered")?;
            Ok(InventoryRow {
                stock: row.try_get("stock")?,
                version: row.try_get("version")?,
                max_per_buyer: row.try_get("max_per_buyer")?,
                price_cents: row.try_get("price_cents")?,
                ordered: ordered > 0,
                sale_starts_at_ms: row.try_get("sale_starts_at_ms")?,
                sale_ends_at_ms: row.try_get("sale_ends_at_ms")?,
                waiting_room: row
                    .try_get::<Option<i64>, _>("admission_per_second")?
                    .is_some(),
                now_ms: row.try_get("now_ms")?,
            })
        })
        .transpose()
    }
}

#[async_trait::async_trait]
impl LedgerWrite for Ledger {
    async fn write(&self, order: LedgerOrder) -> Result<Written, LedgerRefusal> {
        self.write_alone(&order).await
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_backoff_ceiling_doubles_up_to_the_cap() {
        let backoff = Backoff {
            max_attempts: 8,
            base: Duration::from_millis(2),
            cap: Duration::from_millis(20),
        };
        let ceilings: Vec<u128> = (1..=6).map(|a| backoff.ceiling(a).as_millis()).collect();
        assert_eq!(ceilings, vec![2, 4, 8, 16, 20, 20]);
    }

    #[test]
    fn the_jittered_delay_stays_under_the_ceiling() {
        let backoff = Backoff {
            max_attempts: 8,
            base: Duration::from_millis(2),
            cap: Duration::from_millis(20),
        };
        for attempt in 1..=8 {
            for _ in 0..100 {
                assert!(backoff.delay(attempt) <= backoff.ceiling(attempt));
            }
        }
    }
}
