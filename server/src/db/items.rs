//! Inventory reads, and the admin writes that create, restock and change
//! items.
//!
//! Every write bumps `version`, so a versioned order update that read the row
//! before a restock retries instead of overwriting it, and a reservation
//! store's copy of the terms is replaced only by newer ones.

use super::{Database, Dialect, now_ms};
use app::domain::ItemId;
use app::model::{Item, OrderStatus};
use sqlx::Row;
use sqlx::any::AnyRow;

const COLUMNS: &str = "id, title, item_condition, seller, price_cents, stock, version, max_per_buyer, \
     sale_starts_at_ms, sale_ends_at_ms, admission_per_second, pass_ttl_seconds, paused";

/// A validated new listing (see `api::admin`).
#[derive(Debug, Clone)]
pub struct NewItem {
    pub title: String,
    pub condition: String,
    pub seller: String,
    pub price_cents: i64,
    pub stock: i64,
    pub max_per_buyer: Option<i64>,
    pub terms: DropTerms,
}

/// A drop's terms as the admin sets them: the sale window, the waiting
/// room, pause.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct DropTerms {
    pub sale_starts_at_ms: Option<i64>,
    pub sale_ends_at_ms: Option<i64>,
    pub admission_per_second: Option<i64>,
    pub pass_ttl_seconds: i64,
    pub paused: bool,
}

impl Default for DropTerms {
    fn default() -> Self {
        Self {
            sale_starts_at_ms: None,
            sale_ends_at_ms: None,
            admission_per_second: None,
            pass_ttl_seconds: 120,
            paused: false,
        }
    }
}

impl DropTerms {
    pub fn of(item: &Item) -> Self {
        Self {
            sale_starts_at_ms: item.sale_starts_at_ms,
            sale_ends_at_ms: item.sale_ends_at_ms,
            admission_per_second: item.admission_per_second,
            pass_ttl_seconds: item.pass_ttl_seconds,
            paused: item.paused,
        }
    }
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Restocked {
    Done(Item),
    UnknownItem,
    /// A negative delta larger than the stock left.
    WouldGoNegative {
        stock: i64,
    },
}

fn item_from_row(row: &AnyRow) -> Result<Item, sqlx::Error> {
    let id: i64 = row.try_get("id")?;
    Ok(Item {
        id: ItemId::new(id).map_err(|e| sqlx::Error::Decode(e.message().into()))?,
        title: row.try_get("title")?,
        condition: row.try_get("item_condition")?,
        seller: row.try_get("seller")?,
        price_cents: row.try_get("price_cents")?,
        stock: row.try_get("stock")?,
        version: row.try_get("version")?,
        max_per_buyer: row.try_get("max_per_buyer")?,
        sale_starts_at_ms: row.try_get("sale_starts_at_ms")?,
        sale_ends_at_ms: row.try_get("sale_ends_at_ms")?,
        admission_per_second: row.try_get("admission_per_second")?,
        pass_ttl_seconds: row.try_get("pass_ttl_seconds")?,
        paused: row.try_get::<i64, _>("paused")? != 0,
    })
}

/// # Errors
/// Database failures.
pub async fn list(db: &Database) -> Result<Vec<Item>, sqlx::Error> {
    let sql = format!("SELECT {COLUMNS} FROM inventory ORDER BY id");
    let rows = sqlx::query(&sql).fetch_all(db.pool()).await?;
    rows.iter().map(item_from_row).collect()
}

/// # Errors
/// Database failures.
pub async fn get(db: &Database, id: ItemId) -> Result<Option<Item>, sqlx::Error> {
    let sql = format!("SELECT {COLUMNS} FROM inventory WHERE id = ?");
    let row = sqlx::query(&db.sql(&sql))
        .bind(id.get())
        .fetch_optional(db.pool())
        .await?;
    row.as_ref().map(item_from_row).transpose()
}

/// The item's stock alone; `None` for no such item.
///
/// # Errors
/// Database failures.
pub async fn stock(db: &Database, id: ItemId) -> Result<Option<i64>, sqlx::Error> {
    sqlx::query_scalar(&db.sql("SELECT stock FROM inventory WHERE id = ?"))
        .bind(id.get())
        .fetch_optional(db.pool())
        .await
}

/// # Errors
/// Database failures, including check-constraint violations.
pub async fn create(db: &Database, item: &NewItem) -> Result<Item, sqlx::Error> {
    let now = now_ms();
    let insert = "INSERT INTO inventory \
        (title, item_condition, seller, price_cents, stock, version, max_per_buyer, created_at, updated_at, \
         sale_starts_at_ms, sale_ends_at_ms, admission_per_second, pass_ttl_seconds, paused, fairness_seed) \
        VALUES (?, ?, ?, ?, ?, 0, ?, ?, ?, ?, ?, ?, ?, ?, ?)";
    let sql = match db.dialect() {
        Dialect::MySql => insert.to_owned(),
        Dialect::Sqlite | Dialect::Postgres => {
            db.sql(&format!("{insert} RETURNING id")).into_owned()
        }
    };
    let query = sqlx::query(&sql)
        .bind(item.title.clone())
        .bind(item.condition.clone())
        .bind(item.seller.clone())
        .bind(item.price_cents)
        .bind(item.stock)
        .bind(item.max_per_buyer)
        .bind(now)
        .bind(now)
        .bind(item.terms.sale_starts_at_ms)
        .bind(item.terms.sale_ends_at_ms)
        .bind(item.terms.admission_per_second)
        .bind(item.terms.pass_ttl_seconds)
        .bind(i64::from(item.terms.paused))
        .bind(new_seed());
    let id: i64 = match db.dialect() {
        Dialect::MySql => query
            .execute(db.pool())
            .await?
            .last_insert_id()
            .ok_or_else(|| sqlx::Error::Protocol("no insert id returned".into()))?,
        Dialect::Sqlite | Dialect::Postgres => query.fetch_one(db.pool()).await?.try_get("id")?,
    };
    let id = ItemId::new(id).map_err(|e| sqlx::Error::Decode(e.message().into()))?;
    get(db, id).await?.ok_or_else(|| sqlx::Error::RowNotFound)
}

/// Adds `delta` (which may be negative) to the stock in one transaction and
/// returns the row as it is after the write, with its new `version`.
///
/// # Errors
/// Database failures.
pub async fn restock(db: &Database, id: ItemId, delta: i64) -> Result<Restocked, sqlx::Error> {
    let mut tx = db.pool().begin().await?;
    let update = "UPDATE inventory SET stock = stock + ?, version = version + 1, updated_at = ? \
        WHERE id = ? AND stock + ? >= 0";
    let changed = sqlx::query(&db.sql(update))
        .bind(delta)
        .bind(now_ms())
        .bind(id.get())
        .bind(delta)
        .execute(&mut *tx)
        .await?
        .rows_affected();
    let sql = format!("SELECT {COLUMNS} FROM inventory WHERE id = ?");
    let row = sqlx::query(&db.sql(&sql))
        .bind(id.get())
        .fetch_optional(&mut *tx)
        .await?;
    let item = row.as_ref().map(item_from_row).transpose()?;
    tx.commit().await?;
    Ok(match (changed, item) {
        (_, None) => Restocked::UnknownItem,
        (0, Some(item)) => Restocked::WouldGoNegative { stock: item.stock },
        (_, Some(item)) => Restocked::Done(item),
    })
}

/// How an admin changes a drop's terms (`PATCH`): each field left out keeps
/// its value; `Some(None)` clears an optional one.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct TermsChange {
    pub sale_starts_at_ms: Option<Option<i64>>,
    pub sale_ends_at_ms: Option<Option<i64>>,
    pub admission_per_second: Option<Option<i64>>,
    pub pass_ttl_seconds: Option<i64>,
    pub paused: Option<bool>,
}

impl TermsChange {
    pub fn applied_to(&self, terms: DropTerms) -> DropTerms {
        DropTerms {
            sale_starts_at_ms: self.sale_starts_at_ms.unwrap_or(terms.sale_starts_at_ms),
            sale_ends_at_ms: self.sale_ends_at_ms.unwrap_or(terms.sale_ends_at_ms),
            admission_per_second: self
                .admission_per_second
                .unwrap_or(terms.admission_per_second),
            pass_ttl_seconds: self.pass_ttl_seconds.unwrap_or(terms.pass_ttl_seconds),
            paused: self.paused.unwrap_or(terms.paused),
        }
    }
}

/// Writes a drop's new terms (bumping the row's version) and returns the
/// item as it is afterwards; `None` for an unknown item.
///
/// # Errors
/// Database failures.
pub async fn set_terms(
    db: &Database,
    id: ItemId,
    terms: &DropTerms,
) -> Result<Option<Item>, sqlx::Error> {
    let update = "UPDATE inventory SET sale_starts_at_ms = ?, sale_ends_at_ms = ?, admission_per_second = ?, \
        pass_ttl_seconds = ?, paused = ?, version = version + 1, updated_at = ? WHERE id = ?";
    let changed = sqlx::query(&db.sql(update))
        .bind(terms.sale_starts_at_ms)
        .bind(terms.sale_ends_at_ms)
        .bind(terms.admission_per_second)
        .bind(terms.pass_ttl_seconds)
        .bind(i64::from(terms.paused))
        .bind(now_ms())
        .bind(id.get())
        .execute(db.pool())
        .await?
        .rows_affected();
    if changed == 0 {
        return Ok(None);
    }
    get(db, id).await
}

/// The item's fair-start seed: made at creation (or now, for an item made
/// before seeds existed), kept secret until the sale starts.
///
/// # Errors
/// Database failures; `RowNotFound` for an unknown item.
pub async fn fairness_seed(db: &Database, id: ItemId) -> Result<String, sqlx::Error> {
    let fill = "UPDATE inventory SET fairness_seed = ? WHERE id = ? AND fairness_seed IS NULL";
    sqlx::query(&db.sql(fill))
        .bind(new_seed())
        .bind(id.get())
        .execute(db.pool())
        .await?;
    sqlx::query_scalar::<_, Option<String>>(
        &db.sql("SELECT fairness_seed FROM inventory WHERE id = ?"),
    )
    .bind(id.get())
    .fetch_optional(db.pool())
    .await?
    .flatten()
    .ok_or(sqlx::Error::RowNotFound)
}

fn new_seed() -> String {
    super::random_hex_secret()
}

/// # Errors
/// Database failures.
pub async fn count(db: &Database) -> Result<i64, sqlx::Error> {
    sqlx::query_scalar("SELECT COUNT(*) FROM inventory")
        .fetch_one(db.pool())
        .await
}

/// Seeds a few second-hand items into an empty inventory, so a first run
/// shows a working shop. Returns how many were added.
///
/// # Errors
/// Database failures.
pub async fn seed_demo(db: &Database) -> Result<usize, sqlx::Error> {
    if count(db).await? > 0 {
        return Ok(0);
    }
    let demo = [
        (
            "Leica M6 film camera, 1986",
            "Good, light brassing",
            "Ann's Attic",
            128_000,
            1,
            None,
        ),
        (
            "Brompton folding bike, 6-speed",
            "Like new",
            "CycleSwap",
            89_900,
            1,
            None,
        ),
        (
            "Nintendo Switch OLED (white)",
            "Very good, boxed",
            "GameLoop",
            159_900,
            3,
            Some(1),
        ),
        (
            "Vintage Levi's 501 jeans, W32 L32",
            "Worn, no holes",
            "Denim Den",
            12_800,
            5,
            Some(2),
        ),
        (
            "Kindle Paperwhite 11th gen",
            "Good, minor scratches",
            "ReadAgain",
            39_900,
            8,
            None,
        ),
        (
            "IKEA Poäng armchair",
            "Fair, cover washed",
            "Flat 3B",
            9_900,
            0,
            None,
        ),
    ];
    for (title, condition, seller, price_cents, stock, max_per_buyer) in demo {
        create(
            db,
            &NewItem {
                title: title.into(),
                condition: condition.into(),
                seller: seller.into(),
                price_cents,
                stock,
                max_per_buyer,
                terms: DropTerms::default(),
            },
        )
        .await?;
    }
    Ok(demo.len())
}

/// What the database holds for one item's orders, for invariant checks.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
pub struct OrderStats {
    /// Every order, whatever its status: one per 201 answer.
    pub orders: i64,
    /// Units of orders that still hold them (not expired): with the stock,
    /// they add up to the initial stock plus every restock.
    pub units_ordered: i64,
    /// Units of orders that expired unpaid (and went back to stock).
    pub units_returned: i64,
    /// (buyer, idempotency key) pairs with more than one order: always 0
    /// while the unique index stands.
    pub duplicate_keys: i64,
    /// Orders per status (`confirmed`, `awaiting_payment`, `paid`,
    /// `expired`, `refund_due`); statuses without orders are absent.
    pub orders_by_status: std::collections::BTreeMap<&'static str, i64>,
}

/// # Errors
/// Database failures.
pub async fn order_stats(db: &Database, id: ItemId) -> Result<OrderStats, sqlx::Error> {
    let bigint = db.dialect().bigint();
    let totals = format!(
        "SELECT status, CAST(COUNT(*) AS {bigint}) AS orders, CAST(COALESCE(SUM(qty), 0) AS {bigint}) AS units \
         FROM orders WHERE item_id = ? GROUP BY status"
    );
    let mut stats = OrderStats {
        orders: 0,
        units_ordered: 0,
        units_returned: 0,
        duplicate_keys: 0,
        orders_by_status: std::collections::BTreeMap::new(),
    };
    for row in sqlx::query(&db.sql(&totals))
        .bind(id.get())
        .fetch_all(db.pool())
        .await?
    {
        let status: String = row.try_get("status")?;
        let status = OrderStatus::parse(&status).ok_or_else(|| {
            sqlx::Error::Decode(format!("unknown order status {status:?}").into())
        })?;
        let (orders, units): (i64, i64) = (row.try_get("orders")?, row.try_get("units")?);
        stats.orders += orders;
        if status.holds_units() {
            stats.units_ordered += units;
        } else {
            stats.units_returned += units;
        }
        stats.orders_by_status.insert(status.as_str(), orders);
    }
    let duplicates = format!(
        "SELECT CAST(COUNT(*) AS {bigint}) AS n FROM (SELECT buyer, idempotency_key FROM orders \
         WHERE item_id = ? GROUP BY buyer, idempotency_key HAVING COUNT(*) > 1) dups"
    );
    stats.duplicate_keys = sqlx::query(&db.sql(&duplicates))
        .bind(id.get())
        .fetch_one(db.pool())
        .await?
        .try_get("n")?;
    Ok(stats)
}
