//! Server functions: thin wrappers that take the buyer and the pipeline from
//! context and call the same [`Checkout`](crate::ports::Checkout) the JSON
//! API calls. They live under `/sfn/` so they never collide with `/api/`.

use crate::domain::{IdempotencyKey, ItemId, Quantity};
use crate::model::{Item, KeyOutcome, MyOrders, OrderError, OrderView, QueueStatus, Receipt};
use leptos::prelude::*;
use serde::{Deserialize, Serialize};

/// An item page's data: the item and a server-minted token for the form, so
/// the page can buy before hydration or without JavaScript; whether a
/// receipt's "Pay" leads to the demo checkout; the server's clock when the
/// page was read (countdowns count from it); and, for an item with a
/// waiting room, where this buyer stands in it (`None` before they join).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ItemView {
    pub item: Item,
    pub form_token: IdempotencyKey,
    pub demo_checkout: bool,
    pub now_ms: i64,
    pub queue: Option<QueueStatus>,
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
    crate::ports::use_checkout()?.list_items().await
}

#[server(prefix = "/sfn", endpoint = "item")]
pub async fn load_item_view(id: ItemId) -> Result<ItemView, OrderError> {
    let checkout = crate::ports::use_checkout()?;
    let item = checkout.item(id).await?;
    let form_token = IdempotencyKey::parse(&uuid::Uuid::new_v4().to_string())?;
    let queue = if item.has_waiting_room() {
        let buyer = crate::ports::current_buyer()?;
        checkout.queue_status(&buyer, id).await?
    } else {
        None
    };
    Ok(ItemView {
        item,
        form_token,
        demo_checkout: checkout.demo_checkout(),
        now_ms: checkout.now_ms(),
        queue,
    })
}

/// The server's clock (ms since the Unix epoch): a page measures its offset
/// from the phone's clock once, so countdowns follow the server.
#[server(prefix = "/sfn", endpoint = "now")]
pub async fn server_now() -> Result<i64, OrderError> {
    Ok(crate::ports::use_checkout()?.now_ms())
}

/// Joins the item's waiting room (joining again keeps the place).
#[server(prefix = "/sfn", endpoint = "join_queue")]
pub async fn join_queue(item_id: ItemId) -> Result<QueueStatus, OrderError> {
    let buyer = crate::ports::current_buyer()?;
    crate::ports::use_checkout()?
        .join_queue(&buyer, item_id)
        .await
}

/// Where this buyer stands in the item's waiting room; `None` before they
/// join.
#[server(prefix = "/sfn", endpoint = "where_in_line")]
pub async fn where_in_line(item_id: ItemId) -> Result<Option<QueueStatus>, OrderError> {
    let buyer = crate::ports::current_buyer()?;
    crate::ports::use_checkout()?
        .queue_status(&buyer, item_id)
        .await
}

/// This buyer's orders as they stand now.
#[server(prefix = "/sfn", endpoint = "my_orders")]
pub async fn load_my_orders() -> Result<MyOrders, OrderError> {
    let buyer = crate::ports::current_buyer()?;
    crate::ports::use_checkout()?.my_orders(&buyer).await
}

/// One of this buyer's orders for the demo checkout; `not_found` when the
/// demo provider is not in use.
#[server(prefix = "/sfn", endpoint = "checkout_view")]
pub async fn load_checkout(order_id: String) -> Result<CheckoutView, OrderError> {
    let buyer = crate::ports::current_buyer()?;
    let checkout = crate::ports::use_checkout()?;
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
    let buyer = crate::ports::current_buyer()?;
    let request = crate::model::OrderRequest { item_id, qty };
    crate::ports::use_checkout()?
        .place_order(&buyer, &idempotency_key, request, queue_pass)
        .await
        .result
}

#[server(prefix = "/sfn", endpoint = "order_outcome")]
pub async fn order_outcome(idempotency_key: IdempotencyKey) -> Result<KeyOutcome, OrderError> {
    let buyer = crate::ports::current_buyer()?;
    crate::ports::use_checkout()?
        .outcome_by_key(&buyer, &idempotency_key)
        .await
}
