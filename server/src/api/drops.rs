//! Drop day: the server's clock, the waiting room and the fair start.
//!
//! | route | answer |
//! |---|---|
//! | `GET /api/time` | `{"now_ms"}`: the server's clock, for countdowns that do not trust the phone's |
//! | `POST /api/items/{id}/queue` | joins the item's waiting room (once per buyer) and says where the buyer stands |
//! | `GET /api/items/{id}/queue` | where the buyer stands; 404 `not_in_queue` if they never joined |
//! | `GET /api/items/{id}/fairness` | `{"commitment", "seed", "tickets"}` |

use super::item_id;
use crate::error::ApiError;
use crate::session::Buyer;
use crate::state::AppState;
use crate::waiting_room::{QueueError, WaitingRooms};
use app::checkout::Checkout;
use app::model::{ErrorCode, Fairness, Item, QueueStatus};
use axum::Json;
use axum::extract::{Path, State};
use std::sync::Arc;

/// `GET /api/time`.
pub async fn time() -> Json<serde_json::Value> {
    Json(serde_json::json!({ "now_ms": crate::db::now_ms() }))
}

/// `POST /api/items/{id}/queue`.
pub async fn join(
    State(state): State<AppState>,
    Buyer(buyer): Buyer,
    Path(id): Path<String>,
) -> Result<Json<QueueStatus>, ApiError> {
    let (item, rooms) = item_and_rooms(&state, &id).await?;
    Ok(Json(rooms.join(&item, &buyer).await.map_err(queue_error)?))
}

/// `GET /api/items/{id}/queue`.
pub async fn status(
    State(state): State<AppState>,
    Buyer(buyer): Buyer,
    Path(id): Path<String>,
) -> Result<Json<QueueStatus>, ApiError> {
    let (item, rooms) = item_and_rooms(&state, &id).await?;
    Ok(Json(
        rooms.status(&item, &buyer).await.map_err(queue_error)?,
    ))
}

/// `GET /api/items/{id}/fairness`.
pub async fn fairness(
    State(state): State<AppState>,
    Path(id): Path<String>,
) -> Result<Json<Fairness>, ApiError> {
    let (item, rooms) = item_and_rooms(&state, &id).await?;
    Ok(Json(
        rooms
            .fairness(&item, crate::db::now_ms())
            .await
            .map_err(queue_error)?,
    ))
}

async fn item_and_rooms(
    state: &AppState,
    raw_id: &str,
) -> Result<(Item, Arc<WaitingRooms>), ApiError> {
    let item = state.0.item(item_id(raw_id)?).await?;
    let rooms = state.waiting_rooms.clone().ok_or_else(|| {
        ApiError::new(
            ErrorCode::Unavailable,
            "waiting rooms need a reservation store (ORDER_STRATEGY=redis+db)",
        )
    })?;
    Ok((item, rooms))
}

fn queue_error(error: QueueError) -> ApiError {
    match error {
        QueueError::NoWaitingRoom => ApiError::not_found("this item has no waiting room"),
        QueueError::NotInQueue => ApiError::new(
            ErrorCode::NotInQueue,
            "you have not joined this item's waiting room: POST to join",
        ),
        other => ApiError::unavailable(anyhow::Error::new(other)),
    }
}
