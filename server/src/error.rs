//! The HTTP boundary's one error type.
//!
//! Every 4xx and 5xx answer of the JSON API is `{"code", "message",
//! "retryable"}` with the status its [`ErrorCode`] names. Causes of 5xx
//! answers are logged here and never sent: no database or Redis text reaches
//! a client.

use app::model::{ErrorCode, OrderError};
use axum::http::{HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};

/// Seconds a client should wait before retrying a busy or running request.
pub const RETRY_AFTER_SECS: u32 = 1;

#[derive(Debug)]
pub struct ApiError {
    error: OrderError,
    /// The internal cause of a 5xx, for the log only.
    cause: Option<anyhow::Error>,
}

impl ApiError {
    pub fn new(code: ErrorCode, message: impl Into<String>) -> Self {
        Self {
            error: OrderError::new(code, message),
            cause: None,
        }
    }

    pub fn invalid(message: impl Into<String>) -> Self {
        Self::new(ErrorCode::InvalidRequest, message)
    }

    pub fn unauthorized(message: impl Into<String>) -> Self {
        Self::new(ErrorCode::Unauthorized, message)
    }

    pub fn not_found(message: impl Into<String>) -> Self {
        Self::new(ErrorCode::NotFound, message)
    }

    /// A 503 whose cause is logged.
    pub fn unavailable(cause: impl Into<anyhow::Error>) -> Self {
        Self {
            error: OrderError::new(ErrorCode::Unavailable, "temporarily unavailable; try again"),
            cause: Some(cause.into()),
        }
    }

    /// A 500 whose cause is logged.
    pub fn internal(cause: impl Into<anyhow::Error>) -> Self {
        Self {
            error: OrderError::new(ErrorCode::Internal, "internal error"),
            cause: Some(cause.into()),
        }
    }

    pub fn code(&self) -> ErrorCode {
        self.error.code
    }
}

impl From<OrderError> for ApiError {
    fn from(error: OrderError) -> Self {
        Self { error, cause: None }
    }
}

impl From<app::domain::InvalidValue> for ApiError {
    fn from(e: app::domain::InvalidValue) -> Self {
        Self::invalid(e.message())
    }
}

/// Builds the response for an [`OrderError`], with `Retry-After` where a
/// retry is expected to help soon.
pub fn error_response(error: &OrderError) -> Response {
    let status =
        StatusCode::from_u16(error.code.http_status()).unwrap_or(StatusCode::INTERNAL_SERVER_ERROR);
    let mut response = (status, axum::Json(error)).into_response();
    let retry_after = match (error.retry_after_secs, error.code) {
        (Some(secs), _) => Some(secs),
        (
            None,
            ErrorCode::RequestInProgress
            | ErrorCode::Unavailable
            | ErrorCode::RateLimited
            | ErrorCode::SaleNotStarted,
        ) => Some(u64::from(RETRY_AFTER_SECS)),
        (None, _) => None,
    };
    if let Some(secs) = retry_after {
        response
            .headers_mut()
            .insert(header::RETRY_AFTER, HeaderValue::from(secs));
    }
    response
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        if let Some(cause) = &self.cause {
            tracing::error!(code = %self.error.code, cause = ?cause, "request failed");
        }
        error_response(&self.error)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn causes_stay_out_of_the_body() {
        let response =
            ApiError::unavailable(anyhow::anyhow!("password authentication failed for user x"))
                .into_response();
        assert_eq!(response.status(), StatusCode::SERVICE_UNAVAILABLE);
        assert_eq!(
            response
                .headers()
                .get(header::RETRY_AFTER)
                .map(|v| v.as_bytes()),
            Some(&b"1"[..])
        );
    }

    #[test]
    fn refusals_keep_their_status() {
        let response =
            ApiError::from(OrderError::new(ErrorCode::IdempotencyKeyReused, "x")).into_response();
        assert_eq!(response.status(), StatusCode::UNPROCESSABLE_ENTITY);
        assert!(response.headers().get(header::RETRY_AFTER).is_none());
    }
}
