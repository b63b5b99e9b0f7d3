//! `POST /api/session`: starts (or confirms) an anonymous buyer session.

use crate::session::mint;
use crate::state::AppState;
use axum::Json;
use axum::extract::State;
use axum::http::header::SET_COOKIE;
use axum::http::{HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};

/// 201 with a new signed buyer cookie, or 200 when the request already
/// carries a valid one. Body: `{"buyer_id"}`.
pub async fn start(State(state): State<AppState>, headers: HeaderMap) -> Response {
    if let Some(buyer) = state.sessions.buyer_of(&headers) {
        return (
            StatusCode::OK,
            Json(serde_json::json!({ "buyer_id": buyer })),
        )
            .into_response();
    }
    let (buyer, cookie) = mint(state.sessions.key(), state.config.sessions.cookie_secure);
    state.welcome_buyer(&buyer).await;
    let mut response = (
        StatusCode::CREATED,
        Json(serde_json::json!({ "buyer_id": buyer })),
    )
        .into_response();
    if let Some(cookie) = cookie {
        response.headers_mut().append(SET_COOKIE, cookie);
    }
    response
}
