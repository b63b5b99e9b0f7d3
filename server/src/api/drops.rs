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
use crate::state::{AppState, queue_refusal};
use app::model::{ErrorCode, Fairness, QueueStatus};
use app::ports::Checkout;
use axum::Json;
use axum::extract::{Path, State};

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
    Ok(Json(state.0.join_queue(&buyer, item_id(&id)?).await?))
}

/// `GET /api/items/{id}/queue`.
pub async fn status(
    State(state): State<AppState>,
    Buyer(buyer): Buyer,
    Path(id): Path<String>,
) -> Result<Json<QueueStatus>, ApiError> {
    state
        .0
        .queue_status(&buyer, item_id(&id)?)
        .await?
        .map(Json)
        .ok_or_else(|| {
            ApiError::new(
                ErrorCode::NotInQueue,
                "you have not joined this item's waiting room: POST to join",
            )
        })
}

/// `GET /api/items/{id}/fairness`.
pub async fn fairness(
    State(state): State<AppState>,
    Path(id): Path<String>,
) -> Result<Json<Fairness>, ApiError> {
    let item = state.0.item(item_id(&id)?).await?;
    let fairness = state
        .waiting_rooms()?
        .fairness(&item, crate::db::now_ms())
        .await
        .map_err(queue_refusal)?;
    Ok(Json(fairness))
}
