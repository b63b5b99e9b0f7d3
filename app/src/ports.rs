//! The ports the app needs from the server (compiled only with `ssr`).
//!
//! The order pipeline lives in the `server` crate, which depends on this one,
//! never the other way round. The server implements [`Checkout`] (the shop:
//! items, orders, the waiting room) and [`DashboardSource`] (the admin
//! dashboard's numbers) and provides them as Leptos context, so the server
//! functions behind the pages and the JSON API call one and the same
//! pipeline. [`AdminSession`] marks a request whose admin cookie the
//! server's session middleware checked.

use crate::domain::{BuyerId, IdempotencyKey, ItemId};
use crate::model::{
    Item, KeyOutcome, MyOrders, OrderError, OrderRequest, OrderView, QueueStatus, Receipt,
};
use std::sync::Arc;

/// The answer to one order attempt.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Placement {
    /// The receipt, or the refusal the buyer sees.
    pub result: Result<Receipt, OrderError>,
    /// True when this answer was stored by an earlier request with the same
    /// key and is being played back, not computed now.
    pub replayed: bool,
}

/// Everything the pages need from the server.
#[async_trait::async_trait]
pub trait Checkout: Send + Sync + 'static {
    /// # Errors
    /// `unavailable` when the database cannot be reached.
    async fn list_items(&self) -> Result<Vec<Item>, OrderError>;

    /// # Errors
    /// `unknown_item`, or `unavailable`.
    async fn item(&self, id: ItemId) -> Result<Item, OrderError>;

    /// Runs the order pipeline once for this buyer's intent to buy, with the
    /// waiting-room pass when the item has a waiting room.
    async fn place_order(
        &self,
        buyer: &BuyerId,
        key: &IdempotencyKey,
        request: OrderRequest,
        queue_pass: Option<String>,
    ) -> Placement;

    /// The outcome of an earlier attempt of this buyer with this key.
    ///
    /// # Errors
    /// `unavailable` when neither store can be read.
    async fn outcome_by_key(
        &self,
        buyer: &BuyerId,
        key: &IdempotencyKey,
    ) -> Result<KeyOutcome, OrderError>;

    /// This buyer's orders as they stand now, newest first.
    ///
    /// # Errors
    /// `unavailable` when the database cannot be read.
    async fn my_orders(&self, buyer: &BuyerId) -> Result<MyOrders, OrderError>;

    /// One order of this buyer as it stands now.
    ///
    /// # Errors
    /// `not_found` for an unknown order or another buyer's; `unavailable`.
    async fn my_order(&self, buyer: &BuyerId, order_id: &str) -> Result<OrderView, OrderError>;

    /// Puts the buyer in the item's waiting room (once: joining again keeps
    /// the place) and says where they stand.
    ///
    /// # Errors
    /// `not_found` when the item has no waiting room; `unknown_item`;
    /// `unavailable`.
    async fn join_queue(&self, buyer: &BuyerId, item: ItemId) -> Result<QueueStatus, OrderError>;

    /// Where the buyer stands in the item's waiting room; `None` when they
    /// never joined it.
    ///
    /// # Errors
    /// `not_found` when the item has no waiting room; `unknown_item`;
    /// `unavailable`.
    async fn queue_status(
        &self,
        buyer: &BuyerId,
        item: ItemId,
    ) -> Result<Option<QueueStatus>, OrderError>;

    /// Whether this server's demo checkout (`/pay/{order_id}`) takes payments.
    fn demo_checkout(&self) -> bool;

    /// The server's clock, milliseconds since the Unix epoch.
    fn now_ms(&self) -> i64;
}

/// How the server hands the pipeline to the server functions.
pub type SharedCheckout = Arc<dyn Checkout>;

/// The pipeline provided by the server as context.
///
/// # Errors
/// `internal` when the server forgot to provide it (a wiring bug).
pub fn use_checkout() -> Result<SharedCheckout, OrderError> {
    leptos::prelude::use_context::<SharedCheckout>()
        .ok_or_else(|| OrderError::new(crate::model::ErrorCode::Internal, "checkout is not wired"))
}

/// The buyer of the current request, resolved from the signed cookie by the
/// server's session middleware (which mints one on first visit).
///
/// # Errors
/// `unauthorized` when the request carries no buyer.
pub fn current_buyer() -> Result<BuyerId, OrderError> {
    leptos::prelude::use_context::<http::request::Parts>()
        .and_then(|parts| parts.extensions.get::<BuyerId>().cloned())
        .ok_or_else(|| {
            OrderError::new(
                crate::model::ErrorCode::Unauthorized,
                "no buyer session: reload the page",
            )
        })
}

/// The admin dashboard's numbers; the server's sampler implements it.
#[async_trait::async_trait]
pub trait DashboardSource: Send + Sync + 'static {
    async fn dashboard(&self) -> crate::dashboard::DashboardData;
}

pub type SharedDashboard = Arc<dyn DashboardSource>;

/// Marks a request that carries a valid admin session cookie (set by the
/// server's session middleware).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct AdminSession;
