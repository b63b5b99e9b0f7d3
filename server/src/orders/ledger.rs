//! Stage 3: the ledger, the versioned SQL update that makes an order true.
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

use crate::db::{Database, is_unique_violation, now_ms};
use crate::metrics::{self as m, Metrics};
use app::domain::{BuyerId, IdempotencyKey, ItemId, Quantity};
use app::model::{OrderRequest, OrderStatus, Receipt};
use rand::Rng;
use sqlx::Row;
use std::sync::Arc;
use std::time::Duration;

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

/// A committed order.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Written {
    Created(Receipt),
    /// The (buyer, key) already had this order: nothing new was written.
    AlreadyOrdered(Receipt),
}

#[derive(Debug, thiserror::Error)]
pub enum LedgerRefusal {
    #[error("sold out ({available} left)")]
    SoldOut { available: i64 },
    #[error("over the per-buyer limit")]
    LimitExceeded { limit: i64, already: i64 },
    #[error("unknown item")]
    UnknownItem,
    #[error("version conflicts on every attempt")]
    Conflict { attempts: u32 },
    #[error("database failure: {0}")]
    Database(#[from] sqlx::Error),
}

pub struct Ledger {
    db: Database,
    backoff: Backoff,
    metrics: Arc<Metrics>,
}

struct InventoryRow {
    stock: i64,
    version: i64,
    max_per_buyer: Option<i64>,
    price_cents: i64,
}

enum Attempt {
    Written(Written),
    Conflict,
}

/// One order waiting in a batch.
#[derive(Debug, Clone)]
pub struct BatchedOrder {
    pub buyer: BuyerId,
    pub key: IdempotencyKey,
    pub request: OrderRequest,
    /// The metrics label of the strategy it came through.
    pub strategy: &'static str,
}

enum BatchFailure {
    /// A key of the batch already has an order.
    Duplicate,
    Database(sqlx::Error),
}

impl From<sqlx::Error> for BatchFailure {
    fn from(e: sqlx::Error) -> Self {
        Self::Database(e)
    }
}

impl Ledger {
    pub fn new(db: Database, backoff: Backoff, metrics: Arc<Metrics>) -> Self {
        Self {
            db,
            backoff,
            metrics,
        }
    }

    /// Writes one order on its own, retrying version conflicts.
    ///
    /// # Errors
    /// Sold out, over the limit, unknown item, conflicts on every attempt, or
    /// a database failure. Nothing is written in any of these cases.
    #[tracing::instrument(name = "versioned_update", skip_all, fields(item = %request.item_id))]
    pub async fn write(
        &self,
        buyer: &BuyerId,
        key: &IdempotencyKey,
        request: OrderRequest,
        strategy: &'static str,
    ) -> Result<Written, LedgerRefusal> {
        let attempts = |result: &'static str| {
            self.metrics.counter(
                m::DB_UPDATE_ATTEMPTS,
                &[("result", result), ("strategy", strategy)],
            )
        };
        for attempt in 1..=self.backoff.max_attempts {
            match self.attempt(buyer, key, request).await? {
                Attempt::Written(written) => {
                    attempts("ok").increment(1);
                    return Ok(written);
                }
                Attempt::Conflict => {
                    attempts("conflict").increment(1);
                    if attempt < self.backoff.max_attempts {
                        self.metrics
                            .counter(m::DB_RETRIES, &[("strategy", strategy)])
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

    /// Writes several orders of one item at once: one versioned UPDATE that
    /// takes the units of every admitted order, and one multi-row INSERT, in
    /// one transaction. Orders are admitted in arrival order while the stock
    /// lasts; the rest are sold out, exactly as if they had come one by one.
    /// A version conflict retries the whole batch with backoff. Items with a
    /// per-buyer limit, and a batch whose insert hits the unique index (a key
    /// already ordered), go through [`Ledger::write`] one by one instead, so
    /// every answer is the one a lone request would have got.
    ///
    /// Returns one result per order, in order.
    #[tracing::instrument(name = "ledger_batch", skip_all, fields(orders = batch.len()))]
    pub async fn write_batch(&self, batch: &[BatchedOrder]) -> Vec<Result<Written, LedgerRefusal>> {
        let Some(first) = batch.first() else {
            return Vec::new();
        };
        let item = first.request.item_id;
        let count = |result: &'static str, orders: &[BatchedOrder]| {
            for order in orders {
                self.metrics
                    .counter(
                        m::DB_UPDATE_ATTEMPTS,
                        &[("result", result), ("strategy", order.strategy)],
                    )
                    .increment(1);
            }
        };
        for attempt in 1..=self.backoff.max_attempts {
            let row = match self.read_inventory(item).await {
                Ok(Some(row)) => row,
                Ok(None) => {
                    return batch
                        .iter()
                        .map(|_| Err(LedgerRefusal::UnknownItem))
                        .collect();
                }
                Err(_) => return self.write_each(batch).await,
            };
            if row.max_per_buyer.is_some() {
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
                    let results: Vec<_> = admitted
                        .iter()
                        .zip(&left_then)
                        .map(
                            |(admitted, left)| match admitted.then(|| receipts.next()).flatten() {
                                Some(receipt) => Ok(Written::Created(receipt)),
                                None => Err(LedgerRefusal::SoldOut { available: *left }),
                            },
                        )
                        .collect();
                    let admitted_orders: Vec<BatchedOrder> = batch
                        .iter()
                        .zip(&admitted)
                        .filter(|(_, a)| **a)
                        .map(|(o, _)| o.clone())
                        .collect();
                    count("ok", &admitted_orders);
                    return results;
                }
                Ok(None) => {
                    count("conflict", batch);
                    if attempt < self.backoff.max_attempts {
                        for order in batch {
                            self.metrics
                                .counter(m::DB_RETRIES, &[("strategy", order.strategy)])
                                .increment(1);
                        }
                        tokio::time::sleep(self.backoff.delay(attempt)).await;
                    }
                }
                Err(BatchFailure::Duplicate) => return self.write_each(batch).await,
                Err(BatchFailure::Database(e)) => {
                    tracing::warn!(error = %e, "batch write failed; writing its orders one by one");
                    return self.write_each(batch).await;
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

    /// The batch's transaction; `Ok(None)` is a version conflict.
    async fn commit_batch(
        &self,
        batch: &[BatchedOrder],
        admitted: &[bool],
        row: &InventoryRow,
        taken: i64,
    ) -> Result<Option<Vec<Receipt>>, BatchFailure> {
        let item = batch[0].request.item_id;
        let mut tx = self.db.pool().begin().await?;
        let update = self.db.sql(
            "UPDATE inventory SET stock = stock - ?, version = version + 1, updated_at = ? \
             WHERE id = ? AND version = ? AND stock >= ?",
        );
        let updated = sqlx::query(&update)
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
        let receipts: Vec<(Receipt, &BatchedOrder)> = batch
            .iter()
            .zip(admitted)
            .filter(|(_, a)| **a)
            .map(|(order, _)| {
                let qty = i64::from(order.request.qty.get());
                (
                    Receipt {
                        order_id: uuid::Uuid::now_v7().to_string(),
                        item_id: item,
                        qty: order.request.qty,
                        unit_price_cents: row.price_cents,
                        total_cents: row.price_cents * qty,
                        idempotency_key: order.key.clone(),
                        status: OrderStatus::Confirmed,
                        created_at_ms: now,
                    },
                    order,
                )
            })
            .collect();
        let values = vec!["(?, ?, ?, ?, ?, ?, 'confirmed', ?)"; receipts.len()].join(", ");
        let insert = format!(
            "INSERT INTO orders (id, buyer, idempotency_key, item_id, qty, unit_price_cents, status, created_at) \
             VALUES {values}"
        );
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
                .bind(now);
        }
        match query.execute(&mut *tx).await {
            Ok(_) => {}
            Err(e) if is_unique_violation(&e) => {
                tx.rollback().await?;
                return Err(BatchFailure::Duplicate);
            }
            Err(e) => return Err(e.into()),
        }
        tx.commit().await?;
        Ok(Some(receipts.into_iter().map(|(r, _)| r).collect()))
    }

    /// The batch one order at a time (limits, duplicates, failures).
    async fn write_each(&self, batch: &[BatchedOrder]) -> Vec<Result<Written, LedgerRefusal>> {
        futures_util::future::join_all(
            batch
                .iter()
                .map(|o| self.write(&o.buyer, &o.key, o.request, o.strategy)),
        )
        .await
    }

    async fn attempt(
        &self,
        buyer: &BuyerId,
        key: &IdempotencyKey,
        request: OrderRequest,
    ) -> Result<Attempt, LedgerRefusal> {
        let qty = i64::from(request.qty.get());
        let row = self
            .read_inventory(request.item_id)
            .await?
            .ok_or(LedgerRefusal::UnknownItem)?;
        if row.stock < qty {
            return Err(LedgerRefusal::SoldOut {
                available: row.stock,
            });
        }

        let mut tx = self.db.pool().begin().await?;
        let update = self.db.sql(
            "UPDATE inventory SET stock = stock - ?, version = version + 1, updated_at = ? \
             WHERE id = ? AND version = ? AND stock >= ?",
        );
        let updated = sqlx::query(&update)
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
            // committed before ours is visible here.
            let sum = format!(
                "SELECT CAST(COALESCE(SUM(qty), 0) AS {}) AS bought FROM orders WHERE item_id = ? AND buyer = ?",
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
                if let Some(existing) = self.order_by_key(buyer, key).await? {
                    return Ok(Attempt::Written(Written::AlreadyOrdered(existing)));
                }
                return Err(LedgerRefusal::LimitExceeded { limit, already });
            }
        }

        let receipt = Receipt {
            order_id: uuid::Uuid::now_v7().to_string(),
            item_id: request.item_id,
            qty: request.qty,
            unit_price_cents: row.price_cents,
            total_cents: row.price_cents * qty,
            idempotency_key: key.clone(),
            status: OrderStatus::Confirmed,
            created_at_ms: now_ms(),
        };
        let insert = self.db.sql(
            "INSERT INTO orders (id, buyer, idempotency_key, item_id, qty, unit_price_cents, status, created_at) \
             VALUES (?, ?, ?, ?, ?, ?, 'confirmed', ?)",
        );
        let inserted = sqlx::query(&insert)
            .bind(receipt.order_id.as_str())
            .bind(buyer.as_str())
            .bind(key.as_str())
            .bind(request.item_id.get())
            .bind(qty)
            .bind(row.price_cents)
            .bind(receipt.created_at_ms)
            .execute(&mut *tx)
            .await;
        match inserted {
            Ok(_) => {}
            Err(e) if is_unique_violation(&e) => {
                tx.rollback().await?;
                let existing = self.order_by_key(buyer, key).await?.ok_or(e)?;
                return Ok(Attempt::Written(Written::AlreadyOrdered(existing)));
            }
            Err(e) => return Err(e.into()),
        }
        tx.commit().await?;
        Ok(Attempt::Written(Written::Created(receipt)))
    }

    async fn read_inventory(&self, item: ItemId) -> Result<Option<InventoryRow>, sqlx::Error> {
        let sql = self
            .db
            .sql("SELECT stock, version, max_per_buyer, price_cents FROM inventory WHERE id = ?");
        let row = sqlx::query(&sql)
            .bind(item.get())
            .fetch_optional(self.db.pool())
            .await?;
        row.map(|row| {
            Ok(InventoryRow {
                stock: row.try_get("stock")?,
                version: row.try_get("version")?,
                max_per_buyer: row.try_get("max_per_buyer")?,
                price_cents: row.try_get("price_cents")?,
            })
        })
        .transpose()
    }

    /// The order this buyer placed with this key, if any.
    ///
    /// # Errors
    /// Database failures.
    pub async fn order_by_key(
        &self,
        buyer: &BuyerId,
        key: &IdempotencyKey,
    ) -> Result<Option<Receipt>, sqlx::Error> {
        let sql = self.db.sql(
            "SELECT id, item_id, qty, unit_price_cents, created_at FROM orders \
             WHERE buyer = ? AND idempotency_key = ?",
        );
        let row = sqlx::query(&sql)
            .bind(buyer.as_str())
            .bind(key.as_str())
            .fetch_optional(self.db.pool())
            .await?;
        let Some(row) = row else {
            return Ok(None);
        };
        let decode = |e: app::domain::InvalidValue| sqlx::Error::Decode(e.message().into());
        let qty: i64 = row.try_get("qty")?;
        let unit_price_cents: i64 = row.try_get("unit_price_cents")?;
        Ok(Some(Receipt {
            order_id: row.try_get("id")?,
            item_id: ItemId::new(row.try_get("item_id")?).map_err(decode)?,
            qty: Quantity::new(qty).map_err(decode)?,
            unit_price_cents,
            total_cents: unit_price_cents * qty,
            idempotency_key: key.clone(),
            status: OrderStatus::Confirmed,
            created_at_ms: row.try_get("created_at")?,
        }))
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
