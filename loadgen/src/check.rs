//! The invariants a run must leave behind, checked through the admin API
//! (the server's own view: database, reservation counter, live holds) and,
//! when given, directly in the database.
//!
//! - no oversell: units ordered + stock = initial stock, and stock >= 0;
//! - every 201 is one order and every order was answered 201;
//! - orders = min(demand, stock): when nothing failed retryably, the stock
//!   sold out exactly, or every request was served;
//! - no duplicate order per (buyer, idempotency key);
//! - the Redis counter equals the database stock;
//! - no live hold once the reaper has had its time.

use crate::cli::RunArgs;
use crate::drive::Outcome;
use crate::setup::{Item, Target};
use sqlx::{Connection, Row};
use std::time::{Duration, Instant};

#[derive(Debug, Clone, serde::Serialize, serde::Deserialize)]
pub struct Check {
    pub name: String,
    pub passed: bool,
    pub detail: String,
}

fn check(name: impl Into<String>, passed: bool, detail: impl Into<String>) -> Check {
    Check {
        name: name.into(),
        passed,
        detail: detail.into(),
    }
}

async fn stats(
    client: &reqwest::Client,
    args: &RunArgs,
    item: &Item,
) -> anyhow::Result<serde_json::Value> {
    Ok(client
        .get(format!(
            "{}/api/admin/items/{}/stats",
            args.targets[0], item.id
        ))
        .bearer_auth(args.admin_token.as_deref().unwrap_or_default())
        .send()
        .await?
        .error_for_status()?
        .json()
        .await?)
}

/// Statements the database has run (PostgreSQL with pg_stat_statements),
/// for counting what a run cost the database.
///
/// # Errors
/// Not PostgreSQL, or the extension is not loaded.
pub async fn statement_count(url: &str) -> anyhow::Result<i64> {
    sqlx::any::install_default_drivers();
    let mut conn = sqlx::AnyConnection::connect(url).await?;
    let n: i64 = sqlx::query(
        "SELECT CAST(COALESCE(SUM(calls), 0) AS BIGINT) AS n FROM pg_stat_statements \
         WHERE dbid = (SELECT oid FROM pg_database WHERE datname = current_database())",
    )
    .fetch_one(&mut conn)
    .await?
    .try_get("n")?;
    Ok(n)
}

/// How many answered order ids do not match exactly one database order.
async fn unmatched_answers(url: &str, ids: &[String]) -> anyhow::Result<usize> {
    sqlx::any::install_default_drivers();
    let mut conn = sqlx::AnyConnection::connect(url).await?;
    let postgres = url.starts_with("postgres");
    let mut unmatched = 0;
    for chunk in ids.chunks(500) {
        let marks: Vec<String> = (1..=chunk.len())
            .map(|n| {
                if postgres {
                    format!("${n}")
                } else {
                    "?".to_owned()
                }
            })
            .collect();
        let sql = format!("SELECT id FROM orders WHERE id IN ({})", marks.join(", "));
        let mut query = sqlx::query(&sql);
        for id in chunk {
            query = query.bind(id.as_str());
        }
        let mut found: std::collections::HashMap<String, usize> = std::collections::HashMap::new();
        for row in query.fetch_all(&mut conn).await? {
            if let Ok(id) = row.try_get::<String, _>("id") {
                *found.entry(id).or_default() += 1;
            }
        }
        unmatched += chunk.iter().filter(|id| found.get(*id) != Some(&1)).count();
    }
    Ok(unmatched)
}

async fn database_view(url: &str, item: i64) -> anyhow::Result<(i64, i64, i64, i64)> {
    sqlx::any::install_default_drivers();
    let mut conn = sqlx::AnyConnection::connect(url).await?;
    let postgres = url.starts_with("postgres");
    let p = |n: usize| {
        if postgres {
            format!("${n}")
        } else {
            "?".to_owned()
        }
    };
    let bigint = if url.starts_with("mysql") {
        "SIGNED"
    } else {
        "BIGINT"
    };
    let orders = sqlx::query(&format!(
        "SELECT CAST(COUNT(*) AS {bigint}) AS n, CAST(COALESCE(SUM(qty), 0) AS {bigint}) AS units FROM orders WHERE item_id = {}",
        p(1)
    ))
    .bind(item)
    .fetch_one(&mut conn)
    .await?;
    let stock: i64 = sqlx::query(&format!("SELECT stock FROM inventory WHERE id = {}", p(1)))
        .bind(item)
        .fetch_one(&mut conn)
        .await?
        .try_get("stock")?;
    let duplicates: i64 = sqlx::query(&format!(
        "SELECT CAST(COUNT(*) AS {bigint}) AS n FROM (SELECT buyer, idempotency_key FROM orders \
         GROUP BY buyer, idempotency_key HAVING COUNT(*) > 1) d"
    ))
    .fetch_one(&mut conn)
    .await?
    .try_get("n")?;
    Ok((
        orders.try_get("n")?,
        orders.try_get("units")?,
        stock,
        duplicates,
    ))
}

/// A drop's orders, units sold and repeated (buyer, key) pairs, as the
/// database holds them.
///
/// # Errors
/// The database could not be read.
pub async fn drop_view(url: &str, item: i64) -> anyhow::Result<(i64, i64, i64)> {
    let (orders, units, _, duplicates) = database_view(url, item).await?;
    Ok((orders, units, duplicates))
}

/// # Errors
/// The admin API or the database could not be read.
pub async fn invariants(
    client: &reqwest::Client,
    args: &RunArgs,
    target: &Target,
    outcome: &Outcome,
) -> anyhow::Result<Vec<Check>> {
    let mut checks = Vec::new();
    let recorded = &outcome.recorded;
    let retryable_failures = recorded.counts.server_5xx
        + recorded.counts.failed
        + recorded.counts.dropped
        + recorded
            .counts
            .codes
            .get("stock_conflict")
            .copied()
            .unwrap_or(0)
        + recorded
            .counts
            .codes
            .get("rate_limited")
            .copied()
            .unwrap_or(0);
    let items = target.items.len() as u64;
    for item in &target.items {
        // Holds drain within the hold TTL plus a reaper interval.
        let deadline = Instant::now() + Duration::from_secs_f64(args.drain_seconds);
        let mut s = stats(client, args, item).await?;
        while s["live_holds"].as_u64().unwrap_or(0) > 0 && Instant::now() < deadline {
            tokio::time::sleep(Duration::from_millis(250)).await;
            s = stats(client, args, item).await?;
        }
        let name = |what: &str| format!("item {}: {what}", item.id);
        let stock = s["stock"].as_i64().unwrap_or(-1);
        let units = s["units_ordered"].as_i64().unwrap_or(-1);
        let orders = s["orders"].as_i64().unwrap_or(-1);
        checks.push(check(
            name("no oversell"),
            stock >= 0 && units + stock == item.initial_stock,
            format!(
                "ordered {units} + left {stock} = {} (initial {})",
                units + stock,
                item.initial_stock
            ),
        ));
        let created = recorded
            .created_per_item
            .get(&item.id)
            .copied()
            .unwrap_or(0) as i64;
        checks.push(check(
            name("every 201 is one order"),
            orders == created,
            format!("{orders} orders in the database, {created} answered 201"),
        ));
        let distinct: std::collections::HashSet<&String> = recorded
            .created_orders
            .get(&item.id)
            .map(|ids| ids.iter().collect())
            .unwrap_or_default();
        checks.push(check(
            name("no order answered twice"),
            distinct.len() as i64 == created,
            format!("{} distinct order ids in {created} answers", distinct.len()),
        ));
        let sent_here = outcome.sent.div_ceil(items);
        let demand = (sent_here as i64).saturating_mul(args.qty);
        let expected_units = demand.min(item.initial_stock);
        if retryable_failures == 0 {
            checks.push(check(
                name("orders = min(demand, stock)"),
                units == expected_units
                    || (demand > item.initial_stock && item.initial_stock - units < args.qty),
                format!(
                    "{units} units ordered; demand {demand}, stock {}",
                    item.initial_stock
                ),
            ));
        }
        checks.push(check(
            name("no duplicate (buyer, key)"),
            s["duplicate_keys"].as_i64() == Some(0),
            format!("{} duplicated keys", s["duplicate_keys"]),
        ));
        if s["counter"].as_i64().is_some() {
            // Reconciliation may still be repairing drift left by faults:
            // the counter must come back to the database's stock.
            let mut counter = s["counter"].as_i64();
            while counter != Some(stock) && Instant::now() < deadline {
                tokio::time::sleep(Duration::from_millis(250)).await;
                counter = stats(client, args, item).await?["counter"].as_i64();
            }
            checks.push(check(
                name("Redis counter = database stock"),
                counter == Some(stock),
                format!("counter {counter:?}, stock {stock}"),
            ));
        }
        if let Some(holds) = s["live_holds"].as_u64() {
            checks.push(check(
                name("no live hold left"),
                holds == 0,
                format!("{holds} live holds"),
            ));
        }
        if let Some(url) = &args.database_url {
            let (db_orders, db_units, db_stock, duplicates) = database_view(url, item.id).await?;
            let ids: Vec<String> = recorded
                .created_orders
                .get(&item.id)
                .cloned()
                .unwrap_or_default();
            let unmatched = unmatched_answers(url, &ids).await?;
            checks.push(check(
                name("every 201 names exactly one database order"),
                unmatched == 0,
                format!(
                    "{} answered orders, {unmatched} without exactly one row",
                    ids.len()
                ),
            ));
            checks.push(check(
                name("the database agrees"),
                db_orders == orders && db_units == units && db_stock == stock && duplicates == 0,
                format!("database: {db_orders} orders, {db_units} units, stock {db_stock}, {duplicates} duplicates"),
            ));
        }
    }
    Ok(checks)
}
