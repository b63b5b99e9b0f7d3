//! The types every client sees, defined once: the Leptos server functions,
//! the JSON API and the browser all speak these.

use crate::domain::{IdempotencyKey, ItemId, Quantity};
use serde::{Deserialize, Serialize};
use std::fmt;

/// A listing as shown to buyers and returned by `GET /api/items/{id}`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Item {
    pub id: ItemId,
    pub title: String,
    pub condition: String,
    pub seller: String,
    pub price_cents: i64,
    /// Units left according to the database, the source of truth.
    pub stock: i64,
    /// Bumped by every successful write to the row (the optimistic lock).
    pub version: i64,
    /// At most this many units per buyer, when set.
    pub max_per_buyer: Option<i64>,
    /// When the sale opens and closes (ms since the Unix epoch), when set.
    pub sale_starts_at_ms: Option<i64>,
    pub sale_ends_at_ms: Option<i64>,
    /// Buyers let in per second by the item's waiting room, when it has one.
    pub admission_per_second: Option<i64>,
    /// How long an admitted buyer's pass stays valid.
    pub pass_ttl_seconds: i64,
    /// A paused drop admits nobody.
    pub paused: bool,
}

impl Item {
    /// Whether buyers must join the item's waiting room before ordering.
    pub fn has_waiting_room(&self) -> bool {
        self.admission_per_second.is_some()
    }

    /// The largest quantity a buyer may pick in the UI right now.
    pub fn max_selectable_qty(&self) -> u32 {
        let mut max = i64::from(Quantity::MAX).min(self.stock);
        if let Some(limit) = self.max_per_buyer {
            max = max.min(limit);
        }
        max.max(0) as u32
    }
}

/// The body of `POST /api/orders`. Validation happens while deserializing:
/// a zero, negative, fractional or oversized quantity never gets this far.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct OrderRequest {
    pub item_id: ItemId,
    pub qty: Quantity,
}

/// A confirmed order: what the buyer gets back from `POST /api/orders`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Receipt {
    pub order_id: String,
    pub item_id: ItemId,
    pub qty: Quantity,
    pub unit_price_cents: i64,
    pub total_cents: i64,
    pub idempotency_key: IdempotencyKey,
    pub status: OrderStatus,
    /// Milliseconds since the Unix epoch, from the server clock.
    pub created_at_ms: i64,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum OrderStatus {
    Confirmed,
}

/// What `GET /api/orders/by-key/{key}` knows about an earlier attempt.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "state", rename_all = "snake_case")]
pub enum KeyOutcome {
    /// The attempt produced this order.
    Order { order: Receipt },
    /// The attempt ended with a definite refusal (sold out, limit, ...).
    Failed { error: OrderError },
    /// The attempt is still running; ask again shortly.
    InProgress,
    /// No attempt with this key is known for this buyer: it never reached
    /// the server, or it failed in a way that is safe to retry.
    Unknown,
}

/// Machine-readable error codes, stable across releases.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum ErrorCode {
    InvalidRequest,
    Unauthorized,
    Forbidden,
    NotFound,
    MethodNotAllowed,
    UnknownItem,
    SoldOut,
    StockConflict,
    LimitExceeded,
    RequestInProgress,
    IdempotencyKeyReused,
    /// The sale has not started: retry after `Retry-After`.
    SaleNotStarted,
    /// The sale has ended.
    SaleEnded,
    /// The item has a waiting room: join it, and order with its pass.
    QueuePassRequired,
    /// The pass is another buyer's or item's, expired, or used.
    QueuePassInvalid,
    /// The buyer never joined this item's waiting room.
    NotInQueue,
    PayloadTooLarge,
    RateLimited,
    Unavailable,
    Internal,
    /// Only ever produced in the browser: the request got no answer, so the
    /// outcome is unknown. No server response carries this code.
    NoResponse,
}

impl ErrorCode {
    /// The HTTP status this code travels with.
    pub fn http_status(self) -> u16 {
        match self {
            Self::InvalidRequest => 400,
            Self::Unauthorized => 401,
            Self::Forbidden | Self::QueuePassRequired | Self::QueuePassInvalid => 403,
            Self::NotFound | Self::UnknownItem | Self::NotInQueue => 404,
            Self::MethodNotAllowed => 405,
            Self::SoldOut
            | Self::StockConflict
            | Self::LimitExceeded
            | Self::RequestInProgress
            | Self::SaleNotStarted
            | Self::SaleEnded => 409,
            Self::PayloadTooLarge => 413,
            Self::IdempotencyKeyReused => 422,
            Self::RateLimited => 429,
            Self::Internal => 500,
            Self::Unavailable | Self::NoResponse => 503,
        }
    }

    /// Whether the same request may succeed if sent again later.
    pub fn retryable(self) -> bool {
        matches!(
            self,
            Self::StockConflict
                | Self::SaleNotStarted
                | Self::RequestInProgress
                | Self::RateLimited
                | Self::Unavailable
                | Self::Internal
                | Self::NoResponse
        )
    }

    pub fn as_str(self) -> &'static str {
        match self {
            Self::InvalidRequest => "invalid_request",
            Self::Unauthorized => "unauthorized",
            Self::Forbidden => "forbidden",
            Self::NotFound => "not_found",
            Self::MethodNotAllowed => "method_not_allowed",
            Self::UnknownItem => "unknown_item",
            Self::SoldOut => "sold_out",
            Self::StockConflict => "stock_conflict",
            Self::LimitExceeded => "limit_exceeded",
            Self::RequestInProgress => "request_in_progress",
            Self::IdempotencyKeyReused => "idempotency_key_reused",
            Self::SaleNotStarted => "sale_not_started",
            Self::SaleEnded => "sale_ended",
            Self::QueuePassRequired => "queue_pass_required",
            Self::QueuePassInvalid => "queue_pass_invalid",
            Self::NotInQueue => "not_in_queue",
            Self::PayloadTooLarge => "payload_too_large",
            Self::RateLimited => "rate_limited",
            Self::Unavailable => "unavailable",
            Self::Internal => "internal",
            Self::NoResponse => "no_response",
        }
    }
}

impl fmt::Display for ErrorCode {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// Every refusal, on every boundary: `{code, message, retryable}`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, thiserror::Error)]
#[error("{code}: {message}")]
pub struct OrderError {
    pub code: ErrorCode,
    pub message: String,
    pub retryable: bool,
    /// When a retry can succeed, if known (the HTTP `Retry-After`); not
    /// part of the body.
    #[serde(skip)]
    pub retry_after_secs: Option<u64>,
}

impl OrderError {
    /// An error whose retryable flag follows its code.
    pub fn new(code: ErrorCode, message: impl Into<String>) -> Self {
        Self {
            code,
            message: message.into(),
            retryable: code.retryable(),
            retry_after_secs: None,
        }
    }

    /// The same error, to be retried after `secs`.
    pub fn retry_after(mut self, secs: u64) -> Self {
        self.retry_after_secs = Some(secs);
        self
    }

    pub fn invalid(message: impl Into<String>) -> Self {
        Self::new(ErrorCode::InvalidRequest, message)
    }
}

impl From<crate::domain::InvalidValue> for OrderError {
    fn from(e: crate::domain::InvalidValue) -> Self {
        Self::invalid(e.message())
    }
}

/// Lets server functions return [`OrderError`] directly: failures of the
/// server-function machinery become codes too, so the browser handles one
/// error type. A request that got no (readable) answer is `no_response`: its
/// outcome is unknown, unlike a server's own `unavailable`.
impl leptos::server_fn::error::FromServerFnError for OrderError {
    type Encoder = leptos::server_fn::codec::JsonEncoding;

    fn from_server_fn_error(value: leptos::server_fn::error::ServerFnErrorErr) -> Self {
        use leptos::server_fn::error::ServerFnErrorErr as E;
        match value {
            E::Args(m) | E::MissingArg(m) => Self::invalid(m),
            E::Request(m) | E::Response(m) | E::Deserialization(m) => {
                Self::new(ErrorCode::NoResponse, m)
            }
            other => Self::new(ErrorCode::Internal, other.to_string()),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn order_requests_validate_while_parsing() {
        let ok: OrderRequest = serde_json::from_str(r#"{"item_id":7,"qty":2}"#).expect("valid");
        assert_eq!(ok.item_id.get(), 7);
        assert_eq!(ok.qty.get(), 2);
        for bad in [
            r#"{"item_id":7,"qty":0}"#,
            r#"{"item_id":7,"qty":-1}"#,
            r#"{"item_id":7,"qty":11}"#,
            r#"{"item_id":7,"qty":"two"}"#,
            r#"{"item_id":0,"qty":1}"#,
            r#"{"item_id":7}"#,
            r#"{"item_id":7,"qty":1,"price":0}"#,
        ] {
            assert!(serde_json::from_str::<OrderRequest>(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn errors_serialize_to_the_public_shape() {
        let e = OrderError::new(ErrorCode::StockConflict, "try again");
        let json = serde_json::to_value(&e).expect("serializes");
        assert_eq!(
            json,
            serde_json::json!({"code": "stock_conflict", "message": "try again", "retryable": true})
        );
        assert_eq!(e.code.http_status(), 409);
        assert!(!OrderError::new(ErrorCode::SoldOut, "gone").retryable);
    }

    #[test]
    fn key_outcomes_are_tagged_by_state() {
        let json = serde_json::to_value(KeyOutcome::InProgress).expect("serializes");
        assert_eq!(json, serde_json::json!({"state": "in_progress"}));
    }

    #[test]
    fn selectable_quantity_respects_stock_and_limit() {
        let mut item = Item {
            id: ItemId::new(1).expect("id"),
            title: "Camera".into(),
            condition: "good".into(),
            seller: "ann".into(),
            price_cents: 100,
            stock: 3,
            version: 0,
            max_per_buyer: None,
            sale_starts_at_ms: None,
            sale_ends_at_ms: None,
            admission_per_second: None,
            pass_ttl_seconds: 120,
            paused: false,
        };
        assert_eq!(item.max_selectable_qty(), 3);
        item.max_per_buyer = Some(2);
        assert_eq!(item.max_selectable_qty(), 2);
        item.stock = 50;
        item.max_per_buyer = None;
        assert_eq!(item.max_selectable_qty(), Quantity::MAX);
        item.stock = 0;
        assert_eq!(item.max_selectable_qty(), 0);
    }
}

/// Where a buyer stands in an item's waiting room: the answer of
/// `POST` and `GET /api/items/{id}/queue`. Fields that do not apply are
/// absent.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct QueueStatus {
    pub state: QueueState,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub ticket: Option<String>,
    /// 1 for the next buyer let in; absent before the start (the order is
    /// drawn then) and when not in the line.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub position: Option<u64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub eta_seconds: Option<u64>,
    /// What to send as `Queue-Pass` with the order, once admitted.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub pass: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub pass_expires_at_ms: Option<i64>,
    /// Present (true) while the drop is paused.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub paused: Option<bool>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum QueueState {
    Waiting,
    Admitted,
    SoldOut,
    Closed,
}

/// The fair start's public record: `GET /api/items/{id}/fairness`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Fairness {
    /// Lowercase hex SHA-256 of the seed, published from the item's creation.
    pub commitment: String,
    /// The seed, from the start on.
    pub seed: Option<String>,
    /// From the start on: every ticket that joined before it, ordered by
    /// ascending lowercase hex SHA-256 of `seed + ":" + ticket`.
    pub tickets: Vec<String>,
}
