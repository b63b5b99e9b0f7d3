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

impl Ledger {
    pub fn new(db: Database, backoff: Backoff, metrics: Arc<Metrics>) -> Self {
        Self {
            db,
            backoff,
            metrics,
        }
    }

    /// Writes the order, retrying version conflicts.
    ///
    /// # Errors
    /// Sold out, over the limit, unknown item, conflicts on every attempt, or
    /// a database failure. Nothing is written in any of these cases.
    #[tracing::instrument(name = "ledger", skip_all, fields(item = %request.item_id))]
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
