//! Stage 2: the reservation, strategy A only.
//!
//! Takes units from the item's counter as a hold with a deadline, once the
//! store has checked the sale window (by its own clock) and, for an item
//! with a waiting room, the buyer's pass. A counter
//! that is not loaded (first sale, FLUSHALL, restart) is loaded from the
//! database ([`CounterLoader`]) and never guessed. Sold out and over-limit
//! requests stop here and never reach the database. An item the memo knows
//! to be sold out is refused without asking the store. A sell-out is
//! settled (final, kept in Redis alone) only when the database's stock is
//! zero too ([`SettledSellOuts`], read about once a second per item).
//!
//! Under strategy B the stage is skipped; while the breaker keeps Redis out
//! it is bypassed, and the item is noted for a counter reload.

use super::refusal::Refusal;
use super::{Attempt, ReserveRoute, Route};
use crate::metrics::{self as m, Metrics};
use crate::reservation::breaker::RedisCall;
use crate::reservation::guard::RedisGuard;
use crate::reservation::loader::{CounterLoader, LoadFailure};
use crate::reservation::memo::SoldOutMemo;
use crate::reservation::settled::SettledSellOuts;
use crate::reservation::{Hold, HoldDeadline, HoldToken, ReservationStore, Reserved, StoreError};
use app::domain::ItemId;
use std::sync::Arc;
use std::time::{Duration, Instant};
use tracing::Instrument;

/// Who took the hold an attempt runs under.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum HeldBy {
    /// Taken by this attempt.
    ThisAttempt,
    /// Taken by an earlier attempt of the same intent that never finished;
    /// if that attempt's order did commit, the hold must be confirmed, not
    /// given back.
    EarlierAttempt,
}

/// The hold an attempt runs under.
#[derive(Debug, Clone)]
pub struct Held {
    pub item: ItemId,
    pub token: HoldToken,
    pub by: HeldBy,
}

/// How many times an attempt loads a missing counter before giving up (a
/// counter flushed again between load and reserve, over and over).
const LOAD_ROUNDS: usize = 3;

pub struct ReserveStage {
    store: Arc<dyn ReservationStore>,
    loader: Arc<CounterLoader>,
    memo: Arc<SoldOutMemo>,
    settled: Arc<SettledSellOuts>,
    guard: Option<Arc<RedisGuard>>,
    metrics: Arc<Metrics>,
    hold_ttl: Duration,
}

impl ReserveStage {
    pub fn new(
        store: Arc<dyn ReservationStore>,
        loader: Arc<CounterLoader>,
        memo: Arc<SoldOutMemo>,
        settled: Arc<SettledSellOuts>,
        guard: Option<Arc<RedisGuard>>,
        metrics: Arc<Metrics>,
        hold_ttl: Duration,
    ) -> Self {
        Self {
            store,
            loader,
            memo,
            settled,
            guard,
            metrics,
            hold_ttl,
        }
    }

    pub fn store(&self) -> &Arc<dyn ReservationStore> {
        &self.store
    }

    /// Takes the hold, or says why not. `Ok(None)` when the route skips or
    /// bypasses the stage.
    ///
    /// # Errors
    /// The refusal: sold out, over the limit, unknown item, or unavailable
    /// (a failing store or database).
    pub async fn run(&self, attempt: &Attempt, route: &Route) -> Result<Option<Held>, Refusal> {
        let count = |result: &'static str| {
            self.metrics
                .counter(
                    m::RESERVATIONS,
                    &[("result", result), ("strategy", route.strategy.label())],
                )
                .increment(1);
        };
        match route.reserve() {
            ReserveRoute::Skipped => {
                count("skipped");
                return Ok(None);
            }
            ReserveRoute::Bypassed => {
                count("bypassed");
                if let Some(guard) = &self.guard {
                    guard.note_bypass(attempt.request.item_id);
                }
                return Ok(None);
            }
            ReserveRoute::Run => {}
        }
        let started = Instant::now();
        let held = self
            .reserve(attempt, route, count)
            .instrument(tracing::info_span!("reserve", store = self.store.kind()))
            .await;
        self.metrics
            .stage_took("reserve", route.strategy.label(), started.elapsed());
        held.map(Some)
    }

    fn report(&self, route: &Route, call: RedisCall) {
        if let (Some(guard), Some(ticket)) = (&self.guard, route.redis_ticket()) {
            guard.report(ticket, call);
        }
    }

    async fn reserve(
        &self,
        attempt: &Attempt,
        route: &Route,
        count: impl Fn(&'static str),
    ) -> Result<Held, Refusal> {
        let item = attempt.request.item_id;
        if self.memo.knows(item, Instant::now()) {
            count("sold_out_memo");
            return Err(Refusal::SoldOut {
                available: 0,
                settled: true,
            });
        }
        let hold = Hold {
            token: HoldToken::new(&attempt.buyer, &attempt.key),
            buyer: attempt.buyer.clone(),
            qty: attempt.request.qty,
            deadline: HoldDeadline::at_ms(crate::db::now_ms() + self.hold_ttl.as_millis() as i64),
            pass: attempt.pass.clone(),
        };
        for _ in 0..LOAD_ROUNDS {
            let answer = match self.store.reserve(item, &hold).await {
                Ok(answer) => {
                    self.report(route, RedisCall::Answered);
                    answer
                }
                Err(e) => {
                    count("error");
                    self.report(route, RedisCall::Failed);
                    tracing::error!(%item, error = %e, "reservation store failed");
                    // The script may have run before the reply was lost.
                    if let Err(release) = self.store.release(item, &hold.token).await {
                        tracing::warn!(%item, error = %release, "release after a failed reserve failed; the reaper will return the hold");
                    }
                    return Err(Refusal::Unavailable);
                }
            };
            let by = match answer {
                Reserved::Held { .. } => {
                    count("ok");
                    HeldBy::ThisAttempt
                }
                Reserved::AlreadyHeld => {
                    count("already_held");
                    HeldBy::EarlierAttempt
                }
                Reserved::SoldOut { available, holds } => {
                    count("sold_out");
                    // Settled only when the database agrees: the counter
                    // may have drifted below its stock.
                    let settled = available <= 0 && holds == 0 && self.settled.confirms(item).await;
                    if settled {
                        self.memo.remember(item, Instant::now());
                    }
                    return Err(Refusal::SoldOut {
                        available: available.max(0),
                        settled,
                    });
                }
                Reserved::LimitExceeded { already } => {
                    count("limit");
                    return Err(Refusal::LimitExceeded {
                        limit: None,
                        already,
                    });
                }
                Reserved::PassRequired => {
                    count("pass_required");
                    return Err(Refusal::PassRequired);
                }
                Reserved::PassInvalid => {
                    count("pass_invalid");
                    return Err(Refusal::PassInvalid);
                }
                Reserved::NotStarted { starts_in_ms } => {
                    count("not_started");
                    return Err(Refusal::SaleNotStarted { starts_in_ms });
                }
                Reserved::Ended => {
                    count("ended");
                    return Err(Refusal::SaleEnded);
                }
                Reserved::NotLoaded => {
                    count("not_loaded");
                    match self.loader.load(item).await {
                        Ok(()) => continue,
                        Err(LoadFailure::UnknownItem) => return Err(Refusal::UnknownItem),
                        Err(LoadFailure::Store(e)) => {
                            self.report(route, RedisCall::Failed);
                            tracing::error!(%item, error = %e, "loading the reservation counter failed");
                            return Err(Refusal::Unavailable);
                        }
                        Err(LoadFailure::Database(e)) => {
                            tracing::error!(%item, error = %e, "loading the reservation counter failed");
                            return Err(Refusal::Unavailable);
                        }
                    }
                }
            };
            return Ok(Held {
                item,
                token: hold.token,
                by,
            });
        }
        tracing::error!(%item, error = %StoreError::Protocol("the counter kept disappearing while loading".into()), "reservation failed");
        Err(Refusal::Unavailable)
    }
}
