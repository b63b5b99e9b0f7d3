//! The one context every handler and server function shares.
//!
//! [`AppContext`] holds the configuration, the database, the reservation
//! store, the order pipeline and the cookie key. It implements the app's
//! [`Checkout`] port, so the Leptos server functions and the JSON API reach
//! the pipeline through the same object.

use crate::config::Config;
use crate::db::{Database, items, orders};
use crate::hot_items::HotItems;
use crate::metrics::Metrics;
use crate::orders::refusal::Refusal;
use crate::orders::strategy::Strategy;
use crate::orders::{Attempt, OrderPipeline};
use crate::payments::PaymentDesk;
use crate::records::Records;
use crate::reservation::ReservationStore;
use crate::reservation::queue::QueuePass;
use crate::stock::StockPath;
use crate::waiting_room::{QueueError, WaitingRooms};
use app::domain::{BuyerId, IdempotencyKey, ItemId};
use app::guard::Intercepts;
use app::model::{
    ErrorCode, Item, KeyOutcome, MyOrders, OrderError, OrderRequest, OrderView, QueueStatus,
};
use app::ports::{Checkout, Placement};
use axum::extract::FromRef;
use axum_extra::extract::cookie::Key;
use leptos::config::LeptosOptions;
use std::ops::Deref;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};

pub struct AppContext {
    pub config: Config,
    pub leptos: LeptosOptions,
    pub db: Database,
    /// `None` under strategy B (database only).
    pub reservation: Option<Arc<dyn ReservationStore>>,
    pub records: Records,
    pub pipeline: Arc<OrderPipeline>,
    /// Drops' waiting rooms, when a reservation store keeps them.
    pub waiting_rooms: Option<Arc<WaitingRooms>>,
    /// What follows a stock change the database committed.
    pub stock: Arc<StockPath>,
    /// The payment deadline, when `PAYMENT_WINDOW_SECS` is set.
    pub payments: Option<Arc<PaymentDesk>>,
    /// Signs and checks the buyer and admin cookies.
    pub sessions: crate::session::SessionCookies,
    pub admin_token: String,
    pub metrics: Arc<Metrics>,
    pub hot_items: Arc<HotItems>,
    pub dashboard: Arc<crate::dashboard::Sampler>,
    pub guard_totals: GuardTotals,
}

/// Browser-layer intercepts reported since start.
#[derive(Debug, Default)]
pub struct GuardTotals {
    pub swallowed_taps: AtomicU64,
    pub restore_lookups: AtomicU64,
    pub hidden_blocks: AtomicU64,
}

impl GuardTotals {
    pub fn add(&self, counts: Intercepts) {
        self.swallowed_taps
            .fetch_add(u64::from(counts.swallowed_taps), Ordering::Relaxed);
        self.restore_lookups
            .fetch_add(u64::from(counts.restore_lookups), Ordering::Relaxed);
        self.hidden_blocks
            .fetch_add(u64::from(counts.hidden_blocks), Ordering::Relaxed);
    }
}

/// The axum state: a cheap handle on the context.
#[derive(Clone)]
pub struct AppState(pub Arc<AppContext>);

impl Deref for AppState {
    type Target = AppContext;
    fn deref(&self) -> &AppContext {
        &self.0
    }
}

impl FromRef<AppState> for LeptosOptions {
    fn from_ref(state: &AppState) -> Self {
        state.leptos.clone()
    }
}

impl FromRef<AppState> for Key {
    fn from_ref(state: &AppState) -> Self {
        state.sessions.key().clone()
    }
}

fn database_unavailable(e: sqlx::Error) -> OrderError {
    tracing::error!(error = %e, "database read failed");
    OrderError::new(ErrorCode::Unavailable, "the shop is busy; try again")
}

impl AppContext {
    /// Places an order through the pipeline with the given strategy: the
    /// one entry point of the JSON API and the pages alike.
    pub async fn place_order_with(
        &self,
        buyer: &BuyerId,
        key: &IdempotencyKey,
        request: OrderRequest,
        strategy: Strategy,
        pass: Option<QueuePass>,
    ) -> Placement {
        self.pipeline
            .place(Attempt {
                buyer: buyer.clone(),
                key: key.clone(),
                request,
                strategy,
                pass,
            })
            .await
    }

    /// A buyer was just minted: their records are complete (empty) from the
    /// start, so their first order needs no database read.
    pub async fn welcome_buyer(&self, buyer: &BuyerId) {
        if let Some(redis) = &self.records.redis
            && let Err(e) = redis.mark_new_buyer(buyer).await
        {
            tracing::debug!(error = %e, "marking a new buyer's records failed; their first order loads them");
        }
    }
}

#[async_trait::async_trait]
impl Checkout for AppContext {
    async fn list_items(&self) -> Result<Vec<Item>, OrderError> {
        items::list(&self.db).await.map_err(database_unavailable)
    }

    async fn item(&self, id: ItemId) -> Result<Item, OrderError> {
        items::get(&self.db, id)
            .await
            .map_err(database_unavailable)?
            .ok_or_else(|| Refusal::UnknownItem.error())
    }

    async fn place_order(
        &self,
        buyer: &BuyerId,
        key: &IdempotencyKey,
        request: OrderRequest,
        queue_pass: Option<String>,
    ) -> Placement {
        self.place_order_with(
            buyer,
            key,
            request,
            self.pipeline.strategy(),
            queue_pass.map(QueuePass::from_raw),
        )
        .await
    }

    async fn outcome_by_key(
        &self,
        buyer: &BuyerId,
        key: &IdempotencyKey,
    ) -> Result<KeyOutcome, OrderError> {
        self.pipeline.outcome_by_key(buyer, key).await
    }

    async fn my_orders(&self, buyer: &BuyerId) -> Result<MyOrders, OrderError> {
        let orders = orders::of_buyer_now(&self.db, buyer, MY_ORDERS_SHOWN)
            .await
            .map_err(database_unavailable)?;
        Ok(MyOrders {
            now_ms: self.now_ms(),
            demo_checkout: self.demo_checkout(),
            orders,
        })
    }

    async fn my_order(&self, buyer: &BuyerId, order_id: &str) -> Result<OrderView, OrderError> {
        orders::view_of_buyer(&self.db, buyer, order_id)
            .await
            .map_err(database_unavailable)?
            .ok_or_else(|| OrderError::new(ErrorCode::NotFound, "no such order"))
    }

    async fn join_queue(&self, buyer: &BuyerId, item: ItemId) -> Result<QueueStatus, OrderError> {
        let item = self.item(item).await?;
        self.waiting_rooms()?
            .join(&item, buyer)
            .await
            .map_err(queue_refusal)
    }

    async fn queue_status(
        &self,
        buyer: &BuyerId,
        item: ItemId,
    ) -> Result<Option<QueueStatus>, OrderError> {
        let item = self.item(item).await?;
        match self.waiting_rooms()?.status(&item, buyer).await {
            Ok(status) => Ok(Some(status)),
            Err(QueueError::NotInQueue) => Ok(None),
            Err(other) => Err(queue_refusal(other)),
        }
    }

    fn demo_checkout(&self) -> bool {
        self.payments.as_ref().is_some_and(|p| p.demo_checkout())
    }

    fn now_ms(&self) -> i64 {
        crate::db::now_ms()
    }
}

impl AppContext {
    /// The drops' waiting rooms, or why there are none.
    ///
    /// # Errors
    /// `unavailable` without a reservation store (strategy B).
    pub fn waiting_rooms(&self) -> Result<&WaitingRooms, OrderError> {
        self.waiting_rooms.as_deref().ok_or_else(|| {
            OrderError::new(
                ErrorCode::Unavailable,
                "waiting rooms need a reservation store (ORDER_STRATEGY=redis+db)",
            )
        })
    }
}

/// What a buyer is told when the waiting room cannot answer.
pub fn queue_refusal(error: QueueError) -> OrderError {
    match error {
        QueueError::NoWaitingRoom => {
            OrderError::new(ErrorCode::NotFound, "this item has no waiting room")
        }
        QueueError::NotInQueue => OrderError::new(
            ErrorCode::NotInQueue,
            "you have not joined this item's waiting room: POST to join",
        ),
        other => {
            tracing::error!(error = %other, "the waiting room failed");
            OrderError::new(ErrorCode::Unavailable, "the shop is busy; try again")
        }
    }
}

/// The newest orders the "my orders" page lists.
const MY_ORDERS_SHOWN: u32 = 100;
