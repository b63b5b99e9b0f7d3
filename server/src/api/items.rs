//! `GET /api/items` and `GET /api/items/{id}`: listings as the database has
//! them (the source of truth for stock).

use super::item_id;
use crate::error::ApiError;
use crate::state::AppState;
use app::model::Item;
use app::ports::Checkout;
use axum::Json;
use axum::extract::{Path, State};

pub async fn list(State(state): State<AppState>) -> Result<Json<Vec<Item>>, ApiError> {
    Ok(Json(state.0.list_items().await?))
}

pub async fn get(
    State(state): State<AppState>,
    Path(id): Path<String>,
) -> Result<Json<Item>, ApiError> {
    let id = item_id(&id)?;
    Ok(Json(state.0.item(id).await?))
}
