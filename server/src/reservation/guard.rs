//! The circuit breaker's bookkeeping around Redis, in one place.
//!
//! Every attempt asks [`RedisGuard::admit`] once, before its first Redis
//! call, and carries the [`Admission`] through the stages; each stage that
//! calls Redis reports how the call went ([`RedisCall`]) with the admission's
//! ticket, and reports from an earlier breaker epoch are ignored. While the
//! breaker keeps Redis out, the items sold around it are remembered; when
//! the probe closes the breaker, their counters are loaded again from the
//! database, which counted those orders and Redis did not.

use super::ReservationStore;
use super::breaker::{Admission, Breaker, BreakerState, RedisCall, Ticket};
use super::loader::CounterLoader;
use crate::metrics::{self as m, Metrics};
use app::domain::ItemId;
use std::collections::HashSet;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

pub struct RedisGuard {
    breaker: Breaker,
    store: Arc<dyn ReservationStore>,
    loader: Arc<CounterLoader>,
    metrics: Arc<Metrics>,
    /// Items ordered while the breaker kept Redis out: their counters missed
    /// those orders.
    bypassed: Mutex<HashSet<ItemId>>,
}

impl RedisGuard {
    pub fn new(
        failure_threshold: u32,
        cooldown: Duration,
        store: Arc<dyn ReservationStore>,
        loader: Arc<CounterLoader>,
        metrics: Arc<Metrics>,
    ) -> Self {
        Self {
            breaker: Breaker::new(failure_threshold, cooldown),
            store,
            loader,
            metrics,
            bypassed: Mutex::default(),
        }
    }

    pub fn admit(&self) -> Admission {
        self.breaker.admit()
    }

    pub fn state(&self) -> BreakerState {
        self.breaker.state(Instant::now())
    }

    fn set_gauge(&self, state: BreakerState) {
        self.metrics
            .gauge(m::BREAKER_STATE, &[])
            .set(state.gauge_value());
    }

    /// How a Redis call of an attempt admitted with `ticket` went.
    pub fn report(&self, ticket: Ticket, call: RedisCall) {
        if let Some(state) = self.breaker.report(ticket, call, Instant::now()) {
            self.set_gauge(state);
            tracing::warn!(
                "Redis failing: circuit breaker open; orders go straight to the database"
            );
        }
    }

    /// An attempt for `item` goes around Redis.
    pub fn note_bypass(&self, item: ItemId) {
        self.bypassed
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .insert(item);
    }

    /// An attempt that went around Redis finished. If the breaker closed
    /// meanwhile, the probe may have reloaded the item's counter before this
    /// order committed: reload it again (the load counts live holds, so
    /// orders going through Redis meanwhile stay right).
    pub async fn after_bypass(&self, item: ItemId) {
        if self.state() != BreakerState::Closed {
            return;
        }
        if let Err(e) = self.loader.reload(item).await {
            tracing::warn!(%item, error = %e, "could not reload a stale counter; reconciliation will repair it");
        }
    }

    /// The half-open probe, run by a background task: when the cooldown is
    /// over, PING the store; on success close the breaker and reload the
    /// counters of items sold around Redis.
    pub async fn probe(&self) {
        if !self.breaker.begin_probe(Instant::now()) {
            return;
        }
        self.set_gauge(BreakerState::HalfOpen);
        let answered = self.store.ping().await.is_ok();
        let state = self.breaker.probed(answered, Instant::now());
        self.set_gauge(state);
        if state != BreakerState::Closed {
            return;
        }
        tracing::info!("Redis answering again: circuit breaker closed");
        let items: Vec<ItemId> = self
            .bypassed
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .drain()
            .collect();
        for item in items {
            if let Err(e) = self.loader.reload(item).await {
                tracing::warn!(%item, error = %e, "could not reload a stale counter; reconciliation will repair it");
            }
        }
    }
}
