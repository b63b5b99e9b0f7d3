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

/// A placed order: what the buyer gets back from `POST /api/orders`, and
/// what every replay of its key answers, word for word, whatever happened
/// to the order since (see [`OrderView`] for its current state).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Receipt {
    pub order_id: String,
    pub item_id: ItemId,
    pub qty: Quantity,
    pub unit_price_cents: i64,
    pub total_cents: i64,
    pub idempotency_key: IdempotencyKey,
    /// `confirmed` (no payment window: the order is final) or
    /// `awaiting_payment` (pay by `pay_by_ms`).
    pub status: OrderStatus,
    /// The payment deadline, milliseconds since the Unix epoch; only with a
    /// payment window.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub pay_by_ms: Option<i64>,
    /// Milliseconds since the Unix epoch, from the server clock.
    pub created_at_ms: i64,
}

/// Where an order stands.
///
/// ```text
/// confirmed                       (no payment window: final at once)
/// awaiting_payment ─ paid in time ─────────▶ paid
///        └──────── deadline passed ───────▶ expired ─ paid late ─▶ refund_due
/// ```
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum OrderStatus {
    Confirmed,
    AwaitingPayment,
    Paid,
    Expired,
    RefundDue,
}

impl OrderStatus {
    pub const ALL: [Self; 5] = [
        Self::Confirmed,
        Self::AwaitingPayment,
        Self::Paid,
        Self::Expired,
        Self::RefundDue,
    ];

    /// The name on the wire and in the `orders.status` column.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Confirmed => "confirmed",
            Self::AwaitingPayment => "awaiting_payment",
            Self::Paid => "paid",
            Self::Expired => "expired",
            Self::RefundDue => "refund_due",
        }
    }

    pub fn parse(raw: &str) -> Option<Self> {
        Self::ALL.into_iter().find(|s| s.as_str() == raw)
    }

    /// Whether the order's units are still taken from stock (an expired
    /// order gave them back, whatever a late payment did afterwards).
    pub fn holds_units(self) -> bool {
        !matches!(self, Self::Expired | Self::RefundDue)
    }
}

/// An order as it stands now: the answer of `GET /api/orders/{order_id}`
/// and a row of the buyer's "my orders" page.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct OrderView {
    pub order_id: String,
    pub item_id: ItemId,
    pub item_title: String,
    pub qty: Quantity,
    pub unit_price_cents: i64,
    pub total_cents: i64,
    pub status: OrderStatus,
    pub created_at_ms: i64,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub pay_by_ms: Option<i64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub paid_at_ms: Option<i64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub expired_at_ms: Option<i64>,
}

/// The buyer's orders, newest first, with the server's clock at the time
/// they were read (so a page shows the time left to pay as the server saw
/// it, on the server and after hydration alike).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct MyOrders {
    pub now_ms: i64,
    /// Whether the demo payment provider serves `/pay/{order_id}`.
    pub demo_checkout: bool,
    pub orders: Vec<OrderView>,
}

/// What `GET /api/orders/by-key/{key}` knows about an earlier attempt.
///
/// Written as `{"state": "order", "order"}`, `{"state": "failed", "error"}`,
/// `{"state": "in_progress"}` or `{"state": "unknown"}`, and read back from
/// the same shape through [`KeyOutcomeWire`].
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "state", rename_all = "snake_case", try_from = "KeyOutcomeWire")]
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

/// A [`KeyOutcome`] as read: one flat object. serde reads an internally
/// tagged enum by buffering the whole object first, and that machinery was
/// the largest single piece of serde in the shopper's wasm (the Buy panel
/// reads outcomes); a flat struct needs none of it.
#[derive(Deserialize)]
struct KeyOutcomeWire {
    state: KeyState,
    order: Option<Receipt>,
    error: Option<OrderError>,
}

#[derive(Deserialize)]
#[serde(rename_all = "snake_case")]
enum KeyState {
    Order,
    Failed,
    InProgress,
    Unknown,
}

impl TryFrom<KeyOutcomeWire> for KeyOutcome {
    type Error = &'static str;

    fn try_from(wire: KeyOutcomeWire) -> Result<Self, Self::Error> {
        match (wire.state, wire.order, wire.error) {
            (KeyState::Order, Some(order), _) => Ok(Self::Order { order }),
            (KeyState::Order, None, _) => Err("missing field `order`"),
            (KeyState::Failed, _, Some(error)) => Ok(Self::Failed { error }),
            (KeyState::Failed, _, None) => Err("missing field `error`"),
            (KeyState::InProgress, ..) => Ok(Self::InProgress),
            (KeyState::Unknown, ..) => Ok(Self::Unknown),
        }
    }
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
    /// A payment webhook's `Payment-Signature` is missing, malformed, wrong
    /// or too old.
    InvalidSignature,
    /// A payment's amount differs from the order's total.
    AmountMismatch,
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
            Self::InvalidRequest | Self::InvalidSignature => 400,
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
            Self::IdempotencyKeyReused | Self::AmountMismatch => 422,
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
            Self::InvalidSignature => "invalid_signature",
            Self::AmountMismatch => "amount_mismatch",
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
    fn a_receipt_without_a_window_keeps_its_old_body() {
        let receipt = Receipt {
            order_id: "o1".into(),
            item_id: ItemId::new(3).expect("id"),
            qty: Quantity::new(1).expect("qty"),
            unit_price_cents: 100,
            total_cents: 100,
            idempotency_key: IdempotencyKey::parse("k1").expect("key"),
            status: OrderStatus::Confirmed,
            pay_by_ms: None,
            created_at_ms: 5,
        };
        let json = serde_json::to_value(&receipt).expect("serializes");
        assert_eq!(json["status"], "confirmed");
        assert!(json.get("pay_by_ms").is_none(), "{json}");
        let awaiting = Receipt {
            status: OrderStatus::AwaitingPayment,
            pay_by_ms: Some(60_005),
            ..receipt
        };
        let json = serde_json::to_value(&awaiting).expect("serializes");
        assert_eq!(json["status"], "awaiting_payment");
        assert_eq!(json["pay_by_ms"], 60_005);
        let back: Receipt = serde_json::from_value(json).expect("parses");
        assert_eq!(back, awaiting);
    }

    #[test]
    fn statuses_read_back_and_say_whether_they_hold_units() {
        for status in OrderStatus::ALL {
            assert_eq!(OrderStatus::parse(status.as_str()), Some(status));
            let json = serde_json::to_value(status).expect("serializes");
            assert_eq!(json, status.as_str());
        }
        assert!(OrderStatus::Paid.holds_units());
        assert!(OrderStatus::AwaitingPayment.holds_units());
        assert!(!OrderStatus::Expired.holds_units());
        assert!(!OrderStatus::RefundDue.holds_units());
        assert_eq!(OrderStatus::parse("shipped"), None);
    }

    #[test]
    fn payment_errors_have_their_statuses() {
        assert_eq!(ErrorCode::InvalidSignature.http_status(), 400);
        assert_eq!(ErrorCode::AmountMismatch.http_status(), 422);
        assert!(!ErrorCode::InvalidSignature.retryable());
        assert_eq!(ErrorCode::AmountMismatch.as_str(), "amount_mismatch");
    }

    #[test]
    fn key_outcomes_are_tagged_by_state() {
        let json = serde_json::to_value(KeyOutcome::InProgress).expect("serializes");
        assert_eq!(json, serde_json::json!({"state": "in_progress"}));
    }

    #[test]
    fn key_outcomes_read_back_what_they_write() {
        let receipt = Receipt {
            order_id: "o-1".into(),
            item_id: ItemId::new(7).expect("id"),
            qty: Quantity::new(2).expect("qty"),
            unit_price_cents: 100,
            total_cents: 200,
            idempotency_key: IdempotencyKey::parse("k-1").expect("key"),
            status: OrderStatus::Confirmed,
            pay_by_ms: None,
            created_at_ms: 1,
        };
        let awaiting = Receipt {
            status: OrderStatus::AwaitingPayment,
            pay_by_ms: Some(60_001),
            ..receipt.clone()
        };
        for outcome in [
            KeyOutcome::Order { order: receipt },
            KeyOutcome::Order { order: awaiting },
            KeyOutcome::Failed {
                error: OrderError::new(ErrorCode::SoldOut, "gone"),
            },
            KeyOutcome::InProgress,
            KeyOutcome::Unknown,
        ] {
            let json = serde_json::to_string(&outcome).expect("serializes");
            let back: KeyOutcome = serde_json::from_str(&json).expect(&json);
            assert_eq!(back, outcome);
        }
        for bad in [
            r#"{"state":"order"}"#,
            r#"{"state":"order","order":null}"#,
            r#"{"state":"failed"}"#,
            r#"{"state":"done"}"#,
            r#"{"order":{}}"#,
            r#""unknown""#,
        ] {
            assert!(serde_json::from_str::<KeyOutcome>(bad).is_err(), "{bad}");
        }
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
