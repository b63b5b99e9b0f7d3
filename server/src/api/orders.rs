//! `POST /api/orders` and `GET /api/orders/by-key/{key}`.

use super::{ApiJson, IdempotencyKeyHeader};
use crate::error::{ApiError, error_response};
use crate::session::Buyer;
use crate::state::AppState;
use app::checkout::Checkout;
use app::domain::IdempotencyKey;
use app::model::{KeyOutcome, OrderRequest};
use axum::Json;
use axum::extract::{Path, State};
use axum::http::{HeaderName, HeaderValue, StatusCode};
use axum::response::{IntoResponse, Response};

pub const IDEMPOTENT_REPLAYED: HeaderName = HeaderName::from_static("idempotent-replayed");

/// Places an order: 201 with the receipt, or the refusal. A replay answers
/// the stored status and body with `Idempotent-Replayed: true`.
#[tracing::instrument(name = "POST /api/orders", skip_all)]
pub async fn create(
    State(state): State<AppState>,
    Buyer(buyer): Buyer,
    IdempotencyKeyHeader(key): IdempotencyKeyHeader,
    ApiJson(request): ApiJson<OrderRequest>,
) -> Response {
    let placement = state.0.place_order(&buyer, &key, request).await;
    let mut response = match &placement.result {
        Ok(receipt) => (StatusCode::CREATED, Json(receipt)).into_response(),
        Err(error) => error_response(error),
    };
    if placement.replayed {
        response
            .headers_mut()
            .insert(IDEMPOTENT_REPLAYED, HeaderValue::from_static("true"));
    }
    response
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
