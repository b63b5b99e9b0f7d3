//! The state machine's transitions in SQL: each one a conditional UPDATE
//! that names the status it leaves, decided with the database's clock.
//!
//! ```text
//! pay:     UPDATE orders SET status = 'paid' ...
//!           WHERE id = ? AND status = 'awaiting_payment' AND pay_by_ms >  <db now>
//! expire:  UPDATE orders SET status = 'expired' ...
//!           WHERE id = ? AND status = 'awaiting_payment' AND pay_by_ms <= <db now>
//!          + UPDATE inventory SET stock = stock + qty, version = version + 1
//! late:    UPDATE orders SET status = 'refund_due' ... WHERE id = ? AND status = 'expired'
//! ```
//!
//! Both `pay` and `expire` leave `awaiting_payment`, so the row lock makes
//! them take turns and the second finds the status gone: exactly one of
//! them changes the order, whatever the interleaving, on every instance.
//! The clock they compare `pay_by_ms` with is the database's, so no two
//! servers' clocks can each let one through.
//!
//! A payment's event row is written in the same transaction as the status
//! it caused, after the order's row is locked by the UPDATE. A repeated
//! event id hits the primary key of `payment_events` and changes nothing.
//!
//! InnoDB locks ranges of the `(status, pay_by_ms)` index while statuses
//! change, so concurrent transitions on MariaDB can deadlock; the database
//! then rolls one of them back whole, and it runs again from the start
//! (each transition is conditional, so running it again is safe).

use super::PaymentResult;
use crate::db::{Database, is_deadlock, is_unique_violation};
use app::domain::{BuyerId, ItemId};
use app::model::OrderStatus;
use sqlx::Row;
use sqlx::any::AnyRow;

/// An order as a transition needs it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct OrderRef {
    pub id: String,
    pub buyer: BuyerId,
    pub item: ItemId,
    pub qty: i64,
    pub total_cents: i64,
    pub status: OrderStatus,
}

fn decode(message: String) -> sqlx::Error {
    sqlx::Error::Decode(message.into())
}

fn order_from_row(row: &AnyRow) -> Result<OrderRef, sqlx::Error> {
    let buyer: String = row.try_get("buyer")?;
    let status: String = row.try_get("status")?;
    let qty: i64 = row.try_get("qty")?;
    let unit_price_cents: i64 = row.try_get("unit_price_cents")?;
    Ok(OrderRef {
        id: row.try_get("id")?,
        buyer: BuyerId::parse(&buyer).map_err(|e| decode(e.message().to_owned()))?,
        item: ItemId::new(row.try_get("item_id")?).map_err(|e| decode(e.message().to_owned()))?,
        qty,
        total_cents: unit_price_cents * qty,
        status: OrderStatus::parse(&status)
            .ok_or_else(|| decode(format!("unknown order status {status:?}")))?,
    })
}

const ORDER_COLUMNS: &str = "id, buyer, item_id, qty, unit_price_cents, status";

/// The order, whoever's it is.
///
/// # Errors
/// Database failures.
pub async fn order(db: &Database, order_id: &str) -> Result<Option<OrderRef>, sqlx::Error> {
    let sql = format!("SELECT {ORDER_COLUMNS} FROM orders WHERE id = ?");
    sqlx::query(&db.sql(&sql))
        .bind(order_id)
        .fetch_optional(db.pool())
        .await?
        .as_ref()
        .map(order_from_row)
        .transpose()
}

/// Orders still awaiting payment whose deadline passed by the database's
/// clock, earliest deadline first.
///
/// # Errors
/// Database failures.
pub async fn due(db: &Database, limit: u32) -> Result<Vec<OrderRef>, sqlx::Error> {
    let sql = format!(
        "SELECT {ORDER_COLUMNS} FROM orders WHERE status = 'awaiting_payment' AND pay_by_ms <= {} \
         ORDER BY pay_by_ms LIMIT {limit}",
        db.dialect().now_ms_sql()
    );
    sqlx::query(&sql)
        .fetch_all(db.pool())
        .await?
        .iter()
        .map(order_from_row)
        .collect()
}

/// How many times a transition runs when the database keeps choosing it
/// to break a deadlock.
const DEADLOCK_ATTEMPTS: u32 = 8;

/// Runs a transaction again (after a short jittered pause) when the
/// database rolled it back to break a deadlock.
async fn retrying_deadlocks<T, F, Fut>(mut transaction: F) -> Result<T, sqlx::Error>
where
    F: FnMut() -> Fut,
    Fut: Future<Output = Result<T, sqlx::Error>>,
{
    let mut attempt = 1;
    loop {
        match transaction().await {
            Err(e) if is_deadlock(&e) && attempt < DEADLOCK_ATTEMPTS => {
                tracing::debug!(error = %e, attempt, "a transition was chosen to break a deadlock; running it again");
                let pause = rand::Rng::random_range(&mut rand::rng(), 1..=5 * u64::from(attempt));
                tokio::time::sleep(std::time::Duration::from_millis(pause)).await;
                attempt += 1;
            }
            other => return other,
        }
    }
}

/// A payment event already applied.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct StoredEvent {
    pub order_id: String,
    pub amount_cents: i64,
    pub result: PaymentResult,
}

/// # Errors
/// Database failures.
pub async fn stored_event(
    db: &Database,
    event_id: &str,
) -> Result<Option<StoredEvent>, sqlx::Error> {
    let row = sqlx::query(
        &db.sql("SELECT order_id, amount_cents, result FROM payment_events WHERE event_id = ?"),
    )
    .bind(event_id)
    .fetch_optional(db.pool())
    .await?;
    row.map(|row| {
        let result: String = row.try_get("result")?;
        Ok(StoredEvent {
            order_id: row.try_get("order_id")?,
            amount_cents: row.try_get("amount_cents")?,
            result: PaymentResult::parse(&result)
                .ok_or_else(|| decode(format!("unknown payment result {result:?}")))?,
        })
    })
    .transpose()
}

/// What a payment transition did.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Applied {
    /// The event is recorded with its result, and its status change made.
    Done,
    /// The event id was recorded before: nothing changed.
    EventExists,
    /// The order is not in the status this transition leaves any more:
    /// nothing changed; read it again.
    StatusMoved,
}

/// One payment event as the transitions record it.
#[derive(Debug, Clone, Copy)]
pub struct EventRow<'a> {
    pub event_id: &'a str,
    pub order_id: &'a str,
    pub amount_cents: i64,
    pub received_at_ms: i64,
}

async fn insert_event(
    db: &Database,
    tx: &mut sqlx::Transaction<'_, sqlx::Any>,
    event: EventRow<'_>,
    result: PaymentResult,
) -> Result<bool, sqlx::Error> {
    let inserted = sqlx::query(&db.sql(
        "INSERT INTO payment_events (event_id, order_id, amount_cents, result, received_at_ms) \
         VALUES (?, ?, ?, ?, ?)",
    ))
    .bind(event.event_id)
    .bind(event.order_id)
    .bind(event.amount_cents)
    .bind(result.as_str())
    .bind(event.received_at_ms)
    .execute(&mut **tx)
    .await;
    match inserted {
        Ok(_) => Ok(true),
        Err(e) if is_unique_violation(&e) => Ok(false),
        Err(e) => Err(e),
    }
}

/// `awaiting_payment` → `paid`, if the deadline has not passed by the
/// database's clock; the event recorded as `paid` with it.
///
/// # Errors
/// Database failures (nothing changed).
pub async fn pay(db: &Database, event: EventRow<'_>) -> Result<Applied, sqlx::Error> {
    retrying_deadlocks(|| pay_once(db, event)).await
}

async fn pay_once(db: &Database, event: EventRow<'_>) -> Result<Applied, sqlx::Error> {
    let now = db.dialect().now_ms_sql();
    let mut tx = db.pool().begin().await?;
    let sql = format!(
        "UPDATE orders SET status = 'paid', paid_at_ms = {now} \
         WHERE id = ? AND status = 'awaiting_payment' AND pay_by_ms > {now}"
    );
    let paid = sqlx::query(&db.sql(&sql))
        .bind(event.order_id)
        .execute(&mut *tx)
        .await?
        .rows_affected();
    if paid == 0 {
        tx.rollback().await?;
        return Ok(Applied::StatusMoved);
    }
    if !insert_event(db, &mut tx, event, PaymentResult::Paid).await? {
        tx.rollback().await?;
        return Ok(Applied::EventExists);
    }
    tx.commit().await?;
    Ok(Applied::Done)
}

/// A payment the order can no longer take: after its expiry
/// (`expired` → `refund_due`, or already `refund_due`: `result` is
/// [`PaymentResult::RefundDue`]) or after it was settled (`paid` or
/// `confirmed`: [`PaymentResult::Duplicate`]). The order keeps no unit for
/// it; the event is recorded for the operator to refund.
///
/// # Errors
/// Database failures (nothing changed).
pub async fn take_late(
    db: &Database,
    event: EventRow<'_>,
    result: PaymentResult,
) -> Result<Applied, sqlx::Error> {
    retrying_deadlocks(|| take_late_once(db, event, result)).await
}

async fn take_late_once(
    db: &Database,
    event: EventRow<'_>,
    result: PaymentResult,
) -> Result<Applied, sqlx::Error> {
    let mut tx = db.pool().begin().await?;
    let leaves: &[OrderStatus] = match result {
        PaymentResult::RefundDue => &[OrderStatus::Expired, OrderStatus::RefundDue],
        PaymentResult::Duplicate | PaymentResult::Paid => {
            &[OrderStatus::Paid, OrderStatus::Confirmed]
        }
    };
    if result == PaymentResult::RefundDue {
        let sql = format!(
            "UPDATE orders SET status = 'refund_due', paid_at_ms = {} WHERE id = ? AND status = 'expired'",
            db.dialect().now_ms_sql()
        );
        sqlx::query(&db.sql(&sql))
            .bind(event.order_id)
            .execute(&mut *tx)
            .await?;
    }
    // A write first (SQLite then holds its write lock from the start).
    if !insert_event(db, &mut tx, event, result).await? {
        tx.rollback().await?;
        return Ok(Applied::EventExists);
    }
    // Read inside the transaction, after the UPDATE (which, when it matched,
    // locked the row): the statuses accepted here are final.
    let status: String = sqlx::query(&db.sql("SELECT status FROM orders WHERE id = ?"))
        .bind(event.order_id)
        .fetch_one(&mut *tx)
        .await?
        .try_get("status")?;
    if !OrderStatus::parse(&status).is_some_and(|s| leaves.contains(&s)) {
        tx.rollback().await?;
        return Ok(Applied::StatusMoved);
    }
    tx.commit().await?;
    Ok(Applied::Done)
}

/// `awaiting_payment` → `expired` if the deadline passed by the database's
/// clock, and the order's units back into the item's stock (`version`
/// bumped), in one transaction. The row version after the return when this
/// call expired the order; `None` when it was not due or no longer awaited
/// payment (another instance expired it, or it was paid).
///
/// # Errors
/// Database failures (nothing changed).
pub async fn expire(db: &Database, order: &OrderRef) -> Result<Option<i64>, sqlx::Error> {
    retrying_deadlocks(|| expire_once(db, order)).await
}

async fn expire_once(db: &Database, order: &OrderRef) -> Result<Option<i64>, sqlx::Error> {
    let now = db.dialect().now_ms_sql();
    let mut tx = db.pool().begin().await?;
    let sql = format!(
        "UPDATE orders SET status = 'expired', expired_at_ms = {now} \
         WHERE id = ? AND status = 'awaiting_payment' AND pay_by_ms <= {now}"
    );
    let expired = sqlx::query(&db.sql(&sql))
        .bind(order.id.as_str())
        .execute(&mut *tx)
        .await?
        .rows_affected();
    if expired == 0 {
        tx.rollback().await?;
        return Ok(None);
    }
    sqlx::query(&db.sql(
        "UPDATE inventory SET stock = stock + ?, version = version + 1, updated_at = ? WHERE id = ?",
    ))
    .bind(order.qty)
    .bind(crate::db::now_ms())
    .bind(order.item.get())
    .execute(&mut *tx)
    .await?;
    let version: i64 = sqlx::query(&db.sql("SELECT version FROM inventory WHERE id = ?"))
        .bind(order.item.get())
        .fetch_one(&mut *tx)
        .await?
        .try_get("version")?;
    tx.commit().await?;
    Ok(Some(version))
}

/// A payment the operator owes back.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
pub struct Refund {
    pub event_id: String,
    pub order_id: String,
    pub item_id: i64,
    pub amount_cents: i64,
    /// `refund_due` (paid after the order expired) or `duplicate` (paid
    /// again after it was settled).
    pub result: &'static str,
    pub received_at_ms: i64,
}

/// The payments owed back, newest first (at most `limit`).
///
/// # Errors
/// Database failures.
pub async fn refunds(db: &Database, limit: u32) -> Result<Vec<Refund>, sqlx::Error> {
    let sql = format!(
        "SELECT e.event_id, e.order_id, o.item_id, e.amount_cents, e.result, e.received_at_ms \
         FROM payment_events e JOIN orders o ON o.id = e.order_id \
         WHERE e.result IN ('refund_due', 'duplicate') \
         ORDER BY e.received_at_ms DESC, e.event_id LIMIT {limit}"
    );
    sqlx::query(&sql)
        .fetch_all(db.pool())
        .await?
        .iter()
        .map(|row| {
            let result: String = row.try_get("result")?;
            Ok(Refund {
                event_id: row.try_get("event_id")?,
                order_id: row.try_get("order_id")?,
                item_id: row.try_get("item_id")?,
                amount_cents: row.try_get("amount_cents")?,
                result: PaymentResult::parse(&result)
                    .ok_or_else(|| decode(format!("unknown payment result {result:?}")))?
                    .as_str(),
                received_at_ms: row.try_get("received_at_ms")?,
            })
        })
        .collect()
}

/// How many orders are in each status, for the dashboard.
///
/// # Errors
/// Database failures.
pub async fn count_by_status(db: &Database) -> Result<Vec<(OrderStatus, i64)>, sqlx::Error> {
    let sql = format!(
        "SELECT status, CAST(COUNT(*) AS {}) AS n FROM orders GROUP BY status",
        db.dialect().bigint()
    );
    let mut counts = Vec::new();
    for row in sqlx::query(&sql).fetch_all(db.pool()).await? {
        let status: String = row.try_get("status")?;
        if let Some(status) = OrderStatus::parse(&status) {
            counts.push((status, row.try_get("n")?));
        }
    }
    Ok(counts)
}
