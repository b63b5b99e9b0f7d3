//! Server functions: thin wrappers that take the buyer and the pipeline from
//! context and call the same [`Checkout`](crate::checkout::Checkout) the JSON
//! API calls. They live under `/sfn/` so they never collide with `/api/`.

use crate::domain::{IdempotencyKey, ItemId, Quantity};
use crate::model::{Item, KeyOutcome, MyOrders, OrderError, OrderView, Receipt};
use leptos::prelude::*;
use serde::{Deserialize, Serialize};

/// An item page's data: the item and a server-minted token for the form, so
/// the page can buy before hydration or without JavaScript; whether a
/// receipt's "Pay" leads to the demo checkout; and the server's clock when
/// the page was read (a receipt counts its time left to pay from it).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ItemView {
    pub item: Item,
    pub form_token: IdempotencyKey,
    pub demo_checkout: bool,
    pub now_ms: i64,
}

/// The demo checkout page's data: the order as it stands, and the server's
/// clock when it was read.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct CheckoutView {
    pub order: OrderView,
    pub now_ms: i64,
}

#[server(prefix = "/sfn", endpoint = "items")]
pub async fn list_items() -> Result<Vec<Item>, OrderError> {
    crate::checkout::use_checkout()?.list_items().await
}

#[server(prefix = "/sfn", endpoint = "item")]
pub async fn load_item_view(id: ItemId) -> Result<ItemView, OrderError> {
    let checkout = crate::checkout::use_checkout()?;
    let item = checkout.item(id).await?;
    let form_token = IdempotencyKey::parse(&uuid::Uuid::new_v4().to_string())?;
    Ok(ItemView {
        item,
        form_token,
        demo_checkout: checkout.demo_checkout(),
        now_ms: checkout.now_ms(),
    })
}

/// This buyer's orders as they stand now.
#[server(prefix = "/sfn", endpoint = "my_orders")]
pub async fn load_my_orders() -> Result<MyOrders, OrderError> {
    let buyer = crate::checkout::current_buyer()?;
    crate::checkout::use_checkout()?.my_orders(&buyer).await
}

/// One of this buyer's orders for the demo checkout; `not_found` when the
/// demo provider is not in use.
#[server(prefix = "/sfn", endpoint = "checkout_view")]
pub async fn load_checkout(order_id: String) -> Result<CheckoutView, OrderError> {
    let buyer = crate::checkout::current_buyer()?;
    let checkout = crate::checkout::use_checkout()?;
    if !checkout.demo_checkout() {
        return Err(OrderError::new(
            crate::model::ErrorCode::NotFound,
            "this shop has no demo checkout",
        ));
    }
    let order = checkout.my_order(&buyer, &order_id).await?;
    Ok(CheckoutView {
        order,
        now_ms: checkout.now_ms(),
    })
}

#[server(prefix = "/sfn", endpoint = "place_order")]
pub async fn place_order(
    item_id: ItemId,
    qty: Quantity,
    idempotency_key: IdempotencyKey,
    queue_pass: Option<String>,
) -> Result<Receipt, OrderError> {
    let buyer = crate::checkout::current_buyer()?;
    let request = crate::model::OrderRequest { item_id, qty };
    crate::checkout::use_checkout()?
        .place_order(&buyer, &idempotency_key, request, queue_pass)
        .await
        .result
}

#[server(prefix = "/sfn", endpoint = "order_outcome")]
pub async fn order_outcome(idempotency_key: IdempotencyKey) -> Result<KeyOutcome, OrderError> {
    let buyer = crate::checkout::current_buyer()?;
    crate::checkout::use_checkout()?
        .outcome_by_key(&buyer, &idempotency_key)
        .await
}

/// The dashboard's data, for an admin session only.
#[server(prefix = "/sfn", endpoint = "dashboard")]
pub async fn dashboard_data() -> Result<crate::dashboard::DashboardData, OrderError> {
    use crate::dashboard::{AdminSession, SharedDashboard};
    use crate::model::ErrorCode;
    let is_admin = use_context::<http::request::Parts>()
        .is_some_and(|parts| parts.extensions.get::<AdminSession>().is_some());
    if !is_admin {
        return Err(OrderError::new(
            ErrorCode::Unauthorized,
            "admin session required",
        ));
    }
    let source = use_context::<SharedDashboard>()
        .ok_or_else(|| OrderError::new(ErrorCode::Internal, "dashboard is not wired"))?;
    Ok(source.dashboard().await)
}
