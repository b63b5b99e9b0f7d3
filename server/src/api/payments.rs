//! `POST /api/payments/webhook`: where a payment provider (or the demo
//! provider's checkout, see [`super::forms`]) reports a payment.
//!
//! The raw body is what the `Payment-Signature` covers, so it is read as
//! bytes and checked before it is parsed. Answers: 200 with
//! `{"event_id", "order_id", "result"}` (`paid`, `refund_due`, `duplicate`;
//! `ignored` for other event types, without `order_id`), the same body for
//! every delivery of an event; 400 `invalid_signature`; 400
//! `invalid_request` for a malformed event; 404 `not_found` for an unknown
//! order (or when this server takes no payments); 422 `amount_mismatch`;
//! 422 `idempotency_key_reused` for an event id applied to another payment;
//! 503 `unavailable` (the provider retries).

use crate::error::ApiError;
use crate::payments::signature::HEADER;
use crate::payments::{WebhookAnswer, WebhookError};
use crate::state::AppState;
use app::model::ErrorCode;
use axum::Json;
use axum::body::Bytes;
use axum::extract::State;
use axum::http::HeaderMap;

pub async fn webhook(
    State(state): State<AppState>,
    headers: HeaderMap,
    body: Bytes,
) -> Result<Json<WebhookAnswer>, ApiError> {
    let Some(desk) = &state.payments else {
        return Err(ApiError::not_found(
            "this shop takes no payments (PAYMENT_WINDOW_SECS is not set)",
        ));
    };
    let signature = headers.get(HEADER).and_then(|v| v.to_str().ok());
    let now_secs = crate::db::now_ms() / 1000;
    desk.receive(signature, &body, now_secs)
        .await
        .map(Json)
        .map_err(refused)
}

fn refused(error: WebhookError) -> ApiError {
    match error {
        WebhookError::Signature(e) => {
            tracing::warn!(error = %e, "webhook refused");
            ApiError::new(
                ErrorCode::InvalidSignature,
                "missing, malformed, wrong or expired Payment-Signature",
            )
        }
        WebhookError::InvalidEvent(message) => ApiError::invalid(message),
        WebhookError::UnknownOrder => ApiError::not_found("no such order"),
        WebhookError::AmountMismatch { expected, got } => ApiError::new(
            ErrorCode::AmountMismatch,
            format!("amount_cents {got} differs from the order's total {expected}"),
        ),
        WebhookError::EventReused => ApiError::new(
            ErrorCode::IdempotencyKeyReused,
            "this event_id was already applied to another order or amount",
        ),
        e @ (WebhookError::Unsettled | WebhookError::Database(_)) => ApiError::unavailable(e),
    }
}
