//! Reading orders: the truth every answer about a key rests on.
//!
//! An order row holds everything its 201 answer carried, so the answer is
//! rebuilt exactly (same body, field for field) whatever cache forgot it,
//! and everything its request's fingerprint covers (the waiting-room pass
//! too), so a replay is told apart from a reuse.

use super::Database;
use crate::records::RequestHash;
use app::domain::{BuyerId, IdempotencyKey, InvalidValue, ItemId, Quantity};
use app::model::{OrderRequest, OrderStatus, Receipt};
use sqlx::Row;
use sqlx::any::AnyRow;

const COLUMNS: &str = "id, idempotency_key, item_id, qty, unit_price_cents, created_at, queue_pass";

/// An order as the database keeps it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct StoredOrder {
    /// Its 201 answer, as it was given.
    pub receipt: Receipt,
    /// The waiting-room pass it was placed with.
    pub pass: Option<String>,
}

impl StoredOrder {
    /// The fingerprint of the request that placed it.
    pub fn hash(&self) -> RequestHash {
        RequestHash::of(
            &OrderRequest {
                item_id: self.receipt.item_id,
                qty: self.receipt.qty,
            },
            self.pass.as_deref(),
        )
    }
}

fn decode(e: InvalidValue) -> sqlx::Error {
    sqlx::Error::Decode(e.message().into())
}

fn order_from_row(row: &AnyRow) -> Result<StoredOrder, sqlx::Error> {
    let qty: i64 = row.try_get("qty")?;
    let unit_price_cents: i64 = row.try_get("unit_price_cents")?;
    let key: String = row.try_get("idempotency_key")?;
    Ok(StoredOrder {
        receipt: Receipt {
            order_id: row.try_get("id")?,
            item_id: ItemId::new(row.try_get("item_id")?).map_err(decode)?,
            qty: Quantity::new(qty).map_err(decode)?,
            unit_price_cents,
            total_cents: unit_price_cents * qty,
            idempotency_key: IdempotencyKey::parse(&key).map_err(decode)?,
            status: OrderStatus::Confirmed,
            created_at_ms: row.try_get("created_at")?,
        },
        pass: row.try_get("queue_pass")?,
    })
}

/// The order this buyer placed with this key, if any.
///
/// # Errors
/// Database failures.
pub async fn by_key(
    db: &Database,
    buyer: &BuyerId,
    key: &IdempotencyKey,
) -> Result<Option<StoredOrder>, sqlx::Error> {
    by_key_with(db, db.pool(), buyer, key).await
}

/// [`by_key`] on a given connection or transaction.
///
/// # Errors
/// Database failures.
pub async fn by_key_with<'c, E>(
    db: &Database,
    executor: E,
    buyer: &BuyerId,
    key: &IdempotencyKey,
) -> Result<Option<StoredOrder>, sqlx::Error>
where
    E: sqlx::Executor<'c, Database = sqlx::Any>,
{
    let sql = format!("SELECT {COLUMNS} FROM orders WHERE buyer = ? AND idempotency_key = ?");
    sqlx::query(&db.sql(&sql))
        .bind(buyer.as_str())
        .bind(key.as_str())
        .fetch_optional(executor)
        .await?
        .as_ref()
        .map(order_from_row)
        .transpose()
}

/// Every order of one buyer.
///
/// # Errors
/// Database failures.
pub async fn of_buyer(db: &Database, buyer: &BuyerId) -> Result<Vec<StoredOrder>, sqlx::Error> {
    let sql = format!("SELECT {COLUMNS} FROM orders WHERE buyer = ?");
    sqlx::query(&db.sql(&sql))
        .bind(buyer.as_str())
        .fetch_all(db.pool())
        .await?
        .iter()
        .map(order_from_row)
        .collect()
}

/// Which of these (buyer, key) pairs have an order, in one statement.
///
/// # Errors
/// Database failures.
pub async fn which_exist(
    db: &Database,
    keys: &[(BuyerId, IdempotencyKey)],
) -> Result<Vec<(BuyerId, IdempotencyKey)>, sqlx::Error> {
    let mut found = Vec::new();
    for chunk in keys.chunks(200) {
        let pairs = vec!["(buyer = ? AND idempotency_key = ?)"; chunk.len()].join(" OR ");
        let sql = format!("SELECT buyer, idempotency_key FROM orders WHERE {pairs}");
        let sql = db.sql(&sql);
        let mut query = sqlx::query(&sql);
        for (buyer, key) in chunk {
            query = query.bind(buyer.as_str()).bind(key.as_str());
        }
        for row in query.fetch_all(db.pool()).await? {
            let buyer: String = row.try_get("buyer")?;
            let key: String = row.try_get("idempotency_key")?;
            found.push((
                BuyerId::parse(&buyer).map_err(decode)?,
                IdempotencyKey::parse(&key).map_err(decode)?,
            ));
        }
    }
    Ok(found)
}
