//! Reading orders: the truth every answer about a key rests on.
//!
//! An order row holds everything its 201 answer carried, so the answer is
//! rebuilt exactly (same body, field for field) whatever cache forgot it,
//! and everything its request's fingerprint covers (the waiting-room pass
//! too), so a replay is told apart from a reuse. [`receipt_from_row`] is
//! the one place that maps a row to that body: the order as it was
//! *created* (`awaiting_payment` with its `pay_by_ms` when it was created
//! with a payment window, `confirmed` otherwise), whatever happened to it
//! since; [`view_of_buyer`] and [`of_buyer_now`] read where it stands now.

use super::Database;
use crate::records::RequestHash;
use app::domain::{BuyerId, IdempotencyKey, InvalidValue, ItemId, Quantity};
use app::model::{OrderRequest, OrderStatus, OrderView, Receipt};
use sqlx::Row;
use sqlx::any::AnyRow;

const COLUMNS: &str =
    "id, idempotency_key, item_id, qty, unit_price_cents, pay_by_ms, created_at, queue_pass";

/// The columns of [`OrderView`], read from `orders o JOIN inventory i`.
const VIEW_COLUMNS: &str = "o.id, o.item_id, i.title, o.qty, o.unit_price_cents, o.status, \
     o.created_at, o.pay_by_ms, o.paid_at_ms, o.expired_at_ms";

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
    Ok(StoredOrder {
        receipt: receipt_from_row(row)?,
        pass: row.try_get("queue_pass")?,
    })
}

/// The 201 body of the order in `row`: its status is decided by whether it
/// was created with a deadline, never by what happened to it since.
fn receipt_from_row(row: &AnyRow) -> Result<Receipt, sqlx::Error> {
    let qty: i64 = row.try_get("qty")?;
    let unit_price_cents: i64 = row.try_get("unit_price_cents")?;
    let key: String = row.try_get("idempotency_key")?;
    let pay_by_ms: Option<i64> = row.try_get("pay_by_ms")?;
    Ok(Receipt {
        order_id: row.try_get("id")?,
        item_id: ItemId::new(row.try_get("item_id")?).map_err(decode)?,
        qty: Quantity::new(qty).map_err(decode)?,
        unit_price_cents,
        total_cents: unit_price_cents * qty,
        idempotency_key: IdempotencyKey::parse(&key).map_err(decode)?,
        status: if pay_by_ms.is_some() {
            OrderStatus::AwaitingPayment
        } else {
            OrderStatus::Confirmed
        },
        pay_by_ms,
        created_at_ms: row.try_get("created_at")?,
    })
}

fn view_from_row(row: &AnyRow) -> Result<OrderView, sqlx::Error> {
    let qty: i64 = row.try_get("qty")?;
    let unit_price_cents: i64 = row.try_get("unit_price_cents")?;
    let status: String = row.try_get("status")?;
    Ok(OrderView {
        order_id: row.try_get("id")?,
        item_id: ItemId::new(row.try_get("item_id")?).map_err(decode)?,
        item_title: row.try_get("title")?,
        qty: Quantity::new(qty).map_err(decode)?,
        unit_price_cents,
        total_cents: unit_price_cents * qty,
        status: OrderStatus::parse(&status).ok_or_else(|| {
            sqlx::Error::Decode(format!("unknown order status {status:?}").into())
        })?,
        created_at_ms: row.try_get("created_at")?,
        pay_by_ms: row.try_get("pay_by_ms")?,
        paid_at_ms: row.try_get("paid_at_ms")?,
        expired_at_ms: row.try_get("expired_at_ms")?,
    })
}

/// One order of this buyer as it stands now; `None` for an unknown order and
/// for another buyer's.
///
/// # Errors
/// Database failures.
pub async fn view_of_buyer(
    db: &Database,
    buyer: &BuyerId,
    order_id: &str,
) -> Result<Option<OrderView>, sqlx::Error> {
    let sql = format!(
        "SELECT {VIEW_COLUMNS} FROM orders o JOIN inventory i ON i.id = o.item_id \
         WHERE o.id = ? AND o.buyer = ?"
    );
    sqlx::query(&db.sql(&sql))
        .bind(order_id)
        .bind(buyer.as_str())
        .fetch_optional(db.pool())
        .await?
        .as_ref()
        .map(view_from_row)
        .transpose()
}

/// This buyer's orders as they stand now, newest first (at most `limit`).
///
/// # Errors
/// Database failures.
pub async fn of_buyer_now(
    db: &Database,
    buyer: &BuyerId,
    limit: u32,
) -> Result<Vec<OrderView>, sqlx::Error> {
    let sql = format!(
        "SELECT {VIEW_COLUMNS} FROM orders o JOIN inventory i ON i.id = o.item_id \
         WHERE o.buyer = ? ORDER BY o.created_at DESC, o.id DESC LIMIT {limit}"
    );
    sqlx::query(&db.sql(&sql))
        .bind(buyer.as_str())
        .fetch_all(db.pool())
        .await?
        .iter()
        .map(view_from_row)
        .collect()
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

/// Units of an item held by orders still awaiting payment: units that may
/// yet come back.
///
/// # Errors
/// Database failures.
pub async fn units_awaiting_payment(db: &Database, item: ItemId) -> Result<i64, sqlx::Error> {
    let sql = format!(
        "SELECT CAST(COALESCE(SUM(qty), 0) AS {}) AS units FROM orders \
         WHERE item_id = ? AND status = 'awaiting_payment'",
        db.dialect().bigint()
    );
    sqlx::query(&db.sql(&sql))
        .bind(item.get())
        .fetch_one(db.pool())
        .await?
        .try_get("units")
}
