//! `POST /api/orders` (with `Queue-Pass` for an item with a waiting room),
//! `GET /api/orders/by-key/{key}` and `GET /api/orders/{order_id}`.

use super::{ApiJson, IdempotencyKeyHeader, QueuePassHeader};
use crate::error::{ApiError, error_response};
use crate::orders::strategy::Strategy;
use crate::session::Buyer;
use crate::state::AppState;
use app::domain::IdempotencyKey;
use app::model::{KeyOutcome, OrderRequest, OrderView};
use app::ports::Checkout;
use axum::Json;
use axum::extract::{Path, State};
use axum::http::{HeaderMap, HeaderName, HeaderValue, StatusCode};
use axum::response::{IntoResponse, Response};

pub const IDEMPOTENT_REPLAYED: HeaderName = HeaderName::from_static("idempotent-replayed");
/// Per-request strategy (`redis+db` or `db`), honoured only with
/// `ALLOW_STRATEGY_OVERRIDE=true`.
pub const ORDER_STRATEGY: HeaderName = HeaderName::from_static("x-order-strategy");

/// Places an order: 201 with the receipt, or the refusal. A replay answers
/// the stored status and body with `Idempotent-Replayed: true`.
pub async fn create(
    State(state): State<AppState>,
    Buyer(buyer): Buyer,
    IdempotencyKeyHeader(key): IdempotencyKeyHeader,
    QueuePassHeader(pass): QueuePassHeader,
    headers: HeaderMap,
    ApiJson(request): ApiJson<OrderRequest>,
) -> Result<Response, ApiError> {
    let strategy = requested_strategy(&state, &headers)?;
    let placement = state
        .place_order_with(&buyer, &key, request, strategy, pass)
        .await;
    let mut response = match &placement.result {
        Ok(receipt) => (StatusCode::CREATED, Json(receipt)).into_response(),
        Err(error) => error_response(error),
    };
    if placement.replayed {
        response
            .headers_mut()
            .insert(IDEMPOTENT_REPLAYED, HeaderValue::from_static("true"));
    }
    Ok(response)
}

/// The server's strategy, or the one `X-Order-Strategy` asks for when
/// overrides are allowed.
fn requested_strategy(state: &AppState, headers: &HeaderMap) -> Result<Strategy, ApiError> {
    let Some(raw) = headers.get(ORDER_STRATEGY) else {
        return Ok(state.pipeline.strategy());
    };
    if !state.config.orders.allow_strategy_override {
        return Err(ApiError::invalid(
            "X-Order-Strategy is disabled on this server (ALLOW_STRATEGY_OVERRIDE)",
        ));
    }
    let strategy = raw
        .to_str()
        .ok()
        .and_then(Strategy::from_label)
        .ok_or_else(|| ApiError::invalid("X-Order-Strategy must be redis+db or db"))?;
    if !state.pipeline.supports(strategy) {
        return Err(ApiError::invalid(
            "this server has no reservation store for redis+db",
        ));
    }
    Ok(strategy)
}

/// The outcome of this buyer's attempt with `key`: `{"state": "order",
/// "order"}`, `{"state": "failed", "error"}`, `{"state": "in_progress"}` or
/// `{"state": "unknown"}`. Another buyer's key reads as unknown.
pub async fn by_key(
    State(state): State<AppState>,
    Buyer(buyer): Buyer,
    Path(key): Path<String>,
) -> Result<Json<KeyOutcome>, ApiError> {
    let key = IdempotencyKey::parse(&key)?;
    Ok(Json(state.0.outcome_by_key(&buyer, &key).await?))
}

/// One of this buyer's orders as it stands now (`status`: `confirmed`,
/// `awaiting_payment`, `paid`, `expired` or `refund_due`); 404 for an
/// unknown order and for another buyer's alike.
pub async fn get(
    State(state): State<AppState>,
    Buyer(buyer): Buyer,
    Path(order_id): Path<String>,
) -> Result<Json<OrderView>, ApiError> {
    Ok(Json(state.0.my_order(&buyer, &order_id).await?))
}
