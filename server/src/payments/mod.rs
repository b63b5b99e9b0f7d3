//! The payment deadline: an order is not done when it is placed.
//!
//! With `PAYMENT_WINDOW_SECS` set, the ledger creates every order
//! `awaiting_payment` with a deadline (`pay_by_ms`, in its 201 answer), and
//! the order ends in one of these ways:
//!
//! ```text
//! awaiting_payment ─ payment before the deadline ─▶ paid
//!        └──────── deadline passed (the reaper) ─▶ expired ─ payment ─▶ refund_due
//! ```
//!
//! - **paid**: a signed webhook ([`PaymentDesk::receive`]) arrived in time.
//! - **expired**: the [`reaper`] (or a late webhook that finds the order
//!   still waiting) expires it; its units go back to stock in the same
//!   transaction, then through [`crate::stock::StockPath`] to the
//!   reservation counter, exactly like a restock, and are sold again.
//! - **refund_due**: a payment arrived after the expiry. It never takes a
//!   unit back (that unit was offered to the next buyer): the order stays
//!   without stock and the payment is listed for the operator to refund.
//!   A payment for an order already settled is listed the same way
//!   (`duplicate`).
//!
//! Exactly one of *paid* and *expired* wins, whatever the interleaving: see
//! [`transitions`]. Every payment event is recorded under its id with its
//! result, in the transaction that applied it, so a repeated delivery
//! answers the same result and changes nothing.
//!
//! The 201 answer (and every replay of the order's `Idempotency-Key`) is
//! the order as created, whatever happens to it afterwards;
//! `GET /api/orders/{order_id}` answers where it stands now.
//!
//! Parts: [`signature`] (the `Payment-Signature` scheme), [`transitions`]
//! (the SQL), [`reaper`] (expiring unpaid orders on a timer), [`resale`]
//! (timing expired units until they sell again).

pub mod reaper;
pub mod resale;
pub mod signature;
pub mod transitions;

use crate::config::PaymentProvider;
use crate::db::Database;
use crate::metrics::{self as m, Metrics};
use crate::stock::{StockChange, StockPath};
use app::domain::BuyerId;
use app::model::OrderStatus;
use serde::{Deserialize, Serialize};
use signature::{SignatureError, WebhookSecret};
use std::sync::Arc;
use transitions::{Applied, EventRow, OrderRef};

/// The only event type that moves money in; others are acknowledged and
/// ignored, so a provider does not retry them.
pub const PAYMENT_SUCCEEDED: &str = "payment.succeeded";

/// Orders one reaper pass expires at most (the next pass takes the rest).
const EXPIRY_BATCH: u32 = 500;

/// Rounds a payment is classified in at most: each round follows a status
/// that moved under it (a deadline that passed, a racing payment).
const CLASSIFY_ROUNDS: usize = 4;

/// The body of `POST /api/payments/webhook`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct PaymentEvent {
    pub event_id: String,
    #[serde(rename = "type")]
    pub kind: String,
    pub order_id: String,
    pub amount_cents: i64,
}

/// What a payment event did, stored with it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum PaymentResult {
    /// The order is paid.
    Paid,
    /// The order had expired: it is `refund_due` and the payment owed back.
    RefundDue,
    /// The order was already settled (paid, or final without payment): the
    /// payment is owed back.
    Duplicate,
}

impl PaymentResult {
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Paid => "paid",
            Self::RefundDue => "refund_due",
            Self::Duplicate => "duplicate",
        }
    }

    pub fn parse(raw: &str) -> Option<Self> {
        [Self::Paid, Self::RefundDue, Self::Duplicate]
            .into_iter()
            .find(|r| r.as_str() == raw)
    }
}

/// What the webhook answers an event did.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum WebhookResult {
    Paid,
    RefundDue,
    Duplicate,
    /// An event type that moves no money in.
    Ignored,
}

impl From<PaymentResult> for WebhookResult {
    fn from(result: PaymentResult) -> Self {
        match result {
            PaymentResult::Paid => Self::Paid,
            PaymentResult::RefundDue => Self::RefundDue,
            PaymentResult::Duplicate => Self::Duplicate,
        }
    }
}

impl WebhookResult {
    /// The metrics label (and the wire name).
    fn label(self) -> &'static str {
        match self {
            Self::Paid => "paid",
            Self::RefundDue => "refund_due",
            Self::Duplicate => "duplicate",
            Self::Ignored => "ignored",
        }
    }
}

/// The webhook's 200 answer: the same body for every delivery of an event.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct WebhookAnswer {
    pub event_id: String,
    /// Absent for ignored event types.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub order_id: Option<String>,
    pub result: WebhookResult,
}

/// Why a webhook was refused.
#[derive(Debug, thiserror::Error)]
pub enum WebhookError {
    #[error("invalid signature: {0}")]
    Signature(#[from] SignatureError),
    #[error("invalid event: {0}")]
    InvalidEvent(String),
    #[error("no such order")]
    UnknownOrder,
    #[error("amount {got} differs from the order's total {expected}")]
    AmountMismatch { expected: i64, got: i64 },
    #[error("this event_id was applied with another order or amount")]
    EventReused,
    #[error("the order's status kept moving")]
    Unsettled,
    #[error("database failure: {0}")]
    Database(#[from] sqlx::Error),
}

impl WebhookError {
    /// The metrics label.
    fn label(&self) -> &'static str {
        match self {
            Self::Signature(_) => "invalid_signature",
            Self::InvalidEvent(_) => "invalid_event",
            Self::UnknownOrder => "unknown_order",
            Self::AmountMismatch { .. } => "amount_mismatch",
            Self::EventReused => "event_reused",
            Self::Unsettled | Self::Database(_) => "error",
        }
    }
}

/// A webhook the demo provider is about to deliver.
#[derive(Debug, Clone)]
pub struct SignedDelivery {
    /// The `Payment-Signature` header value.
    pub signature: String,
    pub body: Vec<u8>,
}

/// The payment deadline's one owner: takes payments, expires unpaid orders.
pub struct PaymentDesk {
    db: Database,
    secret: WebhookSecret,
    provider: PaymentProvider,
    stock: Arc<StockPath>,
    metrics: Arc<Metrics>,
}

impl PaymentDesk {
    pub fn new(
        db: Database,
        secret: WebhookSecret,
        provider: PaymentProvider,
        stock: Arc<StockPath>,
        metrics: Arc<Metrics>,
    ) -> Self {
        Self {
            db,
            secret,
            provider,
            stock,
            metrics,
        }
    }

    /// Whether this server's demo checkout takes the payments.
    pub fn demo_checkout(&self) -> bool {
        self.provider == PaymentProvider::Demo
    }

    /// Handles one webhook delivery: checks the signature over the raw body,
    /// then applies the event once. `now_secs` is this server's clock (for
    /// the signature's timestamp only: deadlines are the database's).
    ///
    /// # Errors
    /// A bad signature or body, an unknown order, a wrong amount, an event
    /// id reused for another payment, or a database failure.
    pub async fn receive(
        &self,
        signature: Option<&str>,
        body: &[u8],
        now_secs: i64,
    ) -> Result<WebhookAnswer, WebhookError> {
        let received = self.apply(signature, body, now_secs).await;
        let label = match &received {
            Ok(Received::Applied(answer)) => answer.result.label(),
            Ok(Received::Replayed(_)) => "replayed",
            Err(e) => e.label(),
        };
        self.metrics
            .counter(m::PAYMENT_WEBHOOKS, &[("result", label)])
            .increment(1);
        match received {
            Ok(Received::Applied(answer) | Received::Replayed(answer)) => Ok(answer),
            Err(e) => Err(e),
        }
    }

    async fn apply(
        &self,
        signature: Option<&str>,
        body: &[u8],
        now_secs: i64,
    ) -> Result<Received, WebhookError> {
        self.secret.verify(signature, body, now_secs)?;
        let event: PaymentEvent = serde_json::from_slice(body)
            .map_err(|e| WebhookError::InvalidEvent(format!("malformed body: {e}")))?;
        if event.event_id.is_empty() || event.event_id.len() > 255 {
            return Err(WebhookError::InvalidEvent(
                "event_id must have 1 to 255 characters".into(),
            ));
        }
        if event.kind != PAYMENT_SUCCEEDED {
            return Ok(Received::Applied(WebhookAnswer {
                event_id: event.event_id,
                order_id: None,
                result: WebhookResult::Ignored,
            }));
        }
        if let Some(answer) = self.replay(&event).await? {
            return Ok(Received::Replayed(answer));
        }
        let row = EventRow {
            event_id: &event.event_id,
            order_id: &event.order_id,
            amount_cents: event.amount_cents,
            received_at_ms: crate::db::now_ms(),
        };
        for _ in 0..CLASSIFY_ROUNDS {
            let order = transitions::order(&self.db, &event.order_id)
                .await?
                .ok_or(WebhookError::UnknownOrder)?;
            if order.total_cents != event.amount_cents {
                return Err(WebhookError::AmountMismatch {
                    expected: order.total_cents,
                    got: event.amount_cents,
                });
            }
            let (applied, result) = match order.status {
                OrderStatus::AwaitingPayment => {
                    (transitions::pay(&self.db, row).await?, PaymentResult::Paid)
                }
                OrderStatus::Expired | OrderStatus::RefundDue => {
                    let result = PaymentResult::RefundDue;
                    (transitions::take_late(&self.db, row, result).await?, result)
                }
                OrderStatus::Paid | OrderStatus::Confirmed => {
                    let result = PaymentResult::Duplicate;
                    (transitions::take_late(&self.db, row, result).await?, result)
                }
            };
            match applied {
                Applied::Done => {
                    self.count_transition(result);
                    return Ok(Received::Applied(WebhookAnswer {
                        event_id: event.event_id,
                        order_id: Some(event.order_id),
                        result: result.into(),
                    }));
                }
                Applied::EventExists => {
                    return match self.replay(&event).await? {
                        Some(answer) => Ok(Received::Replayed(answer)),
                        None => Err(WebhookError::Unsettled),
                    };
                }
                Applied::StatusMoved if order.status == OrderStatus::AwaitingPayment => {
                    // Not payable although awaiting payment: its deadline
                    // passed and no reaper expired it yet. Expire it now
                    // (its units go back on sale), then take the payment
                    // as a late one.
                    self.expire(&order).await?;
                }
                Applied::StatusMoved => {}
            }
        }
        Err(WebhookError::Unsettled)
    }

    /// The stored answer of an event applied before, if any.
    async fn replay(&self, event: &PaymentEvent) -> Result<Option<WebhookAnswer>, WebhookError> {
        match transitions::stored_event(&self.db, &event.event_id).await? {
            None => Ok(None),
            Some(stored)
                if stored.order_id == event.order_id
                    && stored.amount_cents == event.amount_cents =>
            {
                Ok(Some(WebhookAnswer {
                    event_id: event.event_id.clone(),
                    order_id: Some(stored.order_id),
                    result: stored.result.into(),
                }))
            }
            Some(_) => Err(WebhookError::EventReused),
        }
    }

    fn count_transition(&self, result: PaymentResult) {
        let to = match result {
            PaymentResult::Paid => "paid",
            PaymentResult::RefundDue => "refund_due",
            PaymentResult::Duplicate => return,
        };
        self.metrics
            .counter(m::ORDER_TRANSITIONS, &[("to", to)])
            .increment(1);
    }

    /// Expires one order if it is due, and sends its units back on sale.
    /// True when this call expired it.
    ///
    /// # Errors
    /// Database failures (nothing changed).
    pub async fn expire(&self, order: &OrderRef) -> Result<bool, sqlx::Error> {
        let Some(version_after) = transitions::expire(&self.db, order).await? else {
            return Ok(false);
        };
        self.metrics
            .counter(m::ORDER_TRANSITIONS, &[("to", "expired")])
            .increment(1);
        self.stock
            .committed(
                order.item,
                version_after,
                StockChange::Expired {
                    units: order.qty,
                    buyer: order.buyer.clone(),
                },
            )
            .await;
        // Counted once the units are on sale again everywhere this instance
        // reaches (counter, per-buyer limit, memo), not when the row changed.
        self.metrics
            .counter(m::UNITS_RETURNED, &[])
            .increment(order.qty.unsigned_abs());
        Ok(true)
    }

    /// Expires every order past its deadline (a batch at a time); returns
    /// how many this call expired. Safe on several instances at once: each
    /// order is expired by one of them.
    ///
    /// # Errors
    /// Database failures; orders expired before the failure stay expired.
    pub async fn expire_due(&self) -> Result<u64, sqlx::Error> {
        let mut expired = 0;
        loop {
            let due = transitions::due(&self.db, EXPIRY_BATCH).await?;
            let full = due.len() == EXPIRY_BATCH as usize;
            for order in &due {
                if self.expire(order).await? {
                    expired += 1;
                }
            }
            if !full {
                return Ok(expired);
            }
        }
    }

    /// The webhook the demo provider sends for `order_id` of `buyer`: the
    /// order's total, a fresh event id, signed now. `None` when the demo
    /// provider is not in use, or the order is not this buyer's.
    ///
    /// # Errors
    /// Database failures.
    pub async fn demo_delivery(
        &self,
        buyer: &BuyerId,
        order_id: &str,
    ) -> Result<Option<SignedDelivery>, sqlx::Error> {
        if !self.demo_checkout() {
            return Ok(None);
        }
        let Some(order) = transitions::order(&self.db, order_id).await? else {
            return Ok(None);
        };
        if order.buyer != *buyer {
            return Ok(None);
        }
        let event = PaymentEvent {
            event_id: format!("demo_{}", uuid::Uuid::new_v4().simple()),
            kind: PAYMENT_SUCCEEDED.into(),
            order_id: order.id,
            amount_cents: order.total_cents,
        };
        let body = serde_json::to_vec(&event).map_err(|e| {
            sqlx::Error::Protocol(format!("a payment event does not serialize: {e}"))
        })?;
        Ok(Some(SignedDelivery {
            signature: self.secret.sign(crate::db::now_ms() / 1000, &body),
            body,
        }))
    }

    /// # Errors
    /// Database failures.
    pub async fn refunds(&self) -> Result<Vec<transitions::Refund>, sqlx::Error> {
        transitions::refunds(&self.db, 1_000).await
    }
}

/// A handled delivery: applied now, or answered from the stored result.
enum Received {
    Applied(WebhookAnswer),
    Replayed(WebhookAnswer),
}
