//! Waiting-room tickets: who joined an item's line, with which ticket, and
//! when by the database's clock. The fair draw is checked against this
//! table, and the line is rebuilt from it when the reservation store lost
//! it.

use super::Database;
use app::domain::{BuyerId, InvalidValue, ItemId};
use sqlx::Row;

/// One buyer's ticket.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TicketRow {
    pub buyer: BuyerId,
    pub ticket: String,
    pub joined_at_ms: i64,
    /// Whether the buyer has an order for the item.
    pub ordered: bool,
}

fn decode(e: InvalidValue) -> sqlx::Error {
    sqlx::Error::Decode(e.message().into())
}

/// Gives the buyer `ticket` unless they already have one for the item, and
/// returns the ticket they have and when they joined.
///
/// # Errors
/// Database failures.
pub async fn join(
    db: &Database,
    item: ItemId,
    buyer: &BuyerId,
    ticket: &str,
) -> Result<(String, i64), sqlx::Error> {
    let now = db.dialect().now_ms_sql();
    let insert = match db.dialect() {
        super::Dialect::Sqlite => format!(
            "INSERT OR IGNORE INTO queue_tickets (item_id, buyer, ticket, joined_at_ms) VALUES (?, ?, ?, {now})"
        ),
        super::Dialect::MySql => format!(
            "INSERT IGNORE INTO queue_tickets (item_id, buyer, ticket, joined_at_ms) VALUES (?, ?, ?, {now})"
        ),
        super::Dialect::Postgres => format!(
            "INSERT INTO queue_tickets (item_id, buyer, ticket, joined_at_ms) VALUES (?, ?, ?, {now}) ON CONFLICT DO NOTHING"
        ),
    };
    sqlx::query(&db.sql(&insert))
        .bind(item.get())
        .bind(buyer.as_str())
        .bind(ticket)
        .execute(db.pool())
        .await?;
    let row = sqlx::query(
        &db.sql("SELECT ticket, joined_at_ms FROM queue_tickets WHERE item_id = ? AND buyer = ?"),
    )
    .bind(item.get())
    .bind(buyer.as_str())
    .fetch_one(db.pool())
    .await?;
    Ok((row.try_get("ticket")?, row.try_get("joined_at_ms")?))
}

/// Every ticket of an item, with whether its buyer ordered the item.
///
/// # Errors
/// Database failures.
pub async fn of_item(db: &Database, item: ItemId) -> Result<Vec<TicketRow>, sqlx::Error> {
    let sql = format!(
        "SELECT t.buyer, t.ticket, t.joined_at_ms, \
         CAST(CASE WHEN EXISTS (SELECT 1 FROM orders o WHERE o.item_id = t.item_id AND o.buyer = t.buyer) \
         THEN 1 ELSE 0 END AS {}) AS ordered \
         FROM queue_tickets t WHERE t.item_id = ?",
        db.dialect().bigint()
    );
    let rows = sqlx::query(&db.sql(&sql))
        .bind(item.get())
        .fetch_all(db.pool())
        .await?;
    rows.iter()
        .map(|row| {
            let buyer: String = row.try_get("buyer")?;
            let ordered: i64 = row.try_get("ordered")?;
            Ok(TicketRow {
                buyer: BuyerId::parse(&buyer).map_err(decode)?,
                ticket: row.try_get("ticket")?,
                joined_at_ms: row.try_get("joined_at_ms")?,
                ordered: ordered != 0,
            })
        })
        .collect()
}

/// The tickets that joined before `starts_at_ms`.
///
/// # Errors
/// Database failures.
pub async fn joined_before(
    db: &Database,
    item: ItemId,
    starts_at_ms: i64,
) -> Result<Vec<String>, sqlx::Error> {
    sqlx::query_scalar(
        &db.sql("SELECT ticket FROM queue_tickets WHERE item_id = ? AND joined_at_ms < ?"),
    )
    .bind(item.get())
    .bind(starts_at_ms)
    .fetch_all(db.pool())
    .await
}
