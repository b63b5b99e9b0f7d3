//! The HTTP surface: one module per resource, each with its handlers; this
//! module assembles them and owns the extractors that turn raw input into
//! domain types (or into a JSON 4xx).
//!
//! | route | module |
//! |---|---|
//! | `POST /api/session` | [`session`] |
//! | `GET /api/items`, `GET /api/items/{id}` | [`items`] |
//! | `GET /api/time`, `POST`/`GET /api/items/{id}/queue`, `GET /api/items/{id}/fairness` | [`drops`] |
//! | `POST /api/orders`, `GET /api/orders/by-key/{key}`, `GET /api/orders/{order_id}` | [`orders`] |
//! | `POST /api/payments/webhook` | [`payments`] |
//! | `POST /api/guard-events` | [`guard_events`] |
//! | `POST /api/admin/items`, `PATCH /api/admin/items/{id}`, `POST /api/admin/items/{id}/restock`, `GET /api/admin/items/{id}/stats`, `GET /api/admin/refunds` | [`admin`] |
//! | `GET /healthz`, `GET /readyz`, `GET /metrics` | [`health`] |
//! | `POST /items/{id}/buy`, `POST /items/{id}/queue`, `POST /pay/{order_id}`, `GET /lang/{tag}` | [`forms`] (HTML forms, no JavaScript needed) |

pub mod admin;
pub mod drops;
pub mod forms;
pub mod guard_events;
pub mod health;
pub mod items;
pub mod orders;
pub mod payments;
pub mod session;

use crate::error::ApiError;
use crate::state::AppState;
use app::domain::{IdempotencyKey, ItemId};
use app::model::ErrorCode;
use axum::Router;
use axum::extract::rejection::JsonRejection;
use axum::extract::{DefaultBodyLimit, FromRequest, FromRequestParts, Request};
use axum::http::StatusCode;
use axum::http::request::Parts;
use axum::response::Response;
use axum::routing::{get, patch, post};
use serde::de::DeserializeOwned;
use subtle::ConstantTimeEq;

/// The largest request body the JSON API reads, in bytes (documented in the
/// README); larger bodies answer 413.
pub const MAX_BODY_BYTES: usize = 16 * 1024;

/// The `/api` routes.
pub fn router() -> Router<AppState> {
    Router::new()
        .route("/session", post(session::start))
        .route("/items", get(items::list))
        .route("/items/{id}", get(items::get))
        .route("/time", get(drops::time))
        .route("/items/{id}/queue", post(drops::join).get(drops::status))
        .route("/items/{id}/fairness", get(drops::fairness))
        .route("/orders", post(orders::create))
        .route("/orders/by-key/{key}", get(orders::by_key))
        .route("/orders/{order_id}", get(orders::get))
        .route("/payments/webhook", post(payments::webhook))
        .route("/guard-events", post(guard_events::record))
        .route("/admin/items", post(admin::create_item))
        .route("/admin/items/{id}", patch(admin::change_terms))
        .route("/admin/items/{id}/restock", post(admin::restock))
        .route("/admin/items/{id}/stats", get(admin::stats))
        .route("/admin/refunds", get(admin::refunds))
        .fallback(not_found)
        .method_not_allowed_fallback(method_not_allowed)
        .layer(DefaultBodyLimit::max(MAX_BODY_BYTES))
        .layer(axum::middleware::map_response(ensure_error_shape))
}

/// A last line for the API's error contract: any 4xx or 5xx that an
/// extractor or layer produced in another shape (plain text, empty) is
/// rewritten as `{code, message, retryable}` with a code for its status.
async fn ensure_error_shape(response: Response) -> Response {
    let status = response.status();
    let is_json = response
        .headers()
        .get(axum::http::header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .is_some_and(|v| v.starts_with("application/json"));
    if status.as_u16() < 400 || is_json {
        return response;
    }
    let code = match status {
        StatusCode::PAYLOAD_TOO_LARGE => ErrorCode::PayloadTooLarge,
        StatusCode::NOT_FOUND => ErrorCode::NotFound,
        StatusCode::METHOD_NOT_ALLOWED => ErrorCode::MethodNotAllowed,
        StatusCode::UNAUTHORIZED => ErrorCode::Unauthorized,
        StatusCode::TOO_MANY_REQUESTS => ErrorCode::RateLimited,
        StatusCode::SERVICE_UNAVAILABLE => ErrorCode::Unavailable,
        s if s.is_client_error() => ErrorCode::InvalidRequest,
        _ => ErrorCode::Internal,
    };
    let message = status
        .canonical_reason()
        .unwrap_or("error")
        .to_ascii_lowercase();
    let mut shaped = crate::error::error_response(&app::model::OrderError::new(code, message));
    *shaped.status_mut() = status;
    shaped
}

pub async fn not_found() -> ApiError {
    ApiError::not_found("no such API route")
}

async fn method_not_allowed() -> ApiError {
    ApiError::new(
        app::model::ErrorCode::MethodNotAllowed,
        "method not allowed on this route",
    )
}

/// A JSON body whose every rejection is a JSON 4xx: 413 above
/// [`MAX_BODY_BYTES`], 400 for anything malformed or invalid.
pub struct ApiJson<T>(pub T);

impl<T: DeserializeOwned, S: Send + Sync> FromRequest<S> for ApiJson<T> {
    type Rejection = ApiError;

    async fn from_request(req: Request, state: &S) -> Result<Self, Self::Rejection> {
        match axum::Json::<T>::from_request(req, state).await {
            Ok(axum::Json(value)) => Ok(Self(value)),
            Err(rejection) => Err(json_rejection(rejection)),
        }
    }
}

fn json_rejection(rejection: JsonRejection) -> ApiError {
    if rejection.status() == StatusCode::PAYLOAD_TOO_LARGE {
        return ApiError::new(
            app::model::ErrorCode::PayloadTooLarge,
            format!("request body larger than {MAX_BODY_BYTES} bytes"),
        );
    }
    let message = match &rejection {
        JsonRejection::MissingJsonContentType(_) => {
            "expected Content-Type: application/json".to_owned()
        }
        JsonRejection::JsonSyntaxError(_) => "malformed JSON".to_owned(),
        JsonRejection::JsonDataError(e) => format!("invalid request: {}", e.body_text()),
        other => format!("unreadable body: {}", other.body_text()),
    };
    ApiError::invalid(message)
}

/// The `Queue-Pass` header, when present: the waiting-room pass an order is
/// placed with.
pub struct QueuePassHeader(pub Option<crate::reservation::queue::QueuePass>);

pub const QUEUE_PASS: axum::http::HeaderName = axum::http::HeaderName::from_static("queue-pass");

impl<S: Send + Sync> FromRequestParts<S> for QueuePassHeader {
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut Parts, _state: &S) -> Result<Self, Self::Rejection> {
        let Some(raw) = parts.headers.get(&QUEUE_PASS) else {
            return Ok(Self(None));
        };
        let raw = raw
            .to_str()
            .ok()
            .map(str::trim)
            .filter(|v| !v.is_empty() && v.len() <= 64 && v.bytes().all(|b| b.is_ascii_graphic()))
            .ok_or_else(|| {
                ApiError::invalid("Queue-Pass must be 1 to 64 visible ASCII characters")
            })?;
        Ok(Self(Some(crate::reservation::queue::QueuePass::from_raw(
            raw,
        ))))
    }
}

/// The `Idempotency-Key` header, validated.
pub struct IdempotencyKeyHeader(pub IdempotencyKey);

pub const IDEMPOTENCY_KEY: axum::http::HeaderName =
    axum::http::HeaderName::from_static("idempotency-key");

impl<S: Send + Sync> FromRequestParts<S> for IdempotencyKeyHeader {
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut Parts, _state: &S) -> Result<Self, Self::Rejection> {
        let raw = parts
            .headers
            .get(&IDEMPOTENCY_KEY)
            .ok_or_else(|| ApiError::invalid("missing Idempotency-Key header"))?
            .to_str()
            .map_err(|_| ApiError::invalid("Idempotency-Key must be visible ASCII"))?;
        Ok(Self(IdempotencyKey::parse(raw)?))
    }
}

/// An `{id}` path segment that must be an item id.
pub fn item_id(raw: &str) -> Result<ItemId, ApiError> {
    ItemId::parse(raw).map_err(ApiError::from)
}

/// An admin call: `Authorization: Bearer <ADMIN_TOKEN>`, compared in
/// constant time.
pub struct Admin;

impl FromRequestParts<AppState> for Admin {
    type Rejection = ApiError;

    async fn from_request_parts(
        parts: &mut Parts,
        state: &AppState,
    ) -> Result<Self, Self::Rejection> {
        let presented = parts
            .headers
            .get(axum::http::header::AUTHORIZATION)
            .and_then(|v| v.to_str().ok())
            .and_then(|v| v.strip_prefix("Bearer "))
            .ok_or_else(|| {
                ApiError::unauthorized("admin calls need Authorization: Bearer <token>")
            })?;
        let expected = state.admin_token.as_bytes();
        if presented.as_bytes().ct_eq(expected).into() {
            Ok(Self)
        } else {
            Err(ApiError::unauthorized("wrong admin token"))
        }
    }
}
