//! Admin calls (bearer token): create an item, change a drop's terms,
//! restock one, read an item's stats, list the payments owed back. Each
//! change keeps the reservation store in step with the database: the
//! database commits first, then the counter is warmed (create) or adjusted
//! through [`crate::stock::StockPath`] (restock) and the terms written
//! (create, change), unless the store already has the change from a later
//! load.

use super::{Admin, ApiJson, item_id};
use crate::db::items::{self, DropTerms, NewItem, Restocked, TermsChange};
use crate::error::ApiError;
use crate::orders::refusal::Refusal;
use crate::reservation::CounterSeed;
use crate::state::AppState;
use crate::stock::StockChange;
use app::model::Item;
use axum::Json;
use axum::extract::{Path, State};
use axum::http::StatusCode;
use serde::Deserialize;

const MAX_STOCK: i64 = 1_000_000_000;
const MAX_PRICE_CENTS: i64 = 1_000_000_000_000;

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct CreateItem {
    title: String,
    price_cents: i64,
    stock: i64,
    #[serde(default)]
    max_per_buyer: Option<i64>,
    #[serde(default)]
    condition: Option<String>,
    #[serde(default)]
    seller: Option<String>,
    #[serde(default)]
    sale_starts_at_ms: Option<i64>,
    #[serde(default)]
    sale_ends_at_ms: Option<i64>,
    #[serde(default)]
    admission_per_second: Option<i64>,
    #[serde(default)]
    pass_ttl_seconds: Option<i64>,
    #[serde(default)]
    paused: Option<bool>,
}

/// A drop's terms, checked: times not negative and in order, a sane rate
/// and pass lifetime.
fn checked_terms(terms: DropTerms) -> Result<DropTerms, ApiError> {
    for (name, at) in [
        ("sale_starts_at_ms", terms.sale_starts_at_ms),
        ("sale_ends_at_ms", terms.sale_ends_at_ms),
    ] {
        if at.is_some_and(|ms| !(0..=MAX_EPOCH_MS).contains(&ms)) {
            return Err(ApiError::invalid(format!(
                "{name} must be milliseconds since the Unix epoch"
            )));
        }
    }
    if let (Some(starts), Some(ends)) = (terms.sale_starts_at_ms, terms.sale_ends_at_ms)
        && ends <= starts
    {
        return Err(ApiError::invalid(
            "sale_ends_at_ms must be after sale_starts_at_ms",
        ));
    }
    if terms
        .admission_per_second
        .is_some_and(|rate| !(1..=MAX_ADMISSION_PER_SECOND).contains(&rate))
    {
        return Err(ApiError::invalid(format!(
            "admission_per_second must be between 1 and {MAX_ADMISSION_PER_SECOND}"
        )));
    }
    if !(MIN_PASS_TTL_SECONDS..=MAX_PASS_TTL_SECONDS).contains(&terms.pass_ttl_seconds) {
        return Err(ApiError::invalid(format!(
            "pass_ttl_seconds must be between {MIN_PASS_TTL_SECONDS} and {MAX_PASS_TTL_SECONDS}"
        )));
    }
    Ok(terms)
}

const MAX_EPOCH_MS: i64 = 32_503_680_000_000;
const MAX_ADMISSION_PER_SECOND: i64 = 100_000;
const MIN_PASS_TTL_SECONDS: i64 = 5;
const MAX_PASS_TTL_SECONDS: i64 = 86_400;

impl CreateItem {
    fn validate(self) -> Result<NewItem, ApiError> {
        let title = self.title.trim().to_owned();
        if title.is_empty() || title.chars().count() > 200 {
            return Err(ApiError::invalid("title must have 1 to 200 characters"));
        }
        if !(0..=MAX_PRICE_CENTS).contains(&self.price_cents) {
            return Err(ApiError::invalid("price_cents must be between 0 and 10^12"));
        }
        if !(0..=MAX_STOCK).contains(&self.stock) {
            return Err(ApiError::invalid("stock must be between 0 and 10^9"));
        }
        if self
            .max_per_buyer
            .is_some_and(|m| !(1..=MAX_STOCK).contains(&m))
        {
            return Err(ApiError::invalid(
                "max_per_buyer must be at least 1 when set",
            ));
        }
        let text =
            |value: Option<String>, default: &str, field: &str| -> Result<String, ApiError> {
                let value = value
                    .map(|v| v.trim().to_owned())
                    .unwrap_or_else(|| default.to_owned());
                if value.chars().count() > 64 {
                    return Err(ApiError::invalid(format!(
                        "{field} must have at most 64 characters"
                    )));
                }
                Ok(value)
            };
        let terms = checked_terms(DropTerms {
            sale_starts_at_ms: self.sale_starts_at_ms,
            sale_ends_at_ms: self.sale_ends_at_ms,
            admission_per_second: self.admission_per_second,
            pass_ttl_seconds: self
                .pass_ttl_seconds
                .unwrap_or(DropTerms::default().pass_ttl_seconds),
            paused: self.paused.unwrap_or(false),
        })?;
        Ok(NewItem {
            title,
            condition: text(self.condition, "used", "condition")?,
            seller: text(self.seller, "shop", "seller")?,
            price_cents: self.price_cents,
            stock: self.stock,
            max_per_buyer: self.max_per_buyer,
            terms,
        })
    }
}

/// `POST /api/admin/items`: 201 with the item.
pub async fn create_item(
    State(state): State<AppState>,
    _admin: Admin,
    ApiJson(body): ApiJson<CreateItem>,
) -> Result<(StatusCode, Json<Item>), ApiError> {
    let new_item = body.validate()?;
    let item = items::create(&state.db, &new_item)
        .await
        .map_err(ApiError::unavailable)?;
    if let Some(store) = &state.reservation
        && let Err(e) = store.load(item.id, CounterSeed::of(&item), &[]).await
    {
        tracing::warn!(item = %item.id, error = %e, "warming the counter failed; the first order loads it");
    }
    Ok((StatusCode::CREATED, Json(item)))
}

/// The body of `PATCH /api/admin/items/{id}`: each field left out keeps its
/// value; `null` clears an optional one.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ChangeTerms {
    #[serde(default, deserialize_with = "present")]
    sale_starts_at_ms: Option<Option<i64>>,
    #[serde(default, deserialize_with = "present")]
    sale_ends_at_ms: Option<Option<i64>>,
    #[serde(default, deserialize_with = "present")]
    admission_per_second: Option<Option<i64>>,
    #[serde(default)]
    pass_ttl_seconds: Option<i64>,
    #[serde(default)]
    paused: Option<bool>,
}

/// A field that is present (even as `null`) is `Some`.
fn present<'de, D, T>(deserializer: D) -> Result<Option<T>, D::Error>
where
    D: serde::Deserializer<'de>,
    T: Deserialize<'de>,
{
    T::deserialize(deserializer).map(Some)
}

/// `PATCH /api/admin/items/{id}`: changes a drop's sale window, waiting
/// room or pause; 200 with the item as it is afterwards.
pub async fn change_terms(
    State(state): State<AppState>,
    _admin: Admin,
    Path(id): Path<String>,
    ApiJson(body): ApiJson<ChangeTerms>,
) -> Result<Json<Item>, ApiError> {
    let id = item_id(&id)?;
    let current = items::get(&state.db, id)
        .await
        .map_err(ApiError::unavailable)?
        .ok_or_else(|| Refusal::UnknownItem.error())?;
    let change = TermsChange {
        sale_starts_at_ms: body.sale_starts_at_ms,
        sale_ends_at_ms: body.sale_ends_at_ms,
        admission_per_second: body.admission_per_second,
        pass_ttl_seconds: body.pass_ttl_seconds,
        paused: body.paused,
    };
    let terms = checked_terms(change.applied_to(DropTerms::of(&current)))?;
    let item = items::set_terms(&state.db, id, &terms)
        .await
        .map_err(ApiError::unavailable)?
        .ok_or_else(|| Refusal::UnknownItem.error())?;
    if let Some(store) = &state.reservation
        && let Err(e) = store
            .set_terms(id, &CounterSeed::of(&item).terms, item.version)
            .await
    {
        // The database holds the change and checks the window itself; the
        // store's copy is replaced by the next load or change.
        tracing::error!(item = %id, error = %e, "the new terms did not reach the reservation store");
    }
    state.stock.terms_changed(id);
    Ok(Json(item))
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Restock {
    delta: i64,
}

/// `GET /api/admin/items/{id}/stats`: the item, its orders as the database
/// counts them (`units_ordered` only of orders that still hold units, so
/// `units_ordered + stock` is the initial stock plus every restock;
/// `units_returned` by expiry; `orders_by_status`), and the reservation
/// counter and live holds where a store is in use. What load tests and
/// browser tests check their invariants against.
pub async fn stats(
    State(state): State<AppState>,
    _admin: Admin,
    Path(id): Path<String>,
) -> Result<Json<serde_json::Value>, ApiError> {
    let id = item_id(&id)?;
    let item = items::get(&state.db, id)
        .await
        .map_err(ApiError::unavailable)?
        .ok_or_else(|| Refusal::UnknownItem.error())?;
    let orders = items::order_stats(&state.db, id)
        .await
        .map_err(ApiError::unavailable)?;
    let (counter, live_holds) = match &state.reservation {
        Some(store) => (
            store.counter(id).await.map_err(ApiError::unavailable)?,
            Some(store.live_holds(id).await.map_err(ApiError::unavailable)?),
        ),
        None => (None, None),
    };
    Ok(Json(serde_json::json!({
        "item_id": id,
        "stock": item.stock,
        "version": item.version,
        "orders": orders.orders,
        "units_ordered": orders.units_ordered,
        "units_returned": orders.units_returned,
        "orders_by_status": orders.orders_by_status,
        "duplicate_keys": orders.duplicate_keys,
        "counter": counter,
        "live_holds": live_holds,
    })))
}

/// `POST /api/admin/items/{id}/restock` with `{"delta"}` (negative removes
/// units): 200 with the item as it is afterwards.
pub async fn restock(
    State(state): State<AppState>,
    _admin: Admin,
    Path(id): Path<String>,
    ApiJson(body): ApiJson<Restock>,
) -> Result<Json<Item>, ApiError> {
    let id = item_id(&id)?;
    if body.delta == 0 || body.delta.abs() > MAX_STOCK {
        return Err(ApiError::invalid(
            "delta must be non-zero and at most 10^9 in size",
        ));
    }
    let item = match items::restock(&state.db, id, body.delta)
        .await
        .map_err(ApiError::unavailable)?
    {
        Restocked::Done(item) => item,
        Restocked::UnknownItem => return Err(Refusal::UnknownItem.error().into()),
        Restocked::WouldGoNegative { stock } => {
            return Err(ApiError::invalid(format!(
                "only {stock} in stock; cannot remove {}",
                -body.delta
            )));
        }
    };
    state
        .stock
        .committed(
            id,
            item.version,
            StockChange::Restocked { delta: body.delta },
        )
        .await;
    Ok(Json(item))
}

/// `GET /api/admin/refunds`: payments the operator owes back, newest first:
/// paid after the order expired (`refund_due`) or after it was settled
/// (`duplicate`). Empty without a payment window.
pub async fn refunds(
    State(state): State<AppState>,
    _admin: Admin,
) -> Result<Json<Vec<crate::payments::transitions::Refund>>, ApiError> {
    match &state.payments {
        Some(desk) => Ok(Json(desk.refunds().await.map_err(ApiError::unavailable)?)),
        None => Ok(Json(Vec::new())),
    }
}
